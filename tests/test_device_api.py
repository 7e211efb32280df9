"""The device HTTP API (SPEC section 4): device-key auth, the device's own update, desired state,
files, licenses, info and commands over HTTP, and key rotation on HTTP and MQTT."""

import asyncio
import base64
import contextlib
import hashlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import aiomqtt
import pytest

from conftest import ADMIN_TOKEN, WAIT, Api, DeviceFactory, Fleet, eventually, make_config
from fleetstate import app
from fleetstate.api.context import SERVICES
from fleetstate.app import Service
from fleetstate.config import DumpConfig, PresenceConfig
from fleetstate.service import files
from fleetstate.service.http_presence import HttpPresence
from test_events import stream

NOT_AUTHORIZED = {"error": "Not authorized"}
ANSWER_FIELDS = {
    "config_version",
    "command",
    "new_licenses",
    "info_version",
    "latest_fw_version",
    "latest_fw_file_id",
    "space_data_version",
    "success",
}


async def device_call(
    api: Api, method: str, path: str, key: str | None, body: Any = None, raw: bytes | None = None
) -> tuple[int, Any]:
    """A request as a device makes it: the bare access key in `Authorization`."""
    headers = {} if key is None else {"Authorization": key}
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    if data is not None:
        headers["Content-Type"] = "application/json"
    url = path if path.startswith("http") else api.base + path
    async with api.session.request(method, url, data=data, headers=headers) as response:
        if response.content_type == "application/json":
            return response.status, await response.json()
        return response.status, await response.read()


async def telemetry_answer(api: Api, device_id: str, key: str, **body: Any) -> dict[str, Any]:
    status, answer = await device_call(
        api, "POST", f"/v1/devices/{device_id}/telemetry", key, {"status": "online", **body}
    )
    assert status == 200, answer
    return dict(answer)


async def upload_file(
    api: Api, profile_id: str, version: str, content: bytes, **extra: Any
) -> dict[str, Any]:
    body = {
        "profile_id": profile_id,
        "name": "fw",
        "version": version,
        "content": base64.b64encode(content).decode(),
        **extra,
    }
    return dict(await api.ok("POST", "/api/v1/files", body, status=201))


# -- authentication ------------------------------------------------------------------------------


async def test_device_api_wrong_missing_and_other_devices_keys_are_401(
    api: Api, fleet: Fleet
) -> None:
    profile = await fleet.profile()
    device_id, key = await fleet.device(profile, "a")
    other_id, other_key = await fleet.device(profile, "b")
    path = f"/v1/devices/{device_id}/config"
    assert (await device_call(api, "GET", path, key))[0] == 200
    for wrong in (None, "", "nope", other_key, f"Bearer {key}"):
        assert await device_call(api, "GET", path, wrong) == (401, NOT_AUTHORIZED), wrong
    assert await device_call(api, "GET", f"/v1/devices/{other_id}/config", key) == (
        401,
        NOT_AUTHORIZED,
    )
    assert await device_call(api, "GET", "/v1/devices/unknown/config", key) == (
        401,
        NOT_AUTHORIZED,
    )


async def test_device_api_deleted_device_is_401(api: Api, fleet: Fleet) -> None:
    device_id, key = await fleet.device(await fleet.profile())
    await telemetry_answer(api, device_id, key)
    await api.ok("DELETE", f"/api/v1/devices/{device_id}", status=204)
    status, answer = await device_call(
        api, "POST", f"/v1/devices/{device_id}/telemetry", key, {"status": "online"}
    )
    assert (status, answer) == (401, NOT_AUTHORIZED)


async def test_device_api_rotated_key_stops_working_on_http_at_once(api: Api, fleet: Fleet) -> None:
    device_id, old_key = await fleet.device(await fleet.profile())
    await telemetry_answer(api, device_id, old_key)  # the old key is now remembered as good
    rotated = await api.ok("POST", f"/api/v1/devices/{device_id}/access-key")
    status, answer = await device_call(
        api, "POST", f"/v1/devices/{device_id}/telemetry", old_key, {"status": "online"}
    )
    assert (status, answer) == (401, NOT_AUTHORIZED)
    await telemetry_answer(api, device_id, rotated["access_key"])


async def test_device_api_rotated_key_ends_a_connected_mqtt_session(
    api: Api, fleet: Fleet, connect: DeviceFactory
) -> None:
    device_id, old_key = await fleet.device(await fleet.profile())
    async with connect(device_id, old_key) as device:
        await device.desired()
        rotated = await api.ok("POST", f"/api/v1/devices/{device_id}/access-key")
        with pytest.raises(aiomqtt.MqttError):
            async with asyncio.timeout(WAIT):
                async for _message in device.client.messages:
                    pass
    with pytest.raises(aiomqtt.MqttError):
        async with connect(device_id, old_key):
            pass
    async with connect(device_id, rotated["access_key"]) as device:
        assert (await device.desired())["version"] >= 1


# -- the device itself and its desired state -----------------------------------------------------


async def test_device_api_put_updates_firmware_name_and_details(api: Api, fleet: Fleet) -> None:
    device_id, key = await fleet.device(await fleet.profile(), "old name")
    body = {"firmware_version": "2.0.1", "name": "new name", "details": {"rack": 4}}
    status, answer = await device_call(api, "PUT", f"/v1/devices/{device_id}", key, body)
    assert (status, answer) == (200, {"success": True})
    device = await api.ok("GET", f"/api/v1/devices/{device_id}")
    assert (device["firmware_version"], device["name"]) == ("2.0.1", "new name")


async def test_device_api_put_bad_bodies_are_400_and_change_nothing(api: Api, fleet: Fleet) -> None:
    device_id, key = await fleet.device(await fleet.profile(), "name")
    path = f"/v1/devices/{device_id}"
    for body in (
        {"firmware_version": "2.0.1", "colour": "red"},
        {"firmware_version": 2},
        {"name": "   "},
        {"details": [1, 2]},
        {"config_version": 99, "name": "other"},
    ):
        status, answer = await device_call(api, "PUT", path, key, body)
        assert status == 400, (body, answer)
        assert isinstance(answer["error"], str)
    assert (await device_call(api, "PUT", path, key, raw=b"{nope"))[0] == 400
    device = await api.ok("GET", f"/api/v1/devices/{device_id}")
    assert (device["firmware_version"], device["name"]) == (None, "name")


async def test_device_api_get_config_is_xytes_config_object(api: Api, fleet: Fleet) -> None:
    profile = await fleet.profile()
    device_id, key = await fleet.device(profile, "thermo")
    path = f"/v1/devices/{device_id}/config"
    status, empty = await device_call(api, "GET", path, key)
    assert (status, empty["config"], empty["components"]) == (200, {}, {})
    artefact = await fleet.artefact(profile, {"setpoint": 21})
    await fleet.bind("device", device_id, artefact["id"])
    status, answer = await device_call(api, "GET", path, key)
    assert status == 200
    fields = {"device_id", "name", "version", "last_updated", "config", "components", "desired"}
    assert set(answer) == fields
    assert (answer["device_id"], answer["name"]) == (device_id, "thermo")
    # The device slot's content is the configuration itself, as a Xyte device expects it.
    assert (answer["config"], answer["components"]) == ({"setpoint": 21}, {})
    document = await api.ok("GET", f"/api/v1/devices/{device_id}/desired-state")
    assert answer["version"] == document["version"]
    assert answer["last_updated"] == document["issued_at"]
    assert answer["desired"]["configs"] == document["configs"]  # with hashes, as on MQTT


async def test_device_api_get_config_shows_component_slots_beside_the_device_slot(
    api: Api, fleet: Fleet
) -> None:
    camera = await fleet.sensor_profile()
    profile = await fleet.profile()
    components = [{"name": "cam", "sensor_profile_id": camera}]
    device_id, key = await fleet.device(profile, components=components)
    device_artefact = await fleet.artefact(profile, {"setpoint": 19})
    camera_artefact = await fleet.artefact(camera, {"fps": 30}, name="camera")
    await fleet.bind("device", device_id, device_artefact["id"])
    await fleet.bind("component", f"{device_id}/cam", camera_artefact["id"])
    answer = (await device_call(api, "GET", f"/v1/devices/{device_id}/config", key))[1]
    assert (answer["config"], answer["components"]) == ({"setpoint": 19}, {"cam": {"fps": 30}})


async def test_device_api_put_config_version_acknowledges_like_an_accepted_report(
    api: Api, fleet: Fleet
) -> None:
    profile = await fleet.profile()
    device_id, key = await fleet.device(profile)
    artefact = await fleet.artefact(profile, {"setpoint": 21})
    binding = await fleet.bind("device", device_id, artefact["id"])
    version = (await telemetry_answer(api, device_id, key))["config_version"]
    status, _ = await device_call(
        api, "PUT", f"/v1/devices/{device_id}", key, {"config_version": version}
    )
    assert status == 200
    device = await api.ok("GET", f"/api/v1/devices/{device_id}")
    assert (device["reported_version"], device["config_status"]) == (version, "ACCEPTED")
    (row,) = (await api.ok("GET", f"/api/v1/desired-state-bindings/{binding['id']}"))["devices"]
    assert (row["status"], row["hash"]) == ("ACCEPTED", artefact["hash"])


async def test_device_api_put_unknown_config_version_is_400(api: Api, fleet: Fleet) -> None:
    device_id, key = await fleet.device(await fleet.profile())
    version = (await telemetry_answer(api, device_id, key))["config_version"]
    for bad in (version + 1, 0):
        status, answer = await device_call(
            api, "PUT", f"/v1/devices/{device_id}", key, {"config_version": bad}
        )
        assert status == 400, answer
    device = await api.ok("GET", f"/api/v1/devices/{device_id}")
    assert device["config_status"] == "PENDING"


async def test_device_api_post_config_is_the_twin_of_reported(api: Api, fleet: Fleet) -> None:
    profile = await fleet.profile()
    device_id, key = await fleet.device(profile)
    artefact = await fleet.artefact(profile, {"setpoint": 21})
    await fleet.bind("device", device_id, artefact["id"])
    path = f"/v1/devices/{device_id}/config"
    doc = await api.ok("GET", f"/api/v1/devices/{device_id}/desired-state")
    wrong = _report(doc, "ACCEPTED", "sha256:" + "0" * 64)
    status, answer = await device_call(api, "POST", path, key, wrong)
    assert (status, answer["status"], answer["current"]) == (200, "FAILED", True)
    device = await api.ok("GET", f"/api/v1/devices/{device_id}")
    assert "hash mismatch" in device["reported_message"]
    status, answer = await device_call(api, "POST", path, key, _report(doc, "ACCEPTED"))
    assert (status, answer["status"]) == (200, "ACCEPTED")
    assert (await api.ok("GET", f"/api/v1/devices/{device_id}"))["config_status"] == "ACCEPTED"


async def test_device_api_post_config_bad_reports_are_400_and_change_nothing(
    api: Api, fleet: Fleet
) -> None:
    device_id, key = await fleet.device(await fleet.profile())
    path = f"/v1/devices/{device_id}/config"
    doc = await api.ok("GET", f"/api/v1/devices/{device_id}/desired-state")
    for body in (
        {"version": doc["version"], "status": "GREAT"},
        {"version": doc["version"], "status": "ACCEPTED", "extra": 1},
        {"version": doc["version"] + 5, "status": "ACCEPTED"},
    ):
        status, answer = await device_call(api, "POST", path, key, body)
        assert status == 400, (body, answer)
        assert isinstance(answer["error"], str)
    assert (await device_call(api, "POST", path, key, raw=b"[1,"))[0] == 400
    device = await api.ok("GET", f"/api/v1/devices/{device_id}")
    assert device["reported_version"] is None


def _report(doc: dict[str, Any], status: str, hash_: str | None = None) -> dict[str, Any]:
    configs = [
        {"slot": c["slot"], "artefact_id": c["artefact_id"], "hash": hash_ or c["hash"]}
        for c in doc["configs"]
    ]
    return {
        "version": doc["version"],
        "status": status,
        "configs": [{**c, "status": status} for c in configs],
    }


# -- files ---------------------------------------------------------------------------------------


async def test_device_api_files_list_get_and_download_with_the_device_key(
    api: Api, fleet: Fleet, service: Service
) -> None:
    profile = await fleet.profile()
    device_id, key = await fleet.device(profile)
    content = b"\x00firmware image\xff" * 100
    created = await upload_file(api, profile, "1.2.3", content)
    assert created["sha256"] == hashlib.sha256(content).hexdigest()
    assert (created["size"], created["file_type"]) == (len(content), "firmware")
    status, listed = await device_call(api, "GET", f"/v1/devices/{device_id}/files", key)
    assert status == 200
    (item,) = listed
    assert set(item) == {"id", "name", "url", "version", "file_type", "created_at"}
    status, one = await device_call(
        api, "GET", f"/v1/devices/{device_id}/files/{created['id']}", key
    )
    assert (status, one) == (200, item)
    assert one["url"].startswith(service.http_url + "/v1/devices/")
    assert await device_call(api, "GET", one["url"], key) == (200, content)
    assert await device_call(api, "GET", one["url"], "wrong") == (401, NOT_AUTHORIZED)
    blobs = service.http_app[SERVICES].blobs  # the bytes are in the blob store, not in SQLite
    assert (await blobs.stat(files.blob_key(created["id"]))).size == len(content)


async def test_device_api_files_over_the_1_mib_request_limit_upload(api: Api, fleet: Fleet) -> None:
    profile = await fleet.profile()
    device_id, key = await fleet.device(profile)
    content = bytes(range(256)) * (3 * 4096)  # 3 MiB
    created = await upload_file(api, profile, "3.0.0", content)
    path = f"/v1/devices/{device_id}/files/{created['id']}/download"
    assert await device_call(api, "GET", path, key) == (200, content)


async def test_device_api_another_profiles_file_is_404(api: Api, fleet: Fleet) -> None:
    device_id, key = await fleet.device(await fleet.profile("a"))
    other = await upload_file(api, await fleet.profile("b"), "1.0.0", b"x")
    for path in (f"files/{other['id']}", f"files/{other['id']}/download", "files/unknown"):
        status, answer = await device_call(api, "GET", f"/v1/devices/{device_id}/{path}", key)
        assert status == 404, path
        assert isinstance(answer["error"], str)
    assert (await device_call(api, "GET", f"/v1/devices/{device_id}/files", key))[1] == []


async def test_device_api_file_uploads_with_bad_input_are_refused(api: Api, fleet: Fleet) -> None:
    profile = await fleet.profile()
    await upload_file(api, profile, "1.0.0", b"one")
    b64 = base64.b64encode(b"x").decode()
    good = {"profile_id": profile, "name": "fw", "version": "2.0.0", "content": b64}
    for change, expected in (
        ({"version": "1.2"}, 400),
        ({"version": "v1.2.3"}, 400),
        ({"file_type": "Firm Ware"}, 400),
        ({"content": "not base64!"}, 400),
        ({"content": ""}, 400),
        ({"colour": "red"}, 400),
        ({"profile_id": "unknown"}, 404),
        ({"version": "1.0.0"}, 409),
    ):
        status, answer = await api.post("/api/v1/files", {**good, **change})
        assert status == expected, (change, answer)
    big = base64.b64encode(b"x" * (8 * 1024 * 1024 + 1)).decode()
    status, _ = await api.post("/api/v1/files", {**good, "content": big})
    assert status == 413
    listed = await api.ok("GET", f"/api/v1/files?profile_id={profile}")
    assert [f["version"] for f in listed["items"]] == ["1.0.0"]


async def test_device_api_files_are_scoped_to_the_organization(api: Api, fleet: Fleet) -> None:
    created = await upload_file(api, await fleet.profile(), "1.0.0", b"x")
    org = await api.ok("POST", "/api/v1/organizations", {"slug": "acme", "name": "A"}, status=201)
    acme = api.as_token(org["token"])
    assert (await acme.get(f"/api/v1/files/{created['id']}"))[0] == 404
    assert (await acme.ok("GET", "/api/v1/files"))["items"] == []
    assert (await api.ok("GET", f"/api/v1/files/{created['id']}"))["id"] == created["id"]


# -- licenses and info ---------------------------------------------------------------------------


async def test_device_api_licenses_are_offered_answered_and_removed(api: Api, fleet: Fleet) -> None:
    device_id, key = await fleet.device(await fleet.profile())
    path = f"/v1/devices/{device_id}/licenses"
    assert (await telemetry_answer(api, device_id, key))["new_licenses"] is False
    offered = await api.ok(
        "POST",
        f"/api/v1/devices/{device_id}/licenses",
        {"data": "feature=pro", "expires_at": "2030-01-01T00:00:00Z", "signature": "c2ln"},
        status=201,
    )
    assert (await telemetry_answer(api, device_id, key))["new_licenses"] is True
    status, pending = await device_call(api, "GET", path, key)
    assert status == 200
    assert pending == [
        {
            "id": offered["id"],
            "device_id": device_id,
            "data": "feature=pro",
            "signature": "c2ln",
            "add": True,
            "expires_at": "2030-01-01T00:00:00.000Z",
        }
    ]
    answer = {"id": offered["id"], "state": "inuse"}
    assert (await device_call(api, "POST", path, key, answer))[0] == 200
    assert (await telemetry_answer(api, device_id, key))["new_licenses"] is False
    assert (await device_call(api, "GET", path, key))[1] == []
    await api.ok(
        "POST",
        f"/api/v1/devices/{device_id}/licenses",
        {"id": offered["id"], "action": "remove"},
        status=201,
    )
    assert (await telemetry_answer(api, device_id, key))["new_licenses"] is True
    (removal,) = (await device_call(api, "GET", path, key))[1]
    assert removal["remove"] is True
    assert "add" not in removal
    assert "update" not in removal
    await device_call(api, "POST", path, key, {"id": offered["id"], "state": "removed"})
    assert (await telemetry_answer(api, device_id, key))["new_licenses"] is False
    listed = await api.ok("GET", f"/api/v1/devices/{device_id}/licenses")
    assert [(x["action"], x["state"]) for x in listed["items"]] == [("remove", "removed")]


async def test_device_api_bad_license_input_is_refused(api: Api, fleet: Fleet) -> None:
    device_id, key = await fleet.device(await fleet.profile())
    other_id, _ = await fleet.device(await fleet.profile("other"))
    operator = f"/api/v1/devices/{device_id}/licenses"
    for body, expected in (
        ({}, 400),
        ({"action": "remove"}, 400),
        ({"data": "x", "expires_at": "tomorrow"}, 400),
        ({"data": "x", "colour": 1}, 400),
        ({"id": "unknown", "action": "update", "data": "y"}, 404),
    ):
        status, answer = await api.post(operator, body)
        assert status == expected, (body, answer)
    theirs = await api.ok("POST", f"/api/v1/devices/{other_id}/licenses", {"data": "x"}, status=201)
    path = f"/v1/devices/{device_id}/licenses"
    for body, expected in (
        ({"id": theirs["id"], "state": "inuse"}, 404),
        ({"id": theirs["id"], "state": "great"}, 400),
        ({"id": theirs["id"], "state": "inuse", "extra": 1}, 400),
    ):
        status, answer = await device_call(api, "POST", path, key, body)
        assert status == expected, (body, answer)
        assert isinstance(answer["error"], str)
    assert (await api.ok("GET", operator))["items"] == []
    (their_license,) = (await api.ok("GET", f"/api/v1/devices/{other_id}/licenses"))["items"]
    assert their_license["state"] is None


async def test_device_api_info_version_counts_changes(api: Api, fleet: Fleet) -> None:
    device_id, key = await fleet.device(await fleet.profile())
    path = f"/api/v1/devices/{device_id}/info"
    assert (await telemetry_answer(api, device_id, key))["info_version"] == 0
    await api.ok("PUT", path, {"site": "Lisbon", "floor": 2})
    assert (await telemetry_answer(api, device_id, key))["info_version"] == 1
    await api.ok("PUT", path, {"floor": 2, "site": "Lisbon"})  # the same document
    assert (await telemetry_answer(api, device_id, key))["info_version"] == 1
    await api.ok("PUT", path, {"site": "Porto"})
    assert (await telemetry_answer(api, device_id, key))["info_version"] == 2
    status, info = await device_call(api, "GET", f"/v1/devices/{device_id}/info", key)
    assert status == 200
    assert (info["version"], info["info"]) == (2, {"site": "Porto"})
    assert (await api.ok("GET", path))["info"] == {"site": "Porto"}


async def test_device_api_bad_info_is_refused(api: Api, fleet: Fleet) -> None:
    device_id, _ = await fleet.device(await fleet.profile())
    path = f"/api/v1/devices/{device_id}/info"
    assert (await api.put(path, [1, 2]))[0] == 400
    assert (await api.call("PUT", path, raw=b"{nope"))[0] == 400
    assert (await api.put("/api/v1/devices/unknown/info", {"a": 1}))[0] == 404
    org = await api.ok("POST", "/api/v1/organizations", {"slug": "acme", "name": "A"}, status=201)
    assert (await api.as_token(org["token"]).put(path, {"a": 1}))[0] == 404
    assert (await api.ok("GET", path))["version"] == 0


# -- commands ------------------------------------------------------------------------------------


async def send_command(api: Api, device_id: str, kind: str = "REBOOT") -> dict[str, Any]:
    path = f"/api/v1/devices/{device_id}/commands"
    return dict(await api.ok("POST", path, {"type": kind}, status=201))


async def command_status(api: Api, device_id: str, command_id: str) -> str:
    found = await api.ok("GET", f"/api/v1/devices/{device_id}/commands/{command_id}")
    return str(found["status"])


async def test_device_api_commands_are_taken_and_answered_over_http(api: Api, fleet: Fleet) -> None:
    device_id, key = await fleet.device(await fleet.profile())
    path = f"/v1/devices/{device_id}/command"
    assert await device_call(api, "GET", path, key) == (204, b"")
    first = await send_command(api, device_id)
    second = await send_command(api, device_id)
    assert (await telemetry_answer(api, device_id, key))["command"] is True
    status, taken = await device_call(api, "GET", path, key)
    assert (status, taken) == (
        200,
        {
            "id": first["id"],
            "device_id": device_id,
            "status": "pending",
            "name": "reboot",
            "parameters": {},
        },
    )
    assert await command_status(api, device_id, first["id"]) == "SENT"
    for answer, lifecycle in (("in_progress", "ACKNOWLEDGED"), ("done", "SUCCESS")):
        status, body = await device_call(
            api, "POST", path, key, {"id": first["id"], "status": answer}
        )
        assert (status, body["status"]) == (200, lifecycle)
        assert await command_status(api, device_id, first["id"]) == lifecycle
    assert (await device_call(api, "GET", path, key))[1]["id"] == second["id"]
    answer = {"id": second["id"], "status": "error", "message": "no power"}
    assert (await device_call(api, "POST", path, key, answer))[0] == 200
    found = await api.ok("GET", f"/api/v1/devices/{device_id}/commands/{second['id']}")
    assert (found["status"], found["message"]) == ("FAILED", "no power")
    assert (await telemetry_answer(api, device_id, key))["command"] is False
    assert await device_call(api, "GET", path, key) == (204, b"")


async def test_device_api_bad_command_answers_are_refused_and_change_nothing(
    api: Api, fleet: Fleet
) -> None:
    profile = await fleet.profile()
    device_id, key = await fleet.device(profile, "a")
    other_id, _ = await fleet.device(profile, "b")
    mine = await send_command(api, device_id)
    theirs = await send_command(api, other_id)
    path = f"/v1/devices/{device_id}/command"
    for body, expected in (
        ({"id": "unknown", "status": "done"}, 404),
        ({"id": theirs["id"], "status": "done"}, 404),
        ({"id": mine["id"], "status": "finished"}, 400),
        ({"id": mine["id"], "status": "done", "extra": 1}, 400),
        ({"status": "done"}, 400),
    ):
        status, answer = await device_call(api, "POST", path, key, body)
        assert status == expected, (body, answer)
        assert isinstance(answer["error"], str)
    assert await command_status(api, device_id, mine["id"]) == "PENDING"
    assert await command_status(api, other_id, theirs["id"]) == "PENDING"
    await device_call(api, "POST", path, key, {"id": mine["id"], "status": "done"})
    status, answer = await device_call(
        api, "POST", path, key, {"id": mine["id"], "status": "failed"}
    )
    assert status == 409
    assert "SUCCESS" in answer["error"]
    assert await command_status(api, device_id, mine["id"]) == "SUCCESS"


async def test_device_api_mixed_http_telemetry_and_mqtt_commands(
    api: Api, fleet: Fleet, connect: DeviceFactory
) -> None:
    device_id, key = await fleet.device(await fleet.profile())
    async with connect(device_id, key) as device:
        await device.desired()
        assert (await telemetry_answer(api, device_id, key))["command"] is False
        created = await send_command(api, device_id)
        _topic, delivered = await device.next("commands")
        assert (delivered["id"], delivered["type"]) == (created["id"], "REBOOT")
        assert await command_status(api, device_id, created["id"]) == "SENT"
        assert (await telemetry_answer(api, device_id, key))["command"] is True
        path = f"/v1/devices/{device_id}/command"
        assert (await device_call(api, "GET", path, key))[1]["id"] == created["id"]
        assert (await telemetry_answer(api, device_id, key))["command"] is True
        await device.publish("commands/ack", {"id": created["id"], "status": "ACKNOWLEDGED"})
        # Started but not finished: still the device's command until it says how it ended.
        assert (await telemetry_answer(api, device_id, key))["command"] is True
        answer = {"id": created["id"], "status": "done"}
        assert (await device_call(api, "POST", path, key, answer))[0] == 200
        assert (await telemetry_answer(api, device_id, key))["command"] is False
    assert await command_status(api, device_id, created["id"]) == "SUCCESS"


async def test_device_api_http_answer_releases_the_next_sequential_command_over_mqtt(
    api: Api, fleet: Fleet, connect: DeviceFactory
) -> None:
    profile = await api.ok(
        "POST",
        "/api/v1/device-profiles",
        {"name": "seq", "config_schema": {"type": "object"}, "command_delivery": "sequential"},
        status=201,
    )
    device_id, key = await fleet.device(profile["id"])
    async with connect(device_id, key) as device:
        first = await send_command(api, device_id)
        second = await send_command(api, device_id)
        assert (await device.next("commands"))[1]["id"] == first["id"]
        answer = {"id": first["id"], "status": "done"}
        path = f"/v1/devices/{device_id}/command"
        assert (await device_call(api, "POST", path, key, answer))[0] == 200
        assert (await device.next("commands"))[1]["id"] == second["id"]


# -- the route table -----------------------------------------------------------------------------


async def test_device_api_routes_are_documented_without_bearer_auth(api: Api) -> None:
    paths = (await api.ok("GET", "/api/v1/openapi.json"))["paths"]
    for path, method in (
        ("/v1/devices", "post"),
        ("/v1/devices/{device_id}", "put"),
        ("/v1/devices/{device_id}/telemetry", "post"),
        ("/v1/devices/{device_id}/config", "get"),
        ("/v1/devices/{device_id}/config", "post"),
        ("/v1/devices/{device_id}/command", "get"),
        ("/v1/devices/{device_id}/command", "post"),
        ("/v1/devices/{device_id}/licenses", "get"),
        ("/v1/devices/{device_id}/info", "get"),
        ("/v1/devices/{device_id}/files/{file_id}", "get"),
    ):
        security = paths[path][method].get("security", [])
        # Registration needs no device key; every other call sends the bare access key.
        assert security == ([] if path == "/v1/devices" else [{"deviceKey": []}]), path
    for path in ("/api/v1/hardware-keys", "/api/v1/files", "/api/v1/devices/{device_id}/telemetry"):
        assert {"bearer": []} in paths[path]["get"]["security"]


async def test_device_api_unknown_route_under_v1_is_404(
    http: aiohttp.ClientSession, api: Api
) -> None:
    async with http.get(api.base + "/v1/devices/x/nothing-here") as response:
        assert response.status == 404


async def test_device_api_unknown_paths_and_methods_answer_the_flat_error_shape(
    service: Service, http: aiohttp.ClientSession
) -> None:
    for method, path, status in (
        ("GET", "/v1/devices/x/nothing-here", 404),
        ("DELETE", "/v1/devices", 405),
    ):
        async with http.request(method, service.http_url + path) as response:
            assert response.status == status
            body = await response.json()
            assert set(body) == {"error"}, body
            assert isinstance(body["error"], str), body


# -- Xyte's Set Config: the Get Config answer posted back --------------------------------------


async def _bound_device(api: Api, fleet: Fleet, content: Any) -> tuple[str, str, dict[str, Any]]:
    profile = await fleet.profile()
    device_id, key = await fleet.device(profile)
    artefact = await fleet.artefact(profile, content)
    await fleet.bind("device", device_id, artefact["id"])
    return device_id, key, artefact


async def test_device_api_set_config_echo_of_get_config_is_accepted(api: Api, fleet: Fleet) -> None:
    device_id, key, artefact = await _bound_device(api, fleet, {"setpoint": 21})
    path = f"/v1/devices/{device_id}/config"
    answer = (await device_call(api, "GET", path, key))[1]
    status, outcome = await device_call(api, "POST", path, key, answer)
    assert status == 200, outcome
    assert (outcome["status"], outcome["version"], outcome["current"]) == (
        "ACCEPTED",
        answer["version"],
        True,
    )
    device = await api.ok("GET", f"/api/v1/devices/{device_id}")
    assert (device["reported_version"], device["config_status"]) == (answer["version"], "ACCEPTED")
    commands = (await api.ok("GET", f"/api/v1/devices/{device_id}/commands"))["items"]
    bind = next(c for c in commands if c["type"] == "BIND_CONFIG")
    assert bind["status"] == "SUCCESS"
    binding_rows = await api.ok("GET", f"/api/v1/devices/{device_id}/desired-state")
    assert binding_rows["configs"][0]["hash"] == artefact["hash"]


async def test_device_api_set_config_with_other_content_is_failed_with_a_message(
    api: Api, fleet: Fleet
) -> None:
    device_id, key, _ = await _bound_device(api, fleet, {"setpoint": 21})
    path = f"/v1/devices/{device_id}/config"
    answer = (await device_call(api, "GET", path, key))[1]
    changed = {**answer, "config": {"setpoint": 25}}
    status, outcome = await device_call(api, "POST", path, key, changed)
    assert (status, outcome["status"]) == (200, "FAILED")
    assert "'device'" in outcome["message"]
    device = await api.ok("GET", f"/api/v1/devices/{device_id}")
    assert device["config_status"] == "FAILED"
    assert "'device'" in device["reported_message"]


async def test_device_api_set_config_takes_xytes_shape_and_a_numeric_string_version(
    api: Api, fleet: Fleet
) -> None:
    device_id, key, _ = await _bound_device(api, fleet, {"setpoint": 21})
    path = f"/v1/devices/{device_id}/config"
    version = (await device_call(api, "GET", path, key))[1]["version"]
    body = {"version": str(version), "config": {"setpoint": 21}}
    status, outcome = await device_call(api, "POST", path, key, body)
    assert (status, outcome["status"]) == (200, "ACCEPTED")
    status, outcome = await device_call(api, "POST", path, key, {"config": {"setpoint": 21}})
    assert (status, outcome["status"], outcome["version"]) == (200, "ACCEPTED", version)


async def test_device_api_set_config_bad_echoes_are_400_and_change_nothing(
    api: Api, fleet: Fleet
) -> None:
    device_id, key, _ = await _bound_device(api, fleet, {"setpoint": 21})
    path = f"/v1/devices/{device_id}/config"
    answer = (await device_call(api, "GET", path, key))[1]
    for body in (
        {**answer, "colour": "red"},
        {**answer, "version": "three"},
        {**answer, "version": answer["version"] + 1},
        {**answer, "device_id": "someone-else"},
    ):
        status, outcome = await device_call(api, "POST", path, key, body)
        assert status == 400, (body, outcome)
        assert isinstance(outcome["error"], str)
    device = await api.ok("GET", f"/api/v1/devices/{device_id}")
    assert device["reported_version"] is None


# -- Xyte's command names, in-progress commands, firmware --------------------------------------


async def test_device_api_in_progress_command_is_served_until_it_is_finished(
    api: Api, fleet: Fleet
) -> None:
    device_id, key = await fleet.device(await fleet.profile())
    path = f"/v1/devices/{device_id}/command"
    created = await send_command(api, device_id)
    status, taken = await device_call(api, "GET", path, key)
    assert (status, taken["status"], taken["name"]) == (200, "pending", "reboot")
    await device_call(api, "POST", path, key, {"id": created["id"], "status": "in_progress"})
    # The device rebooted: it asks again and must find the command that rebooted it.
    assert (await telemetry_answer(api, device_id, key))["command"] is True
    status, again = await device_call(api, "GET", path, key)
    assert (status, again["id"], again["status"]) == (200, created["id"], "in_progress")
    answer = {"id": created["id"], "status": "done", "message": "Device restart OK"}
    assert (await device_call(api, "POST", path, key, answer))[0] == 200
    assert (await telemetry_answer(api, device_id, key))["command"] is False
    assert await device_call(api, "GET", path, key) == (204, b"")
    found = await api.ok("GET", f"/api/v1/devices/{device_id}/commands/{created['id']}")
    assert (found["status"], found["message"]) == ("SUCCESS", "Device restart OK")


async def test_device_api_update_firmware_carries_a_url_and_version_the_device_can_get(
    api: Api, fleet: Fleet, service: Service
) -> None:
    profile = await fleet.profile()
    device_id, key = await fleet.device(profile)
    content = b"\x7fELF firmware 2.1.0"
    uploaded = await upload_file(api, profile, "2.1.0", content)
    body = {"type": "UPDATE_FIRMWARE", "params": {"file_id": uploaded["id"]}}
    created = await api.ok("POST", f"/api/v1/devices/{device_id}/commands", body, status=201)
    status, taken = await device_call(api, "GET", f"/v1/devices/{device_id}/command", key)
    assert (status, taken["id"], taken["name"]) == (200, created["id"], "update_firmware")
    assert taken["parameters"]["version"] == "2.1.0"
    assert taken["parameters"]["url"].startswith(service.http_url + "/v1/devices/")
    assert await device_call(api, "GET", taken["parameters"]["url"], key) == (200, content)
    rest = await api.ok("GET", f"/api/v1/devices/{device_id}/commands/{created['id']}")
    assert rest["type"] == "UPDATE_FIRMWARE"  # the REST API keeps its own names


# -- Xyte's optional fields --------------------------------------------------------------------


async def test_device_api_put_takes_xytes_optional_fields(api: Api, fleet: Fleet) -> None:
    device_id, key = await fleet.device(await fleet.profile())
    version = (await telemetry_answer(api, device_id, key))["config_version"]
    path = f"/v1/devices/{device_id}"
    for body in (
        {"host_address": "10.0.0.7", "sub_model": "XL"},
        {"config_version": str(version)},
        {"config_version": version},
    ):
        status, answer = await device_call(api, "PUT", path, key, body)
        assert (status, answer) == (200, {"success": True}), body
    assert (await api.ok("GET", f"/api/v1/devices/{device_id}"))["config_status"] == "ACCEPTED"
    for body in ({"config_version": "1.5"}, {"space_id": 3}):
        status, answer = await device_call(api, "PUT", path, key, body)
        assert status == 400, (body, answer)


async def test_device_api_telemetry_timestamps_in_xytes_forms(api: Api, fleet: Fleet) -> None:
    device_id, key = await fleet.device(await fleet.profile())
    forms = (
        ("2021-08-04T07:45:44.122Z", "2021-08-04T07:45:44.122Z"),
        (1628063144122, "2021-08-04T07:45:44.122Z"),
        (1628063144, "2021-08-04T07:45:44.000Z"),
        ("1628063144", "2021-08-04T07:45:44.000Z"),
    )
    for i, (value, moment) in enumerate(forms):
        await telemetry_answer(api, device_id, key, telemetries={f"t{i}": 1}, timestamp=value)
        rows = await api.ok("GET", f"/api/v1/devices/{device_id}/telemetry?key=t{i}")
        assert [r["timestamp"] for r in rows["items"]] == [moment], value
    status, _ = await device_call(
        api,
        "POST",
        f"/v1/devices/{device_id}/telemetry",
        key,
        {"status": "online", "timestamp": "1e9x"},
    )
    assert status == 400


# -- dumps -------------------------------------------------------------------------------------


async def _upload_dump(
    api: Api, device_id: str, key: str, content_type: str, name: str, data: bytes
) -> tuple[int, Any]:
    # The content type travels URL-encoded in one path segment, as Xyte's agent sends it.
    path = f"/v1/devices/{device_id}/dumps/{content_type.replace('/', '%2F')}/{name}"
    headers = {"Authorization": key, "Content-Type": "text/plain"}
    async with api.session.post(api.base + path, data=data, headers=headers) as response:
        return response.status, await response.json()


async def test_device_api_dumps_are_uploaded_appended_listed_and_downloaded(
    api: Api, fleet: Fleet, service: Service
) -> None:
    device_id, key = await fleet.device(await fleet.profile())
    status, dump_id = await _upload_dump(api, device_id, key, "text/txt", "agent.log", b"err\n")
    assert status == 201
    assert isinstance(dump_id, str)
    path = f"/v1/devices/{device_id}/dumps/{dump_id}"
    big = b"o" * (2 * 1024 * 1024)  # past the 1 MiB JSON request limit
    status, grown = await device_call(api, "PUT", path, key, raw=big)
    assert (status, grown["size"]) == (200, 4 + len(big))
    listed = await api.ok("GET", f"/api/v1/devices/{device_id}/dumps")
    (item,) = listed["items"]
    assert (item["id"], item["file_name"], item["content_type"]) == (
        dump_id,
        "agent.log",
        "text/txt",
    )
    assert (item["size"], item["parts"]) == (4 + len(big), 2)
    url = f"{api.base}/api/v1/devices/{device_id}/dumps/{dump_id}/content"
    async with api.session.get(url, headers={"Authorization": f"Bearer {api.token}"}) as answer:
        assert answer.status == 200
        assert await answer.read() == b"err\n" + big
        assert "agent.log" in answer.headers["Content-Disposition"]
    blobs = service.http_app[SERVICES].blobs
    assert (await blobs.stat(f"dumps/{dump_id}")).size == 4 + len(big)


async def test_device_api_dumps_refuse_bad_input_and_other_devices(api: Api, fleet: Fleet) -> None:
    profile = await fleet.profile()
    device_id, key = await fleet.device(profile, "a")
    other_id, other_key = await fleet.device(profile, "b")
    for content_type, name, data in (
        ("text", "a.log", b"x"),
        ("text/plain", "a.log", b""),
        ("text/plain", "..", b"x"),
    ):
        status, answer = await _upload_dump(api, device_id, key, content_type, name, data)
        assert status in (400, 404), (content_type, name, answer)
    status, theirs = await _upload_dump(api, other_id, other_key, "text/plain", "b.log", b"x")
    assert status == 201
    path = f"/v1/devices/{device_id}/dumps/{theirs}"
    assert (await device_call(api, "PUT", path, key, raw=b"more"))[0] == 404
    assert (await device_call(api, "PUT", path, "wrong", raw=b"more"))[0] == 401
    assert (await api.ok("GET", f"/api/v1/devices/{device_id}/dumps"))["items"] == []
    (their_dump,) = (await api.ok("GET", f"/api/v1/devices/{other_id}/dumps"))["items"]
    assert their_dump["size"] == 1
    assert (await api.get(f"/api/v1/devices/{device_id}/dumps/{theirs}/content"))[0] == 404
    org = await api.ok("POST", "/api/v1/organizations", {"slug": "acme", "name": "A"}, status=201)
    assert (await api.as_token(org["token"]).get(f"/api/v1/devices/{other_id}/dumps"))[0] == 404


async def test_device_api_dumps_over_the_configured_size_are_413(tmp_path: Path) -> None:
    config = make_config(tmp_path, dumps=DumpConfig(max_size=1000))
    async with app.start(config) as running, aiohttp.ClientSession() as session:
        api = Api(session, running.http_url, ADMIN_TOKEN)
        device_id, key = await Fleet(api).device(await Fleet(api).profile())
        status, answer = await _upload_dump(api, device_id, key, "text/plain", "a", b"x" * 1001)
        assert status == 413, answer
        status, dump_id = await _upload_dump(api, device_id, key, "text/plain", "a", b"x" * 600)
        assert status == 201
        path = f"/v1/devices/{device_id}/dumps/{dump_id}"
        status, answer = await device_call(api, "PUT", path, key, raw=b"y" * 401)
        assert status == 413, answer
        (item,) = (await api.ok("GET", f"/api/v1/devices/{device_id}/dumps"))["items"]
        assert item["size"] == 600  # the refused append changed nothing
        assert (await device_call(api, "PUT", path, key, raw=b"y" * 400))[1]["size"] == 1000


# -- presence of devices that only talk HTTP ---------------------------------------------------

FAST_PRESENCE = PresenceConfig(http_window_s=0.6, sweep_interval_s=0.05)


async def _online(api: Api, device_id: str) -> bool:
    return bool((await api.ok("GET", f"/api/v1/devices/{device_id}"))["online"])


async def _offline(api: Api, device_id: str) -> bool:
    return not await _online(api, device_id)


async def test_device_api_http_device_is_online_while_it_calls_and_offline_after(
    tmp_path: Path,
) -> None:
    config = make_config(tmp_path, presence=FAST_PRESENCE)
    async with app.start(config) as running, aiohttp.ClientSession() as session:
        api = Api(session, running.http_url, ADMIN_TOKEN)
        device_id, key = await Fleet(api).device(await Fleet(api).profile())
        assert not await _online(api, device_id)
        async with stream(api, "?types=presence") as events:
            await telemetry_answer(api, device_id, key)
            came = await events.next("presence")
            assert (came["device_id"], came["online"]) == (device_id, True)
            assert await _online(api, device_id)
            listed = (await api.ok("GET", "/api/v1/devices"))["items"]
            assert [d["online"] for d in listed] == [True]  # what the web app's list shows
            went = await events.next("presence")
            assert (went["device_id"], went["online"]) == (device_id, False)
        assert not await _online(api, device_id)
        await device_call(api, "GET", f"/v1/devices/{device_id}/config", key)  # any call counts
        await eventually(lambda: _online(api, device_id))


async def test_device_api_http_presence_does_not_fight_mqtt_presence(
    tmp_path: Path,
) -> None:
    config = make_config(tmp_path, presence=FAST_PRESENCE)
    async with app.start(config) as running, aiohttp.ClientSession() as session:
        api = Api(session, running.http_url, ADMIN_TOKEN)
        device_id, key = await Fleet(api).device(await Fleet(api).profile())
        async with stream(api, "?types=presence") as events:
            async with _mqtt(running, device_id, key):
                assert (await events.next("presence"))["online"] is True
                await telemetry_answer(api, device_id, key)
                # The HTTP window passes: the MQTT session still holds the device online.
                with contextlib.suppress(TimeoutError):
                    got = await events.next("presence", timeout=1.5)
                    raise AssertionError(f"unexpected presence change {got}")
                assert await _online(api, device_id)
                await telemetry_answer(api, device_id, key)
            # MQTT ends while the device still calls over HTTP: it stays online until silent.
            assert (await events.next("presence"))["online"] is True
            assert (await events.next("presence"))["online"] is False
        assert not await _online(api, device_id)


@contextlib.asynccontextmanager
async def _mqtt(running: Service, device_id: str, key: str) -> AsyncIterator[aiomqtt.Client]:
    client = aiomqtt.Client(
        "127.0.0.1", running.mqtt_port, identifier=device_id, username=device_id, password=key
    )
    async with client:
        yield client


def test_device_api_http_presence_window_follows_the_observed_interval() -> None:
    presence = HttpPresence(None, None, PresenceConfig())  # type: ignore[arg-type]
    assert presence.window_s(None) == 120.0
    assert presence.window_s(20.0) == 60.0
    assert presence.window_s(1.0) == 10.0  # never under http_min_window_s
    fixed = HttpPresence(None, None, PresenceConfig(http_window_s=7.0))  # type: ignore[arg-type]
    assert fixed.window_s(20.0) == 7.0
