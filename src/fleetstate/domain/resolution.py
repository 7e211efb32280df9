"""Which binding wins each slot of a device, why, and the desired document the winners make.

The rules of resolution without any I/O: `desired.resolve` loads the facts and bindings,
calls these, and writes what changed. Most specific target first (component, device, group,
profile), then the higher priority, then the newer binding.
"""

import hashlib
from typing import Any

import msgspec

RANK = {"component": 4, "device": 3, "device_group": 2, "device_profile": 1, "sensor_profile": 1}
DEVICE_SLOT = "device"


class Binding(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    target_type: str
    target_id: str
    slot_key: str
    artefact_id: str
    priority: int
    seq: int
    artefact_name: str
    artefact_version: int
    hash: str
    size: int
    is_blob: bool

    @property
    def order(self) -> tuple[int, int, int]:
        """Most specific first, then higher priority, then the newer binding."""
        return (RANK[self.target_type], self.priority, self.seq)


class DeviceFacts(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    profile_id: str
    groups: tuple[str, ...]
    components: tuple[tuple[str, str], ...]


class DesiredConfig(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    slot: str
    artefact_id: str
    name: str
    artefact_version: int
    hash: str
    size: int
    content: msgspec.Raw | None = None
    download: str | None = None


class DesiredDocument(msgspec.Struct, frozen=True, kw_only=True):
    version: int
    issued_at: str
    configs: list[DesiredConfig]


class DesiredChange(msgspec.Struct, frozen=True, kw_only=True):
    """A device whose document changed: what to deliver now."""

    device_id: str
    version: int
    document: bytes


_encoder = msgspec.json.Encoder()
document_decoder = msgspec.json.Decoder(DesiredDocument)


def candidates(
    device: DeviceFacts, index: dict[tuple[str, str], list[Binding]]
) -> dict[str, list[Binding]]:
    """Every binding that applies to each slot of the device, the winner first."""
    shared = [("device", device.id), *(("device_group", g) for g in device.groups)]
    slots: dict[str, list[Binding]] = {}
    device_keys = [*shared, ("device_profile", device.profile_id)]
    slots[DEVICE_SLOT] = _matching(index, device_keys, DEVICE_SLOT)
    for name, sensor_profile in device.components:
        keys = [("component", f"{device.id}/{name}"), *shared, ("sensor_profile", sensor_profile)]
        slots[f"component:{name}"] = _matching(index, keys, f"sensor:{sensor_profile}")
    return slots


def _matching(
    index: dict[tuple[str, str], list[Binding]], keys: list[tuple[str, str]], slot_key: str
) -> list[Binding]:
    found = [b for key in keys for b in index.get(key, ()) if b.slot_key == slot_key]
    return sorted(found, key=lambda b: b.order, reverse=True)


def winners(device: DeviceFacts, index: dict[tuple[str, str], list[Binding]]) -> dict[str, Binding]:
    return {slot: found[0] for slot, found in candidates(device, index).items() if found}


def fingerprint(chosen: dict[str, Binding]) -> str:
    text = ";".join(f"{slot}={b.artefact_id}" for slot, b in sorted(chosen.items()))
    return hashlib.sha256(text.encode()).hexdigest()


def render(
    device_id: str,
    version: int,
    issued_at: str,
    chosen: dict[str, Binding],
    contents: dict[str, bytes],
) -> bytes:
    configs = [
        DesiredConfig(
            slot=slot,
            artefact_id=b.artefact_id,
            name=b.artefact_name,
            artefact_version=b.artefact_version,
            hash=b.hash,
            size=b.size,
            content=None if b.is_blob else msgspec.Raw(contents[b.artefact_id]),
            download=f"/v1/devices/{device_id}/artefacts/{b.artefact_id}" if b.is_blob else None,
        )
        for slot, b in sorted(chosen.items(), key=lambda item: slot_order(item[0]))
    ]
    return _encoder.encode(DesiredDocument(version=version, issued_at=issued_at, configs=configs))


def slot_order(slot: str) -> tuple[bool, str]:
    return (slot != DEVICE_SLOT, slot)


def explain(
    device: DeviceFacts, index: dict[tuple[str, str], list[Binding]]
) -> list[dict[str, Any]]:
    """Per slot: every candidate binding, the winner, and why it beat each of the others."""
    out = []
    for slot, found in sorted(candidates(device, index).items(), key=lambda i: slot_order(i[0])):
        winner = found[0] if found else None
        out.append(
            {
                "slot": slot,
                "winner": winner.id if winner else None,
                "candidates": [_candidate(b, winner) for b in found],
            }
        )
    return out


def _candidate(binding: Binding, winner: Binding | None) -> dict[str, Any]:
    return {
        "binding_id": binding.id,
        "target_type": binding.target_type,
        "target_id": binding.target_id,
        "priority": binding.priority,
        "artefact_id": binding.artefact_id,
        "artefact_name": binding.artefact_name,
        "artefact_version": binding.artefact_version,
        "won": binding is winner,
        "reason": _reason(binding, winner),
    }


def _reason(binding: Binding, winner: Binding | None) -> str:
    if winner is None or binding is winner:
        return "most specific binding for this slot" if binding is winner else ""
    if RANK[winner.target_type] != RANK[binding.target_type]:
        return (
            f"a {winner.target_type} binding is more specific than a {binding.target_type} binding"
        )
    if winner.priority != binding.priority:
        return f"lower priority ({binding.priority} < {winner.priority} of {winner.id})"
    return f"older binding: {winner.id} of equal specificity and priority is newer"
