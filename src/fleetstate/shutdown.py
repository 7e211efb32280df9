"""Bounded shutdown: in-flight work gets `shutdown_grace_s`, then it is cancelled and logged.

The service's TaskGroup would otherwise wait for every task it holds, however long: a publish to
a device that stopped answering held SIGTERM for seconds. `InFlight` remembers what it started,
and `settle` gives what still runs the grace before the broker and the store close.
"""

import asyncio
import contextvars
import logging
import weakref
from collections.abc import Collection, Coroutine
from typing import Any, TypeVar

log = logging.getLogger(__name__)
T = TypeVar("T")


class InFlight(asyncio.TaskGroup):
    """A TaskGroup that remembers its tasks (weakly: finished ones are forgotten)."""

    def __init__(self) -> None:
        super().__init__()
        self._spawned: weakref.WeakSet[asyncio.Task[Any]] = weakref.WeakSet()

    def create_task(  # type: ignore[override]
        self,
        coro: Coroutine[Any, Any, T],
        *,
        name: str | None = None,
        context: contextvars.Context | None = None,
    ) -> asyncio.Task[T]:
        task = super().create_task(coro, name=name, context=context)
        self._spawned.add(task)
        return task

    async def settle(self, grace_s: float, keep: Collection[asyncio.Task[Any]] = ()) -> None:
        """Wait up to `grace_s` for every running task but `keep`; cancel the rest."""
        waiting = [t for t in self._spawned if not t.done() and t not in keep]
        if not waiting:
            return
        _done, pending = await asyncio.wait(waiting, timeout=grace_s)
        if not pending:
            return
        log.warning(
            "shutdown: cancelling %d tasks still running after the %.1f s grace: %s",
            len(pending),
            grace_s,
            ", ".join(sorted(t.get_name() for t in pending)[:20]),
        )
        for task in pending:
            task.cancel()
        await asyncio.wait(pending)
