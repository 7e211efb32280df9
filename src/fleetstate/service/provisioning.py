"""Provisioning: hardware keys, device self-registration, and what a device says about itself.

A hardware key is created by an operator for one device profile, optionally limited to a number
of devices, and revocable. A device registers with it (SPEC section 4) and gets its own id and
access key; the key decides organization and profile. Registering again with the same key and sn
(a Xyte device does after any 401: it wiped its state) gives that device a new access key.
"""

from typing import Annotated, Any

import msgspec

from fleetstate.domain.clock import now_text
from fleetstate.domain.ids import new_id
from fleetstate.domain.pagination import Page, page_of
from fleetstate.errors import Conflict, Invalid, NotFound, Unauthorized
from fleetstate.service import audit, credentials, devices, outbox, reports
from fleetstate.service.desired import DesiredChange
from fleetstate.store import Connection, Store, WriteJob
from fleetstate.store.queries import bindings as bindings_q
from fleetstate.store.queries import devices as devices_q
from fleetstate.store.queries import provisioning as q

NOT_AUTHORIZED = "Not authorized"
_KEY_PREFIX = "fhk"
Text = Annotated[str, msgspec.Meta(max_length=256)]


class NewHardwareKey(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    profile_id: str
    name: Text = ""
    device_limit: Annotated[int, msgspec.Meta(ge=1)] | None = None


class Registration(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Xyte's Register Device body (`parent_id`, for application devices, is not modelled)."""

    hardware_key: str
    sn: Annotated[str, msgspec.Meta(min_length=1, max_length=256)]
    firmware_version: Text
    mac: Text | None = None
    cloud_id: Text | None = None
    name: Text | None = None
    details: dict[str, Any] | None = None
    sub_model: Text | None = None


class Registered(msgspec.Struct, frozen=True, kw_only=True):
    device_id: str
    access_key: str
    changes: list[DesiredChange]
    org_id: str = ""
    again: bool = False
    """True for a re-registration: an existing device got a new access key."""


class DeviceUpdate(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """`PUT /v1/devices/{id}`: `config_version` acknowledges that a desired version was applied
    (Xyte documents it as a string; a number is taken too)."""

    firmware_version: Text | None = None
    name: Text | None = None
    details: dict[str, Any] | None = None
    config_version: int | Annotated[str, msgspec.Meta(max_length=20)] | None = None
    sub_model: Text | None = None
    host_address: Text | None = None


def version_number(value: int | str | None) -> int | None:
    """A config version given as a number or a numeric string (Xyte sends either)."""
    if value is None or isinstance(value, int):
        return value
    if not (value.strip().isascii() and value.strip().isdigit()):
        raise Invalid(f"config_version must be a whole number, got {value!r}")
    return int(value)


# -- hardware keys -------------------------------------------------------------------------------


def _key_row(row: q.KeyRow) -> dict[str, Any]:
    out = msgspec.structs.asdict(row)
    out["revoked"] = out["revoked_at"] is not None
    return out


async def create_key(store: Store, org_id: str, new: NewHardwareKey) -> dict[str, Any]:
    key_id, secret = new_id(), credentials.new_secret()
    # Generated 256-bit secrets need no stretching (see credentials).
    secret_hash = credentials.hash_generated(secret)

    async def job(conn: Connection) -> None:
        if not await bindings_q.profile_exists(conn, org_id, new.profile_id, "device"):
            raise NotFound("device profile", new.profile_id)
        row = q.NewKey(
            key_id, org_id, new.profile_id, new.name, secret_hash, new.device_limit, now_text()
        )
        await q.insert_key(conn, row)

    await store.write(job)
    return {**await get_key(store, org_id, key_id), "key": f"{_KEY_PREFIX}_{key_id}_{secret}"}


async def get_key(store: Store, org_id: str, key_id: str) -> dict[str, Any]:
    row = await store.query(lambda conn: q.get_key(conn, org_id, key_id))
    if row is None:
        raise NotFound("hardware key", key_id)
    return _key_row(row)


async def list_keys(store: Store, org_id: str, page: Page) -> dict[str, Any]:
    rows = await store.query(
        lambda conn: q.key_page(conn, org_id, page.cursor or "", page.limit + 1)
    )
    return page_of([_key_row(r) for r in rows], page)


async def revoke_key(store: Store, org_id: str, key_id: str) -> dict[str, Any]:
    """Revoke (idempotent): registrations with it fail from now on; registered devices stay."""

    async def job(conn: Connection) -> None:
        if not await q.revoke(conn, org_id, key_id, now_text()):
            raise NotFound("hardware key", key_id)

    await store.write(job)
    return await get_key(store, org_id, key_id)


# -- registration --------------------------------------------------------------------------------


async def _verified_key_id(store: Store, verifier: credentials.Verifier, hardware_key: str) -> str:
    prefix, _, rest = hardware_key.partition("_")
    key_id, _, secret = rest.partition("_")
    if prefix != _KEY_PREFIX or not key_id or not secret:
        raise Unauthorized(NOT_AUTHORIZED)
    secret_hash = await store.query(lambda conn: q.secret_hash(conn, key_id))
    if secret_hash is None or not await verifier.verify(secret, secret_hash):
        raise Unauthorized(NOT_AUTHORIZED)
    return key_id


async def register(store: Store, verifier: credentials.Verifier, reg: Registration) -> Registered:
    """Create the device through `devices.create` (so its desired document exists), or give the
    device already registered with this key and sn a new access key.

    A registration slot is claimed first and given back if the device was not created, so two
    registrations racing for the last slot never both succeed; a crash or cancellation between
    the two steps leaves one slot used, never one too many.
    """
    if not reg.sn.strip():
        raise Invalid("sn must not be empty")
    key_id = await _verified_key_id(store, verifier, reg.hardware_key)
    org_id, profile_id, existing = await store.write(_claim_job(key_id, reg.sn))
    if existing is not None:
        return await _register_again(store, org_id, existing, key_id, reg)
    new = devices.NewDevice(name=reg.name or reg.sn, profile_id=profile_id, serial=reg.sn)
    try:
        created = await devices.create(store, org_id, new)
    except Exception:
        await store.write(_release_job(key_id))
        raise
    await store.write(_details_job(created.device_id, key_id, reg))
    return Registered(
        device_id=created.device_id,
        access_key=created.access_key,
        changes=created.changes,
        org_id=org_id,
    )


async def _register_again(
    store: Store, org_id: str, device_id: str, key_id: str, reg: Registration
) -> Registered:
    """The key rotation operators use (the old key's MQTT session has ended when it returns),
    with the registration's facts; the audit trail says why, and the organisation's stream
    hears of it."""
    detail = {"sn": reg.sn, "hardware_key_id": key_id, "firmware_version": reg.firmware_version}
    access_key = await devices.rotate_key(
        store, org_id, device_id, action=audit.REREGISTERED, detail=detail
    )
    event = {"device_id": device_id, "action": "re_registered", "sn": reg.sn}
    await store.write(_details_job(device_id, key_id, reg, announce=(org_id, event)))
    return Registered(
        device_id=device_id, access_key=access_key, changes=[], org_id=org_id, again=True
    )


def _claim_job(key_id: str, sn: str) -> WriteJob[tuple[str, str, str | None]]:
    """(org, profile, the device this key registered with this sn before, if any); a slot is
    claimed only for a new device."""

    async def job(conn: Connection) -> tuple[str, str, str | None]:
        key = await q.key_state(conn, key_id)
        if key is None or key.revoked_at is not None:
            raise Unauthorized(NOT_AUTHORIZED)
        existing = await _registered_before(conn, key_id, key.profile_id, sn)
        if existing is not None:
            return key.org_id, key.profile_id, existing
        if key.device_limit is not None and key.used >= key.device_limit:
            raise Unauthorized(NOT_AUTHORIZED)
        await q.claim_slot(conn, key_id)
        return key.org_id, key.profile_id, None

    return job


async def _registered_before(conn: Connection, key_id: str, profile_id: str, sn: str) -> str | None:
    """The device with this sn in the profile if this key registered it; 409 for one it did not
    (created by an operator, or with another key): a hardware key cannot take over those.
    Checked before claiming a slot, so a duplicate never even briefly takes one (devices.create
    checks again, atomically)."""
    found = await q.registrant(conn, profile_id, sn)
    if found is None:
        return None
    if found.hardware_key_id != key_id:
        raise Conflict(f"a device with sn {sn!r} is already registered for this profile")
    return found.id


def _release_job(key_id: str) -> WriteJob[None]:
    async def job(conn: Connection) -> None:
        await q.release_slot(conn, key_id)

    return job


def _details_job(
    device_id: str,
    key_id: str,
    reg: Registration,
    announce: tuple[str, dict[str, Any]] | None = None,
) -> WriteJob[None]:
    """The registration's facts; `announce`: (org, data) of a `device` event once committed."""

    async def job(conn: Connection) -> None:
        now = now_text()
        row = q.NewDetails(
            device_id, key_id, reg.mac, reg.cloud_id, _json(reg.details), reg.sub_model, now, now
        )
        await q.set_details(conn, row)
        await q.set_field(conn, device_id, "firmware_version", reg.firmware_version)
        if announce is not None:
            outbox.announce(announce[0], "device", announce[1])

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
    config_version = version_number(update.config_version)

    async def job(conn: Connection) -> reports.Outcome | None:
        if not await devices_q.known(conn, device_id):
            raise NotFound("device", device_id)
        outcome = None
        if config_version is not None:
            outcome = await _acknowledge(conn, device_id, config_version)
        await _set_device_fields(conn, device_id, update)
        return outcome

    return await store.write(job)


async def _acknowledge(conn: Connection, device_id: str, version: int) -> reports.Outcome:
    """The HTTP acknowledgement of a desired version: an ACCEPTED report with the expected
    hashes (only the current version's are known; an older version only goes into history)."""
    slots = [
        reports.SlotReport(slot=r.slot, artefact_id=r.artefact_id, hash=r.hash, status="ACCEPTED")
        for r in await q.slots_of_version(conn, device_id, version)
    ]
    report = reports.Report(version=version, status="ACCEPTED", configs=slots)
    return await reports.apply(conn, device_id, report, msgspec.json.encode(report).decode())


async def _set_device_fields(conn: Connection, device_id: str, update: DeviceUpdate) -> None:
    fields: tuple[tuple[q.Field, str | None], ...] = (
        ("firmware_version", update.firmware_version),
        ("name", update.name),
    )
    for column, value in fields:
        if value is not None:
            await q.set_field(conn, device_id, column, value)
    facts: tuple[tuple[q.Fact, str | None], ...] = (
        ("details", _json(update.details)),
        ("sub_model", update.sub_model),
        ("host_address", update.host_address),
    )
    for fact, given in facts:
        if given is not None:
            await q.set_fact(conn, device_id, fact, given, now_text())
