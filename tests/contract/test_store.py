"""The Store port on every backend: group commit, a savepoint per job, futures resolved after the
commit, after-commit effects only for committed jobs, a clear error once closed, migrations.

A backend is one `pytest.param` of `opener`: a function that opens a running store on a fresh,
durable database (`reopen` opens the same one again). A PostgreSQL param would start a real
server on a free loopback port and hand out one database per test.
"""

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from conftest import WAIT
from fleetstate.errors import Conflict, StoreClosed
from fleetstate.service import outbox
from fleetstate.service.desired import DesiredChange
from fleetstate.store import Connection, Store, WriteJob
from fleetstate.store.sqlite import SqliteStore

Opener = Callable[[], contextlib.AbstractAsyncContextManager[Store]]


def _sqlite(tmp_path: Path) -> Opener:
    return lambda: SqliteStore.running(tmp_path / "db.sqlite")


BACKENDS = [pytest.param(_sqlite, id="sqlite")]


@pytest.fixture(params=BACKENDS)
def opener(request: pytest.FixtureRequest, tmp_path: Path) -> Opener:
    make: Callable[[Path], Opener] = request.param
    return make(tmp_path)


@pytest.fixture
async def store(opener: Opener) -> AsyncIterator[Store]:
    async with asyncio.timeout(WAIT), opener() as opened:
        yield opened


def _insert(slug: str) -> WriteJob[None]:
    async def job(conn: Connection) -> None:
        await conn.execute(
            "INSERT INTO organizations (id, slug, name, created_at) VALUES (?, ?, 'n', 'now')",
            (slug, slug),
        )

    return job


async def _slugs(store: Store) -> list[str]:
    rows = await store.fetchall("SELECT slug FROM organizations ORDER BY slug")
    return [str(r[0]) for r in rows]


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
    assert await _slugs(store) == ["a", "b"]


async def test_store_future_resolves_with_the_jobs_value_once_readers_see_it(
    store: Store,
) -> None:
    async def insert_and_count(conn: Connection) -> int:
        await _insert("counted")(conn)
        cursor = await conn.execute("SELECT count(*) FROM organizations")
        row = await cursor.fetchone()
        assert row is not None
        return int(row[0])

    async with asyncio.timeout(WAIT):
        assert await store.submit(insert_and_count) == 1
        # Resolved after the commit: a read asked for now sees the row.
        assert await store.fetchone("SELECT slug FROM organizations WHERE slug = ?", ("counted",))


async def test_store_submit_later_makes_its_job_when_the_writer_takes_it(store: Store) -> None:
    gathered: list[str] = []

    def make() -> WriteJob[int]:
        taken = list(gathered)  # what arrived while the job waited in the queue

        async def job(conn: Connection) -> int:
            for slug in taken:
                await _insert(slug)(conn)
            return len(taken)

        return job

    async with asyncio.timeout(WAIT):
        future = store.submit_later(make)
        gathered.extend(["late1", "late2"])  # after submitting, before the writer ran
        assert await future == 2
    assert await _slugs(store) == ["late1", "late2"]


async def test_store_query_and_read_see_one_snapshot(store: Store) -> None:
    await asyncio.gather(*(store.write(_insert(f"s{i}")) for i in range(5)))

    async def two_counts(conn: Connection) -> tuple[int, int]:
        counts = []
        for _ in range(2):
            cursor = await conn.execute("SELECT count(*) FROM organizations")
            row = await cursor.fetchone()
            assert row is not None
            counts.append(int(row[0]))
        return counts[0], counts[1]

    async with asyncio.timeout(WAIT):
        assert await store.query(two_counts) == (5, 5)
        assert await store.read(two_counts) == (5, 5)


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


def _recording(device_id: str, fail: bool) -> WriteJob[str]:
    async def job(conn: Connection) -> str:
        await _insert(device_id)(conn)
        outbox.deliver([DesiredChange(device_id=device_id, version=1, document=b"{}")])
        if fail:
            raise Conflict("after recording")
        return device_id

    return job


async def test_store_after_commit_sees_committed_jobs_before_their_callers_resume(
    store: Store,
) -> None:
    fired: list[str] = []
    store.effects_scope = outbox.job_scope  # what the service runs each write job in
    store.after_commit = lambda effects: fired.extend(c.device_id for c in effects.deliveries)
    async with asyncio.timeout(WAIT):
        # Submitted together: one batch, each job in its own savepoint.
        futures = [store.submit(_recording(d, d == "failed")) for d in ("a", "failed", "b")]
        first = await futures[0]
        # Every effect of the batch was dispatched before the first caller resumed.
        assert fired == ["a", "b"]
        assert first == "a"
        with pytest.raises(Conflict):
            await futures[1]
        assert await futures[2] == "b"
    assert await _slugs(store) == ["a", "b"]


async def test_store_closed_store_refuses_work(opener: Opener) -> None:
    async with asyncio.timeout(WAIT), opener() as store:
        await store.close()
        await store.close()  # idempotent
        with pytest.raises(StoreClosed):
            store.submit(_insert("late"))
        with pytest.raises(StoreClosed):
            await store.fetchall("SELECT 1")
        with pytest.raises(StoreClosed):
            await store.query(_insert("never"))


async def test_store_commits_queued_writes_on_exit_and_reopen_keeps_them(opener: Opener) -> None:
    async with asyncio.timeout(WAIT):
        async with opener() as store:
            queued = [store.submit(_insert(f"q{i}")) for i in range(50)]
        assert all(f.done() and f.exception() is None for f in queued)
        with pytest.raises(StoreClosed):
            await store.fetchall("SELECT 1")
        async with opener() as reopened:
            rows = await reopened.fetchall("SELECT count(*) FROM organizations")
    assert rows[0][0] == 50


async def test_store_opens_with_every_migration_applied_once(opener: Opener) -> None:
    # The newest migration's tables exist; opening again applies nothing twice (a second
    # CREATE TABLE would fail) and keeps what was written.
    async with asyncio.timeout(WAIT):
        async with opener() as store:
            await store.write(_insert("kept"))
            await store.fetchall("SELECT count(*) FROM web_sessions")
        async with opener() as reopened:
            assert await _slugs(reopened) == ["kept"]
