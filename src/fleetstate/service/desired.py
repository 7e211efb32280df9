"""Effective desired state: which binding wins each slot of a device, and the document it yields.

Resolution is done in bulk: for any set of devices it loads the facts (profiles, groups,
components), the organization's bindings and the existing documents in a handful of queries, picks
the winners in one pass in Python and writes only the documents that changed, each with the next
`version`. It runs inside the caller's write job, so the change and the documents it implies
commit together.
"""

from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable, Sequence

from fleetstate.domain.clock import now_text
from fleetstate.domain.resolution import (
    DEVICE_SLOT,
    Binding,
    DesiredChange,
    DesiredDocument,
    DeviceFacts,
    explain,
    winners,
)
from fleetstate.domain.resolution import fingerprint as _fingerprint
from fleetstate.domain.resolution import render as _render
from fleetstate.store import Connection
from fleetstate.store.queries import desired as q
from fleetstate.store.queries import numbering

__all__ = ["DEVICE_SLOT", "DesiredChange", "DesiredDocument", "explain", "winners"]
"""Re-exported from `domain.resolution` for the callers that import them from here."""

Tracker = Callable[[Connection, str, list[DesiredChange]], Awaitable[None]]
"""Told by `resolve()` in its transaction of the changes, before they are written (so the previous
documents can still be read): `commands.track_changes`, which tracks every change by a
BIND_CONFIG/UNBIND_CONFIG command. Callers use `commands.resolve_desired`, which passes it."""


async def load_bindings(conn: Connection, org_id: str) -> dict[tuple[str, str], list[Binding]]:
    """All bindings of the organization, indexed by target."""
    index: dict[tuple[str, str], list[Binding]] = defaultdict(list)
    for r in await q.bindings(conn, org_id):
        binding = Binding(
            id=r.id,
            target_type=r.target_type,
            target_id=r.target_id,
            slot_key=r.slot_key,
            artefact_id=r.artefact_id,
            priority=r.priority,
            seq=r.seq,
            artefact_name=r.artefact_name,
            artefact_version=r.artefact_version,
            hash=r.hash,
            size=r.size,
            is_blob=bool(r.is_blob),
        )
        index[(binding.target_type, binding.target_id)].append(binding)
    return index


async def load_facts(conn: Connection, device_ids: Sequence[str]) -> list[DeviceFacts]:
    found = await q.facts(conn, device_ids)
    return [
        DeviceFacts(
            id=device_id,
            profile_id=profile_id,
            groups=tuple(found.groups.get(device_id, ())),
            components=tuple(found.components.get(device_id, ())),
        )
        for device_id, profile_id in found.profiles.items()
    ]


async def resolve(
    conn: Connection, org_id: str, device_ids: Iterable[str], *, track: Tracker
) -> list[DesiredChange]:
    """Re-resolve these devices; `track` the changes, write and return the changed documents."""
    ids = sorted(set(device_ids))
    if not ids:
        return []
    index = await load_bindings(conn, org_id)
    facts = await load_facts(conn, ids)
    current = await _current_fingerprints(conn, ids)
    chosen_by_device: dict[str, dict[str, Binding]] = {}
    same_document: dict[str, dict[str, Binding]] = {}
    for device in facts:
        chosen = winners(device, index)
        previous = current.get(device.id)
        if previous is None or previous[1] != _fingerprint(chosen):
            chosen_by_device[device.id] = chosen
        else:
            same_document[device.id] = chosen
    await _rebind_slots(conn, same_document)
    if not chosen_by_device:
        return []
    contents = await _inline_contents(conn, chosen_by_device.values())
    issued_at = now_text()
    changes = []
    versions = numbering.next_desired_versions(
        {device_id: version for device_id, (version, _f) in current.items()}, list(chosen_by_device)
    )
    for device_id, chosen in chosen_by_device.items():
        version = versions[device_id]
        document = _render(device_id, version, issued_at, chosen, contents)
        changes.append(DesiredChange(device_id=device_id, version=version, document=document))
    await track(conn, org_id, changes)
    await _store(conn, changes, chosen_by_device, issued_at)
    return changes


async def _rebind_slots(conn: Connection, chosen_by_device: dict[str, dict[str, Binding]]) -> None:
    """The document stays (same artefacts, so no new version), but the binding that put an
    artefact there may now be another one (the same artefact bound more specifically): record
    the winner, so each binding's status view counts the devices it really holds."""
    await q.rebind_slots(
        conn,
        [
            (device_id, slot, b.id)
            for device_id, chosen in chosen_by_device.items()
            for slot, b in chosen.items()
        ],
    )


async def _current_fingerprints(conn: Connection, ids: Sequence[str]) -> dict[str, tuple[int, str]]:
    return {f.device_id: (f.version, f.fingerprint) for f in await q.fingerprints(conn, ids)}


async def _inline_contents(
    conn: Connection, chosen: Iterable[dict[str, Binding]]
) -> dict[str, bytes]:
    wanted = sorted({b.artefact_id for slots in chosen for b in slots.values() if not b.is_blob})
    return await q.inline_contents(conn, wanted)


async def _store(
    conn: Connection,
    changes: list[DesiredChange],
    chosen_by_device: dict[str, dict[str, Binding]],
    issued_at: str,
) -> None:
    await q.store(
        conn,
        [
            (
                c.device_id,
                c.version,
                issued_at,
                _fingerprint(chosen_by_device[c.device_id]),
                c.document,
            )
            for c in changes
        ],
        [
            (device_id, slot, b.id, b.artefact_id, b.hash)
            for device_id, chosen in chosen_by_device.items()
            for slot, b in chosen.items()
        ],
    )
