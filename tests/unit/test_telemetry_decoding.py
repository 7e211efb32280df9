"""What a telemetry message may hold (SPEC section 4, section 8 limits), as table tests of
`domain.telemetry.decode`: each bad message is refused with a clear error before it costs a
write."""

import msgspec
import pytest

from fleetstate.config import Limits
from fleetstate.domain.telemetry import MAX_BODY, MAX_STRING, decode
from fleetstate.errors import Invalid, TooLarge

LIMITS = Limits(telemetry_keys_per_message=3)
LONGEST = "é" * (MAX_STRING // 2)  # two bytes each: exactly MAX_STRING bytes


def body(telemetries: str = "{}", **extra: str) -> bytes:
    fields = ['"status":"online"', f'"telemetries":{telemetries}']
    fields += [f'"{k}":{v}' for k, v in extra.items()]
    return ("{" + ",".join(fields) + "}").encode()


ACCEPTED_ROWS = [
    pytest.param(b'{"status":"online"}', {}, id="status-only"),
    pytest.param(body('{"t":1,"b":true,"s":"x"}'), {"t": 1, "b": True, "s": "x"}, id="scalars"),
    pytest.param(body('{"gone":null}'), {"gone": None}, id="null-value"),
    pytest.param(body('{"a":1,"b":2,"c":3}'), {"a": 1, "b": 2, "c": 3}, id="at-the-key-limit"),
    pytest.param(body(f'{{"k":"{LONGEST}"}}'), {"k": LONGEST}, id="longest-utf8-value"),
    pytest.param(body(timestamp='"2021-08-04T07:45:44Z"', override="true"), {}, id="all-fields"),
]


@pytest.mark.parametrize(("payload", "telemetries"), ACCEPTED_ROWS)
def test_telemetry_decode_accepted(payload: bytes, telemetries: dict[str, object]) -> None:
    assert decode(payload, LIMITS).telemetries == telemetries


REFUSED_ROWS = [
    pytest.param(b"not json", msgspec.DecodeError, "malformed", id="not-json"),
    pytest.param(b"{}", msgspec.ValidationError, "status", id="status-missing"),
    pytest.param(b'{"status":"asleep"}', msgspec.ValidationError, "status", id="unknown-status"),
    pytest.param(body(colour='"red"'), msgspec.ValidationError, "colour", id="unknown-field"),
    pytest.param(body('{"n":{"x":1}}'), msgspec.ValidationError, "telemetries", id="nested"),
    pytest.param(body('{"n":[1]}'), msgspec.ValidationError, "telemetries", id="list-value"),
    pytest.param(body('{"a":1,"b":2,"c":3,"d":4}'), TooLarge, "4 keys; at most 3", id="keys"),
    pytest.param(body('{"":1}'), Invalid, "must not be empty", id="empty-key"),
    pytest.param(
        body('{"' + "k" * (MAX_STRING + 1) + '":1}'), Invalid, "strings are at most", id="key"
    ),
    pytest.param(
        body(f'{{"k":"{LONGEST}é"}}'),
        Invalid,
        f"value of 'k' is {MAX_STRING + 2} bytes",
        id="value-counted-in-utf8-bytes",
    ),
    pytest.param(
        body(message='"' + "m" * (MAX_STRING + 1) + '"'), Invalid, "message is", id="message"
    ),
    pytest.param(b" " * (MAX_BODY + 1), TooLarge, f"at most {MAX_BODY}", id="body"),
]


@pytest.mark.parametrize(("payload", "error", "says"), REFUSED_ROWS)
def test_telemetry_decode_refused(payload: bytes, error: type[Exception], says: str) -> None:
    with pytest.raises(error, match=says):
        decode(payload, LIMITS)
