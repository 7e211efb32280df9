"""Desired-state bindings: an artefact assigned to a device, component, group or profile.

PUT upserts the binding of a target and slot; every change re-resolves exactly the devices the
target covers, in bulk, in the same transaction.
"""

from collections import Counter
from typing import Any, Literal, get_args

import msgspec

from fleetstate.domain.clock import now_text
from fleetstate.domain.ids import new_id
from fleetstate.domain.pagination import Page, page_of
from fleetstate.errors import Invalid, NotFound
from fleetstate.service import commands, desired
from fleetstate.store import Connection, Store
from fleetstate.store.queries import bindings as q
from fleetstate.store.queries import numbering, sql

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


async def _artefact(conn: Connection, org_id: str, artefact_id: str) -> tuple[str, str]:
    found = await q.artefact_profile(conn, org_id, artefact_id)
    if found is None:
        raise NotFound("config artefact", artefact_id)
    return found.profile_id, found.kind


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
            if not await sql.exists(conn, "device_groups", org_id, spec.target_id):
                raise NotFound("device group", spec.target_id)
        case "device_profile" | "sensor_profile":
            target_kind = "device" if spec.target_type == "device_profile" else "sensor"
            if not await q.profile_exists(conn, org_id, spec.target_id, target_kind):
                raise NotFound(f"{target_kind} profile", spec.target_id)
            if spec.target_id != profile_id:
                raise Invalid(f"the artefact is for profile {profile_id}, not {spec.target_id}")


async def _check_device_target(
    conn: Connection, org_id: str, device_id: str, profile_id: str, kind: str
) -> None:
    found = await q.device_profile(conn, org_id, device_id)
    if found is None:
        raise NotFound("device", device_id)
    (has_profile,) = found
    if kind == "device" and has_profile != profile_id:
        raise Invalid(
            f"the artefact is for device profile {profile_id}; the device has {has_profile}"
        )
    if kind == "sensor" and not await q.has_sensor(conn, device_id, profile_id):
        raise Invalid(f"the device has no component with sensor profile {profile_id}")


async def _check_component_target(
    conn: Connection, org_id: str, target_id: str, profile_id: str, kind: str
) -> None:
    device_id, sep, name = target_id.partition("/")
    if not sep or not name:
        raise Invalid("a component target_id is '<device_id>/<component name>'")
    found = await q.component_profile(conn, org_id, device_id, name)
    if found is None:
        raise NotFound("component", target_id)
    if kind != "sensor" or found[0] != profile_id:
        raise Invalid(f"the component takes artefacts of sensor profile {found[0]}")


async def affected_devices(conn: Connection, target_type: str, target_id: str) -> list[str]:
    covered = await q.covered_devices(conn, target_type, target_id)
    return [target_id.partition("/")[0]] if covered is None else covered


async def upsert(store: Store, org_id: str, spec: BindingSpec) -> Upserted:
    async def job(conn: Connection) -> Upserted:
        profile_id, kind = await _artefact(conn, org_id, spec.artefact_id)
        await _check_target(conn, org_id, spec, profile_id, kind)
        slot_key = "device" if kind == "device" else f"sensor:{profile_id}"
        seq = await numbering.next_binding_seq(conn)
        existing = await q.of_slot(conn, org_id, spec.target_type, spec.target_id, slot_key)
        now = now_text()
        if existing:
            binding_id = existing
            await q.rebind(conn, binding_id, spec.artefact_id, spec.priority, seq, now)
        else:
            binding_id = new_id()
            await q.insert(
                conn,
                q.NewBinding(
                    id=binding_id,
                    org_id=org_id,
                    target_type=spec.target_type,
                    target_id=spec.target_id,
                    slot_key=slot_key,
                    artefact_id=spec.artefact_id,
                    priority=spec.priority,
                    seq=seq,
                    created_at=now,
                    updated_at=now,
                ),
            )
        devices = await affected_devices(conn, spec.target_type, spec.target_id)
        changes = await commands.resolve_desired(conn, org_id, devices)
        return Upserted(binding_id=binding_id, created=existing is None, changes=changes)

    return await store.write(job)


async def delete(store: Store, org_id: str, binding_id: str) -> list[desired.DesiredChange]:
    async def job(conn: Connection) -> list[desired.DesiredChange]:
        target = await q.target(conn, org_id, binding_id)
        if target is None:
            raise NotFound("binding", binding_id)
        await q.delete(conn, [binding_id])
        devices = await affected_devices(conn, target.target_type, target.target_id)
        return await commands.resolve_desired(conn, org_id, devices)

    return await store.write(job)


async def _target_exists(conn: Connection, org_id: str, target_type: str, target_id: str) -> bool:
    match target_type:
        case "component":
            device_id, _, name = target_id.partition("/")
            return await q.component_profile(conn, org_id, device_id, name) is not None
        case "device":
            return await sql.exists(conn, "devices", org_id, target_id)
        case "device_group":
            return await sql.exists(conn, "device_groups", org_id, target_id)
        case _:
            kind = "device" if target_type == "device_profile" else "sensor"
            return await q.profile_exists(conn, org_id, target_id, kind)


async def delete_target(
    store: Store, org_id: str, target_type: str, target_id: str
) -> list[desired.DesiredChange]:
    """Delete every binding of one target of the organization, in one transaction. NotFound
    when the organization has neither such a target nor bindings of it (another org's target
    included); a target of its own without bindings is nothing to do."""
    if target_type not in get_args(TargetType):
        raise Invalid(f"target_type must be one of {', '.join(get_args(TargetType))}")

    async def job(conn: Connection) -> list[desired.DesiredChange]:
        found = await q.of_target(conn, org_id, target_type, target_id)
        if not found:
            if not await _target_exists(conn, org_id, target_type, target_id):
                raise NotFound(target_type.replace("_", " "), target_id)
            return []
        await q.delete(conn, found)
        devices = await affected_devices(conn, target_type, target_id)
        return await commands.resolve_desired(conn, org_id, devices)

    return await store.write(job)


def _device_status(slots: list[q.SlotStatus]) -> list[dict[str, Any]]:
    out = []
    for slot in slots:
        current = slot.version is not None and slot.version == slot.desired_version
        row: dict[str, Any] = msgspec.structs.asdict(slot)
        command_id, command_status = row.pop("command_id"), row.pop("command_status")
        command = {"id": command_id, "status": command_status} if command_id else None
        out.append({**row, "status": slot.status if current else "PENDING", "command": command})
    return out


def _summary(row: q.BindingRow, devices: list[dict[str, Any]]) -> dict[str, Any]:
    counts = Counter(d["status"] for d in devices)
    return {
        **msgspec.structs.asdict(row),
        "device_count": len(devices),
        "counts": dict(sorted(counts.items())),
    }


async def get(store: Store, org_id: str, binding_id: str) -> dict[str, Any]:
    async def read(conn: Connection) -> tuple[q.BindingRow, list[q.SlotStatus]] | None:
        row = await q.get(conn, org_id, binding_id)
        return None if row is None else (row, await q.slots(conn, binding_id))

    found = await store.query(read)
    if found is None:
        raise NotFound("binding", binding_id)
    devices = _device_status(found[1])
    return {**_summary(found[0], devices), "devices": devices}


async def list_page(
    store: Store, org_id: str, page: Page, target: tuple[str | None, str | None] | None
) -> dict[str, Any]:
    """Bindings in id order, of one target type and/or one target id when given."""
    after = page.cursor or ""

    async def read(conn: Connection) -> list[tuple[q.BindingRow, list[q.SlotStatus]]]:
        rows = await q.page(conn, org_id, after, page.limit + 1, target)
        return [(r, await q.slots(conn, r.id)) for r in rows]

    items = [_summary(r, _device_status(slots)) for r, slots in await store.query(read)]
    return page_of(items, page)


async def resolution(store: Store, org_id: str, device_id: str) -> dict[str, Any]:
    """The effective document and, per slot, every candidate and why the winner won."""
    row = await store.query(lambda conn: q.device_document(conn, org_id, device_id))
    if row is None:
        raise NotFound("device", device_id)

    async def read(conn: Connection) -> list[dict[str, Any]]:
        index = await desired.load_bindings(conn, org_id)
        facts = await desired.load_facts(conn, [device_id])
        return desired.explain(facts[0], index) if facts else []

    slots = await store.read(read)
    return {
        "device_id": device_id,
        "document": msgspec.json.decode(row.document or b"null"),
        "slots": slots,
    }
