"""The MQTT endpoint probed as an attacker without credentials would (docs/spec.md section 8):
nothing sent before a CONNACK 0 touches state, sockets are released, takeover closes the old
connection, protocol violations close the connection, floods are slowed rather than buffered, and
failed authentications are throttled per device id and per source address.

Bounded: every loop has a count and every wait a timeout. RSS and open descriptors are read from
/proc/self because the `service` fixture runs the service in this process."""

import asyncio
import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

import mqtt_raw
from conftest import WAIT, Api, Fleet, eventually
from conftest_mqtt import AiomqttLink, config_with, find_setting, setting
from fleetstate import app
from fleetstate.app import Service
from mqtt_raw import CONNACK, DISCONNECT, PINGRESP, PUBACK, RawClient, connect

MB = 1024 * 1024
# A flood is up to 50,000 messages of 1 KB: an endpoint that buffers what it has not processed
# grows by about that much (amqtt: +75 MB for QoS 0, +99 MB for QoS 1); one that stops reading
# holds a bounded queue.
FLOOD_RSS = 32 * MB
FLOODER = Path(mqtt_raw.__file__)


def rss() -> int:
    """This process's resident set size in bytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS in /proc/self/status")


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


async def _metric(api: Api, name: str) -> float:
    status, text = await api.get("/metrics")
    assert status == 200
    for line in text.splitlines():
        if line.startswith(f"{name} "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not in /metrics")


async def _command(api: Api, device_id: str, kind: str = "REBOOT") -> dict[str, object]:
    path = f"/api/v1/devices/{device_id}/commands"
    return dict(await api.ok("POST", path, {"type": kind}, status=201))


async def _command_status(api: Api, device_id: str, command_id: object) -> str:
    path = f"/api/v1/devices/{device_id}/commands/{command_id}"
    return str((await api.ok("GET", path))["status"])


async def _online(api: Api, device_id: str) -> bool:
    return bool((await api.ok("GET", f"/api/v1/devices/{device_id}"))["online"])


async def _refused(port: int, client_id: str, password: str, source: str | None = None) -> int:
    """A CONNECT that must be refused: its CONNACK code (the connection must close after it)."""
    raw = await RawClient.open(port, source)
    try:
        raw.send(connect(client_id, client_id, password))
        answer = await raw.connack()
        assert answer.reason != 0, f"CONNECT as {client_id} from {source} was accepted"
        await raw.until_closed()
        return answer.reason
    finally:
        await raw.close()


# -- nothing before CONNACK 0 touches state -------------------------------------------------------


async def test_attack_wrong_password_with_a_connected_devices_id_leaves_it_attached(
    service: Service, api: Api, fleet: Fleet
) -> None:
    """amqtt dropped the victim's subscriptions before checking the password: its next REBOOT
    stayed PENDING and its new desired version never arrived."""
    profile = await fleet.profile()
    device_id, key = await fleet.device(profile)
    async with AiomqttLink(service.mqtt_port, device_id, key) as victim:
        first = await victim.desired()
        assert await _refused(service.mqtt_port, device_id, "not-the-key") in (4, 5)
        assert await _online(api, device_id)

        command = await _command(api, device_id)
        assert command["status"] == "SENT"
        message = await victim.next("commands", lambda m: m["id"] == command["id"])
        assert message["type"] == "REBOOT"
        await victim.publish("commands/ack", {"id": command["id"], "status": "SUCCESS"})
        assert await _command_status(api, device_id, command["id"]) == "SUCCESS"

        artefact = await fleet.artefact(profile, {"setpoint": 18})
        await fleet.bind("device", device_id, artefact["id"])
        doc = await victim.desired(above=first["version"])
        assert doc["configs"][0]["hash"] == artefact["hash"]


async def test_attack_connections_closed_before_connect_release_their_sockets(
    service: Service, api: Api, fleet: Fleet
) -> None:
    """amqtt left each in CLOSE-WAIT: 1,100 cycles under `ulimit -n 1024` killed /healthz."""
    device_id, key = await fleet.device(await fleet.profile())
    assert (await api.get("/healthz"))[0] == 200  # the HTTP client's own socket is open now
    before = open_fds()

    async def open_and_close(n: int) -> None:
        raw = await RawClient.open(service.mqtt_port)
        if n % 2:
            raw.send(b"\x10\x20\x00\x04MQ")  # the first bytes of a CONNECT, then nothing
        await raw.close()

    for batch in range(12):  # 300 connections, 25 at a time
        await asyncio.gather(*(open_and_close(batch * 25 + n) for n in range(25)))

    async def released() -> bool:
        return open_fds() <= before + 10

    try:
        await eventually(released, timeout=5)
    except TimeoutError:
        raise AssertionError(f"{open_fds() - before} descriptors still open") from None
    assert (await api.get("/healthz"))[0] == 200
    async with AiomqttLink(service.mqtt_port, device_id, key) as device:
        await device.desired()


async def test_attack_refused_connects_leave_no_session_behind(
    service: Service, api: Api, fleet: Fleet
) -> None:
    """amqtt kept ~36 KB per refused client id (10,000 attempts: 59 → 422 MB) and counted each
    in fleetstate_mqtt_connected_devices. The attempts come from many loopback addresses, so the
    address throttle does not turn them away before authentication."""
    port = service.mqtt_port

    async def attempts(first: int, count: int) -> None:
        for start in range(first, first + count, 25):
            await asyncio.gather(
                *(_refused_quietly(port, n) for n in range(start, min(start + 25, first + count)))
            )

    await attempts(0, 50)  # warm up whatever is allocated once
    before = rss()
    await attempts(50, 500)
    grown = rss() - before
    sessions = await _metric(api, "fleetstate_mqtt_connected_devices")
    assert (sessions, grown < 8 * MB) == (0, True), f"{sessions}, RSS +{grown / MB:.1f} MB"

    device_id, key = await fleet.device(await fleet.profile())
    async with AiomqttLink(port, device_id, key) as device:  # the gauge does count real ones
        await device.desired()
        assert await _metric(api, "fleetstate_mqtt_connected_devices") == 1


async def _refused_quietly(port: int, n: int) -> None:
    """A CONNECT with a new client id and a wrong password, from 127.0.1.(n // 5): refused with a
    CONNACK or, once throttled, by closing."""
    raw = await RawClient.open(port, f"127.0.1.{n // 5 % 250 + 1}")
    try:
        raw.send(connect(f"ghost-{n}", f"ghost-{n}", "wrong"))
        answer = await raw.packet()
        assert answer is None or (answer.kind == CONNACK and answer.reason != 0), answer
    finally:
        await raw.close()


# -- CONNECT timeout -----------------------------------------------------------------------------

CONNECT_TIMEOUT = find_setting("connect", "timeout")


@asynccontextmanager
async def _service_with_short_connect_timeout(
    tmp_path: Path,
) -> AsyncIterator[tuple[Service, float]]:
    """The service with its CONNECT timeout at 2 s when the configuration has that setting,
    else the SPEC's default of 10 s: (service, the timeout in seconds)."""
    short = 2000 if CONNECT_TIMEOUT and CONNECT_TIMEOUT[-1].endswith("_ms") else 2
    config = config_with(tmp_path / "data", CONNECT_TIMEOUT, short)
    seconds = 10.0
    if CONNECT_TIMEOUT is not None:
        value = float(setting(config, CONNECT_TIMEOUT))
        seconds = value / 1000 if CONNECT_TIMEOUT[-1].endswith("_ms") else value
    async with app.start(config) as running:
        yield running, seconds


@pytest.mark.parametrize("sent", [b"", b"\x10\x20\x00\x04MQ"], ids=["nothing", "half-a-connect"])
async def test_attack_connection_without_connect_is_closed_within_the_connect_timeout(
    tmp_path: Path, sent: bytes
) -> None:
    """amqtt had no CONNECT timeout: stalled connections were still open after 95 s."""
    async with _service_with_short_connect_timeout(tmp_path) as (service, limit):
        raw = await RawClient.open(service.mqtt_port)
        try:
            raw.send(sent)
            assert await raw.until_closed(timeout=limit + 5) == []
        finally:
            await raw.close()


# -- takeover ------------------------------------------------------------------------------------


@pytest.mark.parametrize("level", [4, 5])
async def test_attack_takeover_closes_the_first_connection_and_presence_stays_online(
    service: Service, api: Api, fleet: Fleet, level: int
) -> None:
    """[MQTT-3.1.4-2]. amqtt kept the old connection answering PINGREQ, processed its publishes,
    and left presence "offline" while the new connection was up."""
    device_id, key = await fleet.device(await fleet.profile())
    first = await mqtt_raw.session(service.mqtt_port, device_id, key, level)
    second = await mqtt_raw.session(service.mqtt_port, device_id, key, level)
    try:
        first.send(mqtt_raw.PINGREQ_PACKET)
        seen = await first.until_closed()
        assert PINGRESP not in [p.kind for p in seen], "the taken-over connection still answers"
        assert all(p.kind == DISCONNECT for p in seen), seen  # MQTT 5: DISCONNECT 0x8E first
        second.send(mqtt_raw.PINGREQ_PACKET)
        answer = await second.packet()
        assert answer is not None
        assert answer.kind == PINGRESP
        # A write through the same single writer answers only after every presence write the
        # two connections submitted before it has committed: what is read next is final.
        await fleet.profile("after-the-takeover")
        assert await _online(api, device_id), "presence must stay online after a takeover"
    finally:
        await first.close()
        await second.close()


# -- protocol violations and versions ------------------------------------------------------------


@pytest.mark.parametrize("level", [4, 5])
@pytest.mark.parametrize("wildcard", ["+", "#"])
async def test_attack_qos1_publish_on_a_wildcard_topic_closes_the_connection(
    service: Service, fleet: Fleet, level: int, wildcard: str
) -> None:
    """[MQTT-3.3.2-2]: no wildcards in a PUBLISH topic. amqtt parsed the payload as a PUBCOMP
    and swallowed the next PINGREQ."""
    device_id, key = await fleet.device(await fleet.profile())
    raw = await mqtt_raw.session(service.mqtt_port, device_id, key, level)
    try:
        topic = f"devices/{device_id}/{wildcard}"
        raw.send(mqtt_raw.publish(topic, b"\x70\x02\x00\x01", qos=1, packet_id=7, level=level))
        raw.send(mqtt_raw.PINGREQ_PACKET)
        seen = await raw.until_closed()
        assert PUBACK not in [p.kind for p in seen], seen
        assert PINGRESP not in [p.kind for p in seen], seen
    finally:
        await raw.close()


async def test_attack_mqtt5_qos2_publish_is_refused_with_disconnect(
    service: Service, fleet: Fleet
) -> None:
    """SPEC section 3 has QoS 0 and 1 only. MQTT 5: a server with Maximum QoS 1 answers a QoS 2
    PUBLISH with DISCONNECT 0x9B (MQTT 5 section 3.3.1.2), never a PUBREC. (3.1.1 defines no
    refusal of a QoS 2 PUBLISH, so it is not asserted here.)"""
    level = 5
    device_id, key = await fleet.device(await fleet.profile())
    raw = await mqtt_raw.session(service.mqtt_port, device_id, key, level)
    try:
        body = b'{"status": "online", "telemetries": {"t": 1}}'
        raw.send(mqtt_raw.publish(f"devices/{device_id}/telemetry", body, 2, 3, level))
        seen = await raw.until_closed()
        assert [(p.kind, p.body[:1]) for p in seen] == [(DISCONNECT, b"\x9b")], seen
    finally:
        await raw.close()


async def test_attack_mqtt5_connect_gets_a_connack(service: Service, fleet: Fleet) -> None:
    """amqtt never answered an MQTT 5 CONNECT."""
    device_id, key = await fleet.device(await fleet.profile())
    raw = await RawClient.open(service.mqtt_port)
    try:
        raw.send(connect(device_id, device_id, key, level=5))
        answer = await raw.connack()
        assert answer.reason == 0, answer
        raw.send(mqtt_raw.PINGREQ_PACKET)
        pong = await raw.packet()
        assert pong is not None
        assert pong.kind == PINGRESP
    finally:
        await raw.close()


@pytest.mark.parametrize("level", [5, 4])
async def test_attack_mqtt_wrong_password_gets_the_versions_refusal_code(
    service: Service, fleet: Fleet, level: int
) -> None:
    """SPEC section 3: 3.1.1 return code 4 or 5; MQTT 5 reason 0x86 or 0x87."""
    device_id, _key = await fleet.device(await fleet.profile())
    raw = await RawClient.open(service.mqtt_port)
    try:
        raw.send(connect(device_id, device_id, "not-the-key", level=level))
        answer = await raw.connack()
        assert answer.reason in ({0x86, 0x87} if level == 5 else {4, 5}), answer
        await raw.until_closed()
    finally:
        await raw.close()


@pytest.mark.parametrize(
    ("level", "name", "refusals"),
    [
        (3, "MQIsdp", [b"\x00\x01"]),  # MQTT 3.1: unacceptable protocol version
        # 3.1.1 [MQTT-3.1.2-2]: return code 1; an MQTT 5 server may answer 0x84 instead.
        (6, "MQTT", [b"\x00\x01", b"\x00\x84"]),
    ],
    ids=["mqtt31", "level6"],
)
async def test_attack_unsupported_protocol_level_is_refused_and_closed(
    service: Service, fleet: Fleet, level: int, name: str, refusals: list[bytes]
) -> None:
    device_id, key = await fleet.device(await fleet.profile())
    raw = await RawClient.open(service.mqtt_port)
    try:
        raw.send(connect(device_id, device_id, key, level=level, protocol_name=name))
        answer = await raw.connack()
        assert answer.body[:2] in refusals, answer
        assert await raw.until_closed() == []
    finally:
        await raw.close()


# -- auth throttling (SPEC section 8) ------------------------------------------------------------


async def test_attack_ten_wrong_passwords_block_the_device_id_even_with_the_right_key(
    service: Service, fleet: Fleet
) -> None:
    """After 10 failures in a minute further attempts for that device id are refused for a
    minute, the correct key included, from any address; other devices are not affected."""
    profile = await fleet.profile()
    device_id, key = await fleet.device(profile, "victim")
    other_id, other_key = await fleet.device(profile, "other")
    port = service.mqtt_port
    for n in range(10):  # from ten addresses: the device id, not an address, is what counts
        await _refused(port, device_id, "guess", source=f"127.0.2.{n + 1}")
    await _refused(port, device_id, key, source="127.0.3.1")
    raw = await mqtt_raw.session(port, other_id, other_key, source="127.0.3.1")
    await raw.close()


async def test_attack_ten_failures_from_one_address_block_that_address(
    service: Service, fleet: Fleet
) -> None:
    """Per source address: 10 failures with unknown ids from one address, then a real device's
    correct key from that address is refused; from another address it is accepted."""
    device_id, key = await fleet.device(await fleet.profile())
    port = service.mqtt_port
    for n in range(10):
        await _refused(port, f"ghost-{n}", "guess", source="127.0.4.1")
    await _refused(port, device_id, key, source="127.0.4.1")
    raw = await mqtt_raw.session(port, device_id, key, source="127.0.4.2")
    await raw.close()


# -- floods: slowed, not buffered ----------------------------------------------------------------


class Flood:
    """The flooder of mqtt_raw.py in its own process, and the service's peak RSS meanwhile."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process, self.peak, self.count = process, rss(), 0

    async def sample(self) -> None:
        while self.process.returncode is None:  # bounded by the flooder's own deadline
            self.peak = max(self.peak, rss())
            await asyncio.sleep(0.1)

    async def sent(self) -> int:
        assert self.process.stdout is not None
        async with asyncio.timeout(WAIT + 5):
            out = (await self.process.stdout.read()).decode()
            await self.process.wait()
        assert self.process.returncode == 0, out
        return int(out.split()[-1])


@asynccontextmanager
async def _flood(
    port: int, device_id: str, key: str, qos: int, seconds: float = 3.0
) -> AsyncIterator[Flood]:
    """Up to 50,000 1 KB telemetry messages for `seconds`; entered once the flooder has its
    CONNACK, left once it has finished and its RSS samples are in."""
    argv = [str(FLOODER), str(port), device_id, key, str(qos), str(seconds), "50000", "1000"]
    process = await asyncio.create_subprocess_exec(
        sys.executable, *argv, stdout=asyncio.subprocess.PIPE
    )
    flood = Flood(process)
    sampler = asyncio.create_task(flood.sample(), name="rss-sampler")
    try:
        assert process.stdout is not None
        async with asyncio.timeout(WAIT):
            assert await process.stdout.readline() == b"connected\n"
        yield flood
        flood.count = await flood.sent()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
        await sampler


async def test_attack_qos0_flood_neither_delays_other_devices_nor_grows_memory(
    service: Service, api: Api, fleet: Fleet
) -> None:
    """amqtt: one device's QoS 0 flood took +400 MB RSS for good, delayed other devices'
    commands and left a 40 s backlog after a 5 s flood."""
    profile = await fleet.profile()
    flooder_id, flooder_key = await fleet.device(profile, "flooder")
    device_id, key = await fleet.device(profile, "bystander")
    async with AiomqttLink(service.mqtt_port, device_id, key) as bystander:
        await bystander.desired()
        before = rss()
        async with _flood(service.mqtt_port, flooder_id, flooder_key, qos=0) as flood:
            async with asyncio.timeout(10):  # generous: the flood is still running meanwhile
                command = await _command(api, device_id)
                await bystander.next("commands", lambda m: m["id"] == command["id"])
        await bystander.publish("commands/ack", {"id": command["id"], "status": "SUCCESS"})
        assert await _command_status(api, device_id, command["id"]) == "SUCCESS"
    grown = flood.peak - before
    assert grown < FLOOD_RSS, f"RSS +{grown / MB:.0f} MB over {flood.count} QoS 0 messages"


async def test_attack_qos1_flood_faster_than_processed_is_slowed_not_buffered(
    service: Service, api: Api, fleet: Fleet
) -> None:
    """A device that sends QoS 1 faster than its messages commit (and reads none of its PUBACKs)
    is read no faster than it is processed: memory stays bounded, HTTP stays responsive."""
    flooder_id, flooder_key = await fleet.device(await fleet.profile())
    before = rss()
    async with _flood(service.mqtt_port, flooder_id, flooder_key, qos=1) as flood:
        async with asyncio.timeout(10):
            assert (await api.get("/healthz"))[0] == 200
    grown = flood.peak - before
    assert grown < FLOOD_RSS, f"RSS +{grown / MB:.0f} MB over {flood.count} QoS 1 messages"
