"""Devices driven by MQTT clients nobody on the project wrote: paho-mqtt 2.x (3.1.1 and 5, clean
and persistent sessions), aiomqtt 2.x, and Debian's mosquitto_sub/mosquitto_pub as subprocesses.

Each is a `Link`: connect, subscribe, `next(sub, where)` for the next matching message on one of
the device's topics, `publish(sub, payload)`. They touch the service only through its MQTT port.
"""

import asyncio
import contextlib
import json
import shutil
import signal
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any

import aiomqtt
import msgspec
import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from conftest import WAIT, make_config
from fleetstate.config import Config

SUBSCRIBE = ("desired", "commands", "errors")
Where = Callable[[Any], bool]


class Refused(Exception):
    """The endpoint refused the CONNECT; `code` is what the client library reports."""

    def __init__(self, code: int, detail: str = "") -> None:
        super().__init__(f"CONNECT refused: {code} {detail}")
        self.code = code


class Link:
    """A device's MQTT connection as the tests see it: messages arrive in a queue; `next` finds
    the first one matching, keeping the others for later calls."""

    name = "link"
    persistent = False

    def __init__(self, port: int, device_id: str, key: str) -> None:
        self.port, self.id, self.key = port, device_id, key
        self.queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        self.kept: list[tuple[str, Any]] = []
        self.session_present: bool | None = None
        self.connack_properties: dict[str, Any] = {}

    def topic(self, sub: str) -> str:
        return f"devices/{self.id}/{sub}"

    def deliver(self, topic: str, payload: bytes) -> None:
        self.queue.put_nowait((topic, json.loads(payload)))

    async def next(self, sub: str, where: Where = bool, timeout: float = WAIT) -> Any:
        for at, (topic, doc) in enumerate(self.kept):
            if topic == self.topic(sub) and where(doc):
                del self.kept[at]
                return doc
        try:
            async with asyncio.timeout(timeout):
                while True:
                    topic, doc = await self.queue.get()
                    if topic == self.topic(sub) and where(doc):
                        return doc
                    self.kept.append((topic, doc))
        except TimeoutError:
            raise AssertionError(
                f"{self.name}: nothing on {sub} within {timeout} s; got {self.kept}"
            ) from None

    async def nothing(self, seconds: float = 0.5) -> None:
        """Assert that no message arrives for a while (nor arrived unclaimed before)."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                self.kept.append(await self.queue.get())
        assert not self.kept, f"{self.name}: unexpected {self.kept}"

    async def desired(self, above: int = -1) -> dict[str, Any]:
        return dict(await self.next("desired", lambda doc: doc["version"] > above))

    async def open(self, subscribe: tuple[str, ...] = SUBSCRIBE) -> None:
        raise NotImplementedError

    async def subscribe(self, filters: tuple[str, ...]) -> list[int]:
        """One SUBSCRIBE for these whole topic filters, QoS 1: the SUBACK's codes."""
        raise NotImplementedError

    async def subscribe_own(self, subs: tuple[str, ...]) -> None:
        codes = await self.subscribe(tuple(self.topic(sub) for sub in subs))
        assert codes == [1] * len(subs), f"{self.name}: SUBACK {codes}"

    async def publish(self, sub: str, payload: Any, qos: int = 1) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError

    async def __aenter__(self) -> "Link":
        await self.open()
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()


def encode(payload: Any) -> bytes:
    return payload if isinstance(payload, bytes) else json.dumps(payload).encode()


# -- paho-mqtt 2.x, its own network thread ------------------------------------------------------


class PahoLink(Link):
    """paho-mqtt with `loop_start()`: callbacks run in paho's thread and are handed to the event
    loop; acknowledgements are matched to requests by packet id."""

    def __init__(
        self,
        port: int,
        device_id: str,
        key: str,
        version: int = 4,
        clean: bool = True,
        session_expiry: int = 0,
    ) -> None:
        super().__init__(port, device_id, key)
        self.version, self.clean, self.expiry = version, clean, session_expiry
        self.persistent = not clean
        self.name = f"paho v{version} {'clean' if clean else 'persistent'}"
        self.loop = asyncio.get_running_loop()
        self.connected: asyncio.Future[tuple[int, bool, Any]] = self.loop.create_future()
        self.acks: dict[int, Any] = {}
        self.waiting: dict[int, asyncio.Future[Any]] = {}
        self.disconnected = asyncio.Event()
        protocol = paho.MQTTv5 if version == 5 else paho.MQTTv311
        self.client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=device_id,
            protocol=protocol,
            clean_session=None if version == 5 else clean,
            # Never behind the test's back; and after a refused or lost connection paho's thread
            # ends at once, where waiting to reconnect it sleeps in 1 s steps that loop_stop waits
            # out (a second per refused CONNECT).
            reconnect_on_failure=False,
        )
        self.client.username_pw_set(device_id, key)
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.on_subscribe = self._on_subscribe
        self.client.on_disconnect = self._on_disconnect

    def _call(self, fn: Callable[..., None], *args: Any) -> None:
        self.loop.call_soon_threadsafe(fn, *args)

    def _on_connect(self, _c: Any, _u: Any, flags: Any, reason: Any, props: Any) -> None:
        self._call(self._connected, int(reason.value), bool(flags.session_present), props)

    def _connected(self, code: int, present: bool, props: Any) -> None:
        if not self.connected.done():
            self.connected.set_result((code, present, props))

    def _on_message(self, _c: Any, _u: Any, message: paho.MQTTMessage) -> None:
        self._call(self.deliver, message.topic, bytes(message.payload))

    def _on_subscribe(self, _c: Any, _u: Any, mid: int, codes: list[Any], _p: Any) -> None:
        self._call(self._acked, mid, [int(code.value) for code in codes])

    def _on_disconnect(self, *_args: Any) -> None:
        self._call(self.disconnected.set)

    def _acked(self, mid: int, value: Any) -> None:
        if mid in self.waiting:
            self.waiting.pop(mid).set_result(value)
        else:
            self.acks[mid] = value

    async def _ack(self, mid: int) -> Any:
        if mid in self.acks:
            return self.acks.pop(mid)
        self.waiting[mid] = self.loop.create_future()
        async with asyncio.timeout(WAIT):
            return await self.waiting[mid]

    async def open(self, subscribe: tuple[str, ...] = SUBSCRIBE) -> None:
        props = None
        if self.version == 5:
            props = Properties(PacketTypes.CONNECT)
            props.SessionExpiryInterval = self.expiry
        await asyncio.to_thread(
            self.client.connect,
            "127.0.0.1",
            self.port,
            60,
            clean_start=self.clean if self.version == 5 else paho.MQTT_CLEAN_START_FIRST_ONLY,
            properties=props,
        )
        self.client.loop_start()
        try:
            async with asyncio.timeout(WAIT):
                code, self.session_present, connack_props = await self.connected
        except BaseException:
            await self.close()
            raise
        if code:
            await self.close()
            raise Refused(code)
        if connack_props is not None:
            self.connack_properties = connack_props.json()
        if subscribe:
            await self.subscribe_own(subscribe)

    async def subscribe(self, filters: tuple[str, ...]) -> list[int]:
        _rc, mid = self.client.subscribe([(topic, 1) for topic in filters])
        return list(await self._ack(mid))

    async def publish(self, sub: str, payload: Any, qos: int = 1) -> None:
        info = self.client.publish(self.topic(sub), encode(payload), qos=qos)
        await asyncio.to_thread(info.wait_for_publish, WAIT)
        assert info.is_published(), f"{self.name}: no PUBACK for {sub}"

    async def close(self) -> None:
        if self.client.is_connected():
            self.client.disconnect()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(WAIT):
                    await self.disconnected.wait()
        await asyncio.to_thread(self.client.loop_stop)


# -- aiomqtt 2.x --------------------------------------------------------------------------------


class AiomqttLink(Link):
    def __init__(
        self, port: int, device_id: str, key: str, version: int = 4, clean: bool = True
    ) -> None:
        super().__init__(port, device_id, key)
        self.version, self.persistent = version, not clean
        self.name = f"aiomqtt v{version}"
        v5 = version == 5
        self.client = aiomqtt.Client(
            "127.0.0.1",
            port,
            identifier=device_id,
            username=device_id,
            password=key,
            protocol=aiomqtt.ProtocolVersion.V5 if v5 else aiomqtt.ProtocolVersion.V311,
            clean_session=None if v5 else clean,
            clean_start=clean if v5 else paho.MQTT_CLEAN_START_FIRST_ONLY,
            timeout=WAIT,
        )
        self.pump: asyncio.Task[None] | None = None

    async def open(self, subscribe: tuple[str, ...] = SUBSCRIBE) -> None:
        try:
            await self.client.__aenter__()
        except aiomqtt.MqttCodeError as refused:
            rc = refused.rc
            raise Refused(int(rc.value) if hasattr(rc, "value") else int(rc or -1)) from refused
        self.pump = asyncio.create_task(self._pump(), name=f"aiomqtt-pump-{self.id}")
        if subscribe:
            await self.subscribe_own(subscribe)

    async def _pump(self) -> None:
        with contextlib.suppress(aiomqtt.MqttError):
            async for message in self.client.messages:
                self.deliver(str(message.topic), bytes(message.payload))  # type: ignore[arg-type]

    async def subscribe(self, filters: tuple[str, ...]) -> list[int]:
        granted = await self.client.subscribe([(topic, 1) for topic in filters])
        return [int(g.value) if hasattr(g, "value") else int(g) for g in granted]

    async def publish(self, sub: str, payload: Any, qos: int = 1) -> None:
        await self.client.publish(self.topic(sub), encode(payload), qos=qos)

    async def close(self) -> None:
        if self.pump is not None:
            self.pump.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.pump
        with contextlib.suppress(aiomqtt.MqttError):
            await self.client.__aexit__(None, None, None)


# -- Debian's mosquitto_sub / mosquitto_pub ------------------------------------------------------


MOSQUITTO_SUB = shutil.which("mosquitto_sub") or "/usr/bin/mosquitto_sub"
MOSQUITTO_PUB = shutil.which("mosquitto_pub") or "/usr/bin/mosquitto_pub"


class MosquittoLink(Link):
    """`mosquitto_sub -v` as the device's ears. The client id is the device id, so a
    `mosquitto_pub` would take the subscriber's session over: publishing stops the subscriber,
    publishes, and starts it again (a device that reconnects to send), waiting each time until the
    service has handed it the current desired document, which proves it is subscribed."""

    def __init__(self, port: int, device_id: str, key: str, version: int = 4) -> None:
        super().__init__(port, device_id, key)
        self.version = version
        self.name = f"mosquitto v{version}"
        self.sub: asyncio.subprocess.Process | None = None
        self.pump: asyncio.Task[None] | None = None
        self.subscribed = asyncio.Event()
        self.subs: tuple[str, ...] = ()

    def common(self) -> list[str]:
        version = "mqttv5" if self.version == 5 else "mqttv311"
        args = ["-h", "127.0.0.1", "-p", str(self.port), "-V", version, "-i", self.id]
        return [*args, "-u", self.id, "-P", self.key, "-q", "1"]

    async def open(self, subscribe: tuple[str, ...] = SUBSCRIBE) -> None:
        self.subs = subscribe
        await self._start()

    async def _start(self) -> None:
        topics = [arg for sub in self.subs for arg in ("-t", self.topic(sub))]
        self.subscribed.clear()
        self.sub = await asyncio.create_subprocess_exec(
            MOSQUITTO_SUB,
            *self.common(),
            "-v",
            "-W",
            "60",  # the subscriber's own bound
            *topics,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        self.pump = asyncio.create_task(self._pump(self.sub), name=f"mosquitto-pump-{self.id}")
        try:
            async with asyncio.timeout(WAIT):
                await self.subscribed.wait()
        except TimeoutError:
            await self._stop()
            raise AssertionError(f"{self.name}: no desired document after connecting") from None

    async def _pump(self, sub: asyncio.subprocess.Process) -> None:
        assert sub.stdout is not None
        async for line in sub.stdout:
            topic, _, payload = line.decode().rstrip("\n").partition(" ")
            self.deliver(topic, payload.encode())
            if topic == self.topic("desired"):
                self.subscribed.set()

    async def _stop(self) -> None:
        if self.sub is not None and self.sub.returncode is None:
            self.sub.send_signal(signal.SIGTERM)  # mosquitto_sub sends DISCONNECT on SIGTERM
            try:
                async with asyncio.timeout(WAIT):
                    await self.sub.wait()
            except TimeoutError:
                self.sub.kill()
                await self.sub.wait()
        if self.pump is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(WAIT):
                    await self.pump

    async def publish(self, sub: str, payload: Any, qos: int = 1) -> None:
        await self._stop()
        args = [*self.common(), "-t", self.topic(sub), "-m", encode(payload).decode()]
        if qos != 1:
            args[args.index("-q") + 1] = str(qos)
        code, out, err = await run(MOSQUITTO_PUB, *args)
        assert code == 0, f"mosquitto_pub exited {code}: {out!r} {err!r}"
        if self.subs:
            await self._start()

    async def close(self) -> None:
        await self._stop()


async def run(*argv: str, timeout: float = 15.0) -> tuple[int, str, str]:
    """Run a program to its end (killed after `timeout`): exit code, stdout, stderr."""
    process = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    try:
        async with asyncio.timeout(timeout):
            out, err = await process.communicate()
    except TimeoutError:
        process.kill()
        await process.wait()
        raise AssertionError(f"{argv[0]} still running after {timeout} s") from None
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


# -- settings the new endpoint may name its own way ----------------------------------------------


def find_setting(*words: str) -> tuple[str, ...] | None:
    """The path of the first Config field, at the top or one table down, whose name holds every
    one of `words` (e.g. "connect", "timeout"): limits the endpoint adds are read, not guessed."""
    config = Config()
    for name in Config.__struct_fields__:
        if all(w in name for w in words):
            return (name,)
        table = getattr(config, name)
        if isinstance(table, msgspec.Struct):
            for field in type(table).__struct_fields__:
                if all(w in field for w in words) or all(w in f"{name}_{field}" for w in words):
                    return (name, field)
    return None


def setting(config: Config, path: tuple[str, ...]) -> Any:
    value: Any = config
    for name in path:
        value = getattr(value, name)
    return value


def config_with(data: Path, path: tuple[str, ...] | None, value: Any) -> Config:
    """The tests' configuration with the setting at `path` (when there is one) set to `value`."""
    config = make_config(data)
    if path is None:
        return config
    if len(path) == 1:
        return msgspec.structs.replace(config, **{path[0]: value})
    table = msgspec.structs.replace(getattr(config, path[0]), **{path[1]: value})
    return msgspec.structs.replace(config, **{path[0]: table})
