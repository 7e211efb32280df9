"""The message bus between the service and devices, behind a narrow interface.

fleetstate's own embedded MQTT endpoint (`bus.embedded`) is one implementation; an external
broker (Mosquitto/EMQX) is another to come. The service only ever publishes to one device's own
topic, learns of connects, subscriptions and messages through a `DeviceEvents` handler, and can
cut a device off.
"""

from typing import Protocol

DEVICE_TOPICS_IN = ("reported", "commands/ack", "telemetry", "status")
DEVICE_TOPICS_OUT = ("desired", "commands", "errors")
MAX_PAYLOAD = 256 * 1024


def device_topic(device_id: str, subtopic: str) -> str:
    return f"devices/{device_id}/{subtopic}"


def subtopic_of(device_id: str, topic: str) -> str | None:
    """The part after `devices/{device_id}/`, or None when the topic is not that device's."""
    prefix = f"devices/{device_id}/"
    return topic[len(prefix) :] if topic.startswith(prefix) else None


def may_subscribe(device_id: str, topic_filter: str) -> bool:
    sub = subtopic_of(device_id, topic_filter)
    return sub is not None and (sub in DEVICE_TOPICS_OUT or sub in ("#", "+"))


def may_publish(device_id: str, topic: str) -> bool:
    return subtopic_of(device_id, topic) in DEVICE_TOPICS_IN


class DeviceEvents(Protocol):
    """What the service does when the bus reports something about a device."""

    async def authenticate(self, device_id: str, access_key: str) -> bool: ...

    def connected(self, device_id: str) -> None: ...

    def disconnected(self, device_id: str) -> None: ...

    def subscribed(self, device_id: str, topic_filter: str) -> None: ...

    async def message(self, device_id: str, subtopic: str, payload: bytes) -> bool:
        """Handle one message; True once it is safely processed (then, and only then, PUBACK)."""
        ...

    def forbidden(self, device_id: str, topic: str) -> None: ...


class Bus(Protocol):
    async def publish(self, device_id: str, subtopic: str, payload: bytes) -> bool:
        """Deliver to that device alone; True when it acknowledged (QoS 1 PUBACK)."""
        ...

    def is_subscribed(self, device_id: str, subtopic: str) -> bool: ...

    def connected_devices(self) -> list[str]: ...

    async def disconnect(self, device_id: str) -> None: ...
