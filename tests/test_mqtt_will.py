"""Last Will (SPEC section 10, presence): a device's Will may only be `{"online": false}` on its
own `devices/{id}/status`; it reaches the service as a status message when the connection ends
without a normal DISCONNECT, never after a clean one or a takeover. An MQTT 5 Will Delay
Interval holds it back until the delay passed or the session ended, and a device back within it
never has its Will published. A birth message `{"online": true}` gets the device its pending
commands."""

import asyncio
import contextlib
import json
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

import mqtt_raw
from conftest import ADMIN_TOKEN, WAIT, Api, Fleet, eventually, make_config
from conftest_mqtt import PahoLink
from fleetstate import app
from fleetstate.app import Service
from fleetstate.bus.embedded import codec
from fleetstate.bus.embedded.codec import Prop, Will
from fleetstate.bus.embedded.endpoint import SWEEP_S
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
    delay: int | None = None,
    session_expiry: int = 0,
) -> bytes:
    """CONNECT with a Will; MQTT 5 may give it a Will Delay Interval and the session an expiry."""
    will = Will(
        topic=topic or f"devices/{device_id}/status",
        payload=OFFLINE,
        qos=qos,
        retain=True,
        properties=codec.Properties(values={} if delay is None else {Prop.WILL_DELAY: delay}),
    )
    return codec.encode_connect(
        codec.Connect(
            level=level,
            client_id=device_id,
            clean_start=True,
            keep_alive=keep_alive,
            username=device_id,
            password=key.encode(),
            will=will,
            properties=codec.Properties(values={Prop.SESSION_EXPIRY: session_expiry}),
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


async def offline(api: Api, device_id: str) -> bool:
    return not await online(api, device_id)


async def dropped(api: Api, device_id: str) -> None:
    """Wait until the service recorded the connection's end: an undelayed Will is in by then
    (the endpoint hands it over right after the disconnect), so none seen means none sent."""
    await eventually(lambda: offline(api, device_id))


@contextlib.asynccontextmanager
async def paho_with_will(
    port: int, device_id: str, key: str, *, delay: int, session_expiry: int
) -> AsyncIterator[PahoLink]:
    """An MQTT 5 paho device whose Will has a Will Delay Interval of `delay` seconds."""
    link = PahoLink(port, device_id, key, version=5, session_expiry=session_expiry)
    properties = Properties(PacketTypes.WILLMESSAGE)
    properties.WillDelayInterval = delay
    topic = f"devices/{device_id}/status"
    link.client.will_set(topic, OFFLINE, qos=1, retain=True, properties=properties)
    await link.open(subscribe=())
    try:
        yield link
    finally:
        await link.close()


def kill(link: PahoLink) -> None:
    """The device dies: its socket goes, no DISCONNECT."""
    sock = link.client.socket()
    assert isinstance(sock, socket.socket)
    sock.shutdown(socket.SHUT_RDWR)


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


# -- MQTT 5 Will Delay Interval ----------------------------------------------------------------


async def test_mqtt_will_waits_for_its_will_delay(api: Api, service: Service, fleet: Fleet) -> None:
    device_id, key = await fleet.device(await fleet.profile())
    port = service.mqtt_port
    async with paho_with_will(port, device_id, key, delay=2, session_expiry=60) as link:
        await eventually(lambda: online(api, device_id))
        kill(link)
        await dropped(api, device_id)  # presence follows the connection, not the Will
        assert await status_messages(api) == 0
        await wills_seen(api, 1)
        assert not await online(api, device_id)


@pytest.mark.parametrize("clean_start", [True, False])
async def test_mqtt_will_is_not_published_when_the_device_is_back_within_its_delay(
    api: Api, service: Service, fleet: Fleet, clean_start: bool
) -> None:
    device_id, key = await fleet.device(await fleet.profile())
    port = service.mqtt_port
    async with paho_with_will(port, device_id, key, delay=2, session_expiry=60) as first:
        await eventually(lambda: online(api, device_id))
        kill(first)
        await dropped(api, device_id)
    again = PahoLink(port, device_id, key, version=5, clean=clean_start, session_expiry=60)
    again.client.will_set(f"devices/{device_id}/status", OFFLINE, qos=1, retain=True)
    await again.open(subscribe=())
    try:
        await eventually(lambda: online(api, device_id))
        # Nothing to wait on for a message that must not come: past the first Will's delay and
        # the sweep that would have sent it.
        await asyncio.sleep(2 + 2 * SWEEP_S)
        assert await status_messages(api) == 0
        assert await online(api, device_id)
        kill(again)  # the second connection's Will (no delay) still comes: Wills are observed
        await wills_seen(api, 1)
    finally:
        await again.close()


async def test_mqtt_will_comes_at_the_session_end_before_its_delay(
    api: Api, service: Service, fleet: Fleet
) -> None:
    device_id, key = await fleet.device(await fleet.profile())
    port = service.mqtt_port
    async with paho_with_will(port, device_id, key, delay=3600, session_expiry=2) as link:
        await eventually(lambda: online(api, device_id))
        kill(link)
        await dropped(api, device_id)
        assert await status_messages(api) == 0  # the session outlives the connection by 2 s
        await wills_seen(api, 1)  # within WAIT, long before the hour's delay


async def test_mqtt_will_of_a_session_ending_with_its_connection_is_not_delayed(
    api: Api, service: Service, fleet: Fleet
) -> None:
    device_id, key = await fleet.device(await fleet.profile())
    port = service.mqtt_port
    async with paho_with_will(port, device_id, key, delay=3600, session_expiry=0) as link:
        kill(link)
        await wills_seen(api, 1)


async def test_mqtt_will_delay_applies_to_disconnect_with_will(
    api: Api, service: Service, fleet: Fleet
) -> None:
    device_id, key = await fleet.device(await fleet.profile())
    client = await mqtt_raw.RawClient.open(service.mqtt_port)
    client.send(connect_with_will(device_id, key, codec.MQTT_5, delay=2, session_expiry=60))
    assert (await client.connack()).reason == 0
    client.send(codec.encode_disconnect(0x04))  # "disconnect with Will Message"
    assert await client.until_closed() == []
    await dropped(api, device_id)
    assert await status_messages(api) == 0
    await wills_seen(api, 1)


async def test_mqtt_will_delay_is_not_cancelled_by_a_refused_connect(
    api: Api, service: Service, fleet: Fleet
) -> None:
    device_id, key = await fleet.device(await fleet.profile())
    port = service.mqtt_port
    async with paho_with_will(port, device_id, key, delay=2, session_expiry=60) as link:
        await eventually(lambda: online(api, device_id))
        kill(link)
        await dropped(api, device_id)
    impostor = await mqtt_raw.RawClient.open(port)
    impostor.send(connect_with_will(device_id, "not-the-key", codec.MQTT_5, delay=2))
    assert (await impostor.connack()).reason == 0x86
    await impostor.until_closed()
    await wills_seen(api, 1)  # only a connection of the device itself takes its Will back


async def test_mqtt_will_of_mqtt311_persistent_session_is_not_delayed(
    api: Api, service: Service, fleet: Fleet
) -> None:
    device_id, key = await fleet.device(await fleet.profile())
    link = PahoLink(service.mqtt_port, device_id, key, version=4, clean=False)
    link.client.will_set(f"devices/{device_id}/status", OFFLINE, qos=1, retain=True)
    await link.open(subscribe=())
    try:
        kill(link)
        await wills_seen(api, 1)  # MQTT 3.1.1 has no Will Delay: at once, session or not
    finally:
        await link.close()


async def test_mqtt_will_still_waiting_at_shutdown_is_dropped(tmp_path: Path) -> None:
    async with own_service(tmp_path, BrokerLimits()) as (running, api):
        fleet = Fleet(api)
        device_id, key = await fleet.device(await fleet.profile())
        port = running.mqtt_port
        async with paho_with_will(port, device_id, key, delay=3600, session_expiry=3600) as link:
            await eventually(lambda: online(api, device_id))
            kill(link)
            await dropped(api, device_id)
    # The service stopped: the device was recorded offline when its connection ended, and the
    # Will it asked to be held back was not sent on its behalf while the service went away.
    assert running.gateway.messages_in["status"] == 0
