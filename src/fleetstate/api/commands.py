"""Commands in the management REST API: send and track them, to one device or a whole group."""

import re

from aiohttp import web

from fleetstate.api import resources as res
from fleetstate.api.context import services
from fleetstate.api.http import decode, org_id, page
from fleetstate.api.resources import reply
from fleetstate.api.routing import RouteTable
from fleetstate.domain.pagination import PageOf, parse_page
from fleetstate.service import commands

routes = RouteTable()
API = "/api/v1"
DEVICE_COMMANDS = f"{API}/devices/{{device_id}}/commands"
_HISTORY_CURSOR = re.compile(r"[0-9]{1,19}")
"""A command history cursor: the row id of the last answer shown."""


@routes.add(
    "POST",
    DEVICE_COMMANDS,
    "Send a command (published at once to a connected device, else when it connects)",
    "commands",
    body=commands.NewCommand,
    response=res.CommandDetail,
    status=201,
)
async def create_command(request: web.Request) -> web.Response:
    svc, device_id = services(request), request.match_info["device_id"]
    new = await decode(request, commands.NewCommand)
    # Returns once a connected device got the command, so the answer shows it SENT.
    created = await commands.create(svc.store, org_id(request), device_id, new)
    (command,) = created.commands
    found = await commands.get(svc.store, org_id(request), device_id, command.id)
    return reply(res.CommandDetail, found, 201)


@routes.add(
    "GET",
    DEVICE_COMMANDS,
    "List a device's commands, newest first",
    "commands",
    query=("limit", "cursor", "status"),
    response=PageOf[res.Command],
)
async def list_commands(request: web.Request) -> web.Response:
    found = await commands.list_page(
        services(request).store,
        org_id(request),
        request.match_info["device_id"],
        page(request),
        request.query.get("status"),
    )
    return reply(PageOf[res.Command], found)


@routes.add(
    "GET",
    f"{DEVICE_COMMANDS}/{{command_id}}",
    "A command with its timestamps and its first answers (history_next_cursor: more in"
    " .../history)",
    "commands",
    response=res.CommandDetail,
)
async def get_command(request: web.Request) -> web.Response:
    found = await commands.get(
        services(request).store,
        org_id(request),
        request.match_info["device_id"],
        request.match_info["command_id"],
    )
    return reply(res.CommandDetail, found)


@routes.add(
    "GET",
    f"{DEVICE_COMMANDS}/{{command_id}}/history",
    "Every answer the device sent about the command, oldest first, paginated",
    "commands",
    query=("limit", "cursor"),
    params={"cursor": {"type": "string", "pattern": f"^({_HISTORY_CURSOR.pattern})?$"}},
    response=PageOf[res.CommandEvent],
)
async def command_history(request: web.Request) -> web.Response:
    query = request.query
    found = await commands.history(
        services(request).store,
        org_id(request),
        request.match_info["device_id"],
        request.match_info["command_id"],
        parse_page(query.get("limit"), query.get("cursor"), _HISTORY_CURSOR),
    )
    return reply(PageOf[res.CommandEvent], found)


@routes.add(
    "POST",
    f"{DEVICE_COMMANDS}/{{command_id}}/cancel",
    "Cancel a PENDING or SENT command (409 otherwise)",
    "commands",
    response=res.CommandDetail,
)
async def cancel_command(request: web.Request) -> web.Response:
    svc, device_id = services(request), request.match_info["device_id"]
    command_id = request.match_info["command_id"]
    await commands.cancel(svc.store, org_id(request), device_id, command_id)
    found = await commands.get(svc.store, org_id(request), device_id, command_id)
    return reply(res.CommandDetail, found)


@routes.add(
    "POST",
    f"{API}/device-groups/{{group_id}}/commands",
    "Send one command to every member of a group, as a batch",
    "commands",
    body=commands.NewCommand,
    response=res.Batch,
    status=201,
)
async def create_group_command(request: web.Request) -> web.Response:
    svc = services(request)
    new = await decode(request, commands.NewCommand)
    created = await commands.create_for_group(
        svc.store, org_id(request), request.match_info["group_id"], new
    )
    assert created.batch_id is not None
    found = await commands.batch(svc.store, org_id(request), created.batch_id, page(request), None)
    return reply(res.Batch, {"batch_id": created.batch_id, **found}, 201)


@routes.add(
    "GET",
    f"{API}/command-batches/{{batch_id}}",
    "A group command: counts per status and the per-device commands",
    "commands",
    query=("limit", "cursor", "status"),
    response=res.Batch,
)
async def get_batch(request: web.Request) -> web.Response:
    found = await commands.batch(
        services(request).store,
        org_id(request),
        request.match_info["batch_id"],
        page(request),
        request.query.get("status"),
    )
    return reply(res.Batch, {"batch_id": found["id"], **found})
