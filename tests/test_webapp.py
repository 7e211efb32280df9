"""The web app in a real browser: Debian's headless Chromium driven by Playwright, against the real
service and real MQTT devices. Session and CSRF rules are also checked with a plain HTTP client."""

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from playwright.async_api import Browser, Page, async_playwright, expect

from conftest import ADMIN_TOKEN, WAIT, Api, Device, DeviceFactory, Fleet
from fleetstate.app import Service

CHROMIUM = Path("/usr/bin/chromium")
# No sandbox (CI runs as root), no GPU, and nothing that reaches for the network by itself.
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
WAIT_MS = WAIT * 1000
COOKIE = "fleetstate_session"
EVIL = "<script>alert(1)</script><img src=x onerror=alert(2)>"
expect.set_options(timeout=WAIT_MS)


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    if not CHROMIUM.exists():
        pytest.fail("these tests need Chromium: apt-get install -y chromium (.ci/run does)")
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, timeout=30_000
        )
        try:
            yield launched
        finally:
            await launched.close()


@pytest.fixture
async def page(browser: Browser, service: Service) -> AsyncIterator[Page]:
    """A fresh browser context; fails the test on any uncaught script error or dialog."""
    context = await browser.new_context(base_url=service.http_url)
    context.set_default_timeout(WAIT_MS)
    opened = await context.new_page()
    problems: list[str] = []
    opened.on("pageerror", lambda error: problems.append(f"script error: {error}"))

    def dialog(shown: Any) -> None:
        problems.append(f"dialog: {shown.message}")
        asyncio.ensure_future(shown.dismiss())  # noqa: RUF006 - a dismissed dialog needs no result

    opened.on("dialog", dialog)
    yield opened
    await context.close()
    assert problems == []


async def sign_in(page: Page, token: str = ADMIN_TOKEN) -> None:
    await page.goto("/signin")
    await page.fill("#token", token)
    await page.click("form[action='/signin'] button[type=submit]")


async def open_device(page: Page, device_id: str, tab: str) -> None:
    """Open a device's page on a tab, once its event stream is connected."""
    await page.goto(f"/default/devices/{device_id}")
    await page.click(f"#tab-{tab}")
    await expect(page.locator("#live")).to_have_text("live")


@contextlib.asynccontextmanager
async def session(service: Service, token: str | None = ADMIN_TOKEN) -> AsyncIterator[Any]:
    """A plain HTTP client holding the session cookie (none when `token` is None)."""
    jar = aiohttp.CookieJar(unsafe=True)  # the service listens on an IP address
    async with aiohttp.ClientSession(base_url=service.http_url, cookie_jar=jar) as http:
        if token is not None:
            body = {"token": token}
            async with http.post("/signin", data=body, allow_redirects=False) as answer:
                assert answer.status == 303
        yield http


async def firmware(api: Api, device_id: str, key: str, version: str) -> None:
    headers = {"Authorization": key}
    body = {"firmware_version": version}
    async with api.session.put(
        f"{api.base}/v1/devices/{device_id}", json=body, headers=headers
    ) as answer:
        assert answer.status == 200, await answer.text()


async def report(device: Device, doc: dict[str, Any], status: str) -> None:
    configs = [
        {"slot": c["slot"], "artefact_id": c["artefact_id"], "hash": c["hash"], "status": status}
        for c in doc["configs"]
    ]
    await device.publish(
        "reported", {"version": doc["version"], "status": status, "configs": configs}
    )


# -- sign-in -------------------------------------------------------------------------------------


async def test_webapp_signin_keeps_a_session_in_an_httponly_strict_cookie(
    page: Page, service: Service
) -> None:
    await page.goto("/default/devices")
    await expect(page).to_have_url(re.compile(r"/signin\?next=/default/devices$"))
    await page.fill("#token", ADMIN_TOKEN)
    await page.click("form[action='/signin'] button[type=submit]")
    await expect(page).to_have_url(f"{service.http_url}/default/devices")
    (cookie,) = await page.context.cookies()
    assert cookie["name"] == COOKIE
    assert cookie["value"] != ADMIN_TOKEN  # a server-side session, never the token itself
    assert (cookie["httpOnly"], cookie["sameSite"], cookie["secure"]) == (True, "Strict", False)
    assert await page.evaluate("document.cookie") == ""
    stored = "localStorage.length + sessionStorage.length"
    assert await page.evaluate(stored) == 0

    await page.click("#signout")
    await expect(page).to_have_url(f"{service.http_url}/signin")
    assert await page.context.cookies() == []
    await page.goto("/default/devices")
    await expect(page).to_have_url(re.compile(r"/signin\?next="))
    # Signing out ended the session on the server: the old cookie, replayed, is refused.
    await page.context.add_cookies([{**cookie}])
    assert len(await page.context.cookies()) == 1
    await page.goto("/default/devices")
    await expect(page).to_have_url(re.compile(r"/signin\?next="))


async def test_webapp_signin_refuses_a_wrong_token(page: Page, service: Service) -> None:
    await sign_in(page, "not-a-token")
    await expect(page.locator("#signin-error")).to_have_text("That token was not accepted.")
    assert await page.context.cookies() == []
    async with (
        session(service, None) as http,
        http.post("/signin", data={"token": "wrong"}, allow_redirects=False) as answer,
    ):
        assert answer.status == 401
        assert COOKIE not in answer.cookies


async def test_webapp_signin_and_signout_refuse_posts_from_another_site(service: Service) -> None:
    async with session(service, None) as http:
        for headers in ({"Origin": "http://evil.example"}, {"Sec-Fetch-Site": "cross-site"}):
            body = {"token": ADMIN_TOKEN}
            async with http.post("/signin", data=body, headers=headers) as answer:
                assert answer.status == 403
                assert COOKIE not in answer.cookies
            async with http.post("/signout", headers=headers) as answer:
                assert answer.status == 403


async def test_webapp_signin_only_redirects_within_the_site(service: Service) -> None:
    async with session(service, None) as http:
        for target, expected in (
            ("//evil.example/x", "/default/devices"),
            ("https://evil.example/", "/default/devices"),
            ("/x\r\nSet-Cookie: a=b", "/default/devices"),
            ("/default/devices?q=hall", "/default/devices?q=hall"),
        ):
            body = {"token": ADMIN_TOKEN, "next": target}
            async with http.post("/signin", data=body, allow_redirects=False) as answer:
                assert (answer.status, answer.headers["Location"]) == (303, expected)


# -- organizations, CSRF, escaping -----------------------------------------------------------------


async def test_webapp_other_organizations_pages_and_devices_are_not_shown(
    api: Api, fleet: Fleet, service: Service
) -> None:
    acme = await api.ok("POST", "/api/v1/organizations", {"slug": "acme", "name": "Acme"})
    foreign = Fleet(api.as_token(acme["token"]))
    foreign_id, _ = await foreign.device(await foreign.profile(), name="acme-secret")
    own_id, _ = await fleet.device(await fleet.profile(), name="ours")
    async with session(service) as http:
        for path in (
            "/acme/devices",
            f"/acme/devices/{foreign_id}",
            f"/default/devices/{foreign_id}",
        ):
            async with http.get(path, allow_redirects=False) as answer:
                assert answer.status == 404, path
                assert "acme-secret" not in await answer.text()
        async with http.get(f"/default/devices/{own_id}") as answer:
            assert answer.status == 200
        async with http.get(f"/api/v1/devices/{foreign_id}") as answer:
            assert answer.status == 404
        async with http.get("/api/v1/devices") as answer:
            assert [d["id"] for d in (await answer.json())["items"]] == [own_id]
    async with (
        session(service, None) as http,
        http.get("/acme/devices", allow_redirects=False) as answer,
    ):
        assert (answer.status, answer.headers["Location"]) == (303, "/signin?next=/acme/devices")


async def test_webapp_cookie_event_stream_is_limited_to_the_organization(
    api: Api, fleet: Fleet, service: Service, connect: DeviceFactory
) -> None:
    acme = await api.ok("POST", "/api/v1/organizations", {"slug": "acme", "name": "Acme"})
    foreign = Fleet(api.as_token(acme["token"]))
    foreign_id, foreign_key = await foreign.device(await foreign.profile())
    own_id, own_key = await fleet.device(await fleet.profile())
    async with session(service) as http, http.get("/api/v1/events?types=presence") as answer:
        assert answer.status == 200
        assert (await answer.content.readline()).startswith(b": connected")
        async with connect(foreign_id, foreign_key), connect(own_id, own_key):
            async with asyncio.timeout(WAIT):
                while not (line := await answer.content.readline()).startswith(b"data: "):
                    pass
    assert own_id.encode() in line
    assert foreign_id.encode() not in line


async def test_webapp_cookie_writes_need_the_csrf_header_and_bearer_is_unchanged(
    api: Api, fleet: Fleet, service: Service
) -> None:
    device_id, _ = await fleet.device(await fleet.profile())
    path = f"/api/v1/devices/{device_id}/commands"
    async with session(service) as http:
        async with http.post(path, json={"type": "REBOOT"}) as answer:
            assert answer.status == 403
            assert (await answer.json())["error"]["code"] == "forbidden"
        # What a cross-site form can send: a simple POST with the browser's cookie.
        form = {"type": "REBOOT"}
        async with http.post(path, data=form, headers={"Origin": "http://evil.example"}) as answer:
            assert answer.status == 403
        assert await api.ok("GET", path) == {"items": [], "next_cursor": None}
        async with http.post(
            path, json={"type": "REBOOT"}, headers={"X-Fleetstate-CSRF": "1"}
        ) as answer:
            assert answer.status == 201
        async with http.get(path) as answer:
            assert answer.status == 200  # reads need no header
        # A present Authorization header decides, whatever the cookie says.
        bad = {"Authorization": "Bearer wrong", "X-Fleetstate-CSRF": "1"}
        async with http.post(path, json={"type": "REBOOT"}, headers=bad) as answer:
            assert answer.status == 401
    assert (await api.call("POST", path, {"type": "REBOOT"}))[0] == 201
    assert (await api.as_token("").call("POST", path, {"type": "REBOOT"}))[0] == 401


async def test_webapp_escapes_device_names(
    page: Page, api: Api, fleet: Fleet, service: Service
) -> None:
    device_id, _ = await fleet.device(await fleet.profile(), name=EVIL, serial=EVIL)
    async with session(service) as http, http.get(f"/default/devices/{device_id}") as answer:
        text = await answer.text()
    assert "<script>alert" not in text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    await sign_in(page)
    link = page.locator("#devices a.device-name")
    await expect(link).to_have_text(EVIL)
    await link.click()
    await expect(page.locator("#device-name")).to_have_text(EVIL)
    await expect(page.locator("#facts")).to_contain_text(EVIL)  # the serial
    await expect(page).to_have_title(f"{EVIL} · fleetstate")
    assert await page.locator("main script, main img").count() == 0


async def test_webapp_static_files_and_page_headers(service: Service) -> None:
    async with session(service) as http:
        async with http.get("/static/app.css") as answer:
            assert answer.status == 200
            assert answer.content_type == "text/css"
            etag = answer.headers["ETag"]
        async with http.get("/static/app.css", headers={"If-None-Match": etag}) as answer:
            assert answer.status == 304
        for missing in ("/static/nope.js", "/static/..%2Fapi%2Fwebapp.py"):
            async with http.get(missing) as answer:
                assert answer.status == 404
        async with http.get("/default/devices") as answer:
            assert "script-src 'self'" in answer.headers["Content-Security-Policy"]
            assert answer.headers["Cache-Control"] == "no-store"


# -- the pages -------------------------------------------------------------------------------------


async def test_webapp_device_list_shows_presence_firmware_convergence_and_searches(
    page: Page, api: Api, fleet: Fleet, connect: DeviceFactory
) -> None:
    profile = await fleet.profile()
    hall, hall_key = await fleet.device(profile, name="hall")
    kitchen, kitchen_key = await fleet.device(profile, name="kitchen", serial="K-1")
    await firmware(api, hall, hall_key, "1.4.2")
    async with connect(hall, hall_key) as device:
        await report(device, await device.desired(), "ACCEPTED")
        await sign_in(page)
        rows = page.locator("#devices tbody tr")
        hall_row, kitchen_row = rows.filter(has_text="hall"), rows.filter(has_text="kitchen")
        await expect(hall_row.locator(".presence .badge")).to_have_text("online")
        await expect(hall_row).to_contain_text("1.4.2")
        await expect(hall_row.locator(".config .badge")).to_have_text("ACCEPTED")
        await expect(kitchen_row.locator(".presence .badge")).to_have_text("offline")
        await expect(kitchen_row.locator(".config .badge")).to_have_text("PENDING")
        await expect(page.locator("#counts")).to_contain_text("ACCEPTED 1")
        await expect(page.locator("#counts")).to_contain_text("PENDING 1")
        await expect(page.locator("#online")).to_have_text("1")
        await expect(page.locator("#live")).to_have_text("live")
        async with connect(kitchen, kitchen_key):  # presence changes arrive without a reload
            await expect(kitchen_row.locator(".presence .badge")).to_have_text("online")
            await expect(page.locator("#online")).to_have_text("2")
    await page.fill("#q", "K-1")
    await expect(rows).to_have_count(1)
    await expect(rows.first).to_contain_text("kitchen")
    await expect(page).to_have_url(re.compile(r"\?q=K-1$"))
    await expect(page.locator("#total")).to_have_text("1")


async def test_webapp_reboot_lifecycle_updates_live_as_the_device_acks(
    page: Page, fleet: Fleet, connect: DeviceFactory
) -> None:
    device_id, key = await fleet.device(await fleet.profile(), name="hall")
    async with connect(device_id, key) as device:
        await sign_in(page)
        await open_device(page, device_id, "commands")
        await page.evaluate("window.notReloaded = true")
        await page.select_option("#command-type", "REBOOT")
        await page.click("#send-button")
        _topic, command = await device.next("commands")
        assert command["type"] == "REBOOT"
        row = page.locator(f"#command-list tr[data-id='{command['id']}']")
        await expect(row.locator(".status")).to_have_text("SENT")
        await device.publish("commands/ack", {"id": command["id"], "status": "ACKNOWLEDGED"})
        await expect(row.locator(".status")).to_have_text("ACKNOWLEDGED")
        await expect(row.locator("[data-step=ACKNOWLEDGED] time")).to_have_count(1)
        ack = {"id": command["id"], "status": "SUCCESS", "message": "rebooted"}
        await device.publish("commands/ack", ack)
        await expect(row.locator(".status")).to_have_text("SUCCESS")
        await expect(row.locator("[data-step=SUCCESS] time")).to_have_count(1)
        await expect(row.locator(".message")).to_have_text("rebooted")
        assert await page.evaluate("window.notReloaded") is True


async def test_webapp_bind_and_unbind_from_the_commands_tab_converge(
    page: Page, fleet: Fleet, connect: DeviceFactory
) -> None:
    profile = await fleet.profile()
    device_id, key = await fleet.device(profile, name="hall")
    await fleet.artefact(profile, {"setpoint": 20})
    newer = await fleet.artefact(profile, {"setpoint": 21})
    other = await fleet.profile("other")
    await fleet.artefact(other, {"setpoint": 22}, name="for-another-profile")
    async with connect(device_id, key) as device:
        first = await device.desired()
        await sign_in(page)
        await open_device(page, device_id, "commands")
        await page.select_option("#command-type", "BIND_CONFIG")
        options = await page.locator("#artefact option").all_inner_texts()
        assert [o.split(" · ")[0] for o in options] == ["thermostat v2", "thermostat v1"]
        await page.select_option("#artefact", newer["id"])
        await page.click("#send-button")
        doc = await device.desired(first["version"] + 1)
        assert [c["artefact_id"] for c in doc["configs"]] == [newer["id"]]
        row = page.locator("#command-list tr[data-type=BIND_CONFIG]")
        await expect(row.locator(".status")).to_have_text("SENT")
        await expect(page.locator("#config-status")).to_have_text("PENDING")
        await report(device, doc, "ACCEPTED")
        await expect(row.locator(".status")).to_have_text("SUCCESS")
        await expect(page.locator("#config-status")).to_have_text("ACCEPTED")
        await page.click("#tab-configuration")
        slot = page.locator("#slots tr[data-slot=device]")
        await expect(slot.locator(".reported .badge")).to_have_text("ACCEPTED")
        await expect(slot.locator(".reported")).to_contain_text("matches")
        await expect(slot).to_contain_text("thermostat v2")
        await expect(slot).not_to_contain_text("thermostat v1")

        await page.click("#tab-commands")
        await page.select_option("#command-type", "UNBIND_CONFIG")
        await expect(page.locator("#unbind option")).to_have_text(["thermostat v2 (device)"])
        await page.click("#send-button")
        unbound = await device.desired(doc["version"] + 1)
        assert unbound["configs"] == []
        unbind_row = page.locator("#command-list tr[data-type=UNBIND_CONFIG]")
        await expect(unbind_row.locator(".status")).to_have_text("SENT")
        await report(device, unbound, "ACCEPTED")
        await expect(unbind_row.locator(".status")).to_have_text("SUCCESS")
    await page.click("#tab-configuration")
    await expect(page.locator("#slots-empty")).to_be_visible()


async def test_webapp_configuration_explains_why_the_binding_won(page: Page, fleet: Fleet) -> None:
    profile = await fleet.profile()
    device_id, _ = await fleet.device(profile, name="hall")
    group = await fleet.group("floor one", [device_id])
    await fleet.bind("device_group", group, (await fleet.artefact(profile, {"setpoint": 19}))["id"])
    chosen = await fleet.artefact(profile, {"setpoint": 23})
    await fleet.bind("device", device_id, chosen["id"])
    await sign_in(page)
    await open_device(page, device_id, "configuration")
    slot = page.locator("#slots tr[data-slot=device]")
    await expect(slot).to_contain_text("thermostat v2")
    await expect(slot).to_contain_text("device binding")
    losers = slot.locator(".candidates li")
    await expect(losers).to_have_count(1)
    why = re.compile(r"thermostat v1 by group binding .floor one.: a device binding is more spec")
    await expect(losers).to_contain_text(why)
    await expect(slot.locator(".reported .badge")).to_have_text("PENDING")
    await expect(slot).to_contain_text(chosen["hash"][:19])


async def test_webapp_overview_shows_telemetry_and_charts_it_live(
    page: Page, api: Api, fleet: Fleet, connect: DeviceFactory
) -> None:
    device_id, key = await fleet.device(await fleet.profile(), name="hall")
    await firmware(api, device_id, key, "2.0.1")
    async with connect(device_id, key) as device:
        for value in (20.5, 21.0):
            body = {"status": "online", "telemetries": {"temperature": value, "mode": "auto"}}
            await device.publish("telemetry", body)
        await sign_in(page)
        await open_device(page, device_id, "overview")
        facts = page.locator("#facts")
        await expect(facts).to_contain_text("online")
        await expect(facts).to_contain_text("2.0.1")
        temperature = page.locator("#telemetry tr[data-key=temperature] td").nth(1)
        await expect(temperature).to_have_text("21")
        await expect(page.locator("#telemetry tr[data-key=mode]")).to_contain_text("auto")
        await expect(page.locator("#chart-key")).to_have_value("temperature")
        points = page.locator("#chart svg circle")
        await expect(points).to_have_count(2)
        await device.publish(
            "telemetry", {"status": "online", "telemetries": {"temperature": 23.5}}
        )
        await expect(temperature).to_have_text("23.5")
        await expect(points).to_have_count(3)
