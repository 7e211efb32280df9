"""What the service keeps on disk is readable by its own user only: the data directory is made
0700, the database with its WAL and shared-memory files and the token files 0600, whatever the
umask, and a database left world-readable by an older version is tightened at start."""

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import msgspec
import pytest

from conftest import Api, make_config
from fleetstate import app


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def permissive_umask() -> Iterator[None]:
    """umask 0: any mode that is not chosen explicitly would come out world-readable."""
    previous = os.umask(0)
    try:
        yield
    finally:
        os.umask(previous)


@pytest.mark.usefixtures("permissive_umask")
async def test_file_modes_data_dir_is_0700_and_its_secrets_0600(tmp_path: Path) -> None:
    data = tmp_path / "data"
    settings = msgspec.structs.replace(make_config(data), admin_token=None)
    async with app.start(settings) as service, aiohttp.ClientSession() as session:
        token = (data / "admin-token").read_text().strip()
        api = Api(session, service.http_url, token)
        await api.ok("POST", "/api/v1/tokens", {"name": "a write"}, status=201)
        assert mode(data) == 0o700
        database = data / "fleetstate.db"
        companions = [database.with_name(database.name + s) for s in ("-wal", "-shm")]
        assert all(path.exists() for path in companions)
        for path in [database, *companions, data / "admin-token"]:
            assert mode(path) == 0o600, path
        # Whatever else lives there (blob signing key, blobs) is behind the 0700 directory.
        assert [p.name for p in data.iterdir() if p.is_file() and mode(p) & 0o077] == []


@pytest.mark.usefixtures("permissive_umask")
async def test_file_modes_world_readable_database_is_tightened_at_start(tmp_path: Path) -> None:
    data = tmp_path / "data"
    async with app.start(make_config(data)):
        pass
    database = data / "fleetstate.db"
    database.chmod(0o644)
    async with app.start(make_config(data)):
        assert mode(database) == 0o600
        wal = database.with_name(database.name + "-wal")
        assert mode(wal) == 0o600
