"""Commands end to end: REST in, MQTT out, acks back, deadlines, and bind/unbind as commands."""

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
import pytest

from conftest import ADMIN_TOKEN, WAIT, Api, Device, DeviceFactory, Fleet, make_config
from fleetstate import app
from fleetstate.domain.clock import utcnow
from fleetstate.service import commands
from test_events import Stream, stream

OPEN = ("PENDING", "SENT", "ACKNOWLEDGED")


async def _send(api: Api, device_id: str, kind: str, **body: Any) -> dict[str, Any]:
    path = f"/api/v1/devices/{device_id}/commands"
    return dict(await api.ok("POST", path, {"type": kind, **body}, status=201))


async def _get(api: Api, device_id: str, command_id: str) -> dict[str, Any]:
    return dict(await api.ok("GET", f"/api/v1/devices/{device_id}/commands/{command_id}"))


async def _listed(api: Api, device_id: str, query: str = "") -> list[dict[str, Any]]:
    return list((await api.ok("GET", f"/api/v1/devices/{device_id}/commands{query}"))["items"])


async def _status(events: Stream, command_id: str, status: str) -> dict[str, Any]:
    """Wait for the `command` event that says the command reached `status`."""
    async with asyncio.timeout(WAIT):
        while True:
            event = await events.next("command")
            if (event["id"], event["status"]) == (command_id, status):
                return event


async def _command(device: Device) -> dict[str, Any]:
    _topic, message = await device.next("commands")
    return dict(message)


async def _ack(device: Device, command_id: str, status: str, message: str | None = None) -> None:
    await device.publish("commands/ack", {"id": command_id, "status": status, "message": message})


def _report(doc: dict[str, Any], status: str, hash_: str | None = None) -> dict[str, Any]:
    configs = [
        {"slot": c["slot"], "artefact_id": c["artefact_id"], "hash": hash_ or c["hash"]}
        | {"status": status}
        for c in doc["configs"]
    ]
    return {"version": doc["version"], "status": status, "configs": configs}


# -- each type -----------------------------------------------------------------------------------


async def test_commands_reboot_to_connected_device_is_sent_acknowledged_and_succeeds(
    api: Api, fleet: Fleet, connect: DeviceFactory
) -> None:
    device_id, key = await fleet.device(await fleet.profile())
    async with connect(device_id, key) as device:
        sent = await _send(api, device_id, "REBOOT")
        assert sent["status"] == "SENT"
        assert sent["sent_at"] is not None
        message = await _command(device)
        assert message == {
            "id": sent["id"],
            "type": "REBOOT",
            "params": {},
            "issued_at": sent["created_at"],
            "timeout_at": sent["timeout_at"],
        }
        await _ack(device, sent["id"], "ACKNOWLEDGED")
        assert (await _get(api, device_id, sent["id"]))["status"] == "ACKNOWLEDGED"
        await _ack(device, sent["id"], "SUCCESS", "rebooted")
    done = await _get(api, device_id, sent["id"])
    assert (done["status"], done["message"]) == ("SUCCESS", "rebooted")
    assert done["acknowledged_at"] <= done["finished_at"]
    assert [(h["status"], h["effect"]) for h in done["history"]] == [
        ("ACKNOWLEDGED", "applied"),
        ("SUCCESS", "applied"),
    ]


async def test_commands_ack_may_skip_acknowledged(
    api: Api, fleet: Fleet, connect: DeviceFactory
) -> None:
    device_id, key = await fleet.device(await fleet.profile())
    async with connect(device_id, key) as device:
        sent = await _send(api, device_id, "REBOOT")
        await _command(device)
        await _ack(device, sent["id"], "FAILED", "disk full")
    done = await _get(api, device_id, sent["id"])
    assert (done["status"], done["message"], done["acknowledged_at"]) == (
        "FAILED",
        "disk full",
        None,
    )


async def test_commands_update_config_resends_desired_and_succeeds_on_ack(
    api: Api, fleet: Fleet, connect: DeviceFactory
) -> None:
    profile = await fleet.profile()
    device_id, key = await fleet.device(profile)
    artefact = await fleet.artefact(profile, {"setpoint": 21})
    await fleet.bind("device", device_id, artefact["id"])
    async with connect(device_id, key) as device:
        first = await device.desired()
        sent = await _send(api, device_id, "UPDATE_CONFIG")
        again = await device.desired()
        assert again == first
        message = await _command(device)
        assert (message["type"], message["params"]) == ("UPDATE_CONFIG", {"version": 2})
        await _ack(device, sent["id"], "SUCCESS")
    assert (await _get(api, device_id, sent["id"]))["status"] == "SUCCESS"


async def test_commands_update_firmware_sends_version_hash_and_download(
    api: Api, fleet: Fleet, connect: DeviceFactory
) -> None:
    profile = await fleet.profile()
    device_id, key = await fleet.device(profile)
    body = {"profile_id": profile, "name": "fw", "version": "1.2.0", "content": "aGVsbG8="}
    firmware = await api.ok("POST", "/api/v1/files", body, status=201)
    async with connect(device_id, key) as device:
        sent = await _send(api, device_id, "UPDATE_FIRMWARE", params={"file_id": firmware["id"]})
        message = await _command(device)
        await _ack(device, sent["id"], "SUCCESS")
    assert message["params"] == {
        "file_id": firmware["id"],
        "version": "1.2.0",
        "sha256": firmware["sha256"],
        "download": f"/v1/devices/{device_id}/files/{firmware['id']}/download",
    }
    assert (await _get(api, device_id, sent["id"]))["status"] == "SUCCESS"


async def test_commands_update_firmware_of_another_profile_or_unknown_is_refused(
    api: Api, fleet: Fleet
) -> None:
    device_id, _ = await fleet.device(await fleet.profile())
    other = await fleet.profile("other")
    body = {"profile_id": other, "name": "fw", "version": "1.0.0", "content": "aGVsbG8="}
    firmware = await api.ok("POST", "/api/v1/files", body, status=201)
    path = f"/api/v1/devices/{device_id}/commands"
    status, answer = await api.post(
        path, {"type": "UPDATE_FIRMWARE", "params": {"file_id": firmware["id"]}}
    )
    assert status == 422, answer
    assert answer["error"]["details"][0]["path"] == "$.params.file_id"
    status, _ = await api.post(path, {"type": "UPDATE_FIRMWARE", "params": {"file_id": "nope"}})
    assert status == 404
    assert await _listed(api, device_id) == []


async def test_commands_bind_config_tracks_convergence_to_success(
    api: Api, fleet: Fleet, connect: DeviceFactory
) -> None:
    profile = await fleet.profile()
    device_id, key = await fleet.device(profile)
    artefact = await fleet.artefact(profile, {"setpoint": 21})
    async with stream(api, "?types=command") as events, connect(device_id, key) as device:
        first = await device.desired()
        sent = await _send(api, device_id, "BIND_CONFIG", params={"artefact_id": artefact["id"]})
        assert sent["desired_version"] == first["version"] + 1
        doc = await device.desired(first["version"] + 1)
        assert doc["configs"][0]["artefact_id"] == artefact["id"]
        await _status(events, sent["id"], "SENT")
        await device.publish("reported", _report(doc, "IN_PROGRESS"))
        assert (await _get(api, device_id, sent["id"]))["status"] == "ACKNOWLEDGED"
        await device.publish("reported", _report(doc, "ACCEPTED"))
    done = await _get(api, device_id, sent["id"])
    assert done["status"] == "SUCCESS"
    assert [h["source"] for h in done["history"]] == ["report", "report"]
    # The operator's command is the tracking command: no second one was made.
    assert [c["id"] for c in await _listed(api, device_id)] == [sent["id"]]
    bindings = await api.ok(
        "GET", f"/api/v1/desired-state-bindings?target_id={device_id}&target_type=device"
    )
    (binding,) = bindings["items"]
    detail = await api.ok("GET", f"/api/v1/desired-state-bindings/{binding['id']}")
    assert detail["devices"][0]["command"] == {"id": sent["id"], "status": "SUCCESS"}


async def test_commands_unbind_config_removes_the_binding(
    api: Api, fleet: Fleet, connect: DeviceFactory
) -> None:
    profile = await fleet.profile()
    device_id, key = await fleet.device(profile)
    artefact = await fleet.artefact(profile, {"setpoint": 21})
    await fleet.bind("device", device_id, artefact["id"])
    async with connect(device_id, key) as device:
        bound = await device.desired()
        sent = await _send(api, device_id, "UNBIND_CONFIG", params={"artefact_id": artefact["id"]})
        unbound = await device.desired(bound["version"] + 1)
        assert unbound["configs"] == []
        await device.publish("reported", _report(unbound, "ACCEPTED"))
    assert (await _get(api, device_id, sent["id"]))["status"] == "SUCCESS"
    listed = await api.ok("GET", "/api/v1/desired-state-bindings")
    assert listed["items"] == []
    status, answer = await api.post(
        f"/api/v1/devices/{device_id}/commands",
        {"type": "UNBIND_CONFIG", "params": {"artefact_id": artefact["id"]}},
    )
    assert status == 404, answer


# -- bind and unbind are commands ----------------------------------------------------------------


async def test_commands_binding_change_is_tracked_and_first_document_is_not(
    api: Api, fleet: Fleet, connect: DeviceFactory
) -> None:
    profile = await fleet.profile()
    device_id, key = await fleet.device(profile)
    assert await _listed(api, device_id) == []
    artefact = await fleet.artefact(profile, {"setpoint": 21})
    binding = await fleet.bind("device", device_id, artefact["id"])
    (tracking,) = await _listed(api, device_id)
    assert (tracking["type"], tracking["origin"], tracking["status"]) == (
        "BIND_CONFIG",
        "desired_state",
        "PENDING",
    )
    detail = await api.ok("GET", f"/api/v1/desired-state-bindings/{binding['id']}")
    assert detail["devices"][0]["command"] == {"id": tracking["id"], "status": "PENDING"}
    async with connect(device_id, key) as device:
        doc = await device.desired(tracking["desired_version"])
        await device.publish("reported", _report(doc, "ACCEPTED"))
    assert (await _get(api, device_id, tracking["id"]))["status"] == "SUCCESS"
    await api.ok("DELETE", f"/api/v1/desired-state-bindings/{binding['id']}", status=204)
    unbind, _bind = await _listed(api, device_id)
    assert (unbind["type"], unbind["status"]) == ("UNBIND_CONFIG", "PENDING")


async def test_commands_bind_fails_on_hash_mismatch(
    api: Api, fleet: Fleet, connect: DeviceFactory
) -> None:
    profile = await fleet.profile()
    device_id, key = await fleet.device(profile)
    artefact = await fleet.artefact(profile, {"setpoint": 21})
    await fleet.bind("device", device_id, artefact["id"])
    (tracking,) = await _listed(api, device_id)
    async with connect(device_id, key) as device:
        doc = await device.desired(tracking["desired_version"])
        await device.publish("reported", _report(doc, "ACCEPTED", "sha256:" + "0" * 64))
    failed = await _get(api, device_id, tracking["id"])
    assert failed["status"] == "FAILED"
    assert "hash mismatch" in failed["message"]


async def test_commands_bind_fails_on_rejected_report(
    api: Api, fleet: Fleet, connect: DeviceFactory
) -> None:
    profile = await fleet.profile()
    device_id, key = await fleet.device(profile)
    artefact = await fleet.artefact(profile, {"setpoint": 21})
    await fleet.bind("device", device_id, artefact["id"])
    (tracking,) = await _listed(api, device_id)
    async with connect(device_id, key) as device:
        doc = await device.desired(tracking["desired_version"])
        report = _report(doc, "REJECTED") | {"message": "not for this firmware"}
        await device.publish("reported", report)
    failed = await _get(api, device_id, tracking["id"])
    assert (failed["status"], failed["message"]) == ("FAILED", "not for this firmware")


async def test_commands_newer_change_supersedes_the_open_tracking_command(
    api: Api, fleet: Fleet
) -> None:
    profile = await fleet.profile()
    device_id, _ = await fleet.device(profile)
    first = await fleet.artefact(profile, {"setpoint": 21})
    second = await fleet.artefact(profile, {"setpoint": 22})
    await fleet.bind("device", device_id, first["id"])
    await fleet.bind("device", device_id, second["id"])
    newer, older = await _listed(api, device_id)
    assert (older["status"], older["message"]) == ("CANCELLED", f"superseded by {newer['id']}")
    assert newer["status"] == "PENDING"
    assert newer["desired_version"] == older["desired_version"] + 1


async def test_commands_group_binding_creates_one_command_per_member(
    api: Api, fleet: Fleet
) -> None:
    profile = await fleet.profile()
    members = [(await fleet.device(profile, name=f"d{n}"))[0] for n in range(30)]
    group = await fleet.group("floor", members)
    artefact = await fleet.artefact(profile, {"setpoint": 21})
    await fleet.bind("device_group", group, artefact["id"])
    for device_id in members:
        (tracking,) = await _listed(api, device_id)
        assert (tracking["type"], tracking["status"]) == ("BIND_CONFIG", "PENDING")


# -- delivery ------------------------------------------------------------------------------------


async def test_commands_offline_device_gets_pending_commands_oldest_first_on_connect(
    api: Api, fleet: Fleet, connect: DeviceFactory
) -> None:
    device_id, key = await fleet.device(await fleet.profile())
    sent = [await _send(api, device_id, "REBOOT") for _ in range(3)]
    assert {c["status"] for c in sent} == {"PENDING"}
    async with stream(api, "?types=command") as events, connect(device_id, key) as device:
        received = [(await _command(device))["id"] for _ in sent]
        assert received == [c["id"] for c in sent]
        for command in sent:
            await _status(events, command["id"], "SENT")


async def test_commands_sequential_profile_sends_next_only_after_previous_finished(
    api: Api, connect: DeviceFactory
) -> None:
    body = {"name": "seq", "config_schema": {"type": "object"}, "command_delivery": "sequential"}
    profile = (await api.ok("POST", "/api/v1/device-profiles", body))["id"]
    created = await api.ok("POST", "/api/v1/devices", {"name": "d", "profile_id": profile})
    device_id, key = created["id"], created["access_key"]
    async with connect(device_id, key) as device:
        first = await _send(api, device_id, "REBOOT")
        second = await _send(api, device_id, "REBOOT")
        assert (first["status"], second["status"]) == ("SENT", "PENDING")
        assert (await _command(device))["id"] == first["id"]
        await _ack(device, first["id"], "ACKNOWLEDGED")
        await device.nothing()
        await _ack(device, first["id"], "SUCCESS")
        assert (await _command(device))["id"] == second["id"]


async def test_commands_cancel_pending_or_sent_only(
    api: Api, fleet: Fleet, connect: DeviceFactory
) -> None:
    device_id, key = await fleet.device(await fleet.profile())
    pending = await _send(api, device_id, "REBOOT")
    base = f"/api/v1/devices/{device_id}/commands"
    cancelled = await api.ok("POST", f"{base}/{pending['id']}/cancel")
    assert (cancelled["status"], cancelled["finished_at"] is not None) == ("CANCELLED", True)
    status, answer = await api.post(f"{base}/{pending['id']}/cancel")
    assert (status, answer["error"]["code"]) == (409, "conflict")
    async with connect(device_id, key) as device:
        sent = await _send(api, device_id, "REBOOT")
        assert (await _command(device))["id"] == sent["id"]
        assert (await api.ok("POST", f"{base}/{sent['id']}/cancel"))["status"] == "CANCELLED"
        started = await _send(api, device_id, "REBOOT")
        await _command(device)
        await _ack(device, started["id"], "ACKNOWLEDGED")
        status, _ = await api.post(f"{base}/{started['id']}/cancel")
        assert status == 409
    assert (await _get(api, device_id, started["id"]))["status"] == "ACKNOWLEDGED"
    status, _ = await api.post(f"{base}/nope/cancel")
    assert status == 404


# -- acks ----------------------------------------------------------------------------------------


async def test_commands_duplicate_ack_is_not_double_counted(
    api: Api, fleet: Fleet, connect: DeviceFactory
) -> None:
    device_id, key = await fleet.device(await fleet.profile())
    group = await fleet.group("g", [device_id])
    async with connect(device_id, key) as device:
        batch = await api.ok(
            "POST", f"/api/v1/device-groups/{group}/commands", {"type": "REBOOT"}, status=201
        )
        command = await _command(device)
        await _ack(device, command["id"], "SUCCESS")
        await _ack(device, command["id"], "SUCCESS")
    done = await _get(api, device_id, command["id"])
    assert [h["effect"] for h in done["history"]] == ["applied", "duplicate"]
    counted = await api.ok("GET", f"/api/v1/command-batches/{batch['batch_id']}")
    assert (counted["total"], counted["counts"]) == (1, {"SUCCESS": 1})


async def test_commands_acks_for_unknown_or_other_devices_commands_are_refused(
    api: Api, fleet: Fleet, connect: DeviceFactory
) -> None:
    profile = await fleet.profile()
    mine, _ = await fleet.device(profile, name="mine")
    other_id, other_key = await fleet.device(profile, name="other")
    command = await _send(api, mine, "REBOOT")
    async with connect(other_id, other_key) as other:
        for bad in (
            {"id": command["id"], "status": "SUCCESS"},
            {"id": "no-such-command", "status": "SUCCESS"},
        ):
            await other.publish("commands/ack", bad)
            _topic, error = await other.next("errors")
            assert (error["error"], error["topic"]) == (
                "unknown_command",
                other.topic("commands/ack"),
            )
        for bad_payload, code in (
            ({"id": command["id"], "status": "DONE"}, "schema"),
            ({"id": command["id"], "status": "SUCCESS", "extra": 1}, "schema"),
            (b"{nope", "invalid_json"),
        ):
            await other.publish("commands/ack", bad_payload)
            _topic, error = await other.next("errors")
            assert error["error"] == code
    unchanged = await _get(api, mine, command["id"])
    assert (unchanged["status"], unchanged["history"]) == ("PENDING", [])


async def test_commands_late_ack_after_timeout_is_recorded_but_ignored(
    api: Api, fleet: Fleet, connect: DeviceFactory
) -> None:
    device_id, key = await fleet.device(await fleet.profile())
    async with stream(api, "?types=command") as events, connect(device_id, key) as device:
        sent = await _send(api, device_id, "REBOOT", timeout_s=1)
        await _command(device)
        await _status(events, sent["id"], "TIMEOUT")
        await _ack(device, sent["id"], "SUCCESS")
        _topic, error = await device.next("errors")
        assert error["error"] == "command_finished"
    late = await _get(api, device_id, sent["id"])
    assert (late["status"], late["message"]) == ("TIMEOUT", "no result before the deadline")
    assert [(h["status"], h["effect"]) for h in late["history"]] == [("SUCCESS", "late")]


# -- deadlines -----------------------------------------------------------------------------------


async def test_commands_timeout_fires_at_the_deadline(api: Api, fleet: Fleet) -> None:
    device_id, _ = await fleet.device(await fleet.profile())
    async with stream(api, "?types=command") as events:
        sent = await _send(api, device_id, "REBOOT", timeout_s=1)
        later = await _send(api, device_id, "REBOOT", timeout_s=600)
        event = await _status(events, sent["id"], "TIMEOUT")
    assert event["message"] == "no result before the deadline"
    assert (await _get(api, device_id, later["id"]))["status"] == "PENDING"


@contextlib.asynccontextmanager
async def _running(data: Path) -> AsyncIterator[tuple[app.Service, Api]]:
    async with app.start(make_config(data)) as service, aiohttp.ClientSession() as session:
        yield service, Api(session, service.http_url, ADMIN_TOKEN)


async def test_commands_deadlines_survive_a_restart(tmp_path: Path) -> None:
    data = tmp_path / "data"
    async with _running(data) as (_service, api):
        fleet = Fleet(api)
        device_id, _ = await fleet.device(await fleet.profile())
        due = await _send(api, device_id, "REBOOT", timeout_s=1)
        later = await _send(api, device_id, "REBOOT", timeout_s=6)
    # Stopped with both open; start again once the first deadline passed.
    wait = commands.epoch(due["timeout_at"]) - utcnow().timestamp()
    await asyncio.sleep(max(wait, 0) + 0.05)
    async with _running(data) as (_service, api):
        expired = await _get(api, device_id, due["id"])
        assert expired["status"] == "TIMEOUT"
        async with stream(api, "?types=command") as events:
            assert (await _get(api, device_id, later["id"]))["status"] in OPEN
            await _status(events, later["id"], "TIMEOUT")


# -- groups --------------------------------------------------------------------------------------


async def test_commands_group_command_batch_counts(
    api: Api, fleet: Fleet, connect: DeviceFactory
) -> None:
    profile = await fleet.profile()
    online_id, key = await fleet.device(profile, name="online")
    offline = [(await fleet.device(profile, name=f"off{n}"))[0] for n in range(2)]
    group = await fleet.group("g", [online_id, *offline])
    async with connect(online_id, key) as device:
        batch = await api.ok(
            "POST", f"/api/v1/device-groups/{group}/commands", {"type": "REBOOT"}, status=201
        )
        assert batch["total"] == 3
        command = await _command(device)
        await _ack(device, command["id"], "SUCCESS")
    counted = await api.ok("GET", f"/api/v1/command-batches/{batch['batch_id']}")
    assert counted["counts"] == {"PENDING": 2, "SUCCESS": 1}
    assert sorted(c["device_id"] for c in counted["commands"]) == sorted([online_id, *offline])
    pending = await api.ok("GET", f"/api/v1/command-batches/{batch['batch_id']}?status=PENDING")
    assert sorted(c["device_id"] for c in pending["commands"]) == sorted(offline)


async def test_commands_group_command_bad_inputs(api: Api, fleet: Fleet) -> None:
    empty = await fleet.group("empty", [])
    status, _ = await api.post(f"/api/v1/device-groups/{empty}/commands", {"type": "REBOOT"})
    assert status == 409
    status, _ = await api.post("/api/v1/device-groups/nope/commands", {"type": "REBOOT"})
    assert status == 404
    status, _ = await api.get("/api/v1/command-batches/nope")
    assert status == 404


# -- the REST API --------------------------------------------------------------------------------


async def test_commands_bad_requests_are_refused_and_change_nothing(api: Api, fleet: Fleet) -> None:
    profile = await fleet.profile()
    device_id, _ = await fleet.device(profile)
    other_profile = await fleet.profile("other")
    foreign = await fleet.artefact(other_profile, {"setpoint": 21}, name="other")
    org = await api.ok("POST", "/api/v1/organizations", {"slug": "acme", "name": "A"}, status=201)
    acme = Fleet(api.as_token(org["token"]))
    acme_artefact = await acme.artefact(await acme.profile(), {"setpoint": 21})
    path = f"/api/v1/devices/{device_id}/commands"
    cases: list[tuple[Any, int, str | None]] = [
        ({"type": "DANCE"}, 400, None),
        ({"type": "REBOOT", "timeout_s": 0}, 400, None),
        ({"type": "REBOOT", "colour": "red"}, 400, None),
        ({"type": "REBOOT", "params": {"force": True}}, 422, "$.params.force"),
        ({"type": "UPDATE_FIRMWARE"}, 422, "$.params.file_id"),
        ({"type": "UPDATE_FIRMWARE", "params": {"file_id": 7}}, 422, "$.params.file_id"),
        ({"type": "BIND_CONFIG", "params": {"artefact_id": foreign["id"]}}, 422, None),
        ({"type": "BIND_CONFIG", "params": {"artefact_id": acme_artefact["id"]}}, 404, None),
        ({"type": "UNBIND_CONFIG", "params": {}}, 422, "$.params.artefact_id"),
    ]
    for body, want, where in cases:
        status, answer = await api.post(path, body)
        assert status == want, (body, answer)
        if where is not None:
            assert answer["error"]["details"][0]["path"] == where, answer
    status, _ = await api.call("POST", path, raw=b"{not json")
    assert status == 400
    status, _ = await api.post("/api/v1/devices/nope/commands", {"type": "REBOOT"})
    assert status == 404
    status, _ = await acme.api.post(path, {"type": "REBOOT"})
    assert status == 404
    assert await _listed(api, device_id) == []
    assert (await api.ok("GET", "/api/v1/desired-state-bindings"))["items"] == []


async def test_commands_list_newest_first_filtered_and_paginated(api: Api, fleet: Fleet) -> None:
    device_id, _ = await fleet.device(await fleet.profile())
    sent = [await _send(api, device_id, "REBOOT") for _ in range(5)]
    base = f"/api/v1/devices/{device_id}/commands"
    await api.ok("POST", f"{base}/{sent[0]['id']}/cancel")
    newest_first = [c["id"] for c in reversed(sent)]
    assert [c["id"] for c in await _listed(api, device_id)] == newest_first
    first = await api.ok("GET", f"{base}?limit=2")
    second = await api.ok("GET", f"{base}?limit=2&cursor={first['next_cursor']}")
    third = await api.ok("GET", f"{base}?limit=2&cursor={second['next_cursor']}")
    paged = [c["id"] for part in (first, second, third) for c in part["items"]]
    assert (paged, third["next_cursor"]) == (newest_first, None)
    cancelled = await _listed(api, device_id, "?status=CANCELLED")
    assert [c["id"] for c in cancelled] == [sent[0]["id"]]
    status, _ = await api.get(f"{base}?status=LOST")
    assert status == 400
    status, _ = await api.get(f"{base}/nope")
    assert status == 404


# -- the device HTTP API's functions -------------------------------------------------------------


async def test_commands_take_next_acknowledge_and_has_waiting(
    api: Api, fleet: Fleet, service: app.Service
) -> None:
    device_id, _ = await fleet.device(await fleet.profile())
    other_id, _ = await fleet.device(await fleet.profile("other"))
    store = service.store

    async def has_waiting() -> bool:
        return await store.query(lambda conn: commands.has_waiting(conn, device_id))

    assert not await has_waiting()
    assert await commands.take_next(store, device_id) is None
    first = await _send(api, device_id, "REBOOT")
    await _send(api, device_id, "REBOOT")
    assert await has_waiting()
    taken = await commands.take_next(store, device_id)
    assert msgspec.to_builtins(taken) == {
        "id": first["id"],
        "device_id": device_id,
        "status": "pending",
        "name": "reboot",  # Xyte's name: take_next serves the device HTTP API
        "parameters": {},
    }
    assert (await _get(api, device_id, first["id"]))["status"] == "SENT"
    again = await commands.take_next(store, device_id)
    assert again is not None
    assert again.id == first["id"]
    with pytest.raises(commands.UnknownCommand):
        await commands.acknowledge(store, other_id, first["id"], "SUCCESS", None)
    done = await commands.acknowledge(store, device_id, first["id"], "SUCCESS", "ok")
    assert done["status"] == "SUCCESS"
    late = await commands.acknowledge(store, device_id, first["id"], "FAILED", None)
    assert late["status"] == "SUCCESS"
    assert await has_waiting()


async def test_commands_bind_config_to_a_component(
    api: Api, fleet: Fleet, connect: DeviceFactory
) -> None:
    profile, camera = await fleet.profile(), await fleet.sensor_profile()
    components = [{"name": "cam", "sensor_profile_id": camera}]
    device_id, key = await fleet.device(profile, components=components)
    model = await fleet.artefact(camera, {"model": "v1"}, name="model")
    path = f"/api/v1/devices/{device_id}/commands"
    wrong = {"artefact_id": model["id"], "component": "lens"}
    status, answer = await api.post(path, {"type": "BIND_CONFIG", "params": wrong})
    assert (status, answer["error"]["details"][0]["path"]) == (422, "$.params.component")
    params = {"artefact_id": model["id"], "component": "cam"}
    async with connect(device_id, key) as device:
        sent = await _send(api, device_id, "BIND_CONFIG", params=params)
        doc = await device.desired(sent["desired_version"])
        assert [c["slot"] for c in doc["configs"]] == ["component:cam"]
        await device.publish("reported", _report(doc, "ACCEPTED"))
    assert (await _get(api, device_id, sent["id"]))["status"] == "SUCCESS"
    (binding,) = (await api.ok("GET", "/api/v1/desired-state-bindings"))["items"]
    assert (binding["target_type"], binding["target_id"]) == ("component", f"{device_id}/cam")


async def test_commands_bind_config_that_changes_nothing_supersedes_and_may_be_done_at_once(
    api: Api, fleet: Fleet, connect: DeviceFactory
) -> None:
    profile = await fleet.profile()
    device_id, key = await fleet.device(profile)
    artefact = await fleet.artefact(profile, {"setpoint": 21})
    await fleet.bind("device", device_id, artefact["id"])
    (tracking,) = await _listed(api, device_id)
    params = {"artefact_id": artefact["id"]}
    again = await _send(api, device_id, "BIND_CONFIG", params=params)
    assert (again["status"], again["desired_version"]) == ("PENDING", tracking["desired_version"])
    superseded = await _get(api, device_id, tracking["id"])
    assert (superseded["status"], superseded["message"]) == (
        "CANCELLED",
        f"superseded by {again['id']}",
    )
    async with connect(device_id, key) as device:
        doc = await device.desired(tracking["desired_version"])
        await device.publish("reported", _report(doc, "ACCEPTED"))
    assert (await _get(api, device_id, again["id"]))["status"] == "SUCCESS"
    done = await _send(api, device_id, "BIND_CONFIG", params=params)
    assert (done["status"], done["message"]) == (
        "SUCCESS",
        "the device already runs this desired state",
    )


async def test_commands_artefact_of_an_open_command_cannot_be_deleted(
    api: Api, fleet: Fleet
) -> None:
    """SPEC 5: DELETE is refused while any binding or non-terminal command uses the artefact."""
    profile = await fleet.profile()
    device_id, _key = await fleet.device(profile)
    artefact = await fleet.artefact(profile, {"setpoint": 20})
    await fleet.bind("device", device_id, artefact["id"])
    unbind = await api.ok(
        "POST",
        f"/api/v1/devices/{device_id}/commands",
        {"type": "UNBIND_CONFIG", "params": {"artefact_id": artefact["id"]}},
        status=201,
    )
    assert unbind["status"] == "PENDING"  # the device is offline; the binding is already gone
    assert (await api.ok("GET", "/api/v1/desired-state-bindings"))["items"] == []
    status, answer = await api.delete(f"/api/v1/config-artefacts/{artefact['id']}")
    assert status == 409, answer
    assert unbind["id"] in answer["error"]["message"]
    await api.ok("POST", f"/api/v1/devices/{device_id}/commands/{unbind['id']}/cancel")
    await api.ok("DELETE", f"/api/v1/config-artefacts/{artefact['id']}", status=204)


async def test_commands_report_that_finishes_a_bind_is_announced(
    api: Api, fleet: Fleet, connect: DeviceFactory
) -> None:
    """A BIND_CONFIG finished by the device's report is a `command` event, like any ack."""
    profile = await fleet.profile()
    device_id, key = await fleet.device(profile)
    artefact = await fleet.artefact(profile, {"setpoint": 20})
    async with connect(device_id, key) as device, stream(api) as events:
        first = await device.desired()
        await fleet.bind("device", device_id, artefact["id"])
        doc = await device.desired(first["version"] + 1)
        (bind,) = [c for c in await _listed(api, device_id) if c["type"] == "BIND_CONFIG"]
        await _status(events, bind["id"], "SENT")
        await device.publish("reported", _report(doc, "ACCEPTED"))
        announced = await _status(events, bind["id"], "SUCCESS")
    assert (announced["device_id"], announced["type"]) == (device_id, "BIND_CONFIG")
