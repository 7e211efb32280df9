"""A write's after-commit effects, recorded by the write and dispatched once after its commit.

A write job records what must happen once its transaction holds, from anywhere inside the job:
a changed document to push to its device (`deliver`), an event to announce on the organisation's
stream (`announce`), commands that moved and may let the next one go (`commands_finished`), new
commands to arm, announce and send (`commands_created`), a device whose MQTT session must end
because the key it proved is gone (`disconnect`). The store's writer hands each job a fresh
`Effects` (a context variable, set around the job in the writer's thread), keeps it only if the
job's savepoint was released, and after the batch committed gives each kept one to the `Outbox`,
which acts on them on the event loop. A job that raised, or a batch whose commit failed, fires
nothing: datasette's `track_event`, applied to the device protocol. Handlers no longer remember
what to do after a write; they call the domain function and encode its result.

Most effects only start work. Two are awaited, because the caller's answer promises their end:
a disconnect (once a rotation's answer arrives, the old key's session is gone) and new commands
(a single device's command is SENT in the answer when the device is connected). For a job with
either, `Outbox.dispatch` returns the task doing them, and the store resolves that job's future
only when the task is done; the writer does not wait, and other jobs resolve at once.
"""

import asyncio
import contextlib
import contextvars
import logging
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # those modules record into this one
    from fleetstate.service.commands import Brief
    from fleetstate.service.desired import DesiredChange
    from fleetstate.service.events import EventBus

log = logging.getLogger(__name__)


class Effects:
    """What one write job asked for after its commit, in the order it asked."""

    __slots__ = ("announcements", "created", "deliveries", "disconnects", "finished")

    def __init__(self) -> None:
        self.deliveries: list[DesiredChange] = []
        self.announcements: list[tuple[str, str, dict[str, Any]]] = []
        self.finished: list[tuple[list[Brief], bool]] = []
        self.disconnects: list[str] = []
        self.created: list[tuple[list[Brief], str | None]] = []

    def __bool__(self) -> bool:
        return bool(self.deliveries or self.announcements or self.finished or self.awaited)

    @property
    def awaited(self) -> bool:
        """Whether the job's caller resumes only after these effects are done."""
        return bool(self.disconnects or self.created)

    def deliver(self, changes: Iterable["DesiredChange"]) -> None:
        """Push these changed documents to their devices that are connected after the commit."""
        self.deliveries.extend(changes)

    def announce(self, org_id: str, kind: str, data: dict[str, Any]) -> None:
        """Publish an event of `kind` to the organisation's event streams."""
        self.announcements.append((org_id, kind, data))

    def commands_finished(self, briefs: Iterable["Brief"], *, deliver_next: bool = True) -> None:
        """Announce these commands' new status; unless told not to (a device that takes its
        commands all at once has no next one waiting), a finished one's next may go out."""
        self.finished.append((list(briefs), deliver_next))

    def commands_created(self, briefs: Sequence["Brief"], batch_id: str | None) -> None:
        """Arm, announce and send these new commands (awaited for one device's command)."""
        self.created.append((list(briefs), batch_id))

    def disconnect(self, device_id: str) -> None:
        """End the device's MQTT session (awaited: its key changed or it is gone)."""
        self.disconnects.append(device_id)


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


def job_scope() -> contextlib.AbstractContextManager[Effects]:
    """What the store runs each write job in (`Store.effects_scope`): a fresh `Effects`."""
    return collecting(Effects())


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


def commands_finished(briefs: Iterable["Brief"], *, deliver_next: bool = True) -> None:
    """In a write job: tell command delivery of these moved commands once the job committed."""
    current().commands_finished(briefs, deliver_next=deliver_next)


def commands_created(briefs: Sequence["Brief"], batch_id: str | None = None) -> None:
    """In a write job: hand these new commands to delivery once the job committed; the job's
    caller resumes after a single device's delivery (so its answer can show it SENT)."""
    current().commands_created(briefs, batch_id)


def disconnect(device_id: str) -> None:
    """In a write job: end the device's MQTT session once the job committed; the job's caller
    resumes after the session ended."""
    current().disconnect(device_id)


Spawn = Callable[[Coroutine[Any, Any, None], str], "asyncio.Task[None] | None"]
"""Starts a named background task, or returns None (closing the coroutine) during shutdown."""


class Outbox:
    """Acts on committed jobs' effects; the one place that does (wired in `app.start` as the
    store's `after_commit`). Runs on the event loop, before the jobs' callers resume. It never
    waits itself: each effect starts its own work, and the awaited ones run in a task that the
    store waits for before that job's caller resumes."""

    def __init__(
        self,
        *,
        deliver: Callable[[Iterable["DesiredChange"]], None],
        events: "EventBus",
        commands_finished: Callable[[list["Brief"], bool], None],
        commands_created: Callable[[list["Brief"], str | None], Awaitable[None]],
        disconnect: Callable[[str], Awaitable[None]],
        spawn: Spawn,
    ) -> None:
        self._deliver = deliver
        self._events = events
        self._commands_finished = commands_finished
        self._commands_created = commands_created
        self._disconnect = disconnect
        self._spawn = spawn

    def dispatch(self, effects: Effects) -> "asyncio.Future[None] | None":
        """In the order the old handlers acted: documents, events, moved commands; then, in a
        task whose end the job's caller waits for, disconnects and new commands."""
        # An effect that fails is logged and the rest still go: the write stands, and a device
        # gets what it missed when it next connects or subscribes (level-triggered delivery).
        if effects.deliveries:
            try:
                self._deliver(effects.deliveries)
            except Exception:
                log.exception("delivering %d changed documents failed", len(effects.deliveries))
        for org_id, kind, data in effects.announcements:
            try:
                self._events.publish(org_id, kind, data)
            except Exception:
                log.exception("announcing a %s event failed", kind)
        for briefs, deliver_next in effects.finished:
            try:
                self._commands_finished(briefs, deliver_next)
            except Exception:
                log.exception("telling delivery of %d finished commands failed", len(briefs))
        if not effects.awaited:
            return None
        return self._spawn(self._awaited(effects), "after-commit")

    async def _awaited(self, effects: Effects) -> None:
        for device_id in effects.disconnects:
            try:
                await self._disconnect(device_id)
            except Exception:
                log.exception("disconnecting %s after its write failed", device_id)
        for briefs, batch_id in effects.created:
            try:
                await self._commands_created(briefs, batch_id)
            except Exception:
                log.exception("handing %d new commands to delivery failed", len(briefs))
