"""Firmware and other files of a device profile: operators upload and list them (management API,
SPEC section 5), devices list and download those of their profile (device API, SPEC section 4)."""

import msgspec
from aiohttp import web

from fleetstate.api import device_answers as answers
from fleetstate.api import downloads, numbers
from fleetstate.api import resources as res
from fleetstate.api.context import services
from fleetstate.api.device_api import DEVICE, device_route, hub_urls
from fleetstate.api.http import json_response, org_id, page
from fleetstate.api.resources import reply
from fleetstate.api.routing import RouteTable
from fleetstate.domain.pagination import PageOf
from fleetstate.errors import Invalid, TooLarge
from fleetstate.service import files

routes = RouteTable()
device_routes = RouteTable()
API = "/api/v1"
# Files arrive as JSON with base64 content: 4/3 of the bytes plus room for the other fields.
_MAX_FILE_BODY = files.MAX_CONTENT * 4 // 3 + 64 * 1024


# -- management API --------------------------------------------------------------------------------


@routes.add(
    "GET",
    f"{API}/files",
    "List firmware and other files",
    "files",
    query=("limit", "cursor", "profile_id", "file_type"),
    response=PageOf[res.File],
)
async def list_files(request: web.Request) -> web.Response:
    query = request.query
    result = await files.list_page(
        services(request).store,
        org_id(request),
        page(request),
        query.get("profile_id"),
        query.get("file_type"),
    )
    return reply(PageOf[res.File], result)


@routes.add(
    "POST",
    f"{API}/files",
    "Upload a file for a device profile: SemVer version, base64 content (at most 8 MiB)",
    "files",
    body=files.NewFile,
    response=res.File,
    status=201,
)
async def create_file(request: web.Request) -> web.Response:
    body = await _read_limited(request, _MAX_FILE_BODY)
    try:
        new = numbers.decode(body, files.NewFile)
    except msgspec.ValidationError as exc:
        raise Invalid(f"invalid body: {exc}") from exc
    except msgspec.DecodeError as exc:
        raise Invalid(f"malformed JSON: {exc}") from exc
    svc = services(request)
    return reply(res.File, await files.create(svc.store, svc.blobs, org_id(request), new), 201)


async def _read_limited(request: web.Request, limit: int) -> bytes:
    """The body, read past the application's 1 MiB limit up to `limit`."""
    if request.content_length is not None and request.content_length > limit:
        raise TooLarge(f"the body is {request.content_length} bytes; at most {limit}")
    data = bytearray()
    async for chunk in request.content.iter_any():
        data += chunk
        if len(data) > limit:
            raise TooLarge(f"the body is over {limit} bytes")
    if not data:
        raise Invalid("a JSON body is required")
    return bytes(data)


@routes.add(
    "GET", f"{API}/files/{{file_id}}", "Get a file's description", "files", response=res.File
)
async def get_file(request: web.Request) -> web.Response:
    found = await files.get(services(request).store, org_id(request), request.match_info["file_id"])
    return reply(res.File, found)


# -- device API ------------------------------------------------------------------------------------


def _device_file(
    request: web.Request, device_id: str, found: dict[str, object]
) -> dict[str, object]:
    hub_url, _ = hub_urls(services(request), request)
    return {
        "id": found["id"],
        "name": found["name"],
        "url": hub_url + files.download_path(device_id, str(found["id"])),
        "version": found["version"],
        "file_type": found["file_type"],
        "created_at": found["created_at"],
    }


@device_route(
    device_routes,
    "GET",
    DEVICE + "/files",
    "Files for the device's profile, newest first",
    response=list[answers.DeviceFile],
)
async def device_list_files(request: web.Request, device_id: str) -> web.Response:
    found = await files.for_device(services(request).store, device_id)
    return json_response([_device_file(request, device_id, f) for f in found])


@device_route(
    device_routes,
    "GET",
    DEVICE + "/files/{file_id}",
    "One file; its url downloads it",
    response=answers.DeviceFile,
)
async def device_get_file(request: web.Request, device_id: str) -> web.Response:
    store = services(request).store
    found = await files.get_for_device(store, device_id, request.match_info["file_id"])
    return json_response(_device_file(request, device_id, found))


@device_route(
    device_routes,
    "GET",
    DEVICE + "/files/{file_id}/download",
    "The file's bytes (device key auth)",
    media="*/*",
    responses={206: "the requested range", 302: "redirect to a fresh presigned URL (S3)"},
)
async def download_file(request: web.Request, device_id: str) -> web.StreamResponse:
    svc = services(request)
    stored = await files.stored_for_device(svc.store, device_id, request.match_info["file_id"])
    return await downloads.stored_response(svc.blobs, stored)
