"""One device's MQTT connection: an `asyncio.Protocol` over the codec.

Bytes are parsed into whole packets as they arrive. Packets that need nothing asynchronous
(PINGREQ, PUBACK, SUBSCRIBE, UNSUBSCRIBE) are answered at once when nothing is queued before them;
so is a PUBLISH the service takes without a coroutine (`DeviceEvents.message_soon`: telemetry),
whose PUBACK follows from a callback once it committed, the packets read meanwhile waiting
behind it. The rest (CONNECT: authentication; other PUBLISHes: the service's processing) go to a
short queue that one task per connection works through in order, and only while there is work,
so an idle connection holds no task. At `inbound_queue` packets, or while the device does not
read what we send, the connection stops reading: TCP then slows the device down and nothing
grows.

Before its CONNACK 0 a connection touches no state: the CONNECT is checked first, and only an
accepted one attaches to (or takes over) the device's session (`Endpoint.attach`).
"""

import asyncio
import functools
import logging
import time
from collections import deque
from typing import TYPE_CHECKING

from fleetstate.bus import may_publish, may_subscribe, subtopic_of
from fleetstate.bus.embedded import codec
from fleetstate.bus.embedded.codec import (
    MQTT_5,
    Connect,
    Disconnect,
    Packet,
    PingReq,
    Prop,
    ProtocolError,
    PubAck,
    Publish,
    Reason,
    Subscribe,
    Unsubscribe,
    Will,
)
from fleetstate.tls import peer_common_name

if TYPE_CHECKING:
    from fleetstate.bus.embedded.endpoint import EmbeddedBroker

log = logging.getLogger(__name__)

CLOSE_GRACE_S = 5.0
"""A closed connection whose last bytes the peer does not read is aborted after this long."""
_UNSUPPORTED_LEVEL = codec.encode_connack(4, Reason.UNSUPPORTED_VERSION)


class Session:
    """What a device's session keeps across its connections: its subscriptions (filter → QoS)."""

    __slots__ = ("connection", "device_id", "expires_at", "expiry", "subscriptions")

    def __init__(self, device_id: str) -> None:
        self.device_id = device_id
        self.subscriptions: dict[str, int] = {}
        self.connection: Connection | None = None
        self.expiry: int | None = 0
        """Seconds kept after a disconnect; None: until a clean connect."""
        self.expires_at: float | None = None

    def granted(self, topic: str, subtopic: str) -> int | None:
        """The QoS this session receives `topic` at, or None when it is not subscribed."""
        subs = self.subscriptions
        found = subs.get(topic)
        prefix = topic[: len(topic) - len(subtopic)]
        for wildcard in ("#", "+"):
            if wildcard == "+" and "/" in subtopic:
                continue
            qos = subs.get(prefix + wildcard)
            if qos is not None and (found is None or qos > found):
                found = qos
        return found


def untie(transport: asyncio.BaseTransport | None) -> None:
    """Break the reference cycle CPython's selector transport keeps through its read callback
    (`_read_ready_cb`, a bound method of itself), so the transport, its socket object and its
    addresses are freed by reference counting when the connection is lost. Left in the cycle,
    they wait for the cyclic collector, which at the service's thresholds (`app.GC_THRESHOLDS`)
    runs only after thousands of connections: 10,000 refused ones left 5 MiB of RSS that way.
    A lost transport reads no more, so nothing calls the callback again."""
    if getattr(transport, "_read_ready_cb", None) is not None:
        transport._read_ready_cb = None  # type: ignore[union-attr]


class Connection(asyncio.Protocol):
    __slots__ = (
        "_answer_waiter",
        "_buffer",
        "_closed",
        "_endpoint",
        "_inflight",
        "_next_id",
        "_not_acked",
        "_publishing",
        "_queue",
        "_read_paused",
        "_tcp",
        "_transport",
        "_will",
        "_window",
        "_worker",
        "_write_paused",
        "address",
        "keep_alive_s",
        "last_read",
        "level",
        "max_outgoing",
        "opened",
        "peer_cn",
        "session",
    )

    def __init__(
        self, endpoint: "EmbeddedBroker", tcp: asyncio.BaseTransport | None = None
    ) -> None:
        self._endpoint = endpoint
        self._transport: asyncio.Transport | None = None
        self._tcp = tcp
        """Under a TLS transport, the TCP one (untied when lost, as a plain one is)."""
        self._buffer = bytearray()
        self._queue: deque[Packet] = deque()
        self._worker: asyncio.Task[None] | None = None
        self._publishing = False
        """A PUBLISH taken by `message_soon` is not answered yet: what follows it waits."""
        self._answer_waiter: asyncio.Future[None] | None = None
        self._closed = False
        self._read_paused = self._write_paused = False
        self._inflight: dict[int, asyncio.Future[bool]] = {}
        self._next_id = 0
        self._window: asyncio.Semaphore | None = None
        self._not_acked = 0
        """QoS 1 PUBLISHes read from an MQTT 5 device and not yet answered by a PUBACK."""
        self._will: Will | None = None
        """The accepted CONNECT's Will, until a normal DISCONNECT discards it."""
        self.level: int | None = None
        self.session: Session | None = None
        self.address = "?"
        self.peer_cn: str | None = None
        self.opened = self.last_read = time.monotonic()
        self.keep_alive_s: float | None = None
        self.max_outgoing = codec.MAX_REMAINING

    # -- asyncio.Protocol ------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        peer = transport.get_extra_info("peername")
        self.address = str(peer[0]) if isinstance(peer, tuple) else str(peer)
        self.peer_cn = peer_common_name(transport.get_extra_info("peercert"))
        self._endpoint.opened(self)

    def data_received(self, data: bytes) -> None:
        if self._closed:
            return
        self.last_read = time.monotonic()
        self._buffer += data
        self._parse()

    def eof_received(self) -> bool:
        return False  # close our side too: a half-closed socket is never kept

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        self._buffer = bytearray()
        self._fail_inflight()
        untie(self._tcp or self._transport)
        self._endpoint.lost(self)

    def pause_writing(self) -> None:
        self._write_paused = True  # the device does not read: stop reading what it sends
        self._update_reading()

    def resume_writing(self) -> None:
        self._write_paused = False
        self._update_reading()

    # -- reading ---------------------------------------------------------------------------------

    def _parse(self) -> None:
        limit = self._queue_bound()
        queue = self._queue
        while len(queue) < limit and not self._closed:
            try:
                found = codec.read_packet(
                    self._buffer, self.level, self._endpoint.limits.max_packet_bytes
                )
            except ProtocolError as exc:
                self._protocol_error(exc)
                return
            if found is None:
                break
            if isinstance(found, Connect):
                self.level = found.level
            elif self._over_receive_maximum(found):
                return
            if self._idle() and (self._answer_at_once(found) or self._publish_soon(found)):
                continue
            queue.append(found)
        if queue and not self._closed:
            self._start_work()
        self._update_reading()

    def _idle(self) -> bool:
        return self._worker is None and not self._publishing and not self._queue

    def _start_work(self) -> None:
        """Work through the queue in a task, unless a task or an unanswered PUBLISH is ahead."""
        if self._worker is None and not self._publishing:
            self._worker = asyncio.get_running_loop().create_task(
                self._work(), name=f"mqtt-inbound:{self.address}"
            )

    def _update_reading(self) -> None:
        transport = self._transport
        if transport is None or self._closed:
            return
        pause = self._write_paused or len(self._queue) >= self._queue_bound()
        if pause != self._read_paused:
            self._read_paused = pause
            if pause:
                transport.pause_reading()
            else:
                transport.resume_reading()

    def _queue_bound(self) -> int:
        """Packets read ahead of the worker before reading pauses. MQTT 5 devices are told
        `inbound_queue` as their Receive Maximum; one packet more is read so that a device
        sending beyond it is seen doing so (and disconnected) rather than only slowed down."""
        limit = self._endpoint.limits.inbound_queue
        return limit + 1 if self.level == MQTT_5 else limit

    def _over_receive_maximum(self, packet: Packet) -> bool:
        """Count an MQTT 5 QoS 1 PUBLISH against the Receive Maximum the CONNACK announced; a
        device over it is disconnected with 0x93 [MQTT-3.3.4-9] (True then)."""
        if not isinstance(packet, Publish) or packet.qos != 1 or self.level != MQTT_5:
            return False
        self._not_acked += 1
        if self._not_acked <= self._endpoint.limits.inbound_queue:
            return False
        name = self.session.device_id if self.session is not None else self.address
        log.info("%s sent more QoS 1 publishes than its Receive Maximum; closing", name)
        self.close(Reason.RECEIVE_MAXIMUM_EXCEEDED)
        return True

    def _answer_at_once(self, packet: Packet) -> bool:
        """Handle a packet that needs no waiting, if the connection is accepted already."""
        if self.session is None:
            return False
        if isinstance(packet, PingReq):
            self._write(codec.PINGRESP_BYTES)
        elif isinstance(packet, PubAck):
            self._puback(packet)
        elif isinstance(packet, Subscribe):
            self._subscribe(packet)
        elif isinstance(packet, Unsubscribe):
            self._unsubscribe(packet)
        else:
            return False
        return True

    async def _work(self) -> None:
        """Work through the queue in order. Never cancelled by the connection's end: a message
        read before the device went away is still processed to its commit (without a PUBACK,
        which has nowhere to go); the endpoint waits for these tasks when it stops."""
        queue = self._queue
        try:
            while queue:
                found = queue.popleft()
                if self._closed and not isinstance(found, Publish):
                    continue
                try:
                    await self._handle(found)
                except Exception:  # a fault of ours: this connection ends, the service runs on
                    log.exception("handling %s from %s failed", type(found).__name__, self.address)
                    queue.clear()
                    self.close(Reason.UNSPECIFIED)
                    return
                if self._read_paused and not self._closed:
                    self._parse()  # room in the queue again: take what the buffer holds
        finally:
            self._worker = None

    async def _handle(self, packet: Packet) -> None:
        if isinstance(packet, Connect):
            await self._connect(packet)
        elif self.session is None:
            return  # refused: nothing after the CONNECT counts
        elif isinstance(packet, Publish):
            await self._publish(packet)
        elif isinstance(packet, Disconnect):
            self._disconnect(packet)
        else:
            self._answer_at_once(packet)

    # -- CONNECT ---------------------------------------------------------------------------------

    async def _connect(self, connect: Connect) -> None:
        reason = await self._endpoint.admit(self, connect)
        if self._closed:
            return  # it went away while we checked: nothing to attach
        if reason != Reason.SUCCESS:
            self._write(codec.encode_connack(connect.level, reason))
            self.close()
            return
        session, present = self._endpoint.attach(self, connect)
        self.session = session
        self._will = connect.will
        self.keep_alive_s = 1.5 * connect.keep_alive if connect.keep_alive else None
        if connect.maximum_packet_size is not None:
            self.max_outgoing = connect.maximum_packet_size
        if connect.receive_maximum < 65535:
            self._window = asyncio.Semaphore(max(connect.receive_maximum, 1))
        properties = self._endpoint.connack_properties if connect.level >= MQTT_5 else None
        self._write(
            codec.encode_connack(
                connect.level, Reason.SUCCESS, session_present=present, properties=properties
            )
        )
        self._endpoint.accepted(self)

    # -- PUBLISH from the device ---------------------------------------------------------------

    async def _publish(self, publish: Publish) -> None:
        subtopic = self._admitted(publish)
        if subtopic is None:
            return
        assert self.session is not None
        device_id = self.session.device_id
        ok = await self._endpoint.events.message(device_id, subtopic, publish.payload)
        if ok and publish.qos:
            self._acknowledge(publish)

    def _publish_soon(self, packet: Packet) -> bool:
        """Handle a PUBLISH of an accepted connection without a task when the service can take
        it so (True); its PUBACK comes from `_answered`."""
        if type(packet) is not Publish or self.session is None:
            return False
        subtopic = self._admitted(packet)
        if subtopic is None:
            return True  # refused, and answered as such
        self._publishing = True  # before the call: the answer may come within it
        try:
            taken = self._endpoint.events.message_soon(
                self.session.device_id,
                subtopic,
                packet.payload,
                functools.partial(self._answered, packet),
            )
        except Exception:  # a fault of ours, as in `_work`: this connection ends
            log.exception("handling a PUBLISH from %s failed", self.address)
            self._publishing = False
            self.close(Reason.UNSPECIFIED)
            return True
        if not taken:
            self._publishing = False
        return taken

    def _answered(self, publish: Publish, ok: bool) -> None:
        """The service processed a PUBLISH `message_soon` took: PUBACK it, then go on with
        what was read meanwhile (a Will queued at the connection's end included)."""
        self._publishing = False
        if ok and publish.qos:
            self._acknowledge(publish)
        if self._queue:
            self._start_work()
        self._update_reading()
        waiter, self._answer_waiter = self._answer_waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _admitted(self, publish: Publish) -> str | None:
        """The subtopic of a PUBLISH the device may send; None when it was refused (closed,
        or acknowledged as not authorized)."""
        session = self.session
        assert session is not None
        device_id = session.device_id
        if publish.qos == 2:
            log.info("%s sent a QoS 2 PUBLISH; closing", device_id)
            self.close(Reason.QOS_NOT_SUPPORTED)  # 3.1.1 has no refusal but closing
            return None
        topic = publish.topic
        if Prop.TOPIC_ALIAS in publish.properties.values:
            self.close(Reason.TOPIC_ALIAS_INVALID)  # we allow no aliases (maximum 0)
            return None
        if not topic or "#" in topic or "+" in topic or topic.startswith("$"):
            # [MQTT-4.7.3-1], [MQTT-3.3.2-2], [MQTT-4.7.2-1]
            log.warning("%s published on the invalid topic %r; closing", device_id, topic)
            self.close(Reason.TOPIC_NAME_INVALID)
            return None
        subtopic = subtopic_of(device_id, topic)
        if subtopic is None or not may_publish(device_id, topic):
            self._endpoint.events.forbidden(device_id, topic)
            if publish.qos:  # acknowledged, so the device moves on; MQTT 5 learns why
                self._acknowledge(publish, Reason.NOT_AUTHORIZED)
            return None
        return subtopic

    def _acknowledge(self, publish: Publish, reason: int = Reason.SUCCESS) -> None:
        """PUBACK a QoS 1 PUBLISH; only then does it leave the device's Receive Maximum."""
        if self._closed:
            return
        self._not_acked = max(0, self._not_acked - 1)
        self._write(codec.encode_puback(self.level or 4, publish.packet_id, reason))

    # -- the other packets -----------------------------------------------------------------------

    def _subscribe(self, subscribe: Subscribe) -> None:
        session = self.session
        assert session is not None
        if Prop.SUBSCRIPTION_ID in subscribe.properties.values:
            self.close(Reason.SUBSCRIPTION_IDS_NOT_SUPPORTED)
            return
        codes: list[int] = []
        granted: list[str] = []
        for topic_filter, options in subscribe.filters:
            if topic_filter.startswith("$share/") and self.level == MQTT_5:
                codes.append(Reason.SHARED_NOT_SUPPORTED)
            elif may_subscribe(session.device_id, topic_filter):
                qos = min(options & 0x03, 1)  # QoS 2 is granted as 1 [MQTT-3.9.3-2]
                session.subscriptions[topic_filter] = qos
                codes.append(qos)
                granted.append(topic_filter)
            else:
                codes.append(Reason.NOT_AUTHORIZED)  # 0x80 in MQTT 3.1.1
        self._write(codec.encode_suback(self.level or 4, subscribe.packet_id, codes))
        for topic_filter in granted:  # after the SUBACK: what it triggers comes after it
            self._endpoint.subscribed(session, topic_filter)

    def _unsubscribe(self, unsubscribe: Unsubscribe) -> None:
        session = self.session
        assert session is not None
        codes = [
            Reason.SUCCESS if session.subscriptions.pop(f, None) is not None else 0x11
            for f in unsubscribe.filters
        ]
        self._write(codec.encode_unsuback(self.level or 4, unsubscribe.packet_id, codes))

    def _puback(self, puback: PubAck) -> None:
        waiter = self._inflight.pop(puback.packet_id, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(puback.reason < 0x80)

    def _disconnect(self, disconnect: Disconnect) -> None:
        if disconnect.reason == Reason.SUCCESS:
            self._will = None  # a normal DISCONNECT; 0x04 and any other reason keep it
        session = self.session
        expiry = disconnect.properties.values.get(Prop.SESSION_EXPIRY)
        if session is not None and isinstance(expiry, int):
            if session.expiry == 0 and expiry != 0:  # MQTT 5, 3.14.2.2.2
                self.close(Reason.PROTOCOL_ERROR)
                return
            session.expiry = None if expiry == 0xFFFFFFFF else expiry
        self.close()

    def _protocol_error(self, exc: ProtocolError) -> None:
        name = self.session.device_id if self.session is not None else self.address
        log.info("closing the MQTT connection of %s: %s", name, exc)
        if self.level is None and exc.reason == Reason.UNSUPPORTED_VERSION:
            self._write(_UNSUPPORTED_LEVEL)  # [MQTT-3.1.2-2]
        self.close(exc.reason)

    @property
    def will(self) -> Will | None:
        """The Will still to be published when this connection has ended (None once sent or
        discarded by a normal DISCONNECT)."""
        return self._will

    def publish_will(self) -> bool:
        """The connection ended without a normal DISCONNECT (and its Will Delay passed): its
        Will goes to the service as a PUBLISH from the device would, after anything the device
        sent before it. True when there was one (`finished()` then waits for it too)."""
        will, self._will = self._will, None
        if will is None or self.session is None:
            return False
        self._queue.append(Publish(topic=will.topic, payload=will.payload))
        self._start_work()  # or, behind an unanswered PUBLISH, once it is answered
        return True

    # -- to the device ---------------------------------------------------------------------------

    async def deliver(self, topic: str, payload: bytes, qos: int) -> bool:
        """Publish to the device; at QoS 1, True once it sent PUBACK (False after
        `puback_timeout_s`, on a refusal or at the connection's end)."""
        timeout = self._endpoint.limits.puback_timeout_s
        if self._closed:
            return False
        if qos == 0:
            self._write(codec.encode_publish(self.level or 4, topic, payload))
            return True
        if self._window is None:
            return await self._deliver_qos1(topic, payload)
        try:
            async with asyncio.timeout(timeout):
                await self._window.acquire()
        except TimeoutError:
            return False
        try:
            return await self._deliver_qos1(topic, payload)
        finally:
            self._window.release()

    async def _deliver_qos1(self, topic: str, payload: bytes) -> bool:
        timeout = self._endpoint.limits.puback_timeout_s
        if self._closed:
            return False
        packet_id = self._packet_id()
        waiter: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._inflight[packet_id] = waiter
        self._write(codec.encode_publish(self.level or 4, topic, payload, 1, packet_id))
        try:
            async with asyncio.timeout(timeout):
                return await waiter
        except TimeoutError:
            log.info("%s sent no PUBACK for %s within %.0f s", self.address, topic, timeout)
            return False
        finally:
            self._inflight.pop(packet_id, None)

    def _packet_id(self) -> int:
        for _ in range(65535):
            self._next_id = self._next_id % 65535 + 1
            if self._next_id not in self._inflight:
                return self._next_id
        raise RuntimeError("65535 publishes in flight")  # bounded by the receive maximum

    def _write(self, data: bytes) -> None:
        if self._transport is not None and not self._closed:
            self._transport.write(data)

    def _fail_inflight(self) -> None:
        for waiter in self._inflight.values():
            if not waiter.done():
                waiter.set_result(False)
        self._inflight.clear()

    # -- closing ---------------------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def working(self) -> bool:
        """Packets read are not processed yet (a task works through them, or a PUBLISH taken by
        `message_soon` is unanswered)."""
        return self._worker is not None or self._publishing

    def give_up(self) -> None:
        """Stop working through what was read (the endpoint stops and its grace is over)."""
        if self._worker is not None:
            self._worker.cancel()

    async def finished(self) -> None:
        """Returns once everything read so far is processed (`working` is False)."""
        while self.working:
            if self._worker is not None:
                await asyncio.wait([self._worker])
            else:
                self._answer_waiter = asyncio.get_running_loop().create_future()
                await self._answer_waiter

    def abort(self) -> None:
        """Drop the connection at once, unflushed (it never got as far as a CONNECT)."""
        self._closed = True
        self._fail_inflight()
        if self._transport is not None:
            self._transport.abort()

    def close(self, reason: int | None = None) -> None:
        """Close (MQTT 5 with a DISCONNECT carrying `reason` once accepted); queued messages
        already read are still processed, nothing else is."""
        transport = self._transport
        if self._closed or transport is None:
            return
        # Closing already: the peer went away and `connection_lost` is on its way. A TLS
        # transport is then half torn down (closing it again drops its TLS layer, and asking
        # its write buffer raised AttributeError), so there is nothing left to flush or close.
        gone = transport.is_closing()
        if reason is not None and self.level == MQTT_5 and self.session is not None and not gone:
            self._write(codec.encode_disconnect(reason))
        self._closed = True
        self._fail_inflight()
        if not gone:
            transport.close()
            if transport.get_write_buffer_size():
                asyncio.get_running_loop().call_later(CLOSE_GRACE_S, transport.abort)
        self._buffer = bytearray()
