"""MQTT over TLS (SPEC section 8): the mqtts listener, device client certificates (CN = device
id), which listeners run, and what devices are told. A throwaway CA, server and device
certificates are made for each test in tmp_path (the `cryptography` package)."""

import asyncio
import datetime
import ipaddress
import logging
import os
import ssl
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import aiomqtt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from conftest import ADMIN_TOKEN, WAIT, Api, Device, Fleet, make_config
from conftest_mqtt import MOSQUITTO_PUB, run
from fleetstate import app
from fleetstate.config import TlsConfig
from test_provisioning import hardware_key, register


class Issuer:
    """A CA that signs certificates into files under `directory`."""

    def __init__(self, directory: Path, name: str) -> None:
        self.directory = directory
        self.key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        self.name = subject
        self.cert = (
            self._builder(subject, self.key.public_key())
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(self.key, hashes.SHA256())
        )
        self.cert_file = self._write(
            f"{name}.crt", self.cert.public_bytes(serialization.Encoding.PEM)
        )

    def _builder(self, subject: x509.Name, public_key: Any) -> x509.CertificateBuilder:
        now = datetime.datetime.now(datetime.UTC)
        return (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(getattr(self, "name", subject))
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(hours=1))
        )

    def _write(self, filename: str, data: bytes) -> str:
        path = self.directory / filename
        path.write_bytes(data)
        return str(path)

    def issue(self, common_name: str, *, server: bool = False) -> tuple[str, str]:
        """(cert file, key file) for `common_name`."""
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
        builder = self._builder(subject, key.public_key())
        if server:
            names = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        cert = builder.sign(self.key, hashes.SHA256())
        key_pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        stem = f"{common_name}-{os.urandom(4).hex()}"
        cert_file = self._write(f"{stem}.crt", cert.public_bytes(serialization.Encoding.PEM))
        return cert_file, self._write(f"{stem}.key", key_pem)


@pytest.fixture
def ca(tmp_path: Path) -> Issuer:
    return Issuer(tmp_path, "fleet-ca")


def _tls(ca: Issuer, *, client_ca: bool = True) -> TlsConfig:
    cert_file, key_file = ca.issue("localhost", server=True)
    return TlsConfig(
        cert_file=cert_file, key_file=key_file, client_ca_file=ca.cert_file if client_ca else None
    )


@asynccontextmanager
async def _service(tmp_path: Path, tls: TlsConfig, **overrides: Any) -> AsyncIterator[app.Service]:
    settings = make_config(tmp_path / "data", mqtts="127.0.0.1:0", tls=tls, **overrides)
    async with app.start(settings) as running:
        yield running


@pytest.fixture
async def tls_service(tmp_path: Path, ca: Issuer) -> AsyncIterator[app.Service]:
    async with _service(tmp_path, _tls(ca), mqtt_explicit=False) as running:
        yield running


@pytest.fixture
async def http(ca: Issuer) -> AsyncIterator[aiohttp.ClientSession]:
    """With `[tls]` the REST API is HTTPS too: this client trusts the test CA."""
    connector = aiohttp.TCPConnector(ssl=ssl.create_default_context(cafile=ca.cert_file))
    async with aiohttp.ClientSession(connector=connector) as session:
        yield session


@pytest.fixture
def tls_api(tls_service: app.Service, http: Any) -> Api:
    return Api(http, tls_service.http_url, ADMIN_TOKEN)


def _context(ca: Issuer, cert: tuple[str, str] | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=ca.cert_file)
    if cert is not None:
        context.load_cert_chain(*cert)
    return context


def _client(
    service: app.Service,
    context: ssl.SSLContext,
    device_id: str,
    password: str | None,
    protocol: aiomqtt.ProtocolVersion = aiomqtt.ProtocolVersion.V311,
) -> aiomqtt.Client:
    return aiomqtt.Client(
        "127.0.0.1",
        service.mqtts_port,
        identifier=device_id,
        username=device_id,
        password=password,
        tls_context=context,
        protocol=protocol,
        timeout=WAIT,
    )


async def _gets_desired(client: aiomqtt.Client, device_id: str) -> dict[str, Any]:
    async with client:
        device = Device(client, device_id)
        await client.subscribe(device.topic("desired"), qos=1)
        return await device.desired()


async def test_mqtt_tls_device_with_its_key_gets_its_document(
    tls_service: app.Service, tls_api: Api, ca: Issuer
) -> None:
    device_id, key = await Fleet(tls_api).device(await Fleet(tls_api).profile())
    document = await _gets_desired(_client(tls_service, _context(ca), device_id, key), device_id)
    assert document["configs"] == []
    assert tls_service.mqtt_url is None  # plain MQTT is off unless asked for
    assert tls_service.mqtts_url == f"mqtts://127.0.0.1:{tls_service.mqtts_port}"


@pytest.mark.parametrize(
    "protocol", [aiomqtt.ProtocolVersion.V311, aiomqtt.ProtocolVersion.V5], ids=["311", "5"]
)
async def test_mqtt_tls_client_certificate_for_the_device_needs_no_password(
    tls_service: app.Service, tls_api: Api, ca: Issuer, protocol: aiomqtt.ProtocolVersion
) -> None:
    device_id, _key = await Fleet(tls_api).device(await Fleet(tls_api).profile())
    context = _context(ca, ca.issue(device_id))
    client = _client(tls_service, context, device_id, None, protocol)
    document = await _gets_desired(client, device_id)
    assert document["version"] >= 1


@pytest.mark.parametrize(
    ("protocol", "refused"),
    [(aiomqtt.ProtocolVersion.V311, 5), (aiomqtt.ProtocolVersion.V5, 0x87)],
    ids=["311", "5"],
)
async def test_mqtt_tls_certificate_for_another_device_is_refused(
    tls_service: app.Service,
    tls_api: Api,
    ca: Issuer,
    protocol: aiomqtt.ProtocolVersion,
    refused: int,
) -> None:
    fleet = Fleet(tls_api)
    profile = await fleet.profile()
    device_a, key_a = await fleet.device(profile, "a")
    device_b, _ = await fleet.device(profile, "b")
    context = _context(ca, ca.issue(device_b))
    with pytest.raises(aiomqtt.MqttCodeError) as error:
        async with _client(tls_service, context, device_a, key_a, protocol):
            pass  # even with a's right key: the certificate names another device
    assert error.value.rc in (refused, 0x87)  # paho reports 3.1.1's 5 as 0x87


async def test_mqtt_tls_certificate_from_another_ca_is_refused(
    tls_service: app.Service, tls_api: Api, ca: Issuer, tmp_path: Path
) -> None:
    device_id, _key = await Fleet(tls_api).device(await Fleet(tls_api).profile())
    cert_file, key_file = Issuer(tmp_path, "other-ca").issue(device_id)
    # mosquitto_pub, not aiomqtt: aiomqtt ignores a connection closed before the CONNACK and
    # waits out its whole timeout, so it could not tell a refusal from a server that hangs.
    code, out, err = await run(
        MOSQUITTO_PUB,
        *("-h", "127.0.0.1", "-p", str(tls_service.mqtts_port), "-i", device_id, "-d"),
        *("--cafile", ca.cert_file, "--cert", cert_file, "--key", key_file),
        *("-q", "1", "-t", f"devices/{device_id}/telemetry", "-m", "{}"),
    )
    assert code != 0, (out, err)
    assert "received CONNACK" not in out, out  # closed in the handshake, before any MQTT


async def test_mqtt_tls_without_client_ca_a_certificate_does_not_authenticate(
    tmp_path: Path, ca: Issuer, http: Any
) -> None:
    async with _service(tmp_path, _tls(ca, client_ca=False), mqtt_explicit=False) as running:
        fleet = Fleet(Api(http, running.http_url, ADMIN_TOKEN))
        device_id, key = await fleet.device(await fleet.profile())
        context = _context(ca, ca.issue(device_id))
        with pytest.raises(aiomqtt.MqttCodeError):
            async with _client(running, context, device_id, None):
                pass
        document = await _gets_desired(_client(running, context, device_id, key), device_id)
        assert document["configs"] == []


async def test_mqtt_tls_plain_listener_stays_on_when_asked_for(tmp_path: Path, ca: Issuer) -> None:
    async with _service(tmp_path, _tls(ca), mqtt_explicit=True) as running:
        assert running.mqtt_url is not None
        assert running.mqtts_url is not None
        assert running.mqtt_port != running.mqtts_port


async def test_mqtt_tls_off_turns_the_plain_listener_off_in_any_case(
    tmp_path: Path, ca: Issuer
) -> None:
    async with _service(tmp_path, _tls(ca), mqtt="off", mqtt_explicit=True) as running:
        assert running.mqtt_url is None
        assert running.mqtts_url is not None


async def test_mqtt_tls_devices_are_told_the_mqtts_url(
    tls_service: app.Service, tls_api: Api
) -> None:
    created = await hardware_key(tls_api, await Fleet(tls_api).profile())
    status, registered = await register(tls_api, created["key"], "SN-TLS")
    assert status == 201, registered
    assert registered["mqtt_hub_url"] == tls_service.mqtts_url


async def test_mqtt_tls_serve_prints_the_mqtts_listener(tmp_path: Path, ca: Issuer) -> None:
    tls = _tls(ca)
    config_file = tmp_path / "fleetstate.toml"
    config_file.write_text(
        f'mqtts = "127.0.0.1:0"\n[tls]\ncert_file = "{tls.cert_file}"\n'
        f'key_file = "{tls.key_file}"\n'
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "fleetstate",
        "serve",
        "--config",
        str(config_file),
        "--data",
        str(tmp_path / "data"),
        "--http",
        "127.0.0.1:0",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
        env={**os.environ, "FLEETSTATE_ADMIN_TOKEN": ADMIN_TOKEN},
    )
    assert proc.stdout is not None
    lines: list[str] = []
    try:
        async with asyncio.timeout(WAIT * 2):
            while not any(line.startswith("mqtts listening on") for line in lines):
                line = (await proc.stdout.readline()).decode()
                assert line, f"serve exited early: {lines}"
                lines.append(line.strip())
    finally:
        proc.kill()
        await proc.wait()
    url = next(x for x in lines if x.startswith("mqtts ")).split()[-1]
    assert url.startswith("mqtts://127.0.0.1:")
    assert not any(line.startswith("mqtt listening") for line in lines)


async def test_mqtt_tls_device_that_says_goodbye_leaves_no_error(
    tls_service: app.Service, tls_api: Api, ca: Issuer, caplog: pytest.LogCaptureFixture
) -> None:
    """mosquitto_pub publishes, sends DISCONNECT and closes at once: the endpoint's close of a
    TLS connection whose peer is gone must be as quiet as a plain one's."""
    fleet = Fleet(tls_api)
    device_id, _key = await fleet.device(await fleet.profile())
    cert_file, key_file = ca.issue(device_id)
    code, out, err = await run(
        MOSQUITTO_PUB,
        *("-h", "127.0.0.1", "-p", str(tls_service.mqtts_port), "-i", device_id),
        *("--cafile", ca.cert_file, "--cert", cert_file, "--key", key_file),
        *("-q", "1", "-t", f"devices/{device_id}/telemetry"),
        *("-m", '{"status": "online", "telemetries": {"t": 1}}'),
    )
    assert code == 0, (out, err)
    status, state = await tls_api.get(f"/api/v1/devices/{device_id}/telemetry")
    assert (status, state["state"]) == (200, {"status": "online", "t": 1})
    await asyncio.sleep(0.3)  # the DISCONNECT and the close behind it, handled
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, [r.getMessage() for r in errors]
