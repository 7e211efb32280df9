"""Presence of devices that talk HTTP only: online while they keep calling, offline after.

The device HTTP API has no session to end, so "online" means "called within the presence
window": a fixed `http_window_s`, or by default three times the device's observed interval
between telemetry calls (its heartbeat), 120 s until one is observed, never under
`http_min_window_s`. Timings live in memory; the database is written only when a device comes or
goes, by one sweep loop for the whole fleet (not a task per device). An MQTT session keeps a
device online whatever HTTP does (see `devices.http_presence_job`).
"""

import asyncio
import logging
import time
from typing import Any

from fleetstate.config import PresenceConfig
from fleetstate.errors import StoreClosed
from fleetstate.service import devices
from fleetstate.service.events import EventBus
from fleetstate.store import Store

log = logging.getLogger(__name__)
DEFAULT_WINDOW_S = 120.0
HEARTBEAT_FACTOR = 3.0


class _Seen:
    __slots__ = ("heartbeat", "interval", "last")

    def __init__(self, now: float) -> None:
        self.last = now
        self.heartbeat: float | None = None
        self.interval: float | None = None


class HttpPresence:
    def __init__(self, store: Store, events: EventBus, config: PresenceConfig) -> None:
        self._store, self._events, self._config = store, events, config
        self._seen: dict[str, _Seen] = {}

    def window_s(self, interval: float | None) -> float:
        if self._config.http_window_s > 0:
            return self._config.http_window_s
        automatic = DEFAULT_WINDOW_S if interval is None else HEARTBEAT_FACTOR * interval
        return max(automatic, self._config.http_min_window_s)

    def called(self, device_id: str, *, heartbeat: bool = False) -> None:
        """An authenticated device API call; `heartbeat` for telemetry (its periodic call)."""
        now = time.monotonic()
        seen = self._seen.get(device_id)
        if seen is None:
            seen = self._seen[device_id] = _Seen(now)
            self._write([device_id], online=True)
        seen.last = now
        if heartbeat:
            if seen.heartbeat is not None:
                seen.interval = now - seen.heartbeat
            seen.heartbeat = now

    def sweep(self) -> None:
        """Every device silent for longer than its window goes offline (one write for all)."""
        now = time.monotonic()
        gone = [d for d, s in self._seen.items() if now - s.last > self.window_s(s.interval)]
        for device_id in gone:
            del self._seen[device_id]
        if gone:
            self._write(gone, online=False)

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self._config.sweep_interval_s)
            self.sweep()

    def _write(self, device_ids: list[str], *, online: bool) -> None:
        try:
            written = self._store.submit(devices.http_presence_job(device_ids, online=online))
        except StoreClosed:
            log.debug("store closed: not recording HTTP presence of %d devices", len(device_ids))
            return
        written.add_done_callback(self._written)

    def _written(self, written: "asyncio.Future[list[dict[str, Any]]]") -> None:
        if written.cancelled() or written.exception() is not None:
            log.error(
                "recording HTTP presence failed: %r",
                None if written.cancelled() else written.exception(),
            )
            return
        for event in written.result():
            self._events.publish(event.pop("org_id"), "presence", event)
