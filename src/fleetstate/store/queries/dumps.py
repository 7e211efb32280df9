"""Dumps: state reports devices upload in parts; the bytes live in the blob store."""

import msgspec

from fleetstate.store.connection import Connection
from fleetstate.store.queries import sql


class DumpRow(msgspec.Struct, frozen=True):
    id: str
    device_id: str
    file_name: str
    content_type: str
    size: int
    parts: int
    created_at: str
    updated_at: str


class NewDumpRow(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    org_id: str
    device_id: str
    file_name: str
    content_type: str
    size: int
    blob_key: str
    created_at: str
    updated_at: str


class DumpBlob(msgspec.Struct, frozen=True):
    size: int
    content_type: str
    blob_key: str
    file_name: str


_COLUMNS = sql.columns(DumpRow)
_ORG_OF_DEVICE = "SELECT org_id FROM devices WHERE id = ?"
_INSERT = f"INSERT INTO dumps ({sql.columns(NewDumpRow)}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
_GET = f"SELECT {_COLUMNS} FROM dumps WHERE id = ? AND device_id = ?"
_GROWN = "UPDATE dumps SET size = ?, parts = parts + 1, updated_at = ? WHERE id = ?"
_PAGE = f"SELECT {_COLUMNS} FROM dumps WHERE device_id = ? AND id > ? ORDER BY id LIMIT ?"
_BLOB = f"SELECT {sql.columns(DumpBlob)} FROM dumps WHERE id = ? AND device_id = ? AND org_id = ?"


async def org_of_device(conn: Connection, device_id: str) -> str | None:
    value = await sql.fetch_value(conn, _ORG_OF_DEVICE, (device_id,))
    return None if value is None else str(value)


async def insert(conn: Connection, row: NewDumpRow) -> None:
    await conn.execute(_INSERT, msgspec.structs.astuple(row))


async def get(conn: Connection, device_id: str, dump_id: str) -> DumpRow | None:
    return await sql.fetch_one(conn, DumpRow, _GET, (dump_id, device_id))


async def grown(conn: Connection, dump_id: str, size: int, now: str) -> None:
    """One more part: the dump now holds `size` bytes."""
    await conn.execute(_GROWN, (size, now, dump_id))


async def page(conn: Connection, device_id: str, after: str, limit: int) -> list[DumpRow]:
    return await sql.fetch_all(conn, DumpRow, _PAGE, (device_id, after, limit))


async def blob(conn: Connection, org_id: str, device_id: str, dump_id: str) -> DumpBlob | None:
    return await sql.fetch_one(conn, DumpBlob, _BLOB, (dump_id, device_id, org_id))
