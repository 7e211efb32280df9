"""What one device (or one client) may cost the service: a per-device token bucket (the
`[limits]` table it enforces is `config.Limits`).

Each limit is answered with a clear error, never by growing without bound: too many telemetry
keys are `too_large`, a timestamp too far in the future is `invalid`, telemetry faster than
`telemetry_rate_per_device` is `rate_limited` (SPEC section 8), and every history is pruned after
its retention.
"""

import time
from collections.abc import Callable


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
