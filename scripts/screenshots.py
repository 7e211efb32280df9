"""Screenshots of the web app for the README: a demo fleet in a throw-away service, in Chromium.

    .venv/bin/python scripts/screenshots.py [--out docs/screenshots]

Needs the test extras (aiomqtt, playwright) and Debian's Chromium at /usr/bin/chromium.
"""

import argparse
import asyncio
import base64
import contextlib
import json
import math
import tempfile
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import aiomqtt
from playwright.async_api import Page, async_playwright

from fleetstate import app
from fleetstate.config import Config

TOKEN = "screenshot-admin-token"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SCHEMA = {
    "type": "object",
    "properties": {
        "setpoint": {"type": "number", "minimum": 5, "maximum": 30},
        "mode": {"enum": ["heat", "eco", "off"]},
    },
    "required": ["setpoint"],
}
WAIT = 10.0


class Demo:
    def __init__(self, http: aiohttp.ClientSession, service: app.Service) -> None:
        self.http, self.service = http, service
        self.keys: dict[str, str] = {}

    async def call(self, method: str, path: str, body: Any = None, key: str | None = None) -> Any:
        auth = key if key is not None else f"Bearer {TOKEN}"
        async with self.http.request(
            method, self.service.http_url + path, json=body, headers={"Authorization": auth}
        ) as response:
            text = await response.text()
            if response.status >= 300:
                raise RuntimeError(f"{method} {path}: {response.status} {text}")
            return json.loads(text) if text else None

    async def device(self, profile: str, name: str, serial: str, **extra: Any) -> str:
        body = {"name": name, "profile_id": profile, "serial": serial, **extra}
        created = await self.call("POST", "/api/v1/devices", body)
        self.keys[created["id"]] = created["access_key"]
        return str(created["id"])

    async def firmware(self, device_id: str, version: str) -> None:
        body = {"firmware_version": version}
        await self.call("PUT", f"/v1/devices/{device_id}", body, key=self.keys[device_id])

    async def telemetry_history(self, device_id: str) -> None:
        """A day of temperature and humidity, every 30 minutes."""
        start = datetime.now(UTC) - timedelta(hours=24)
        for n in range(49):
            moment = start + timedelta(minutes=30 * n)
            values = {
                "temperature": round(20.5 + 1.8 * math.sin(n / 7) + 0.3 * math.sin(n), 2),
                "humidity": round(44 + 6 * math.cos(n / 9), 1),
                "firmware": "1.5.0",
                "heating": n % 6 < 3,
            }
            body = {
                "status": "online",
                "timestamp": moment.isoformat().replace("+00:00", "Z"),
                "telemetries": values,
            }
            await self.call(
                "POST", f"/v1/devices/{device_id}/telemetry", body, key=self.keys[device_id]
            )

    @contextlib.asynccontextmanager
    async def connected(self, device_id: str) -> AsyncIterator[aiomqtt.Client]:
        client = aiomqtt.Client(
            "127.0.0.1",
            self.service.mqtt_port,
            identifier=device_id,
            username=device_id,
            password=self.keys[device_id],
        )
        async with client:
            for sub in ("desired", "commands"):
                await client.subscribe(f"devices/{device_id}/{sub}", qos=1)
            yield client


async def next_message(client: aiomqtt.Client, suffix: str) -> dict[str, Any]:
    async with asyncio.timeout(WAIT):
        async for message in client.messages:
            if str(message.topic).endswith(suffix):
                return dict(json.loads(bytes(message.payload)))
    raise RuntimeError("the MQTT connection closed")


async def report(client: aiomqtt.Client, device_id: str, status: str, **extra: Any) -> None:
    """Answer the newest desired document with `status` for every slot."""
    doc = await next_message(client, "/desired")
    configs = [
        {"slot": c["slot"], "artefact_id": c["artefact_id"], "hash": c["hash"], "status": status}
        for c in doc["configs"]
    ]
    body = {"version": doc["version"], "status": status, "configs": configs, **extra}
    await client.publish(f"devices/{device_id}/reported", json.dumps(body), qos=1)


async def ack(client: aiomqtt.Client, device_id: str, *statuses: str) -> None:
    command = await next_message(client, "/commands")
    for status in statuses:
        body = {"id": command["id"], "status": status}
        await client.publish(f"devices/{device_id}/commands/ack", json.dumps(body), qos=1)


async def build_fleet(demo: Demo, stack: contextlib.AsyncExitStack) -> str:
    """A small fleet in every state the pages show; returns the device to photograph."""
    profile = (
        await demo.call(
            "POST", "/api/v1/device-profiles", {"name": "thermostat", "config_schema": SCHEMA}
        )
    )["id"]
    for version in ("1.4.2", "1.5.0"):
        body = {
            "profile_id": profile,
            "name": "thermostat-fw",
            "version": version,
            "content": base64.b64encode(version.encode()).decode(),
        }
        await demo.call("POST", "/api/v1/files", body)
    names = ["hall", "kitchen", "garage", "attic", "office", "lab"]
    ids = {
        n: await demo.device(profile, f"{n}-thermostat", f"TH-{1000 + i}")
        for i, n in enumerate(names)
    }
    for n, fw in zip(names, ["1.5.0", "1.5.0", "1.4.2", "1.4.2", "1.5.0", "1.4.2"], strict=True):
        await demo.firmware(ids[n], fw)
    eco = await demo.call(
        "POST",
        "/api/v1/config-artefacts",
        {"name": "thermostat", "profile_id": profile, "content": {"setpoint": 19, "mode": "eco"}},
    )
    comfort = await demo.call(
        "POST",
        "/api/v1/config-artefacts",
        {
            "name": "thermostat",
            "profile_id": profile,
            "content": {"setpoint": 21.5, "mode": "heat"},
        },
    )
    group = await demo.call(
        "POST", "/api/v1/device-groups", {"name": "building A", "device_ids": list(ids.values())}
    )
    bind = {"target_type": "device_group", "target_id": group["id"], "artefact_id": eco["id"]}
    await demo.call("PUT", "/api/v1/desired-state-bindings", bind)
    bind = {"target_type": "device", "target_id": ids["hall"], "artefact_id": comfort["id"]}
    await demo.call("PUT", "/api/v1/desired-state-bindings", bind)
    await demo.telemetry_history(ids["hall"])

    outcomes = {
        "hall": "ACCEPTED",
        "kitchen": "IN_PROGRESS",
        "attic": "REJECTED",
        "lab": "ACCEPTED",
    }
    for name, status in outcomes.items():
        client = await stack.enter_async_context(demo.connected(ids[name]))
        extra = (
            {"message": "setpoint 19 is below this room's minimum"} if status == "REJECTED" else {}
        )
        await report(client, ids[name], status, **extra)
    async with demo.connected(ids["office"]) as office:
        await report(office, ids["office"], "FAILED", message="flash write failed")
    hall = await stack.enter_async_context(demo.connected(ids["hall"]))
    await hall_commands(demo, hall, ids["hall"])
    return ids["hall"]


async def hall_commands(demo: Demo, hall: aiomqtt.Client, device_id: str) -> None:
    path = f"/api/v1/devices/{device_id}/commands"
    await demo.call("POST", path, {"type": "REBOOT"})
    await ack(hall, device_id, "ACKNOWLEDGED", "SUCCESS")
    files = await demo.call("GET", "/api/v1/files")
    newest = max(files["items"], key=lambda f: f["version"])
    await demo.call("POST", path, {"type": "UPDATE_FIRMWARE", "params": {"file_id": newest["id"]}})
    await ack(hall, device_id, "ACKNOWLEDGED")
    await demo.call("POST", path, {"type": "UPDATE_CONFIG"})
    await ack(hall, device_id, "FAILED")
    await demo.call("POST", path, {"type": "REBOOT", "timeout_s": 600})


async def shoot(page: Page, base: str, device_id: str, out: Path) -> None:
    await page.goto(f"{base}/signin")
    await page.fill("#token", TOKEN)
    await page.click("button[type=submit]")
    await page.wait_for_selector("#devices tbody tr >> nth=5")
    await page.wait_for_selector("#live.on")
    await page.screenshot(path=out / "devices.png", full_page=True)
    for tab, ready in (
        ("overview", "#chart svg"),
        ("commands", "#command-list tbody tr >> nth=4"),
        ("configuration", "#slots tbody tr .reported .badge"),
    ):
        await page.goto(f"{base}/default/devices/{device_id}#{tab}")
        await page.wait_for_selector(ready)
        await page.wait_for_selector("#live.on")
        if tab == "overview":
            await page.select_option("#chart-key", "temperature")
            await page.wait_for_selector("#chart svg[aria-label^=temperature]")
        await page.screenshot(path=out / f"device-{tab}.png", full_page=True)


async def main(out: Path) -> None:
    with tempfile.TemporaryDirectory() as data:
        config = Config(data=data, http="127.0.0.1:0", mqtt="127.0.0.1:0", admin_token=TOKEN)
        async with (
            app.start(config) as service,
            aiohttp.ClientSession() as http,
            contextlib.AsyncExitStack() as stack,
        ):
            device_id = await build_fleet(Demo(http, service), stack)
            async with async_playwright() as playwright:
                browser = await playwright.chromium.launch(
                    executable_path=CHROMIUM, args=CHROMIUM_ARGS, timeout=30_000
                )
                page = await browser.new_page(viewport={"width": 1280, "height": 800})
                page.set_default_timeout(WAIT * 1000)
                await shoot(page, service.http_url, device_id, out)
                await browser.close()
    print(f"screenshots in {out}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("docs/screenshots"))
    target = parser.parse_args().out
    target.mkdir(parents=True, exist_ok=True)
    asyncio.run(main(target))
