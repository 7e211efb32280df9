"""HTTPS (SPEC section 8, `[tls]`): the HTTP server speaks TLS on `--http`, devices are told an
https hub URL, and the web app's session cookie is `Secure`. Every key and certificate is made
here, in tmp_path, by a throwaway CA; the client verifies the server against that CA."""

import asyncio
import datetime
import ipaddress
import os
import ssl
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from conftest import ADMIN_TOKEN, WAIT, Api, Fleet, make_config
from fleetstate import app
from fleetstate.config import TlsConfig
from test_device_api import device_call
from test_provisioning import hardware_key


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    path.write_bytes(pem)


def make_certificates(folder: Path) -> tuple[TlsConfig, Path]:
    """A CA and a server certificate for 127.0.0.1/localhost signed by it: ([tls], CA file)."""
    folder.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(_name("fleetstate test CA"))
        .issuer_name(_name("fleetstate test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    names = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("localhost"))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    ca_file, cert_file, key_file = folder / "ca.pem", folder / "server.pem", folder / "server.key"
    ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    _write_key(key_file, key)
    return TlsConfig(cert_file=str(cert_file), key_file=str(key_file)), ca_file


@pytest.fixture
def certificates(tmp_path: Path) -> tuple[TlsConfig, Path]:
    return make_certificates(tmp_path / "tls")


@pytest.fixture
async def https_service(
    tmp_path: Path, certificates: tuple[TlsConfig, Path]
) -> AsyncIterator[app.Service]:
    tls, _ca = certificates
    async with app.start(make_config(tmp_path / "data", tls=tls)) as running:
        yield running


@pytest.fixture
async def https_api(
    https_service: app.Service, certificates: tuple[TlsConfig, Path]
) -> AsyncIterator[Api]:
    context = ssl.create_default_context(cafile=str(certificates[1]))
    connector = aiohttp.TCPConnector(ssl=context)
    async with aiohttp.ClientSession(connector=connector) as session:
        yield Api(session, https_service.http_url, ADMIN_TOKEN)


async def test_https_serves_the_api_verified_against_the_ca(
    https_service: app.Service, https_api: Api
) -> None:
    assert https_service.http_url.startswith("https://127.0.0.1:")
    organization = await https_api.ok("GET", "/api/v1/organizations/current")
    assert organization["slug"] == "default"


async def test_https_refuses_plain_http_on_the_same_port(https_service: app.Service) -> None:
    plain = "http://" + https_service.http_url.removeprefix("https://")
    async with aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.ClientError):
            async with asyncio.timeout(WAIT), session.get(plain + "/healthz") as answer:
                # A TLS server answers plain HTTP with garbage or a close, never a 200.
                assert answer.status != 200


async def test_https_registration_hands_out_an_https_hub_url(https_api: Api) -> None:
    profile = await Fleet(https_api).profile()
    created = await hardware_key(https_api, profile)
    body = {"hardware_key": created["key"], "sn": "S1", "firmware_version": "1.0.0"}
    status, answer = await device_call(https_api, "POST", "/v1/devices", None, body)
    assert status == 201, answer
    assert answer["hub_url"] == https_api.base


async def test_https_session_cookie_is_secure(https_api: Api) -> None:
    async with https_api.session.post(
        https_api.base + "/signin", data={"token": ADMIN_TOKEN}, allow_redirects=False
    ) as answer:
        assert answer.status == 303
        cookie = answer.cookies["fleetstate_session"]
        assert cookie["secure"] is True
        assert cookie["httponly"] is True


async def test_https_serve_prints_the_https_address(
    tmp_path: Path, certificates: tuple[TlsConfig, Path]
) -> None:
    tls, ca = certificates
    env = {
        **os.environ,
        "FLEETSTATE_ADMIN_TOKEN": ADMIN_TOKEN,
        "FLEETSTATE_TLS_CERT_FILE": str(tls.cert_file),
        "FLEETSTATE_TLS_KEY_FILE": str(tls.key_file),
    }
    proc = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "fleetstate", "serve", "--data", str(tmp_path / "data")),
        *("--http", "127.0.0.1:0", "--mqtt", "127.0.0.1:0", "--mqtts", "127.0.0.1:0"),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
        env=env,
    )
    assert proc.stdout is not None
    lines: list[str] = []
    try:
        async with asyncio.timeout(WAIT * 2):
            while not any(line.startswith("https listening on ") for line in lines):
                line = (await proc.stdout.readline()).decode()
                assert line, f"serve exited early: {lines}"
                lines.append(line.strip())
        assert not any(line.startswith("http listening") for line in lines), lines
        url = next(x for x in lines if x.startswith("https ")).split()[-1]
        assert url.startswith("https://127.0.0.1:")
        context = ssl.create_default_context(cafile=str(ca))
        async with (
            asyncio.timeout(WAIT),
            aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context)) as session,
            session.get(url + "/healthz") as answer,
        ):
            assert answer.status == 200
    finally:
        proc.kill()
        await proc.wait()
