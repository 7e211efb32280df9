"""Hardware keys and device self-registration (SPEC section 4, `POST /v1/devices`)."""

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import aiomqtt
import pytest

from conftest import ADMIN_TOKEN, WAIT, Api, DeviceFactory, Fleet, make_config
from fleetstate import app
from fleetstate.config import Config
from test_device_api import NOT_AUTHORIZED, device_call
from test_events import stream

KEYS = "/api/v1/hardware-keys"


async def hardware_key(api: Api, profile_id: str, **extra: Any) -> dict[str, Any]:
    return dict(await api.ok("POST", KEYS, {"profile_id": profile_id, **extra}, status=201))


async def register(api: Api, key: str, sn: str, **extra: Any) -> tuple[int, Any]:
    body = {"hardware_key": key, "sn": sn, "firmware_version": "1.0.0", **extra}
    return await device_call(api, "POST", "/v1/devices", None, body)


async def device_count(api: Api) -> int:
    return len((await api.ok("GET", "/api/v1/devices"))["items"])


async def test_provisioning_key_is_shown_once_and_registers_a_working_device(
    api: Api, fleet: Fleet, service: app.Service, connect: DeviceFactory
) -> None:
    profile = await fleet.profile()
    created = await hardware_key(api, profile, name="batch 7", device_limit=10)
    assert created["key"].startswith("fhk_")
    shown = await api.ok("GET", f"{KEYS}/{created['id']}")
    assert "key" not in shown
    assert "secret_hash" not in shown
    assert (shown["devices_registered"], shown["revoked"]) == (0, False)
    status, registered = await register(
        api, created["key"], "SN-1", mac="11:22:33:44:55:66", name="lobby", details={"rev": "B"}
    )
    assert status == 201, registered
    assert set(registered) == {"id", "access_key", "hub_url", "mqtt_hub_url"}
    assert (registered["hub_url"], registered["mqtt_hub_url"]) == (
        service.http_url,
        service.mqtt_url,
    )
    device = await api.ok("GET", f"/api/v1/devices/{registered['id']}")
    assert (device["name"], device["serial"], device["profile_id"]) == ("lobby", "SN-1", profile)
    assert device["firmware_version"] == "1.0.0"
    assert device["desired_version"] >= 1
    assert (await api.ok("GET", f"{KEYS}/{created['id']}"))["devices_registered"] == 1
    async with connect(registered["id"], registered["access_key"]) as mqtt_device:
        assert (await mqtt_device.desired())["configs"] == []


async def test_provisioning_name_defaults_to_the_serial(api: Api, fleet: Fleet) -> None:
    created = await hardware_key(api, await fleet.profile())
    status, registered = await register(api, created["key"], "SN-9")
    assert status == 201
    assert (await api.ok("GET", f"/api/v1/devices/{registered['id']}"))["name"] == "SN-9"


async def test_provisioning_same_sn_with_another_key_is_409_and_takes_no_slot(
    api: Api, fleet: Fleet
) -> None:
    profile = await fleet.profile()
    first = await hardware_key(api, profile)
    other = await hardware_key(api, profile, device_limit=2)
    assert (await register(api, first["key"], "A"))[0] == 201
    status, answer = await register(api, other["key"], "A")
    assert status == 409
    assert isinstance(answer["error"], str)
    assert (await register(api, other["key"], "B"))[0] == 201
    assert (await register(api, other["key"], "C"))[0] == 201
    assert await register(api, other["key"], "D") == (401, NOT_AUTHORIZED)
    assert await device_count(api) == 3


async def test_provisioning_an_operators_device_cannot_be_taken_over_by_sn(
    api: Api, fleet: Fleet
) -> None:
    profile = await fleet.profile()
    device_id, key = await fleet.device(profile, serial="OP-1")
    created = await hardware_key(api, profile)
    assert (await register(api, created["key"], "OP-1"))[0] == 409
    status, _ = await device_call(api, "GET", f"/v1/devices/{device_id}/config", key)
    assert status == 200  # its key still works


async def test_provisioning_same_sn_under_another_profile_registers(api: Api, fleet: Fleet) -> None:
    one = await hardware_key(api, await fleet.profile("one"))
    two = await hardware_key(api, await fleet.profile("two"))
    assert (await register(api, one["key"], "A"))[0] == 201
    assert (await register(api, two["key"], "A"))[0] == 201


async def test_provisioning_exhausted_key_is_401(api: Api, fleet: Fleet) -> None:
    created = await hardware_key(api, await fleet.profile(), device_limit=1)
    assert (await register(api, created["key"], "A"))[0] == 201
    assert await register(api, created["key"], "B") == (401, NOT_AUTHORIZED)
    assert await device_count(api) == 1


async def test_provisioning_racing_registrations_never_exceed_the_limit(
    api: Api, fleet: Fleet
) -> None:
    created = await hardware_key(api, await fleet.profile(), device_limit=3)
    results = await asyncio.gather(*(register(api, created["key"], f"SN-{i}") for i in range(8)))
    assert sorted(status for status, _ in results) == [201] * 3 + [401] * 5
    assert await device_count(api) == 3
    assert (await api.ok("GET", f"{KEYS}/{created['id']}"))["devices_registered"] == 3


async def test_provisioning_revoked_key_is_401_both_ways(api: Api, fleet: Fleet) -> None:
    profile = await fleet.profile()
    deleted = await hardware_key(api, profile)
    assert (await register(api, deleted["key"], "A"))[0] == 201
    await api.ok("DELETE", f"{KEYS}/{deleted['id']}", status=204)
    assert await register(api, deleted["key"], "B") == (401, NOT_AUTHORIZED)
    revoked = await hardware_key(api, profile)
    answer = await api.ok("POST", f"{KEYS}/{revoked['id']}/revoke")
    assert answer["revoked"] is True
    assert answer["revoked_at"] is not None
    assert await register(api, revoked["key"], "C") == (401, NOT_AUTHORIZED)
    listed = await api.ok("GET", KEYS)
    assert {k["id"]: k["revoked"] for k in listed["items"]} == {
        deleted["id"]: True,
        revoked["id"]: True,
    }
    assert await device_count(api) == 1


async def test_provisioning_wrong_keys_are_401(api: Api, fleet: Fleet) -> None:
    created = await hardware_key(api, await fleet.profile())
    forged = created["key"][:-4] + "AAAA"
    for key in ("nope", "fhk_x_y", "fhk__", f"fhk_{created['id']}_", forged):
        assert await register(api, key, "A") == (401, NOT_AUTHORIZED), key
    assert await device_count(api) == 0


async def test_provisioning_bad_registrations_are_400_and_create_nothing(
    api: Api, fleet: Fleet
) -> None:
    created = await hardware_key(api, await fleet.profile(), device_limit=1)
    good = {"hardware_key": created["key"], "sn": "A", "firmware_version": "1.0.0"}
    for body in (
        {**good, "colour": "red"},
        {"hardware_key": created["key"], "firmware_version": "1.0.0"},
        {**good, "sn": ""},
        {**good, "sn": "   "},
        {**good, "sn": 7},
        {**good, "details": "not an object"},
    ):
        status, answer = await device_call(api, "POST", "/v1/devices", None, body)
        assert status == 400, (body, answer)
        assert isinstance(answer["error"], str)
    status, _ = await device_call(api, "POST", "/v1/devices", None, raw=b"{nope")
    assert status == 400
    assert await device_count(api) == 0
    assert (await register(api, created["key"], "A"))[0] == 201  # no slot was used


async def test_provisioning_key_needs_an_own_device_profile(api: Api, fleet: Fleet) -> None:
    sensor = await fleet.sensor_profile()
    assert (await api.post(KEYS, {"profile_id": sensor}))[0] == 404
    assert (await api.post(KEYS, {"profile_id": "unknown"}))[0] == 404
    assert (await api.post(KEYS, {"profile_id": sensor, "device_limit": 0}))[0] == 400
    assert (await api.post(KEYS, {"profile_id": sensor, "colour": 1}))[0] == 400
    org = await api.ok("POST", "/api/v1/organizations", {"slug": "acme", "name": "A"}, status=201)
    acme = api.as_token(org["token"])
    profile = await fleet.profile()
    assert (await acme.post(KEYS, {"profile_id": profile}))[0] == 404
    created = await hardware_key(api, profile)
    assert (await acme.get(f"{KEYS}/{created['id']}"))[0] == 404
    assert (await acme.delete(f"{KEYS}/{created['id']}"))[0] == 404
    assert (await acme.ok("GET", KEYS))["items"] == []
    assert (await api.ok("GET", KEYS))["items"][0]["revoked"] is False


async def test_provisioning_hub_urls_come_from_the_configuration(tmp_path: Path) -> None:
    config = make_config(
        tmp_path, hub_url="https://fleet.example.com", mqtt_hub_url="mqtts://fleet.example.com"
    )
    async with _running(config) as api:
        profile = str((await api.ok("POST", "/api/v1/device-profiles", _PROFILE))["id"])
        created = await hardware_key(api, profile)
        status, registered = await register(api, created["key"], "A")
    assert status == 201
    assert registered["hub_url"] == "https://fleet.example.com"
    assert registered["mqtt_hub_url"] == "mqtts://fleet.example.com"


_PROFILE = {"name": "p", "config_schema": {"type": "object"}}


@contextlib.asynccontextmanager
async def _running(config: Config) -> AsyncIterator[Api]:
    async with app.start(config) as service, aiohttp.ClientSession() as session:
        yield Api(session, service.http_url, ADMIN_TOKEN)


async def test_provisioning_registering_again_after_a_rotation_gives_the_device_a_new_key(
    api: Api, fleet: Fleet, connect: DeviceFactory
) -> None:
    created = await hardware_key(api, await fleet.profile(), device_limit=1)
    status, first = await register(api, created["key"], "SN-1")
    assert status == 201
    rotated = await api.ok("POST", f"/api/v1/devices/{first['id']}/access-key")
    # Xyte's agent got 401 with its old key, wiped its state and registers again.
    async with connect(first["id"], rotated["access_key"]) as session, stream(api) as events:
        await session.desired()
        status, again = await register(api, created["key"], "SN-1", firmware_version="1.1.0")
        assert status == 200, again
        assert again["id"] == first["id"]
        assert again["access_key"] not in (first["access_key"], rotated["access_key"])
        event = await events.next("device")
        assert (event["device_id"], event["action"]) == (first["id"], "re_registered")
        with pytest.raises(aiomqtt.MqttError):  # the session of the key before is over
            async with asyncio.timeout(WAIT):
                async for _message in session.client.messages:
                    pass
    for dead in (first["access_key"], rotated["access_key"]):
        path = f"/v1/devices/{first['id']}/config"
        assert await device_call(api, "GET", path, dead) == (401, NOT_AUTHORIZED)
    path = f"/v1/devices/{first['id']}/config"
    assert (await device_call(api, "GET", path, again["access_key"]))[0] == 200
    history = (await api.ok("GET", f"/api/v1/devices/{first['id']}/history"))["items"]
    assert [h["action"] for h in history] == ["re_registered", "access_key_rotated"]
    assert history[0]["detail"]["sn"] == "SN-1"
    device = await api.ok("GET", f"/api/v1/devices/{first['id']}")
    assert device["firmware_version"] == "1.1.0"
    assert await device_count(api) == 1
    assert (await api.ok("GET", f"{KEYS}/{created['id']}"))["devices_registered"] == 1


async def test_provisioning_device_limit_counts_devices_not_registrations(
    api: Api, fleet: Fleet
) -> None:
    created = await hardware_key(api, await fleet.profile(), device_limit=1)
    status, first = await register(api, created["key"], "A")
    assert status == 201
    for _ in range(3):
        assert (await register(api, created["key"], "A"))[0] == 200
    assert await register(api, created["key"], "B") == (401, NOT_AUTHORIZED)
    await api.ok("DELETE", f"/api/v1/devices/{first['id']}", status=204)
    assert (await api.ok("GET", f"{KEYS}/{created['id']}"))["devices_registered"] == 0
    assert (await register(api, created["key"], "B"))[0] == 201


async def test_provisioning_revoked_key_cannot_register_again(api: Api, fleet: Fleet) -> None:
    created = await hardware_key(api, await fleet.profile())
    status, first = await register(api, created["key"], "A")
    assert status == 201
    await api.ok("POST", f"{KEYS}/{created['id']}/revoke")
    assert await register(api, created["key"], "A") == (401, NOT_AUTHORIZED)
    path = f"/v1/devices/{first['id']}/config"
    assert (await device_call(api, "GET", path, first["access_key"]))[0] == 200


async def test_provisioning_takes_xytes_optional_fields(api: Api, fleet: Fleet) -> None:
    created = await hardware_key(api, await fleet.profile())
    status, registered = await register(
        api,
        created["key"],
        "1000",
        cloud_id="QzuaKQNOxgMww6gUTTmD65em",
        mac="11:22:33:44:55:66",
        sub_model="XL",
        name="Sample device",
    )
    assert status == 201, registered
    for extra in ({"parent_id": "x"}, {"model_id": "y"}, {"sub_model": 3}):
        status, answer = await register(api, created["key"], "1001", **extra)
        assert status == 400, (extra, answer)
    assert await device_count(api) == 1
