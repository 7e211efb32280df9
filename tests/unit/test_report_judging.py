"""Report judging as table tests (SPEC section 3, "Report"; section 2, bind as commands).

A report for the current version is judged against the desired slots: ACCEPTED with the
expected hash stays ACCEPTED, a different hash turns it FAILED with a message naming the slot,
REJECTED and FAILED pass through, and a report without per-slot detail speaks for every slot.
A report for an older version only goes into history; one for a version that never existed is
refused.
"""

import pytest

from fleetstate.domain.reports import Report, SlotReport, is_current, judge
from fleetstate.errors import Invalid

# The desired slots: slot -> (artefact id, expected hash).
EXPECTED = {"device": ("a-dev", "sha256:dev"), "component:cam": ("a-cam", "sha256:cam")}


def slot(name: str, status: str, hash: str | None = None, message: str | None = None) -> SlotReport:  # noqa: A002
    return SlotReport(slot=name, status=status, hash=hash, message=message)  # type: ignore[arg-type]


def report(status: str, *configs: SlotReport, message: str | None = None) -> Report:
    return Report(version=1, status=status, configs=list(configs), message=message)  # type: ignore[arg-type]


GOOD_DEV = slot("device", "ACCEPTED", "sha256:dev")
GOOD_CAM = slot("component:cam", "ACCEPTED", "sha256:cam")

# (report, overall status, overall message, per-slot status {slot: status}).
JUDGE_ROWS = [
    pytest.param(
        report("ACCEPTED", GOOD_DEV, GOOD_CAM),
        "ACCEPTED",
        None,
        {"device": "ACCEPTED", "component:cam": "ACCEPTED"},
        id="accepted-matching-hashes",
    ),
    pytest.param(
        report("ACCEPTED", GOOD_DEV, slot("component:cam", "ACCEPTED", "sha256:old")),
        "FAILED",
        "hash mismatch on slot 'component:cam': expected sha256:cam, reported sha256:old",
        {"device": "ACCEPTED", "component:cam": "FAILED"},
        id="accepted-hash-mismatch-fails-naming-the-slot",
    ),
    pytest.param(
        report("ACCEPTED", slot("device", "ACCEPTED"), GOOD_CAM),
        "FAILED",
        "hash mismatch on slot 'device': expected sha256:dev, reported None",
        {"device": "FAILED", "component:cam": "ACCEPTED"},
        id="accepted-without-hash-is-a-mismatch",
    ),
    pytest.param(
        report("ACCEPTED", GOOD_DEV, GOOD_CAM, slot("component:ghost", "ACCEPTED", "sha256:x")),
        "FAILED",
        "slot 'component:ghost' is not in the desired state",
        {"device": "ACCEPTED", "component:cam": "ACCEPTED"},
        id="unknown-slot-fails",
    ),
    pytest.param(
        report("IN_PROGRESS", slot("device", "ACCEPTED", "sha256:bad"), GOOD_CAM),
        "FAILED",
        "hash mismatch on slot 'device': expected sha256:dev, reported sha256:bad",
        {"device": "FAILED", "component:cam": "ACCEPTED"},
        id="in-progress-with-mismatch-fails",
    ),
    pytest.param(
        report("REJECTED", message="schema too new"),
        "REJECTED",
        "schema too new",
        {"device": "REJECTED", "component:cam": "REJECTED"},
        id="rejected-without-configs-speaks-for-every-slot",
    ),
    pytest.param(
        report("ACCEPTED"),
        "ACCEPTED",
        None,
        {"device": "ACCEPTED", "component:cam": "ACCEPTED"},
        id="accepted-without-configs-speaks-for-every-slot",
    ),
    pytest.param(
        report("IN_PROGRESS"),
        "IN_PROGRESS",
        None,
        {"device": "IN_PROGRESS", "component:cam": "IN_PROGRESS"},
        id="in-progress-without-configs",
    ),
    pytest.param(
        report("ACCEPTED", GOOD_DEV, slot("component:cam", "REJECTED", message="no")),
        "REJECTED",
        None,
        {"device": "ACCEPTED", "component:cam": "REJECTED"},
        id="accepted-overall-but-a-slot-rejected",
    ),
    pytest.param(
        report(
            "ACCEPTED",
            slot("device", "REJECTED"),
            slot("component:cam", "FAILED", message="broke"),
        ),
        "FAILED",
        None,
        {"device": "REJECTED", "component:cam": "FAILED"},
        id="failed-slot-outranks-rejected-slot",
    ),
    pytest.param(
        report("REJECTED", slot("device", "ACCEPTED", "sha256:bad"), message="nope"),
        "REJECTED",
        "nope",
        {"device": "FAILED", "component:cam": "REJECTED"},
        id="rejected-stays-rejected-despite-mismatch",
    ),
    pytest.param(
        report("FAILED", GOOD_DEV, message="reboot loop"),
        "FAILED",
        "reboot loop",
        {"device": "ACCEPTED", "component:cam": "FAILED"},
        id="failed-overall-missing-slot-takes-overall",
    ),
    pytest.param(
        report("ACCEPTED", GOOD_DEV),
        "ACCEPTED",
        None,
        {"device": "ACCEPTED", "component:cam": "ACCEPTED"},
        id="missing-slot-takes-the-overall-status",
    ),
]


@pytest.mark.parametrize(("given", "status", "message", "slots"), JUDGE_ROWS)
def test_report_judged_against_desired_slots(
    given: Report, status: str, message: str | None, slots: dict[str, str]
) -> None:
    overall, said, rows = judge(given, EXPECTED)
    assert (overall, said) == (status, message)
    assert {row[0]: row[2] for row in rows} == slots


def test_report_slot_rows_carry_artefact_hash_and_message() -> None:
    given = report(
        "ACCEPTED",
        slot("device", "ACCEPTED", "sha256:old"),
        message="applied",
    )
    _, _, rows = judge(given, EXPECTED)
    assert rows == [
        # Sorted by slot; a slot the report left out takes the desired artefact and hash.
        ("component:cam", "a-cam", "ACCEPTED", "sha256:cam", "applied"),
        (
            "device",
            "a-dev",
            "FAILED",
            "sha256:old",
            "hash mismatch on slot 'device': expected sha256:dev, reported sha256:old",
        ),
    ]


def test_report_with_nothing_desired_is_judged_by_its_own_status() -> None:
    assert judge(report("ACCEPTED"), {}) == ("ACCEPTED", None, [])


# (reported version, desired version, current?).
VERSION_ROWS = [
    pytest.param(7, 7, True, id="current"),
    pytest.param(6, 7, False, id="older-goes-to-history"),
    pytest.param(1, 7, False, id="first-version"),
    pytest.param(1, 1, True, id="only-version"),
]


@pytest.mark.parametrize(("version", "desired", "current"), VERSION_ROWS)
def test_report_version_current_or_history(version: int, desired: int, current: bool) -> None:
    assert is_current(version, desired) is current


@pytest.mark.parametrize(
    ("version", "desired"),
    [
        pytest.param(8, 7, id="future"),
        pytest.param(0, 7, id="zero"),
        pytest.param(-1, 7, id="negative"),
    ],
)
def test_report_version_never_issued_refused(version: int, desired: int) -> None:
    with pytest.raises(Invalid, match=f"report for version {version}, but desired versions run"):
        is_current(version, desired)
