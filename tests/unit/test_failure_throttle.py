"""FailureThrottle (SPEC section 8) driven by an injected clock: each row is a timeline.

After `limit` failures of one key within `window_s`, that key is blocked for `block_s`; failures
older than the window no longer count; a block ends on time; keys are independent.
"""

import pytest

from fleetstate.domain.throttle import FailureThrottle, Throttled


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# A timeline: (time offset s, action, key, expected). Actions: "fail" expects the keys it newly
# blocked; "blocked?" expects True/False.
Step = tuple[float, str, str, object]
LIMIT3 = {"limit": 3, "window_s": 10.0, "block_s": 30.0}

TIMELINE_ROWS = [
    pytest.param(
        [(0, "fail", "a", []), (1, "fail", "a", []), (2, "blocked?", "a", False)],
        id="below-limit-not-blocked",
    ),
    pytest.param(
        [
            (0, "fail", "a", []),
            (1, "fail", "a", []),
            (2, "fail", "a", ["a"]),
            (2, "blocked?", "a", True),
        ],
        id="limit-blocks",
    ),
    pytest.param(
        [
            (0, "fail", "a", []),
            (1, "fail", "a", []),
            (10, "fail", "a", []),
            (10, "blocked?", "a", False),
        ],
        id="failure-older-than-window-forgotten",
    ),
    pytest.param(
        [(0, "fail", "a", []), (1, "fail", "a", []), (9.5, "fail", "a", ["a"])],
        id="all-within-window-blocks",
    ),
    pytest.param(
        [
            (0, "fail", "a", []),
            (0, "fail", "a", []),
            (0, "fail", "a", ["a"]),
            (29.9, "blocked?", "a", True),
            (30, "blocked?", "a", False),
        ],
        id="block-ends-after-block-s",
    ),
    pytest.param(
        [
            (0, "fail", "a", []),
            (0, "fail", "a", []),
            (0, "fail", "a", ["a"]),
            (30, "blocked?", "a", False),
            (31, "fail", "a", []),
            (31, "blocked?", "a", False),
        ],
        id="failures-before-a-block-do-not-count-after-it",
    ),
    pytest.param(
        [
            (0, "fail", "a", []),
            (0, "fail", "a", []),
            (0, "fail", "a", ["a"]),
            (1, "blocked?", "b", False),
        ],
        id="keys-are-independent",
    ),
    pytest.param(
        [
            (0, "fail", "a", []),
            (1, "fail", "b", []),
            (2, "fail", "a", []),
            (3, "blocked?", "a", False),
        ],
        id="failures-of-another-key-do-not-count",
    ),
]


@pytest.mark.parametrize("steps", TIMELINE_ROWS)
def test_throttle_timeline(steps: list[Step]) -> None:
    clock = Clock()
    throttle = FailureThrottle(**LIMIT3, clock=clock)  # type: ignore[arg-type]
    start = clock.now
    for offset, action, key, expected in steps:
        clock.now = start + offset
        if action == "fail":
            assert throttle.failed(key) == expected, (offset, action, key)
        else:
            assert throttle.blocked(key) is expected, (offset, action, key)


def test_throttle_one_failure_counts_against_every_key() -> None:
    throttle = FailureThrottle(limit=2, window_s=10, block_s=30, clock=Clock())
    assert throttle.failed("addr:127.0.0.1", "device:d1") == []
    assert throttle.failed("addr:127.0.0.1", "device:d2") == ["addr:127.0.0.1"]
    assert throttle.blocked("device:d1") is False
    assert throttle.blocked("device:d9", "addr:127.0.0.1") is True  # any key blocks the attempt


@pytest.mark.parametrize(
    ("elapsed", "retry_after"),
    [
        pytest.param(0.0, 30, id="just-blocked"),
        pytest.param(29.2, 1, id="under-a-second-left-rounds-up"),
        pytest.param(10.5, 20, id="fraction-rounds-up"),
    ],
)
def test_throttle_check_says_when_to_retry(elapsed: float, retry_after: int) -> None:
    clock = Clock()
    throttle = FailureThrottle(limit=1, window_s=10, block_s=30, clock=clock)
    throttle.failed("a")
    clock.now += elapsed
    with pytest.raises(Throttled) as refused:
        throttle.check("a", "b")
    assert refused.value.retry_after == retry_after
    assert refused.value.details == {"retry_after": retry_after}


def test_throttle_counts_for_metrics() -> None:
    throttle = FailureThrottle(limit=2, window_s=10, block_s=30, clock=Clock())
    throttle.failed("a")
    throttle.failed("a")
    throttle.blocked("a")
    throttle.blocked("a")
    throttle.blocked("b")
    assert (throttle.failed_total, throttle.blocks_total, throttle.refused_total) == (2, 1, 2)


def test_throttle_forgets_oldest_keys_beyond_max_keys() -> None:
    throttle = FailureThrottle(limit=2, window_s=10, block_s=30, max_keys=2, clock=Clock())
    throttle.failed("old")
    throttle.failed("mid")
    throttle.failed("new")  # "old" is forgotten: its next failure is a first one again
    assert throttle.failed("old") == []
    assert throttle.failed("new") == ["new"]


def test_throttle_forgets_fresh_keys_once_their_window_is_over() -> None:
    """An attacker naming a fresh id per attempt costs one record each for one window only."""
    clock = Clock()
    throttle = FailureThrottle(limit=3, window_s=10, block_s=30, clock=clock)
    for n in range(1000):
        throttle.failed("addr:127.0.0.2", f"device:ghost-{n}")
    assert throttle.keys_held == 1001  # the address is blocked, every id has one failure
    clock.now += 10
    assert throttle.blocked("device:someone") is False  # any attempt looks at the front
    assert throttle.keys_held == 1  # the ids' failures are out of the window; the block is not
    clock.now += 20
    assert throttle.blocked("addr:127.0.0.2") is False
    assert throttle.keys_held == 0


def test_throttle_keeps_a_key_whose_last_failure_is_in_the_window() -> None:
    clock = Clock()
    throttle = FailureThrottle(limit=3, window_s=10, block_s=30, clock=clock)
    throttle.failed("a")
    throttle.failed("b")
    clock.now += 9
    throttle.failed("a")
    clock.now += 2  # b's only failure is out of the window, a's last one is not
    assert throttle.blocked("b") is False
    assert throttle.keys_held == 1
    assert throttle.failed("a") == []  # a's failure at 9 still counts, the one at 0 does not
    assert throttle.failed("a") == ["a"]
