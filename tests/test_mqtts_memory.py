"""What a connection to the MQTT-over-TLS listener leaves in memory once it ended: nothing that
waits for the cyclic collector, whether its TLS handshake failed, stalled or completed.

A handshake that fails in asyncio's own TLS server leaves its TLS layer (`SSLProtocol`, with a
256 KiB read buffer) in a reference cycle with the exception and the frames that raised it, and a
completed one leaves the TCP transport under it in the cycle `test_mqtt_refused_memory` shows for
plain connections. At the service's collector thresholds (`app.GC_THRESHOLDS`) that piled up for
thousands of connections: 3,000 plain-TCP connections to the TLS port took the service from 78 to
488 MiB. Here the collector is off while the connections come and go, and the endpoint's side of
each must be gone by reference counting alone.

The clients are blocking sockets in threads, so the only TLS layers of asyncio in this process
are the service's; the service's HTTP API is not called while they are counted.
"""

import asyncio
import gc
import socket
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from conftest import make_config
from fleetstate import app
from fleetstate.config import BrokerLimits
from mqtt_raw import CONNACK, connect
from test_mqtt_tls import Issuer, _tls

ATTEMPTS = 24
AT_ONCE = 6
HANDSHAKE_TIMEOUT_S = 1.0
"""The service's `connect_timeout_s` here, so that a stalled handshake ends soon."""
CLIENT_WAIT_S = 10.0


@pytest.fixture
async def tls_service(tmp_path: Path) -> AsyncIterator[tuple[app.Service, Issuer]]:
    ca = Issuer(tmp_path, "fleet-ca")
    limits = BrokerLimits(connect_timeout_s=HANDSHAKE_TIMEOUT_S)
    settings = make_config(
        tmp_path / "data", mqtts="127.0.0.1:0", tls=_tls(ca), mqtt_explicit=False, broker=limits
    )
    async with app.start(settings) as running:
        yield running, ca


def _attempt(port: int, n: int, kind: str, ca: Issuer, stranger: tuple[str, str]) -> None:
    """One connection of `kind` from 127.0.4.x, as a blocking client; returns once it ended."""
    with socket.create_connection(
        ("127.0.0.1", port), timeout=CLIENT_WAIT_S, source_address=(f"127.0.4.{n % 250 + 1}", 0)
    ) as tcp:
        try:
            if kind == "plain_mqtt":  # no TLS at all: a CONNECT in the clear
                tcp.sendall(connect(f"ghost-{n}", f"ghost-{n}", "wrong"))
                while tcp.recv(4096):
                    pass
            elif kind == "closed_at_once":
                pass
            elif kind == "stalled":  # sends nothing: the handshake timeout ends it
                while tcp.recv(4096):
                    pass
            else:
                _tls_attempt(tcp, n, kind, ca, stranger)
        except OSError:  # ssl.SSLError too: how a refused handshake may show on this side
            pass


def _tls_attempt(
    tcp: socket.socket, n: int, kind: str, ca: Issuer, stranger: tuple[str, str]
) -> None:
    context = ssl.create_default_context(cafile=ca.cert_file)
    if kind == "certificate_of_another_ca":
        context.load_cert_chain(*stranger)
    with context.wrap_socket(tcp, server_hostname="localhost") as tls:
        tls.sendall(connect(f"ghost-{n}", f"ghost-{n}", "wrong"))
        answer = tls.recv(4)
        if kind == "handshake_then_wrong_key":
            assert answer[:1] == bytes([CONNACK << 4]), answer
            assert answer[3:4] != b"\x00", answer  # refused
        while tls.recv(4096):
            pass


def _left_in_memory(port: int) -> tuple[list[object], list[asyncio.BaseTransport]]:
    """asyncio's TLS layers in this process (each protocol with its 256 KiB buffer, and its
    transport), and the endpoint's closed TCP transports of `port`."""
    layers: list[object] = []
    tcp: list[asyncio.BaseTransport] = []
    for obj in gc.get_objects():
        if not isinstance(obj, asyncio.BaseProtocol | asyncio.BaseTransport):
            continue
        if type(obj).__module__ == "asyncio.sslproto":
            layers.append(obj)
        elif (
            isinstance(obj, asyncio.Transport)
            and obj.is_closing()
            and (sockname := obj.get_extra_info("sockname")) is not None
            and sockname[1] == port
        ):
            tcp.append(obj)
    return layers, tcp


@pytest.mark.parametrize(
    "kind",
    [
        "plain_mqtt",
        "closed_at_once",
        "stalled",
        "certificate_of_another_ca",
        "handshake_then_wrong_key",
    ],
)
async def test_mqtts_connections_are_freed_without_the_cyclic_collector(
    tls_service: tuple[app.Service, Issuer], tmp_path: Path, kind: str
) -> None:
    service, ca = tls_service
    stranger = Issuer(tmp_path, "other-ca").issue("ghost")
    port = service.mqtts_port
    gc.collect()
    gc.disable()
    try:
        for start in range(0, ATTEMPTS, AT_ONCE):
            await asyncio.gather(
                *(
                    asyncio.to_thread(_attempt, port, n, kind, ca, stranger)
                    for n in range(start, start + AT_ONCE)
                )
            )
        layers, transports = await _left(port)
    finally:
        gc.enable()
    assert not layers, f"{len(layers)} TLS layers of {ATTEMPTS} {kind} wait for the collector"
    assert not transports, f"{len(transports)} closed transports wait for the collector"


async def _left(port: int) -> tuple[list[object], list[asyncio.BaseTransport]]:
    """What is still in memory of the ended connections, once the endpoint had time to see
    each end (a loop turn or two, or the handshake timeout for a stalled one)."""
    for _ in range(100):
        layers, transports = _left_in_memory(port)
        if not layers and not transports:
            break
        await asyncio.sleep(0.05)
    return layers, transports
