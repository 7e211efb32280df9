"""The management REST API: profiles, artefacts, devices, tenancy, errors and the OpenAPI doc."""

from conftest import SCHEMA, Api, Fleet


async def test_api_profile_with_invalid_schema_is_422(api: Api) -> None:
    status, answer = await api.post(
        "/api/v1/device-profiles", {"name": "bad", "config_schema": {"type": "banana"}}
    )
    assert status == 422
    assert answer["error"]["details"][0]["path"].startswith("$.config_schema")
    listed = await api.ok("GET", "/api/v1/device-profiles")
    assert listed["items"] == []


async def test_api_profile_names_are_unique(api: Api, fleet: Fleet) -> None:
    await fleet.profile("t")
    status, _ = await api.post("/api/v1/device-profiles", {"name": "t", "config_schema": SCHEMA})
    assert status == 409


async def test_api_artefact_versions_hash_and_immutability(api: Api, fleet: Fleet) -> None:
    profile = await fleet.profile()
    one = await fleet.artefact(profile, {"setpoint": 21})
    two = await fleet.artefact(profile, {"setpoint": 22})
    assert (one["version"], two["version"]) == (1, 2)
    content = await api.session.get(
        f"{api.base}/api/v1/config-artefacts/{one['id']}/content",
        headers={"Authorization": f"Bearer {api.token}"},
    )
    raw = await content.read()
    assert raw == b'{"setpoint":21}'
    import hashlib

    assert one["hash"] == "sha256:" + hashlib.sha256(raw).hexdigest()
    for method in ("PUT", "PATCH"):
        status, answer = await api.call(
            method, f"/api/v1/config-artefacts/{one['id']}", {"content": {}}
        )
        assert status == 405, answer
        assert answer["error"]["code"] == "method_not_allowed"


async def test_api_artefact_schema_violations_are_422_with_paths(api: Api, fleet: Fleet) -> None:
    profile = await fleet.profile()
    status, answer = await api.post(
        "/api/v1/config-artefacts",
        {"name": "t", "profile_id": profile, "content": {"setpoint": 99, "colour": "red"}},
    )
    assert status == 422
    paths = {d["path"] for d in answer["error"]["details"]}
    assert paths == {"$", "$.setpoint"}
    listed = await api.ok("GET", "/api/v1/config-artefacts")
    assert listed["items"] == []


async def test_api_inline_artefact_over_64_kib_is_413(api: Api, fleet: Fleet) -> None:
    profile = await fleet.profile("free", {"type": "object"})
    status, answer = await api.post(
        "/api/v1/config-artefacts",
        {"name": "big", "profile_id": profile, "content": {"x": "a" * 70_000}},
    )
    assert status == 413
    assert "upload-url" in answer["error"]["message"]


async def test_api_bound_artefact_cannot_be_deleted(api: Api, fleet: Fleet) -> None:
    profile = await fleet.profile()
    device_id, _ = await fleet.device(profile)
    artefact = await fleet.artefact(profile, {"setpoint": 21})
    binding = await fleet.bind("device", device_id, artefact["id"])
    status, _ = await api.delete(f"/api/v1/config-artefacts/{artefact['id']}")
    assert status == 409
    await api.ok("DELETE", f"/api/v1/desired-state-bindings/{binding['id']}", status=204)
    await api.ok("DELETE", f"/api/v1/config-artefacts/{artefact['id']}", status=204)


async def test_api_malformed_and_unknown_input_is_400(api: Api, fleet: Fleet) -> None:
    profile = await fleet.profile()
    assert (await api.call("POST", "/api/v1/devices", raw=b"{nope"))[0] == 400
    status, answer = await api.post(
        "/api/v1/devices", {"name": "d", "profile_id": profile, "colour": 1}
    )
    assert status == 400
    assert "colour" in answer["error"]["message"]
    status, _ = await api.post("/api/v1/devices", {"name": 5, "profile_id": profile})
    assert status == 400
    status, _ = await api.post("/api/v1/devices", {"name": "d", "profile_id": "missing"})
    assert status == 404
    big = b'{"name": "' + b"x" * (2 * 1024 * 1024) + b'"}'
    assert (await api.call("POST", "/api/v1/devices", raw=big))[0] == 413
    assert (await api.ok("GET", "/api/v1/devices"))["items"] == []


async def test_api_device_access_key_shown_once_and_serial_unique(api: Api, fleet: Fleet) -> None:
    profile = await fleet.profile()
    created = await api.ok(
        "POST", "/api/v1/devices", {"name": "d", "profile_id": profile, "serial": "S1"}
    )
    assert len(created["access_key"]) >= 32
    fetched = await api.ok("GET", f"/api/v1/devices/{created['id']}")
    assert "access_key" not in fetched
    status, _ = await api.post(
        "/api/v1/devices", {"name": "e", "profile_id": profile, "serial": "S1"}
    )
    assert status == 409


async def test_api_requests_without_a_valid_token_are_401(api: Api) -> None:
    assert (await api.as_token("").get("/api/v1/devices"))[0] == 401
    assert (await api.as_token("wrong").get("/api/v1/devices"))[0] == 401


async def test_api_pagination_walks_every_item_once(api: Api, fleet: Fleet) -> None:
    profile = await fleet.profile()
    ids = {(await fleet.device(profile, f"d{i}"))[0] for i in range(5)}
    seen, cursor = [], ""
    while True:
        page = await api.ok("GET", f"/api/v1/devices?limit=2&cursor={cursor}")
        seen += [d["id"] for d in page["items"]]
        if not page["next_cursor"]:
            break
        cursor = page["next_cursor"]
    assert sorted(seen) == sorted(ids)
    assert (await api.get("/api/v1/devices?limit=0"))[0] == 400


async def test_api_tenancy_other_organizations_objects_are_404(api: Api, fleet: Fleet) -> None:
    profile = await fleet.profile()
    device_id, _ = await fleet.device(profile)
    org = await api.ok(
        "POST", "/api/v1/organizations", {"slug": "acme", "name": "Acme"}, status=201
    )
    acme = api.as_token(org["token"])
    assert (await acme.ok("GET", "/api/v1/organizations/current"))["slug"] == "acme"
    assert (await acme.get(f"/api/v1/devices/{device_id}"))[0] == 404
    assert (await acme.get(f"/api/v1/device-profiles/{profile}"))[0] == 404
    assert (await acme.ok("GET", "/api/v1/devices"))["items"] == []
    status, _ = await acme.post("/api/v1/devices", {"name": "x", "profile_id": profile})
    assert status == 404
    status, _ = await acme.post("/api/v1/organizations", {"slug": "evil", "name": "Evil"})
    assert status == 403
    status, _ = await api.post("/api/v1/organizations", {"slug": "acme", "name": "Again"})
    assert status == 409


async def test_api_tokens_create_list_revoke(api: Api) -> None:
    created = await api.ok("POST", "/api/v1/tokens", {"name": "ci"}, status=201)
    other = api.as_token(created["token"])
    assert (await other.get("/api/v1/devices"))[0] == 200
    listed = await api.ok("GET", "/api/v1/tokens")
    assert created["id"] in {t["id"] for t in listed["items"]}
    assert all("token" not in t and "secret_hash" not in t for t in listed["items"])
    await api.ok("DELETE", f"/api/v1/tokens/{created['id']}", status=204)
    assert (await other.get("/api/v1/devices"))[0] == 401


async def test_api_healthz_and_metrics(api: Api) -> None:
    assert (await api.as_token("").ok("GET", "/healthz")) == {"status": "ok"}
    status, text = await api.as_token("").get("/metrics")
    assert status == 200
    assert "fleetstate_store_commits_total" in text
