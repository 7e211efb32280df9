"""The desired-state document as Xyte's configuration object, and a Xyte device's echo of it.

A Xyte device reads `GET /v1/devices/{id}/config` as `{device_id, name, version, last_updated,
config}` and uses `config` as its configuration, so `config` is the content of the device's
`device` slot itself (the device-profile artefact's JSON), `{}` while no binding applies.
Component slots (`component:<name>`) come beside it in `components: {<name>: <content>}`, and the
desired-state document itself (with hashes, as on MQTT) in `desired`; Xyte firmware ignores
both. A slot whose artefact lives in the blob store is described instead of inlined:
`{"download": <url>, "hash", "size"}`.

A Xyte device posts that whole answer back (Set Config) once it applied it: that is its report
that it runs `version`. For the current version each slot is judged by content: the same content
is ACCEPTED with the desired hash, other content FAILED with a message naming the slot.
"""

from typing import Annotated, Any

import msgspec

from fleetstate.domain.canonical import canonical_bytes, content_hash
from fleetstate.errors import Invalid, NotFound
from fleetstate.service import reports
from fleetstate.service.desired import DEVICE_SLOT
from fleetstate.store import Connection, Store
from fleetstate.store.queries import xyte as q

COMPONENT_PREFIX = "component:"


class XyteConfig(msgspec.Struct, frozen=True, kw_only=True):
    """What `GET /v1/devices/{id}/config` answers (Xyte's Get Config, API version 1.0.7)."""

    device_id: str
    name: str
    version: int
    last_updated: str
    config: Any
    components: dict[str, Any]
    desired: msgspec.Raw
    """The desired-state document itself (as on MQTT), for devices that report per slot."""


class ConfigEcho(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A Xyte device's Set Config: the Get Config answer it applied, posted back whole."""

    config: Any
    version: int | Annotated[str, msgspec.Meta(max_length=20)] | None = None
    """Omitted: the device speaks of the current version."""
    components: dict[str, Any] | None = None
    device_id: str | None = None
    name: str | None = None
    last_updated: str | None = None
    desired: Any = None
    """Echoed back with the rest; the content judged is `config` and `components`."""


class _Slot(msgspec.Struct, frozen=True, kw_only=True):
    """A slot of the stored desired document, its content decoded."""

    slot: str
    artefact_id: str
    hash: str
    size: int
    content: Any = None
    download: str | None = None


class _Document(msgspec.Struct, frozen=True, kw_only=True):
    configs: list[_Slot]


_document = msgspec.json.Decoder(_Document)


def _slot_view(slot: _Slot, hub_url: str) -> Any:
    if slot.download is None:
        return slot.content
    return {"download": hub_url + (slot.download or ""), "hash": slot.hash, "size": slot.size}


def view_of(document: bytes, hub_url: str) -> tuple[Any, dict[str, Any]]:
    """(`config`, `components`) of a desired-state document."""
    parsed = _document.decode(document)
    config: Any = {}
    components: dict[str, Any] = {}
    for slot in parsed.configs:
        if slot.slot == DEVICE_SLOT:
            config = _slot_view(slot, hub_url)
        elif slot.slot.startswith(COMPONENT_PREFIX):
            components[slot.slot.removeprefix(COMPONENT_PREFIX)] = _slot_view(slot, hub_url)
    return config, components


async def device_config(store: Store, device_id: str, hub_url: str) -> XyteConfig:
    row = await store.query(lambda conn: q.config(conn, device_id))
    if row is None:
        raise NotFound("device", device_id)
    config, components = view_of(bytes(row.document), hub_url)
    return XyteConfig(
        device_id=device_id,
        name=row.name,
        version=row.version,
        last_updated=row.issued_at,
        config=config,
        components=components,
        desired=msgspec.Raw(bytes(row.document)),
    )


async def record_echo(
    store: Store, device_id: str, echo: ConfigEcho, hub_url: str, raw: bytes
) -> reports.Outcome:
    """The echo as a report of the version it names, in one write job."""
    if echo.device_id is not None and echo.device_id != device_id:
        raise Invalid(f"device_id {echo.device_id!r} is not this device")

    async def job(conn: Connection) -> reports.Outcome:
        row = await q.document(conn, device_id)
        if row is None:
            raise NotFound("device", device_id)
        version = _version(echo.version, int(row.version))
        report = reports.Report(version=version, status="ACCEPTED")
        if version == int(row.version):
            report = _judged(echo, bytes(row.document), hub_url, version)
        return await reports.apply(conn, device_id, report, raw.decode(errors="replace"))

    return await store.write(job)


def _version(given: int | str | None, current: int) -> int:
    if given is None:
        return current
    if isinstance(given, str):
        if not (given.strip().isascii() and given.strip().isdigit()):
            raise Invalid(f"version must be a whole number, got {given!r}")
        return int(given)
    return given


def _judged(echo: ConfigEcho, document: bytes, hub_url: str, version: int) -> reports.Report:
    """A report with one entry per desired slot: the desired hash where the echoed content is the
    desired content, the echoed content's hash otherwise (reports then say FAILED, naming it)."""
    parsed = _document.decode(document)
    echoed_components = echo.components or {}
    slots = []
    for slot in parsed.configs:
        if slot.slot == DEVICE_SLOT:
            given, present = echo.config, True
        else:
            name = slot.slot.removeprefix(COMPONENT_PREFIX)
            given, present = echoed_components.get(name), name in echoed_components
        if not present:
            slots.append(
                reports.SlotReport(
                    slot=slot.slot,
                    status="FAILED",
                    artefact_id=slot.artefact_id,
                    message=f"slot {slot.slot!r} is missing from the echoed configuration",
                )
            )
            continue
        same = given == _slot_view(slot, hub_url)
        hash_ = slot.hash if same else content_hash(canonical_bytes(given))
        problem = (
            None
            if same
            else (
                f"slot {slot.slot!r} runs other content than desired version {version}"
                f" (expected {slot.hash}, echoed {hash_})"
            )
        )
        slots.append(
            reports.SlotReport(
                slot=slot.slot,
                status="ACCEPTED",
                artefact_id=slot.artefact_id,
                hash=hash_,
                message=problem,
            )
        )
    problems = [s.message for s in slots if s.message] + _unexpected(echo, parsed.configs)
    return reports.Report(
        version=version,
        status="FAILED" if problems else "ACCEPTED",
        configs=slots,
        message="; ".join(problems) or None,
    )


def _unexpected(echo: ConfigEcho, configs: list[_Slot]) -> list[str]:
    """Content for slots the desired state does not have."""
    desired = {c.slot for c in configs}
    problems = []
    if DEVICE_SLOT not in desired and echo.config not in ({}, None):
        problems.append("the echoed config is not empty, but no configuration is bound")
    problems += [
        f"component {name!r} is not in the desired state"
        for name in echo.components or {}
        if COMPONENT_PREFIX + name not in desired
    ]
    return problems
