"""Devices: the statements other aggregates need about devices (devices.py's own come later)."""

from collections.abc import Sequence

from fleetstate.store.connection import Connection
from fleetstate.store.sqlite.queries import sql


async def first_missing(conn: Connection, org_id: str, device_ids: Sequence[str]) -> str | None:
    """The first of `device_ids` (in their order) that is not a device of the organization."""
    for part in sql.chunks(device_ids):
        statement = f"SELECT id FROM devices WHERE org_id = ? AND id IN ({sql.marks(part)})"
        found = set(await sql.fetch_column(conn, statement, (org_id, *part)))
        for device_id in part:
            if device_id not in found:
                return device_id
    return None
