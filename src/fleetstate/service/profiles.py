"""Device and sensor profiles: a named JSON Schema (draft 2020-12) that configuration must satisfy.

The schema is checked when the profile is created; one validator per profile is built once and
cached (profiles are immutable, so the cache never goes stale).
"""

import json
from typing import Any, Literal

import msgspec
from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError

from fleetstate.domain.canonical import canonical_bytes
from fleetstate.domain.clock import now_text
from fleetstate.domain.ids import new_id
from fleetstate.domain.pagination import Page, page_of
from fleetstate.errors import Conflict, NotFound, SchemaInvalid
from fleetstate.store import Connection, Store
from fleetstate.store.queries import profiles as q

Kind = Literal["device", "sensor"]


class NewDeviceProfile(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    name: str
    config_schema: dict[str, Any]
    command_delivery: Literal["burst", "sequential"] = "burst"


class NewSensorProfile(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    name: str
    config_schema: dict[str, Any]


_validators: dict[str, Draft202012Validator] = {}


def validator_for(profile_id: str, schema_text: str) -> Draft202012Validator:
    validator = _validators.get(profile_id)
    if validator is None:
        validator = Draft202012Validator(json.loads(schema_text))
        _validators[profile_id] = validator
    return validator


def violations(validator: Draft202012Validator, document: Any) -> list[dict[str, str]]:
    """Every violation with its JSON path, sorted so the answer is stable."""
    found = [
        {"path": error.json_path, "message": error.message}
        for error in validator.iter_errors(document)
    ]
    return sorted(found, key=lambda v: (v["path"], v["message"]))


def _check_schema(schema: dict[str, Any]) -> None:
    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as exc:
        raise SchemaInvalid(
            "config_schema is not a valid JSON Schema (draft 2020-12)",
            details=[{"path": "$.config_schema" + _suffix(exc), "message": exc.message}],
        ) from exc


def _suffix(exc: SchemaError) -> str:
    return "".join(f"[{p!r}]" if isinstance(p, int) else f".{p}" for p in exc.absolute_path)


def _out(row: q.ProfileRow) -> dict[str, Any]:
    out: dict[str, Any] = msgspec.structs.asdict(row)
    out["config_schema"] = json.loads(out["config_schema"])
    if out["kind"] == "sensor":
        out.pop("command_delivery")
    out.pop("kind")
    return out


async def create(
    store: Store, org_id: str, kind: Kind, new: NewDeviceProfile | NewSensorProfile
) -> dict[str, Any]:
    _check_schema(new.config_schema)
    row = q.ProfileRow(
        id=new_id(),
        kind=kind,
        name=new.name,
        config_schema=canonical_bytes(new.config_schema).decode(),
        command_delivery=new.command_delivery if isinstance(new, NewDeviceProfile) else "burst",
        created_at=now_text(),
    )

    async def job(conn: Connection) -> None:
        if await q.name_taken(conn, org_id, kind, new.name):
            raise Conflict(f"a {kind} profile named {new.name!r} already exists")
        await q.insert(conn, org_id, row)

    await store.write(job)
    return await get(store, org_id, kind, row.id)


async def get(store: Store, org_id: str, kind: Kind, profile_id: str) -> dict[str, Any]:
    row = await store.query(lambda conn: q.get(conn, org_id, kind, profile_id))
    if row is None:
        raise NotFound(f"{kind} profile", profile_id)
    return _out(row)


async def list_page(store: Store, org_id: str, kind: Kind, page: Page) -> dict[str, Any]:
    after = page.cursor or ""
    rows = await store.query(lambda conn: q.page(conn, org_id, kind, after, page.limit + 1))
    return page_of([_out(r) for r in rows], page)


async def delete(store: Store, org_id: str, kind: Kind, profile_id: str) -> None:
    await get(store, org_id, kind, profile_id)

    async def job(conn: Connection) -> None:
        user = await q.first_user(conn, profile_id)
        if user is not None:
            raise Conflict(f"the profile is still used by {user.replace('_', ' ')}")
        target_type = "device_profile" if kind == "device" else "sensor_profile"
        await q.delete(conn, profile_id, target_type)

    await store.write(job)
