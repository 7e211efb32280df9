"""Bind and unbind as commands: the bindings they change, and the commands tracking versions."""

from collections.abc import Sequence
from typing import Any

import msgspec

from fleetstate.store.connection import Connection
from fleetstate.store.queries import sql
from fleetstate.store.queries.commands import BRIEF, INSERT, BriefRow


class Component(msgspec.Struct, frozen=True):
    device_id: str
    name: str
    sensor_profile_id: str


class BoundArtefact(msgspec.Struct, frozen=True):
    id: str
    target_id: str
    artefact_id: str


class SlotArtefact(msgspec.Struct, frozen=True):
    device_id: str
    slot: str
    artefact_id: str


class OpenTracking(msgspec.Struct, frozen=True):
    device_id: str
    id: str
    tracks_version: int | None


class Untracked(msgspec.Struct, frozen=True):
    id: str
    device_id: str
    version: int  # the device's current desired version
    type: str


class Tracking(msgspec.Struct, frozen=True):
    id: str
    status: str


def _in(statement: str, part: Sequence[str]) -> str:
    return statement.format(ids=sql.marks(part))


async def _by_chunks(
    conn: Connection, struct: type[sql.S], statement: str, ids: Sequence[str], *head: Any
) -> list[sql.S]:
    """`statement`, whose `{ids}` stands for an IN list, over `ids` in chunks; `head` first."""
    found: list[sql.S] = []
    for part in sql.chunks(ids):
        found += await sql.fetch_all(conn, struct, _in(statement, part), (*head, *part))
    return found


_COMPONENTS = "SELECT device_id, name, sensor_profile_id FROM components WHERE device_id IN ({ids})"
_COMPONENT_BINDINGS = (
    "SELECT id, target_id, artefact_id FROM bindings WHERE org_id = ?"
    " AND target_type = 'component' AND target_id IN ({ids})"
)
_ARTEFACT_BINDINGS = (
    "SELECT id, target_id, artefact_id FROM bindings WHERE org_id = ? AND artefact_id = ?"
    " AND target_type IN ('device', 'component')"
)
# Upsert both dialects spell alike.
_UPSERT_BINDING = (
    "INSERT INTO bindings (id, org_id, target_type, target_id, slot_key, artefact_id, seq,"
    " created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
    " ON CONFLICT (org_id, target_type, target_id, slot_key) DO UPDATE SET"
    " artefact_id = excluded.artefact_id, seq = excluded.seq, updated_at = excluded.updated_at"
)
_DELETE_BINDING = "DELETE FROM bindings WHERE id = ?"
_SLOTS = "SELECT device_id, slot, artefact_id FROM desired_slots WHERE device_id IN ({ids})"
_WITH_DOCUMENT = "SELECT device_id FROM desired_documents WHERE device_id IN ({ids})"
_OPEN_TRACKING = (
    "SELECT device_id, id, tracks_version FROM commands WHERE device_id IN ({{ids}})"
    " AND type IN {tracking} AND status IN {open} ORDER BY seq"
)
_ATTACH = "UPDATE commands SET tracks_version = ? WHERE id = ?"
_SUPERSEDE = (
    "UPDATE commands SET status = 'CANCELLED', finished_at = ?, message = ?"
    " WHERE id = ? AND status IN {sources}"
)
_UNTRACKED = (
    "SELECT c.id, c.device_id, dd.version, c.type FROM commands c"
    " JOIN desired_documents dd ON dd.device_id = c.device_id"
    " WHERE c.tracks_version IS NULL AND c.id IN ({ids})"
)
_REPORTED_ACCEPTED = (
    "id IN ({ids}) AND EXISTS (SELECT 1 FROM device_reports r"
    " WHERE r.device_id = commands.device_id AND r.version = commands.tracks_version"
    " AND r.status = 'ACCEPTED')"
)
_OF_VERSION = "device_id = ? AND tracks_version = ? AND type IN {tracking}"
_TRACKING = "SELECT id, status FROM commands WHERE " + _OF_VERSION + " ORDER BY seq DESC LIMIT 1"
_PENDING = "SELECT 1 FROM commands WHERE " + _OF_VERSION + " AND status = 'PENDING'"
_BRIEF = f"SELECT {BRIEF} FROM commands WHERE id = ?"


async def components(conn: Connection, device_ids: Sequence[str]) -> list[Component]:
    return await _by_chunks(conn, Component, _COMPONENTS, device_ids)


async def component_bindings(
    conn: Connection, org_id: str, target_ids: Sequence[str]
) -> list[BoundArtefact]:
    return await _by_chunks(conn, BoundArtefact, _COMPONENT_BINDINGS, target_ids, org_id)


async def artefact_bindings(
    conn: Connection, org_id: str, artefact_id: str | None
) -> list[BoundArtefact]:
    """The device and component bindings of the artefact."""
    return await sql.fetch_all(conn, BoundArtefact, _ARTEFACT_BINDINGS, (org_id, artefact_id))


async def upsert_bindings(conn: Connection, rows: Sequence[tuple[Any, ...]]) -> None:
    """(id, org_id, target_type, target_id, slot_key, artefact_id, seq, created_at,
    updated_at) each; an existing binding of the target and slot gets the new artefact."""
    await conn.executemany(_UPSERT_BINDING, rows)


async def delete_bindings(conn: Connection, binding_ids: Sequence[str]) -> None:
    await conn.executemany(_DELETE_BINDING, [(b,) for b in binding_ids])


async def desired_slots(conn: Connection, device_ids: Sequence[str]) -> list[SlotArtefact]:
    return await _by_chunks(conn, SlotArtefact, _SLOTS, device_ids)


async def with_document(conn: Connection, device_ids: Sequence[str]) -> set[str]:
    """The devices that have a desired document already."""
    found: set[str] = set()
    for part in sql.chunks(device_ids):
        found.update(await sql.fetch_column(conn, _in(_WITH_DOCUMENT, part), part))
    return found


async def open_tracking(
    conn: Connection,
    device_ids: Sequence[str],
    tracking: Sequence[str],
    open_statuses: Sequence[str],
) -> list[OpenTracking]:
    """The devices' unfinished commands of a `tracking` type, oldest first."""
    statement = _OPEN_TRACKING.format(
        tracking=sql.literal_list(tracking), open=sql.literal_list(open_statuses)
    )
    return await _by_chunks(conn, OpenTracking, statement, device_ids)


async def insert_commands(conn: Connection, rows: Sequence[tuple[Any, ...]]) -> None:
    await conn.executemany(INSERT, rows)


async def attach(conn: Connection, rows: Sequence[tuple[int, str]]) -> None:
    """(version, command id): the command tracks that version now."""
    await conn.executemany(_ATTACH, rows)


async def supersede(
    conn: Connection, rows: Sequence[tuple[str, str, str]], sources: Sequence[str]
) -> None:
    """(finished_at, message, command id): cancel each where it is in one of `sources`."""
    await conn.executemany(_SUPERSEDE.format(sources=sql.literal_list(sources)), rows)


async def untracked(conn: Connection, command_ids: Sequence[str]) -> list[Untracked]:
    """Of the commands, those tracking no version yet, with their device's desired version."""
    return await _by_chunks(conn, Untracked, _UNTRACKED, command_ids)


def reported_accepted(part: Sequence[str]) -> tuple[str, Sequence[str]]:
    """The `where` of `commands.move` for the commands of `part` (at most one chunk) whose
    device already reported their version ACCEPTED."""
    return _in(_REPORTED_ACCEPTED, part), part


def of_version(
    device_id: str, version: int, tracking: Sequence[str]
) -> tuple[str, tuple[Any, ...]]:
    """The `where` of `commands.move` for the tracking commands of a device's version."""
    return _OF_VERSION.format(tracking=sql.literal_list(tracking)), (device_id, version)


async def tracking_command(
    conn: Connection, device_id: str, version: int, tracking: Sequence[str]
) -> Tracking | None:
    """The newest command tracking the device's version."""
    statement = _TRACKING.format(tracking=sql.literal_list(tracking))
    return await sql.fetch_one(conn, Tracking, statement, (device_id, version))


async def pending_tracking(
    conn: Connection, device_id: str, version: int, tracking: Sequence[str]
) -> bool:
    statement = _PENDING.format(tracking=sql.literal_list(tracking))
    return await sql.found(conn, statement, (device_id, version))


async def brief(conn: Connection, command_id: str) -> BriefRow | None:
    return await sql.fetch_one(conn, BriefRow, _BRIEF, (command_id,))
