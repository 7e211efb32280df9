"""Routes of the upload-URL flow, the device download of artefacts, and the local blob endpoints.

`POST /api/v1/config-artefacts` itself stays in `management`: it hands `{upload_id}` bodies to
`finalize_if_upload` here.
"""

from typing import Any

import msgspec
from aiohttp import hdrs, web

from fleetstate.api import resources as res
from fleetstate.api.context import services
from fleetstate.api.downloads import artefact_download
from fleetstate.api.http import (
    STATUS,
    check_device_key,
    decode,
    error_response,
    json_response,
    org_id,
)
from fleetstate.api.resources import reply
from fleetstate.api.routing import Handler, Route, RouteTable
from fleetstate.blobs import UPLOADS_PREFIX, BlobStore, LocalBlobStore, blob_routes
from fleetstate.errors import FleetstateError, NotFound
from fleetstate.service import uploads

routes = RouteTable()
API = "/api/v1"
DEVICE_NOT_AUTHORIZED = {"error": "Not authorized"}
"""The device API's answer to a wrong, rotated or deleted device's key (SPEC section 4)."""


@routes.add(
    "POST",
    f"{API}/config-artefacts/upload-url",
    "A presigned URL to upload a large artefact's bytes to; then POST {upload_id} to create it",
    "artefacts",
    body=uploads.NewUpload,
    response=uploads.UploadTicket,
    status=201,
)
async def create_upload_url(request: web.Request) -> web.Response:
    svc = services(request)
    new = await decode(request, uploads.NewUpload)
    ticket = await uploads.create_upload(
        svc.store, svc.blobs, svc.config.uploads, org_id(request), new
    )
    return reply(uploads.UploadTicket, ticket, 201)


class _UploadProbe(msgspec.Struct):
    """Only tells the two bodies of `POST /config-artefacts` apart; other fields are ignored."""

    upload_id: Any = None


_probe = msgspec.json.Decoder(_UploadProbe)


async def finalize_if_upload(request: web.Request) -> web.Response | None:
    """Finalize when the body is `{upload_id}` (strictly: unknown fields answer 400); None when
    it is anything else, for the inline-content path to decode and judge."""
    try:
        probe = _probe.decode(await request.read())
    except msgspec.DecodeError:
        return None
    if probe.upload_id is None:
        return None
    svc = services(request)
    body = await decode(request, uploads.FinalizeUpload)
    created = await uploads.finalize(
        svc.store, svc.blobs, svc.config.uploads, org_id(request), body.upload_id
    )
    return reply(res.Artefact, created, 201)


@routes.add(
    "GET",
    "/v1/devices/{device_id}/artefacts/{artefact_id}",
    "Device API: an artefact of the device's desired state (header `Authorization: <access key>`)",
    "device API",
    auth=False,
    media="*/*",
    responses={
        302: "redirect to a fresh presigned URL (S3 backend)",
        206: "the requested range (local backend)",
        401: "wrong, rotated or deleted device key",
        404: "not in this device's desired state",
    },
)
async def device_artefact(request: web.Request) -> web.StreamResponse:
    device_id = request.match_info["device_id"]
    key = request.headers.get("Authorization", "")
    if not await check_device_key(request, device_id, key):
        return json_response(DEVICE_NOT_AUTHORIZED, 401)
    try:
        return await artefact_download(request, device_id, request.match_info["artefact_id"])
    except FleetstateError as exc:  # the device API's errors are flat: {"error": "..."}
        status = next((s for cls, s in STATUS.items() if isinstance(exc, cls)), 500)
        return json_response({"error": exc.message}, status)


def blob_table(blobs: BlobStore) -> RouteTable:
    """The local backend's signed-URL endpoints as documented, token-free routes (none for S3)."""
    table = RouteTable()
    if isinstance(blobs, LocalBlobStore):
        summaries = {
            "GET": "Download a blob through a signed URL (no token: the signature authorises)",
            "PUT": "Upload a blob through a signed upload URL (exact size and sha256)",
        }
        table.routes.extend(
            Route(
                d.method,
                d.path,
                _while_pending(blobs, d.handler) if d.method == "PUT" else d.handler,
                summaries[d.method],
                "blobs",
                auth=False,
                query=("method", "expires", "size", "sha256", "sig"),
                body=bytes if d.method == "PUT" else None,
                body_media="*/*",  # exactly the signed size, sha256 and content type
                media="application/octet-stream" if d.method == "GET" else "application/json",
                responses={403: "bad or expired signature", 404: "no such blob"},
            )
            for d in blob_routes(blobs)
        )
    return table


def _while_pending(blobs: LocalBlobStore, put: Handler) -> Handler:
    """The PUT of a signed upload URL, storing bytes only while its upload is pending: checked
    before (nothing is read) and again after storing, for a finalize that ran meanwhile."""

    async def handler(request: web.Request) -> web.StreamResponse:
        key, store = request.match_info["key"], services(request).store
        try:
            # The signature first, so an unsigned request learns nothing about uploads.
            blobs.verify("PUT", key, request.query, request.headers.get(hdrs.CONTENT_TYPE))
        except FleetstateError:
            return await put(request)  # refused there, with the blob endpoints' own answer
        if not await uploads.accepts_bytes(store, key):
            return _no_pending_upload(key)
        response = await put(request)
        if response.status < 300 and not await uploads.accepts_bytes(store, key):
            await blobs.delete(key)
            return _no_pending_upload(key)
        return response

    return handler


def _no_pending_upload(key: str) -> web.Response:
    gone = NotFound("pending upload", key.removeprefix(UPLOADS_PREFIX))
    response = error_response(404, gone.code, gone.message)
    response.force_close()  # the body may be unread: do not reuse the connection
    return response
