"""The embedded amqtt 0.12.1 broker, and every workaround that touches amqtt internals.

amqtt defects we design around (each pinned by a test in tests/test_bus_embedded.py):
- Its retained store leaks: on connect a client receives every retained message matching *any*
  client's subscription, and each SUBSCRIBE scans all retained messages. We never use it: desired
  documents are delivered by the service from SQLite, retained publishes are dropped, and the
  connect path is re-implemented without the retained replay (which also removes its
  `dictionary changed size during iteration` race).
- It acknowledges inbound QoS 1 before anyone processed the message. We PUBACK only once the
  service has committed the message (`_qos1_flow`), so a PUBACK means "in the database".
- It hands every inbound message to the session's message loop through a queue, and that loop
  waits on four futures, checks the ACL through a task per topic plugin and announces the
  message through a task per event plugin: five to seven tasks and futures per message before
  the service sees it. A device's QoS 1 message is handled in the task that read it instead
  (`FleetBroker.inbound`); only QoS 0 and 2 take amqtt's way.
- It forwards every device message to every matching subscription, scanning all subscriptions per
  message. Devices only talk to the service here, so device messages are not re-broadcast.
- It removes a session's subscriptions by scanning every filter of every client, on each
  clean-session connect and each cleanup: O(fleet) per connection. Our ACL confines a device to
  five filters under its own prefix, so cleanup looks only at those.
- After every SUBSCRIBE it logs `repr()` of the whole subscription table, evaluated even when
  debug logging is off: O(fleet) per subscribe. Our table's repr is its size.
- Its broker times out every read at the client's keep-alive, with an `asyncio.wait_for` (a
  task and a timer per packet), and then does nothing (`handle_read_timeout` is a no-op), so a
  device whose power or network went away without a FIN stayed online for good. Reads are not
  timed here; one sweep a second closes the sessions that sent nothing for 1.5 times their
  keep-alive ([MQTT-3.1.2-24], `FleetBroker.keepalive_loop`).
- It does not redeliver unacknowledged QoS 1 within a session. The protocol is level-triggered
  instead: every connect and subscribe re-sends current state (see gateway.py).
- It keeps about 230 objects the cyclic garbage collector tracks per connected session (a
  `transitions` state machine with its states, events and transitions, queues, tasks) and
  allocates futures and timer handles for every packet, yet makes almost no reference cycles.
  Under CPython's default thresholds the collector re-traverses the whole fleet's sessions again
  and again. Once the broker is up, what exists is frozen and young objects are collected less
  often (`relax_collector`).
"""

import asyncio
import enum
import gc
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, ClassVar

from amqtt.adapters import ReaderAdapter
from amqtt.broker import Broker
from amqtt.contexts import Action
from amqtt.errors import AMQTTError
from amqtt.events import BrokerEvents
from amqtt.mqtt.constants import QOS_1
from amqtt.mqtt.packet import PUBACK
from amqtt.mqtt.protocol.broker_handler import BrokerProtocolHandler
from amqtt.mqtt.protocol.handler import INCOMING, ProtocolHandler
from amqtt.plugins.base import BaseAuthPlugin, BasePlugin, BaseTopicPlugin
from amqtt.session import ApplicationMessage, Session
from transitions import MachineError

from fleetstate.bus import (
    DEVICE_TOPICS_OUT,
    MAX_PAYLOAD,
    DeviceEvents,
    device_topic,
    may_publish,
    may_subscribe,
    subtopic_of,
)

log = logging.getLogger(__name__)

GC_THRESHOLDS = (50_000, 50, 1_000)
"""CPython's default is (700, 10, 10). Measured at 1,000 devices (docs/benchmarks.md): the
defaults spent 18% of the service's time collecting (264 ms per full collection over 400,000
objects) and found 3,000 garbage objects in 38 s; a full collection at 10,000 devices takes
seconds, during which no device is served."""


def relax_collector() -> None:
    """Freeze the objects alive now (modules, the app, the broker) out of every collection and
    collect young objects in bigger, rarer batches, so full collections over the fleet's
    sessions become rare. Reference counting still frees nearly everything at once."""
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


# -- inbound QoS 1: handled where it was read, PUBACK only after the commit ---------------------


class Verdict(enum.Enum):
    ACK = "ack"
    """Processed (or dropped and counted): PUBACK."""
    NO_ACK = "no-ack"
    """Not processed: no PUBACK, so the device sends it again."""
    CLOSE = "close"
    """A protocol violation: the connection is closed."""


Inbound = Callable[[str, ApplicationMessage], Awaitable[Verdict]]
_INBOUND = "fleet_inbound"
_PUBACK = bytes([PUBACK << 4, 2])
_original_qos1_flow = ProtocolHandler._handle_qos1_message_flow


async def _qos1_flow(self: ProtocolHandler[Any], app_message: ApplicationMessage) -> None:
    inbound: Inbound | None = getattr(self, _INBOUND, None)
    session = self.session
    if (
        inbound is None
        or session is None
        or session.client_id is None
        or getattr(app_message, "direction", None) != INCOMING
    ):
        await _original_qos1_flow(self, app_message)
        return
    verdict = await inbound(session.client_id, app_message)
    if verdict is Verdict.CLOSE:
        await self.handle_connection_closed()
    elif verdict is Verdict.ACK and app_message.packet_id is not None:
        await _send_puback(self, app_message.packet_id)


async def _send_puback(handler: ProtocolHandler[Any], packet_id: int) -> None:
    """Four bytes. amqtt's `_send_packet` builds a packet object, stamps it with a datetime and
    fires an event no plugin listens to for each one (11% of the service's time under MQTT
    telemetry load)."""
    writer = handler.writer
    if writer is None:
        return
    try:
        async with handler._write_lock:
            writer.write(_PUBACK + packet_id.to_bytes(2, "big"))
            await writer.drain()
    except (ConnectionResetError, BrokenPipeError):
        await handler.handle_connection_closed()


BrokerProtocolHandler._handle_qos1_message_flow = _qos1_flow


# -- keep-alive: one sweep instead of a timed read per packet -----------------------------------

KEEPALIVE_SWEEP_S = 1.0


class _StampedReader(ReaderAdapter):  # type: ignore[misc]
    """The session's reader, noting when the client last sent anything."""

    def __init__(self, inner: ReaderAdapter, keep_alive_s: int) -> None:
        self._inner = inner
        self.limit_s = 1.5 * keep_alive_s if keep_alive_s > 0 else None
        self.last_read = time.monotonic()
        self.closed = False

    async def read(self, n: int = -1) -> bytes:
        data: bytes = await self._inner.read(n)
        self.last_read = time.monotonic()
        return data

    def feed_eof(self) -> None:
        self._inner.feed_eof()

    def overdue(self, now: float) -> bool:
        return not self.closed and self.limit_s is not None and now - self.last_read > self.limit_s


# -- the broker --------------------------------------------------------------------------------


class _SubscriptionTable(dict[str, list[tuple[Session, int]]]):
    def __repr__(self) -> str:
        return f"<{len(self)} subscription filters>"


class FleetBroker(Broker):  # type: ignore[misc]
    """amqtt's Broker without its retained store and without device-to-device forwarding."""

    def __init__(self, config: dict[str, Any], events: DeviceEvents) -> None:
        super().__init__(config)
        self._subscriptions = _SubscriptionTable()
        self._events = events

    async def inbound(self, device_id: str, message: ApplicationMessage) -> Verdict:
        """One message a device published: checked against the ACL, then given to the service.
        A forbidden topic is dropped and counted, and still acknowledged so the client moves
        on; the topics amqtt closes the connection for close it here too."""
        topic = message.topic
        if not topic or "#" in topic or "+" in topic or topic.startswith("$"):
            log.warning("%s published on the invalid topic %r; closing", device_id, topic)
            return Verdict.CLOSE  # [MQTT-4.7.3-1], [MQTT-3.3.2-2], [MQTT-4.7.2-1]
        sub = subtopic_of(device_id, topic)
        if sub is None or not may_publish(device_id, topic):
            self._events.forbidden(device_id, topic)
            return Verdict.ACK
        # Shielded: amqtt cancels a session's packet tasks when its connection drops, and a
        # message handed over must still reach its end (the commit and the events after it)
        # even when its PUBACK can no longer be sent.
        ok = await asyncio.shield(self._events.message(device_id, sub, bytes(message.data)))
        return Verdict.ACK if ok else Verdict.NO_ACK

    async def keepalive_loop(self) -> None:
        """Close every session that sent nothing for 1.5 times its keep-alive, once a second."""
        while True:
            await asyncio.sleep(KEEPALIVE_SWEEP_S)
            now = time.monotonic()
            for session, handler in list(self._sessions.values()):
                reader = handler.reader
                if (
                    isinstance(reader, _StampedReader)
                    and reader.overdue(now)
                    and session.transitions.state == "connected"  # not a kept, idle session
                ):
                    reader.closed = True
                    log.info("%s sent nothing within its keep-alive; closing", session.client_id)
                    await handler.handle_connection_closed()

    async def retain_message(self, *_args: Any, **_kwargs: Any) -> None:
        return

    async def _publish_retained_messages_for_subscription(self, *_args: Any) -> None:
        return

    async def _broadcast_message(self, session: Session | None, *_args: Any, **_kw: Any) -> None:
        return

    async def _del_all_subscriptions(self, session: Session) -> None:
        if session.client_id is None:
            return
        prefix = device_topic(session.client_id, "")
        for sub in (*DEVICE_TOPICS_OUT, "#", "+"):
            topic_filter = prefix + sub
            if self._del_subscription(topic_filter, session) and not self._subscriptions.get(
                topic_filter
            ):
                self._subscriptions.pop(topic_filter, None)

    async def _handle_client_session(
        self,
        reader: Any,
        writer: Any,
        client_session: Session,
        handler: BrokerProtocolHandler,
        server: Any,
        listener_name: str,
    ) -> None:
        """amqtt's own connect path, less the replay of retained messages over all filters."""
        authenticated = await self._authenticate(
            client_session, self.listeners_config[listener_name]
        )
        while True:
            try:
                client_session.transitions.connect()
                break
            except (MachineError, ValueError):
                if client_session.transitions.is_connected():
                    old_session = self._sessions[client_session.client_id]
                    await old_session[1].handle_connection_closed()
                    await old_session[1].stop()
                    break
                await asyncio.sleep(1)
        # No timed reads in amqtt's reader loop: `keepalive_loop` enforces the keep-alive.
        reader = _StampedReader(reader, client_session.keep_alive)
        client_session.keep_alive = 0
        handler.attach(client_session, reader, writer)
        setattr(handler, _INBOUND, self.inbound)
        self._sessions[client_session.client_id] = (client_session, handler)
        await handler.mqtt_connack_authorize(authenticated)
        if not authenticated:
            await writer.close()
            return
        await self.plugins_manager.fire_event(
            BrokerEvents.CLIENT_CONNECTED,
            client_id=client_session.client_id,
            client_session=client_session,
        )
        await handler.start()
        await self._client_message_loop(client_session, handler)


# -- plugins: amqtt builds them from dotted paths, so they find their hub through a registry ------

_hubs: dict[str, "EmbeddedBroker"] = {}


@dataclass
class _HubConfig:
    hub: str = ""


class DeviceAuthPlugin(BaseAuthPlugin):  # type: ignore[misc]
    Config = _HubConfig

    async def authenticate(self, *, session: Session) -> bool:
        hub = _hubs[self.context.config.hub]
        username, password = session.username, session.password
        if not username or password is None or username != session.client_id:
            return False
        secret = password.decode() if isinstance(password, bytes) else str(password)
        return await hub.events.authenticate(username, secret)


class DeviceTopicPlugin(BaseTopicPlugin):  # type: ignore[misc]
    Config = _HubConfig

    async def topic_filtering(
        self, *, session: Session | None = None, topic: str | None = None, action: Any = None
    ) -> bool:
        if session is None or topic is None or session.client_id is None:
            return False
        device_id = session.client_id
        if action == Action.SUBSCRIBE:
            return may_subscribe(device_id, topic)
        if action == Action.PUBLISH:
            return may_publish(device_id, topic)  # counted in FleetBroker.inbound
        return subtopic_of(device_id, topic) is not None


class DeviceEventsPlugin(BasePlugin[Any]):  # type: ignore[misc]
    Config = _HubConfig

    @property
    def _events(self) -> DeviceEvents:
        return _hubs[self.context.config.hub].events

    async def on_broker_client_connected(self, *, client_id: str, client_session: Session) -> None:
        self._events.connected(client_id)

    async def on_broker_client_disconnected(
        self, *, client_id: str, client_session: Session
    ) -> None:
        self._events.disconnected(client_id)

    async def on_broker_client_subscribed(self, *, client_id: str, topic: str, qos: int) -> None:
        self._events.subscribed(client_id, topic)

    async def on_broker_message_received(self, *, client_id: str, message: Any) -> None:
        """QoS 0 and 2 messages (QoS 1 never reach amqtt's message loop: `_qos1_flow`). amqtt
        itself closes the connection for an invalid topic, and acknowledged QoS 2 already."""
        if message is not None:
            await _hubs[self.context.config.hub].broker.inbound(client_id, message)


class EmbeddedBroker:
    """The `Bus` on top of amqtt. Build inside the running loop; `start()`, then `stop()`."""

    PLUGINS: ClassVar[tuple[type, ...]] = (DeviceAuthPlugin, DeviceTopicPlugin, DeviceEventsPlugin)

    def __init__(self, host: str, port: int, events: DeviceEvents) -> None:
        self.events = events
        self._key = f"hub-{id(self):x}"
        plugins = {
            f"{cls.__module__}.{cls.__qualname__}": {"hub": self._key} for cls in self.PLUGINS
        }
        config = {
            "listeners": {"default": {"type": "tcp", "bind": f"{host}:{port}"}},
            "plugins": plugins,
        }
        _hubs[self._key] = self
        self._broker = FleetBroker(config, events)
        self._keepalive: asyncio.Task[None] | None = None

    @property
    def broker(self) -> FleetBroker:
        return self._broker

    async def start(self) -> tuple[str, int]:
        await self._broker.start()
        self._keepalive = asyncio.create_task(self._broker.keepalive_loop(), name="mqtt-keepalive")
        relax_collector()
        server = self._broker._servers["default"].instance
        host, port = server.sockets[0].getsockname()[:2]
        return str(host), int(port)

    async def stop(self) -> None:
        if self._keepalive is not None:
            self._keepalive.cancel()
        try:
            await self._broker.shutdown()
        finally:
            _hubs.pop(self._key, None)

    def _connected_handler(self, device_id: str) -> BrokerProtocolHandler | None:
        session, handler = self._broker.sessions.get(device_id, (None, None))
        if session is None or session.transitions.state != "connected":
            return None
        return handler

    def is_subscribed(self, device_id: str, subtopic: str) -> bool:
        subscriptions = self._broker.subscriptions
        prefix = device_topic(device_id, "")
        for topic_filter in (prefix + subtopic, prefix + "#", prefix + "+"):
            if topic_filter == prefix + "+" and "/" in subtopic:
                continue
            if any(s.client_id == device_id for s, _ in subscriptions.get(topic_filter, ())):
                return True
        return False

    async def publish(self, device_id: str, subtopic: str, payload: bytes) -> bool:
        handler = self._connected_handler(device_id)
        if handler is None or not self.is_subscribed(device_id, subtopic):
            return False
        if len(payload) > MAX_PAYLOAD:
            log.error("refusing to publish %d bytes to %s", len(payload), device_id)
            return False
        try:
            await handler.mqtt_publish(device_topic(device_id, subtopic), payload, QOS_1, False)
        except (TimeoutError, AMQTTError, ConnectionError, asyncio.CancelledError) as exc:
            if isinstance(exc, asyncio.CancelledError) and asyncio.current_task().cancelling():  # type: ignore[union-attr]
                raise
            log.info("publish to %s/%s not acknowledged: %r", device_id, subtopic, exc)
            return False
        return True

    def connected_devices(self) -> list[str]:
        return [
            cid
            for cid, (session, _h) in self._broker.sessions.items()
            if session.transitions.state == "connected"
        ]

    async def disconnect(self, device_id: str) -> None:
        handler = self._connected_handler(device_id)
        if handler is not None:
            await handler.handle_connection_closed()
