"""Keyset pagination over time-sortable ids: `limit` and an opaque `cursor`."""

from typing import Any

import msgspec

from fleetstate.errors import Invalid

MAX_LIMIT = 1000
DEFAULT_LIMIT = 100


class Page(msgspec.Struct, frozen=True, kw_only=True):
    limit: int = DEFAULT_LIMIT
    cursor: str | None = None


def parse_page(limit: str | None, cursor: str | None) -> Page:
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
