"""schemathesis (every check) over the served OpenAPI document, against the running service.

The CLI runs as subprocesses, so the service keeps serving in this test's event loop. Examples
are bounded per operation and the whole run is bounded in time; the event stream never ends, so
its operation is excluded (tests/test_events.py covers it).
"""

import asyncio
import re
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from conftest import ADMIN_TOKEN, Api, make_config
from fleetstate import app
from fleetstate.app import Service
from fleetstate.config import ThrottleConfig

RUN_TIMEOUT = 300.0
MAX_EXAMPLES = "10"
SEED = "20261202"  # a fixed seed: a failure reproduces, and the run is the same on every CI
CONFIG = """
# The largest upload is a deployment setting ([uploads] max_size), not part of the schema: a
# size over it is schema-valid and rightly answers 413.
[[operations]]
include-path = "/api/v1/config-artefacts/upload-url"
checks.positive_data_acceptance.expected-statuses = [
    "2xx", "3xx", "401", "403", "404", "409", "413", "429", "5xx",
]
"""


@pytest.fixture
async def unthrottled(tmp_path: Path) -> AsyncIterator[Service]:
    """The service as the `service` fixture starts it, but with the failed-authentication
    throttle out of reach: schemathesis probes with missing and wrong credentials on purpose,
    and a blocked address would answer 429 to the rest of the run (the throttle has its own
    tests)."""
    settings = make_config(tmp_path / "data", throttle=ThrottleConfig(limit=1_000_000))
    async with app.start(settings) as running:
        yield running


# schemathesis learns ids from the answers it gets, so a run that may revoke API tokens finds
# and revokes the one it sends, and every request after that is a 401: in a single run over
# everything, 2,016 of 3,015 requests came after its own revocation and were refused (60 s of
# scrypt checks), so most operations were never tried authenticated. So the revocation runs
# alone, last, and the other operations run in two processes at once, each with its own token
# (one run is sequential: one worker). Together the runs select every operation but the event
# stream.
REVOKE = "DELETE /api/v1/tokens/{token_id}"
DEVICES = r"^/api/v1/devices(/|$)"
AT_ONCE = (
    ("--include-path-regex", DEVICES),
    ("--exclude-path-regex", DEVICES, "--exclude-name", REVOKE),
)
LAST = ("--include-name", REVOKE)


async def schemathesis(service: Service, token: str, directory: Path, *select: str) -> str:
    """One schemathesis run over the operations `select` picks, which must find no issue: its
    output."""
    directory.mkdir()
    config = directory / "schemathesis.toml"
    config.write_text(CONFIG)
    cli = Path(sys.executable).with_name("schemathesis")
    proc = await asyncio.create_subprocess_exec(
        str(cli),
        "--config-file",
        str(config),
        "run",
        f"{service.http_url}/api/v1/openapi.json",
        *select,
        "--checks",
        "all",
        "--header",
        f"Authorization: Bearer {token}",
        "--max-examples",
        MAX_EXAMPLES,
        "--seed",
        SEED,
        "--phases",
        "examples,coverage,fuzzing",
        "--exclude-path",
        "/api/v1/events",
        "--workers",
        "1",  # hypothesis's lambda descriptions are not thread-safe (a RuntimeError with 2)
        "--no-shrink",
        "--request-timeout",
        "10",
        "--warnings",
        "off",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        cwd=directory,
    )
    try:
        async with asyncio.timeout(RUN_TIMEOUT):
            output, _ = await proc.communicate()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    text = output.decode(errors="replace")
    assert proc.returncode == 0, text[-20000:]
    assert "No issues found" in text, text[-5000:]
    return text


def counts(text: str) -> tuple[int, int, int]:
    """(operations selected, operations in the document, operations tested) of one run."""
    selected = re.search(r"Selected: (\d+)/(\d+)", text)
    tested = re.search(r"Tested: (\d+)", text)
    assert selected, text[-5000:]
    assert tested, text[-5000:]
    return int(selected[1]), int(selected[2]), int(tested[1])


async def test_schemathesis_every_operation_passes_every_check(
    unthrottled: Service, tmp_path: Path
) -> None:
    service = unthrottled
    # Tokens of the default organization, not the operator's, one per run: the operator token's
    # id is `admin` and the revoking run would revoke it too (not what this run is about).
    async with aiohttp.ClientSession() as session:
        api = Api(session, service.http_url, ADMIN_TOKEN)

        async def token(name: str) -> str:
            return str((await api.ok("POST", "/api/v1/tokens", {"name": name}))["token"])

        tokens = [await token(f"schemathesis-{n}") for n in range(len(AT_ONCE))]
        texts = list(
            await asyncio.gather(
                *(
                    schemathesis(service, tokens[n], tmp_path / f"run-{n}", *select)
                    for n, select in enumerate(AT_ONCE)
                )
            )
        )
        # Neither run revoked a token it or the other sent: they were exercised authenticated.
        for sent in tokens:
            assert (await api.as_token(sent).get("/api/v1/organizations/current"))[0] == 200
        texts.append(await schemathesis(service, await token("revoke"), tmp_path / "last", *LAST))
    runs = [counts(text) for text in texts]
    # Every operation but the event stream, in exactly one run, each actually exercised.
    assert {total for _selected, total, _tested in runs} == {runs[0][1]}, texts
    assert all(selected > 0 for selected, _total, _tested in runs), texts
    assert sum(selected for selected, _total, _tested in runs) == runs[0][1] - 1, texts
    assert all(tested == selected for selected, _total, tested in runs), texts


# -- what schemathesis found, each pinned by a plain test ------------------------------------------


async def test_schemathesis_finding_signin_multipart_without_boundary_is_400(
    api: Api,
) -> None:
    headers = {"Content-Type": "multipart/form-data"}
    async with api.session.post(api.base + "/signin", data=b"token=x", headers=headers) as response:
        assert response.status == 400  # was 500


async def test_schemathesis_finding_device_api_errors_have_the_documented_shape(
    api: Api,
) -> None:
    document = await api.ok("GET", "/api/v1/openapi.json")
    flat = document["components"]["schemas"]["DeviceError"]
    assert flat["properties"] == {"error": {"type": "string"}}
    for method, path, template, status in (
        ("GET", "/v1/devices", "/v1/devices", 405),
        ("GET", "/v1/devices/0/config", "/v1/devices/{device_id}/config", 401),
        ("POST", "/v1/devices", "/v1/devices", 400),
    ):
        async with api.session.request(method, api.base + path) as response:
            assert response.status == status, (method, path)
            body = await response.json()
        assert set(body) == {"error"}, body
        assert isinstance(body["error"], str), body
        operation = document["paths"][template].get(method.lower())
        if operation is not None:
            declared = operation["responses"][str(status)]["content"]["application/json"]
            assert declared["schema"] == {"$ref": "#/components/schemas/DeviceError"}
