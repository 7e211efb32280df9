"""Pruning the histories: one bounded delete per table, oldest rows first by its time column."""

from typing import Literal

from fleetstate.store.connection import Connection

History = Literal["telemetry_history", "report_history", "command_history"]

# `IN (SELECT ... LIMIT ?)` bounds each delete; PostgreSQL accepts the same text.
_PURGE: dict[str, str] = {
    table: f"DELETE FROM {table} WHERE id IN (SELECT id FROM {table} WHERE {column} < ? LIMIT ?)"
    for table, column in (
        ("telemetry_history", "ts"),
        ("report_history", "received_at"),
        ("command_history", "received_at"),
    )
}


async def purge_chunk(conn: Connection, table: History, cutoff: str, limit: int) -> int:
    """Delete up to `limit` rows of `table` older than `cutoff`; how many went."""
    async with conn.execute(_PURGE[table], (cutoff, limit)) as cur:
        return cur.rowcount
