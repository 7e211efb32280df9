"""Large config artefacts through the embedded (local) blob store: upload URL, PUT, finalize,
binding, the device's download over the device API, and the cleanup of orphaned uploads.

The helpers at the top are shared with `test_uploads_s3.py`, which runs the same flow against a
real S3 API server.
"""

import asyncio
import contextlib
import hashlib
import os
import time
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

import aiohttp
import pytest

from conftest import ADMIN_TOKEN, WAIT, Api, DeviceFactory, Fleet, make_config
from fleetstate import app
from fleetstate.api.context import SERVICES
from fleetstate.blobs import BlobStore
from fleetstate.config import BlobConfig, UploadConfig
from fleetstate.service.uploads import artefact_key, upload_key

MIB = 1024 * 1024
LARGE = 50 * MIB
MEMORY_BUDGET_KIB = 25 * 1024
OCTETS = "application/octet-stream"
FREE_SCHEMA = {"type": "object"}


# -- helpers (also used by test_uploads_s3) ------------------------------------------------------


def blobs_of(service: app.Service) -> BlobStore:
    return service.http_app[SERVICES].blobs


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _write_random(path: Path, size: int) -> str:
    """`size` random bytes written in 1 MiB chunks (never whole in memory); their hex SHA-256."""
    digest = hashlib.sha256()
    with path.open("wb") as out:
        left = size
        while left:
            chunk = os.urandom(min(MIB, left))
            digest.update(chunk)
            out.write(chunk)
            left -= len(chunk)
    return digest.hexdigest()


async def random_file(path: Path, size: int) -> str:
    return await asyncio.to_thread(_write_random, path, size)


async def ask_upload(
    api: Api,
    profile_id: str,
    size: int,
    sha256: str,
    name: str = "classifier",
    content_type: str = OCTETS,
) -> tuple[int, Any]:
    body = {
        "name": name,
        "profile_id": profile_id,
        "size": size,
        "sha256": sha256,
        "content_type": content_type,
    }
    return await api.post("/api/v1/config-artefacts/upload-url", body)


async def upload_ticket(api: Api, profile_id: str, data: bytes, **options: Any) -> dict[str, Any]:
    status, ticket = await ask_upload(api, profile_id, len(data), sha256_hex(data), **options)
    assert status == 201, ticket
    return dict(ticket)


async def put_bytes(
    http: aiohttp.ClientSession, ticket: dict[str, Any], data: bytes | Any, **headers: str
) -> tuple[int, str]:
    assert ticket["method"] == "PUT"
    sent = {**ticket["headers"], **headers}
    async with http.put(ticket["url"], data=data, headers=sent) as response:
        return response.status, await response.text()


async def finalize(api: Api, upload_id: str) -> tuple[int, Any]:
    return await api.post("/api/v1/config-artefacts", {"upload_id": upload_id})


async def uploaded_artefact(
    api: Api, http: aiohttp.ClientSession, profile_id: str, data: bytes, **options: Any
) -> dict[str, Any]:
    """The whole flow for small content: upload URL, PUT, finalize."""
    ticket = await upload_ticket(api, profile_id, data, **options)
    status, text = await put_bytes(http, ticket, data)
    assert status == 200, text
    status, created = await finalize(api, ticket["upload_id"])
    assert status == 201, created
    return dict(created)


async def artefact_count(api: Api) -> int:
    return len((await api.ok("GET", "/api/v1/config-artefacts"))["items"])


async def device_get(
    http: aiohttp.ClientSession, base: str, path: str, key: str | None, **headers: str
) -> aiohttp.ClientResponse:
    """A device-API GET that does not follow redirects; the caller reads and releases it."""
    if key is not None:
        headers["Authorization"] = key
    return await http.get(base + path, headers=headers, allow_redirects=False)


async def streamed_sha256(response: aiohttp.ClientResponse) -> tuple[str, int]:
    digest, size = hashlib.sha256(), 0
    async for chunk in response.content.iter_chunked(MIB):
        digest.update(chunk)
        size += len(chunk)
    return digest.hexdigest(), size


async def download(http: aiohttp.ClientSession, base: str, path: str, key: str) -> tuple[str, int]:
    """Download as a device does: the bytes, or a redirect followed without our credentials."""
    async with await device_get(http, base, path, key) as response:
        if response.status != 302:
            assert response.status == 200, await response.text()
            return await streamed_sha256(response)
        location = response.headers["Location"]
        assert response.headers["Cache-Control"] == "no-store"
    async with http.get(location) as followed:
        assert followed.status == 200, await followed.text()
        return await streamed_sha256(followed)


async def desired_with_download(device: Any) -> dict[str, Any]:
    """The first desired document whose configs carry a `download`."""
    async with asyncio.timeout(WAIT):
        while True:
            document = await device.desired()
            if any("download" in config for config in document["configs"]):
                return document


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise AssertionError(f"{field} missing from /proc/self/status")


@contextlib.contextmanager
def memory_growth() -> Any:
    """Measures this process's (the service's and the client's) resident memory growth in KiB.

    Uses the peak (VmHWM, reset through /proc/self/clear_refs) so a transient whole-file buffer
    that was freed again is caught too; falls back to the current VmRSS where the reset is not
    allowed.
    """
    result = {"growth_kib": 0}
    before = _status_kib("VmRSS")
    try:
        Path("/proc/self/clear_refs").write_text("5")
        field = "VmHWM"
    except OSError:
        field = "VmRSS"
    yield result
    result["growth_kib"] = _status_kib(field) - before


async def large_roundtrip(
    api: Api, fleet: Fleet, connect: DeviceFactory, tmp_path: Path, base: str
) -> dict[str, Any]:
    """50 MB: upload URL, PUT, finalize, bind, the desired document over MQTT, the download."""
    profile = await fleet.profile("camera-box", FREE_SCHEMA)
    device_id, key = await fleet.device(profile)
    source = tmp_path / "model.bin"
    digest = await random_file(source, LARGE)
    async with connect(device_id, key) as device, asyncio.timeout(120):
        await device.desired()  # the empty document of a new device
        # Warm up every code path once with a small artefact so the measurement below sees the
        # cost of the 50 MB only, not first-use allocations.
        await uploaded_artefact(api, api.session, profile, b"warm-up", name="warm-up")
        with memory_growth() as memory:
            status, ticket = await ask_upload(api, profile, LARGE, digest)
            assert status == 201, ticket
            handle = await asyncio.to_thread(source.open, "rb")
            try:
                status, text = await put_bytes(api.session, ticket, handle)
            finally:
                handle.close()
            assert status == 200, text
            status, created = await finalize(api, ticket["upload_id"])
            assert status == 201, created
            await fleet.bind("device", device_id, created["id"])
            document = await desired_with_download(device)
            (config,) = document["configs"]
            path = config["download"]
            got_digest, got_size = await download(api.session, base, path, key)
        assert memory["growth_kib"] < MEMORY_BUDGET_KIB, memory
    assert created["storage"] == "blob"
    assert (created["size"], created["hash"]) == (LARGE, f"sha256:{digest}")
    assert created["content_type"] == OCTETS
    assert created["version"] == 1
    assert config["artefact_id"] == created["id"]
    assert config["hash"] == created["hash"]
    assert config["size"] == LARGE
    assert "content" not in config
    assert path == f"/v1/devices/{device_id}/artefacts/{created['id']}"
    assert (got_digest, got_size) == (digest, LARGE)
    return dict(created)


@contextlib.asynccontextmanager
async def custom_service(data: Path, **overrides: Any) -> AsyncIterator[tuple[app.Service, Api]]:
    async with app.start(make_config(data, **overrides)) as running, aiohttp.ClientSession() as s:
        yield running, Api(s, running.http_url, ADMIN_TOKEN)


# -- the full flow -------------------------------------------------------------------------------


async def test_uploads_large_artefact_roundtrips_without_memory_growth(
    api: Api, fleet: Fleet, connect: DeviceFactory, service: app.Service, tmp_path: Path
) -> None:
    created = await large_roundtrip(api, fleet, connect, tmp_path, service.http_url)
    # The bytes live in the data directory under the artefact's own key, and nowhere else.
    root = service.config.data_dir / "blobs"
    assert (root / artefact_key(created["id"])).stat().st_size == LARGE
    assert not any((root / "uploads").iterdir())


async def test_uploads_local_device_download_supports_range(
    api: Api, fleet: Fleet, service: app.Service
) -> None:
    profile = await fleet.profile("box", FREE_SCHEMA)
    device_id, key = await fleet.device(profile)
    data = os.urandom(300_000)
    created = await uploaded_artefact(api, api.session, profile, data)
    await fleet.bind("device", device_id, created["id"])
    path = f"/v1/devices/{device_id}/artefacts/{created['id']}"
    async with await device_get(
        api.session, service.http_url, path, key, Range="bytes=100-199"
    ) as r:
        assert r.status == 206
        assert await r.read() == data[100:200]
        assert r.headers["Content-Range"] == f"bytes 100-199/{len(data)}"
    async with await device_get(api.session, service.http_url, path, key) as r:
        assert r.status == 200
        assert r.headers["Content-Type"] == OCTETS
        assert await r.read() == data


async def test_uploads_json_artefact_is_validated_and_served(
    api: Api, fleet: Fleet, http: aiohttp.ClientSession
) -> None:
    profile = await fleet.profile()  # the thermostat schema: {"setpoint": 5..30}
    data = b'{"setpoint": 21.5}'
    created = await uploaded_artefact(api, http, profile, data, content_type="application/json")
    assert created["hash"] == f"sha256:{sha256_hex(data)}"
    assert created["storage"] == "blob"
    headers = {"Authorization": f"Bearer {api.token}"}
    async with http.get(
        f"{api.base}/api/v1/config-artefacts/{created['id']}/content", headers=headers
    ) as response:
        assert response.status == 200
        assert await response.read() == data  # the exact uploaded bytes, not re-encoded
    bad = b'{"setpoint": 99, "colour": "red"}'
    ticket = await upload_ticket(api, profile, bad, content_type="application/json")
    assert (await put_bytes(http, ticket, bad))[0] == 200
    status, answer = await finalize(api, ticket["upload_id"])
    assert status == 422, answer
    assert {d["path"] for d in answer["error"]["details"]} == {"$", "$.setpoint"}
    not_json = b"{nope"
    ticket = await upload_ticket(api, profile, not_json, content_type="application/json")
    assert (await put_bytes(http, ticket, not_json))[0] == 200
    status, answer = await finalize(api, ticket["upload_id"])
    assert status == 422, answer
    assert await artefact_count(api) == 1
    assert (await finalize(api, ticket["upload_id"]))[0] == 404  # a refused upload is gone


async def test_uploads_next_version_of_a_name(api: Api, fleet: Fleet) -> None:
    profile = await fleet.profile("box", FREE_SCHEMA)
    await fleet.artefact(profile, {"inline": True}, name="classifier")
    created = await uploaded_artefact(api, api.session, profile, b"\x00\x01binary")
    assert (created["name"], created["version"]) == ("classifier", 2)
    other = await fleet.profile("other", FREE_SCHEMA)
    status, answer = await ask_upload(api, other, 10, "0" * 64, name="classifier")
    assert status == 409, answer


# -- refusals: nothing created -------------------------------------------------------------------


async def test_uploads_wrong_hash_is_refused(
    api: Api, fleet: Fleet, service: app.Service, http: aiohttp.ClientSession
) -> None:
    profile = await fleet.profile("box", FREE_SCHEMA)
    data, wrong = b"the announced bytes", b"THE ANNOUNCED BYTES"
    ticket = await upload_ticket(api, profile, data)
    status, text = await put_bytes(http, ticket, wrong)
    assert status == 400, text  # the local store checks the signed sha256 while receiving
    status, answer = await finalize(api, ticket["upload_id"])
    assert status == 409, answer  # nothing landed: the client may still PUT the right bytes
    # A store that does not check (as moto does not) lets wrong bytes land: finalize refuses.
    blobs = blobs_of(service)
    await blobs.put_bytes(upload_key(ticket["upload_id"]), wrong)
    status, answer = await finalize(api, ticket["upload_id"])
    assert status == 422, answer
    assert answer["error"]["code"] == "content_mismatch"
    assert await artefact_count(api) == 0
    assert (await finalize(api, ticket["upload_id"]))[0] == 404
    # Neither the upload nor a promoted copy (nor a temp file of the refused PUT) is left.
    assert [p for p in (service.config.data_dir / "blobs").rglob("*") if p.is_file()] == []


async def test_uploads_wrong_size_is_refused(
    api: Api, fleet: Fleet, service: app.Service, http: aiohttp.ClientSession
) -> None:
    profile = await fleet.profile("box", FREE_SCHEMA)
    data = b"x" * 1000
    ticket = await upload_ticket(api, profile, data)
    longer = data + b"!"
    status, _ = await put_bytes(http, ticket, longer, **{"Content-Length": str(len(longer))})
    assert status == 413
    status, _ = await put_bytes(http, ticket, data[:-1], **{"Content-Length": str(len(data) - 1)})
    assert status == 400
    await blobs_of(service).put_bytes(upload_key(ticket["upload_id"]), data[:-1])
    status, answer = await finalize(api, ticket["upload_id"])
    assert status == 422, answer
    assert answer["error"]["details"] == {"size": 999, "expected": 1000}
    assert await artefact_count(api) == 0
    assert await blobs_of(service).stat(upload_key(ticket["upload_id"])) is None


async def test_uploads_tampered_signature_is_refused(
    api: Api, fleet: Fleet, http: aiohttp.ClientSession
) -> None:
    profile = await fleet.profile("box", FREE_SCHEMA)
    data = b"signed content"
    ticket = await upload_ticket(api, profile, data)
    other = await upload_ticket(api, profile, b"another upload")
    scheme, netloc, path, query, _ = urlsplit(ticket["url"])
    params = {k: v[0] for k, v in parse_qs(query).items()}

    def url_with(new_path: str = path, **changes: str) -> str:
        return urlunsplit((scheme, netloc, new_path, urlencode({**params, **changes}), ""))

    flipped = ("0" if params["sig"][0] != "0" else "1") + params["sig"][1:]
    other_path = urlsplit(other["url"]).path
    tampered = [
        url_with(sig=flipped),
        url_with(expires=str(int(params["expires"]) + 3600)),
        url_with(size="5"),
        url_with(sha256=sha256_hex(b"other")),
        url_with(other_path),  # this signature on another upload's key
    ]
    for url in tampered:
        async with http.put(url, data=data, headers=ticket["headers"]) as response:
            assert response.status == 403, url
            assert (await response.json())["error"]["code"] == "forbidden"
    content_type = {"Content-Type": "text/plain"}  # the content type is signed too
    status, _ = await put_bytes(http, ticket, data, **content_type)
    assert status == 403
    assert (await finalize(api, ticket["upload_id"]))[0] == 409
    assert await artefact_count(api) == 0


async def test_uploads_expired_upload_url_is_refused(tmp_path: Path) -> None:
    async with custom_service(tmp_path / "data", blobs=BlobConfig(url_expiry_s=1)) as (_, api):
        profile = await Fleet(api).profile("box", FREE_SCHEMA)
        data = b"too late"
        ticket = await upload_ticket(api, profile, data)
        expires_at = datetime.fromisoformat(ticket["expires_at"]).timestamp()
        async with asyncio.timeout(WAIT):
            while time.time() < expires_at + 0.05:  # noqa: ASYNC110 - waiting for the clock
                await asyncio.sleep(0.05)
        status, text = await put_bytes(api.session, ticket, data)
        assert status == 403, text
        assert "expired" in text
        assert (await finalize(api, ticket["upload_id"]))[0] == 409
        assert await artefact_count(api) == 0


async def test_uploads_unknown_or_foreign_upload_id_is_404(
    api: Api, fleet: Fleet, http: aiohttp.ClientSession
) -> None:
    status, answer = await finalize(api, "no-such-upload")
    assert status == 404, answer
    profile = await fleet.profile("box", FREE_SCHEMA)
    ticket = await upload_ticket(api, profile, b"ours")
    assert (await put_bytes(http, ticket, b"ours"))[0] == 200
    org = await api.ok("POST", "/api/v1/organizations", {"slug": "other", "name": "Other"})
    status, answer = await finalize(api.as_token(org["token"]), ticket["upload_id"])
    assert status == 404, answer
    assert (await finalize(api, ticket["upload_id"]))[0] == 201  # still ours to finalize


async def test_uploads_finalize_twice_creates_one_artefact(
    api: Api, fleet: Fleet, http: aiohttp.ClientSession
) -> None:
    profile = await fleet.profile("box", FREE_SCHEMA)
    ticket = await upload_ticket(api, profile, b"once")
    assert (await put_bytes(http, ticket, b"once"))[0] == 200
    first, second = await asyncio.gather(
        finalize(api, ticket["upload_id"]), finalize(api, ticket["upload_id"])
    )
    assert sorted([first[0], second[0]]) in ([201, 404], [201, 409]), (first, second)
    status, answer = await finalize(api, ticket["upload_id"])
    assert status == 404, answer
    (artefact,) = (await api.ok("GET", "/api/v1/config-artefacts"))["items"]
    assert artefact["version"] == 1
    content = await api.session.get(
        f"{api.base}/api/v1/config-artefacts/{artefact['id']}/content",
        headers={"Authorization": f"Bearer {api.token}"},
    )
    async with content:
        assert await content.read() == b"once"


async def test_uploads_upload_url_validates_its_request(api: Api, fleet: Fleet) -> None:
    profile = await fleet.profile("box", FREE_SCHEMA)
    good = {
        "name": "n",
        "profile_id": profile,
        "size": 10,
        "sha256": "a" * 64,
        "content_type": OCTETS,
    }
    cases = [
        ({"size": 0}, 400),
        ({"size": -1}, 400),
        ({"size": 1024**3 + 1}, 413),
        ({"sha256": "a" * 63}, 400),
        ({"sha256": "g" * 64}, 400),
        ({"name": " "}, 400),
        ({"content_type": "text/plain\n"}, 400),
        ({"profile_id": "nope"}, 404),
        ({"content_type": "application/json", "size": 16 * MIB + 1}, 413),
        ({"colour": "red"}, 400),
        ({"size": "10"}, 400),
    ]
    for change, expected in cases:
        status, answer = await api.post("/api/v1/config-artefacts/upload-url", {**good, **change})
        assert status == expected, (change, answer)
    status, answer = await api.post("/api/v1/config-artefacts/upload-url", good)
    assert status == 201, answer
    assert set(answer) == {"upload_id", "url", "method", "headers", "expires_at"}
    assert answer["method"] == "PUT"
    assert answer["headers"] == {"Content-Type": OCTETS, "Content-Length": "10"}
    status, _ = await api.as_token("").post("/api/v1/config-artefacts/upload-url", good)
    assert status == 401


async def test_uploads_finalize_body_is_strict(api: Api, fleet: Fleet) -> None:
    profile = await fleet.profile("box", FREE_SCHEMA)
    ticket = await upload_ticket(api, profile, b"abc")
    bodies = [
        {"upload_id": ticket["upload_id"], "name": "x"},
        {"upload_id": 5},
        {"name": "x", "profile_id": profile, "content": {}, "upload_id": None},
        {"name": "x", "profile_id": profile, "content": {}, "colour": "red"},
    ]
    for body in bodies:
        status, answer = await api.post("/api/v1/config-artefacts", body)
        assert status == 400, (body, answer)
    assert await artefact_count(api) == 0


# -- device downloads ----------------------------------------------------------------------------


async def test_uploads_device_download_only_for_its_own_desired_state(
    api: Api, fleet: Fleet, service: app.Service
) -> None:
    profile = await fleet.profile("box", FREE_SCHEMA)
    device_a, key_a = await fleet.device(profile, "a")
    device_b, key_b = await fleet.device(profile, "b")
    bound = await uploaded_artefact(api, api.session, profile, b"for a")
    unbound = await uploaded_artefact(api, api.session, profile, b"for nobody", name="other")
    await fleet.bind("device", device_a, bound["id"])
    base = service.http_url
    a_path = f"/v1/devices/{device_a}/artefacts/{bound['id']}"
    async with await device_get(api.session, base, a_path, key_a) as response:
        assert response.status == 200
        assert await response.read() == b"for a"
    for key in (key_b, None, "", f"Bearer {key_a}"):  # another device's key, none, malformed
        async with await device_get(api.session, base, a_path, key) as response:
            assert response.status == 401, key
            assert await response.json() == {"error": "Not authorized"}
    b_path = f"/v1/devices/{device_b}/artefacts/{bound['id']}"
    async with await device_get(api.session, base, b_path, key_b) as response:
        assert response.status == 404  # bound to a, not in b's desired state
        assert isinstance((await response.json())["error"], str)  # the device API's flat shape
    unbound_path = f"/v1/devices/{device_a}/artefacts/{unbound['id']}"
    async with await device_get(api.session, base, unbound_path, key_a) as response:
        assert response.status == 404
    await api.ok("POST", f"/api/v1/devices/{device_a}/access-key")
    async with await device_get(api.session, base, a_path, key_a) as response:
        assert response.status == 401  # a rotated key stops working at once


async def test_uploads_device_download_of_inline_artefact(
    api: Api, fleet: Fleet, service: app.Service
) -> None:
    profile = await fleet.profile()
    device_id, key = await fleet.device(profile)
    artefact = await fleet.artefact(profile, {"setpoint": 20})
    await fleet.bind("device", device_id, artefact["id"])
    path = f"/v1/devices/{device_id}/artefacts/{artefact['id']}"
    async with await device_get(api.session, service.http_url, path, key) as response:
        assert response.status == 200
        assert response.headers["Content-Type"] == "application/json"
        assert await response.read() == b'{"setpoint":20}'


# -- lifecycle -----------------------------------------------------------------------------------


async def test_uploads_orphaned_upload_is_cleaned_up_after_expiry(tmp_path: Path) -> None:
    fast = UploadConfig(finalize_grace_s=0, cleanup_interval_s=0.05)
    async with custom_service(
        tmp_path / "data", blobs=BlobConfig(url_expiry_s=1), uploads=fast
    ) as (service, api):
        profile = await Fleet(api).profile("box", FREE_SCHEMA)
        data = b"never finalized"
        ticket = await upload_ticket(api, profile, data)
        assert (await put_bytes(api.session, ticket, data))[0] == 200
        blobs, key = blobs_of(service), upload_key(ticket["upload_id"])
        assert await blobs.stat(key) is not None
        async with asyncio.timeout(WAIT):
            while await blobs.stat(key) is not None:  # noqa: ASYNC110 - the loop's effect
                await asyncio.sleep(0.05)
        rows = await service.store.fetchall("SELECT id FROM uploads")
        assert rows == []
        assert (await finalize(api, ticket["upload_id"]))[0] == 404
        assert await artefact_count(api) == 0


async def test_uploads_pending_upload_survives_a_restart(tmp_path: Path) -> None:
    data_dir, payload = tmp_path / "data", b"across a restart"
    async with custom_service(data_dir) as (_, api):
        profile = await Fleet(api).profile("box", FREE_SCHEMA)
        ticket = await upload_ticket(api, profile, payload)
    async with custom_service(data_dir) as (_, api):
        # The signing key persisted with the data: the URL still works after the restart (when
        # the port differs, the same path and query on the new base).
        parts = urlsplit(ticket["url"])
        moved = {**ticket, "url": api.base + parts.path + "?" + parts.query}
        assert (await put_bytes(api.session, moved, payload))[0] == 200
        status, created = await finalize(api, ticket["upload_id"])
        assert status == 201, created


async def test_uploads_routes_are_documented(api: Api) -> None:
    document = await api.ok("GET", "/api/v1/openapi.json")
    paths = document["paths"]
    upload = paths["/api/v1/config-artefacts/upload-url"]["post"]
    assert {"bearer": []} in upload["security"]
    assert "requestBody" in upload
    for method in ("get", "put"):
        blob = paths["/blobs/{key}"][method]
        assert "security" not in blob
        assert blob["parameters"][0]["name"] == "key"
    device = paths["/v1/devices/{device_id}/artefacts/{artefact_id}"]["get"]
    assert device["security"] == [{"deviceKey": []}]  # the bare access key
    assert {"302", "401", "404"} <= set(device["responses"])


@pytest.mark.parametrize("path", ["/blobs/uploads/x", "/blobs/artefacts/x"])
async def test_uploads_blob_urls_need_no_token_but_a_signature(
    service: app.Service, http: aiohttp.ClientSession, path: str
) -> None:
    async with http.get(service.http_url + path) as response:
        assert response.status == 403  # reached without a token, refused for the signature


async def test_uploads_deleting_a_blob_artefact_deletes_its_bytes(
    service: app.Service, api: Api, http: aiohttp.ClientSession, fleet: Fleet
) -> None:
    profile = await fleet.profile("blobby", FREE_SCHEMA)
    created = await uploaded_artefact(api, http, profile, b"\x00" * 70_000, content_type=OCTETS)
    store = blobs_of(service)
    assert await store.stat(artefact_key(created["id"])) is not None
    await api.ok("DELETE", f"/api/v1/config-artefacts/{created['id']}", status=204)
    assert await store.stat(artefact_key(created["id"])) is None
