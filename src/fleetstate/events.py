"""In-process fan-out of what happens in the fleet, per organization (the source of SSE).

Events are published after the change they describe committed. Each subscriber has a bounded
queue; a subscriber too slow to keep up loses its oldest events and is told so (a `lagged`
event), rather than slowing the service or growing without bound.
"""

import asyncio
import itertools
from collections import defaultdict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import msgspec

QUEUE_LIMIT = 1000


class Event(msgspec.Struct, frozen=True, kw_only=True):
    id: int
    type: str
    data: dict[str, Any]


class EventHub:
    def __init__(self) -> None:
        self._subscribers: dict[str, set[asyncio.Queue[Event]]] = defaultdict(set)
        self._ids = itertools.count(1)

    def publish(self, org_id: str, kind: str, data: dict[str, Any]) -> None:
        subscribers = self._subscribers.get(org_id)
        if not subscribers:
            return
        event = Event(id=next(self._ids), type=kind, data=data)
        for queue in subscribers:
            if queue.full():
                queue.get_nowait()
                lagged = Event(id=event.id, type="lagged", data={"dropped": 1})
                queue.put_nowait(lagged)
                continue
            queue.put_nowait(event)

    @asynccontextmanager
    async def subscribe(self, org_id: str) -> AsyncIterator[asyncio.Queue[Event]]:
        queue: asyncio.Queue[Event] = asyncio.Queue(QUEUE_LIMIT)
        self._subscribers[org_id].add(queue)
        try:
            yield queue
        finally:
            self._subscribers[org_id].discard(queue)
            if not self._subscribers[org_id]:
                del self._subscribers[org_id]

    def subscriber_count(self) -> int:
        return sum(len(s) for s in self._subscribers.values())
