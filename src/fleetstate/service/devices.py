"""Devices with components and group memberships, their access keys and presence.

Every change that can alter a device's effective desired state re-resolves it in the same write
job and returns the documents to deliver.
"""

import re
from typing import Annotated, Any

import msgspec

from fleetstate.domain.clock import now_text
from fleetstate.domain.ids import new_id
from fleetstate.domain.names import Name
from fleetstate.domain.pagination import Page, page_of
from fleetstate.errors import Conflict, Invalid, NotFound
from fleetstate.service import audit, commands, credentials, desired, outbox
from fleetstate.store import Connection, Store, WriteJob
from fleetstate.store.queries import bindings as bindings_q
from fleetstate.store.queries import devices as q
from fleetstate.store.queries import sql

_COMPONENT_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


class ComponentSpec(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    name: Annotated[str, msgspec.Meta(pattern=_COMPONENT_NAME.pattern)]
    sensor_profile_id: str


class NewDevice(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    name: Name
    profile_id: str
    serial: str | None = None
    groups: list[str] = []
    components: list[ComponentSpec] = []


class DevicePatch(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    name: Name | None = None
    groups: list[str] | None = None
    components: list[ComponentSpec] | None = None


class Created(msgspec.Struct, frozen=True, kw_only=True):
    device_id: str
    access_key: str
    changes: list[desired.DesiredChange]


async def _check_profile(conn: Connection, org_id: str, profile_id: str, kind: str) -> None:
    if not await bindings_q.profile_exists(conn, org_id, profile_id, kind):
        raise NotFound(f"{kind} profile", profile_id)


async def _check_groups(conn: Connection, org_id: str, groups: list[str]) -> None:
    for group_id in groups:
        if not await sql.exists(conn, "device_groups", org_id, group_id):
            raise NotFound("device group", group_id)


async def _check_components(conn: Connection, org_id: str, components: list[ComponentSpec]) -> None:
    names = [c.name for c in components]
    if len(set(names)) != len(names):
        raise Invalid("component names must be unique per device")
    for component in components:
        if not _COMPONENT_NAME.match(component.name):
            raise Invalid(f"component name {component.name!r}: use 1-64 of A-Z a-z 0-9 _ . -")
        await _check_profile(conn, org_id, component.sensor_profile_id, "sensor")


async def create(store: Store, org_id: str, new: NewDevice) -> Created:
    if not new.name.strip():
        raise Invalid("name must not be empty")
    device_id, access_key = new_id(), credentials.new_secret()
    key_hash = credentials.hash_generated(access_key)

    async def job(conn: Connection) -> list[desired.DesiredChange]:
        await _check_profile(conn, org_id, new.profile_id, "device")
        await _check_groups(conn, org_id, new.groups)
        await _check_components(conn, org_id, new.components)
        if new.serial is not None and await q.serial_taken(conn, new.profile_id, new.serial):
            raise Conflict(f"a device with serial {new.serial!r} exists in this profile")
        await q.insert(
            conn, org_id, device_id, new.profile_id, new.name, new.serial, key_hash, now_text()
        )
        await _set_groups(conn, device_id, new.groups)
        await _set_components(conn, device_id, new.components)
        return await commands.resolve_desired(conn, org_id, [device_id])

    changes = await store.write(job)
    return Created(device_id=device_id, access_key=access_key, changes=changes)


async def _set_groups(conn: Connection, device_id: str, groups: list[str]) -> None:
    await q.set_groups(conn, device_id, list(dict.fromkeys(groups)))


async def _set_components(
    conn: Connection, device_id: str, components: list[ComponentSpec]
) -> None:
    keep = [c.name for c in components]
    # Bindings on components that no longer exist would silently never apply again.
    gone = [name for name in await q.component_names(conn, device_id) if name not in keep]
    await q.unbind_components(conn, device_id, gone)
    rows = [q.ComponentRow(c.name, c.sensor_profile_id) for c in components]
    await q.set_components(conn, device_id, rows)


async def patch(
    store: Store, org_id: str, device_id: str, change: DevicePatch
) -> list[desired.DesiredChange]:
    async def job(conn: Connection) -> list[desired.DesiredChange]:
        await _require_device(conn, org_id, device_id)
        if change.name is not None:
            if not change.name.strip():
                raise Invalid("name must not be empty")
            await q.rename(conn, device_id, change.name)
        if change.groups is not None:
            await _check_groups(conn, org_id, change.groups)
            await _set_groups(conn, device_id, change.groups)
        if change.components is not None:
            await _check_components(conn, org_id, change.components)
            await _set_components(conn, device_id, change.components)
        return await commands.resolve_desired(conn, org_id, [device_id])

    return await store.write(job)


async def _require_device(conn: Connection, org_id: str, device_id: str) -> None:
    if not await sql.exists(conn, "devices", org_id, device_id):
        raise NotFound("device", device_id)


async def delete(store: Store, org_id: str, device_id: str) -> None:
    async def job(conn: Connection) -> None:
        await _require_device(conn, org_id, device_id)
        await q.delete(conn, device_id)
        outbox.disconnect(device_id)  # a deleted device's session ends before the answer

    await store.write(job)


async def rotate_key(
    store: Store,
    org_id: str,
    device_id: str,
    action: str = audit.KEY_ROTATED,
    detail: dict[str, Any] | None = None,
) -> str:
    """A new access key; the old one fails from now on. Recorded in the device's audit trail;
    the device's MQTT session (the old key proved it) ends before this returns."""
    access_key = credentials.new_secret()
    key_hash = credentials.hash_generated(access_key)

    await store.write(lambda conn: replace_key(conn, org_id, device_id, key_hash, action, detail))
    return access_key


async def replace_key(
    conn: Connection,
    org_id: str,
    device_id: str,
    key_hash: str,
    action: str = audit.KEY_ROTATED,
    detail: dict[str, Any] | None = None,
) -> None:
    """In a write job: the device's new key hash, in its audit trail; its MQTT session (the old
    key proved it) ends once the job committed, before the job's caller resumes."""
    await _require_device(conn, org_id, device_id)
    await q.set_key_hash(conn, device_id, key_hash)
    await audit.record(conn, device_id, action, detail or {"by": "operator"})
    outbox.disconnect(device_id)


def _device_row(row: q.DeviceRow) -> dict[str, Any]:
    out = msgspec.structs.asdict(row)
    out["online"] = bool(out["online"])
    out["config_status"] = _convergence(out)
    return out


def _convergence(device: dict[str, Any]) -> str:
    """PENDING until the device reports on the current version, then what it reported."""
    if device["reported_version"] != device["desired_version"] or device["reported_status"] is None:
        return "PENDING"
    return str(device["reported_status"])


async def get(store: Store, org_id: str, device_id: str) -> dict[str, Any]:
    async def read(conn: Connection) -> dict[str, Any] | None:
        row = await q.get(conn, org_id, device_id)
        if row is None:
            return None
        device = _device_row(row)
        components = await q.components(conn, device_id)
        device["components"] = [msgspec.structs.asdict(c) for c in components]
        device["groups"] = await q.groups(conn, device_id)
        return device

    device = await store.query(read)
    if device is None:
        raise NotFound("device", device_id)
    return device


CONFIG_STATUSES = ("PENDING", "IN_PROGRESS", "ACCEPTED", "REJECTED", "FAILED")
# `_convergence` is also written in SQL (`q.CONFIG_STATUS`), so a filter on it pages like any other.


class DeviceFilter(msgspec.Struct, frozen=True, kw_only=True):
    """What a device list may be narrowed to; every given condition must hold."""

    online: bool | None = None
    config_status: str | None = None
    profile_id: str | None = None
    group_id: str | None = None


def _filter_of(search: str | None, wanted: DeviceFilter) -> q.Filter:
    if wanted.config_status is not None and wanted.config_status not in CONFIG_STATUSES:
        raise Invalid(f"config_status must be one of {', '.join(CONFIG_STATUSES)}")
    return q.Filter(
        search=search,
        online=wanted.online,
        config_status=wanted.config_status,
        profile_id=wanted.profile_id,
        group_id=wanted.group_id,
    )


async def list_page(
    store: Store,
    org_id: str,
    page: Page,
    search: str | None,
    wanted: DeviceFilter | None = None,
) -> dict[str, Any]:
    """Devices in id order; `search` is a substring of the name, id or serial."""
    filtered = _filter_of(search, wanted or DeviceFilter())
    rows = await store.query(
        lambda conn: q.page(conn, org_id, page.cursor or "", page.limit + 1, filtered)
    )
    return page_of([_device_row(r) for r in rows], page)


async def key_hash(store: Store, device_id: str) -> str | None:
    return await store.query(lambda conn: q.key_hash(conn, device_id))


def presence_job(device_id: str, *, online: bool) -> "WriteJob[dict[str, Any] | None]":
    """A write recording an MQTT connect or disconnect, timestamped when the broker reported it.
    Returns the presence event (with the device's organization), None for an unknown device.
    `online` in the event is the device's presence from both sources: a device still calling
    over HTTP stays online when its MQTT session ends."""
    seen = now_text()

    async def job(conn: Connection) -> dict[str, Any] | None:
        row = await q.set_mqtt_presence(conn, device_id, online, seen)
        if row is None:
            return None
        return {
            "org_id": row.org_id,
            "device_id": device_id,
            "online": bool(row.online),
            "last_seen": seen,
        }

    return job


def http_presence_job(device_ids: list[str], *, online: bool) -> "WriteJob[list[dict[str, Any]]]":
    """A write recording that devices started or stopped calling over HTTP. Returns a presence
    event for each device whose overall presence changed (an MQTT session keeps it online)."""
    seen = now_text()

    async def job(conn: Connection) -> list[dict[str, Any]]:
        rows = await q.set_http_presence(conn, device_ids, online)
        return [
            {"org_id": r.org_id, "device_id": r.id, "online": bool(r.online), "last_seen": seen}
            for r in rows
            if not r.mqtt_online  # an MQTT session held the device online all along
        ]

    return job


async def mark_all_offline(store: Store) -> None:
    """At start nobody is connected yet, whatever the database said when we stopped."""

    async def job(conn: Connection) -> None:
        await q.mark_all_offline(conn)

    await store.write(job)


async def desired_document(store: Store, device_id: str) -> tuple[int, bytes] | None:
    row = await store.query(lambda conn: q.desired_document(conn, device_id))
    return None if row is None else (int(row.version), bytes(row.document))
