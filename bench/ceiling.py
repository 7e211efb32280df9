"""The transport ceiling: the same fleet, rollout and telemetry fan-in against a bare broker.

No auth, no SQLite, no service: the bench process plays the service with one MQTT client that
publishes each device's desired document (QoS 1) and subscribes to every device's reports and
telemetry. Whatever fleetstate does on top of moving these messages is what separates its figures
from these.
"""

import asyncio
import contextlib
import hashlib
import logging
import time
from pathlib import Path
from typing import Any

import aiomqtt
import msgspec

from bench.scenarios import (
    LeanFleet,
    Phase,
    Watch,
    connect,
    errors,
    lean_connect,
    percentiles,
    telemetry,
)
from bench.service import Process, bare_broker
from fleetstate.simulator.options import Behaviour, DeviceSpec, Settings, Transport, mqtt_address
from fleetstate.simulator.supervisor import Fleet

PUBLISH_WINDOW = 256
ARTEFACT = "ceiling-artefact"


async def run(
    kind: str,
    devices: int,
    processes: int,
    workdir: Path,
    within: float,
    seconds: float,
    window: int,
) -> dict[str, Any]:
    async with bare_broker(kind, workdir) as broker:
        host, port = mqtt_address(broker.mqtt_url)
        specs = [
            DeviceSpec(f"dev{i:06d}", "x", Behaviour.ACCEPT, Transport.MQTT) for i in range(devices)
        ]
        settings = Settings(
            mqtt_host=host,
            mqtt_port=port,
            http_url="",
            telemetry_interval=0,
            connect_rate=0,
            apply_delay=0,
            record_events=True,
        )
        fleet = Fleet(specs, settings, processes)
        result: dict[str, Any] = {"broker": kind}
        try:
            result["connect"] = await connect(broker, fleet, devices, within)
            if not result["connect"]["all_connected"]:
                # The rest would measure a part of the fleet against fleetstate's whole.
                result["note"] = f"not every device connected within {within:.0f} s"
                return result
            async with _service_client(host, port) as (client, received):
                result["rollout"] = await _rollout(client, broker, fleet, specs, within)
                fan_in = await telemetry(broker, fleet, Transport.MQTT, seconds, window)
                await asyncio.sleep(1.0)  # let the last forwarded messages arrive
                result["telemetry_mqtt"] = {**fan_in, "forwarded": received["telemetry"]}
            result["rss_mib"] = round(broker.rss_kib() / 1024, 1)
        finally:
            await fleet.stop()
        lean = await LeanFleet.start(
            [(s.id, s.key) for s in specs], (host, port), workdir, expect_document=False
        )
        try:
            result["connect_lean"] = await lean_connect(broker, lean, devices, False)
        finally:
            await lean.stop()
        return result


@contextlib.asynccontextmanager
async def _service_client(host: str, port: int):  # type: ignore[no-untyped-def]
    """The stand-in for the service: publishes documents, counts what devices send."""
    received = {"reported": 0, "telemetry": 0}
    quiet = logging.getLogger("bench.service-client")
    quiet.setLevel(logging.ERROR)  # aiomqtt warns about every pending publish past ten
    client = aiomqtt.Client(
        host,
        port,
        identifier="bench-service",
        max_inflight_messages=PUBLISH_WINDOW,
        timeout=60,
        logger=quiet,
    )
    async with client:
        await client.subscribe([("devices/+/reported", 0), ("devices/+/telemetry", 0)])

        async def count() -> None:
            async for message in client.messages:
                received[str(message.topic).rsplit("/", 1)[1]] += 1

        counter = asyncio.create_task(count())
        try:
            yield client, received
        finally:
            counter.cancel()


async def _rollout(
    client: aiomqtt.Client, broker: Process, fleet: Fleet, specs: list[DeviceSpec], within: float
) -> dict[str, Any]:
    content = msgspec.json.encode({"setpoint": 21, "bench": time.time()})
    config = {
        "slot": "device",
        "artefact_id": ARTEFACT,
        "name": "bench",
        "artefact_version": 1,
        "hash": "sha256:" + hashlib.sha256(content).hexdigest(),
        "size": len(content),
        "content": msgspec.Raw(content),
    }
    issued = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    document = msgspec.json.encode({"version": 2, "issued_at": issued, "configs": [config]})
    watch = Watch(fleet.totals, "applied", ARTEFACT)
    phase = Phase(broker, fleet)
    t0 = time.time()
    window = asyncio.Semaphore(PUBLISH_WINDOW)

    async def publish(spec: DeviceSpec) -> None:
        async with window:
            await client.publish(f"devices/{spec.id}/desired", document, qos=1)

    async with asyncio.TaskGroup() as tasks:
        for spec in specs:
            tasks.create_task(publish(spec))
    published_s = time.time() - t0
    done = await fleet.wait(lambda t: watch.update(t) >= len(specs), within)
    latencies = watch.since(t0)
    return {
        "devices": len(specs),
        "published_s": round(published_s, 2),
        "applied": len(latencies),
        "all_accepted": done,
        "all_accepted_s": round(max(latencies), 2) if done else None,
        **percentiles(latencies),
        "foreign_documents": fleet.totals.counter("foreign_messages"),
        "errors": errors(fleet.totals),
        **phase.result(),
    }
