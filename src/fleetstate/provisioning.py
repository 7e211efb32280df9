"""Provisioning: hardware keys, device self-registration, and what a device says about itself.

A hardware key is created by an operator for one device profile, optionally limited to a number
of registrations, and revocable. A device registers with it (SPEC section 4) and gets its own id
and access key; the key decides organization and profile.
"""

import asyncio
from typing import Annotated, Any

import msgspec

from fleetstate import credentials, devices, reports
from fleetstate.clock import now_text
from fleetstate.desired import DesiredChange
from fleetstate.errors import Conflict, Invalid, NotFound, Unauthorized
from fleetstate.ids import new_id
from fleetstate.pagination import Page, page_of
from fleetstate.store import Connection, Store, WriteJob

NOT_AUTHORIZED = "Not authorized"
_KEY_PREFIX = "fhk"
_KEY_COLUMNS = (
    "id, name, profile_id, device_limit, used AS devices_registered, revoked_at, created_at"
)
Text = Annotated[str, msgspec.Meta(max_length=256)]


class NewHardwareKey(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    profile_id: str
    name: Text = ""
    device_limit: Annotated[int, msgspec.Meta(ge=1)] | None = None


class Registration(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    hardware_key: str
    sn: Annotated[str, msgspec.Meta(min_length=1, max_length=256)]
    firmware_version: Text
    mac: Text | None = None
    cloud_id: Text | None = None
    name: Text | None = None
    details: dict[str, Any] | None = None


class Registered(msgspec.Struct, frozen=True, kw_only=True):
    device_id: str
    access_key: str
    changes: list[DesiredChange]


class DeviceUpdate(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """`PUT /v1/devices/{id}`: `config_version` acknowledges that a desired version was applied."""

    firmware_version: Text | None = None
    name: Text | None = None
    details: dict[str, Any] | None = None
    config_version: int | None = None


# -- hardware keys -------------------------------------------------------------------------------


def _key_row(row: Any) -> dict[str, Any]:
    out = dict(row)
    out["revoked"] = out["revoked_at"] is not None
    return out


async def create_key(store: Store, org_id: str, new: NewHardwareKey) -> dict[str, Any]:
    key_id, secret = new_id(), credentials.new_secret()
    # Generated 256-bit secrets need no stretching (see credentials): the device-key cost.
    secret_hash = await asyncio.to_thread(
        credentials.hash_secret, secret, credentials.DEVICE_KEY_COST
    )

    async def job(conn: Connection) -> None:
        async with conn.execute(
            "SELECT 1 FROM profiles WHERE id = ? AND org_id = ? AND kind = 'device'",
            (new.profile_id, org_id),
        ) as cur:
            if await cur.fetchone() is None:
                raise NotFound("device profile", new.profile_id)
        await conn.execute(
            "INSERT INTO hardware_keys (id, org_id, profile_id, name, secret_hash, device_limit,"
            " created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (key_id, org_id, new.profile_id, new.name, secret_hash, new.device_limit, now_text()),
        )

    await store.write(job)
    return {**await get_key(store, org_id, key_id), "key": f"{_KEY_PREFIX}_{key_id}_{secret}"}


async def get_key(store: Store, org_id: str, key_id: str) -> dict[str, Any]:
    row = await store.fetchone(
        f"SELECT {_KEY_COLUMNS} FROM hardware_keys WHERE id = ? AND org_id = ?", (key_id, org_id)
    )
    if row is None:
        raise NotFound("hardware key", key_id)
    return _key_row(row)


async def list_keys(store: Store, org_id: str, page: Page) -> dict[str, Any]:
    rows = await store.fetchall(
        f"SELECT {_KEY_COLUMNS} FROM hardware_keys WHERE org_id = ? AND id > ? ORDER BY id LIMIT ?",
        (org_id, page.cursor or "", page.limit + 1),
    )
    return page_of([_key_row(r) for r in rows], page)


async def revoke_key(store: Store, org_id: str, key_id: str) -> dict[str, Any]:
    """Revoke (idempotent): registrations with it fail from now on; registered devices stay."""

    async def job(conn: Connection) -> None:
        async with conn.execute(
            "UPDATE hardware_keys SET revoked_at = coalesce(revoked_at, ?)"
            " WHERE id = ? AND org_id = ? RETURNING id",
            (now_text(), key_id, org_id),
        ) as cur:
            if await cur.fetchone() is None:
                raise NotFound("hardware key", key_id)

    await store.write(job)
    return await get_key(store, org_id, key_id)


# -- registration --------------------------------------------------------------------------------


async def _verified_key_id(store: Store, verifier: credentials.Verifier, hardware_key: str) -> str:
    prefix, _, rest = hardware_key.partition("_")
    key_id, _, secret = rest.partition("_")
    if prefix != _KEY_PREFIX or not key_id or not secret:
        raise Unauthorized(NOT_AUTHORIZED)
    row = await store.fetchone("SELECT secret_hash FROM hardware_keys WHERE id = ?", (key_id,))
    if row is None or not await verifier.verify(secret, str(row[0])):
        raise Unauthorized(NOT_AUTHORIZED)
    return key_id


async def register(store: Store, verifier: credentials.Verifier, reg: Registration) -> Registered:
    """Create the device through `devices.create` (so its desired document exists).

    A registration slot is claimed first and given back if the device was not created, so two
    registrations racing for the last slot never both succeed; a crash or cancellation between
    the two steps leaves one slot used, never one too many.
    """
    if not reg.sn.strip():
        raise Invalid("sn must not be empty")
    key_id = await _verified_key_id(store, verifier, reg.hardware_key)
    org_id, profile_id = await store.write(_claim_job(key_id, reg.sn))
    new = devices.NewDevice(name=reg.name or reg.sn, profile_id=profile_id, serial=reg.sn)
    try:
        created = await devices.create(store, org_id, new)
    except Exception:
        await store.write(_release_job(key_id))
        raise
    await store.write(_details_job(created.device_id, key_id, reg))
    return Registered(
        device_id=created.device_id, access_key=created.access_key, changes=created.changes
    )


def _claim_job(key_id: str, sn: str) -> WriteJob[tuple[str, str]]:
    async def job(conn: Connection) -> tuple[str, str]:
        async with conn.execute(
            "SELECT org_id, profile_id, revoked_at, device_limit, used FROM hardware_keys"
            " WHERE id = ?",
            (key_id,),
        ) as cur:
            row = await cur.fetchone()
        if row is None or row[2] is not None or (row[3] is not None and row[4] >= row[3]):
            raise Unauthorized(NOT_AUTHORIZED)
        await _check_serial_free(conn, str(row[1]), sn)
        await conn.execute("UPDATE hardware_keys SET used = used + 1 WHERE id = ?", (key_id,))
        return str(row[0]), str(row[1])

    return job


async def _check_serial_free(conn: Connection, profile_id: str, sn: str) -> None:
    """Checked before claiming a slot, so a duplicate never even briefly takes one
    (devices.create checks again, atomically)."""
    async with conn.execute(
        "SELECT 1 FROM devices WHERE profile_id = ? AND serial = ?", (profile_id, sn)
    ) as cur:
        if await cur.fetchone():
            raise Conflict(f"a device with sn {sn!r} is already registered for this profile")


def _release_job(key_id: str) -> WriteJob[None]:
    async def job(conn: Connection) -> None:
        await conn.execute("UPDATE hardware_keys SET used = used - 1 WHERE id = ?", (key_id,))

    return job


def _details_job(device_id: str, key_id: str, reg: Registration) -> WriteJob[None]:
    async def job(conn: Connection) -> None:
        now = now_text()
        await conn.execute(
            "INSERT INTO device_details (device_id, hardware_key_id, mac, cloud_id, details,"
            " registered_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (device_id, key_id, reg.mac, reg.cloud_id, _json(reg.details), now, now),
        )
        await conn.execute(
            "UPDATE devices SET firmware_version = ? WHERE id = ?",
            (reg.firmware_version, device_id),
        )

    return job


def _json(value: Any) -> str | None:
    return None if value is None else msgspec.json.encode(value).decode()


# -- the device's own update ---------------------------------------------------------------------


async def update_device(
    store: Store, device_id: str, update: DeviceUpdate
) -> reports.Outcome | None:
    """Apply `PUT /v1/devices/{id}` in one job; the report outcome when config_version was set."""
    if update.name is not None and not update.name.strip():
        raise Invalid("name must not be empty")

    async def job(conn: Connection) -> reports.Outcome | None:
        async with conn.execute("SELECT 1 FROM devices WHERE id = ?", (device_id,)) as cur:
            if await cur.fetchone() is None:
                raise NotFound("device", device_id)
        outcome = None
        if update.config_version is not None:
            outcome = await _acknowledge(conn, device_id, update.config_version)
        await _set_device_fields(conn, device_id, update)
        return outcome

    return await store.write(job)


async def _acknowledge(conn: Connection, device_id: str, version: int) -> reports.Outcome:
    """The HTTP acknowledgement of a desired version: an ACCEPTED report with the expected
    hashes (only the current version's are known; an older version only goes into history)."""
    async with conn.execute(
        "SELECT s.slot, s.artefact_id, s.hash FROM desired_slots s"
        " JOIN desired_documents d ON d.device_id = s.device_id"
        " WHERE s.device_id = ? AND d.version = ?",
        (device_id, version),
    ) as cur:
        slots = [
            reports.SlotReport(slot=r[0], artefact_id=r[1], hash=r[2], status="ACCEPTED")
            async for r in cur
        ]
    report = reports.Report(version=version, status="ACCEPTED", configs=slots)
    return await reports.apply(conn, device_id, report, msgspec.json.encode(report).decode())


async def _set_device_fields(conn: Connection, device_id: str, update: DeviceUpdate) -> None:
    for column, value in (("firmware_version", update.firmware_version), ("name", update.name)):
        if value is not None:
            await conn.execute(f"UPDATE devices SET {column} = ? WHERE id = ?", (value, device_id))
    if update.details is not None:
        await conn.execute(
            "INSERT INTO device_details (device_id, details, updated_at) VALUES (?, ?, ?)"
            " ON CONFLICT (device_id) DO UPDATE SET details = excluded.details,"
            " updated_at = excluded.updated_at",
            (device_id, _json(update.details), now_text()),
        )


# -- what the device fetches ---------------------------------------------------------------------


async def device_config(store: Store, device_id: str) -> dict[str, Any]:
    """`GET /v1/devices/{id}/config`: the current desired document with the device's name."""
    row = await store.fetchone(
        "SELECT d.name, dd.version, dd.issued_at, dd.document FROM devices d"
        " JOIN desired_documents dd ON dd.device_id = d.id WHERE d.id = ?",
        (device_id,),
    )
    if row is None:
        raise NotFound("device", device_id)
    return {
        "device_id": device_id,
        "name": row[0],
        "version": row[1],
        "last_updated": row[2],
        "config": msgspec.Raw(bytes(row[3])),
    }
