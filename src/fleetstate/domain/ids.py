"""Opaque identifiers that sort by creation time (so "newest first" is an index scan)."""

import secrets
import time


def new_id() -> str:
    """12 hex digits of milliseconds since the epoch, then 8 random hex digits."""
    return f"{time.time_ns() // 1_000_000:012x}{secrets.token_hex(4)}"
