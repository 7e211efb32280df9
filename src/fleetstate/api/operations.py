"""Liveness, Prometheus metrics and the OpenAPI document."""

from typing import Any

from aiohttp import web

from fleetstate.api import resources as res
from fleetstate.api.context import services
from fleetstate.api.http import json_response
from fleetstate.api.routing import RouteTable

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
    bus = svc.gateway.bus
    lines = [
        "# TYPE fleetstate_store_commits_total counter",
        f"fleetstate_store_commits_total {svc.store.commits}",
        "# TYPE fleetstate_store_writes_total counter",
        f"fleetstate_store_writes_total {svc.store.jobs_committed}",
        "# TYPE fleetstate_mqtt_connected_devices gauge",
        f"fleetstate_mqtt_connected_devices {len(bus.connected_devices()) if bus else 0}",
        "# TYPE fleetstate_mqtt_forbidden_publishes_total counter",
        f"fleetstate_mqtt_forbidden_publishes_total {svc.gateway.forbidden_total}",
    ]
    return web.Response(text="\n".join(lines) + "\n", content_type="text/plain")


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
