"""The operator token: only the operator may revoke it, and a restart brings it back
(FLEETSTATE_ADMIN_TOKEN's value, or a newly generated one in DATA/admin-token)."""

import stat
from pathlib import Path

import aiohttp
import msgspec

from conftest import ADMIN_TOKEN, Api, make_config
from fleetstate import app

OPERATOR = "/api/v1/tokens/admin"
ORG = "/api/v1/organizations/current"


async def test_operator_token_cannot_be_revoked_by_another_token(api: Api) -> None:
    other = await api.ok("POST", "/api/v1/tokens", {"name": "ci"}, status=201)
    status, body = await api.as_token(other["token"]).delete(OPERATOR)
    assert status == 403
    assert body["error"]["code"] == "forbidden"
    assert (await api.get(ORG))[0] == 200
    listed = await api.ok("GET", "/api/v1/tokens")
    assert "admin" in [token["id"] for token in listed["items"]]
    # Another organization does not even see it.
    org = await api.ok("POST", "/api/v1/organizations", {"slug": "acme", "name": "Acme"})
    assert (await api.as_token(org["token"]).delete(OPERATOR))[0] == 404
    # Ordinary tokens are still revoked by any token of their organization.
    assert (await api.as_token(other["token"]).delete(f"/api/v1/tokens/{other['id']}"))[0] == 204


async def test_operator_token_revoked_by_the_operator_returns_on_restart(tmp_path: Path) -> None:
    settings = make_config(tmp_path / "data")
    async with app.start(settings) as service, aiohttp.ClientSession() as session:
        api = Api(session, service.http_url, ADMIN_TOKEN)
        assert (await api.delete(OPERATOR))[0] == 204
        assert (await api.get(ORG))[0] == 401
    async with app.start(settings) as service, aiohttp.ClientSession() as session:
        api = Api(session, service.http_url, ADMIN_TOKEN)
        assert (await api.get(ORG))[0] == 200
        org = await api.ok("POST", "/api/v1/organizations", {"slug": "acme", "name": "Acme"})
        assert org["slug"] == "acme"  # still the operator


async def test_operator_token_generated_again_when_revoked_without_a_configured_value(
    tmp_path: Path,
) -> None:
    settings = msgspec.structs.replace(make_config(tmp_path / "data"), admin_token=None)
    token_file = tmp_path / "data" / "admin-token"
    async with app.start(settings) as service, aiohttp.ClientSession() as session:
        first = token_file.read_text().strip()
        api = Api(session, service.http_url, first)
        assert (await api.delete(OPERATOR))[0] == 204
    token_file.chmod(0o644)
    async with app.start(settings) as service, aiohttp.ClientSession() as session:
        assert service.admin_token_file == token_file
        second = token_file.read_text().strip()
        assert second != first
        assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
        assert (await Api(session, service.http_url, first).get(ORG))[0] == 401
        assert (await Api(session, service.http_url, second).get(ORG))[0] == 200
