"""Provisioning: hardware keys, registrations and the facts a device reports about itself."""

from typing import Literal

import msgspec

from fleetstate.store.connection import Connection
from fleetstate.store.queries import sql


class KeyRow(msgspec.Struct, frozen=True):
    id: str
    name: str
    profile_id: str
    device_limit: int | None
    devices_registered: int
    revoked_at: str | None
    created_at: str


class NewKey(msgspec.Struct, frozen=True):
    id: str
    org_id: str
    profile_id: str
    name: str
    secret_hash: str
    device_limit: int | None
    created_at: str


class KeyState(msgspec.Struct, frozen=True):
    org_id: str
    profile_id: str
    revoked_at: str | None
    device_limit: int | None
    used: int


class Registrant(msgspec.Struct, frozen=True):
    """A device with a given serial in a profile, and the hardware key that registered it."""

    id: str
    hardware_key_id: str | None


class NewDetails(msgspec.Struct, frozen=True):
    device_id: str
    hardware_key_id: str
    mac: str | None
    cloud_id: str | None
    details: str | None  # JSON text
    sub_model: str | None
    registered_at: str
    updated_at: str


class SlotRow(msgspec.Struct, frozen=True):
    slot: str
    artefact_id: str
    hash: str


# The facts of `device_details` a device may update one by one (fixed names).
Fact = Literal["details", "sub_model", "host_address"]
# The `devices` columns a device may set about itself (fixed names).
Field = Literal["firmware_version", "name"]

_KEY_COLUMNS = (
    "id, name, profile_id, device_limit, used AS devices_registered, revoked_at, created_at"
)
_INSERT_KEY = f"INSERT INTO hardware_keys ({sql.columns(NewKey)}) VALUES (?, ?, ?, ?, ?, ?, ?)"
_GET_KEY = f"SELECT {_KEY_COLUMNS} FROM hardware_keys WHERE id = ? AND org_id = ?"
_KEY_PAGE = (
    f"SELECT {_KEY_COLUMNS} FROM hardware_keys WHERE org_id = ? AND id > ? ORDER BY id LIMIT ?"
)
_REVOKE = (
    "UPDATE hardware_keys SET revoked_at = coalesce(revoked_at, ?)"
    " WHERE id = ? AND org_id = ? RETURNING id"
)
_SECRET_HASH = "SELECT secret_hash FROM hardware_keys WHERE id = ?"
_KEY_STATE = f"SELECT {sql.columns(KeyState)} FROM hardware_keys WHERE id = ?"
_CLAIM = "UPDATE hardware_keys SET used = used + 1 WHERE id = ?"
_RELEASE = "UPDATE hardware_keys SET used = used - 1 WHERE id = ?"
_REGISTRANT = (
    "SELECT d.id, dd.hardware_key_id FROM devices d"
    " LEFT JOIN device_details dd ON dd.device_id = d.id"
    " WHERE d.profile_id = ? AND d.serial = ?"
)
# Upsert on the key `device_id`, spelled the same in PostgreSQL; the existing row's columns
# are named with the table (PostgreSQL finds a bare name ambiguous).
_SET_DETAILS = (
    f"INSERT INTO device_details ({sql.columns(NewDetails)}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
    " ON CONFLICT (device_id) DO UPDATE SET mac = excluded.mac,"
    " cloud_id = excluded.cloud_id, details = coalesce(excluded.details, device_details.details),"
    " sub_model = coalesce(excluded.sub_model, device_details.sub_model),"
    " registered_at = excluded.registered_at, updated_at = excluded.updated_at"
)
_SET_FIELD = "UPDATE devices SET {column} = ? WHERE id = ?"
_SET_FACT = (
    "INSERT INTO device_details (device_id, {column}, updated_at) VALUES (?, ?, ?)"
    " ON CONFLICT (device_id) DO UPDATE SET {column} = excluded.{column},"
    " updated_at = excluded.updated_at"
)
_SLOTS_OF_VERSION = (
    "SELECT s.slot, s.artefact_id, s.hash FROM desired_slots s"
    " JOIN desired_documents d ON d.device_id = s.device_id"
    " WHERE s.device_id = ? AND d.version = ?"
)


async def insert_key(conn: Connection, row: NewKey) -> None:
    await conn.execute(_INSERT_KEY, msgspec.structs.astuple(row))


async def get_key(conn: Connection, org_id: str, key_id: str) -> KeyRow | None:
    return await sql.fetch_one(conn, KeyRow, _GET_KEY, (key_id, org_id))


async def key_page(conn: Connection, org_id: str, after: str, limit: int) -> list[KeyRow]:
    return await sql.fetch_all(conn, KeyRow, _KEY_PAGE, (org_id, after, limit))


async def revoke(conn: Connection, org_id: str, key_id: str, at: str) -> bool:
    """Whether the organization has the key (revoking a revoked key keeps its first time)."""
    return await sql.found(conn, _REVOKE, (at, key_id, org_id))


async def secret_hash(conn: Connection, key_id: str) -> str | None:
    found = await sql.fetch_value(conn, _SECRET_HASH, (key_id,))
    return None if found is None else str(found)


async def key_state(conn: Connection, key_id: str) -> KeyState | None:
    return await sql.fetch_one(conn, KeyState, _KEY_STATE, (key_id,))


async def claim_slot(conn: Connection, key_id: str) -> None:
    await conn.execute(_CLAIM, (key_id,))


async def release_slot(conn: Connection, key_id: str) -> None:
    await conn.execute(_RELEASE, (key_id,))


async def registrant(conn: Connection, profile_id: str, serial: str) -> Registrant | None:
    return await sql.fetch_one(conn, Registrant, _REGISTRANT, (profile_id, serial))


async def set_details(conn: Connection, row: NewDetails) -> None:
    """A registration's facts; details and sub_model keep their value when not given."""
    await conn.execute(_SET_DETAILS, msgspec.structs.astuple(row))


async def set_field(conn: Connection, device_id: str, column: Field, value: str) -> None:
    await conn.execute(_SET_FIELD.format(column=column), (value, device_id))


async def set_fact(conn: Connection, device_id: str, column: Fact, value: str, at: str) -> None:
    await conn.execute(_SET_FACT.format(column=column), (device_id, value, at))


async def slots_of_version(conn: Connection, device_id: str, version: int) -> list[SlotRow]:
    """The device's desired slots if `version` is its current desired version, else none."""
    return await sql.fetch_all(conn, SlotRow, _SLOTS_OF_VERSION, (device_id, version))
