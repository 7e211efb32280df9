"""Flow control (MQTT 5 Receive Maximum, 4.9): the endpoint keeps no more unacknowledged QoS 1
PUBLISHes in flight to a device than its CONNECT allows, and a device that sends more than the
CONNACK announced is disconnected with 0x93; MQTT 3.1.1 devices are slowed by read pauses."""

import asyncio

import mqtt_raw
from conftest import WAIT, Api, Fleet
from fleetstate.app import Service

RECEIVE_MAXIMUM_1 = b"\x21\x00\x01"


def publish_fields(packet: mqtt_raw.Packet, level: int) -> tuple[str, int]:
    """(topic, packet id) of a QoS 1 PUBLISH."""
    size = int.from_bytes(packet.body[:2], "big")
    topic = packet.body[2 : 2 + size].decode()
    return topic, int.from_bytes(packet.body[2 + size : 4 + size], "big")


async def next_publish(client: mqtt_raw.RawClient, level: int) -> tuple[str, int]:
    async with asyncio.timeout(WAIT):
        while True:
            got = await client.packet()
            assert got is not None, "closed"
            if got.kind == mqtt_raw.PUBLISH:
                return publish_fields(got, level)


async def test_mqtt_flow_receive_maximum_1_gets_the_next_publish_after_its_puback(
    api: Api, service: Service, fleet: Fleet
) -> None:
    device_id, key = await fleet.device(await fleet.profile())
    client = await mqtt_raw.session(
        service.mqtt_port, device_id, key, level=5, properties=RECEIVE_MAXIMUM_1
    )
    topics = [(f"devices/{device_id}/{sub}", 1) for sub in ("desired", "commands")]
    client.send(mqtt_raw.subscribe(1, topics, level=5))
    topic, first = await next_publish(client, 5)
    assert topic == f"devices/{device_id}/desired"
    path = f"/api/v1/devices/{device_id}/commands"
    # The request tries the delivery before it answers: it waits with the command.
    created = asyncio.create_task(api.ok("POST", path, {"type": "REBOOT"}, status=201))
    try:  # the command waits: the one message the device takes is unacknowledged
        got = await client.packet(timeout=0.5)
        raise AssertionError(f"sent beyond the Receive Maximum: {got}")
    except TimeoutError:
        pass
    client.send(mqtt_raw.puback(first))
    topic, second = await next_publish(client, 5)
    assert topic == f"devices/{device_id}/commands"
    client.send(mqtt_raw.puback(second))
    async with asyncio.timeout(WAIT):
        await created
    await client.close()


async def test_mqtt_flow_device_over_the_receive_maximum_is_disconnected_with_0x93(
    service: Service, fleet: Fleet
) -> None:
    device_id, key = await fleet.device(await fleet.profile())
    client = await mqtt_raw.RawClient.open(service.mqtt_port)
    client.send(mqtt_raw.connect(device_id, device_id, key, level=5))
    connack = await client.connack()
    limit = service.config.broker.inbound_queue
    assert b"\x21" + limit.to_bytes(2, "big") in connack.body  # announced Receive Maximum
    topic = f"devices/{device_id}/telemetry"
    # Valid telemetry, so each PUBLISH waits for its commit: an invalid one is refused (and
    # acknowledged) at once and never counts for long against the Receive Maximum.
    reading = b'{"status": "online", "telemetries": {"t": 1}}'
    burst = b"".join(
        mqtt_raw.publish(topic, reading, qos=1, packet_id=n, level=5) for n in range(1, 3 * limit)
    )
    client.send(burst)  # not one PUBACK waited for
    seen = await client.until_closed()
    assert seen[-1] == mqtt_raw.Packet(mqtt_raw.DISCONNECT, 0, b"\x93"), seen[-3:]


async def test_mqtt_flow_mqtt311_burst_is_slowed_not_disconnected(
    service: Service, fleet: Fleet
) -> None:
    device_id, key = await fleet.device(await fleet.profile())
    client = await mqtt_raw.session(service.mqtt_port, device_id, key)
    topic = f"devices/{device_id}/telemetry"
    count = 3 * service.config.broker.inbound_queue
    client.send(
        b"".join(
            mqtt_raw.publish(
                topic, b'{"status": "online", "telemetries": {"t": 1}}', qos=1, packet_id=n
            )
            for n in range(1, count)
        )
    )
    acked = set()
    async with asyncio.timeout(WAIT):
        while len(acked) < count - 1:
            got = await client.packet()
            assert got is not None, "closed"
            if got.kind == mqtt_raw.PUBACK:
                acked.add(int.from_bytes(got.body[:2], "big"))
    await client.close()
