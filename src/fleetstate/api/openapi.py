"""The OpenAPI 3.1 document, generated from the route table and the msgspec request types."""

import re
from typing import Any

import msgspec

from fleetstate import __version__
from fleetstate.api.routing import Route

_PARAM = re.compile(r"\{(\w+)(?::[^{}]*)?\}")
"""A path parameter; aiohttp's `{name:regex}` form is documented as OpenAPI's plain `{name}`."""


def document(routes: list[Route]) -> dict[str, Any]:
    bodies = sorted({r.body for r in routes if r.body is not None}, key=lambda t: t.__name__)
    schemas, components = msgspec.json.schema_components(
        bodies, ref_template="#/components/schemas/{name}"
    )
    refs = dict(zip(bodies, schemas, strict=True))
    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        path = _PARAM.sub(r"{\1}", route.path)
        paths.setdefault(path, {})[route.method.lower()] = _operation(route, refs)
    return {
        "openapi": "3.1.0",
        "info": {"title": "fleetstate", "version": __version__},
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }


def _operation(route: Route, refs: dict[Any, Any]) -> dict[str, Any]:
    op: dict[str, Any] = {
        "summary": route.summary,
        "tags": [route.tag],
        "operationId": f"{route.method.lower()}_{route.handler.__name__}",
        "parameters": [
            *(
                {"name": n, "in": "path", "required": True, "schema": {"type": "string"}}
                for n in _PARAM.findall(route.path)
            ),
            *(
                {"name": n, "in": "query", "required": False, "schema": {"type": "string"}}
                for n in route.query
            ),
        ],
        "responses": _responses(route),
    }
    if route.auth:
        op["security"] = [{"bearer": []}]
    if route.body is not None:
        op["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": refs[route.body]}},
        }
    return op


def _responses(route: Route) -> dict[str, Any]:
    found: dict[str, Any] = {str(route.status): {"description": "success"}}
    found.update({str(code): {"description": text} for code, text in route.responses.items()})
    error = {"description": "error", "content": {"application/json": {"schema": _ERROR}}}
    for code in (400, 401, 404, 409, 413, 422) if route.auth else (400,):
        found.setdefault(str(code), error)
    return found


_ERROR = {
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
