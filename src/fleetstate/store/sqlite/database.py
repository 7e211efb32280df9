"""SQLite: a reader connection and a single writer that commits in batches, each in its own thread.

Every write is a job, a coroutine function taking a `Connection`. Jobs queue up; the writer takes
as many as are waiting (up to `batch_max`), runs each inside its own SAVEPOINT of one
`BEGIN IMMEDIATE` transaction, commits once and then resolves each job's future. So a thousand
reports arriving together cost one commit, and a failing job rolls back only itself. Nothing else
ever writes, so transactions never interleave.

The whole batch runs in the writer's thread in one hop (see `connection`): one thread hop per
statement, aiosqlite's way, cost two GIL hand-offs each, and under load every hand-off waited
behind the busy event loop, so the writer spent its time waiting, not writing. Reads are grouped
the same way: whatever reads (`fetchall`, `query`) are waiting run together in one hop and one
read transaction, whose snapshot is taken after each of them was asked for.

A SQLite connection keeps one read snapshot while any of its statements is active. `read` (a
read that may await other things between statements) hops per statement and holds the read lock
for its own transaction, so no other read ever runs inside its snapshot.
"""

import asyncio
import contextlib
import functools
import logging
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Iterable
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

from fleetstate.errors import StoreClosed
from fleetstate.store.sqlite.connection import (
    ConnectionThread,
    HopConnection,
    Row,
    SyncConnection,
    WriteJob,
    drive,
)

__all__ = ["SqliteStore"]
log = logging.getLogger(__name__)

T = TypeVar("T")
READ_GRACE_S = 5.0
READ_BATCH_MAX = 256
SWITCH_INTERVAL_S = 0.001
"""The store's threads drop the GIL at every SQLite call and need it back within microseconds;
with CPython's default 5 ms switch interval each time they wait behind the busy event loop
(measured: MQTT telemetry 1,800/s at 5 ms, 3,400/s at 1 ms; docs/benchmarks.md). A process-wide
knob, so the composition root (`app.start`) sets it, not the store."""


class _Later:
    """A queued write whose job is made when the writer takes it."""

    def __init__(self, make: Callable[[], WriteJob[Any]]) -> None:
        self.make = make


_Pending = tuple[WriteJob[Any] | _Later, asyncio.Future[Any]]
_Outcome = tuple[bool, Any, Any]
"""A job's (succeeded, value or exception, the effects it recorded if it succeeded)."""

EffectsScope = Callable[[], contextlib.AbstractContextManager[Any]]
"""Makes the context each write job runs in; what it yields is what the job recorded for after
its commit. The store keeps it only if the job committed and hands it to `after_commit`; what
it is, the store does not know (the composition root passes `service.outbox.job_scope`)."""


def _records_nothing() -> contextlib.AbstractContextManager[Any]:
    return contextlib.nullcontext(None)


_Read = tuple[Callable[[sqlite3.Connection], Any], asyncio.Future[Any]]


class SqliteStore:
    """The `store.Store` port on SQLite. Owns the connections: `async with
    SqliteStore.running(path) as store:` opens it and runs its writer until the block ends; or
    `SqliteStore.open()`, run `writer_loop()` as a task, `close()` last.
    """

    def __init__(
        self,
        path: Path,
        writer: ConnectionThread,
        reader: ConnectionThread,
        batch_max: int,
        effects: EffectsScope = _records_nothing,
    ) -> None:
        self.path = path
        self._writer = writer
        self._reader = reader
        self._batch_max = batch_max
        self._queue: asyncio.Queue[_Pending | None] = asyncio.Queue()
        self._closed = False
        self._stopped = asyncio.Event()
        self._read_lock = asyncio.Lock()
        self._reads: list[_Read] = []
        self._reading: asyncio.Task[None] | None = None
        self.commits = 0
        self.jobs_committed = 0
        self.on_commit: Callable[[int, float], None] | None = None
        """Told of each committed batch: (jobs in it, seconds from taking it to the commit)."""
        self.effects_scope = effects
        """The context each write job runs in, collecting its after-commit effects."""
        self.after_commit: Callable[[Any], asyncio.Future[None] | None] | None = None
        """Given, after each commit and before the jobs' callers resume, the effects each
        committed job recorded (the `outbox.Outbox`); a job that rolled back recorded none. If
        it returns a future (effects the caller must see done), that job's caller resumes once
        the future is done; the writer goes on meanwhile."""

    @classmethod
    async def open(
        cls, path: Path, batch_max: int = 512, effects: EffectsScope = _records_nothing
    ) -> "SqliteStore":
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)  # the data dir: ours alone
        writer, reader = ConnectionThread("store-writer"), ConnectionThread("store-reader")
        try:
            await writer.open(path)
            await writer.call(_migrate, writer.raw)
            await reader.open(path, "PRAGMA query_only=1")
        except BaseException:
            await reader.close()
            await writer.close()
            raise
        return cls(path, writer, reader, batch_max, effects)

    @classmethod
    @contextlib.asynccontextmanager
    async def running(
        cls, path: Path, batch_max: int = 512, effects: EffectsScope = _records_nothing
    ) -> AsyncIterator["SqliteStore"]:
        """The store with its writer running; on the way out what is queued is committed, the
        store closes, and a writer that crashed raises here."""
        store = await cls.open(path, batch_max, effects)
        writer = asyncio.create_task(store.writer_loop(), name="store-writer")
        try:
            yield store
        finally:
            await store.close()
            if not writer.done():
                writer.cancel()  # close() gave up waiting for it
            await asyncio.wait([writer])
            if not writer.cancelled():
                writer.result()

    # -- reads -------------------------------------------------------------------------------

    async def fetchall(self, sql: str, params: Iterable[Any] = ()) -> list[Row]:
        return await self._read_soon(functools.partial(_fetchall, sql=sql, params=tuple(params)))

    async def fetchone(self, sql: str, params: Iterable[Any] = ()) -> Row | None:
        rows = await self.fetchall(sql, params)
        return rows[0] if rows else None

    async def query(self, job: WriteJob[T]) -> T:
        """A multi-statement read that only awaits its connection: one consistent snapshot,
        run with the other waiting reads in one hop to the reader's thread."""
        result: T = await self._read_soon(functools.partial(_query, job=job))
        return result

    def _read_soon(self, fn: Callable[[sqlite3.Connection], T]) -> "asyncio.Future[T]":
        self._check_open()
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._reads.append((fn, future))
        if self._reading is None or self._reading.done():
            self._reading = asyncio.create_task(self._read_batches(), name="store-reads")
        return future

    async def _read_batches(self) -> None:
        """Run the waiting reads in batches until none wait. Started by the first read that
        finds no batch running; every read awaits its own future, so none is left behind."""
        async with self._read_lock:
            while self._reads:
                batch = self._reads[:READ_BATCH_MAX]
                del self._reads[:READ_BATCH_MAX]
                if self._closed:
                    _settle(batch, None, StoreClosed())
                    continue
                try:
                    outcomes = await self._reader.call(
                        _read_batch, self._reader.raw, [fn for fn, _future in batch]
                    )
                except Exception as exc:  # noqa: BLE001 - e.g. BEGIN failed: every read hears it
                    _settle(batch, None, exc)
                    continue
                _settle(batch, outcomes, None)

    async def read(self, job: WriteJob[T]) -> T:
        """A multi-statement read in one read transaction (a consistent snapshot); it may await
        other things between statements."""
        self._check_open()
        async with self._read_lock:
            self._check_open()  # closed while waiting for the lock
            await self._reader.call(self._reader.raw.execute, "BEGIN")
            try:
                return await job(HopConnection(self._reader))
            finally:
                await self._reader.call(self._reader.raw.execute, "COMMIT")

    # -- writes ------------------------------------------------------------------------------

    def submit(self, job: WriteJob[T]) -> "asyncio.Future[T]":
        """Queue a write; the future resolves after the transaction holding it committed."""
        return self._enqueue(job)

    def submit_later(self, make: Callable[[], WriteJob[T]]) -> "asyncio.Future[T]":
        """Queue a write whose job is made only when the writer takes it into a batch, on the
        event loop: whatever its maker gathered meanwhile goes into it (`telemetry.Recorder`
        writes every message that arrived while the writer was busy in one job)."""
        return self._enqueue(_Later(make))

    def _enqueue(self, job: WriteJob[T] | _Later) -> "asyncio.Future[T]":
        self._check_open()
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((job, future))
        return future

    async def write(self, job: WriteJob[T]) -> T:
        return await self.submit(job)

    async def writer_loop(self) -> None:
        """The one writer. Returns after `close()` once every queued job is committed."""
        try:
            while True:
                first = await self._queue.get()
                if first is None:
                    return
                batch = [first]
                stop = False
                while len(batch) < self._batch_max and not self._queue.empty():
                    item = self._queue.get_nowait()
                    if item is None:
                        stop = True
                        break
                    batch.append(item)
                await self._commit(batch)
                if stop:
                    return
        finally:
            self._stopped.set()

    async def _commit(self, batch: list[_Pending]) -> None:
        started = time.perf_counter()
        try:
            jobs = [job.make() if isinstance(job, _Later) else job for job, _future in batch]
            done = await self._writer.call(_commit_now, self._writer.raw, jobs, self.effects_scope)
        except Exception as exc:
            log.exception("commit of %d writes failed", len(batch))
            _settle(batch, None, exc)  # nothing committed: no job's effects fire
            return
        self.commits += 1
        self.jobs_committed += len(batch)
        if self.on_commit is not None:
            self.on_commit(len(batch), time.perf_counter() - started)
        waits = self._dispatch([effects for _ok, _value, effects in done])
        outcomes = [(ok, value) for ok, value, _effects in done]
        now = [i for i, wait in enumerate(waits) if wait is None]
        _settle([batch[i] for i in now], [outcomes[i] for i in now], None)
        for i, wait in enumerate(waits):
            if wait is not None:  # this job's caller resumes once its awaited effects are done
                wait.add_done_callback(functools.partial(_settle_after, batch[i], outcomes[i]))

    def _dispatch(self, recorded: list[Any]) -> list["asyncio.Future[None] | None"]:
        """Each job's after-commit effects; what each job's caller must wait for, if anything."""
        if self.after_commit is None:
            return [None] * len(recorded)
        return [self.after_commit(effects) if effects else None for effects in recorded]

    # -- lifecycle ---------------------------------------------------------------------------

    async def close(self) -> None:
        """Stop taking writes, let the writer commit what is queued, close. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._queue.put_nowait(None)
        try:
            await asyncio.wait_for(self._stopped.wait(), timeout=30)
        except TimeoutError:
            log.warning("writer did not finish within 30 s; closing anyway")
        try:
            async with asyncio.timeout(READ_GRACE_S), self._read_lock:
                await self._reader.close()  # after the read in progress, if any
        except TimeoutError:
            log.warning("a read did not finish within %.0f s; closing anyway", READ_GRACE_S)
            await self._reader.close()
        await self._writer.close()

    def _check_open(self) -> None:
        if self._closed:
            raise StoreClosed


# -- what runs in the connections' threads -------------------------------------------------------


def _settle(
    batch: list[tuple[Any, "asyncio.Future[Any]"]],
    outcomes: list[tuple[bool, Any]] | None,
    failure: BaseException | None,
) -> None:
    """Resolve each future with its own outcome, or every one of them with `failure`."""
    for i, (_work, future) in enumerate(batch):
        if future.done():
            continue
        if outcomes is None:
            future.set_exception(failure or RuntimeError("no outcome"))
            continue
        ok, value = outcomes[i]
        if ok:
            future.set_result(value)
        else:
            future.set_exception(value)


def _settle_after(
    pending: tuple[Any, "asyncio.Future[Any]"], outcome: tuple[bool, Any], _done: Any
) -> None:
    _settle([pending], [outcome], None)


def _fetchall(raw: sqlite3.Connection, sql: str, params: tuple[Any, ...]) -> list[Row]:
    return list(raw.execute(sql, params).fetchall())


def _query(raw: sqlite3.Connection, job: WriteJob[T]) -> T:
    return drive(job(SyncConnection(raw)))


def _read_batch(
    raw: sqlite3.Connection, reads: list[Callable[[sqlite3.Connection], Any]]
) -> list[tuple[bool, Any]]:
    """Reads in one transaction: one snapshot, taken now, after each was asked for."""
    raw.execute("BEGIN")
    try:
        return [_attempt(read, raw) for read in reads]
    finally:
        raw.execute("COMMIT")


def _attempt(
    read: Callable[[sqlite3.Connection], Any], raw: sqlite3.Connection
) -> tuple[bool, Any]:
    try:
        return True, read(raw)
    except Exception as exc:  # noqa: BLE001 - the read's own error goes to its own caller
        return False, exc


def _commit_now(
    raw: sqlite3.Connection, jobs: list[WriteJob[Any]], scope: EffectsScope
) -> list[_Outcome]:
    conn = SyncConnection(raw)
    raw.execute("BEGIN IMMEDIATE")
    try:
        outcomes = [_in_savepoint(raw, conn, job, scope) for job in jobs]
        raw.execute("COMMIT")
    except BaseException:
        _rollback(raw)
        raise
    return outcomes


def _in_savepoint(
    raw: sqlite3.Connection, conn: SyncConnection, job: WriteJob[Any], scope: EffectsScope
) -> _Outcome:
    """Run one job in its own savepoint, recording its after-commit effects; a job that
    raised is rolled back, and so is what it recorded."""
    raw.execute("SAVEPOINT job")
    try:
        with scope() as effects:
            value = drive(job(conn))
    except Exception as exc:  # noqa: BLE001 - the job's own error goes to its own caller
        raw.execute("ROLLBACK TO job")
        raw.execute("RELEASE job")
        return False, exc, None
    raw.execute("RELEASE job")
    return True, value, effects


def _rollback(raw: sqlite3.Connection) -> None:
    try:
        raw.execute("ROLLBACK")
    except sqlite3.Error:
        log.exception("rollback failed")


def _migrations() -> list[tuple[int, str, str]]:
    found = []
    folder = resources.files("fleetstate.store.sqlite") / "migrations"
    for entry in folder.iterdir():
        name = entry.name
        if name.endswith(".sql"):
            found.append((int(name.split("_", 1)[0]), name, entry.read_text()))
    return sorted(found)


def _migrate(raw: sqlite3.Connection) -> None:
    """Apply numbered migrations newer than `PRAGMA user_version`, each in its own transaction."""
    current = int(raw.execute("PRAGMA user_version").fetchone()[0])
    for number, name, script in _migrations():
        if number <= current:
            continue
        log.info("applying migration %s", name)
        raw.executescript(f"BEGIN;\n{script}\nPRAGMA user_version={number};\nCOMMIT;")
        # A migration may rewrite schema text in place (writable_schema); a new schema cookie
        # makes every connection, this one included, parse the schema again.
        cookie = int(raw.execute("PRAGMA schema_version").fetchone()[0])
        raw.execute(f"PRAGMA schema_version = {cookie + 1}")
