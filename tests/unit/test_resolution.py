"""Desired-state resolution as table tests: which binding wins each slot, and why.

The rule (SPEC section 2): per slot the most specific binding wins, `component` > `device` >
`device_group` > `device_profile` / `sensor_profile`; then the higher `priority`; then the newer
binding. `desired.winners` and `desired.explain` are pure functions of a device's facts and the
organization's bindings, so each row builds those and nothing else.
"""

from typing import Any

import msgspec
import pytest

from fleetstate.domain.resolution import Binding, DeviceFacts, explain, fingerprint, render, winners

DEVICE = DeviceFacts(
    id="d1",
    profile_id="dp",
    groups=("g1", "g2"),
    components=(("cam", "sp-cam"), ("fan", "sp-fan")),
)

# The target each kind of binding names for DEVICE, and the slot key it configures.
_TARGETS = {
    "component": "d1/cam",
    "device": "d1",
    "device_group": "g1",
    "device_profile": "dp",
    "sensor_profile": "sp-cam",
}


def binding(name: str, target_type: str, *, priority: int = 0, seq: int = 1, **kw: Any) -> Binding:
    """A binding named `name` (its id and artefact id), by default of the device slot."""
    sensor = target_type in ("component", "sensor_profile")
    fields: dict[str, Any] = {
        "id": name,
        "target_type": target_type,
        "target_id": _TARGETS[target_type],
        "slot_key": "sensor:sp-cam" if sensor else "device",
        "artefact_id": f"a-{name}",
        "priority": priority,
        "seq": seq,
        "artefact_name": name,
        "artefact_version": 1,
        "hash": f"sha256:{name}",
        "size": 1,
        "is_blob": False,
    }
    fields.update(kw)
    return Binding(**fields)


def index_of(*bindings: Binding) -> dict[tuple[str, str], list[Binding]]:
    index: dict[tuple[str, str], list[Binding]] = {}
    for b in bindings:
        index.setdefault((b.target_type, b.target_id), []).append(b)
    return index


# Device slot: (bindings, winner id).
DEVICE_SLOT_ROWS = [
    pytest.param([], None, id="nothing-bound"),
    pytest.param([binding("p", "device_profile")], "p", id="profile-alone"),
    pytest.param(
        [binding("p", "device_profile", seq=2), binding("g", "device_group", seq=1)],
        "g",
        id="group-beats-newer-profile",
    ),
    pytest.param(
        [binding("g", "device_group", seq=2), binding("d", "device", seq=1)],
        "d",
        id="device-beats-newer-group",
    ),
    pytest.param(
        [binding("p", "device_profile", priority=99), binding("d", "device")],
        "d",
        id="specificity-beats-priority",
    ),
    pytest.param(
        [
            binding("g1", "device_group", priority=1, seq=1),
            binding("g2", "device_group", priority=5, seq=2, target_id="g2"),
        ],
        "g2",
        id="higher-priority-group",
    ),
    pytest.param(
        [
            binding("g1", "device_group", priority=5, seq=1),
            binding("g2", "device_group", priority=1, seq=2, target_id="g2"),
        ],
        "g1",
        id="priority-beats-newer",
    ),
    pytest.param(
        [
            binding("g1", "device_group", seq=7),
            binding("g2", "device_group", seq=3, target_id="g2"),
        ],
        "g1",
        id="equal-priority-newer-wins",
    ),
    pytest.param(
        [binding("g1", "device_group", priority=-1), binding("p", "device_profile")],
        "g1",
        id="negative-priority-group-still-beats-profile",
    ),
    pytest.param([binding("x", "device_group", target_id="g9")], None, id="other-group-ignored"),
    pytest.param([binding("x", "device", target_id="d2")], None, id="other-device-ignored"),
    pytest.param(
        [binding("x", "device_profile", target_id="dp2")], None, id="other-profile-ignored"
    ),
    pytest.param(
        [binding("s", "device", slot_key="sensor:sp-cam")], None, id="sensor-slot-not-device-slot"
    ),
]


@pytest.mark.parametrize(("bindings", "winner"), DEVICE_SLOT_ROWS)
def test_resolution_device_slot_winner(bindings: list[Binding], winner: str | None) -> None:
    chosen = winners(DEVICE, index_of(*bindings))
    assert (chosen["device"].id if "device" in chosen else None) == winner


# Component slot `component:cam` (sensor profile sp-cam): (bindings, winner id).
COMPONENT_SLOT_ROWS = [
    pytest.param([binding("s", "sensor_profile")], "s", id="sensor-profile-alone"),
    pytest.param(
        [
            binding("s", "sensor_profile", seq=3),
            binding("g", "device_group", slot_key="sensor:sp-cam", seq=2),
            binding("d", "device", slot_key="sensor:sp-cam", seq=1),
        ],
        "d",
        id="device-level-sensor-binding-beats-group-and-profile",
    ),
    pytest.param(
        [
            binding("d", "device", slot_key="sensor:sp-cam", priority=9, seq=2),
            binding("c", "component", seq=1),
        ],
        "c",
        id="component-beats-everything",
    ),
    pytest.param(
        [binding("c", "component", target_id="d1/fan")], None, id="other-component-ignored"
    ),
    pytest.param(
        [binding("s", "sensor_profile", target_id="sp-fan", slot_key="sensor:sp-fan")],
        None,
        id="other-sensor-profile-ignored",
    ),
    pytest.param(
        [binding("p", "device_profile", slot_key="sensor:sp-cam")],
        None,
        id="device-profile-never-configures-a-component",
    ),
]


@pytest.mark.parametrize(("bindings", "winner"), COMPONENT_SLOT_ROWS)
def test_resolution_component_slot_winner(bindings: list[Binding], winner: str | None) -> None:
    chosen = winners(DEVICE, index_of(*bindings))
    assert (chosen["component:cam"].id if "component:cam" in chosen else None) == winner


def test_resolution_sensor_binding_configures_every_component_of_that_profile() -> None:
    device = DeviceFacts(id="d1", profile_id="dp", groups=(), components=(("a", "sp"), ("b", "sp")))
    shared = binding("s", "sensor_profile", target_id="sp", slot_key="sensor:sp")
    chosen = winners(device, index_of(shared))
    assert {slot: b.id for slot, b in chosen.items()} == {"component:a": "s", "component:b": "s"}


# Explain: (bindings, the losing binding, the reason it lost).
REASON_ROWS = [
    pytest.param(
        [binding("d", "device"), binding("g", "device_group")],
        "g",
        "a device binding is more specific than a device_group binding",
        id="less-specific",
    ),
    pytest.param(
        [binding("c", "component"), binding("s", "sensor_profile")],
        "s",
        "a component binding is more specific than a sensor_profile binding",
        id="component-over-sensor-profile",
    ),
    pytest.param(
        [
            binding("g1", "device_group", priority=3, seq=1),
            binding("g2", "device_group", priority=1, seq=2, target_id="g2"),
        ],
        "g2",
        "lower priority (1 < 3 of g1)",
        id="lower-priority",
    ),
    pytest.param(
        [
            binding("g1", "device_group", seq=1),
            binding("g2", "device_group", seq=2, target_id="g2"),
        ],
        "g1",
        "older binding: g2 of equal specificity and priority is newer",
        id="older",
    ),
]


def _slot_of(loser: Binding) -> str:
    return "device" if loser.slot_key == "device" else "component:cam"


@pytest.mark.parametrize(("bindings", "loser", "reason"), REASON_ROWS)
def test_explain_loser_reason(bindings: list[Binding], loser: str, reason: str) -> None:
    (lost,) = [b for b in bindings if b.id == loser]
    slots = {s["slot"]: s for s in explain(DEVICE, index_of(*bindings))}
    candidates = {c["binding_id"]: c for c in slots[_slot_of(lost)]["candidates"]}
    assert candidates[loser]["won"] is False
    assert candidates[loser]["reason"] == reason


@pytest.mark.parametrize(
    "bindings",
    [
        pytest.param([binding("d", "device")], id="alone"),
        pytest.param([binding("d", "device"), binding("p", "device_profile")], id="with-loser"),
    ],
)
def test_explain_winner_reason(bindings: list[Binding]) -> None:
    (device_slot, *_) = explain(DEVICE, index_of(*bindings))
    assert device_slot["slot"] == "device"
    assert device_slot["winner"] == "d"
    first = device_slot["candidates"][0]
    assert (first["binding_id"], first["won"], first["reason"]) == (
        "d",
        True,
        "most specific binding for this slot",
    )


def test_explain_lists_every_slot_device_first_candidates_best_first() -> None:
    bindings = [
        binding("p", "device_profile", seq=1),
        binding("g", "device_group", seq=2),
        binding("s", "sensor_profile", seq=3),
    ]
    out = explain(DEVICE, index_of(*bindings))
    assert [(s["slot"], s["winner"]) for s in out] == [
        ("device", "g"),
        ("component:cam", "s"),
        ("component:fan", None),
    ]
    assert [c["binding_id"] for c in out[0]["candidates"]] == ["g", "p"]
    assert out[2]["candidates"] == []


# -- the document the winners yield, and when it counts as changed ------------------------------


def test_render_document_device_slot_first_inline_content_and_blob_download() -> None:
    chosen = {
        "component:cam": binding("c", "component", is_blob=True, size=48),
        "device": binding("d", "device"),
        "component:aux": binding("x", "component", target_id="d1/cam"),
    }
    contents = {"a-d": b'{"setpoint":21}', "a-x": b"{}"}
    document = msgspec.json.decode(render("d1", 7, "2026-01-01T00:00:00.000Z", chosen, contents))
    assert document == {
        "version": 7,
        "issued_at": "2026-01-01T00:00:00.000Z",
        "configs": [
            _config("device", "d", content={"setpoint": 21}),
            _config("component:aux", "x", content={}),
            _config("component:cam", "c", size=48, download="/v1/devices/d1/artefacts/a-c"),
        ],
    }


def _config(slot: str, name: str, *, size: int = 1, **extra: Any) -> dict[str, Any]:
    return {
        "slot": slot,
        "artefact_id": f"a-{name}",
        "name": name,
        "artefact_version": 1,
        "hash": f"sha256:{name}",
        "size": size,
        **extra,
    }


def test_render_nothing_bound_is_empty_configs() -> None:
    document = msgspec.json.decode(render("d1", 1, "t", {}, {}))
    assert document == {"version": 1, "issued_at": "t", "configs": []}


# (winners before, winners after, same fingerprint?): a change of fingerprint is a new version.
FINGERPRINT_ROWS = [
    pytest.param({}, {}, True, id="nothing-bound-twice"),
    pytest.param({"device": binding("d", "device")}, {}, False, id="unbound"),
    pytest.param({}, {"device": binding("d", "device")}, False, id="bound"),
    pytest.param(
        {"device": binding("d", "device")},
        {"device": binding("d", "device", artefact_id="a-new")},
        False,
        id="other-artefact",
    ),
    pytest.param(
        {"device": binding("d", "device"), "component:cam": binding("c", "component")},
        {"component:cam": binding("c", "component"), "device": binding("d", "device")},
        True,
        id="slot-order-irrelevant",
    ),
    pytest.param(
        {"device": binding("d", "device")},
        {"component:cam": binding("d", "component", artefact_id="a-d")},
        False,
        id="same-artefact-other-slot",
    ),
    # Only artefacts count: another binding of the same artefact changes nothing for the device.
    pytest.param(
        {"device": binding("g", "device_group", artefact_id="a-same")},
        {"device": binding("d", "device", artefact_id="a-same", priority=5)},
        True,
        id="same-artefact-other-binding",
    ),
]


@pytest.mark.parametrize(("before", "after", "same"), FINGERPRINT_ROWS)
def test_resolution_fingerprint_changes_with_the_artefacts(
    before: dict[str, Binding], after: dict[str, Binding], same: bool
) -> None:
    assert (fingerprint(before) == fingerprint(after)) is same
