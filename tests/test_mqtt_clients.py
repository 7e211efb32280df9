"""The device MQTT interface (SPEC section 3) held to clients nobody on the project wrote:
paho-mqtt 2.x (3.1.1 and 5, clean and persistent sessions), aiomqtt 2.x (3.1.1 and 5) and Debian's
mosquitto_sub/mosquitto_pub (`-V mqttv311`, `-V mqttv5`), each doing the whole device cycle."""

from collections.abc import Callable
from typing import Any

import pytest

from conftest import Api, Fleet, eventually
from conftest_mqtt import (
    MOSQUITTO_SUB,
    AiomqttLink,
    Link,
    MosquittoLink,
    PahoLink,
    Refused,
    run,
)
from fleetstate.app import Service

Factory = Callable[[int, str, str], Link]

CLIENTS: dict[str, Factory] = {
    "paho-v311-clean": lambda p, d, k: PahoLink(p, d, k, 4, clean=True),
    "paho-v311-persistent": lambda p, d, k: PahoLink(p, d, k, 4, clean=False),
    "paho-v5-clean-start": lambda p, d, k: PahoLink(p, d, k, 5, clean=True),
    "paho-v5-session-expiry": lambda p, d, k: PahoLink(p, d, k, 5, clean=False, session_expiry=300),
    "aiomqtt-v311": lambda p, d, k: AiomqttLink(p, d, k, 4),
    "aiomqtt-v5": lambda p, d, k: AiomqttLink(p, d, k, 5),
    "mosquitto-v311": lambda p, d, k: MosquittoLink(p, d, k, 4),
    "mosquitto-v5": lambda p, d, k: MosquittoLink(p, d, k, 5),
}
PERSISTENT = ["paho-v311-persistent", "paho-v5-session-expiry"]
LIBRARIES = [name for name in CLIENTS if not name.startswith("mosquitto")]
V5 = {name for name in CLIENTS if "v5" in name}


def _report(doc: dict[str, Any], status: str) -> dict[str, Any]:
    configs = [
        {"slot": c["slot"], "artefact_id": c["artefact_id"], "hash": c["hash"], "status": status}
        for c in doc["configs"]
    ]
    return {"version": doc["version"], "status": status, "configs": configs}


async def _command(api: Api, device_id: str, command_id: str) -> dict[str, Any]:
    return dict(await api.ok("GET", f"/api/v1/devices/{device_id}/commands/{command_id}"))


async def _binding_status(api: Api, binding_id: str) -> str:
    detail = await api.ok("GET", f"/api/v1/desired-state-bindings/{binding_id}")
    (device,) = detail["devices"]
    return str(device["status"])


async def _telemetry_is(api: Api, device_id: str, state: dict[str, Any]) -> bool:
    got = await api.ok("GET", f"/api/v1/devices/{device_id}/telemetry")
    return bool(got["state"] == state)


async def _reboot(api: Api, device_id: str) -> dict[str, Any]:
    path = f"/api/v1/devices/{device_id}/commands"
    return dict(await api.ok("POST", path, {"type": "REBOOT"}, status=201))


async def _converge(api: Api, link: Link, doc: dict[str, Any], binding_id: str) -> None:
    """Report ACCEPTED with the document's hashes; the binding reads ACCEPTED over REST."""
    await link.publish("reported", _report(doc, "ACCEPTED"))
    assert await _binding_status(api, binding_id) == "ACCEPTED", link.name


async def _reboot_round_trip(api: Api, link: Link, command: dict[str, Any]) -> None:
    """The device receives the REBOOT, acks SUCCESS; the command reads SUCCESS over REST."""
    message = await link.next("commands", lambda m: m["id"] == command["id"])
    assert (message["type"], message["params"]) == ("REBOOT", {})
    assert message["timeout_at"] == command["timeout_at"]
    await link.publish("commands/ack", {"id": command["id"], "status": "SUCCESS"})
    assert (await _command(api, link.id, command["id"]))["status"] == "SUCCESS", link.name


@pytest.mark.parametrize("client", list(CLIENTS))
async def test_mqtt_client_does_the_whole_device_cycle(
    client: str, service: Service, api: Api, fleet: Fleet
) -> None:
    profile = await fleet.profile()
    device_id, key = await fleet.device(profile)
    async with CLIENTS[client](service.mqtt_port, device_id, key) as link:
        first = await link.desired()  # at once, on SUBSCRIBE: nothing bound yet
        assert first["configs"] == []
        assert (await api.ok("GET", f"/api/v1/devices/{device_id}"))["online"] is True
        artefact = await fleet.artefact(profile, {"setpoint": 21})
        binding = await fleet.bind("device", device_id, artefact["id"])
        doc = await link.desired(above=first["version"])
        (config,) = doc["configs"]
        assert (config["hash"], config["content"]) == (artefact["hash"], {"setpoint": 21})
        await _converge(api, link, doc, binding["id"])

        command = await _reboot(api, device_id)
        assert command["status"] == "SENT"
        await _reboot_round_trip(api, link, command)

        await link.publish("telemetry", {"status": "online", "telemetries": {"t": 1.5}})
        await eventually(lambda: _telemetry_is(api, device_id, {"t": 1.5, "status": "online"}))


@pytest.mark.parametrize("client", PERSISTENT)
async def test_mqtt_client_persistent_session_gets_what_was_created_offline(
    client: str, service: Service, api: Api, fleet: Fleet
) -> None:
    """Clean session 0 (3.1.1) / session expiry > 0 (5): the reconnecting device sends no
    SUBSCRIBE and still gets the newer document and the command created while it was away."""
    profile = await fleet.profile()
    device_id, key = await fleet.device(profile)
    async with CLIENTS[client](service.mqtt_port, device_id, key) as link:
        first = await link.desired()
    await eventually(lambda: _offline(api, device_id))
    artefact = await fleet.artefact(profile, {"setpoint": 12})
    binding = await fleet.bind("device", device_id, artefact["id"])
    command = await _reboot(api, device_id)
    assert command["status"] == "PENDING"

    again = CLIENTS[client](service.mqtt_port, device_id, key)
    await again.open(subscribe=())
    try:
        assert again.session_present is True, "CONNACK session present must be 1"
        doc = await again.desired(above=first["version"])
        assert doc["configs"][0]["hash"] == artefact["hash"]
        await _reboot_round_trip(api, again, command)
        await _converge(api, again, doc, binding["id"])
    finally:
        await again.close()


async def _offline(api: Api, device_id: str) -> bool:
    return bool((await api.ok("GET", f"/api/v1/devices/{device_id}"))["online"] is False)


@pytest.mark.parametrize("client", LIBRARIES)
async def test_mqtt_client_with_a_wrong_password_is_refused(
    client: str, service: Service, api: Api, fleet: Fleet
) -> None:
    """3.1.1: CONNACK 4 or 5 (paho reports them as 134/135); MQTT 5: reason 0x86 or 0x87."""
    device_id, _key = await fleet.device(await fleet.profile())
    link = CLIENTS[client](service.mqtt_port, device_id, "not-the-key")
    with pytest.raises(Refused) as refused:
        await link.open()
    allowed = {0x86, 0x87} if client in V5 else {4, 5, 0x86, 0x87}
    assert refused.value.code in allowed
    assert (await api.ok("GET", f"/api/v1/devices/{device_id}"))["online"] is False


@pytest.mark.parametrize("version", ["mqttv311", "mqttv5"])
async def test_mqtt_mosquitto_sub_with_a_wrong_password_is_refused(
    version: str, service: Service, fleet: Fleet
) -> None:
    device_id, _key = await fleet.device(await fleet.profile())
    code, out, err = await run(
        MOSQUITTO_SUB,
        *("-h", "127.0.0.1", "-p", str(service.mqtt_port), "-V", version),
        *("-i", device_id, "-u", device_id, "-P", "not-the-key"),
        *("-t", f"devices/{device_id}/desired", "-C", "1", "-W", "10"),
    )
    assert code != 0, out
    assert "not authori" in err.lower() or "bad user" in err.lower(), err


@pytest.mark.parametrize("client", LIBRARIES)
async def test_mqtt_client_subscription_to_another_devices_topic_is_refused(
    client: str, service: Service, fleet: Fleet
) -> None:
    """SUBACK 0x80 (3.1.1) / reason 0x87 Not authorized (5) for the foreign filter, in the same
    SUBACK that grants the device's own topic."""
    profile = await fleet.profile()
    device_a, key_a = await fleet.device(profile, "a")
    device_b, _ = await fleet.device(profile, "b")
    async with CLIENTS[client](service.mqtt_port, device_a, key_a) as link:
        codes = await link.subscribe((f"devices/{device_b}/desired", link.topic("commands")))
        refused = 0x87 if client in V5 else 0x80
        assert codes == [refused, 1]
        for topic in ("devices/#", "#", f"devices/{device_b}/commands"):
            assert await link.subscribe((topic,)) == [refused], topic


async def test_mqtt5_connack_carries_properties_the_client_can_read(
    service: Service, fleet: Fleet
) -> None:
    """An MQTT 5 server that limits packet size must say so in CONNACK (Maximum Packet Size,
    MQTT 5 section 3.2.2.3.6), and one without QoS 2 must send Maximum QoS [MQTT-3.2.2-9];
    SPEC section 3's 256 KiB payloads must fit."""
    device_id, key = await fleet.device(await fleet.profile())
    async with PahoLink(service.mqtt_port, device_id, key, 5) as link:
        props = link.connack_properties
        assert props.get("MaximumPacketSize", 0) >= 256 * 1024, props
        assert props.get("MaximumQoS") == 1, props


async def test_mqtt5_session_expiry_zero_ends_the_session_at_disconnect(
    service: Service, api: Api, fleet: Fleet
) -> None:
    """MQTT 5 section 3.1.2.11.2: with Session Expiry Interval 0 the session ends with the
    connection, so a Clean Start 0 reconnect finds none and has no subscriptions."""
    profile = await fleet.profile()
    device_id, key = await fleet.device(profile)
    async with PahoLink(service.mqtt_port, device_id, key, 5, clean=True) as link:
        first = await link.desired()
    await eventually(lambda: _offline(api, device_id))
    artefact = await fleet.artefact(profile, {"setpoint": 14})
    await fleet.bind("device", device_id, artefact["id"])
    again = PahoLink(service.mqtt_port, device_id, key, 5, clean=False, session_expiry=0)
    await again.open(subscribe=())
    try:
        assert again.session_present is False
        await again.nothing(0.5)
        await again.subscribe_own(("desired",))
        assert (await again.desired(above=first["version"]))["configs"][0]["hash"] == (
            artefact["hash"]
        )
    finally:
        await again.close()
