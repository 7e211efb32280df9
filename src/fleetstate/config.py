"""Service configuration: defaults, then the TOML file, then flags, then `FLEETSTATE_*` env.

The order is the SPEC's (section 1): flags override the file, environment variables override both.
Every table of the file (`[tls]`, `[limits]`, `[broker]`, ...) is a Struct here, so the
configuration imports nothing of the parts it configures; each part imports its table from here.
"""

import os
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec

from fleetstate.errors import Invalid

ENV_PREFIX = "FLEETSTATE_"
_NonNegative = Annotated[int, msgspec.Meta(ge=0)]
_Positive = Annotated[int, msgspec.Meta(ge=1)]
_PositiveSeconds = Annotated[float, msgspec.Meta(gt=0)]
_MQTT_MAX_PAYLOAD = 256 * 1024
"""The device protocol's payload limit (`bus.MAX_PAYLOAD`, SPEC section 8), repeated here so the
configuration needs nothing of the bus; tests/test_serve.py checks the two agree."""
MetricsAccess = Literal["loopback", "token", "public"]


class BlobConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The `[blobs]` table: where large artefacts live (local files or an S3-compatible bucket)."""

    backend: Literal["local", "s3"] = "local"
    endpoint_url: str | None = None
    """S3 API endpoint, e.g. `http://127.0.0.1:9000`; None means AWS itself."""
    bucket: str | None = None
    region: str = "us-east-1"
    access_key_id: str | None = None
    """None falls back to the standard AWS chain (`AWS_ACCESS_KEY_ID`, profiles, ...)."""
    secret_access_key: str | None = None
    url_expiry_s: int = 900
    """Lifetime of presigned upload and download URLs."""
    create_bucket: bool = False
    """Create the bucket at start if it is missing (handy for a local S3 server)."""


class BusConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The `[bus]` table: which bus carries the device protocol."""

    kind: Literal["embedded"] = "embedded"
    """`embedded`: fleetstate's own MQTT endpoint (`[broker]` limits, `mqtt`/`mqtts` listeners)."""


class BrokerLimits(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The `[broker]` table: every limit of the embedded MQTT endpoint (SPEC section 8)."""

    connect_timeout_s: Annotated[float, msgspec.Meta(gt=0)] = 10.0
    """A connection that has not sent its CONNECT by then is closed (also the TLS handshake)."""
    max_packet_bytes: Annotated[int, msgspec.Meta(ge=1024, le=268_435_455)] = 2 * _MQTT_MAX_PAYLOAD
    """Largest packet accepted; bigger ones close the connection (MQTT 5: DISCONNECT 0x95).
    Above the 256 KiB payload limit, so a payload a little too big gets a `too_large` error on
    the device's errors topic instead."""
    inbound_queue: Annotated[int, msgspec.Meta(ge=1, le=65535)] = 16
    """Packets read from one connection and not yet processed; at this many the endpoint stops
    reading from it (TCP then slows the device down), whatever their QoS."""
    puback_timeout_s: Annotated[float, msgspec.Meta(gt=0)] = 10.0
    """How long a QoS 1 publish to a device waits for its PUBACK before it counts as lost."""
    auth_failure_limit: Annotated[int, msgspec.Meta(ge=1)] = 10
    """Failed CONNECTs per source address within the window before a block. Failures per
    device id are counted with the HTTP device API's, under `[throttle]`."""
    auth_failure_window_s: Annotated[float, msgspec.Meta(gt=0)] = 60.0
    auth_block_s: Annotated[float, msgspec.Meta(ge=0)] = 60.0
    """How long a throttled address is refused, a correct key included."""


class DumpConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The `[dumps]` table."""

    max_size: Annotated[int, msgspec.Meta(ge=1)] = 8 * 1024 * 1024
    """Most bytes one dump may hold, all its parts together; more answers 413."""


class PresenceConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The `[presence]` table: when a device that only talks HTTP counts as offline."""

    http_window_s: float = 0.0
    """Seconds since its last call after which an HTTP device is offline; 0 = automatic
    (3 x its observed telemetry interval, 120 s until one is observed)."""
    http_min_window_s: float = 10.0
    """The automatic window is never shorter than this (a burst of calls is not a heartbeat)."""
    sweep_interval_s: float = 1.0
    """How often the one sweep looks for devices that fell silent."""


class Limits(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The `[limits]` table."""

    telemetry_keys_per_message: _Positive = 256
    """Most keys in one telemetry message (its `telemetries` object)."""
    telemetry_keys_per_device: _Positive = 1024
    """Most keys in a device's merged telemetry state; a message that would grow it past this is
    refused (one that only updates or removes keys is not)."""
    telemetry_future_s: _NonNegative = 300
    """A telemetry timestamp more than this many seconds ahead of the server's clock is refused."""
    telemetry_rate_per_device: Annotated[float, msgspec.Meta(ge=0)] = 10.0
    """Telemetry messages per second one device may send, sustained; 0 turns the limit off."""
    telemetry_burst: _Positive = 50
    """How many messages a device that was quiet may send at once (the bucket's size)."""
    history_retention_days: _NonNegative = 30
    """Report history and command answers older than this many days are removed; 0 keeps them."""
    events_queue: _Positive = 1000
    """Events one SSE client may have waiting; a client that falls this far behind is dropped."""


class LogConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The `[log]` table."""

    format: Literal["text", "json"] = "text"
    access: bool = False
    """One line per HTTP request (method, route, status, duration) on `fleetstate.access`."""


class MetricsConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The `[metrics]` table."""

    access: MetricsAccess = "loopback"
    """Who may read `/metrics`: clients on a loopback address (the default), any valid API
    token (`Authorization: Bearer ...`), or anyone."""


class WebConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The `[web]` table: the web app's sessions."""

    session_ttl_s: Annotated[float, msgspec.Meta(gt=0)] = 12 * 3600.0
    """How long a session lasts after sign-in (sign-out or revoking its token end it sooner)."""


class ThrottleConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The `[throttle]` table: limits on failed authentications (SPEC section 8)."""

    limit: Annotated[int, msgspec.Meta(ge=1)] = 10
    """Failures of one source address or one credential id within `window_s` that block it."""
    window_s: _PositiveSeconds = 60.0
    block_s: _PositiveSeconds = 60.0
    """How long a blocked address or credential is refused, a correct credential included."""


class TlsConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The `[tls]` table: one certificate for HTTPS and MQTT over TLS (SPEC section 8)."""

    cert_file: str | None = None
    """PEM certificate chain of the server (HTTPS and MQTTS)."""
    key_file: str | None = None
    """PEM private key of `cert_file`."""
    client_ca_file: str | None = None
    """PEM CA: devices may authenticate over MQTT-TLS with a certificate it signed (CN = id)."""

    @property
    def enabled(self) -> bool:
        return self.cert_file is not None and self.key_file is not None


class UploadConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The `[uploads]` table of the configuration."""

    max_size: _Positive = 1024**3
    """Largest artefact accepted through an upload URL, in bytes (1 GiB)."""
    max_json_size: _Positive = 16 * 1024**2
    """Largest JSON artefact: JSON is read into memory to validate it against the profile."""
    finalize_grace_s: Annotated[int, msgspec.Meta(ge=0)] = 3600
    """How long after its URL expired an upload may still be finalized before it is removed."""
    cleanup_interval_s: Annotated[float, msgspec.Meta(gt=0)] = 60.0
    """How often expired uploads (rows and blobs) are looked for."""


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
