"""Desired-state bindings: an artefact assigned to a device, component, group or profile.

PUT upserts the binding of a target and slot; every change re-resolves exactly the devices the
target covers, in bulk, in the same transaction.
"""

from collections import Counter
from typing import Any, Literal, get_args

import msgspec

from fleetstate import commands, desired
from fleetstate.clock import now_text
from fleetstate.errors import Invalid, NotFound
from fleetstate.ids import new_id
from fleetstate.pagination import Page, page_of
from fleetstate.store import Connection, Store

TargetType = Literal["device", "component", "device_group", "device_profile", "sensor_profile"]


class BindingSpec(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    target_type: TargetType
    target_id: str
    artefact_id: str
    priority: int = 0


class Upserted(msgspec.Struct, frozen=True, kw_only=True):
    binding_id: str
    created: bool
    changes: list[desired.DesiredChange]


async def _one(conn: Connection, sql: str, params: tuple[Any, ...]) -> Any:
    async with conn.execute(sql, params) as cur:
        return await cur.fetchone()


async def _artefact(conn: Connection, org_id: str, artefact_id: str) -> tuple[str, str]:
    row = await _one(
        conn,
        "SELECT a.profile_id, p.kind FROM config_artefacts a JOIN profiles p ON p.id = a.profile_id"
        " WHERE a.id = ? AND a.org_id = ?",
        (artefact_id, org_id),
    )
    if row is None:
        raise NotFound("config artefact", artefact_id)
    return str(row[0]), str(row[1])


async def _check_target(
    conn: Connection, org_id: str, spec: BindingSpec, profile_id: str, kind: str
) -> None:
    """The target exists in this organization and the artefact's profile fits it."""
    match spec.target_type:
        case "device":
            await _check_device_target(conn, org_id, spec.target_id, profile_id, kind)
        case "component":
            await _check_component_target(conn, org_id, spec.target_id, profile_id, kind)
        case "device_group":
            row = await _one(
                conn,
                "SELECT 1 FROM device_groups WHERE id = ? AND org_id = ?",
                (spec.target_id, org_id),
            )
            if row is None:
                raise NotFound("device group", spec.target_id)
        case "device_profile" | "sensor_profile":
            target_kind = "device" if spec.target_type == "device_profile" else "sensor"
            row = await _one(
                conn,
                "SELECT 1 FROM profiles WHERE id = ? AND org_id = ? AND kind = ?",
                (spec.target_id, org_id, target_kind),
            )
            if row is None:
                raise NotFound(f"{target_kind} profile", spec.target_id)
            if spec.target_id != profile_id:
                raise Invalid(f"the artefact is for profile {profile_id}, not {spec.target_id}")


async def _check_device_target(
    conn: Connection, org_id: str, device_id: str, profile_id: str, kind: str
) -> None:
    row = await _one(
        conn, "SELECT profile_id FROM devices WHERE id = ? AND org_id = ?", (device_id, org_id)
    )
    if row is None:
        raise NotFound("device", device_id)
    if kind == "device" and row[0] != profile_id:
        raise Invalid(f"the artefact is for device profile {profile_id}; the device has {row[0]}")
    if kind == "sensor":
        has = await _one(
            conn,
            "SELECT 1 FROM components WHERE device_id = ? AND sensor_profile_id = ?",
            (device_id, profile_id),
        )
        if has is None:
            raise Invalid(f"the device has no component with sensor profile {profile_id}")


async def _check_component_target(
    conn: Connection, org_id: str, target_id: str, profile_id: str, kind: str
) -> None:
    device_id, sep, name = target_id.partition("/")
    if not sep or not name:
        raise Invalid("a component target_id is '<device_id>/<component name>'")
    row = await _one(
        conn,
        "SELECT c.sensor_profile_id FROM components c JOIN devices d ON d.id = c.device_id"
        " WHERE d.id = ? AND d.org_id = ? AND c.name = ?",
        (device_id, org_id, name),
    )
    if row is None:
        raise NotFound("component", target_id)
    if kind != "sensor" or row[0] != profile_id:
        raise Invalid(f"the component takes artefacts of sensor profile {row[0]}")


async def affected_devices(conn: Connection, target_type: str, target_id: str) -> list[str]:
    queries = {
        "device_group": "SELECT device_id FROM group_members WHERE group_id = ?",
        "device_profile": "SELECT id FROM devices WHERE profile_id = ?",
        "sensor_profile": "SELECT DISTINCT device_id FROM components WHERE sensor_profile_id = ?",
    }
    if target_type in queries:
        async with conn.execute(queries[target_type], (target_id,)) as cur:
            return [r[0] async for r in cur]
    return [target_id.partition("/")[0]]


async def upsert(store: Store, org_id: str, spec: BindingSpec) -> Upserted:
    async def job(conn: Connection) -> Upserted:
        profile_id, kind = await _artefact(conn, org_id, spec.artefact_id)
        await _check_target(conn, org_id, spec, profile_id, kind)
        slot_key = "device" if kind == "device" else f"sensor:{profile_id}"
        seq_row = await _one(conn, "SELECT coalesce(max(seq), 0) + 1 FROM bindings", ())
        existing = await _one(
            conn,
            "SELECT id FROM bindings WHERE org_id = ? AND target_type = ? AND target_id = ?"
            " AND slot_key = ?",
            (org_id, spec.target_type, spec.target_id, slot_key),
        )
        now = now_text()
        if existing:
            binding_id = str(existing[0])
            await conn.execute(
                "UPDATE bindings SET artefact_id = ?, priority = ?, seq = ?, updated_at = ?"
                " WHERE id = ?",
                (spec.artefact_id, spec.priority, seq_row[0], now, binding_id),
            )
        else:
            binding_id = new_id()
            await conn.execute(
                "INSERT INTO bindings (id, org_id, target_type, target_id, slot_key, artefact_id,"
                " priority, seq, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    binding_id,
                    org_id,
                    spec.target_type,
                    spec.target_id,
                    slot_key,
                    spec.artefact_id,
                    spec.priority,
                    seq_row[0],
                    now,
                    now,
                ),
            )
        devices = await affected_devices(conn, spec.target_type, spec.target_id)
        changes = await commands.resolve_desired(conn, org_id, devices)
        return Upserted(binding_id=binding_id, created=existing is None, changes=changes)

    return await store.write(job)


async def delete(store: Store, org_id: str, binding_id: str) -> list[desired.DesiredChange]:
    async def job(conn: Connection) -> list[desired.DesiredChange]:
        row = await _one(
            conn,
            "SELECT target_type, target_id FROM bindings WHERE id = ? AND org_id = ?",
            (binding_id, org_id),
        )
        if row is None:
            raise NotFound("binding", binding_id)
        await conn.execute("DELETE FROM bindings WHERE id = ?", (binding_id,))
        devices = await affected_devices(conn, row[0], row[1])
        return await commands.resolve_desired(conn, org_id, devices)

    return await store.write(job)


_TARGET_EXISTS = {
    "device": "SELECT 1 FROM devices WHERE id = ? AND org_id = ?",
    "device_group": "SELECT 1 FROM device_groups WHERE id = ? AND org_id = ?",
    "device_profile": "SELECT 1 FROM profiles WHERE id = ? AND org_id = ? AND kind = 'device'",
    "sensor_profile": "SELECT 1 FROM profiles WHERE id = ? AND org_id = ? AND kind = 'sensor'",
}


async def _target_exists(conn: Connection, org_id: str, target_type: str, target_id: str) -> bool:
    if target_type == "component":
        device_id, _, name = target_id.partition("/")
        row = await _one(
            conn,
            "SELECT 1 FROM components c JOIN devices d ON d.id = c.device_id"
            " WHERE d.id = ? AND d.org_id = ? AND c.name = ?",
            (device_id, org_id, name),
        )
    else:
        row = await _one(conn, _TARGET_EXISTS[target_type], (target_id, org_id))
    return row is not None


async def delete_target(
    store: Store, org_id: str, target_type: str, target_id: str
) -> list[desired.DesiredChange]:
    """Delete every binding of one target of the organization, in one transaction. NotFound
    when the organization has neither such a target nor bindings of it (another org's target
    included); a target of its own without bindings is nothing to do."""
    if target_type not in get_args(TargetType):
        raise Invalid(f"target_type must be one of {', '.join(get_args(TargetType))}")

    async def job(conn: Connection) -> list[desired.DesiredChange]:
        async with conn.execute(
            "SELECT id FROM bindings WHERE org_id = ? AND target_type = ? AND target_id = ?",
            (org_id, target_type, target_id),
        ) as cur:
            found = [str(r[0]) async for r in cur]
        if not found:
            if not await _target_exists(conn, org_id, target_type, target_id):
                raise NotFound(target_type.replace("_", " "), target_id)
            return []
        await conn.executemany("DELETE FROM bindings WHERE id = ?", [(i,) for i in found])
        devices = await affected_devices(conn, target_type, target_id)
        return await commands.resolve_desired(conn, org_id, devices)

    return await store.write(job)


_SELECT = (
    "SELECT b.id, b.target_type, b.target_id, b.artefact_id, b.priority, b.created_at,"
    " b.updated_at, a.name AS artefact_name, a.version AS artefact_version, a.hash AS desired_hash"
    " FROM bindings b JOIN config_artefacts a ON a.id = b.artefact_id"
)


# The BIND_CONFIG/UNBIND_CONFIG command tracking the device's current desired version (the newest,
# should an operator's re-bind that changed nothing have superseded an older one).
_TRACKING_COMMAND = (
    "SELECT c.seq FROM commands c WHERE c.device_id = s.device_id"
    " AND c.tracks_version = dd.version AND c.type IN ('BIND_CONFIG', 'UNBIND_CONFIG')"
    " ORDER BY c.seq DESC LIMIT 1"
)


async def _device_status(store: Store, binding_id: str) -> list[dict[str, Any]]:
    rows = await store.fetchall(
        "SELECT s.device_id, s.slot, dd.version AS desired_version, r.version, r.status, r.hash,"
        " r.message, r.reported_at, c.id AS command_id, c.status AS command_status"
        " FROM desired_slots s"
        " JOIN desired_documents dd ON dd.device_id = s.device_id"
        " LEFT JOIN slot_reports r ON r.device_id = s.device_id AND r.slot = s.slot"
        f" LEFT JOIN commands c ON c.seq = ({_TRACKING_COMMAND})"
        " WHERE s.binding_id = ? ORDER BY s.device_id, s.slot",
        (binding_id,),
    )
    out = []
    for r in rows:
        current = r["version"] is not None and r["version"] == r["desired_version"]
        row = dict(r)
        command_id, command_status = row.pop("command_id"), row.pop("command_status")
        command = {"id": command_id, "status": command_status} if command_id else None
        out.append({**row, "status": r["status"] if current else "PENDING", "command": command})
    return out


def _summary(row: Any, devices: list[dict[str, Any]]) -> dict[str, Any]:
    counts = Counter(d["status"] for d in devices)
    return {**dict(row), "device_count": len(devices), "counts": dict(sorted(counts.items()))}


async def get(store: Store, org_id: str, binding_id: str) -> dict[str, Any]:
    row = await store.fetchone(_SELECT + " WHERE b.id = ? AND b.org_id = ?", (binding_id, org_id))
    if row is None:
        raise NotFound("binding", binding_id)
    devices = await _device_status(store, binding_id)
    return {**_summary(row, devices), "devices": devices}


async def list_page(
    store: Store, org_id: str, page: Page, target: tuple[str | None, str | None] | None
) -> dict[str, Any]:
    """Bindings in id order, of one target type and/or one target id when given."""
    where, params = "b.org_id = ? AND b.id > ?", [org_id, page.cursor or ""]
    for column, value in zip(("target_type", "target_id"), target or (None, None), strict=True):
        if value is not None:
            where += f" AND b.{column} = ?"
            params.append(value)
    rows = await store.fetchall(
        _SELECT + f" WHERE {where} ORDER BY b.id LIMIT ?", [*params, page.limit + 1]
    )
    items = [_summary(r, await _device_status(store, r["id"])) for r in rows]
    return page_of(items, page)


async def resolution(store: Store, org_id: str, device_id: str) -> dict[str, Any]:
    """The effective document and, per slot, every candidate and why the winner won."""
    row = await store.fetchone(
        "SELECT d.id, dd.document FROM devices d LEFT JOIN desired_documents dd"
        " ON dd.device_id = d.id WHERE d.id = ? AND d.org_id = ?",
        (device_id, org_id),
    )
    if row is None:
        raise NotFound("device", device_id)

    async def read(conn: Connection) -> list[dict[str, Any]]:
        index = await desired.load_bindings(conn, org_id)
        facts = await desired.load_facts(conn, [device_id])
        return desired.explain(facts[0], index) if facts else []

    slots = await store.read(read)
    return {"device_id": device_id, "document": msgspec.json.decode(row[1]), "slots": slots}
