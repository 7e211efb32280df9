"""`fleetstate simulate`: each device's part, the command against a real service, and what it
says when the `simulate` extra is missing."""

import asyncio
import signal
import sys
from collections import Counter
from typing import Any

import pytest

from conftest import ADMIN_TOKEN, Api
from fleetstate.app import Service
from fleetstate.simulator.options import (
    Behaviour,
    DeviceSpec,
    Options,
    Transport,
    check,
    mqtt_address,
    plan,
    split,
)

DEVICES = 20
RUN_S = 60.0
WAIT_S = 30.0


def test_simulator_plan_gives_each_share_its_exact_count() -> None:
    options = Options(
        devices=50,
        token="t",
        reject_share=0.1,
        fail_share=0.2,
        silent_share=0.06,
        http_only_share=0.3,
    )
    parts = plan(options)
    behaviours = Counter(b for b, _t in parts)
    assert behaviours == {
        Behaviour.REJECT: 5,
        Behaviour.FAIL: 10,
        Behaviour.SILENT: 3,
        Behaviour.ACCEPT: 32,
    }
    assert Counter(t for _b, t in parts)[Transport.HTTP] == 15
    assert parts == plan(options)  # seeded: the same fleet every run


def test_simulator_options_are_checked() -> None:
    assert check(Options(devices=5, token="t")) == []
    problems = check(
        Options(devices=0, reject_share=0.7, fail_share=0.5, http_only_share=2, duration=0)
    )
    assert any("--devices" in p for p in problems)
    assert any("add up to more than 1" in p for p in problems)
    assert any("--http-only-share" in p for p in problems)
    assert any("--token" in p for p in problems)
    assert any("--duration" in p for p in problems)


def test_simulator_splits_round_robin_and_reads_broker_urls() -> None:
    specs = [DeviceSpec(str(i), "k", Behaviour.ACCEPT, Transport.MQTT) for i in range(5)]
    assert [[s.id for s in part] for part in split(specs, 2)] == [["0", "2", "4"], ["1", "3"]]
    assert len(split(specs[:1], 4)) == 1
    assert mqtt_address("mqtt://127.0.0.1:1884") == ("127.0.0.1", 1884)
    assert mqtt_address("localhost") == ("localhost", 1883)
    with pytest.raises(ValueError, match="mqtt://"):
        mqtt_address("http://127.0.0.1:80")


async def test_simulator_without_the_extra_says_how_to_install_it() -> None:
    script = (
        "import sys; sys.modules['aiomqtt'] = None; sys.modules['rich'] = None;"
        "from fleetstate.cli import main;"
        "sys.exit(main(['simulate', '--devices', '1', '--token', 't']))"
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", script, stderr=asyncio.subprocess.PIPE
    )
    _out, err = await proc.communicate()
    assert proc.returncode == 2
    assert b"pip install 'fleetstate[simulate]'" in err


async def _wait_for(what: str, probe: Any) -> Any:
    async with asyncio.timeout(WAIT_S):
        while True:
            found = await probe()
            if found:
                return found
            await asyncio.sleep(0.2)
    raise AssertionError(what)


async def test_simulator_fleet_converges_and_answers_commands(service: Service, api: Api) -> None:
    proc = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "fleetstate", "simulate", "--devices", str(DEVICES)),
        *("--http", service.http_url, "--token", ADMIN_TOKEN, "--group", "sim"),
        *("--profile", "sim", "--telemetry-interval", "0.5", "--connect-rate", "0"),
        *("--reject-share", "0.1", "--fail-share", "0.1", "--silent-share", "0.1"),
        *("--http-only-share", "0.2", "--duration", str(RUN_S)),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        group_id, profile_id = await _wait_for("the fleet is online", lambda: _online(api))
        artefact = await api.ok(
            "POST",
            "/api/v1/config-artefacts",
            {"name": "sim", "profile_id": profile_id, "content": {"mode": "eco"}},
            status=201,
        )
        binding = await api.ok(
            "PUT",
            "/api/v1/desired-state-bindings",
            {"target_type": "device_group", "target_id": group_id, "artefact_id": artefact["id"]},
        )
        batch = await api.ok(
            "POST", f"/api/v1/device-groups/{group_id}/commands", {"type": "REBOOT"}, status=201
        )
        converged = {"ACCEPTED": 14, "REJECTED": 2, "FAILED": 2, "PENDING": 2}
        path = f"/api/v1/desired-state-bindings/{binding['id']}"
        await _wait_for("convergence", lambda: _counts(api, path, converged))
        answered = {"SUCCESS": 16, "FAILED": 2}
        path = f"/api/v1/command-batches/{batch['batch_id']}"
        await _wait_for("command results", lambda: _counts(api, path, answered))
        device = (await api.ok("GET", f"/api/v1/device-groups/{group_id}"))["device_ids"][0]
        await _wait_for("telemetry", lambda: _reports_online(api, device))
        proc.send_signal(signal.SIGINT)
        async with asyncio.timeout(WAIT_S):
            out, err = await proc.communicate()
    finally:
        if proc.returncode is None:
            proc.kill()  # its worker processes notice and stop within a second or so
            async with asyncio.timeout(WAIT_S):
                await proc.wait()
    assert proc.returncode == 0, err.decode()
    summary = out.decode()
    assert "fleetstate simulate" in summary
    assert "foreign messages │ 0" in summary


async def _online(api: Api) -> tuple[str, str] | None:
    groups = await api.ok("GET", "/api/v1/device-groups")
    group = next((g for g in groups["items"] if g["name"] == "sim"), None)
    if group is None or group["device_count"] < DEVICES:
        return None
    listed = await api.ok("GET", "/api/v1/devices?limit=100")
    if sum(d["online"] for d in listed["items"]) < DEVICES * 0.8:  # the MQTT devices
        return None
    profiles = await api.ok("GET", "/api/v1/device-profiles")
    profile = next(p["id"] for p in profiles["items"] if p["name"] == "sim")
    return group["id"], profile


async def _counts(api: Api, path: str, wanted: dict[str, int]) -> bool:
    found = await api.ok("GET", path)
    counts = {k: v for k, v in found["counts"].items() if k in wanted}
    return bool(counts == wanted)


async def _reports_online(api: Api, device_id: str) -> bool:
    state = await api.ok("GET", f"/api/v1/devices/{device_id}/telemetry")
    return bool(state["state"].get("status") == "online")
