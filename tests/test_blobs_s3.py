"""The S3 backend against a real S3 API server: moto's server mode, run as a subprocess.

moto checks neither the signature nor the expiry of presigned URLs (nor the signed length and
checksum), so no test here can show that an expired or tampered URL is refused; the tests check
instead that the URLs carry the expiry and sign the headers that a real S3 enforces.
"""

import asyncio
import base64
import hashlib
import os
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import aiohttp
import pytest

from fleetstate.blobs import S3BlobStore, open_blob_store
from fleetstate.config import BlobConfig
from fleetstate.errors import Invalid, NotFound, StoreClosed

MIB = 1024 * 1024


@pytest.fixture
async def store(moto_url: str) -> AsyncIterator[S3BlobStore]:
    # One bucket per test: the moto server is shared by the whole module.
    s3 = S3BlobStore(
        bucket=f"test-{uuid.uuid4().hex[:12]}",
        endpoint_url=moto_url,
        access_key_id="testing",
        secret_access_key="testing",
    )
    async with asyncio.timeout(10), s3:
        await s3.ensure_bucket()
        yield s3


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def query_of(url: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}


async def test_s3_presigned_upload_then_download_roundtrips(
    store: S3BlobStore, http: aiohttp.ClientSession
) -> None:
    data = os.urandom(3 * MIB + 17)
    digest = hashlib.sha256(data).hexdigest()
    async with asyncio.timeout(30):
        signed = await store.presign_put(
            "uploads/u1", size=len(data), sha256_hex=digest, content_type="application/json"
        )
        async with http.put(signed.url, data=data, headers=signed.headers) as response:
            assert response.status == 200, await response.text()
        info = await store.stat("uploads/u1")
        assert info is not None
        assert info.size == len(data)
        assert info.sha256 in {None, digest}  # only known when the server keeps checksums
        assert await store.sha256_of("uploads/u1") == digest
        url = await store.presign_get("uploads/u1")
        async with http.get(url) as response:
            assert response.status == 200
            assert await response.read() == data
        async with http.get(url, headers={"Range": "bytes=100-199"}) as response:
            assert response.status == 206
            assert await response.read() == data[100:200]


async def test_s3_presigned_urls_carry_expiry_and_signed_headers(store: S3BlobStore) -> None:
    digest = hashlib.sha256(b"abc").digest()
    before = datetime.now(UTC)
    signed = await store.presign_put(
        "uploads/x", size=3, sha256_hex=digest.hex(), content_type="text/plain", expires_in=120
    )
    query = query_of(signed.url)
    assert query["X-Amz-Expires"] == "120"
    assert set(query["X-Amz-SignedHeaders"].split(";")) >= {
        "content-length",
        "content-type",
        "x-amz-checksum-sha256",
    }
    assert signed.headers == {
        "Content-Type": "text/plain",
        "Content-Length": "3",
        "x-amz-checksum-sha256": base64.b64encode(digest).decode(),
    }
    expires_at = datetime.fromisoformat(signed.expires_at)
    assert before + timedelta(seconds=119) <= expires_at <= before + timedelta(seconds=121)
    get_url = await store.presign_get("uploads/x", expires_in=60)
    assert query_of(get_url)["X-Amz-Expires"] == "60"
    assert urlsplit(get_url).path == f"/{store.bucket}/uploads/x"


async def test_s3_delete_removes_object(store: S3BlobStore) -> None:
    async with asyncio.timeout(10):
        await store.put_bytes("artefacts/d", b"bytes")
        assert await store.stat("artefacts/d") is not None
        await store.delete("artefacts/d")
        await store.delete("artefacts/d")  # a missing key is not an error
        assert await store.stat("artefacts/d") is None
        with pytest.raises(NotFound):
            await store.sha256_of("artefacts/d")


async def test_s3_move_promotes_upload(store: S3BlobStore) -> None:
    async with asyncio.timeout(10):
        await store.put_bytes("uploads/m", b"content")
        await store.move("uploads/m", "artefacts/m")
        assert await store.stat("uploads/m") is None
        assert await store.sha256_of("artefacts/m") == hashlib.sha256(b"content").hexdigest()
        with pytest.raises(NotFound):
            await store.move("uploads/m", "artefacts/m")


async def test_s3_cleanup_deletes_only_old_uploads(store: S3BlobStore) -> None:
    async with asyncio.timeout(10):
        for key in ("uploads/a", "uploads/b", "artefacts/c"):
            await store.put_bytes(key, b"data")
        # moto stamps objects with the real time: a cutoff in the past spares them all...
        assert await store.cleanup_expired_uploads(datetime.now(UTC) - timedelta(hours=1)) == 0
        # ...and one in the future makes every upload (and nothing else) stale.
        assert await store.cleanup_expired_uploads(datetime.now(UTC) + timedelta(minutes=1)) == 2
        assert await store.stat("uploads/a") is None
        assert await store.stat("uploads/b") is None
        assert await store.stat("artefacts/c") is not None


async def test_s3_bad_key_is_refused(store: S3BlobStore) -> None:
    for key in ("../x", "/abs", "uploads/.h", "uploads/a b"):
        with pytest.raises(Invalid):
            await store.presign_put(key, size=1, sha256_hex="0" * 64, content_type="a/b")
        with pytest.raises(Invalid):
            await store.presign_get(key)


async def test_s3_closed_store_raises(moto_url: str) -> None:
    s3 = S3BlobStore(bucket="closed-bucket", endpoint_url=moto_url)
    with pytest.raises(StoreClosed):
        await s3.stat("uploads/x")
    async with asyncio.timeout(10):
        await s3.open()
        await s3.close()
        await s3.close()  # idempotent
    with pytest.raises(StoreClosed):
        await s3.presign_get("uploads/x")


async def test_open_blob_store_s3_uses_env_credentials_and_creates_bucket(
    moto_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "from-env")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "from-env-secret")
    config = BlobConfig(
        backend="s3", endpoint_url=moto_url, bucket="env-bucket", create_bucket=True
    )
    async with asyncio.timeout(10):
        store = await open_blob_store(config, tmp_path, lambda: "unused")
        try:
            assert isinstance(store, S3BlobStore)
            url = await store.presign_get("artefacts/x")
            assert query_of(url)["X-Amz-Credential"].startswith("from-env/")
            await store.put_bytes("artefacts/x", b"hi")
            assert await store.sha256_of("artefacts/x") == hashlib.sha256(b"hi").hexdigest()
        finally:
            await store.close()
    assert not (tmp_path / "blob-secret").exists()


async def test_open_blob_store_s3_needs_a_bucket(tmp_path: Path) -> None:
    with pytest.raises(Invalid):
        await open_blob_store(BlobConfig(backend="s3"), tmp_path, lambda: "unused")
