"""`fleetstate token create` from the shell: refused, with a clear error and nothing made, for a
data directory without a database or an organization that does not exist."""

import asyncio
import sys
from pathlib import Path

from fleetstate import app
from fleetstate.store.sqlite import SqliteStore

WAIT = 30.0


async def token_create(data: Path, org: str = "default") -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "fleetstate",
        "token",
        "create",
        "--org",
        org,
        "--data",
        str(data),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(WAIT):
        out, err = await proc.communicate()
    assert not out, out  # no token printed
    assert proc.returncode is not None
    return proc.returncode, err.decode()


async def test_token_create_in_an_empty_directory_is_refused_and_creates_nothing(
    tmp_path: Path,
) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    code, err = await token_create(empty)
    assert code == 2
    assert str(empty) in err
    assert "no fleetstate database" in err
    assert list(empty.iterdir()) == []


async def test_token_create_in_a_missing_directory_is_refused_and_creates_nothing(
    tmp_path: Path,
) -> None:
    missing = tmp_path / "typo" / "data"
    code, err = await token_create(missing)
    assert code == 2
    assert str(missing) in err
    assert not (tmp_path / "typo").exists()


async def test_token_create_for_an_unknown_org_fails_clearly(tmp_path: Path) -> None:
    # A database without that org. `running` starts the writer, so closing does not wait out
    # the 30 s a writer that never ran is given.
    async with SqliteStore.running(tmp_path / app.DATABASE):
        pass
    code, err = await token_create(tmp_path, org="nope")
    assert code == 2
    assert "nope" in err
