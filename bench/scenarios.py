"""The measured scenarios of `python -m bench`: connect, rollout, commands, telemetry, and
connect and rollout again with the lean fleet.

Each scenario drives a running simulated fleet (`supervisor.Fleet`) and the service's REST API,
and returns a flat dict of figures. Latencies come from client-side timestamps: a device records
`applied` / `command` once the service PUBACKed its final answer, and a PUBACK from fleetstate
means the answer is committed, so "all ACCEPTED" is a fact on both sides.
"""

import asyncio
import contextlib
import json
import resource
import sys
import time
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any

from bench.service import ROOT, Process, machine_busy_s, process_cpu_s
from fleetstate.simulator.fleet import Burst
from fleetstate.simulator.options import DeviceSpec, Transport
from fleetstate.simulator.provision import Api
from fleetstate.simulator.stats import Totals
from fleetstate.simulator.supervisor import Fleet

TOP_ERRORS = 8


def percentiles(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"p50_s": None, "p99_s": None, "max_s": None}
    ordered = sorted(values)

    def at(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 3)

    return {"p50_s": at(0.50), "p99_s": at(0.99), "max_s": round(ordered[-1], 3)}


def own_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class Phase:
    """Wall time and the CPU the target, the load generator and everything else on the machine
    used over one phase, in percent of one core (the machine has `os.cpu_count()` of them, shared
    by all). `others_cpu_pct` well above zero means the figures were disturbed."""

    def __init__(self, target: Process, fleet: Fleet | None, load_pid: int | None = None) -> None:
        """`fleet` None: the load generator is this process and the children it waits for
        by the end of the phase, such as `load_pid` (whose CPU so far is not the phase's)."""
        self.target, self.fleet, self.load_pid = target, fleet, load_pid
        self.t0 = time.monotonic()
        self.target0 = target.cpu_s()
        self.clients0 = self._clients_cpu_s()
        self.machine0 = machine_busy_s()

    def _clients_cpu_s(self) -> float:
        if self.fleet is None:
            # Children waited for are in RUSAGE_CHILDREN; one still running is read from /proc.
            usage = resource.getrusage(resource.RUSAGE_CHILDREN)
            running = 0.0
            if self.load_pid is not None:
                with contextlib.suppress(OSError):
                    running = process_cpu_s(self.load_pid)
            return own_cpu_s() + usage.ru_utime + usage.ru_stime + running
        return self.fleet.poll().cpu_s() + own_cpu_s()

    def result(self) -> dict[str, float]:
        seconds = time.monotonic() - self.t0
        target = self.target.cpu_s() - self.target0
        clients = self._clients_cpu_s() - self.clients0
        others = machine_busy_s() - self.machine0 - target - clients
        return {
            "phase_s": round(seconds, 2),
            "target_cpu_pct": round(100 * target / seconds, 1),
            "clients_cpu_pct": round(100 * clients / seconds, 1),
            "others_cpu_pct": round(max(0.0, 100 * others / seconds), 1),
        }


class Watch:
    """Per device, the first event of a kind (and subject) since the watch began."""

    def __init__(self, totals: Totals, kind: str, subject: str | None = None) -> None:
        self.kind, self.subject = kind, subject
        self._pos = len(totals.events)
        self.first: dict[str, float] = {}
        self.subjects: dict[str, str] = {}
        self.statuses: Counter[str] = Counter()

    def update(self, totals: Totals) -> int:
        for kind, device, subject, status, at in totals.events[self._pos :]:
            if kind != self.kind or (self.subject is not None and subject != self.subject):
                continue
            if device not in self.first:
                self.first[device] = at
                self.subjects[device] = subject
                self.statuses[status] += 1
        self._pos = len(totals.events)
        return len(self.first)

    def since(self, t0: float) -> list[float]:
        return [at - t0 for at in self.first.values()]


def errors(totals: Totals) -> dict[str, int]:
    return dict(totals.errors().most_common(TOP_ERRORS))


async def connect(target: Process, fleet: Fleet, devices: int, within: float) -> dict[str, Any]:
    """Start the worker processes; every device connects and subscribes to its three topics."""
    rss0 = target.rss_kib()
    phase = Phase(target, fleet)
    watch = Watch(fleet.totals, "connected")
    t0 = time.time()
    fleet.start()
    done = await fleet.wait(lambda t: watch.update(t) >= devices, within)
    times = watch.since(t0)
    first, last = (min(times), max(times)) if times else (0.0, 0.0)
    rss = target.rss_kib()
    return {
        "devices": devices,
        "connected": len(times),
        "all_connected": done,
        "all_connected_s": round(last, 2) if done else None,
        "rate_per_s": round(len(times) / (last - first), 1) if last > first else None,
        "handshake": percentiles([float(s) for s in watch.subjects.values()]),
        "rss_mib": round(rss / 1024, 1),
        "rss_per_device_kib": round((rss - rss0) / max(1, len(times)), 1),
        "errors": errors(fleet.totals),
        **phase.result(),
    }


async def rollout(
    api: Api, target: Process, fleet: Fleet, group_id: str, profile_id: str, within: float
) -> dict[str, Any]:
    """Bind one new artefact to the group; wait until every device reported it ACCEPTED."""
    devices = fleet.devices
    content = {"setpoint": 21, "bench": time.time()}
    body = {"name": "bench", "profile_id": profile_id, "content": content}
    artefact = await api.ok("POST", "/api/v1/config-artefacts", body)
    watch = Watch(fleet.totals, "applied", artefact["id"])
    foreign0 = fleet.totals.counter("foreign_messages")
    phase = Phase(target, fleet)
    t0 = time.time()
    binding = await api.ok(
        "PUT",
        "/api/v1/desired-state-bindings",
        {"target_type": "device_group", "target_id": group_id, "artefact_id": artefact["id"]},
    )
    put_s = time.time() - t0
    done = await fleet.wait(lambda t: watch.update(t) >= devices, within)
    figures = phase.result()
    t1 = time.time()
    checked = await api.ok("GET", f"/api/v1/desired-state-bindings/{binding['id']}")
    latencies = watch.since(t0)
    return {
        "devices": devices,
        "binding_put_s": round(put_s, 2),
        "applied": len(latencies),
        "all_accepted": done and checked["counts"] == {"ACCEPTED": devices},
        "all_accepted_s": round(max(latencies), 2) if done else None,
        **percentiles(latencies),
        "service_counts": checked["counts"],
        "binding_get_s": round(time.time() - t1, 2),
        "foreign_documents": fleet.totals.counter("foreign_messages") - foreign0,
        "errors": errors(fleet.totals),
        **figures,
    }


async def commands(
    api: Api, target: Process, fleet: Fleet, group_id: str, within: float
) -> dict[str, Any]:
    """REBOOT to every member of the group at once; wait until every device acked SUCCESS."""
    devices = fleet.devices
    watch = Watch(fleet.totals, "command")
    phase = Phase(target, fleet)
    t0 = time.time()
    created = await api.ok(
        "POST", f"/api/v1/device-groups/{group_id}/commands", {"type": "REBOOT", "timeout_s": 900}
    )
    post_s = time.time() - t0
    done = await fleet.wait(lambda t: watch.update(t) >= devices, within)
    figures = phase.result()
    server, counts = await _batch_round_trips(api, created["batch_id"])
    client = watch.since(t0)
    return {
        "devices": devices,
        "post_s": round(post_s, 2),
        "done": len(client),
        "all_success": done and counts == {"SUCCESS": devices},
        "client": percentiles(client),
        "server": percentiles(server),
        "service_counts": counts,
        "errors": errors(fleet.totals),
        **figures,
    }


async def _batch_round_trips(api: Api, batch_id: str) -> tuple[list[float], dict[str, int]]:
    """Creation to finish of every command of the batch, from the service's own timestamps."""
    trips: list[float] = []
    cursor = ""
    while True:
        page = await api.ok("GET", f"/api/v1/command-batches/{batch_id}?limit=1000{cursor}")
        trips += [
            (_time(c["finished_at"]) - _time(c["created_at"])).total_seconds()
            for c in page["commands"]
            if c["finished_at"]
        ]
        if page["next_cursor"] is None:
            return trips, dict(page["counts"])
        cursor = f"&cursor={page['next_cursor']}"


def _time(text: str) -> datetime:
    return datetime.fromisoformat(text)


async def telemetry(
    target: Process, fleet: Fleet, transport: Transport, seconds: float, window: int
) -> dict[str, Any]:
    """Telemetry as fast as it is acknowledged, `window` messages in flight over the fleet."""
    key = f"{transport}_seq"
    before = fleet.poll().counters()
    phase = Phase(target, fleet)
    t0 = time.monotonic()
    per_worker = max(1, window // fleet.workers)
    fleet.send(Burst(transport=transport, seconds=seconds, window=per_worker, key=key))
    finished = before["bursts_done"] + fleet.workers
    await fleet.wait(lambda t: t.counter("bursts_done") >= finished, seconds + 120)
    elapsed = time.monotonic() - t0
    after = fleet.totals.counters()
    acked = after["telemetry_acked"] - before["telemetry_acked"]
    return {
        "transport": str(transport),
        "key": key,
        "window": per_worker * fleet.workers,
        "seconds": round(elapsed, 2),
        "sent": after["telemetry_sent"] - before["telemetry_sent"],
        "acked": acked,
        "failed": after["telemetry_failed"] - before["telemetry_failed"],
        "rate_per_s": round(acked / elapsed, 1),
        "errors": errors(fleet.totals),
        **phase.result(),
    }


async def lean_telemetry(
    target: Process,
    devices: list[DeviceSpec],
    transport: Transport,
    address: tuple[str, int],
    seconds: float,
    window: int,
    workdir: Path,
) -> dict[str, Any]:
    """The same fan-in from `bench/load.py`, a load generator that costs the cores
    little, so that the service's own limit shows (run it once the fleet has stopped: it
    connects as the same devices)."""
    key = f"{transport}_lean_seq"
    spec = {
        "transport": str(transport),
        "host": address[0],
        "port": address[1],
        "devices": [[d.id, d.key] for d in devices],
        "window": window,
        "seconds": seconds,
        "key": key,
        "connect_within": max(120.0, len(devices) / 20),
    }
    spec_file = workdir / f"load-{transport}.json"
    spec_file.write_text(json.dumps(spec))
    load = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "bench.load", str(spec_file)),
        stdout=asyncio.subprocess.PIPE,
        cwd=ROOT,  # where `bench` is importable from, wherever the run was started
    )
    assert load.stdout is not None
    connected = await load.stdout.readline()  # the phase is the sending, not the connecting
    phase = Phase(target, None, load.pid)
    out = await load.stdout.read()
    if await load.wait() != 0 or not connected:
        raise RuntimeError(f"bench.load exited with {load.returncode}")
    found = json.loads(out)
    return {
        "transport": str(transport),
        "key": key,
        "window": window,
        **found,
        "rate_per_s": round(found["acked"] / found["seconds"], 1),
        **phase.result(),
    }


class LeanFleet:
    """`bench/lean_fleet.py` in its own process: the devices' side at little CPU cost, so the
    connect and rollout phases show the service's limit rather than the simulated fleet's."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    @classmethod
    async def start(
        cls, devices: list[tuple[str, str]], address: tuple[str, int], workdir: Path, **extra: Any
    ) -> "LeanFleet":
        spec = {"host": address[0], "port": address[1], "devices": devices, **extra}
        spec_file = workdir / "lean-fleet.json"
        spec_file.write_text(json.dumps(spec))
        proc = await asyncio.create_subprocess_exec(
            *(sys.executable, "-m", "bench.lean_fleet", str(spec_file)),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            cwd=ROOT,
        )
        return cls(proc)

    async def ready(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = await self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"bench.lean_fleet exited with {await self.proc.wait()}")
        found: dict[str, Any] = json.loads(line)
        return found

    async def watch(self, artefact_id: str) -> None:
        """From now on, time each device's acknowledged report of this artefact."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(f"watch {artefact_id}\n".encode())
        await self.proc.stdin.drain()

    async def applied(self) -> dict[str, Any]:
        """Once every device's report of the watched artefact was acknowledged (or the fleet's
        `connect_within` passed): how many, and when."""
        return await self.ready()

    async def stop(self) -> dict[str, Any]:
        assert self.proc.stdin is not None
        assert self.proc.stdout is not None
        if self.proc.returncode is not None:
            return {}
        self.proc.stdin.write(b"stop\n")
        await self.proc.stdin.drain()
        async with asyncio.timeout(60):
            line = await self.proc.stdout.readline()
            await self.proc.wait()
        return json.loads(line) if line else {}


async def lean_connect(
    target: Process, fleet: LeanFleet, devices: int, expect_document: bool
) -> dict[str, Any]:
    """Every device of the lean fleet connects, subscribes, and (if bound) has its document."""
    phase = Phase(target, None, fleet.proc.pid)
    found = await fleet.ready()
    return {
        "devices": devices,
        **found,
        "all_connected": found["connected"] == devices,
        "documents_expected": expect_document,
        "rss_mib": round(target.rss_kib() / 1024, 1),
        **phase.result(),
    }


async def lean_rollout(
    api: Api,
    target: Process,
    fleet: LeanFleet,
    devices: int,
    group_id: str,
    profile_id: str,
) -> dict[str, Any]:
    """One new artefact bound to the group; done when every device's report of it has been
    acknowledged (so committed), then checked against the service's binding counts."""
    content = {"setpoint": 22, "bench": time.time(), "lean": True}
    body = {"name": "bench-lean", "profile_id": profile_id, "content": content}
    artefact = await api.ok("POST", "/api/v1/config-artefacts", body)
    phase = Phase(target, None, fleet.proc.pid)
    t0 = time.monotonic()
    await fleet.watch(artefact["id"])
    binding = await api.ok(
        "PUT",
        "/api/v1/desired-state-bindings",
        {"target_type": "device_group", "target_id": group_id, "artefact_id": artefact["id"]},
    )
    put_s = time.monotonic() - t0
    applied = await fleet.applied()
    figures = phase.result()
    checked = await api.ok("GET", f"/api/v1/desired-state-bindings/{binding['id']}")
    done = applied["all_applied_s"] is not None and checked["counts"] == {"ACCEPTED": devices}
    return {
        "devices": devices,
        "binding_put_s": round(put_s, 2),
        "all_accepted": done,
        "all_accepted_s": applied["all_applied_s"] if done else None,
        "p50_s": applied["p50_s"],
        "p99_s": applied["p99_s"],
        "service_counts": checked["counts"],
        **figures,
    }
