"""Fixtures: the real service on loopback port 0 (embedded broker, SQLite in tmp_path), an HTTP
client holding the admin token, and real MQTT device clients (aiomqtt)."""

import asyncio
import contextlib
import json
import socket
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import aiomqtt
import pytest
import pytest_asyncio

from fleetstate import app
from fleetstate.config import Config

ADMIN_TOKEN = "test-admin-token"
WAIT = 10.0


# The few tests that take tens of seconds each. When pytest-xdist spreads the suite over workers
# (scripts/test), they start first: one of them started last would run alone, as the run's tail.
LONG_FIRST = (
    "tests/test_schemathesis.py::test_schemathesis_every_operation_passes_every_check",
    "tests/test_bench_smoke.py::",
    "tests/test_crash_safety.py::",
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if hasattr(config, "workerinput"):  # only in an xdist worker; every worker sorts alike
        items.sort(key=lambda item: not item.nodeid.startswith(LONG_FIRST))


def make_config(data: Path, **overrides: Any) -> Config:
    defaults: dict[str, Any] = {"http": "127.0.0.1:0", "mqtt": "127.0.0.1:0"}
    return Config(data=str(data), admin_token=ADMIN_TOKEN, **{**defaults, **overrides})


async def eventually(probe: Callable[[], Awaitable[Any]], timeout: float = WAIT) -> Any:
    """The first truthy result of `probe`, asked again until `timeout`: for effects nothing
    acknowledges, such as a QoS 0 message."""
    async with asyncio.timeout(timeout):
        while not (found := await probe()):  # noqa: ASYNC110 - no event to wait on
            await asyncio.sleep(0.05)
    return found


class Api:
    """A tiny REST client: `await api.post(path, body)` answers (status, json)."""

    def __init__(self, session: aiohttp.ClientSession, base: str, token: str) -> None:
        self.session, self.base, self.token = session, base, token

    def as_token(self, token: str) -> "Api":
        return Api(self.session, self.base, token)

    async def call(
        self, method: str, path: str, body: Any = None, raw: bytes | None = None
    ) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        data = raw if raw is not None else (None if body is None else json.dumps(body))
        if data is not None:
            headers["Content-Type"] = "application/json"
        async with self.session.request(method, self.base + path, data=data, headers=headers) as r:
            text = await r.text()
            try:
                payload = json.loads(text) if text else None
            except json.JSONDecodeError:
                payload = text
            return r.status, payload

    async def get(self, path: str) -> tuple[int, Any]:
        return await self.call("GET", path)

    async def post(self, path: str, body: Any = None) -> tuple[int, Any]:
        return await self.call("POST", path, body)

    async def put(self, path: str, body: Any = None) -> tuple[int, Any]:
        return await self.call("PUT", path, body)

    async def patch(self, path: str, body: Any = None) -> tuple[int, Any]:
        return await self.call("PATCH", path, body)

    async def delete(self, path: str) -> tuple[int, Any]:
        return await self.call("DELETE", path)

    async def ok(self, method: str, path: str, body: Any = None, status: int | None = None) -> Any:
        got, payload = await self.call(method, path, body)
        assert got < 300 if status is None else got == status, (method, path, got, payload)
        return payload


@pytest.fixture
async def service(tmp_path: Path) -> AsyncIterator[app.Service]:
    async with app.start(make_config(tmp_path / "data")) as running:
        yield running


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
def api(service: app.Service, http: aiohttp.ClientSession) -> Api:
    return Api(http, service.http_url, ADMIN_TOKEN)


class Device:
    """A connected device: a real MQTT client with its own message queue."""

    def __init__(self, client: aiomqtt.Client, device_id: str) -> None:
        self.client, self.id = client, device_id

    def topic(self, sub: str) -> str:
        return f"devices/{self.id}/{sub}"

    async def next(self, sub: str | None = None, timeout: float = WAIT) -> tuple[str, Any]:
        """The next message (on `devices/{id}/{sub}` when given), as (topic, decoded JSON)."""
        async with asyncio.timeout(timeout):
            async for message in self.client.messages:
                topic = str(message.topic)
                if sub is None or topic == self.topic(sub):
                    return topic, json.loads(bytes(message.payload))
        raise AssertionError("message stream ended")

    async def desired(self, min_version: int = 0, timeout: float = WAIT) -> dict[str, Any]:
        async with asyncio.timeout(timeout):
            while True:
                _topic, doc = await self.next("desired", timeout)
                if doc["version"] >= min_version:
                    return dict(doc)

    async def nothing(self, seconds: float = 0.5) -> None:
        """Assert that no message arrives for a while."""
        with contextlib.suppress(TimeoutError):
            got = await self.next(timeout=seconds)
            raise AssertionError(f"unexpected message {got}")

    async def publish(self, sub: str, payload: Any, qos: int = 1) -> None:
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        await self.client.publish(self.topic(sub), data, qos=qos)


DeviceFactory = Callable[..., contextlib.AbstractAsyncContextManager[Device]]


@pytest.fixture
def connect(service: app.Service) -> DeviceFactory:
    @contextlib.asynccontextmanager
    async def open_device(
        device_id: str,
        key: str,
        subscribe: tuple[str, ...] = ("desired", "commands", "errors"),
        clean_session: bool = True,
    ) -> AsyncIterator[Device]:
        client = aiomqtt.Client(
            "127.0.0.1",
            service.mqtt_port,
            identifier=device_id,
            username=device_id,
            password=key,
            clean_session=clean_session,
            timeout=WAIT,
        )
        async with client:
            device = Device(client, device_id)
            for sub in subscribe:
                await client.subscribe(device.topic(sub), qos=1)
            yield device

    return open_device


SCHEMA = {
    "type": "object",
    "properties": {"setpoint": {"type": "number", "minimum": 5, "maximum": 30}},
    "required": ["setpoint"],
    "additionalProperties": False,
}


class Fleet:
    """Helpers that build objects through the REST API."""

    def __init__(self, api: Api) -> None:
        self.api = api

    async def profile(self, name: str = "thermostat", schema: dict[str, Any] | None = None) -> str:
        body = {"name": name, "config_schema": schema or SCHEMA}
        return str((await self.api.ok("POST", "/api/v1/device-profiles", body))["id"])

    async def sensor_profile(
        self, name: str = "camera", schema: dict[str, Any] | None = None
    ) -> str:
        body = {"name": name, "config_schema": schema or {"type": "object"}}
        return str((await self.api.ok("POST", "/api/v1/sensor-profiles", body))["id"])

    async def device(self, profile_id: str, name: str = "dev", **extra: Any) -> tuple[str, str]:
        body = {"name": name, "profile_id": profile_id, **extra}
        created = await self.api.ok("POST", "/api/v1/devices", body, status=201)
        return str(created["id"]), str(created["access_key"])

    async def artefact(
        self, profile_id: str, content: Any, name: str = "thermostat"
    ) -> dict[str, Any]:
        body = {"name": name, "profile_id": profile_id, "content": content}
        return dict(await self.api.ok("POST", "/api/v1/config-artefacts", body, status=201))

    async def bind(
        self, target_type: str, target_id: str, artefact_id: str, priority: int = 0
    ) -> dict[str, Any]:
        body = {
            "target_type": target_type,
            "target_id": target_id,
            "artefact_id": artefact_id,
            "priority": priority,
        }
        return dict(await self.api.ok("PUT", "/api/v1/desired-state-bindings", body))

    async def group(self, name: str, device_ids: list[str]) -> str:
        body = {"name": name, "device_ids": device_ids}
        return str((await self.api.ok("POST", "/api/v1/device-groups", body, status=201))["id"])


@pytest.fixture
def fleet(api: Api) -> Fleet:
    return Fleet(api)


# -- a real S3 API server (moto's server mode) for the S3 backend tests --------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def wait_until_up(url: str, process: asyncio.subprocess.Process, log: Path) -> None:
    """Poll until moto answers; fail (never skip) if it dies or stays silent for 30 s."""
    async with asyncio.timeout(30), aiohttp.ClientSession() as http:
        while True:
            if process.returncode is not None:
                output = await asyncio.to_thread(log.read_text)
                pytest.fail(f"moto server exited with {process.returncode}:\n{output}")
            try:
                async with http.get(f"{url}/moto-api/") as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientConnectionError:
                pass
            await asyncio.sleep(0.1)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def moto_url(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[str]:
    port = free_port()
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    with log.open("wb") as out:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "moto.server",
            "-H",
            "127.0.0.1",
            "-p",
            str(port),
            stdout=out,
            stderr=asyncio.subprocess.STDOUT,
        )
    try:
        await wait_until_up(f"http://127.0.0.1:{port}", process, log)
        yield f"http://127.0.0.1:{port}"
    finally:
        with contextlib.suppress(ProcessLookupError):  # it may have exited on its own
            process.terminate()
        try:
            async with asyncio.timeout(10):
                await process.wait()
        except TimeoutError:
            process.kill()
            await process.wait()
