"""Prometheus metrics (`GET /metrics`), through prometheus-client, one registry per service.

Two kinds: what is measured as it happens (HTTP latency per route, auth failures seen by HTTP,
the store writer's batch sizes and commit latency) in prometheus-client's own counters and
histograms; and what other components already count or know (connected devices, MQTT messages
per topic kind, forbidden publishes, SSE clients, commands per status, ...), read from them at
scrape time by a collector, so nothing on their hot paths changes. A counter a component does not
expose yet is still served, as a zero series (docs/protocol.md says which), so dashboards and
alerts can be written against the final names.
"""

import ipaddress
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from fleetstate.bus import DEVICE_TOPICS_IN, DEVICE_TOPICS_OUT
from fleetstate.service.commands import Status
from fleetstate.store import Connection, Store
from fleetstate.store.queries import metrics as q

BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
DESIRED_STATUSES = ("UNREPORTED", "IN_PROGRESS", "ACCEPTED", "REJECTED", "FAILED")


def loopback(remote: str | None) -> bool:
    """True when the peer address is a loopback one (127.0.0.0/8, ::1, ::ffff:127.x)."""
    if not remote:
        return False
    try:
        address = ipaddress.ip_address(remote.split("%", 1)[0])
    except ValueError:
        return False
    mapped = getattr(address, "ipv4_mapped", None)
    return bool(address.is_loopback or (mapped is not None and mapped.is_loopback))


@dataclass
class Sources:
    """The components whose own counters the collector reads; any may be missing."""

    store: Store
    gateway: Any = None
    events: Any = None
    telemetry: Any = None
    counts: dict[str, dict[str, int]] = field(default_factory=dict)
    """What the database says, refreshed before each scrape (`Metrics.refresh`)."""


class Metrics:
    def __init__(self, sources: Sources) -> None:
        self.sources = sources
        self.registry = CollectorRegistry(auto_describe=False)
        self.http_seconds = Histogram(
            "fleetstate_http_request_duration_seconds",
            "HTTP request latency by route (its canonical path), method and status",
            ["route", "method", "status"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.batch_size = Histogram(
            "fleetstate_store_write_batch_size",
            "Write jobs committed together in one transaction",
            buckets=BATCH_BUCKETS,
            registry=self.registry,
        )
        self.commit_seconds = Histogram(
            "fleetstate_store_commit_seconds",
            "Time from the writer taking a batch to its commit",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.http_auth_failures: Counter[str] = Counter()
        self.registry.register(_Live(self))

    def observe_commit(self, size: int, seconds: float) -> None:
        """The store writer's hook, once per committed batch."""
        self.batch_size.observe(size)
        self.commit_seconds.observe(seconds)

    def observe_request(self, route: str, method: str, status: int, seconds: float) -> None:
        self.http_seconds.labels(route, method, str(status)).observe(seconds)
        if status == 401:
            self.http_auth_failures["device_api" if route.startswith("/v1/") else "api"] += 1

    async def refresh(self) -> None:
        """Read what only the database knows, in one consistent snapshot."""
        self.sources.counts = await self.sources.store.query(_counts)

    def render(self) -> bytes:
        return generate_latest(self.registry)


async def _counts(conn: Connection) -> dict[str, dict[str, int]]:
    commands = await q.commands_by_status(conn)
    desired = await q.desired_by_report(conn)
    return {"commands": commands, "desired": desired}


class _Live(Collector):
    """Counters other components keep, read at scrape time."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[Metric]:
        src = self._metrics.sources
        gateway = src.gateway
        bus = getattr(gateway, "bus", None)
        yield _counter("fleetstate_store_commits", "Transactions committed", src.store.commits)
        yield _counter("fleetstate_store_writes", "Write jobs committed", src.store.jobs_committed)
        yield _gauge(
            "fleetstate_mqtt_connected_devices",
            "Devices with a connected MQTT session (not kept sessions of offline devices)",
            len(bus.connected_devices()) if bus is not None else 0,
        )
        yield _counter(
            "fleetstate_mqtt_forbidden_publishes",
            "Publishes on topics the device may not use (dropped)",
            getattr(gateway, "forbidden_total", 0),
        )
        yield _by_label(
            "fleetstate_mqtt_messages_in",
            "Messages received from devices, by topic kind",
            "kind",
            DEVICE_TOPICS_IN,
            getattr(gateway, "messages_in", None),
        )
        yield _by_label(
            "fleetstate_mqtt_messages_out",
            "Messages published to devices, by topic kind",
            "kind",
            DEVICE_TOPICS_OUT,
            getattr(bus, "messages_out", None),
        )
        yield from self._auth(bus)
        yield from self._telemetry_and_events(src)
        yield from self._database(src.counts)

    def _auth(self, bus: Any) -> Iterator[Metric]:
        family = CounterMetricFamily(
            "fleetstate_auth_failures",
            "Failed authentications, by surface (api: Bearer token or cookie; device_api: an"
            " access key over HTTP; mqtt: CONNECT refused for its credentials)",
            labels=["surface"],
        )
        seen = self._metrics.http_auth_failures
        for surface in ("api", "device_api"):
            family.add_metric([surface], seen[surface])
        family.add_metric(["mqtt"], getattr(bus, "auth_failures_total", 0))
        yield family

    def _telemetry_and_events(self, src: Sources) -> Iterator[Metric]:
        yield _counter(
            "fleetstate_telemetry_rate_limited",
            "Telemetry messages dropped for exceeding telemetry_rate_per_device",
            getattr(src.telemetry, "rate_limited_total", 0),
        )
        yield _gauge(
            "fleetstate_events_subscribers",
            "Open server-sent event streams",
            src.events.subscriber_count() if src.events is not None else 0,
        )
        yield _counter(
            "fleetstate_events_dropped_clients",
            "Event streams closed because the client fell too far behind",
            getattr(src.events, "dropped_total", 0),
        )

    def _database(self, counts: dict[str, dict[str, int]]) -> Iterator[Metric]:
        yield _by_label(
            "fleetstate_commands",
            "Commands by status",
            "status",
            tuple(Status),
            counts.get("commands", {}),
            gauge=True,
        )
        yield _by_label(
            "fleetstate_desired_state_devices",
            "Devices by the reported status of their current desired-state version (what"
            " binding status counts); UNREPORTED: no report for it yet",
            "status",
            DESIRED_STATUSES,
            counts.get("desired", {}),
            gauge=True,
        )


def _counter(name: str, documentation: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(name, documentation, value=value)


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, value=value)


def _by_label(
    name: str,
    documentation: str,
    label: str,
    known: tuple[str, ...],
    values: Any,
    *,
    gauge: bool = False,
) -> Metric:
    """One series per known label value (zero when nothing was counted), plus any other."""
    family: Metric = (GaugeMetricFamily if gauge else CounterMetricFamily)(
        name, documentation, labels=[label]
    )
    found = dict(values or {})
    for value in dict.fromkeys([*known, *found]):
        family.add_metric([str(value)], found.get(value, 0))  # type: ignore[attr-defined]
    return family
