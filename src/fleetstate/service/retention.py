"""Retention: every history the service keeps is pruned once it is older than its retention.

Telemetry history after `telemetry_retention_days`; report history and command answers
(`command_history`) after `[limits] history_retention_days`. The current state each history
explains (merged telemetry, a device's current report, a command's status) is never pruned.
Deletes go in chunks, each its own write job, so no transaction grows large and other writes
interleave.
"""

import asyncio
import logging
from datetime import timedelta

from fleetstate.domain.clock import rfc3339, utcnow
from fleetstate.store import Connection, Store
from fleetstate.store.queries import retention as q

log = logging.getLogger(__name__)

INTERVAL_S = 3600.0
CHUNK = 5000
TELEMETRY: q.History = "telemetry_history"
REPORTS: q.History = "report_history"
COMMAND_ANSWERS: q.History = "command_history"


async def purge_older(store: Store, history: q.History, retention_days: int) -> int:
    """Delete the rows of `history` older than the retention; returns how many went. A
    retention of 0 keeps everything."""
    if retention_days <= 0:
        return 0
    cutoff = rfc3339(utcnow() - timedelta(days=retention_days))

    async def job(conn: Connection) -> int:
        return await q.purge_chunk(conn, history, cutoff, CHUNK)

    total = 0
    while True:
        deleted = await store.write(job)
        total += deleted
        if deleted < CHUNK:
            return total


async def purge_all(store: Store, telemetry_days: int, history_days: int) -> dict[str, int]:
    """One pass over every history: rows removed per table."""
    removed: dict[str, int] = {}
    for history, days in (
        (TELEMETRY, telemetry_days),
        (REPORTS, history_days),
        (COMMAND_ANSWERS, history_days),
    ):
        removed[history] = await purge_older(store, history, days)
    return removed


async def retention_loop(
    store: Store, telemetry_days: int, history_days: int, interval_s: float = INTERVAL_S
) -> None:
    """Prune now and every `interval_s` seconds until cancelled."""
    while True:
        for table, count in (await purge_all(store, telemetry_days, history_days)).items():
            if count:
                log.info("removed %d rows of %s past their retention", count, table)
        await asyncio.sleep(interval_s)
