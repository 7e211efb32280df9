"""`GET /api/v1/events`: server-sent events, limited to the token's organization."""

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from conftest import WAIT, Api, DeviceFactory, Fleet


class Stream:
    def __init__(self, response: Any) -> None:
        self.response = response

    async def next(self, kind: str, timeout: float = WAIT) -> dict[str, Any]:
        """The data of the next event of this kind."""
        event, data = None, None
        async with asyncio.timeout(timeout):
            while True:
                line = (await self.response.content.readline()).decode().rstrip("\n")
                if line.startswith("event: "):
                    event = line[7:]
                elif line.startswith("data: "):
                    data = json.loads(line[6:])
                elif line == "" and event is not None:
                    if event == kind:
                        return dict(data or {})
                    event, data = None, None


@asynccontextmanager
async def stream(api: Api, query: str = "") -> AsyncIterator[Stream]:
    headers = {"Authorization": f"Bearer {api.token}"}
    async with api.session.get(f"{api.base}/api/v1/events{query}", headers=headers) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/event-stream")
        assert (await response.content.readline()).startswith(b": connected")
        yield Stream(response)


async def test_events_presence_and_reports_arrive_live(
    api: Api, fleet: Fleet, connect: DeviceFactory
) -> None:
    device_id, key = await fleet.device(await fleet.profile())
    async with stream(api) as events:
        async with connect(device_id, key) as device:
            online = await events.next("presence")
            assert (online["device_id"], online["online"]) == (device_id, True)
            doc = await device.desired()
            await device.publish("reported", {"version": doc["version"], "status": "ACCEPTED"})
            report = await events.next("report")
            assert (report["device_id"], report["status"], report["current"]) == (
                device_id,
                "ACCEPTED",
                True,
            )
        offline = await events.next("presence")
        assert (offline["device_id"], offline["online"]) == (device_id, False)


async def test_events_are_limited_to_the_tokens_organization(
    api: Api, fleet: Fleet, connect: DeviceFactory
) -> None:
    org = await api.ok(
        "POST", "/api/v1/organizations", {"slug": "acme", "name": "Acme"}, status=201
    )
    device_id, key = await fleet.device(await fleet.profile())
    async with stream(api.as_token(org["token"])) as foreign, stream(api) as own:
        async with connect(device_id, key):
            await own.next("presence")
        try:
            got = await foreign.next("presence", timeout=0.5)
        except TimeoutError:
            got = None
        assert got is None


async def test_events_need_a_token(api: Api) -> None:
    status, _ = await api.as_token("").get("/api/v1/events")
    assert status == 401
