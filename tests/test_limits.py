"""What one device may cost the service: telemetry keys per message and per device,
timestamps in the future, the telemetry rate (SPEC section 8), bounded command history, and
retention of every history."""

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from conftest import Api, DeviceFactory, Fleet, make_config
from fleetstate import app, config
from fleetstate.config import Limits
from fleetstate.domain.clock import rfc3339
from fleetstate.domain.limits import RateLimiter
from fleetstate.domain.pagination import Page
from fleetstate.service import reports, retention
from fleetstate.store import Connection
from test_device_api import device_call

LIMITS = Limits(
    telemetry_keys_per_message=20,
    telemetry_keys_per_device=30,
    telemetry_rate_per_device=2.0,
    telemetry_burst=8,
)


@pytest.fixture
async def service(tmp_path: Path) -> AsyncIterator[app.Service]:
    """The real service with small limits, so a test reaches each one quickly."""
    async with app.start(make_config(tmp_path / "data", limits=LIMITS)) as running:
        yield running


def body(**telemetries: Any) -> dict[str, Any]:
    return {"status": "online", "telemetries": telemetries}


async def post(api: Api, device_id: str, key: str, payload: Any) -> tuple[int, Any]:
    return await device_call(api, "POST", f"/v1/devices/{device_id}/telemetry", key, payload)


async def stored(api: Api, device_id: str) -> tuple[dict[str, Any], int]:
    """(merged state, number of history rows)."""
    path = f"/api/v1/devices/{device_id}/telemetry"
    state = (await api.ok("GET", path))["state"]
    rows = (await api.ok("GET", f"{path}?key=&limit=1000"))["items"]
    return dict(state), len(rows)


# -- keys per message and per device ---------------------------------------------------------------


async def test_limits_too_many_keys_in_one_message_are_refused_and_store_nothing(
    api: Api, fleet: Fleet, connect: DeviceFactory
) -> None:
    device_id, key = await fleet.device(await fleet.profile())
    many = {f"k{i}": i for i in range(21)}
    status, answer = await post(api, device_id, key, body(**many))
    assert status == 413
    assert set(answer) == {"error"}
    assert "21 keys" in answer["error"]
    async with connect(device_id, key) as device:
        await device.publish("telemetry", body(**many))
        _topic, error = await device.next("errors")
        assert (error["error"], error["topic"]) == ("too_large", device.topic("telemetry"))
    assert await stored(api, device_id) == ({}, 0)
    exactly = {f"k{i}": i for i in range(20)}
    assert (await post(api, device_id, key, body(**exactly)))[0] == 200


async def test_limits_a_device_state_stops_growing_at_its_cap(api: Api, fleet: Fleet) -> None:
    device_id, key = await fleet.device(await fleet.profile())
    # 29 keys + status = 30: the cap.
    for part in range(3):
        keys = {f"k{part}_{i}": i for i in range(10) if (part, i) != (2, 9)}
        assert (await post(api, device_id, key, body(**keys)))[0] == 200
    state, rows = await stored(api, device_id)
    assert len(state) == 30
    status, answer = await post(api, device_id, key, body(extra=1))
    assert status == 413
    assert "30" in answer["error"]
    assert await stored(api, device_id) == (state, rows)
    # Updating or removing keys stays possible; a removal makes room again.
    assert (await post(api, device_id, key, body(k0_0=99, k0_1=None)))[0] == 200
    assert (await post(api, device_id, key, body(extra=1)))[0] == 200
    state, _rows = await stored(api, device_id)
    assert (len(state), state["k0_0"], state["extra"]) == (30, 99, 1)


# -- timestamps ------------------------------------------------------------------------------------


async def test_limits_timestamps_in_the_future_are_refused(
    api: Api, fleet: Fleet, connect: DeviceFactory
) -> None:
    device_id, key = await fleet.device(await fleet.profile())
    ahead = rfc3339(datetime.now(UTC) + timedelta(hours=1))
    # Epoch numbers from 1e11 on are milliseconds (Xyte devices send either): year 9999 in ms.
    for moment in ("9999-12-31T23:59:59Z", ahead, 253402300000000):
        payload = {**body(a=1), "timestamp": moment}
        status, answer = await post(api, device_id, key, payload)
        assert status == 400, (moment, answer)
        assert "future" in answer["error"]
    async with connect(device_id, key) as device:
        await device.publish("telemetry", {**body(a=1), "timestamp": "9999-01-01T00:00:00Z"})
        _topic, error = await device.next("errors")
        assert error["error"] == "invalid"
    assert await stored(api, device_id) == ({}, 0)
    # A clock a little ahead (within telemetry_future_s) is not a lie worth refusing.
    soon = rfc3339(datetime.now(UTC) + timedelta(seconds=60))
    assert (await post(api, device_id, key, {**body(a=1), "timestamp": soon}))[0] == 200


# -- the telemetry rate ----------------------------------------------------------------------------


async def test_limits_http_telemetry_over_the_rate_answers_429_others_unaffected(
    api: Api, fleet: Fleet, service: app.Service
) -> None:
    profile = await fleet.profile()
    (fast, fast_key), (calm, calm_key) = [await fleet.device(profile, name=n) for n in "ab"]
    statuses = [(await post(api, fast, fast_key, body(n=n)))[0] for n in range(12)]
    # The bucket holds 8; refilling at 2/s may add one or two while the requests run.
    assert statuses[:8] == [200] * 8
    assert statuses[-1] == 429
    status, answer = await post(api, fast, fast_key, body(n=99))
    assert (status, set(answer)) == (429, {"error"})
    assert "rate" in answer["error"]
    assert (await post(api, calm, calm_key, body(n=1)))[0] == 200
    refused = statuses.count(429) + 1
    assert service.telemetry.rate_limited_total == refused
    _state, rows = await stored(api, fast)
    assert rows == 2 * (12 + 1 - refused)  # each accepted message: n and status


async def test_limits_mqtt_telemetry_over_the_rate_is_acknowledged_dropped_and_told(
    api: Api, fleet: Fleet, connect: DeviceFactory, service: app.Service
) -> None:
    profile = await fleet.profile()
    (fast, fast_key), (calm, calm_key) = [await fleet.device(profile, name=n) for n in "ab"]
    only_errors = ("errors",)
    async with (
        connect(fast, fast_key, only_errors) as device,
        connect(calm, calm_key, only_errors) as other,
    ):
        for n in range(16):  # QoS 1: each publish returns on its PUBACK
            await device.publish("telemetry", body(n=n))
        _topic, error = await device.next("errors")
        assert (error["error"], error["topic"]) == ("rate_limited", device.topic("telemetry"))
        await other.publish("telemetry", body(n=1))
        await other.nothing(0.3)
    dropped = service.telemetry.rate_limited_total
    assert 16 - 8 - 2 <= dropped <= 16 - 8
    _state, rows = await stored(api, fast)
    assert rows == 2 * (16 - dropped)
    assert (await stored(api, calm))[1] == 2


def test_limits_rate_limiter_refills_and_forgets_idle_devices() -> None:
    now = [0.0]
    bucket = RateLimiter(rate=2.0, burst=3, clock=lambda: now[0])
    assert [bucket.allow("d") for _ in range(4)] == [True, True, True, False]
    now[0] += 0.5  # one token back
    assert [bucket.allow("d") for _ in range(2)] == [True, False]
    for n in range(5000):  # many devices, each idle afterwards: the table does not keep them
        now[0] += 0.01
        bucket.allow(f"other-{n}")
    assert len(bucket._buckets) < 2000
    assert RateLimiter(rate=0, burst=1).allow("x") is True


def test_limits_are_configurable() -> None:
    assert config.load().limits == Limits()
    example = Path(__file__).parent.parent / "config" / "fleetstate.toml"
    assert config.load(example).limits == Limits()
    env = {"FLEETSTATE_LIMITS_TELEMETRY_RATE_PER_DEVICE": "0.5"}
    assert config.load(environ=env).limits.telemetry_rate_per_device == 0.5
    with pytest.raises(config.Invalid):
        config.load(environ={"FLEETSTATE_LIMITS_TELEMETRY_KEYS_PER_MESSAGE": "0"})


# -- command history -------------------------------------------------------------------------------


async def test_limits_a_commands_history_is_bounded_and_pages(
    api: Api, fleet: Fleet, connect: DeviceFactory
) -> None:
    device_id, key = await fleet.device(await fleet.profile())
    path = f"/api/v1/devices/{device_id}/commands"
    command = await api.ok("POST", path, {"type": "REBOOT"}, status=201)
    async with connect(device_id, key) as device:
        await device.next("commands")
        for n in range(70):  # one real answer, then the same again and again
            await device.publish("commands/ack", {"id": command["id"], "status": "SUCCESS"})
            assert n < 70
    found = await api.ok("GET", f"{path}/{command['id']}")
    assert len(found["history"]) == 50
    assert found["history"][0]["effect"] == "applied"
    assert found["history_next_cursor"] is not None
    rest = await api.ok(
        "GET", f"{path}/{command['id']}/history?limit=100&cursor={found['history_next_cursor']}"
    )
    assert len(rest["items"]) == 20
    assert rest["next_cursor"] is None
    assert {h["effect"] for h in rest["items"]} == {"duplicate"}
    first = await api.ok("GET", f"{path}/{command['id']}/history?limit=1")
    assert first["items"] == found["history"][:1]
    status, error = await api.get(f"{path}/{command['id']}/history?cursor=nope")
    assert (status, error["error"]["code"]) == (400, "invalid")
    assert (await api.get(f"{path}/no-such/history"))[0] == 404


# -- retention of every history --------------------------------------------------------------------


def days_ago(days: float) -> str:
    return rfc3339(datetime.now(UTC) - timedelta(days=days))


async def backdate(service: app.Service, table: str, column: str, days: float) -> None:
    async def job(conn: Connection) -> None:
        await conn.execute(f"UPDATE {table} SET {column} = ?", (days_ago(days),))

    await service.store.write(job)


async def test_limits_retention_prunes_reports_and_command_answers(
    api: Api, fleet: Fleet, connect: DeviceFactory, service: app.Service
) -> None:
    device_id, key = await fleet.device(await fleet.profile())
    async with connect(device_id, key) as device:
        # Created once the document is in: `next` skips what arrives on other topics.
        doc = await device.desired()
        command = await api.ok(
            "POST", f"/api/v1/devices/{device_id}/commands", {"type": "REBOOT"}, status=201
        )
        await device.next("commands")
        await device.publish("reported", {"version": doc["version"], "status": "ACCEPTED"})
        await device.publish("commands/ack", {"id": command["id"], "status": "SUCCESS"})
    assert len((await reports.history(service.store, device_id, Page()))["items"]) == 1
    await backdate(service, "report_history", "received_at", 40)
    await backdate(service, "command_history", "received_at", 40)
    removed = await retention.purge_all(service.store, telemetry_days=30, history_days=30)
    assert removed == {"telemetry_history": 0, "report_history": 1, "command_history": 1}
    assert (await reports.history(service.store, device_id, Page()))["items"] == []
    found = await api.ok("GET", f"/api/v1/devices/{device_id}/commands/{command['id']}")
    assert (found["status"], found["history"]) == ("SUCCESS", [])  # the status is kept
    device_row = await api.ok("GET", f"/api/v1/devices/{device_id}")
    assert device_row["reported_status"] == "ACCEPTED"
    assert await retention.purge_all(service.store, 0, 0) == {
        "telemetry_history": 0,
        "report_history": 0,
        "command_history": 0,
    }


async def test_limits_report_history_pages_newest_first(
    fleet: Fleet, connect: DeviceFactory, service: app.Service
) -> None:
    device_id, key = await fleet.device(await fleet.profile())
    async with connect(device_id, key) as device:
        doc = await device.desired()
        for status in ("IN_PROGRESS", "ACCEPTED", "ACCEPTED"):
            await device.publish("reported", {"version": doc["version"], "status": status})
    first = await reports.history(service.store, device_id, Page(limit=2))
    assert [r["status"] for r in first["items"]] == ["ACCEPTED", "ACCEPTED"]
    rest = await reports.history(service.store, device_id, Page(cursor=first["next_cursor"]))
    assert ([r["status"] for r in rest["items"]], rest["next_cursor"]) == (["IN_PROGRESS"], None)
    assert json.loads(rest["items"][0]["payload"])["status"] == "IN_PROGRESS"
    async with asyncio.timeout(1):
        assert (await reports.history(service.store, "nobody", Page()))["items"] == []
