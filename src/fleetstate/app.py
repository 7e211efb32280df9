"""The composition root: `start(config)` builds store → blobs → bus → HTTP on one exit stack,
each part given what it needs when it is built; nothing is wired in afterwards.

Teardown runs in reverse and only for what started: event streams end, HTTP stops accepting
(requests in flight get `shutdown_grace_s`), in-flight publishes get the same grace, the bus
closes its sessions, then the store commits what is queued and closes. Background loops run as
named tasks in one TaskGroup, so an unexpected crash in any of them ends the service loudly.
Process-wide knobs are set here, once (`_tune_process`).
"""

import asyncio
import asyncio.sslproto
import contextlib
import functools
import gc
import logging
import os
import socket
import sys
from collections.abc import AsyncIterator, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

from fleetstate import tls
from fleetstate.api.context import Services
from fleetstate.api.device_api import HTTP_PRESENCE
from fleetstate.api.observability import METRICS
from fleetstate.api.server import build_app
from fleetstate.blobs import open_blob_store
from fleetstate.bus import Bus, open_bus
from fleetstate.config import Config, split_hostport
from fleetstate.domain.throttle import FailureThrottle
from fleetstate.service import devices, outbox, retention, telemetry, tenancy, uploads
from fleetstate.service.command_delivery import HeapDeadlines
from fleetstate.service.coordination import LocalLocks
from fleetstate.service.events import EventHub
from fleetstate.service.gateway import Gateway
from fleetstate.service.metrics import Metrics, Sources
from fleetstate.service.outbox import Outbox
from fleetstate.shutdown import InFlight
from fleetstate.store import Store
from fleetstate.store.sqlite import SqliteStore
from fleetstate.store.sqlite.database import SWITCH_INTERVAL_S

log = logging.getLogger(__name__)
DATABASE = "fleetstate.db"
ADMIN_TOKEN_FILE = "admin-token"


@dataclass
class Service:
    config: Config
    store: Store
    gateway: Gateway
    broker: Bus
    """The device bus (`[bus] kind`; the embedded MQTT endpoint by default)."""
    telemetry: telemetry.Recorder
    http_url: str
    """The bound HTTP server: `https://HOST:PORT` with `[tls]`, else `http://HOST:PORT`."""
    mqtt_url: str | None
    """The plain MQTT listener (mqtt://HOST:PORT), None when it is off."""
    mqtts_url: str | None
    """The MQTT-over-TLS listener (mqtts://HOST:PORT), None without `[tls]`."""
    admin_token_file: Path | None
    http_app: web.Application

    @property
    def mqtt_port(self) -> int:
        if self.mqtt_url is None:
            raise ValueError("the plain MQTT listener is off")
        return int(self.mqtt_url.rsplit(":", 1)[1])

    @property
    def mqtts_port(self) -> int:
        if self.mqtts_url is None:
            raise ValueError("MQTT over TLS is off")
        return int(self.mqtts_url.rsplit(":", 1)[1])


@contextlib.asynccontextmanager
async def start(config: Config) -> AsyncIterator[Service]:
    tenancy.check_admin_token(config.admin_token)  # before anything starts: a plain error
    _tune_process()
    async with contextlib.AsyncExitStack() as stack:
        tasks = await stack.enter_async_context(InFlight())
        store = await stack.enter_async_context(
            SqliteStore.running(config.data_dir / DATABASE, config.batch_max, outbox.job_scope)
        )
        # Bound first, served last: local blob URLs point at the real port.
        http_sockets, http_url = await _bind_http(stack, config)
        public_url = config.hub_url or http_url
        blobs = await open_blob_store(config.blobs, config.data_dir, lambda: public_url)
        stack.push_async_callback(blobs.close)
        await devices.mark_all_offline(store)
        token_file = await _bootstrap(store, config)

        events = EventHub(config.limits.events_queue)
        recorder = telemetry.Recorder(store, events, config.limits)
        # Stops after the loops were cancelled and in-flight work settled (pushed before them).
        # One count of failed keys per device id, over HTTP and MQTT alike (SPEC section 8).
        device_throttle = FailureThrottle.from_config(config.throttle)
        bus = await stack.enter_async_context(open_bus(config, device_throttle))
        # The in-process implementations of the single-process invariants (coordination.py).
        deadlines = HeapDeadlines(store)
        gateway = Gateway(
            store,
            tasks,
            events,
            bus,
            record_telemetry=recorder.record,
            record_telemetry_soon=recorder.record_soon,
            max_forbidden=config.max_forbidden_publishes,
            deadlines=deadlines,
            command_locks=LocalLocks(),
        )
        dispatcher = gateway.commands
        # Each committed write's recorded effects go out here, and only a committed write's.
        store.after_commit = Outbox(
            deliver=gateway.deliver,
            events=events,
            commands_finished=dispatcher.changed,
            commands_created=dispatcher.created,
            disconnect=bus.disconnect,
            spawn=functools.partial(_spawn, tasks),
        ).dispatch
        # Runs after HTTP stopped and the loops were cancelled, before the bus closes.
        stack.push_async_callback(tasks.settle, config.shutdown_grace_s)
        await bus.start(gateway)
        _run(stack, tasks, bus.run(), "bus")
        # What fell due while stopped times out before anything is served.
        await deadlines.start()
        _run(stack, tasks, deadlines.run(), "command-deadlines")
        cleanup = uploads.cleanup_loop(store, blobs, config.uploads.cleanup_interval_s)
        _run(stack, tasks, cleanup, "upload-cleanup")
        retain = retention.retention_loop(
            store, config.telemetry_retention_days, config.limits.history_retention_days
        )
        _run(stack, tasks, retain, "history-retention")
        metrics = Metrics(Sources(store, gateway=gateway, events=events, telemetry=recorder))
        store.on_commit = metrics.observe_commit

        app = build_app(
            Services(
                store=store,
                gateway=gateway,
                config=config,
                events=events,
                blobs=blobs,
                telemetry=recorder,
                mqtt_url=bus.mqtts_url or bus.mqtt_url or "",
                device_throttle=device_throttle,
                dump_locks=LocalLocks(),
            )
        )
        app[METRICS] = metrics
        # One sweep for the whole fleet turns silent HTTP-only devices offline.
        _run(stack, tasks, app[HTTP_PRESENCE].run(), "http-presence-sweep")
        await _serve_http(stack, app, http_sockets, config)
        # First on the way out: open event streams end, so HTTP shutdown does not wait on them.
        stack.callback(events.close)
        yield Service(
            config=config,
            store=store,
            gateway=gateway,
            broker=bus,
            telemetry=recorder,
            http_url=http_url,
            mqtt_url=bus.mqtt_url,
            mqtts_url=bus.mqtts_url,
            admin_token_file=token_file,
            http_app=app,
        )
        log.info("shutting down")


def _run(
    stack: contextlib.AsyncExitStack,
    tasks: asyncio.TaskGroup,
    loop: Coroutine[Any, Any, None],
    name: str,
) -> None:
    """A background loop as a named task of the service's TaskGroup, cancelled on the way out
    (before the parts it uses close); a crash in it ends the service."""
    task = tasks.create_task(loop, name=name)
    stack.callback(task.cancel)


def _spawn(
    tasks: asyncio.TaskGroup, coro: Coroutine[Any, Any, None], name: str
) -> "asyncio.Task[None] | None":
    """A task of the service's in-flight work, or None once the group shuts down."""
    try:
        return tasks.create_task(coro, name=name)
    except RuntimeError:
        coro.close()
        log.debug("not starting %s during shutdown", name)
        return None


GC_THRESHOLDS = (50_000, 50, 100)
"""The cyclic collector's thresholds (CPython's defaults: 700, 10, 10). Every message allocates
a few dozen short-lived objects, almost none in cycles, so the default collected the youngest
generation every few messages and the older ones (holding every connection's objects) often:
in interleaved runs at 2,000 devices service CPU per MQTT message fell from 0.15 to 0.10-0.11 ms
with these (docs/benchmarks.md). Garbage in cycles waits for at most 50,000 allocations."""


TLS_READ_BUFFER = 16 * 1024
"""Bytes of the read buffer asyncio's TLS layer keeps for each TLS connection, from its accept to
its end (asyncio's default is 256 KiB). Measured with 1,000 TLS connections held open: 271 KiB of
service RSS per connection at the default, 36 KiB at 16 KiB (8 KiB saves 8 KiB more). A TLS record
is at most 16 KiB, and a smaller buffer only means more reads for a large body, so the MQTT
listener, HTTPS and the S3 client all read the same; device traffic is small messages."""


def _tune_process() -> None:
    """Process-wide knobs, set here once rather than by the parts that want them."""
    sys.setswitchinterval(min(sys.getswitchinterval(), SWITCH_INTERVAL_S))
    gc.set_threshold(*GC_THRESHOLDS)
    asyncio.sslproto.SSLProtocol.max_size = TLS_READ_BUFFER


async def _bind_http(
    stack: contextlib.AsyncExitStack, config: Config
) -> tuple[list[socket.socket], str]:
    """Bind `config.http` (every address the host names, one port; 0 picks a free one) without
    serving yet; the bound URL, `https://` with `[tls]`."""
    host, port = split_hostport(config.http)
    infos = await asyncio.get_running_loop().getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )
    sockets: list[socket.socket] = []
    for family, kind, proto, _name, address in dict.fromkeys(infos):
        sock = socket.socket(family, kind, proto)
        stack.callback(sock.close)  # after the server closed it too: harmless
        sockets.append(sock)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        # The others share the first one's port (port 0 resolved once).
        chosen = sockets[0].getsockname()[1] if sockets[1:] else address[1]
        sock.bind((address[0], chosen, *address[2:]))
    bound = sockets[0].getsockname()
    scheme = "https" if config.tls.enabled else "http"
    return sockets, f"{scheme}://{_url_host(str(bound[0]))}:{int(bound[1])}"


async def _serve_http(
    stack: contextlib.AsyncExitStack,
    app: web.Application,
    sockets: list[socket.socket],
    config: Config,
) -> None:
    """Serve `app` on the bound sockets (HTTPS with `[tls]`)."""
    # Built before anything listens: unreadable certificate files end the start with a clear error.
    context = tls.server_context(config.tls) if config.tls.enabled else None
    # Event streams end first (EventHub.close); other requests get the grace, not a minute.
    runner = web.AppRunner(
        app, handle_signals=False, access_log=None, shutdown_timeout=config.shutdown_grace_s
    )
    await runner.setup()
    stack.push_async_callback(runner.cleanup)
    for sock in sockets:
        await web.SockSite(runner, sock, ssl_context=context).start()


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


async def _bootstrap(store: Store, config: Config) -> Path | None:
    generated = await tenancy.bootstrap(store, config.admin_token)
    path = config.data_dir / ADMIN_TOKEN_FILE
    if generated is not None:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as file:
            os.fchmod(file.fileno(), 0o600)  # an existing file keeps its mode through O_CREAT
            file.write(generated + "\n")
        log.info("a new operator token was generated into %s", path)
        return path
    return path if path.exists() and not config.admin_token else None
