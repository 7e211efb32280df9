"""`GET /api/v1/events`: server-sent events of the caller's organization."""

import asyncio
import contextlib

import msgspec
from aiohttp import web

from fleetstate.api.context import services
from fleetstate.api.http import org_id
from fleetstate.api.routing import RouteTable
from fleetstate.service.events import Subscription

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
    # Dropped for falling behind: its stream is stuck in a write to a client that stopped
    # reading, so closing politely would wait for that write; abort the connection instead.
    transport = request.transport
    on_drop = None if transport is None else transport.abort
    async with services(request).events.subscribe(org_id(request), on_drop) as subscription:
        with contextlib.suppress(ConnectionResetError):
            await _stream(response, subscription, wanted)
    return response


async def _stream(
    response: web.StreamResponse, subscription: Subscription, wanted: set[str]
) -> None:
    """Write events until the subscription ends (shutdown, or the client was dropped)."""
    while True:
        try:
            event = await asyncio.wait_for(subscription.next(), KEEPALIVE_S)
        except TimeoutError:
            await response.write(b": keepalive\n\n")
            continue
        if event is None:
            return
        if wanted and event.type not in wanted:
            continue
        frame = b"id: %d\nevent: %s\ndata: %s\n\n" % (
            event.id,
            event.type.encode(),
            _encoder.encode(event.data),
        )
        await response.write(frame)
