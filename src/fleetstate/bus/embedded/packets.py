"""The MQTT packets a device uses, MQTT 5 reason codes and property identifiers: plain structs
the codec (`codec.py`) reads and writes."""

from typing import Final

import msgspec

# Control packet types [MQTT-2.2.1].
CONNECT, CONNACK, PUBLISH, PUBACK, PUBREC, PUBREL, PUBCOMP = 1, 2, 3, 4, 5, 6, 7
SUBSCRIBE, SUBACK, UNSUBSCRIBE, UNSUBACK, PINGREQ, PINGRESP, DISCONNECT, AUTH = range(8, 16)

MQTT_311: Final = 4
MQTT_5: Final = 5
MAX_REMAINING: Final = 268_435_455
"""The largest remaining length a fixed header can state."""


class Reason:
    """MQTT 5 reason codes used here (section 2.4 of MQTT 5)."""

    SUCCESS = 0x00
    GRANTED_QOS_1 = 0x01
    WITH_WILL = 0x04
    """DISCONNECT: the client ends the connection and asks for its Will all the same."""
    UNSPECIFIED = 0x80
    MALFORMED = 0x81
    PROTOCOL_ERROR = 0x82
    UNSUPPORTED_VERSION = 0x84
    CLIENT_ID_INVALID = 0x85
    BAD_CREDENTIALS = 0x86
    NOT_AUTHORIZED = 0x87
    SERVER_BUSY = 0x89
    BANNED = 0x8A
    SHUTTING_DOWN = 0x8B
    KEEP_ALIVE_TIMEOUT = 0x8D
    TAKEN_OVER = 0x8E
    TOPIC_FILTER_INVALID = 0x8F
    TOPIC_NAME_INVALID = 0x90
    NO_SUBSCRIPTION = 0x11
    TOPIC_ALIAS_INVALID = 0x94
    PACKET_TOO_LARGE = 0x95
    ADMINISTRATIVE = 0x98
    QOS_NOT_SUPPORTED = 0x9B
    RECEIVE_MAXIMUM_EXCEEDED = 0x93
    CONNECTION_RATE_EXCEEDED = 0x9F
    SHARED_NOT_SUPPORTED = 0x9E
    SUBSCRIPTION_IDS_NOT_SUPPORTED = 0xA1


CONNACK_311 = {
    Reason.SUCCESS: 0,
    Reason.UNSUPPORTED_VERSION: 1,
    Reason.CLIENT_ID_INVALID: 2,
    Reason.SERVER_BUSY: 3,
    Reason.SHUTTING_DOWN: 3,
    Reason.BAD_CREDENTIALS: 4,
}
"""MQTT 3.1.1 CONNACK return codes for MQTT 5 reasons; anything else refused is 5 (not
authorized) [MQTT-3.2.2.3]."""


class ProtocolError(Exception):
    """Input that is not valid MQTT; `reason` is the MQTT 5 reason code for it."""

    def __init__(self, reason: int, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def malformed(message: str) -> ProtocolError:
    return ProtocolError(Reason.MALFORMED, message)


# -- packets ---------------------------------------------------------------------------------


class Properties(msgspec.Struct, frozen=True, kw_only=True):
    """MQTT 5 properties of one packet; `values` by identifier, user properties apart."""

    values: dict[int, int | str | bytes] = {}
    user: tuple[tuple[str, str], ...] = ()


NO_PROPERTIES: Final = Properties()


class Will(msgspec.Struct, frozen=True, kw_only=True):
    topic: str
    payload: bytes
    qos: int
    retain: bool
    properties: Properties = NO_PROPERTIES

    @property
    def delay_s(self) -> int:
        """The MQTT 5 Will Delay Interval: seconds the Will waits after the connection ends (0 in
        MQTT 3.1.1, which has no such property)."""
        return int(self.properties.values.get(Prop.WILL_DELAY, 0))


class Connect(msgspec.Struct, frozen=True, kw_only=True):
    level: int
    client_id: str
    clean_start: bool
    keep_alive: int
    username: str | None = None
    password: bytes | None = None
    will: Will | None = None
    properties: Properties = NO_PROPERTIES

    @property
    def session_expiry(self) -> int | None:
        """Seconds the session outlives the connection; None: until a clean connect (3.1.1)."""
        if self.level < MQTT_5:
            return 0 if self.clean_start else None
        expiry = self.properties.values.get(Prop.SESSION_EXPIRY, 0)
        return None if expiry == 0xFFFFFFFF else int(expiry)

    @property
    def receive_maximum(self) -> int:
        return int(self.properties.values.get(Prop.RECEIVE_MAXIMUM, 65535))

    @property
    def maximum_packet_size(self) -> int | None:
        size = self.properties.values.get(Prop.MAXIMUM_PACKET_SIZE)
        return None if size is None else int(size)


class Publish(msgspec.Struct, frozen=True, kw_only=True):
    topic: str
    payload: bytes
    qos: int = 0
    retain: bool = False
    dup: bool = False
    packet_id: int = 0
    properties: Properties = NO_PROPERTIES


class PubAck(msgspec.Struct, frozen=True, kw_only=True):
    packet_id: int
    reason: int = Reason.SUCCESS


class Subscribe(msgspec.Struct, frozen=True, kw_only=True):
    packet_id: int
    filters: list[tuple[str, int]]
    """(topic filter, subscription options byte); its low two bits are the maximum QoS."""
    properties: Properties = NO_PROPERTIES


class Unsubscribe(msgspec.Struct, frozen=True, kw_only=True):
    packet_id: int
    filters: list[str]


class PingReq(msgspec.Struct, frozen=True):
    pass


class Disconnect(msgspec.Struct, frozen=True, kw_only=True):
    reason: int = Reason.SUCCESS
    properties: Properties = NO_PROPERTIES


Packet = Connect | Publish | PubAck | Subscribe | Unsubscribe | PingReq | Disconnect
PINGREQ_PACKET: Final = PingReq()


# -- MQTT 5 properties -----------------------------------------------------------------------


class Prop:
    PAYLOAD_FORMAT = 0x01
    MESSAGE_EXPIRY = 0x02
    CONTENT_TYPE = 0x03
    RESPONSE_TOPIC = 0x08
    CORRELATION_DATA = 0x09
    SUBSCRIPTION_ID = 0x0B
    SESSION_EXPIRY = 0x11
    ASSIGNED_CLIENT_ID = 0x12
    SERVER_KEEP_ALIVE = 0x13
    AUTH_METHOD = 0x15
    AUTH_DATA = 0x16
    REQUEST_PROBLEM_INFO = 0x17
    WILL_DELAY = 0x18
    REQUEST_RESPONSE_INFO = 0x19
    REASON_STRING = 0x1F
    RECEIVE_MAXIMUM = 0x21
    TOPIC_ALIAS_MAXIMUM = 0x22
    TOPIC_ALIAS = 0x23
    MAXIMUM_QOS = 0x24
    RETAIN_AVAILABLE = 0x25
    USER_PROPERTY = 0x26
    MAXIMUM_PACKET_SIZE = 0x27
    WILDCARD_AVAILABLE = 0x28
    SUBSCRIPTION_IDS_AVAILABLE = 0x29
    SHARED_AVAILABLE = 0x2A


BYTE, TWO, FOUR, VARINT, STRING, BINARY, PAIR = range(7)
"""The wire types of property values."""
PROPERTY_TYPES: Final = {
    Prop.PAYLOAD_FORMAT: BYTE,
    Prop.MESSAGE_EXPIRY: FOUR,
    Prop.CONTENT_TYPE: STRING,
    Prop.RESPONSE_TOPIC: STRING,
    Prop.CORRELATION_DATA: BINARY,
    Prop.SUBSCRIPTION_ID: VARINT,
    Prop.SESSION_EXPIRY: FOUR,
    Prop.ASSIGNED_CLIENT_ID: STRING,
    Prop.SERVER_KEEP_ALIVE: TWO,
    Prop.AUTH_METHOD: STRING,
    Prop.AUTH_DATA: BINARY,
    Prop.REQUEST_PROBLEM_INFO: BYTE,
    Prop.WILL_DELAY: FOUR,
    Prop.REQUEST_RESPONSE_INFO: BYTE,
    0x1A: STRING,  # response information
    0x1C: STRING,  # server reference
    Prop.REASON_STRING: STRING,
    Prop.RECEIVE_MAXIMUM: TWO,
    Prop.TOPIC_ALIAS_MAXIMUM: TWO,
    Prop.TOPIC_ALIAS: TWO,
    Prop.MAXIMUM_QOS: BYTE,
    Prop.RETAIN_AVAILABLE: BYTE,
    Prop.USER_PROPERTY: PAIR,
    Prop.MAXIMUM_PACKET_SIZE: FOUR,
    Prop.WILDCARD_AVAILABLE: BYTE,
    Prop.SUBSCRIPTION_IDS_AVAILABLE: BYTE,
    Prop.SHARED_AVAILABLE: BYTE,
}
