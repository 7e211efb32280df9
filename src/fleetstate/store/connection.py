"""What a store job sees, whatever the backend: the `Connection` Protocol and its results.

A job is a coroutine function taking a `Connection` (`WriteJob`). The query modules
(`store/queries/`) are written against these Protocols alone, so every backend runs the same
functions; `store/sqlite/connection.py` implements them for SQLite.
"""

from collections.abc import AsyncIterator, Awaitable, Callable, Generator, Iterable, Iterator
from typing import Any, Protocol, TypeVar, overload

T = TypeVar("T")


class Row(Protocol):
    """A result row: by position (as `sql.of` builds Structs) or by column name."""

    @overload
    def __getitem__(self, key: int | str, /) -> Any: ...

    @overload
    def __getitem__(self, key: slice, /) -> tuple[Any, ...]: ...

    def __iter__(self) -> Iterator[Any]: ...

    def __len__(self) -> int: ...


class Cursor(Protocol):
    @property
    def rowcount(self) -> int: ...

    async def fetchone(self) -> Row | None: ...

    async def fetchall(self) -> list[Row]: ...

    def __aiter__(self) -> AsyncIterator[Row]: ...


class Result(Protocol):
    """What `execute` returns: await it for the cursor, or `async with` it to close the cursor."""

    def __await__(self) -> Generator[Any, None, Cursor]: ...

    async def __aenter__(self) -> Cursor: ...

    async def __aexit__(self, *exc: object) -> None: ...


class Connection(Protocol):
    def execute(self, sql: str, parameters: Any = ()) -> Result: ...

    async def executemany(self, sql: str, parameters: Iterable[Any]) -> Cursor: ...


WriteJob = Callable[[Connection], Awaitable[T]]
