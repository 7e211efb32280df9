"""Numbers a write hands out: desired-document versions, binding order, artefact versions.

Each is read-then-write (the newest number + 1), correct only because one writer runs every job,
one `BEGIN IMMEDIATE` batch at a time: no other transaction can read the same newest number in
between. This module is the whole of that invariant, so a backend with concurrent writers
replaces exactly it (a sequence for binding order, `UPDATE ... RETURNING` or a row lock for a
device's version, an advisory lock or a retry on `UNIQUE (org_id, name, version)` for artefacts;
docs/architecture.md, "Single-process invariants"). Every function runs inside a write job.
"""

from collections.abc import Mapping, Sequence

from fleetstate.store.connection import Connection
from fleetstate.store.queries import sql

_BINDING_SEQ = "SELECT coalesce(max(seq), 0) + 1 FROM bindings"
_ARTEFACT_VERSION = (
    "SELECT coalesce(max(version), 0) + 1 FROM config_artefacts WHERE org_id = ? AND name = ?"
)


def next_desired_versions(current: Mapping[str, int], device_ids: Sequence[str]) -> dict[str, int]:
    """The version each device's next desired document gets: its current one + 1, else 1.
    `current` is what the job read of these devices' documents in its own transaction
    (`queries.desired.fingerprints`, which resolution reads anyway): the read of read-then-write."""
    return {device_id: current.get(device_id, 0) + 1 for device_id in device_ids}


async def next_binding_seq(conn: Connection) -> int:
    """The order number of the next binding written (a later binding wins a tie)."""
    return int(await sql.fetch_value(conn, _BINDING_SEQ))


async def next_binding_seqs(conn: Connection, count: int) -> list[int]:
    """Order numbers for `count` bindings written in this order, ascending."""
    first = await next_binding_seq(conn)
    return list(range(first, first + count))


async def next_artefact_version(conn: Connection, org_id: str, name: str) -> int:
    """The version the next artefact called `name` gets in the organisation: newest + 1, else 1."""
    return int(await sql.fetch_value(conn, _ARTEFACT_VERSION, (org_id, name)))
