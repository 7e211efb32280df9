"""Answers that carry stored bytes (artefacts, files): inline content, a streamed local blob, or a
redirect.

Object-stored bytes are never addressed by a stored URL: every request gets a fresh
presigned one (S3) or the bytes themselves (the local backend, `Range` included).
"""

from aiohttp import hdrs, web

from fleetstate.api.context import services
from fleetstate.api.http import org_id
from fleetstate.blobs import BlobStore, LocalBlobStore, StoredContent
from fleetstate.service import uploads


async def artefact_download(
    request: web.Request, device_id: str, artefact_id: str
) -> web.StreamResponse:
    """A device's download of an artefact in its desired state (SPEC section 4); 404 otherwise.

    The caller has authenticated the device.
    """
    svc = services(request)
    stored = await uploads.artefact_for_device(svc.store, device_id, artefact_id)
    return await stored_response(svc.blobs, stored)


async def blob_content(request: web.Request, artefact_id: str) -> web.StreamResponse:
    """The bytes of an object-stored artefact of the caller's organization, for operators."""
    svc = services(request)
    stored = await uploads.artefact_for_org(svc.store, org_id(request), artefact_id)
    return await stored_response(svc.blobs, stored)


async def stored_response(blobs: BlobStore, stored: StoredContent) -> web.StreamResponse:
    if stored.blob_key is None:
        assert stored.content is not None  # bytes are either inline or in the blob store
        return web.Response(body=stored.content, headers={hdrs.CONTENT_TYPE: stored.content_type})
    if isinstance(blobs, LocalBlobStore):
        response = blobs.file_response(stored.blob_key)
        response.headers[hdrs.CONTENT_TYPE] = stored.content_type
        return response
    url = await blobs.presign_get(stored.blob_key)
    # The URL expires: no cache may keep the redirect longer than that.
    raise web.HTTPFound(url, headers={hdrs.CACHE_CONTROL: "no-store"})
