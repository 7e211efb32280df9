"""Device groups and their members."""

from collections.abc import Sequence

import msgspec

from fleetstate.store.connection import Connection
from fleetstate.store.queries import sql


class GroupRow(msgspec.Struct, frozen=True):
    id: str
    name: str
    created_at: str


class GroupSummary(msgspec.Struct, frozen=True):
    id: str
    name: str
    created_at: str
    device_count: int


_NAMED = "SELECT 1 FROM device_groups WHERE org_id = ? AND name = ?"
_INSERT = "INSERT INTO device_groups (id, org_id, name, created_at) VALUES (?, ?, ?, ?)"
_ADD = "INSERT INTO group_members (group_id, device_id) VALUES (?, ?)"
_ADD_IF_ABSENT = sql.insert_ignore("group_members (group_id, device_id)", "(?, ?)")
_REMOVE = "DELETE FROM group_members WHERE group_id = ? AND device_id = ?"
_GET = f"SELECT {sql.columns(GroupRow)} FROM device_groups WHERE id = ? AND org_id = ?"
_MEMBERS = "SELECT device_id FROM group_members WHERE group_id = ? ORDER BY device_id"
_PAGE = (
    "SELECT g.id, g.name, g.created_at, (SELECT count(*) FROM group_members m"
    " WHERE m.group_id = g.id) AS device_count FROM device_groups g"
    " WHERE g.org_id = ? AND g.id > ? ORDER BY g.id LIMIT ?"
)
_UNBIND = "DELETE FROM bindings WHERE target_type = 'device_group' AND target_id = ?"
_DELETE = "DELETE FROM device_groups WHERE id = ?"


async def exists(conn: Connection, org_id: str, group_id: str) -> bool:
    return await sql.exists(conn, "device_groups", org_id, group_id)


async def name_taken(conn: Connection, org_id: str, name: str) -> bool:
    return await sql.found(conn, _NAMED, (org_id, name))


async def insert(conn: Connection, org_id: str, row: GroupRow, device_ids: Sequence[str]) -> None:
    await conn.execute(_INSERT, (row.id, org_id, row.name, row.created_at))
    await conn.executemany(_ADD, [(row.id, d) for d in device_ids])


async def get(conn: Connection, org_id: str, group_id: str) -> GroupRow | None:
    return await sql.fetch_one(conn, GroupRow, _GET, (group_id, org_id))


async def members(conn: Connection, group_id: str) -> list[str]:
    """The group's device ids, sorted."""
    return await sql.fetch_column(conn, _MEMBERS, (group_id,))


async def page(conn: Connection, org_id: str, after: str, limit: int) -> list[GroupSummary]:
    return await sql.fetch_all(conn, GroupSummary, _PAGE, (org_id, after, limit))


async def delete(conn: Connection, group_id: str) -> None:
    """Delete the group, its bindings and (by cascade) its memberships."""
    await conn.execute(_UNBIND, (group_id,))
    await conn.execute(_DELETE, (group_id,))


async def add_member(conn: Connection, group_id: str, device_id: str) -> None:
    await conn.execute(_ADD_IF_ABSENT, (group_id, device_id))


async def remove_member(conn: Connection, group_id: str, device_id: str) -> bool:
    """Whether the device was a member."""
    cur = await conn.execute(_REMOVE, (group_id, device_id))
    return cur.rowcount > 0
