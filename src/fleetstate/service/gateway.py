"""The service side of the device protocol: what happens when a device connects, subscribes,
publishes, and how desired documents reach it.

Level-triggered by design: every connect and every subscribe to `desired` re-sends the device's
current document from SQLite, and every change is pushed to the connected session. The broker's
retained store is never used. Writes are submitted to the store's single writer without waiting,
so their order is the order the broker reported the events in.
"""

import asyncio
import logging
from collections import Counter
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from typing import Any

import msgspec

from fleetstate.bus import MAX_PAYLOAD, Bus, device_topic
from fleetstate.errors import FleetstateError, StoreClosed
from fleetstate.service import credentials, devices, reports
from fleetstate.service.command_delivery import Deadlines, Dispatcher
from fleetstate.service.coordination import KeyedLocks
from fleetstate.service.desired import DesiredChange
from fleetstate.service.events import EventBus
from fleetstate.service.telemetry import Settled
from fleetstate.store import Store

log = logging.getLogger(__name__)


class DeviceError(msgspec.Struct, frozen=True, kw_only=True):
    """Published on `devices/{id}/errors` whenever the service rejects a device's message."""

    topic: str
    error: str
    detail: str


class Status(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """`devices/{id}/status` (SPEC sections 3 and 10): a device's birth message and Last Will."""

    online: bool


_error_encoder = msgspec.json.Encoder()
_status_decoder = msgspec.json.Decoder(Status)

InboundHandler = Callable[[str, bytes], Awaitable[None]]
"""Handles one device message on a subtopic: (device_id, payload). Raises FleetstateError or
msgspec.DecodeError for bad input; returns once the effect is committed."""
SoonHandler = Callable[[str, bytes, Settled], None]
"""`InboundHandler` without a coroutine: (device_id, payload, settled); `settled` hears
(result, None) once the effect is committed, or (None, the error)."""


class Gateway:
    """The device protocol over one `Bus`. Owns command delivery (`commands`), which it tells of
    connects, subscriptions, acks, delivered documents and commands a report moved."""

    def __init__(
        self,
        store: Store,
        tasks: asyncio.TaskGroup,
        events: EventBus,
        bus: Bus,
        *,
        record_telemetry: InboundHandler,
        record_telemetry_soon: SoonHandler,
        max_forbidden: int,
        deadlines: Deadlines,
        command_locks: KeyedLocks,
    ) -> None:
        self._store = store
        self.events = events
        self._tasks = tasks
        self.bus = bus
        self._record_telemetry = record_telemetry
        self._record_telemetry_soon = record_telemetry_soon
        self._max_forbidden = max_forbidden
        self._verifier = credentials.Verifier()
        self._forbidden: Counter[str] = Counter()
        self._presence_pending: dict[str, asyncio.Future[Any]] = {}
        self.forbidden_total = 0
        self.messages_in: Counter[str] = Counter()
        """Messages received per subtopic (read by /metrics)."""
        self.commands = Dispatcher(store, self, tasks, deadlines=deadlines, locks=command_locks)

    def _spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> None:
        try:
            self._tasks.create_task(coro, name=name)
        except RuntimeError:
            coro.close()  # shutting down: the device gets current state when it reconnects
            log.debug("not starting %s during shutdown", name)

    # -- DeviceEvents ---------------------------------------------------------------------------

    async def authenticate(self, device_id: str, access_key: str) -> bool:
        stored = await devices.key_hash(self._store, device_id)
        return stored is not None and await self._verifier.verify(access_key, stored)

    def connected(self, device_id: str, receives: frozenset[str]) -> None:
        self._forbidden.pop(device_id, None)
        self._record_presence(device_id, online=True)
        # A persistent session keeps its subscriptions and sends no SUBSCRIBE on reconnect.
        if receives:
            self._spawn(self._deliver_pending(device_id, receives), f"on-connect:{device_id}")

    async def _deliver_pending(self, device_id: str, receives: frozenset[str]) -> None:
        """What SQLite holds for a device that can now receive it: its document, then its
        commands (oldest first)."""
        if "desired" in receives:
            await self.send_current(device_id)
        if "commands" in receives:
            await self.commands.push(device_id)

    def disconnected(self, device_id: str) -> None:
        self._record_presence(device_id, online=False)

    def _record_presence(self, device_id: str, *, online: bool) -> None:
        try:
            written = self._store.submit(devices.presence_job(device_id, online=online))
        except StoreClosed:
            # A connection that ends after the store closed (shutting down): the next start
            # marks every device offline anyway (devices.mark_all_offline).
            log.debug("presence of %s not recorded: the store is closed", device_id)
            return
        written.add_done_callback(self._presence_written)
        self._presence_pending[device_id] = written
        written.add_done_callback(lambda _w: self._presence_settled(device_id, written))

    def _presence_settled(self, device_id: str, written: "asyncio.Future[Any]") -> None:
        if self._presence_pending.get(device_id) is written:
            del self._presence_pending[device_id]

    async def _presence_recorded(self, device_id: str) -> None:
        """Wait until the device's latest connect or disconnect is committed, so a device that
        got its document reads as online over REST at once."""
        pending = self._presence_pending.get(device_id)
        if pending is not None and not pending.done():
            await asyncio.wait([pending])

    def _presence_written(self, written: "asyncio.Future[dict[str, Any] | None]") -> None:
        if written.cancelled() or written.exception() is not None:
            log.error(
                "recording presence failed: %r",
                None if written.cancelled() else written.exception(),
            )
            return
        event = written.result()
        if event is not None:
            self.events.publish(event.pop("org_id"), "presence", event)

    def subscribed(self, device_id: str, receives: frozenset[str]) -> None:
        # A clean-session device subscribes only after it connected: what must reach it on a
        # topic cannot rely on the connect alone.
        if "desired" in receives:
            self._spawn(self.send_current(device_id), f"deliver-on-subscribe:{device_id}")
        if "commands" in receives:
            self._spawn(self.commands.push(device_id), f"on-subscribe:{device_id}")

    def forbidden(self, device_id: str, topic: str) -> None:
        self.forbidden_total += 1
        self._forbidden[device_id] += 1
        log.info("device %s may not publish on %s", device_id, topic)
        if self._forbidden[device_id] == self._max_forbidden:
            log.warning(
                "disconnecting %s after %d forbidden publishes", device_id, self._max_forbidden
            )
            self._spawn(self.bus.disconnect(device_id), f"disconnect:{device_id}")

    async def message(self, device_id: str, subtopic: str, payload: bytes) -> bool:
        self.messages_in[subtopic] += 1
        topic = device_topic(device_id, subtopic)
        if len(payload) > MAX_PAYLOAD:
            self.reject(
                device_id, topic, "too_large", f"{len(payload)} bytes; at most {MAX_PAYLOAD}"
            )
            return True
        try:
            await self._dispatch(device_id, subtopic, payload)
        except (msgspec.DecodeError, FleetstateError) as exc:
            return self._refused(device_id, topic, exc)
        except Exception:
            log.exception("processing %s failed; not acknowledging it", topic)
            return False
        return True

    def message_soon(
        self, device_id: str, subtopic: str, payload: bytes, answered: Callable[[bool], None]
    ) -> bool:
        """`message` for telemetry, the bulk of device traffic, with no task or future of its
        own; False for every other message (then `message` takes it)."""
        if subtopic != "telemetry" or len(payload) > MAX_PAYLOAD:
            return False
        self.messages_in[subtopic] += 1

        def settled(_result: Any, failure: BaseException | None) -> None:
            topic = device_topic(device_id, subtopic)
            answered(failure is None or self._refused(device_id, topic, failure))

        self._record_telemetry_soon(device_id, payload, settled)
        return True

    def _refused(self, device_id: str, topic: str, failure: BaseException) -> bool:
        """Tell the device why its message was refused; True when that is the answer (bad
        input: acknowledged, so the device moves on), False for a fault of ours."""
        if isinstance(failure, msgspec.DecodeError):
            self.reject(device_id, topic, _decode_error_code(failure), str(failure))
        elif isinstance(failure, FleetstateError):
            self.reject(device_id, topic, failure.code, failure.message)
        else:
            log.error("processing %s failed; not acknowledging it", topic, exc_info=failure)
            return False
        return True

    async def _dispatch(self, device_id: str, subtopic: str, payload: bytes) -> None:
        match subtopic:
            case "reported":
                await self._reported(device_id, payload)
            case "telemetry":
                await self._record_telemetry(device_id, payload)
            case "commands/ack":
                await self.commands.on_ack(device_id, payload)
            case "status":
                # A birth message gets the device its pending commands, as a connect does. An
                # `online: false` (the Last Will) changes nothing: presence follows the
                # connection, whose end was recorded already, and a late Will must not mark a
                # device that connected again offline.
                # Spawned: the push waits for PUBACKs this device's own inbound queue carries.
                if _status_decoder.decode(payload).online:
                    self._spawn(self.commands.push(device_id), f"on-status:{device_id}")
            case _:
                detail = f"messages on {subtopic!r} are not handled by this service yet"
                self.reject(device_id, device_topic(device_id, subtopic), "not_supported", detail)

    async def _reported(self, device_id: str, payload: bytes) -> None:
        report = reports.report_decoder.decode(payload)
        # Its event and the commands it moved go out from the outbox after the commit.
        await reports.record(self._store, device_id, report, payload)

    # -- delivery --------------------------------------------------------------------------------

    def reject(self, device_id: str, topic: str, code: str, detail: str) -> None:
        payload = _error_encoder.encode(DeviceError(topic=topic, error=code, detail=detail))
        self._spawn(self.bus.send(device_id, "errors", payload), f"error-to:{device_id}")

    async def send_current(self, device_id: str) -> bool:
        """Publish the device's document from SQLite, when the bus can deliver it now."""
        await self._presence_recorded(device_id)
        found = await devices.desired_document(self._store, device_id)
        if found is None:
            return False
        version, document = found
        return await self._publish_desired(device_id, version, document)

    async def _publish_desired(self, device_id: str, version: int, document: bytes) -> bool:
        acknowledged = await self.bus.set_desired(device_id, version, document)
        await self.commands.on_delivered(device_id, version, acknowledged)
        return acknowledged

    def deliver(self, changes: Iterable[DesiredChange]) -> None:
        """Push changed documents to the devices that are connected now; the rest get theirs
        when they next connect or subscribe."""
        for change in changes:
            if self.bus.is_connected(change.device_id):
                self._spawn(
                    self._publish_desired(change.device_id, change.version, change.document),
                    f"deliver:{change.device_id}:{change.version}",
                )


def _decode_error_code(exc: msgspec.DecodeError) -> str:
    return "schema" if isinstance(exc, msgspec.ValidationError) else "invalid_json"
