"""`[log]`: JSON lines with device and request ids, and the access log, from a real
`fleetstate serve`."""

import asyncio
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

import aiohttp

from conftest import SCHEMA, WAIT, Api
from fleetstate import config
from fleetstate.config import LogConfig
from test_device_api import device_call

TOKEN = "logs-test-token-0001"


async def serve_with(data: Path, log: Path, **env: str) -> tuple[asyncio.subprocess.Process, str]:
    """`fleetstate serve` writing its log to `log`; answers the process and its HTTP URL."""
    environ = {**os.environ, "FLEETSTATE_ADMIN_TOKEN": TOKEN, **env}
    with log.open("wb") as err:
        proc = await asyncio.create_subprocess_exec(
            *(sys.executable, "-m", "fleetstate", "serve", "--data", str(data)),
            *("--http", "127.0.0.1:0", "--mqtt", "127.0.0.1:0"),
            stdout=asyncio.subprocess.PIPE,
            stderr=err,
            env=environ,
        )
    assert proc.stdout is not None
    async with asyncio.timeout(WAIT * 2):
        while True:
            line = (await proc.stdout.readline()).decode()
            assert line, log.read_text()
            if line.startswith("http listening on"):
                return proc, line.split()[-1]


def json_lines(log: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in log.read_text().splitlines() if line.strip()]


async def stop(proc: asyncio.subprocess.Process) -> None:
    proc.send_signal(signal.SIGTERM)
    async with asyncio.timeout(WAIT * 2):
        assert await proc.wait() == 0


async def test_logs_json_lines_carry_device_and_request_ids(tmp_path: Path) -> None:
    log = tmp_path / "serve.log"
    env = {"FLEETSTATE_LOG_FORMAT": "json", "FLEETSTATE_LOG_ACCESS": "true"}
    proc, url = await serve_with(tmp_path / "data", log, **env)
    try:
        async with aiohttp.ClientSession() as session:
            api = Api(session, url, TOKEN)
            profile = await api.ok(
                "POST", "/api/v1/device-profiles", {"name": "p", "config_schema": SCHEMA}
            )
            device = await api.ok(
                "POST", "/api/v1/devices", {"name": "d", "profile_id": profile["id"]}
            )
            path = f"/v1/devices/{device['id']}/config"
            async with session.get(url + path, headers={"Authorization": "wrong"}) as response:
                assert response.status == 401
                request_id = response.headers["X-Request-Id"]
            assert (await device_call(api, "GET", path, device["access_key"]))[0] == 200
        await stop(proc)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    lines = json_lines(log)  # every line is one JSON object
    assert all({"time", "level", "logger", "message"} <= set(line) for line in lines)
    access = [line for line in lines if line["logger"] == "fleetstate.access"]
    refused = next(line for line in access if line.get("request_id") == request_id)
    assert refused["device_id"] == device["id"]
    assert (refused["route"], refused["status"]) == ("/v1/devices/{device_id}/config", 401)
    assert refused["path"] == path
    assert len({line["request_id"] for line in access}) == len(access)
    assert any(line["message"] == "shutting down" for line in lines)


async def test_logs_text_by_default_and_no_access_log(tmp_path: Path) -> None:
    log = tmp_path / "serve.log"
    proc, url = await serve_with(tmp_path / "data", log)
    try:
        async with aiohttp.ClientSession() as session:
            assert (await Api(session, url, TOKEN).get("/healthz"))[0] == 200
        await stop(proc)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    text = log.read_text()
    assert "INFO fleetstate.app: shutting down" in text
    assert "/healthz" not in text


def test_logs_config_table() -> None:
    assert config.load().log == LogConfig(format="text", access=False)
    example = Path(__file__).parent.parent / "config" / "fleetstate.toml"
    assert config.load(example).log == LogConfig()
    env = {"FLEETSTATE_LOG_FORMAT": "json", "FLEETSTATE_LOG_ACCESS": "true"}
    assert config.load(environ=env).log == LogConfig(format="json", access=True)
