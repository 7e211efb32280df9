"""What only the local backend does, through a real aiohttp server on a free loopback port: HMAC
signed URLs (tampering, expiry, exact size and digest), HEAD, streaming without buffering, its
signing secret. What every backend does is in tests/contract/test_blobstore.py."""

import asyncio
import hashlib
import os
import random
import stat
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlsplit

import aiohttp
import pytest
from aiohttp import web

from contract.blob_backends import BlobServer, local_server, sha256_hex
from contract.blob_backends import upload as upload_to
from fleetstate.blobs import LocalBlobStore, open_blob_store
from fleetstate.config import BlobConfig
from fleetstate.errors import Invalid, NotFound

MIB = 1024 * 1024


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[BlobServer]:
    async with local_server(tmp_path / "blobs") as blobs:
        yield blobs


async def upload(
    server: BlobServer, http: aiohttp.ClientSession, key: str, data: bytes
) -> aiohttp.ClientResponse:
    return await upload_to(server.store, http, key, data)


async def error_code(response: aiohttp.ClientResponse) -> str:
    body = await response.json()
    return str(body["error"]["code"])


def with_query(url: str, **changes: str) -> str:
    parts = urlsplit(url)
    query = {k: v[0] for k, v in parse_qs(parts.query).items()} | changes
    return parts._replace(query=urlencode(query)).geturl()


async def test_local_presign_put_signs_the_digest_into_our_own_url(server: BlobServer) -> None:
    signed = await server.store.presign_put(
        "uploads/x", size=5, sha256_hex="AB" * 32, content_type="text/plain"
    )
    assert signed.headers == {"Content-Type": "text/plain", "Content-Length": "5"}
    assert signed.url.startswith(f"{server.base_url}/blobs/uploads/x?")
    assert parse_qs(urlsplit(signed.url).query)["sha256"] == ["ab" * 32]


async def test_local_get_missing_blob_answers_not_found(
    server: BlobServer, http: aiohttp.ClientSession
) -> None:
    async with asyncio.timeout(10):
        async with http.get(await server.store.presign_get("artefacts/none")) as response:
            assert response.status == 404
            assert await error_code(response) == "not_found"


async def test_local_head_reports_size_without_body(
    server: BlobServer, http: aiohttp.ClientSession
) -> None:
    async with asyncio.timeout(10):
        await upload(server, http, "artefacts/h", b"x" * 1234)
        async with http.head(await server.store.presign_get("artefacts/h")) as response:
            assert response.status == 200
            assert response.headers["Content-Length"] == "1234"
            assert await response.read() == b""


async def test_local_tampered_signature_is_forbidden(
    server: BlobServer, http: aiohttp.ClientSession
) -> None:
    data = b'{"a": 1}'
    signed = await server.store.presign_put(
        "uploads/t", size=len(data), sha256_hex=sha256_hex(data), content_type="application/json"
    )
    sig = parse_qs(urlsplit(signed.url).query)["sig"][0]
    bad_sig = ("0" if sig[0] != "0" else "1") + sig[1:]
    attempts = [
        (with_query(signed.url, sig=bad_sig), signed.headers),
        (with_query(signed.url, size="9"), signed.headers),
        (with_query(signed.url, expires=str(int(time.time()) + 99_999)), signed.headers),
        (signed.url.replace("uploads/t", "uploads/other"), signed.headers),
        (with_query(signed.url, sig=""), signed.headers),
        (signed.url, {**signed.headers, "Content-Type": "text/html"}),
    ]
    async with asyncio.timeout(10):
        for url, headers in attempts:
            async with http.put(url, data=data, headers=headers) as response:
                assert response.status == 403, url
                assert await error_code(response) == "forbidden"
        # A download URL does not allow an upload.
        get_url = await server.store.presign_get("uploads/t")
        async with http.put(get_url, data=data, headers=signed.headers) as response:
            assert response.status == 403
    assert server.leftovers() == []


async def test_local_expired_url_is_forbidden(
    server: BlobServer, http: aiohttp.ClientSession
) -> None:
    data = b"payload"
    past = int(time.time()) - 1
    put_url = server.store.sign_url(
        "PUT",
        "uploads/e",
        expires=past,
        size=len(data),
        sha256_hex=sha256_hex(data),
        content_type="application/json",
    )
    headers = {"Content-Type": "application/json"}
    async with asyncio.timeout(10):
        async with http.put(put_url, data=data, headers=headers) as response:
            assert response.status == 403
            assert "expired" in (await response.json())["error"]["message"]
        await server.store.put_bytes("artefacts/e", data)
        get_url = server.store.sign_url("GET", "artefacts/e", expires=past)
        async with http.get(get_url) as response:
            assert response.status == 403
            assert "expired" in (await response.json())["error"]["message"]
    assert not (server.store.root / "uploads").exists()


async def test_local_upload_of_wrong_size_is_refused(
    server: BlobServer, http: aiohttp.ClientSession
) -> None:
    signed_data = b"x" * 1000
    signed = await server.store.presign_put(
        "uploads/s", size=1000, sha256_hex=sha256_hex(signed_data), content_type="text/plain"
    )
    short = {**signed.headers, "Content-Length": "999"}
    long = {**signed.headers, "Content-Length": "1001"}

    async def chunked_too_long() -> AsyncIterator[bytes]:
        yield b"x" * 600
        yield b"x" * 600

    async with asyncio.timeout(10):
        async with http.put(signed.url, data=b"x" * 999, headers=short) as response:
            assert response.status == 400
            assert await error_code(response) == "invalid"
        async with http.put(signed.url, data=b"x" * 1001, headers=long) as response:
            assert response.status == 413
            assert await error_code(response) == "too_large"
        headers = {"Content-Type": "text/plain"}  # no length: sent chunked, caught mid-stream
        async with http.put(signed.url, data=chunked_too_long(), headers=headers) as response:
            assert response.status == 413
    assert server.leftovers() == []


async def test_local_upload_of_wrong_sha256_is_refused_and_keeps_old_blob(
    server: BlobServer, http: aiohttp.ClientSession
) -> None:
    async with asyncio.timeout(10):
        assert (await upload(server, http, "uploads/h", b"old content")).status == 200
        signed = await server.store.presign_put(
            "uploads/h", size=11, sha256_hex=sha256_hex(b"new content"), content_type="a/b"
        )
        async with http.put(signed.url, data=b"bad content", headers=signed.headers) as response:
            assert response.status == 400
            assert "sha256" in (await response.json())["error"]["message"]
    assert server.leftovers() == [server.store.root / "uploads" / "h"]
    assert await server.store.sha256_of("uploads/h") == sha256_hex(b"old content")


def rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS in /proc/self/status")


def generated_chunks(seed: int, count: int) -> Iterator[bytes]:
    rng = random.Random(seed)
    for _ in range(count):
        yield rng.randbytes(MIB)


async def test_local_50_mb_upload_and_download_stream(
    server: BlobServer, http: aiohttp.ClientSession
) -> None:
    count = 50
    expected = hashlib.sha256()
    for chunk in generated_chunks(7, count):
        expected.update(chunk)
    baseline = rss_bytes()
    peak = baseline

    async def body() -> AsyncIterator[bytes]:
        nonlocal peak
        for chunk in generated_chunks(7, count):
            peak = max(peak, rss_bytes())
            yield chunk

    async with asyncio.timeout(120):
        signed = await server.store.presign_put(
            "uploads/big",
            size=count * MIB,
            sha256_hex=expected.hexdigest(),
            content_type="application/octet-stream",
        )
        async with http.put(signed.url, data=body(), headers=signed.headers) as response:
            assert response.status == 200
        downloaded = hashlib.sha256()
        size = 0
        async with http.get(await server.store.presign_get("uploads/big")) as response:
            assert response.status == 200
            async for chunk in response.content.iter_chunked(256 * 1024):
                downloaded.update(chunk)
                size += len(chunk)
                peak = max(peak, rss_bytes())
    assert size == count * MIB
    assert downloaded.hexdigest() == expected.hexdigest()
    assert peak - baseline < 25 * MIB, f"RSS grew by {(peak - baseline) / MIB:.1f} MiB"


async def test_local_bad_key_over_http_is_forbidden(
    server: BlobServer, http: aiohttp.ClientSession
) -> None:
    async with asyncio.timeout(10):
        url = f"{server.base_url}/blobs/uploads/.hidden?method=GET&expires=9999999999&sig=00"
        async with http.get(url) as response:
            assert response.status == 403


async def test_local_cleanup_removes_temp_files_a_killed_upload_left(server: BlobServer) -> None:
    store = server.store
    await store.put_bytes("uploads/new", b"data")
    stale = time.time() - 7200
    orphan_temp = store.root / "uploads" / ".new.abc.part"
    orphan_temp.write_bytes(b"partial")
    os.utime(orphan_temp, (stale, stale))
    assert await store.cleanup_expired_uploads(datetime.now(UTC) - timedelta(hours=1)) == 1
    assert not orphan_temp.exists()
    assert await store.stat("uploads/new") is not None


async def test_local_file_response_streams_bytes(server: BlobServer) -> None:
    await server.store.put_bytes("artefacts/f", b"abc")
    response = server.store.file_response("artefacts/f")
    assert isinstance(response, web.FileResponse)
    with pytest.raises(NotFound):
        server.store.file_response("artefacts/missing")


async def test_open_blob_store_keeps_one_secret_across_starts(tmp_path: Path) -> None:
    config = BlobConfig()

    def base() -> str:
        return "http://127.0.0.1:1"

    first = await open_blob_store(config, tmp_path, base)
    second = await open_blob_store(config, tmp_path, base)
    assert isinstance(first, LocalBlobStore)
    assert isinstance(second, LocalBlobStore)
    secret_file = tmp_path / "blob-secret"
    assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600
    url = await first.presign_get("artefacts/x")
    query = {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}
    assert second.verify("GET", "artefacts/x", query, None) is None
    assert first.root == tmp_path / "blobs"
    await first.close()
    await second.close()


async def test_open_blob_store_refuses_a_corrupt_secret(tmp_path: Path) -> None:
    (tmp_path / "blob-secret").write_text("not hex\n")
    with pytest.raises(Invalid):
        await open_blob_store(BlobConfig(), tmp_path, lambda: "http://127.0.0.1:1")


def test_blob_config_refuses_unknown_fields() -> None:
    import msgspec

    with pytest.raises(msgspec.ValidationError):
        msgspec.convert({"backend": "local", "bucket_name": "x"}, BlobConfig)
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert({"backend": "gcs"}, BlobConfig)
