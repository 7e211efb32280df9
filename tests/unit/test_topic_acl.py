"""The device topic ACL (SPEC section 3) as table tests.

A device subscribes only to its own `desired`, `commands` and `errors` (or a wildcard below its
own prefix) and publishes only on its own `reported`, `commands/ack`, `telemetry` and `status`;
anything else, another device's topics above all, is refused.
"""

import pytest

from fleetstate.domain.topics import device_topic, may_publish, may_subscribe, subtopic_of

# (device id, topic filter, allowed?).
SUBSCRIBE_ROWS = [
    pytest.param("d1", "devices/d1/desired", True, id="own-desired"),
    pytest.param("d1", "devices/d1/commands", True, id="own-commands"),
    pytest.param("d1", "devices/d1/errors", True, id="own-errors"),
    pytest.param("d1", "devices/d1/#", True, id="own-multi-level-wildcard"),
    pytest.param("d1", "devices/d1/+", True, id="own-single-level-wildcard"),
    pytest.param("d1", "devices/d1/reported", False, id="own-inbound-reported"),
    pytest.param("d1", "devices/d1/telemetry", False, id="own-inbound-telemetry"),
    pytest.param("d1", "devices/d1/status", False, id="own-inbound-status"),
    pytest.param("d1", "devices/d1/commands/ack", False, id="own-inbound-ack"),
    pytest.param("d1", "devices/d1/commands/#", False, id="below-commands"),
    pytest.param("d1", "devices/d1/desired/x", False, id="below-desired"),
    pytest.param("d1", "devices/d1/", False, id="empty-subtopic"),
    pytest.param("d1", "devices/d1", False, id="bare-prefix"),
    pytest.param("d1", "devices/d2/desired", False, id="other-device"),
    pytest.param("d1", "devices/d10/desired", False, id="device-id-prefix-of-other"),
    pytest.param("d10", "devices/d1/desired", False, id="other-id-prefix-of-device"),
    pytest.param("d1", "devices/+/desired", False, id="every-device-wildcard"),
    pytest.param("d1", "devices/#", False, id="all-devices"),
    pytest.param("d1", "#", False, id="everything"),
    pytest.param("d1", "$SYS/#", False, id="broker-internals"),
    pytest.param("d1", "Devices/d1/desired", False, id="topics-are-case-sensitive"),
    pytest.param("d1", "/devices/d1/desired", False, id="leading-slash"),
]


@pytest.mark.parametrize(("device", "topic_filter", "allowed"), SUBSCRIBE_ROWS)
def test_topic_acl_subscribe(device: str, topic_filter: str, allowed: bool) -> None:
    assert may_subscribe(device, topic_filter) is allowed


# (device id, topic, allowed?).
PUBLISH_ROWS = [
    pytest.param("d1", "devices/d1/reported", True, id="own-reported"),
    pytest.param("d1", "devices/d1/commands/ack", True, id="own-ack"),
    pytest.param("d1", "devices/d1/telemetry", True, id="own-telemetry"),
    pytest.param("d1", "devices/d1/status", True, id="own-status-birth-and-will"),
    pytest.param("d1", "devices/d1/desired", False, id="own-desired-is-the-services"),
    pytest.param("d1", "devices/d1/commands", False, id="own-commands-is-the-services"),
    pytest.param("d1", "devices/d1/errors", False, id="own-errors-is-the-services"),
    pytest.param("d1", "devices/d1/telemetry/x", False, id="below-telemetry"),
    pytest.param("d1", "devices/d1/", False, id="empty-subtopic"),
    pytest.param("d1", "devices/d2/telemetry", False, id="other-device"),
    pytest.param("d1", "devices/d10/telemetry", False, id="device-id-prefix-of-other"),
    pytest.param("d1", "devices/+/telemetry", False, id="wildcard-device"),
    pytest.param("d1", "elsewhere", False, id="outside-devices"),
]


@pytest.mark.parametrize(("device", "topic", "allowed"), PUBLISH_ROWS)
def test_topic_acl_publish(device: str, topic: str, allowed: bool) -> None:
    assert may_publish(device, topic) is allowed


# (device id, topic, subtopic or None).
SUBTOPIC_ROWS = [
    pytest.param("d1", "devices/d1/telemetry", "telemetry", id="own"),
    pytest.param("d1", "devices/d1/commands/ack", "commands/ack", id="two-levels"),
    pytest.param("d1", "devices/d1/", "", id="empty"),
    pytest.param("d1", "devices/d1", None, id="bare-prefix"),
    pytest.param("d1", "devices/d2/telemetry", None, id="other-device"),
    pytest.param("d1", "devices/d10/telemetry", None, id="longer-id"),
    pytest.param("d1", "x/devices/d1/telemetry", None, id="not-at-start"),
]


@pytest.mark.parametrize(("device", "topic", "subtopic"), SUBTOPIC_ROWS)
def test_topic_subtopic_of(device: str, topic: str, subtopic: str | None) -> None:
    assert subtopic_of(device, topic) == subtopic


@pytest.mark.parametrize("subtopic", ["desired", "commands", "errors", "commands/ack"])
def test_topic_device_topic_round_trips(subtopic: str) -> None:
    assert subtopic_of("d1", device_topic("d1", subtopic)) == subtopic
