"""The blob backends as the suites start them: the local store behind a real aiohttp server on a
free loopback port, and the S3 store on a fresh bucket of a real S3 API server (moto)."""

import asyncio
import contextlib
import hashlib
import secrets
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
from aiohttp import web

from conftest import WAIT
from fleetstate.blobs import BlobStore, LocalBlobStore, S3BlobStore, blob_routes


class BlobServer:
    """A LocalBlobStore whose signed URLs point at a running aiohttp server."""

    def __init__(self, root: Path) -> None:
        self.base_url = ""
        self.store = LocalBlobStore(root, secrets.token_bytes(32), lambda: self.base_url)
        self.app = web.Application()
        self.app.add_routes(blob_routes(self.store))

    def leftovers(self) -> list[Path]:
        """Every file under the root, temp files included."""
        return [p for p in self.store.root.rglob("*") if p.is_file()]


@contextlib.asynccontextmanager
async def local_server(root: Path) -> AsyncIterator[BlobServer]:
    blobs = BlobServer(root)
    runner = web.AppRunner(blobs.app)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        host, port = runner.addresses[0][:2]  # bind first, then read the real port
        blobs.base_url = f"http://{host}:{port}"
        yield blobs
    finally:
        await runner.cleanup()


@contextlib.asynccontextmanager
async def s3_bucket(moto_url: str) -> AsyncIterator[S3BlobStore]:
    # One bucket per test: the moto server is shared by the whole module.
    s3 = S3BlobStore(
        bucket=f"test-{uuid.uuid4().hex[:12]}",
        endpoint_url=moto_url,
        access_key_id="testing",
        secret_access_key="testing",
    )
    async with s3:
        async with asyncio.timeout(WAIT):
            await s3.ensure_bucket()
        yield s3


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


async def upload(
    store: BlobStore, http: aiohttp.ClientSession, key: str, data: bytes
) -> aiohttp.ClientResponse:
    """Put `data` at `key` the way a client does: through a presigned URL."""
    signed = await store.presign_put(
        key, size=len(data), sha256_hex=sha256_hex(data), content_type="application/json"
    )
    async with http.request(signed.method, signed.url, data=data, headers=signed.headers) as r:
        await r.read()
        return r
