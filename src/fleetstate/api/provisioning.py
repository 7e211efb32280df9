"""Hardware keys: operators create, list and revoke the keys devices provision themselves with
(management API, SPEC section 5). Bearer-token auth and the management error shape."""

from aiohttp import web

from fleetstate.api import resources as res
from fleetstate.api.context import services
from fleetstate.api.http import decode, org_id, page
from fleetstate.api.resources import reply
from fleetstate.api.routing import RouteTable
from fleetstate.domain.pagination import PageOf
from fleetstate.service import provisioning

routes = RouteTable()
API = "/api/v1"


@routes.add(
    "GET",
    f"{API}/hardware-keys",
    "List hardware keys",
    "provisioning",
    query=("limit", "cursor"),
    response=PageOf[res.HardwareKey],
)
async def list_hardware_keys(request: web.Request) -> web.Response:
    result = await provisioning.list_keys(services(request).store, org_id(request), page(request))
    return reply(PageOf[res.HardwareKey], result)


@routes.add(
    "POST",
    f"{API}/hardware-keys",
    "Create a hardware key for a device profile (the key is shown once)",
    "provisioning",
    body=provisioning.NewHardwareKey,
    response=res.NewHardwareKeyAnswer,
    status=201,
)
async def create_hardware_key(request: web.Request) -> web.Response:
    new = await decode(request, provisioning.NewHardwareKey)
    created = await provisioning.create_key(services(request).store, org_id(request), new)
    return reply(res.NewHardwareKeyAnswer, created, 201)


@routes.add(
    "GET",
    f"{API}/hardware-keys/{{key_id}}",
    "Get a hardware key",
    "provisioning",
    response=res.HardwareKey,
)
async def get_hardware_key(request: web.Request) -> web.Response:
    found = await provisioning.get_key(
        services(request).store, org_id(request), request.match_info["key_id"]
    )
    return reply(res.HardwareKey, found)


@routes.add(
    "DELETE",
    f"{API}/hardware-keys/{{key_id}}",
    "Revoke a hardware key (it stays listed as revoked)",
    "provisioning",
    status=204,
)
async def delete_hardware_key(request: web.Request) -> web.Response:
    await provisioning.revoke_key(
        services(request).store, org_id(request), request.match_info["key_id"]
    )
    return web.Response(status=204)


@routes.add(
    "POST",
    f"{API}/hardware-keys/{{key_id}}/revoke",
    "Revoke a hardware key",
    "provisioning",
    response=res.HardwareKey,
)
async def revoke_hardware_key(request: web.Request) -> web.Response:
    revoked = await provisioning.revoke_key(
        services(request).store, org_id(request), request.match_info["key_id"]
    )
    return reply(res.HardwareKey, revoked)
