"""Commands: one-off instructions to one device with a tracked acknowledgement lifecycle.

- `lifecycle`: statuses, the one transition table, cancel and the deadline sweep;
- `issuing`: the params of each type, a command to one device or a batch to a group;
- `delivery`: what goes out to a device (MQTT or HTTP) and its acknowledgements;
- `tracking`: bind and unbind are commands, tracking desired-state convergence;
- `views`: what the management API shows.

Publishing and deadlines live in `service.command_delivery`; nothing here knows MQTT or HTTP.
"""

from fleetstate.service.commands.delivery import (
    Ack,
    AckOutcome,
    Outgoing,
    ack_decoder,
    acknowledge,
    apply_ack,
    deliverable,
    has_waiting,
    mark_sent,
    record_ack,
    take_next,
)
from fleetstate.service.commands.issuing import Created, NewCommand, create, create_for_group, issue
from fleetstate.service.commands.lifecycle import (
    TRANSITIONS,
    Brief,
    Status,
    UnknownCommand,
    cancel,
    deadlines,
    epoch,
    expire_due,
    history,
)
from fleetstate.service.commands.tracking import (
    converge,
    mark_config_sent,
    resolve_desired,
    track_changes,
)
from fleetstate.service.commands.views import batch, get, list_page

__all__ = [
    "TRANSITIONS",
    "Ack",
    "AckOutcome",
    "Brief",
    "Created",
    "NewCommand",
    "Outgoing",
    "Status",
    "UnknownCommand",
    "ack_decoder",
    "acknowledge",
    "apply_ack",
    "batch",
    "cancel",
    "converge",
    "create",
    "create_for_group",
    "deadlines",
    "deliverable",
    "epoch",
    "expire_due",
    "get",
    "has_waiting",
    "history",
    "issue",
    "list_page",
    "mark_config_sent",
    "mark_sent",
    "record_ack",
    "resolve_desired",
    "take_next",
    "track_changes",
]
