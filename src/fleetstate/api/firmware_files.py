"""The device HTTP API's extras: licenses, the info document, and files (SPEC section 4)."""

from aiohttp import web

from fleetstate import files, licenses
from fleetstate.api import device_answers as answers
from fleetstate.api import downloads
from fleetstate.api.context import services
from fleetstate.api.device_api import DEVICE, Success, device_route, hub_urls
from fleetstate.api.http import decode, json_response
from fleetstate.api.routing import RouteTable

routes = RouteTable()


@device_route(
    routes,
    "GET",
    DEVICE + "/licenses",
    "Licenses waiting for the device's answer, each with add, remove or update: true",
    response=list[licenses.DeviceLicense],
)
async def get_licenses(request: web.Request, device_id: str) -> web.Response:
    return json_response(await licenses.pending(services(request).store, device_id))


@device_route(
    routes,
    "POST",
    DEVICE + "/licenses",
    "Answer a license: inuse, removed or error",
    body=licenses.LicenseAnswer,
    response=Success,
)
async def answer_license(request: web.Request, device_id: str) -> web.Response:
    given = await decode(request, licenses.LicenseAnswer)
    await licenses.answer(services(request).store, device_id, given)
    return json_response(Success())


@device_route(
    routes,
    "GET",
    DEVICE + "/info",
    "The operator-set info document and its version",
    response=answers.DeviceInfo,
)
async def get_info(request: web.Request, device_id: str) -> web.Response:
    return json_response(await licenses.info_of(services(request).store, device_id))


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
    routes,
    "GET",
    DEVICE + "/files",
    "Files for the device's profile, newest first",
    response=list[answers.DeviceFile],
)
async def list_files(request: web.Request, device_id: str) -> web.Response:
    found = await files.for_device(services(request).store, device_id)
    return json_response([_device_file(request, device_id, f) for f in found])


@device_route(
    routes,
    "GET",
    DEVICE + "/files/{file_id}",
    "One file; its url downloads it",
    response=answers.DeviceFile,
)
async def get_file(request: web.Request, device_id: str) -> web.Response:
    store = services(request).store
    found = await files.get_for_device(store, device_id, request.match_info["file_id"])
    return json_response(_device_file(request, device_id, found))


@device_route(
    routes,
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
