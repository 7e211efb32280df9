"""Pending uploads of large artefacts, and where an artefact's stored bytes are."""

import msgspec

from fleetstate.store.connection import Connection
from fleetstate.store.queries import sql


class UploadRow(msgspec.Struct, frozen=True):
    id: str
    org_id: str
    artefact_id: str
    name: str
    profile_id: str
    size: int
    sha256: str
    content_type: str
    expires_at: str


class StoredRow(msgspec.Struct, frozen=True):
    id: str
    content_type: str
    hash: str
    size: int
    content: bytes | None
    blob_key: str | None


_COLUMNS = sql.columns(UploadRow)
_INSERT = f"INSERT INTO uploads ({_COLUMNS}, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
_GET = f"SELECT {_COLUMNS} FROM uploads WHERE id = ? AND org_id = ?"
_PENDING = "SELECT 1 FROM uploads WHERE id = ?"
_DELETE_OF_ORG = "DELETE FROM uploads WHERE id = ? AND org_id = ?"
_DELETE = "DELETE FROM uploads WHERE id = ?"
_DELETE_EXPIRED = "DELETE FROM uploads WHERE id = ? AND expires_at <= ?"
_EXPIRED = f"SELECT {_COLUMNS} FROM uploads WHERE expires_at <= ? ORDER BY expires_at LIMIT ?"
_OLDEST = "SELECT min(created_at) FROM uploads"
_ARTEFACT_EXISTS = "SELECT 1 FROM config_artefacts WHERE id = ?"
_STORED = sql.columns(StoredRow, "a.")
_FOR_DEVICE = (
    f"SELECT {_STORED} FROM desired_slots s JOIN config_artefacts a ON a.id = s.artefact_id"
    " WHERE s.device_id = ? AND s.artefact_id = ? LIMIT 1"
)
_FOR_ORG = f"SELECT {_STORED} FROM config_artefacts a WHERE a.id = ? AND a.org_id = ?"


async def insert(conn: Connection, row: UploadRow, created_at: str) -> None:
    await conn.execute(_INSERT, (*msgspec.structs.astuple(row), created_at))


async def get(conn: Connection, org_id: str, upload_id: str) -> UploadRow | None:
    return await sql.fetch_one(conn, UploadRow, _GET, (upload_id, org_id))


async def pending(conn: Connection, upload_id: str) -> bool:
    return await sql.found(conn, _PENDING, (upload_id,))


async def delete(
    conn: Connection, upload_id: str, *, org_id: str | None = None, expired_by: str | None = None
) -> bool:
    """Delete the upload (of `org_id`, or only if expired by `expired_by`, when given);
    whether it was there."""
    if org_id is not None:
        cursor = await conn.execute(_DELETE_OF_ORG, (upload_id, org_id))
    elif expired_by is not None:
        cursor = await conn.execute(_DELETE_EXPIRED, (upload_id, expired_by))
    else:
        cursor = await conn.execute(_DELETE, (upload_id,))
    return cursor.rowcount == 1


async def expired(conn: Connection, cutoff: str, limit: int) -> list[UploadRow]:
    """The uploads expired by `cutoff`, the oldest first."""
    return await sql.fetch_all(conn, UploadRow, _EXPIRED, (cutoff, limit))


async def oldest_created(conn: Connection) -> str | None:
    value = await sql.fetch_value(conn, _OLDEST)
    return None if value is None else str(value)


async def artefact_exists(conn: Connection, artefact_id: str) -> bool:
    return await sql.found(conn, _ARTEFACT_EXISTS, (artefact_id,))


async def stored_for_device(conn: Connection, device_id: str, artefact_id: str) -> StoredRow | None:
    """An artefact in the device's current desired state, or None."""
    return await sql.fetch_one(conn, StoredRow, _FOR_DEVICE, (device_id, artefact_id))


async def stored_for_org(conn: Connection, org_id: str, artefact_id: str) -> StoredRow | None:
    return await sql.fetch_one(conn, StoredRow, _FOR_ORG, (artefact_id, org_id))
