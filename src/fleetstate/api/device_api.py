"""The device HTTP API (`/v1/devices/...`, SPEC section 4, modelled on Xyte's device API).

Devices authenticate with the bare access key in `Authorization`; a wrong, rotated or deleted
device's key answers 401 `{"error": "Not authorized"}`. Errors keep Xyte's flat shape
`{"error": "..."}`, so every handler is wrapped in `_flat_errors`; `device_route` adds the device
authentication and registers the handler in a route table (with `auth=False`: the Bearer-token
middleware is for operators). Handlers are thin: decode, call the domain, encode.
"""

import functools
import logging
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, Literal

import msgspec
from aiohttp import web

from fleetstate.api.context import Services, services
from fleetstate.api.http import STATUS, check_device_key, decode, json_response
from fleetstate.api.routing import Handler, RouteTable
from fleetstate.domain.throttle import Throttled
from fleetstate.errors import Conflict, FleetstateError, Invalid, TooLarge, Unauthorized
from fleetstate.service import commands, provisioning, reports, telemetry, xyte_config
from fleetstate.service.commands.delivery import DeviceCommand
from fleetstate.service.credentials import Verifier
from fleetstate.service.http_presence import HttpPresence

log = logging.getLogger(__name__)
routes = RouteTable()
DEVICES = "/v1/devices"
DEVICE = DEVICES + "/{device_id}"
TAG = "device API"
DeviceHandler = Callable[[web.Request, str], Awaitable[web.StreamResponse]]

# Hardware-key checks are remembered like device keys (keyed by the stored hash).
_hardware_keys = Verifier()
HTTP_PRESENCE: web.AppKey[HttpPresence] = web.AppKey("http_presence", HttpPresence)


class Success(msgspec.Struct, frozen=True, kw_only=True):
    success: bool = True


def flat_error(status: int, message: str) -> web.Response:
    return json_response({"error": message}, status)


def _flat_errors(handler: Handler) -> Handler:
    @functools.wraps(handler)
    async def wrapped(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except Unauthorized:
            return flat_error(401, provisioning.NOT_AUTHORIZED)
        except Throttled:
            raise  # the error middleware answers it flat, with Retry-After
        except FleetstateError as exc:
            status = next((s for cls, s in STATUS.items() if isinstance(exc, cls)), 500)
            return flat_error(status, exc.message)
        except msgspec.ValidationError as exc:
            return flat_error(400, f"invalid body: {exc}")
        except msgspec.DecodeError as exc:
            return flat_error(400, f"malformed JSON: {exc}")
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            return flat_error(exc.status, exc.reason)

    return wrapped


async def authenticated_device(request: web.Request) -> str:
    """The path's device id, if the request carries that device's current access key."""
    device_id = request.match_info["device_id"]
    key = request.headers.get("Authorization", "").strip()
    if not await check_device_key(request, device_id, key):
        raise Unauthorized(provisioning.NOT_AUTHORIZED)
    return device_id


def device_route(
    table: RouteTable,
    method: str,
    path: str,
    summary: str,
    heartbeat: bool = False,
    **options: Any,
) -> Callable[[DeviceHandler], Handler]:
    """Register a handler of an authenticated device's request: (request, device_id). Every
    such call keeps an HTTP device online; `heartbeat` marks its periodic call (telemetry)."""

    def register(handler: DeviceHandler) -> Handler:
        @functools.wraps(handler)
        async def with_device(request: web.Request) -> web.StreamResponse:
            device_id = await authenticated_device(request)
            presence = request.app.get(HTTP_PRESENCE)
            if presence is not None:
                presence.called(device_id, heartbeat=heartbeat)
            return await handler(request, device_id)

        responses = {401: 'wrong key: {"error": "Not authorized"}', **options.pop("responses", {})}
        wrapped = _flat_errors(with_device)
        table.add(method, path, summary, TAG, auth=False, responses=responses, **options)(wrapped)
        return wrapped

    return register


async def raw_body(request: web.Request, limit: int) -> bytes:
    body = await request.read()
    if not body:
        raise Invalid("a JSON body is required")
    if len(body) > limit:
        raise TooLarge(f"the body is {len(body)} bytes; at most {limit}")
    return body


def hub_urls(svc: Services, request: web.Request) -> tuple[str, str]:
    """Configured public URLs, else the address this request reached and the bound broker."""
    hub = svc.config.hub_url or f"{request.scheme}://{request.host}"
    return hub.rstrip("/"), svc.config.mqtt_hub_url or svc.mqtt_url


# -- registration and the device itself ----------------------------------------------------------


class RegistrationAnswer(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    access_key: str
    hub_url: str
    mqtt_hub_url: str


@routes.add(
    "POST",
    DEVICES,
    "Register a device with a hardware key (no device auth); the access_key is shown once."
    " Registering again with the same key and sn gives that device a new access key (200)",
    TAG,
    auth=False,
    body=provisioning.Registration,
    response=RegistrationAnswer,
    status=201,
    responses={
        200: "registered again: the same device, a new access key (the old one is dead)",
        401: "revoked, exhausted or wrong hardware key",
        409: "sn already registered, not with this hardware key",
    },
)
@_flat_errors
async def register(request: web.Request) -> web.Response:
    svc = services(request)
    registration = await decode(request, provisioning.Registration)
    # Registering again ends the old key's MQTT session before this answer, as a rotation does.
    done = await _register_throttled(request, svc, registration)
    hub_url, mqtt_hub_url = hub_urls(svc, request)
    body = RegistrationAnswer(
        id=done.device_id, access_key=done.access_key, hub_url=hub_url, mqtt_hub_url=mqtt_hub_url
    )
    return json_response(body, 200 if done.again else 201)


async def _register_throttled(
    request: web.Request, svc: Services, registration: provisioning.Registration
) -> provisioning.Registered:
    """Hardware keys are guessed like access keys: per source address, failures are throttled
    as they are for device keys, and a blocked address is refused before the key is looked at."""
    address = f"addr:{request.remote}"
    svc.device_throttle.check(address)
    try:
        return await provisioning.register(svc.store, _hardware_keys, registration)
    except Unauthorized:
        log.warning("refused a registration with a wrong hardware key from %s", request.remote)
        svc.device_throttle.failed(address)
        raise


@device_route(
    routes,
    "PUT",
    DEVICE,
    "Update the device: firmware_version, name, details; config_version acknowledges that a"
    " desired-state version was applied (a number or a numeric string); sub_model, host_address",
    body=provisioning.DeviceUpdate,
    response=Success,
)
async def update_device(request: web.Request, device_id: str) -> web.Response:
    svc = services(request)
    update = await decode(request, provisioning.DeviceUpdate)
    await provisioning.update_device(svc.store, device_id, update)
    return json_response(Success())


@device_route(
    routes,
    "POST",
    DEVICE + "/telemetry",
    "Send telemetry (merged into the device's state); the answer says what to fetch next"
    " (space_data_version is always 0: spaces are not modelled)",
    heartbeat=True,
    body=telemetry.Telemetry,
    response=telemetry.Answer,
    responses={413: "more than 128 KiB"},
)
async def send_telemetry(request: web.Request, device_id: str) -> web.Response:
    svc = services(request)
    body = await raw_body(request, telemetry.MAX_BODY)
    answer = await svc.telemetry.record_and_answer(device_id, body)
    return json_response(answer)


# -- desired state -------------------------------------------------------------------------------


@device_route(
    routes,
    "GET",
    DEVICE + "/config",
    "The desired state as Xyte's configuration: `config` is the device slot's content,"
    " `components` the component slots' (docs/protocol.md)",
    response=xyte_config.XyteConfig,
)
async def get_config(request: web.Request, device_id: str) -> web.Response:
    svc = services(request)
    hub_url, _ = hub_urls(svc, request)
    return json_response(await xyte_config.device_config(svc.store, device_id, hub_url))


_CONFIG_BODY = 1024 * 1024
"""A Set Config echo carries the desired document too: the whole request limit (server.py), not
the 256 KiB of an MQTT report."""


class ConfigOutcome(msgspec.Struct, frozen=True, kw_only=True):
    success: bool
    version: int
    status: str
    current: bool
    message: str | None


@device_route(
    routes,
    "POST",
    DEVICE + "/config",
    "Report what the device applied: a report as on devices/{id}/reported, or Xyte's Set"
    " Config (the Get Config answer posted back: the device runs that version)",
    body=xyte_config.ConfigEcho,
    response=ConfigOutcome,
)
async def report_config(request: web.Request, device_id: str) -> web.Response:
    svc = services(request)
    raw = await raw_body(request, _CONFIG_BODY)
    if _is_echo(raw):
        echo = msgspec.json.decode(raw, type=xyte_config.ConfigEcho)
        hub_url, _ = hub_urls(svc, request)
        outcome = await xyte_config.record_echo(svc.store, device_id, echo, hub_url, raw)
    else:
        report = reports.report_decoder.decode(raw)
        outcome = await reports.record(svc.store, device_id, report, raw)
    body = ConfigOutcome(
        success=True,
        version=outcome.version,
        status=outcome.status,
        current=outcome.current,
        message=outcome.message,
    )
    return json_response(body)


def _is_echo(raw: bytes) -> bool:
    """A body with `config` is Xyte's Set Config; anything else is read as a report."""
    parsed = msgspec.json.decode(raw)
    return isinstance(parsed, dict) and "config" in parsed


# -- commands ------------------------------------------------------------------------------------

# Xyte's device-facing states onto the command lifecycle (SPEC section 2); `error` = `failed`.
AckStatus = Literal["ACKNOWLEDGED", "SUCCESS", "FAILED"]
_ACK_STATUS: dict[str, AckStatus] = {
    "in_progress": "ACKNOWLEDGED",
    "done": "SUCCESS",
    "failed": "FAILED",
    "error": "FAILED",
}


class CommandAnswer(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    id: str
    status: Literal["in_progress", "done", "failed", "error"]
    message: Annotated[str, msgspec.Meta(max_length=1000)] | None = None


class CommandOutcome(msgspec.Struct, frozen=True, kw_only=True):
    success: bool
    id: str
    status: str


@device_route(
    routes,
    "GET",
    DEVICE + "/command",
    "The command the device started and has not finished (in_progress), else the oldest"
    " waiting one (it is then SENT); names are Xyte's (reboot, update_firmware); 204 when none",
    response=DeviceCommand,
    responses={204: "no command waits"},
)
async def next_command(request: web.Request, device_id: str) -> web.Response:
    svc = services(request)
    hub_url, _ = hub_urls(svc, request)
    found = await commands.take_next(svc.store, device_id, hub_url)
    return web.Response(status=204) if found is None else json_response(found)


@device_route(
    routes,
    "POST",
    DEVICE + "/command",
    "Answer a command: in_progress, done, failed (error = failed)",
    body=CommandAnswer,
    response=CommandOutcome,
    responses={404: "unknown command, or another device's"},
)
async def answer_command(request: web.Request, device_id: str) -> web.Response:
    given = await decode(request, CommandAnswer)
    ack = commands.Ack(id=given.id, status=_ACK_STATUS[given.status], message=given.message)
    outcome = await commands.record_ack(services(request).store, device_id, ack)
    if outcome.effect == "late":
        raise Conflict(
            f"command {given.id!r} is already {outcome.brief.status}; the answer was recorded"
            " and changes nothing"
        )
    return json_response(CommandOutcome(success=True, id=given.id, status=outcome.brief.status))
