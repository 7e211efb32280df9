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

from fleetstate import desired
from fleetstate.clock import now_text
from fleetstate.commands.lifecycle import (
    BRIEF,
    DEFAULT_TIMEOUT_S,
    INSERT,
    OPEN_SQL,
    TRACKING_SQL,
    Brief,
    Status,
    Target,
    answer,
    brief,
    by_chunks,
    created_and_deadline,
    fetch_all,
    fetch_one,
    move,
    sources,
    sql_list,
    to_json,
)
from fleetstate.errors import NotFound, SchemaInvalid
from fleetstate.ids import new_id
from fleetstate.store import Connection, Store

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
    row = await fetch_one(
        conn,
        "SELECT a.profile_id, p.kind FROM config_artefacts a JOIN profiles p ON p.id = a.profile_id"
        " WHERE a.id = ? AND a.org_id = ?",
        (params.artefact_id, org_id),
    )
    if row is None:
        raise NotFound("config artefact", params.artefact_id)
    profile_id, kind = str(row[0]), str(row[1])
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
    sql = "SELECT device_id, name, sensor_profile_id FROM components WHERE device_id IN ({ids})"
    kinds_of: dict[str, set[str]] = defaultdict(set)
    for device_id, name, sensor_profile_id in await by_chunks(conn, sql, ids):
        if component in (None, name):
            kinds_of[device_id].add(sensor_profile_id)
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
        sql = (
            "SELECT id, target_id, artefact_id FROM bindings WHERE org_id = ?"
            " AND target_type = 'component' AND target_id IN ({ids})"
        )
        wanted = [f"{i}/{params.component}" for i in device_ids]
        rows = await by_chunks(conn, sql, wanted, org_id)
    else:
        rows = await fetch_all(
            conn,
            "SELECT id, target_id, artefact_id FROM bindings WHERE org_id = ? AND artefact_id = ?"
            " AND target_type IN ('device', 'component')",
            (org_id, params.artefact_id),
        )
    members = set(device_ids)
    doomed: dict[str, list[str]] = defaultdict(list)
    for binding_id, target_id, artefact_id in rows:
        device_id = target_id.partition("/")[0]
        if device_id in members and params.artefact_id in (None, artefact_id):
            doomed[device_id].append(binding_id)
    for device_id in device_ids:
        if device_id not in doomed:
            what = params.component if params.artefact_id is None else params.artefact_id
            raise NotFound("binding", f"{what} on device {device_id}")
    return [b for found in doomed.values() for b in found]


async def apply_rebind(
    conn: Connection, org_id: str, rebind: Rebind
) -> list[desired.DesiredChange]:
    seq = (await fetch_one(conn, "SELECT coalesce(max(seq), 0) FROM bindings", ()))[0]
    now = now_text()
    await conn.executemany(
        "INSERT INTO bindings (id, org_id, target_type, target_id, slot_key, artefact_id, seq,"
        " created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
        " ON CONFLICT (org_id, target_type, target_id, slot_key) DO UPDATE SET"
        " artefact_id = excluded.artefact_id, seq = excluded.seq, updated_at = excluded.updated_at",
        [(new_id(), org_id, *b, seq + n, now, now) for n, b in enumerate(rebind.upserts, 1)],
    )
    await conn.executemany("DELETE FROM bindings WHERE id = ?", [(b,) for b in rebind.deletes])
    return await resolve_desired(conn, org_id, rebind.device_ids)


# -- tracking ----------------------------------------------------------------------------------


async def resolve_desired(
    conn: Connection, org_id: str, device_ids: Iterable[str]
) -> list[desired.DesiredChange]:
    """Re-resolve these devices' desired documents in the caller's transaction, each change
    tracked by its command; the changed documents, to deliver after the commit."""
    return await desired.resolve(conn, org_id, device_ids, track=track_changes)


async def track_changes(
    conn: Connection, org_id: str, changes: list[desired.DesiredChange]
) -> None:
    """The tracker of `resolve_desired`. Runs before the new documents are written, so the previous
    ones can still be read; a device without one gets its very first document: nothing to track.
    """
    ids = [c.device_id for c in changes]
    sql = "SELECT device_id, slot, artefact_id FROM desired_slots WHERE device_id IN ({ids})"
    before: dict[str, dict[str, str]] = defaultdict(dict)
    for device_id, slot, artefact_id in await by_chunks(conn, sql, ids):
        before[device_id][slot] = artefact_id
    sql = "SELECT device_id FROM desired_documents WHERE device_id IN ({ids})"
    known = {r[0] for r in await by_chunks(conn, sql, ids)}
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
    sql = (
        "SELECT device_id, id, tracks_version FROM commands WHERE device_id IN ({ids})"
        f" AND type IN {TRACKING_SQL} AND status IN {OPEN_SQL} ORDER BY seq"
    )
    open_: dict[str, list[tuple[str, int | None]]] = defaultdict(list)
    for device_id, command_id, version in await by_chunks(conn, sql, list(tracked)):
        open_[device_id].append((command_id, version))
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
    await conn.executemany(INSERT, inserts)
    await conn.executemany("UPDATE commands SET tracks_version = ? WHERE id = ?", attach)
    await conn.executemany(
        "UPDATE commands SET status = 'CANCELLED', finished_at = ?, message = ?"
        f" WHERE id = ? AND status IN {sql_list(sources(Status.CANCELLED))}",
        supersede,
    )


async def adopt_unchanged(conn: Connection, org_id: str, command_ids: list[str]) -> None:
    """An operator's BIND/UNBIND that changed nothing tracks the device's current version, and is
    done at once when the device already reported it applied."""
    sql = (
        "SELECT c.id, c.device_id, dd.version, c.type FROM commands c"
        " JOIN desired_documents dd ON dd.device_id = c.device_id"
        " WHERE c.tracks_version IS NULL AND c.id IN ({ids})"
    )
    rows = await by_chunks(conn, sql, command_ids)
    await _track(conn, org_id, {r[1]: (r[2], r[3]) for r in rows})
    for part in desired.chunks([r[0] for r in rows]):
        await move(
            conn,
            f"id IN ({desired.marks(part)}) AND EXISTS (SELECT 1 FROM device_reports r"
            " WHERE r.device_id = commands.device_id AND r.version = commands.tracks_version"
            " AND r.status = 'ACCEPTED')",
            part,
            Status.SUCCESS,
            "the device already runs this desired state",
        )


async def converge(
    conn: Connection, device_id: str, version: int, reported: str, message: str | None
) -> list[Brief]:
    """A report on the current desired version moves the command that tracks it: IN_PROGRESS
    acknowledges, ACCEPTED (with the right hashes) succeeds, anything else fails it. `reported`
    is the overall status `reports.apply()` judged, so a hash mismatch arrives as FAILED."""
    row = await fetch_one(
        conn,
        f"SELECT id, status FROM commands WHERE device_id = ? AND tracks_version = ?"
        f" AND type IN {TRACKING_SQL} ORDER BY seq DESC LIMIT 1",
        (device_id, version),
    )
    if row is None:
        return []
    effect = await answer(conn, row[0], Status(row[1]), _REPORTED[reported], message, "report")
    if effect != "applied":
        return []
    return [brief(await fetch_one(conn, f"SELECT {BRIEF} FROM commands WHERE id = ?", (row[0],)))]


async def mark_config_sent(store: Store, device_id: str, version: int) -> list[Brief]:
    """The device PUBACKed desired document `version`: the command tracking it is SENT."""
    where = f"device_id = ? AND tracks_version = ? AND type IN {TRACKING_SQL}"
    pending = f"SELECT 1 FROM commands WHERE {where} AND status = 'PENDING'"
    if await store.fetchone(pending, (device_id, version)) is None:
        return []  # the common case costs a read, not a write

    async def job(conn: Connection) -> list[Brief]:
        return await move(conn, where, (device_id, version), Status.SENT, None)

    return await store.write(job)
