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
import sys
from collections import Counter
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
        except TimeoutError:
            raise AssertionError(
                f"{kind}: not closed by the service in {CLIENT_WAIT_S} s"
            ) from None
        except OSError:  # ssl.SSLError too: how a refused handshake may show on this side
            pass


def _tls_attempt(
    tcp: socket.socket, n: int, kind: str, ca: Issuer, stranger: tuple[str, str]
) -> None:
    context = ssl.create_default_context(cafile=ca.cert_file)
    if kind == "certificate_of_another_ca":
        context.load_cert_chain(*stranger)
    with context.wrap_socket(tcp, server_hostname="localhost") as tls:
        if kind == "handshake_then_nothing":  # no CONNECT: closed at the CONNECT timeout
            while tls.recv(4096):
                pass
            return
        tls.sendall(connect(f"ghost-{n}", f"ghost-{n}", "wrong"))
        answer = tls.recv(4)
        if kind == "handshake_then_wrong_key":
            assert answer[:1] == bytes([CONNACK << 4]), answer
            assert answer[3:4] != b"\x00", answer  # refused
        while tls.recv(4096):
            pass


def _left_in_memory(port: int) -> Counter[str]:
    """How many of asyncio's TLS layers are in this process (each protocol with its 256 KiB
    buffer, and its transport) and of the endpoint's closed TCP transports of `port`, by type.
    Counted, not listed: a list of them kept between two looks would keep them alive."""
    found: Counter[str] = Counter()
    for obj in gc.get_objects():
        if not isinstance(obj, asyncio.BaseProtocol | asyncio.BaseTransport):
            continue
        if type(obj).__module__ == "asyncio.sslproto" or (
            isinstance(obj, asyncio.Transport)
            and obj.is_closing()
            and (sockname := obj.get_extra_info("sockname")) is not None
            and sockname[1] == port
        ):
            found[type(obj).__qualname__] += 1
    return found


@pytest.mark.parametrize(
    "kind",
    [
        "plain_mqtt",
        "closed_at_once",
        "stalled",
        "certificate_of_another_ca",
        "handshake_then_nothing",
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
        left = await _left(port)
    finally:
        gc.enable()
    assert not left, f"after {ATTEMPTS} {kind}, waiting for the collector: {dict(left)}"


async def _left(port: int) -> Counter[str]:
    """What is still in memory of the ended connections, once the endpoint had time to see
    each end (a loop turn or two, or the handshake timeout for a stalled one)."""
    for _ in range(100):
        left = _left_in_memory(port)
        if not left:
            break
        await asyncio.sleep(0.05)
    return left


def _connect_with_the_finished(port: int, ca: Issuer) -> bytes:
    """A TLS 1.3 client whose CONNECT goes in one write with its handshake's last message, so
    the service reads it as the handshake completes: the first 4 bytes answered."""
    tls = ssl.create_default_context(cafile=ca.cert_file)
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    client = tls.wrap_bio(incoming, outgoing, server_hostname="localhost")
    with socket.create_connection(("127.0.0.1", port), timeout=CLIENT_WAIT_S) as tcp:
        for _ in range(20):  # a handshake is two flights; bounded all the same
            try:
                client.do_handshake()
                break
            except ssl.SSLWantReadError:
                tcp.sendall(outgoing.read())
                incoming.write(tcp.recv(65536))
        client.write(connect("ghost", "ghost", "wrong"))
        tcp.sendall(outgoing.read())  # the client's Finished and the CONNECT
        answer = b""
        for _ in range(20):
            try:
                answer += client.read(4 - len(answer))
            except ssl.SSLWantReadError:
                incoming.write(tcp.recv(65536))
            if len(answer) == 4:
                break
        return answer


async def test_mqtts_connect_read_with_the_handshake_is_answered(
    tls_service: tuple[app.Service, Issuer],
) -> None:
    """The TLS layer hands on what it decrypted along with the handshake's last message before
    the endpoint's `Connection` took the transport over; that CONNECT must not be lost."""
    service, ca = tls_service
    answer = await asyncio.to_thread(_connect_with_the_finished, service.mqtts_port, ca)
    assert answer == bytes([CONNACK << 4, 2, 0, 4]), answer  # 3.1.1: bad user name or password


HELD = 300
_HOLDER = """
import socket, ssl, sys
port, ca, count = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
context = ssl.create_default_context(cafile=ca)
def tls():
    tcp = socket.create_connection(("127.0.0.1", port))
    return context.wrap_socket(tcp, server_hostname="localhost")
held = [tls() for _ in range(count)]
print("held", flush=True)
sys.stdin.read()  # until the test is done looking
"""


def _rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS in /proc/self/status")


async def test_mqtts_an_open_connection_holds_little_memory(tmp_path: Path) -> None:
    """asyncio's TLS layer keeps a read buffer per connection for its whole life, 256 KiB by
    default: 10,000 TLS devices would hold 2.6 GiB in them. `app.TLS_READ_BUFFER` makes it small;
    what a held TLS connection costs the service must stay far below that default."""
    ca = Issuer(tmp_path, "fleet-ca")
    limits = BrokerLimits(connect_timeout_s=60)  # held without a CONNECT while they are counted
    settings = make_config(
        tmp_path / "data", mqtts="127.0.0.1:0", tls=_tls(ca), mqtt_explicit=False, broker=limits
    )
    async with app.start(settings) as service:
        before = _rss_kib()
        holder = await asyncio.create_subprocess_exec(
            sys.executable,
            *("-c", _HOLDER, str(service.mqtts_port), ca.cert_file, str(HELD)),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        try:
            assert holder.stdout is not None
            async with asyncio.timeout(CLIENT_WAIT_S * 3):
                assert await holder.stdout.readline() == b"held\n"
            await asyncio.sleep(0.5)  # the last handshakes handed over to their connections
            per_connection = (_rss_kib() - before) / HELD
        finally:
            holder.kill()
            await holder.wait()
    assert per_connection < 100, f"{per_connection:.0f} KiB of service RSS per open TLS connection"
