"""The BlobStore port on every backend: presigned upload and download, stat and digests, move,
delete, cleanup of stale uploads, and the keys and terms every backend refuses.

A backend is one `pytest.param` of `opener`: given the test's request, it returns a function that
opens a store on a fresh, empty namespace, served by a real process (our own aiohttp for local,
moto's S3 API server for s3). What only one backend does (local URL signing, S3's signed
headers) is tested in tests/test_blobs_local.py and tests/test_blobs_s3.py.
"""

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta

import aiohttp
import pytest

from conftest import WAIT
from contract.blob_backends import local_server, s3_bucket, sha256_hex, upload
from fleetstate.blobs import BlobStore, check_key, read_all
from fleetstate.errors import Invalid, NotFound, TooLarge

MIB = 1024 * 1024
Opener = Callable[[], contextlib.AbstractAsyncContextManager[BlobStore]]


def _local(request: pytest.FixtureRequest) -> Opener:
    root = request.getfixturevalue("tmp_path") / "blobs"

    @contextlib.asynccontextmanager
    async def opened() -> AsyncIterator[BlobStore]:
        async with local_server(root) as server:
            yield server.store

    return opened


def _s3(request: pytest.FixtureRequest) -> Opener:
    moto_url: str = request.getfixturevalue("moto_url")
    return lambda: s3_bucket(moto_url)


BACKENDS = [pytest.param(_local, id="local"), pytest.param(_s3, id="s3")]


@pytest.fixture(params=BACKENDS)
def opener(request: pytest.FixtureRequest) -> Opener:
    make: Callable[[pytest.FixtureRequest], Opener] = request.param
    return make(request)


@pytest.fixture
async def store(opener: Opener) -> AsyncIterator[BlobStore]:
    async with opener() as opened:
        yield opened


async def test_blobstore_presigned_upload_then_download_roundtrips(
    store: BlobStore, http: aiohttp.ClientSession
) -> None:
    data = os.urandom(3 * MIB + 17)
    async with asyncio.timeout(30):
        assert (await upload(store, http, "uploads/u1", data)).status == 200
        info = await store.stat("uploads/u1")
        assert info is not None
        assert info.size == len(data)
        assert info.sha256 in {None, sha256_hex(data)}  # only when the backend knows it cheaply
        assert await store.sha256_of("uploads/u1") == sha256_hex(data)
        url = await store.presign_get("uploads/u1")
        async with http.get(url) as response:
            assert response.status == 200
            assert await response.read() == data
        async with http.get(url, headers={"Range": "bytes=1000-1999"}) as response:
            assert response.status == 206
            assert await response.read() == data[1000:2000]


async def test_blobstore_presign_put_names_method_headers_and_expiry(store: BlobStore) -> None:
    before = datetime.now(UTC)
    signed = await store.presign_put(
        "uploads/x", size=5, sha256_hex="AB" * 32, content_type="text/plain", expires_in=60
    )
    assert signed.method == "PUT"
    assert signed.headers["Content-Type"] == "text/plain"
    assert signed.headers["Content-Length"] == "5"
    expires_at = datetime.fromisoformat(signed.expires_at)
    assert before + timedelta(seconds=58) <= expires_at <= before + timedelta(seconds=61)


async def test_blobstore_missing_blob_is_not_found(store: BlobStore) -> None:
    async with asyncio.timeout(WAIT):
        assert await store.stat("artefacts/none") is None
        with pytest.raises(NotFound):
            await store.sha256_of("artefacts/none")
        with pytest.raises(NotFound):
            await read_all(store, "artefacts/none", limit=10)
        with pytest.raises(NotFound):
            await store.move("uploads/none", "artefacts/none")


async def test_blobstore_move_promotes_and_delete_is_idempotent(store: BlobStore) -> None:
    async with asyncio.timeout(WAIT):
        info = await store.put_bytes("uploads/m", b"content")
        assert (info.size, info.sha256) == (7, sha256_hex(b"content"))
        await store.move("uploads/m", "artefacts/m")
        assert await store.stat("uploads/m") is None
        assert await read_all(store, "artefacts/m", limit=100) == b"content"
        with pytest.raises(TooLarge):
            await read_all(store, "artefacts/m", limit=3)
        await store.delete("artefacts/m")
        await store.delete("artefacts/m")  # a missing key is not an error
        assert await store.stat("artefacts/m") is None


async def test_blobstore_cleanup_deletes_only_old_uploads(store: BlobStore) -> None:
    async with asyncio.timeout(WAIT):
        for key in ("uploads/a", "uploads/b", "artefacts/c"):
            await store.put_bytes(key, b"data")
        # A cutoff in the past spares every fresh upload...
        assert await store.cleanup_expired_uploads(datetime.now(UTC) - timedelta(hours=1)) == 0
        # ...and one in the future makes every upload (and nothing else) stale.
        assert await store.cleanup_expired_uploads(datetime.now(UTC) + timedelta(minutes=1)) == 2
        assert await store.stat("uploads/a") is None
        assert await store.stat("uploads/b") is None
        assert await store.stat("artefacts/c") is not None


@pytest.mark.parametrize(
    "key",
    [
        "../etc/passwd",
        "uploads/../../x",
        "/abs/path",
        "uploads/.hidden",
        "uploads//x",
        "uploads/x/",
        "",
        "uploads/a b",
        "uploads/é",
        "uploads\\x",
        "x" * 513,
    ],
)
async def test_blobstore_bad_key_is_refused(store: BlobStore, key: str) -> None:
    with pytest.raises(Invalid):
        check_key(key)
    with pytest.raises(Invalid):
        await store.presign_put(key, size=1, sha256_hex="0" * 64, content_type="a/b")
    with pytest.raises(Invalid):
        await store.presign_get(key)
    with pytest.raises(Invalid):
        await store.stat(key)


async def test_blobstore_presign_rejects_bad_terms(store: BlobStore) -> None:
    with pytest.raises(Invalid):
        await store.presign_put("uploads/x", size=1, sha256_hex="zz", content_type="a/b")
    with pytest.raises(Invalid):
        await store.presign_put("uploads/x", size=-1, sha256_hex="0" * 64, content_type="a/b")
    with pytest.raises(Invalid):
        await store.presign_put("uploads/x", size=1, sha256_hex="0" * 64, content_type="a\nb")
    with pytest.raises(Invalid):
        await store.presign_get("uploads/x", expires_in=0)
