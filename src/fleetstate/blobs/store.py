"""What every blob backend offers, and the small types they share.

The service only ever talks to a `BlobStore`; whether bytes live under the data directory (signed
URLs served by our own aiohttp) or in an S3-compatible bucket (presigned URLs) is decided once, at
start, by `BlobConfig`.
"""

import re
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Protocol

import msgspec

from fleetstate.errors import FleetstateError, Invalid, TooLarge

UPLOADS_PREFIX = "uploads/"
"""Where presigned uploads land before the service checks and promotes them (`move`)."""

MAX_EXPIRY_S = 7 * 24 * 3600
"""S3 refuses presigned URLs valid for longer than a week; the local backend follows suit."""

CHUNK_SIZE = 256 * 1024

# One segment: no leading dot, so `.`/`..` can never climb out of the root and the local
# backend's hidden temp files can never collide with a real key.
_SEGMENT = r"[A-Za-z0-9_-][A-Za-z0-9._-]*"
_KEY_RE = re.compile(rf"{_SEGMENT}(?:/{_SEGMENT})*")
_SHA256_RE = re.compile(r"[0-9a-f]{64}")
_MAX_KEY_LEN = 512


class SignatureError(FleetstateError):
    """A signed URL that was tampered with, has expired, or does not match the request."""

    code = "forbidden"


class PresignedUpload(msgspec.Struct, frozen=True, kw_only=True):
    """How a client uploads: send `method` to `url` with exactly these `headers`."""

    url: str
    method: str
    headers: dict[str, str]
    expires_at: str
    """RFC 3339 UTC."""


class BlobInfo(msgspec.Struct, frozen=True, kw_only=True):
    key: str
    size: int
    modified_at: datetime
    sha256: str | None = None
    """Hex digest when the backend knows it without reading the bytes, else None."""


class BlobStore(Protocol):
    """An object store holding large artefacts, reachable by clients through expiring URLs."""

    async def presign_put(
        self,
        key: str,
        *,
        size: int,
        sha256_hex: str,
        content_type: str,
        expires_in: int | None = None,
    ) -> PresignedUpload:
        """A URL that accepts exactly `size` bytes hashing to `sha256_hex` at `key`."""
        ...

    async def presign_get(self, key: str, *, expires_in: int | None = None) -> str: ...

    async def stat(self, key: str) -> BlobInfo | None: ...

    async def sha256_of(self, key: str) -> str:
        """Hex SHA-256 of the stored bytes, streamed; raises NotFound."""
        ...

    def iter_bytes(self, key: str, chunk_size: int = CHUNK_SIZE) -> AsyncIterator[bytes]:
        """The stored bytes in chunks; raises NotFound when iteration starts."""
        ...

    async def put_bytes(
        self, key: str, data: bytes, *, content_type: str = "application/octet-stream"
    ) -> BlobInfo: ...

    async def move(self, src: str, dst: str) -> None:
        """Rename `src` to `dst` (replacing it); raises NotFound."""
        ...

    async def delete(self, key: str) -> None:
        """Remove `key`; a missing key is not an error."""
        ...

    async def cleanup_expired_uploads(self, older_than: datetime) -> int:
        """Delete objects under `uploads/` modified before the aware `older_than`; return count."""
        ...

    async def close(self) -> None:
        """Release connections; idempotent."""
        ...


def check_key(key: str) -> str:
    """Return `key` if it is a safe relative object name, else raise Invalid."""
    if len(key) > _MAX_KEY_LEN or not _KEY_RE.fullmatch(key):
        raise Invalid(f"invalid blob key {key!r}")
    return key


def check_sha256(sha256_hex: str) -> str:
    """Return the lower-case hex digest, or raise Invalid."""
    lowered = sha256_hex.lower()
    if not _SHA256_RE.fullmatch(lowered):
        raise Invalid("sha256 must be 64 hexadecimal digits")
    return lowered


def check_upload_terms(size: int, content_type: str) -> None:
    if size < 0:
        raise Invalid("size must not be negative")
    # The content type travels in a header and in the signature: no control characters.
    if not content_type or not content_type.isprintable() or not content_type.isascii():
        raise Invalid("content_type must be printable ASCII")


def check_expiry(expires_in: int | None, default: int) -> int:
    seconds = default if expires_in is None else expires_in
    if not 1 <= seconds <= MAX_EXPIRY_S:
        raise Invalid(f"expires_in must be between 1 and {MAX_EXPIRY_S} seconds")
    return seconds


async def read_all(store: BlobStore, key: str, *, limit: int) -> bytes:
    """The whole blob, for content the service must parse; TooLarge past `limit` bytes."""
    parts: list[bytes] = []
    total = 0
    async for chunk in store.iter_bytes(key):
        total += len(chunk)
        if total > limit:
            raise TooLarge(f"blob {key!r} is larger than {limit} bytes")
        parts.append(chunk)
    return b"".join(parts)


class StoredContent(msgspec.Struct, frozen=True, kw_only=True):
    """Where stored bytes are (an artefact's, a file's): inline `content`, or `blob_key` here."""

    size: int
    hash: str
    """`sha256:<hex>` of exactly the stored bytes."""
    content_type: str
    content: bytes | None = None
    blob_key: str | None = None
