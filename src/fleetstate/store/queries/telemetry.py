"""Telemetry: the merged state per device and the history of every value reported."""

from collections.abc import Iterable, Sequence

import msgspec

from fleetstate.store.connection import Connection
from fleetstate.store.queries import sql


class DeviceState(msgspec.Struct, frozen=True):
    id: str
    org_id: str
    state: str | None  # JSON text; None before the first telemetry


class StateRow(msgspec.Struct, frozen=True):
    state: str
    message: str | None
    updated_at: str


class HistoryRow(msgspec.Struct, frozen=True):
    id: int
    ts: str
    key: str
    value: str  # JSON text


class HistoryFilter(msgspec.Struct, frozen=True, kw_only=True):
    start: str | None = None
    end: str | None = None
    key: str | None = None
    after: tuple[str, int] | None = None
    """(ts, id) of the last row already seen."""


_ADD_HISTORY = "INSERT INTO telemetry_history (device_id, ts, key, value) VALUES (?, ?, ?, ?)"
# Upsert both dialects spell alike.
_SET_STATE = (
    "INSERT INTO telemetry_state (device_id, state, message, updated_at) VALUES (?, ?, ?, ?)"
    " ON CONFLICT (device_id) DO UPDATE SET state = excluded.state,"
    " message = excluded.message, updated_at = excluded.updated_at"
)
_SEEN = "UPDATE devices SET last_seen = ? WHERE id = ?"
_DESIRED_VERSION = "SELECT version FROM desired_documents WHERE device_id = ?"
_STATE = f"SELECT {sql.columns(StateRow)} FROM telemetry_state WHERE device_id = ?"
_HISTORY_CONDITIONS = {"start": "ts >= ?", "end": "ts < ?", "key": "key = ?"}


def _states_of(part: Sequence[str]) -> str:
    return (
        "SELECT d.id, d.org_id, s.state FROM devices d"
        " LEFT JOIN telemetry_state s ON s.device_id = d.id"
        f" WHERE {sql.in_list('d.id', part)}"
    )


async def states(conn: Connection, device_ids: Sequence[str]) -> list[DeviceState]:
    """The current state of each of the devices that exist."""
    found: list[DeviceState] = []
    for part in sql.chunks(device_ids):
        found += await sql.fetch_all(conn, DeviceState, _states_of(part), part)
    return found


async def add_history(conn: Connection, rows: Iterable[tuple[str, str, str, str]]) -> None:
    """(device id, ts, key, JSON value) rows."""
    await conn.executemany(_ADD_HISTORY, rows)


async def set_states(
    conn: Connection, states: Sequence[tuple[str, str, str | None]], now: str
) -> None:
    """(device id, JSON state, message) per device; each device is seen `now` too."""
    await conn.executemany(_SET_STATE, [(d, state, message, now) for d, state, message in states])
    await conn.executemany(_SEEN, [(now, d) for d, _state, _message in states])


async def desired_version(conn: Connection, device_id: str) -> int | None:
    value = await sql.fetch_value(conn, _DESIRED_VERSION, (device_id,))
    return None if value is None else int(value)


async def state(conn: Connection, device_id: str) -> StateRow | None:
    return await sql.fetch_one(conn, StateRow, _STATE, (device_id,))


async def history(
    conn: Connection, device_id: str, given: HistoryFilter, limit: int
) -> list[HistoryRow]:
    """History rows in (ts, id) order matching every condition given."""
    where, params = ["device_id = ?"], [device_id]
    for name, condition in _HISTORY_CONDITIONS.items():
        value = getattr(given, name)
        if value is not None:
            where.append(condition)
            params.append(value)
    if given.after is not None:
        # Row values compare in both dialects.
        where.append("(ts, id) > (?, ?)")
        params += [given.after[0], str(given.after[1])]
    statement = (
        f"SELECT {sql.columns(HistoryRow)} FROM telemetry_history WHERE {' AND '.join(where)}"
        " ORDER BY ts, id LIMIT ?"
    )
    return await sql.fetch_all(conn, HistoryRow, statement, [*params, limit])
