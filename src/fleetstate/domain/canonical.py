"""Canonical JSON (sorted keys, no spaces, UTF-8) and the `sha256:<hex>` hash of stored bytes."""

import hashlib
from typing import Any

import msgspec

_encoder = msgspec.json.Encoder(order="sorted")


def canonical_bytes(value: Any) -> bytes:
    return _encoder.encode(value)


def content_hash(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()
