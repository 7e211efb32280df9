"""The embedded broker: device auth and ACL inside amqtt, and the amqtt defects we work around."""

import asyncio
import json

import aiomqtt
import pytest

from conftest import WAIT, Api, DeviceFactory, Fleet
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
    """amqtt sends a connecting client every retained message matching any client's filter."""
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
    """amqtt never redelivers unacknowledged QoS 1: the protocol re-sends state on reconnect."""
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
    """amqtt PUBACKs inbound QoS 1 on receipt; we PUBACK only after the commit."""
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
    """Subscription cleanup is confined to the device's own filters; it must still be complete."""
    device_id, key = await fleet.device(await fleet.profile())
    async with connect(device_id, key, subscribe=("desired", "#", "+")) as device:
        await device.desired()
    async with connect(device_id, key, subscribe=()) as device:
        await device.nothing(0.5)


async def test_bus_subscription_table_repr_stays_small(
    service: Service, fleet: Fleet, connect: DeviceFactory
) -> None:
    """amqtt logs repr() of the whole subscription table after every SUBSCRIBE (eagerly)."""
    import inspect

    from amqtt.broker import Broker

    assert "repr(self._subscriptions)" in inspect.getsource(Broker._client_message_loop)
    profile = await fleet.profile()
    devices = [await fleet.device(profile, f"d{i}") for i in range(3)]
    async with connect(*devices[0]), connect(*devices[1]), connect(*devices[2]):
        table = service.broker._broker._subscriptions
        assert len(table) == 9
        assert repr(table) == "<9 subscription filters>"


async def test_bus_collector_is_relaxed_for_amqtt_sessions(
    service: Service, fleet: Fleet, connect: DeviceFactory
) -> None:
    """amqtt builds a `transitions` state machine per session (hundreds of objects the cyclic
    collector tracks); once the broker runs, collections over them are made rare."""
    import contextlib
    import gc

    from fleetstate.bus.embedded import GC_THRESHOLDS

    assert gc.get_threshold() == GC_THRESHOLDS
    assert gc.get_freeze_count() > 0

    def machine_parts() -> int:
        return sum(1 for o in gc.get_objects() if type(o).__module__.startswith("transitions"))

    profile = await fleet.profile()
    devices = [await fleet.device(profile, f"d{i}") for i in range(5)]
    before = machine_parts()
    async with contextlib.AsyncExitStack() as stack:
        for device in devices:
            await stack.enter_async_context(connect(*device))
        assert (machine_parts() - before) / len(devices) >= 10
