"""What the management API shows of commands: one with its history, a device's list, a batch."""

from typing import Any

import msgspec

from fleetstate.commands.lifecycle import COLUMNS, HISTORY_SHOWN, Status, history_page, view
from fleetstate.errors import Invalid, NotFound
from fleetstate.pagination import Page, page_of
from fleetstate.store import Store


async def get(store: Store, org_id: str, device_id: str, command_id: str) -> dict[str, Any]:
    row = await store.fetchone(
        f"SELECT {COLUMNS} FROM commands WHERE id = ? AND device_id = ? AND org_id = ?",
        (command_id, device_id, org_id),
    )
    if row is None:
        raise NotFound("command", command_id)
    shown = await history_page(store, command_id, Page(limit=HISTORY_SHOWN))
    return {**view(row), "history": shown["items"], "history_next_cursor": shown["next_cursor"]}


def _status_filter(status: str | None) -> list[str]:
    if status is None:
        return []
    if status not in Status.__members__:
        raise Invalid(f"status must be one of {', '.join(Status)}")
    return [status]


async def list_page(
    store: Store, org_id: str, device_id: str, page: Page, status: str | None
) -> dict[str, Any]:
    """The device's commands, newest first."""
    found = await store.fetchone(
        "SELECT 1 FROM devices WHERE id = ? AND org_id = ?", (device_id, org_id)
    )
    if found is None:
        raise NotFound("device", device_id)
    wanted = _status_filter(status)
    where = "device_id = ?" + (" AND status = ?" if wanted else "")
    after = [page.cursor] if page.cursor else []
    if after:
        where += " AND seq < coalesce((SELECT seq FROM commands WHERE id = ?), 0)"
    rows = await store.fetchall(
        f"SELECT {COLUMNS} FROM commands WHERE {where} ORDER BY seq DESC LIMIT ?",
        [device_id, *wanted, *after, page.limit + 1],
    )
    return page_of([view(r) for r in rows], page)


async def batch(
    store: Store, org_id: str, batch_id: str, page: Page, status: str | None
) -> dict[str, Any]:
    """A group command: counts per status, and its per-device commands (a page, oldest first)."""
    row = await store.fetchone(
        "SELECT id, group_id, type, params, created_at FROM command_batches"
        " WHERE id = ? AND org_id = ?",
        (batch_id, org_id),
    )
    if row is None:
        raise NotFound("command batch", batch_id)
    counts = await store.fetchall(
        "SELECT status, count(*) FROM commands WHERE batch_id = ? GROUP BY status ORDER BY status",
        (batch_id,),
    )
    wanted = _status_filter(status)
    where = "batch_id = ?" + (" AND status = ?" if wanted else "")
    after = [page.cursor] if page.cursor else []
    if after:
        where += " AND seq > coalesce((SELECT seq FROM commands WHERE id = ?), 0)"
    rows = await store.fetchall(
        f"SELECT {COLUMNS} FROM commands WHERE {where} ORDER BY seq LIMIT ?",
        [batch_id, *wanted, *after, page.limit + 1],
    )
    listed = page_of([view(r) for r in rows], page)
    return {
        **dict(row),
        "params": msgspec.json.decode(row["params"]),
        "total": sum(c[1] for c in counts),
        "counts": {c[0]: c[1] for c in counts},
        "commands": listed["items"],
        "next_cursor": listed["next_cursor"],
    }
