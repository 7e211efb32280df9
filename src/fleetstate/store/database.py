"""SQLite through aiosqlite: a reader connection and a single writer that commits in batches.

Every write is a job, a coroutine function taking the writer connection. Jobs queue up; the writer
takes as many as are waiting (up to `batch_max`), runs each inside its own SAVEPOINT of one
`BEGIN IMMEDIATE` transaction, commits once and then resolves each job's future. So a thousand
reports arriving together cost one fsync, and a failing job rolls back only itself.
aiosqlite serialises statements but not transactions, which is why nothing else ever writes.

Reads share one connection, and a SQLite connection keeps one read snapshot while any of its
statements is active. Concurrent readers interleaving cursors would keep a statement active all
the time, so the snapshot would never advance and reads would stop seeing commits. Hence each
single read runs start to finish in one hop to aiosqlite's thread, and multi-statement reads hold
a lock for their own read transaction.
"""

import asyncio
import logging
import sqlite3
from collections.abc import Awaitable, Callable, Iterable
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite

from fleetstate.errors import StoreClosed

log = logging.getLogger(__name__)

T = TypeVar("T")
Connection = aiosqlite.Connection
WriteJob = Callable[[aiosqlite.Connection], Awaitable[T]]
_Pending = tuple[WriteJob[Any], asyncio.Future[Any]]

_PRAGMAS = (
    "PRAGMA journal_mode=WAL",
    "PRAGMA synchronous=NORMAL",
    "PRAGMA foreign_keys=ON",
    "PRAGMA busy_timeout=5000",
)


class Store:
    """Owns the connections. Use `Store.open()`, run `writer_loop()` as a task, `close()` last."""

    def __init__(self, path: Path, writer: Connection, reader: Connection, batch_max: int) -> None:
        self.path = path
        self._writer = writer
        self._reader = reader
        self._batch_max = batch_max
        self._queue: asyncio.Queue[_Pending | None] = asyncio.Queue()
        self._closed = False
        self._stopped = asyncio.Event()
        self._read_lock = asyncio.Lock()
        self.commits = 0
        self.jobs_committed = 0

    @classmethod
    async def open(cls, path: Path, batch_max: int = 512) -> "Store":
        path.parent.mkdir(parents=True, exist_ok=True)
        writer = await _connect(path)
        try:
            await _migrate(writer)
            reader = await _connect(path)
        except BaseException:
            await writer.close()
            raise
        await reader.execute("PRAGMA query_only=1")
        return cls(path, writer, reader, batch_max)

    # -- reads -------------------------------------------------------------------------------

    async def fetchall(self, sql: str, params: Iterable[Any] = ()) -> list[sqlite3.Row]:
        self._check_open()
        async with self._read_lock:
            rows = await self._reader.execute_fetchall(sql, tuple(params))
        return list(rows)

    async def fetchone(self, sql: str, params: Iterable[Any] = ()) -> sqlite3.Row | None:
        rows = await self.fetchall(sql, params)
        return rows[0] if rows else None

    async def read(self, job: "WriteJob[T]") -> T:
        """Run a multi-statement read in one read transaction (a consistent snapshot)."""
        self._check_open()
        async with self._read_lock:
            await self._reader.execute("BEGIN")
            try:
                return await job(self._reader)
            finally:
                await self._reader.execute("COMMIT")

    # -- writes ------------------------------------------------------------------------------

    def submit(self, job: WriteJob[T]) -> "asyncio.Future[T]":
        """Queue a write; the future resolves after the transaction holding it committed."""
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
        conn = self._writer
        outcomes: list[tuple[bool, Any]] = []
        await conn.execute("BEGIN IMMEDIATE")
        try:
            for job, _future in batch:
                outcomes.append(await _run_in_savepoint(conn, job))
            await conn.execute("COMMIT")
        except Exception as exc:
            log.exception("commit of %d writes failed", len(batch))
            await _rollback(conn)
            for _job, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        self.commits += 1
        self.jobs_committed += len(batch)
        for (_job, future), (ok, value) in zip(batch, outcomes, strict=True):
            if future.done():
                continue
            if ok:
                future.set_result(value)
            else:
                future.set_exception(value)

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
        await self._reader.close()
        await self._writer.close()

    def _check_open(self) -> None:
        if self._closed:
            raise StoreClosed


async def _run_in_savepoint(conn: Connection, job: WriteJob[Any]) -> tuple[bool, Any]:
    await conn.execute("SAVEPOINT job")
    try:
        value = await job(conn)
    except Exception as exc:  # noqa: BLE001 - the job's own error goes to its own caller
        await conn.execute("ROLLBACK TO job")
        await conn.execute("RELEASE job")
        return False, exc
    await conn.execute("RELEASE job")
    return True, value


async def _rollback(conn: Connection) -> None:
    try:
        await conn.execute("ROLLBACK")
    except sqlite3.Error:
        log.exception("rollback failed")


async def _connect(path: Path) -> Connection:
    conn = await aiosqlite.connect(path, isolation_level=None)
    conn.row_factory = sqlite3.Row
    for pragma in _PRAGMAS:
        await conn.execute(pragma)
    return conn


def _migrations() -> list[tuple[int, str, str]]:
    found = []
    folder = resources.files("fleetstate.store") / "migrations"
    for entry in folder.iterdir():
        name = entry.name
        if name.endswith(".sql"):
            found.append((int(name.split("_", 1)[0]), name, entry.read_text()))
    return sorted(found)


async def _migrate(conn: Connection) -> None:
    """Apply numbered migrations newer than `PRAGMA user_version`, each in its own transaction."""
    async with conn.execute("PRAGMA user_version") as cursor:
        row = await cursor.fetchone()
    current = int(row[0]) if row else 0
    for number, name, script in _migrations():
        if number <= current:
            continue
        log.info("applying migration %s", name)
        await conn.executescript(f"BEGIN;\n{script}\nPRAGMA user_version={number};\nCOMMIT;")
