"""Bind and unbind are commands: every change of a device's effective desired state is tracked by
one BIND_CONFIG/UNBIND_CONFIG command until the device converges.

Such a command is never published: delivery of the new document makes it SENT
(`mark_config_sent`), the device's reports move it on (`converge`, from `reports.apply()`), and a
newer change supersedes it. `track_changes` runs inside `resolve_desired()` for any change, from a
binding at any level or from an operator's BIND/UNBIND command, which then is the tracking command
itself. Everything is done in bulk: a group binding over 10,000 devices is a few statements.
"""

from collections import defaultdict
from collections.abc import Iterable
from typing import Any

import msgspec

from fleetstate.domain.clock import now_text
from fleetstate.domain.ids import new_id
from fleetstate.errors import NotFound, SchemaInvalid
from fleetstate.service import desired, outbox
from fleetstate.service.commands.lifecycle import (
    DEFAULT_TIMEOUT_S,
    OPEN,
    TRACKING,
    Brief,
    Status,
    Target,
    answer,
    brief,
    created_and_deadline,
    move,
    sources,
    to_json,
)
from fleetstate.store import Connection, Store
from fleetstate.store.queries import bindings as binding_q
from fleetstate.store.queries import command_tracking as q
from fleetstate.store.queries import numbering, sql

_REPORTED = {
    "IN_PROGRESS": Status.ACKNOWLEDGED,
    "ACCEPTED": Status.SUCCESS,
    "REJECTED": Status.FAILED,
    "FAILED": Status.FAILED,
}


class BindParams(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    artefact_id: str
    component: str | None = None


class UnbindParams(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    artefact_id: str | None = None
    component: str | None = None


class Rebind(msgspec.Struct, frozen=True, kw_only=True):
    device_ids: list[str]
    upserts: list[tuple[str, str, str, str]] = []  # target_type, target_id, slot_key, artefact
    deletes: list[str] = []  # binding ids


class _Slot(msgspec.Struct, frozen=True):
    slot: str
    artefact_id: str


class _Slots(msgspec.Struct, frozen=True):
    configs: list[_Slot]


_slots_decoder = msgspec.json.Decoder(_Slots)


def refuse(field: str, message: str) -> SchemaInvalid:
    return SchemaInvalid(message, details=[{"path": f"$.params.{field}", "message": message}])


# -- an operator's BIND_CONFIG / UNBIND_CONFIG -------------------------------------------------


async def plan_rebind(
    conn: Connection, org_id: str, targets: list[Target], params: BindParams | UnbindParams
) -> Rebind:
    ids = [t.id for t in targets]
    if isinstance(params, BindParams):
        return Rebind(device_ids=ids, upserts=await _bind_targets(conn, org_id, targets, params))
    return Rebind(device_ids=ids, deletes=await _bindings_to_remove(conn, org_id, ids, params))


async def _bind_targets(
    conn: Connection, org_id: str, targets: list[Target], params: BindParams
) -> list[tuple[str, str, str, str]]:
    """The binding each device gets; the artefact must fit every one of them."""
    found = await binding_q.artefact_profile(conn, org_id, params.artefact_id)
    if found is None:
        raise NotFound("config artefact", params.artefact_id)
    profile_id, kind = found.profile_id, found.kind
    artefact, component = params.artefact_id, params.component
    if kind == "device":
        if component is not None:
            raise refuse("component", "this artefact is for a device profile, not a component")
        for t in targets:
            if t.profile_id != profile_id:
                message = f"the artefact is for profile {profile_id}; {t.id} has {t.profile_id}"
                raise refuse("artefact_id", message)
        return [("device", t.id, "device", artefact) for t in targets]
    slot_key, ids = f"sensor:{profile_id}", [t.id for t in targets]
    # Without a component the binding is the device's, for each of its components of that kind.
    kinds_of: dict[str, set[str]] = defaultdict(set)
    for c in await q.components(conn, ids):
        if component in (None, c.name):
            kinds_of[c.device_id].add(c.sensor_profile_id)
    for device_id in ids:
        kinds = kinds_of[device_id]
        if component is not None and not kinds:
            raise refuse("component", f"device {device_id} has no component {component!r}")
        if profile_id not in kinds:
            message = f"no component of {device_id} takes sensor profile {profile_id}"
            raise refuse("artefact_id", message)
    if component is None:
        return [("device", i, slot_key, artefact) for i in ids]
    return [("component", f"{i}/{component}", slot_key, artefact) for i in ids]


async def _bindings_to_remove(
    conn: Connection, org_id: str, device_ids: list[str], params: UnbindParams
) -> list[str]:
    """The device (or component) bindings to delete; every device must have one."""
    if params.artefact_id is None and params.component is None:
        raise refuse("artefact_id", "give artefact_id, component or both")
    if params.component is not None:
        wanted = [f"{i}/{params.component}" for i in device_ids]
        rows = await q.component_bindings(conn, org_id, wanted)
    else:
        rows = await q.artefact_bindings(conn, org_id, params.artefact_id)
    members = set(device_ids)
    doomed: dict[str, list[str]] = defaultdict(list)
    for b in rows:
        device_id = b.target_id.partition("/")[0]
        if device_id in members and params.artefact_id in (None, b.artefact_id):
            doomed[device_id].append(b.id)
    for device_id in device_ids:
        if device_id not in doomed:
            what = params.component if params.artefact_id is None else params.artefact_id
            raise NotFound("binding", f"{what} on device {device_id}")
    return [b for found in doomed.values() for b in found]


async def apply_rebind(
    conn: Connection, org_id: str, rebind: Rebind
) -> list[desired.DesiredChange]:
    seqs = await numbering.next_binding_seqs(conn, len(rebind.upserts))
    now = now_text()
    await q.upsert_bindings(
        conn,
        [
            (new_id(), org_id, *b, seq, now, now)
            for seq, b in zip(seqs, rebind.upserts, strict=True)
        ],
    )
    await q.delete_bindings(conn, rebind.deletes)
    return await resolve_desired(conn, org_id, rebind.device_ids)


# -- tracking ----------------------------------------------------------------------------------


async def resolve_desired(
    conn: Connection, org_id: str, device_ids: Iterable[str]
) -> list[desired.DesiredChange]:
    """Re-resolve these devices' desired documents in the caller's transaction, each change
    tracked by its command; the changed documents, which the outbox delivers after the commit
    (recorded here, so every write that changes a document delivers it, and only if it
    committed)."""
    changes = await desired.resolve(conn, org_id, device_ids, track=track_changes)
    outbox.deliver(changes)
    return changes


async def track_changes(
    conn: Connection, org_id: str, changes: list[desired.DesiredChange]
) -> None:
    """The tracker of `resolve_desired`. Runs before the new documents are written, so the previous
    ones can still be read; a device without one gets its very first document: nothing to track.
    """
    ids = [c.device_id for c in changes]
    before: dict[str, dict[str, str]] = defaultdict(dict)
    for s in await q.desired_slots(conn, ids):
        before[s.device_id][s.slot] = s.artefact_id
    known = await q.with_document(conn, ids)
    tracked = {}
    for change in changes:
        if change.device_id not in known:
            continue
        after = {c.slot: c.artefact_id for c in _slots_decoder.decode(change.document).configs}
        # Unbinding means slots went away and nothing was added or replaced.
        unbind = after.items() < before[change.device_id].items()
        tracked[change.device_id] = (change.version, "UNBIND_CONFIG" if unbind else "BIND_CONFIG")
    await _track(conn, org_id, tracked)


async def _track(conn: Connection, org_id: str, tracked: dict[str, tuple[int, str]]) -> None:
    """Make one open command track each device's version (an operator's command created in this
    transaction, not tracking anything yet, or a new one) and supersede every other open one."""
    open_: dict[str, list[tuple[str, int | None]]] = defaultdict(list)
    for c in await q.open_tracking(conn, list(tracked), TRACKING, OPEN):
        open_[c.device_id].append((c.id, c.tracks_version))
    created_at, timeout_at = created_and_deadline(DEFAULT_TIMEOUT_S)
    inserts: list[tuple[Any, ...]] = []
    attach: list[tuple[int, str]] = []
    supersede: list[tuple[str, str, str]] = []
    for device_id, (version, kind) in tracked.items():
        theirs = open_[device_id]
        mine = next((cid for cid, v in theirs if v is None), None)
        if mine is None:
            mine = new_id()
            params = to_json({"version": version})
            inserts.append((mine, org_id, device_id, None, "desired_state", kind, params, version))
            inserts[-1] += (DEFAULT_TIMEOUT_S, created_at, timeout_at)
        else:
            attach.append((version, mine))
        supersede += [(created_at, f"superseded by {mine}", c) for c, _v in theirs if c != mine]
    await q.insert_commands(conn, inserts)
    await q.attach(conn, attach)
    await q.supersede(conn, supersede, sources(Status.CANCELLED))


async def adopt_unchanged(conn: Connection, org_id: str, command_ids: list[str]) -> None:
    """An operator's BIND/UNBIND that changed nothing tracks the device's current version, and is
    done at once when the device already reported it applied."""
    rows = await q.untracked(conn, command_ids)
    await _track(conn, org_id, {r.device_id: (r.version, r.type) for r in rows})
    for part in sql.chunks([r.id for r in rows]):
        await move(
            conn,
            *q.reported_accepted(part),
            Status.SUCCESS,
            "the device already runs this desired state",
        )


async def converge(
    conn: Connection, device_id: str, version: int, reported: str, message: str | None
) -> list[Brief]:
    """A report on the current desired version moves the command that tracks it: IN_PROGRESS
    acknowledges, ACCEPTED (with the right hashes) succeeds, anything else fails it. `reported`
    is the overall status `reports.apply()` judged, so a hash mismatch arrives as FAILED."""
    row = await q.tracking_command(conn, device_id, version, TRACKING)
    if row is None:
        return []
    effect = await answer(conn, row.id, Status(row.status), _REPORTED[reported], message, "report")
    if effect != "applied":
        return []
    moved = await q.brief(conn, row.id)
    assert moved is not None  # the same write job just moved it
    return [brief(moved)]


async def mark_config_sent(store: Store, device_id: str, version: int) -> list[Brief]:
    """The device PUBACKed desired document `version`: the command tracking it is SENT."""
    if not await store.query(lambda conn: q.pending_tracking(conn, device_id, version, TRACKING)):
        return []  # the common case costs a read, not a write

    async def job(conn: Connection) -> list[Brief]:
        return await move(conn, *q.of_version(device_id, version, TRACKING), Status.SENT, None)

    return await store.write(job)
