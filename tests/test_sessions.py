"""Server-side web sessions: sign-in issues a random session (stored hashed), the cookie never
holds the API token, and the session ends at sign-out, at its expiry, with its token, and when
the operator token's value is replaced. The REST API accepts the session cookie."""

import hashlib
import sqlite3
from pathlib import Path

import aiohttp
import msgspec

from conftest import ADMIN_TOKEN, Api, eventually, make_config
from fleetstate import app
from fleetstate.config import WebConfig

COOKIE = "fleetstate_session"
DEVICES = "/api/v1/devices"


async def sign_in(api: Api, token: str = ADMIN_TOKEN) -> str:
    """Sign in through the form; the session cookie's value."""
    async with api.session.post(
        api.base + "/signin", data={"token": token}, allow_redirects=False
    ) as answer:
        assert answer.status == 303, await answer.text()
        return answer.cookies[COOKIE].value


async def with_cookie(api: Api, value: str, path: str = DEVICES) -> int:
    """The status of a GET sending only this session cookie (no Authorization)."""
    headers = {"Cookie": f"{COOKIE}={value}"}
    async with api.session.get(api.base + path, headers=headers, allow_redirects=False) as answer:
        return answer.status


async def sign_out(api: Api, value: str) -> None:
    headers = {"Cookie": f"{COOKIE}={value}"}
    async with api.session.post(
        api.base + "/signout", headers=headers, allow_redirects=False
    ) as answer:
        assert answer.status == 303


async def test_sessions_cookie_is_a_random_session_stored_only_hashed(
    api: Api, service: app.Service
) -> None:
    secret = await sign_in(api)
    assert secret != ADMIN_TOKEN
    assert len(secret) >= 43  # 256 random bits
    assert await sign_in(api) != secret  # a new session per sign-in
    assert await with_cookie(api, secret) == 200
    assert await with_cookie(api, secret, "/default/devices") == 200
    # The API token itself is no session.
    assert await with_cookie(api, ADMIN_TOKEN) == 401
    assert await with_cookie(api, ADMIN_TOKEN, "/default/devices") == 303
    with sqlite3.connect(service.store.path) as db:
        rows = db.execute("SELECT id, token_id FROM web_sessions").fetchall()
    assert (hashlib.sha256(secret.encode()).hexdigest(), "admin") in rows
    assert all(secret not in row for row in rows)


async def test_sessions_signout_ends_the_session_on_the_server(api: Api) -> None:
    secret = await sign_in(api)
    other = await sign_in(api)
    await sign_out(api, secret)
    # Replaying the old cookie after sign-out gets nothing, for pages and the API alike.
    assert await with_cookie(api, secret) == 401
    assert await with_cookie(api, secret, "/default/devices") == 303
    assert await with_cookie(api, other) == 200  # only that session ended


async def test_sessions_end_when_their_token_is_revoked(api: Api) -> None:
    created = await api.ok("POST", "/api/v1/tokens", {"name": "browser"}, status=201)
    secret = await sign_in(api, created["token"])
    assert await with_cookie(api, secret) == 200
    assert (await api.delete(f"/api/v1/tokens/{created['id']}"))[0] == 204
    assert await with_cookie(api, secret) == 401
    assert await with_cookie(api, secret, "/default/devices") == 303


async def test_sessions_expire_after_the_configured_time(tmp_path: Path) -> None:
    settings = make_config(tmp_path / "data", web=WebConfig(session_ttl_s=0.5))
    async with app.start(settings) as service, aiohttp.ClientSession() as session:
        api = Api(session, service.http_url, ADMIN_TOKEN)
        secret = await sign_in(api)
        assert await with_cookie(api, secret) == 200

        async def expired() -> bool:
            return await with_cookie(api, secret) == 401

        await eventually(expired)
        assert await with_cookie(api, secret, "/default/devices") == 303


async def test_sessions_survive_a_restart_but_not_a_new_admin_token(tmp_path: Path) -> None:
    settings = make_config(tmp_path / "data")
    async with app.start(settings) as service, aiohttp.ClientSession() as session:
        secret = await sign_in(Api(session, service.http_url, ADMIN_TOKEN))
    async with app.start(settings) as service, aiohttp.ClientSession() as session:
        assert await with_cookie(Api(session, service.http_url, ""), secret) == 200
    changed = msgspec.structs.replace(settings, admin_token="another-admin-token-value")
    async with app.start(changed) as service, aiohttp.ClientSession() as session:
        assert await with_cookie(Api(session, service.http_url, ""), secret) == 401


async def test_sessions_cookie_writes_still_need_the_csrf_header(api: Api) -> None:
    secret = await sign_in(api)
    headers = {"Cookie": f"{COOKIE}={secret}"}
    body = {"name": "by-cookie"}
    async with api.session.post(api.base + "/api/v1/tokens", json=body, headers=headers) as answer:
        assert answer.status == 403
    headers["X-Fleetstate-CSRF"] = "1"
    async with api.session.post(api.base + "/api/v1/tokens", json=body, headers=headers) as answer:
        assert answer.status == 201
