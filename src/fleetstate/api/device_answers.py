"""What the device HTTP API answers with, for the OpenAPI document (SPEC section 4).

These follow Xyte's device API, which devices read tolerantly: a device must ignore fields it
does not know, so these types list the fields a device can rely on and leave the document open
to more (no `forbid_unknown_fields`, unlike the management API's `resources`). Fields a device
needs are required; fields only fleetstate adds have defaults, so they are documented but not
promised.
"""

from typing import Any

import msgspec


class Answer(msgspec.Struct, kw_only=True):
    """Base of the device API's answers."""


class Registered(Answer):
    id: str
    access_key: str
    """The device's key, shown once: send it as the bare `Authorization` header."""
    hub_url: str
    mqtt_hub_url: str


class Success(Answer):
    success: bool


class TelemetryAnswer(Answer):
    """What to fetch next: a changed version or a true flag means "GET that resource"."""

    success: bool
    config_version: int
    command: bool
    new_licenses: bool
    info_version: int
    latest_fw_version: str | None
    latest_fw_file_id: str | None
    space_data_version: int


class DeviceConfig(Answer):
    version: int
    config: Any
    last_updated: str | None = None
    device_id: str | None = None
    name: str | None = None


class ReportAnswer(Answer):
    success: bool
    version: int | None = None
    status: str | None = None
    current: bool | None = None


class DeviceCommand(Answer):
    id: str
    name: str
    status: str
    parameters: Any = None
    device_id: str | None = None


class CommandAnswered(Answer):
    success: bool
    id: str
    status: str


class DeviceLicense(Answer):
    id: str
    data: str | None = None
    device_id: str | None = None


class DeviceInfo(Answer):
    version: int
    info: dict[str, Any]
    last_updated: str | None = None
    device_id: str | None = None


class DeviceFile(Answer):
    id: str
    name: str
    url: str
    """Where the device downloads the bytes, with its key."""
    version: str
    file_type: str
    created_at: str
