"""The upload-URL flow with the whole service configured for the S3 backend, against a real S3 API
server: moto's server mode as a subprocess on a free loopback port.

moto accepts bodies that differ from the signed length and checksum (a real S3 refuses them), so
here wrong bytes do land and the service's own finalize checks are what refuses them. moto does
not check the expiry of presigned URLs either: expired and tampered URLs are tested on the local
backend (test_uploads.py).
"""

import asyncio
import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp
import pytest

from conftest import WAIT, Api, DeviceFactory, Fleet, make_config
from fleetstate import app
from fleetstate.blobs import S3BlobStore
from fleetstate.config import BlobConfig, UploadConfig
from fleetstate.service.uploads import artefact_key, upload_key
from test_uploads import (
    FREE_SCHEMA,
    artefact_count,
    blobs_of,
    custom_service,
    device_get,
    finalize,
    large_roundtrip,
    put_bytes,
    sha256_hex,
    upload_ticket,
    uploaded_artefact,
)


def s3_config(moto_url: str, **options: Any) -> BlobConfig:
    """A fresh bucket per service: the moto server is shared by the whole module."""
    return BlobConfig(
        backend="s3",
        endpoint_url=moto_url,
        bucket=f"fleetstate-{uuid.uuid4().hex[:12]}",
        access_key_id="testing",
        secret_access_key="testing",
        create_bucket=True,
        **options,
    )


@pytest.fixture
async def service(tmp_path: Path, moto_url: str) -> AsyncIterator[app.Service]:
    """Overrides conftest's `service`: the same real service, its blobs in S3 (moto)."""
    async with app.start(make_config(tmp_path / "data", blobs=s3_config(moto_url))) as running:
        yield running


def s3_of(service: app.Service) -> S3BlobStore:
    blobs = blobs_of(service)
    assert isinstance(blobs, S3BlobStore)
    return blobs


# -- the full flow -------------------------------------------------------------------------------


async def test_uploads_s3_large_artefact_roundtrips_without_memory_growth(
    api: Api, fleet: Fleet, connect: DeviceFactory, service: app.Service, tmp_path: Path
) -> None:
    created = await large_roundtrip(api, fleet, connect, tmp_path, service.http_url)
    s3 = s3_of(service)
    async with asyncio.timeout(WAIT):
        info = await s3.stat(artefact_key(created["id"]))
        assert info is not None
        assert info.size == created["size"]
        listed = await s3.client.list_objects_v2(Bucket=s3.bucket, Prefix="uploads/")
        assert listed.get("KeyCount", 0) == 0


async def test_uploads_s3_json_artefact_is_validated_and_redirected(
    api: Api, fleet: Fleet, http: aiohttp.ClientSession
) -> None:
    profile = await fleet.profile()  # the thermostat schema: {"setpoint": 5..30}
    data = b'{"setpoint": 19}'
    created = await uploaded_artefact(api, http, profile, data, content_type="application/json")
    assert created["hash"] == f"sha256:{sha256_hex(data)}"
    url = f"{api.base}/api/v1/config-artefacts/{created['id']}/content"
    headers = {"Authorization": f"Bearer {api.token}"}
    async with http.get(url, headers=headers, allow_redirects=False) as response:
        assert response.status == 302
        location = response.headers["Location"]
    query = parse_qs(urlsplit(location).query)
    assert "X-Amz-Signature" in query
    assert "X-Amz-Expires" in query  # a fresh presigned URL, never a stored one
    async with http.get(url, headers=headers) as response:  # a client following the redirect
        assert response.status == 200
        assert await response.read() == data
    bad = b'{"setpoint": "warm"}'
    ticket = await upload_ticket(api, profile, bad, content_type="application/json")
    assert (await put_bytes(http, ticket, bad))[0] == 200
    status, answer = await finalize(api, ticket["upload_id"])
    assert status == 422, answer
    assert answer["error"]["details"][0]["path"] == "$.setpoint"
    assert await artefact_count(api) == 1


# -- refusals: nothing created -------------------------------------------------------------------


async def test_uploads_s3_wrong_hash_is_refused(
    api: Api, fleet: Fleet, service: app.Service, http: aiohttp.ClientSession
) -> None:
    profile = await fleet.profile("box", FREE_SCHEMA)
    data, wrong = os.urandom(100_000), os.urandom(100_000)
    ticket = await upload_ticket(api, profile, data)
    status, text = await put_bytes(http, ticket, wrong)
    assert status == 200, text  # moto lets it land; a real S3 would refuse the checksum here
    status, answer = await finalize(api, ticket["upload_id"])
    assert status == 422, answer
    assert answer["error"]["code"] == "content_mismatch"
    assert await artefact_count(api) == 0
    assert (await finalize(api, ticket["upload_id"]))[0] == 404
    listed = await s3_of(service).client.list_objects_v2(Bucket=s3_of(service).bucket)
    assert listed.get("KeyCount", 0) == 0  # neither the upload nor a promoted copy is left


async def test_uploads_s3_wrong_size_is_refused(
    api: Api, fleet: Fleet, service: app.Service, http: aiohttp.ClientSession
) -> None:
    profile = await fleet.profile("box", FREE_SCHEMA)
    data = b"y" * 4096
    ticket = await upload_ticket(api, profile, data)
    short = data[:100]
    status, text = await put_bytes(http, ticket, short, **{"Content-Length": str(len(short))})
    assert status == 200, text
    status, answer = await finalize(api, ticket["upload_id"])
    assert status == 422, answer
    assert answer["error"]["details"] == {"size": 100, "expected": 4096}
    assert await artefact_count(api) == 0
    assert await s3_of(service).stat(upload_key(ticket["upload_id"])) is None


async def test_uploads_s3_finalize_before_upload_twice_and_unknown(
    api: Api, fleet: Fleet, http: aiohttp.ClientSession
) -> None:
    profile = await fleet.profile("box", FREE_SCHEMA)
    ticket = await upload_ticket(api, profile, b"bytes")
    status, answer = await finalize(api, ticket["upload_id"])
    assert status == 409, answer  # nothing uploaded yet; the upload stays usable
    assert (await put_bytes(http, ticket, b"bytes"))[0] == 200
    assert (await finalize(api, ticket["upload_id"]))[0] == 201
    assert (await finalize(api, ticket["upload_id"]))[0] == 404
    assert (await finalize(api, "unknown"))[0] == 404
    assert await artefact_count(api) == 1


# -- device downloads ----------------------------------------------------------------------------


async def test_uploads_s3_device_download_only_for_its_own_desired_state(
    api: Api, fleet: Fleet, service: app.Service, http: aiohttp.ClientSession
) -> None:
    profile = await fleet.profile("box", FREE_SCHEMA)
    device_a, key_a = await fleet.device(profile, "a")
    device_b, key_b = await fleet.device(profile, "b")
    bound = await uploaded_artefact(api, http, profile, b"for a")
    unbound = await uploaded_artefact(api, http, profile, b"for nobody", name="other")
    await fleet.bind("device", device_a, bound["id"])
    base = service.http_url
    a_path = f"/v1/devices/{device_a}/artefacts/{bound['id']}"
    async with await device_get(http, base, a_path, key_a) as response:
        assert response.status == 302
        location = response.headers["Location"]
    async with http.get(location) as response:
        assert await response.read() == b"for a"
    async with await device_get(http, base, a_path, key_b) as response:
        assert response.status == 401
        assert await response.json() == {"error": "Not authorized"}
    b_path = f"/v1/devices/{device_b}/artefacts/{bound['id']}"
    async with await device_get(http, base, b_path, key_b) as response:
        assert response.status == 404
    unbound_path = f"/v1/devices/{device_a}/artefacts/{unbound['id']}"
    async with await device_get(http, base, unbound_path, key_a) as response:
        assert response.status == 404


# -- lifecycle -----------------------------------------------------------------------------------


async def test_uploads_s3_orphaned_upload_is_cleaned_up_after_expiry(
    tmp_path: Path, moto_url: str
) -> None:
    fast = UploadConfig(finalize_grace_s=0, cleanup_interval_s=0.05)
    blobs = s3_config(moto_url, url_expiry_s=1)
    async with custom_service(tmp_path / "data", blobs=blobs, uploads=fast) as (service, api):
        profile = await Fleet(api).profile("box", FREE_SCHEMA)
        data = b"never finalized"
        ticket = await upload_ticket(api, profile, data)
        assert (await put_bytes(api.session, ticket, data))[0] == 200
        s3, key = s3_of(service), upload_key(ticket["upload_id"])
        async with asyncio.timeout(WAIT):
            while await s3.stat(key) is not None:  # noqa: ASYNC110 - the loop's effect
                await asyncio.sleep(0.05)
        assert await service.store.fetchall("SELECT id FROM uploads") == []
        assert (await finalize(api, ticket["upload_id"]))[0] == 404
        assert await artefact_count(api) == 0
