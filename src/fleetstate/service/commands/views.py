"""What the management API shows of commands: one with its history, a device's list, a batch."""

from typing import Any

import msgspec

from fleetstate.domain.pagination import Page, page_of
from fleetstate.errors import Invalid, NotFound
from fleetstate.service.commands.lifecycle import HISTORY_SHOWN, Status, history_page, view
from fleetstate.store import Store
from fleetstate.store.queries import commands as q
from fleetstate.store.queries import sql


async def get(store: Store, org_id: str, device_id: str, command_id: str) -> dict[str, Any]:
    row = await store.query(lambda conn: q.get(conn, org_id, device_id, command_id))
    if row is None:
        raise NotFound("command", command_id)
    shown = await history_page(store, command_id, Page(limit=HISTORY_SHOWN))
    return {**view(row), "history": shown["items"], "history_next_cursor": shown["next_cursor"]}


def _status_filter(status: str | None) -> str | None:
    if status is not None and status not in Status.__members__:
        raise Invalid(f"status must be one of {', '.join(Status)}")
    return status


async def list_page(
    store: Store, org_id: str, device_id: str, page: Page, status: str | None
) -> dict[str, Any]:
    """The device's commands, newest first."""
    if not await store.query(lambda conn: sql.exists(conn, "devices", org_id, device_id)):
        raise NotFound("device", device_id)
    wanted = _status_filter(status)
    after = page.cursor or None
    rows = await store.query(
        lambda conn: q.device_page(conn, device_id, wanted, after, page.limit + 1)
    )
    return page_of([view(r) for r in rows], page)


async def batch(
    store: Store, org_id: str, batch_id: str, page: Page, status: str | None
) -> dict[str, Any]:
    """A group command: counts per status, and its per-device commands (a page, oldest first)."""
    row = await store.query(lambda conn: q.batch(conn, org_id, batch_id))
    if row is None:
        raise NotFound("command batch", batch_id)
    counts = await store.query(lambda conn: q.batch_counts(conn, batch_id))
    wanted = _status_filter(status)
    after = page.cursor or None
    rows = await store.query(
        lambda conn: q.batch_page(conn, batch_id, wanted, after, page.limit + 1)
    )
    listed = page_of([view(r) for r in rows], page)
    return {
        **msgspec.structs.asdict(row),
        "params": msgspec.json.decode(row.params),
        "total": sum(c[1] for c in counts),
        "counts": {c[0]: c[1] for c in counts},
        "commands": listed["items"],
        "next_cursor": listed["next_cursor"],
    }
