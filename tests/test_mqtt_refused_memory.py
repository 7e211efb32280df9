"""What a refused MQTT connection leaves in memory: nothing that waits for the cyclic collector.

The service raises the collector's thresholds (`app.GC_THRESHOLDS`), so anything a closed
connection leaves in a reference cycle piles up for thousands of connections before it is
collected, and the allocator keeps that high-water mark: 10,000 refused connections grew the
service's RSS by 5 MiB that way. Here the collector is off while connections are refused, and
the endpoint's side of each must be gone by reference counting alone.

The `service` fixture runs the service in this process, so its transports are found among this
process's objects; the endpoint's side is the one whose local port is the MQTT port.
"""

import asyncio
import gc
from collections.abc import Iterator

import pytest

from conftest import Api
from fleetstate.app import Service
from mqtt_raw import CONNACK, RawClient, connect

ATTEMPTS = 60


@pytest.fixture
def no_cyclic_gc() -> Iterator[None]:
    """The cyclic collector off (after one full pass), so only reference counting frees."""
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def endpoint_transports(port: int) -> list[asyncio.BaseTransport]:
    """The endpoint's socket transports still in memory, open or closed."""
    return [
        obj
        for obj in gc.get_objects()
        if isinstance(obj, asyncio.Transport)
        and (sockname := obj.get_extra_info("sockname")) is not None
        and sockname[1] == port
    ]


async def _refused(port: int, n: int, kind: str) -> None:
    raw = await RawClient.open(port, f"127.0.2.{n % 250 + 1}")
    try:
        if kind == "wrong_key":
            raw.send(connect(f"ghost-{n}", f"ghost-{n}", "wrong"))
            answer = await raw.packet()
            assert answer is not None, "closed without a CONNACK"
            assert (answer.kind, answer.reason != 0) == (CONNACK, True), answer
            await raw.until_closed()
    finally:
        await raw.close()


@pytest.mark.parametrize("kind", ["wrong_key", "closed_before_connect"])
@pytest.mark.usefixtures("no_cyclic_gc")
async def test_refused_connections_are_freed_without_the_cyclic_collector(
    service: Service, api: Api, kind: str
) -> None:
    port = service.mqtt_port
    for start in range(0, ATTEMPTS, 20):
        await asyncio.gather(*(_refused(port, n, kind) for n in range(start, start + 20)))

    async def left() -> int:
        """Counted, not listed: a list kept between two looks would keep them alive."""
        for _ in range(50):  # the endpoint learns of each close a loop turn or two later
            found = sum(t.is_closing() for t in endpoint_transports(port))
            if not found:
                break
            await asyncio.sleep(0.05)
        return found

    found = await left()
    assert not found, f"{found} of {ATTEMPTS} closed transports wait for the collector"
    assert (await api.get("/healthz"))[0] == 200
