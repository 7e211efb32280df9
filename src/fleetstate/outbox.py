"""A write's after-commit effects, recorded by the write and dispatched once after its commit.

A write job records what must happen once its transaction holds, from anywhere inside the job:
a changed document to push to its device (`deliver`), an event to announce on the organisation's
stream (`announce`), commands that finished and may let the next one go (`commands_finished`).
The store's writer hands each job a fresh `Effects` (a context variable, set around the job in
the writer's thread), keeps it only if the job's savepoint was released, and after the batch
committed gives each kept one to the `Outbox`, which acts on them on the event loop. A job that
raised, or a batch whose commit failed, fires nothing: datasette's `track_event`, applied to the
device protocol. Handlers no longer remember what to do after a write; they call the domain
function and encode its result.
"""

import contextlib
import contextvars
import logging
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the store imports this module; the domain imports the store
    from fleetstate.commands import Brief
    from fleetstate.desired import DesiredChange

log = logging.getLogger(__name__)


class Effects:
    """What one write job asked for after its commit, in the order it asked."""

    __slots__ = ("announcements", "deliveries", "finished")

    def __init__(self) -> None:
        self.deliveries: list[DesiredChange] = []
        self.announcements: list[tuple[str, str, dict[str, Any]]] = []
        self.finished: list[Brief] = []

    def __bool__(self) -> bool:
        return bool(self.deliveries or self.announcements or self.finished)

    def deliver(self, changes: Iterable["DesiredChange"]) -> None:
        """Push these changed documents to their devices that are connected after the commit."""
        self.deliveries.extend(changes)

    def announce(self, org_id: str, kind: str, data: dict[str, Any]) -> None:
        """Publish an event of `kind` to the organisation's event streams."""
        self.announcements.append((org_id, kind, data))

    def commands_finished(self, briefs: Iterable["Brief"]) -> None:
        """Announce these commands' new status; a sequential device's next one may go out."""
        self.finished.extend(briefs)


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


def announce(org_id: str, kind: str, data: dict[str, Any]) -> None:
    """In a write job: publish this event once the job committed."""
    current().announce(org_id, kind, data)


def commands_finished(briefs: Iterable["Brief"]) -> None:
    """In a write job: tell command delivery of these moved commands once the job committed."""
    current().commands_finished(briefs)


class Outbox:
    """Acts on committed jobs' effects; the one place that does (wired in `app.start` as the
    store's `after_commit`). Runs on the event loop, before the jobs' callers resume, and never
    waits: each effect starts its own work (a delivery is a task of the gateway's)."""

    def __init__(
        self,
        *,
        deliver: Callable[[Iterable["DesiredChange"]], None],
        announce: Callable[[str, str, dict[str, Any]], None],
        commands_finished: Callable[[list["Brief"]], None],
    ) -> None:
        self._deliver = deliver
        self._announce = announce
        self._commands_finished = commands_finished

    def dispatch(self, effects: Effects) -> None:
        """In the order the old handlers acted: documents, then events, then commands."""
        # An effect that fails is logged and the rest still go: the write stands, and a device
        # gets what it missed when it next connects or subscribes (level-triggered delivery).
        if effects.deliveries:
            try:
                self._deliver(effects.deliveries)
            except Exception:
                log.exception("delivering %d changed documents failed", len(effects.deliveries))
        for org_id, kind, data in effects.announcements:
            try:
                self._announce(org_id, kind, data)
            except Exception:
                log.exception("announcing a %s event failed", kind)
        if effects.finished:
            try:
                self._commands_finished(effects.finished)
            except Exception:
                log.exception(
                    "telling delivery of %d finished commands failed", len(effects.finished)
                )
