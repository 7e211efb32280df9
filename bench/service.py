"""Processes under test for `python -m bench`: a fresh `fleetstate serve`, a bare Mosquitto, and
what /proc says about them and the machine."""

import asyncio
import contextlib
import importlib.metadata
import os
import platform
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 120.0
_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass
class Process:
    """A process under test: its pid, addresses, and its share of the machine."""

    proc: asyncio.subprocess.Process
    http_url: str
    mqtt_url: str

    @property
    def pid(self) -> int:
        return self.proc.pid

    def rss_kib(self) -> int:
        return _status_kib(self.pid, "VmRSS")

    def peak_rss_kib(self) -> int:
        return _status_kib(self.pid, "VmHWM")

    def cpu_s(self) -> float:
        return process_cpu_s(self.pid)

    async def stop(self) -> int:
        """SIGTERM and wait (the service commits what is queued first); SIGKILL if stuck."""
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                async with asyncio.timeout(STOP_TIMEOUT_S):
                    return await self.proc.wait()
            except TimeoutError:
                self.proc.kill()
        return await self.proc.wait()


def process_cpu_s(pid: int) -> float:
    """User plus system CPU seconds of a process (and its threads), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS


def machine_busy_s() -> float:
    """CPU seconds every core of the machine spent busy since boot (all processes)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return (sum(fields[:8]) - idle) / _TICKS


def _status_kib(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


async def _read_addresses(proc: asyncio.subprocess.Process) -> tuple[str, str]:
    """The `http listening on` / `mqtt listening on` lines a process prints once bound."""
    assert proc.stdout is not None
    found: dict[str, str] = {}
    async with asyncio.timeout(START_TIMEOUT_S):
        while "mqtt" not in found:
            line = (await proc.stdout.readline()).decode()
            if not line:
                raise RuntimeError(f"process {proc.pid} exited before listening")
            kind, _, rest = line.partition(" listening on ")
            if rest:
                found[kind.strip()] = rest.strip()
    return found.get("http") or found.get("https", ""), found["mqtt"]  # https: with [tls]


@contextlib.asynccontextmanager
async def fleetstate_serve(
    data: Path, token: str, src: Path | None = None, settings: dict[str, str] | None = None
) -> AsyncIterator[Process]:
    """`fleetstate serve` on loopback port 0 with a fresh data directory, logging WARNING, without
    the telemetry rate limit; from another source tree when `src` is given (its `src/` first);
    `settings` are more `FLEETSTATE_*` variables."""
    env = {
        **os.environ,
        "FLEETSTATE_ADMIN_TOKEN": token,
        "FLEETSTATE_LOG_LEVEL": "WARNING",
        # The benchmark measures how fast telemetry can go: no per-device rate limit.
        "FLEETSTATE_LIMITS_TELEMETRY_RATE_PER_DEVICE": "0",
        **(settings or {}),
    }
    if src is not None:
        env["PYTHONPATH"] = str(src / "src")
    args = ["-m", "fleetstate", "serve", "--data", str(data)]
    args += ["--http", "127.0.0.1:0", "--mqtt", "127.0.0.1:0"]
    with (data.parent / "serve.log").open("ab") as log:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, *args, stdout=asyncio.subprocess.PIPE, stderr=log, env=env
        )
    try:
        http_url, mqtt_url = await _read_addresses(proc)
        yield Process(proc, http_url, mqtt_url)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


@contextlib.asynccontextmanager
async def bare_broker(kind: str, workdir: Path) -> AsyncIterator[Process]:
    """A broker alone: Mosquitto, anonymous (the only `kind`)."""
    if kind != "mosquitto":
        raise ValueError(f"no bare broker {kind!r}: only mosquitto")
    port = _free_port()  # Mosquitto cannot pick a port itself; a tiny race, loopback only
    conf = workdir / "mosquitto.conf"
    conf.write_text(
        f"listener {port} 127.0.0.1\nallow_anonymous true\nmax_inflight_messages 0\n"
        "max_queued_messages 100000\npersistence false\nlog_type error\n"
    )
    proc = await asyncio.create_subprocess_exec(
        mosquitto() or "mosquitto", "-c", str(conf), stderr=asyncio.subprocess.DEVNULL
    )
    try:
        await _wait_for_port(port)
        yield Process(proc, "", f"mqtt://127.0.0.1:{port}")
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


def mosquitto() -> str | None:
    return shutil.which("mosquitto") or next(
        (p for p in ("/usr/sbin/mosquitto",) if Path(p).exists()), None
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _wait_for_port(port: int) -> None:
    async with asyncio.timeout(START_TIMEOUT_S):
        while True:
            try:
                _reader, writer = await asyncio.open_connection("127.0.0.1", port)
            except OSError:
                await asyncio.sleep(0.05)
                continue
            writer.close()
            return


def count_rows(database: Path, sql: str) -> int:
    """One number from the service's SQLite file, read-only, after the service stopped."""
    with contextlib.closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True)) as conn:
        return int(conn.execute(sql).fetchone()[0])


def machine() -> dict[str, object]:
    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    memory_kib = _meminfo_kib("MemTotal")
    return {
        "cores": os.cpu_count(),
        "memory_gib": round(memory_kib / 2**20, 1),
        "cpu": model,
        "python_loop_s": python_loop_s(),
    }


def python_loop_s() -> float:
    """Seconds for a fixed pure-Python loop (best of three): shared virtual machines of the same
    model differ by 2x from day to day (CPU steal), so runs are comparable only with this."""
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        total = 0
        for i in range(3_000_000):
            total += i
        best = min(best, time.perf_counter() - t0)
    return round(best, 3)


def _meminfo_kib(key: str) -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def versions() -> dict[str, str]:
    found = {"python": platform.python_version(), "fleetstate": _git_commit()}
    for package in ("aiomqtt", "aiosqlite", "aiohttp"):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            found[package] = importlib.metadata.version(package)
    if path := mosquitto():
        out = subprocess.run([path, "-h"], capture_output=True, text=True, check=False).stdout
        found["mosquitto"] = out.split("version", 1)[-1].split()[0] if "version" in out else "?"
    return found


def _git_commit() -> str:
    """The commit the tree is at, `+dirty` when it has local changes (read-only git)."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short=12", "HEAD"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("+dirty" if status.strip() else "")
