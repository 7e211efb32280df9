"""The Xyte-like device API's view of a device's configuration."""

import msgspec

from fleetstate.store.connection import Connection
from fleetstate.store.queries import sql


class ConfigRow(msgspec.Struct, frozen=True):
    name: str
    version: int
    issued_at: str
    document: bytes


class DocumentRow(msgspec.Struct, frozen=True):
    version: int
    document: bytes


_CONFIG = (
    "SELECT d.name, dd.version, dd.issued_at, dd.document FROM devices d"
    " JOIN desired_documents dd ON dd.device_id = d.id WHERE d.id = ?"
)
_DOCUMENT = f"SELECT {sql.columns(DocumentRow)} FROM desired_documents WHERE device_id = ?"


async def config(conn: Connection, device_id: str) -> ConfigRow | None:
    """The device's name and desired document, or None for no such device."""
    return await sql.fetch_one(conn, ConfigRow, _CONFIG, (device_id,))


async def document(conn: Connection, device_id: str) -> DocumentRow | None:
    return await sql.fetch_one(conn, DocumentRow, _DOCUMENT, (device_id,))
