"""The parent's side of a simulated fleet: worker processes, their totals, and stopping them.

Workers are spawned, not forked: the parent runs an event loop with threads, which a fork would
copy half-way. Each worker puts snapshots on one shared report queue; `poll()` drains it into
`Totals`. The queue must keep being drained while workers stop, or a worker blocked flushing its
last snapshot could never exit.
"""

import asyncio
import contextlib
import multiprocessing
import queue
import time
from collections.abc import Callable

import msgspec

from fleetstate.simulator import fleet
from fleetstate.simulator.options import DeviceSpec, Settings, split
from fleetstate.simulator.stats import Snapshot, Totals

POLL_S = 0.1
_encoder = msgspec.msgpack.Encoder()
_snapshot_decoder = msgspec.msgpack.Decoder(Snapshot)


class WorkerDied(RuntimeError):
    def __init__(self, name: str, code: int | None) -> None:
        super().__init__(f"simulator worker {name} exited with code {code}")


class Fleet:
    """Worker processes playing devices. `start()`, watch `totals`, `send()`, then `stop()`."""

    def __init__(self, specs: list[DeviceSpec], settings: Settings, processes: int) -> None:
        context = multiprocessing.get_context("spawn")
        self._reports: fleet.AnyQueue = context.Queue()
        self._stopped = False
        parts = split(specs, processes)
        self._controls: list[fleet.AnyQueue] = [context.Queue() for _ in parts]
        self._processes = [
            context.Process(
                target=fleet.main,
                args=(i, _encoder.encode(part), _encoder.encode(settings), control, self._reports),
                name=f"fleetstate-sim-{i}",
                daemon=True,
            )
            for i, (part, control) in enumerate(zip(parts, self._controls, strict=True))
        ]
        self.devices = len(specs)
        self.totals = Totals()

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self._processes if p.pid is not None]

    @property
    def workers(self) -> int:
        return len(self._processes)

    def start(self) -> None:
        for process in self._processes:
            process.start()

    def poll(self) -> Totals:
        """Take in every snapshot waiting; raise if a worker died without saying goodbye."""
        while True:
            try:
                raw = self._reports.get_nowait()
            except queue.Empty:
                break
            self.totals.add(_snapshot_decoder.decode(raw))
        for i, process in enumerate(self._processes):
            final = self.totals.latest.get(i)
            if process.exitcode not in (None, 0) and not (final and final.final):
                raise WorkerDied(process.name, process.exitcode)
        return self.totals

    def send(self, message: fleet.Control) -> None:
        for control in self._controls:
            control.put(_encoder.encode(message))

    async def wait(self, done: Callable[[Totals], bool], within: float) -> bool:
        """Poll until `done(totals)`; False when `within` seconds passed first."""
        deadline = time.monotonic() + within
        while not done(self.poll()):
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(POLL_S)
        return True

    async def stop(self, within: float = fleet.STOP_TIMEOUT_S + 10) -> None:
        """Tell every worker to stop, take their final snapshots, and reap them. Idempotent."""
        if self._stopped:
            return
        self._stopped = True
        self.send(fleet.Stop())
        with contextlib.suppress(WorkerDied):
            await self.wait(lambda t: t.finished() == len(self._processes), within)
        for process in self._processes:
            await asyncio.to_thread(process.join, 5.0)
            if process.is_alive():
                process.terminate()
                await asyncio.to_thread(process.join, 5.0)
        self.poll_quietly()

    def poll_quietly(self) -> None:
        with contextlib.suppress(WorkerDied, OSError, ValueError):
            self.poll()
