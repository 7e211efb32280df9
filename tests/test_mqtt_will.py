"""Last Will (SPEC section 10, presence): a device's Will may only be `{"online": false}` on its
own `devices/{id}/status`; it reaches the service as a status message when the connection ends
without a normal DISCONNECT, never after a clean one or a takeover. A birth message
`{"online": true}` gets the device its pending commands."""

import asyncio
import contextlib
import json
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

import mqtt_raw
from conftest import ADMIN_TOKEN, WAIT, Api, Fleet, eventually, make_config
from conftest_mqtt import PahoLink
from fleetstate import app
from fleetstate.app import Service
from fleetstate.bus.embedded import codec
from fleetstate.bus.embedded.packets import Will
from fleetstate.config import BrokerLimits
from test_metrics import scrape, value

OFFLINE = b'{"online": false}'
LEVELS = [codec.MQTT_311, codec.MQTT_5]


def connect_with_will(
    device_id: str,
    key: str,
    level: int,
    topic: str | None = None,
    qos: int = 0,
    keep_alive: int = 60,
) -> bytes:
    will = Will(topic=topic or f"devices/{device_id}/status", payload=OFFLINE, qos=qos, retain=True)
    return codec.encode_connect(
        codec.Connect(
            level=level,
            client_id=device_id,
            clean_start=True,
            keep_alive=keep_alive,
            username=device_id,
            password=key.encode(),
            will=will,
        )
    )


@contextlib.asynccontextmanager
async def own_service(tmp_path: Path, limits: BrokerLimits) -> AsyncIterator[tuple[Service, Api]]:
    """A service with its own `[broker]` limits, and an operator's API client for it."""
    async with (
        app.start(make_config(tmp_path / "data", broker=limits)) as running,
        aiohttp.ClientSession() as session,
    ):
        yield running, Api(session, running.http_url, ADMIN_TOKEN)


async def with_will(service: Service, device_id: str, key: str, level: int) -> mqtt_raw.RawClient:
    client = await mqtt_raw.RawClient.open(service.mqtt_port)
    client.send(connect_with_will(device_id, key, level))
    assert (await client.connack()).reason == 0
    return client


async def status_messages(api: Api) -> float:
    return value(await scrape(api), "fleetstate_mqtt_messages_in_total", kind="status")


async def wills_seen(api: Api, count: int) -> None:
    """Wait until the service has had `count` status messages; then it must have no more."""

    async def reached() -> bool:
        return await status_messages(api) >= count

    await eventually(reached)
    assert await status_messages(api) == count


async def online(api: Api, device_id: str) -> bool:
    return bool((await api.ok("GET", f"/api/v1/devices/{device_id}"))["online"])


@pytest.mark.parametrize(("level", "reason"), [(codec.MQTT_311, 5), (codec.MQTT_5, 0x90)])
async def test_mqtt_will_on_another_topic_is_refused_at_connect(
    service: Service, fleet: Fleet, level: int, reason: int
) -> None:
    device_id, key = await fleet.device(await fleet.profile())
    for topic in (f"devices/{device_id}/reported", "devices/other/status", "alarm"):
        client = await mqtt_raw.RawClient.open(service.mqtt_port)
        client.send(connect_with_will(device_id, key, level, topic))
        assert (await client.connack()).reason == reason
        assert await client.until_closed() == []


async def test_mqtt_will_qos2_is_refused_over_mqtt5(service: Service, fleet: Fleet) -> None:
    device_id, key = await fleet.device(await fleet.profile())
    client = await mqtt_raw.RawClient.open(service.mqtt_port)
    client.send(connect_with_will(device_id, key, codec.MQTT_5, qos=2))
    assert (await client.connack()).reason == 0x9B  # over the Maximum QoS 1 we announce


@pytest.mark.parametrize("level", LEVELS)
async def test_mqtt_will_reaches_the_service_when_the_socket_drops(
    api: Api, service: Service, fleet: Fleet, level: int
) -> None:
    device_id, key = await fleet.device(await fleet.profile())
    client = await with_will(service, device_id, key, level)
    await eventually(lambda: online(api, device_id))
    client.writer.transport.abort()
    await wills_seen(api, 1)
    assert not await online(api, device_id)


@pytest.mark.parametrize("level", LEVELS)
async def test_mqtt_will_is_discarded_by_a_normal_disconnect(
    api: Api, service: Service, fleet: Fleet, level: int
) -> None:
    device_id, key = await fleet.device(await fleet.profile())
    clean = await with_will(service, device_id, key, level)
    clean.send(mqtt_raw.DISCONNECT_PACKET)
    assert await clean.until_closed() == []
    # A second connection's Will marks the point by which the first one's would have come.
    dropped = await with_will(service, device_id, key, level)
    dropped.writer.transport.abort()
    await wills_seen(api, 1)


async def test_mqtt_will_comes_with_mqtt5_disconnect_with_will(
    api: Api, service: Service, fleet: Fleet
) -> None:
    device_id, key = await fleet.device(await fleet.profile())
    client = await with_will(service, device_id, key, codec.MQTT_5)
    client.send(codec.encode_disconnect(0x04))  # "disconnect with Will Message"
    assert await client.until_closed() == []
    await wills_seen(api, 1)


@pytest.mark.parametrize("level", LEVELS)
async def test_mqtt_will_is_not_published_on_a_takeover(
    api: Api, service: Service, fleet: Fleet, level: int
) -> None:
    device_id, key = await fleet.device(await fleet.profile())
    old = await with_will(service, device_id, key, level)
    new = await with_will(service, device_id, key, level)
    await old.until_closed()
    assert await online(api, device_id)
    new.writer.transport.abort()
    await wills_seen(api, 1)  # the new connection's, not the old one's


async def test_mqtt_will_keep_alive_timeout_publishes_it(tmp_path: Path) -> None:
    async with own_service(tmp_path, BrokerLimits()) as (running, api):
        fleet = Fleet(api)
        device_id, key = await fleet.device(await fleet.profile())
        client = await mqtt_raw.RawClient.open(running.mqtt_port)
        client.send(connect_with_will(device_id, key, codec.MQTT_311, qos=1, keep_alive=1))
        assert (await client.connack()).reason == 0
        await client.until_closed()  # silent past 1.5 x its keep-alive
        await wills_seen(api, 1)


async def test_mqtt_will_paho_client_killed_reaches_the_service(
    api: Api, service: Service, fleet: Fleet
) -> None:
    device_id, key = await fleet.device(await fleet.profile())
    link = PahoLink(service.mqtt_port, device_id, key, version=5)
    link.client.will_set(f"devices/{device_id}/status", OFFLINE, qos=1, retain=True)
    await link.open(subscribe=())
    try:
        await link.publish("status", {"online": True})
        sock = link.client.socket()
        assert isinstance(sock, socket.socket)
        sock.shutdown(socket.SHUT_RDWR)  # the device dies: no DISCONNECT
        await wills_seen(api, 2)  # its birth message, then its Will
        assert not await online(api, device_id)
    finally:
        await link.close()


async def test_mqtt_will_birth_message_delivers_pending_commands(tmp_path: Path) -> None:
    async with own_service(tmp_path, BrokerLimits(puback_timeout_s=0.5)) as (running, api):
        fleet = Fleet(api)
        device_id, key = await fleet.device(await fleet.profile())
        client = await with_will(running, device_id, key, codec.MQTT_311)
        client.send(mqtt_raw.subscribe(1, [(f"devices/{device_id}/commands", 1)]))
        suback = await client.packet()
        assert suback is not None
        assert suback.kind == mqtt_raw.SUBACK
        path = f"/api/v1/devices/{device_id}/commands"
        sent = await api.ok("POST", path, {"type": "REBOOT"}, status=201)
        first = await command_publish(client)
        assert first["id"] == sent["id"]  # never acknowledged: it stays pending
        client.send(mqtt_raw.publish(f"devices/{device_id}/status", b'{"online": true}'))
        again = await command_publish(client)
        assert again["id"] == sent["id"]
        await client.close()


async def command_publish(client: mqtt_raw.RawClient) -> dict[str, Any]:
    """The next command PUBLISH (QoS 1, 3.1.1), decoded, not acknowledged."""
    async with asyncio.timeout(WAIT):
        while True:
            got = await client.packet()
            assert got is not None
            if got.kind == mqtt_raw.PUBLISH:
                size = int.from_bytes(got.body[:2], "big")
                return dict(json.loads(got.body[2 + size + 2 :]))
