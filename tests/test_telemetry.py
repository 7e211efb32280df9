"""Telemetry over HTTP and MQTT (SPEC section 4): merge rules, limits, the answer, history,
retention and group commit."""

import asyncio
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from conftest import Api, DeviceFactory, Fleet
from fleetstate import config
from fleetstate.app import Service
from fleetstate.domain import semver
from fleetstate.domain.clock import rfc3339
from fleetstate.errors import Invalid, NotFound, StoreClosed
from fleetstate.service import telemetry
from fleetstate.service.events import EventHub
from fleetstate.store.sqlite import SqliteStore
from test_device_api import ANSWER_FIELDS, device_call, telemetry_answer, upload_file


async def state_of(api: Api, device_id: str) -> dict[str, Any]:
    return dict(await api.ok("GET", f"/api/v1/devices/{device_id}/telemetry"))


async def history_of(api: Api, device_id: str, query: str = "key=") -> list[dict[str, Any]]:
    found = await api.ok("GET", f"/api/v1/devices/{device_id}/telemetry?{query}")
    return list(found["items"])


def ago(days: float) -> str:
    return rfc3339(datetime.now(UTC) - timedelta(days=days))


# -- merge rules ---------------------------------------------------------------------------------


async def test_telemetry_merges_injects_status_and_null_removes(api: Api, fleet: Fleet) -> None:
    device_id, key = await fleet.device(await fleet.profile())
    await telemetry_answer(api, device_id, key, telemetries={"a": 1, "b": "x", "c": True})
    assert (await state_of(api, device_id))["state"] == {
        "a": 1,
        "b": "x",
        "c": True,
        "status": "online",
    }
    await device_call(
        api,
        "POST",
        f"/v1/devices/{device_id}/telemetry",
        key,
        {"status": "error", "telemetries": {"b": None, "d": 2.5}, "message": "too hot"},
    )
    current = await state_of(api, device_id)
    assert current["state"] == {"a": 1, "c": True, "d": 2.5, "status": "error"}
    assert current["message"] == "too hot"
    assert current["updated_at"] is not None


async def test_telemetry_override_replaces_the_whole_state(api: Api, fleet: Fleet) -> None:
    device_id, key = await fleet.device(await fleet.profile())
    await telemetry_answer(api, device_id, key, telemetries={"a": 1, "b": 2})
    await telemetry_answer(api, device_id, key, telemetries={"c": 3, "d": None}, override=True)
    assert (await state_of(api, device_id))["state"] == {"c": 3, "status": "online"}
    dropped = {(r["key"], r["value"]) for r in await history_of(api, device_id, "key=a")}
    assert dropped == {("a", 1), ("a", None)}


async def test_telemetry_answer_has_exactly_the_documented_fields(api: Api, fleet: Fleet) -> None:
    profile = await fleet.profile()
    device_id, key = await fleet.device(profile)
    answer = await telemetry_answer(api, device_id, key)
    assert set(answer) == ANSWER_FIELDS
    desired = await api.ok("GET", f"/api/v1/devices/{device_id}/desired-state")
    assert answer == {
        "config_version": desired["version"],
        "command": False,
        "new_licenses": False,
        "info_version": 0,
        "latest_fw_version": None,
        "latest_fw_file_id": None,
        "space_data_version": 0,
        "success": True,
    }
    artefact = await fleet.artefact(profile, {"setpoint": 21})
    await fleet.bind("device", device_id, artefact["id"])
    later = await telemetry_answer(api, device_id, key)
    assert later["config_version"] == desired["version"] + 1


async def test_telemetry_latest_firmware_is_the_highest_semver(api: Api, fleet: Fleet) -> None:
    profile = await fleet.profile()
    device_id, key = await fleet.device(profile)
    for version in ("1.9.2", "1.10.0-rc.1", "1.2.30"):
        await upload_file(api, profile, version, b"fw")
    newest = await upload_file(api, profile, "1.10.0", b"fw")
    await upload_file(api, profile, "9.0.0", b"manual", file_type="manual")
    await upload_file(api, await fleet.profile("other"), "20.0.0", b"fw")
    answer = await telemetry_answer(api, device_id, key)
    assert (answer["latest_fw_version"], answer["latest_fw_file_id"]) == ("1.10.0", newest["id"])


# -- values and limits ---------------------------------------------------------------------------


async def test_telemetry_bad_bodies_are_refused_and_change_nothing(api: Api, fleet: Fleet) -> None:
    device_id, key = await fleet.device(await fleet.profile())
    path = f"/v1/devices/{device_id}/telemetry"
    bad: list[dict[str, Any]] = [
        {"status": "online", "colour": "red"},
        {"status": "sleeping"},
        {"telemetries": {"a": 1}},
        {"status": "online", "telemetries": {"a": {"nested": 1}}},
        {"status": "online", "telemetries": {"a": [1, 2]}},
        {"status": "online", "telemetries": {"a": "é" * 501}},
        {"status": "online", "telemetries": {"": 1}},
        {"status": "online", "telemetries": {"k" * 1001: 1}},
        {"status": "online", "message": "m" * 1001},
        {"status": "online", "override": "yes"},
        {"status": "online", "timestamp": "yesterday"},
        {"status": "online", "timestamp": "2026-01-01T00:00:00"},
        {"status": "online", "timestamp": True},
        {"status": "online", "timestamp": 1e30},
        {"status": "online", "timestamp": "0999-01-01T00:00:00Z"},
    ]
    for body in bad:
        status, answer = await device_call(api, "POST", path, key, body)
        assert status == 400, (body, answer)
        assert isinstance(answer["error"], str)
    for raw in (b"", b"{nope", b"[]"):
        assert (await device_call(api, "POST", path, key, raw=raw))[0] == 400, raw
    huge = {"status": "online", "telemetries": {f"k{i}": "v" * 900 for i in range(150)}}
    status, answer = await device_call(api, "POST", path, key, huge)
    assert (status, set(answer)) == (413, {"error"})
    assert (await state_of(api, device_id))["state"] == {}
    assert await history_of(api, device_id) == []


async def test_telemetry_strings_of_exactly_1000_bytes_are_accepted(api: Api, fleet: Fleet) -> None:
    device_id, key = await fleet.device(await fleet.profile())
    text = "é" * 500
    await telemetry_answer(api, device_id, key, telemetries={"a": text}, message="m" * 1000)
    assert (await state_of(api, device_id))["state"]["a"] == text


async def test_telemetry_timestamps_default_to_server_time(api: Api, fleet: Fleet) -> None:
    device_id, key = await fleet.device(await fleet.profile())
    before = rfc3339(datetime.now(UTC))
    await telemetry_answer(api, device_id, key, telemetries={"a": 1})
    await telemetry_answer(
        api, device_id, key, telemetries={"a": 2}, timestamp="2026-01-01T01:00:00+01:00"
    )
    await telemetry_answer(api, device_id, key, telemetries={"a": 3}, timestamp=1767229200)
    rows = await history_of(api, device_id, "key=a")
    assert [(r["timestamp"], r["value"]) for r in rows[:2]] == [
        ("2026-01-01T00:00:00.000Z", 2),
        ("2026-01-01T01:00:00.000Z", 3),
    ]
    assert rows[2]["value"] == 1
    assert rows[2]["timestamp"] >= before


# -- history -------------------------------------------------------------------------------------


async def test_telemetry_history_filters_by_time_and_key_and_pages(api: Api, fleet: Fleet) -> None:
    device_id, key = await fleet.device(await fleet.profile())
    times = ["2026-03-01T00:00:00.000Z", "2026-03-02T00:00:00.000Z", "2026-03-03T00:00:00.000Z"]
    for i, moment in enumerate(times):
        await telemetry_answer(api, device_id, key, telemetries={"temp": 20 + i}, timestamp=moment)
    temps = await history_of(api, device_id, "key=temp")
    assert [(r["timestamp"], r["value"]) for r in temps] == list(
        zip(times, [20, 21, 22], strict=True)
    )
    assert all(set(r) == {"timestamp", "key", "value"} for r in temps)
    assert len(await history_of(api, device_id, f"from={times[1]}")) == 4  # temp and status
    assert [r["value"] for r in await history_of(api, device_id, f"to={times[1]}&key=temp")] == [20]
    assert [r["value"] for r in await _walk(api, device_id, "key=temp")] == [20, 21, 22]
    every = await _walk(api, device_id, "key=")  # two rows share each timestamp
    assert [(r["key"], r["value"]) for r in every] == [
        pair for temp in (20, 21, 22) for pair in (("temp", temp), ("status", "online"))
    ]


async def _walk(api: Api, device_id: str, query: str) -> list[dict[str, Any]]:
    seen: list[dict[str, Any]] = []
    cursor = ""
    while True:
        page = await api.ok(
            "GET", f"/api/v1/devices/{device_id}/telemetry?{query}&limit=1&cursor={cursor}"
        )
        seen += page["items"]
        if not page["next_cursor"]:
            return seen
        cursor = page["next_cursor"]


async def test_telemetry_history_bad_queries_are_400_and_scoped(api: Api, fleet: Fleet) -> None:
    device_id, _ = await fleet.device(await fleet.profile())
    path = f"/api/v1/devices/{device_id}/telemetry"
    for query in ("from=yesterday", "to=2026-01-01T00:00:00", "key=a&limit=0", "cursor=x"):
        status, answer = await api.get(f"{path}?{query}")
        assert status == 400, query
        assert answer["error"]["code"] == "invalid"
    assert (await api.get("/api/v1/devices/unknown/telemetry"))[0] == 404
    org = await api.ok("POST", "/api/v1/organizations", {"slug": "acme", "name": "A"}, status=201)
    acme = api.as_token(org["token"])
    assert (await acme.get(path))[0] == 404
    assert (await acme.get(f"{path}?key=a"))[0] == 404


# -- MQTT ----------------------------------------------------------------------------------------


async def test_telemetry_over_mqtt_has_the_same_effect(
    api: Api, fleet: Fleet, connect: DeviceFactory
) -> None:
    device_id, key = await fleet.device(await fleet.profile())
    async with connect(device_id, key) as device:
        # QoS 1: the PUBACK comes once the message is committed.
        await device.publish("telemetry", {"status": "online", "telemetries": {"a": 1, "b": 2}})
        await device.publish("telemetry", {"status": "online", "telemetries": {"b": None}})
    assert (await state_of(api, device_id))["state"] == {"a": 1, "status": "online"}
    assert [r["value"] for r in await history_of(api, device_id, "key=b")] == [2, None]


async def test_telemetry_bad_mqtt_messages_answer_on_errors_and_change_nothing(
    api: Api, fleet: Fleet, connect: DeviceFactory
) -> None:
    device_id, key = await fleet.device(await fleet.profile())
    async with connect(device_id, key) as device:
        too_big = json.dumps({"status": "online", "telemetries": {"a": "x" * 200_000}}).encode()
        for payload, code in (
            (b"{nope", "invalid_json"),
            ({"status": "online", "extra": 1}, "schema"),
            ({"status": "online", "telemetries": {"a": "x" * 1001}}, "invalid"),
            (too_big, "too_large"),
        ):
            await device.publish("telemetry", payload)
            _topic, error = await device.next("errors")
            assert (error["error"], error["topic"]) == (code, device.topic("telemetry")), error
    assert (await state_of(api, device_id))["state"] == {}


# -- group commit and retention ------------------------------------------------------------------


async def test_telemetry_storm_commits_in_a_few_transactions(
    api: Api, fleet: Fleet, service: Service
) -> None:
    # 300 messages from 10 devices: 30 each stays within a device's burst (telemetry_burst).
    profile = await fleet.profile()
    device_ids = [(await fleet.device(profile, name=f"d{n}"))[0] for n in range(10)]
    commits = service.store.commits
    payloads = [
        json.dumps({"status": "online", "telemetries": {f"k{i}": i}}).encode() for i in range(30)
    ]
    async with asyncio.timeout(30):
        await asyncio.gather(
            *(service.telemetry.record(d, p) for p in payloads for d in device_ids)
        )
    assert service.store.commits - commits <= 3
    for device_id in device_ids:
        state = (await state_of(api, device_id))["state"]
        assert state == {"status": "online", **{f"k{i}": i for i in range(30)}}


async def test_telemetry_batch_merges_one_devices_messages_in_arrival_order(
    api: Api, fleet: Fleet, service: Service
) -> None:
    """Messages arriving together are written in one job; each still merges onto the state the
    one before it left, as if written one by one."""
    device_id, _ = await fleet.device(await fleet.profile())
    messages = [
        {"status": "online", "telemetries": {"a": 1}},
        {"status": "online", "telemetries": {"a": None, "b": 2}},
        {"status": "error", "telemetries": {"c": 3}, "override": True, "message": "reset"},
        {"status": "online", "telemetries": {"d": 4}},
    ]
    commits = service.store.commits
    await asyncio.gather(
        *(service.telemetry.record(device_id, json.dumps(m).encode()) for m in messages)
    )
    assert service.store.commits - commits <= 2
    state = await state_of(api, device_id)
    assert state["state"] == {"c": 3, "d": 4, "status": "online"}
    assert state["message"] is None  # the last message had none
    history = [(r["key"], r["value"]) for r in await history_of(api, device_id, "key=")]
    assert [v for k, v in history if k == "a"] == [1, None]
    assert [v for k, v in history if k == "b"] == [2, None]  # the override dropped it
    assert [v for k, v in history if k == "status"] == ["online", "online", "error", "online"]


async def test_telemetry_batch_message_for_a_missing_device_fails_alone(
    api: Api, fleet: Fleet, service: Service
) -> None:
    device_id, _ = await fleet.device(await fleet.profile())
    good = json.dumps({"status": "online", "telemetries": {"t": 1}}).encode()
    results = await asyncio.gather(
        service.telemetry.record(device_id, good),
        service.telemetry.record("no-such-device", good),
        service.telemetry.record_and_answer(device_id, good),
        return_exceptions=True,
    )
    assert results[0] is None
    assert isinstance(results[1], NotFound)
    assert isinstance(results[2], telemetry.Answer)
    assert (await state_of(api, device_id))["state"] == {"t": 1, "status": "online"}
    assert len(await history_of(api, device_id, "key=t")) == 2


async def test_telemetry_after_the_store_closed_every_message_is_refused_at_once(
    tmp_path: Path,
) -> None:
    store = await SqliteStore.open(tmp_path / "closed.db")
    writer = asyncio.create_task(store.writer_loop())
    await store.close()
    await writer
    recorder = telemetry.Recorder(store, EventHub())
    good = json.dumps({"status": "online", "telemetries": {"t": 1}}).encode()
    for _ in range(2):  # the first refusal must not leave the second waiting
        with pytest.raises(StoreClosed):
            async with asyncio.timeout(5):
                await recorder.record("any-device", good)


async def test_telemetry_retention_removes_old_history_only(
    api: Api, fleet: Fleet, service: Service
) -> None:
    device_id, key = await fleet.device(await fleet.profile())
    await telemetry_answer(api, device_id, key, telemetries={"a": 1}, timestamp=ago(40))
    await telemetry_answer(api, device_id, key, telemetries={"b": 2}, timestamp=ago(1))
    assert await telemetry.purge_expired(service.store, 0) == 0
    assert await telemetry.purge_expired(service.store, 30) == 2  # key a and its status
    assert {r["key"] for r in await history_of(api, device_id)} == {"b", "status"}
    assert (await state_of(api, device_id))["state"] == {"a": 1, "b": 2, "status": "online"}
    running = {task.get_name() for task in asyncio.all_tasks()}
    assert "history-retention" in running


def test_telemetry_retention_is_configurable(tmp_path: Path) -> None:
    assert config.load().telemetry_retention_days == 30
    example = Path(__file__).parent.parent / "config" / "fleetstate.toml"
    assert config.load(example).telemetry_retention_days == 30
    env = {"FLEETSTATE_TELEMETRY_RETENTION_DAYS": "7"}
    assert config.load(environ=env).telemetry_retention_days == 7
    with pytest.raises(Invalid):
        config.load(environ={"FLEETSTATE_TELEMETRY_RETENTION_DAYS": "-1"})


def test_telemetry_firmware_versions_order_by_semver_precedence() -> None:
    ordered = [
        "1.0.0-alpha",
        "1.0.0-alpha.1",
        "1.0.0-alpha.beta",
        "1.0.0-beta",
        "1.0.0-beta.2",
        "1.0.0-beta.11",
        "1.0.0-rc.1",
        "1.0.0",
        "1.9.2",
        "1.10.0",
        "2.0.0+build.7",
    ]
    shuffled = ordered[6:] + ordered[:6][::-1]
    assert sorted(shuffled, key=semver.key) == ordered
    assert semver.key("1.2.3+a") == semver.key("1.2.3+b")
    for bad in ("1.2", "01.2.3", "1.2.3-", "1.2.3-01", "v1.2.3", "1.2.3.4", ""):
        assert not semver.is_valid(bad), bad
        with pytest.raises(Invalid):
            semver.key(bad)
