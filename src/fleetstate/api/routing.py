"""One table of routes: it registers the aiohttp handlers and is the source of the OpenAPI document,
so the document cannot forget a route (a test also checks the served routes against it)."""

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    handler: Handler
    summary: str
    tag: str
    body: Any = None
    response: Any = None
    """The msgspec type (or `list[...]`, `Page[...]`) the handler encodes, for the document."""
    status: int = 200
    auth: bool = True
    query: tuple[str, ...] = ()
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
            app.router.add_route(r.method, r.path, r.handler)

    def public_paths(self) -> set[tuple[str, str]]:
        return {(r.method, r.path) for r in self.routes if not r.auth}
