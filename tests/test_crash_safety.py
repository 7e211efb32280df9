"""Crash safety (SPEC section 7): `fleetstate serve` is SIGKILLed under load and restarted on the
same data; everything it acknowledged (a 2xx answer, a PUBACK) must still be there, no device's
desired version may go back, and every open command must be re-armed or TIMEOUT after its
deadline.

The load comes from this test: REST writes (artefact versions, a group binding, device renames,
commands), MQTT devices that apply desired documents, answer commands and send telemetry, all
with QoS 1, and telemetry over the device HTTP API. Each loop writes one thing at a time and
records what the service acknowledged; aiomqtt's `publish(qos=1)` returns only after the PUBACK.
Each kill lands in a burst of writes (see `Burst`), KILLS times on the same data. With the
PUBACK moved before the commit in the service, this test failed in every one of four runs.
"""

import asyncio
import contextlib
import json
import os
import signal
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import aiomqtt

from conftest import SCHEMA, WAIT, Api, eventually
from test_serve import TOKEN, Running, serve

DEVICES = 20
SILENT = range(4)  # never answer commands: their commands stay open until the deadline
HTTP_TELEMETRY = range(15, 20)  # also send telemetry over the device HTTP API
KILLS = 3  # kill, restart and check this many times on the same data
LOAD_S = 2.5  # steady load before each kill
SHORT_TIMEOUT_S = 2  # some commands' deadlines fall during the outage or after the restart
MAX_WRITES = 300  # every loop is bounded in count as well as by the kill
PUBLISH_WAIT = 5.0  # a QoS 1 publish not acknowledged by then counts as not acknowledged
BURST = 20  # at the end, messages each device publishes at once, and REST writes sent at once
KILL_AFTER = DEVICES * BURST // 10  # acknowledgements of the burst before the kill
OPEN = {"PENDING", "SENT", "ACKNOWLEDGED"}
LATE = timedelta(seconds=2)  # how late a deadline may fire on a busy machine
# Telemetry over a device's rate is dropped by design (and still acknowledged, SPEC section 8):
# not what this test is about, so the limit is off. The load stays under the default rate anyway.
NO_RATE_LIMIT = {"FLEETSTATE_LIMITS_TELEMETRY_RATE_PER_DEVICE": "0"}
CONNECTION_LOST = (aiohttp.ClientError, OSError, aiomqtt.MqttError)


@dataclass
class Latest:
    """A value one loop sets again and again, one request at a time: after the crash the
    service holds the last acknowledged value, or the one that was in flight."""

    acked: str | None = None
    in_flight: str | None = None

    def allowed(self) -> set[str | None]:
        return {self.acked} if self.in_flight is None else {self.acked, self.in_flight}


@dataclass
class Burst:
    """The moment of the kill. After the steady load every device publishes BURST telemetry
    messages at once and the REST side sends BURST writes at once; the service is killed as soon
    as KILL_AFTER of them are acknowledged, while the rest are still being written. A service
    that acknowledged before committing would lose acknowledged messages here, so the kill is
    sent from the acknowledgement's own callback, with no event-loop hop in between."""

    started: asyncio.Event = field(default_factory=asyncio.Event)
    killed: asyncio.Event = field(default_factory=asyncio.Event)
    pid: int = 0
    acks: int = 0

    def acked(self) -> None:
        self.acks += 1
        if self.acks >= KILL_AFTER and not self.killed.is_set():
            os.kill(self.pid, signal.SIGKILL)
            self.killed.set()


@dataclass
class Ledger:
    """Everything the service acknowledged before it was killed."""

    artefacts: dict[str, tuple[int, str]] = field(default_factory=dict)  # id: (version, hash)
    group_binding: Latest = field(default_factory=Latest)
    names: dict[str, Latest] = field(default_factory=lambda: defaultdict(Latest))
    commands: dict[str, dict[str, Any]] = field(default_factory=dict)  # id: POST answer
    succeeded: set[str] = field(default_factory=set)  # commands whose SUCCESS ack was PUBACKed
    desired: dict[str, int] = field(default_factory=lambda: defaultdict(int))  # highest seen
    reported: dict[str, int] = field(default_factory=lambda: defaultdict(int))  # PUBACKed
    telemetry: dict[tuple[str, str], set[int]] = field(default_factory=lambda: defaultdict(set))
    burst: Burst = field(default_factory=Burst)
    cycle: int = 0  # how many kills so far

    def seq(self, n: int) -> int:
        """Telemetry values unique across the cycles."""
        return self.cycle * 10 * MAX_WRITES + n

    def saw_desired(self, device_id: str, version: int) -> None:
        self.desired[device_id] = max(self.desired[device_id], version)


@dataclass(frozen=True)
class Fleet:
    profile_id: str
    group_id: str
    devices: list[tuple[str, str]]  # (id, access key)


async def created(api: Api, path: str, body: Any) -> Any:
    status, answer = await api.post(path, body)
    assert status in (200, 201), (path, status, answer)
    return answer


async def build_fleet(api: Api, ledger: Ledger) -> Fleet:
    profile = await created(api, "/api/v1/device-profiles", {"name": "t", "config_schema": SCHEMA})
    group = await created(api, "/api/v1/device-groups", {"name": "all"})
    devices = []
    for n in range(DEVICES):
        body = {"name": f"d{n}", "profile_id": profile["id"], "groups": [group["id"]]}
        device = await created(api, "/api/v1/devices", body)
        devices.append((device["id"], device["access_key"]))
    fleet = Fleet(profile["id"], group["id"], devices)
    await write_artefact(api, fleet, ledger, 0)
    return fleet


# -- load: each loop writes one thing at a time and records what was acknowledged -------------


async def write_artefact(api: Api, fleet: Fleet, ledger: Ledger, n: int) -> str:
    body = {"name": "load", "profile_id": fleet.profile_id, "content": {"setpoint": 5 + n % 25}}
    answer = await created(api, "/api/v1/config-artefacts", body)
    ledger.artefacts[answer["id"]] = (answer["version"], answer["hash"])
    return str(answer["id"])


async def artefact_loop(api: Api, fleet: Fleet, ledger: Ledger) -> None:
    for n in range(1, MAX_WRITES):
        await write_artefact(api, fleet, ledger, n)
        await asyncio.sleep(0.05)


async def artefact_burst(api: Api, fleet: Fleet, ledger: Ledger) -> None:
    await ledger.burst.started.wait()

    async def one(n: int) -> None:
        await write_artefact(api, fleet, ledger, MAX_WRITES + n)
        ledger.burst.acked()

    await asyncio.gather(*(one(n) for n in range(BURST)))


async def binding_loop(api: Api, fleet: Fleet, ledger: Ledger) -> None:
    """Binds the group to the newest artefact again and again: a new desired version for every
    device each time."""
    for _ in range(MAX_WRITES):
        artefact_id = next(reversed(ledger.artefacts))
        ledger.group_binding.in_flight = artefact_id
        body = {
            "target_type": "device_group",
            "target_id": fleet.group_id,
            "artefact_id": artefact_id,
        }
        status, answer = await api.put("/api/v1/desired-state-bindings", body)
        assert status in (200, 201), answer
        ledger.group_binding = Latest(acked=artefact_id)
        for row in answer["devices"]:
            ledger.saw_desired(row["device_id"], row["desired_version"])
        await asyncio.sleep(0.25)


async def rename_loop(api: Api, fleet: Fleet, ledger: Ledger) -> None:
    for n in range(MAX_WRITES):
        device_id = fleet.devices[n % DEVICES][0]
        name = f"renamed-{ledger.cycle}-{n}"
        ledger.names[device_id].in_flight = name
        status, answer = await api.patch(f"/api/v1/devices/{device_id}", {"name": name})
        assert status == 200, answer
        ledger.names[device_id] = Latest(acked=name)
        await asyncio.sleep(0.05)


async def command_loop(api: Api, fleet: Fleet, ledger: Ledger) -> None:
    for n in range(MAX_WRITES):
        index = n % DEVICES
        timeout_s = SHORT_TIMEOUT_S if index in SILENT and n % 2 else 300
        path = f"/api/v1/devices/{fleet.devices[index][0]}/commands"
        answer = await created(api, path, {"type": "REBOOT", "timeout_s": timeout_s})
        ledger.commands[answer["id"]] = answer
        await asyncio.sleep(0.05)


async def http_telemetry_loop(api: Api, fleet: Fleet, ledger: Ledger) -> None:
    for n in range(MAX_WRITES):
        device_id, key = fleet.devices[HTTP_TELEMETRY[n % len(HTTP_TELEMETRY)]]
        seq = ledger.seq(n)
        body = {"status": "online", "telemetries": {"hseq": seq}}
        async with api.session.post(
            f"{api.base}/v1/devices/{device_id}/telemetry",
            data=json.dumps(body),
            headers={"Authorization": key, "Content-Type": "application/json"},
        ) as response:
            assert response.status == 200, await response.text()
        ledger.telemetry[(device_id, "hseq")].add(seq)
        await asyncio.sleep(0.05)


def mqtt_client(running: Running, device_id: str, key: str) -> aiomqtt.Client:
    return aiomqtt.Client(
        "127.0.0.1",
        running.mqtt_port,
        identifier=device_id,
        username=device_id,
        password=key,
        timeout=WAIT,
    )


async def mqtt_device(running: Running, index: int, fleet: Fleet, ledger: Ledger) -> None:
    """A device that applies every desired document, answers commands (unless silent) and sends
    telemetry, each with QoS 1."""
    device_id, key = fleet.devices[index]
    async with mqtt_client(running, device_id, key) as client:
        for sub in ("desired", "commands"):
            await client.subscribe(f"devices/{device_id}/{sub}", qos=1)
        sender = asyncio.create_task(mqtt_telemetry(client, device_id, ledger), name="telemetry")
        try:
            async for message in client.messages:
                body = json.loads(bytes(message.payload))
                if str(message.topic).endswith("/desired"):
                    ledger.saw_desired(device_id, body["version"])
                    report = {"version": body["version"], "status": "ACCEPTED"}
                    await publish(client, f"devices/{device_id}/reported", report)
                    ledger.reported[device_id] = max(ledger.reported[device_id], body["version"])
                elif index not in SILENT:
                    ack = {"id": body["id"], "status": "SUCCESS"}
                    await publish(client, f"devices/{device_id}/commands/ack", ack)
                    ledger.succeeded.add(body["id"])
        finally:
            sender.cancel()


async def mqtt_telemetry(client: aiomqtt.Client, device_id: str, ledger: Ledger) -> None:
    async def send(n: int) -> None:
        body = {"status": "online", "telemetries": {"mseq": ledger.seq(n)}}
        await publish(client, f"devices/{device_id}/telemetry", body)
        ledger.telemetry[(device_id, "mseq")].add(ledger.seq(n))
        if ledger.burst.started.is_set():
            ledger.burst.acked()

    n = 0
    while not ledger.burst.started.is_set() and n < MAX_WRITES:
        await send(n)
        await asyncio.sleep(0.2)
        n += 1
    await asyncio.gather(*(send(n + i) for i in range(BURST)))


async def publish(client: aiomqtt.Client, topic: str, body: Any) -> None:
    """Returns after the PUBACK (aiomqtt waits for paho's on_publish)."""
    await client.publish(topic, json.dumps(body).encode(), qos=1, timeout=PUBLISH_WAIT)


@contextlib.asynccontextmanager
async def load(running: Running, api: Api, fleet: Fleet, ledger: Ledger) -> AsyncIterator[None]:
    """Runs every loop until the body returns (the service was killed), then stops them. A loop
    may end by losing its connection; any other failure (a 5xx answer, say) fails the test."""
    loops: list[Awaitable[None]] = [
        artefact_loop(api, fleet, ledger),
        binding_loop(api, fleet, ledger),
        rename_loop(api, fleet, ledger),
        command_loop(api, fleet, ledger),
        http_telemetry_loop(api, fleet, ledger),
        artefact_burst(api, fleet, ledger),
        *(mqtt_device(running, n, fleet, ledger) for n in range(DEVICES)),
    ]
    tasks = [asyncio.create_task(_until_lost(c), name=f"load-{n}") for n, c in enumerate(loops)]
    try:
        yield
    finally:
        for task in tasks:
            task.cancel()
        results = await asyncio.gather(*tasks, return_exceptions=True)
    for result in results:
        if not isinstance(result, asyncio.CancelledError | None):
            raise result


async def _until_lost(loop: Awaitable[None]) -> None:
    with contextlib.suppress(*CONNECTION_LOST):
        await loop


# -- after the restart ----------------------------------------------------------------------


def parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text)


async def check_rest_writes(api: Api, fleet: Fleet, ledger: Ledger) -> None:
    for artefact_id, (version, digest) in ledger.artefacts.items():
        got = await api.ok("GET", f"/api/v1/config-artefacts/{artefact_id}")
        assert (got["version"], got["hash"]) == (version, digest), got
    bindings = (await api.ok("GET", "/api/v1/desired-state-bindings"))["items"]
    group = [b for b in bindings if b["target_id"] == fleet.group_id]
    assert len(group) == 1, bindings
    assert group[0]["artefact_id"] in ledger.group_binding.allowed(), (group, ledger.group_binding)
    for device_id, name in ledger.names.items():
        got = await api.ok("GET", f"/api/v1/devices/{device_id}")
        assert got["name"] in name.allowed(), (got, name)


async def check_devices(api: Api, fleet: Fleet, ledger: Ledger) -> None:
    for device_id, _key in fleet.devices:
        got = await api.ok("GET", f"/api/v1/devices/{device_id}")
        assert got["desired_version"] >= ledger.desired[device_id], ("version went back", got)
        if ledger.reported[device_id]:
            assert got["reported_version"] >= ledger.reported[device_id], ("report lost", got)
        for (telemetry_device, key), values in ledger.telemetry.items():
            if telemetry_device == device_id:
                stored = await telemetry_values(api, device_id, key)
                assert values <= stored, (device_id, key, sorted(values - stored))


async def telemetry_values(api: Api, device_id: str, key: str) -> set[int]:
    values: set[int] = set()
    cursor = ""
    for _ in range(MAX_WRITES):
        query = f"key={key}&limit=1000" + (f"&cursor={cursor}" if cursor else "")
        page = await api.ok("GET", f"/api/v1/devices/{device_id}/telemetry?{query}")
        values |= {row["value"] for row in page["items"]}
        if not (cursor := page["next_cursor"]):
            break
    return values


async def check_commands(api: Api, fleet: Fleet, ledger: Ledger, killed_at: datetime) -> None:
    """Every acknowledged command is there with its deadline; the short ones whose deadline fell
    during the outage or after the restart end TIMEOUT, so the deadlines were re-armed."""
    rearmed = [
        c
        for c in ledger.commands.values()
        if parse_time(c["timeout_at"]) > killed_at
        and c["device_id"] in {fleet.devices[n][0] for n in SILENT}
        and c["timeout_s"] == SHORT_TIMEOUT_S
    ]
    assert rearmed, "no short command was open at the kill: the test proves nothing"

    async def all_timed_out() -> bool:
        for c in rearmed:
            got = await api.ok("GET", f"/api/v1/devices/{c['device_id']}/commands/{c['id']}")
            if got["status"] != "TIMEOUT":
                return False
        return True

    await eventually(all_timed_out, timeout=WAIT + SHORT_TIMEOUT_S)
    for command_id, answer in ledger.commands.items():
        got = await api.ok("GET", f"/api/v1/devices/{answer['device_id']}/commands/{command_id}")
        assert got["timeout_at"] == answer["timeout_at"], got
        if command_id in ledger.succeeded:
            assert got["status"] == "SUCCESS", ("acknowledged ack lost", got)
    now = datetime.now(UTC)
    for device_id, _key in fleet.devices:
        page = await api.ok("GET", f"/api/v1/devices/{device_id}/commands?limit=1000")
        for got in page["items"]:
            deadline = parse_time(got["timeout_at"])
            if got["status"] in OPEN:
                assert deadline > now - LATE, ("deadline not re-armed", got)
            if got["status"] == "TIMEOUT":
                assert parse_time(got["finished_at"]) >= deadline, ("timed out early", got)


async def check_serves_devices(running: Running, api: Api, fleet: Fleet) -> None:
    """Every device gets its current document again, its report is acknowledged and counted, and
    a command reaches a device and its ack is recorded."""

    async def converge(index: int) -> None:
        device_id, key = fleet.devices[index]
        async with mqtt_client(running, device_id, key) as client:
            await client.subscribe(f"devices/{device_id}/desired", qos=1)
            await client.subscribe(f"devices/{device_id}/commands", qos=1)
            desired = (await api.ok("GET", f"/api/v1/devices/{device_id}"))["desired_version"]
            doc = await next_message(client, "desired")
            assert doc["version"] == desired, doc
            report = {"version": doc["version"], "status": "ACCEPTED"}
            await publish(client, f"devices/{device_id}/reported", report)
            if index == DEVICES - 1:
                path = f"/api/v1/devices/{device_id}/commands"
                sent = await created(api, path, {"type": "REBOOT"})
                while (command := await next_message(client, "commands"))["id"] != sent["id"]:
                    pass  # an older REBOOT re-delivered first; the new one follows
                ack = {"id": command["id"], "status": "SUCCESS"}
                await publish(client, f"devices/{device_id}/commands/ack", ack)
                got = await api.ok("GET", f"{path}/{sent['id']}")
                assert got["status"] == "SUCCESS", got

    async with asyncio.timeout(WAIT * 3):
        await asyncio.gather(*(converge(n) for n in range(DEVICES)))
    for device_id, _key in fleet.devices:
        got = await api.ok("GET", f"/api/v1/devices/{device_id}")
        assert got["reported_version"] == got["desired_version"], got


async def next_message(client: aiomqtt.Client, sub: str) -> dict[str, Any]:
    async with asyncio.timeout(WAIT):
        async for message in client.messages:
            if str(message.topic).endswith(f"/{sub}"):
                return dict(json.loads(bytes(message.payload)))
    raise AssertionError("message stream ended")


# -- the test -------------------------------------------------------------------------------


async def test_crash_safety_sigkill_under_load_loses_nothing_acknowledged(tmp_path: Path) -> None:
    data, ledger = tmp_path / "data", Ledger()
    fleet, killed_at = None, datetime.now(UTC)
    for cycle in range(KILLS):
        async with serve(data, env=NO_RATE_LIMIT) as running, aiohttp.ClientSession() as session:
            api = Api(session, running.http_url, TOKEN)
            if fleet is None:
                fleet = await build_fleet(api, ledger)
            else:
                await check_acknowledged(api, fleet, ledger, killed_at)
            before = progress(ledger)
            ledger.cycle, ledger.burst = cycle, Burst(pid=running.proc.pid)
            async with load(running, api, fleet, ledger):
                await asyncio.sleep(LOAD_S)  # the load's length, not a readiness guess
                ledger.burst.started.set()
                async with asyncio.timeout(WAIT):
                    await ledger.burst.killed.wait()
                async with asyncio.timeout(WAIT):
                    assert await running.proc.wait() == -signal.SIGKILL
                killed_at = datetime.now(UTC)
        # Every kind of write was acknowledged in this cycle, or the checks would prove little.
        assert all(a < b for a, b in zip(before, progress(ledger), strict=True)), ledger
    assert fleet is not None
    async with serve(data, env=NO_RATE_LIMIT) as running, aiohttp.ClientSession() as session:
        api = Api(session, running.http_url, TOKEN)
        await check_acknowledged(api, fleet, ledger, killed_at)
        await check_serves_devices(running, api, fleet)


def progress(ledger: Ledger) -> tuple[int, ...]:
    """How much of each kind of write the service acknowledged so far."""
    return (
        len(ledger.artefacts),
        len(ledger.commands),
        len(ledger.succeeded),
        sum(ledger.reported.values()),
        sum(len(v) for (_d, key), v in ledger.telemetry.items() if key == "mseq"),
        sum(len(v) for (_d, key), v in ledger.telemetry.items() if key == "hseq"),
    )


async def check_acknowledged(api: Api, fleet: Fleet, ledger: Ledger, killed_at: datetime) -> None:
    await check_rest_writes(api, fleet, ledger)
    await check_devices(api, fleet, ledger)
    await check_commands(api, fleet, ledger, killed_at)
