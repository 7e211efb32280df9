"""The blob store for large artefacts: the embedded local backend or an S3-compatible bucket."""

import os
import secrets
from collections.abc import Callable
from pathlib import Path

from fleetstate.blobs.local import LocalBlobStore
from fleetstate.blobs.routes import blob_routes
from fleetstate.blobs.s3 import S3BlobStore
from fleetstate.blobs.store import (
    UPLOADS_PREFIX,
    BlobInfo,
    BlobStore,
    PresignedUpload,
    SignatureError,
    StoredContent,
    check_key,
    read_all,
)
from fleetstate.config import BlobConfig
from fleetstate.errors import Invalid

__all__ = [
    "UPLOADS_PREFIX",
    "BlobInfo",
    "BlobStore",
    "LocalBlobStore",
    "PresignedUpload",
    "S3BlobStore",
    "SignatureError",
    "StoredContent",
    "blob_routes",
    "check_key",
    "load_or_create_secret",
    "open_blob_store",
    "read_all",
]

_SECRET_BYTES = 32


async def open_blob_store(
    config: BlobConfig, data_dir: Path, base_url: Callable[[], str]
) -> BlobStore:
    """The configured backend, ready to use; the caller must `await store.close()`.

    `base_url` gives the service's public HTTP base (local signed URLs point there); it is called
    per URL because the port is only known after the server has bound it.
    """
    if config.backend == "local":
        secret = load_or_create_secret(data_dir / "blob-secret")
        return LocalBlobStore(
            data_dir / "blobs", secret, base_url, url_expiry_s=config.url_expiry_s
        )
    if not config.bucket:
        raise Invalid("the s3 blob backend needs a bucket")
    store = S3BlobStore(
        bucket=config.bucket,
        endpoint_url=config.endpoint_url,
        region=config.region,
        access_key_id=config.access_key_id,
        secret_access_key=config.secret_access_key,
        url_expiry_s=config.url_expiry_s,
    )
    await store.open()
    try:
        if config.create_bucket:
            await store.ensure_bucket()
    except BaseException:
        await store.close()
        raise
    return store


def load_or_create_secret(path: Path) -> bytes:
    """The local URL-signing key from `path`, created (mode 0600) on first start."""
    try:
        secret = bytes.fromhex(path.read_text().strip())
    except FileNotFoundError:
        secret = secrets.token_bytes(_SECRET_BYTES)
        path.parent.mkdir(parents=True, exist_ok=True)
        temp = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
        # Written whole under a temp name, then renamed: a crash never leaves a short key behind.
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secret.hex() + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
        return secret
    except ValueError as exc:
        raise Invalid(f"{path} does not hold a hex key") from exc
    if len(secret) < _SECRET_BYTES:
        raise Invalid(f"{path} holds a key shorter than {_SECRET_BYTES} bytes")
    return secret
