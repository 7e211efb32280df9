"""Request decoding, JSON answers, the error middleware and authentication: a Bearer token, or
the web app's session cookie (state-changing cookie requests must carry the CSRF header)."""

import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import msgspec
from aiohttp import web

from fleetstate.api import numbers
from fleetstate.api.context import services
from fleetstate.domain.pagination import Page, parse_page
from fleetstate.domain.throttle import Throttled
from fleetstate.errors import (
    Conflict,
    FleetstateError,
    Forbidden,
    Invalid,
    NotFound,
    RateLimited,
    SchemaInvalid,
    TooLarge,
    Unauthorized,
)
from fleetstate.service import sessions
from fleetstate.service.tenancy import Authenticator, Principal

log = logging.getLogger(__name__)
T = TypeVar("T")

STATUS = {
    Invalid: 400,
    Unauthorized: 401,
    Forbidden: 403,
    NotFound: 404,
    Conflict: 409,
    TooLarge: 413,
    SchemaInvalid: 422,
    Throttled: 429,
    RateLimited: 429,
}
PRINCIPAL: web.AppKey[Authenticator] = web.AppKey("authenticator", Authenticator)
CALLER: web.RequestKey[Principal] = web.RequestKey("caller", Principal)
SESSION_COOKIE = "fleetstate_session"
"""The web app's session secret (`sessions.py`), in an HttpOnly, SameSite=Strict cookie."""
CSRF_HEADER = "X-Fleetstate-CSRF"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_encoder = msgspec.json.Encoder()


def json_response(body: Any, status: int = 200) -> web.Response:
    return web.Response(body=_encoder.encode(body), status=status, content_type="application/json")


def error_response(status: int, code: str, message: str, details: Any = None) -> web.Response:
    body = {"error": {"code": code, "message": message, "details": details}}
    return json_response(body, status)


async def decode(request: web.Request, kind: type[T]) -> T:
    body = await request.read()
    if not body:
        raise Invalid("a JSON body is required")
    try:
        return numbers.decode(body, kind)
    except msgspec.ValidationError as exc:
        raise Invalid(f"invalid body: {exc}") from exc
    except msgspec.DecodeError as exc:
        raise Invalid(f"malformed JSON: {exc}") from exc


def page(request: web.Request) -> Page:
    return parse_page(request.query.get("limit"), request.query.get("cursor"))


def principal(request: web.Request) -> Principal:
    return request[CALLER]


def org_id(request: web.Request) -> str:
    return principal(request).org_id


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def errors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except FleetstateError as exc:
        status = next((s for cls, s in STATUS.items() if isinstance(exc, cls)), 500)
        if request.path.startswith("/v1/"):
            response = json_response({"error": exc.message}, status)  # the device API's shape
        else:
            response = error_response(status, exc.code, exc.message, exc.details)
        if isinstance(exc, Throttled):
            response.headers["Retry-After"] = str(exc.retry_after)
        return response
    except web.HTTPException as exc:
        if exc.status < 400 or not request.path.startswith(("/api/", "/v1/")):
            raise
        if request.path.startswith("/v1/"):
            answer = json_response({"error": exc.reason}, exc.status)
        else:
            answer = error_response(exc.status, _code_for(exc), exc.reason)
        if "Allow" in exc.headers:  # a 405 must say which methods the path takes (RFC 9110)
            answer.headers["Allow"] = exc.headers["Allow"]
        return answer


def _code_for(exc: web.HTTPException) -> str:
    return {404: "not_found", 405: "method_not_allowed", 413: "too_large"}.get(exc.status, "error")


def auth_middleware(public: set[str]) -> Any:
    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path.startswith("/api/") and request.path not in public:
            request[CALLER] = await _authenticate(request)
        return await handler(request)

    return middleware


async def _authenticate(request: web.Request) -> Principal:
    cookie = request.cookies.get(SESSION_COOKIE)
    # An Authorization header always decides (Bearer clients see no change); the web app's
    # session cookie is the fallback when there is none.
    if "Authorization" not in request.headers and cookie:
        return await _authenticate_cookie(request, cookie)
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("send 'Authorization: Bearer <api token>'")
    return await request.app[PRINCIPAL].authenticate(token.strip(), request.remote)


async def _authenticate_cookie(request: web.Request, secret: str) -> Principal:
    # Browsers attach cookies to cross-site requests too. A custom header cannot be sent by a
    # cross-site form, and a cross-site fetch with it needs a CORS preflight we never allow.
    if request.method not in SAFE_METHODS and request.headers.get(CSRF_HEADER) != "1":
        raise Forbidden(f"a request authenticated by the session cookie needs '{CSRF_HEADER}: 1'")
    # Not throttled: a session secret has 256 random bits, and a stale cookie is no guess.
    caller = await sessions.principal(services(request).store, secret)
    if caller is None:
        raise Unauthorized("the web session has ended: sign in again")
    return caller


async def check_device_key(request: web.Request, device_id: str, key: str) -> bool:
    """Whether `key` is the device's current access key. Raises `Throttled` while the source
    address or the device id is blocked, before the key is looked at (a right one included)."""
    svc = services(request)
    keys = (f"device:{device_id}", f"addr:{request.remote}")
    svc.device_throttle.check(*keys)
    if not key:
        return False  # nothing was guessed
    if await svc.gateway.authenticate(device_id, key):
        return True
    log.warning("refused access key of device %r from %s", device_id[:64], request.remote)
    for blocked in svc.device_throttle.failed(*keys):
        log.warning(
            "%s blocked for %.0f s after repeated failures", blocked, svc.device_throttle.block_s
        )
    return False
