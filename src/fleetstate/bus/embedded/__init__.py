"""The embedded MQTT endpoint for devices."""

from fleetstate.bus.embedded.amqtt_broker import GC_THRESHOLDS, EmbeddedBroker

__all__ = ["GC_THRESHOLDS", "EmbeddedBroker"]
