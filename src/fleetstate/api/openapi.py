"""The OpenAPI 3.1 document, generated from the route table: paths, query parameters, and the
request and response schemas from the very msgspec types the handlers decode and encode."""

import re
from typing import Any, get_args

import msgspec

from fleetstate import __version__
from fleetstate.api.routing import Route
from fleetstate.domain.pagination import ID_CURSOR, MAX_LIMIT
from fleetstate.service.bindings import TargetType
from fleetstate.service.commands import Status
from fleetstate.service.devices import CONFIG_STATUSES

_PARAM = re.compile(r"\{(\w+)(?::[^{}]*)?\}")
"""A path parameter; aiohttp's `{name:regex}` form is documented as OpenAPI's plain `{name}`."""
_REF = "#/components/schemas/{name}"
_BOOLEAN = {"type": "string", "enum": ["true", "false"]}
_TIME = {"anyOf": [{"type": "string", "format": "date-time"}, {"type": "string", "maxLength": 0}]}
_QUERY: dict[str, dict[str, Any]] = {
    "limit": {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": 100},
    "cursor": {
        "type": "string",
        "pattern": f"^({ID_CURSOR.pattern})?$",
        "description": "the next_cursor of the previous page (empty: the first page)",
    },
    "online": _BOOLEAN,
    "explain": {"type": "string", "enum": ["true", "false", "1", "0"]},
    "config_status": {"type": "string", "enum": list(CONFIG_STATUSES)},
    "status": {"type": "string", "enum": [s.value for s in Status]},
    "target_type": {"type": "string", "enum": list(get_args(TargetType))},
    "from": {**_TIME, "description": "RFC 3339 time, inclusive (empty: no bound)"},
    "to": {**_TIME, "description": "RFC 3339 time, exclusive (empty: no bound)"},
    "target_id": {"type": "string", "minLength": 1},
}
"""Query parameters by name; any other is a plain string."""
_SECURITY = {
    "bearer": {"type": "http", "scheme": "bearer", "description": "an API token"},
    "session": {
        "type": "apiKey",
        "in": "cookie",
        "name": "fleetstate_session",
        "description": "the web app's session (state-changing requests add X-Fleetstate-CSRF: 1)",
    },
    "deviceKey": {
        "type": "apiKey",
        "in": "header",
        "name": "Authorization",
        "description": "the device API: the bare access key, no scheme",
    },
}
_BYTES = {"type": "string", "contentMediaType": "application/octet-stream"}


def document(routes: list[Route]) -> dict[str, Any]:
    types = _types(routes)
    schemas, components = msgspec.json.schema_components(types, ref_template=_REF)
    refs = dict(zip(types, schemas, strict=True))
    components.update(ERROR_SCHEMAS)
    _strict_base64(components)
    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        path = _PARAM.sub(r"{\1}", route.path)
        paths.setdefault(path, {})[route.method.lower()] = _operation(route, refs)
    return {
        "openapi": "3.1.0",
        "info": {"title": "fleetstate", "version": __version__},
        "paths": paths,
        "components": {"schemas": components, "securitySchemes": _SECURITY},
    }


_BASE64 = "^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$"


def _strict_base64(node: Any) -> None:
    """msgspec decodes `bytes` from padded base64 only: say so where the schema says base64."""
    if isinstance(node, dict):
        if node.get("contentEncoding") == "base64":
            node.setdefault("pattern", _BASE64)
        for value in node.values():
            _strict_base64(value)
    elif isinstance(node, list):
        for value in node:
            _strict_base64(value)


def _types(routes: list[Route]) -> list[Any]:
    found: dict[str, Any] = {}
    for route in routes:
        bodies = () if _raw(route) else _choices(route.body)
        for kind in (*bodies, *_choices(route.response)):
            found.setdefault(repr(kind), kind)
    return [found[k] for k in sorted(found)]


def _raw(route: Route) -> bool:
    """A body of raw bytes (not JSON with base64 in it)."""
    return route.body is bytes and route.body_media != "application/json"


def _choices(kinds: Any) -> tuple[Any, ...]:
    """A route's body or response: a type, a tuple of types (any one of them), or None."""
    return () if kinds is None else kinds if isinstance(kinds, tuple) else (kinds,)


def _schema(kinds: Any, refs: dict[Any, Any]) -> dict[str, Any]:
    chosen = [refs[k] for k in _choices(kinds)]
    return chosen[0] if len(chosen) == 1 else {"anyOf": chosen}


def _operation(route: Route, refs: dict[Any, Any]) -> dict[str, Any]:
    op: dict[str, Any] = {
        "summary": route.summary,
        "tags": [route.tag],
        # Unique by construction: one operation per method and path.
        "operationId": route.method.lower() + re.sub(r"\W+", "_", _PARAM.sub(r"\1", route.path)),
        "parameters": [
            *(
                {"name": n, "in": "path", "required": True, "schema": {"type": "string"}}
                for n in _PARAM.findall(route.path)
            ),
            *(
                {
                    "name": n,
                    "in": "query",
                    "required": n in route.required,
                    "schema": route.params.get(n) or _QUERY.get(n, {"type": "string"}),
                }
                for n in route.query
            ),
        ],
        "responses": _responses(route, refs),
    }
    if security := _security(route):
        op["security"] = security
    if route.body is not None:
        schema = _BYTES if _raw(route) else _schema(route.body, refs)
        op["requestBody"] = {"required": True, "content": {route.body_media: {"schema": schema}}}
    return op


def _security(route: Route) -> list[dict[str, list[str]]]:
    if route.auth:
        return [{"bearer": []}, {"session": []}]
    if route.tag == "device API":
        return [{"deviceKey": []}] if "{device_id}" in route.path else []
    return []  # public (no requirement): liveness, this document, sign-in, signed blob URLs


def _responses(route: Route, refs: dict[Any, Any]) -> dict[str, Any]:
    success = _success(route, refs)
    found: dict[str, Any] = {str(route.status): success}
    for code, text in route.responses.items():
        found[str(code)] = (
            {**success, "description": text} if 200 <= code < 300 else _page(text, route)
        )
    for code in (204, 206, 301, 302, 303, 304):
        if str(code) in found:
            found[str(code)] = _no_json(code, found[str(code)], route)
    error = ERROR_RESPONSES["device" if route.tag == "device API" else "api"]
    for code in _error_codes(route):
        described = found.get(str(code), {}).get("description", "error")
        found[str(code)] = {**error, "description": described}
    if not route.auth and route.tag != "device API":
        _plain_errors(found)
    return found


def _plain_errors(found: dict[str, Any]) -> None:
    """Outside /api/ and /v1/, aiohttp itself answers what no handler sees (an unmatched path,
    a method the path does not take) in plain text."""
    for code in ("400", "404", "405"):
        answer = found.setdefault(code, {"description": "error"})
        answer.setdefault("content", {})["text/plain"] = {"schema": {"type": "string"}}


def _success(route: Route, refs: dict[Any, Any]) -> dict[str, Any]:
    if route.media != "application/json":
        return {"description": "success", "content": {route.media: {"schema": {}}}}
    if route.response is None:
        return {"description": "success"}
    content = {"application/json": {"schema": _schema(route.response, refs)}}
    return {"description": "success", "content": content}


def _page(text: str, route: Route) -> dict[str, Any]:
    """A described non-success answer; the web app's are HTML pages."""
    if route.tag == "web app" and route.media == "text/html":
        return {"description": text, "content": {"text/html": {"schema": {"type": "string"}}}}
    return {"description": text}


def _no_json(code: int, given: dict[str, Any], route: Route) -> dict[str, Any]:
    """Answers without a JSON body: no content, a redirect, a byte range."""
    if code == 206:
        return {"description": given["description"], "content": {route.media: {"schema": _BYTES}}}
    return {"description": given["description"]}


def _error_codes(route: Route) -> tuple[int, ...]:
    # 429: the source or credential is blocked after repeated failed authentications.
    if route.auth:
        return (400, 401, 403, 404, 405, 409, 413, 422, 429)
    if route.tag == "device API":
        return (400, 401, 404, 405, 409, 413, 429)
    if route.tag == "web app":
        return ()  # its errors are pages, described in `responses`
    return (400, 405, *(c for c in route.responses if c >= 400))


_API_ERROR = {
    "type": "object",
    "properties": {
        "error": {
            "type": "object",
            "properties": {
                "code": {"type": "string"},
                "message": {"type": "string"},
                "details": {},
            },
            "required": ["code", "message"],
        }
    },
    "required": ["error"],
}
_DEVICE_ERROR = {
    "type": "object",
    "properties": {"error": {"type": "string"}},
    "required": ["error"],
}
ERROR_SCHEMAS = {"Error": _API_ERROR, "DeviceError": _DEVICE_ERROR}
ERROR_RESPONSES = {
    "api": {"content": {"application/json": {"schema": {"$ref": _REF.format(name="Error")}}}},
    "device": {
        "content": {"application/json": {"schema": {"$ref": _REF.format(name="DeviceError")}}}
    },
}
