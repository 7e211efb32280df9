"""Bindings: an artefact assigned to a target (device, component, group or profile) and slot."""

from collections.abc import Sequence

import msgspec

from fleetstate.store.connection import Connection
from fleetstate.store.queries import sql


class ArtefactProfile(msgspec.Struct, frozen=True):
    profile_id: str
    kind: str


class NewBinding(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    org_id: str
    target_type: str
    target_id: str
    slot_key: str
    artefact_id: str
    priority: int
    seq: int
    created_at: str
    updated_at: str


class Target(msgspec.Struct, frozen=True):
    target_type: str
    target_id: str


class BindingRow(msgspec.Struct, frozen=True):
    id: str
    target_type: str
    target_id: str
    artefact_id: str
    priority: int
    created_at: str
    updated_at: str
    artefact_name: str
    artefact_version: int
    desired_hash: str


class SlotStatus(msgspec.Struct, frozen=True):
    """One device slot a binding feeds, with the device's last report of it."""

    device_id: str
    slot: str
    desired_version: int
    version: int | None
    status: str | None
    hash: str | None
    message: str | None
    reported_at: str | None
    command_id: str | None
    command_status: str | None


class DeviceDocument(msgspec.Struct, frozen=True):
    id: str
    document: bytes | None


_ARTEFACT = (
    "SELECT a.profile_id, p.kind FROM config_artefacts a JOIN profiles p ON p.id = a.profile_id"
    " WHERE a.id = ? AND a.org_id = ?"
)
_PROFILE_OF_KIND = "SELECT 1 FROM profiles WHERE id = ? AND org_id = ? AND kind = ?"
_DEVICE_PROFILE = "SELECT profile_id FROM devices WHERE id = ? AND org_id = ?"
_HAS_SENSOR = "SELECT 1 FROM components WHERE device_id = ? AND sensor_profile_id = ?"
_COMPONENT_PROFILE = (
    "SELECT c.sensor_profile_id FROM components c JOIN devices d ON d.id = c.device_id"
    " WHERE d.id = ? AND d.org_id = ? AND c.name = ?"
)
_COVERED = {
    "device_group": "SELECT device_id FROM group_members WHERE group_id = ?",
    "device_profile": "SELECT id FROM devices WHERE profile_id = ?",
    "sensor_profile": "SELECT DISTINCT device_id FROM components WHERE sensor_profile_id = ?",
}
_OF_SLOT = (
    "SELECT id FROM bindings WHERE org_id = ? AND target_type = ? AND target_id = ?"
    " AND slot_key = ?"
)
_REBIND = "UPDATE bindings SET artefact_id = ?, priority = ?, seq = ?, updated_at = ? WHERE id = ?"
_INSERT = f"INSERT INTO bindings ({sql.columns(NewBinding)}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
_TARGET = "SELECT target_type, target_id FROM bindings WHERE id = ? AND org_id = ?"
_DELETE = "DELETE FROM bindings WHERE id = ?"
_OF_TARGET = "SELECT id FROM bindings WHERE org_id = ? AND target_type = ? AND target_id = ?"
_SELECT = (
    "SELECT b.id, b.target_type, b.target_id, b.artefact_id, b.priority, b.created_at,"
    " b.updated_at, a.name AS artefact_name, a.version AS artefact_version, a.hash AS desired_hash"
    " FROM bindings b JOIN config_artefacts a ON a.id = b.artefact_id"
)
_GET = f"{_SELECT} WHERE b.id = ? AND b.org_id = ?"
_PAGE = f"{_SELECT} WHERE b.org_id = ? AND b.id > ? ORDER BY b.id LIMIT ?"
_PAGE_OF_TARGET = (  # a NULL type or id: any
    f"{_SELECT} WHERE b.org_id = ? AND b.id > ?"
    " AND (? IS NULL OR b.target_type = ?) AND (? IS NULL OR b.target_id = ?)"
    " ORDER BY b.id LIMIT ?"
)
# The BIND_CONFIG/UNBIND_CONFIG command tracking the device's current desired version (the newest,
# should an operator's re-bind that changed nothing have superseded an older one).
_TRACKING_COMMAND = (
    "SELECT c.seq FROM commands c WHERE c.device_id = s.device_id"
    " AND c.tracks_version = dd.version AND c.type IN ('BIND_CONFIG', 'UNBIND_CONFIG')"
    " ORDER BY c.seq DESC LIMIT 1"
)
_SLOTS = (
    "SELECT s.device_id, s.slot, dd.version AS desired_version, r.version, r.status, r.hash,"
    " r.message, r.reported_at, c.id AS command_id, c.status AS command_status"
    " FROM desired_slots s"
    " JOIN desired_documents dd ON dd.device_id = s.device_id"
    " LEFT JOIN slot_reports r ON r.device_id = s.device_id AND r.slot = s.slot"
    f" LEFT JOIN commands c ON c.seq = ({_TRACKING_COMMAND})"
    " WHERE s.binding_id = ? ORDER BY s.device_id, s.slot"
)
_DOCUMENT = (
    "SELECT d.id, dd.document FROM devices d LEFT JOIN desired_documents dd"
    " ON dd.device_id = d.id WHERE d.id = ? AND d.org_id = ?"
)


async def artefact_profile(
    conn: Connection, org_id: str, artefact_id: str
) -> ArtefactProfile | None:
    return await sql.fetch_one(conn, ArtefactProfile, _ARTEFACT, (artefact_id, org_id))


async def profile_exists(conn: Connection, org_id: str, profile_id: str, kind: str) -> bool:
    return await sql.found(conn, _PROFILE_OF_KIND, (profile_id, org_id, kind))


async def device_profile(conn: Connection, org_id: str, device_id: str) -> tuple[str] | None:
    """(the device's profile id), or None for no such device."""
    async with conn.execute(_DEVICE_PROFILE, (device_id, org_id)) as cur:
        row = await cur.fetchone()
    return None if row is None else (str(row[0]),)


async def has_sensor(conn: Connection, device_id: str, profile_id: str) -> bool:
    return await sql.found(conn, _HAS_SENSOR, (device_id, profile_id))


async def component_profile(
    conn: Connection, org_id: str, device_id: str, name: str
) -> tuple[str] | None:
    """(the component's sensor profile id), or None for no such component."""
    async with conn.execute(_COMPONENT_PROFILE, (device_id, org_id, name)) as cur:
        row = await cur.fetchone()
    return None if row is None else (str(row[0]),)


async def covered_devices(conn: Connection, target_type: str, target_id: str) -> list[str] | None:
    """The devices a group or profile target covers; None for a device or component target."""
    statement = _COVERED.get(target_type)
    if statement is None:
        return None
    return await sql.fetch_column(conn, statement, (target_id,))


async def of_slot(
    conn: Connection, org_id: str, target_type: str, target_id: str, slot_key: str
) -> str | None:
    value = await sql.fetch_value(conn, _OF_SLOT, (org_id, target_type, target_id, slot_key))
    return None if value is None else str(value)


async def rebind(
    conn: Connection, binding_id: str, artefact_id: str, priority: int, seq: int, now: str
) -> None:
    await conn.execute(_REBIND, (artefact_id, priority, seq, now, binding_id))


async def insert(conn: Connection, row: NewBinding) -> None:
    await conn.execute(_INSERT, msgspec.structs.astuple(row))


async def target(conn: Connection, org_id: str, binding_id: str) -> Target | None:
    return await sql.fetch_one(conn, Target, _TARGET, (binding_id, org_id))


async def delete(conn: Connection, binding_ids: Sequence[str]) -> None:
    await conn.executemany(_DELETE, [(i,) for i in binding_ids])


async def of_target(conn: Connection, org_id: str, target_type: str, target_id: str) -> list[str]:
    return await sql.fetch_column(conn, _OF_TARGET, (org_id, target_type, target_id))


async def get(conn: Connection, org_id: str, binding_id: str) -> BindingRow | None:
    return await sql.fetch_one(conn, BindingRow, _GET, (binding_id, org_id))


async def page(
    conn: Connection,
    org_id: str,
    after: str,
    limit: int,
    of: tuple[str | None, str | None] | None,
) -> list[BindingRow]:
    if of is None:
        return await sql.fetch_all(conn, BindingRow, _PAGE, (org_id, after, limit))
    kind, ident = of
    params = (org_id, after, kind, kind, ident, ident, limit)
    return await sql.fetch_all(conn, BindingRow, _PAGE_OF_TARGET, params)


async def slots(conn: Connection, binding_id: str) -> list[SlotStatus]:
    return await sql.fetch_all(conn, SlotStatus, _SLOTS, (binding_id,))


async def device_document(conn: Connection, org_id: str, device_id: str) -> DeviceDocument | None:
    return await sql.fetch_one(conn, DeviceDocument, _DOCUMENT, (device_id, org_id))
