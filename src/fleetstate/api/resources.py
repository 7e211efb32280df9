"""What the management REST API answers with: one msgspec type per resource.

Handlers encode their answers through these types (`reply`), and the OpenAPI document's response
schemas are generated from the same types, so the document cannot drift from the server: a key a
domain module adds without a field here fails loudly (`forbid_unknown_fields`) instead of
vanishing or going undocumented.
"""

from typing import Any

import msgspec
from aiohttp import web

from fleetstate.api.http import json_response


class Resource(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Base of every answer type: strict, so the document lists every key the server sends."""


def reply(kind: Any, value: Any, status: int = 200) -> web.Response:
    """Encode `value` (a domain dict) as `kind`, the type its route declares as `response`."""
    return json_response(msgspec.convert(value, kind), status)


class Health(Resource):
    status: str


class DeviceCounts(Resource):
    """The web app's summary over the devices matching its search."""

    total: int
    online: int
    config_status: dict[str, int]


class SignIn(Resource):
    """The web app's sign-in form."""

    token: str
    next: str = ""
    """Where to go after signing in (a path on this site)."""


# -- tenancy -------------------------------------------------------------------------------------


class Organization(Resource):
    id: str
    slug: str
    name: str
    created_at: str


class NewOrganizationAnswer(Organization):
    token: str
    """The organization's first admin token, shown once."""


class Token(Resource):
    id: str
    name: str
    is_operator: bool
    created_at: str


class NewTokenAnswer(Token):
    token: str
    """The secret, shown once."""


# -- profiles ------------------------------------------------------------------------------------


class SensorProfile(Resource):
    id: str
    name: str
    config_schema: dict[str, Any]
    created_at: str


class DeviceProfile(SensorProfile):
    command_delivery: str


# -- devices -------------------------------------------------------------------------------------


class DeviceSummary(Resource):
    id: str
    name: str
    profile_id: str
    serial: str | None
    online: bool
    last_seen: str | None
    firmware_version: str | None
    created_at: str
    desired_version: int | None
    reported_version: int | None
    reported_status: str | None
    reported_message: str | None
    reported_at: str | None
    config_status: str
    """PENDING until the device reports on its current desired version, then what it reported."""


class Component(Resource):
    name: str
    sensor_profile_id: str


class Device(DeviceSummary):
    components: list[Component]
    groups: list[str]


class NewDeviceAnswer(Device):
    access_key: str
    """The device's key, shown once."""


class AccessKey(Resource):
    device_id: str
    access_key: str


class Candidate(Resource):
    binding_id: str
    target_type: str
    target_id: str
    priority: int
    artefact_id: str
    artefact_name: str
    artefact_version: int
    won: bool
    reason: str


class SlotResolution(Resource):
    slot: str
    winner: str | None
    candidates: list[Candidate]


class Resolution(Resource):
    device_id: str
    document: Any
    """The effective desired document, a DesiredDocument (`GET …/desired-state` without
    `explain`)."""
    slots: list[SlotResolution]


# -- groups --------------------------------------------------------------------------------------


class GroupSummary(Resource):
    id: str
    name: str
    created_at: str
    device_count: int


class Group(Resource):
    id: str
    name: str
    created_at: str
    device_ids: list[str]


# -- artefacts and bindings ----------------------------------------------------------------------


class Artefact(Resource):
    id: str
    name: str
    version: int
    profile_id: str
    profile_kind: str
    size: int
    hash: str
    content_type: str
    created_at: str
    storage: str
    """`inline` (in the database) or `blob` (in the blob store)."""


class CommandRef(Resource):
    id: str
    status: str


class BindingDevice(Resource):
    device_id: str
    slot: str
    desired_version: int
    version: int | None
    status: str
    hash: str | None
    message: str | None
    reported_at: str | None
    command: CommandRef | None
    """The command tracking this device's current desired version, if any."""


class BindingSummary(Resource):
    id: str
    target_type: str
    target_id: str
    artefact_id: str
    priority: int
    created_at: str
    updated_at: str
    artefact_name: str
    artefact_version: int
    desired_hash: str
    device_count: int
    counts: dict[str, int]


class Binding(BindingSummary):
    devices: list[BindingDevice]


# -- commands ------------------------------------------------------------------------------------


class Command(Resource):
    id: str
    device_id: str
    batch_id: str | None
    origin: str
    type: str
    params: Any
    status: str
    message: str | None
    timeout_s: int
    created_at: str
    timeout_at: str | None
    sent_at: str | None
    acknowledged_at: str | None
    finished_at: str | None
    desired_version: int | None


class CommandEvent(Resource):
    status: str
    message: str | None
    source: str
    effect: str
    received_at: str


class CommandDetail(Command):
    history: list[CommandEvent]
    """The first answers; `history_next_cursor` continues them at `…/history`."""
    history_next_cursor: str | None


class Batch(Resource):
    batch_id: str
    id: str
    group_id: str
    type: str
    params: Any
    created_at: str
    total: int
    counts: dict[str, int]
    commands: list[Command]
    """A page of the per-device commands, oldest first; `next_cursor` continues it."""
    next_cursor: str | None


# -- provisioning, files, device info, licenses, telemetry ---------------------------------------


class HardwareKey(Resource):
    id: str
    name: str
    profile_id: str
    device_limit: int | None
    devices_registered: int
    revoked_at: str | None
    created_at: str
    revoked: bool


class NewHardwareKeyAnswer(HardwareKey):
    key: str
    """The hardware key, shown once."""


class File(Resource):
    id: str
    profile_id: str
    name: str
    version: str
    file_type: str
    sha256: str
    size: int
    created_at: str


class DeviceInfo(Resource):
    device_id: str
    version: int
    last_updated: str | None
    info: dict[str, Any]


class License(Resource):
    id: str
    device_id: str
    data: str | None
    signature: str | None
    action: str
    expires_at: str | None
    state: str | None
    error: str | None
    created_at: str
    updated_at: str


class TelemetryState(Resource):
    device_id: str
    state: dict[str, Any]
    message: Any
    updated_at: str | None


class TelemetryPoint(Resource):
    timestamp: str
    key: str
    value: Any


class TelemetryHistory(Resource):
    device_id: str
    items: list[TelemetryPoint]
    next_cursor: str | None
