"""Xyte's official device agent against fleetstate, call for call.

The agent is github.com/xyte-io/nodejs-agent (read at commit 934cafd). It cannot run here
unchanged: its provisioning server (`https://entry.xyte.io`) is a constant in
src/helpers/constants.ts and its reboot runs `/sbin/shutdown -r now` (src/todo.ts), with no
configuration to point either elsewhere. So this test makes exactly the agent's HTTP calls, in its
order and shapes, against the real service; each step names the agent file it follows. What the
agent needs of every answer, it gets here too: it parses every response body as JSON
(src/helpers/network.ts), and treats 401/403 as "wipe the state and register again".
"""

import base64
import json
from typing import Any

import aiohttp
import pytest

from conftest import Api, Fleet
from fleetstate.app import Service

# src/helpers/constants.ts: the device's identity (the hardware key comes from our operator).
CLOUD_ID = "QzuaKQNOxgMww6gUTTmD65em"
FIRMWARE_VERSION = "1.0.3"
DEVICE_NAME = "Sample device"
SERIAL_NUMBER = "1000"


class Wiped(Exception):
    """network.ts: a 401/403 cleared the stored state and restarted the process."""


class Agent:
    """The agent's state (`applicationState`: auth, config, licenses), kept across restarts
    the way it keeps it in config.txt (src/helpers/storage.ts)."""

    def __init__(self, session: aiohttp.ClientSession, entry_url: str, hardware_key: str) -> None:
        self.session, self.entry_url, self.hardware_key = session, entry_url, hardware_key
        self.auth: dict[str, Any] | None = None
        self.config: dict[str, Any] | None = None
        self.licenses: list[dict[str, Any]] = []
        self.firmware: Any = None
        self.calls: list[tuple[str, str]] = []

    async def request_api(
        self, url: str, method: str, body: str | None = None, **headers: str
    ) -> Any:
        """network.ts `requestAPI`: fetch, then `.json()` on whatever came back."""
        if body is not None:
            headers["Content-Length"] = str(len(body))
        self.calls.append((method, url.removeprefix(self.entry_url)))
        async with self.session.request(method, url, data=body, headers=headers) as response:
            if response.status in (401, 403):
                self.auth, self.config, self.licenses = None, None, []
                raise Wiped(url)
            text = await response.text()
        return json.loads(text)  # the agent's `rawResponse.json()`: a non-JSON answer breaks it

    def _device(self, tail: str) -> str:
        assert self.auth is not None
        return f"{self.auth['hub_url']}/v1/devices/{self.auth['id']}{tail}"

    def _key(self) -> dict[str, str]:
        assert self.auth is not None
        return {"Authorization": self.auth["access_key"], "Content-Type": "application/json"}

    async def authenticate(self) -> None:
        """authentication.ts: register once, keep id + access_key + hub_url."""
        if self.auth is not None:
            return
        payload = json.dumps(
            {
                "cloud_id": CLOUD_ID,
                "hardware_key": self.hardware_key,
                "firmware_version": FIRMWARE_VERSION,
                "sn": SERIAL_NUMBER,
                "name": DEVICE_NAME,
            }
        )
        answer = await self.request_api(
            f"{self.entry_url}/v1/devices", "POST", payload, **{"Content-Type": "application/json"}
        )
        if answer.get("id"):
            self.auth = answer

    async def notify_server(self) -> dict[str, Any]:
        """scheduler.ts `notifyServerLoop`, one round: telemetry, then config, command, licenses."""
        telemetry = json.dumps(
            {
                "status": "online",
                "telemetries": {
                    "totalMemory": 8_000_000_000,
                    "freeMemory": 4_000_000_000,
                    "usageMemory": 50,
                    "loadAverage": 0.42,
                    "uptime": 12.5,
                    "arch": "x64",
                },
            }
        )
        answer = await self.request_api(
            self._device("/telemetry"), "POST", telemetry, **self._key()
        )
        await self.evaluate_config_version(answer["config_version"])
        if answer["command"]:
            await self.handle_command()
        if answer["new_licenses"]:
            await self.handle_licenses()
        return dict(answer)

    async def evaluate_config_version(self, server_version: int = 0) -> None:
        """config.ts: fetch the config when the server's version is higher, apply it, and post
        the very object it fetched back as its current configuration."""
        if server_version <= (self.config or {}).get("version", 0):
            return
        new_config = await self.request_api(self._device("/config"), "GET", **self._key())
        self.config = new_config
        await self.request_api(
            self._device("/config"), "POST", json.dumps(new_config), **self._key()
        )

    async def handle_command(self) -> None:
        """command.ts: an in_progress command is one this device started before it restarted."""
        command = await self.request_api(self._device("/command"), "GET", **self._key())
        if command["status"] == "in_progress":
            # device.ts getCommandStatusAfterReboot
            result = {"id": command["id"], "status": "done", "message": "Device restart OK"}
            await self.request_api(
                self._device("/command"), "POST", json.dumps(result), **self._key()
            )
            return
        started = json.dumps({"id": command["id"], "status": "in_progress"})
        await self.request_api(self._device("/command"), "POST", started, **self._key())
        result = await self.execute_command(command)
        await self.request_api(self._device("/command"), "POST", json.dumps(result), **self._key())

    async def execute_command(self, command: dict[str, Any]) -> dict[str, Any]:
        """todo.ts `executeCommand`, by Xyte's command names."""
        match command["name"]:
            case "update_firmware":
                return await self.firmware_upgrade(command)
            case "reboot":
                raise Rebooted(command["id"])  # execSync('/sbin/shutdown -r now')
            case "dump":
                return await self.dump(command)
        return {"id": command["id"], "status": "done", "message": "TODO: default case"}

    async def firmware_upgrade(self, command: dict[str, Any]) -> dict[str, Any]:
        """todo.ts `executeFirmwareUpgrade`: GET parameters.url with the access key."""
        version = command["parameters"].get("version") or FIRMWARE_VERSION
        if version == FIRMWARE_VERSION:
            return {"id": command["id"], "status": "done", "message": "already up to date"}
        firmware = await self.request_api(command["parameters"]["url"], "GET", **self._key())
        self.firmware = firmware  # saveFirmwareToStorage
        return {"id": command["id"], "status": "done", "message": f"server firmware {version}"}

    async def dump(self, command: dict[str, Any]) -> dict[str, Any]:
        """todo.ts `executeDump`: the error log as a dump, the standard log appended to it."""
        err_log, std_log = "error log\n", "standard log\n"
        headers = {"Authorization": self._key()["Authorization"], "Content-Type": "text/plain"}
        dump_id = await self.request_api(
            self._device("/dumps/text%2Ftxt/agent.log"), "POST", err_log, **headers
        )
        await self.request_api(self._device(f"/dumps/{dump_id}"), "PUT", std_log, **headers)
        return {"id": command["id"], "status": "done", "message": "uploaded"}

    async def handle_licenses(self) -> None:
        """licenses.ts: add (answer inuse) or remove (answer removed), one after the other."""
        for found in await self.request_api(self._device("/licenses"), "GET", **self._key()):
            if found.get("add"):
                self.licenses.append(found)
                state = {"id": found["id"], "state": "inuse"}
            elif found.get("remove"):
                self.licenses = [x for x in self.licenses if x["id"] != found["id"]]
                state = {"id": found["id"], "state": "removed"}
            else:
                continue
            await self.request_api(
                self._device("/licenses"), "POST", json.dumps(state), **self._key()
            )


class Rebooted(Exception):
    """The device went down in the middle of its reboot command (the process ends)."""


async def _command(api: Api, device_id: str, body: dict[str, Any]) -> str:
    created = await api.ok("POST", f"/api/v1/devices/{device_id}/commands", body, status=201)
    return str(created["id"])


async def _status(api: Api, device_id: str, command_id: str) -> dict[str, Any]:
    return dict(await api.ok("GET", f"/api/v1/devices/{device_id}/commands/{command_id}"))


async def _registered(
    api: Api, profile: str, service: Service, http: aiohttp.ClientSession
) -> tuple[Agent, str]:
    """An agent registered with a new hardware key of `profile`, and its device id."""
    key = (await api.ok("POST", "/api/v1/hardware-keys", {"profile_id": profile}, status=201))[
        "key"
    ]
    agent = Agent(http, service.http_url, key)
    await agent.authenticate()
    assert agent.auth is not None
    return agent, str(agent.auth["id"])


async def test_xyte_agent_registers_converges_reboots_updates_and_licenses(
    api: Api, fleet: Fleet, service: Service, http: aiohttp.ClientSession
) -> None:
    profile = await fleet.profile()
    agent, device_id = await _registered(api, profile, service, http)
    artefact = await fleet.artefact(profile, {"setpoint": 21})
    await fleet.bind("device", device_id, artefact["id"])

    # Round 1: the config converges; the device never loops on it.
    await agent.notify_server()
    assert agent.config is not None
    assert agent.config["config"] == {"setpoint": 21}
    device = await api.ok("GET", f"/api/v1/devices/{device_id}")
    assert (device["config_status"], device["online"]) == ("ACCEPTED", True)
    calls = len(agent.calls)
    await agent.notify_server()
    assert agent.calls[calls:] == [("POST", f"/v1/devices/{device_id}/telemetry")]

    # Reboot: the device goes down after in_progress and, restarted, reports how it ended.
    reboot = await _command(api, device_id, {"type": "REBOOT"})
    with pytest.raises(Rebooted) as down:
        await agent.notify_server()
    assert down.value.args == (reboot,)
    assert (await _status(api, device_id, reboot))["status"] == "ACKNOWLEDGED"
    await agent.authenticate()  # after the restart: already registered, nothing to do
    await agent.notify_server()
    found = await _status(api, device_id, reboot)
    assert (found["status"], found["message"]) == ("SUCCESS", "Device restart OK")

    # Firmware: the agent GETs parameters.url with its key (its demo parses it as JSON).
    firmware = json.dumps({"image": "2.0.0"}).encode()
    uploaded = await _upload(api, profile, "2.0.0", firmware)
    update = await _command(
        api, device_id, {"type": "UPDATE_FIRMWARE", "params": {"file_id": uploaded}}
    )
    await agent.notify_server()
    assert (await _status(api, device_id, update))["status"] == "SUCCESS"
    assert agent.firmware == {"image": "2.0.0"}

    # A license to add, then to remove: new_licenses turns false once each is answered.
    offered = await api.ok(
        "POST", f"/api/v1/devices/{device_id}/licenses", {"data": "pro"}, status=201
    )
    assert (await agent.notify_server())["new_licenses"] is True
    assert [x["id"] for x in agent.licenses] == [offered["id"]]
    assert (await agent.notify_server())["new_licenses"] is False
    await api.ok(
        "POST",
        f"/api/v1/devices/{device_id}/licenses",
        {"id": offered["id"], "action": "remove"},
        status=201,
    )
    await agent.notify_server()
    assert agent.licenses == []
    assert (await agent.notify_server())["new_licenses"] is False


async def test_xyte_agent_dump_command_uploads_a_dump_operators_can_download(
    api: Api, fleet: Fleet, service: Service, http: aiohttp.ClientSession
) -> None:
    profile = await fleet.profile()
    agent, device_id = await _registered(api, profile, service, http)
    dump = await _command(api, device_id, {"type": "DUMP"})
    await agent.notify_server()
    found = await _status(api, device_id, dump)
    assert (found["status"], found["message"]) == ("SUCCESS", "uploaded")
    (item,) = (await api.ok("GET", f"/api/v1/devices/{device_id}/dumps"))["items"]
    assert (item["file_name"], item["content_type"], item["parts"]) == ("agent.log", "text/txt", 2)
    url = f"{api.base}/api/v1/devices/{device_id}/dumps/{item['id']}/content"
    async with http.get(url, headers={"Authorization": f"Bearer {api.token}"}) as answer:
        assert await answer.read() == b"error log\nstandard log\n"


async def test_xyte_agent_comes_back_after_its_key_was_rotated(
    api: Api, fleet: Fleet, service: Service, http: aiohttp.ClientSession
) -> None:
    profile = await fleet.profile()
    agent, device_id = await _registered(api, profile, service, http)
    await agent.notify_server()
    await api.ok("POST", f"/api/v1/devices/{device_id}/access-key")
    with pytest.raises(Wiped):
        await agent.notify_server()
    await agent.authenticate()  # main.ts restarts: nothing stored, so it registers again
    assert agent.auth is not None
    assert agent.auth["id"] == device_id
    await agent.notify_server()
    assert agent.config is not None  # it fetched and echoed its config again, as a new device
    device = await api.ok("GET", f"/api/v1/devices/{device_id}")
    assert device["config_status"] == "ACCEPTED"
    history = (await api.ok("GET", f"/api/v1/devices/{device_id}/history"))["items"]
    assert [h["action"] for h in history] == ["re_registered", "access_key_rotated"]


async def _upload(api: Api, profile_id: str, version: str, content: bytes) -> str:
    body = {
        "profile_id": profile_id,
        "name": "firmware",
        "version": version,
        "content": base64.b64encode(content).decode(),
    }
    return str((await api.ok("POST", "/api/v1/files", body, status=201))["id"])
