"""No easy guessing (SPEC section 8): failed authentications are throttled per source address and
per credential id, for Bearer tokens, the web app's sign-in and device access keys; a remembered
token does not make wrong guesses cheap; the admin token has a minimum length; failures are
logged without the secret. Other source addresses are real: 127.0.0.x are all loopback."""

import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
import pytest

import mqtt_raw
from conftest import ADMIN_TOKEN, Api, Fleet, eventually, make_config
from fleetstate import app, cli
from fleetstate.api.http import PRINCIPAL
from fleetstate.config import ThrottleConfig
from fleetstate.errors import Invalid
from fleetstate.service import credentials
from test_device_api import device_call
from test_provisioning import hardware_key, register

ORG = "/api/v1/organizations/current"


@pytest.fixture
async def elsewhere() -> AsyncIterator[aiohttp.ClientSession]:
    """A client whose requests come from another address (127.0.0.2)."""
    connector = aiohttp.TCPConnector(local_addr=("127.0.0.2", 0))
    async with aiohttp.ClientSession(connector=connector) as session:
        yield session


async def from_address(api: Api, address: str, token: str) -> tuple[int, Any]:
    connector = aiohttp.TCPConnector(local_addr=(address, 0))
    async with aiohttp.ClientSession(connector=connector) as session:
        return await Api(session, api.base, token).get(ORG)


async def test_auth_throttle_bearer_blocks_the_address_after_ten_failures(
    api: Api, service: app.Service, elsewhere: aiohttp.ClientSession
) -> None:
    for n in range(10):  # ten different token ids: only the address collects ten failures
        assert (await api.as_token(f"fst_guess{n}_wrong").get(ORG))[0] == 401
    async with api.session.get(
        api.base + ORG, headers={"Authorization": "Bearer fst_guess10_wrong"}
    ) as answer:
        assert answer.status == 429
        assert 1 <= int(answer.headers["Retry-After"]) <= 60
        assert (await answer.json())["error"]["code"] == "rate_limited"
    # The right token is refused too while the address is blocked; another address is not.
    assert (await api.get(ORG))[0] == 429
    assert (await Api(elsewhere, api.base, ADMIN_TOKEN).get(ORG))[0] == 200
    authenticator = service.http_app[PRINCIPAL]
    assert authenticator.failures_total == 10
    assert authenticator.throttle.refused_total == 2


async def test_auth_throttle_bearer_blocks_a_token_id_guessed_from_many_addresses(
    api: Api,
) -> None:
    created = await api.ok("POST", "/api/v1/tokens", {"name": "ci"}, status=201)
    token_id = created["id"]
    for n in range(2, 12):  # one wrong guess each from ten addresses
        status, _ = await from_address(api, f"127.0.0.{n}", f"fst_{token_id}_wrong")
        assert status == 401
    assert (await api.as_token(created["token"]).get(ORG))[0] == 429
    assert (await api.get(ORG))[0] == 200  # the admin token and this address are fine


async def test_auth_throttle_block_ends_after_block_s(tmp_path: Path) -> None:
    settings = make_config(tmp_path / "data", throttle=ThrottleConfig(limit=3, block_s=0.5))
    async with app.start(settings) as service, aiohttp.ClientSession() as session:
        api = Api(session, service.http_url, ADMIN_TOKEN)
        for _ in range(3):
            assert (await api.as_token("wrong-guess-of-the-admin").get(ORG))[0] == 401
        assert (await api.get(ORG))[0] == 429

        async def accepted() -> bool:
            return (await api.get(ORG))[0] == 200

        await eventually(accepted)


async def test_auth_throttle_signin_blocks_after_ten_failures(api: Api) -> None:
    for _ in range(10):
        async with api.session.post(
            api.base + "/signin", data={"token": "not-the-token"}, allow_redirects=False
        ) as answer:
            assert answer.status == 401
    async with api.session.post(
        api.base + "/signin", data={"token": ADMIN_TOKEN}, allow_redirects=False
    ) as answer:
        assert answer.status == 429
        assert int(answer.headers["Retry-After"]) >= 1
        assert "Too many failed sign-ins" in await answer.text()
        assert "fleetstate_session" not in answer.cookies
    # Sign-in and Bearer share one throttle: the address is blocked for the API as well.
    assert (await api.get(ORG))[0] == 429


async def test_auth_throttle_device_key_blocks_the_device_after_ten_failures(
    api: Api, fleet: Fleet, elsewhere: aiohttp.ClientSession
) -> None:
    device_id, key = await fleet.device(await fleet.profile())
    path = f"/v1/devices/{device_id}/telemetry"
    body = {"status": "online"}
    for n in range(10):
        # Wrong keys from two addresses: the device id is blocked, not only one address.
        session = elsewhere if n % 2 else api.session
        status, answer = await device_call(Api(session, api.base, ""), "POST", path, "x" * 43, body)
        assert (status, answer) == (401, {"error": "Not authorized"})
    async with api.session.post(
        api.base + path, json=body, headers={"Authorization": key}
    ) as answer:
        assert answer.status == 429
        assert int(answer.headers["Retry-After"]) >= 1
        flat = await answer.json()
        assert list(flat) == ["error"]
        assert "too many failed authentications" in flat["error"]
    status, _ = await device_call(api, "GET", f"/v1/devices/{device_id}/artefacts/x", key)
    assert status == 429
    # Another device is not affected.
    other_id, other_key = await fleet.device(await fleet.profile("other"))
    status, _ = await device_call(api, "POST", f"/v1/devices/{other_id}/telemetry", other_key, body)
    assert status == 200


async def test_auth_throttle_remembered_secret_leaves_wrong_guesses_at_scrypt_cost() -> None:
    stored = credentials.hash_secret("the-right-secret-value", cost=4)
    verifier = credentials.Verifier()
    assert await verifier.verify("the-right-secret-value", stored)
    assert await verifier.verify("the-right-secret-value", stored)  # remembered: no scrypt
    assert verifier.scrypt_checks == 1
    for guess in ("wrong-1", "wrong-2", "the-right-secret-valuf"):
        assert not await verifier.verify(guess, stored)
    assert verifier.scrypt_checks == 4  # every wrong guess ran scrypt
    assert await verifier.verify("the-right-secret-value", stored)
    assert verifier.scrypt_checks == 4


async def test_auth_throttle_failures_are_logged_without_the_secret(
    api: Api, fleet: Fleet, caplog: pytest.LogCaptureFixture
) -> None:
    device_id, _key = await fleet.device(await fleet.profile())
    with caplog.at_level(logging.INFO):
        assert (await api.as_token("fst_sometoken_SECRET-PART-1").get(ORG))[0] == 401
        status, _ = await device_call(
            api, "POST", f"/v1/devices/{device_id}/telemetry", "SECRET-PART-2", {}
        )
        assert status == 401
    refusals = [r for r in caplog.records if r.levelno >= logging.INFO and "refused" in r.message]
    assert any("sometoken" in r.message and "127.0.0.1" in r.message for r in refusals)
    assert any(device_id in r.message and "127.0.0.1" in r.message for r in refusals)
    assert not any("SECRET-PART" in r.getMessage() for r in caplog.records)


async def test_auth_throttle_short_admin_token_is_refused_at_start(tmp_path: Path) -> None:
    with pytest.raises(Invalid, match="at least 16 characters"):
        settings = make_config(tmp_path / "data")
        async with app.start(msgspec.structs.replace(settings, admin_token="too-short")):
            pass


def test_auth_throttle_short_admin_token_stops_serve_with_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["serve", "--data", str(tmp_path / "data"), "--admin-token", "short"]
    assert cli.main([*argv, "--http", "127.0.0.1:0", "--mqtt", "127.0.0.1:0"]) == 2
    assert "at least 16 characters" in capsys.readouterr().err


async def test_auth_throttle_registration_blocks_the_address_after_ten_wrong_hardware_keys(
    api: Api, fleet: Fleet, elsewhere: aiohttp.ClientSession
) -> None:
    created = await hardware_key(api, await fleet.profile())
    for n in range(10):
        status, answer = await register(api, f"wrong-{n}", f"SN-{n}")
        assert (status, answer) == (401, {"error": "Not authorized"})
    status, answer = await register(api, created["key"], "SN-OK")
    assert status == 429, answer
    assert "too many failed authentications" in answer["error"]
    # The block is the address's: the right key from another address registers.
    status, answer = await register(Api(elsewhere, api.base, ""), created["key"], "SN-OK")
    assert status == 201, answer


async def test_auth_throttle_device_key_failures_over_http_block_its_mqtt_connect(
    api: Api, fleet: Fleet, service: app.Service
) -> None:
    device_id, key = await fleet.device(await fleet.profile())
    path = f"/v1/devices/{device_id}/telemetry"
    for _ in range(service.config.throttle.limit):
        status, _answer = await device_call(api, "POST", path, "x" * 43, {"status": "online"})
        assert status == 401
    # The device id is one credential on both surfaces: its right key is refused over MQTT too.
    for level, refused in ((4, 5), (5, 0x8A)):
        client = await mqtt_raw.RawClient.open(service.mqtt_port)
        client.send(mqtt_raw.connect(device_id, device_id, key, level=level))
        assert (await client.connack()).reason == refused
        await client.close()


async def test_auth_throttle_device_key_failures_over_mqtt_block_its_http_requests(
    api: Api, fleet: Fleet, service: app.Service
) -> None:
    device_id, key = await fleet.device(await fleet.profile())
    for n in range(service.config.throttle.limit):
        # From ten loopback addresses: only the device id collects the failures.
        client = await mqtt_raw.RawClient.open(service.mqtt_port, source=f"127.0.0.{n + 2}")
        client.send(mqtt_raw.connect(device_id, device_id, "wrong"))
        assert (await client.connack()).reason == 4
        await client.close()
    path = f"/v1/devices/{device_id}/telemetry"
    status, answer = await device_call(api, "POST", path, key, {"status": "online"})
    assert status == 429, answer
    # Another device over HTTP, and this one's address over MQTT, are not blocked by it.
    other_id, other_key = await fleet.device(await fleet.profile("other"))
    path = f"/v1/devices/{other_id}/telemetry"
    assert (await device_call(api, "POST", path, other_key, {"status": "online"}))[0] == 200
    await (
        await mqtt_raw.session(service.mqtt_port, other_id, other_key, source="127.0.0.2")
    ).close()
