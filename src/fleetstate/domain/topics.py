"""The device protocol's topics: which a device may publish and subscribe to, what each carries.

A device uses only its own `devices/{id}/...` topics: it publishes `DEVICE_TOPICS_IN` and
subscribes to `DEVICE_TOPICS_OUT` (or `#`/`+` under its prefix); every bus applies this ACL.
"""

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


DELIVERED = frozenset(("desired", "commands"))
"""What the service delivers level-triggered from SQLite once a device can receive it."""


def delivered_by(device_id: str, topic_filter: str) -> frozenset[str]:
    """Which of `DELIVERED` a granted subscription to `topic_filter` lets the device receive."""
    sub = subtopic_of(device_id, topic_filter)
    return DELIVERED if sub in ("#", "+") else DELIVERED & {sub}


def may_publish(device_id: str, topic: str) -> bool:
    return subtopic_of(device_id, topic) in DEVICE_TOPICS_IN
