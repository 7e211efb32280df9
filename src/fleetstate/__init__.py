"""fleetstate: desired-state configuration and commands for device fleets."""

__version__ = "0.1.0"
