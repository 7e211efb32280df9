"""Throttling of failed authentications (SPEC section 8), per source address and per credential.

After `limit` failures within `window_s` for any one key, that key is blocked for `block_s`:
every attempt naming it is refused before any secret is checked, a correct one included, so a
guesser learns nothing during the block. Memory is bounded: at most `max_keys` keys are tracked
(the oldest are forgotten first), and a key is forgotten once its last failure is older than the
window and its block (if any) is over, on the next attempt of any key: an attacker naming fresh
ids costs its records for one window, not until `max_keys` pushes them out.

Both tables are kept in time order (a key's record moves to the end when it changes, and the
clock only moves forward), so what has run out is always at the front and is dropped from there.
"""

import math
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Annotated

import msgspec

from fleetstate.config import ThrottleConfig
from fleetstate.errors import FleetstateError

_Positive = Annotated[float, msgspec.Meta(gt=0)]


class Throttled(FleetstateError):
    """Too many failed authentications: refused without looking at the credential."""

    code = "rate_limited"

    def __init__(self, retry_after_s: float) -> None:
        self.retry_after = max(1, math.ceil(retry_after_s))
        super().__init__(
            f"too many failed authentications; try again in {self.retry_after} s",
            details={"retry_after": self.retry_after},
        )


class FailureThrottle:
    def __init__(
        self,
        limit: int = 10,
        window_s: float = 60.0,
        block_s: float = 60.0,
        max_keys: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limit, self.window_s, self.block_s = limit, window_s, block_s
        self._max_keys = max_keys
        self._clock = clock
        self._failures: OrderedDict[str, tuple[float, ...]] = OrderedDict()
        self._blocked_until: OrderedDict[str, float] = OrderedDict()
        self.refused_total = 0
        """Attempts refused because a key was blocked (for metrics)."""
        self.failed_total = 0
        """Failed attempts recorded (for metrics)."""
        self.blocks_total = 0
        """Times a key became blocked (for metrics)."""

    @classmethod
    def from_config(cls, config: ThrottleConfig) -> "FailureThrottle":
        return cls(limit=config.limit, window_s=config.window_s, block_s=config.block_s)

    @property
    def keys_held(self) -> int:
        """Keys held now, with failures in the window or blocked (not `__len__`: an empty
        throttle must not be falsy where one is passed in or defaulted with `or`)."""
        return len(self._failures.keys() | self._blocked_until.keys())

    def blocked(self, *keys: str) -> bool:
        """True when any key is blocked now (the attempt is then refused and counted)."""
        now = self._clock()
        self._forget_expired(now)
        for key in keys:
            until = self._blocked_until.get(key)
            if until is not None and until > now:
                self.refused_total += 1
                return True
        return False

    def retry_after(self, *keys: str) -> float:
        """Seconds until none of the keys is blocked any more (0 when none is)."""
        now = self._clock()
        return max((self._blocked_until.get(key, now) - now for key in keys), default=0.0)

    def check(self, *keys: str) -> None:
        """Raise `Throttled` when any key is blocked now (`blocked`, as an exception)."""
        if self.blocked(*keys):
            raise Throttled(self.retry_after(*keys))

    def failed(self, *keys: str) -> list[str]:
        """Record one failed attempt against every key; return the keys it blocked."""
        now = self._clock()
        self._forget_expired(now)
        self.failed_total += 1
        newly_blocked = []
        since = now - self.window_s
        for key in keys:
            # A tuple, not a deque: a deque costs 600 bytes however few stamps it holds, and an
            # attacker naming fresh ids makes one key per attempt (at most `limit` stamps each).
            stamps = (*(t for t in self._failures.pop(key, ()) if t > since), now)
            if len(stamps) >= self.limit:
                self._blocked_until.pop(key, None)  # re-added at the end: the order is by time
                self._blocked_until[key] = now + self.block_s
                self.blocks_total += 1
                newly_blocked.append(key)
            else:
                self._failures[key] = stamps
        while len(self._failures) > self._max_keys:
            self._failures.popitem(last=False)
        return newly_blocked

    def _forget_expired(self, now: float) -> None:
        """Drop, from the front, the keys whose failures are all out of the window and the blocks
        that are over: each is dropped once, so this costs a look at the first of each table."""
        since = now - self.window_s
        failures, blocked = self._failures, self._blocked_until
        while failures and failures[next(iter(failures))][-1] <= since:
            failures.popitem(last=False)
            if not failures:
                failures.clear()  # a dict emptied item by item keeps its largest table
        while blocked and blocked[next(iter(blocked))] <= now:
            blocked.popitem(last=False)
            if not blocked:
                blocked.clear()
