"""fleetstate's own embedded MQTT endpoint for devices (MQTT 3.1.1 and 5): the default `Bus`.

`packets` are the structs and codes, `codec` parses and encodes them (no I/O), `connection` is
the protocol of one connection, `endpoint` the listeners, sessions and the `Bus` methods; its
`[broker]` settings are `config.BrokerLimits`.
"""

from fleetstate.bus.embedded.endpoint import EmbeddedBroker, open_embedded

__all__ = ["EmbeddedBroker", "open_embedded"]
