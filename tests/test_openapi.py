"""The served OpenAPI document: valid OpenAPI 3.1, complete, and true of real answers."""

import base64
import json
import re
from typing import Any

from aiohttp import web
from jsonschema import Draft202012Validator
from openapi_spec_validator import validate

from conftest import SCHEMA, Api, Fleet
from fleetstate.app import Service

DOC = "/api/v1/openapi.json"


async def served_document(api: Api) -> dict[str, Any]:
    return dict(await api.as_token("").ok("GET", DOC))


class Conformance:
    """Calls the running service and checks each answer against what the document declares for
    that operation and status: documented status, media type, and body schema."""

    def __init__(self, api: Api, document: dict[str, Any]) -> None:
        self.api, self.document = api, document
        self.checked: set[tuple[str, str]] = set()

    async def call(
        self,
        method: str,
        template: str,
        body: Any = None,
        *,
        key: str | None = None,
        **params: str,
    ) -> tuple[int, Any]:
        path = template.format(**params)
        if key is None:
            status, payload = await self.api.call(method, path, body)
        else:  # the device API: the bare access key
            headers = {"Authorization": key, "Content-Type": "application/json"}
            data = None if body is None else json.dumps(body)
            async with self.api.session.request(
                method, self.api.base + path, data=data, headers=headers
            ) as r:
                status, payload = r.status, (await r.json() if r.content_length else None)
        self.check(method, template.split("?", maxsplit=1)[0], status, payload)
        return status, payload

    def check(self, method: str, template: str, status: int, payload: Any) -> None:
        operation = self.document["paths"][template][method.lower()]
        responses = operation["responses"]
        assert str(status) in responses, (method, template, status, payload)
        content = responses[str(status)].get("content", {})
        if payload is None:
            assert "application/json" not in content or status >= 400, (method, template)
            return
        schema = content["application/json"]["schema"]
        resolvable = {**schema, "components": self.document["components"]}
        errors = [e.message for e in Draft202012Validator(resolvable).iter_errors(payload)]
        assert not errors, (method, template, status, errors[:3], payload)
        self.checked.add((method, template))


async def test_openapi_served_document_is_valid_openapi_3_1(api: Api) -> None:
    document = await served_document(api)
    validate(document)  # raises on any violation, duplicate operationIds included
    assert document["openapi"] == "3.1.0"
    ids = [op["operationId"] for ops in document["paths"].values() for op in ops.values()]
    assert len(ids) == len(set(ids))


async def test_openapi_documents_every_served_route(api: Api, service: Service) -> None:
    document = await served_document(api)
    documented = {(m.upper(), p) for p, ops in document["paths"].items() for m in ops}
    app: web.Application = service.http_app
    served = set()
    for resource in app.router.resources():
        info = resource.get_info()
        path = re.sub(r"\{(\w+):[^{}]*\}", r"{\1}", info.get("formatter") or info.get("path"))
        for route in resource:
            if route.method not in ("HEAD", "*"):
                served.add((route.method, path))
    assert served == documented


NO_BODY = {("put", "/blobs/{key}")}
"""Successes whose answer is empty: a stored blob's only news is its ETag header."""


async def test_openapi_every_json_success_has_a_body_schema(api: Api) -> None:
    document = await served_document(api)
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            if (method, path) in NO_BODY:
                continue
            for status, response in operation["responses"].items():
                if status in ("204", "206", "301", "302", "303", "304") or status >= "400":
                    continue
                assert response.get("content"), (method, path, status)
                for media in response["content"].values():
                    assert "schema" in media, (method, path, status)


async def test_openapi_query_parameters_are_typed(api: Api) -> None:
    document = await served_document(api)
    devices = document["paths"]["/api/v1/devices"]["get"]
    params = {p["name"]: p["schema"] for p in devices["parameters"]}
    assert params["limit"] == {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100}
    assert params["cursor"]["type"] == "string"
    assert params["online"]["enum"] == ["true", "false"]
    assert "ACCEPTED" in params["config_status"]["enum"]
    assert {"profile_id", "group_id", "q"} <= set(params)


async def test_openapi_security_is_declared(api: Api) -> None:
    document = await served_document(api)
    schemes = document["components"]["securitySchemes"]
    assert schemes["bearer"] == {"type": "http", "scheme": "bearer", "description": "an API token"}
    assert schemes["deviceKey"]["in"] == "header"
    assert schemes["deviceKey"]["name"] == "Authorization"
    paths = document["paths"]
    assert {"bearer": []} in paths["/api/v1/devices"]["get"]["security"]
    assert paths["/v1/devices/{device_id}/config"]["get"]["security"] == [{"deviceKey": []}]
    assert "security" not in paths["/healthz"]["get"]
    assert "security" not in paths[DOC]["get"]


async def test_openapi_non_json_answers_declare_their_media_type(api: Api) -> None:
    paths = (await served_document(api))["paths"]
    assert "text/event-stream" in paths["/api/v1/events"]["get"]["responses"]["200"]["content"]
    assert "text/html" in paths["/signin"]["get"]["responses"]["200"]["content"]
    assert "text/plain" in paths["/metrics"]["get"]["responses"]["200"]["content"]
    signin = paths["/signin"]["post"]["requestBody"]["content"]
    assert "application/x-www-form-urlencoded" in signin
    upload = paths["/blobs/{key}"]["put"]["requestBody"]["content"]["*/*"]  # the raw bytes
    assert upload["schema"]["contentMediaType"] == "application/octet-stream"


async def test_openapi_real_answers_match_their_declared_schemas(api: Api, fleet: Fleet) -> None:
    c = Conformance(api, await served_document(api))
    await c.call("GET", "/healthz")
    await c.call("GET", "/api/v1/organizations/current")
    await c.call("POST", "/api/v1/organizations", {"slug": "acme", "name": "Acme"})
    await c.call("POST", "/api/v1/tokens", {"name": "ci"})
    await c.call("GET", "/api/v1/tokens")
    _, profile = await c.call(
        "POST", "/api/v1/device-profiles", {"name": "thermo", "config_schema": SCHEMA}
    )
    _, sensor = await c.call(
        "POST", "/api/v1/sensor-profiles", {"name": "cam", "config_schema": {"type": "object"}}
    )
    await c.call("GET", "/api/v1/device-profiles")
    await c.call("GET", "/api/v1/sensor-profiles/{profile_id}", profile_id=sensor["id"])
    body = {"name": "d1", "profile_id": profile["id"], "serial": "S1"}
    _, device = await c.call(
        "POST",
        "/api/v1/devices",
        {**body, "components": [{"name": "cam", "sensor_profile_id": sensor["id"]}]},
    )
    d = device["id"]
    await c.call("GET", "/api/v1/devices")
    await c.call("GET", "/api/v1/devices/{device_id}", device_id=d)
    await c.call("PATCH", "/api/v1/devices/{device_id}", {"name": "d1b"}, device_id=d)
    _, group = await c.call("POST", "/api/v1/device-groups", {"name": "g", "device_ids": [d]})
    await c.call("GET", "/api/v1/device-groups")
    await c.call("GET", "/api/v1/device-groups/{group_id}", group_id=group["id"])
    _, artefact = await c.call(
        "POST",
        "/api/v1/config-artefacts",
        {"name": "cfg", "profile_id": profile["id"], "content": {"setpoint": 20}},
    )
    await c.call("GET", "/api/v1/config-artefacts")
    await c.call("GET", "/api/v1/config-artefacts/{artefact_id}", artefact_id=artefact["id"])
    spec = {"target_type": "device_group", "target_id": group["id"], "artefact_id": artefact["id"]}
    _, binding = await c.call("PUT", "/api/v1/desired-state-bindings", spec)
    await c.call("GET", "/api/v1/desired-state-bindings")
    await c.call("GET", "/api/v1/desired-state-bindings/{binding_id}", binding_id=binding["id"])
    await c.call("GET", "/api/v1/devices/{device_id}/desired-state", device_id=d)
    await c.call("GET", "/api/v1/devices/{device_id}/desired-state?explain=true", device_id=d)
    reboot = {"type": "REBOOT", "params": {}}
    _, command = await c.call("POST", "/api/v1/devices/{device_id}/commands", reboot, device_id=d)
    await c.call("GET", "/api/v1/devices/{device_id}/commands", device_id=d)
    await c.call(
        "POST",
        "/api/v1/devices/{device_id}/commands/{command_id}/cancel",
        device_id=d,
        command_id=command["id"],
    )
    _, batch = await c.call(
        "POST", "/api/v1/device-groups/{group_id}/commands", reboot, group_id=group["id"]
    )
    await c.call("GET", "/api/v1/command-batches/{batch_id}", batch_id=batch["batch_id"])
    _, hw = await c.call(
        "POST", "/api/v1/hardware-keys", {"name": "line 1", "profile_id": profile["id"]}
    )
    await c.call("GET", "/api/v1/hardware-keys")
    await c.call("GET", "/api/v1/hardware-keys/{key_id}", key_id=hw["id"])
    content = base64.b64encode(b"firmware").decode()
    file_body = {"profile_id": profile["id"], "name": "fw", "version": "1.0.0", "content": content}
    _, file = await c.call("POST", "/api/v1/files", file_body)
    await c.call("GET", "/api/v1/files")
    await c.call("GET", "/api/v1/files/{file_id}", file_id=file["id"])
    await c.call("PUT", "/api/v1/devices/{device_id}/info", {"site": "HQ"}, device_id=d)
    await c.call("GET", "/api/v1/devices/{device_id}/info", device_id=d)
    await c.call("POST", "/api/v1/devices/{device_id}/licenses", {"data": "L1"}, device_id=d)
    await c.call("GET", "/api/v1/devices/{device_id}/licenses", device_id=d)
    # The device API, as a device calls it.
    _, registered = await c.call(
        "POST", "/v1/devices", {"hardware_key": hw["key"], "sn": "SN-9", "firmware_version": "1.0"}
    )
    r, key = registered["id"], registered["access_key"]
    await c.call(
        "POST",
        "/v1/devices/{device_id}/telemetry",
        {"status": "online", "t": 21},
        key=key,
        device_id=r,
    )
    await c.call("GET", "/v1/devices/{device_id}/config", key=key, device_id=r)
    await c.call("GET", "/v1/devices/{device_id}/info", key=key, device_id=r)
    await c.call("GET", "/v1/devices/{device_id}/licenses", key=key, device_id=r)
    await c.call("GET", "/v1/devices/{device_id}/files", key=key, device_id=r)
    await c.call("GET", "/v1/devices/{device_id}/config", key="wrong", device_id=r)
    await c.call("GET", "/api/v1/devices/{device_id}/telemetry", device_id=r)
    await c.call("GET", "/api/v1/devices/{device_id}/telemetry?key=t", device_id=r)
    await c.call("POST", "/api/v1/devices/{device_id}/access-key", device_id=d)
    # Errors have the documented shape too.
    await c.call("GET", "/api/v1/devices/{device_id}", device_id="0" * 20)
    await c.call("GET", "/api/v1/devices?cursor=garbage")
    assert len(c.checked) >= 45
