"""`python -m bench` at 100 devices: every scenario runs and is correct (no timing asserts)."""

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent  # where the `bench` package is importable from
LIMIT_S = 240.0


async def _bench(tmp_path: Path, *args: str) -> tuple[str, dict[str, Any]]:
    """`python -m bench ARGS` into tmp_path: its output and the one run it recorded."""
    proc = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "bench", *args, "--no-append", "--out", str(tmp_path)),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=ROOT,
    )
    async with asyncio.timeout(LIMIT_S):
        out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()[-3000:]
    (results,) = tmp_path.glob("*.json")
    (run,) = json.loads(results.read_text())["runs"]
    return out.decode(), run


async def test_bench_smoke_every_scenario_is_correct_at_100_devices(tmp_path: Path) -> None:
    out, run = await _bench(
        tmp_path,
        *("--devices", "100", "--telemetry-seconds", "3"),
        *("--scenarios", "connect,rollout,commands,telemetry,lean,ceiling"),
        *("--ceiling", "mosquitto"),
    )
    assert "| rollout | all ACCEPTED after |" in out
    assert "| lean load | MQTT accepted |" in out
    service = run["service"]
    assert service["connect"]["connected"] == 100
    assert service["connect"]["errors"] == {}
    rollout = service["rollout"]
    assert rollout["all_accepted"] is True
    assert rollout["service_counts"] == {"ACCEPTED": 100}
    assert rollout["foreign_documents"] == 0
    assert service["commands"]["all_success"] is True
    # The lean fleet connects as the same devices, gets the bound document, and applies a new one.
    assert service["connect_lean"]["connected"] == 100
    assert service["connect_lean"]["documents_expected"] is True
    lean_rollout = service["rollout_lean"]
    assert lean_rollout["all_accepted"] is True
    assert lean_rollout["service_counts"] == {"ACCEPTED": 100}
    assert lean_rollout["devices_side"]["errors"] == {}
    for name in ("telemetry_mqtt", "telemetry_http", "telemetry_mqtt_lean", "telemetry_http_lean"):
        telemetry = service[name]
        assert telemetry["acked"] > 0, name
        assert telemetry["failed"] == 0, name
        assert telemetry["stored"] == telemetry["acked"], name  # zero loss
    assert service["exit_code"] == 0
    ceiling = run["ceiling"]["mosquitto"]
    assert ceiling["connect"]["connected"] == 100
    assert ceiling["rollout"]["all_accepted"] is True
    assert ceiling["telemetry_mqtt"]["acked"] > 0
    assert ceiling["connect_lean"]["connected"] == 100
    assert set(run["targets"])
    assert run["machine"]["cores"] >= 1


async def test_bench_smoke_attack_is_refused_and_leaves_the_device_served(tmp_path: Path) -> None:
    out, run = await _bench(
        tmp_path,
        *("--scenarios", "attack", "--attack-connections", "60"),
        "--attack-throttle",
        "both",
    )
    assert "| raised | 60 |" in out
    for mode in ("raised", "default"):
        attack = run["attack"][mode]
        assert attack["attempted"] == 60
        assert attack["command_delivered_after"] is True
        assert attack["settled"]["connected_devices"] == 1
        assert attack["exit_code"] == 0
        refused = {k.split(":")[1] for k in attack["outcomes"]}
        assert refused <= {"closed", "connack_4", "connack_5"}, attack["outcomes"]
