"""The per-device telemetry token bucket (`limits.RateLimiter`) driven by an injected clock."""

import pytest

from fleetstate.domain.limits import RateLimiter


class Clock:
    def __init__(self) -> None:
        self.now = 500.0

    def __call__(self) -> float:
        return self.now


# (rate, burst, [(time offset, allowed?)...]) for one key.
BUCKET_ROWS = [
    pytest.param(1.0, 3, [(0, True), (0, True), (0, True), (0, False)], id="burst-then-refused"),
    pytest.param(
        1.0, 2, [(0, True), (0, True), (0, False), (1, True), (1, False)], id="refills-at-rate"
    ),
    pytest.param(
        10.0, 1, [(0, True), (0.05, False), (0.1, True), (0.15, False)], id="fast-rate-fractions"
    ),
    pytest.param(
        1.0,
        2,
        [(0, True), (0, True), (100, True), (100, True), (100, False)],
        id="idle-refill-capped-at-burst",
    ),
    pytest.param(
        1.0,
        1,
        [(0, True), (0.5, False), (0.9, False), (1.0, True)],
        id="refused-attempts-cost-no-token",
    ),
    pytest.param(0.0, 1, [(0, True)] * 5, id="rate-zero-is-off"),
]


@pytest.mark.parametrize(("rate", "burst", "steps"), BUCKET_ROWS)
def test_rate_limiter_bucket(rate: float, burst: int, steps: list[tuple[float, bool]]) -> None:
    clock = Clock()
    limiter = RateLimiter(rate, burst, clock=clock)
    start = clock.now
    for offset, allowed in steps:
        clock.now = start + offset
        assert limiter.allow("d1") is allowed, offset


def test_rate_limiter_keys_have_their_own_buckets() -> None:
    limiter = RateLimiter(1.0, 1, clock=Clock())
    assert [limiter.allow("d1"), limiter.allow("d1"), limiter.allow("d2")] == [True, False, True]
