"""The command transition table (SPEC section 2, "Command"), row by row.

`PENDING → SENT → ACKNOWLEDGED → SUCCESS | FAILED | TIMEOUT`, plus `CANCELLED`; an answer may
skip a step (SENT → SUCCESS; even PENDING → SUCCESS, since an answer proves delivery); terminal
states never change again, and a repeated or late answer is only history.
"""

import itertools

import pytest

from fleetstate.domain.commands import (
    CANCELLABLE,
    OPEN,
    TRANSITIONS,
    WAITING,
    Status,
    effect_of,
    sources,
)

P, S, A = Status.PENDING, Status.SENT, Status.ACKNOWLEDGED
OK, NO, T, C = Status.SUCCESS, Status.FAILED, Status.TIMEOUT, Status.CANCELLED
TERMINAL = (OK, NO, T, C)

# Every allowed move, written out independently of TRANSITIONS.
ALLOWED = {
    (P, S), (P, A), (P, OK), (P, NO), (P, T), (P, C),
    (S, A), (S, OK), (S, NO), (S, T), (S, C),
    (A, OK), (A, NO), (A, T), (A, C),
}  # fmt: skip

ALL_PAIRS = [
    pytest.param(
        current,
        to,
        "applied" if (current, to) in ALLOWED else "duplicate" if current == to else "late",
        id=f"{current}->{to}",
    )
    for current, to in itertools.product(Status, Status)
]


@pytest.mark.parametrize(("current", "to", "effect"), ALL_PAIRS)
def test_command_transition(current: Status, to: Status, effect: str) -> None:
    assert (to in TRANSITIONS[current]) is (effect == "applied")
    assert effect_of(current, to) == effect


@pytest.mark.parametrize("terminal", TERMINAL)
def test_command_terminal_never_changes(terminal: Status) -> None:
    assert TRANSITIONS[terminal] == frozenset()
    assert all(effect_of(terminal, to) != "applied" for to in Status)


@pytest.mark.parametrize(
    ("target", "from_"),
    [
        pytest.param(P, [], id="nothing-returns-to-pending"),
        pytest.param(S, [P], id="sent-only-from-pending"),
        pytest.param(A, [P, S], id="acknowledged"),
        pytest.param(OK, [P, S, A], id="success"),
        pytest.param(NO, [P, S, A], id="failed"),
        pytest.param(T, [P, S, A], id="timeout"),
        pytest.param(C, [P, S, A], id="cancelled"),
    ],
)
def test_command_transition_sources(target: Status, from_: list[Status]) -> None:
    assert sorted(sources(target)) == sorted(from_)


def test_command_open_waiting_cancellable_sets() -> None:
    assert set(OPEN) == {P, S, A}
    assert set(WAITING) == {P, S}
    # The operator may cancel only before the device started (SPEC: from PENDING/SENT).
    assert set(CANCELLABLE) == {P, S}
