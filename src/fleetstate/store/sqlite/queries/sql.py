"""Building statements and reading rows: the few helpers every query module shares."""

from collections.abc import Iterable, Sequence
from typing import Any, Literal, TypeVar, get_args

import msgspec

from fleetstate.store.connection import Connection, Row

S = TypeVar("S", bound=msgspec.Struct)

# SQLite's default limit on host parameters is 32766 since 3.32, but older builds allow 999.
_CHUNK = 800

# The tables whose rows belong to one organization and are named by an `id` column.
OrgTable = Literal[
    "api_tokens",
    "bindings",
    "command_batches",
    "commands",
    "config_artefacts",
    "device_groups",
    "devices",
    "dumps",
    "files",
    "hardware_keys",
    "profiles",
    "uploads",
]


def columns(struct: type[msgspec.Struct], prefix: str = "") -> str:
    """The column list of a row Struct, in field order (so `of(struct, row)` can build it)."""
    return ", ".join(prefix + name for name in struct.__struct_fields__)


def of(struct: type[S], row: Row) -> S:
    """A row Struct from a row selected with `columns(struct)`."""
    return struct(*row)


def all_of(struct: type[S], rows: Iterable[Row]) -> list[S]:
    return [struct(*row) for row in rows]


def chunks(items: Sequence[str]) -> Iterable[Sequence[str]]:
    for start in range(0, len(items), _CHUNK):
        yield items[start : start + _CHUNK]


def marks(items: Sequence[Any]) -> str:
    return ",".join("?" * len(items))


async def exists(conn: Connection, table: OrgTable, org_id: str, row_id: str) -> bool:
    """Whether the organization has a row `row_id` in `table`: the one existence check."""
    async with conn.execute(_EXISTS[table], (row_id, org_id)) as cur:
        return await cur.fetchone() is not None


async def fetch_one(conn: Connection, struct: type[S], sql: str, params: Any = ()) -> S | None:
    async with conn.execute(sql, params) as cur:
        row = await cur.fetchone()
    return None if row is None else struct(*row)


async def fetch_all(conn: Connection, struct: type[S], sql: str, params: Any = ()) -> list[S]:
    async with conn.execute(sql, params) as cur:
        return [struct(*row) for row in await cur.fetchall()]


async def fetch_column(conn: Connection, sql: str, params: Any = ()) -> list[Any]:
    """The first column of every row."""
    async with conn.execute(sql, params) as cur:
        return [row[0] for row in await cur.fetchall()]


async def fetch_value(conn: Connection, sql: str, params: Any = ()) -> Any:
    """The first column of the first row, or None."""
    async with conn.execute(sql, params) as cur:
        row = await cur.fetchone()
    return None if row is None else row[0]


async def found(conn: Connection, sql: str, params: Any = ()) -> bool:
    """Whether the statement selects any row."""
    async with conn.execute(sql, params) as cur:
        return await cur.fetchone() is not None


_EXISTS: dict[str, str] = {
    table: f"SELECT 1 FROM {table} WHERE id = ? AND org_id = ?" for table in get_args(OrgTable)
}


def literal_list(values: Iterable[str]) -> str:
    """A literal IN list of our own constants (a partial index matches only literal terms)."""
    return "(" + ", ".join(f"'{v}'" for v in values) + ")"
