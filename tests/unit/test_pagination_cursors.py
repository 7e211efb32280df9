"""Keyset pagination: `limit` parsing and the `limit + 1` rule for `next_cursor`."""

import pytest

from fleetstate.domain.pagination import DEFAULT_LIMIT, MAX_LIMIT, Page, page_of, parse_page
from fleetstate.errors import Invalid

ID = "0197aa00bb11cc22dd33"  # a cursor as the server hands it out: an id (ids.new_id)

# (limit, cursor as given, Page).
PARSE_ROWS = [
    pytest.param(None, None, Page(limit=DEFAULT_LIMIT), id="defaults"),
    pytest.param(None, ID, Page(limit=DEFAULT_LIMIT, cursor=ID), id="cursor-only"),
    pytest.param("1", None, Page(limit=1), id="smallest"),
    pytest.param(str(MAX_LIMIT), None, Page(limit=MAX_LIMIT), id="largest"),
    pytest.param("25", "", Page(limit=25), id="empty-cursor-is-none"),
    pytest.param(None, "", Page(limit=DEFAULT_LIMIT), id="empty-cursor-default-limit"),
    pytest.param("007", ID, Page(limit=7, cursor=ID), id="leading-zeros"),
]


@pytest.mark.parametrize(("limit", "cursor", "page"), PARSE_ROWS)
def test_pagination_parse(limit: str | None, cursor: str | None, page: Page) -> None:
    assert parse_page(limit, cursor) == page


@pytest.mark.parametrize(
    "limit",
    ["0", str(MAX_LIMIT + 1), "-1", "abc", "", " 5", "5 ", "1.5", "1e2", "+5", "²", "\u0661"],
)
def test_pagination_bad_limit_refused(limit: str) -> None:
    with pytest.raises(Invalid, match=f"limit must be an integer from 1 to {MAX_LIMIT}"):
        parse_page(limit, None)


@pytest.mark.parametrize("cursor", ["garbage", "abc", ID.upper(), ID[:-1], ID + "0", f" {ID}"])
def test_pagination_malformed_cursor_refused(cursor: str) -> None:
    with pytest.raises(Invalid, match="malformed cursor"):
        parse_page(None, cursor)


def _rows(n: int) -> list[dict[str, str]]:
    return [{"id": f"i{k:02d}", "other": f"o{k}"} for k in range(n)]


# (rows fetched, limit, ids shown, next cursor).
PAGE_ROWS = [
    pytest.param(0, 3, [], None, id="empty"),
    pytest.param(2, 3, ["i00", "i01"], None, id="fewer-than-limit"),
    pytest.param(3, 3, ["i00", "i01", "i02"], None, id="exactly-limit-no-more"),
    pytest.param(4, 3, ["i00", "i01", "i02"], "i02", id="one-extra-means-more"),
    pytest.param(2, 1, ["i00"], "i00", id="limit-one"),
]


@pytest.mark.parametrize(("fetched", "limit", "shown", "cursor"), PAGE_ROWS)
def test_pagination_page_of(fetched: int, limit: int, shown: list[str], cursor: str | None) -> None:
    page = page_of(_rows(fetched), Page(limit=limit))
    assert [item["id"] for item in page["items"]] == shown
    assert page["next_cursor"] == cursor


def test_pagination_page_of_other_key() -> None:
    page = page_of(_rows(3), Page(limit=2), key="other")
    assert page["next_cursor"] == "o1"
