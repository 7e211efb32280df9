"""Dumps over HTTP: a device uploads and appends (device API), operators list and download."""

from urllib.parse import quote

import msgspec
from aiohttp import hdrs, web

from fleetstate.api import downloads
from fleetstate.api.context import services
from fleetstate.api.device_api import DEVICE, device_route
from fleetstate.api.http import json_response, org_id, page
from fleetstate.api.routing import RouteTable
from fleetstate.errors import TooLarge
from fleetstate.service import dumps

device_routes = RouteTable()
routes = RouteTable()
DUMPS: web.AppKey[dumps.Dumps] = web.AppKey("dumps", dumps.Dumps)
_REST = "/api/v1/devices/{device_id}/dumps"
_READ_CHUNK = 64 * 1024


class Appended(msgspec.Struct, frozen=True, kw_only=True):
    success: bool
    id: str
    size: int


async def _bounded_body(request: web.Request, limit: int) -> bytes:
    """The raw body, read in chunks so a dump may exceed the 1 MiB JSON request limit; 413 as
    soon as it passes `limit` (before reading it when Content-Length says so)."""
    if request.content_length is not None and request.content_length > limit:
        raise TooLarge(f"the dump is {request.content_length} bytes; at most {limit}")
    parts: list[bytes] = []
    total = 0
    while chunk := await request.content.read(_READ_CHUNK):
        total += len(chunk)
        if total > limit:
            raise TooLarge(f"the dump is more than {limit} bytes")
        parts.append(chunk)
    return b"".join(parts)


@device_route(
    device_routes,
    "POST",
    DEVICE + "/dumps/{content_type}/{file_name}",
    "Upload a dump (raw body; content_type URL-encoded, e.g. text%2Fplain); answers its id as a"
    " JSON string",
    body=bytes,
    body_media="*/*",
    response=str,
    status=201,
    responses={413: "larger than [dumps] max_size"},
)
async def create_dump(request: web.Request, device_id: str) -> web.Response:
    store = request.app[DUMPS]
    data = await _bounded_body(request, store.max_size)
    content_type = request.match_info["content_type"]
    created = await store.create(device_id, content_type, request.match_info["file_name"], data)
    # Xyte's agent uses the answer itself as the id in the append URL: a bare JSON string.
    return json_response(created.id, 201)


@device_route(
    device_routes,
    "PUT",
    DEVICE + "/dumps/{dump_id}",
    "Append to a dump (raw body)",
    body=bytes,
    body_media="*/*",
    response=Appended,
    responses={404: "unknown dump, or another device's", 413: "would exceed [dumps] max_size"},
)
async def append_dump(request: web.Request, device_id: str) -> web.Response:
    store = request.app[DUMPS]
    data = await _bounded_body(request, store.max_size)
    grown = await store.append(device_id, request.match_info["dump_id"], data)
    return json_response(Appended(success=True, id=grown.id, size=grown.size))


@routes.add(
    "GET",
    _REST,
    "The device's dumps, oldest first",
    "devices",
    response=dumps.DumpPage,
    query=("limit", "cursor"),
)
async def list_dumps(request: web.Request) -> web.Response:
    found = await dumps.list_page(
        services(request).store, org_id(request), request.match_info["device_id"], page(request)
    )
    return json_response(found)


@routes.add(
    "GET",
    _REST + "/{dump_id}/content",
    "Download a dump's bytes",
    "devices",
    media="*/*",
    responses={
        206: "the requested range (local blob store)",
        302: "redirect to a fresh presigned URL (S3 blob store)",
    },
)
async def download_dump(request: web.Request) -> web.StreamResponse:
    svc = services(request)
    device_id, dump_id = request.match_info["device_id"], request.match_info["dump_id"]
    stored, file_name = await dumps.stored(svc.store, org_id(request), device_id, dump_id)
    response = await downloads.stored_response(svc.blobs, stored)
    response.headers[hdrs.CONTENT_DISPOSITION] = f"attachment; filename*=UTF-8''{quote(file_name)}"
    return response
