"""What a device reports about the desired state it applied.

A report for the current version sets the device's status per slot and overall; a hash that
differs from the desired one turns ACCEPTED into FAILED with a message saying so. A report for an
older version is kept as history only; one for a version that never existed is refused.
"""

from typing import Any

import msgspec

from fleetstate.domain.clock import now_text
from fleetstate.domain.pagination import Page, page_of
from fleetstate.domain.reports import Report, SlotReport, SlotRow, is_current, report_decoder
from fleetstate.domain.reports import judge as _judge
from fleetstate.errors import Invalid, NotFound
from fleetstate.service import commands, outbox
from fleetstate.store import Connection, Store
from fleetstate.store.queries import reports as q

__all__ = ["Report", "SlotReport", "is_current", "report_decoder"]
"""Re-exported from `domain.reports` for the callers that import them from here."""


class Outcome(msgspec.Struct, frozen=True, kw_only=True):
    """The result of a report: `current` is False when it only went into history."""

    org_id: str
    device_id: str
    version: int
    status: str
    message: str | None
    current: bool
    moved: list[commands.Brief] = []
    """Commands the report moved (the BIND/UNBIND_CONFIG tracking this version)."""


async def record(store: Store, device_id: str, report: Report, raw: bytes) -> Outcome:
    async def job(conn: Connection) -> Outcome:
        return await apply(conn, device_id, report, raw.decode(errors="replace"))

    return await store.write(job)


async def apply(conn: Connection, device_id: str, report: Report, raw: str) -> Outcome:
    found = await q.desired_of(conn, device_id)
    if found is None:
        raise NotFound("device", device_id)
    desired_version, org_id = found.version, found.org_id
    current = is_current(report.version, desired_version)
    now = now_text()
    status: str = report.status
    message = report.message
    slots: list[SlotRow] = []
    if current:
        expected = await q.expected_hashes(conn, device_id)
        status, message, slots = _judge(report, expected)
    await q.add_history(
        conn, device_id, report.version, status, current=current, now=now, payload=raw
    )
    moved: list[commands.Brief] = []
    if current:
        await q.set_current(conn, device_id, report.version, status, message, slots, now)
        # Bind and unbind are commands: the report moves the command tracking this version.
        moved = await commands.converge(conn, device_id, report.version, status, message)
    outcome = Outcome(
        org_id=org_id,
        device_id=device_id,
        version=report.version,
        status=status,
        message=message,
        current=current,
        moved=moved,
    )
    _announce(outcome)
    return outcome


def _announce(outcome: Outcome) -> None:
    """After the commit: the report on the event stream, and the commands it moved (announced,
    and a sequential device's next one may go out)."""
    data = msgspec.structs.asdict(outcome)
    del data["moved"]
    outbox.announce(data.pop("org_id"), "report", data)
    if outcome.moved:
        outbox.commands_finished(outcome.moved)


async def history(store: Store, device_id: str, page: Page) -> dict[str, Any]:
    """The device's reports, newest first, a page at a time (`limit` at most 1,000: each may be
    up to 256 KiB). Older than `[limits] history_retention_days` they are gone."""
    before = None
    if page.cursor is not None:
        if not (page.cursor.isascii() and page.cursor.isdigit()):
            raise Invalid("malformed cursor")
        before = int(page.cursor)
    rows = await store.query(lambda conn: q.history(conn, device_id, before, page.limit + 1))
    items = [
        {**msgspec.structs.asdict(r), "id": str(r.id), "current": bool(r.current)} for r in rows
    ]
    listed = page_of(items, page)
    for item in listed["items"]:
        del item["id"]
    return listed
