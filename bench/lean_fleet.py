"""A lean fleet for the connect and rollout phases of `python -m bench`.

The simulated fleet (aiomqtt over paho) spends more CPU per device than the service does, so at
10,000 devices on two shared cores it sets the connect and rollout times itself. This one is bare
asyncio protocols speaking the device's side of the protocol and nothing else: CONNECT, SUBSCRIBE
to `desired` and `commands`, PUBACK for each document and one `reported` ACCEPTED with the
document's slots (no IN_PROGRESS first). A device counts an artefact applied when the service
PUBACKs the report naming it, which it does only after the report is committed.

    python -m bench.lean_fleet SPEC.json   ->   a JSON line once every device is subscribed
                                               (and has its first document, if one is expected);
    "watch ARTEFACT_ID" on stdin           ->   a JSON line once every device's report of that
                                               artefact is acknowledged (times since the watch)
    "stop" on stdin                        ->   a JSON line with the totals

SPEC: {"host": ..., "port": ..., "devices": [[id, key], ...], "connect_within": 120,
"expect_document": true}
"""

import asyncio
import json
import sys
import time
from collections import Counter
from typing import Any

from bench.load import CONNECTS_AT_ONCE, mqtt_connect, mqtt_packet, mqtt_string

_SUBSCRIBE_ID = 1
_SUBS = ("desired", "commands")


class Totals:
    def __init__(self) -> None:
        self.documents = self.reports = self.report_acks = 0
        self.errors: Counter[str] = Counter()
        self.stopping = False
        self.watched = ""
        self.watch_started = 0.0
        self.applied: list[float] = []
        self.all_applied: asyncio.Future[None] | None = None
        self.devices = 0

    def acknowledged(self, artefacts: tuple[str, ...]) -> None:
        if not self.watched or self.watched not in artefacts:
            return
        self.applied.append(time.monotonic() - self.watch_started)
        if len(self.applied) == self.devices and self.all_applied is not None:
            self.all_applied.set_result(None)


class LeanDevice(asyncio.Protocol):
    def __init__(self, totals: Totals, device_id: str, key: str, expect_document: bool) -> None:
        loop = asyncio.get_running_loop()
        self.totals, self.device_id = totals, device_id
        self.connect = mqtt_connect(device_id, key)
        self.reported = mqtt_string(f"devices/{device_id}/reported")
        topics = b"".join(mqtt_string(f"devices/{device_id}/{s}") + b"\x01" for s in _SUBS)
        self.subscribe = mqtt_packet(0x82, _SUBSCRIBE_ID.to_bytes(2, "big") + topics)
        self.subscribed: asyncio.Future[float] = loop.create_future()
        self.first_document: asyncio.Future[float] = loop.create_future()
        if not expect_document:
            self.first_document.set_result(0.0)
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.started = 0.0
        self.answered = 0
        self.packet_id = _SUBSCRIBE_ID
        self.reports: dict[bytes, tuple[str, ...]] = {}
        """The artefacts of each report in flight, by packet id."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.started = time.monotonic()
        transport.write(self.connect)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while (found := _packet(self.buffer)) is not None:
            first, body, size = found
            del self.buffer[:size]
            self._handle(first, body)

    def _handle(self, first: int, body: bytes) -> None:
        kind = first & 0xF0
        if kind == 0x20:
            if body[1] != 0:
                self._fail(ConnectionError(f"CONNACK {body[1]}"))
            elif self.transport is not None:
                self.transport.write(self.subscribe)
        elif kind == 0x90 and not self.subscribed.done():
            if any(code >= 0x80 for code in body[2:]):
                self._fail(ConnectionError(f"SUBACK {body[2:].hex()}"))
            else:
                self.subscribed.set_result(time.monotonic() - self.started)
        elif kind == 0x30:
            self._publish(first, body)
        elif kind == 0x40:
            self.totals.report_acks += 1
            self.totals.acknowledged(self.reports.pop(body[:2], ()))

    def _publish(self, first: int, body: bytes) -> None:
        topic_size = int.from_bytes(body[:2], "big")
        topic = body[2 : 2 + topic_size].decode()
        at = 2 + topic_size
        if first & 0x06:  # QoS 1: acknowledge it as soon as it is read
            packet_id = body[at : at + 2]
            at += 2
            assert self.transport is not None
            self.transport.write(b"\x40\x02" + packet_id)
        if topic.endswith("/desired"):
            self._document(json.loads(body[at:]))

    def _document(self, doc: dict[str, Any]) -> None:
        self.totals.documents += 1
        if not self.first_document.done():
            self.first_document.set_result(time.monotonic() - self.started)
        version = int(doc["version"])
        if version <= self.answered:
            return
        self.answered = version
        slots = [
            {
                "slot": c["slot"],
                "artefact_id": c["artefact_id"],
                "hash": c["hash"],
                "status": "ACCEPTED",
            }
            for c in doc.get("configs", [])
        ]
        report = {"version": version, "status": "ACCEPTED", "configs": slots}
        self.packet_id = self.packet_id % 65535 + 1
        packet_id = self.packet_id.to_bytes(2, "big")
        self.reports[packet_id] = tuple(c["artefact_id"] for c in slots)
        payload = self.reported + packet_id + json.dumps(report).encode()
        assert self.transport is not None
        self.transport.write(mqtt_packet(0x32, payload))
        self.totals.reports += 1

    def _fail(self, exc: Exception) -> None:
        for waiting in (self.subscribed, self.first_document):
            if not waiting.done():
                waiting.set_exception(exc)
        if self.transport is not None:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(exc or ConnectionError("connection lost"))
        if not self.totals.stopping:
            self.totals.errors["connection lost"] += 1


def _packet(buffer: bytearray) -> tuple[int, bytes, int] | None:
    """(first byte, body, whole size) of the packet at the buffer's start, once it is whole."""
    size = multiplier = 0
    for at in range(1, min(len(buffer), 5)):
        size += (buffer[at] & 0x7F) << multiplier
        if not buffer[at] & 0x80:
            end = at + 1 + size
            return (buffer[0], bytes(buffer[at + 1 : end]), end) if len(buffer) >= end else None
        multiplier += 7
    return None


def _p99(values: list[float]) -> float:
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))], 3) if ordered else 0.0


async def _watch(totals: Totals, artefact_id: str, within: float) -> None:
    totals.watched, totals.watch_started = artefact_id, time.monotonic()
    totals.applied = []
    totals.all_applied = asyncio.get_running_loop().create_future()
    try:
        async with asyncio.timeout(within):
            await totals.all_applied
    except TimeoutError:
        pass
    applied = totals.applied
    print(
        json.dumps(
            {
                "applied": len(applied),
                "all_applied_s": round(max(applied), 2) if len(applied) == totals.devices else None,
                "p50_s": round(sorted(applied)[len(applied) // 2], 3) if applied else None,
                "p99_s": _p99(applied),
            }
        ),
        flush=True,
    )


async def main(spec: dict[str, Any]) -> None:
    loop = asyncio.get_running_loop()
    totals = Totals()
    expect = bool(spec.get("expect_document", True))
    devices = [LeanDevice(totals, d, k, expect) for d, k in spec["devices"]]
    gate = asyncio.Semaphore(CONNECTS_AT_ONCE)
    host, port = spec["host"], int(spec["port"])

    async def open_one(device: LeanDevice) -> None:
        async with gate:
            await loop.create_connection(lambda: device, host, port)
            await device.subscribed
        await device.first_document

    t0 = time.monotonic()
    async with asyncio.timeout(float(spec.get("connect_within", 120))):
        await asyncio.gather(*(open_one(d) for d in devices))
    ready = {
        "connected": len(devices),
        "all_connected_s": round(time.monotonic() - t0, 2),
        "suback_p99_s": _p99([d.subscribed.result() for d in devices]),
        "first_document_p99_s": _p99([d.first_document.result() for d in devices]),
    }
    print(json.dumps(ready), flush=True)
    totals.devices = len(devices)
    while (line := await loop.run_in_executor(None, sys.stdin.readline)).startswith("watch "):
        await _watch(totals, line.split()[1], float(spec.get("connect_within", 120)))
    totals.stopping = True  # "stop", or the caller's end
    for device in devices:
        if device.transport is not None:
            device.transport.close()
    done = {"documents": totals.documents, "reports": totals.reports}
    print(json.dumps(done | {"report_acks": totals.report_acks, "errors": dict(totals.errors)}))


if __name__ == "__main__":
    with open(sys.argv[1]) as spec_file:
        asyncio.run(main(json.load(spec_file)))
