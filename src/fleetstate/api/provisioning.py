"""Management routes of the device API's features: hardware keys, files, device info, licenses
and telemetry (SPEC section 5). Bearer-token auth and the management error shape."""

import re
from typing import Any

import msgspec
from aiohttp import web

from fleetstate import files, licenses, provisioning, telemetry
from fleetstate.api import numbers
from fleetstate.api import resources as res
from fleetstate.api.context import services
from fleetstate.api.http import decode, org_id, page
from fleetstate.api.resources import reply
from fleetstate.api.routing import RouteTable
from fleetstate.errors import Invalid, TooLarge
from fleetstate.pagination import PageOf, parse_page

routes = RouteTable()
API = "/api/v1"
# Files arrive as JSON with base64 content: 4/3 of the bytes plus room for the other fields.
_MAX_FILE_BODY = files.MAX_CONTENT * 4 // 3 + 64 * 1024
_HISTORY_CURSOR = re.compile(r"[^,]+,[0-9]{1,19}")
"""A telemetry history cursor: `<timestamp>,<row id>`."""


# -- hardware keys -------------------------------------------------------------------------------


@routes.add(
    "GET",
    f"{API}/hardware-keys",
    "List hardware keys",
    "provisioning",
    query=("limit", "cursor"),
    response=PageOf[res.HardwareKey],
)
async def list_hardware_keys(request: web.Request) -> web.Response:
    result = await provisioning.list_keys(services(request).store, org_id(request), page(request))
    return reply(PageOf[res.HardwareKey], result)


@routes.add(
    "POST",
    f"{API}/hardware-keys",
    "Create a hardware key for a device profile (the key is shown once)",
    "provisioning",
    body=provisioning.NewHardwareKey,
    response=res.NewHardwareKeyAnswer,
    status=201,
)
async def create_hardware_key(request: web.Request) -> web.Response:
    new = await decode(request, provisioning.NewHardwareKey)
    created = await provisioning.create_key(services(request).store, org_id(request), new)
    return reply(res.NewHardwareKeyAnswer, created, 201)


@routes.add(
    "GET",
    f"{API}/hardware-keys/{{key_id}}",
    "Get a hardware key",
    "provisioning",
    response=res.HardwareKey,
)
async def get_hardware_key(request: web.Request) -> web.Response:
    found = await provisioning.get_key(
        services(request).store, org_id(request), request.match_info["key_id"]
    )
    return reply(res.HardwareKey, found)


@routes.add(
    "DELETE",
    f"{API}/hardware-keys/{{key_id}}",
    "Revoke a hardware key (it stays listed as revoked)",
    "provisioning",
    status=204,
)
async def delete_hardware_key(request: web.Request) -> web.Response:
    await provisioning.revoke_key(
        services(request).store, org_id(request), request.match_info["key_id"]
    )
    return web.Response(status=204)


@routes.add(
    "POST",
    f"{API}/hardware-keys/{{key_id}}/revoke",
    "Revoke a hardware key",
    "provisioning",
    response=res.HardwareKey,
)
async def revoke_hardware_key(request: web.Request) -> web.Response:
    revoked = await provisioning.revoke_key(
        services(request).store, org_id(request), request.match_info["key_id"]
    )
    return reply(res.HardwareKey, revoked)


# -- files ---------------------------------------------------------------------------------------


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


# -- device info, licenses, telemetry ------------------------------------------------------------


@routes.add(
    "GET",
    f"{API}/devices/{{device_id}}/info",
    "The device's info document",
    "devices",
    response=res.DeviceInfo,
)
async def get_info(request: web.Request) -> web.Response:
    found = await licenses.operator_info(
        services(request).store, org_id(request), request.match_info["device_id"]
    )
    return reply(res.DeviceInfo, found)


@routes.add(
    "PUT",
    f"{API}/devices/{{device_id}}/info",
    "Replace the device's info document (any JSON object; info_version counts changes)",
    "devices",
    body=dict[str, Any],
    response=res.DeviceInfo,
)
async def put_info(request: web.Request) -> web.Response:
    info = await decode(request, dict[str, Any])
    found = await licenses.set_info(
        services(request).store, org_id(request), request.match_info["device_id"], info
    )
    return reply(res.DeviceInfo, found)


@routes.add(
    "GET",
    f"{API}/devices/{{device_id}}/licenses",
    "The device's licenses and answers (one page)",
    "devices",
    response=PageOf[res.License],
)
async def list_licenses(request: web.Request) -> web.Response:
    found = await licenses.list_for_operator(
        services(request).store, org_id(request), request.match_info["device_id"]
    )
    return reply(PageOf[res.License], {"items": found, "next_cursor": None})


@routes.add(
    "POST",
    f"{API}/devices/{{device_id}}/licenses",
    "Add a license to the device, or ask it to update or remove one",
    "devices",
    body=licenses.NewLicense,
    response=res.License,
    status=201,
)
async def offer_license(request: web.Request) -> web.Response:
    store, device_id = services(request).store, request.match_info["device_id"]
    await licenses.operator_info(store, org_id(request), device_id)  # 404 before judging the body
    new = await decode(request, licenses.NewLicense)
    found = await licenses.offer(store, org_id(request), device_id, new)
    return reply(res.License, found, 201)


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
