"""Device licenses and the operator-set info document (SPEC section 4, modelled on Xyte).

An operator hands a device a license to add, update or remove; the license then waits for the
device's answer (`inuse`, `removed`, `error`). While any waits, the telemetry answer says
`new_licenses: true`. The info document is free-form JSON; `version` counts its changes.
"""

from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec

from fleetstate.domain.canonical import canonical_bytes
from fleetstate.domain.clock import now_text, rfc3339
from fleetstate.domain.ids import new_id
from fleetstate.errors import Invalid, NotFound
from fleetstate.store import Connection, Store
from fleetstate.store.queries import licenses as q
from fleetstate.store.queries import sql


class NewLicense(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Without `id`: a new license to add. With the `id` of one of the device's licenses: an
    update (new data or expiry) or its removal."""

    action: Literal["add", "remove", "update"] = "add"
    data: Annotated[str, msgspec.Meta(max_length=65536)] | None = None
    id: str | None = None
    expires_at: str | None = None
    signature: Annotated[str, msgspec.Meta(max_length=8192)] | None = None
    """A signature of `data` the device can verify (Xyte's licenses carry one)."""


class DeviceLicense(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """What the device reads (Xyte's Get Licenses): the action as `add`/`remove`/`update: true`."""

    id: str
    device_id: str
    data: str
    signature: str | None = None
    add: bool = False
    remove: bool = False
    update: bool = False
    expires_at: str | None = None


class LicenseAnswer(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    id: str
    state: Literal["inuse", "removed", "error"]
    error: Annotated[str, msgspec.Meta(max_length=1000)] | None = None


def _expiry(text: str) -> str:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError as exc:
        raise Invalid("expires_at must be an RFC 3339 time, e.g. 2027-01-31T00:00:00Z") from exc
    if moment.tzinfo is None:
        raise Invalid("expires_at needs a time zone, e.g. 2027-01-31T00:00:00Z")
    return rfc3339(moment)


async def _require_device(conn: Connection, org_id: str, device_id: str) -> None:
    if not await sql.exists(conn, "devices", org_id, device_id):
        raise NotFound("device", device_id)


# -- licenses ------------------------------------------------------------------------------------


async def offer(store: Store, org_id: str, device_id: str, new: NewLicense) -> dict[str, Any]:
    """Operator: add a license, or ask the device to update or remove one it has."""
    if new.id is None and new.action != "add":
        raise Invalid(f"to {new.action} a license, give its id")
    if new.id is None and new.data is None:
        raise Invalid("a new license needs its data")
    expires_at = None if new.expires_at is None else _expiry(new.expires_at)
    license_id = new.id or new_id()

    async def job(conn: Connection) -> None:
        await _require_device(conn, org_id, device_id)
        now = now_text()
        if new.id is None:
            await q.insert(conn, license_id, device_id, new.data, new.signature, expires_at, now)
            return
        if not await q.change(
            conn, license_id, device_id, new.action, new.data, new.signature, expires_at, now
        ):
            raise NotFound("license", license_id)

    await store.write(job)
    row = await store.query(lambda conn: q.get(conn, license_id))
    assert row is not None
    return msgspec.structs.asdict(row)


async def list_for_operator(store: Store, org_id: str, device_id: str) -> list[dict[str, Any]]:
    await store.read(lambda conn: _require_device(conn, org_id, device_id))
    rows = await store.query(lambda conn: q.of_device(conn, device_id))
    return [msgspec.structs.asdict(r) for r in rows]


async def pending(store: Store, device_id: str) -> list[DeviceLicense]:
    """Device: the licenses whose latest action it has not answered yet. Answering each (inuse,
    removed, error) is what turns `new_licenses` false."""
    rows = await store.query(lambda conn: q.pending(conn, device_id))
    return [
        DeviceLicense(
            id=r.id,
            device_id=r.device_id,
            data=r.data,
            signature=r.signature,
            expires_at=r.expires_at,
            **{r.action: True},
        )
        for r in rows
    ]


async def answer(store: Store, device_id: str, given: LicenseAnswer) -> dict[str, Any]:
    """Device: what became of a license. A device may report a later error at any time."""

    async def job(conn: Connection) -> dict[str, Any]:
        row = await q.answer(conn, given.id, device_id, given.state, given.error, now_text())
        if row is None:
            raise NotFound("license", given.id)
        return msgspec.structs.asdict(row)

    return await store.write(job)


# -- info ----------------------------------------------------------------------------------------


async def set_info(
    store: Store, org_id: str, device_id: str, info: dict[str, Any]
) -> dict[str, Any]:
    """Operator: replace the info document; the version grows only when the content changed."""
    text = canonical_bytes(info).decode()

    async def job(conn: Connection) -> None:
        await _require_device(conn, org_id, device_id)
        await q.set_info(conn, device_id, text, now_text())

    await store.write(job)
    return await info_of(store, device_id)


async def info_of(store: Store, device_id: str) -> dict[str, Any]:
    row = await store.query(lambda conn: q.info(conn, device_id))
    return {
        "device_id": device_id,
        "version": 0 if row is None else row.version,
        "last_updated": None if row is None else row.updated_at,
        "info": {} if row is None else msgspec.json.decode(row.info),
    }


async def operator_info(store: Store, org_id: str, device_id: str) -> dict[str, Any]:
    await store.read(lambda conn: _require_device(conn, org_id, device_id))
    return await info_of(store, device_id)


async def flags(conn: Connection, device_id: str) -> tuple[bool, int]:
    """(`new_licenses`, `info_version`) for the telemetry answer."""
    return await q.flags(conn, device_id)
