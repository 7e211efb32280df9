"""Service configuration: defaults, then the TOML file, then flags, then `FLEETSTATE_*` env.

The order is the SPEC's (section 1): flags override the file, environment variables override both.
"""

import os
from pathlib import Path
from typing import Annotated, Any

import msgspec

from fleetstate.blobs import BlobConfig
from fleetstate.bus import BusConfig
from fleetstate.bus.embedded.limits import BrokerLimits
from fleetstate.dumps import DumpConfig
from fleetstate.errors import Invalid
from fleetstate.http_presence import PresenceConfig
from fleetstate.limits import Limits
from fleetstate.logs import LogConfig
from fleetstate.metrics import MetricsConfig
from fleetstate.sessions import WebConfig
from fleetstate.throttle import ThrottleConfig
from fleetstate.tls import TlsConfig
from fleetstate.uploads import UploadConfig

ENV_PREFIX = "FLEETSTATE_"


class Config(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    data: str = "./data"
    """Directory holding the SQLite database, the admin token file and local blobs."""
    http: str = "127.0.0.1:8080"
    """HOST:PORT of the HTTP server (REST, device API, web app); port 0 picks a free port."""
    mqtt: str = "127.0.0.1:1883"
    """HOST:PORT of the embedded MQTT broker; port 0 picks a free port; "off" turns it off.
    With `[tls]` set, the plain listener runs only when this is given explicitly."""
    mqtts: str = "127.0.0.1:8883"
    """HOST:PORT of the MQTT-over-TLS listener, used when `[tls]` is set; port 0 picks one."""
    admin_token: str | None = None
    """Value of the bootstrap operator token; generated into DATA/admin-token when unset."""
    hub_url: str | None = None
    """Public base URL of the HTTP server as devices reach it (defaults to the bound address)."""
    mqtt_hub_url: str | None = None
    """Public URL of the MQTT broker as devices reach it (defaults to the bound address)."""
    log_level: str = "INFO"
    max_forbidden_publishes: int = 20
    """A device that publishes this many times on topics it may not use is disconnected."""
    batch_max: int = 512
    """Most writes committed together in one SQLite transaction (group commit)."""
    telemetry_retention_days: Annotated[int, msgspec.Meta(ge=0)] = 30
    """Telemetry history older than this many days is removed; 0 keeps it forever."""
    blobs: BlobConfig = BlobConfig()
    """The `[blobs]` table: where large artefacts live (local files or an S3-compatible bucket)."""
    uploads: UploadConfig = UploadConfig()
    bus: BusConfig = BusConfig()
    """The `[bus]` table: which bus carries the device protocol (`kind = "embedded"`)."""
    broker: BrokerLimits = BrokerLimits()
    """The `[broker]` table: limits of the embedded MQTT endpoint (SPEC section 8)."""
    tls: TlsConfig = TlsConfig()
    """The `[tls]` table: HTTPS and MQTT over TLS (SPEC section 8)."""
    web: WebConfig = WebConfig()
    """The `[web]` table: how long a web app session lasts."""
    throttle: ThrottleConfig = ThrottleConfig()
    """The `[throttle]` table: how failed authentications are throttled (SPEC section 8)."""
    limits: Limits = Limits()
    """The `[limits]` table: what one device or client may cost (telemetry keys, rate, history
    retention, SSE queue)."""
    log: LogConfig = LogConfig()
    """The `[log]` table: text or JSON lines, and the HTTP access log."""
    metrics: MetricsConfig = MetricsConfig()
    """The `[metrics]` table: who may read `/metrics`."""
    shutdown_grace_s: Annotated[float, msgspec.Meta(ge=0)] = 5.0
    """On SIGTERM, in-flight requests and publishes get this long; then they are cancelled."""
    dumps: DumpConfig = DumpConfig()
    """The `[dumps]` table: how large a device's dump may grow."""
    presence: PresenceConfig = PresenceConfig()
    """The `[presence]` table: when a device that only talks HTTP counts as offline."""
    mqtt_explicit: bool = False
    """Set when `mqtt` was given explicitly (flag, file or env): keeps plain MQTT on beside TLS."""
    """The `[uploads]` table: limits of the upload-URL flow and the removal of expired uploads."""

    @property
    def data_dir(self) -> Path:
        return Path(self.data)


def load(
    path: str | Path | None = None,
    overrides: dict[str, Any] | None = None,
    environ: dict[str, str] | None = None,
) -> Config:
    """Build the configuration from a TOML file, explicit overrides (flags) and the environment."""
    merged: dict[str, Any] = {}
    if path is not None:
        merged.update(_read_toml(Path(path)))
    merged.update({k: v for k, v in (overrides or {}).items() if v is not None})
    for table, values in _from_env(os.environ if environ is None else environ).items():
        if isinstance(values, dict) and isinstance(merged.get(table), dict):
            merged[table] = {**merged[table], **values}
        else:
            merged[table] = values
    if "mqtt" in merged:
        merged["mqtt_explicit"] = True
    try:
        return msgspec.convert(merged, Config, strict=False)
    except msgspec.ValidationError as exc:
        raise Invalid(f"configuration: {exc}") from exc


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        raw = msgspec.toml.decode(path.read_bytes())
    except FileNotFoundError as exc:
        raise Invalid(f"configuration file {path} does not exist") from exc
    except msgspec.DecodeError as exc:
        raise Invalid(f"configuration file {path}: {exc}") from exc
    if not isinstance(raw, dict):
        raise Invalid(f"configuration file {path} must be a TOML table")
    return raw


def _from_env(environ: dict[str, str] | os._Environ[str]) -> dict[str, Any]:
    """`FLEETSTATE_<KEY>` for top-level keys, `FLEETSTATE_<TABLE>_<KEY>` for keys of a table
    (`FLEETSTATE_TLS_CERT_FILE` sets `[tls] cert_file`)."""
    fields = set(Config.__struct_fields__)
    tables = {name for name in fields if isinstance(getattr(Config(), name), msgspec.Struct)}
    found: dict[str, Any] = {}
    for key, value in environ.items():
        if not key.startswith(ENV_PREFIX):
            continue
        name = key.removeprefix(ENV_PREFIX).lower()
        if name in fields and name not in tables:
            found[name] = value
            continue
        table, _, sub = name.partition("_")
        if table in tables and sub:
            found.setdefault(table, {})[sub] = value
    return found


def split_hostport(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not (port.isascii() and port.isdigit()):
        raise Invalid(f"expected HOST:PORT, got {value!r}")
    return host.strip("[]") or "127.0.0.1", int(port)
