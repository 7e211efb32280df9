"""What a simulated fleet does: the options of `fleetstate simulate` and each device's part.

Nothing here needs the `simulate` extra (aiomqtt, rich), so the command line can parse and check
its options and then say clearly what is missing.
"""

import math
import os
import random
from enum import StrEnum
from urllib.parse import urlsplit

import msgspec

DEVICES_PER_PROCESS = 2500
"""One Python process tops out on one core at a few thousand MQTT clients."""


class Behaviour(StrEnum):
    """How a device answers desired documents (and commands)."""

    ACCEPT = "accept"
    REJECT = "reject"  # reports REJECTED; commands still succeed
    FAIL = "fail"  # reports FAILED; commands end FAILED
    SILENT = "silent"  # never answers documents or commands


class Transport(StrEnum):
    MQTT = "mqtt"
    HTTP = "http"  # the device HTTP API only: telemetry, config and commands by polling


class Options(msgspec.Struct, frozen=True, kw_only=True):
    devices: int
    http_url: str = "http://127.0.0.1:8080"
    mqtt_url: str | None = None
    """None: the broker address the service gives devices at registration."""
    token: str | None = None
    hardware_key: str | None = None
    """Register devices with this key (`POST /v1/devices`) instead of creating them over REST."""
    profile: str = "simulated"
    """Device profile id or name; a profile of that name is created when none matches."""
    group: str | None = None
    """Put the devices into the device group of this name (created when missing)."""
    telemetry_interval: float = 10.0
    """Seconds between a device's telemetry messages; 0 sends none."""
    connect_rate: float = 200.0
    """New MQTT connections per second over the whole fleet; 0 means as fast as possible."""
    reject_share: float = 0.0
    fail_share: float = 0.0
    silent_share: float = 0.0
    apply_delay: float = 0.0
    """Seconds between reporting IN_PROGRESS and the final status."""
    http_only_share: float = 0.0
    processes: int = 0
    """0: enough worker processes for the fleet (see `default_processes`)."""
    duration: float | None = None
    """Seconds to run after provisioning; None runs until interrupted."""
    provision_concurrency: int = 32
    seed: int = 1


class DeviceSpec(msgspec.Struct, frozen=True, array_like=True):
    """One provisioned device and its part: what a worker process needs to play it."""

    id: str
    key: str
    behaviour: Behaviour
    transport: Transport


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    """What every device of a worker shares."""

    mqtt_host: str
    mqtt_port: int
    http_url: str
    telemetry_interval: float
    connect_rate: float
    """This worker's share of the fleet's rate."""
    apply_delay: float
    record_events: bool = False
    """Keep per-device timestamps (connected, applied, command done) for benchmarks."""
    http_poll_interval: float = 5.0
    """How often HTTP-only devices look for changes when they send no telemetry."""
    mqtt_timeout: float = 30.0
    """Seconds to wait for CONNACK, SUBACK and PUBACK; a connect storm makes them slow."""


def check(options: Options) -> list[str]:
    """Problems with the options, as messages for the command line."""
    problems = []
    if options.devices < 1:
        problems.append("--devices must be at least 1")
    shares = {
        "--reject-share": options.reject_share,
        "--fail-share": options.fail_share,
        "--silent-share": options.silent_share,
        "--http-only-share": options.http_only_share,
    }
    problems += [f"{name} must be within 0 and 1" for name, v in shares.items() if not 0 <= v <= 1]
    if options.reject_share + options.fail_share + options.silent_share > 1:
        problems.append("--reject-share, --fail-share and --silent-share add up to more than 1")
    if options.token is None and options.hardware_key is None:
        problems.append("give --token (or FLEETSTATE_ADMIN_TOKEN) or --hardware-key")
    if min(options.telemetry_interval, options.connect_rate, options.apply_delay) < 0:
        problems.append("intervals, rates and delays must not be negative")
    if options.duration is not None and options.duration <= 0:
        problems.append("--duration must be positive")
    return problems


def default_processes(devices: int) -> int:
    return max(1, min(math.ceil(devices / DEVICES_PER_PROCESS), os.cpu_count() or 1))


def plan(options: Options) -> list[tuple[Behaviour, Transport]]:
    """Each device's part, with exact counts per share, spread at random (seeded)."""
    n = options.devices
    rng = random.Random(options.seed)  # noqa: S311 - reproducible, not secret
    counts = [
        (Behaviour.REJECT, round(n * options.reject_share)),
        (Behaviour.FAIL, round(n * options.fail_share)),
        (Behaviour.SILENT, round(n * options.silent_share)),
    ]
    behaviours = [b for b, count in counts for _ in range(count)][:n]
    behaviours += [Behaviour.ACCEPT] * (n - len(behaviours))
    rng.shuffle(behaviours)
    http = round(n * options.http_only_share)
    transports = [Transport.HTTP] * http + [Transport.MQTT] * (n - http)
    rng.shuffle(transports)
    return list(zip(behaviours, transports, strict=True))


def mqtt_address(url: str) -> tuple[str, int]:
    """`mqtt://HOST:PORT` (or `HOST:PORT`) as host and port; 1883 when no port is given."""
    parts = urlsplit(url if "://" in url else f"mqtt://{url}")
    if parts.scheme not in ("mqtt", "tcp"):
        raise ValueError(f"expected an mqtt:// URL, got {url!r}")
    return parts.hostname or "127.0.0.1", parts.port or 1883


def split(specs: list[DeviceSpec], parts: int) -> list[list[DeviceSpec]]:
    """Deal the devices out round-robin, so every worker gets its share of each part."""
    return [specs[i::parts] for i in range(parts) if specs[i::parts]]
