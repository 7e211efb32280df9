"""Issuing commands: the params each type takes, checked against the device, to one device or to
every member of a group in one transaction (a batch)."""

import re
from typing import Annotated, Any, Literal, TypeVar

import msgspec

from fleetstate.domain.clock import now_text
from fleetstate.domain.ids import new_id
from fleetstate.errors import Conflict, NotFound, SchemaInvalid
from fleetstate.service import files, outbox
from fleetstate.service.commands import tracking
from fleetstate.service.commands.lifecycle import (
    DEFAULT_TIMEOUT_S,
    Brief,
    Target,
    brief,
    created_and_deadline,
    to_json,
)
from fleetstate.service.desired import DesiredChange
from fleetstate.store import Connection, Store
from fleetstate.store.queries import commands as q
from fleetstate.store.queries import sql

MAX_TIMEOUT_S = 30 * 24 * 3600
T = TypeVar("T")
CommandType = Literal[
    "REBOOT", "UPDATE_CONFIG", "UPDATE_FIRMWARE", "BIND_CONFIG", "UNBIND_CONFIG", "DUMP"
]


class NewCommand(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    type: CommandType
    params: dict[str, Any] | None = None
    timeout_s: Annotated[int, msgspec.Meta(ge=1, le=MAX_TIMEOUT_S)] = DEFAULT_TIMEOUT_S


class NoParams(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    pass


class FirmwareParams(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    file_id: str


class Created(msgspec.Struct, frozen=True, kw_only=True):
    batch_id: str | None
    commands: list[Brief]
    changes: list[DesiredChange]


class _Plan(msgspec.Struct, frozen=True, kw_only=True):
    params: dict[str, dict[str, Any]]
    """What each device is sent (or, for BIND/UNBIND, what the operator asked for)."""
    rebind: tracking.Rebind | None = None


async def create(store: Store, org_id: str, device_id: str, new: NewCommand) -> Created:
    """A command to one device; returns once a connected device got it (then SENT)."""
    return await store.write(lambda conn: issue(conn, org_id, device_id, new))


async def issue(conn: Connection, org_id: str, device_id: str, new: NewCommand) -> Created:
    """In a write job: a command to one device, handed to delivery once the job committed."""
    found = await q.target(conn, org_id, device_id)
    if found is None:
        raise NotFound("device", device_id)
    return await _issue(conn, org_id, [Target(found.id, found.profile_id)], new, None)


async def create_for_group(store: Store, org_id: str, group_id: str, new: NewCommand) -> Created:
    """One command per member of the group, all in one transaction, as one batch."""

    async def job(conn: Connection) -> Created:
        if not await sql.exists(conn, "device_groups", org_id, group_id):
            raise NotFound("device group", group_id)
        members = await q.group_targets(conn, group_id)
        if not members:
            raise Conflict(f"device group {group_id!r} has no devices")
        batch_id = new_id()
        params = to_json(new.params or {})
        await q.insert_batch(conn, batch_id, org_id, group_id, new.type, params, now_text())
        targets = [Target(m.id, m.profile_id) for m in members]
        return await _issue(conn, org_id, targets, new, batch_id)

    return await store.write(job)


async def _issue(
    conn: Connection,
    org_id: str,
    targets: list[Target],
    new: NewCommand,
    batch_id: str | None,
) -> Created:
    plan = await _plan(conn, org_id, targets, new)
    created_at, timeout_at = created_and_deadline(new.timeout_s)
    ids = [new_id() for _ in targets]
    await q.insert(
        conn,
        [
            (
                *(cid, org_id, t.id, batch_id, "operator", new.type),
                *(to_json(plan.params[t.id]), None, new.timeout_s, created_at, timeout_at),
            )
            for cid, t in zip(ids, targets, strict=True)
        ],
    )
    changes: list[DesiredChange] = []
    if plan.rebind is not None:
        changes = await tracking.apply_rebind(conn, org_id, plan.rebind)
        await tracking.adopt_unchanged(conn, org_id, ids)
    briefs = [brief(r) for r in await q.briefs(conn, ids)]
    # Armed, announced and sent after the commit; one device's before its caller resumes.
    outbox.commands_created(briefs, batch_id)
    return Created(batch_id=batch_id, commands=briefs, changes=changes)


async def _plan(conn: Connection, org_id: str, targets: list[Target], new: NewCommand) -> _Plan:
    """Check the params for every target: what to send each, and what to (un)bind."""
    match new.type:
        case "REBOOT" | "DUMP":
            _params(new, NoParams)
            return _Plan(params={t.id: {} for t in targets})
        case "UPDATE_CONFIG":
            _params(new, NoParams)
            versions = await q.desired_versions(conn, [t.id for t in targets])
            return _Plan(params={t.id: {"version": versions.get(t.id)} for t in targets})
        case "UPDATE_FIRMWARE":
            return await _plan_firmware(conn, org_id, targets, _params(new, FirmwareParams))
        case "BIND_CONFIG":
            return await _plan_rebind(conn, org_id, targets, _params(new, tracking.BindParams))
        case "UNBIND_CONFIG":
            return await _plan_rebind(conn, org_id, targets, _params(new, tracking.UnbindParams))


async def _plan_rebind(
    conn: Connection,
    org_id: str,
    targets: list[Target],
    params: tracking.BindParams | tracking.UnbindParams,
) -> _Plan:
    rebind = await tracking.plan_rebind(conn, org_id, targets, params)
    shown = msgspec.to_builtins(params)
    return _Plan(params={t.id: shown for t in targets}, rebind=rebind)


async def _plan_firmware(
    conn: Connection, org_id: str, targets: list[Target], params: FirmwareParams
) -> _Plan:
    row = await q.firmware_file(conn, org_id, params.file_id)
    if row is None:
        raise NotFound("file", params.file_id)
    profile_id, version, sha256, file_type = row.profile_id, row.version, row.sha256, row.file_type
    if file_type != files.FIRMWARE:
        raise tracking.refuse("file_id", f"file {params.file_id!r} is {file_type}, not firmware")
    for t in targets:
        if t.profile_id != profile_id:
            message = f"the file is for profile {profile_id}; device {t.id} has {t.profile_id}"
            raise tracking.refuse("file_id", message)
    return _Plan(
        params={
            t.id: {
                "file_id": params.file_id,
                "version": version,
                "sha256": sha256,
                "download": files.download_path(t.id, params.file_id),
            }
            for t in targets
        }
    )


def _params(new: NewCommand, kind: type[T]) -> T:
    try:
        return msgspec.convert(new.params or {}, type=kind)
    except msgspec.ValidationError as exc:
        raise SchemaInvalid(
            f"invalid params for {new.type}: {exc}", details=[_violation(str(exc))]
        ) from exc


def _violation(text: str) -> dict[str, str]:
    message, sep, where = text.rpartition(" - at `")
    if sep:
        return {"path": "$.params" + where.rstrip("`")[1:], "message": message}
    field = re.search(r"field `([^`]+)`", text)
    return {"path": "$.params" + (f".{field[1]}" if field else ""), "message": text}
