"""Wall-clock time in the formats the wire and the database use."""

import time
from datetime import UTC, datetime


def utcnow() -> datetime:
    return datetime.now(UTC)


def rfc3339(moment: datetime) -> str:
    """RFC 3339 UTC with millisecond precision and a `Z` suffix."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").removesuffix("+00:00") + "Z"


_second: tuple[int, str] = (0, "")


def now_text() -> str:
    """`rfc3339(utcnow())`, formatting the date and time once per second: every telemetry
    message and report stamps rows with it (measured at 6% of the service's time with
    strftime under MQTT telemetry load; docs/benchmarks.md)."""
    global _second  # noqa: PLW0603 - a one-entry cache; a race only formats a second twice
    ns = time.time_ns()
    seconds, sub = divmod(ns, 1_000_000_000)
    if _second[0] != seconds:
        _second = (seconds, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)))
    return f"{_second[1]}.{sub // 1_000_000:03d}Z"
