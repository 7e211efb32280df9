"""SQLite's `Connection`s, and the thread that owns each SQLite connection.

A job is a coroutine function taking a `Connection`. In the writer's (or reader's) own thread it
gets a `SyncConnection`, whose calls complete at once, so `drive()` runs the whole job there in
one go: one thread hop for a batch of jobs instead of one per statement. `Store.read` jobs, which
may await other things between statements, get a `HopConnection` that hops per call instead.
"""

import asyncio
import contextlib
import os
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable, Generator, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from fleetstate.store.connection import Connection, Cursor, Result, Row, WriteJob

__all__ = ["Connection", "Cursor", "Result", "Row", "WriteJob"]

T = TypeVar("T")
PRAGMAS = (
    "PRAGMA journal_mode=WAL",
    "PRAGMA synchronous=NORMAL",
    "PRAGMA foreign_keys=ON",
    "PRAGMA busy_timeout=5000",
)


class _SyncCursor:
    """A cursor whose every call completes at once: it runs in the connection's thread."""

    def __init__(self, cursor: sqlite3.Cursor) -> None:
        self._cursor = cursor

    @property
    def rowcount(self) -> int:
        return self._cursor.rowcount

    async def fetchone(self) -> Row | None:
        row: Row | None = self._cursor.fetchone()
        return row

    async def fetchall(self) -> list[Row]:
        return list(self._cursor.fetchall())

    async def __aiter__(self) -> AsyncIterator[Row]:
        for row in self._cursor:
            yield row


class _Done:
    """An already finished `Result`."""

    def __init__(self, cursor: sqlite3.Cursor) -> None:
        self._cursor = cursor

    def __await__(self) -> Generator[Any, None, Cursor]:
        return _SyncCursor(self._cursor)
        yield  # a generator that returns at once

    async def __aenter__(self) -> Cursor:
        return _SyncCursor(self._cursor)

    async def __aexit__(self, *exc: object) -> None:
        self._cursor.close()


class SyncConnection:
    """The `Connection` a job gets in the connection's own thread."""

    def __init__(self, raw: sqlite3.Connection) -> None:
        self._raw = raw

    def execute(self, sql: str, parameters: Any = ()) -> Result:
        return _Done(self._raw.execute(sql, parameters))

    async def executemany(self, sql: str, parameters: Iterable[Any]) -> Cursor:
        return _SyncCursor(self._raw.executemany(sql, parameters))


def drive(awaitable: Awaitable[T]) -> T:
    """Run a job that only awaits a `_SyncConnection` to its end, here and now."""
    steps = awaitable.__await__()
    try:
        waited = steps.send(None)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]
    steps.close()
    raise RuntimeError(f"a store job awaited {waited!r}; jobs may only await their connection")


# -- one connection, one thread ------------------------------------------------------------------


class ConnectionThread:
    """A SQLite connection and the one thread that ever touches it."""

    def __init__(self, name: str) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
        self._raw: sqlite3.Connection | None = None

    @property
    def raw(self) -> sqlite3.Connection:
        assert self._raw is not None
        return self._raw

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    async def open(self, path: Path, *extra: str) -> None:
        self._raw = await self.call(_connect, path, (*PRAGMAS, *extra))

    async def close(self) -> None:
        try:
            if self._raw is not None:
                await self.call(self._raw.close)
        finally:
            self._pool.shutdown(wait=False)


PRIVATE_FILE = 0o600
"""The database, its WAL and shared-memory files: readable by the service's user only."""
_COMPANIONS = ("", "-wal", "-shm", "-journal")


def make_private(path: Path) -> None:
    """Create the database file 0600 before SQLite does (it gives -wal and -shm the database
    file's mode) and tighten an existing database and its companion files to 0600."""
    os.close(os.open(path, os.O_RDWR | os.O_CREAT, PRIVATE_FILE))
    for suffix in _COMPANIONS:
        with contextlib.suppress(FileNotFoundError):
            os.chmod(path.with_name(path.name + suffix), PRIVATE_FILE)


def _connect(path: Path, pragmas: tuple[str, ...]) -> sqlite3.Connection:
    make_private(path)
    conn = sqlite3.connect(path, isolation_level=None)
    conn.row_factory = sqlite3.Row
    for pragma in pragmas:
        conn.execute(pragma)
    return conn


class _HopCursor:
    """A cursor of `Store.read`: each call hops to the reader's thread."""

    def __init__(self, thread: ConnectionThread, cursor: sqlite3.Cursor) -> None:
        self._thread, self._cursor = thread, cursor

    @property
    def rowcount(self) -> int:
        return self._cursor.rowcount

    async def fetchone(self) -> Row | None:
        row: Row | None = await self._thread.call(self._cursor.fetchone)
        return row

    async def fetchall(self) -> list[Row]:
        return list(await self._thread.call(self._cursor.fetchall))

    async def __aiter__(self) -> AsyncIterator[Row]:
        while rows := await self._thread.call(self._cursor.fetchmany, 100):
            for row in rows:
                yield row


class _HopResult:
    def __init__(self, thread: ConnectionThread, sql: str, parameters: Any) -> None:
        self._thread, self._sql, self._parameters = thread, sql, parameters
        self._cursor: sqlite3.Cursor | None = None

    async def _run(self) -> Cursor:
        self._cursor = await self._thread.call(
            self._thread.raw.execute, self._sql, self._parameters
        )
        return _HopCursor(self._thread, self._cursor)

    def __await__(self) -> Generator[Any, None, Cursor]:
        return self._run().__await__()

    async def __aenter__(self) -> Cursor:
        return await self._run()

    async def __aexit__(self, *exc: object) -> None:
        if self._cursor is not None:
            await self._thread.call(self._cursor.close)


class HopConnection:
    def __init__(self, thread: ConnectionThread) -> None:
        self._thread = thread

    def execute(self, sql: str, parameters: Any = ()) -> Result:
        return _HopResult(self._thread, sql, parameters)

    async def executemany(self, sql: str, parameters: Iterable[Any]) -> Cursor:
        raw = self._thread.raw
        return _HopCursor(self._thread, await self._thread.call(raw.executemany, sql, parameters))
