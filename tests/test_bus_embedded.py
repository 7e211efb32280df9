"""The embedded MQTT endpoint: device auth and ACL, delivery, sessions, limits; byte-exact
sequences over bare sockets where no client library would send them."""

import asyncio
import json
import os
from pathlib import Path

import aiomqtt
import pytest

import mqtt_raw
from conftest import WAIT, Api, DeviceFactory, Fleet, eventually, make_config
from fleetstate import app
from fleetstate.app import Service
from fleetstate.bus.embedded import codec
from fleetstate.config import BrokerLimits


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
    writer.write(mqtt_raw.connect(device_id, device_id, key, keep_alive=keep_alive))
    async with asyncio.timeout(WAIT):
        assert await reader.readexactly(4) == b"\x20\x02\x00\x00"  # CONNACK, accepted
    return reader, writer


async def _state_is(api: Api, path: str, state: dict[str, object]) -> bool:
    return bool((await api.ok("GET", path))["state"] == state)


def _publish_qos1(topic: str, packet_id: int, payload: bytes) -> bytes:
    return mqtt_raw.publish(topic, payload, qos=1, packet_id=packet_id)


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


# -- authentication first, sessions, takeover, limits ----------------------------------------


def _connect_packet(
    device_id: str,
    key: str | None,
    level: int = codec.MQTT_311,
    clean: bool = True,
    keep_alive: int = 60,
    properties: dict[int, int | str | bytes] | None = None,
) -> bytes:
    return codec.encode_connect(
        codec.Connect(
            level=level,
            client_id=device_id,
            clean_start=clean,
            keep_alive=keep_alive,
            username=device_id,
            password=None if key is None else key.encode(),
            properties=codec.Properties(values=properties or {}),
        )
    )


async def _read_packet(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """(first byte, body) of the next packet the server sends."""
    async with asyncio.timeout(WAIT):
        first = (await reader.readexactly(1))[0]
        length, shift = 0, 0
        while True:
            byte = (await reader.readexactly(1))[0]
            length |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                break
        return first, await reader.readexactly(length)


async def _open(
    service: Service, packet: bytes
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, bytes]:
    """A bare connection that sent `packet` (a CONNECT): (reader, writer, CONNACK body)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", service.mqtt_port)
    writer.write(packet)
    first, body = await _read_packet(reader)
    assert first == 0x20, first
    return reader, writer, body


async def _closed(reader: asyncio.StreamReader) -> bytes:
    """Everything the server still sends until it closes the connection."""
    async with asyncio.timeout(WAIT):
        return await reader.read()


async def test_bus_refused_connect_with_a_connected_devices_id_leaves_it_attached(
    service: Service, fleet: Fleet, connect: DeviceFactory
) -> None:
    profile = await fleet.profile()
    device_id, key = await fleet.device(profile)
    async with connect(device_id, key) as device:
        first = await device.desired()
        reader, writer, connack = await _open(service, _connect_packet(device_id, "wrong"))
        assert connack == b"\x00\x04"  # bad user name or password
        assert await _closed(reader) == b""
        writer.close()
        artefact = await fleet.artefact(profile, {"setpoint": 11})
        await fleet.bind("device", device_id, artefact["id"])
        newer = await device.desired(first["version"] + 1)
    assert newer["configs"][0]["content"] == {"setpoint": 11}


async def test_bus_refused_connects_leave_no_session_behind(
    api: Api, service: Service, fleet: Fleet
) -> None:
    for i in range(5):
        reader, writer, connack = await _open(service, _connect_packet(f"nobody-{i}", "x"))
        assert connack == b"\x00\x04"
        assert await _closed(reader) == b""
        writer.close()
    metrics = (await api.call("GET", "/metrics"))[1]
    assert "fleetstate_mqtt_connected_devices 0" in metrics
    assert service.broker.sessions == {}


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


async def test_bus_connection_closed_before_connect_releases_its_socket(service: Service) -> None:
    baseline = _open_fds()
    for _ in range(50):
        _reader, writer = await asyncio.open_connection("127.0.0.1", service.mqtt_port)
        writer.close()
        await writer.wait_closed()

    async def released() -> bool:
        return _open_fds() <= baseline

    await eventually(released)


async def test_bus_connection_that_sends_no_connect_is_closed_after_the_timeout(
    tmp_path: Path,
) -> None:
    limits = BrokerLimits(connect_timeout_s=0.5)
    async with app.start(make_config(tmp_path / "data", broker=limits)) as running:
        reader, writer = await asyncio.open_connection("127.0.0.1", running.mqtt_port)
        started = asyncio.get_running_loop().time()
        try:
            writer.write(b"\x10")  # the start of a CONNECT that never comes
            assert await _closed(reader) == b""
        finally:
            writer.close()
        assert asyncio.get_running_loop().time() - started >= 0.5


async def test_bus_takeover_closes_the_old_connection_and_presence_stays_online(
    api: Api, service: Service, fleet: Fleet
) -> None:
    device_id, key = await fleet.device(await fleet.profile())
    old_reader, old_writer, _ = await _open(service, _connect_packet(device_id, key))
    await eventually(lambda: _online_is(api, device_id, True))
    reader, writer, connack = await _open(service, _connect_packet(device_id, key))
    try:
        assert connack == b"\x00\x00"
        assert await _closed(old_reader) == b""  # [MQTT-3.1.4-2]
        old_writer.close()
        for _ in range(5):  # the old connection's end must not mark the device offline
            writer.write(b"\xc0\x00")
            assert await _read_packet(reader) == (0xD0, b"")
            assert await _online_is(api, device_id, True)
            await asyncio.sleep(0.1)
        assert service.broker.connected_devices() == [device_id]
    finally:
        writer.close()


async def test_bus_persistent_session_is_present_and_keeps_its_subscription(
    service: Service, fleet: Fleet
) -> None:
    device_id, key = await fleet.device(await fleet.profile())
    topic = f"devices/{device_id}/desired"
    reader, writer, connack = await _open(service, _connect_packet(device_id, key, clean=False))
    assert connack == b"\x00\x00"
    writer.write(codec.encode_subscribe(codec.MQTT_311, 1, [(topic, 1)]))
    assert await _read_packet(reader) == (0x90, b"\x00\x01\x01")
    first, body = await _read_packet(reader)
    assert first & 0xF0 == 0x30  # the current document, on subscribe
    writer.write(b"\xe0\x00")
    assert await _closed(reader) == b""
    writer.close()

    reader, writer, connack = await _open(service, _connect_packet(device_id, key, clean=False))
    try:
        assert connack == b"\x01\x00"  # session present
        first, body = await _read_packet(reader)  # no SUBSCRIBE: still delivered
        assert first & 0xF0 == 0x30
        assert body[2 : 2 + len(topic)] == topic.encode()
    finally:
        writer.close()


async def test_bus_mqtt5_connect_is_accepted_with_the_servers_limits(
    service: Service, fleet: Fleet
) -> None:
    device_id, key = await fleet.device(await fleet.profile())
    packet = _connect_packet(device_id, key, level=codec.MQTT_5)
    _reader, writer, connack = await _open(service, packet)
    writer.close()
    assert connack[:2] == b"\x00\x00"
    assert connack[2] == len(connack) - 3  # the properties' length
    properties = connack[3:]
    assert bytes([codec.Prop.MAXIMUM_QOS, 1]) in properties
    assert bytes([codec.Prop.SHARED_AVAILABLE, 0]) in properties


async def test_bus_mqtt5_wrong_key_gets_reason_bad_credentials(
    service: Service, fleet: Fleet
) -> None:
    device_id, _key = await fleet.device(await fleet.profile())
    reader, writer, connack = await _open(
        service, _connect_packet(device_id, "wrong", level=codec.MQTT_5)
    )
    assert connack[:2] == b"\x00\x86"
    assert await _closed(reader) == b""
    writer.close()


@pytest.mark.parametrize("level", [codec.MQTT_311, codec.MQTT_5])
async def test_bus_qos2_publish_is_refused_as_its_version_says(
    service: Service, fleet: Fleet, level: int
) -> None:
    device_id, key = await fleet.device(await fleet.profile())
    reader, writer, _ = await _open(service, _connect_packet(device_id, key, level=level))
    try:
        topic = f"devices/{device_id}/telemetry"
        writer.write(codec.encode_publish(level, topic, b"{}", qos=2, packet_id=3))
        rest = await _closed(reader)
    finally:
        writer.close()
    assert rest == (b"\xe0\x01\x9b" if level == codec.MQTT_5 else b"")


async def test_bus_failed_authentications_are_throttled_a_correct_key_too(
    service: Service, fleet: Fleet
) -> None:
    device_id, key = await fleet.device(await fleet.profile())
    for _ in range(service.config.broker.auth_failure_limit):
        _reader, writer, connack = await _open(service, _connect_packet(device_id, "wrong"))
        assert connack == b"\x00\x04"
        writer.close()
    _reader, writer, connack = await _open(service, _connect_packet(device_id, key))
    writer.close()
    assert connack == b"\x00\x05"  # refused although the key is right


async def test_bus_status_topic_is_accepted(api: Api, fleet: Fleet, connect: DeviceFactory) -> None:
    device_id, key = await fleet.device(await fleet.profile())
    async with connect(device_id, key) as device:
        await device.desired()
        await device.publish("status", {"online": True})
        await device.publish("status", {"online": "yes"})
        _topic, error = await device.next("errors")
    assert (error["topic"], error["error"]) == (device.topic("status"), "schema")
    metrics = (await api.call("GET", "/metrics"))[1]
    assert "fleetstate_mqtt_forbidden_publishes_total 0" in metrics
