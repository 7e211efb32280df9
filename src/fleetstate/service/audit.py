"""A device's audit trail: what happened to its identity (key rotation, re-registration).

Entries are written in the same transaction as the change they describe, so the trail never
claims a change that did not commit, nor misses one that did.
"""

from typing import Any

import msgspec

from fleetstate.domain.clock import now_text
from fleetstate.errors import NotFound
from fleetstate.store import Connection, Store
from fleetstate.store.queries import audit as q
from fleetstate.store.queries import sql

KEY_ROTATED = "access_key_rotated"
REREGISTERED = "re_registered"


class HistoryEntry(msgspec.Struct, frozen=True, kw_only=True):
    action: str
    detail: dict[str, Any]
    recorded_at: str


class History(msgspec.Struct, frozen=True, kw_only=True):
    device_id: str
    items: list[HistoryEntry]
    next_cursor: str | None = None


async def record(conn: Connection, device_id: str, action: str, detail: dict[str, Any]) -> str:
    """Append an entry inside the caller's write job; returns its time."""
    now = now_text()
    await q.insert(conn, device_id, action, detail, now)
    return now


async def history(store: Store, org_id: str, device_id: str, limit: int = 100) -> History:
    """The newest entries first."""

    async def read(conn: Connection) -> list[q.HistoryRow] | None:
        if not await sql.exists(conn, "devices", org_id, device_id):
            return None
        return await q.newest(conn, device_id, limit)

    rows = await store.query(read)
    if rows is None:
        raise NotFound("device", device_id)
    items = [
        HistoryEntry(
            action=r.action, detail=msgspec.json.decode(r.detail), recorded_at=r.recorded_at
        )
        for r in rows
    ]
    return History(device_id=device_id, items=items)
