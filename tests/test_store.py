"""The store: group commit, savepoint isolation of failing writes, reads that see commits."""

import asyncio
from pathlib import Path

import pytest

from fleetstate.errors import Conflict, StoreClosed
from fleetstate.store import Connection, Store


@pytest.fixture
async def store(tmp_path: Path):  # type: ignore[no-untyped-def]
    async with Store.running(tmp_path / "db.sqlite") as opened:
        yield opened


def _insert(slug: str):  # type: ignore[no-untyped-def]
    async def job(conn: Connection) -> None:
        await conn.execute(
            "INSERT INTO organizations (id, slug, name, created_at) VALUES (?, ?, 'n', 'now')",
            (slug, slug),
        )

    return job


async def test_store_concurrent_writes_share_commits(store: Store) -> None:
    await asyncio.gather(*(store.write(_insert(f"o{i}")) for i in range(200)))
    assert store.jobs_committed == 200
    assert store.commits < 20
    rows = await store.fetchall("SELECT count(*) FROM organizations")
    assert rows[0][0] == 200


async def test_store_failing_write_rolls_back_only_itself(store: Store) -> None:
    async def failing(conn: Connection) -> None:
        await conn.execute(
            "INSERT INTO organizations (id, slug, name, created_at) VALUES ('x', 'x', 'n', 'now')"
        )
        raise Conflict("no")

    results = await asyncio.gather(
        store.write(_insert("a")),
        store.write(failing),
        store.write(_insert("b")),
        return_exceptions=True,
    )
    assert isinstance(results[1], Conflict)
    slugs = [r[0] for r in await store.fetchall("SELECT slug FROM organizations ORDER BY slug")]
    assert slugs == ["a", "b"]


async def test_store_reads_see_commits_even_while_another_read_is_open(store: Store) -> None:
    """A read that began before a commit must not make later reads miss that commit."""
    await asyncio.gather(*(store.write(_insert(f"before{i}")) for i in range(200)))
    holding, release = asyncio.Event(), asyncio.Event()

    async def long_read(conn: Connection) -> int:
        seen = 0
        async with conn.execute("SELECT slug FROM organizations") as cur:
            async for _row in cur:  # more rows than one fetch: the statement stays active
                seen += 1
                holding.set()
                await release.wait()
        return seen

    reading = asyncio.create_task(store.read(long_read))
    await holding.wait()
    await store.write(_insert("after"))
    lookup = asyncio.create_task(
        store.fetchone("SELECT slug FROM organizations WHERE slug = 'after'")
    )
    await asyncio.wait({lookup}, timeout=0.3)  # time for a stale answer to show itself
    release.set()
    assert await reading == 200  # its own snapshot
    assert await lookup is not None


async def test_store_closed_store_refuses_work(tmp_path: Path) -> None:
    opened = await Store.open(tmp_path / "db.sqlite")
    writer = asyncio.create_task(opened.writer_loop())
    await opened.close()
    await opened.close()
    await writer
    with pytest.raises(StoreClosed):
        opened.submit(_insert("late"))
    with pytest.raises(StoreClosed):
        await opened.fetchall("SELECT 1")


async def test_store_running_commits_queued_writes_on_exit(tmp_path: Path) -> None:
    async with Store.running(tmp_path / "db.sqlite") as store:
        queued = [store.submit(_insert(f"q{i}")) for i in range(50)]
    assert all(f.done() and f.exception() is None for f in queued)
    with pytest.raises(StoreClosed):
        await store.fetchall("SELECT 1")
    async with Store.running(tmp_path / "db.sqlite") as reopened:
        rows = await reopened.fetchall("SELECT count(*) FROM organizations")
    assert rows[0][0] == 50
