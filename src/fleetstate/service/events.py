"""Fan-out of what happens in the fleet, per organization (the source of SSE).

`EventBus` is what publishers (the outbox, command delivery, telemetry, presence) and subscribers
(the SSE handler) need; `EventHub` is its in-process implementation, which reaches only this
process's subscribers and numbers events in this process (docs/architecture.md,
"Single-process invariants"); a shared one would publish through `LISTEN/NOTIFY` or the broker.

Events are published after the change they describe committed. Each subscriber has a bounded
queue. A subscriber whose queue is full (a client that stopped reading: its stream is stuck in a
socket write) is dropped: removed at once, counted in `dropped_total`, and its `on_drop` called
(the SSE handler aborts its connection), so it costs nothing more and other subscribers never
wait for it. A client that reconnects gets the events from then on.

On shutdown `close()` ends every subscription at once, so open streams return before the HTTP
server waits for in-flight requests (an open stream would otherwise hold shutdown for the
server's whole grace).
"""

import asyncio
import itertools
import logging
from collections import defaultdict
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, Protocol

import msgspec

log = logging.getLogger(__name__)
QUEUE_LIMIT = 1000


class Event(msgspec.Struct, frozen=True, kw_only=True):
    id: int
    type: str
    data: dict[str, Any]


class Subscription:
    """One subscriber's queue; `next()` returns None once the subscription has ended (the hub
    closed, or the subscriber was dropped)."""

    def __init__(self, limit: int, on_drop: Callable[[], None] | None) -> None:
        self._queue: asyncio.Queue[Event | None] = asyncio.Queue(limit + 1)  # + the end mark
        self._limit = limit
        self._on_drop = on_drop
        self.ended = False

    async def next(self) -> Event | None:
        if self.ended and self._queue.empty():
            return None
        return await self._queue.get()

    def offer(self, event: Event) -> bool:
        """Queue the event; False when the queue is full (the subscriber must be dropped)."""
        if self._queue.qsize() >= self._limit:
            return False
        self._queue.put_nowait(event)
        return True

    def end(self, *, dropped: bool = False) -> None:
        if self.ended:
            return
        self.ended = True
        if dropped:
            while not self._queue.empty():  # what it did not read is of no use any more
                self._queue.get_nowait()
        self._queue.put_nowait(None)
        if dropped and self._on_drop is not None:
            self._on_drop()


class EventBus(Protocol):
    def publish(self, org_id: str, kind: str, data: dict[str, Any]) -> None:
        """Offer an event to the organization's subscribers; never waits for them."""
        ...

    def subscribe(
        self, org_id: str, on_drop: Callable[[], None] | None = None
    ) -> AbstractAsyncContextManager[Subscription]:
        """The organization's events from now on, for the block."""
        ...


class EventHub:
    """`EventBus` in this process."""

    def __init__(self, queue_limit: int = QUEUE_LIMIT) -> None:
        self._subscribers: dict[str, set[Subscription]] = defaultdict(set)
        self._ids = itertools.count(1)
        self._queue_limit = queue_limit
        self._closed = False
        self.dropped_total = 0
        """Subscribers dropped for falling `queue_limit` events behind."""

    def publish(self, org_id: str, kind: str, data: dict[str, Any]) -> None:
        subscribers = self._subscribers.get(org_id)
        if not subscribers:
            return
        event = Event(id=next(self._ids), type=kind, data=data)
        for subscription in list(subscribers):
            if not subscription.offer(event):
                self._drop(org_id, subscription)

    def _drop(self, org_id: str, subscription: Subscription) -> None:
        self.dropped_total += 1
        self._remove(org_id, subscription)
        log.warning(
            "dropped an event stream of organization %s: %d events behind",
            org_id,
            self._queue_limit,
        )
        subscription.end(dropped=True)

    def _remove(self, org_id: str, subscription: Subscription) -> None:
        found = self._subscribers.get(org_id)
        if found is None:
            return
        found.discard(subscription)
        if not found:
            del self._subscribers[org_id]

    @asynccontextmanager
    async def subscribe(
        self, org_id: str, on_drop: Callable[[], None] | None = None
    ) -> AsyncIterator[Subscription]:
        """A subscription to the organization's events; `on_drop` is called if it is dropped
        for falling behind. After `close()` it ends at once."""
        subscription = Subscription(self._queue_limit, on_drop)
        if self._closed:
            subscription.end()
        else:
            self._subscribers[org_id].add(subscription)
        try:
            yield subscription
        finally:
            self._remove(org_id, subscription)

    def close(self) -> None:
        """End every subscription now, and every later one at once (shutdown)."""
        self._closed = True
        subscribers = [s for found in self._subscribers.values() for s in found]
        self._subscribers.clear()
        for subscription in subscribers:
            subscription.end()

    def subscriber_count(self) -> int:
        return sum(len(s) for s in self._subscribers.values())
