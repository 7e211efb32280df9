"""A worker process: many simulated devices on one event loop, reporting to its parent.

One Python process tops out on one core, so a large fleet runs in several of these. Each gets its
share of the devices and the settings, plays them until told to stop, and every
`REPORT_INTERVAL_S` puts a `Snapshot` (msgpack bytes) on the report queue. The parent steers it
through a control queue: `Stop`, or a `Burst` of telemetry as fast as the service acknowledges it
(for benchmarks).
"""

import asyncio
import contextlib
import itertools
import logging
import multiprocessing.queues
import os
import resource
import signal
import threading
from typing import Any, TypeAlias

import aiohttp
import msgspec

from fleetstate.simulator.device import Context, Device, MqttDevice
from fleetstate.simulator.http_device import HttpDevice, post_telemetry
from fleetstate.simulator.options import DeviceSpec, Settings, Transport
from fleetstate.simulator.stats import Snapshot, Stats

REPORT_INTERVAL_S = 0.5
STOP_TIMEOUT_S = 15.0
HTTP_CONNECTIONS = 64
"""Open HTTP connections per worker (aiohttp's pool): enough to keep the service busy."""


class Stop(msgspec.Struct, frozen=True, tag=True):
    pass


class Burst(msgspec.Struct, frozen=True, tag=True, kw_only=True):
    """Send telemetry for `seconds`, keeping `window` messages in flight (each waits for its
    PUBACK or HTTP answer), from connected MQTT devices or over HTTP with every device's key."""

    transport: Transport
    seconds: float
    window: int
    key: str


Control = Stop | Burst
control_codec = msgspec.msgpack.Decoder(Control)
_snapshot_encoder = msgspec.msgpack.Encoder()
AnyQueue: TypeAlias = "multiprocessing.queues.Queue[Any]"


class Worker:
    def __init__(
        self,
        index: int,
        specs: list[DeviceSpec],
        settings: Settings,
        control: AnyQueue,
        reports: AnyQueue,
    ) -> None:
        self.index = index
        self.specs = specs
        self.settings = settings
        self._control = control
        self._reports = reports
        self.stats = Stats(record_events=settings.record_events)
        self.devices: list[Device] = []
        self._stop = asyncio.Event()
        self._bursts: set[asyncio.Task[None]] = set()

    async def run(self) -> None:
        connector = aiohttp.TCPConnector(limit=HTTP_CONNECTIONS)
        timeout = aiohttp.ClientTimeout(total=self.settings.mqtt_timeout)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as http:
            ctx = Context(self.settings, self.stats, http)
            self.devices = [
                (MqttDevice if s.transport == Transport.MQTT else HttpDevice)(s, ctx)
                for s in self.specs
            ]
            self._listen(asyncio.get_running_loop())
            reporter = asyncio.create_task(self._report_loop(), name="sim-report")
            tasks = [
                asyncio.create_task(d.run(), name=f"sim-device:{d.spec.id}") for d in self.devices
            ]
            await self._stop.wait()
            for task in (*tasks, *self._bursts):
                task.cancel()
            # Disconnecting thousands of clients takes a moment; a stuck one must not hang us.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(STOP_TIMEOUT_S):
                    await asyncio.gather(*tasks, *self._bursts, return_exceptions=True)
            reporter.cancel()
        self._report(final=True)

    # -- control -----------------------------------------------------------------------------

    def _listen(self, loop: asyncio.AbstractEventLoop) -> None:
        """Read the control queue in a thread (it blocks) and hand each message to the loop."""

        def listen() -> None:
            while True:
                message = control_codec.decode(self._control.get())
                loop.call_soon_threadsafe(self._on_control, message)
                if isinstance(message, Stop):
                    return

        threading.Thread(target=listen, name="sim-control", daemon=True).start()

    def _on_control(self, message: Control) -> None:
        match message:
            case Stop():
                self._stop.set()
            case Burst():
                task = asyncio.create_task(self._burst(message), name="sim-burst")
                self._bursts.add(task)
                task.add_done_callback(self._bursts.discard)

    async def _burst(self, burst: Burst) -> None:
        devices = self.devices
        if burst.transport == Transport.MQTT:
            devices = [d for d in self.devices if isinstance(d, MqttDevice) and d.up]
        window = asyncio.Semaphore(burst.window)
        pending: set[asyncio.Task[None]] = set()
        deadline = asyncio.get_running_loop().time() + burst.seconds
        for device in itertools.cycle(devices):
            await window.acquire()
            if asyncio.get_running_loop().time() >= deadline:
                window.release()
                break
            task = asyncio.create_task(self._send_one(device, burst, window))
            pending.add(task)
            task.add_done_callback(pending.discard)
        if pending:
            await asyncio.wait(pending)
        self.stats.count("bursts_done")

    async def _send_one(self, device: Device, burst: Burst, window: asyncio.Semaphore) -> None:
        try:
            if isinstance(device, MqttDevice) and burst.transport == Transport.MQTT:
                await device.send_telemetry(burst.key)
            else:
                await post_telemetry(device.ctx, device, burst.key)
        except Exception as exc:  # noqa: BLE001 - MQTT, HTTP or socket: counted by kind
            self.stats.count("telemetry_failed")
            self.stats.error("burst", exc)
        finally:
            window.release()

    # -- reporting ---------------------------------------------------------------------------

    async def _report_loop(self) -> None:
        parent = os.getppid()
        while True:
            self._report(final=False)
            if os.getppid() != parent:
                # The parent died without saying Stop (e.g. SIGKILL): an orphan would play its
                # devices forever and hold the parent's output pipes open.
                self._stop.set()
            await asyncio.sleep(REPORT_INTERVAL_S)

    def _report(self, *, final: bool) -> None:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        snapshot = Snapshot(
            worker=self.index,
            pid=os.getpid(),
            devices=len(self.specs),
            connected=sum(d.up for d in self.devices),
            converged=sum(d.converged for d in self.devices),
            accepted=sum(d.accepted for d in self.devices),
            counters=dict(self.stats.counters),
            errors=dict(self.stats.errors),
            cpu_s=usage.ru_utime + usage.ru_stime,
            events=self.stats.take_events(),
            final=final,
        )
        self._reports.put(_snapshot_encoder.encode(snapshot))


def main(index: int, specs: bytes, settings: bytes, control: AnyQueue, reports: AnyQueue) -> None:
    """The process entry point (spawned: no inherited event loop or threads)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C and says Stop
    # aiomqtt warns whenever a client has more than ten publishes in flight, which a telemetry
    # burst over a small fleet does by design; failures are counted in the snapshots instead.
    logging.getLogger("mqtt").setLevel(logging.ERROR)
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # one socket per device
    worker = Worker(
        index,
        msgspec.msgpack.decode(specs, type=list[DeviceSpec]),
        msgspec.msgpack.decode(settings, type=Settings),
        control,
        reports,
    )
    asyncio.run(worker.run())
