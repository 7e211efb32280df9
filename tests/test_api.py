"""The management REST API: profiles, artefacts, devices, tenancy, errors and the OpenAPI doc."""

import pytest

from conftest import SCHEMA, Api, DeviceFactory, Fleet, eventually


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


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/devices?cursor=garbage",
        "/api/v1/device-profiles?cursor=garbage",
        "/api/v1/device-groups?cursor=garbage",
        "/api/v1/config-artefacts?cursor=garbage",
        "/api/v1/desired-state-bindings?cursor=garbage",
        "/api/v1/hardware-keys?cursor=garbage",
        "/api/v1/files?cursor=garbage",
        "/api/v1/devices?cursor=0197aa00bb11cc22dd3%27",
    ],
)
async def test_api_list_with_a_malformed_cursor_is_400(api: Api, fleet: Fleet, path: str) -> None:
    await fleet.device(await fleet.profile())
    status, answer = await api.get(path)
    assert (status, answer["error"]["code"]) == (400, "invalid"), answer
    assert "cursor" in answer["error"]["message"]


async def test_api_device_commands_and_history_with_a_malformed_cursor_are_400(
    api: Api, fleet: Fleet
) -> None:
    device_id, _ = await fleet.device(await fleet.profile())
    for path in (
        f"/api/v1/devices/{device_id}/commands?cursor=garbage",
        f"/api/v1/devices/{device_id}/telemetry?cursor=garbage",
    ):
        assert (await api.get(path))[0] == 400, path


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/devices?onlin=true",
        "/api/v1/devices?status=ACCEPTED",
        "/api/v1/device-profiles?name=x",
        "/api/v1/device-groups?q=x",
        "/api/v1/tokens?limit=5",
    ],
)
async def test_api_unknown_query_parameter_is_400(api: Api, path: str) -> None:
    status, answer = await api.get(path)
    assert status == 400, answer
    assert "unknown query parameter" in answer["error"]["message"]


async def test_api_device_list_filters_bad_values_are_400(api: Api) -> None:
    for query in ("online=yes", "online=", "config_status=DONE", "limit=1.5", "limit=%C2%B2"):
        status, answer = await api.get(f"/api/v1/devices?{query}")
        assert status == 400, (query, answer)


async def report_accepted(api: Api, device_id: str, key: str) -> None:
    """The device reports over HTTP that it applied its current desired version."""
    path, headers = f"/v1/devices/{device_id}/config", {"Authorization": key}
    async with api.session.get(api.base + path, headers=headers) as response:
        version = (await response.json())["version"]
    report = {"version": version, "status": "ACCEPTED"}
    async with api.session.post(api.base + path, json=report, headers=headers) as response:
        assert response.status == 200, await response.text()


async def listed(api: Api, query: str) -> list[str]:
    """Every device id the filtered list shows, walked page by page (2 a page)."""
    seen, cursor = [], ""
    while True:
        page = await api.ok("GET", f"/api/v1/devices?limit=2&cursor={cursor}&{query}")
        seen += [d["id"] for d in page["items"]]
        if not page["next_cursor"]:
            return seen
        cursor = page["next_cursor"]


async def test_api_device_list_filters_combine_with_pagination(
    api: Api, fleet: Fleet, connect: DeviceFactory
) -> None:
    thermo, other = await fleet.profile("thermo"), await fleet.profile("other")
    a = [await fleet.device(thermo, f"alpha-{i}") for i in range(4)]
    b = [await fleet.device(other, f"beta-{i}") for i in range(2)]
    group = await fleet.group("lobby", [a[0][0], a[1][0], b[0][0]])
    await report_accepted(api, *a[1])
    await report_accepted(api, *b[0])
    # a1 and b0 called over HTTP (online while they keep calling); a0 connects over MQTT.
    calling = sorted([a[0][0], a[1][0], b[0][0]])
    async with connect(*a[0]) as device:
        await device.desired()

        async def all_online() -> bool:
            return await listed(api, "online=true") == calling

        await eventually(all_online)
        assert await listed(api, "online=false") == sorted([a[2][0], a[3][0], b[1][0]])
        in_group = await listed(api, f"online=true&group_id={group}&profile_id={thermo}")
        assert in_group == sorted([a[0][0], a[1][0]])
    assert await listed(api, f"profile_id={thermo}") == sorted(d for d, _ in a)
    assert await listed(api, f"group_id={group}") == sorted([a[0][0], a[1][0], b[0][0]])
    assert await listed(api, "config_status=ACCEPTED") == sorted([a[1][0], b[0][0]])
    assert await listed(api, f"config_status=ACCEPTED&profile_id={thermo}") == [a[1][0]]
    pending = await listed(api, f"config_status=PENDING&group_id={group}")
    assert pending == [a[0][0]]
    for device_id in pending:  # what the filter matched is what the device shows
        device = await api.ok("GET", f"/api/v1/devices/{device_id}")
        assert device["config_status"] == "PENDING"
    assert await listed(api, "profile_id=unknown") == []
    assert await listed(api, "q=alpha&config_status=ACCEPTED") == [a[1][0]]


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


async def test_api_method_not_allowed_says_which_methods_are(api: Api) -> None:
    for method, path, allowed in (
        ("TRACE", "/api/v1/devices", {"GET", "POST"}),
        ("PUT", "/api/v1/config-artefacts/upload-url", {"POST"}),
        ("DELETE", "/v1/devices", {"POST"}),
    ):
        async with api.session.request(
            method, api.base + path, headers={"Authorization": f"Bearer {api.token}"}
        ) as response:
            assert response.status == 405, (method, path)
            assert set(response.headers["Allow"].split(",")) == allowed, (method, path)


async def test_api_whole_number_floats_are_integers(api: Api, fleet: Fleet) -> None:
    device_id, _ = await fleet.device(await fleet.profile())
    body = {"type": "REBOOT", "params": {}, "timeout_s": 30.0}
    created = await api.ok("POST", f"/api/v1/devices/{device_id}/commands", body, status=201)
    assert created["timeout_s"] == 30
    body["timeout_s"] = 30.5
    status, answer = await api.post(f"/api/v1/devices/{device_id}/commands", body)
    assert status == 400, answer


async def test_api_names_and_slugs_the_document_refuses_are_400(api: Api, fleet: Fleet) -> None:
    profile = await fleet.profile()
    for path, body in (
        ("/api/v1/device-groups", {"name": " "}),
        ("/api/v1/devices", {"name": "", "profile_id": profile}),
        ("/api/v1/organizations", {"slug": "-x", "name": "X"}),
        ("/api/v1/config-artefacts", {"name": "\t", "profile_id": profile, "content": {}}),
    ):
        status, answer = await api.post(path, body)
        assert (status, answer["error"]["code"]) == (400, "invalid"), (path, answer)


async def test_api_bindings_filter_by_target_type_or_id_alone(api: Api, fleet: Fleet) -> None:
    profile = await fleet.profile()
    device_id, _ = await fleet.device(profile)
    artefact = await fleet.artefact(profile, {"setpoint": 20})
    on_device = await fleet.bind("device", device_id, artefact["id"])
    on_profile = await fleet.bind("device_profile", profile, artefact["id"])
    by_type = await api.ok("GET", "/api/v1/desired-state-bindings?target_type=device")
    assert [b["id"] for b in by_type["items"]] == [on_device["id"]]
    by_id = await api.ok("GET", f"/api/v1/desired-state-bindings?target_id={profile}")
    assert [b["id"] for b in by_id["items"]] == [on_profile["id"]]
    assert (await api.get("/api/v1/desired-state-bindings?target_type=planet"))[0] == 400
