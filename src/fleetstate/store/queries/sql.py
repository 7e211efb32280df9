"""Building statements and reading rows: the few helpers every query module shares."""

from collections.abc import Iterable, Sequence
from typing import Any, Literal, TypeVar, get_args

import msgspec

from fleetstate.store.connection import Connection, Row
from fleetstate.store.dialect import CANONICAL

S = TypeVar("S", bound=msgspec.Struct)

_CHUNK = CANONICAL.max_list

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
    """The placeholders of a `{ids}` IN list (canonical `?,?,?`; see store/dialect.py)."""
    return ",".join("?" * len(items))


# The forms that differ between backends, in canonical spelling (store/dialect.py); other
# dialects rewrite them once per statement in `Dialect.prepare`.


def in_list(column: str, items: Sequence[Any]) -> str:
    """`column IN (?, ...)`, one placeholder per item: pass `items` as they are."""
    return CANONICAL.in_list(column, len(items))


def insert_ignore(into: str, values: str) -> str:
    """An INSERT that skips rows whose key exists: `into` is `table (columns)`."""
    return CANONICAL.insert_ignore(into, values)


def json_text(column: str, field: str) -> str:
    return CANONICAL.json_text(column, field)


def distinct(left: str, right: str) -> str:
    """`left` differs from `right`, NULL being a value like any other."""
    return CANONICAL.distinct(left, right)


def same(left: str, right: str) -> str:
    """`left` equals `right`, NULL matching NULL."""
    return CANONICAL.same(left, right)


def greatest(*terms: str) -> str:
    return CANONICAL.greatest(*terms)


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
