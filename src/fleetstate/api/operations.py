"""Liveness, Prometheus metrics and the OpenAPI document."""

from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from fleetstate.api import resources as res
from fleetstate.api.context import services
from fleetstate.api.http import PRINCIPAL, json_response
from fleetstate.api.observability import METRICS
from fleetstate.api.routing import RouteTable
from fleetstate.errors import Forbidden, Unauthorized
from fleetstate.service.metrics import loopback

routes = RouteTable()
ALL_ROUTES: web.AppKey[RouteTable] = web.AppKey("all_routes", RouteTable)


@routes.add("GET", "/healthz", "Liveness", "operations", auth=False, response=res.Health)
async def healthz(request: web.Request) -> web.Response:
    return json_response({"status": "ok"})


@routes.add(
    "GET", "/metrics", "Prometheus text metrics", "operations", auth=False, media="text/plain"
)
async def metrics(request: web.Request) -> web.Response:
    svc = services(request)
    await _may_read_metrics(request, svc.config.metrics.access)
    found = request.app[METRICS]
    await found.refresh()
    return web.Response(body=found.render(), headers={"Content-Type": CONTENT_TYPE_LATEST})


async def _may_read_metrics(request: web.Request, access: str) -> None:
    """`[metrics] access`: loopback peers only (default), any valid API token, or anyone."""
    if access == "public":
        return
    if access == "loopback":
        if not loopback(request.remote):
            raise Forbidden("/metrics is served to loopback addresses only ([metrics] access)")
        return
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("/metrics needs 'Authorization: Bearer <api token>'")
    await request.app[PRINCIPAL].authenticate(token.strip())


@routes.add(
    "GET",
    "/api/v1/openapi.json",
    "This OpenAPI 3.1 document",
    "operations",
    auth=False,
    response=dict[str, Any],
)
async def openapi(request: web.Request) -> web.Response:
    from fleetstate.api.openapi import document  # noqa: PLC0415

    return json_response(document(request.app[ALL_ROUTES].routes))
