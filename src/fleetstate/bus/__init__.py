"""The message bus between the service and devices, behind a narrow interface of device-protocol
intents: set a device's desired document, send it a command or an error, cut it off.

fleetstate's own embedded MQTT endpoint (`bus.embedded`) is one implementation; an external
broker (Mosquitto/EMQX) is another to come, chosen by `[bus] kind` through `open_bus`, so the
rest of the service never names the concrete class. The bus decides itself whether a message can
reach a device now (it knows the sessions); what cannot is delivered from SQLite when the device
is next ready for it (`DeviceEvents.connected` / `subscribed` name what it can receive).
"""

import contextlib
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Literal, Protocol

from fleetstate.domain.topics import DELIVERED as DELIVERED
from fleetstate.domain.topics import DEVICE_TOPICS_IN as DEVICE_TOPICS_IN
from fleetstate.domain.topics import DEVICE_TOPICS_OUT as DEVICE_TOPICS_OUT
from fleetstate.domain.topics import MAX_PAYLOAD as MAX_PAYLOAD
from fleetstate.domain.topics import delivered_by as delivered_by
from fleetstate.domain.topics import device_topic as device_topic
from fleetstate.domain.topics import may_publish as may_publish
from fleetstate.domain.topics import may_subscribe as may_subscribe
from fleetstate.domain.topics import subtopic_of as subtopic_of

if TYPE_CHECKING:
    from fleetstate.config import Config
    from fleetstate.domain.throttle import FailureThrottle


class DeviceEvents(Protocol):
    """What the service does when the bus reports something about a device."""

    async def authenticate(self, device_id: str, access_key: str) -> bool: ...

    def connected(self, device_id: str, receives: frozenset[str]) -> None:
        """The device is online; `receives`: what of `DELIVERED` it can take at once (a
        persistent session keeps its subscriptions and sends no SUBSCRIBE again)."""
        ...

    def disconnected(self, device_id: str) -> None: ...

    def subscribed(self, device_id: str, receives: frozenset[str]) -> None:
        """A granted subscription lets the device receive these of `DELIVERED` from now on."""
        ...

    async def message(self, device_id: str, subtopic: str, payload: bytes) -> bool:
        """Handle one message; True once it is safely processed (then, and only then, PUBACK)."""
        ...

    def message_soon(
        self, device_id: str, subtopic: str, payload: bytes, answered: Callable[[bool], None]
    ) -> bool:
        """`message` without a coroutine, for the kinds the service can take so: True when
        taken, and `answered(ok)` follows once processed (perhaps at once); False when not
        taken, so the bus calls `message`. A bus may call `message` always."""
        ...

    def forbidden(self, device_id: str, topic: str) -> None: ...


Sent = Literal["commands", "errors"]


class Bus(Protocol):
    """The device-protocol intents. Each delivery returns True once the device acknowledged it
    (QoS 1 PUBACK) and False at once when the device cannot take it now; nothing is queued."""

    @property
    def mqtt_url(self) -> str | None:
        """Where devices reach the bus over plain MQTT (mqtt://HOST:PORT), None when off."""
        ...

    @property
    def mqtts_url(self) -> str | None:
        """Where devices reach the bus over MQTT with TLS (mqtts://HOST:PORT), None when off."""
        ...

    async def start(self, events: DeviceEvents) -> None:
        """Serve devices from now on; `events` hears of them."""
        ...

    async def run(self) -> None:
        """The bus's own background work until cancelled (a task of the service's TaskGroup)."""
        ...

    async def set_desired(self, device_id: str, version: int, document: bytes) -> bool: ...

    async def send(self, device_id: str, kind: Sent, payload: bytes) -> bool: ...

    def is_connected(self, device_id: str) -> bool: ...

    def connected_devices(self) -> list[str]: ...

    async def disconnect(self, device_id: str) -> None: ...


@contextlib.asynccontextmanager
async def open_bus(
    config: "Config", device_ids: "FailureThrottle | None" = None
) -> AsyncIterator[Bus]:
    """The configured bus, built but not serving yet (`start(events)`); closed on the way out.
    `device_ids` counts failed device keys per device id, shared with the HTTP device API."""
    if config.bus.kind == "embedded":
        # Imported here: the endpoint builds on this module's interface.
        from fleetstate.bus.embedded import open_embedded  # noqa: PLC0415

        async with open_embedded(config, device_ids) as bus:
            yield bus
        return
    raise ValueError(f"unknown [bus] kind {config.bus.kind!r}")  # the config's Literal stops it
