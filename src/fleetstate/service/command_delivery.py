"""When commands go out and when they time out.

The `Dispatcher` publishes a device's commands over MQTT when it can take them (at once while it is
connected, oldest first when it connects or subscribes), records SENT once the device PUBACKed,
handles acks and announces every change as a `command` event. It never holds a transaction across
a publish: commit, publish, then record the outcome.

`Deadlines` is when commands time out: deadlines are rows, and one loop expires what fell due
(`commands.expire_due`, whose write announces them through the outbox). `HeapDeadlines` is the
in-process loop: a heap of the deadlines due in the next `HORIZON_S`, refilled from the database
every half horizon, so 100,000 open commands are rows, not tasks. A command with a shorter
timeout is armed by whoever created it, which wakes the loop when its deadline is earlier than
the one it sleeps towards. A command that finishes early needs no cancel: at its deadline the
expiry finds nothing open. Per-device exclusion of delivery passes is a `KeyedLocks`; both are
chosen by the composition root.
"""

import asyncio
import contextlib
import heapq
import logging
import math
import time
from collections.abc import Coroutine, Iterable, Sequence
from datetime import UTC, datetime
from typing import Any, Protocol

from fleetstate.bus import Bus, device_topic
from fleetstate.domain.clock import rfc3339
from fleetstate.domain.commands import TRACKING
from fleetstate.errors import StoreClosed
from fleetstate.service import commands
from fleetstate.service.coordination import KeyedLocks
from fleetstate.service.events import EventBus
from fleetstate.store import Store

log = logging.getLogger(__name__)

HORIZON_S = 60.0
PUBLISH_TIMEOUT_S = 10.0
PUSH_CONCURRENCY = 256


class Devices(Protocol):
    """What delivery needs of the device side (the gateway, which owns the `Dispatcher`)."""

    @property
    def bus(self) -> Bus: ...

    @property
    def events(self) -> EventBus: ...

    async def send_current(self, device_id: str) -> bool: ...

    def reject(self, device_id: str, topic: str, code: str, detail: str) -> None: ...


class Deadlines(Protocol):
    """When open commands time out. Commands keep their deadline in their row; this says when
    to look."""

    def arm(self, timeout_at: str) -> None:
        """A new command's deadline (RFC 3339): it is expired no later than that."""
        ...

    async def start(self) -> None:
        """At service start, before anything is served: expire what fell due while stopped."""
        ...

    async def run(self) -> None:
        """The loop that expires commands as their deadlines pass; runs until cancelled."""
        ...


class HeapDeadlines:
    """`Deadlines` in this process: a heap of the deadlines within the horizon."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._heap: list[float] = []
        self._horizon = 0.0  # every open deadline up to here is in the heap
        self._next = math.inf  # what the loop sleeps towards
        self._wake = asyncio.Event()

    def arm(self, timeout_at: str) -> None:
        at = commands.epoch(timeout_at)
        if at > self._horizon:
            return  # a refill loads it before it is due
        heapq.heappush(self._heap, at)
        if at < self._next:
            self._wake.set()

    async def start(self) -> None:
        """At service start: what fell due while we were stopped is TIMEOUT at once; the rest is
        armed again."""
        await self._expire()
        await self._refill()

    async def run(self) -> None:
        while True:
            self._wake.clear()
            now = time.time()
            if self._heap and self._heap[0] <= now:
                while self._heap and self._heap[0] <= now:
                    heapq.heappop(self._heap)
                await self._expire()
            elif now >= self._horizon - HORIZON_S / 2:
                await self._refill()
            else:
                await self._sleep(now)

    async def _sleep(self, now: float) -> None:
        self._next = min(self._heap[0] if self._heap else math.inf, self._horizon - HORIZON_S / 2)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self._next - now):
                await self._wake.wait()
        self._next = math.inf

    async def _refill(self) -> None:
        after = self._horizon
        # Moved first: whatever is armed from now on up to the new horizon goes into the heap.
        self._horizon = time.time() + HORIZON_S
        due = await commands.deadlines(self._store, _text(after), _text(self._horizon))
        for timeout_at in due:
            heapq.heappush(self._heap, commands.epoch(timeout_at))

    async def _expire(self) -> None:
        # Announced, and a sequential device's next one let go, by the write's outbox.
        expired = await commands.expire_due(self._store)
        if expired:
            log.info("%d commands timed out", len(expired))


def _text(moment: float) -> str:
    return rfc3339(datetime.fromtimestamp(moment, UTC))


class Dispatcher:
    def __init__(
        self,
        store: Store,
        gateway: Devices,
        tasks: asyncio.TaskGroup,
        *,
        deadlines: Deadlines,
        locks: KeyedLocks,
    ) -> None:
        self._store = store
        self._gateway = gateway
        self._tasks = tasks
        self.deadlines = deadlines
        self._passes = locks
        """One delivery pass per device at a time, so a command is not published twice and
        the order holds."""

    # -- what the outbox hands over after a commit ------------------------------------------------

    async def created(self, briefs: Sequence[commands.Brief], batch_id: str | None) -> None:
        """Arm and announce new commands; deliver one device's at once (the issuing write's
        caller waits for it), a batch's in the background."""
        for brief in briefs:
            self.deadlines.arm(brief.timeout_at)
        self._announce(briefs)
        device_ids = list(dict.fromkeys(b.device_id for b in briefs))
        if batch_id is None:
            for device_id in device_ids:
                await self.push(device_id)
        else:
            self._spawn(self.push_many(device_ids), f"deliver-batch:{batch_id}")

    def changed(self, briefs: Sequence[commands.Brief], deliver_next: bool = True) -> None:
        """Commands moved (a cancel, a device's answer): announce them, and a device whose
        command finished may take its next one."""
        self._finished(list(briefs), deliver_next=deliver_next)

    # -- delivery --------------------------------------------------------------------------------

    async def push(self, device_id: str) -> None:
        """Publish what may go out to the device now, oldest first; each PUBACKed one is SENT."""
        bus = self._gateway.bus
        if not bus.is_connected(device_id):
            return  # spares the read; a connected one that takes no commands refuses the first
        try:
            async with self._passes.hold(device_id):
                for outgoing in await commands.deliverable(self._store, device_id):
                    if outgoing.brief.type == "UPDATE_CONFIG":
                        await self._gateway.send_current(device_id)
                    if not await _publish(bus, device_id, outgoing.payload):
                        return  # gone or silent: the rest goes when it next connects
                    self._announce(await commands.mark_sent(self._store, outgoing.brief.id))
        except StoreClosed:
            log.debug("not delivering to %s: shutting down", device_id)

    async def push_many(self, device_ids: Iterable[str]) -> None:
        """Deliver to many devices, `PUSH_CONCURRENCY` at a time. A pool, not lockstep rounds:
        each delivery waits for its device's PUBACK, and a round would wait for its slowest."""
        bus = self._gateway.bus
        online = iter([d for d in device_ids if bus.is_connected(d)])

        async def deliver() -> None:
            for device_id in online:
                await self.push(device_id)

        await asyncio.gather(*(deliver() for _ in range(PUSH_CONCURRENCY)))

    # -- what the gateway tells --------------------------------------------------------------------

    async def on_delivered(self, device_id: str, version: int, acknowledged: bool) -> None:
        if acknowledged:
            with contextlib.suppress(StoreClosed):
                self._announce(await commands.mark_config_sent(self._store, device_id, version))

    async def on_ack(self, device_id: str, payload: bytes) -> None:
        """`devices/{id}/commands/ack`. Unknown ids raise UnknownCommand (answered on the
        device's errors topic); a late ack is recorded, changes nothing, and the device is told.
        An applied one is announced by the write's outbox, as for an HTTP answer."""
        ack = commands.ack_decoder.decode(payload)
        outcome = await commands.record_ack(self._store, device_id, ack)
        if outcome.effect == "late":
            detail = (
                f"command {ack.id!r} is already {outcome.brief.status}; the ack was recorded"
                " and changes nothing"
            )
            topic = device_topic(device_id, "commands/ack")
            self._gateway.reject(device_id, topic, "command_finished", detail)

    # -- after changes ---------------------------------------------------------------------------

    def _finished(self, briefs: list[commands.Brief], *, deliver_next: bool = True) -> None:
        """Announce; a device whose command finished may take its next one (sequential)."""
        self._announce(briefs)
        if not deliver_next:
            return
        bus = self._gateway.bus
        # A tracking command (BIND_CONFIG/UNBIND_CONFIG) never goes out and holds no device's
        # queue, so its end frees nothing: a rollout's reports cost no delivery pass each.
        finished = [
            b
            for b in briefs
            if not commands.TRANSITIONS[commands.Status(b.status)] and b.type not in TRACKING
        ]
        for device_id in dict.fromkeys(b.device_id for b in finished):
            if bus.is_connected(device_id):
                self._spawn(self.push(device_id), f"deliver-next:{device_id}")

    def _announce(self, briefs: Iterable[commands.Brief]) -> None:
        for b in briefs:
            data = {"id": b.id, "device_id": b.device_id, "type": b.type, "status": b.status}
            self._gateway.events.publish(b.org_id, "command", {**data, "message": b.message})

    def _spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> None:
        try:
            self._tasks.create_task(coro, name=name)
        except RuntimeError:
            coro.close()  # shutting down: waiting commands go out on the next connect
            log.debug("not starting %s during shutdown", name)


async def _publish(bus: Bus, device_id: str, payload: bytes) -> bool:
    try:
        async with asyncio.timeout(PUBLISH_TIMEOUT_S):
            return await bus.send(device_id, "commands", payload)
    except TimeoutError:
        log.info("no PUBACK from %s for a command within %.0f s", device_id, PUBLISH_TIMEOUT_S)
        return False
