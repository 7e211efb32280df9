"""The device's side of commands: what goes out to it, and its acknowledgements.

Over HTTP a command stays the device's business until it is finished: one it moved to
`in_progress` is served again (and flagged in the telemetry answer) until it is done or failed.

A command goes out when the device can take it: every waiting one at once (`burst`, the default),
or the next only once the previous finished (`sequential`, set on the device profile). The same
queue serves MQTT (command_delivery.py publishes) and the device HTTP API (`take_next`).
"""

from typing import Any, Literal

import msgspec

from fleetstate.errors import Invalid
from fleetstate.service import outbox
from fleetstate.service.commands.lifecycle import (
    OPEN,
    TRACKING,
    WAITING,
    Brief,
    Effect,
    Status,
    UnknownCommand,
    answer,
    brief,
    move,
    view,
)
from fleetstate.store import Connection, Store
from fleetstate.store.queries import commands as q


class Ack(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """What a device sends on `devices/{id}/commands/ack`."""

    id: str
    status: Literal["ACKNOWLEDGED", "SUCCESS", "FAILED"]
    message: str | None = None


class CommandMessage(msgspec.Struct, frozen=True, kw_only=True):
    """What a device receives on `devices/{id}/commands`."""

    id: str
    type: str
    params: msgspec.Raw
    issued_at: str
    timeout_at: str


class Outgoing(msgspec.Struct, frozen=True, kw_only=True):
    brief: Brief
    payload: bytes


class AckOutcome(msgspec.Struct, frozen=True, kw_only=True):
    command: dict[str, Any]
    brief: Brief
    effect: Effect
    sequential: bool = False
    """The device's profile delivers one command at a time: a finished one lets the next go.
    (A burst device got every waiting command already; asking again would only cost a read.)"""


ack_decoder = msgspec.json.Decoder(Ack)
_encoder = msgspec.json.Encoder()


async def _queue(conn: Connection, device_id: str) -> list[q.CommandRow]:
    """The device's commands that may go out now, oldest first: every waiting one (burst), or the
    oldest unfinished one while it still waits (sequential). Tracking commands never go out."""
    mode = await q.delivery_mode(conn, device_id)
    if mode is None:
        return []
    if mode == "sequential":
        oldest = await q.oldest_open(conn, device_id, TRACKING, OPEN)
        return [r for r in oldest if r.status in WAITING]
    return await q.all_waiting(conn, device_id, TRACKING, WAITING)


async def deliverable(store: Store, device_id: str) -> list[Outgoing]:
    """What to publish to the device now: its PENDING commands that may go out, oldest first."""
    rows = await store.query(lambda conn: _queue(conn, device_id))
    return [
        Outgoing(brief=brief(r), payload=_encoder.encode(_message(r)))
        for r in rows
        if r.status == Status.PENDING
    ]


def _message(row: q.CommandRow) -> CommandMessage:
    return CommandMessage(
        id=row.id,
        type=row.type,
        params=msgspec.Raw(row.params.encode()),
        issued_at=row.created_at,
        timeout_at=row.timeout_at,
    )


async def mark_sent(store: Store, command_id: str) -> list[Brief]:
    async def job(conn: Connection) -> list[Brief]:
        return await move(conn, *q.move_one(command_id), Status.SENT, None)

    return await store.write(job)


# The device HTTP API speaks Xyte's command names (Xyte's device API); REST and MQTT keep ours.
XYTE_NAMES = {"REBOOT": "reboot", "UPDATE_FIRMWARE": "update_firmware"}


def xyte_name(command_type: str) -> str:
    return XYTE_NAMES.get(command_type, command_type.lower())


class DeviceCommand(msgspec.Struct, frozen=True, kw_only=True):
    """What `GET /v1/devices/{id}/command` answers (Xyte's Get Command)."""

    id: str
    device_id: str
    status: Literal["pending", "in_progress"]
    name: str
    parameters: dict[str, Any]


async def _started(conn: Connection, device_id: str) -> q.CommandRow | None:
    """The oldest command the device moved to in_progress (ACKNOWLEDGED) and has not finished."""
    return await q.oldest_with_status(conn, device_id, TRACKING, Status.ACKNOWLEDGED)


def _parameters(row: q.CommandRow, hub_url: str) -> dict[str, Any]:
    params: dict[str, Any] = msgspec.json.decode(row.params)
    if "download" in params:
        # Xyte's update_firmware carries `url` (GET it with the device key) and `version`.
        params["url"] = hub_url + params["download"]
    return params


async def take_next(store: Store, device_id: str, hub_url: str = "") -> DeviceCommand | None:
    """The command the device should look at, in Xyte's terms (`GET /v1/devices/{id}/command`):
    one it started and has not finished yet (`in_progress`: a device that rebooted reports the
    result of the command that rebooted it), else the oldest waiting one, which is now SENT."""

    async def job(conn: Connection) -> DeviceCommand | None:
        row = await _started(conn, device_id)
        status: Literal["pending", "in_progress"] = "in_progress"
        if row is None:
            rows = await _queue(conn, device_id)
            if not rows:
                return None
            row, status = rows[0], "pending"
            await move(conn, *q.move_one(row.id), Status.SENT, None)
        return DeviceCommand(
            id=row.id,
            device_id=device_id,
            status=status,
            name=xyte_name(row.type),
            parameters=_parameters(row, hub_url),
        )

    return await store.write(job)


async def has_waiting(conn: Connection, device_id: str) -> bool:
    """Whether `take_next` would return a command. Asked by every HTTP telemetry answer, and
    most devices have no unfinished command at all: one query says so before the three that
    tell which."""
    if not await q.any_open(conn, device_id, TRACKING, OPEN):
        return False
    return bool(await _queue(conn, device_id)) or await _started(conn, device_id) is not None


async def record_ack(store: Store, device_id: str, ack: Ack) -> AckOutcome:
    """A device's answer (MQTT `commands/ack` or the HTTP command answer)."""
    return await store.write(lambda conn: apply_ack(conn, device_id, ack))


async def apply_ack(conn: Connection, device_id: str, ack: Ack) -> AckOutcome:
    """In a write job: record the device's answer. One that applied is announced once the job
    committed, and a sequential device's next command may then go out."""
    row = await q.of_device(conn, device_id, ack.id)
    if row is None:
        raise UnknownCommand(ack.id)
    current, to = Status(row.status), Status(ack.status)
    effect = await answer(conn, ack.id, current, to, ack.message, "device")
    after = await q.of_device(conn, device_id, ack.id)
    assert after is not None  # the same write job: nothing deleted it
    sequential = await q.delivery_mode(conn, device_id) == "sequential"
    moved = brief(after)
    if effect == "applied":
        outbox.commands_finished([moved], deliver_next=sequential)
    return AckOutcome(command=view(after), brief=moved, effect=effect, sequential=sequential)


async def acknowledge(
    store: Store, device_id: str, command_id: str, status: str, message: str | None
) -> dict[str, Any]:
    """An ack (ACKNOWLEDGED, SUCCESS or FAILED); for a finished command it only goes into the
    history. Raises UnknownCommand for an unknown command or another device's."""
    try:
        ack = msgspec.convert({"id": command_id, "status": status, "message": message}, Ack)
    except msgspec.ValidationError as exc:
        raise Invalid(f"invalid acknowledgement: {exc}") from exc
    return (await record_ack(store, device_id, ack)).command
