"""`DELETE /api/v1/desired-state-bindings?target_type=&target_id=`: every binding of one target of
the caller's organization; another organization's target is 404 like any of its ids."""

from conftest import Api, Fleet

BINDINGS = "/api/v1/desired-state-bindings"


def of(target_type: str, target_id: str) -> str:
    return f"{BINDINGS}?target_type={target_type}&target_id={target_id}"


async def bound_device(fleet: Fleet) -> tuple[str, str]:
    """A device with a binding: (device id, binding id)."""
    profile = await fleet.profile()
    device_id, _ = await fleet.device(profile)
    artefact = await fleet.artefact(profile, {"setpoint": 20})
    binding = await fleet.bind("device", device_id, artefact["id"])
    return device_id, str(binding["id"])


async def test_bindings_delete_of_another_organizations_target_is_404(
    api: Api, fleet: Fleet
) -> None:
    acme = await api.ok("POST", "/api/v1/organizations", {"slug": "acme", "name": "Acme"})
    foreign_api = api.as_token(acme["token"])
    foreign_device, foreign_binding = await bound_device(Fleet(foreign_api))
    own_device, own_binding = await bound_device(fleet)

    status, body = await api.delete(of("device", foreign_device))
    assert status == 404, body
    assert body["error"]["code"] == "not_found"
    assert (await foreign_api.get(f"{BINDINGS}/{foreign_binding}"))[0] == 200
    assert (await foreign_api.delete(of("device", own_device)))[0] == 404
    assert (await api.get(f"{BINDINGS}/{own_binding}"))[0] == 200


async def test_bindings_delete_of_a_target_removes_its_bindings(api: Api, fleet: Fleet) -> None:
    device_id, binding_id = await bound_device(fleet)
    assert (await api.delete(of("device", device_id)))[0] == 204
    assert (await api.get(f"{BINDINGS}/{binding_id}"))[0] == 404
    desired = await api.ok("GET", f"/api/v1/devices/{device_id}/desired-state")
    assert desired["configs"] == []
    # Nothing left to delete on a target of our own is no error.
    assert (await api.delete(of("device", device_id)))[0] == 204


async def test_bindings_delete_of_an_unknown_or_malformed_target_is_refused(
    api: Api, fleet: Fleet
) -> None:
    assert (await api.delete(of("device", "no-such-device")))[0] == 404
    assert (await api.delete(of("device_group", "no-such-group")))[0] == 404
    assert (await api.delete(of("component", "no-such-device/cam")))[0] == 404
    assert (await api.delete(of("planet", "earth")))[0] == 400
    assert (await api.delete(f"{BINDINGS}?target_type=device"))[0] == 400
