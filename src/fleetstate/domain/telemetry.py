"""Telemetry messages (SPEC section 4): decoding within the limits, their time, the merge rule.

No I/O: `telemetry.Recorder` decodes a message with `decode`, dates it with
`timestamp_of` and folds it into the device's state with `merge` before one write job stores it.
"""

from datetime import UTC, datetime
from typing import Any, Literal

import msgspec

from fleetstate.config import Limits
from fleetstate.domain.clock import now_text, rfc3339, utcnow
from fleetstate.errors import Invalid, TooLarge

MAX_BODY = 128 * 1024
MAX_STRING = 1000
"""Longest string value, key or message, in UTF-8 bytes."""
_FIRST_YEAR = 1970
_DEFAULTS = Limits()
Value = int | float | bool | str | None


class Telemetry(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    status: Literal["online", "offline", "error"]
    timestamp: str | float | None = None
    """ISO 8601 with a time zone, or seconds or milliseconds since the epoch; server time when
    absent."""
    telemetries: dict[str, Value] = {}
    override: bool = False
    """True: the message replaces the whole state instead of merging into it."""
    message: str | None = None


_decoder = msgspec.json.Decoder(Telemetry)


def decode(payload: bytes, limits: Limits = _DEFAULTS) -> Telemetry:
    """Raises TooLarge, Invalid, or msgspec's DecodeError / ValidationError for bad input."""
    if len(payload) > MAX_BODY:
        raise TooLarge(f"telemetry is {len(payload)} bytes; at most {MAX_BODY}")
    message = _decoder.decode(payload)
    most = limits.telemetry_keys_per_message
    if len(message.telemetries) > most:
        raise TooLarge(f"telemetry has {len(message.telemetries)} keys; at most {most} a message")
    for key, value in message.telemetries.items():
        if not key:
            raise Invalid("telemetry keys must not be empty")
        _check_length(f"key {key[:40]!r}...", key)
        if isinstance(value, str):
            _check_length(f"value of {key!r}", value)
    if message.message is not None:
        _check_length("message", message.message)
    return message


def _check_length(what: str, text: str) -> None:
    size = len(text.encode())
    if size > MAX_STRING:
        raise Invalid(f"{what} is {size} bytes; strings are at most {MAX_STRING} bytes")


_EPOCH_MS_FROM = 1e11
"""Epoch numbers from here on are milliseconds (1e11 s is the year 5138; 1e11 ms is 1973)."""


def decimal(text: str) -> bool:
    """ASCII digits only: `str.isdigit` also accepts superscripts and other scripts' digits."""
    return text.isascii() and text.isdigit()


def timestamp_of(value: str | float | None, future_s: float = _DEFAULTS.telemetry_future_s) -> str:
    """The stored form of a message's time, from Xyte's forms: ISO 8601 with a zone
    (`2021-08-04T07:45:44.122Z`), or epoch seconds or milliseconds, as a number or a numeric
    string. A time more than `future_s` ahead is refused, not clamped: it would outlive every
    retention, and a clamped one would misdate the reading."""
    if value is None:
        return now_text()
    try:
        if isinstance(value, str) and not decimal(value.strip().replace(".", "", 1)):
            moment = datetime.fromisoformat(value)
        else:
            seconds = float(value)
            if seconds >= _EPOCH_MS_FROM:
                seconds /= 1000
            moment = datetime.fromtimestamp(seconds, UTC)
    except (ValueError, OverflowError, OSError) as exc:
        raise Invalid(
            f"timestamp {value!r}: use ISO 8601 with a zone, or seconds or milliseconds since"
            " the epoch"
        ) from exc
    if moment.tzinfo is None:
        raise Invalid(f"timestamp {value!r} has no time zone; e.g. 2026-01-31T12:00:00Z")
    if moment.astimezone(UTC).year < _FIRST_YEAR:
        # Stored times compare as text, which holds only for four-digit years.
        raise Invalid(f"timestamp {value!r} is before {_FIRST_YEAR}")
    ahead = (moment - utcnow()).total_seconds()
    if ahead > future_s:
        raise Invalid(
            f"timestamp {value!r} is {ahead:.0f} s in the future; at most {future_s:.0f} s"
            " ahead of the server's clock (is the device's clock set?)"
        )
    return rfc3339(moment)


def merge(state: dict[str, Any], values: dict[str, Value], *, override: bool) -> dict[str, Any]:
    """New keys are added, existing ones overwritten, a null removes the key; `override`
    starts from nothing."""
    merged = {} if override else dict(state)
    for key, value in values.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = value
    return merged


def parse_time(name: str, value: str | None) -> str | None:
    """An RFC 3339 time given by a caller, in the stored format (UTC, milliseconds, `Z`)."""
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError as exc:
        raise Invalid(f"{name} must be an RFC 3339 time, e.g. 2026-01-31T12:00:00Z") from exc
    if moment.tzinfo is None:
        raise Invalid(f"{name} needs a time zone, e.g. 2026-01-31T12:00:00Z")
    return rfc3339(moment)
