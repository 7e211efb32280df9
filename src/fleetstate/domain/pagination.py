"""Keyset pagination over time-sortable ids: `limit` and an opaque `cursor`."""

import re
from typing import Any, Generic, TypeVar

import msgspec

from fleetstate.errors import Invalid

MAX_LIMIT = 1000
DEFAULT_LIMIT = 100
ID_CURSOR = re.compile(r"[0-9a-f]{20}")
"""A cursor is the id of the last item shown (`ids.new_id`): anything else cannot be ours."""
T = TypeVar("T")


class Page(msgspec.Struct, frozen=True, kw_only=True):
    limit: int = DEFAULT_LIMIT
    cursor: str | None = None


class PageOf(msgspec.Struct, Generic[T], frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One page of a list; `next_cursor` (null on the last page) asks for the next one."""

    items: list[T]
    next_cursor: str | None


def parse_page(limit: str | None, cursor: str | None, pattern: re.Pattern[str] = ID_CURSOR) -> Page:
    """The page a query asks for; a malformed `limit` or `cursor` is refused, never read as the
    first page (a client would silently restart its walk)."""
    if cursor is not None and cursor != "" and not pattern.fullmatch(cursor):
        raise Invalid("malformed cursor: pass the next_cursor of the previous page")
    if limit is None:
        return Page(cursor=cursor or None)
    if not (limit.isascii() and limit.isdigit()) or not 1 <= int(limit) <= MAX_LIMIT:
        raise Invalid(f"limit must be an integer from 1 to {MAX_LIMIT}")
    return Page(limit=int(limit), cursor=cursor or None)


def page_of(items: list[dict[str, Any]], page: Page, key: str = "id") -> dict[str, Any]:
    """`items` was fetched with `limit + 1` rows; the extra row only says there is more."""
    more = len(items) > page.limit
    shown = items[: page.limit]
    return {"items": shown, "next_cursor": shown[-1][key] if more and shown else None}
