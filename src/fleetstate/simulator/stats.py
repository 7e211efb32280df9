"""What a worker process counts, and the snapshots it sends its parent over a queue.

A snapshot carries gauges (connected, converged), running totals, and the events recorded since
the previous snapshot, so the parent keeps the newest snapshot of each worker and appends events.
"""

import time
from collections import Counter

import msgspec

Event = tuple[str, str, str, str, float]
"""(kind, device id, subject, status, wall-clock time): kind `connected` (subject: seconds from
CONNECT to SUBACK), `applied` (subject: the artefact of the device slot, or `version:N` when
nothing is bound), or `command` (its id)."""


class Snapshot(msgspec.Struct, frozen=True, kw_only=True):
    worker: int
    pid: int
    devices: int
    connected: int
    converged: int
    """Devices that gave their final answer to the newest document they received."""
    accepted: int
    counters: dict[str, int]
    errors: dict[str, int]
    cpu_s: float
    events: list[Event]
    final: bool = False


class Stats:
    """A worker's counters: one instance shared by all its devices (one event loop, no locks)."""

    def __init__(self, *, record_events: bool) -> None:
        self.counters: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()
        self._record = record_events
        self._events: list[Event] = []

    def count(self, name: str, n: int = 1) -> None:
        self.counters[name] += n

    def error(self, where: str, exc: BaseException) -> None:
        # Grouped by kind and message, so the summary says why, not only how often.
        text = str(exc).splitlines()[0][:80] if str(exc) else ""
        self.errors[f"{where}: {type(exc).__name__} {text}".rstrip()] += 1

    def event(self, kind: str, device_id: str, subject: str, status: str) -> None:
        if self._record:
            self._events.append((kind, device_id, subject, status, time.time()))

    def take_events(self) -> list[Event]:
        events, self._events = self._events, []
        return events


class Totals:
    """The parent's view: the newest snapshot of each worker, and every event so far."""

    def __init__(self) -> None:
        self.latest: dict[int, Snapshot] = {}
        self.events: list[Event] = []
        self.peak_connected = 0

    def add(self, snapshot: Snapshot) -> None:
        self.latest[snapshot.worker] = snapshot
        self.events += snapshot.events
        self.peak_connected = max(self.peak_connected, self.gauge("connected"))

    def gauge(self, name: str) -> int:
        return sum(int(getattr(s, name)) for s in self.latest.values())

    def counter(self, name: str) -> int:
        return sum(s.counters.get(name, 0) for s in self.latest.values())

    def counters(self) -> Counter[str]:
        total: Counter[str] = Counter()
        for s in self.latest.values():
            total.update(s.counters)
        return total

    def errors(self) -> Counter[str]:
        total: Counter[str] = Counter()
        for s in self.latest.values():
            total.update(s.errors)
        return total

    def cpu_s(self) -> float:
        return sum(s.cpu_s for s in self.latest.values())

    def finished(self) -> int:
        return sum(1 for s in self.latest.values() if s.final)
