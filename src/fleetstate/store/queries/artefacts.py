"""Config artefacts: immutable versions of named configuration content."""

import msgspec

from fleetstate.store.connection import Connection
from fleetstate.store.queries import sql


class ArtefactRow(msgspec.Struct, frozen=True):
    id: str
    name: str
    version: int
    profile_id: str
    profile_kind: str
    size: int
    hash: str
    content_type: str
    stored_in_blob: int
    created_at: str


class NewVersion(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    org_id: str
    name: str
    version: int
    profile_id: str
    content: bytes | None
    blob_key: str | None
    size: int
    hash: str
    content_type: str
    created_at: str


class Latest(msgspec.Struct, frozen=True):
    version: int
    profile_id: str


class ProfileSchema(msgspec.Struct, frozen=True):
    id: str
    config_schema: str


_SELECT = (
    "SELECT a.id, a.name, a.version, a.profile_id, p.kind AS profile_kind, a.size, a.hash,"
    " a.content_type, a.blob_key IS NOT NULL AS stored_in_blob, a.created_at"
    " FROM config_artefacts a JOIN profiles p ON p.id = a.profile_id"
)
_GET = f"{_SELECT} WHERE a.id = ? AND a.org_id = ?"
_PAGE = f"{_SELECT} WHERE a.org_id = ? AND a.id > ? ORDER BY a.id LIMIT ?"
_PAGE_NAMED = f"{_SELECT} WHERE a.org_id = ? AND a.id > ? AND a.name = ? ORDER BY a.id LIMIT ?"
_SCHEMA = "SELECT id, config_schema FROM profiles WHERE id = ? AND org_id = ?"
_INSERT = (
    f"INSERT INTO config_artefacts ({sql.columns(NewVersion)})"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_LATEST = (
    "SELECT version, profile_id FROM config_artefacts WHERE org_id = ? AND name = ?"
    " ORDER BY version DESC LIMIT 1"
)
_CONTENT = "SELECT content, content_type FROM config_artefacts WHERE id = ? AND org_id = ?"
_BLOB_KEY = "SELECT blob_key FROM config_artefacts WHERE id = ? AND org_id = ?"
_DELETE = "DELETE FROM config_artefacts WHERE id = ?"
_BINDING = "SELECT id FROM bindings WHERE artefact_id = ? LIMIT 1"
_COMMAND = (
    "SELECT id FROM commands WHERE status IN ('PENDING', 'SENT', 'ACKNOWLEDGED')"
    f" AND {sql.json_text('params', 'artefact_id')} = ? LIMIT 1"
)


async def profile_schema(conn: Connection, org_id: str, profile_id: str) -> ProfileSchema | None:
    return await sql.fetch_one(conn, ProfileSchema, _SCHEMA, (profile_id, org_id))


async def latest(conn: Connection, org_id: str, name: str) -> Latest | None:
    """The newest version of `name`, which the next version numbers from."""
    return await sql.fetch_one(conn, Latest, _LATEST, (org_id, name))


async def insert(conn: Connection, row: NewVersion) -> None:
    await conn.execute(_INSERT, msgspec.structs.astuple(row))


async def get(conn: Connection, org_id: str, artefact_id: str) -> ArtefactRow | None:
    return await sql.fetch_one(conn, ArtefactRow, _GET, (artefact_id, org_id))


async def page(
    conn: Connection, org_id: str, after: str, limit: int, name: str | None
) -> list[ArtefactRow]:
    if name is None:
        return await sql.fetch_all(conn, ArtefactRow, _PAGE, (org_id, after, limit))
    return await sql.fetch_all(conn, ArtefactRow, _PAGE_NAMED, (org_id, after, name, limit))


async def content(
    conn: Connection, org_id: str, artefact_id: str
) -> tuple[bytes | None, str] | None:
    """(inline bytes or None, content type), or None for no such artefact."""
    async with conn.execute(_CONTENT, (artefact_id, org_id)) as cur:
        row = await cur.fetchone()
    if row is None:
        return None
    return (None if row[0] is None else bytes(row[0])), str(row[1])


async def blob_key(conn: Connection, org_id: str, artefact_id: str) -> tuple[str | None] | None:
    """(blob key or None), or None for no such artefact."""
    async with conn.execute(_BLOB_KEY, (artefact_id, org_id)) as cur:
        row = await cur.fetchone()
    if row is None:
        return None
    return (None if row[0] is None else str(row[0]),)


async def delete(conn: Connection, artefact_id: str) -> None:
    await conn.execute(_DELETE, (artefact_id,))


async def a_binding(conn: Connection, artefact_id: str) -> str | None:
    """A binding that uses the artefact, or None."""
    value = await sql.fetch_value(conn, _BINDING, (artefact_id,))
    return None if value is None else str(value)


async def an_open_command(conn: Connection, artefact_id: str) -> str | None:
    """A command not yet finished whose params name the artefact, or None."""
    value = await sql.fetch_value(conn, _COMMAND, (artefact_id,))
    return None if value is None else str(value)
