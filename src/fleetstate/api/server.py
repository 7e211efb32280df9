"""Builds the aiohttp application: middlewares, route tables, and the services they use."""

from aiohttp import web

from fleetstate.api import (
    audit,
    commands,
    device_api,
    device_info,
    dumps,
    events,
    firmware_files,
    management,
    operations,
    provisioning,
    telemetry,
    uploads,
    webapp,
)
from fleetstate.api.context import SERVICES, Services
from fleetstate.api.http import PRINCIPAL, auth_middleware, errors_middleware
from fleetstate.api.observability import observe
from fleetstate.api.routing import RouteTable
from fleetstate.domain.throttle import FailureThrottle
from fleetstate.service.dumps import Dumps
from fleetstate.service.http_presence import HttpPresence
from fleetstate.service.tenancy import Authenticator

MAX_BODY = 1024 * 1024


def build_app(svc: Services) -> web.Application:
    table = RouteTable()
    # Each feature's route table is listed here.
    for part in (
        management.routes,
        operations.routes,
        events.routes,
        uploads.routes,
        uploads.blob_table(svc.blobs),
        device_api.routes,
        device_info.device_routes,
        firmware_files.device_routes,
        dumps.device_routes,
        dumps.routes,
        audit.routes,
        provisioning.routes,
        firmware_files.routes,
        device_info.routes,
        telemetry.routes,
        commands.routes,
        webapp.routes,  # last: its /{slug}/... pages must not shadow any API path
    ):
        table.routes.extend(part.routes)
    public = {path for _method, path in table.public_paths()}
    app = web.Application(
        middlewares=[observe, errors_middleware, auth_middleware(public)],
        client_max_size=MAX_BODY,
    )
    app[SERVICES] = svc
    app[device_api.HTTP_PRESENCE] = HttpPresence(svc.store, svc.events, svc.config.presence)
    app[dumps.DUMPS] = Dumps(svc.store, svc.blobs, svc.config.dumps, svc.dump_locks)
    app[PRINCIPAL] = Authenticator(svc.store, FailureThrottle.from_config(svc.config.throttle))
    app[operations.ALL_ROUTES] = table
    table.install(app)
    return app
