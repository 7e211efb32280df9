"""A simulated device that only speaks the device HTTP API (SPEC section 4).

It polls: telemetry every interval, whose answer says the desired version and whether a command
waits; then it fetches and reports the configuration (`GET`/`POST /config`) and takes and answers
commands (`GET`/`POST /command`), with the same behaviour as an MQTT device.
"""

import asyncio
import random
from typing import Any

import aiohttp
import msgspec

from fleetstate.simulator.device import (
    Command,
    Context,
    Device,
    Document,
    encoder,
    telemetry_body,
)
from fleetstate.simulator.options import DeviceSpec

HTTP_ERRORS = (aiohttp.ClientError, TimeoutError, msgspec.DecodeError)
_XYTE_STATUS = {"ACKNOWLEDGED": "in_progress", "SUCCESS": "done", "FAILED": "failed"}


class HttpStatusError(Exception):
    def __init__(self, method: str, path: str, status: int) -> None:
        super().__init__(f"{method} {path} answered {status}")
        self.status = status


class TelemetryAnswer(msgspec.Struct, frozen=True):
    config_version: int
    command: bool


class ConfigAnswer(msgspec.Struct, frozen=True):
    desired: Document
    """The desired-state document beside Xyte's `config` view (its hashes make the reports)."""


class HttpDevice(Device):
    async def run(self) -> None:
        settings = self.ctx.settings
        interval = settings.telemetry_interval or settings.http_poll_interval
        try:
            await asyncio.sleep(random.uniform(0, min(interval, 1.0)))  # noqa: S311 - jitter
            while True:
                try:
                    await self.poll()
                except (*HTTP_ERRORS, HttpStatusError) as exc:
                    self.up = False
                    self.ctx.stats.error("http", exc)
                await asyncio.sleep(interval)
        finally:
            self.cancel_tasks()

    async def poll(self) -> None:
        if self.ctx.settings.telemetry_interval > 0:
            answer = await self.send_telemetry("seq")
            version, waiting = answer.config_version, answer.command
        else:
            version, waiting = None, True
        if not self.up:
            self.up = True
            self.ctx.stats.count("connects")
            self.ctx.stats.event("connected", self.spec.id, "", "")
        if version is None or version > self.answered:
            await self._sync_config()
        if waiting:
            await self._take_commands()

    async def send_telemetry(self, key: str) -> TelemetryAnswer:
        body = await post_telemetry(self.ctx, self, key)
        return msgspec.json.decode(body, type=TelemetryAnswer)

    async def _sync_config(self) -> None:
        doc = msgspec.json.decode(await self.request("GET", "/config"), type=ConfigAnswer).desired
        if not self.wants(doc):
            return
        progress, final = self.reports(doc)
        await self.request("POST", "/config", encoder.encode(progress))
        if self.ctx.settings.apply_delay:
            await asyncio.sleep(self.ctx.settings.apply_delay)
        await self.request("POST", "/config", encoder.encode(final))
        self.applied(doc, final)

    async def _take_commands(self) -> None:
        while body := await self.request("GET", "/command"):
            command = msgspec.json.decode(body, type=dict[str, Any])
            taken = Command(id=command["id"], type=command["name"])
            if not self.wants_command(taken):
                return  # a silent device leaves it SENT, and asks again next time
            first, final = self.command_answers(taken)
            for ack in (first, final):
                answer = {"id": ack.id, "status": _XYTE_STATUS[ack.status], "message": ack.message}
                await self.request("POST", "/command", encoder.encode(answer))
            self.command_done(taken, final)

    async def request(self, method: str, path: str, body: bytes | None = None) -> bytes:
        return await request(self.ctx, self.spec, method, path, body)


async def request(
    ctx: Context, spec: DeviceSpec, method: str, path: str, body: bytes | None = None
) -> bytes:
    """One request authenticated with the device's key; the body of a 2xx answer (empty for
    204). Any device may use it: MQTT devices send HTTP telemetry through it in benchmarks."""
    url = f"{ctx.settings.http_url}/v1/devices/{spec.id}{path}"
    headers = {"Authorization": spec.key, "Content-Type": "application/json"}
    async with ctx.http.request(method, url, data=body, headers=headers) as response:
        data = await response.read()
        ctx.stats.count("http_requests")
        if response.status >= 300:
            raise HttpStatusError(method, path, response.status)
        return data


async def post_telemetry(ctx: Context, device: Device, key: str) -> bytes:
    ctx.stats.count("telemetry_sent")
    body = await request(
        ctx, device.spec, "POST", "/telemetry", telemetry_body(key, device.next_seq())
    )
    ctx.stats.count("telemetry_acked")
    return body
