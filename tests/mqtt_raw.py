"""MQTT on a bare socket: byte-exact packets no client library sends this way (no CONNECT at all,
a wildcard PUBLISH, protocol level 6, a flood), for the tests that probe the endpoint as an
attacker would. It knows the wire format only, nothing of the service's internals.

Run as a script it is a flooder in its own process, so the flood does not share the service's
event loop: `python mqtt_raw.py PORT DEVICE_ID KEY QOS SECONDS COUNT PAYLOAD_BYTES` prints the
line `connected` once its CONNACK came, then the number of PUBLISH packets the kernel accepted.
"""

import asyncio
import contextlib
import json
import select
import socket
import sys
import time
from typing import NamedTuple

WAIT = 10.0

CONNACK, PUBLISH, PUBACK, SUBACK, PINGRESP, DISCONNECT = 2, 3, 4, 9, 13, 14
PINGREQ_PACKET = b"\xc0\x00"
DISCONNECT_PACKET = b"\xe0\x00"


def varint(value: int) -> bytes:
    out = b""
    while True:
        value, digit = divmod(value, 128)
        out += bytes([digit | (0x80 if value else 0)])
        if not value:
            return out


def string(text: str | bytes) -> bytes:
    raw = text.encode() if isinstance(text, str) else text
    return len(raw).to_bytes(2, "big") + raw


def packet(first_byte: int, body: bytes) -> bytes:
    return bytes([first_byte]) + varint(len(body)) + body


def connect(
    client_id: str,
    username: str | None = None,
    password: str | None = None,
    *,
    level: int = 4,
    keep_alive: int = 60,
    clean: bool = True,
    properties: bytes = b"",
    protocol_name: str = "MQTT",
) -> bytes:
    """CONNECT for protocol `level` (4 = MQTT 3.1.1, 5 = MQTT 5; anything else as given)."""
    flags = (0x02 if clean else 0) | (0x80 if username is not None else 0)
    flags |= 0x40 if password is not None else 0
    header = string(protocol_name) + bytes([level, flags]) + keep_alive.to_bytes(2, "big")
    if level == 5:
        header += varint(len(properties)) + properties
    body = header + string(client_id)
    body += string(username) if username is not None else b""
    body += string(password) if password is not None else b""
    return packet(0x10, body)


def session_expiry(seconds: int) -> bytes:
    """The MQTT 5 Session Expiry Interval property (0x11)."""
    return b"\x11" + seconds.to_bytes(4, "big")


def subscribe(packet_id: int, topics: list[tuple[str, int]], level: int = 4) -> bytes:
    body = packet_id.to_bytes(2, "big") + (b"\x00" if level == 5 else b"")
    for topic, qos in topics:
        body += string(topic) + bytes([qos])
    return packet(0x82, body)


def publish(topic: str, payload: bytes, qos: int = 0, packet_id: int = 1, level: int = 4) -> bytes:
    body = string(topic) + (packet_id.to_bytes(2, "big") if qos else b"")
    body += b"\x00" if level == 5 else b""
    return packet(0x30 | qos << 1, body + payload)


def puback(packet_id: int) -> bytes:
    return packet(0x40, packet_id.to_bytes(2, "big"))


class Packet(NamedTuple):
    kind: int  # the packet type: 1..15
    flags: int
    body: bytes

    @property
    def reason(self) -> int:
        """CONNACK's return code (3.1.1) or reason code (5): the second byte of its body."""
        return self.body[1]


async def read_packet(reader: asyncio.StreamReader) -> Packet | None:
    """The next whole packet, or None at the end of the stream (also mid-packet)."""
    try:
        first = (await reader.readexactly(1))[0]
        length, shift = 0, 0
        while True:
            digit = (await reader.readexactly(1))[0]
            length |= (digit & 0x7F) << shift
            shift += 7
            if not digit & 0x80:
                break
        body = await reader.readexactly(length)
    except (asyncio.IncompleteReadError, ConnectionError):
        return None
    return Packet(first >> 4, first & 0x0F, body)


class RawClient:
    """One TCP connection to the endpoint, spoken to packet by packet."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, port: int, source: str | None = None) -> "RawClient":
        """Connect, from loopback address `source` (any of 127/8) when given."""
        local = (source, 0) if source else None
        async with asyncio.timeout(WAIT):
            reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=local)
        return cls(reader, writer)

    def send(self, data: bytes) -> None:
        self.writer.write(data)

    async def packet(self, timeout: float = WAIT) -> Packet | None:
        async with asyncio.timeout(timeout):
            return await read_packet(self.reader)

    async def connack(self, timeout: float = WAIT) -> Packet:
        try:
            got = await self.packet(timeout)
        except TimeoutError:
            raise AssertionError(f"no CONNACK within {timeout} s") from None
        assert got is not None, "the connection closed without a CONNACK"
        assert got.kind == CONNACK, got
        return got

    async def until_closed(self, timeout: float = WAIT) -> list[Packet]:
        """Every packet the endpoint sends until it closes the connection; fails (TimeoutError)
        if it is still open after `timeout`."""
        seen: list[Packet] = []
        try:
            async with asyncio.timeout(timeout):
                while (got := await read_packet(self.reader)) is not None:
                    seen.append(got)
        except TimeoutError:
            raise AssertionError(
                f"the connection is still open after {timeout} s (it sent {seen})"
            ) from None
        return seen

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError, TimeoutError):
            async with asyncio.timeout(WAIT):
                await self.writer.wait_closed()


async def session(
    port: int, device_id: str, key: str, level: int = 4, source: str | None = None, **kw: object
) -> RawClient:
    """A connected device (CONNACK 0) on a bare socket."""
    client = await RawClient.open(port, source)
    client.send(connect(device_id, device_id, key, level=level, **kw))  # type: ignore[arg-type]
    answer = await client.connack()
    assert answer.reason == 0, answer
    return client


# -- the flooder (a separate process) ------------------------------------------------------------


def telemetry(size: int) -> bytes:
    """An HTTP-telemetry body of about `size` bytes (one string of at most 1,000 bytes each)."""
    fields = {f"f{i}": "x" * min(1000, size - 1000 * i) for i in range(max(1, size // 1000))}
    return json.dumps({"status": "online", "telemetries": fields}).encode()


def flood(
    port: int, device_id: str, key: str, qos: int, seconds: float, count: int, size: int
) -> int:
    """Send up to `count` telemetry PUBLISHes for `seconds`, as fast as the socket takes them,
    reading nothing back; the number the kernel accepted."""
    with socket.create_connection(("127.0.0.1", port), timeout=WAIT) as sock:
        sock.sendall(connect(device_id, device_id, key))
        assert sock.recv(4) == b"\x20\x02\x00\x00", "CONNACK refused"
        print("connected", flush=True)  # the test starts its measurements now
        sock.setblocking(False)
        topic, body = f"devices/{device_id}/telemetry", telemetry(size)
        batch = b"".join(publish(topic, body, qos, packet_id) for packet_id in range(1, 101))
        one, pending, sent_bytes = len(batch) // 100, b"", 0
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0 and sent_bytes < count * one:
            pending = pending or batch
            if not select.select([], [sock], [], left)[1]:
                break
            sent = sock.send(pending)
            pending, sent_bytes = pending[sent:], sent_bytes + sent
    return sent_bytes // one


if __name__ == "__main__":
    port_, device_, key_, qos_, seconds_, count_, size_ = sys.argv[1:8]
    print(flood(int(port_), device_, key_, int(qos_), float(seconds_), int(count_), int(size_)))
