"""The SQL that differs between database backends, and nothing else.

Every statement is written once, in the query modules (`store/queries/`), in the spelling
SQLite runs as is: `?` placeholders, and each backend-specific form built by one `Dialect` method
through `queries.sql` (`insert_ignore`, `json_text`, `distinct`, `same`, `greatest`, `in_list`).
That spelling is canonical. Another backend supplies a `Dialect` whose `prepare` turns canonical
text into its own, once per distinct statement text (cached), so its connection pays a dict lookup
per call and the statements are never copied. SQLite's `prepare` is the identity and its
connections never call it: the hot path is what it was.

Times are never computed in SQL (statements take RFC 3339 text parameters), so no dialect needs
a `now()`.
"""

import functools
import re
from collections.abc import Sequence
from typing import Any, Protocol


class Dialect(Protocol):
    name: str
    max_list: int
    """The most values one IN list may carry (SQLite's host-parameter limit); callers chunk."""

    def prepare(self, statement: str) -> str:
        """The canonical `statement` as this backend runs it."""
        ...

    def in_list(self, column: str, count: int) -> str:
        """`column` is one of `count` values, passed as `list_args(values)`."""
        ...

    def list_args(self, values: Sequence[Any]) -> tuple[Any, ...]: ...

    def insert_ignore(self, into: str, values: str) -> str:
        """`INSERT INTO {into} VALUES {values}` that skips rows whose key already exists."""
        ...

    def json_text(self, column: str, field: str) -> str:
        """The top-level `field` of the JSON text in `column`, as text."""
        ...

    def distinct(self, left: str, right: str) -> str:
        """`left` differs from `right`, NULL being a value like any other."""
        ...

    def same(self, left: str, right: str) -> str:
        """`left` equals `right`, NULL matching NULL."""
        ...

    def greatest(self, *terms: str) -> str: ...


class Spelling:
    """A dialect's forms as data: each template is formatted with the form's parts."""

    name: str
    max_list = 800
    """SQLite allows 32766 host parameters since 3.32 but older builds 999; other dialects
    keep the canonical chunking."""
    INSERT_IGNORE: str
    JSON_TEXT: str
    DISTINCT: str
    SAME: str
    GREATEST: str

    def insert_ignore(self, into: str, values: str) -> str:
        return self.INSERT_IGNORE.format(into=into, values=values)

    def json_text(self, column: str, field: str) -> str:
        return self.JSON_TEXT.format(column=column, field=field)

    def distinct(self, left: str, right: str) -> str:
        return self.DISTINCT.format(left=left, right=right)

    def same(self, left: str, right: str) -> str:
        return self.SAME.format(left=left, right=right)

    def greatest(self, *terms: str) -> str:
        return self.GREATEST.format(terms=", ".join(terms))


class SqliteDialect(Spelling):
    name = "sqlite"
    INSERT_IGNORE = "INSERT OR IGNORE INTO {into} VALUES {values}"
    JSON_TEXT = "json_extract({column}, '$.{field}')"
    DISTINCT = "{left} IS NOT {right}"
    SAME = "{left} IS {right}"
    GREATEST = "max({terms})"  # SQLite's max() of several arguments is scalar

    def prepare(self, statement: str) -> str:
        return statement

    def in_list(self, column: str, count: int) -> str:
        return f"{column} IN ({','.join('?' * count)})"

    def list_args(self, values: Sequence[Any]) -> tuple[Any, ...]:
        return tuple(values)


SQLITE = SqliteDialect()
CANONICAL: Dialect = SQLITE
"""The spelling the query modules are written in."""


# -- PostgreSQL: canonical text rewritten once per statement ------------------------------------

_INSERT_IGNORE = re.compile(r"^INSERT OR IGNORE INTO (.*)$", re.S)
_JSON_TEXT = re.compile(r"json_extract\(([\w.]+), '\$\.(\w+)'\)")
_DISTINCT = re.compile(r" IS NOT (?!NULL\b)")
_SAME = re.compile(r" IS (?!NOT\b|NULL\b|DISTINCT\b)")
_GREATEST = re.compile(r"\bmax\(([^(),]+(?:, [^(),]+)+)\)")
_MARK = re.compile(r"\?")


class PostgresDialect(Spelling):
    """asyncpg's spelling: `$n` placeholders, arrays for IN lists, jsonb for JSON text.

    Only the text. A canonical IN list (`?,?,?`, in chunks of `max_list`) runs as `$1,$2,$3`;
    `in_list` with `list_args` (one array, one plan for any count) is for statements a
    PostgreSQL store builds with its own dialect."""

    name = "postgresql"
    INSERT_IGNORE = "INSERT INTO {into} VALUES {values} ON CONFLICT DO NOTHING"
    JSON_TEXT = "({column}::jsonb ->> '{field}')"
    DISTINCT = "{left} IS DISTINCT FROM {right}"
    SAME = "{left} IS NOT DISTINCT FROM {right}"
    GREATEST = "greatest({terms})"

    @functools.lru_cache(maxsize=4096)  # noqa: B019 - one module-level instance, kept for good
    def prepare(self, statement: str) -> str:
        text = statement
        if match := _INSERT_IGNORE.match(text):
            text = f"INSERT INTO {match.group(1)} ON CONFLICT DO NOTHING"
        text = _JSON_TEXT.sub(r"(\1::jsonb ->> '\2')", text)
        text = _DISTINCT.sub(" IS DISTINCT FROM ", text)
        text = _SAME.sub(" IS NOT DISTINCT FROM ", text)
        text = _GREATEST.sub(r"greatest(\1)", text)
        numbers = iter(range(1, text.count("?") + 1))
        return _MARK.sub(lambda _m: f"${next(numbers)}", text)

    def in_list(self, column: str, count: int) -> str:
        return f"{column} = ANY(?)"

    def list_args(self, values: Sequence[Any]) -> tuple[Any, ...]:
        return (list(values),)


POSTGRES = PostgresDialect()
