"""Devices with components and group memberships, their access keys and presence.

Every change that can alter a device's effective desired state re-resolves it in the same write
job and returns the documents to deliver.
"""

import asyncio
import re
from typing import Any

import msgspec

from fleetstate import audit, commands, credentials, desired
from fleetstate.clock import now_text
from fleetstate.errors import Conflict, Invalid, NotFound
from fleetstate.ids import new_id
from fleetstate.pagination import Page, page_of
from fleetstate.store import Connection, Store, WriteJob

_SEARCHED = ("name", "id", "serial")
_COMPONENT_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


class ComponentSpec(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    name: str
    sensor_profile_id: str


class NewDevice(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    name: str
    profile_id: str
    serial: str | None = None
    groups: list[str] = []
    components: list[ComponentSpec] = []


class DevicePatch(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    name: str | None = None
    groups: list[str] | None = None
    components: list[ComponentSpec] | None = None


class Created(msgspec.Struct, frozen=True, kw_only=True):
    device_id: str
    access_key: str
    changes: list[desired.DesiredChange]


async def _require(
    conn: Connection, sql: str, params: tuple[Any, ...], kind: str, ident: str
) -> None:
    async with conn.execute(sql, params) as cur:
        if await cur.fetchone() is None:
            raise NotFound(kind, ident)


async def _check_profile(conn: Connection, org_id: str, profile_id: str, kind: str) -> None:
    await _require(
        conn,
        "SELECT 1 FROM profiles WHERE id = ? AND org_id = ? AND kind = ?",
        (profile_id, org_id, kind),
        f"{kind} profile",
        profile_id,
    )


async def _check_groups(conn: Connection, org_id: str, groups: list[str]) -> None:
    for group_id in groups:
        await _require(
            conn,
            "SELECT 1 FROM device_groups WHERE id = ? AND org_id = ?",
            (group_id, org_id),
            "device group",
            group_id,
        )


async def _check_components(conn: Connection, org_id: str, components: list[ComponentSpec]) -> None:
    names = [c.name for c in components]
    if len(set(names)) != len(names):
        raise Invalid("component names must be unique per device")
    for component in components:
        if not _COMPONENT_NAME.match(component.name):
            raise Invalid(f"component name {component.name!r}: use 1-64 of A-Z a-z 0-9 _ . -")
        await _check_profile(conn, org_id, component.sensor_profile_id, "sensor")


async def _hash_key(access_key: str) -> str:
    # scrypt releases the GIL: hashing in a thread keeps the event loop serving devices.
    return await asyncio.to_thread(credentials.hash_secret, access_key, credentials.DEVICE_KEY_COST)


async def create(store: Store, org_id: str, new: NewDevice) -> Created:
    if not new.name.strip():
        raise Invalid("name must not be empty")
    device_id, access_key = new_id(), credentials.new_secret()
    key_hash = await _hash_key(access_key)

    async def job(conn: Connection) -> list[desired.DesiredChange]:
        await _check_profile(conn, org_id, new.profile_id, "device")
        await _check_groups(conn, org_id, new.groups)
        await _check_components(conn, org_id, new.components)
        if new.serial is not None:
            async with conn.execute(
                "SELECT 1 FROM devices WHERE profile_id = ? AND serial = ?",
                (new.profile_id, new.serial),
            ) as cur:
                if await cur.fetchone():
                    raise Conflict(f"a device with serial {new.serial!r} exists in this profile")
        await conn.execute(
            "INSERT INTO devices (id, org_id, profile_id, name, serial, key_hash, created_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (device_id, org_id, new.profile_id, new.name, new.serial, key_hash, now_text()),
        )
        await _set_groups(conn, device_id, new.groups)
        await _set_components(conn, device_id, new.components)
        return await commands.resolve_desired(conn, org_id, [device_id])

    changes = await store.write(job)
    return Created(device_id=device_id, access_key=access_key, changes=changes)


async def _set_groups(conn: Connection, device_id: str, groups: list[str]) -> None:
    await conn.execute("DELETE FROM group_members WHERE device_id = ?", (device_id,))
    await conn.executemany(
        "INSERT INTO group_members (group_id, device_id) VALUES (?, ?)",
        [(g, device_id) for g in dict.fromkeys(groups)],
    )


async def _set_components(
    conn: Connection, device_id: str, components: list[ComponentSpec]
) -> None:
    keep = [c.name for c in components]
    # Bindings on components that no longer exist would silently never apply again.
    async with conn.execute("SELECT name FROM components WHERE device_id = ?", (device_id,)) as cur:
        gone = [r[0] async for r in cur if r[0] not in keep]
    await conn.executemany(
        "DELETE FROM bindings WHERE target_type = 'component' AND target_id = ?",
        [(f"{device_id}/{name}",) for name in gone],
    )
    await conn.execute("DELETE FROM components WHERE device_id = ?", (device_id,))
    await conn.executemany(
        "INSERT INTO components (device_id, name, sensor_profile_id) VALUES (?, ?, ?)",
        [(device_id, c.name, c.sensor_profile_id) for c in components],
    )


async def patch(
    store: Store, org_id: str, device_id: str, change: DevicePatch
) -> list[desired.DesiredChange]:
    async def job(conn: Connection) -> list[desired.DesiredChange]:
        await _require_device(conn, org_id, device_id)
        if change.name is not None:
            if not change.name.strip():
                raise Invalid("name must not be empty")
            await conn.execute("UPDATE devices SET name = ? WHERE id = ?", (change.name, device_id))
        if change.groups is not None:
            await _check_groups(conn, org_id, change.groups)
            await _set_groups(conn, device_id, change.groups)
        if change.components is not None:
            await _check_components(conn, org_id, change.components)
            await _set_components(conn, device_id, change.components)
        return await commands.resolve_desired(conn, org_id, [device_id])

    return await store.write(job)


async def _require_device(conn: Connection, org_id: str, device_id: str) -> None:
    await _require(
        conn,
        "SELECT 1 FROM devices WHERE id = ? AND org_id = ?",
        (device_id, org_id),
        "device",
        device_id,
    )


async def delete(store: Store, org_id: str, device_id: str) -> None:
    async def job(conn: Connection) -> None:
        await _require_device(conn, org_id, device_id)
        await conn.execute(
            "DELETE FROM bindings WHERE (target_type = 'device' AND target_id = ?)"
            " OR (target_type = 'component' AND target_id LIKE ? ESCAPE '\\')",
            (device_id, _like_prefix(device_id) + "/%"),
        )
        # A hardware key's limit counts the devices registered with it: this one frees its slot.
        await conn.execute(
            "UPDATE hardware_keys SET used = max(used - 1, 0) WHERE id ="
            " (SELECT hardware_key_id FROM device_details WHERE device_id = ?)",
            (device_id,),
        )
        await conn.execute("DELETE FROM devices WHERE id = ?", (device_id,))

    await store.write(job)


def _like_prefix(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


async def rotate_key(
    store: Store,
    org_id: str,
    device_id: str,
    action: str = audit.KEY_ROTATED,
    detail: dict[str, Any] | None = None,
) -> str:
    """A new access key; the old one fails from now on. Recorded in the device's audit trail.
    The caller also ends the device's MQTT session (the old key proved it)."""
    access_key = credentials.new_secret()
    key_hash = await _hash_key(access_key)

    async def job(conn: Connection) -> None:
        await _require_device(conn, org_id, device_id)
        await conn.execute("UPDATE devices SET key_hash = ? WHERE id = ?", (key_hash, device_id))
        await audit.record(conn, device_id, action, detail or {"by": "operator"})

    await store.write(job)
    return access_key


_DEVICE_SELECT = (
    "SELECT d.id, d.name, d.profile_id, d.serial, d.online, d.last_seen, d.firmware_version,"
    " d.created_at, dd.version AS desired_version, r.version AS reported_version,"
    " r.status AS reported_status, r.message AS reported_message, r.reported_at"
    " FROM devices d LEFT JOIN desired_documents dd ON dd.device_id = d.id"
    " LEFT JOIN device_reports r ON r.device_id = d.id"
)


def _device_row(row: Any) -> dict[str, Any]:
    out = dict(row)
    out["online"] = bool(out["online"])
    out["config_status"] = _convergence(out)
    return out


def _convergence(device: dict[str, Any]) -> str:
    """PENDING until the device reports on the current version, then what it reported."""
    if device["reported_version"] != device["desired_version"] or device["reported_status"] is None:
        return "PENDING"
    return str(device["reported_status"])


async def get(store: Store, org_id: str, device_id: str) -> dict[str, Any]:
    row = await store.fetchone(
        _DEVICE_SELECT + " WHERE d.id = ? AND d.org_id = ?", (device_id, org_id)
    )
    if row is None:
        raise NotFound("device", device_id)
    device = _device_row(row)
    device["components"] = [
        dict(r)
        for r in await store.fetchall(
            "SELECT name, sensor_profile_id FROM components WHERE device_id = ? ORDER BY name",
            (device_id,),
        )
    ]
    device["groups"] = [
        r[0]
        for r in await store.fetchall(
            "SELECT group_id FROM group_members WHERE device_id = ? ORDER BY group_id", (device_id,)
        )
    ]
    return device


async def list_page(store: Store, org_id: str, page: Page, search: str | None) -> dict[str, Any]:
    where, params = "d.org_id = ? AND d.id > ?", [org_id, page.cursor or ""]
    if search:
        where += " AND (" + " OR ".join(f"d.{c} LIKE ? ESCAPE '\\'" for c in _SEARCHED) + ")"
        pattern = f"%{_like_prefix(search)}%"
        params += [pattern, pattern, pattern]
    rows = await store.fetchall(
        _DEVICE_SELECT + f" WHERE {where} ORDER BY d.id LIMIT ?", [*params, page.limit + 1]
    )
    return page_of([_device_row(r) for r in rows], page)


async def key_hash(store: Store, device_id: str) -> str | None:
    row = await store.fetchone("SELECT key_hash FROM devices WHERE id = ?", (device_id,))
    return None if row is None else str(row[0])


def presence_job(device_id: str, *, online: bool) -> "WriteJob[dict[str, Any] | None]":
    """A write recording an MQTT connect or disconnect, timestamped when the broker reported it.
    Returns the presence event (with the device's organization), None for an unknown device.
    `online` in the event is the device's presence from both sources: a device still calling
    over HTTP stays online when its MQTT session ends."""
    seen = now_text()

    async def job(conn: Connection) -> dict[str, Any] | None:
        async with conn.execute(
            "UPDATE devices SET mqtt_online = ?, online = (? OR http_online), last_seen = ?"
            " WHERE id = ? RETURNING org_id, online",
            (int(online), int(online), seen, device_id),
        ) as cur:
            row = await cur.fetchone()
        if row is None:
            return None
        return {"org_id": row[0], "device_id": device_id, "online": bool(row[1]), "last_seen": seen}

    return job


def http_presence_job(device_ids: list[str], *, online: bool) -> "WriteJob[list[dict[str, Any]]]":
    """A write recording that devices started or stopped calling over HTTP. Returns a presence
    event for each device whose overall presence changed (an MQTT session keeps it online)."""
    seen = now_text()

    async def job(conn: Connection) -> list[dict[str, Any]]:
        changed: list[dict[str, Any]] = []
        for part in desired.chunks(device_ids):
            async with conn.execute(
                "UPDATE devices SET http_online = ?, online = (? OR mqtt_online)"
                f" WHERE id IN ({desired.marks(part)}) AND http_online != ?"
                " RETURNING id, org_id, online, mqtt_online",
                (int(online), int(online), *part, int(online)),
            ) as cur:
                rows = await cur.fetchall()
            changed += [
                {"org_id": r[1], "device_id": r[0], "online": bool(r[2]), "last_seen": seen}
                for r in rows
                if not r[3]  # an MQTT session held the device online all along
            ]
        return changed

    return job


async def mark_all_offline(store: Store) -> None:
    """At start nobody is connected yet, whatever the database said when we stopped."""

    async def job(conn: Connection) -> None:
        await conn.execute(
            "UPDATE devices SET online = 0, mqtt_online = 0, http_online = 0"
            " WHERE online = 1 OR mqtt_online = 1 OR http_online = 1"
        )

    await store.write(job)


async def desired_document(store: Store, device_id: str) -> tuple[int, bytes] | None:
    row = await store.fetchone(
        "SELECT version, document FROM desired_documents WHERE device_id = ?", (device_id,)
    )
    return None if row is None else (int(row[0]), bytes(row[1]))
