"""The service's lifecycle: `start(config)` builds store → broker → HTTP on one exit stack.

Teardown runs in reverse and only for what started: HTTP stops accepting, the broker closes its
sessions, then the store commits what is queued and closes. Background loops run as named tasks in
one TaskGroup, so an unexpected crash in any of them ends the service loudly.
"""

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from fleetstate import commands, desired, devices, telemetry, tenancy, tls, uploads
from fleetstate.api.commands import DISPATCHER
from fleetstate.api.context import Services
from fleetstate.api.server import build_app
from fleetstate.blobs import open_blob_store
from fleetstate.bus.embedded import EmbeddedBroker
from fleetstate.config import Config, split_hostport
from fleetstate.events import EventHub
from fleetstate.gateway import Gateway
from fleetstate.scheduler import Dispatcher
from fleetstate.store import Store

log = logging.getLogger(__name__)
DATABASE = "fleetstate.db"
ADMIN_TOKEN_FILE = "admin-token"


@dataclass
class Service:
    config: Config
    store: Store
    gateway: Gateway
    broker: EmbeddedBroker
    telemetry: telemetry.Recorder
    http_url: str
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
    async with contextlib.AsyncExitStack() as stack:
        tasks = await stack.enter_async_context(asyncio.TaskGroup())
        store = await Store.open(config.data_dir / DATABASE, config.batch_max)
        stack.push_async_callback(store.close)
        tasks.create_task(store.writer_loop(), name="store-writer")
        # Local blob URLs point at our HTTP server, whose address is known once it is bound.
        public_url = [config.hub_url or ""]
        blobs = await open_blob_store(config.blobs, config.data_dir, lambda: public_url[0])
        stack.push_async_callback(blobs.close)
        await devices.mark_all_offline(store)
        token_file = await _bootstrap(store, config)

        events = EventHub()
        gateway = Gateway(store, tasks, events, config.max_forbidden_publishes)
        broker = EmbeddedBroker(gateway, config.broker)
        stack.push_async_callback(broker.stop)
        mqtt_url, mqtts_url = await _listen(broker, config)
        gateway.bus = broker
        # Features hook in here: MQTT handlers (gateway.inbound), connect and delivery hooks,
        # and their background loops as named tasks of `tasks`.
        # Commands: acks, delivery on connect, bind/unbind tracking, one loop over deadlines
        # (what fell due while stopped times out before anything is served).
        desired.on_change = commands.track_changes
        dispatcher = Dispatcher(store, gateway, tasks)
        dispatcher.install()
        await dispatcher.deadlines.start()
        command_deadlines = tasks.create_task(dispatcher.deadlines.run(), name="command-deadlines")
        stack.callback(command_deadlines.cancel)
        upload_cleanup = tasks.create_task(
            uploads.cleanup_loop(store, blobs, config.uploads.cleanup_interval_s),
            name="upload-cleanup",
        )
        stack.callback(upload_cleanup.cancel)
        recorder = telemetry.Recorder(store, events)
        gateway.inbound["telemetry"] = recorder.record
        retention = tasks.create_task(
            telemetry.retention_loop(store, config.telemetry_retention_days),
            name="telemetry-retention",
        )
        stack.callback(retention.cancel)

        app = build_app(
            Services(
                store=store,
                gateway=gateway,
                config=config,
                events=events,
                blobs=blobs,
                telemetry=recorder,
                mqtt_url=mqtts_url or mqtt_url or "",
            )
        )
        app[DISPATCHER] = dispatcher
        http_host, http_port = await _serve_http(stack, app, config)
        http_url = f"http://{_url_host(http_host)}:{http_port}"
        public_url[0] = config.hub_url or http_url
        yield Service(
            config=config,
            store=store,
            gateway=gateway,
            broker=broker,
            telemetry=recorder,
            http_url=http_url,
            mqtt_url=mqtt_url,
            mqtts_url=mqtts_url,
            admin_token_file=token_file,
            http_app=app,
        )
        log.info("shutting down")


async def _listen(broker: EmbeddedBroker, config: Config) -> tuple[str | None, str | None]:
    """The MQTT listeners SPEC section 8 asks for: MQTT over TLS with `[tls]`; plain MQTT unless
    TLS is on and `mqtt` was not given explicitly; never with `mqtt = "off"`."""
    mqtt_url = mqtts_url = None
    if config.tls.enabled:
        context = tls.server_context(config.tls, client_certs=True)
        host, port = await broker.listen(*split_hostport(config.mqtts), context)
        mqtts_url = f"mqtts://{_url_host(host)}:{port}"
    plain = config.mqtt.lower() != "off" and (not config.tls.enabled or config.mqtt_explicit)
    if plain:
        host, port = await broker.listen(*split_hostport(config.mqtt))
        mqtt_url = f"mqtt://{_url_host(host)}:{port}"
    return mqtt_url, mqtts_url


async def _serve_http(
    stack: contextlib.AsyncExitStack, app: web.Application, config: Config
) -> tuple[str, int]:
    # Open event streams never finish on their own: give requests a short grace, not a minute.
    runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=2.0)
    await runner.setup()
    stack.push_async_callback(runner.cleanup)
    host, port = split_hostport(config.http)
    site = web.TCPSite(runner, host, port, reuse_address=True)
    await site.start()
    bound = runner.addresses[0]
    return str(bound[0]), int(bound[1])


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


async def _bootstrap(store: Store, config: Config) -> Path | None:
    generated = await tenancy.bootstrap(store, config.admin_token)
    path = config.data_dir / ADMIN_TOKEN_FILE
    if generated is not None:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as file:
            file.write(generated + "\n")
        return path
    return path if path.exists() and not config.admin_token else None
