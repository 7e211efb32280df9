"""The command lifecycle: statuses, the one transition table, and the moves it allows.

`PENDING → SENT → ACKNOWLEDGED → SUCCESS | FAILED | TIMEOUT`, plus `CANCELLED`. Every status
UPDATE takes its guard from `TRANSITIONS`, so a finished command never changes again; late and
duplicate answers from the device only go into `command_history`.
"""

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any, Literal

import msgspec

from fleetstate.domain.canonical import canonical_bytes
from fleetstate.domain.clock import now_text, rfc3339, utcnow
from fleetstate.domain.commands import (
    CANCELLABLE,
    OPEN,
    TRACKING,
    TRANSITIONS,
    WAITING,
    Effect,
    Status,
    sources,
)
from fleetstate.domain.commands import effect_of as _effect
from fleetstate.domain.pagination import Page, page_of
from fleetstate.errors import Conflict, Invalid, NotFound
from fleetstate.service import outbox
from fleetstate.store import Connection, Store
from fleetstate.store.queries import commands as q

__all__ = [
    "CANCELLABLE",
    "OPEN",
    "TRACKING",
    "TRANSITIONS",
    "WAITING",
    "Effect",
    "Status",
    "sources",
]
"""Re-exported from `domain.commands` for the modules that import them from here."""

DEFAULT_TIMEOUT_S = 300
HISTORY_SHOWN = 50
"""Answers shown with a command (`GET .../commands/{id}`); the rest page through `.../history`:
a device repeating answers to one command must not make that read grow without bound."""


_STAMP = {Status.SENT: "sent_at", Status.ACKNOWLEDGED: "acknowledged_at"}


class UnknownCommand(NotFound):
    """An answer about a command this device does not have (unknown, or another device's)."""

    code = "unknown_command"

    def __init__(self, command_id: str) -> None:
        super().__init__("command", command_id)


class Target(msgspec.Struct, frozen=True):
    """A device a command is issued to."""

    id: str
    profile_id: str


class Brief(msgspec.Struct, frozen=True, kw_only=True):
    """A command that changed: enough to arm its deadline, announce it and deliver it."""

    id: str
    org_id: str
    device_id: str
    type: str
    status: str
    message: str | None
    timeout_at: str


# -- rows --------------------------------------------------------------------------------------


def view(row: q.CommandRow) -> dict[str, Any]:
    """What the API shows of a command."""
    out = msgspec.structs.asdict(row)
    del out["org_id"]
    out["params"] = msgspec.json.decode(out["params"])
    out["desired_version"] = out.pop("tracks_version")
    return out


def brief(row: q.BriefRow | q.CommandRow) -> Brief:
    return Brief(**{k: getattr(row, k) for k in Brief.__struct_fields__})


def to_json(value: Any) -> str:
    return canonical_bytes(value).decode()


def created_and_deadline(timeout_s: int) -> tuple[str, str]:
    now = utcnow()
    return rfc3339(now), rfc3339(now + timedelta(seconds=timeout_s))


def epoch(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


# -- moves -------------------------------------------------------------------------------------


async def move(
    conn: Connection, where: str, params: Sequence[Any], to: Status, message: str | None
) -> list[Brief]:
    """Move the commands matching `where` to `to`, each only where TRANSITIONS allows it."""
    moved = await q.move(
        conn,
        where,
        params,
        to=to,
        stamp=_STAMP.get(to, "finished_at"),
        sources=sources(to),
        now=now_text(),
        message=message,
    )
    return [brief(r) for r in moved]


async def answer(
    conn: Connection,
    command_id: str,
    current: Status,
    to: Status,
    message: str | None,
    source: Literal["device", "report"],
) -> Effect:
    """Record an answer of the device in the history, and apply it where the lifecycle allows."""
    effect = _effect(current, to)
    await q.add_answer(conn, command_id, source, to, message, effect, now_text())
    if effect == "applied":
        await move(conn, *q.move_one(command_id), to, message)
    return effect


async def history(
    store: Store, org_id: str, device_id: str, command_id: str, page: Page
) -> dict[str, Any]:
    """The command's answers, oldest first, a page at a time (the cursor is opaque)."""
    if not await store.query(lambda conn: q.exists(conn, org_id, device_id, command_id)):
        raise NotFound("command", command_id)
    return await history_page(store, command_id, page)


async def history_page(store: Store, command_id: str, page: Page) -> dict[str, Any]:
    after = 0
    if page.cursor is not None:
        if not (page.cursor.isascii() and page.cursor.isdigit()):
            raise Invalid("malformed cursor")
        after = int(page.cursor)
    rows = await store.query(lambda conn: q.answers(conn, command_id, after, page.limit + 1))
    items = [{**msgspec.structs.asdict(r), "id": str(r.id)} for r in rows]
    listed = page_of(items, page)
    for item in listed["items"]:
        del item["id"]
    return listed


async def cancel(store: Store, org_id: str, device_id: str, command_id: str) -> Brief:
    """The operator's cancel, while the device has not started on it."""

    async def job(conn: Connection) -> Brief:
        current = await q.status(conn, org_id, device_id, command_id)
        if current is None:
            raise NotFound("command", command_id)
        if current not in CANCELLABLE:
            raise Conflict(
                f"command {command_id!r} is {current}; only PENDING or SENT commands can be"
                " cancelled"
            )
        cancelled = "cancelled by the operator"
        (moved,) = await move(conn, *q.move_one(command_id), Status.CANCELLED, cancelled)
        outbox.commands_finished([moved])  # announced, and the next sequential one may go
        return moved

    return await store.write(job)


async def expire_due(store: Store) -> list[Brief]:
    """Every unfinished command whose deadline passed becomes TIMEOUT, in one statement."""

    async def job(conn: Connection) -> list[Brief]:
        late = "no result before the deadline"
        expired = await move(conn, *q.move_due(now_text()), Status.TIMEOUT, late)
        if expired:
            outbox.commands_finished(expired)  # announced; a sequential device's next may go
        return expired

    return await store.write(job)


async def deadlines(store: Store, after: str, until: str) -> list[str]:
    """The deadlines of unfinished commands in (after, until]."""
    return await store.query(lambda conn: q.deadlines(conn, OPEN, after, until))
