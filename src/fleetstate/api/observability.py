"""The outermost HTTP middleware: a request id, the request's device in the log context, the
access log line, and the latency histogram per route.

Routes are labelled by their canonical path (`/api/v1/devices/{device_id}`), never the raw one,
so the number of series stays that of the route table; a request that matched no route is
`unmatched`.
"""

import logging
import secrets
import time

from aiohttp import web

from fleetstate.api.routing import Handler
from fleetstate.logs import DEVICE_ID, REQUEST_ID, access_log
from fleetstate.service.metrics import Metrics

METRICS: web.AppKey[Metrics] = web.AppKey("metrics", Metrics)
REQUEST_ID_HEADER = "X-Request-Id"
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def route_of(request: web.Request) -> str:
    resource = request.match_info.route.resource
    return "unmatched" if resource is None else resource.canonical


@web.middleware
async def observe(request: web.Request, handler: Handler) -> web.StreamResponse:
    request_id = secrets.token_hex(8)
    REQUEST_ID.set(request_id)
    DEVICE_ID.set(request.match_info.get("device_id"))
    started = time.perf_counter()
    status = 500
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        status = exc.status
        exc.headers[REQUEST_ID_HEADER] = request_id
        raise
    else:
        status = response.status
        if not response.prepared:  # a stream (SSE) already sent its headers
            response.headers[REQUEST_ID_HEADER] = request_id
        return response
    finally:
        _record(request, status, time.perf_counter() - started)


def _record(request: web.Request, status: int, seconds: float) -> None:
    route = route_of(request)
    metrics = request.app.get(METRICS)
    if metrics is not None:
        method = request.method if request.method in _METHODS else "other"
        metrics.observe_request(route, method, status, seconds)
    if access_log.isEnabledFor(logging.INFO):
        access_log.info(
            "%s %s %d %.1f ms",
            request.method,
            request.path,
            status,
            seconds * 1000,
            extra={
                "method": request.method,
                "route": route,
                "path": request.path,
                "status": status,
                "duration_ms": round(seconds * 1000, 2),
                "remote": request.remote,
            },
        )
