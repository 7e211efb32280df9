"""`GET /api/v1/events`: server-sent events, limited to the token's organization."""

import asyncio
import json
import signal
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from conftest import ADMIN_TOKEN, WAIT, Api, DeviceFactory, Fleet, eventually, make_config
from fleetstate import app
from fleetstate.app import Service
from fleetstate.shutdown import InFlight
from test_serve import TOKEN as SERVE_TOKEN
from test_serve import serve


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


# -- slow clients and shutdown ---------------------------------------------------------------------


async def stalled_client(
    base: str, token: str
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A client that asks for the event stream and then never reads another byte."""
    host, port = base.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    request = f"GET /api/v1/events HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\n"
    writer.write(request.encode() + b"\r\n")
    await writer.drain()
    return reader, writer


async def test_events_a_stalled_client_is_dropped_and_others_keep_streaming(
    api: Api, service: Service
) -> None:
    hub = service.gateway.events
    org = (await api.ok("GET", "/api/v1/organizations/current"))["id"]
    reader, writer = await stalled_client(api.base, api.token)
    try:
        async with stream(api) as healthy:
            await eventually(lambda: asyncio.sleep(0, hub.subscriber_count() == 2))
            big = {"blob": "x" * 100_000}
            # Each event is 100 KB: the stalled socket's buffers fill after some megabytes, then
            # its queue; the healthy stream reads each one (bounded: 2,000 events at most).
            async with asyncio.timeout(60):
                for n in range(2000):
                    hub.publish(org, "telemetry", {"n": n, **big})
                    assert (await healthy.next("telemetry"))["n"] == n
                    if hub.dropped_total:
                        break
            assert hub.dropped_total == 1
            assert hub.subscriber_count() == 1
            hub.publish(org, "telemetry", {"n": "after"})
            assert (await healthy.next("telemetry"))["n"] == "after"
        # The server aborted the stalled connection: what was buffered, then the end.
        async with asyncio.timeout(WAIT):
            while await reader.read(1 << 20):
                pass
    finally:
        writer.close()


async def test_events_streams_end_at_once_on_shutdown(tmp_path: Path) -> None:
    async with app.start(make_config(tmp_path / "data")) as running, aiohttp.ClientSession() as s:
        api = Api(s, running.http_url, ADMIN_TOKEN)
        async with stream(api) as events:
            started = time.monotonic()
            running.gateway.events.close()
            async with asyncio.timeout(WAIT):
                assert (await events.response.content.read()).strip() == b""
            assert events.response.content.at_eof()
            assert time.monotonic() - started < 1.0
        # A stream opened after close ends at once too.
        async with stream(api) as late, asyncio.timeout(WAIT):
            assert (await late.response.content.read()).strip() == b""


async def test_events_sigterm_with_an_open_stream_returns_quickly(tmp_path: Path) -> None:
    async with serve(tmp_path / "data") as running, aiohttp.ClientSession() as session:
        api = Api(session, running.http_url, SERVE_TOKEN)
        async with stream(api):
            started = time.monotonic()
            running.proc.send_signal(signal.SIGTERM)
            async with asyncio.timeout(WAIT):
                code = await running.proc.wait()
            elapsed = time.monotonic() - started
    assert code == 0
    assert elapsed < 1.5, elapsed  # generous: the stream used to hold it for its 2 s grace


async def test_events_shutdown_grace_cancels_work_still_running(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """What `app.start` does before the broker closes: in-flight work gets the grace, then it is
    cancelled with a log line; quick work and the tasks kept (the store writer) are untouched."""
    quick_done = asyncio.Event()

    async def quick() -> None:
        await asyncio.sleep(0.05)
        quick_done.set()

    async with InFlight() as tasks:
        stuck = tasks.create_task(asyncio.sleep(3600), name="publish-to:stuck")
        kept = tasks.create_task(asyncio.sleep(0.3), name="store-writer")
        tasks.create_task(quick(), name="quick")
        started = time.monotonic()
        await tasks.settle(0.2, {kept})
        assert time.monotonic() - started < 1.0
        assert stuck.cancelled()
        assert quick_done.is_set()
        assert not kept.done()
    assert "publish-to:stuck" in caplog.text
    assert "0.2 s grace" in caplog.text
