"""A lean load generator for the telemetry fan-in of `python -m bench`.

The simulated devices (aiomqtt over paho; aiohttp) spend 0.35 ms of CPU per MQTT message and
0.45 ms per HTTP request: as much as the service, on the same two cores, so with them the load
generator sets the rate as much as the service does. This one is bare asyncio protocols that
speak just enough of the wire for the job: MQTT 3.1.1 CONNECT, QoS 1 PUBLISH and PUBACK, or an
HTTP/1.1 keep-alive POST and its answer, with every byte but the sequence number prepared in
advance. A closed loop keeps `window` messages in flight over all the devices, round robin, for
`seconds`, and counts what was acknowledged (PUBACK, or 200 with `"success":true`).

    python -m bench.load SPEC.json   ->   a JSON line once every device is connected,
                                          then one with the results

SPEC: {"transport": "mqtt" | "http", "host": ..., "port": ..., "devices": [[id, key], ...],
"window": 2000, "seconds": 30, "key": "mqtt_lean_seq", "connect_within": 120}
"""

import asyncio
import json
import sys
import time
from collections import Counter
from itertools import cycle
from typing import Any

CONNECTS_AT_ONCE = 200


class Run:
    """What every connection of one run shares: the counters and the closed loop."""

    def __init__(self, window: int, key: str) -> None:
        self.window, self.key = window, key.encode()
        self.sent = self.acked = self.failed = 0
        self.seq = 0
        self.running = False
        self.errors: Counter[str] = Counter()
        self.senders: Any = None
        self.drained = asyncio.Event()

    def payload(self) -> bytes:
        self.seq += 1
        return b'{"status":"online","telemetries":{"%s":%d}}' % (self.key, self.seq)

    def start(self, connections: list[Any]) -> None:
        self.running = True
        self.senders = cycle(connections)
        for _ in range(self.window):
            self.next()

    def next(self) -> None:
        """One more message in flight, on the next connection in turn."""
        if self.running:
            self.sent += 1
            next(self.senders).send(self.payload())

    def answered(self, ok: bool) -> None:
        if ok:
            self.acked += 1
        else:
            self.failed += 1
        self.next()
        if not self.running and self.sent == self.acked + self.failed:
            self.drained.set()

    def stop(self) -> int:
        """Stop sending; returns how many are still in flight."""
        self.running = False
        in_flight = self.sent - self.acked - self.failed
        if not in_flight:
            self.drained.set()
        return in_flight


# -- MQTT ----------------------------------------------------------------------------------------


def mqtt_string(text: str) -> bytes:
    raw = text.encode()
    return len(raw).to_bytes(2, "big") + raw


def mqtt_packet(first_byte: int, body: bytes) -> bytes:
    length, size = b"", len(body)
    while True:
        size, digit = divmod(size, 128)
        length += bytes([digit | (0x80 if size else 0)])
        if not size:
            return bytes([first_byte]) + length + body


def mqtt_connect(device_id: str, key: str, keep_alive: int = 60) -> bytes:
    """CONNECT, clean session, client id = username = the device id, password = its key."""
    header = mqtt_string("MQTT") + bytes([4, 0xC2]) + keep_alive.to_bytes(2, "big")
    return mqtt_packet(0x10, header + mqtt_string(device_id) * 2 + mqtt_string(key))


class MqttDevice(asyncio.Protocol):
    def __init__(self, run: Run, device_id: str, key: str) -> None:
        self.run = run
        self.topic = mqtt_string(f"devices/{device_id}/telemetry")
        self.connect = mqtt_connect(device_id, key)
        self.connected: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.transport: asyncio.Transport | None = None
        self.buffer = b""
        self.packet_id = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.write(self.connect)

    def send(self, payload: bytes) -> None:
        self.packet_id = self.packet_id % 65535 + 1
        body = self.topic + self.packet_id.to_bytes(2, "big") + payload
        assert self.transport is not None
        self.transport.write(mqtt_packet(0x32, body))

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer + data
        at = 0
        while len(buffer) - at >= 4 and buffer[at + 1] == 2:  # CONNACK and PUBACK: 4 bytes
            kind, code = buffer[at], buffer[at + 3]
            at += 4
            if kind == 0x40:
                self.run.answered(True)
            elif kind == 0x20 and not self.connected.done():
                if code == 0:
                    self.connected.set_result(None)
                else:
                    self.connected.set_exception(ConnectionError(f"CONNACK {code}"))
        if len(buffer) - at >= 2 and buffer[at + 1] != 2:
            self.run.errors[f"unexpected packet 0x{buffer[at]:02x}"] += 1
            at = len(buffer)  # nothing else is subscribed to: drop it
        self.buffer = buffer[at:]

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.connected.done():
            self.connected.set_exception(exc or ConnectionError("closed before CONNACK"))
        elif self.run.running:
            self.run.errors["connection lost"] += 1


# -- HTTP ----------------------------------------------------------------------------------------


class HttpConnection(asyncio.Protocol):
    """One keep-alive connection with one request in flight, for its devices in turn."""

    def __init__(self, run: Run, host: str, port: int, devices: list[tuple[str, str]]) -> None:
        self.run = run
        self.heads = cycle(
            (
                f"POST /v1/devices/{device_id}/telemetry HTTP/1.1\r\nHost: {host}:{port}\r\n"
                f"Authorization: {key}\r\nContent-Type: application/json\r\n"
            ).encode()
            for device_id, key in devices
        )
        self.connected: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.transport: asyncio.Transport | None = None
        self.buffer = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.connected.set_result(None)

    def send(self, payload: bytes) -> None:
        assert self.transport is not None
        length = b"Content-Length: %d\r\n\r\n" % len(payload)
        self.transport.write(next(self.heads) + length + payload)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while (end := self.buffer.find(b"\r\n\r\n")) >= 0:
            head = self.buffer[:end].lower()
            start = head.find(b"content-length:")
            if start < 0:
                self.run.errors["answer without content-length"] += 1
                self.buffer = b""
                return
            line_end = head.find(b"\r\n", start)
            size = int(head[start + 15 : line_end if line_end >= 0 else None])
            if len(self.buffer) < end + 4 + size:
                return
            body = self.buffer[end + 4 : end + 4 + size]
            self.buffer = self.buffer[end + 4 + size :]
            ok = head.startswith(b"http/1.1 200") and b'"success":true' in body
            if not ok:
                self.run.errors[head[:12].decode(errors="replace")] += 1
            self.run.answered(ok)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.run.running:
            self.run.errors["connection lost"] += 1


# -- a run ---------------------------------------------------------------------------------------


async def _open(spec: dict[str, Any], run: Run) -> list[Any]:
    loop = asyncio.get_running_loop()
    host, port, devices = spec["host"], int(spec["port"]), [tuple(d) for d in spec["devices"]]
    if spec["transport"] == "http":
        count = min(run.window, len(devices))
        protocols = [HttpConnection(run, host, port, devices[i::count]) for i in range(count)]
    else:
        protocols = [MqttDevice(run, device_id, key) for device_id, key in devices]
    gate = asyncio.Semaphore(CONNECTS_AT_ONCE)

    async def open_one(protocol: Any) -> None:
        async with gate:
            await loop.create_connection(lambda: protocol, host, port)
            await protocol.connected

    async with asyncio.timeout(float(spec.get("connect_within", 120))):
        await asyncio.gather(*(open_one(p) for p in protocols))
    return protocols


async def main(spec: dict[str, Any]) -> dict[str, Any]:
    run = Run(int(spec["window"]), spec["key"])
    t0 = time.monotonic()
    connections = await _open(spec, run)
    connect_s = time.monotonic() - t0
    print(json.dumps({"connected": len(connections), "connect_s": round(connect_s, 2)}), flush=True)
    t1 = time.monotonic()
    run.start(connections)
    await asyncio.sleep(float(spec["seconds"]))
    in_flight = run.stop()
    async with asyncio.timeout(30):  # let what is in flight be answered
        await run.drained.wait()
    elapsed = time.monotonic() - t1
    for connection in connections:
        if connection.transport is not None:
            connection.transport.close()
    return {
        "connections": len(connections),
        "connect_s": round(connect_s, 2),
        "seconds": round(elapsed, 2),
        "sent": run.sent,
        "acked": run.acked,
        "failed": run.failed,
        "in_flight_at_stop": in_flight,
        "errors": dict(run.errors.most_common(8)),
    }


if __name__ == "__main__":
    with open(sys.argv[1]) as spec_file:
        spec_in = json.load(spec_file)
    print(json.dumps(asyncio.run(main(spec_in))), flush=True)
