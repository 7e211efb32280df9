"""The embedded blob store: files under the data directory, reached through HMAC-signed URLs.

A signed URL is `{base}/blobs/{key}?method=M&expires=UNIX[&size=N&sha256=HEX]&sig=HMAC`. The HMAC
(SHA-256, hex) covers the method, the key, the expiry and, for uploads, the size, the SHA-256 and
the request's `Content-Type` header, so none of them can be changed without the secret. The routes
that serve these URLs are in `fleetstate.blobs.routes`.
"""

import asyncio
import hashlib
import hmac
import os
import secrets
import time
from collections.abc import AsyncIterable, AsyncIterator, Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from stat import S_ISREG
from typing import BinaryIO
from urllib.parse import quote, urlencode

import msgspec
from aiohttp import web

from fleetstate.blobs.store import (
    CHUNK_SIZE,
    UPLOADS_PREFIX,
    BlobInfo,
    PresignedUpload,
    SignatureError,
    check_expiry,
    check_key,
    check_sha256,
    check_upload_terms,
)
from fleetstate.domain.clock import rfc3339
from fleetstate.errors import Invalid, NotFound, TooLarge

ROUTE_PREFIX = "/blobs/"
_WRITE_BUFFER = 1024 * 1024  # bytes gathered before one hop to the file-writing thread


class UploadTerms(msgspec.Struct, frozen=True, kw_only=True):
    """What a verified upload URL allows: exactly `size` bytes hashing to `sha256`."""

    size: int
    sha256: str


class LocalBlobStore:
    def __init__(
        self,
        root: Path,
        secret: bytes,
        base_url: Callable[[], str],
        *,
        url_expiry_s: int = 900,
    ) -> None:
        if len(secret) < 32:
            raise Invalid("the blob signing secret must be at least 32 bytes")
        self.root = root
        self._secret = secret
        # A callable, because the HTTP port is only known once the server has bound it.
        self._base_url = base_url
        self._url_expiry_s = url_expiry_s

    # --- signed URLs -------------------------------------------------------------------------

    async def presign_put(
        self,
        key: str,
        *,
        size: int,
        sha256_hex: str,
        content_type: str,
        expires_in: int | None = None,
    ) -> PresignedUpload:
        check_upload_terms(size, content_type)
        expires = int(time.time()) + check_expiry(expires_in, self._url_expiry_s)
        url = self.sign_url(
            "PUT",
            key,
            expires=expires,
            size=size,
            sha256_hex=check_sha256(sha256_hex),
            content_type=content_type,
        )
        return PresignedUpload(
            url=url,
            method="PUT",
            headers={"Content-Type": content_type, "Content-Length": str(size)},
            expires_at=rfc3339(datetime.fromtimestamp(expires, UTC)),
        )

    async def presign_get(self, key: str, *, expires_in: int | None = None) -> str:
        expires = int(time.time()) + check_expiry(expires_in, self._url_expiry_s)
        return self.sign_url("GET", key, expires=expires)

    def sign_url(
        self,
        method: str,
        key: str,
        *,
        expires: int,
        size: int | None = None,
        sha256_hex: str | None = None,
        content_type: str | None = None,
    ) -> str:
        """A URL for `method` on `key` valid until the unix time `expires` (may be past)."""
        check_key(key)
        params: dict[str, str | int] = {"method": method, "expires": expires}
        upload = None
        if method == "PUT":
            if size is None or sha256_hex is None or content_type is None:
                raise Invalid("an upload URL needs size, sha256 and content type")
            upload = (size, sha256_hex, content_type)
            params |= {"size": size, "sha256": sha256_hex}
        sig = self._signature(method, key, expires, upload)
        query = urlencode({**params, "sig": sig})
        return f"{self._base_url().rstrip('/')}{ROUTE_PREFIX}{quote(key)}?{query}"

    def verify(
        self, method: str, key: str, query: Mapping[str, str], content_type: str | None
    ) -> UploadTerms | None:
        """Check a signed request; return the upload terms for PUT, None for GET/HEAD."""
        signed_method = "GET" if method == "HEAD" else method
        try:
            check_key(key)
            if query.get("method") != signed_method:
                raise SignatureError("the URL is not signed for this method")
            expires = int(query["expires"])
            terms = None
            if signed_method == "PUT":
                terms = UploadTerms(size=int(query["size"]), sha256=query["sha256"])
        except (KeyError, ValueError, Invalid) as exc:
            raise SignatureError("malformed signed URL") from exc
        upload = (terms.size, terms.sha256, content_type) if terms else None
        expected = self._signature(signed_method, key, expires, upload)
        if not hmac.compare_digest(expected.encode(), query.get("sig", "").encode()):
            raise SignatureError("the URL signature does not match the request")
        if time.time() >= expires:
            raise SignatureError("the URL has expired")
        return terms

    def _signature(
        self, method: str, key: str, expires: int, upload: tuple[int, str, str | None] | None
    ) -> str:
        """HMAC of the request; `upload` is (size, sha256, content type) for PUT."""
        # A JSON array is an unambiguous encoding: no field can bleed into its neighbour.
        message = msgspec.json.encode(["fleetstate-blob-v1", method, key, expires, upload])
        return hmac.new(self._secret, message, hashlib.sha256).hexdigest()

    # --- bytes -------------------------------------------------------------------------------

    def path_of(self, key: str) -> Path:
        return self.root / check_key(key)

    async def stat(self, key: str) -> BlobInfo | None:
        path = self.path_of(key)
        try:
            st = await asyncio.to_thread(path.stat)
        except (FileNotFoundError, NotADirectoryError):
            return None
        if not S_ISREG(st.st_mode):
            return None
        return BlobInfo(
            key=key, size=st.st_size, modified_at=datetime.fromtimestamp(st.st_mtime, UTC)
        )

    async def sha256_of(self, key: str) -> str:
        path = self.path_of(key)
        try:
            return await asyncio.to_thread(_file_sha256, path)
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError) as exc:
            raise NotFound("blob", key) from exc

    async def iter_bytes(self, key: str, chunk_size: int = CHUNK_SIZE) -> AsyncIterator[bytes]:
        path = self.path_of(key)
        try:
            handle = await asyncio.to_thread(path.open, "rb")
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError) as exc:
            raise NotFound("blob", key) from exc
        try:
            while chunk := await asyncio.to_thread(handle.read, chunk_size):
                yield chunk
        finally:
            handle.close()

    def file_response(self, key: str) -> web.FileResponse:
        """Stream `key` over HTTP (HEAD and `Range` included); raises NotFound."""
        path = self.path_of(key)
        if not path.is_file():
            raise NotFound("blob", key)
        return web.FileResponse(
            path, chunk_size=CHUNK_SIZE, headers={"Content-Type": "application/octet-stream"}
        )

    async def put_bytes(
        self, key: str, data: bytes, *, content_type: str = "application/octet-stream"
    ) -> BlobInfo:
        async def one_chunk() -> AsyncIterator[bytes]:
            yield data

        return await self.write_stream(key, one_chunk())

    async def write_stream(
        self,
        key: str,
        chunks: AsyncIterable[bytes],
        *,
        size: int | None = None,
        sha256_hex: str | None = None,
    ) -> BlobInfo:
        """Store `chunks` at `key` atomically; with `size`/`sha256_hex`, only if they match.

        Raises TooLarge as soon as more than `size` bytes arrive, Invalid when the final size or
        hash differ; either way nothing is left behind and an older blob at `key` stays intact.
        """
        target = self.path_of(key)
        pending = _AtomicFile(target)
        await pending.open()
        committed = False
        try:
            async for chunk in chunks:
                if size is not None and pending.size + len(chunk) > size:
                    raise TooLarge(f"the upload is larger than the signed {size} bytes")
                await pending.write(chunk)
            digest = await pending.finish()
            if size is not None and pending.size != size:
                raise Invalid(f"the upload has {pending.size} bytes, {size} were signed")
            if sha256_hex is not None and digest != sha256_hex:
                raise Invalid("the upload's sha256 differs from the signed one")
            await pending.commit()
            committed = True
        finally:
            if not committed:
                pending.abort()
        return BlobInfo(key=key, size=pending.size, sha256=digest, modified_at=datetime.now(UTC))

    async def move(self, src: str, dst: str) -> None:
        source, target = self.path_of(src), self.path_of(dst)
        try:
            await asyncio.to_thread(_rename_durably, source, target)
        except FileNotFoundError as exc:
            raise NotFound("blob", src) from exc

    async def delete(self, key: str) -> None:
        await asyncio.to_thread(self.path_of(key).unlink, missing_ok=True)

    async def cleanup_expired_uploads(self, older_than: datetime) -> int:
        return await asyncio.to_thread(
            _delete_older_than, self.root / UPLOADS_PREFIX, older_than.timestamp()
        )

    async def close(self) -> None:
        """Nothing to release: files are opened per request."""


class _AtomicFile:
    """A file written beside its final path and renamed into place only once complete."""

    def __init__(self, target: Path) -> None:
        self.target = target
        # The leading dot keeps temp files out of the key space (keys cannot start with a dot).
        self.temp = target.with_name(f".{target.name}.{secrets.token_hex(6)}.part")
        self.size = 0
        self._hash = hashlib.sha256()
        self._buffer = bytearray()
        self._handle: BinaryIO | None = None

    async def open(self) -> None:
        self._handle = await asyncio.to_thread(self._open)

    def _open(self) -> BinaryIO:
        self.target.parent.mkdir(parents=True, exist_ok=True)
        return self.temp.open("xb")

    async def write(self, chunk: bytes) -> None:
        # Small network chunks are gathered so the thread hop is paid once per MiB.
        self._buffer += chunk
        self.size += len(chunk)
        if len(self._buffer) >= _WRITE_BUFFER:
            await self._flush()

    async def _flush(self) -> None:
        data, self._buffer = bytes(self._buffer), bytearray()
        await asyncio.to_thread(self._write, data)

    def _write(self, data: bytes) -> None:
        assert self._handle is not None
        self._handle.write(data)
        self._hash.update(data)

    async def finish(self) -> str:
        """Write what is buffered and return the hex digest of everything written."""
        await self._flush()
        return self._hash.hexdigest()

    async def commit(self) -> None:
        await asyncio.to_thread(self._commit)

    def _commit(self) -> None:
        assert self._handle is not None
        self._handle.flush()
        os.fsync(self._handle.fileno())
        self._handle.close()
        _rename_durably(self.temp, self.target)

    def abort(self) -> None:
        # Synchronous on purpose: it runs during cancellation too, where awaiting is unreliable.
        if self._handle is not None:
            self._handle.close()
        self.temp.unlink(missing_ok=True)


def _rename_durably(source: Path, target: Path) -> None:
    """os.replace, then fsync the directory so the rename itself survives a crash."""
    target.parent.mkdir(parents=True, exist_ok=True)
    os.replace(source, target)
    fd = os.open(target.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _file_sha256(path: Path) -> str:
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def _delete_older_than(folder: Path, cutoff: float) -> int:
    deleted = 0
    if not folder.is_dir():
        return 0
    for path in folder.rglob("*"):
        try:
            if path.is_file() and path.stat().st_mtime < cutoff:
                path.unlink()
                deleted += 1
        except FileNotFoundError:
            continue  # removed concurrently (e.g. promoted by `move`): nothing to clean
    return deleted
