"""What a device reports about the desired state it applied, and how a report is judged.

A report for the current version sets the device's status per slot and overall; a hash that
differs from the desired one turns ACCEPTED into FAILED with a message saying so. A report for an
older version is kept as history only; one for a version that never existed is refused.
"""

from typing import Literal

import msgspec

from fleetstate.errors import Invalid

Status = Literal["IN_PROGRESS", "ACCEPTED", "REJECTED", "FAILED"]


class SlotReport(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    slot: str
    status: Status
    artefact_id: str | None = None
    hash: str | None = None
    message: str | None = None


class Report(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    version: int
    status: Status
    configs: list[SlotReport] = []
    message: str | None = None


report_decoder = msgspec.json.Decoder(Report)
SlotRow = tuple[str, str | None, str, str | None, str | None]
"""One slot's outcome as stored: slot, artefact id, status, hash, message."""


def is_current(version: int, desired_version: int) -> bool:
    """True for a report of the current desired version; False for an older one, which only
    goes into history. Invalid for a version that never existed."""
    if not 1 <= version <= desired_version:
        raise Invalid(
            f"report for version {version}, but desired versions run from 1 to {desired_version}"
        )
    return version == desired_version


def judge(
    report: Report, expected: dict[str, tuple[str, str]]
) -> tuple[str, str | None, list[SlotRow]]:
    """Overall status, message and per-slot rows (slot, artefact, status, hash, message)."""
    by_slot = {c.slot: c for c in report.configs}
    problems = [f"slot {s!r} is not in the desired state" for s in by_slot if s not in expected]
    slots: list[SlotRow] = []
    for slot, (artefact_id, want) in sorted(expected.items()):
        given = by_slot.get(slot)
        if given is None:
            # A report without per-slot detail speaks for every slot.
            slots.append((slot, artefact_id, report.status, want, report.message))
            continue
        status, message = given.status, given.message
        if given.status == "ACCEPTED" and given.hash != want:
            status = "FAILED"
            message = f"hash mismatch on slot {slot!r}: expected {want}, reported {given.hash}"
            problems.append(message)
        slots.append((slot, given.artefact_id or artefact_id, status, given.hash, message))
    if problems and report.status in ("ACCEPTED", "IN_PROGRESS"):
        return "FAILED", "; ".join(problems), slots
    worst = overall(report.status, [s[2] for s in slots])
    return worst, report.message, slots


def overall(reported: str, slot_statuses: list[str]) -> str:
    for bad in ("FAILED", "REJECTED"):
        if bad in slot_statuses and reported == "ACCEPTED":
            return bad
    return reported
