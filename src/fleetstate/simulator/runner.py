"""`fleetstate simulate`: provision a fleet, play it in worker processes, show progress, sum up."""

import asyncio
import contextlib
import signal
import time
from collections.abc import Iterator

import aiohttp
from rich.console import Console
from rich.live import Live

from fleetstate.simulator import console as view
from fleetstate.simulator.options import Options, Settings, default_processes, mqtt_address
from fleetstate.simulator.provision import Provisioned, ProvisioningError, provision
from fleetstate.simulator.supervisor import Fleet

REFRESH_S = 0.25


def run(options: Options) -> int:
    out = Console()
    try:
        return asyncio.run(simulate(options, out))
    except (ProvisioningError, aiohttp.ClientError, ValueError) as exc:
        out.print(f"[red]fleetstate simulate: {exc}[/red]")
        return 2


async def simulate(options: Options, out: Console) -> int:
    provisioned = await _provision(options, out)
    processes = options.processes or default_processes(options.devices)
    host, port = mqtt_address(provisioned.mqtt_url)
    settings = Settings(
        mqtt_host=host,
        mqtt_port=port,
        http_url=options.http_url.rstrip("/"),
        telemetry_interval=options.telemetry_interval,
        connect_rate=options.connect_rate / processes,
        apply_delay=options.apply_delay,
    )
    fleet = Fleet(provisioned.specs, settings, processes)
    out.print(
        f"{options.devices:,} devices on {provisioned.mqtt_url}"
        + (f", group {provisioned.group_id}" if provisioned.group_id else "")
        + f"; {fleet.workers} worker processes. Ctrl-C stops."
    )
    started = time.monotonic()
    with _stop_on_signals() as stop:
        fleet.start()
        try:
            await _watch(fleet, stop, options.duration, options.devices)
        finally:
            await fleet.stop()
    elapsed = time.monotonic() - started
    out.print()
    out.print(view.summary(fleet.totals, options.devices, elapsed, provisioned.seconds))
    return 0


async def _provision(options: Options, out: Console) -> Provisioned:
    bars = view.bars(out)
    task = bars.add_task("provisioning", total=options.devices)
    async with aiohttp.ClientSession() as session:
        with bars:
            provisioned = await provision(options, session, lambda n: bars.advance(task, n))
            bars.update(task, completed=options.devices)
            return provisioned


async def _watch(fleet: Fleet, stop: asyncio.Event, duration: float | None, devices: int) -> None:
    live = view.LiveView(devices)
    deadline = None if duration is None else time.monotonic() + duration
    with Live(live, refresh_per_second=1 / REFRESH_S):
        while not stop.is_set() and (deadline is None or time.monotonic() < deadline):
            live.update(fleet.poll())
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(REFRESH_S):
                    await stop.wait()
        live.update(fleet.poll())


@contextlib.contextmanager
def _stop_on_signals() -> Iterator[asyncio.Event]:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        yield stop
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
