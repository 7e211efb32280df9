"""Device reports: the current report per device and slot, and the history of every report."""

from collections.abc import Sequence

import msgspec

from fleetstate.store.connection import Connection
from fleetstate.store.queries import sql


class DesiredOf(msgspec.Struct, frozen=True):
    version: int
    org_id: str


class HistoryRow(msgspec.Struct, frozen=True):
    id: int
    version: int
    status: str
    current: int
    received_at: str
    payload: str


# (slot, artefact id, status, hash, message) of one slot's current report.
SlotValues = tuple[str, str | None, str, str | None, str | None]

_DESIRED = (
    "SELECT dd.version, d.org_id FROM desired_documents dd JOIN devices d ON d.id = dd.device_id"
    " WHERE dd.device_id = ?"
)
_EXPECTED = "SELECT slot, artefact_id, hash FROM desired_slots WHERE device_id = ?"
_HISTORY_INSERT = (
    "INSERT INTO report_history (device_id, version, status, current, received_at, payload)"
    " VALUES (?, ?, ?, ?, ?, ?)"
)
# Upserts both dialects spell alike.
_CURRENT = (
    "INSERT INTO device_reports (device_id, version, status, message, reported_at)"
    " VALUES (?, ?, ?, ?, ?) ON CONFLICT (device_id) DO UPDATE SET version = excluded.version,"
    " status = excluded.status, message = excluded.message, reported_at = excluded.reported_at"
)
_SLOT_CURRENT = (
    "INSERT INTO slot_reports (device_id, slot, version, artefact_id, status, hash, message,"
    " reported_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (device_id, slot) DO UPDATE SET"
    " version = excluded.version, artefact_id = excluded.artefact_id,"
    " status = excluded.status, hash = excluded.hash, message = excluded.message,"
    " reported_at = excluded.reported_at"
)
_HISTORY = f"SELECT {sql.columns(HistoryRow)} FROM report_history"
_HISTORY_FIRST = f"{_HISTORY} WHERE device_id = ? ORDER BY id DESC LIMIT ?"
_HISTORY_BEFORE = f"{_HISTORY} WHERE device_id = ? AND id < ? ORDER BY id DESC LIMIT ?"


async def desired_of(conn: Connection, device_id: str) -> DesiredOf | None:
    """The device's current desired version and its organization; None for no such device."""
    return await sql.fetch_one(conn, DesiredOf, _DESIRED, (device_id,))


async def expected_hashes(conn: Connection, device_id: str) -> dict[str, tuple[str, str]]:
    """Per desired slot: (artefact id, hash)."""
    async with conn.execute(_EXPECTED, (device_id,)) as cur:
        return {r[0]: (r[1], r[2]) async for r in cur}


async def add_history(
    conn: Connection,
    device_id: str,
    version: int,
    status: str,
    *,
    current: bool,
    now: str,
    payload: str,
) -> None:
    await conn.execute(_HISTORY_INSERT, (device_id, version, status, int(current), now, payload))


async def set_current(
    conn: Connection,
    device_id: str,
    version: int,
    status: str,
    message: str | None,
    slots: Sequence[SlotValues],
    now: str,
) -> None:
    await conn.execute(_CURRENT, (device_id, version, status, message, now))
    await conn.executemany(
        _SLOT_CURRENT,
        [(device_id, s[0], version, s[1], s[2], s[3], s[4], now) for s in slots],
    )


async def history(
    conn: Connection, device_id: str, before: int | None, limit: int
) -> list[HistoryRow]:
    """The device's reports, newest first, older than report `before` when given."""
    if before is None:
        return await sql.fetch_all(conn, HistoryRow, _HISTORY_FIRST, (device_id, limit))
    return await sql.fetch_all(conn, HistoryRow, _HISTORY_BEFORE, (device_id, before, limit))
