"""Binding precedence (component > device > group > profile, then priority, then newest),
the explain view, bulk resolution and the bad inputs of the bindings API."""

from conftest import Api, DeviceFactory, Fleet


async def _winner(api: Api, device_id: str, slot: str = "device") -> dict:
    resolution = await api.ok("GET", f"/api/v1/devices/{device_id}/desired-state?explain=true")
    (found,) = [s for s in resolution["slots"] if s["slot"] == slot]
    return found


async def test_bindings_most_specific_target_wins(api: Api, fleet: Fleet) -> None:
    profile = await fleet.profile()
    device_id, _ = await fleet.device(profile)
    group = await fleet.group("floor-1", [device_id])
    by_profile = await fleet.artefact(profile, {"setpoint": 10}, name="p")
    by_group = await fleet.artefact(profile, {"setpoint": 11}, name="g")
    by_device = await fleet.artefact(profile, {"setpoint": 12}, name="d")
    await fleet.bind("device_profile", profile, by_profile["id"], priority=100)
    doc = await api.ok("GET", f"/api/v1/devices/{device_id}/desired-state")
    assert doc["configs"][0]["content"] == {"setpoint": 10}
    await fleet.bind("device_group", group, by_group["id"])
    doc = await api.ok("GET", f"/api/v1/devices/{device_id}/desired-state")
    assert doc["configs"][0]["content"] == {"setpoint": 11}
    device_binding = await fleet.bind("device", device_id, by_device["id"])
    slot = await _winner(api, device_id)
    assert slot["winner"] == device_binding["id"]
    reasons = {c["target_type"]: c["reason"] for c in slot["candidates"] if not c["won"]}
    assert "more specific" in reasons["device_group"]
    assert "more specific" in reasons["device_profile"]
    await api.ok("DELETE", f"/api/v1/desired-state-bindings/{device_binding['id']}", status=204)
    doc = await api.ok("GET", f"/api/v1/devices/{device_id}/desired-state")
    assert doc["configs"][0]["content"] == {"setpoint": 11}


async def test_bindings_equal_specificity_higher_priority_then_newer_wins(
    api: Api, fleet: Fleet
) -> None:
    profile = await fleet.profile()
    device_id, _ = await fleet.device(profile)
    group_a = await fleet.group("a", [device_id])
    group_b = await fleet.group("b", [device_id])
    first = await fleet.artefact(profile, {"setpoint": 20}, name="first")
    second = await fleet.artefact(profile, {"setpoint": 21}, name="second")
    high = await fleet.bind("device_group", group_a, first["id"], priority=5)
    await fleet.bind("device_group", group_b, second["id"], priority=1)
    slot = await _winner(api, device_id)
    assert slot["winner"] == high["id"]
    (loser,) = [c for c in slot["candidates"] if not c["won"]]
    assert "lower priority" in loser["reason"]
    newer = await fleet.bind("device_group", group_b, second["id"], priority=5)
    slot = await _winner(api, device_id)
    assert slot["winner"] == newer["id"]
    (loser,) = [c for c in slot["candidates"] if not c["won"]]
    assert "newer" in loser["reason"]


async def test_bindings_component_slot_precedence(api: Api, fleet: Fleet) -> None:
    profile = await fleet.profile()
    camera = await fleet.sensor_profile("camera")
    device_id, _ = await fleet.device(
        profile,
        components=[
            {"name": "front", "sensor_profile_id": camera},
            {"name": "back", "sensor_profile_id": camera},
        ],
    )
    for_all = await fleet.artefact(camera, {"fps": 10}, name="cam-default")
    for_front = await fleet.artefact(camera, {"fps": 30}, name="cam-front")
    await fleet.bind("sensor_profile", camera, for_all["id"])
    await fleet.bind("component", f"{device_id}/front", for_front["id"])
    doc = await api.ok("GET", f"/api/v1/devices/{device_id}/desired-state")
    by_slot = {c["slot"]: c["content"] for c in doc["configs"]}
    assert by_slot == {"component:back": {"fps": 10}, "component:front": {"fps": 30}}


async def test_bindings_group_binding_reaches_every_member_in_one_change(
    api: Api, fleet: Fleet, connect: DeviceFactory
) -> None:
    profile = await fleet.profile()
    members = [await fleet.device(profile, f"d{i}") for i in range(5)]
    outsider_id, outsider_key = await fleet.device(profile, "outsider")
    group = await fleet.group("all", [d for d, _ in members])
    artefact = await fleet.artefact(profile, {"setpoint": 18})
    async with connect(*members[0]) as member, connect(outsider_id, outsider_key) as outsider:
        before = await member.desired()
        await outsider.desired()
        binding = await fleet.bind("device_group", group, artefact["id"])
        after = await member.desired(before["version"] + 1)
        assert after["configs"][0]["content"] == {"setpoint": 18}
        await outsider.nothing(0.5)
    assert binding["device_count"] == 5
    assert binding["counts"] == {"PENDING": 5}


async def test_bindings_membership_change_re_resolves_the_device(
    api: Api, fleet: Fleet, connect: DeviceFactory
) -> None:
    profile = await fleet.profile()
    device_id, key = await fleet.device(profile)
    group = await fleet.group("g", [])
    artefact = await fleet.artefact(profile, {"setpoint": 15})
    await fleet.bind("device_group", group, artefact["id"])
    async with connect(device_id, key) as device:
        empty = await device.desired()
        assert empty["configs"] == []
        await api.ok("PUT", f"/api/v1/device-groups/{group}/devices/{device_id}", status=204)
        joined = await device.desired(empty["version"] + 1)
        assert joined["configs"][0]["content"] == {"setpoint": 15}
        await api.ok("DELETE", f"/api/v1/device-groups/{group}/devices/{device_id}", status=204)
        left = await device.desired(joined["version"] + 1)
        assert left["configs"] == []


async def test_bindings_new_device_in_bound_profile_starts_configured(
    fleet: Fleet, connect: DeviceFactory
) -> None:
    profile = await fleet.profile()
    artefact = await fleet.artefact(profile, {"setpoint": 25})
    await fleet.bind("device_profile", profile, artefact["id"])
    device_id, key = await fleet.device(profile)
    async with connect(device_id, key) as device:
        doc = await device.desired()
    assert doc["configs"][0]["artefact_id"] == artefact["id"]


async def test_bindings_put_upserts_per_target_and_slot(api: Api, fleet: Fleet) -> None:
    profile = await fleet.profile()
    device_id, _ = await fleet.device(profile)
    one = await fleet.artefact(profile, {"setpoint": 20})
    two = await fleet.artefact(profile, {"setpoint": 21})
    body = {"target_type": "device", "target_id": device_id, "artefact_id": one["id"]}
    status, created = await api.put("/api/v1/desired-state-bindings", body)
    assert status == 201
    status, replaced = await api.put(
        "/api/v1/desired-state-bindings", {**body, "artefact_id": two["id"]}
    )
    assert status == 200
    assert replaced["id"] == created["id"]
    assert replaced["artefact_id"] == two["id"]
    listed = await api.ok("GET", "/api/v1/desired-state-bindings")
    assert [b["id"] for b in listed["items"]] == [created["id"]]


async def test_bindings_bad_inputs_are_refused_and_change_nothing(api: Api, fleet: Fleet) -> None:
    profile = await fleet.profile()
    other_profile = await fleet.profile("other")
    device_id, _ = await fleet.device(profile)
    artefact = await fleet.artefact(profile, {"setpoint": 20})
    foreign = await fleet.artefact(other_profile, {"setpoint": 20}, name="foreign")
    base = {"target_type": "device", "target_id": device_id, "artefact_id": artefact["id"]}
    cases = [
        ({**base, "target_type": "planet"}, 400),
        ({**base, "target_id": "nope"}, 404),
        ({**base, "artefact_id": "nope"}, 404),
        ({**base, "artefact_id": foreign["id"]}, 400),
        ({**base, "priority": "high"}, 400),
        ({**base, "extra": True}, 400),
        ({**base, "target_type": "component", "target_id": f"{device_id}/missing"}, 404),
        ({**base, "target_type": "device_profile", "target_id": other_profile}, 400),
    ]
    for body, expected in cases:
        status, answer = await api.put("/api/v1/desired-state-bindings", body)
        assert status == expected, (body, answer)
        assert answer["error"]["message"]
    listed = await api.ok("GET", "/api/v1/desired-state-bindings")
    assert listed["items"] == []
    status, answer = await api.delete("/api/v1/artefacts-that-do-not-exist")
    assert status == 404


async def test_bindings_same_artefact_on_a_more_specific_target_takes_the_device_over(
    api: Api, fleet: Fleet
) -> None:
    """The device's document does not change (same artefact, no new version), but which binding
    it has is the more specific one: its status view counts the device, the group's does not."""
    profile = await fleet.profile()
    device_id, _key = await fleet.device(profile)
    group = await fleet.group("g", [device_id])
    artefact = await fleet.artefact(profile, {"setpoint": 18})
    by_group = await fleet.bind("device_group", group, artefact["id"])
    version = (await api.ok("GET", f"/api/v1/devices/{device_id}/desired-state"))["version"]
    by_device = await fleet.bind("device", device_id, artefact["id"])
    assert (await api.ok("GET", f"/api/v1/devices/{device_id}/desired-state"))["version"] == version
    bindings = "/api/v1/desired-state-bindings"
    assert (await api.ok("GET", f"{bindings}/{by_device['id']}"))["device_count"] == 1
    assert (await api.ok("GET", f"{bindings}/{by_group['id']}"))["device_count"] == 0
