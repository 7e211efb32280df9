"""Files per device profile (firmware and others), their metadata and where their bytes are."""

import msgspec

from fleetstate.store.connection import Connection
from fleetstate.store.queries import sql


class FileRow(msgspec.Struct, frozen=True):
    id: str
    profile_id: str
    name: str
    version: str
    file_type: str
    sha256: str
    size: int
    created_at: str


class NewFileRow(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    org_id: str
    profile_id: str
    name: str
    version: str
    file_type: str
    sha256: str
    size: int
    blob_key: str
    created_at: str


class FileBytes(msgspec.Struct, frozen=True):
    sha256: str
    size: int
    content: bytes | None
    blob_key: str | None


class Version(msgspec.Struct, frozen=True):
    id: str
    version: str


_COLUMNS = sql.columns(FileRow)
_OF_DEVICE_PROFILE = "profile_id = (SELECT profile_id FROM devices WHERE id = ?)"
_DEVICE_PROFILE = "SELECT 1 FROM profiles WHERE id = ? AND org_id = ? AND kind = 'device'"
_SAME = "SELECT id FROM files WHERE profile_id = ? AND file_type = ? AND name = ? AND version = ?"
_INSERT = f"INSERT INTO files ({sql.columns(NewFileRow)}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
_GET = f"SELECT {_COLUMNS} FROM files WHERE id = ? AND org_id = ?"
_PAGE = {
    (profiled, typed): f"SELECT {_COLUMNS} FROM files WHERE org_id = ? AND id > ?"
    + (" AND profile_id = ?" if profiled else "")
    + (" AND file_type = ?" if typed else "")
    + " ORDER BY id LIMIT ?"
    for profiled in (False, True)
    for typed in (False, True)
}
_FOR_DEVICE = f"SELECT {_COLUMNS} FROM files WHERE {_OF_DEVICE_PROFILE}"
_GET_FOR_DEVICE = f"SELECT {_COLUMNS} FROM files WHERE id = ? AND {_OF_DEVICE_PROFILE}"
_BYTES_FOR_DEVICE = (
    f"SELECT {sql.columns(FileBytes)} FROM files WHERE id = ? AND {_OF_DEVICE_PROFILE}"
)
_VERSIONS = f"SELECT id, version FROM files WHERE file_type = ? AND {_OF_DEVICE_PROFILE}"


async def device_profile_exists(conn: Connection, org_id: str, profile_id: str) -> bool:
    return await sql.found(conn, _DEVICE_PROFILE, (profile_id, org_id))


async def same_version(
    conn: Connection, profile_id: str, file_type: str, name: str, version: str
) -> str | None:
    """The file that already has this profile, type, name and version, or None."""
    value = await sql.fetch_value(conn, _SAME, (profile_id, file_type, name, version))
    return None if value is None else str(value)


async def insert(conn: Connection, row: NewFileRow) -> None:
    await conn.execute(_INSERT, msgspec.structs.astuple(row))


async def get(conn: Connection, org_id: str, file_id: str) -> FileRow | None:
    return await sql.fetch_one(conn, FileRow, _GET, (file_id, org_id))


async def page(
    conn: Connection,
    org_id: str,
    after: str,
    limit: int,
    profile_id: str | None,
    file_type: str | None,
) -> list[FileRow]:
    filters = [v for v in (profile_id, file_type) if v is not None]
    statement = _PAGE[profile_id is not None, file_type is not None]
    return await sql.fetch_all(conn, FileRow, statement, (org_id, after, *filters, limit))


async def for_device(conn: Connection, device_id: str) -> list[FileRow]:
    return await sql.fetch_all(conn, FileRow, _FOR_DEVICE, (device_id,))


async def get_for_device(conn: Connection, device_id: str, file_id: str) -> FileRow | None:
    return await sql.fetch_one(conn, FileRow, _GET_FOR_DEVICE, (file_id, device_id))


async def bytes_for_device(conn: Connection, device_id: str, file_id: str) -> FileBytes | None:
    return await sql.fetch_one(conn, FileBytes, _BYTES_FOR_DEVICE, (file_id, device_id))


async def versions_for_device(conn: Connection, device_id: str, file_type: str) -> list[Version]:
    return await sql.fetch_all(conn, Version, _VERSIONS, (file_type, device_id))
