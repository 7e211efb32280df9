"""Effective desired state: which binding wins each slot of a device, and the document it yields.

Resolution is done in bulk: for any set of devices it loads the facts (profiles, groups,
components), the organization's bindings and the existing documents in a handful of queries, picks
the winners in one pass in Python and writes only the documents that changed, each with the next
`version`. It runs inside the caller's write job, so the change and the documents it implies
commit together.
"""

import hashlib
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any

import msgspec

from fleetstate.clock import now_text
from fleetstate.store import Connection
from fleetstate.store.sqlite.queries import desired as q
from fleetstate.store.sqlite.queries import numbering

RANK = {"component": 4, "device": 3, "device_group": 2, "device_profile": 1, "sensor_profile": 1}
DEVICE_SLOT = "device"


class Binding(msgspec.Struct, frozen=True, kw_only=True):
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
    is_blob: bool

    @property
    def order(self) -> tuple[int, int, int]:
        """Most specific first, then higher priority, then the newer binding."""
        return (RANK[self.target_type], self.priority, self.seq)


class DeviceFacts(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    profile_id: str
    groups: tuple[str, ...]
    components: tuple[tuple[str, str], ...]


class DesiredConfig(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    slot: str
    artefact_id: str
    name: str
    artefact_version: int
    hash: str
    size: int
    content: msgspec.Raw | None = None
    download: str | None = None


class DesiredDocument(msgspec.Struct, frozen=True, kw_only=True):
    version: int
    issued_at: str
    configs: list[DesiredConfig]


class DesiredChange(msgspec.Struct, frozen=True, kw_only=True):
    """A device whose document changed: what to deliver now."""

    device_id: str
    version: int
    document: bytes


_encoder = msgspec.json.Encoder()
document_decoder = msgspec.json.Decoder(DesiredDocument)

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


def candidates(
    device: DeviceFacts, index: dict[tuple[str, str], list[Binding]]
) -> dict[str, list[Binding]]:
    """Every binding that applies to each slot of the device, the winner first."""
    shared = [("device", device.id), *(("device_group", g) for g in device.groups)]
    slots: dict[str, list[Binding]] = {}
    device_keys = [*shared, ("device_profile", device.profile_id)]
    slots[DEVICE_SLOT] = _matching(index, device_keys, DEVICE_SLOT)
    for name, sensor_profile in device.components:
        keys = [("component", f"{device.id}/{name}"), *shared, ("sensor_profile", sensor_profile)]
        slots[f"component:{name}"] = _matching(index, keys, f"sensor:{sensor_profile}")
    return slots


def _matching(
    index: dict[tuple[str, str], list[Binding]], keys: list[tuple[str, str]], slot_key: str
) -> list[Binding]:
    found = [b for key in keys for b in index.get(key, ()) if b.slot_key == slot_key]
    return sorted(found, key=lambda b: b.order, reverse=True)


def winners(device: DeviceFacts, index: dict[tuple[str, str], list[Binding]]) -> dict[str, Binding]:
    return {slot: found[0] for slot, found in candidates(device, index).items() if found}


def _fingerprint(chosen: dict[str, Binding]) -> str:
    text = ";".join(f"{slot}={b.artefact_id}" for slot, b in sorted(chosen.items()))
    return hashlib.sha256(text.encode()).hexdigest()


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
    versions = await numbering.next_desired_versions(conn, list(chosen_by_device))
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


def _render(
    device_id: str,
    version: int,
    issued_at: str,
    chosen: dict[str, Binding],
    contents: dict[str, bytes],
) -> bytes:
    configs = [
        DesiredConfig(
            slot=slot,
            artefact_id=b.artefact_id,
            name=b.artefact_name,
            artefact_version=b.artefact_version,
            hash=b.hash,
            size=b.size,
            content=None if b.is_blob else msgspec.Raw(contents[b.artefact_id]),
            download=f"/v1/devices/{device_id}/artefacts/{b.artefact_id}" if b.is_blob else None,
        )
        for slot, b in sorted(chosen.items(), key=lambda item: _slot_order(item[0]))
    ]
    return _encoder.encode(DesiredDocument(version=version, issued_at=issued_at, configs=configs))


def _slot_order(slot: str) -> tuple[bool, str]:
    return (slot != DEVICE_SLOT, slot)


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


def explain(
    device: DeviceFacts, index: dict[tuple[str, str], list[Binding]]
) -> list[dict[str, Any]]:
    """Per slot: every candidate binding, the winner, and why it beat each of the others."""
    out = []
    for slot, found in sorted(candidates(device, index).items(), key=lambda i: _slot_order(i[0])):
        winner = found[0] if found else None
        out.append(
            {
                "slot": slot,
                "winner": winner.id if winner else None,
                "candidates": [_candidate(b, winner) for b in found],
            }
        )
    return out


def _candidate(binding: Binding, winner: Binding | None) -> dict[str, Any]:
    return {
        "binding_id": binding.id,
        "target_type": binding.target_type,
        "target_id": binding.target_id,
        "priority": binding.priority,
        "artefact_id": binding.artefact_id,
        "artefact_name": binding.artefact_name,
        "artefact_version": binding.artefact_version,
        "won": binding is winner,
        "reason": _reason(binding, winner),
    }


def _reason(binding: Binding, winner: Binding | None) -> str:
    if winner is None or binding is winner:
        return "most specific binding for this slot" if binding is winner else ""
    if RANK[winner.target_type] != RANK[binding.target_type]:
        return (
            f"a {winner.target_type} binding is more specific than a {binding.target_type} binding"
        )
    if winner.priority != binding.priority:
        return f"lower priority ({binding.priority} < {winner.priority} of {winner.id})"
    return f"older binding: {winner.id} of equal specificity and priority is newer"
