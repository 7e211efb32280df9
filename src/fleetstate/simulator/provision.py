"""Provisioning a simulated fleet through the service's own APIs.

Devices are created over REST (`POST /api/v1/devices`) or registered with a hardware key
(`POST /v1/devices`), a bounded number at a time. The broker address comes from `--mqtt` or from
the service itself: registration answers it, and without a hardware key the first device is
registered with a single-use key made for the purpose.
"""

import asyncio
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar
from urllib.parse import quote

import aiohttp
import msgspec

from fleetstate.simulator.options import DeviceSpec, Options, plan

PROFILE_SCHEMA = {"type": "object"}
T = TypeVar("T")
Progress = Callable[[int], None]


class ProvisioningError(Exception):
    def __init__(self, method: str, path: str, status: int, body: Any) -> None:
        super().__init__(f"{method} {path} answered {status}: {body}")
        self.status = status


class Provisioned(msgspec.Struct, frozen=True, kw_only=True):
    specs: list[DeviceSpec]
    mqtt_url: str
    profile_id: str | None
    group_id: str | None
    seconds: float


class Api:
    """Just enough of a REST client: JSON in and out, errors as ProvisioningError."""

    def __init__(self, session: aiohttp.ClientSession, base: str, token: str | None) -> None:
        self.session, self.base = session, base.rstrip("/")
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}

    async def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        data = None if body is None else msgspec.json.encode(body)
        headers = {**self.headers, "Content-Type": "application/json"}
        async with self.session.request(method, self.base + path, data=data, headers=headers) as r:
            raw = await r.read()
            try:
                return r.status, msgspec.json.decode(raw) if raw else None
            except msgspec.DecodeError:
                return r.status, raw.decode(errors="replace")

    async def ok(self, method: str, path: str, body: Any = None) -> Any:
        status, answer = await self.call(method, path, body)
        if status >= 300:
            raise ProvisioningError(method, path, status, answer)
        return answer

    async def find(self, path: str, name: str) -> str | None:
        """The id of the item of that name in a paginated list."""
        cursor = ""
        while True:
            listed = await self.ok("GET", f"{path}?limit=1000{cursor}")
            found = next((i["id"] for i in listed["items"] if i.get("name") == name), None)
            if found is not None or listed.get("next_cursor") is None:
                return None if found is None else str(found)
            cursor = f"&cursor={quote(listed['next_cursor'])}"


async def provision(
    options: Options, session: aiohttp.ClientSession, progress: Progress | None = None
) -> Provisioned:
    started = time.monotonic()
    api = Api(session, options.http_url, options.token)
    parts = plan(options)
    profile_id = await ensure_profile(api, options.profile) if options.token else None
    run = secrets.token_hex(3)
    mqtt_url = options.mqtt_url
    first: list[tuple[str, str]] = []
    if options.hardware_key is None and mqtt_url is None and profile_id is not None:
        # The service says where its broker is when a device registers.
        key = await api.ok("POST", "/api/v1/hardware-keys", _single_use(profile_id))
        device_id, access_key, mqtt_url = await _register(api, key["key"], f"sim-{run}-0")
        await api.ok("DELETE", f"/api/v1/hardware-keys/{key['id']}")
        first = [(device_id, access_key)]

    async def make(i: int) -> tuple[str, str]:
        nonlocal mqtt_url
        name = f"sim-{run}-{i}"
        if options.hardware_key is not None:
            device_id, access_key, mqtt_url = await _register(api, options.hardware_key, name)
            return device_id, access_key
        body = {"name": name, "profile_id": profile_id}
        created = await api.ok("POST", "/api/v1/devices", body)
        return str(created["id"]), str(created["access_key"])

    rest = await bounded(
        range(len(first), options.devices), make, options.provision_concurrency, progress
    )
    made = first + rest
    specs = [DeviceSpec(i, k, b, t) for (i, k), (b, t) in zip(made, parts, strict=True)]
    group_id = None
    if options.group is not None:
        group_id = await ensure_group(api, options.group, [s.id for s in specs])
    if mqtt_url is None:
        raise ValueError("give --mqtt: the service did not say where its broker is")
    return Provisioned(
        specs=specs,
        mqtt_url=mqtt_url,
        profile_id=profile_id,
        group_id=group_id,
        seconds=time.monotonic() - started,
    )


def _single_use(profile_id: str) -> dict[str, Any]:
    return {"profile_id": profile_id, "name": "fleetstate simulate", "device_limit": 1}


async def _register(api: Api, hardware_key: str, sn: str) -> tuple[str, str, str]:
    body = {"hardware_key": hardware_key, "sn": sn, "firmware_version": "1.0.0", "name": sn}
    done = await api.ok("POST", "/v1/devices", body)
    return str(done["id"]), str(done["access_key"]), str(done["mqtt_hub_url"])


async def bounded(
    items: range,
    make: Callable[[int], Awaitable[T]],
    concurrency: int,
    progress: Progress | None = None,
) -> list[T]:
    """`make(i)` for every item, `concurrency` at a time, results in order."""
    results: dict[int, T] = {}
    queue = iter(items)

    async def worker() -> None:
        for i in queue:
            results[i] = await make(i)
            if progress is not None:
                progress(1)

    async with asyncio.TaskGroup() as tasks:
        for _ in range(max(1, concurrency)):
            tasks.create_task(worker())
    return [results[i] for i in items]


async def ensure_profile(api: Api, ref: str) -> str:
    """The device profile with this id or name; created (accepting any object) when missing."""
    status, found = await api.call("GET", f"/api/v1/device-profiles/{quote(ref, safe='')}")
    if status == 200:
        return str(found["id"])
    by_name = await api.find("/api/v1/device-profiles", ref)
    if by_name is not None:
        return by_name
    created = await api.ok(
        "POST", "/api/v1/device-profiles", {"name": ref, "config_schema": PROFILE_SCHEMA}
    )
    return str(created["id"])


async def ensure_group(api: Api, name: str, device_ids: list[str]) -> str:
    """A group of that name holding the devices: created with them, or joined one by one."""
    status, created = await api.call(
        "POST", "/api/v1/device-groups", {"name": name, "device_ids": device_ids}
    )
    if status == 201:
        return str(created["id"])
    group_id = await api.find("/api/v1/device-groups", name)
    if status != 409 or group_id is None:
        raise ProvisioningError("POST", "/api/v1/device-groups", status, created)

    async def join(i: int) -> None:
        await api.ok("PUT", f"/api/v1/device-groups/{group_id}/devices/{device_ids[i]}")

    await bounded(range(len(device_ids)), join, 16)
    return group_id
