"""The MQTT codec on its own: round trips of every packet a device sends, the refusals each
version defines, and fuzzing with random and truncated bytes (only ProtocolError, never a crash,
never a packet out of a partial buffer)."""

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fleetstate.bus.embedded import codec
from fleetstate.bus.embedded.codec import (
    MQTT_5,
    MQTT_311,
    Connect,
    Disconnect,
    PingReq,
    Prop,
    Properties,
    ProtocolError,
    PubAck,
    Publish,
    Reason,
    Subscribe,
    Unsubscribe,
    Will,
    read_packet,
)

MAX = 64 * 1024
FUZZ = settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None
)


def _read_all(data: bytes, level: int | None) -> list[codec.Packet]:
    buffer = bytearray(data)
    packets = []
    while (found := read_packet(buffer, level, MAX)) is not None:
        packets.append(found)
    assert not buffer
    return packets


def _one(data: bytes, level: int | None) -> codec.Packet:
    [found] = _read_all(data, level)
    return found


def _connect(level: int, **overrides: object) -> Connect:
    fields: dict[str, object] = {
        "level": level,
        "client_id": "dev-1",
        "clean_start": True,
        "keep_alive": 30,
        "username": "dev-1",
        "password": b"secret",
    }
    fields.update(overrides)
    return Connect(**fields)  # type: ignore[arg-type]


@pytest.mark.parametrize("level", [MQTT_311, MQTT_5])
def test_codec_connect_round_trips(level: int) -> None:
    props = Properties(values={Prop.SESSION_EXPIRY: 3600, Prop.RECEIVE_MAXIMUM: 5})
    will = Will(topic="devices/dev-1/status", payload=b'{"online":false}', qos=1, retain=True)
    original = _connect(
        level,
        clean_start=False,
        will=will,
        properties=props if level == MQTT_5 else codec.NO_PROPERTIES,
    )
    decoded = _one(codec.encode_connect(original), None)
    assert decoded == original
    assert isinstance(decoded, Connect)
    if level == MQTT_5:
        assert (decoded.session_expiry, decoded.receive_maximum) == (3600, 5)
    else:
        assert decoded.session_expiry is None  # clean session 0: kept until a clean connect


def test_codec_connect_without_credentials_round_trips() -> None:
    original = _connect(MQTT_311, username=None, password=None)
    assert _one(codec.encode_connect(original), None) == original


@pytest.mark.parametrize("level", [3, 6, 0])
def test_codec_connect_unsupported_level_is_refused(level: int) -> None:
    raw = bytearray(codec.encode_connect(_connect(MQTT_311)))
    raw[8] = level  # the protocol level byte after "\x00\x04MQTT"
    with pytest.raises(ProtocolError) as refused:
        _one(bytes(raw), None)
    assert refused.value.reason == Reason.UNSUPPORTED_VERSION


def test_codec_connect_mqisdp_is_refused_as_unsupported() -> None:
    body = codec.encode_string("MQIsdp") + bytes([3, 2, 0, 30]) + codec.encode_string("x")
    with pytest.raises(ProtocolError) as refused:
        _one(codec.packet(0x10, body), None)
    assert refused.value.reason == Reason.UNSUPPORTED_VERSION


def test_codec_first_packet_must_be_connect() -> None:
    with pytest.raises(ProtocolError) as refused:
        _one(b"\xc0\x00", None)
    assert refused.value.reason == Reason.PROTOCOL_ERROR


def test_codec_connect_reserved_flag_is_malformed() -> None:
    raw = bytearray(codec.encode_connect(_connect(MQTT_311)))
    raw[9] |= 0x01
    with pytest.raises(ProtocolError) as refused:
        _one(bytes(raw), None)
    assert refused.value.reason == Reason.MALFORMED


@pytest.mark.parametrize("level", [MQTT_311, MQTT_5])
@pytest.mark.parametrize("qos", [0, 1, 2])
def test_codec_publish_round_trips(level: int, qos: int) -> None:
    packet_id = 7 if qos else 0
    raw = codec.encode_publish(level, "devices/d/reported", b'{"a":1}', qos, packet_id, True)
    decoded = _one(raw, level)
    assert decoded == Publish(
        topic="devices/d/reported", payload=b'{"a":1}', qos=qos, retain=True, packet_id=packet_id
    )


def test_codec_publish_with_qos_3_is_malformed() -> None:
    with pytest.raises(ProtocolError) as refused:
        _one(codec.packet(0x36, codec.encode_string("t") + b"\x00\x01"), MQTT_311)
    assert refused.value.reason == Reason.MALFORMED


def test_codec_publish_with_packet_id_0_is_malformed() -> None:
    with pytest.raises(ProtocolError):
        _one(codec.packet(0x32, codec.encode_string("t") + b"\x00\x00{}"), MQTT_311)


def test_codec_mqtt5_publish_properties_are_read() -> None:
    props = codec.encode_properties({Prop.PAYLOAD_FORMAT: 1, Prop.CONTENT_TYPE: "json"})
    body = codec.encode_string("devices/d/telemetry") + props + b"{}"
    decoded = _one(codec.packet(0x30, body), MQTT_5)
    assert isinstance(decoded, Publish)
    assert decoded.properties.values == {Prop.PAYLOAD_FORMAT: 1, Prop.CONTENT_TYPE: "json"}
    assert decoded.payload == b"{}"


def test_codec_repeated_property_is_a_protocol_error() -> None:
    props = b"\x04" + b"\x01\x01" + b"\x01\x01"
    with pytest.raises(ProtocolError) as refused:
        _one(codec.packet(0x30, codec.encode_string("t") + props), MQTT_5)
    assert refused.value.reason == Reason.PROTOCOL_ERROR


def test_codec_unknown_property_is_malformed() -> None:
    with pytest.raises(ProtocolError) as refused:
        _one(codec.packet(0x30, codec.encode_string("t") + b"\x02\x7f\x00"), MQTT_5)
    assert refused.value.reason == Reason.MALFORMED


@pytest.mark.parametrize("level", [MQTT_311, MQTT_5])
def test_codec_subscribe_and_unsubscribe_round_trip(level: int) -> None:
    filters = [("devices/d/desired", 1), ("devices/d/#", 0)]
    assert _one(codec.encode_subscribe(level, 3, filters), level) == Subscribe(
        packet_id=3, filters=filters
    )
    assert _one(codec.encode_unsubscribe(level, 4, ["devices/d/#"]), level) == Unsubscribe(
        packet_id=4, filters=["devices/d/#"]
    )


def test_codec_subscribe_without_filters_is_a_protocol_error() -> None:
    with pytest.raises(ProtocolError) as refused:
        _one(codec.encode_subscribe(MQTT_311, 3, []), MQTT_311)
    assert refused.value.reason == Reason.PROTOCOL_ERROR


def test_codec_subscribe_with_reserved_option_bits_is_malformed() -> None:
    with pytest.raises(ProtocolError):
        _one(codec.encode_subscribe(MQTT_311, 3, [("a", 0x04)]), MQTT_311)


def test_codec_subscribe_with_wrong_fixed_header_flags_is_malformed() -> None:
    raw = bytearray(codec.encode_subscribe(MQTT_311, 3, [("a", 1)]))
    raw[0] = 0x80
    with pytest.raises(ProtocolError) as refused:
        _one(bytes(raw), MQTT_311)
    assert refused.value.reason == Reason.MALFORMED


def test_codec_small_packets_decode() -> None:
    assert _one(b"\xc0\x00", MQTT_311) == PingReq()
    assert _one(b"\xe0\x00", MQTT_311) == Disconnect()
    assert _one(b"\xe0\x01\x04", MQTT_5) == Disconnect(reason=0x04)
    assert _one(b"\x40\x02\x00\x09", MQTT_311) == PubAck(packet_id=9)
    assert _one(b"\x40\x03\x00\x09\x87", MQTT_5) == PubAck(packet_id=9, reason=0x87)


@pytest.mark.parametrize("kind", [0x50, 0x62, 0x70, 0xF0, 0x10])
def test_codec_packets_a_device_never_needs_are_refused(kind: int) -> None:
    with pytest.raises(ProtocolError) as refused:
        _one(bytes([kind, 2, 0, 1]), MQTT_5)
    assert refused.value.reason == Reason.PROTOCOL_ERROR


def test_codec_packet_too_large_is_refused_before_its_body_arrives() -> None:
    header = b"\x30" + codec.encode_varint(MAX + 1)
    with pytest.raises(ProtocolError) as refused:
        read_packet(bytearray(header), MQTT_311, MAX)
    assert refused.value.reason == Reason.PACKET_TOO_LARGE


def test_codec_remaining_length_over_four_bytes_is_malformed() -> None:
    with pytest.raises(ProtocolError) as refused:
        read_packet(bytearray(b"\x30\xff\xff\xff\xff\x01"), MQTT_311, 1 << 30)
    assert refused.value.reason == Reason.MALFORMED


def test_codec_several_packets_in_one_buffer_come_out_in_order() -> None:
    data = b"\xc0\x00" + codec.encode_publish(MQTT_311, "t", b"x", 1, 5) + b"\xe0\x00"
    kinds = [type(p) for p in _read_all(data, MQTT_311)]
    assert kinds == [PingReq, Publish, Disconnect]


def test_codec_server_packets_have_each_versions_shape() -> None:
    assert (
        codec.encode_connack(MQTT_311, Reason.SUCCESS, session_present=True) == b"\x20\x02\x01\x00"
    )
    assert codec.encode_connack(MQTT_311, Reason.BAD_CREDENTIALS) == b"\x20\x02\x00\x04"
    assert codec.encode_connack(MQTT_311, Reason.BANNED) == b"\x20\x02\x00\x05"
    assert codec.encode_connack(MQTT_5, Reason.BANNED) == b"\x20\x03\x00\x8a\x00"
    assert codec.encode_suback(MQTT_311, 1, [1, 0x87]) == b"\x90\x04\x00\x01\x01\x80"
    assert codec.encode_suback(MQTT_5, 1, [1, 0x87]) == b"\x90\x05\x00\x01\x00\x01\x87"
    assert codec.encode_unsuback(MQTT_311, 2, [0]) == b"\xb0\x02\x00\x02"
    assert codec.encode_puback(MQTT_311, 9) == b"\x40\x02\x00\x09"
    assert codec.encode_disconnect(Reason.QOS_NOT_SUPPORTED) == b"\xe0\x01\x9b"


def test_codec_connack_properties_encode() -> None:
    raw = codec.encode_connack(MQTT_5, 0, properties={Prop.MAXIMUM_QOS: 1, Prop.RECEIVE_MAXIMUM: 9})
    assert raw == b"\x20\x08\x00\x00\x05\x24\x01\x21\x00\x09"


# -- fuzzing -----------------------------------------------------------------------------------

_VALID = [
    codec.encode_connect(_connect(MQTT_311)),
    codec.encode_connect(_connect(MQTT_5, properties=Properties(values={Prop.SESSION_EXPIRY: 9}))),
    codec.encode_publish(MQTT_5, "devices/d/reported", b'{"version":1}', 1, 3),
    codec.encode_subscribe(MQTT_5, 2, [("devices/d/desired", 1)]),
]


def _drain(data: bytes, level: int | None) -> None:
    buffer = bytearray(data)
    reason = 0x80
    try:
        while read_packet(buffer, level, MAX) is not None:
            pass
    except ProtocolError as exc:
        reason = exc.reason
    assert 0x80 <= reason <= 0xFF


@FUZZ
@given(data=st.binary(max_size=300), level=st.sampled_from([None, MQTT_311, MQTT_5]))
def test_codec_random_bytes_raise_only_protocol_errors(data: bytes, level: int | None) -> None:
    _drain(data, level)


@FUZZ
@given(index=st.integers(0, len(_VALID) - 1), cut=st.integers(0, 10_000))
def test_codec_truncated_packet_is_never_a_packet(index: int, cut: int) -> None:
    whole = _VALID[index]
    level = None if index < 2 else MQTT_5
    buffer = bytearray(whole[: cut % len(whole)])
    before = bytes(buffer)
    assert read_packet(buffer, level, MAX) is None
    assert bytes(buffer) == before  # nothing consumed until the packet is whole


@FUZZ
@given(
    index=st.integers(0, len(_VALID) - 1),
    position=st.integers(0, 10_000),
    value=st.integers(0, 255),
)
def test_codec_mutated_packet_raises_only_protocol_errors(
    index: int, position: int, value: int
) -> None:
    raw = bytearray(_VALID[index])
    raw[position % len(raw)] = value
    _drain(bytes(raw), None if index < 2 else MQTT_5)


@FUZZ
@given(
    topic=st.text(min_size=1, max_size=40).filter(lambda t: "\x00" not in t),
    payload=st.binary(max_size=200),
    qos=st.sampled_from([0, 1]),
    level=st.sampled_from([MQTT_311, MQTT_5]),
)
def test_codec_any_publish_round_trips(topic: str, payload: bytes, qos: int, level: int) -> None:
    raw = codec.encode_publish(level, topic, payload, qos, 1 if qos else 0)
    decoded = _one(raw, level)
    assert isinstance(decoded, Publish)
    assert (decoded.topic, decoded.payload, decoded.qos) == (topic, payload, qos)
