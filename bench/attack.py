"""`python -m bench --scenarios attack`: what an attacker's refused MQTT connections cost.

A fresh service, one legitimate device connected and subscribed to its commands, then
`--attack-connections` refused connections (a third each: a wrong password under a fresh client
id, the legitimate device's id with a wrong key, a connection closed before its CONNECT), at most
`CONCURRENCY` at a time, from loopback addresses 127.0.0.2 and up, for at most `BUDGET_S`. The
service's RSS, open file descriptors and connected-device gauge are read before, right after and
after a settle; then a command must still reach the legitimate device. With `--attack-waves`
above 1 the attack is repeated (fresh client ids each wave, the same addresses) and RSS is read
after each wave's settle: memory that a refused connection leaves behind grows with every wave,
the allocator's high-water mark does not.

With `--attack-tls` the service runs with `[tls]` (throwaway certificates, `client_ca_file` set)
and the attack goes to its MQTT-over-TLS port, every handshake failing: a third send an MQTT
CONNECT in the clear, a third close before sending anything, a third present a client
certificate from another CA. The legitimate device stays on the plain listener.

The throttle would block the attacking addresses after ten failures a minute, and then every
attempt is refused before any key is looked at, which measures the cheap path only. `raised`
starts the service with throttle limits of 10^9 (every wrong key is checked), `default` with the
shipped ones; `both` measures each on its own fresh service.
"""

import asyncio
import contextlib
import os
import ssl
import time
from collections import Counter
from pathlib import Path
from typing import Any, NamedTuple

import aiohttp

from bench import certs
from bench.load import mqtt_connect, mqtt_packet, mqtt_string
from bench.service import Process, _free_port, fleetstate_serve

CONCURRENCY = 64
BUDGET_S = 90.0
"""The attack phase stops after this long even if not every connection was made."""
SETTLE_S = 20.0
WAIT_S = 10.0
SOURCES = 200
"""Source addresses the attack rotates over: 127.0.0.2 ... 127.0.0.201."""
RAISED = {
    "FLEETSTATE_THROTTLE_LIMIT": "1000000000",
    "FLEETSTATE_BROKER_AUTH_FAILURE_LIMIT": "1000000000",
}
KINDS = ("fresh_id_wrong_password", "known_id_wrong_key", "closed_before_connect")
TLS_KINDS = ("plain_mqtt_to_tls", "closed_before_handshake", "certificate_of_another_ca")


class Target(NamedTuple):
    """Where the attack goes: the plain listener, or the TLS one with its certificates."""

    host: str
    port: int
    tls: certs.Certificates | None = None

    @property
    def kinds(self) -> tuple[str, ...]:
        return KINDS if self.tls is None else TLS_KINDS


async def run(
    connections: int,
    throttle: str,
    workdir: Path,
    token: str,
    src: Path | None,
    waves: int = 1,
    tls: bool = False,
) -> dict[str, Any]:
    modes = ("raised", "default") if throttle == "both" else (throttle,)
    found: dict[str, Any] = {"connections": connections, "waves": waves, "tls": tls}
    for mode in modes:
        data = workdir / f"attack-{mode}" / "data"
        data.parent.mkdir(parents=True)
        env = RAISED if mode == "raised" else {}
        made = certs.make(data.parent / "certs") if tls else None
        mqtts = _free_port() if tls else 0  # the bench reads only the plain listener's address
        if made is not None:
            env = {**env, **_tls_settings(made, mqtts)}
        async with fleetstate_serve(data, token, src, env) as svc:
            found[mode] = await _against(svc, connections, token, waves, made, mqtts)
            found[mode]["exit_code"] = await svc.stop()
    return found


def _tls_settings(made: certs.Certificates, mqtts_port: int) -> dict[str, str]:
    return {
        "FLEETSTATE_TLS_CERT_FILE": str(made.server_cert),
        "FLEETSTATE_TLS_KEY_FILE": str(made.server_key),
        "FLEETSTATE_TLS_CLIENT_CA_FILE": str(made.ca_file),
        "FLEETSTATE_MQTTS": f"127.0.0.1:{mqtts_port}",
    }


async def _against(
    svc: Process,
    connections: int,
    token: str,
    waves: int,
    made: certs.Certificates | None = None,
    mqtts_port: int = 0,
) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {token}"}
    timeout = aiohttp.ClientTimeout(total=60)
    trust = None if made is None else ssl.create_default_context(cafile=made.ca_file)
    connector = aiohttp.TCPConnector(ssl=trust if trust is not None else True)
    async with aiohttp.ClientSession(headers=headers, timeout=timeout, connector=connector) as http:
        device_id, key = await _provision(http, svc.http_url)
        host, port = svc.mqtt_url.removeprefix("mqtt://").rsplit(":", 1)
        device = await _Device.connect(host, int(port), device_id, key)
        target = Target(host, int(port)) if made is None else Target(host, mqtts_port, made)
        try:
            before = await _sample(svc, http)
            outcomes: Counter[str] = Counter()
            attack_s, after, settled = 0.0, before, []
            for wave in range(waves):
                t0 = time.monotonic()
                numbers = range(wave * connections, (wave + 1) * connections)
                outcomes += await _attack(target, device_id, numbers)
                attack_s += time.monotonic() - t0
                if not wave:
                    after = await _sample(svc, http)
                await _settle(svc, before["fds"])
                settled.append(await _sample(svc, http))
            delivered = await _command_reaches(http, svc.http_url, device)
        finally:
            await device.close()
    return {
        "attempted": sum(outcomes.values()),
        "attack_s": round(attack_s, 1),
        "per_s": round(sum(outcomes.values()) / attack_s) if attack_s else None,
        "outcomes": dict(outcomes),
        "before": before,
        "after": after,
        "settled": settled[0],
        "settled_per_wave": settled,
        "command_delivered_after": delivered,
    }


async def _provision(http: aiohttp.ClientSession, base: str) -> tuple[str, str]:
    profile = {"name": "attacked", "config_schema": {"type": "object"}}
    async with http.post(f"{base}/api/v1/device-profiles", json=profile) as answer:
        answer.raise_for_status()
        profile_id = (await answer.json())["id"]
    body = {"name": "legitimate", "profile_id": profile_id}
    async with http.post(f"{base}/api/v1/devices", json=body) as answer:
        answer.raise_for_status()
        created = await answer.json()
    return str(created["id"]), str(created["access_key"])


async def _sample(svc: Process, http: aiohttp.ClientSession) -> dict[str, Any]:
    async with http.get(f"{svc.http_url}/metrics") as answer:
        text = await answer.text()
    gauge = next(
        (
            float(line.split()[-1])
            for line in text.splitlines()
            if line.startswith("fleetstate_mqtt_connected_devices ")
        ),
        None,
    )
    return {
        "rss_mib": round(svc.rss_kib() / 1024, 1),
        "fds": len(os.listdir(f"/proc/{svc.pid}/fd")),
        "connected_devices": gauge,
    }


async def _settle(svc: Process, fds: int) -> None:
    """Until the service holds no more descriptors than before (or `SETTLE_S` passed)."""
    for _ in range(int(SETTLE_S / 0.5)):  # polled: /proc offers nothing to wait on
        if len(os.listdir(f"/proc/{svc.pid}/fd")) <= fds:
            break
        await asyncio.sleep(0.5)
    await asyncio.sleep(1.0)  # one sweep more, so RSS is read after the dust settled


async def _attack(target: Target, known_id: str, attempts: range) -> Counter[str]:
    """The attempts numbered `attempts`: the number picks the kind, address and client id."""
    outcomes: Counter[str] = Counter()
    numbers = iter(attempts)
    deadline = time.monotonic() + BUDGET_S
    kinds = target.kinds
    stranger = None
    if target.tls is not None:
        stranger = ssl.create_default_context(cafile=target.tls.ca_file)
        stranger.load_cert_chain(target.tls.stranger_cert, target.tls.stranger_key)

    async def attacker() -> None:
        for n in numbers:
            if time.monotonic() > deadline:
                outcomes["not_made_in_budget"] += 1
                continue
            kind = kinds[n % len(kinds)]
            source = f"127.0.0.{2 + n % SOURCES}"
            if stranger is None:
                outcome = await _one(target.host, target.port, source, kind, n, known_id)
            else:
                outcome = await _one_tls(target.host, target.port, source, kind, stranger)
            outcomes[f"{kind}:{outcome}"] += 1

    await asyncio.gather(*(attacker() for _ in range(CONCURRENCY)))
    return outcomes


async def _one(host: str, port: int, source: str, kind: str, n: int, known_id: str) -> str:
    """One refused connection; what the service answered (CONNACK return code or `closed`)."""
    try:
        async with asyncio.timeout(WAIT_S):
            reader, writer = await asyncio.open_connection(host, port, local_addr=(source, 0))
            try:
                if kind == "closed_before_connect":
                    return "closed"
                client_id = f"attacker-{n}" if kind == "fresh_id_wrong_password" else known_id
                writer.write(mqtt_connect(client_id, f"wrong-{n}"))
                answer = await reader.read(4)
                return f"connack_{answer[3]}" if len(answer) == 4 else "no_connack"
            finally:
                writer.close()
                with contextlib.suppress(ConnectionError):
                    await writer.wait_closed()
    except TimeoutError:
        return "timeout"
    except OSError as exc:
        return type(exc).__name__


async def _one_tls(host: str, port: int, source: str, kind: str, stranger: ssl.SSLContext) -> str:
    """One connection to the TLS listener whose handshake fails; how it ended on this side."""
    try:
        async with asyncio.timeout(WAIT_S):
            tls = stranger if kind == "certificate_of_another_ca" else None
            reader, writer = await asyncio.open_connection(
                host,
                port,
                local_addr=(source, 0),
                ssl=tls,
                server_hostname="localhost" if tls else None,
            )
            try:
                if kind == "closed_before_handshake":
                    return "closed"
                writer.write(mqtt_connect("attacker", "not-over-tls"))
                answer = await reader.read(4)
                if not answer:
                    return "closed_by_service"
                return "tls_alert" if answer[0] == 0x15 else "answered"
            finally:
                writer.close()
                with contextlib.suppress(ConnectionError, ssl.SSLError):
                    await writer.wait_closed()
    except TimeoutError:
        return "timeout"
    except OSError as exc:  # ssl.SSLError too: a handshake refused (TLS 1.3 shows it on read)
        return type(exc).__name__


async def _command_reaches(http: aiohttp.ClientSession, base: str, device: "_Device") -> bool:
    path = f"{base}/api/v1/devices/{device.id}/commands"
    sending = asyncio.create_task(http.post(path, json={"type": "REBOOT"}))
    try:
        async with asyncio.timeout(WAIT_S):
            delivered = await device.command()
            answer = await sending
            return delivered and answer.status == 201
    except TimeoutError:
        return False
    finally:
        if not sending.done():
            sending.cancel()


class _Device:
    """The legitimate device on a bare MQTT 3.1.1 socket, subscribed to its commands."""

    def __init__(
        self, device_id: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.id, self.reader, self.writer = device_id, reader, writer

    @classmethod
    async def connect(cls, host: str, port: int, device_id: str, key: str) -> "_Device":
        async with asyncio.timeout(WAIT_S):
            reader, writer = await asyncio.open_connection(host, port, local_addr=("127.0.0.1", 0))
            writer.write(mqtt_connect(device_id, key, keep_alive=0))
            kind, body = await _read_packet(reader)
            if (kind, body) != (2, b"\x00\x00"):
                raise RuntimeError(f"the legitimate device was refused: {kind} {body!r}")
            topic = mqtt_string(f"devices/{device_id}/commands") + b"\x01"
            writer.write(mqtt_packet(0x82, b"\x00\x01" + topic))
            kind, _body = await _read_packet(reader)
            if kind != 9:
                raise RuntimeError("no SUBACK for the legitimate device")
        return cls(device_id, reader, writer)

    async def command(self) -> bool:
        """The next command PUBLISH, acknowledged."""
        while True:
            kind, body = await _read_packet(self.reader)
            if kind == 3:
                size = int.from_bytes(body[:2], "big")
                self.writer.write(mqtt_packet(0x40, body[2 + size : 4 + size]))
                return b'"REBOOT"' in body
            if kind == 0:
                return False

    async def close(self) -> None:
        self.writer.write(b"\xe0\x00")
        self.writer.close()
        with contextlib.suppress(ConnectionError):
            await self.writer.wait_closed()


async def _read_packet(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """(packet type, body); (0, b"") at the end of the stream."""
    try:
        first = (await reader.readexactly(1))[0]
        length, shift = 0, 0
        while True:
            digit = (await reader.readexactly(1))[0]
            length |= (digit & 0x7F) << shift
            shift += 7
            if not digit & 0x80:
                break
        return first >> 4, await reader.readexactly(length)
    except (asyncio.IncompleteReadError, ConnectionError):
        return 0, b""


def markdown(found: dict[str, Any]) -> str:
    """The figures as the subsection of docs/benchmarks.md shows them."""
    lines = (
        ["Against the MQTT-over-TLS listener, every handshake failing.", ""]
        if found.get("tls")
        else []
    )
    lines += [
        "| throttle | attempted | in | per s | RSS MiB before / after / settled"
        " | fds before / after / settled | connected before / after / settled"
        " | command delivered after |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for mode in ("raised", "default"):
        if mode not in found:
            continue
        r = found[mode]
        b, a, s = r["before"], r["after"], r["settled"]
        lines.append(
            f"| {mode} | {r['attempted']:,} | {r['attack_s']} s | {r['per_s']:,} |"
            f" {b['rss_mib']} / {a['rss_mib']} / {s['rss_mib']} |"
            f" {b['fds']} / {a['fds']} / {s['fds']} |"
            f" {b['connected_devices']:.0f} / {a['connected_devices']:.0f}"
            f" / {s['connected_devices']:.0f} | {r['command_delivered_after']} |"
        )
    outcomes = []
    for mode in ("raised", "default"):
        if mode in found:
            shown = ", ".join(f"{k} {v:,}" for k, v in sorted(found[mode]["outcomes"].items()))
            outcomes.append(f"- {mode}: {shown}")
    how = (
        "How each ended, per kind" if found.get("tls") else "Answers (CONNACK return code per kind)"
    )
    lines += ["", how + ":", "", *outcomes]
    if found.get("waves", 1) > 1:
        lines += ["", f"RSS MiB settled after each of {found['waves']} waves:", ""]
        for mode in ("raised", "default"):
            if mode in found:
                rss = " / ".join(str(s["rss_mib"]) for s in found[mode]["settled_per_wave"])
                lines.append(f"- {mode}: {found[mode]['before']['rss_mib']} before, then {rss}")
    return "\n".join(lines) + "\n"
