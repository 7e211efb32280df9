"""The error hierarchy of fleetstate.

Domain code raises these; the HTTP layer maps each class to a status and the SPEC's error body,
the MQTT layer maps them to a message on `devices/{id}/errors`. Domain code never mentions HTTP.
"""

from typing import Any


class FleetstateError(Exception):
    """Base of every error the service reports to a caller."""

    code = "error"

    def __init__(self, message: str, *, details: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


class Invalid(FleetstateError):
    """Malformed input: bad JSON, wrong types, unknown fields."""

    code = "invalid"


class SchemaInvalid(FleetstateError):
    """Well-formed input that a JSON Schema rejects; `details` lists each violation."""

    code = "schema_invalid"


class Unauthorized(FleetstateError):
    code = "unauthorized"


class NotFound(FleetstateError):
    code = "not_found"

    def __init__(self, kind: str, ident: str) -> None:
        super().__init__(f"{kind} {ident!r} not found")


class Conflict(FleetstateError):
    code = "conflict"


class TooLarge(FleetstateError):
    code = "too_large"


class StoreClosed(FleetstateError):
    """Raised when the store is used after `close()`."""

    code = "unavailable"

    def __init__(self) -> None:
        super().__init__("the store is closed")


class Forbidden(FleetstateError):
    code = "forbidden"


class RateLimited(FleetstateError):
    """More messages than a configured rate allows; the excess is dropped (HTTP 429)."""

    code = "rate_limited"
