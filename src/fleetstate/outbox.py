"""A write's after-commit effects, recorded by the write and dispatched once after its commit.

A write job records what must happen once its transaction holds (a changed document to push to
its device) with `deliver(...)`, from anywhere inside the job. The store's writer hands each job
a fresh `Effects` (a context variable, set around the job in the writer's thread), keeps it only
if the job's savepoint was released, and after the batch committed gives each kept one to the
`Outbox`, which acts on them on the event loop. A job that raised, or a batch whose commit
failed, fires nothing: datasette's `track_event`, applied to the device protocol. Handlers no
longer remember what to do after a write; they call the domain function and encode its result.
"""

import contextlib
import contextvars
import logging
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the store imports this module; the domain imports the store
    from fleetstate.desired import DesiredChange

log = logging.getLogger(__name__)


class Effects:
    """What one write job asked for after its commit, in the order it asked."""

    __slots__ = ("deliveries",)

    def __init__(self) -> None:
        self.deliveries: list[DesiredChange] = []

    def __bool__(self) -> bool:
        return bool(self.deliveries)

    def deliver(self, changes: Iterable["DesiredChange"]) -> None:
        """Push these changed documents to their devices that are connected after the commit."""
        self.deliveries.extend(changes)


_current: contextvars.ContextVar[Effects | None] = contextvars.ContextVar(
    "fleetstate_effects", default=None
)


@contextlib.contextmanager
def collecting(effects: Effects) -> Iterator[Effects]:
    """Record into `effects` whatever the code in this block asks for (the writer, per job)."""
    token = _current.set(effects)
    try:
        yield effects
    finally:
        _current.reset(token)


def current() -> Effects:
    """The running write job's effects. Only a write job has any: recording from a read, or
    from outside the store, would fire nothing, so it is a programming error."""
    effects = _current.get()
    if effects is None:
        raise RuntimeError("after-commit effects can only be recorded inside a store write job")
    return effects


def deliver(changes: Iterable["DesiredChange"]) -> None:
    """In a write job: deliver these changed documents once the job committed."""
    current().deliver(changes)


class Outbox:
    """Acts on committed jobs' effects; the one place that does (wired in `app.start` as the
    store's `after_commit`). Runs on the event loop, before the jobs' callers resume, and never
    waits: each effect starts its own work (a delivery is a task of the gateway's)."""

    def __init__(self, *, deliver: Callable[[Iterable["DesiredChange"]], None]) -> None:
        self._deliver = deliver

    def dispatch(self, effects: Effects) -> None:
        if effects.deliveries:
            try:
                self._deliver(effects.deliveries)
            except Exception:
                # The write stands; the device gets its document when it next (re)subscribes.
                log.exception("delivering %d changed documents failed", len(effects.deliveries))
