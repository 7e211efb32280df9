"""Desired state: the facts resolution reads (bindings, devices, groups, components) and the
documents and slots it writes."""

from collections.abc import Sequence

import msgspec

from fleetstate.store.connection import Connection
from fleetstate.store.queries import sql


class BindingRow(msgspec.Struct, frozen=True):
    id: str
    target_type: str
    target_id: str
    slot_key: str
    artefact_id: str
    priority: int
    seq: int
    artefact_name: str
    artefact_version: int
    hash: str
    size: int
    is_blob: int


class DeviceFacts(msgspec.Struct, frozen=True):
    """What resolution needs of each device: profile, groups, components (name, sensor profile)."""

    profiles: dict[str, str]
    groups: dict[str, list[str]]
    components: dict[str, list[tuple[str, str]]]


class Fingerprint(msgspec.Struct, frozen=True):
    device_id: str
    version: int
    fingerprint: str


_BINDINGS = (
    "SELECT b.id, b.target_type, b.target_id, b.slot_key, b.artefact_id, b.priority, b.seq,"
    " a.name, a.version, a.hash, a.size, a.blob_key IS NOT NULL"
    " FROM bindings b JOIN config_artefacts a ON a.id = b.artefact_id WHERE b.org_id = ?"
)
_PROFILES = "SELECT id, profile_id FROM devices WHERE id IN ({ids})"
_GROUPS = "SELECT device_id, group_id FROM group_members WHERE device_id IN ({ids})"
_COMPONENTS = (
    "SELECT device_id, name, sensor_profile_id FROM components WHERE device_id IN ({ids})"
    " ORDER BY device_id, name"
)
_FINGERPRINTS = (
    "SELECT device_id, version, fingerprint FROM desired_documents WHERE device_id IN ({ids})"
)
_CONTENTS = "SELECT id, content FROM config_artefacts WHERE id IN ({ids})"
# Upsert both dialects spell alike.
_SET_DOCUMENT = (
    "INSERT INTO desired_documents (device_id, version, issued_at, fingerprint, document)"
    " VALUES (?, ?, ?, ?, ?) ON CONFLICT (device_id) DO UPDATE SET version = excluded.version,"
    " issued_at = excluded.issued_at, fingerprint = excluded.fingerprint,"
    " document = excluded.document"
)
_REBIND_SLOT = (
    "UPDATE desired_slots SET binding_id = ? WHERE device_id = ? AND slot = ?"
    f" AND {sql.distinct('binding_id', '?')}"
)
_CLEAR_SLOTS = "DELETE FROM desired_slots WHERE device_id = ?"
_ADD_SLOT = (
    "INSERT INTO desired_slots (device_id, slot, binding_id, artefact_id, hash)"
    " VALUES (?, ?, ?, ?, ?)"
)


async def bindings(conn: Connection, org_id: str) -> list[BindingRow]:
    """Every binding of the organization with its artefact."""
    return await sql.fetch_all(conn, BindingRow, _BINDINGS, (org_id,))


async def facts(conn: Connection, device_ids: Sequence[str]) -> DeviceFacts:
    found = DeviceFacts(profiles={}, groups={}, components={})
    for part in sql.chunks(device_ids):
        marks = sql.marks(part)
        async with conn.execute(_PROFILES.format(ids=marks), part) as cur:
            found.profiles.update({r[0]: r[1] async for r in cur})
        async with conn.execute(_GROUPS.format(ids=marks), part) as cur:
            async for r in cur:
                found.groups.setdefault(r[0], []).append(r[1])
        async with conn.execute(_COMPONENTS.format(ids=marks), part) as cur:
            async for r in cur:
                found.components.setdefault(r[0], []).append((r[1], r[2]))
    return found


async def fingerprints(conn: Connection, device_ids: Sequence[str]) -> list[Fingerprint]:
    """The current document's version and fingerprint of each device that has one."""
    found: list[Fingerprint] = []
    for part in sql.chunks(device_ids):
        statement = _FINGERPRINTS.format(ids=sql.marks(part))
        found += await sql.fetch_all(conn, Fingerprint, statement, part)
    return found


async def inline_contents(conn: Connection, artefact_ids: Sequence[str]) -> dict[str, bytes]:
    contents: dict[str, bytes] = {}
    for part in sql.chunks(artefact_ids):
        async with conn.execute(_CONTENTS.format(ids=sql.marks(part)), part) as cur:
            contents.update({r[0]: bytes(r[1]) async for r in cur})
    return contents


async def store(
    conn: Connection,
    documents: Sequence[tuple[str, int, str, str, bytes]],
    slots: Sequence[tuple[str, str, str, str, str]],
) -> None:
    """Write the new documents (device, version, issued_at, fingerprint, document) and replace
    those devices' slots with `slots` (device, slot, binding, artefact, hash)."""
    await conn.executemany(_SET_DOCUMENT, documents)
    await conn.executemany(_CLEAR_SLOTS, [(d[0],) for d in documents])
    await conn.executemany(_ADD_SLOT, slots)


async def rebind_slots(conn: Connection, slots: Sequence[tuple[str, str, str]]) -> None:
    """(device, slot, binding): record the binding that now puts the slot's artefact there."""
    await conn.executemany(_REBIND_SLOT, [(b, d, slot, b) for d, slot, b in slots])
