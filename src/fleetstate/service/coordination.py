"""Mutual exclusion by key: one holder per key at a time (a device's delivery pass, a dump's
append), others waiting their turn in order.

`KeyedLocks` is what the users need; `LocalLocks` is the in-process implementation, correct only
while one process does all of that work (docs/architecture.md, "Single-process invariants").
With several processes a database implementation takes its place, e.g. a transaction holding
`pg_advisory_xact_lock(hash(key))` or `SELECT ... FOR UPDATE` on the key's row for the duration.
"""

import asyncio
import contextlib
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from typing import Protocol


class KeyedLocks(Protocol):
    def hold(self, key: str) -> AbstractAsyncContextManager[None]:
        """Wait until nobody else holds `key`, then hold it for the block."""
        ...


class LocalLocks:
    """An `asyncio.Lock` per key in use, forgotten once nobody holds or waits for it, so a
    fleet of keys costs only what is busy now."""

    def __init__(self) -> None:
        self._locks: dict[str, asyncio.Lock] = {}
        self._users: Counter[str] = Counter()

    @contextlib.asynccontextmanager
    async def hold(self, key: str) -> AsyncIterator[None]:
        lock = self._locks.setdefault(key, asyncio.Lock())
        self._users[key] += 1
        try:
            async with lock:
                yield
        finally:
            self._users[key] -= 1
            if not self._users[key]:
                del self._users[key], self._locks[key]

    def __len__(self) -> int:
        """Keys held or waited for now."""
        return len(self._locks)
