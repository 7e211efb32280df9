"""The management REST API (`/api/v1/...`): thin handlers over the domain modules."""

from collections.abc import Mapping
from typing import get_args

from aiohttp import web

from fleetstate.api import downloads, uploads
from fleetstate.api import resources as res
from fleetstate.api.context import services
from fleetstate.api.http import decode, json_response, org_id, page, principal
from fleetstate.api.resources import reply
from fleetstate.api.routing import RouteTable
from fleetstate.domain.pagination import PageOf
from fleetstate.errors import Forbidden, Invalid
from fleetstate.service import artefacts, bindings, devices, groups, profiles, tenancy
from fleetstate.service.desired import DesiredDocument
from fleetstate.service.uploads import FinalizeUpload

routes = RouteTable()
API = "/api/v1"
ARTEFACT_ID = "{artefact_id:(?!upload-url$)[^/]+}"
"""Not `upload-url`, so that path answers 405 with `Allow: POST` to other methods."""


# -- tenancy -----------------------------------------------------------------------------------


@routes.add(
    "POST",
    f"{API}/organizations",
    "Create an organization (operator token only)",
    "tenancy",
    body=tenancy.NewOrganization,
    response=res.NewOrganizationAnswer,
    status=201,
)
async def create_organization(request: web.Request) -> web.Response:
    if not principal(request).is_operator:
        raise Forbidden("only the operator token may create organizations")
    new = await decode(request, tenancy.NewOrganization)
    created = await tenancy.create_organization(services(request).store, new)
    return reply(res.NewOrganizationAnswer, created, 201)


@routes.add(
    "GET",
    f"{API}/organizations/current",
    "The token's organization",
    "tenancy",
    response=res.Organization,
)
async def current_organization(request: web.Request) -> web.Response:
    found = await tenancy.get_organization(services(request).store, org_id(request))
    return reply(res.Organization, found)


@routes.add(
    "GET", f"{API}/tokens", "List API tokens (one page)", "tenancy", response=PageOf[res.Token]
)
async def list_tokens(request: web.Request) -> web.Response:
    items = await tenancy.list_tokens(services(request).store, org_id(request))
    return reply(PageOf[res.Token], {"items": items, "next_cursor": None})


@routes.add(
    "POST",
    f"{API}/tokens",
    "Create an API token (secret shown once)",
    "tenancy",
    body=tenancy.NewToken,
    response=res.NewTokenAnswer,
    status=201,
)
async def create_token(request: web.Request) -> web.Response:
    new = await decode(request, tenancy.NewToken)
    created = await tenancy.create_token(services(request).store, org_id(request), new)
    return reply(res.NewTokenAnswer, created, 201)


@routes.add(
    "DELETE",
    f"{API}/tokens/{{token_id}}",
    "Revoke an API token",
    "tenancy",
    status=204,
)
async def delete_token(request: web.Request) -> web.Response:
    caller, token_id = principal(request), request.match_info["token_id"]
    await tenancy.delete_token(
        services(request).store, caller.org_id, token_id, by_operator=caller.is_operator
    )
    return web.Response(status=204)


# -- profiles ----------------------------------------------------------------------------------


def _profile_routes(
    kind: profiles.Kind,
    path: str,
    body: type[profiles.NewDeviceProfile | profiles.NewSensorProfile],
    shown: type[res.SensorProfile],
) -> None:
    label = f"{kind} profile"

    @routes.add(
        "GET",
        f"{API}/{path}",
        f"List {label}s",
        "profiles",
        query=("limit", "cursor"),
        response=PageOf[shown],  # type: ignore[valid-type]
    )
    async def list_(request: web.Request) -> web.Response:
        result = await profiles.list_page(
            services(request).store, org_id(request), kind, page(request)
        )
        return reply(PageOf[shown], result)  # type: ignore[valid-type]

    @routes.add(
        "POST",
        f"{API}/{path}",
        f"Create a {label} with its JSON Schema",
        "profiles",
        body=body,
        response=shown,
        status=201,
    )
    async def create(request: web.Request) -> web.Response:
        new = await decode(request, body)
        created = await profiles.create(services(request).store, org_id(request), kind, new)
        return reply(shown, created, 201)

    @routes.add("GET", f"{API}/{path}/{{profile_id}}", f"Get a {label}", "profiles", response=shown)
    async def get(request: web.Request) -> web.Response:
        found = await profiles.get(
            services(request).store, org_id(request), kind, request.match_info["profile_id"]
        )
        return reply(shown, found)

    @routes.add(
        "DELETE",
        f"{API}/{path}/{{profile_id}}",
        f"Delete an unused {label}",
        "profiles",
        status=204,
    )
    async def delete(request: web.Request) -> web.Response:
        await profiles.delete(
            services(request).store, org_id(request), kind, request.match_info["profile_id"]
        )
        return web.Response(status=204)


_profile_routes("device", "device-profiles", profiles.NewDeviceProfile, res.DeviceProfile)
_profile_routes("sensor", "sensor-profiles", profiles.NewSensorProfile, res.SensorProfile)


# -- devices -----------------------------------------------------------------------------------


@routes.add(
    "GET",
    f"{API}/devices",
    "List devices; q searches name, id and serial; the other filters combine with it",
    "devices",
    query=("limit", "cursor", "q", "online", "config_status", "profile_id", "group_id"),
    response=PageOf[res.DeviceSummary],
)
async def list_devices(request: web.Request) -> web.Response:
    query = request.query
    wanted = devices.DeviceFilter(
        online=_flag(query, "online"),
        config_status=query.get("config_status"),
        profile_id=query.get("profile_id"),
        group_id=query.get("group_id"),
    )
    store = services(request).store
    result = await devices.list_page(store, org_id(request), page(request), query.get("q"), wanted)
    return reply(PageOf[res.DeviceSummary], result)


def _flag(query: Mapping[str, str], name: str) -> bool | None:
    value = query.get(name)
    if value is None:
        return None
    if value not in ("true", "false"):
        raise Invalid(f"{name} must be true or false")
    return value == "true"


@routes.add(
    "POST",
    f"{API}/devices",
    "Create a device (access_key shown once)",
    "devices",
    body=devices.NewDevice,
    response=res.NewDeviceAnswer,
    status=201,
)
async def create_device(request: web.Request) -> web.Response:
    svc = services(request)
    new = await decode(request, devices.NewDevice)
    created = await devices.create(svc.store, org_id(request), new)
    device = await devices.get(svc.store, org_id(request), created.device_id)
    return reply(res.NewDeviceAnswer, {**device, "access_key": created.access_key}, 201)


@routes.add("GET", f"{API}/devices/{{device_id}}", "Get a device", "devices", response=res.Device)
async def get_device(request: web.Request) -> web.Response:
    found = await devices.get(
        services(request).store, org_id(request), request.match_info["device_id"]
    )
    return reply(res.Device, found)


@routes.add(
    "PATCH",
    f"{API}/devices/{{device_id}}",
    "Rename a device, set its groups or components",
    "devices",
    body=devices.DevicePatch,
    response=res.Device,
)
async def patch_device(request: web.Request) -> web.Response:
    svc, device_id = services(request), request.match_info["device_id"]
    change = await decode(request, devices.DevicePatch)
    await devices.patch(svc.store, org_id(request), device_id, change)
    return reply(res.Device, await devices.get(svc.store, org_id(request), device_id))


@routes.add("DELETE", f"{API}/devices/{{device_id}}", "Delete a device", "devices", status=204)
async def delete_device(request: web.Request) -> web.Response:
    svc, device_id = services(request), request.match_info["device_id"]
    await devices.delete(svc.store, org_id(request), device_id)  # its MQTT session is over
    return web.Response(status=204)


@routes.add(
    "POST",
    f"{API}/devices/{{device_id}}/access-key",
    "Rotate the access key (the old one stops working at once)",
    "devices",
    response=res.AccessKey,
)
async def rotate_key(request: web.Request) -> web.Response:
    svc, device_id = services(request), request.match_info["device_id"]
    key = await devices.rotate_key(svc.store, org_id(request), device_id)  # old session over
    return reply(res.AccessKey, {"device_id": device_id, "access_key": key})


@routes.add(
    "GET",
    f"{API}/devices/{{device_id}}/desired-state",
    "Effective desired document; with explain=true, every candidate per slot and why",
    "desired state",
    query=("explain",),
    response=(DesiredDocument, res.Resolution),
)
async def desired_state(request: web.Request) -> web.Response:
    svc, device_id = services(request), request.match_info["device_id"]
    resolution = await bindings.resolution(svc.store, org_id(request), device_id)
    explain = request.query.get("explain", "false").lower()
    if explain not in ("true", "false", "1", "0"):
        raise Invalid("explain must be true or false")
    if explain in ("true", "1"):
        return reply(res.Resolution, resolution)
    # The stored document was encoded from a DesiredDocument (whose raw `content` cannot be
    # decoded back into one): it is sent as it was stored.
    return json_response(resolution["document"])


# -- groups ------------------------------------------------------------------------------------


@routes.add(
    "GET",
    f"{API}/device-groups",
    "List device groups",
    "groups",
    query=("limit", "cursor"),
    response=PageOf[res.GroupSummary],
)
async def list_groups(request: web.Request) -> web.Response:
    found = await groups.list_page(services(request).store, org_id(request), page(request))
    return reply(PageOf[res.GroupSummary], found)


@routes.add(
    "POST",
    f"{API}/device-groups",
    "Create a device group",
    "groups",
    body=groups.NewGroup,
    response=res.Group,
    status=201,
)
async def create_group(request: web.Request) -> web.Response:
    svc = services(request)
    new = await decode(request, groups.NewGroup)
    group_id, _changes = await groups.create(svc.store, org_id(request), new)
    return reply(res.Group, await groups.get(svc.store, org_id(request), group_id), 201)


@routes.add(
    "GET", f"{API}/device-groups/{{group_id}}", "Get a device group", "groups", response=res.Group
)
async def get_group(request: web.Request) -> web.Response:
    found = await groups.get(
        services(request).store, org_id(request), request.match_info["group_id"]
    )
    return reply(res.Group, found)


@routes.add(
    "DELETE", f"{API}/device-groups/{{group_id}}", "Delete a device group", "groups", status=204
)
async def delete_group(request: web.Request) -> web.Response:
    svc = services(request)
    await groups.delete(svc.store, org_id(request), request.match_info["group_id"])
    return web.Response(status=204)


async def _membership(request: web.Request, *, member: bool) -> web.Response:
    svc = services(request)
    await groups.set_member(
        svc.store,
        org_id(request),
        request.match_info["group_id"],
        request.match_info["device_id"],
        member=member,
    )
    return web.Response(status=204)


@routes.add(
    "PUT",
    f"{API}/device-groups/{{group_id}}/devices/{{device_id}}",
    "Add a device to a group",
    "groups",
    status=204,
)
async def add_member(request: web.Request) -> web.Response:
    return await _membership(request, member=True)


@routes.add(
    "DELETE",
    f"{API}/device-groups/{{group_id}}/devices/{{device_id}}",
    "Remove a device from a group",
    "groups",
    status=204,
)
async def remove_member(request: web.Request) -> web.Response:
    return await _membership(request, member=False)


# -- artefacts ---------------------------------------------------------------------------------


@routes.add(
    "GET",
    f"{API}/config-artefacts",
    "List config artefacts",
    "artefacts",
    query=("limit", "cursor", "name"),
    response=PageOf[res.Artefact],
)
async def list_artefacts(request: web.Request) -> web.Response:
    result = await artefacts.list_page(
        services(request).store, org_id(request), page(request), request.query.get("name")
    )
    return reply(PageOf[res.Artefact], result)


@routes.add(
    "POST",
    f"{API}/config-artefacts",
    "Create the next version of a config artefact (validated against its profile);"
    " the body is {name, profile_id, content} or, after an upload URL, {upload_id}",
    "artefacts",
    body=(artefacts.NewArtefact, FinalizeUpload),
    response=res.Artefact,
    status=201,
)
async def create_artefact(request: web.Request) -> web.Response:
    if (finalized := await uploads.finalize_if_upload(request)) is not None:
        return finalized  # the body was {upload_id}: the upload-URL flow's second step
    new = await decode(request, artefacts.NewArtefact)
    created = await artefacts.create_inline(services(request).store, org_id(request), new)
    return reply(res.Artefact, created, 201)


@routes.add(
    "GET",
    f"{API}/config-artefacts/{ARTEFACT_ID}",
    "Get a config artefact",
    "artefacts",
    response=res.Artefact,
)
async def get_artefact(request: web.Request) -> web.Response:
    found = await artefacts.get(
        services(request).store, org_id(request), request.match_info["artefact_id"]
    )
    return reply(res.Artefact, found)


@routes.add(
    "GET",
    f"{API}/config-artefacts/{ARTEFACT_ID}/content",
    "The artefact's exact stored bytes (with the content type it was created with)",
    "artefacts",
    media="*/*",
    responses={
        206: "the requested range (local blob store)",
        302: "redirect to a fresh presigned URL (S3 blob store)",
    },
)
async def artefact_content(request: web.Request) -> web.StreamResponse:
    found = await artefacts.inline_content(
        services(request).store, org_id(request), request.match_info["artefact_id"]
    )
    if found is None:  # kept in the blob store
        return await downloads.blob_content(request, request.match_info["artefact_id"])
    data, content_type = found
    return web.Response(body=data, content_type=content_type)


@routes.add(
    "DELETE",
    f"{API}/config-artefacts/{ARTEFACT_ID}",
    "Delete an artefact that nothing uses (409 while bound)",
    "artefacts",
    status=204,
)
async def delete_artefact(request: web.Request) -> web.Response:
    svc = services(request)
    blob_key = await artefacts.delete(svc.store, org_id(request), request.match_info["artefact_id"])
    if blob_key is not None:
        await svc.blobs.delete(blob_key)
    return web.Response(status=204)


# -- bindings ----------------------------------------------------------------------------------


@routes.add(
    "GET",
    f"{API}/desired-state-bindings",
    "List bindings with counts of device status per binding",
    "bindings",
    query=("limit", "cursor", "target_type", "target_id"),
    response=PageOf[res.BindingSummary],
)
async def list_bindings(request: web.Request) -> web.Response:
    target = _target_query(request, required=False)
    result = await bindings.list_page(
        services(request).store, org_id(request), page(request), target
    )
    return reply(PageOf[res.BindingSummary], result)


def _target_query(request: web.Request, *, required: bool) -> tuple[str | None, str | None]:
    """The target filter: either or both of type and id, both when `required`."""
    target_type, target_id = request.query.get("target_type"), request.query.get("target_id")
    if required and (target_type is None or target_id is None):
        raise Invalid("give both target_type and target_id")
    if target_type is not None and target_type not in get_args(bindings.TargetType):
        raise Invalid(f"target_type must be one of {', '.join(get_args(bindings.TargetType))}")
    if target_id == "":
        raise Invalid("target_id must not be empty")
    return target_type, target_id


@routes.add(
    "PUT",
    f"{API}/desired-state-bindings",
    "Bind an artefact to a target (upsert per target and slot)",
    "bindings",
    body=bindings.BindingSpec,
    response=res.Binding,
    responses={201: "created", 200: "replaced"},
)
async def put_binding(request: web.Request) -> web.Response:
    svc = services(request)
    spec = await decode(request, bindings.BindingSpec)
    result = await bindings.upsert(svc.store, org_id(request), spec)
    found = await bindings.get(svc.store, org_id(request), result.binding_id)
    return reply(res.Binding, found, 201 if result.created else 200)


@routes.add(
    "DELETE",
    f"{API}/desired-state-bindings",
    "Delete every binding of one target",
    "bindings",
    status=204,
    query=("target_type", "target_id"),
    required=("target_type", "target_id"),
)
async def delete_target_bindings(request: web.Request) -> web.Response:
    svc = services(request)
    target_type, target_id = _target_query(request, required=True)
    assert target_type is not None  # required=True saw to both
    assert target_id is not None
    await bindings.delete_target(svc.store, org_id(request), target_type, target_id)
    return web.Response(status=204)


@routes.add(
    "GET",
    f"{API}/desired-state-bindings/{{binding_id}}",
    "A binding with each device's reported version, status and hash",
    "bindings",
    response=res.Binding,
)
async def get_binding(request: web.Request) -> web.Response:
    found = await bindings.get(
        services(request).store, org_id(request), request.match_info["binding_id"]
    )
    return reply(res.Binding, found)


@routes.add(
    "DELETE",
    f"{API}/desired-state-bindings/{{binding_id}}",
    "Delete a binding",
    "bindings",
    status=204,
)
async def delete_binding(request: web.Request) -> web.Response:
    svc = services(request)
    await bindings.delete(svc.store, org_id(request), request.match_info["binding_id"])
    return web.Response(status=204)
