"""Desired state reaches devices over MQTT and converges: the keystone, end to end."""

from typing import Any

from conftest import Api, DeviceFactory, Fleet


async def test_desired_device_gets_current_document_on_subscribe(
    fleet: Fleet, connect: DeviceFactory
) -> None:
    profile = await fleet.profile()
    device_id, key = await fleet.device(profile)
    artefact = await fleet.artefact(profile, {"setpoint": 21})
    await fleet.bind("device", device_id, artefact["id"])
    async with connect(device_id, key) as device:
        doc = await device.desired()
    assert doc["configs"] == [
        {
            "slot": "device",
            "artefact_id": artefact["id"],
            "name": "thermostat",
            "artefact_version": 1,
            "hash": artefact["hash"],
            "size": artefact["size"],
            "content": {"setpoint": 21},
        }
    ]


async def test_desired_device_with_nothing_bound_gets_empty_configs(
    fleet: Fleet, connect: DeviceFactory
) -> None:
    device_id, key = await fleet.device(await fleet.profile())
    async with connect(device_id, key) as device:
        doc = await device.desired()
    assert doc["configs"] == []
    assert doc["version"] >= 1


async def test_desired_connected_device_receives_each_change_with_higher_version(
    fleet: Fleet, connect: DeviceFactory
) -> None:
    profile = await fleet.profile()
    device_id, key = await fleet.device(profile)
    async with connect(device_id, key) as device:
        first = await device.desired()
        artefact = await fleet.artefact(profile, {"setpoint": 22})
        await fleet.bind("device", device_id, artefact["id"])
        second = await device.desired(first["version"] + 1)
        assert second["configs"][0]["content"] == {"setpoint": 22}
        newer = await fleet.artefact(profile, {"setpoint": 23})
        assert newer["version"] == 2
        await fleet.bind("device", device_id, newer["id"])
        third = await device.desired(second["version"] + 1)
        assert third["configs"][0]["artefact_version"] == 2


async def test_desired_report_accepted_with_right_hash_converges(
    api: Api, fleet: Fleet, connect: DeviceFactory
) -> None:
    profile = await fleet.profile()
    device_id, key = await fleet.device(profile)
    artefact = await fleet.artefact(profile, {"setpoint": 21})
    binding = await fleet.bind("device", device_id, artefact["id"])
    async with connect(device_id, key) as device:
        doc = await device.desired()
        await device.publish("reported", _report(doc, "ACCEPTED"))
    status = await api.ok("GET", f"/api/v1/desired-state-bindings/{binding['id']}")
    assert status["counts"] == {"ACCEPTED": 1}
    (row,) = status["devices"]
    assert (row["device_id"], row["version"], row["hash"]) == (
        device_id,
        doc["version"],
        artefact["hash"],
    )
    device_row = await api.ok("GET", f"/api/v1/devices/{device_id}")
    assert device_row["config_status"] == "ACCEPTED"


async def test_desired_report_with_wrong_hash_is_failed_with_message(
    api: Api, fleet: Fleet, connect: DeviceFactory
) -> None:
    profile = await fleet.profile()
    device_id, key = await fleet.device(profile)
    artefact = await fleet.artefact(profile, {"setpoint": 21})
    binding = await fleet.bind("device", device_id, artefact["id"])
    async with connect(device_id, key) as device:
        doc = await device.desired()
        report = _report(doc, "ACCEPTED")
        report["configs"][0]["hash"] = "sha256:" + "0" * 64
        await device.publish("reported", report)
    status = await api.ok("GET", f"/api/v1/desired-state-bindings/{binding['id']}")
    (row,) = status["devices"]
    assert row["status"] == "FAILED"
    assert "hash mismatch" in row["message"]
    device_row = await api.ok("GET", f"/api/v1/devices/{device_id}")
    assert device_row["config_status"] == "FAILED"
    assert "hash mismatch" in device_row["reported_message"]


async def test_desired_report_for_old_version_is_history_only(
    api: Api, fleet: Fleet, connect: DeviceFactory
) -> None:
    profile = await fleet.profile()
    device_id, key = await fleet.device(profile)
    async with connect(device_id, key) as device:
        old = await device.desired()
        artefact = await fleet.artefact(profile, {"setpoint": 21})
        await fleet.bind("device", device_id, artefact["id"])
        new = await device.desired(old["version"] + 1)
        await device.publish("reported", _report(new, "IN_PROGRESS"))
        await device.publish("reported", _report(old, "REJECTED"))
    row = await api.ok("GET", f"/api/v1/devices/{device_id}")
    assert (row["reported_version"], row["reported_status"]) == (new["version"], "IN_PROGRESS")


async def test_desired_bad_reports_answer_on_errors_topic_and_change_nothing(
    api: Api, fleet: Fleet, connect: DeviceFactory
) -> None:
    profile = await fleet.profile()
    device_id, key = await fleet.device(profile)
    async with connect(device_id, key) as device:
        doc = await device.desired()
        bad: list[tuple[Any, str]] = [
            (b"{not json", "invalid_json"),
            ({"version": doc["version"], "status": "GREAT"}, "schema"),
            ({"version": doc["version"], "status": "ACCEPTED", "extra": 1}, "schema"),
            ({"version": doc["version"] + 5, "status": "ACCEPTED"}, "invalid"),
            (b"x" * (256 * 1024 + 1), "too_large"),
        ]
        for payload, code in bad:
            await device.publish("reported", payload)
            _topic, error = await device.next("errors")
            assert error["error"] == code, error
            assert error["topic"] == device.topic("reported")
    row = await api.ok("GET", f"/api/v1/devices/{device_id}")
    assert row["reported_version"] is None
    assert row["config_status"] == "PENDING"


def _report(doc: dict[str, Any], status: str) -> dict[str, Any]:
    return {
        "version": doc["version"],
        "status": status,
        "configs": [
            {
                "slot": c["slot"],
                "artefact_id": c["artefact_id"],
                "hash": c["hash"],
                "status": status,
            }
            for c in doc["configs"]
        ],
    }
