"""A device's audit trail: what happened to its identity (key rotation, re-registration).

Entries are written in the same transaction as the change they describe, so the trail never
claims a change that did not commit, nor misses one that did.
"""

from typing import Any

import msgspec

from fleetstate.clock import now_text
from fleetstate.errors import NotFound
from fleetstate.store import Connection, Store

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
    await conn.execute(
        "INSERT INTO device_history (device_id, action, detail, recorded_at) VALUES (?, ?, ?, ?)",
        (device_id, action, msgspec.json.encode(detail).decode(), now),
    )
    return now


async def history(store: Store, org_id: str, device_id: str, limit: int = 100) -> History:
    """The newest entries first."""
    found = await store.fetchone(
        "SELECT 1 FROM devices WHERE id = ? AND org_id = ?", (device_id, org_id)
    )
    if found is None:
        raise NotFound("device", device_id)
    rows = await store.fetchall(
        "SELECT action, detail, recorded_at FROM device_history WHERE device_id = ?"
        " ORDER BY id DESC LIMIT ?",
        (device_id, limit),
    )
    items = [
        HistoryEntry(action=r[0], detail=msgspec.json.decode(r[1]), recorded_at=r[2]) for r in rows
    ]
    return History(device_id=device_id, items=items)
