"""After-commit effects: a write's recorded effects fire after its commit, and only if it
committed; a job whose savepoint rolled back fires nothing."""

import asyncio
from pathlib import Path

import aiomqtt
import pytest

from conftest import WAIT, Api, DeviceFactory, Fleet
from fleetstate import app
from fleetstate.errors import Invalid
from fleetstate.service import commands, devices, outbox, reports
from fleetstate.service.desired import DesiredChange
from fleetstate.store import Connection
from fleetstate.store.sqlite import SqliteStore


async def _org_of(service: app.Service, device_id: str) -> str:
    row = await service.store.fetchone("SELECT org_id FROM devices WHERE id = ?", (device_id,))
    assert row is not None
    return str(row[0])


def _change(device_id: str) -> DesiredChange:
    return DesiredChange(device_id=device_id, version=1, document=b"{}")


async def test_outbox_rolled_back_job_fires_nothing_committed_neighbour_fires(
    tmp_path: Path,
) -> None:
    fired: list[list[str]] = []

    async def failing(conn: Connection) -> None:
        outbox.deliver([_change("lost")])
        raise Invalid("checked after recording")

    async def committing(conn: Connection) -> str:
        outbox.deliver([_change("kept")])
        return "done"

    async with (
        asyncio.timeout(WAIT),
        SqliteStore.running(tmp_path / "db.sqlite", effects=outbox.job_scope) as store,
    ):
        store.after_commit = lambda e: fired.append([c.device_id for c in e.deliveries])
        # Queued together, so the writer runs both in one batch, each in its own savepoint.
        failed, committed = store.submit(failing), store.submit(committing)
        with pytest.raises(Invalid):
            await failed
        assert await committed == "done"
    assert fired == [["kept"]]


async def test_outbox_rolled_back_job_fires_no_disconnect_or_new_commands(tmp_path: Path) -> None:
    fired: list[outbox.Effects] = []

    async def failing(conn: Connection) -> None:
        outbox.disconnect("cut-off")
        outbox.commands_created([], None)
        outbox.commands_finished([])
        raise Invalid("checked after recording")

    async with (
        asyncio.timeout(WAIT),
        SqliteStore.running(tmp_path / "db.sqlite", effects=outbox.job_scope) as store,
    ):
        store.after_commit = fired.append
        with pytest.raises(Invalid):
            await store.write(failing)
    assert fired == []


async def test_outbox_awaited_effects_hold_only_their_own_job(tmp_path: Path) -> None:
    async with (
        asyncio.timeout(WAIT),
        SqliteStore.running(tmp_path / "db.sqlite", effects=outbox.job_scope) as store,
    ):
        gate: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        store.after_commit = lambda effects: gate if effects.disconnects else None

        async def cutting(conn: Connection) -> str:
            outbox.disconnect("d")
            return "cut"

        async def plain(conn: Connection) -> str:
            return "plain"

        cut, beside = store.submit(cutting), store.submit(plain)
        assert await beside == "plain"  # the same batch: not held by its neighbour's effects
        assert await store.write(plain) == "plain"  # nor is the writer
        assert not cut.done()
        gate.set_result(None)
        assert await cut == "cut"


async def test_outbox_recording_outside_a_write_job_is_refused() -> None:
    with pytest.raises(RuntimeError, match="inside a store write job"):
        outbox.deliver([_change("d")])


async def test_outbox_write_failing_after_resolving_delivers_nothing(
    service: app.Service, api: Api, fleet: Fleet, connect: DeviceFactory
) -> None:
    profile = await fleet.profile()
    device_id, key = await fleet.device(profile)
    first = await fleet.artefact(profile, {"setpoint": 21})
    await fleet.bind("device", device_id, first["id"])

    async def unbind_then_fail(conn: Connection) -> None:
        # A real resolve inside the job: the device's document changes (nothing bound), the
        # change is recorded for delivery, then the write fails its check and rolls back.
        cursor = await conn.execute("SELECT org_id FROM devices WHERE id = ?", (device_id,))
        row = await cursor.fetchone()
        assert row is not None
        await conn.execute("DELETE FROM bindings WHERE target_id = ?", (device_id,))
        changed = await commands.resolve_desired(conn, row[0], [device_id])
        assert changed, "the job must have resolved a change for the test to prove anything"
        raise Invalid("fails validation after resolving")

    async with connect(device_id, key) as device:
        bound = await device.desired()
        assert bound["configs"][0]["content"] == {"setpoint": 21}
        with pytest.raises(Invalid):
            await service.store.write(unbind_then_fail)
        second = await fleet.artefact(profile, {"setpoint": 22})
        await fleet.bind("device", device_id, second["id"])
        # The next document the device gets is the committed one: the rolled-back unbind
        # (the same version number, nothing bound) never went out.
        after = await device.desired(bound["version"] + 1)
        assert after["configs"][0]["content"] == {"setpoint": 22}
        assert after["version"] == bound["version"] + 1
    current = await api.ok("GET", f"/api/v1/devices/{device_id}/desired-state")
    assert current["version"] == bound["version"] + 1


async def test_outbox_report_rolled_back_after_judging_announces_nothing(
    service: app.Service, fleet: Fleet
) -> None:
    device_id, _key = await fleet.device(await fleet.profile())
    org_id = await _org_of(service, device_id)

    async def report_then_fail(conn: Connection) -> None:
        # The real report path records its event, then the write fails and rolls back.
        failed = reports.Report(version=1, status="FAILED", message="rolled back")
        await reports.apply(conn, device_id, failed, "{}")
        raise Invalid("fails after the report was judged")

    async with service.gateway.events.subscribe(org_id) as events:
        with pytest.raises(Invalid):
            await service.store.write(report_then_fail)
        kept = reports.Report(version=1, status="FAILED", message="committed")
        await reports.record(service.store, device_id, kept, b"{}")
        async with asyncio.timeout(WAIT):
            event = await events.next()
    # The first event on the stream is the committed report's: the rolled-back one never fired.
    assert event is not None
    assert (event.type, event.data["message"]) == ("report", "committed")


async def _sequential_device(api: Api) -> tuple[str, str, str]:
    """A device whose profile delivers one command at a time: (id, key, its commands path)."""
    body = {"name": "seq", "config_schema": {"type": "object"}, "command_delivery": "sequential"}
    profile = (await api.ok("POST", "/api/v1/device-profiles", body))["id"]
    created = await api.ok("POST", "/api/v1/devices", {"name": "d", "profile_id": profile})
    device_id = created["id"]
    return device_id, created["access_key"], f"/api/v1/devices/{device_id}/commands"


async def test_outbox_cancel_of_sent_sequential_command_lets_the_next_go(
    service: app.Service, api: Api, connect: DeviceFactory
) -> None:
    device_id, key, base = await _sequential_device(api)
    async with (
        service.gateway.events.subscribe(await _org_of(service, device_id)) as events,
        connect(device_id, key) as device,
    ):
        first = await api.ok("POST", base, {"type": "REBOOT"}, status=201)
        second = await api.ok("POST", base, {"type": "REBOOT"}, status=201)
        assert (await device.next("commands"))[1]["id"] == first["id"]
        await api.ok("POST", f"{base}/{first['id']}/cancel")
        # The cancel's effects, fired from the outbox after its commit: the next command goes.
        assert (await device.next("commands"))[1]["id"] == second["id"]
        async with asyncio.timeout(WAIT):
            while True:
                event = await events.next()
                assert event is not None
                if event.type == "command" and event.data.get("status") == "CANCELLED":
                    break
        assert event.data["id"] == first["id"]


async def test_outbox_rolled_back_key_replacement_leaves_the_session_alone(
    service: app.Service, api: Api, fleet: Fleet, connect: DeviceFactory
) -> None:
    device_id, key = await fleet.device(await fleet.profile())
    org_id = await _org_of(service, device_id)

    async def rekey_then_fail(conn: Connection) -> None:
        await devices.replace_key(conn, org_id, device_id, "not-a-hash")
        raise Invalid("fails after the key was replaced")

    async with connect(device_id, key) as device:
        await device.desired()
        with pytest.raises(Invalid):
            await service.store.write(rekey_then_fail)
        # Still connected: a command is delivered at once and the answer shows it SENT.
        base = f"/api/v1/devices/{device_id}/commands"
        sent = await api.ok("POST", base, {"type": "REBOOT"}, status=201)
        assert sent["status"] == "SENT"
        assert (await device.next("commands"))[1]["id"] == sent["id"]
        rotated = await api.ok("POST", f"/api/v1/devices/{device_id}/access-key")
        with pytest.raises(aiomqtt.MqttError):  # the committed rotation did cut it off
            async with asyncio.timeout(WAIT):
                async for _message in device.client.messages:
                    pass
    async with connect(device_id, rotated["access_key"]) as device:
        await device.desired()


async def test_outbox_rolled_back_command_is_neither_sent_nor_announced(
    service: app.Service, api: Api, fleet: Fleet, connect: DeviceFactory
) -> None:
    device_id, key = await fleet.device(await fleet.profile())
    org_id = await _org_of(service, device_id)

    async def issue_then_fail(conn: Connection) -> None:
        await commands.issue(conn, org_id, device_id, commands.NewCommand(type="REBOOT"))
        raise Invalid("fails after the command was issued")

    async with (
        service.gateway.events.subscribe(org_id) as events,
        connect(device_id, key) as device,
    ):
        await device.desired()
        with pytest.raises(Invalid):
            await service.store.write(issue_then_fail)
        base = f"/api/v1/devices/{device_id}/commands"
        kept = await api.ok("POST", base, {"type": "REBOOT"}, status=201)
        # The first command the device gets and the first one announced are the committed one.
        assert (await device.next("commands"))[1]["id"] == kept["id"]
        async with asyncio.timeout(WAIT):
            event = await events.next()
            while event is not None and event.type != "command":
                event = await events.next()
    assert event is not None
    assert event.data["id"] == kept["id"]
    listed = await api.ok("GET", base)
    assert [c["id"] for c in listed["items"]] == [kept["id"]]


async def test_outbox_rolled_back_answer_announces_nothing_and_holds_the_next(
    service: app.Service, api: Api, connect: DeviceFactory
) -> None:
    device_id, key, base = await _sequential_device(api)

    async with (
        service.gateway.events.subscribe(await _org_of(service, device_id)) as events,
        connect(device_id, key) as device,
    ):
        first = await api.ok("POST", base, {"type": "REBOOT"}, status=201)
        second = await api.ok("POST", base, {"type": "REBOOT"}, status=201)
        assert (await device.next("commands"))[1]["id"] == first["id"]
        done = commands.Ack(id=first["id"], status="SUCCESS", message="rolled back")

        async def answer_then_fail(conn: Connection) -> None:
            await commands.apply_ack(conn, device_id, done)
            raise Invalid("fails after the answer was applied")

        with pytest.raises(Invalid):
            await service.store.write(answer_then_fail)
        # The device's HTTP answer commits: it is announced and lets the next command go.
        answer = {"id": first["id"], "status": "done", "message": "committed"}
        headers = {"Authorization": key}
        url = f"{api.base}/v1/devices/{device_id}/command"
        async with api.session.post(url, json=answer, headers=headers) as response:
            assert response.status == 200, await response.text()
        assert (await device.next("commands"))[1]["id"] == second["id"]
        async with asyncio.timeout(WAIT):
            while True:
                event = await events.next()
                assert event is not None
                if event.type == "command" and event.data["status"] == "SUCCESS":
                    break
    assert (event.data["id"], event.data["message"]) == (first["id"], "committed")
