"""`fleetstate serve` as a real process: addresses on port 0, bootstrap, restarts, signals."""

import asyncio
import os
import signal
import stat
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import aiomqtt
import pytest

from conftest import SCHEMA, WAIT, Api, Device
from fleetstate import config
from fleetstate.errors import Invalid

TOKEN = "serve-test-token"


class Running:
    def __init__(
        self, proc: asyncio.subprocess.Process, http_url: str, mqtt_port: int, lines: list[str]
    ) -> None:
        self.proc, self.http_url, self.mqtt_port, self.lines = proc, http_url, mqtt_port, lines


@asynccontextmanager
async def serve(data: Path, env: dict[str, str] | None = None) -> AsyncIterator[Running]:
    environ = {**os.environ, "FLEETSTATE_ADMIN_TOKEN": TOKEN, **(env or {})}
    environ = {k: v for k, v in environ.items() if v != ""}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "fleetstate",
        "serve",
        "--data",
        str(data),
        "--http",
        "127.0.0.1:0",
        "--mqtt",
        "127.0.0.1:0",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
        env=environ,
    )
    assert proc.stdout is not None
    lines: list[str] = []
    try:
        async with asyncio.timeout(WAIT * 2):
            while not any(line.startswith("mqtt listening on") for line in lines):
                line = (await proc.stdout.readline()).decode()
                assert line, f"serve exited early: {lines}"
                lines.append(line.strip())
        http_url = next(x for x in lines if x.startswith("http ")).split()[-1]
        mqtt_url = next(x for x in lines if x.startswith("mqtt ")).split()[-1]
        yield Running(proc, http_url, int(mqtt_url.rsplit(":", 1)[1]), lines)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def _stop(running: Running, signum: int) -> int:
    running.proc.send_signal(signum)
    async with asyncio.timeout(WAIT * 2):
        return await running.proc.wait()


@asynccontextmanager
async def device(running: Running, device_id: str, key: str) -> AsyncIterator[Device]:
    client = aiomqtt.Client(
        "127.0.0.1",
        running.mqtt_port,
        identifier=device_id,
        username=device_id,
        password=key,
        timeout=WAIT,
    )
    async with client:
        await client.subscribe(f"devices/{device_id}/desired", qos=1)
        yield Device(client, device_id)


@pytest.mark.parametrize("signum", [signal.SIGKILL, signal.SIGTERM])
async def test_serve_restart_keeps_everything_acknowledged(tmp_path: Path, signum: int) -> None:
    data = tmp_path / "data"
    async with serve(data) as running, aiohttp.ClientSession() as session:
        api = Api(session, running.http_url, TOKEN)
        profile = await api.ok(
            "POST", "/api/v1/device-profiles", {"name": "t", "config_schema": SCHEMA}
        )
        created = await api.ok(
            "POST", "/api/v1/devices", {"name": "d", "profile_id": profile["id"]}
        )
        device_id, key = created["id"], created["access_key"]
        artefact = await api.ok(
            "POST",
            "/api/v1/config-artefacts",
            {"name": "t", "profile_id": profile["id"], "content": {"setpoint": 19}},
        )
        await api.ok(
            "PUT",
            "/api/v1/desired-state-bindings",
            {"target_type": "device", "target_id": device_id, "artefact_id": artefact["id"]},
        )
        async with device(running, device_id, key) as dev:
            before = await dev.desired()
            await dev.publish("reported", {"version": before["version"], "status": "ACCEPTED"})
            assert (await api.ok("GET", f"/api/v1/devices/{device_id}"))["online"] is True
            code = await _stop(running, signum)
    assert code == (0 if signum == signal.SIGTERM else -signal.SIGKILL)
    async with serve(data) as running, aiohttp.ClientSession() as session:
        api = Api(session, running.http_url, TOKEN)
        row = await api.ok("GET", f"/api/v1/devices/{device_id}")
        assert (row["reported_status"], row["reported_version"]) == ("ACCEPTED", before["version"])
        assert row["online"] is False  # never online from stale state
        async with device(running, device_id, key) as dev:
            assert await dev.desired() == before


async def test_serve_generates_admin_token_file_when_none_is_given(tmp_path: Path) -> None:
    data = tmp_path / "data"
    async with (
        serve(data, env={"FLEETSTATE_ADMIN_TOKEN": ""}) as running,
        aiohttp.ClientSession() as s,
    ):
        token_file = data / "admin-token"
        assert any(str(token_file) in line for line in running.lines)
        assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
        token = token_file.read_text().strip()
        assert (await Api(s, running.http_url, token).get("/api/v1/devices"))[0] == 200
        assert (await Api(s, running.http_url, "guess").get("/api/v1/devices"))[0] == 401
        await _stop(running, signal.SIGTERM)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "fleetstate",
        "token",
        "create",
        "--org",
        "default",
        "--data",
        str(data),
        stdout=asyncio.subprocess.PIPE,
    )
    out, _ = await proc.communicate()
    assert proc.returncode == 0
    new_token = out.decode().strip()
    async with (
        serve(data, env={"FLEETSTATE_ADMIN_TOKEN": ""}) as running,
        aiohttp.ClientSession() as s,
    ):
        assert (await Api(s, running.http_url, new_token).get("/api/v1/devices"))[0] == 200


def test_serve_config_precedence_file_then_flags_then_env(tmp_path: Path) -> None:
    file = tmp_path / "fleetstate.toml"
    file.write_text('data = "/from-file"\nhttp = "127.0.0.1:1"\nmqtt = "127.0.0.1:2"\n')
    loaded = config.load(
        file, {"http": "127.0.0.1:3", "mqtt": "127.0.0.1:4"}, {"FLEETSTATE_MQTT": "127.0.0.1:5"}
    )
    assert (loaded.data, loaded.http, loaded.mqtt) == ("/from-file", "127.0.0.1:3", "127.0.0.1:5")


def test_serve_config_rejects_unknown_keys_and_bad_files(tmp_path: Path) -> None:
    file = tmp_path / "bad.toml"
    file.write_text('colour = "blue"\n')
    with pytest.raises(Invalid, match="colour"):
        config.load(file, {}, {})
    file.write_text("not = [toml")
    with pytest.raises(Invalid):
        config.load(file, {}, {})
    with pytest.raises(Invalid, match="does not exist"):
        config.load(tmp_path / "missing.toml", {}, {})


def test_serve_config_rejects_an_unknown_bus_kind(tmp_path: Path) -> None:
    file = tmp_path / "bus.toml"
    file.write_text('[bus]\nkind = "kafka"\n')
    with pytest.raises(Invalid, match=r"'kafka'.*\$\.bus\.kind"):
        config.load(file, {}, {})
    file.write_text('[bus]\nkind = "embedded"\n')
    assert config.load(file, {}, {}).bus.kind == "embedded"


def test_serve_documented_example_config_loads() -> None:
    example = Path(__file__).parent.parent / "config" / "fleetstate.toml"
    assert config.load(example, {}, {}) == config.Config()


def test_serve_broker_packet_limit_leaves_room_above_the_payload_limit() -> None:
    """`[broker] max_packet_bytes` defaults to twice the payload limit, so a payload a little too
    big is answered with `too_large` instead of closing the connection (config repeats the
    number so that it imports nothing of the bus)."""
    from fleetstate.bus import MAX_PAYLOAD

    assert config.BrokerLimits().max_packet_bytes == 2 * MAX_PAYLOAD
