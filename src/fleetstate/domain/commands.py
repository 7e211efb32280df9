"""The command lifecycle: statuses, the one transition table, and the moves it allows.

`PENDING → SENT → ACKNOWLEDGED → SUCCESS | FAILED | TIMEOUT`, plus `CANCELLED`. Every status
UPDATE takes its guard from `TRANSITIONS`, so a finished command never changes again; late and
duplicate answers from the device only go into `command_history`.
"""

from enum import StrEnum
from typing import Literal


class Status(StrEnum):
    PENDING = "PENDING"
    SENT = "SENT"
    ACKNOWLEDGED = "ACKNOWLEDGED"
    SUCCESS = "SUCCESS"
    FAILED = "FAILED"
    TIMEOUT = "TIMEOUT"
    CANCELLED = "CANCELLED"


_FINISHED: frozenset[Status] = frozenset()
TRANSITIONS: dict[Status, frozenset[Status]] = {
    # An answer from the device proves delivery, so it may come before SENT is recorded.
    Status.PENDING: frozenset(Status) - {Status.PENDING},
    Status.SENT: frozenset(Status) - {Status.PENDING, Status.SENT},
    # Only a newer desired change cancels an ACKNOWLEDGED command; the operator may not.
    Status.ACKNOWLEDGED: frozenset(
        {Status.SUCCESS, Status.FAILED, Status.TIMEOUT, Status.CANCELLED}
    ),
    Status.SUCCESS: _FINISHED,
    Status.FAILED: _FINISHED,
    Status.TIMEOUT: _FINISHED,
    Status.CANCELLED: _FINISHED,
}
OPEN = tuple(s for s, after in TRANSITIONS.items() if after)
WAITING = (Status.PENDING, Status.SENT)
CANCELLABLE = WAITING
TRACKING = ("BIND_CONFIG", "UNBIND_CONFIG")
Effect = Literal["applied", "duplicate", "late"]


def sources(target: Status) -> list[Status]:
    """Every status a command may reach `target` from."""
    return [s for s, after in TRANSITIONS.items() if target in after]


def effect_of(current: Status, to: Status) -> Effect:
    if to in TRANSITIONS[current]:
        return "applied"
    return "duplicate" if to == current else "late"
