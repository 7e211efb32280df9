"""`GET /api/v1/devices/{id}/history`: the device's audit trail (key rotations,
re-registrations)."""

from aiohttp import web

from fleetstate.api.context import services
from fleetstate.api.http import json_response, org_id
from fleetstate.api.routing import RouteTable
from fleetstate.service import audit

routes = RouteTable()


@routes.add(
    "GET",
    "/api/v1/devices/{device_id}/history",
    "The device's audit trail, newest first: access-key rotations and re-registrations",
    "devices",
    response=audit.History,
)
async def device_history(request: web.Request) -> web.Response:
    found = await audit.history(
        services(request).store, org_id(request), request.match_info["device_id"]
    )
    return json_response(found)
