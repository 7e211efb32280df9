"""What only the database knows for the metrics page: counts by state."""

from fleetstate.store.connection import Connection

_COMMANDS = "SELECT status, count(*) FROM commands GROUP BY status"
_DESIRED = (
    "SELECT CASE WHEN r.version = dd.version THEN r.status ELSE 'UNREPORTED' END, count(*)"
    " FROM desired_documents dd LEFT JOIN device_reports r ON r.device_id = dd.device_id"
    " GROUP BY 1"
)


async def _counted(conn: Connection, statement: str) -> dict[str, int]:
    async with conn.execute(statement) as cur:
        return {str(r[0]): int(r[1]) async for r in cur}


async def commands_by_status(conn: Connection) -> dict[str, int]:
    return await _counted(conn, _COMMANDS)


async def desired_by_report(conn: Connection) -> dict[str, int]:
    """Desired documents by the status of a report of their version, or UNREPORTED."""
    return await _counted(conn, _DESIRED)
