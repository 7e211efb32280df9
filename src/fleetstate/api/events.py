"""`GET /api/v1/events`: server-sent events of the caller's organization."""

import asyncio

import msgspec
from aiohttp import web

from fleetstate.api.context import services
from fleetstate.api.http import org_id
from fleetstate.api.routing import RouteTable

routes = RouteTable()
KEEPALIVE_S = 15.0
_encoder = msgspec.json.Encoder()


@routes.add(
    "GET",
    "/api/v1/events",
    "Server-sent events: presence, reports, binding and command status, telemetry",
    "events",
    query=("types",),
    media="text/event-stream",
)
async def events(request: web.Request) -> web.StreamResponse:
    wanted = set(filter(None, request.query.get("types", "").split(",")))
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no",
        }
    )
    await response.prepare(request)
    await response.write(b": connected\n\n")
    async with services(request).events.subscribe(org_id(request)) as queue:
        while True:
            try:
                event = await asyncio.wait_for(queue.get(), KEEPALIVE_S)
            except TimeoutError:
                await response.write(b": keepalive\n\n")
                continue
            if wanted and event.type not in wanted and event.type != "lagged":
                continue
            frame = b"id: %d\nevent: %s\ndata: %s\n\n" % (
                event.id,
                event.type.encode(),
                _encoder.encode(event.data),
            )
            try:
                await response.write(frame)
            except ConnectionResetError:
                break
    return response
