"""A device's info document and licenses: operators set the info and offer licenses (management
API, SPEC section 5); the device reads its info and answers its licenses (device API, section 4)."""

from typing import Any

from aiohttp import web

from fleetstate.api import device_answers as answers
from fleetstate.api import resources as res
from fleetstate.api.context import services
from fleetstate.api.device_api import DEVICE, Success, device_route
from fleetstate.api.http import decode, json_response, org_id
from fleetstate.api.resources import reply
from fleetstate.api.routing import RouteTable
from fleetstate.domain.pagination import PageOf
from fleetstate.service import licenses

routes = RouteTable()
device_routes = RouteTable()
API = "/api/v1"


# -- management API --------------------------------------------------------------------------------


@routes.add(
    "GET",
    f"{API}/devices/{{device_id}}/info",
    "The device's info document",
    "devices",
    response=res.DeviceInfo,
)
async def get_info(request: web.Request) -> web.Response:
    found = await licenses.operator_info(
        services(request).store, org_id(request), request.match_info["device_id"]
    )
    return reply(res.DeviceInfo, found)


@routes.add(
    "PUT",
    f"{API}/devices/{{device_id}}/info",
    "Replace the device's info document (any JSON object; info_version counts changes)",
    "devices",
    body=dict[str, Any],
    response=res.DeviceInfo,
)
async def put_info(request: web.Request) -> web.Response:
    info = await decode(request, dict[str, Any])
    found = await licenses.set_info(
        services(request).store, org_id(request), request.match_info["device_id"], info
    )
    return reply(res.DeviceInfo, found)


@routes.add(
    "GET",
    f"{API}/devices/{{device_id}}/licenses",
    "The device's licenses and answers (one page)",
    "devices",
    response=PageOf[res.License],
)
async def list_licenses(request: web.Request) -> web.Response:
    found = await licenses.list_for_operator(
        services(request).store, org_id(request), request.match_info["device_id"]
    )
    return reply(PageOf[res.License], {"items": found, "next_cursor": None})


@routes.add(
    "POST",
    f"{API}/devices/{{device_id}}/licenses",
    "Add a license to the device, or ask it to update or remove one",
    "devices",
    body=licenses.NewLicense,
    response=res.License,
    status=201,
)
async def offer_license(request: web.Request) -> web.Response:
    store, device_id = services(request).store, request.match_info["device_id"]
    await licenses.operator_info(store, org_id(request), device_id)  # 404 before judging the body
    new = await decode(request, licenses.NewLicense)
    found = await licenses.offer(store, org_id(request), device_id, new)
    return reply(res.License, found, 201)


# -- device API ------------------------------------------------------------------------------------


@device_route(
    device_routes,
    "GET",
    DEVICE + "/licenses",
    "Licenses waiting for the device's answer, each with add, remove or update: true",
    response=list[licenses.DeviceLicense],
)
async def get_licenses(request: web.Request, device_id: str) -> web.Response:
    return json_response(await licenses.pending(services(request).store, device_id))


@device_route(
    device_routes,
    "POST",
    DEVICE + "/licenses",
    "Answer a license: inuse, removed or error",
    body=licenses.LicenseAnswer,
    response=Success,
)
async def answer_license(request: web.Request, device_id: str) -> web.Response:
    given = await decode(request, licenses.LicenseAnswer)
    await licenses.answer(services(request).store, device_id, given)
    return json_response(Success())


@device_route(
    device_routes,
    "GET",
    DEVICE + "/info",
    "The operator-set info document and its version",
    response=answers.DeviceInfo,
)
async def device_get_info(request: web.Request, device_id: str) -> web.Response:
    return json_response(await licenses.info_of(services(request).store, device_id))
