"""Profiles: a named JSON Schema of one kind (device or sensor) in an organization."""

import msgspec

from fleetstate.store.connection import Connection
from fleetstate.store.queries import sql


class ProfileRow(msgspec.Struct, frozen=True):
    id: str
    kind: str
    name: str
    config_schema: str  # canonical JSON text
    command_delivery: str
    created_at: str


_COLUMNS = sql.columns(ProfileRow)
_NAMED = "SELECT 1 FROM profiles WHERE org_id = ? AND kind = ? AND name = ?"
_INSERT = f"INSERT INTO profiles (org_id, {_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)"
_GET = f"SELECT {_COLUMNS} FROM profiles WHERE id = ? AND org_id = ? AND kind = ?"
_PAGE = (
    f"SELECT {_COLUMNS} FROM profiles WHERE org_id = ? AND kind = ? AND id > ? ORDER BY id LIMIT ?"
)
# Where a profile may still be used: (table, column) pairs, fixed names.
_USERS = {
    "devices": "SELECT 1 FROM devices WHERE profile_id = ? LIMIT 1",
    "components": "SELECT 1 FROM components WHERE sensor_profile_id = ? LIMIT 1",
    "config_artefacts": "SELECT 1 FROM config_artefacts WHERE profile_id = ? LIMIT 1",
}
_UNBIND = "DELETE FROM bindings WHERE target_type = ? AND target_id = ?"
_DELETE = "DELETE FROM profiles WHERE id = ?"


async def name_taken(conn: Connection, org_id: str, kind: str, name: str) -> bool:
    return await sql.found(conn, _NAMED, (org_id, kind, name))


async def insert(conn: Connection, org_id: str, row: ProfileRow) -> None:
    await conn.execute(_INSERT, (org_id, *msgspec.structs.astuple(row)))


async def get(conn: Connection, org_id: str, kind: str, profile_id: str) -> ProfileRow | None:
    return await sql.fetch_one(conn, ProfileRow, _GET, (profile_id, org_id, kind))


async def page(
    conn: Connection, org_id: str, kind: str, after: str, limit: int
) -> list[ProfileRow]:
    return await sql.fetch_all(conn, ProfileRow, _PAGE, (org_id, kind, after, limit))


async def first_user(conn: Connection, profile_id: str) -> str | None:
    """The first table that still refers to the profile, or None."""
    for table, statement in _USERS.items():
        if await sql.found(conn, statement, (profile_id,)):
            return table
    return None


async def delete(conn: Connection, profile_id: str, target_type: str) -> None:
    """Delete the profile and the bindings that target it."""
    await conn.execute(_UNBIND, (target_type, profile_id))
    await conn.execute(_DELETE, (profile_id,))
