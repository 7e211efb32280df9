"""Device groups and their membership; a membership change re-resolves that device."""

from typing import Any

import msgspec

from fleetstate import commands, desired
from fleetstate.clock import now_text
from fleetstate.errors import Conflict, Invalid, NotFound
from fleetstate.ids import new_id
from fleetstate.names import Name
from fleetstate.pagination import Page, page_of
from fleetstate.store import Connection, Store


class NewGroup(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    name: Name
    device_ids: list[str] = []


async def _require_group(conn: Connection, org_id: str, group_id: str) -> None:
    async with conn.execute(
        "SELECT 1 FROM device_groups WHERE id = ? AND org_id = ?", (group_id, org_id)
    ) as cur:
        if await cur.fetchone() is None:
            raise NotFound("device group", group_id)


async def _require_devices(conn: Connection, org_id: str, device_ids: list[str]) -> None:
    for part in desired.chunks(device_ids):
        async with conn.execute(
            f"SELECT id FROM devices WHERE org_id = ? AND id IN ({desired.marks(part)})",
            (org_id, *part),
        ) as cur:
            found = {r[0] async for r in cur}
        for device_id in part:
            if device_id not in found:
                raise NotFound("device", device_id)


async def create(
    store: Store, org_id: str, new: NewGroup
) -> tuple[str, list[desired.DesiredChange]]:
    if not new.name.strip():
        raise Invalid("name must not be empty")
    group_id = new_id()
    members = list(dict.fromkeys(new.device_ids))

    async def job(conn: Connection) -> list[desired.DesiredChange]:
        async with conn.execute(
            "SELECT 1 FROM device_groups WHERE org_id = ? AND name = ?", (org_id, new.name)
        ) as cur:
            if await cur.fetchone():
                raise Conflict(f"a device group named {new.name!r} already exists")
        await _require_devices(conn, org_id, members)
        await conn.execute(
            "INSERT INTO device_groups (id, org_id, name, created_at) VALUES (?, ?, ?, ?)",
            (group_id, org_id, new.name, now_text()),
        )
        await conn.executemany(
            "INSERT INTO group_members (group_id, device_id) VALUES (?, ?)",
            [(group_id, d) for d in members],
        )
        return await commands.resolve_desired(conn, org_id, members)

    return group_id, await store.write(job)


async def get(store: Store, org_id: str, group_id: str) -> dict[str, Any]:
    row = await store.fetchone(
        "SELECT id, name, created_at FROM device_groups WHERE id = ? AND org_id = ?",
        (group_id, org_id),
    )
    if row is None:
        raise NotFound("device group", group_id)
    members = await store.fetchall(
        "SELECT device_id FROM group_members WHERE group_id = ? ORDER BY device_id", (group_id,)
    )
    return {**dict(row), "device_ids": [r[0] for r in members]}


async def list_page(store: Store, org_id: str, page: Page) -> dict[str, Any]:
    rows = await store.fetchall(
        "SELECT g.id, g.name, g.created_at, (SELECT count(*) FROM group_members m"
        " WHERE m.group_id = g.id) AS device_count FROM device_groups g"
        " WHERE g.org_id = ? AND g.id > ? ORDER BY g.id LIMIT ?",
        (org_id, page.cursor or "", page.limit + 1),
    )
    return page_of([dict(r) for r in rows], page)


async def delete(store: Store, org_id: str, group_id: str) -> list[desired.DesiredChange]:
    async def job(conn: Connection) -> list[desired.DesiredChange]:
        await _require_group(conn, org_id, group_id)
        async with conn.execute(
            "SELECT device_id FROM group_members WHERE group_id = ?", (group_id,)
        ) as cur:
            members = [r[0] async for r in cur]
        await conn.execute(
            "DELETE FROM bindings WHERE target_type = 'device_group' AND target_id = ?", (group_id,)
        )
        await conn.execute("DELETE FROM device_groups WHERE id = ?", (group_id,))
        return await commands.resolve_desired(conn, org_id, members)

    return await store.write(job)


async def set_member(
    store: Store, org_id: str, group_id: str, device_id: str, *, member: bool
) -> list[desired.DesiredChange]:
    async def job(conn: Connection) -> list[desired.DesiredChange]:
        await _require_group(conn, org_id, group_id)
        await _require_devices(conn, org_id, [device_id])
        if member:
            await conn.execute(
                "INSERT OR IGNORE INTO group_members (group_id, device_id) VALUES (?, ?)",
                (group_id, device_id),
            )
        else:
            cur = await conn.execute(
                "DELETE FROM group_members WHERE group_id = ? AND device_id = ?",
                (group_id, device_id),
            )
            if cur.rowcount == 0:
                raise NotFound("group member", device_id)
        return await commands.resolve_desired(conn, org_id, [device_id])

    return await store.write(job)
