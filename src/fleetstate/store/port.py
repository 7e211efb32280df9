"""The store port: what the use cases ask of a database, whatever backend holds it.

Use cases take a `Store` and never name a backend. Reads and writes are jobs (coroutine
functions taking a `Connection`) built from the backend-neutral query modules in
`store/queries/`; a backend supplies the connections, the one writer path and the group commit.
`store/sqlite/database.SqliteStore` is the one implementation; `tests/contract/test_store.py`
is the contract every implementation must pass.
"""

import asyncio
from collections.abc import Callable, Iterable
from typing import Any, Protocol, TypeVar

from fleetstate.store.connection import Row, WriteJob

T = TypeVar("T")


class Store(Protocol):
    commits: int
    """Committed transactions so far (a gauge for `/metrics`)."""
    jobs_committed: int
    on_commit: Callable[[int, float], None] | None
    """Told of each committed batch: (jobs in it, seconds from taking it to the commit)."""
    after_commit: Callable[[Any], "asyncio.Future[None] | None"] | None
    """Given each committed job's recorded effects (the outbox), before the job's caller
    resumes; a returned future holds back that caller only."""

    async def fetchall(self, sql: str, params: Iterable[Any] = ()) -> list[Row]: ...

    async def fetchone(self, sql: str, params: Iterable[Any] = ()) -> Row | None: ...

    async def query(self, job: WriteJob[T]) -> T:
        """A read that only awaits its connection, in one consistent snapshot."""
        ...

    async def read(self, job: WriteJob[T]) -> T:
        """A read that may await other things between statements, in one snapshot."""
        ...

    def submit(self, job: WriteJob[T]) -> "asyncio.Future[T]":
        """Queue a write; the future resolves after the transaction holding it committed."""
        ...

    def submit_later(self, make: Callable[[], WriteJob[T]]) -> "asyncio.Future[T]":
        """Queue a write whose job is made only when the writer takes it into a batch."""
        ...

    async def write(self, job: WriteJob[T]) -> T:
        """`submit` and wait for the commit."""
        ...

    async def close(self) -> None:
        """Commit what is queued, then refuse everything with `StoreClosed`. Idempotent."""
        ...
