"""Commands, command batches and the answers devices give (`command_history`).

Status guards are literal IN lists of our own constants (`sql.literal_list`): a partial index
matches only literal terms, so a dialect keeps them literal too rather than `= ANY(?)`.
"""

from collections.abc import Sequence
from typing import Any

import msgspec

from fleetstate.store.connection import Connection
from fleetstate.store.queries import sql


class CommandRow(msgspec.Struct, frozen=True):
    id: str
    org_id: str
    device_id: str
    batch_id: str | None
    origin: str
    type: str
    params: str  # JSON text
    tracks_version: int | None
    status: str
    message: str | None
    timeout_s: int
    created_at: str
    timeout_at: str
    sent_at: str | None
    acknowledged_at: str | None
    finished_at: str | None


class BriefRow(msgspec.Struct, frozen=True):
    id: str
    org_id: str
    device_id: str
    type: str
    status: str
    message: str | None
    timeout_at: str


class AnswerRow(msgspec.Struct, frozen=True):
    id: int
    status: str
    message: str | None
    source: str
    effect: str
    received_at: str


class BatchRow(msgspec.Struct, frozen=True):
    id: str
    group_id: str
    type: str
    params: str  # JSON text
    created_at: str


COLUMNS = sql.columns(CommandRow)
BRIEF = sql.columns(BriefRow)
INSERT = (
    "INSERT INTO commands (id, org_id, device_id, batch_id, origin, type, params, tracks_version,"
    " status, timeout_s, created_at, timeout_at)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'PENDING', ?, ?, ?)"
)
_ADD_ANSWER = (
    "INSERT INTO command_history (command_id, source, status, message, effect, received_at)"
    " VALUES (?, ?, ?, ?, ?, ?)"
)
_OF_DEVICE = "FROM commands WHERE id = ? AND device_id = ? AND org_id = ?"
_EXISTS = f"SELECT 1 {_OF_DEVICE}"
_STATUS = f"SELECT status {_OF_DEVICE}"
_GET = f"SELECT {COLUMNS} {_OF_DEVICE}"
_ANSWERS = (
    f"SELECT {sql.columns(AnswerRow)} FROM command_history"
    " WHERE command_id = ? AND id > ? ORDER BY id LIMIT ?"
)
_DEADLINES = (
    "SELECT timeout_at FROM commands WHERE status IN {open} AND timeout_at > ? AND timeout_at <= ?"
)
_BATCH = f"SELECT {sql.columns(BatchRow)} FROM command_batches WHERE id = ? AND org_id = ?"
_BATCH_COUNTS = (
    "SELECT status, count(*) FROM commands WHERE batch_id = ? GROUP BY status ORDER BY status"
)
# Newest first for a device, oldest first for a batch; the cursor is a command id.
_DEVICE_PAGE = {
    (status, cursor): f"SELECT {COLUMNS} FROM commands WHERE device_id = ?"
    + (" AND status = ?" if status else "")
    + (" AND seq < coalesce((SELECT seq FROM commands WHERE id = ?), 0)" if cursor else "")
    + " ORDER BY seq DESC LIMIT ?"
    for status in (False, True)
    for cursor in (False, True)
}
_BATCH_PAGE = {
    (status, cursor): f"SELECT {COLUMNS} FROM commands WHERE batch_id = ?"
    + (" AND status = ?" if status else "")
    + (" AND seq > coalesce((SELECT seq FROM commands WHERE id = ?), 0)" if cursor else "")
    + " ORDER BY seq LIMIT ?"
    for status in (False, True)
    for cursor in (False, True)
}


async def move(
    conn: Connection,
    where: str,
    params: Sequence[Any],
    *,
    to: str,
    stamp: str,
    sources: Sequence[str],
    now: str,
    message: str | None,
) -> list[BriefRow]:
    """Set `to` (and the time column `stamp`) on the commands matching `where` whose status is
    one of `sources`. `where` is a condition of this package's own statements (the callers in
    commands/ that still build one move here with them)."""
    statement = (
        f"UPDATE commands SET status = ?, {stamp} = ?, message = coalesce(?, message)"
        f" WHERE {where} AND status IN {sql.literal_list(sources)} RETURNING {BRIEF}"
    )
    return await sql.fetch_all(conn, BriefRow, statement, (to, now, message, *params))


def move_one(command_id: str) -> tuple[str, tuple[str]]:
    """The `where` of `move` for one command."""
    return "id = ?", (command_id,)


def move_due(now: str) -> tuple[str, tuple[str]]:
    """The `where` of `move` for every command whose deadline is at or before `now`."""
    return "timeout_at <= ?", (now,)


async def add_answer(
    conn: Connection,
    command_id: str,
    source: str,
    status: str,
    message: str | None,
    effect: str,
    now: str,
) -> None:
    await conn.execute(_ADD_ANSWER, (command_id, source, status, message, effect, now))


async def exists(conn: Connection, org_id: str, device_id: str, command_id: str) -> bool:
    return await sql.found(conn, _EXISTS, (command_id, device_id, org_id))


async def status(conn: Connection, org_id: str, device_id: str, command_id: str) -> str | None:
    value = await sql.fetch_value(conn, _STATUS, (command_id, device_id, org_id))
    return None if value is None else str(value)


async def get(conn: Connection, org_id: str, device_id: str, command_id: str) -> CommandRow | None:
    return await sql.fetch_one(conn, CommandRow, _GET, (command_id, device_id, org_id))


async def answers(conn: Connection, command_id: str, after: int, limit: int) -> list[AnswerRow]:
    return await sql.fetch_all(conn, AnswerRow, _ANSWERS, (command_id, after, limit))


async def deadlines(
    conn: Connection, open_statuses: Sequence[str], after: str, until: str
) -> list[str]:
    statement = _DEADLINES.format(open=sql.literal_list(open_statuses))
    return await sql.fetch_column(conn, statement, (after, until))


async def device_page(
    conn: Connection, device_id: str, status: str | None, cursor: str | None, limit: int
) -> list[CommandRow]:
    statement = _DEVICE_PAGE[status is not None, cursor is not None]
    given = [v for v in (status, cursor) if v is not None]
    return await sql.fetch_all(conn, CommandRow, statement, (device_id, *given, limit))


async def batch(conn: Connection, org_id: str, batch_id: str) -> BatchRow | None:
    return await sql.fetch_one(conn, BatchRow, _BATCH, (batch_id, org_id))


async def batch_counts(conn: Connection, batch_id: str) -> list[tuple[str, int]]:
    """(status, commands) of the batch, by status."""
    async with conn.execute(_BATCH_COUNTS, (batch_id,)) as cur:
        return [(str(r[0]), int(r[1])) for r in await cur.fetchall()]


async def batch_page(
    conn: Connection, batch_id: str, status: str | None, cursor: str | None, limit: int
) -> list[CommandRow]:
    statement = _BATCH_PAGE[status is not None, cursor is not None]
    given = [v for v in (status, cursor) if v is not None]
    return await sql.fetch_all(conn, CommandRow, statement, (batch_id, *given, limit))


# -- delivery ----------------------------------------------------------------------------------

_MODE = (
    "SELECT p.command_delivery FROM devices d JOIN profiles p ON p.id = d.profile_id WHERE d.id = ?"
)
_MINE = f"SELECT {COLUMNS} FROM commands WHERE device_id = ? AND type NOT IN {{tracking}}"
_OLDEST_OPEN = _MINE + " AND status IN {open} ORDER BY seq LIMIT 1"
_ALL_WAITING = _MINE + " AND status IN {waiting} ORDER BY seq"
_OLDEST_WITH_STATUS = _MINE + " AND status = ? ORDER BY seq LIMIT 1"
_OF_DEVICE_BY_ID = f"SELECT {COLUMNS} FROM commands WHERE id = ? AND device_id = ?"
_ANY_OPEN = (
    "SELECT 1 FROM commands WHERE device_id = ? AND type NOT IN {tracking}"
    " AND status IN {open} LIMIT 1"
)


async def delivery_mode(conn: Connection, device_id: str) -> str | None:
    """The command delivery of the device's profile; None for no such device."""
    value = await sql.fetch_value(conn, _MODE, (device_id,))
    return None if value is None else str(value)


async def oldest_open(
    conn: Connection, device_id: str, tracking: Sequence[str], open_statuses: Sequence[str]
) -> list[CommandRow]:
    """The device's oldest unfinished command that is not of a `tracking` type (or none)."""
    statement = _OLDEST_OPEN.format(
        tracking=sql.literal_list(tracking), open=sql.literal_list(open_statuses)
    )
    return await sql.fetch_all(conn, CommandRow, statement, (device_id,))


async def all_waiting(
    conn: Connection, device_id: str, tracking: Sequence[str], waiting: Sequence[str]
) -> list[CommandRow]:
    """The device's waiting commands not of a `tracking` type, oldest first."""
    statement = _ALL_WAITING.format(
        tracking=sql.literal_list(tracking), waiting=sql.literal_list(waiting)
    )
    return await sql.fetch_all(conn, CommandRow, statement, (device_id,))


async def any_open(
    conn: Connection, device_id: str, tracking: Sequence[str], open_: Sequence[str]
) -> bool:
    """Whether the device has an unfinished command not of a `tracking` type."""
    statement = _ANY_OPEN.format(tracking=sql.literal_list(tracking), open=sql.literal_list(open_))
    return await sql.found(conn, statement, (device_id,))


async def oldest_with_status(
    conn: Connection, device_id: str, tracking: Sequence[str], status: str
) -> CommandRow | None:
    statement = _OLDEST_WITH_STATUS.format(tracking=sql.literal_list(tracking))
    return await sql.fetch_one(conn, CommandRow, statement, (device_id, status))


async def of_device(conn: Connection, device_id: str, command_id: str) -> CommandRow | None:
    return await sql.fetch_one(conn, CommandRow, _OF_DEVICE_BY_ID, (command_id, device_id))


# -- issuing -----------------------------------------------------------------------------------


class DeviceTarget(msgspec.Struct, frozen=True):
    id: str
    profile_id: str


class FirmwareFile(msgspec.Struct, frozen=True):
    profile_id: str
    version: str
    sha256: str
    file_type: str


_TARGET = "SELECT id, profile_id FROM devices WHERE id = ? AND org_id = ?"
_MEMBERS = (
    "SELECT d.id, d.profile_id FROM group_members m JOIN devices d ON d.id = m.device_id"
    " WHERE m.group_id = ? ORDER BY d.id"
)
_INSERT_BATCH = (
    "INSERT INTO command_batches (id, org_id, group_id, type, params, created_at)"
    " VALUES (?, ?, ?, ?, ?, ?)"
)
_FIRMWARE = "SELECT profile_id, version, sha256, file_type FROM files WHERE id = ? AND org_id = ?"


def _briefs_of(part: Sequence[str]) -> str:
    return f"SELECT {BRIEF} FROM commands WHERE {sql.in_list('id', part)}"


def _desired_versions_of(part: Sequence[str]) -> str:
    return (
        f"SELECT device_id, version FROM desired_documents WHERE {sql.in_list('device_id', part)}"
    )


async def target(conn: Connection, org_id: str, device_id: str) -> DeviceTarget | None:
    return await sql.fetch_one(conn, DeviceTarget, _TARGET, (device_id, org_id))


async def group_targets(conn: Connection, group_id: str) -> list[DeviceTarget]:
    """The group's devices, by id."""
    return await sql.fetch_all(conn, DeviceTarget, _MEMBERS, (group_id,))


async def insert_batch(
    conn: Connection,
    batch_id: str,
    org_id: str,
    group_id: str,
    command_type: str,
    params: str,
    now: str,
) -> None:
    await conn.execute(_INSERT_BATCH, (batch_id, org_id, group_id, command_type, params, now))


async def insert(conn: Connection, rows: Sequence[tuple[Any, ...]]) -> None:
    """PENDING commands: (id, org_id, device_id, batch_id, origin, type, params JSON,
    tracks_version, timeout_s, created_at, timeout_at) each."""
    await conn.executemany(INSERT, rows)


async def briefs(conn: Connection, command_ids: Sequence[str]) -> list[BriefRow]:
    found: list[BriefRow] = []
    for part in sql.chunks(command_ids):
        found += await sql.fetch_all(conn, BriefRow, _briefs_of(part), part)
    return found


async def desired_versions(conn: Connection, device_ids: Sequence[str]) -> dict[str, int]:
    """The current desired version of each device that has one."""
    found: dict[str, int] = {}
    for part in sql.chunks(device_ids):
        async with conn.execute(_desired_versions_of(part), part) as cur:
            found.update((str(r[0]), int(r[1])) for r in await cur.fetchall())
    return found


async def firmware_file(conn: Connection, org_id: str, file_id: str) -> FirmwareFile | None:
    return await sql.fetch_one(conn, FirmwareFile, _FIRMWARE, (file_id, org_id))
