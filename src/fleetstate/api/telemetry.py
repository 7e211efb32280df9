"""A device's telemetry: the merged state and the history (management API, SPEC section 5)."""

import re

from aiohttp import web

from fleetstate.api import resources as res
from fleetstate.api.context import services
from fleetstate.api.http import org_id
from fleetstate.api.resources import reply
from fleetstate.api.routing import RouteTable
from fleetstate.domain.pagination import parse_page
from fleetstate.service import telemetry

routes = RouteTable()
API = "/api/v1"
_HISTORY_CURSOR = re.compile(r"[^,]+,[0-9]{1,19}")
"""A telemetry history cursor: `<timestamp>,<row id>`."""


@routes.add(
    "GET",
    f"{API}/devices/{{device_id}}/telemetry",
    "The merged telemetry state; with from, to or key: the history (from inclusive, to exclusive)",
    "telemetry",
    query=("from", "to", "key", "limit", "cursor"),
    params={"cursor": {"type": "string", "pattern": f"^({_HISTORY_CURSOR.pattern})?$"}},
    response=(res.TelemetryState, res.TelemetryHistory),
)
async def get_telemetry(request: web.Request) -> web.Response:
    store, device_id, query = (
        services(request).store,
        request.match_info["device_id"],
        request.query,
    )
    if not any(name in query for name in ("from", "to", "key", "cursor")):
        return reply(res.TelemetryState, await telemetry.state(store, org_id(request), device_id))
    # An empty parameter (`?key=`) asks for the history without that filter.
    wanted = telemetry.HistoryQuery(
        start=telemetry.parse_time("from", query.get("from") or None),
        end=telemetry.parse_time("to", query.get("to") or None),
        key=query.get("key") or None,
    )
    window = parse_page(query.get("limit"), query.get("cursor"), _HISTORY_CURSOR)
    found = await telemetry.history(store, org_id(request), device_id, wanted, window)
    return reply(res.TelemetryHistory, found)
