"""The web app (SPEC section 6): sign-in with an API token, the device list, a device's page.

Pages are small `string.Template` documents and every value is HTML-escaped as it is substituted.
Beyond a page's own header, what a page shows is fetched by its script from the REST API and
inserted as text, never as markup. Signing in with an API token starts a server-side session
(`sessions.py`) whose secret goes into an HttpOnly, SameSite=Strict cookie that the REST API also
accepts (`http.py`); signing out ends it. A page of another organization answers 404, exactly
like another organization's id in the API.
"""

import functools
import hashlib
import html
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from string import Template
from urllib.parse import quote, urlsplit

from aiohttp import web

from fleetstate.api.context import services
from fleetstate.api.http import PRINCIPAL, SESSION_COOKIE, org_id
from fleetstate.api.resources import DeviceCounts, SignIn, reply
from fleetstate.api.routing import RouteTable
from fleetstate.domain.pagination import MAX_LIMIT, Page
from fleetstate.domain.throttle import Throttled
from fleetstate.errors import Forbidden, NotFound, Unauthorized
from fleetstate.service import devices, sessions
from fleetstate.service.tenancy import Principal

routes = RouteTable()
TAG = "web app"
WEB = Path(__file__).resolve().parent.parent / "web"
# The first path segments of the REST API, the device API, blobs and static files: without the
# lookahead, `GET /v1/devices` (the device API's POST-only path) would land on a page.
SLUG = "{slug:(?!(?:api|v1|blobs|static)/)[a-z0-9][a-z0-9-]*}"
CONFIG_STATUSES = ("ACCEPTED", "IN_PROGRESS", "REJECTED", "FAILED", "PENDING")
_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:;"
    " connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self';"
    " frame-ancestors 'none'"
)
_PAGE_HEADERS = {
    "Content-Security-Policy": _CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",  # a page depends on who is signed in
}
_TYPES = {".css": "text/css", ".js": "text/javascript", ".svg": "image/svg+xml"}


# -- rendering -----------------------------------------------------------------------------------


@functools.cache
def _template(name: str) -> Template:
    return Template((WEB / "templates" / name).read_text(encoding="utf-8"))


def _fill(template: str, /, **values: str) -> str:
    """A template with every value HTML-escaped: the only way a value reaches a page."""
    return _template(template).substitute({k: html.escape(v) for k, v in values.items()})


def _page(
    title: str,
    body: str,
    principal: Principal | None,
    scripts: tuple[str, ...] = (),
    status: int = 200,
) -> web.Response:
    """`body` is the output of `_fill`, so it is already safe to insert."""
    nav = _fill("nav.html", slug=principal.org_slug) if principal else ""
    tags = "".join(f'<script type="module" src="/static/{name}"></script>' for name in scripts)
    text = _template("layout.html").substitute(
        title=html.escape(title), nav=nav, body=body, scripts=tags
    )
    return web.Response(text=text, status=status, content_type="text/html", headers=_PAGE_HEADERS)


def _not_found(principal: Principal) -> web.HTTPNotFound:
    page = _page("Not found", _fill("notfound.html", slug=principal.org_slug), principal, (), 404)
    return web.HTTPNotFound(text=page.text, content_type="text/html", headers=_PAGE_HEADERS)


# -- the session ---------------------------------------------------------------------------------


async def _signed_in(request: web.Request) -> Principal | None:
    """The caller of the request's live session; None without one (or once it ended)."""
    secret = request.cookies.get(SESSION_COOKIE)
    if not secret:
        return None
    return await sessions.principal(services(request).store, secret)


async def _member(request: web.Request) -> Principal:
    """The signed-in caller, when the page's organization is theirs."""
    principal = await _signed_in(request)
    if principal is None:
        raise web.HTTPSeeOther(f"/signin?next={quote(request.path_qs, safe='/')}")
    if principal.org_slug != request.match_info["slug"]:
        raise _not_found(principal)
    return principal


def _same_origin(request: web.Request) -> None:
    """Sign-in and sign-out are plain forms, so they cannot carry the CSRF header: refuse posts
    that the browser says came from another site (Fetch Metadata, else the Origin header)."""
    site = request.headers.get("Sec-Fetch-Site")
    if site is not None:  # the browser's own verdict; Origin vs Host can differ behind a proxy
        same = site in ("same-origin", "none")
    else:
        origin = request.headers.get("Origin")
        same = origin is None or urlsplit(origin).netloc == request.host
    if not same:
        raise Forbidden("this form may only be posted from this site")


def _local_path(target: str) -> str | None:
    """Where to go after signing in: only a path on this site (no `//host` or `/\\host`, and no
    control characters that would break the Location header)."""
    ok = target.startswith("/") and not target.startswith(("//", "/\\")) and target.isprintable()
    return target if ok else None


def _signin_form(next_path: str, error: str = "", status: int = 200) -> web.Response:
    body = _fill("signin.html", next=next_path, error=error)
    return _page("Sign in", body, None, (), status)


# -- pages ---------------------------------------------------------------------------------------


@routes.add(
    "GET",
    "/",
    "Web app: the organization's devices, or sign-in",
    TAG,
    auth=False,
    status=303,
    media="text/html",
)
async def web_home(request: web.Request) -> web.Response:
    principal = await _signed_in(request)
    raise web.HTTPSeeOther(f"/{principal.org_slug}/devices" if principal else "/signin")


@routes.add(
    "GET",
    "/signin",
    "Web app: the sign-in page",
    TAG,
    auth=False,
    query=("next",),
    media="text/html",
)
async def web_signin_page(request: web.Request) -> web.Response:
    return _signin_form(request.query.get("next", ""))


@routes.add(
    "POST",
    "/signin",
    "Web app: check an API token (form field `token`) and start a session (cookie)",
    TAG,
    auth=False,
    status=303,
    media="text/html",
    body=SignIn,
    body_media="application/x-www-form-urlencoded",
    responses={
        401: "the token was not accepted",
        403: "posted from another site",
        429: "too many failed sign-ins from this address or for this token (Retry-After)",
    },
)
async def web_signin(request: web.Request) -> web.Response:
    _same_origin(request)
    try:
        form = await request.post()
    except ValueError as exc:  # e.g. multipart/form-data without a boundary
        raise web.HTTPBadRequest(text=f"unreadable form: {exc}") from exc
    token, next_path = str(form.get("token", "")).strip(), str(form.get("next", ""))
    authenticator = request.app[PRINCIPAL]
    try:
        principal = await authenticator.authenticate(token, request.remote) if token else None
    except Unauthorized:
        principal = None
    except Throttled as exc:
        wait = f"Too many failed sign-ins: try again in {exc.retry_after} s."
        refused = _signin_form(next_path, wait, 429)
        refused.headers["Retry-After"] = str(exc.retry_after)
        return refused
    if principal is None:
        return _signin_form(next_path, "That token was not accepted.", 401)
    target = _local_path(next_path) or f"/{principal.org_slug}/devices"
    svc = services(request)
    secret = await sessions.create(svc.store, principal, svc.config.web.session_ttl_s)
    response = web.Response(status=303, headers={"Location": target})
    # No Max-Age: the cookie ends with the browser session, the session itself at the latest
    # after [web] session_ttl_s. Secure whenever served over https.
    response.set_cookie(
        SESSION_COOKIE, secret, path="/", httponly=True, samesite="Strict", secure=request.secure
    )
    return response


@routes.add(
    "POST",
    "/signout",
    "Web app: end the session and clear its cookie",
    TAG,
    auth=False,
    status=303,
    media="text/html",
    responses={403: "posted from another site"},
)
async def web_signout(request: web.Request) -> web.Response:
    _same_origin(request)
    secret = request.cookies.get(SESSION_COOKIE)
    if secret:
        await sessions.end(services(request).store, secret)
    response = web.Response(status=303, headers={"Location": "/signin"})
    response.del_cookie(
        SESSION_COOKIE, path="/", httponly=True, samesite="Strict", secure=request.secure
    )
    return response


@routes.add(
    "GET",
    f"/{SLUG}/devices",
    "Web app: the organization's devices with presence, firmware and config convergence",
    TAG,
    auth=False,
    query=("q",),
    media="text/html",
    responses={303: "not signed in: to the sign-in page", 404: "another organization"},
)
async def web_devices(request: web.Request) -> web.Response:
    principal = await _member(request)
    body = _fill("devices.html", slug=principal.org_slug, q=request.query.get("q", ""))
    return _page("Devices", body, principal, ("devices.js",))


@routes.add(
    "GET",
    f"/{SLUG}/devices/{{device_id}}",
    "Web app: a device's page (overview, commands, configuration)",
    TAG,
    auth=False,
    media="text/html",
    responses={303: "not signed in: to the sign-in page", 404: "unknown or another org's"},
)
async def web_device(request: web.Request) -> web.Response:
    principal = await _member(request)
    store, device_id = services(request).store, request.match_info["device_id"]
    try:
        device = await devices.get(store, principal.org_id, device_id)
    except NotFound:
        raise _not_found(principal) from None
    body = _fill(
        "device.html",
        slug=principal.org_slug,
        device_id=device["id"],
        name=device["name"],
        profile_id=device["profile_id"],
    )
    return _page(device["name"], body, principal, ("device.js",))


# -- data only the web app asks for ----------------------------------------------------------------


@routes.add(
    "GET",
    "/api/v1/device-summary",
    "Counts over the organization's devices (those matching q): online, and per config status",
    TAG,
    query=("q",),
    response=DeviceCounts,
)
async def device_summary(request: web.Request) -> web.Response:
    store, org, search = services(request).store, org_id(request), request.query.get("q")
    total, online, statuses = 0, 0, Counter[str]()
    cursor: str | None = None
    while True:
        listed = await devices.list_page(store, org, Page(limit=MAX_LIMIT, cursor=cursor), search)
        for device in listed["items"]:
            total += 1
            online += bool(device["online"])
            statuses[device["config_status"]] += 1
        cursor = listed["next_cursor"]
        if cursor is None:
            break
    counts = {status: statuses[status] for status in CONFIG_STATUSES}
    return reply(DeviceCounts, {"total": total, "online": online, "config_status": counts})


# -- static files ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Static:
    body: bytes
    content_type: str
    etag: str


@functools.cache
def _static_files() -> dict[str, _Static]:
    """Every file of web/static, read once: a name outside this set is never touched."""
    found = {}
    for path in sorted((WEB / "static").iterdir()):
        if path.is_file() and path.suffix in _TYPES:
            body = path.read_bytes()
            etag = '"' + hashlib.sha256(body).hexdigest()[:20] + '"'
            found[path.name] = _Static(body, _TYPES[path.suffix], etag)
    return found


@routes.add(
    "GET",
    "/static/{name}",
    "Web app: stylesheet, scripts and icon",
    TAG,
    auth=False,
    media="*/*",
    responses={304: "not modified", 404: "no such file"},
)
async def web_static(request: web.Request) -> web.Response:
    found = _static_files().get(request.match_info["name"])
    if found is None:
        raise web.HTTPNotFound()
    headers = {"ETag": found.etag, "Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"}
    if request.headers.get("If-None-Match") == found.etag:
        return web.Response(status=304, headers=headers)
    return web.Response(
        body=found.body, content_type=found.content_type, charset="utf-8", headers=headers
    )
