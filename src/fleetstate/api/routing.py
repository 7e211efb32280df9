"""One table of routes: it registers the aiohttp handlers and is the source of the OpenAPI document,
so the document cannot forget a route (a test also checks the served routes against it)."""

import functools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from fleetstate.errors import Invalid

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    handler: Handler
    summary: str
    tag: str
    body: Any = None
    """The msgspec type the handler decodes (a tuple of types: any one of them)."""
    body_media: str = "application/json"
    response: Any = None
    """The msgspec type (or `list[...]`, `PageOf[...]`) the handler encodes, for the document."""
    status: int = 200
    auth: bool = True
    query: tuple[str, ...] = ()
    """Every query parameter the route reads; an `/api/` route answers 400 to any other."""
    required: tuple[str, ...] = ()
    """The query parameters among `query` that must be given."""
    params: dict[str, dict[str, Any]] = field(default_factory=dict)
    """JSON Schemas of this route's query parameters where they differ from the usual ones."""
    media: str = "application/json"
    """The media type of the success answer (text/html, text/event-stream, bytes...)."""
    responses: dict[int, str] = field(default_factory=dict)


class RouteTable:
    def __init__(self) -> None:
        self.routes: list[Route] = []

    def add(
        self, method: str, path: str, summary: str, tag: str, **options: Any
    ) -> Callable[[Handler], Handler]:
        def register(handler: Handler) -> Handler:
            self.routes.append(Route(method, path, handler, summary, tag, **options))
            return handler

        return register

    def install(self, app: web.Application) -> None:
        for r in self.routes:
            handler = _known_query(r) if r.path.startswith("/api/") else r.handler
            app.router.add_route(r.method, r.path, handler)

    def public_paths(self) -> set[tuple[str, str]]:
        return {(r.method, r.path) for r in self.routes if not r.auth}


def _known_query(route: Route) -> Handler:
    """The handler, refusing query parameters it would not read: a filter the server does not
    know must not be silently ignored (the client would act on an unfiltered answer)."""
    known = frozenset(route.query)

    @functools.wraps(route.handler)
    async def checked(request: web.Request) -> web.StreamResponse:
        unknown = sorted(set(request.query) - known)
        if unknown:
            allowed = ", ".join(route.query) or "none"
            raise Invalid(f"unknown query parameter {unknown[0]!r}; this path takes: {allowed}")
        return await route.handler(request)

    return checked
