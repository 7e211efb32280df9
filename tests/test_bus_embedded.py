"""The embedded MQTT endpoint: device auth and ACL, delivery, sessions, limits; byte-exact
sequences over bare sockets where no client library would send them."""

import asyncio
import json

import aiomqtt
import pytest
from bench_load import (  # the lean load generator's MQTT encoding
    mqtt_connect,
    mqtt_packet,
    mqtt_string,
)

from conftest import WAIT, Api, DeviceFactory, Fleet, eventually
from fleetstate.app import Service


def _client(service: Service, client_id: str, username: str, password: str) -> aiomqtt.Client:
    return aiomqtt.Client(
        "127.0.0.1",
        service.mqtt_port,
        identifier=client_id,
        username=username,
        password=password,
        timeout=WAIT,
    )


async def test_bus_wrong_key_is_refused(service: Service, fleet: Fleet) -> None:
    device_id, _key = await fleet.device(await fleet.profile())
    with pytest.raises(aiomqtt.MqttCodeError) as refused:
        async with _client(service, device_id, device_id, "not-the-key"):
            pass
    assert refused.value.rc in (4, 5, 134, 135)


async def test_bus_username_must_be_the_client_id(service: Service, fleet: Fleet) -> None:
    profile = await fleet.profile()
    device_a, key_a = await fleet.device(profile, "a")
    device_b, _ = await fleet.device(profile, "b")
    with pytest.raises(aiomqtt.MqttCodeError):
        async with _client(service, device_b, device_a, key_a):
            pass


async def test_bus_unknown_device_is_refused(service: Service) -> None:
    with pytest.raises(aiomqtt.MqttCodeError):
        async with _client(service, "nobody", "nobody", "whatever"):
            pass


async def test_bus_device_cannot_subscribe_to_another_devices_topics(
    fleet: Fleet, connect: DeviceFactory
) -> None:
    profile = await fleet.profile()
    device_a, key_a = await fleet.device(profile, "a")
    device_b, _ = await fleet.device(profile, "b")
    async with connect(device_a, key_a, subscribe=()) as a:
        for topic in (
            f"devices/{device_b}/desired",
            "devices/#",
            "#",
            f"devices/{device_a}/reported",
        ):
            granted = await a.client.subscribe(topic, qos=1)
            assert [int(g.value) if hasattr(g, "value") else int(g) for g in granted] == [0x80], (
                topic
            )
        granted = await a.client.subscribe(f"devices/{device_a}/desired", qos=1)
        assert [int(g.value) if hasattr(g, "value") else int(g) for g in granted] == [1]


async def test_bus_publish_on_another_devices_topic_is_dropped(
    api: Api, fleet: Fleet, connect: DeviceFactory
) -> None:
    profile = await fleet.profile()
    device_a, key_a = await fleet.device(profile, "a")
    device_b, key_b = await fleet.device(profile, "b")
    async with connect(device_b, key_b) as b, connect(device_a, key_a) as a:
        doc_b = await b.desired()
        forged = {"version": doc_b["version"], "status": "ACCEPTED"}
        await a.client.publish(f"devices/{device_b}/reported", json.dumps(forged), qos=1)
        await a.client.publish(
            f"devices/{device_b}/desired", b'{"version": 99, "configs": []}', qos=1
        )
        await b.nothing(0.5)
    row = await api.ok("GET", f"/api/v1/devices/{device_b}")
    assert row["reported_status"] is None


async def test_bus_device_that_keeps_publishing_forbidden_topics_is_disconnected(
    service: Service, fleet: Fleet
) -> None:
    device_id, key = await fleet.device(await fleet.profile())
    client = _client(service, device_id, device_id, key)
    with pytest.raises(aiomqtt.MqttError):
        async with client, asyncio.timeout(WAIT):
            for _ in range(service.config.max_forbidden_publishes):
                await client.publish("elsewhere/topic", b"{}", qos=1)
            async for _message in client.messages:  # ends with MqttError when cut off
                pass


async def test_bus_retained_messages_never_leak_to_other_devices(
    fleet: Fleet, connect: DeviceFactory
) -> None:
    """There is no retained store: a retained publish of one device reaches nobody."""
    profile = await fleet.profile()
    device_a, key_a = await fleet.device(profile, "a")
    device_c, key_c = await fleet.device(profile, "c")
    artefact = await fleet.artefact(profile, {"setpoint": 7})
    await fleet.bind("device", device_a, artefact["id"])
    async with connect(device_a, key_a, subscribe=("#",)) as a:
        await a.desired()
        await a.client.publish(
            a.topic("reported"), b'{"version": 1, "status": "IN_PROGRESS"}', qos=1, retain=True
        )
        async with connect(device_c, key_c, subscribe=("#",)) as c:
            _topic, doc = await c.next()
            assert _topic == c.topic("desired")
            assert doc["configs"] == []
            await c.nothing(0.5)


async def test_bus_reconnecting_device_gets_current_document_again(
    fleet: Fleet, connect: DeviceFactory
) -> None:
    """Level-triggered: every connect re-sends the current document, persistent or not."""
    profile = await fleet.profile()
    device_id, key = await fleet.device(profile)
    artefact = await fleet.artefact(profile, {"setpoint": 9})
    await fleet.bind("device", device_id, artefact["id"])
    async with connect(device_id, key) as device:
        first = await device.desired()
    async with connect(device_id, key, clean_session=False) as device:
        again = await device.desired()
    async with connect(device_id, key, subscribe=(), clean_session=False) as device:
        # A persistent session keeps its subscription: no SUBSCRIBE, still re-sent on connect.
        persisted = await device.desired()
    assert first == again == persisted


async def test_bus_puback_means_the_report_is_committed(
    api: Api, fleet: Fleet, connect: DeviceFactory
) -> None:
    """A PUBACK means the report is in the database."""
    device_id, key = await fleet.device(await fleet.profile())
    async with connect(device_id, key) as device:
        doc = await device.desired()
        for status in ("IN_PROGRESS", "ACCEPTED"):
            await device.publish("reported", {"version": doc["version"], "status": status})
            row = await api.ok("GET", f"/api/v1/devices/{device_id}")  # no waiting, no polling
            assert row["reported_status"] == status


async def test_bus_clean_session_drops_the_devices_subscriptions(
    fleet: Fleet, connect: DeviceFactory
) -> None:
    """A clean connect starts with no subscriptions: nothing is delivered without a SUBSCRIBE."""
    device_id, key = await fleet.device(await fleet.profile())
    async with connect(device_id, key, subscribe=("desired", "#", "+")) as device:
        await device.desired()
    async with connect(device_id, key, subscribe=()) as device:
        await device.nothing(0.5)


# -- inbound messages ------------------------------------------------------------------------


async def _raw_session(
    service: Service, device_id: str, key: str, keep_alive: int = 60
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """An MQTT 3.1.1 session on a bare socket, for byte-exact sequences no client library
    sends (a PUBLISH followed at once by the end of the connection)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", service.mqtt_port)
    writer.write(mqtt_connect(device_id, key, keep_alive))
    async with asyncio.timeout(WAIT):
        assert await reader.readexactly(4) == b"\x20\x02\x00\x00"  # CONNACK, accepted
    return reader, writer


async def _state_is(api: Api, path: str, state: dict[str, object]) -> bool:
    return bool((await api.ok("GET", path))["state"] == state)


def _publish_qos1(topic: str, packet_id: int, payload: bytes) -> bytes:
    return mqtt_packet(0x32, mqtt_string(topic) + packet_id.to_bytes(2, "big") + payload)


async def test_bus_qos0_and_qos1_messages_are_processed_in_the_order_sent(
    api: Api, fleet: Fleet, connect: DeviceFactory
) -> None:
    """One device's messages are processed one after the other, whatever their QoS: once the
    QoS 1 message sent last is acknowledged, the QoS 0 ones before it are processed too."""
    device_id, key = await fleet.device(await fleet.profile())
    path = f"/api/v1/devices/{device_id}/telemetry"
    async with connect(device_id, key) as device:
        for t in range(1, 20):
            await device.publish("telemetry", {"status": "online", "telemetries": {"t": t}}, 0)
        await device.publish("telemetry", {"status": "online", "telemetries": {"last": 1}})
        state = (await api.ok("GET", path))["state"]
    assert state == {"t": 19, "last": 1, "status": "online"}


async def test_bus_qos0_publish_on_another_devices_topic_is_dropped_and_counted(
    api: Api, fleet: Fleet, connect: DeviceFactory
) -> None:
    profile = await fleet.profile()
    device_a, key_a = await fleet.device(profile, "a")
    device_b, _ = await fleet.device(profile, "b")
    async with connect(device_a, key_a) as a:
        forged = {"status": "online", "telemetries": {"forged": True}}
        await a.client.publish(f"devices/{device_b}/telemetry", json.dumps(forged), qos=0)
        await a.publish("telemetry", {"status": "online", "telemetries": {"t": 1}}, qos=0)
        path = f"/api/v1/devices/{device_a}/telemetry"
        await eventually(lambda: _state_is(api, path, {"t": 1, "status": "online"}))
    assert (await api.ok("GET", f"/api/v1/devices/{device_b}/telemetry"))["state"] == {}
    metrics = (await api.call("GET", "/metrics"))[1]
    assert "fleetstate_mqtt_forbidden_publishes_total 1" in metrics


async def test_bus_publish_on_a_dollar_topic_closes_the_connection_unacknowledged(
    service: Service, fleet: Fleet
) -> None:
    """[MQTT-4.7.2-1]: topics starting with $ are the server's."""
    device_id, key = await fleet.device(await fleet.profile())
    reader, writer = await _raw_session(service, device_id, key)
    try:
        writer.write(_publish_qos1("$SYS/broker/mine", 7, b"{}"))
        async with asyncio.timeout(WAIT):
            assert await reader.read() == b""  # closed, and no PUBACK before that
    finally:
        writer.close()


async def test_bus_report_published_just_before_the_connection_drops_is_kept_and_announced(
    api: Api, fleet: Fleet, service: Service
) -> None:
    """A report that arrived before the connection ended still commits and still reaches the
    event stream (and so the web app)."""
    from test_events import stream

    device_id, key = await fleet.device(await fleet.profile())
    async with stream(api) as events:
        _reader, writer = await _raw_session(service, device_id, key)
        version = (await api.ok("GET", f"/api/v1/devices/{device_id}"))["desired_version"]
        report = json.dumps({"version": version, "status": "ACCEPTED"}).encode()
        writer.write(_publish_qos1(f"devices/{device_id}/reported", 1, report))
        writer.write(b"\xe0\x00")  # DISCONNECT, without waiting for the PUBACK
        writer.close()
        announced = await events.next("report")
    assert (announced["device_id"], announced["status"]) == (device_id, "ACCEPTED")
    row = await api.ok("GET", f"/api/v1/devices/{device_id}")
    assert row["reported_status"] == "ACCEPTED"


# -- keep-alive --------------------------------------------------------------------------------


async def test_bus_silent_device_is_disconnected_after_one_and_a_half_keepalives(
    api: Api, fleet: Fleet, service: Service
) -> None:
    """[MQTT-3.1.2-24]: a device that lost power without closing its connection goes offline."""
    device_id, key = await fleet.device(await fleet.profile())
    reader, writer = await _raw_session(service, device_id, key, keep_alive=1)
    try:
        await eventually(lambda: _online_is(api, device_id, True))
        started = asyncio.get_running_loop().time()
        async with asyncio.timeout(WAIT):
            assert await reader.read() == b""  # closed by the server
        assert asyncio.get_running_loop().time() - started >= 1.0  # not at once
    finally:
        writer.close()
    await eventually(lambda: _online_is(api, device_id, False))


async def test_bus_device_that_pings_within_its_keepalive_stays_connected(
    api: Api, fleet: Fleet, service: Service
) -> None:
    device_id, key = await fleet.device(await fleet.profile())
    reader, writer = await _raw_session(service, device_id, key, keep_alive=1)
    try:
        for _ in range(6):  # 3 s: twice the 1.5 s limit
            writer.write(b"\xc0\x00")  # PINGREQ
            async with asyncio.timeout(WAIT):
                assert await reader.readexactly(2) == b"\xd0\x00"  # PINGRESP
            await asyncio.sleep(0.5)
        assert (await api.ok("GET", f"/api/v1/devices/{device_id}"))["online"] is True
    finally:
        writer.close()


async def _online_is(api: Api, device_id: str, online: bool) -> bool:
    return bool((await api.ok("GET", f"/api/v1/devices/{device_id}"))["online"] is online)
