"""`GET /metrics`: Prometheus text from prometheus-client, parsed as Prometheus would, and who
may read it (`[metrics] access`)."""

from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from conftest import ADMIN_TOKEN, Api, DeviceFactory, Fleet, eventually, make_config
from fleetstate import app, config
from fleetstate.config import MetricsConfig
from fleetstate.service.metrics import loopback
from test_device_api import device_call


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample: (name, sorted labels) → value."""
    found = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            found[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return found


def value(text: str, name: str, **labels: str) -> float:
    return samples(text)[(name, tuple(sorted(labels.items())))]


async def scrape(api: Api) -> str:
    status, text = await api.as_token("").get("/metrics")
    assert status == 200, text
    return str(text)


async def test_metrics_parse_and_count_what_the_service_does(
    api: Api, fleet: Fleet, connect: DeviceFactory, service: app.Service
) -> None:
    device_id, key = await fleet.device(await fleet.profile())
    # A persistent session: kept by the broker after the device goes, but not connected.
    async with connect(device_id, key, clean_session=False) as device:
        await device.desired()
        await device.publish("telemetry", {"status": "online", "telemetries": {"t": 1}})
        text = await scrape(api)
        assert value(text, "fleetstate_mqtt_connected_devices") == 1
        assert value(text, "fleetstate_mqtt_messages_in_total", kind="telemetry") == 1
        assert value(text, "fleetstate_mqtt_messages_in_total", kind="reported") == 0
        assert value(text, "fleetstate_mqtt_messages_out_total", kind="desired") >= 1
    path = f"/api/v1/devices/{device_id}/commands"
    await api.ok("POST", path, {"type": "REBOOT"}, status=201)

    async def disconnected() -> str | None:
        text = await scrape(api)
        return text if value(text, "fleetstate_mqtt_connected_devices") == 0 else None

    text = await eventually(disconnected)
    assert value(text, "fleetstate_commands", status="PENDING") == 1
    assert value(text, "fleetstate_commands", status="SUCCESS") == 0
    assert value(text, "fleetstate_desired_state_devices", status="UNREPORTED") == 1
    assert value(text, "fleetstate_store_commits_total") == service.store.commits
    assert value(text, "fleetstate_store_write_batch_size_count") >= 1
    assert value(text, "fleetstate_store_commit_seconds_count") >= 1
    route = "/api/v1/devices/{device_id}/commands"
    assert (
        value(
            text,
            "fleetstate_http_request_duration_seconds_count",
            route=route,
            method="POST",
            status="201",
        )
        == 1
    )
    labelled = {dict(labels).get("route") for _name, labels in samples(text)}
    assert path not in labelled  # routes, never raw paths
    assert value(text, "fleetstate_events_dropped_clients_total") == 0
    assert value(text, "fleetstate_telemetry_rate_limited_total") == 0


async def test_metrics_count_auth_failures_per_surface(api: Api, fleet: Fleet) -> None:
    device_id, _key = await fleet.device(await fleet.profile())
    assert (await api.as_token("wrong").get("/api/v1/devices"))[0] == 401
    assert (await api.as_token("").get("/api/v1/devices"))[0] == 401
    path = f"/v1/devices/{device_id}/config"
    assert (await device_call(api, "GET", path, "wrong-key"))[0] == 401
    text = await scrape(api)
    assert value(text, "fleetstate_auth_failures_total", surface="api") == 2
    assert value(text, "fleetstate_auth_failures_total", surface="device_api") == 1
    assert ("fleetstate_auth_failures_total", (("surface", "mqtt"),)) in samples(text)


@pytest.fixture
async def token_service(tmp_path: Path) -> AsyncIterator[app.Service]:
    settings = make_config(tmp_path / "data", metrics=MetricsConfig(access="token"))
    async with app.start(settings) as running:
        yield running


async def test_metrics_access_token_needs_a_valid_api_token(
    token_service: app.Service, http: aiohttp.ClientSession
) -> None:
    api = Api(http, token_service.http_url, ADMIN_TOKEN)
    status, body = await api.as_token("").get("/metrics")
    assert (status, body["error"]["code"]) == (401, "unauthorized")
    assert (await api.as_token("not-a-token").get("/metrics"))[0] == 401
    status, text = await api.get("/metrics")
    assert status == 200
    assert value(text, "fleetstate_mqtt_connected_devices") == 0


def test_metrics_access_is_configurable_and_loopback_by_default() -> None:
    assert config.load().metrics.access == "loopback"
    example = Path(__file__).parent.parent / "config" / "fleetstate.toml"
    assert config.load(example).metrics.access == "loopback"
    assert config.load(environ={"FLEETSTATE_METRICS_ACCESS": "public"}).metrics.access == "public"
    with pytest.raises(config.Invalid):
        config.load(environ={"FLEETSTATE_METRICS_ACCESS": "everyone"})
    for address in ("127.0.0.1", "127.8.9.10", "::1", "::ffff:127.0.0.1"):
        assert loopback(address), address
    for address in ("10.0.0.1", "192.168.1.5", "::ffff:10.0.0.1", "2001:db8::1", "", None, "x"):
        assert not loopback(address), address
