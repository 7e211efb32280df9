"""An upload URL stores nothing once its upload was finalized (local blob store): a replayed PUT
is refused and leaves no blob behind, also when finalize runs while the replay's bytes arrive."""

import asyncio
from collections.abc import AsyncIterator

import aiohttp

from conftest import WAIT, Api, Fleet
from fleetstate import app
from fleetstate.service.uploads import upload_key
from test_uploads import FREE_SCHEMA, blobs_of, finalize, put_bytes, upload_ticket

DATA = b'{"model": "v1", "threshold": 0.5}'


async def content_of(api: Api, artefact_id: str) -> bytes:
    async with api.session.get(
        f"{api.base}/api/v1/config-artefacts/{artefact_id}/content",
        headers={"Authorization": f"Bearer {api.token}"},
    ) as answer:
        assert answer.status == 200
        return await answer.read()


async def test_upload_replay_after_finalize_stores_nothing(
    api: Api, fleet: Fleet, service: app.Service, http: aiohttp.ClientSession
) -> None:
    profile = await fleet.profile("box", FREE_SCHEMA)
    ticket = await upload_ticket(api, profile, DATA)
    assert (await put_bytes(http, ticket, DATA))[0] == 200
    assert (await put_bytes(http, ticket, DATA))[0] == 200  # pending: a retry may resend
    status, artefact = await finalize(api, ticket["upload_id"])
    assert status == 201, artefact

    status, text = await put_bytes(http, ticket, DATA)
    assert status == 404, text
    assert '"not_found"' in text
    assert await blobs_of(service).stat(upload_key(ticket["upload_id"])) is None
    assert await content_of(api, artefact["id"]) == DATA
    assert (await finalize(api, ticket["upload_id"]))[0] == 404


async def test_upload_replay_during_finalize_leaves_no_blob(
    api: Api, fleet: Fleet, service: app.Service, http: aiohttp.ClientSession
) -> None:
    profile = await fleet.profile("box", FREE_SCHEMA)
    ticket = await upload_ticket(api, profile, DATA)
    assert (await put_bytes(http, ticket, DATA))[0] == 200
    halfway, resume = asyncio.Event(), asyncio.Event()

    async def slowly() -> AsyncIterator[bytes]:
        yield DATA[:10]
        halfway.set()
        await resume.wait()
        yield DATA[10:]

    async with asyncio.timeout(WAIT):
        replay = asyncio.create_task(put_bytes(http, ticket, slowly()), name="replay")
        await halfway.wait()
        status, artefact = await finalize(api, ticket["upload_id"])
        assert status == 201, artefact
        resume.set()
        status, text = await replay
    assert status == 404, text
    assert await blobs_of(service).stat(upload_key(ticket["upload_id"])) is None
    assert await content_of(api, artefact["id"]) == DATA
