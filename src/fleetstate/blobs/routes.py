"""aiohttp handlers behind the local blob store's signed URLs (`/blobs/{key}`).

Only the signature authorises a request here: no API token, no device key, exactly as with an S3
presigned URL. Errors use the SPEC's body `{"error": {"code", "message"}}`.
"""

import logging
from collections.abc import Awaitable, Callable

from aiohttp import hdrs, web

from fleetstate.blobs.local import ROUTE_PREFIX, LocalBlobStore
from fleetstate.blobs.store import CHUNK_SIZE, SignatureError
from fleetstate.errors import FleetstateError, Invalid, NotFound, TooLarge

logger = logging.getLogger(__name__)

_STATUS: dict[type[FleetstateError], int] = {
    SignatureError: 403,
    NotFound: 404,
    TooLarge: 413,
    Invalid: 400,
}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def blob_routes(store: LocalBlobStore) -> list[web.RouteDef]:
    """Routes to add with `app.add_routes(blob_routes(store))`; GET also answers HEAD."""
    path = ROUTE_PREFIX + "{key:.+}"

    async def get_blob(request: web.Request) -> web.StreamResponse:
        key = request.match_info["key"]
        store.verify(request.method, key, request.query, None)
        return store.file_response(key)

    async def put_blob(request: web.Request) -> web.StreamResponse:
        key = request.match_info["key"]
        terms = store.verify("PUT", key, request.query, request.headers.get(hdrs.CONTENT_TYPE))
        assert terms is not None  # verify returns the terms for every PUT
        # Refuse before reading a byte when the client announces too much.
        if request.content_length is not None and request.content_length > terms.size:
            raise TooLarge(f"the upload is larger than the signed {terms.size} bytes")
        info = await store.write_stream(
            key, request.content.iter_chunked(CHUNK_SIZE), size=terms.size, sha256_hex=terms.sha256
        )
        logger.info("stored blob %s (%d bytes)", key, info.size)
        return web.Response(status=200, headers={hdrs.ETAG: f'"{info.sha256}"'})

    return [web.get(path, _json_errors(get_blob)), web.put(path, _json_errors(put_blob))]


def _json_errors(handler: Handler) -> Handler:
    """Map our errors to the SPEC's JSON body here, so the routes work in any app."""

    async def wrapped(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except FleetstateError as exc:
            status = next((s for cls, s in _STATUS.items() if isinstance(exc, cls)), 500)
            body = {"error": {"code": exc.code, "message": exc.message}}
            response = web.json_response(body, status=status)
            if request.method == "PUT":
                # A refused upload may leave body bytes unread: do not reuse the connection.
                response.force_close()
            return response

    return wrapped
