"""fleetstate's own embedded MQTT endpoint for devices (MQTT 3.1.1 and 5): the default `Bus`.

`packets` are the structs and codes, `codec` parses and encodes them (no I/O), `connection` is
the protocol of one connection, `endpoint` the listeners, sessions and the `Bus` methods,
`limits` its `[broker]` settings.
"""

from fleetstate.bus.embedded.endpoint import EmbeddedBroker, open_embedded
from fleetstate.bus.embedded.limits import BrokerLimits

__all__ = ["BrokerLimits", "EmbeddedBroker", "open_embedded"]
