"""The README, run as written: its serve command's flags, and the walk-through's shell blocks
pasted into bash against a real `fleetstate serve` (mosquitto-clients, curl and jq), so the
README cannot drift from the service. And every link of the README and docs/ stays inside the
repository and finds its target."""

import asyncio
import json
import re
import shutil
import sys
from pathlib import Path
from typing import Any

from test_serve import serve

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
LINK = re.compile(r"\]\(([^)\s]+)\)")
# The one form each default address takes in the walk-through; the test points them at the
# ports the service bound.
API_LINE = "API=http://127.0.0.1:8080/api/v1"
MQTT_PORT_LINE = "MQTT_PORT=1883"
WALK_THROUGH_S = 60.0


def section(title: str) -> str:
    """The README's `## title` section, up to the next `## ` heading."""
    text = README.read_text()
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else len(text)]


def sh_blocks(text: str) -> list[str]:
    return re.findall(r"^```sh\n(.*?)^```$", text, re.DOTALL | re.MULTILINE)


def json_values(output: str) -> list[Any]:
    """Every JSON value the commands printed, in order (pretty or compact, glued or not)."""
    decoder, values, at = json.JSONDecoder(), [], 0
    while (at := _skip_space(output, at)) < len(output):
        value, at = decoder.raw_decode(output, at)
        values.append(value)
    return values


def _skip_space(text: str, at: int) -> int:
    while at < len(text) and text[at].isspace():
        at += 1
    return at


def walk_through_script(http_url: str, mqtt_port: int) -> str:
    script = "\n".join(sh_blocks(section("A five-minute walk-through")))
    assert script.count(API_LINE) == 1, f"the walk-through sets the API once as {API_LINE}"
    assert script.count(MQTT_PORT_LINE) == 1, f"the walk-through sets {MQTT_PORT_LINE} once"
    script = script.replace(API_LINE, f"API={http_url}/api/v1")
    script = script.replace(MQTT_PORT_LINE, f"MQTT_PORT={mqtt_port}")
    leftover = re.findall(r".*\b(?:8080|1883)\b.*", script)
    assert not leftover, f"a default address outside the first lines: {leftover}"
    return script


async def test_readme_serve_command_lists_real_flags() -> None:
    block = sh_blocks(section("Two commands"))[0].strip()
    assert block.endswith(".venv/bin/fleetstate serve"), block
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "fleetstate", "serve", "--help", stdout=asyncio.subprocess.PIPE
    )
    async with asyncio.timeout(30):
        help_text = (await proc.communicate())[0].decode()
    assert proc.returncode == 0
    sentence = section("Two commands").split("lists the flags", 1)[1].split(";", 1)[0]
    flags = re.findall(r"--[a-z-]+", sentence)
    assert flags, sentence
    for flag in flags:
        assert flag in help_text, f"README lists {flag}, `serve --help` does not"


async def test_readme_walk_through_runs_as_written(tmp_path: Path) -> None:
    missing = [tool for tool in ("bash", "curl", "jq", "mosquitto_sub") if not shutil.which(tool)]
    assert not missing, f"the walk-through needs {missing} (.ci/run installs them)"
    # No FLEETSTATE_ADMIN_TOKEN: the walk-through reads the generated data/admin-token.
    async with serve(tmp_path / "data", env={"FLEETSTATE_ADMIN_TOKEN": ""}) as running:
        script = tmp_path / "walk-through.sh"
        script.write_text(walk_through_script(running.http_url, running.mqtt_port))
        proc = await asyncio.create_subprocess_exec(
            "bash",
            "-euo",
            "pipefail",
            str(script),
            cwd=tmp_path,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        async with asyncio.timeout(WALK_THROUGH_S):
            out, err = await proc.communicate()
    output = out.decode()
    assert proc.returncode == 0, f"the walk-through failed:\n{output}\n{err.decode()}"
    values = json_values(output)
    refused, first_doc, bound, second_doc = values[:4]
    assert refused["code"] == "schema_invalid", refused
    assert refused["details"][0]["path"] == "$.setpoint", refused
    assert (first_doc["version"], first_doc["configs"]) == (1, []), first_doc
    assert bound["counts"] == {"PENDING": 1}, bound
    assert second_doc["version"] == 2, second_doc
    assert second_doc["configs"][0]["hash"] == bound["desired_hash"], second_doc
    counts, slots, device = values[-3:]
    assert counts == {"ACCEPTED": 1}, output
    assert slots[0]["slot"] == "device", slots
    assert device["config_status"] == "ACCEPTED", device
    assert (device["desired_version"], device["reported_version"]) == (2, 2), device


def anchors(path: Path) -> set[str]:
    """GitHub's anchors for a Markdown file's headings."""
    headings = re.findall(r"^#+ (.+)$", path.read_text(), re.MULTILINE)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}


def test_docs_links_stay_inside_the_repository() -> None:
    for page in [README, *sorted((ROOT / "docs").glob("*.md"))]:
        for target in LINK.findall(page.read_text()):
            if re.match(r"https?://", target):
                continue
            file_part, _, anchor = target.partition("#")
            path = (page.parent / file_part).resolve() if file_part else page
            assert path.is_relative_to(ROOT), f"{page.name}: {target} leaves the repository"
            assert path.exists(), f"{page.name}: {target} does not exist"
            if anchor:
                assert anchor in anchors(path), f"{page.name}: {target} names no heading"
