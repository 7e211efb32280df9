"""Devices: identity, components, group memberships, access keys and presence."""

from collections.abc import Sequence
from typing import Any

import msgspec

from fleetstate.store.connection import Connection
from fleetstate.store.queries import sql


async def first_missing(conn: Connection, org_id: str, device_ids: Sequence[str]) -> str | None:
    """The first of `device_ids` (in their order) that is not a device of the organization."""
    for part in sql.chunks(device_ids):
        statement = f"SELECT id FROM devices WHERE org_id = ? AND {sql.in_list('id', part)}"
        found = set(await sql.fetch_column(conn, statement, (org_id, *part)))
        for device_id in part:
            if device_id not in found:
                return device_id
    return None


class DeviceRow(msgspec.Struct, frozen=True):
    id: str
    name: str
    profile_id: str
    serial: str | None
    online: int
    last_seen: str | None
    firmware_version: str | None
    created_at: str
    desired_version: int | None
    reported_version: int | None
    reported_status: str | None
    reported_message: str | None
    reported_at: str | None


class ComponentRow(msgspec.Struct, frozen=True):
    name: str
    sensor_profile_id: str


class Presence(msgspec.Struct, frozen=True):
    org_id: str
    online: int


class HttpPresence(msgspec.Struct, frozen=True):
    id: str
    org_id: str
    online: int
    mqtt_online: int


class Document(msgspec.Struct, frozen=True):
    version: int
    document: bytes


_SERIAL_TAKEN = "SELECT 1 FROM devices WHERE profile_id = ? AND serial = ?"
_INSERT = (
    "INSERT INTO devices (id, org_id, profile_id, name, serial, key_hash, created_at)"
    " VALUES (?, ?, ?, ?, ?, ?, ?)"
)
_CLEAR_GROUPS = "DELETE FROM group_members WHERE device_id = ?"
_ADD_GROUP = "INSERT INTO group_members (group_id, device_id) VALUES (?, ?)"
_COMPONENT_NAMES = "SELECT name FROM components WHERE device_id = ?"
_UNBIND_COMPONENT = "DELETE FROM bindings WHERE target_type = 'component' AND target_id = ?"
_CLEAR_COMPONENTS = "DELETE FROM components WHERE device_id = ?"
_ADD_COMPONENT = "INSERT INTO components (device_id, name, sensor_profile_id) VALUES (?, ?, ?)"
_RENAME = "UPDATE devices SET name = ? WHERE id = ?"
_UNBIND_ALL = (
    "DELETE FROM bindings WHERE (target_type = 'device' AND target_id = ?)"
    " OR (target_type = 'component' AND target_id LIKE ? ESCAPE '\\')"
)
# A hardware key's limit counts the devices registered with it: a deleted one frees its slot.
_FREE_HARDWARE_KEY = (
    f"UPDATE hardware_keys SET used = {sql.greatest('used - 1', '0')} WHERE id ="
    " (SELECT hardware_key_id FROM device_details WHERE device_id = ?)"
)
_DELETE = "DELETE FROM devices WHERE id = ?"
_SET_KEY = "UPDATE devices SET key_hash = ? WHERE id = ?"
_SELECT = (
    "SELECT d.id, d.name, d.profile_id, d.serial, d.online, d.last_seen, d.firmware_version,"
    " d.created_at, dd.version AS desired_version, r.version AS reported_version,"
    " r.status AS reported_status, r.message AS reported_message, r.reported_at"
    " FROM devices d LEFT JOIN desired_documents dd ON dd.device_id = d.id"
    " LEFT JOIN device_reports r ON r.device_id = d.id"
)
_GET = _SELECT + " WHERE d.id = ? AND d.org_id = ?"
_COMPONENTS = (
    f"SELECT {sql.columns(ComponentRow)} FROM components WHERE device_id = ? ORDER BY name"
)
_GROUPS = "SELECT group_id FROM group_members WHERE device_id = ? ORDER BY group_id"
# A device's convergence in SQL, so a filter on it pages like any other (NULL matches NULL).
CONFIG_STATUS = (
    f"CASE WHEN {sql.same('r.version', 'dd.version')} AND r.status IS NOT NULL"
    " THEN r.status ELSE 'PENDING' END"
)
_SEARCHED = ("name", "id", "serial")
_KNOWN = "SELECT 1 FROM devices WHERE id = ?"
_KEY_HASH = "SELECT key_hash FROM devices WHERE id = ?"
_MQTT_PRESENCE = (
    "UPDATE devices SET mqtt_online = ?, online = (? OR http_online), last_seen = ?"
    " WHERE id = ? RETURNING org_id, online"
)
_HTTP_PRESENCE = (
    "UPDATE devices SET http_online = ?, online = (? OR mqtt_online)"
    " WHERE id IN ({ids}) AND http_online != ? RETURNING id, org_id, online, mqtt_online"
)
_ALL_OFFLINE = (
    "UPDATE devices SET online = 0, mqtt_online = 0, http_online = 0"
    " WHERE online = 1 OR mqtt_online = 1 OR http_online = 1"
)
_DOCUMENT = f"SELECT {sql.columns(Document)} FROM desired_documents WHERE device_id = ?"


def like_escaped(text: str) -> str:
    """`text` with LIKE's wildcards escaped (for `LIKE ? ESCAPE '\\'`)."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


async def serial_taken(conn: Connection, profile_id: str, serial: str) -> bool:
    return await sql.found(conn, _SERIAL_TAKEN, (profile_id, serial))


async def insert(
    conn: Connection,
    org_id: str,
    device_id: str,
    profile_id: str,
    name: str,
    serial: str | None,
    key_hash: str,
    created_at: str,
) -> None:
    params = (device_id, org_id, profile_id, name, serial, key_hash, created_at)
    await conn.execute(_INSERT, params)


async def set_groups(conn: Connection, device_id: str, group_ids: Sequence[str]) -> None:
    await conn.execute(_CLEAR_GROUPS, (device_id,))
    await conn.executemany(_ADD_GROUP, [(g, device_id) for g in group_ids])


async def component_names(conn: Connection, device_id: str) -> list[str]:
    return await sql.fetch_column(conn, _COMPONENT_NAMES, (device_id,))


async def unbind_components(conn: Connection, device_id: str, names: Sequence[str]) -> None:
    await conn.executemany(_UNBIND_COMPONENT, [(f"{device_id}/{name}",) for name in names])


async def set_components(
    conn: Connection, device_id: str, components: Sequence[ComponentRow]
) -> None:
    await conn.execute(_CLEAR_COMPONENTS, (device_id,))
    await conn.executemany(
        _ADD_COMPONENT, [(device_id, c.name, c.sensor_profile_id) for c in components]
    )


async def rename(conn: Connection, device_id: str, name: str) -> None:
    await conn.execute(_RENAME, (name, device_id))


async def delete(conn: Connection, device_id: str) -> None:
    """Delete the device, the bindings on it and its components, and free its hardware key slot."""
    await conn.execute(_UNBIND_ALL, (device_id, like_escaped(device_id) + "/%"))
    await conn.execute(_FREE_HARDWARE_KEY, (device_id,))
    await conn.execute(_DELETE, (device_id,))


async def set_key_hash(conn: Connection, device_id: str, key_hash: str) -> None:
    await conn.execute(_SET_KEY, (key_hash, device_id))


async def get(conn: Connection, org_id: str, device_id: str) -> DeviceRow | None:
    return await sql.fetch_one(conn, DeviceRow, _GET, (device_id, org_id))


async def components(conn: Connection, device_id: str) -> list[ComponentRow]:
    return await sql.fetch_all(conn, ComponentRow, _COMPONENTS, (device_id,))


async def groups(conn: Connection, device_id: str) -> list[str]:
    return await sql.fetch_column(conn, _GROUPS, (device_id,))


class Filter(msgspec.Struct, frozen=True, kw_only=True):
    """What a device page is narrowed to; every given condition holds (values checked by the
    caller)."""

    search: str | None = None
    online: bool | None = None
    config_status: str | None = None
    profile_id: str | None = None
    group_id: str | None = None


def _conditions(wanted: Filter) -> tuple[str, list[Any]]:
    where: list[str] = []
    params: list[Any] = []
    if wanted.search:
        where.append("(" + " OR ".join(f"d.{c} LIKE ? ESCAPE '\\'" for c in _SEARCHED) + ")")
        params += [f"%{like_escaped(wanted.search)}%"] * len(_SEARCHED)
    if wanted.online is not None:
        where.append("d.online = ?")
        params.append(int(wanted.online))
    if wanted.config_status is not None:
        where.append(f"{CONFIG_STATUS} = ?")
        params.append(wanted.config_status)
    if wanted.profile_id is not None:
        where.append("d.profile_id = ?")
        params.append(wanted.profile_id)
    if wanted.group_id is not None:
        where.append(
            "EXISTS (SELECT 1 FROM group_members m WHERE m.device_id = d.id AND m.group_id = ?)"
        )
        params.append(wanted.group_id)
    return "".join(f" AND {w}" for w in where), params


async def page(
    conn: Connection, org_id: str, after: str, limit: int, wanted: Filter
) -> list[DeviceRow]:
    """Devices in id order after `after`; `search` is a substring of the name, id or serial."""
    conditions, params = _conditions(wanted)
    statement = _SELECT + f" WHERE d.org_id = ? AND d.id > ?{conditions} ORDER BY d.id LIMIT ?"
    return await sql.fetch_all(conn, DeviceRow, statement, [org_id, after, *params, limit])


async def key_hash(conn: Connection, device_id: str) -> str | None:
    found = await sql.fetch_value(conn, _KEY_HASH, (device_id,))
    return None if found is None else str(found)


async def set_mqtt_presence(
    conn: Connection, device_id: str, online: bool, seen: str
) -> Presence | None:
    """Record an MQTT connect or disconnect; the device's organization and overall presence."""
    params = (int(online), int(online), seen, device_id)
    return await sql.fetch_one(conn, Presence, _MQTT_PRESENCE, params)


async def set_http_presence(
    conn: Connection, device_ids: Sequence[str], online: bool
) -> list[HttpPresence]:
    """Record HTTP presence; the devices whose `http_online` changed."""
    changed: list[HttpPresence] = []
    for part in sql.chunks(device_ids):
        statement = _HTTP_PRESENCE.format(ids=sql.marks(part))
        params = (int(online), int(online), *part, int(online))
        changed += await sql.fetch_all(conn, HttpPresence, statement, params)
    return changed


async def mark_all_offline(conn: Connection) -> None:
    await conn.execute(_ALL_OFFLINE)


async def desired_document(conn: Connection, device_id: str) -> Document | None:
    return await sql.fetch_one(conn, Document, _DOCUMENT, (device_id,))


async def known(conn: Connection, device_id: str) -> bool:
    """Whether a device `device_id` exists, in any organization (a device names only itself)."""
    return await sql.found(conn, _KNOWN, (device_id,))
