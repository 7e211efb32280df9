"""Canonical JSON (sorted keys, no spaces, UTF-8) and the `sha256:<hex>` content hash."""

from typing import Any

import pytest

from fleetstate.domain.canonical import canonical_bytes, content_hash

CANONICAL_ROWS = [
    pytest.param({"b": 1, "a": 2}, b'{"a":2,"b":1}', id="keys-sorted"),
    pytest.param(
        {"z": {"y": 1, "x": [3, {"q": 0, "p": 1}]}},
        b'{"z":{"x":[3,{"p":1,"q":0}],"y":1}}',
        id="nested-keys-sorted-lists-kept",
    ),
    pytest.param({"B": 1, "a": 2, "_": 3}, b'{"B":1,"_":3,"a":2}', id="code-point-order"),
    pytest.param({"t": "é€"}, '{"t":"é€"}'.encode(), id="utf8-not-escaped"),
    pytest.param({"t": 'q"\\'}, b'{"t":"q\\"\\\\"}', id="quotes-escaped"),
    pytest.param({}, b"{}", id="empty-object"),
    pytest.param({"n": None, "t": True, "f": 1.5}, b'{"f":1.5,"n":null,"t":true}', id="scalars"),
]


@pytest.mark.parametrize(("value", "encoded"), CANONICAL_ROWS)
def test_canonical_bytes(value: Any, encoded: bytes) -> None:
    assert canonical_bytes(value) == encoded


def test_canonical_bytes_same_for_any_key_order() -> None:
    assert canonical_bytes({"a": 1, "b": {"c": 2, "d": 3}}) == canonical_bytes(
        {"b": {"d": 3, "c": 2}, "a": 1}
    )


HASH_ROWS = [
    pytest.param(
        b"", "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855", id="empty"
    ),
    pytest.param(
        b"abc",
        "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
        id="abc",
    ),
    pytest.param(
        b"{}",
        "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a",
        id="empty-object",
    ),
]


@pytest.mark.parametrize(("data", "digest"), HASH_ROWS)
def test_content_hash(data: bytes, digest: str) -> None:
    assert content_hash(data) == digest
