"""The embedded blob store, through a real aiohttp server on a free loopback port."""

import asyncio
import hashlib
import os
import random
import secrets
import stat
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlsplit

import aiohttp
import pytest
from aiohttp import web

from fleetstate.blobs import (
    LocalBlobStore,
    blob_routes,
    check_key,
    open_blob_store,
    read_all,
)
from fleetstate.config import BlobConfig
from fleetstate.errors import Invalid, NotFound, TooLarge

MIB = 1024 * 1024


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


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[BlobServer]:
    blobs = BlobServer(tmp_path / "blobs")
    runner = web.AppRunner(blobs.app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]  # bind first, then read the real port
    blobs.base_url = f"http://{host}:{port}"
    yield blobs
    await runner.cleanup()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


async def upload(
    server: BlobServer, http: aiohttp.ClientSession, key: str, data: bytes
) -> aiohttp.ClientResponse:
    signed = await server.store.presign_put(
        key, size=len(data), sha256_hex=sha256_hex(data), content_type="application/json"
    )
    async with http.put(signed.url, data=data, headers=signed.headers) as response:
        await response.read()
        return response


async def error_code(response: aiohttp.ClientResponse) -> str:
    body = await response.json()
    return str(body["error"]["code"])


def with_query(url: str, **changes: str) -> str:
    parts = urlsplit(url)
    query = {k: v[0] for k, v in parse_qs(parts.query).items()} | changes
    return parts._replace(query=urlencode(query)).geturl()


async def test_local_upload_then_download_roundtrips(
    server: BlobServer, http: aiohttp.ClientSession
) -> None:
    data = os.urandom(300_000)
    async with asyncio.timeout(10):
        response = await upload(server, http, "uploads/u1", data)
        assert response.status == 200
        info = await server.store.stat("uploads/u1")
        assert info is not None
        assert info.size == len(data)
        assert await server.store.sha256_of("uploads/u1") == sha256_hex(data)
        async with http.get(await server.store.presign_get("uploads/u1")) as response:
            assert response.status == 200
            assert response.headers["Content-Type"] == "application/octet-stream"
            assert await response.read() == data


async def test_local_presign_put_describes_the_request(server: BlobServer) -> None:
    before = datetime.now(UTC)
    signed = await server.store.presign_put(
        "uploads/x", size=5, sha256_hex="AB" * 32, content_type="text/plain", expires_in=60
    )
    assert signed.method == "PUT"
    assert signed.headers == {"Content-Type": "text/plain", "Content-Length": "5"}
    assert signed.url.startswith(f"{server.base_url}/blobs/uploads/x?")
    assert parse_qs(urlsplit(signed.url).query)["sha256"] == ["ab" * 32]
    expires_at = datetime.fromisoformat(signed.expires_at)
    assert before + timedelta(seconds=58) <= expires_at <= before + timedelta(seconds=61)


async def test_local_range_request_returns_partial_content(
    server: BlobServer, http: aiohttp.ClientSession
) -> None:
    data = bytes(range(256)) * 100
    async with asyncio.timeout(10):
        await upload(server, http, "artefacts/a1", data)
        url = await server.store.presign_get("artefacts/a1")
        async with http.get(url, headers={"Range": "bytes=1000-1999"}) as response:
            assert response.status == 206
            assert response.headers["Content-Range"] == f"bytes 1000-1999/{len(data)}"
            assert await response.read() == data[1000:2000]


async def test_local_head_reports_size_without_body(
    server: BlobServer, http: aiohttp.ClientSession
) -> None:
    async with asyncio.timeout(10):
        await upload(server, http, "artefacts/h", b"x" * 1234)
        async with http.head(await server.store.presign_get("artefacts/h")) as response:
            assert response.status == 200
            assert response.headers["Content-Length"] == "1234"
            assert await response.read() == b""


async def test_local_get_missing_blob_is_not_found(
    server: BlobServer, http: aiohttp.ClientSession
) -> None:
    async with asyncio.timeout(10):
        async with http.get(await server.store.presign_get("artefacts/none")) as response:
            assert response.status == 404
            assert await error_code(response) == "not_found"
        with pytest.raises(NotFound):
            await server.store.sha256_of("artefacts/none")


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
async def test_local_bad_key_is_refused(server: BlobServer, key: str) -> None:
    with pytest.raises(Invalid):
        check_key(key)
    with pytest.raises(Invalid):
        await server.store.presign_put(key, size=1, sha256_hex="0" * 64, content_type="a/b")
    with pytest.raises(Invalid):
        await server.store.presign_get(key)
    with pytest.raises(Invalid):
        await server.store.stat(key)


async def test_local_bad_key_over_http_is_forbidden(
    server: BlobServer, http: aiohttp.ClientSession
) -> None:
    async with asyncio.timeout(10):
        url = f"{server.base_url}/blobs/uploads/.hidden?method=GET&expires=9999999999&sig=00"
        async with http.get(url) as response:
            assert response.status == 403


async def test_local_presign_rejects_bad_terms(server: BlobServer) -> None:
    store = server.store
    with pytest.raises(Invalid):
        await store.presign_put("uploads/x", size=1, sha256_hex="zz", content_type="a/b")
    with pytest.raises(Invalid):
        await store.presign_put("uploads/x", size=-1, sha256_hex="0" * 64, content_type="a/b")
    with pytest.raises(Invalid):
        await store.presign_put("uploads/x", size=1, sha256_hex="0" * 64, content_type="a\nb")
    with pytest.raises(Invalid):
        await store.presign_get("uploads/x", expires_in=0)


async def test_local_cleanup_deletes_only_old_uploads(server: BlobServer) -> None:
    store = server.store
    for key in ("uploads/old", "uploads/new", "artefacts/old"):
        await store.put_bytes(key, b"data")
    stale = time.time() - 7200
    for key in ("uploads/old", "artefacts/old"):
        os.utime(store.path_of(key), (stale, stale))
    orphan_temp = store.root / "uploads" / ".new.abc.part"  # left by a killed upload
    orphan_temp.write_bytes(b"partial")
    os.utime(orphan_temp, (stale, stale))
    deleted = await store.cleanup_expired_uploads(datetime.now(UTC) - timedelta(hours=1))
    assert deleted == 2
    assert await store.stat("uploads/old") is None
    assert await store.stat("uploads/new") is not None
    assert await store.stat("artefacts/old") is not None
    assert not orphan_temp.exists()


async def test_local_move_promotes_and_delete_is_idempotent(server: BlobServer) -> None:
    store = server.store
    await store.put_bytes("uploads/m", b"content")
    await store.move("uploads/m", "artefacts/m")
    assert await store.stat("uploads/m") is None
    assert await read_all(store, "artefacts/m", limit=100) == b"content"
    with pytest.raises(TooLarge):
        await read_all(store, "artefacts/m", limit=3)
    with pytest.raises(NotFound):
        await store.move("uploads/m", "artefacts/m")
    await store.delete("artefacts/m")
    await store.delete("artefacts/m")
    assert await store.stat("artefacts/m") is None


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
