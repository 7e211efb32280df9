"""fleetstate's own MQTT endpoint for devices: the `Bus` the service runs on by default.

Not a general broker: devices never talk to each other. Each device may subscribe only to its own
topics, which only the service publishes, and what it publishes goes to the service alone
(`DeviceEvents`), so there is no routing table, no retained store and no fan-out. The desired
document is delivered level-triggered by the gateway from SQLite on every connect and subscribe.

Sessions (a device's subscriptions) live in memory, one per device that ever authenticated:
a persistent one (MQTT 3.1.1 clean session 0, MQTT 5 session expiry > 0) survives its connection,
a clean one ends with it. A refused client never gets one. One sweep a second closes connections
that sent no CONNECT in time or nothing for 1.5 times their keep-alive, expires sessions, and
publishes the Wills held back by an MQTT 5 Will Delay Interval once it passed or their session
ended; a device that connects again before then takes its Will back.
"""

import asyncio
import contextlib
import functools
import logging
import ssl
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import TYPE_CHECKING, NamedTuple

from fleetstate import tls
from fleetstate.bus import DELIVERED, MAX_PAYLOAD, DeviceEvents, Sent, delivered_by, device_topic
from fleetstate.bus.embedded.codec import Connect, Prop, Reason
from fleetstate.bus.embedded.connection import Connection, Session
from fleetstate.bus.embedded.handshake import Handshake
from fleetstate.config import BrokerLimits, split_hostport
from fleetstate.domain.throttle import FailureThrottle

if TYPE_CHECKING:
    from fleetstate.config import Config

log = logging.getLogger(__name__)

SWEEP_S = 1.0
STOP_GRACE_S = 5.0
"""On stop, messages already read get this long to reach their commit."""
BACKLOG = 1024


class Listener(NamedTuple):
    host: str
    port: int
    ssl_context: ssl.SSLContext | None = None


class HeldWill(NamedTuple):
    """An ended connection's Will waiting for its Will Delay Interval or its session's end."""

    connection: Connection
    due: float
    """`time.monotonic()` from which the sweep publishes it."""


@contextlib.asynccontextmanager
async def open_embedded(
    config: "Config", device_ids: FailureThrottle | None = None
) -> AsyncIterator["EmbeddedBroker"]:
    """The endpoint with the listeners SPEC section 8 asks for: MQTT over TLS with `[tls]`; plain
    MQTT unless TLS is on and `mqtt` was not given explicitly; never with `mqtt = "off"`."""
    mqtts = None
    if config.tls.enabled:  # built before anything listens: bad certificate files fail here
        context = tls.server_context(config.tls, client_certs=True)
        mqtts = Listener(*split_hostport(config.mqtts), context)
    plain = config.mqtt.lower() != "off" and (not config.tls.enabled or config.mqtt_explicit)
    mqtt = Listener(*split_hostport(config.mqtt)) if plain else None
    broker = EmbeddedBroker(config.broker, mqtt=mqtt, mqtts=mqtts, device_ids=device_ids)
    try:
        yield broker
    finally:
        await broker.stop()


class EmbeddedBroker:
    """The `Bus` on fleetstate's own MQTT endpoint: `await start(events)` opens its listeners,
    `run()` (the sweep) runs as a task, then `stop()`."""

    def __init__(
        self,
        limits: BrokerLimits | None = None,
        *,
        mqtt: Listener | None = None,
        mqtts: Listener | None = None,
        device_ids: FailureThrottle | None = None,
    ) -> None:
        self._events: DeviceEvents | None = None
        self._listeners = (mqtt, mqtts)
        self.mqtt_url: str | None = None
        self.mqtts_url: str | None = None
        self.limits = limits or BrokerLimits()
        self.throttle = FailureThrottle(
            limit=self.limits.auth_failure_limit,
            window_s=self.limits.auth_failure_window_s,
            block_s=self.limits.auth_block_s,
        )
        """Failed CONNECTs per source address (`addr:`), the endpoint's own."""
        self.device_ids = device_ids or FailureThrottle()
        """Failures per device id (`device:`), shared with the HTTP device API: a device id is
        one credential wherever its key is guessed."""
        self._stopping = False
        self.sessions: dict[str, Session] = {}
        self._connections: set[Connection] = set()
        self._expiring: dict[str, Session] = {}
        self._held_wills: dict[str, HeldWill] = {}
        """At most one per device id: only its last connection can have ended with one held."""
        self._willing: dict[asyncio.Task[None], Connection] = {}
        """Ended connections still handling a published Will (each until its `finished()`),
        waited for by `stop()` like the connections still open."""
        self._servers: list[asyncio.Server] = []
        self._handshakes: set[asyncio.Task[None]] = set()
        """TLS handshakes under way (`handshake.py`), cancelled by `stop()`."""
        self.refused_total = 0
        self.messages_out: Counter[str] = Counter()
        """Messages published to devices per subtopic, acknowledged or not (read by /metrics)."""
        self.connack_properties: dict[int, int | str | bytes] = {
            Prop.MAXIMUM_QOS: 1,
            Prop.MAXIMUM_PACKET_SIZE: self.limits.max_packet_bytes,
            Prop.SUBSCRIPTION_IDS_AVAILABLE: 0,
            Prop.SHARED_AVAILABLE: 0,
            Prop.RECEIVE_MAXIMUM: self.limits.inbound_queue,
        }

    # -- lifecycle -------------------------------------------------------------------------------

    async def start(self, events: DeviceEvents) -> None:
        """Open the listeners; `events` hears of devices (given here, not when built, as an
        asyncio server takes its protocol when it starts serving)."""
        self._events = events
        mqtt, mqtts = self._listeners
        if mqtts is not None:  # TLS first, as before: its port is the one devices are told
            host, port = await self.listen(*mqtts)
            self.mqtts_url = f"mqtts://{_url_host(host)}:{port}"
        if mqtt is not None:
            host, port = await self.listen(*mqtt)
            self.mqtt_url = f"mqtt://{_url_host(host)}:{port}"

    @property
    def events(self) -> DeviceEvents:
        if self._events is None:
            raise RuntimeError("the MQTT endpoint was not started")
        return self._events

    async def listen(
        self, host: str, port: int, ssl_context: ssl.SSLContext | None = None
    ) -> tuple[str, int]:
        """Start one listener (plain or TLS); returns its bound address. A TLS listener accepts
        TCP and runs each handshake itself (`handshake.py`: so a failed one is freed at once)."""
        if self._events is None:
            raise RuntimeError("listening before start(events): nobody would hear of devices")
        loop = asyncio.get_running_loop()
        factory: Callable[[], asyncio.Protocol] = functools.partial(Connection, self)
        if ssl_context is not None:
            factory = functools.partial(Handshake, self, ssl_context, self._run_handshake)
        server = await loop.create_server(factory, host, port, backlog=BACKLOG, reuse_address=True)
        self._servers.append(server)
        bound = server.sockets[0].getsockname()
        return str(bound[0]), int(bound[1])

    def _run_handshake(self, handshake: Coroutine[None, None, None]) -> None:
        task = asyncio.get_running_loop().create_task(handshake, name="mqtts-handshake")
        self._handshakes.add(task)
        task.add_done_callback(self._handshakes.discard)

    async def stop(self) -> None:
        self._stopping = True  # the service going away is no device's Will
        self._drop_held_wills()
        for server in self._servers:
            server.close()
        handshakes = list(self._handshakes)
        for handshake in handshakes:  # none becomes a device's connection now
            handshake.cancel()
        await asyncio.gather(*handshakes, return_exceptions=True)
        working = list(self._willing.values())
        for connection in list(self._connections):
            connection.close(Reason.SHUTTING_DOWN)
            if connection.working:
                working.append(connection)
        if working:
            # What was read before the end is processed to its commit, or given up on.
            waits = [asyncio.create_task(c.finished()) for c in working]
            _done, pending = await asyncio.wait(waits, timeout=STOP_GRACE_S)
            for waiting in pending:
                waiting.cancel()
            for connection in working:
                connection.give_up()
        for server in self._servers:
            await server.wait_closed()
        self._servers.clear()

    def _drop_held_wills(self) -> None:
        """MQTT 5 lets a stopping server publish the Wills still in their delay or not; these
        are not: each device's offline was recorded when its connection ended and every start
        marks all devices offline, so they would tell the service nothing new, only give work to
        a service that is going away and its store that is about to close."""
        if self._held_wills:
            log.info("stopping: %d Wills still in their delay are not sent", len(self._held_wills))
            self._held_wills.clear()

    # -- what connections ask --------------------------------------------------------------------

    def opened(self, connection: Connection) -> None:
        self._connections.add(connection)

    async def admit(self, connection: Connection, connect: Connect) -> int:
        """Authenticate a CONNECT, touching nothing: the reason code to answer it with."""
        device_id = connect.client_id
        if not device_id:
            return self._refuse(connection, "", Reason.CLIENT_ID_INVALID, "no client id")
        address, device = f"addr:{connection.address}", f"device:{device_id}"
        if self.throttle.blocked(address) or self.device_ids.blocked(device):
            return self._refuse(connection, device_id, Reason.BANNED, "throttled")
        reason = await self._authenticate(connection, connect)
        if reason != Reason.SUCCESS:
            self.throttle.failed(address)
            self.device_ids.failed(device)
            return reason
        return self._check_will(connection, connect)

    async def _authenticate(self, connection: Connection, connect: Connect) -> int:
        device_id = connect.client_id
        if connection.peer_cn is not None:  # a verified client certificate names the device
            if connection.peer_cn == device_id:
                return Reason.SUCCESS
            detail = f"certificate for {connection.peer_cn!r}"
            return self._refuse(connection, device_id, Reason.NOT_AUTHORIZED, detail)
        password = connect.password
        if connect.username != device_id or password is None:
            detail = "user name is not the client id" if password else "no password"
            return self._refuse(connection, device_id, Reason.BAD_CREDENTIALS, detail)
        try:
            secret = password.decode()
        except UnicodeDecodeError:
            secret = None
        if secret is None or not await self.events.authenticate(device_id, secret):
            return self._refuse(connection, device_id, Reason.BAD_CREDENTIALS, "wrong key")
        return Reason.SUCCESS

    def _check_will(self, connection: Connection, connect: Connect) -> int:
        """A Will may only be the device's own status (SPEC section 10): its Last Will
        `{"online": false}` on `devices/{id}/status`. Any other topic is refused at CONNECT,
        MQTT 5 with 0x90 (the Will Topic is well formed but not accepted by this server),
        MQTT 3.1.1 with 5 (not authorized); QoS 2 is over the Maximum QoS we announce."""
        will = connect.will
        if will is None:
            return Reason.SUCCESS
        device_id = connect.client_id
        if will.topic != device_topic(device_id, "status"):
            why = f"a Will on {will.topic!r}"
            return self._refuse(connection, device_id, Reason.TOPIC_NAME_INVALID, why)
        if will.qos > 1:
            return self._refuse(connection, device_id, Reason.QOS_NOT_SUPPORTED, "Will QoS 2")
        return Reason.SUCCESS

    def _refuse(self, connection: Connection, device_id: str, reason: int, why: str) -> int:
        self.refused_total += 1
        log.info("refused MQTT CONNECT of %r from %s: %s", device_id, connection.address, why)
        return reason

    def attach(self, connection: Connection, connect: Connect) -> tuple[Session, bool]:
        """An accepted CONNECT takes the device's session (closing a connection that held it,
        [MQTT-3.1.4-2]) or starts a new one; True when an existing one was kept."""
        device_id = connect.client_id
        session = self.sessions.get(device_id)
        if session is not None and session.connection is not None:
            old, session.connection = session.connection, None  # so it reports no disconnect
            log.info("%s connected again; closing its previous connection", device_id)
            old.close(Reason.TAKEN_OVER)
        if self._held_wills.pop(device_id, None) is not None:  # [MQTT-3.1.2-8]: either Clean Start
            log.info("%s is back within its Will Delay Interval: no Will is sent", device_id)
        present = session is not None and not connect.clean_start
        if session is None or connect.clean_start:
            session = Session(device_id)
            self.sessions[device_id] = session
        self._expiring.pop(device_id, None)
        session.expiry = connect.session_expiry
        session.expires_at = None
        session.connection = connection
        return session, present

    def accepted(self, connection: Connection) -> None:
        """After the CONNACK went out: the service learns of the device."""
        session = connection.session
        assert session is not None
        device_id = session.device_id
        receives = frozenset(
            s for s in DELIVERED if session.granted(device_topic(device_id, s), s) is not None
        )
        self.events.connected(device_id, receives)

    def subscribed(self, session: Session, topic_filter: str) -> None:
        """After the SUBACK of a granted subscription: tell the service what it now lets through."""
        receives = delivered_by(session.device_id, topic_filter)
        if receives:
            self.events.subscribed(session.device_id, receives)

    def lost(self, connection: Connection) -> None:
        self._connections.discard(connection)
        session = connection.session
        if session is None or session.connection is not connection:
            return  # refused, or taken over by a newer connection (that one is online)
        session.connection = None
        device_id = session.device_id
        now = time.monotonic()
        if session.expiry == 0:
            self.sessions.pop(device_id, None)
        elif session.expiry is not None:
            session.expires_at = now + session.expiry
            self._expiring[device_id] = session
        self.events.disconnected(device_id)
        if not self._stopping:
            self._will_after(connection, session, now)  # after the disconnect: presence is offline

    def _will_after(self, connection: Connection, session: Session, now: float) -> None:
        """Publish an ended connection's Will now, or hold it until its Will Delay Interval has
        passed or its session ends, whichever comes first ([MQTT-3.1.2-8]); MQTT 3.1.1 Wills
        and those of a session that ended with its connection go at once."""
        will = connection.will
        if will is None:
            return
        due = now if session.expiry == 0 else now + will.delay_s
        if session.expires_at is not None:
            due = min(due, session.expires_at)
        if due <= now:
            self._publish_will(connection)
        else:
            self._held_wills[session.device_id] = HeldWill(connection, due)

    def _publish_will(self, connection: Connection) -> None:
        if connection.publish_will():
            finished = asyncio.get_running_loop().create_task(connection.finished())
            self._willing[finished] = connection
            finished.add_done_callback(self._willing.pop)

    # -- the sweep -------------------------------------------------------------------------------

    async def run(self) -> None:
        """The sweep, once a second until cancelled; the service runs it in its TaskGroup."""
        while True:
            await asyncio.sleep(SWEEP_S)
            self.sweep(time.monotonic())

    def sweep(self, now: float) -> None:
        connect_by = now - self.limits.connect_timeout_s
        for connection in list(self._connections):
            if connection.level is None and connection.opened < connect_by:
                log.info("no CONNECT from %s in time; closing", connection.address)
                connection.abort()
            elif connection.keep_alive_s is not None and (
                now - connection.last_read > connection.keep_alive_s
            ):
                name = connection.session.device_id if connection.session else connection.address
                log.info("%s sent nothing within its keep-alive; closing", name)
                connection.close(Reason.KEEP_ALIVE_TIMEOUT)
        for device_id, session in list(self._expiring.items()):
            if session.expires_at is not None and session.expires_at <= now:
                del self._expiring[device_id]
                if self.sessions.get(device_id) is session:
                    del self.sessions[device_id]
        for device_id, held in list(self._held_wills.items()):
            if held.due <= now:
                del self._held_wills[device_id]
                self._publish_will(held.connection)

    # -- the Bus ---------------------------------------------------------------------------------

    def _connection(self, device_id: str) -> Connection | None:
        session = self.sessions.get(device_id)
        return None if session is None else session.connection

    async def set_desired(self, device_id: str, version: int, document: bytes) -> bool:
        return await self._publish(device_id, "desired", document)

    async def send(self, device_id: str, kind: Sent, payload: bytes) -> bool:
        return await self._publish(device_id, kind, payload)

    async def _publish(self, device_id: str, subtopic: str, payload: bytes) -> bool:
        """Publish now when the session is connected and subscribed; never queued."""
        session = self.sessions.get(device_id)
        connection = None if session is None else session.connection
        if session is None or connection is None:
            return False
        topic = device_topic(device_id, subtopic)
        qos = session.granted(topic, subtopic)
        if qos is None:
            return False
        if len(payload) > MAX_PAYLOAD or len(payload) + len(topic) + 16 > connection.max_outgoing:
            log.error("refusing to publish %d bytes to %s", len(payload), device_id)
            return False
        self.messages_out[subtopic] += 1
        return await connection.deliver(topic, payload, qos)

    def is_connected(self, device_id: str) -> bool:
        return self._connection(device_id) is not None

    @property
    def auth_failures_total(self) -> int:
        """CONNECTs refused for their credentials (read by /metrics)."""
        return self.throttle.failed_total

    def connected_devices(self) -> list[str]:
        return [d for d, s in self.sessions.items() if s.connection is not None]

    async def disconnect(self, device_id: str) -> None:
        connection = self._connection(device_id)
        if connection is not None:
            connection.close(Reason.ADMINISTRATIVE)


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host
