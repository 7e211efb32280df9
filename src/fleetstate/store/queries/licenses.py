"""Device licenses and the operator-set info document."""

import msgspec

from fleetstate.store.connection import Connection
from fleetstate.store.queries import sql


class LicenseRow(msgspec.Struct, frozen=True):
    """What the device is offered."""

    id: str
    device_id: str
    data: str
    signature: str | None
    action: str
    expires_at: str | None


class AnsweredLicense(LicenseRow, frozen=True):
    """An offered license with the device's answer, if any."""

    state: str | None
    error: str | None


class OperatorLicense(AnsweredLicense, frozen=True):
    """What the operator sees."""

    created_at: str
    updated_at: str


class InfoRow(msgspec.Struct, frozen=True):
    info: str
    version: int
    updated_at: str


_LICENSE = sql.columns(LicenseRow)
_OPERATOR = sql.columns(OperatorLicense)
_INSERT = (
    "INSERT INTO licenses (id, device_id, data, signature, action, expires_at,"
    " created_at, updated_at) VALUES (?, ?, ?, ?, 'add', ?, ?, ?)"
)
# RETURNING is shared by SQLite (3.35+) and PostgreSQL.
_CHANGE = (
    "UPDATE licenses SET action = ?, data = coalesce(?, data),"
    " signature = coalesce(?, signature), expires_at = coalesce(?, expires_at),"
    " state = NULL, error = NULL, updated_at = ?"
    " WHERE id = ? AND device_id = ? RETURNING id"
)
_GET = f"SELECT {_OPERATOR} FROM licenses WHERE id = ?"
_OF_DEVICE = f"SELECT {_OPERATOR} FROM licenses WHERE device_id = ? ORDER BY id"
_PENDING = f"SELECT {_LICENSE} FROM licenses WHERE device_id = ? AND state IS NULL ORDER BY id"
_ANSWER = (
    "UPDATE licenses SET state = ?, error = ?, updated_at = ?"
    f" WHERE id = ? AND device_id = ? RETURNING {sql.columns(AnsweredLicense)}"
)
# The existing row's columns are named with the table: PostgreSQL finds a bare name ambiguous.
_SET_INFO = (
    "INSERT INTO device_info (device_id, info, version, updated_at) VALUES (?, ?, 1, ?)"
    " ON CONFLICT (device_id) DO UPDATE SET info = excluded.info,"
    " version = device_info.version + 1, updated_at = excluded.updated_at"
    f" WHERE {sql.distinct('device_info.info', 'excluded.info')}"
)
_INFO = f"SELECT {sql.columns(InfoRow)} FROM device_info WHERE device_id = ?"
_FLAGS = (
    "SELECT EXISTS (SELECT 1 FROM licenses WHERE device_id = ? AND state IS NULL),"
    " (SELECT version FROM device_info WHERE device_id = ?)"
)


async def insert(
    conn: Connection,
    license_id: str,
    device_id: str,
    data: str | None,
    signature: str | None,
    expires_at: str | None,
    now: str,
) -> None:
    await conn.execute(_INSERT, (license_id, device_id, data, signature, expires_at, now, now))


async def change(
    conn: Connection,
    license_id: str,
    device_id: str,
    action: str,
    data: str | None,
    signature: str | None,
    expires_at: str | None,
    now: str,
) -> bool:
    """Set a new action (and any new data); whether the device has that license."""
    params = (action, data, signature, expires_at, now, license_id, device_id)
    return await sql.found(conn, _CHANGE, params)


async def get(conn: Connection, license_id: str) -> OperatorLicense | None:
    return await sql.fetch_one(conn, OperatorLicense, _GET, (license_id,))


async def of_device(conn: Connection, device_id: str) -> list[OperatorLicense]:
    return await sql.fetch_all(conn, OperatorLicense, _OF_DEVICE, (device_id,))


async def pending(conn: Connection, device_id: str) -> list[LicenseRow]:
    return await sql.fetch_all(conn, LicenseRow, _PENDING, (device_id,))


async def answer(
    conn: Connection, license_id: str, device_id: str, state: str, error: str | None, now: str
) -> AnsweredLicense | None:
    params = (state, error, now, license_id, device_id)
    return await sql.fetch_one(conn, AnsweredLicense, _ANSWER, params)


async def set_info(conn: Connection, device_id: str, text: str, now: str) -> None:
    await conn.execute(_SET_INFO, (device_id, text, now))


async def info(conn: Connection, device_id: str) -> InfoRow | None:
    return await sql.fetch_one(conn, InfoRow, _INFO, (device_id,))


async def flags(conn: Connection, device_id: str) -> tuple[bool, int]:
    async with conn.execute(_FLAGS, (device_id, device_id)) as cur:
        row = await cur.fetchone()
    assert row is not None
    return bool(row[0]), int(row[1] or 0)
