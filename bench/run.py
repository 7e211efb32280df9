"""Benchmarks of fleetstate with a simulated fleet.

Starts a fresh `fleetstate serve` (temporary data directory, loopback port 0, admin token from
FLEETSTATE_ADMIN_TOKEN, log level WARNING), provisions N devices over REST, and runs the named
scenarios in order:

  connect    N devices connect and subscribe: rate, service RSS per device;
  rollout    one artefact bound to the group of all N: time until all are ACCEPTED, p50/p99;
  commands   REBOOT to the whole group at once: round trip p50/p99, all SUCCESS;
  telemetry  MQTT, then HTTP telemetry for --telemetry-seconds: accepted/s, and after the service
             stopped, the rows stored in SQLite against the messages acknowledged;
  ceiling    the same connect, rollout and telemetry fan-in against a bare Mosquitto (when
             installed), measured in the same run;
  attack     not in the default list: --attack-connections refused MQTT connections against a
             fresh service of its own (bench/attack.py): RSS, descriptors, the connected gauge,
             and a legitimate device that still gets its command; with --attack-tls the
             connections go to the TLS listener and fail their handshakes.

Writes bench/results/<date>.json (or --out) and appends a markdown table to docs/benchmarks.md
(unless --no-append). The simulated devices run in worker processes on the same cores as the
service; the CPU both sides used is measured and reported.
"""

import argparse
import asyncio
import contextlib
import datetime
import json
import os
import shutil
import signal
import sys
import tempfile
import urllib.parse
from pathlib import Path
from typing import Any

import aiohttp

from bench import attack, ceiling, report, scenarios
from bench.service import ROOT, Process, count_rows, fleetstate_serve, machine, mosquitto, versions
from fleetstate.simulator.options import (
    DeviceSpec,
    Options,
    Settings,
    Transport,
    default_processes,
    mqtt_address,
)
from fleetstate.simulator.provision import Api, ensure_group, provision
from fleetstate.simulator.supervisor import Fleet

SCENARIOS = ("connect", "rollout", "commands", "telemetry", "lean", "ceiling")
EXTRA = ("attack",)
"""Scenarios run only when named."""
TOKEN = os.environ.get("FLEETSTATE_ADMIN_TOKEN") or "bench-admin-token"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--devices", type=int, default=1000)
    add(
        "--scenarios",
        default=",".join(SCENARIOS),
        help="comma-separated, of " + str(SCENARIOS + EXTRA),
    )
    add("--attack-connections", type=int, default=10_000, help="refused connections (attack)")
    add(
        "--attack-throttle",
        choices=("raised", "default", "both"),
        default="raised",
        help="attack against raised throttle limits (every key checked), the shipped ones, or both",
    )
    add("--attack-waves", type=int, default=1, help="attacks one after another (attack)")
    add(
        "--attack-tls",
        action="store_true",
        help="attack the MQTT-over-TLS listener with failing handshakes instead (attack)",
    )
    add("--telemetry-seconds", type=float, default=30.0)
    add("--processes", type=int, default=0, help="simulator processes (default: enough for N)")
    add("--ceiling", default="mosquitto", help="bare brokers to compare with (mosquitto)")
    add("--mqtt-window", type=int, default=2000, help="MQTT telemetry messages in flight")
    add("--http-window", type=int, default=128, help="HTTP telemetry requests in flight")
    add("--out", type=Path, default=ROOT / "bench" / "results", help="where the JSON goes")
    add("--markdown", type=Path, default=ROOT / "docs" / "benchmarks.md")
    add("--no-append", action="store_true", help="do not append to the markdown file")
    add("--py-spy", default="", help="phases to profile the service in (py-spy record, raw)")
    add("--keep", action="store_true", help="keep the temporary data directory")
    add(
        "--no-lean",
        action="store_true",
        help="telemetry from the simulated fleet only, not also from bench/load.py",
    )
    add(
        "--serve-src",
        type=Path,
        help="run the service from this source tree instead (e.g. an older commit:"
        " git archive COMMIT | tar -x -C DIR), for before/after figures",
    )
    return parser


async def main(args: argparse.Namespace) -> dict[str, Any]:
    chosen = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    unknown = set(chosen) - set(SCENARIOS + EXTRA)
    if unknown:
        raise SystemExit(f"unknown scenarios: {', '.join(sorted(unknown))}")
    processes = args.processes or default_processes(args.devices)
    now = datetime.datetime.now(datetime.UTC)
    result: dict[str, Any] = {
        "started_at": now.strftime("%Y-%m-%d %H:%M UTC"),
        "command": "python -m bench " + " ".join(sys.argv[1:]),
        "machine": machine(),
        "versions": versions(),
        "devices": args.devices,
        "processes": processes,
        "scenarios": chosen,
        "serve_src": str(args.serve_src) if args.serve_src else None,
        "note": "the load generator runs on the same cores as the service",
    }
    workdir = Path(tempfile.mkdtemp(prefix="fleetstate-bench-"))
    try:
        if set(chosen) - {"ceiling", *EXTRA}:
            result["service"] = await _service_run(args, chosen, processes, workdir)
        if "ceiling" in chosen:
            result["ceiling"] = await _ceilings(args, processes, workdir)
        if "attack" in chosen:
            result["attack"] = await attack.run(
                args.attack_connections,
                args.attack_throttle,
                workdir,
                TOKEN,
                args.serve_src,
                args.attack_waves,
                args.attack_tls,
            )
            _say(f"attack: {result['attack']}")
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            print(f"kept {workdir}", file=sys.stderr)
    result["targets"] = report.targets(result)
    return result


async def _service_run(
    args: argparse.Namespace, chosen: list[str], processes: int, workdir: Path
) -> dict[str, Any]:
    data, n = workdir / "data", args.devices
    out: dict[str, Any] = {}
    timeout = aiohttp.ClientTimeout(total=600)
    serve = fleetstate_serve(data, TOKEN, args.serve_src)
    async with serve as svc, aiohttp.ClientSession(timeout=timeout) as s:
        api = Api(s, svc.http_url, TOKEN)
        options = Options(devices=n, http_url=svc.http_url, mqtt_url=svc.mqtt_url, token=TOKEN)
        provisioned = await provision(options, s)
        out["provisioning"] = {"seconds": round(provisioned.seconds, 1), "rss_mib": _mib(svc)}
        t0 = asyncio.get_running_loop().time()
        group_id = await ensure_group(api, "bench", [d.id for d in provisioned.specs])
        out["provisioning"]["group_create_s"] = round(asyncio.get_running_loop().time() - t0, 2)
        _say(f"provisioned {n:,} devices: {out['provisioning']}")
        settings = _settings(svc.mqtt_url, svc.http_url)
        fleet = Fleet(provisioned.specs, settings, processes)
        try:
            await _phases(args, chosen, svc, api, fleet, group_id, provisioned.profile_id, out)
            if "lean" in chosen and provisioned.profile_id is not None:
                await fleet.stop()  # the lean fleet connects as the same devices
                lean = _LeanRun(svc, api, provisioned.specs, group_id, provisioned.profile_id)
                await lean.phases(args, "rollout" in out, workdir, out)
            if "telemetry" in chosen and not args.no_lean:
                await fleet.stop()  # the lean load generator connects as the same devices
                await _lean_phases(args, svc, provisioned.specs, workdir, out)
        finally:
            await fleet.stop()
            out["peak_rss_mib"] = round(svc.peak_rss_kib() / 1024, 1)
            out["exit_code"] = await svc.stop()
    for name in report.TELEMETRY_PHASES:
        if name in out:
            sql = f"SELECT count(*) FROM telemetry_history WHERE key = '{out[name]['key']}'"
            out[name]["stored"] = count_rows(data / "fleetstate.db", sql)
    return out


async def _phases(
    args: argparse.Namespace,
    chosen: list[str],
    svc: Process,
    api: Api,
    fleet: Fleet,
    group_id: str,
    profile_id: str | None,
    out: dict[str, Any],
) -> None:
    n = args.devices
    within = max(120.0, n / 20)
    async with _profiled(args, "connect", svc):
        out["connect"] = await scenarios.connect(svc, fleet, n, within)
    _say(f"connect: {out['connect']}")
    if "rollout" in chosen and profile_id is not None:
        async with _profiled(args, "rollout", svc):
            out["rollout"] = await scenarios.rollout(api, svc, fleet, group_id, profile_id, within)
        _say(f"rollout: {out['rollout']}")
    if "commands" in chosen:
        async with _profiled(args, "commands", svc):
            out["commands"] = await scenarios.commands(api, svc, fleet, group_id, within)
        _say(f"commands: {out['commands']}")
    if "telemetry" in chosen:
        for transport, window in (
            (Transport.MQTT, args.mqtt_window),
            (Transport.HTTP, args.http_window),
        ):
            name = f"telemetry_{transport}"
            async with _profiled(args, name, svc):
                out[name] = await scenarios.telemetry(
                    svc, fleet, transport, args.telemetry_seconds, window
                )
            _say(f"{name}: {out[name]}")


class _LeanRun:
    """Connect and rollout once more, with the lean fleet (bench/lean_fleet.py)."""

    def __init__(
        self, svc: Process, api: Api, specs: list[DeviceSpec], group_id: str, profile_id: str
    ) -> None:
        self.svc, self.api, self.specs = svc, api, specs
        self.group_id, self.profile_id = group_id, profile_id

    async def phases(
        self, args: argparse.Namespace, bound: bool, workdir: Path, out: dict[str, Any]
    ) -> None:
        n = len(self.specs)
        within = max(120.0, n / 20)
        devices = [(d.id, d.key) for d in self.specs]
        address = mqtt_address(self.svc.mqtt_url)
        extra = {"expect_document": bound, "connect_within": within}
        fleet = await scenarios.LeanFleet.start(devices, address, workdir, **extra)
        try:
            async with _profiled(args, "connect_lean", self.svc):
                out["connect_lean"] = await scenarios.lean_connect(self.svc, fleet, n, bound)
            _say(f"connect_lean: {out['connect_lean']}")
            async with _profiled(args, "rollout_lean", self.svc):
                out["rollout_lean"] = await scenarios.lean_rollout(
                    self.api, self.svc, fleet, n, self.group_id, self.profile_id
                )
            _say(f"rollout_lean: {out['rollout_lean']}")
        finally:
            out.setdefault("rollout_lean", {})["devices_side"] = await fleet.stop()


async def _lean_phases(
    args: argparse.Namespace,
    svc: Process,
    specs: list[DeviceSpec],
    workdir: Path,
    out: dict[str, Any],
) -> None:
    http = urllib.parse.urlsplit(svc.http_url)
    addresses = {
        Transport.MQTT: (mqtt_address(svc.mqtt_url), args.mqtt_window),
        Transport.HTTP: ((http.hostname or "127.0.0.1", http.port or 80), args.http_window),
    }
    for transport, (address, window) in addresses.items():
        name = f"telemetry_{transport}_lean"
        async with _profiled(args, name, svc):
            out[name] = await scenarios.lean_telemetry(
                svc, specs, transport, address, args.telemetry_seconds, window, workdir
            )
        _say(f"{name}: {out[name]}")


def _settings(mqtt_url: str, http_url: str) -> Settings:
    host, port = mqtt_address(mqtt_url)
    return Settings(
        mqtt_host=host,
        mqtt_port=port,
        http_url=http_url,
        telemetry_interval=0,
        connect_rate=0,
        apply_delay=0,
        record_events=True,
    )


@contextlib.asynccontextmanager
async def _profiled(args: argparse.Namespace, phase: str, svc: Process):  # type: ignore[no-untyped-def]
    """py-spy over one phase of the service, when asked for (raw output next to the JSON)."""
    wanted = {p.strip() for p in args.py_spy.split(",") if p.strip()}
    if phase not in wanted or shutil.which("py-spy") is None:
        yield
        return
    args.out.mkdir(parents=True, exist_ok=True)
    target = args.out / f"py-spy-{phase}-{args.devices}.txt"
    spy = await asyncio.create_subprocess_exec(
        "py-spy",
        "record",
        "--pid",
        str(svc.pid),
        "-f",
        "raw",
        "-o",
        str(target),
        "--rate",
        "100",
        "--gil",  # what holds the GIL: the event loop's work, not its waiting
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        yield
    finally:
        spy.send_signal(signal.SIGINT)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(30):
                await spy.wait()
        _say(f"py-spy profile of {phase}: {target}")


async def _ceilings(args: argparse.Namespace, processes: int, workdir: Path) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for kind in [k.strip() for k in args.ceiling.split(",") if k.strip()]:
        if kind == "mosquitto" and mosquitto() is None:
            _say("mosquitto is not installed: no Mosquitto ceiling (apt-get install -y mosquitto)")
            continue
        found[kind] = await ceiling.run(
            kind,
            args.devices,
            processes,
            workdir,
            max(60.0, args.devices / 50),
            args.telemetry_seconds,
            args.mqtt_window,
        )
        _say(f"ceiling {kind}: {found[kind]}")
    return found


def _mib(process: Process) -> float:
    return round(process.rss_kib() / 1024, 1)


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def write(result: dict[str, Any], args: argparse.Namespace) -> Path:
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"{result['started_at'][:10]}.json"
    runs = json.loads(path.read_text())["runs"] if path.exists() else []
    path.write_text(json.dumps({"runs": [*runs, result]}, indent=1) + "\n")
    table = report.markdown(result) if set(result["scenarios"]) - set(EXTRA) else ""
    if "attack" in result:
        table += "\n" + attack.markdown(result["attack"])
    if not args.no_append:
        with args.markdown.open("a") as doc:
            doc.write("\n" + table)
    print(table)
    return path


async def _main_until_terminated(args: argparse.Namespace) -> dict[str, Any]:
    """SIGTERM cancels the run, so every process it started is stopped on the way out."""
    task = asyncio.current_task()
    assert task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    return await main(args)


def cli() -> None:
    """`python -m bench`: parse the flags, run, write the JSON and the markdown table."""
    arguments = _parser().parse_args()
    written = write(asyncio.run(_main_until_terminated(arguments)), arguments)
    print(f"results in {written}", file=sys.stderr)
