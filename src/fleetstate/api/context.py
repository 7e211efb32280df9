"""What every handler reaches through the application: the store and the device gateway."""

from dataclasses import dataclass, field

from aiohttp import web

from fleetstate.blobs import BlobStore
from fleetstate.config import Config
from fleetstate.domain.throttle import FailureThrottle
from fleetstate.service.coordination import KeyedLocks, LocalLocks
from fleetstate.service.events import EventBus
from fleetstate.service.gateway import Gateway
from fleetstate.service.telemetry import Recorder
from fleetstate.store import Store


@dataclass
class Services:
    store: Store
    gateway: Gateway
    config: Config
    events: EventBus
    blobs: BlobStore
    telemetry: Recorder
    mqtt_url: str = ""
    """The broker's bound address (mqtt://HOST:PORT), the default `mqtt_hub_url` for devices."""
    device_throttle: FailureThrottle = field(default_factory=FailureThrottle)
    """Failed device-key checks over HTTP, per source address and device id (SPEC section 8);
    the app shares it with the MQTT endpoint, which counts its failures per device id here."""
    dump_locks: KeyedLocks = field(default_factory=LocalLocks)
    """One append at a time per dump (built in the composition root)."""


SERVICES: web.AppKey[Services] = web.AppKey("services", Services)


def services(request: web.Request) -> Services:
    return request.app[SERVICES]
