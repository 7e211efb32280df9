"""A device's audit trail (`device_history`)."""

from typing import Any

import msgspec

from fleetstate.store.connection import Connection
from fleetstate.store.queries import sql


class HistoryRow(msgspec.Struct, frozen=True):
    action: str
    detail: str  # JSON text
    recorded_at: str


_INSERT = "INSERT INTO device_history (device_id, action, detail, recorded_at) VALUES (?, ?, ?, ?)"
_NEWEST = (
    f"SELECT {sql.columns(HistoryRow)} FROM device_history WHERE device_id = ?"
    " ORDER BY id DESC LIMIT ?"
)


async def insert(
    conn: Connection, device_id: str, action: str, detail: dict[str, Any], at: str
) -> None:
    await conn.execute(_INSERT, (device_id, action, msgspec.json.encode(detail).decode(), at))


async def newest(conn: Connection, device_id: str, limit: int) -> list[HistoryRow]:
    """The device's newest entries first."""
    return await sql.fetch_all(conn, HistoryRow, _NEWEST, (device_id, limit))
