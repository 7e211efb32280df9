"""The `[broker]` table: every limit of the embedded MQTT endpoint (SPEC section 8)."""

from typing import Annotated

import msgspec

from fleetstate.bus import MAX_PAYLOAD


class BrokerLimits(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    connect_timeout_s: Annotated[float, msgspec.Meta(gt=0)] = 10.0
    """A connection that has not sent its CONNECT by then is closed (also the TLS handshake)."""
    max_packet_bytes: Annotated[int, msgspec.Meta(ge=1024, le=268_435_455)] = 2 * MAX_PAYLOAD
    """Largest packet accepted; bigger ones close the connection (MQTT 5: DISCONNECT 0x95).
    Above the 256 KiB payload limit, so a payload a little too big gets a `too_large` error on
    the device's errors topic instead."""
    inbound_queue: Annotated[int, msgspec.Meta(ge=1, le=65535)] = 16
    """Packets read from one connection and not yet processed; at this many the endpoint stops
    reading from it (TCP then slows the device down), whatever their QoS."""
    puback_timeout_s: Annotated[float, msgspec.Meta(gt=0)] = 10.0
    """How long a QoS 1 publish to a device waits for its PUBACK before it counts as lost."""
    auth_failure_limit: Annotated[int, msgspec.Meta(ge=1)] = 10
    """Failed CONNECTs per source address within the window before a block. Failures per
    device id are counted with the HTTP device API's, under `[throttle]`."""
    auth_failure_window_s: Annotated[float, msgspec.Meta(gt=0)] = 60.0
    auth_block_s: Annotated[float, msgspec.Meta(ge=0)] = 60.0
    """How long a throttled address is refused, a correct key included."""
