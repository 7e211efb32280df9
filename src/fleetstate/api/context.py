"""What every handler reaches through the application: the store and the device gateway."""

from dataclasses import dataclass, field

from aiohttp import web

from fleetstate.blobs import BlobStore
from fleetstate.config import Config
from fleetstate.events import EventBus
from fleetstate.gateway import Gateway
from fleetstate.store import Store
from fleetstate.telemetry import Recorder
from fleetstate.throttle import FailureThrottle


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


SERVICES: web.AppKey[Services] = web.AppKey("services", Services)


def services(request: web.Request) -> Services:
    return request.app[SERVICES]
