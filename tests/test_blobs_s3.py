"""What only the S3 backend does, against a real S3 API server (moto's server mode, a subprocess).

moto checks neither the signature nor the expiry of presigned URLs (nor the signed length and
checksum), so no test here can show that an expired or tampered URL is refused; the tests check
instead that the URLs carry the expiry and sign the headers that a real S3 enforces. What every
backend does is in tests/contract/test_blobstore.py.
"""

import asyncio
import base64
import hashlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from contract.blob_backends import s3_bucket
from fleetstate.blobs import S3BlobStore, open_blob_store
from fleetstate.config import BlobConfig
from fleetstate.errors import Invalid, StoreClosed


@pytest.fixture
async def store(moto_url: str) -> AsyncIterator[S3BlobStore]:
    async with s3_bucket(moto_url) as s3:
        yield s3


def query_of(url: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}


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
