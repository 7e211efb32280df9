"""One simulated device: how it answers desired documents and commands, and its MQTT session.

A device applies each desired document newer than the last one it answered (IN_PROGRESS, then
ACCEPTED with each slot's hash, or REJECTED / FAILED by its part), acknowledges commands
(ACKNOWLEDGED, then SUCCESS or FAILED), sends telemetry, and reconnects with a jittered
exponential backoff when its connection fails or drops. Every failure is counted by kind, so a
device that never connects says why.
"""

import asyncio
import contextlib
import itertools
import random
import time
from collections.abc import Coroutine
from typing import Any

import aiohttp
import aiomqtt
import msgspec

from fleetstate.simulator.options import Behaviour, DeviceSpec, Settings
from fleetstate.simulator.stats import Stats

BACKOFF_MIN_S = 0.5
BACKOFF_MAX_S = 30.0
CONNECTING_MAX = 256
"""Connections waiting for CONNACK and SUBACK at once, per worker: beyond this a connect storm
only lengthens every handshake until they time out together."""
SUBSCRIPTIONS = ("desired", "commands", "errors")
_FINAL = {Behaviour.ACCEPT: "ACCEPTED", Behaviour.REJECT: "REJECTED", Behaviour.FAIL: "FAILED"}


class Config(msgspec.Struct, frozen=True):
    slot: str
    artefact_id: str
    hash: str


class Document(msgspec.Struct, frozen=True):
    version: int
    configs: list[Config] = []


class Command(msgspec.Struct, frozen=True):
    id: str
    type: str


class SlotReport(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    slot: str
    artefact_id: str
    hash: str
    status: str
    message: str | None = None


class Report(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    version: int
    status: str
    configs: list[SlotReport] = []
    message: str | None = None


class Ack(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    id: str
    status: str
    message: str | None = None


class ServiceError(msgspec.Struct, frozen=True):
    error: str
    detail: str = ""


document_decoder = msgspec.json.Decoder(Document)
command_decoder = msgspec.json.Decoder(Command)
error_decoder = msgspec.json.Decoder(ServiceError)
encoder = msgspec.json.Encoder()


class NotConnected(aiomqtt.MqttError):
    def __init__(self, device_id: str) -> None:
        super().__init__(f"device {device_id} is not connected")


class Pacer:
    """Spaces out connection attempts to a rate (0: no limit)."""

    def __init__(self, rate: float) -> None:
        self._interval = 1.0 / rate if rate > 0 else 0.0
        self._next = 0.0

    async def wait(self) -> None:
        if not self._interval:
            return
        now = asyncio.get_running_loop().time()
        at = max(now, self._next)
        self._next = at + self._interval
        if at > now:
            await asyncio.sleep(at - now)


class Context:
    """What the devices of one worker share: settings, counters, pacing, the HTTP session."""

    def __init__(self, settings: Settings, stats: Stats, http: aiohttp.ClientSession) -> None:
        self.settings = settings
        self.stats = stats
        self.http = http
        self.pacer = Pacer(settings.connect_rate)
        self.connecting = asyncio.Semaphore(CONNECTING_MAX)


def telemetry_body(key: str, seq: int) -> bytes:
    temperature = round(random.uniform(18, 24), 2)  # noqa: S311 - not a secret
    values = {"temperature": temperature, key: seq}
    return encoder.encode({"status": "online", "telemetries": values})


class Device:
    """What every simulated device knows and how it answers, whatever its transport."""

    def __init__(self, spec: DeviceSpec, ctx: Context) -> None:
        self.spec = spec
        self.ctx = ctx
        self.up = False
        self.received = 0  # newest desired version received
        self.answered = 0  # newest version given a final answer
        self.status = ""
        self._seq = itertools.count(1)
        self._seen: set[str] = set()
        self._acked: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def converged(self) -> bool:
        return self.received > 0 and self.answered >= self.received

    @property
    def accepted(self) -> bool:
        return self.converged and self.status == "ACCEPTED"

    def wants(self, doc: Document) -> bool:
        """Whether to apply the document: newer than the last answered, and not silent."""
        self.received = max(self.received, doc.version)
        self.ctx.stats.count("documents")
        return doc.version > self.answered and self.spec.behaviour != Behaviour.SILENT

    def reports(self, doc: Document) -> tuple[Report, Report]:
        """IN_PROGRESS, then the final report of this device's part."""
        final = _FINAL[self.spec.behaviour]
        message = None if final == "ACCEPTED" else f"simulated {final.lower()}"
        slots = [
            SlotReport(slot=c.slot, artefact_id=c.artefact_id, hash=c.hash, status=final)
            for c in doc.configs
        ]
        return (
            Report(version=doc.version, status="IN_PROGRESS"),
            Report(version=doc.version, status=final, configs=slots, message=message),
        )

    def applied(self, doc: Document, final: Report) -> None:
        self.answered = max(self.answered, doc.version)
        self.status = final.status
        slot = next((c.artefact_id for c in doc.configs if c.slot == "device"), None)
        self.ctx.stats.count("reports")
        self.ctx.stats.event(
            "applied", self.spec.id, slot or f"version:{doc.version}", final.status
        )

    def wants_command(self, command: Command) -> bool:
        if command.id not in self._seen:
            self._seen.add(command.id)
            self.ctx.stats.count("commands_received")
        return command.id not in self._acked and self.spec.behaviour != Behaviour.SILENT

    def command_answers(self, command: Command) -> tuple[Ack, Ack]:
        failed = self.spec.behaviour == Behaviour.FAIL
        final = Ack(id=command.id, status="FAILED", message="simulated failure") if failed else None
        return Ack(id=command.id, status="ACKNOWLEDGED"), final or Ack(
            id=command.id, status="SUCCESS"
        )

    def command_done(self, command: Command, final: Ack) -> None:
        self._acked.add(command.id)
        self.ctx.stats.count("commands_done")
        if final.status != "SUCCESS":
            self.ctx.stats.count("commands_failed")
        self.ctx.stats.event("command", self.spec.id, command.id, final.status)

    async def run(self) -> None:
        """Play the device until cancelled."""
        raise NotImplementedError

    def next_seq(self) -> int:
        return next(self._seq)

    def spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.create_task(coro, name=f"sim:{self.spec.id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def cancel_tasks(self) -> None:
        for task in list(self._tasks):
            task.cancel()


class MqttDevice(Device):
    def __init__(self, spec: DeviceSpec, ctx: Context) -> None:
        super().__init__(spec, ctx)
        self.client: aiomqtt.Client | None = None
        self._prefix = f"devices/{spec.id}/"
        self._applying: asyncio.Task[None] | None = None

    async def run(self) -> None:
        """Stay connected until cancelled."""
        backoff = BACKOFF_MIN_S
        try:
            while True:
                await self.ctx.pacer.wait()
                was_up = await self._connect_once()
                # A session that was up starts over; repeated failures back off further.
                backoff = BACKOFF_MIN_S if was_up else min(backoff * 2, BACKOFF_MAX_S)
                self.ctx.stats.count("reconnects")
                await asyncio.sleep(backoff * random.uniform(0.5, 1.5))  # noqa: S311 - jitter
        finally:
            self.cancel_tasks()

    async def _connect_once(self) -> bool:
        settings = self.ctx.settings
        client = aiomqtt.Client(
            settings.mqtt_host,
            settings.mqtt_port,
            identifier=self.spec.id,
            username=self.spec.id,
            password=self.spec.key,
            timeout=settings.mqtt_timeout,
        )
        reached = False
        try:
            async with contextlib.AsyncExitStack() as stack:
                async with self.ctx.connecting:
                    started = time.monotonic()
                    await _enter(client, stack)
                    await client.subscribe([(self._prefix + s, 1) for s in SUBSCRIPTIONS])
                reached = True
                await self._serve(client, time.monotonic() - started)
        except aiomqtt.MqttError as exc:
            self.ctx.stats.error("mqtt", exc)
        return reached

    async def _serve(self, client: aiomqtt.Client, handshake_s: float) -> None:
        self.client, self.up = client, True
        self.ctx.stats.count("connects")
        # CONNECT to SUBACK: how close a connect storm brings devices to their timeout.
        self.ctx.stats.event("connected", self.spec.id, f"{handshake_s:.3f}", "")
        interval = self.ctx.settings.telemetry_interval
        telemetry = self.spawn(self._telemetry_loop(interval)) if interval > 0 else None
        try:
            async for message in client.messages:
                self._dispatch(message)
        finally:
            self.client, self.up = None, False
            if telemetry is not None:
                telemetry.cancel()

    def _dispatch(self, message: aiomqtt.Message) -> None:
        topic = message.topic.value
        payload = message.payload
        if not topic.startswith(self._prefix) or not isinstance(payload, bytes | bytearray):
            self.ctx.stats.count("foreign_messages")
            self.ctx.stats.event("foreign", self.spec.id, topic, "")
            return
        match topic[len(self._prefix) :]:
            case "desired":
                self._on_document(document_decoder.decode(payload))
            case "commands":
                command = command_decoder.decode(payload)
                if self.wants_command(command):
                    self.spawn(self._answer_command(command))
            case "errors":
                said = error_decoder.decode(payload)
                self.ctx.stats.errors[f"service said: {said.error} {said.detail[:60]}"] += 1

    def _on_document(self, doc: Document) -> None:
        if not self.wants(doc):
            return
        if self._applying is not None:
            self._applying.cancel()  # a newer document supersedes the one being applied
        self._applying = self.spawn(self._apply(doc))

    async def _apply(self, doc: Document) -> None:
        progress, final = self.reports(doc)
        try:
            await self.publish("reported", encoder.encode(progress))
            if self.ctx.settings.apply_delay:
                await asyncio.sleep(self.ctx.settings.apply_delay)
            await self.publish("reported", encoder.encode(final))
        except aiomqtt.MqttError as exc:
            self.ctx.stats.error("report", exc)  # re-applied when the document comes again
            return
        self.applied(doc, final)

    async def _answer_command(self, command: Command) -> None:
        first, final = self.command_answers(command)
        try:
            await self.publish("commands/ack", encoder.encode(first))
            await self.publish("commands/ack", encoder.encode(final))
        except aiomqtt.MqttError as exc:
            self.ctx.stats.error("ack", exc)
            return
        self.command_done(command, final)

    async def _telemetry_loop(self, interval: float) -> None:
        # Spread the fleet over the interval.
        await asyncio.sleep(random.uniform(0, interval))  # noqa: S311 - jitter
        while True:
            try:
                await self.send_telemetry("seq")
            except aiomqtt.MqttError as exc:
                self.ctx.stats.error("telemetry", exc)
                return
            await asyncio.sleep(interval)

    async def send_telemetry(self, key: str) -> None:
        """One QoS 1 telemetry message; returns once the service PUBACKed (= committed) it."""
        self.ctx.stats.count("telemetry_sent")
        await self.publish("telemetry", telemetry_body(key, self.next_seq()))
        self.ctx.stats.count("telemetry_acked")

    async def publish(self, subtopic: str, payload: bytes) -> None:
        client = self.client
        if client is None:
            raise NotConnected(self.spec.id)
        await client.publish(self._prefix + subtopic, payload, qos=1)


async def _enter(client: aiomqtt.Client, stack: contextlib.AsyncExitStack) -> None:
    """Connect. aiomqtt leaves paho's socket open when CONNACK does not come in time, so the
    broker would keep a half-open session; close it before trying again."""
    try:
        await stack.enter_async_context(client)
    except aiomqtt.MqttError:
        with contextlib.suppress(Exception):
            client._client.disconnect()
        raise
