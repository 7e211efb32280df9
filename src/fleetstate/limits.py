"""What one device (or one client) may cost the service: the `[limits]` table and a per-device
token bucket.

Each limit is answered with a clear error, never by growing without bound: too many telemetry
keys are `too_large`, a timestamp too far in the future is `invalid`, telemetry faster than
`telemetry_rate_per_device` is `rate_limited` (SPEC section 8), and every history is pruned after
its retention.
"""

import time
from collections.abc import Callable
from typing import Annotated

import msgspec

NonNegative = Annotated[int, msgspec.Meta(ge=0)]
Positive = Annotated[int, msgspec.Meta(ge=1)]


class Limits(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The `[limits]` table."""

    telemetry_keys_per_message: Positive = 256
    """Most keys in one telemetry message (its `telemetries` object)."""
    telemetry_keys_per_device: Positive = 1024
    """Most keys in a device's merged telemetry state; a message that would grow it past this is
    refused (one that only updates or removes keys is not)."""
    telemetry_future_s: NonNegative = 300
    """A telemetry timestamp more than this many seconds ahead of the server's clock is refused."""
    telemetry_rate_per_device: Annotated[float, msgspec.Meta(ge=0)] = 10.0
    """Telemetry messages per second one device may send, sustained; 0 turns the limit off."""
    telemetry_burst: Positive = 50
    """How many messages a device that was quiet may send at once (the bucket's size)."""
    history_retention_days: NonNegative = 30
    """Report history and command answers older than this many days are removed; 0 keeps them."""
    events_queue: Positive = 1000
    """Events one SSE client may have waiting; a client that falls this far behind is dropped."""


class RateLimiter:
    """One token bucket per key: `rate` tokens a second, at most `burst` saved up.

    Memory stays bounded by the keys seen recently: whenever the table doubles since the last
    sweep, keys whose bucket has refilled completely (idle long enough) are forgotten, which
    loses nothing because a new key starts with a full bucket."""

    def __init__(
        self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.rate, self.burst = rate, burst
        self._clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}  # key: (tokens, when)
        self._sweep_at = 1024

    def allow(self, key: str) -> bool:
        """Take one token for `key`; False when there is none (the caller drops the message)."""
        if self.rate <= 0:
            return True
        now = self._clock()
        tokens, then = self._buckets.get(key, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - then) * self.rate)
        allowed = tokens >= 1.0
        self._buckets[key] = (tokens - 1.0 if allowed else tokens, now)
        if len(self._buckets) >= self._sweep_at:
            self._sweep(now)
        return allowed

    def _sweep(self, now: float) -> None:
        full_after = self.burst / self.rate
        self._buckets = {k: (t, w) for k, (t, w) in self._buckets.items() if now - w < full_after}
        self._sweep_at = max(1024, 2 * len(self._buckets))
