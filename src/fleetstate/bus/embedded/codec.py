"""A sans-I/O codec for the MQTT packets a device uses, MQTT 3.1.1 (level 4) and MQTT 5 (level 5).

`read_packet(buffer, level, max_size)` takes one whole packet off the front of a bytearray, or
returns None while the packet is incomplete; the remaining length is checked against `max_size`
as soon as the fixed header is there, before the body is buffered. Malformed input raises
`ProtocolError` with the MQTT 5 reason code that names the fault (the connection maps it to what
MQTT 3.1.1 allows: a CONNACK return code or just closing). The `encode_*` functions build what the
server sends. No I/O, no asyncio: the fuzz tests feed it arbitrary bytes.
"""

from collections.abc import Callable
from typing import Final

from fleetstate.bus.embedded.packets import (
    AUTH,
    BYTE,
    CONNACK,
    CONNACK_311,
    CONNECT,
    DISCONNECT,
    FOUR,
    MAX_REMAINING,
    MQTT_5,
    MQTT_311,
    NO_PROPERTIES,
    PAIR,
    PINGREQ,
    PINGREQ_PACKET,
    PINGRESP,
    PROPERTY_TYPES,
    PUBACK,
    PUBCOMP,
    PUBLISH,
    PUBREC,
    PUBREL,
    STRING,
    SUBACK,
    SUBSCRIBE,
    TWO,
    UNSUBACK,
    UNSUBSCRIBE,
    VARINT,
    Connect,
    Disconnect,
    Packet,
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
    malformed,
)

__all__ = [
    "AUTH",
    "CONNACK",
    "CONNACK_311",
    "CONNECT",
    "DISCONNECT",
    "MAX_REMAINING",
    "MQTT_5",
    "MQTT_311",
    "NO_PROPERTIES",
    "PINGREQ",
    "PINGREQ_PACKET",
    "PINGRESP",
    "PUBACK",
    "PUBCOMP",
    "PUBLISH",
    "PUBREC",
    "PUBREL",
    "SUBACK",
    "SUBSCRIBE",
    "UNSUBACK",
    "UNSUBSCRIBE",
    "Connect",
    "Disconnect",
    "Packet",
    "PingReq",
    "Prop",
    "Properties",
    "ProtocolError",
    "PubAck",
    "Publish",
    "Reason",
    "Subscribe",
    "Unsubscribe",
    "Will",
]


# -- reading ---------------------------------------------------------------------------------


class _Body:
    """A cursor over one packet's variable header and payload."""

    __slots__ = ("data", "pos")

    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    @property
    def left(self) -> int:
        return len(self.data) - self.pos

    def take(self, n: int) -> bytes:
        end = self.pos + n
        if end > len(self.data):
            raise malformed("packet ends early")
        chunk = self.data[self.pos : end]
        self.pos = end
        return chunk

    def byte(self) -> int:
        if self.pos >= len(self.data):
            raise malformed("packet ends early")
        value = self.data[self.pos]
        self.pos += 1
        return value

    def uint16(self) -> int:
        return int.from_bytes(self.take(2), "big")

    def uint32(self) -> int:
        return int.from_bytes(self.take(4), "big")

    def varint(self) -> int:
        value, shift = 0, 0
        for _ in range(4):
            byte = self.byte()
            value |= (byte & 0x7F) << shift
            if not byte & 0x80:
                return value
            shift += 7
        raise malformed("variable byte integer longer than four bytes")

    def binary(self) -> bytes:
        return self.take(self.uint16())

    def string(self) -> str:
        """A UTF-8 string [MQTT-1.5.3]: well-formed, without U+0000."""
        raw = self.binary()
        try:
            text = raw.decode()
        except UnicodeDecodeError:
            raise malformed("a string is not valid UTF-8") from None
        if "\x00" in text:
            raise malformed("a string contains U+0000")
        return text

    def rest(self) -> bytes:
        chunk = self.data[self.pos :]
        self.pos = len(self.data)
        return chunk

    def properties(self) -> Properties:
        length = self.varint()
        end = self.pos + length
        if end > len(self.data):
            raise malformed("properties run past the packet")
        values: dict[int, int | str | bytes] = {}
        user: list[tuple[str, str]] = []
        while self.pos < end:
            ident = self.varint()
            kind = PROPERTY_TYPES.get(ident)
            if kind is None:
                raise malformed(f"unknown property 0x{ident:02x}")
            if kind == PAIR:
                user.append((self.string(), self.string()))
                continue
            if ident in values and ident != Prop.SUBSCRIPTION_ID:
                raise ProtocolError(Reason.PROTOCOL_ERROR, f"property 0x{ident:02x} repeated")
            values[ident] = self._property_value(kind)
        if self.pos != end:
            raise malformed("properties run past their length")
        if not values and not user:
            return NO_PROPERTIES
        return Properties(values=values, user=tuple(user))

    def _property_value(self, kind: int) -> int | str | bytes:
        if kind == BYTE:
            return self.byte()
        if kind == TWO:
            return self.uint16()
        if kind == FOUR:
            return self.uint32()
        if kind == VARINT:
            return self.varint()
        if kind == STRING:
            return self.string()
        return self.binary()

    def done(self) -> None:
        if self.pos != len(self.data):
            raise malformed("bytes left over at the end of a packet")


def read_packet(buffer: bytearray, level: int | None, max_size: int) -> Packet | None:
    """Take the next whole packet off `buffer`; None until one is there.

    `level` is None before CONNECT (then only CONNECT is valid) and the session's protocol level
    after it. A remaining length over `max_size` raises at once (PACKET_TOO_LARGE)."""
    size = len(buffer)
    if size < 2:
        return None
    remaining, shift, index = 0, 0, 1
    while True:
        if index >= size:
            return None
        byte = buffer[index]
        remaining |= (byte & 0x7F) << shift
        index += 1
        if not byte & 0x80:
            break
        shift += 7
        if index > 4:
            raise malformed("remaining length longer than four bytes")
    if remaining + index > max_size:
        raise ProtocolError(
            Reason.PACKET_TOO_LARGE, f"a {remaining + index}-byte packet; at most {max_size}"
        )
    end = index + remaining
    if size < end:
        return None
    first = buffer[0]
    body = bytes(buffer[index:end])
    del buffer[:end]
    return decode(first >> 4, first & 0x0F, body, level)


def decode(kind: int, flags: int, body: bytes, level: int | None) -> Packet:
    """One packet from its fixed header's type and flags and its body."""
    if level is None:
        if kind != CONNECT:
            raise ProtocolError(Reason.PROTOCOL_ERROR, "the first packet must be CONNECT")
        _flags_are(flags, 0)
        return _connect(_Body(body))
    v5 = level >= MQTT_5
    if kind == PUBLISH:
        return _publish(flags, _Body(body), v5)
    reader = _READERS.get(kind)
    if reader is not None:
        _flags_are(flags, 2 if kind in (SUBSCRIBE, UNSUBSCRIBE) else 0)
        return reader(_Body(body), v5)
    if kind == CONNECT:
        raise ProtocolError(Reason.PROTOCOL_ERROR, "a second CONNECT")  # [MQTT-3.1.0-2]
    names = {PUBREC: "PUBREC", PUBREL: "PUBREL", PUBCOMP: "PUBCOMP", AUTH: "AUTH"}
    if kind in names:  # the server sends no QoS 2 and no AUTH, so a client has none to answer
        raise ProtocolError(Reason.PROTOCOL_ERROR, f"unexpected {names[kind]}")
    raise malformed(f"packet type {kind} is not sent by clients")


def _flags_are(flags: int, expected: int) -> None:
    if flags != expected:
        raise malformed(f"reserved fixed-header flags 0x{flags:x}")  # [MQTT-2.2.2-2]


def _connect(body: _Body) -> Connect:
    name = body.binary()
    level = body.byte()
    if name == b"MQIsdp" or (name == b"MQTT" and level not in (MQTT_311, MQTT_5)):
        raise ProtocolError(Reason.UNSUPPORTED_VERSION, f"protocol level {level}")
    if name != b"MQTT":
        raise ProtocolError(Reason.UNSUPPORTED_VERSION, "not an MQTT CONNECT")
    flags = body.byte()
    if flags & 0x01:
        raise malformed("CONNECT reserved flag set")  # [MQTT-3.1.2-3]
    keep_alive = body.uint16()
    v5 = level == MQTT_5
    properties = body.properties() if v5 else NO_PROPERTIES
    client_id = body.string()
    will = _will(body, flags, v5)
    username = body.string() if flags & 0x80 else None
    if flags & 0x40 and not flags & 0x80 and not v5:
        raise malformed("password without user name")  # [MQTT-3.1.2-22]
    password = body.binary() if flags & 0x40 else None
    body.done()
    return Connect(
        level=level,
        client_id=client_id,
        clean_start=bool(flags & 0x02),
        keep_alive=keep_alive,
        username=username,
        password=password,
        will=will,
        properties=properties,
    )


def _will(body: _Body, flags: int, v5: bool) -> Will | None:
    qos, retain = (flags >> 3) & 0x03, bool(flags & 0x20)
    if not flags & 0x04:
        if qos or retain:
            raise malformed("will QoS or retain without a will")  # [MQTT-3.1.2-11]
        return None
    if qos == 3:
        raise malformed("will QoS 3")
    properties = body.properties() if v5 else NO_PROPERTIES
    topic = body.string()
    payload = body.binary()
    return Will(topic=topic, payload=payload, qos=qos, retain=retain, properties=properties)


def _publish(flags: int, body: _Body, v5: bool) -> Publish:
    qos = (flags >> 1) & 0x03
    if qos == 3:
        raise malformed("PUBLISH with QoS 3")  # [MQTT-3.3.1-4]
    dup = bool(flags & 0x08)
    if dup and qos == 0:
        raise malformed("DUP set on a QoS 0 PUBLISH")  # [MQTT-3.3.1-2]
    topic = body.string()
    packet_id = 0
    if qos:
        packet_id = body.uint16()
        if packet_id == 0:
            raise malformed("packet identifier 0")
    properties = body.properties() if v5 else NO_PROPERTIES
    return Publish(
        topic=topic,
        payload=body.rest(),
        qos=qos,
        retain=bool(flags & 0x01),
        dup=dup,
        packet_id=packet_id,
        properties=properties,
    )


def _puback(body: _Body, v5: bool) -> PubAck:
    packet_id = body.uint16()
    reason = Reason.SUCCESS
    if v5 and body.left:
        reason = body.byte()
        if body.left:
            body.properties()
    body.done()
    return PubAck(packet_id=packet_id, reason=reason)


def _packet_id(body: _Body) -> int:
    packet_id = body.uint16()
    if packet_id == 0:
        raise malformed("packet identifier 0")
    return packet_id


def _subscribe(body: _Body, v5: bool) -> Subscribe:
    packet_id = _packet_id(body)
    properties = body.properties() if v5 else NO_PROPERTIES
    filters: list[tuple[str, int]] = []
    while body.left:
        topic_filter = body.string()
        options = body.byte()
        reserved = 0xC0 if v5 else 0xFC
        if options & reserved or options & 0x03 == 3 or (v5 and (options >> 4) & 0x03 == 3):
            raise malformed(f"subscription options 0x{options:02x}")  # [MQTT-3.8.3-4]
        filters.append((topic_filter, options))
    if not filters:
        raise ProtocolError(Reason.PROTOCOL_ERROR, "SUBSCRIBE without a filter")  # [MQTT-3.8.3-3]
    return Subscribe(packet_id=packet_id, filters=filters, properties=properties)


def _unsubscribe(body: _Body, v5: bool) -> Unsubscribe:
    packet_id = _packet_id(body)
    if v5:
        body.properties()
    filters: list[str] = []
    while body.left:
        filters.append(body.string())
    if not filters:
        raise ProtocolError(Reason.PROTOCOL_ERROR, "UNSUBSCRIBE without a filter")
    return Unsubscribe(packet_id=packet_id, filters=filters)


def _disconnect(body: _Body, v5: bool) -> Disconnect:
    if not v5 or not body.left:
        body.done()
        return Disconnect()
    reason = body.byte()
    properties = body.properties() if body.left else NO_PROPERTIES
    body.done()
    return Disconnect(reason=reason, properties=properties)


def _pingreq(body: _Body, _v5: bool) -> PingReq:
    if body.left:
        raise malformed("PINGREQ has no body")
    return PINGREQ_PACKET


_READERS: Final[dict[int, Callable[[_Body, bool], Packet]]] = {
    PUBACK: _puback,
    SUBSCRIBE: _subscribe,
    UNSUBSCRIBE: _unsubscribe,
    PINGREQ: _pingreq,
    DISCONNECT: _disconnect,
}


# -- writing ---------------------------------------------------------------------------------


def encode_varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def encode_string(text: str) -> bytes:
    raw = text.encode()
    return len(raw).to_bytes(2, "big") + raw


def encode_properties(values: dict[int, int | str | bytes]) -> bytes:
    out = bytearray()
    for ident, value in values.items():
        out += encode_varint(ident)
        kind = PROPERTY_TYPES[ident]
        if kind == BYTE:
            out.append(int(value))
        elif kind == TWO:
            out += int(value).to_bytes(2, "big")
        elif kind == FOUR:
            out += int(value).to_bytes(4, "big")
        elif kind == VARINT:
            out += encode_varint(int(value))
        elif isinstance(value, str):
            out += encode_string(value)
        else:
            assert isinstance(value, bytes)
            out += len(value).to_bytes(2, "big") + value
    return encode_varint(len(out)) + bytes(out)


def packet(first: int, body: bytes) -> bytes:
    return bytes([first]) + encode_varint(len(body)) + body


def encode_connack(
    level: int,
    reason: int,
    *,
    session_present: bool = False,
    properties: dict[int, int | str | bytes] | None = None,
) -> bytes:
    """CONNACK; `reason` is the MQTT 5 code, turned into a 3.1.1 return code for level 4."""
    flags = b"\x01" if session_present and reason == Reason.SUCCESS else b"\x00"
    if level < MQTT_5:
        return packet(CONNACK << 4, flags + bytes([CONNACK_311.get(reason, 5)]))
    return packet(CONNACK << 4, flags + bytes([reason]) + encode_properties(properties or {}))


def encode_publish(
    level: int, topic: str, payload: bytes, qos: int = 0, packet_id: int = 0, retain: bool = False
) -> bytes:
    header = encode_string(topic)
    if qos:
        header += packet_id.to_bytes(2, "big")
    if level >= MQTT_5:
        header += b"\x00"  # no properties
    return packet((PUBLISH << 4) | (qos << 1) | int(retain), header + payload)


def encode_puback(level: int, packet_id: int, reason: int = Reason.SUCCESS) -> bytes:
    if level >= MQTT_5 and reason != Reason.SUCCESS:
        return packet(PUBACK << 4, packet_id.to_bytes(2, "big") + bytes([reason]))
    return bytes([PUBACK << 4, 2]) + packet_id.to_bytes(2, "big")


def encode_suback(level: int, packet_id: int, codes: list[int]) -> bytes:
    """`codes`: the granted QoS, or a failure (0x80 in 3.1.1, any MQTT 5 reason >= 0x80)."""
    if level < MQTT_5:
        codes = [c if c < 0x80 else 0x80 for c in codes]
        return packet(SUBACK << 4, packet_id.to_bytes(2, "big") + bytes(codes))
    return packet(SUBACK << 4, packet_id.to_bytes(2, "big") + b"\x00" + bytes(codes))


def encode_unsuback(level: int, packet_id: int, codes: list[int]) -> bytes:
    if level < MQTT_5:
        return packet(UNSUBACK << 4, packet_id.to_bytes(2, "big"))
    return packet(UNSUBACK << 4, packet_id.to_bytes(2, "big") + b"\x00" + bytes(codes))


PINGRESP_BYTES: Final = bytes([PINGRESP << 4, 0])


def encode_disconnect(reason: int) -> bytes:
    """An MQTT 5 server DISCONNECT (3.1.1 has none: the server just closes)."""
    return packet(DISCONNECT << 4, bytes([reason]))


# -- what clients send, for tests and tools ---------------------------------------------------


def encode_connect(connect: Connect) -> bytes:
    flags = 0x02 if connect.clean_start else 0
    will = connect.will
    payload = encode_string(connect.client_id)
    v5 = connect.level >= MQTT_5
    if will is not None:
        flags |= 0x04 | (will.qos << 3) | (0x20 if will.retain else 0)
        if v5:
            payload += encode_properties(will.properties.values)
        payload += encode_string(will.topic) + len(will.payload).to_bytes(2, "big") + will.payload
    if connect.username is not None:
        flags |= 0x80
        payload += encode_string(connect.username)
    if connect.password is not None:
        flags |= 0x40
        payload += len(connect.password).to_bytes(2, "big") + connect.password
    header = encode_string("MQTT") + bytes([connect.level, flags])
    header += connect.keep_alive.to_bytes(2, "big")
    if v5:
        header += encode_properties(connect.properties.values)
    return packet(CONNECT << 4, header + payload)


def encode_subscribe(level: int, packet_id: int, filters: list[tuple[str, int]]) -> bytes:
    body = packet_id.to_bytes(2, "big") + (b"\x00" if level >= MQTT_5 else b"")
    for topic_filter, options in filters:
        body += encode_string(topic_filter) + bytes([options])
    return packet((SUBSCRIBE << 4) | 2, body)


def encode_unsubscribe(level: int, packet_id: int, filters: list[str]) -> bytes:
    body = packet_id.to_bytes(2, "big") + (b"\x00" if level >= MQTT_5 else b"")
    for topic_filter in filters:
        body += encode_string(topic_filter)
    return packet((UNSUBSCRIBE << 4) | 2, body)
