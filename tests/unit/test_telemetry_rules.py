"""Telemetry merging and timestamps as table tests (SPEC section 4).

`merge`: a new key is added, an existing one overwritten, a null removes the key, and
`override` starts from nothing. `timestamp_of`: ISO 8601 with a zone, or epoch seconds or
milliseconds as a number or a numeric string, stored as RFC 3339 UTC with milliseconds; no zone,
before 1970, too far ahead or not a time at all is refused.
"""

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from fleetstate.domain.clock import rfc3339
from fleetstate.domain.telemetry import Value, merge, timestamp_of
from fleetstate.errors import Invalid

STATE = {"temp": 20.5, "mode": "eco", "status": "online"}

# (values, override, merged state).
MERGE_ROWS = [
    pytest.param({}, False, STATE, id="nothing-changes-nothing"),
    pytest.param({"rpm": 900}, False, {**STATE, "rpm": 900}, id="new-key-added"),
    pytest.param({"temp": 21}, False, {**STATE, "temp": 21}, id="existing-key-overwritten"),
    pytest.param(
        {"mode": None}, False, {"temp": 20.5, "status": "online"}, id="null-removes-the-key"
    ),
    pytest.param({"absent": None}, False, STATE, id="null-of-missing-key-is-harmless"),
    pytest.param({"mode": False}, False, {**STATE, "mode": False}, id="false-is-a-value"),
    pytest.param({"mode": 0}, False, {**STATE, "mode": 0}, id="zero-is-a-value"),
    pytest.param({"mode": ""}, False, {**STATE, "mode": ""}, id="empty-string-is-a-value"),
    pytest.param({"rpm": 900}, True, {"rpm": 900}, id="override-replaces-everything"),
    pytest.param(
        {"temp": 22, "rpm": None}, True, {"temp": 22}, id="override-with-null-keeps-it-out"
    ),
    pytest.param({}, True, {}, id="override-with-nothing-clears"),
    pytest.param(
        {"temp": None, "rpm": 1, "mode": "boost"},
        False,
        {"status": "online", "rpm": 1, "mode": "boost"},
        id="add-overwrite-remove-at-once",
    ),
]


@pytest.mark.parametrize(("values", "override", "merged"), MERGE_ROWS)
def test_telemetry_merge(values: dict[str, Value], override: bool, merged: dict[str, Any]) -> None:
    before = dict(STATE)
    assert merge(STATE, values, override=override) == merged
    assert before == STATE  # the stored state is never changed in place


# (timestamp as sent, stored form).
TIMESTAMP_ROWS = [
    pytest.param("2021-08-04T07:45:44.122Z", "2021-08-04T07:45:44.122Z", id="iso-z-millis"),
    pytest.param("2021-08-04T07:45:44Z", "2021-08-04T07:45:44.000Z", id="iso-z-seconds"),
    pytest.param("2021-08-04T09:45:44+02:00", "2021-08-04T07:45:44.000Z", id="iso-offset"),
    pytest.param("2021-08-04T02:45:44.5-05:00", "2021-08-04T07:45:44.500Z", id="iso-negative"),
    pytest.param("2021-08-04T07:45:44.123456Z", "2021-08-04T07:45:44.123Z", id="iso-micros-cut"),
    pytest.param(1628063144, "2021-08-04T07:45:44.000Z", id="epoch-seconds-int"),
    pytest.param(1628063144.25, "2021-08-04T07:45:44.250Z", id="epoch-seconds-float"),
    pytest.param(1628063144122, "2021-08-04T07:45:44.122Z", id="epoch-millis"),
    pytest.param("1628063144", "2021-08-04T07:45:44.000Z", id="epoch-seconds-string"),
    pytest.param("1628063144122", "2021-08-04T07:45:44.122Z", id="epoch-millis-string"),
    pytest.param("1628063144.5", "2021-08-04T07:45:44.500Z", id="epoch-fraction-string"),
    pytest.param(" 1628063144 ", "2021-08-04T07:45:44.000Z", id="epoch-string-spaces"),
    pytest.param(0, "1970-01-01T00:00:00.000Z", id="epoch-zero"),
    pytest.param(100_000_000_000, "1973-03-03T09:46:40.000Z", id="millis-threshold"),
]


@pytest.mark.parametrize(("sent", "stored"), TIMESTAMP_ROWS)
def test_telemetry_timestamp_accepted(sent: str | float, stored: str) -> None:
    assert timestamp_of(sent) == stored


def test_telemetry_timestamp_absent_is_server_time() -> None:
    before = rfc3339(datetime.now(UTC) - timedelta(seconds=1))
    assert before <= timestamp_of(None) <= rfc3339(datetime.now(UTC) + timedelta(seconds=1))


# (timestamp as sent, what the refusal says).
REFUSAL_ROWS = [
    pytest.param("2021-08-04T07:45:44", "has no time zone", id="iso-without-zone"),
    pytest.param("2021-08-04", "has no time zone", id="date-only"),
    pytest.param("yesterday", "use ISO 8601 with a zone", id="words"),
    pytest.param("", "use ISO 8601 with a zone", id="empty"),
    pytest.param("1e9", "use ISO 8601 with a zone", id="exponent-string"),
    pytest.param("-5", "use ISO 8601 with a zone", id="negative-string"),
    pytest.param("1.2.3", "use ISO 8601 with a zone", id="two-dots"),
    pytest.param("2021-13-01T00:00:00Z", "use ISO 8601 with a zone", id="month-13"),
    pytest.param(float("nan"), "use ISO 8601 with a zone", id="nan"),
    pytest.param(float("inf"), "use ISO 8601 with a zone", id="infinity"),
    pytest.param(1e300, "use ISO 8601 with a zone", id="beyond-any-year"),
    pytest.param(-1, "is before 1970", id="negative-epoch"),
    pytest.param("1969-12-31T23:59:59Z", "is before 1970", id="iso-1969"),
    pytest.param("1970-01-01T00:30:00+01:00", "is before 1970", id="1969-in-utc"),
    pytest.param("2999-01-01T00:00:00Z", "in the future", id="iso-far-future"),
    pytest.param(32_503_680_000, "in the future", id="epoch-year-3000"),
    # Just below the milliseconds threshold a number is seconds: the year 5138, not 1973.
    pytest.param(99_999_999_999, "in the future", id="just-below-millis-is-seconds"),
]


@pytest.mark.parametrize(("sent", "says"), REFUSAL_ROWS)
def test_telemetry_timestamp_refused(sent: str | float, says: str) -> None:
    with pytest.raises(Invalid, match=says):
        timestamp_of(sent)


@pytest.mark.parametrize(
    ("ahead_s", "future_s", "accepted"),
    [
        pytest.param(-3600, 0, True, id="past"),
        pytest.param(30, 300, True, id="within-allowance"),
        pytest.param(600, 300, False, id="beyond-allowance"),
        pytest.param(3600, 0, False, id="no-allowance"),
    ],
)
def test_telemetry_timestamp_future_allowance(
    ahead_s: float, future_s: float, accepted: bool
) -> None:
    sent = rfc3339(datetime.now(UTC) + timedelta(seconds=ahead_s))
    if accepted:
        assert timestamp_of(sent, future_s) == sent
    else:
        with pytest.raises(Invalid, match="in the future"):
            timestamp_of(sent, future_s)
