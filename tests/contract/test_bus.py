"""The Bus port on every backend, through real MQTT device clients (aiomqtt): who may connect,
what the service hears (`DeviceEvents`), and what `set_desired`/`send`/`disconnect` do.

The service side is `Recorder`, a small `DeviceEvents` that keeps what it heard (a double of the
bus's caller, not of the bus). A backend is one `pytest.param` of `config_for`: the `Config` that
makes `bus.open_bus` build it on free loopback ports; a Mosquitto param would start the broker
process in its fixture and name it in `[bus]`.
"""

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from urllib.parse import urlsplit

import aiomqtt
import pytest

from conftest import WAIT, make_config
from fleetstate.bus import Bus, open_bus
from fleetstate.config import Config

KEYS = {"dev-a": "key-a", "dev-b": "key-b"}


class Recorder:
    """The service side of the bus: accepts `KEYS`, records every event in order."""

    def __init__(self) -> None:
        self.heard: list[tuple[str, ...]] = []
        self._changed = asyncio.Event()
        self.holding = False
        self.unanswered: list[Callable[[bool], None]] = []

    def _note(self, *event: str) -> None:
        self.heard.append(event)
        self._changed.set()  # wakes whoever waits on this one; later waits get a fresh one
        self._changed = asyncio.Event()

    async def until(self, *event: str) -> None:
        async with asyncio.timeout(WAIT):
            while event not in self.heard:
                await self._changed.wait()

    async def authenticate(self, device_id: str, access_key: str) -> bool:
        self._note("authenticate", device_id)
        return KEYS.get(device_id) == access_key

    def connected(self, device_id: str, receives: frozenset[str]) -> None:
        self._note("connected", device_id, *sorted(receives))

    def disconnected(self, device_id: str) -> None:
        self._note("disconnected", device_id)

    def subscribed(self, device_id: str, receives: frozenset[str]) -> None:
        self._note("subscribed", device_id, *sorted(receives))

    async def message(self, device_id: str, subtopic: str, payload: bytes) -> bool:
        self._note("message", device_id, subtopic, payload.decode())
        return True

    def message_soon(
        self, device_id: str, subtopic: str, payload: bytes, answered: Callable[[bool], None]
    ) -> bool:
        """Telemetry is taken without a coroutine, as the service takes it: answered later,
        from a callback (at once while `holding` is False, else when the test says)."""
        if subtopic != "telemetry":
            return False
        self._note("message", device_id, subtopic, payload.decode())
        if self.holding:
            self.unanswered.append(answered)
        else:
            asyncio.get_running_loop().call_soon(answered, True)
        return True

    def forbidden(self, device_id: str, topic: str) -> None:
        self._note("forbidden", device_id, topic)


def _embedded(tmp_path: Path) -> Config:
    return make_config(tmp_path / "data")


BACKENDS = [pytest.param(_embedded, id="embedded")]


class Running:
    def __init__(self, bus: Bus, events: Recorder) -> None:
        self.bus, self.events = bus, events
        url = urlsplit(bus.mqtt_url or "")
        self.host, self.port = url.hostname or "", url.port or 0

    def device(
        self, device_id: str, key: str | None = None, *, clean_session: bool = True
    ) -> aiomqtt.Client:
        return aiomqtt.Client(
            self.host,
            self.port,
            identifier=device_id,
            username=device_id,
            password=KEYS[device_id] if key is None else key,
            clean_session=clean_session,
            timeout=WAIT,
        )


@pytest.fixture(params=BACKENDS)
async def running(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Running]:
    config_for: Callable[[Path], Config] = request.param
    events = Recorder()
    async with open_bus(config_for(tmp_path)) as bus:
        await bus.start(events)
        runner = asyncio.create_task(bus.run(), name="bus")
        try:
            yield Running(bus, events)
        finally:
            runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await runner


async def _next_payload(client: aiomqtt.Client) -> tuple[str, bytes]:
    async with asyncio.timeout(WAIT):
        async for message in client.messages:
            assert isinstance(message.payload, bytes)
            return str(message.topic), message.payload
    raise AssertionError("message stream ended")


async def test_bus_wrong_key_is_refused_after_asking_the_service(running: Running) -> None:
    with pytest.raises(aiomqtt.MqttCodeError):
        async with running.device("dev-a", "not-the-key"):
            pass
    assert ("authenticate", "dev-a") in running.events.heard
    assert not running.bus.is_connected("dev-a")
    assert not any(e[0] == "connected" for e in running.events.heard)


async def test_bus_connected_device_is_known_until_it_leaves(running: Running) -> None:
    async with running.device("dev-a"):
        await running.events.until("connected", "dev-a")  # a clean session receives nothing yet
        assert running.bus.is_connected("dev-a")
        assert running.bus.connected_devices() == ["dev-a"]
    await running.events.until("disconnected", "dev-a")
    assert not running.bus.is_connected("dev-a")
    assert running.bus.connected_devices() == []


async def test_bus_delivers_only_what_the_device_subscribed_to(running: Running) -> None:
    bus = running.bus
    assert not await bus.set_desired("dev-a", 1, b'{"v": 1}')  # offline: False at once
    async with running.device("dev-a") as client:
        await running.events.until("connected", "dev-a")
        assert not await bus.set_desired("dev-a", 1, b'{"v": 1}')  # not subscribed yet
        await client.subscribe("devices/dev-a/desired", qos=1)
        await running.events.until("subscribed", "dev-a", "desired")
        async with asyncio.timeout(WAIT):
            assert await bus.set_desired("dev-a", 2, b'{"v": 2}')
        assert await _next_payload(client) == ("devices/dev-a/desired", b'{"v": 2}')
        assert not await bus.send("dev-a", "commands", b'{"c": 1}')
        await client.subscribe("devices/dev-a/#", qos=1)
        await running.events.until("subscribed", "dev-a", "commands", "desired")
        async with asyncio.timeout(WAIT):
            assert await bus.send("dev-a", "errors", b'{"e": 1}')
        assert await _next_payload(client) == ("devices/dev-a/errors", b'{"e": 1}')


async def test_bus_persistent_session_connects_with_what_it_can_receive(
    running: Running,
) -> None:
    async with running.device("dev-a", clean_session=False) as client:
        await client.subscribe("devices/dev-a/commands", qos=1)
        await running.events.until("subscribed", "dev-a", "commands")
    await running.events.until("disconnected", "dev-a")
    async with running.device("dev-a", clean_session=False):
        # No SUBSCRIBE this time: the kept session already lets commands through.
        await running.events.until("connected", "dev-a", "commands")
        async with asyncio.timeout(WAIT):
            assert await running.bus.send("dev-a", "commands", b"{}")


async def test_bus_hands_the_service_each_message_in_the_order_sent(running: Running) -> None:
    # Only what a device may publish, by subtopic; the acknowledgement's timing is the
    # backend's own (tests/test_bus_embedded.py: the PUBACK means committed).
    sent = [("reported", 1), ("telemetry", 0), ("commands/ack", 1), ("status", 0)]
    async with running.device("dev-a") as client:
        for i, (subtopic, qos) in enumerate(sent):
            await client.publish(f"devices/dev-a/{subtopic}", f"{i}".encode(), qos=qos)
        await running.events.until("message", "dev-a", "status", "3")
    messages = [e[2:] for e in running.events.heard if e[0] == "message"]
    assert messages == [(subtopic, f"{i}") for i, (subtopic, _qos) in enumerate(sent)]


@pytest.mark.parametrize("ok", [True, False], ids=["processed", "failed"])
async def test_bus_acknowledges_a_message_taken_soon_only_once_answered_ok(
    running: Running, ok: bool
) -> None:
    running.events.holding = True
    async with running.device("dev-a") as client:
        published = asyncio.create_task(client.publish("devices/dev-a/telemetry", b"1", qos=1))
        await running.events.until("message", "dev-a", "telemetry", "1")
        await asyncio.sleep(0.3)  # time enough for a PUBACK that came too early
        assert not published.done(), "acknowledged before the service answered"
        (answered,) = running.events.unanswered
        answered(ok)
        if ok:
            async with asyncio.timeout(WAIT):
                await published
        else:
            await asyncio.sleep(0.3)
            assert not published.done(), "a message the service failed was acknowledged"
            published.cancel()


async def test_bus_publish_on_another_devices_topic_is_forbidden(running: Running) -> None:
    async with running.device("dev-a") as client:
        await client.publish("devices/dev-b/reported", b"{}", qos=1)
        await running.events.until("forbidden", "dev-a", "devices/dev-b/reported")
    assert not any(e[0] == "message" for e in running.events.heard)


async def test_bus_disconnect_cuts_the_device_off(running: Running) -> None:
    async with running.device("dev-a") as a, running.device("dev-b"):
        await running.events.until("connected", "dev-b")
        await running.bus.disconnect("dev-a")
        await running.events.until("disconnected", "dev-a")
        with pytest.raises(aiomqtt.MqttError):
            async with asyncio.timeout(WAIT):
                async for _message in a.messages:
                    pass
        assert running.bus.connected_devices() == ["dev-b"]
        await running.bus.disconnect("nobody")  # an unknown device is not an error
