"""Device groups and their membership; a membership change re-resolves that device."""

from typing import Any

import msgspec

from fleetstate.domain.clock import now_text
from fleetstate.domain.ids import new_id
from fleetstate.domain.names import Name
from fleetstate.domain.pagination import Page, page_of
from fleetstate.errors import Conflict, Invalid, NotFound
from fleetstate.service import commands, desired
from fleetstate.store import Connection, Store
from fleetstate.store.queries import devices as device_q
from fleetstate.store.queries import groups as q


class NewGroup(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    name: Name
    device_ids: list[str] = []


async def _require_group(conn: Connection, org_id: str, group_id: str) -> None:
    if not await q.exists(conn, org_id, group_id):
        raise NotFound("device group", group_id)


async def _require_devices(conn: Connection, org_id: str, device_ids: list[str]) -> None:
    missing = await device_q.first_missing(conn, org_id, device_ids)
    if missing is not None:
        raise NotFound("device", missing)


async def create(
    store: Store, org_id: str, new: NewGroup
) -> tuple[str, list[desired.DesiredChange]]:
    if not new.name.strip():
        raise Invalid("name must not be empty")
    row = q.GroupRow(id=new_id(), name=new.name, created_at=now_text())
    members = list(dict.fromkeys(new.device_ids))

    async def job(conn: Connection) -> list[desired.DesiredChange]:
        if await q.name_taken(conn, org_id, new.name):
            raise Conflict(f"a device group named {new.name!r} already exists")
        await _require_devices(conn, org_id, members)
        await q.insert(conn, org_id, row, members)
        return await commands.resolve_desired(conn, org_id, members)

    return row.id, await store.write(job)


async def get(store: Store, org_id: str, group_id: str) -> dict[str, Any]:
    async def read(conn: Connection) -> dict[str, Any] | None:
        row = await q.get(conn, org_id, group_id)
        if row is None:
            return None
        return {**msgspec.structs.asdict(row), "device_ids": await q.members(conn, group_id)}

    found = await store.query(read)
    if found is None:
        raise NotFound("device group", group_id)
    return found


async def list_page(store: Store, org_id: str, page: Page) -> dict[str, Any]:
    after = page.cursor or ""
    rows = await store.query(lambda conn: q.page(conn, org_id, after, page.limit + 1))
    return page_of([msgspec.structs.asdict(r) for r in rows], page)


async def delete(store: Store, org_id: str, group_id: str) -> list[desired.DesiredChange]:
    async def job(conn: Connection) -> list[desired.DesiredChange]:
        await _require_group(conn, org_id, group_id)
        members = await q.members(conn, group_id)
        await q.delete(conn, group_id)
        return await commands.resolve_desired(conn, org_id, members)

    return await store.write(job)


async def set_member(
    store: Store, org_id: str, group_id: str, device_id: str, *, member: bool
) -> list[desired.DesiredChange]:
    async def job(conn: Connection) -> list[desired.DesiredChange]:
        await _require_group(conn, org_id, group_id)
        await _require_devices(conn, org_id, [device_id])
        if member:
            await q.add_member(conn, group_id, device_id)
        elif not await q.remove_member(conn, group_id, device_id):
            raise NotFound("group member", device_id)
        return await commands.resolve_desired(conn, org_id, [device_id])

    return await store.write(job)
