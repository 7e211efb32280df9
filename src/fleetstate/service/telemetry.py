"""Telemetry from devices (SPEC section 4): the merged state per device and its history.

`record` is the one domain function for a telemetry message, whether it came over HTTP or MQTT.
Each message is one job of the store's group-commit writer: it merges the message into the
device's state row and appends one history row per key in the same transaction, so a storm of
messages costs a few commits, not one each. History rows older than the retention are pruned by
`service.retention`.

One device cannot make the service grow without bound (`domain.limits`): a message has at
most `telemetry_keys_per_message` keys, a device's state at most `telemetry_keys_per_device`, a
timestamp may not lie in the future, and messages beyond `telemetry_rate_per_device` are dropped
before they cost a decode, told with `rate_limited`.
"""

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec

from fleetstate.config import Limits
from fleetstate.domain.clock import now_text
from fleetstate.domain.limits import RateLimiter
from fleetstate.domain.pagination import Page, page_of
from fleetstate.domain.telemetry import (
    MAX_BODY,
    Telemetry,
    Value,
    decode,
    merge,
    parse_time,
    timestamp_of,
)
from fleetstate.domain.telemetry import decimal as _decimal
from fleetstate.errors import FleetstateError, Invalid, NotFound, RateLimited, TooLarge
from fleetstate.logs import device_context
from fleetstate.service import commands, files, licenses, retention
from fleetstate.service.events import EventBus
from fleetstate.store import Connection, Store, WriteJob
from fleetstate.store.queries import sql
from fleetstate.store.queries import telemetry as q

__all__ = ["MAX_BODY", "Telemetry", "parse_time"]
"""Re-exported from `domain.telemetry` for the callers that import them from here."""

log = logging.getLogger(__name__)

TELL_EVERY_S = 1.0
"""A device over its rate hears `rate_limited` at most this often over MQTT: each excess
message answered would double what a flooding device costs."""
_DEFAULTS = Limits()


_state_decoder = msgspec.json.Decoder(dict[str, Any])
_encoder = msgspec.json.Encoder()

Settled = Callable[[Any, "BaseException | None"], None]
"""Told once a message is settled: (its answer, None) after its commit, or (None, the error)."""


class _Entry(msgspec.Struct, kw_only=True):
    """One accepted message waiting for the writer."""

    device_id: str
    message: Telemetry
    moment: str
    values: dict[str, Value]
    then: "Callable[[Connection, str], Awaitable[Any]] | None"
    settled: Settled


class Recorder:
    """Accepts telemetry messages (HTTP bodies, MQTT payloads) and writes them in batches.

    Every message that arrives while the writer is busy goes into one job, made when the
    writer takes it (`Store.submit_later`): one read of those devices' states, one statement
    per table for all of them, each message merged in the order it arrived. A message one at
    a time cost a savepoint and five statements, a third of the service's time under MQTT
    telemetry load (docs/benchmarks.md). Each caller still returns only once its own message
    is committed, and a message for a device that is gone fails alone."""

    def __init__(self, store: Store, events: EventBus, limits: Limits = _DEFAULTS) -> None:
        self._store, self._events, self._limits = store, events, limits
        self._pending: list[_Entry] = []
        self._rate = RateLimiter(limits.telemetry_rate_per_device, limits.telemetry_burst)
        self._told: dict[str, float] = {}
        self.rate_limited_total = 0
        """Messages dropped for coming faster than `telemetry_rate_per_device` (acknowledged)."""

    async def record(self, device_id: str, payload: bytes) -> None:
        """Returns after the message committed, then tells the organization's subscribers.
        A message over the device's rate is dropped: RateLimited now and then, so the device
        hears why, and quietly in between."""
        done: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.record_soon(device_id, payload, functools.partial(_resolve, done))
        await done

    def record_soon(self, device_id: str, payload: bytes, settled: Settled) -> None:
        """`record` without a task or a future of its own: `settled` hears (None, None) once
        the message committed or was quietly dropped for the rate, or (None, the error), at
        once when it is refused before the writer. An MQTT message costs no task this way, the
        largest part of the loop's own work per message (docs/benchmarks.md)."""
        if self._over_rate(device_id):
            settled(None, self._refusal() if self._tell(device_id) else None)
            return
        try:
            self._enqueue(device_id, payload, None, settled)
        except (msgspec.DecodeError, FleetstateError) as exc:  # bad input, or a closed store
            settled(None, exc)

    async def record_and_answer(self, device_id: str, payload: bytes) -> "Answer":
        """`record`, and what the device should look at next, read in the same transaction:
        the HTTP answer costs no read of its own. Every message over the rate is refused."""
        if self._over_rate(device_id):
            raise self._refusal()
        found: Answer = await self._add(device_id, payload, answer)
        return found

    def _over_rate(self, device_id: str) -> bool:
        if self._rate.allow(device_id):
            return False
        self.rate_limited_total += 1
        return True

    def _refusal(self) -> RateLimited:
        rate = self._limits.telemetry_rate_per_device
        return RateLimited(
            f"over the telemetry rate of {rate:g} messages a second"
            " (telemetry_rate_per_device); this message was dropped"
        )

    def _tell(self, device_id: str) -> bool:
        now = time.monotonic()
        if now - self._told.get(device_id, -TELL_EVERY_S) < TELL_EVERY_S:
            return False
        if len(self._told) > 4096:  # forget devices told long ago: bounded, and loses nothing
            self._told = {d: t for d, t in self._told.items() if now - t < TELL_EVERY_S}
        self._told[device_id] = now
        return True

    def _add(
        self,
        device_id: str,
        payload: bytes,
        then: "Callable[[Connection, str], Awaitable[Any]] | None",
    ) -> "asyncio.Future[Any]":
        done: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._enqueue(device_id, payload, then, functools.partial(_resolve, done))
        return done

    def _enqueue(
        self,
        device_id: str,
        payload: bytes,
        then: "Callable[[Connection, str], Awaitable[Any]] | None",
        settled: Settled,
    ) -> None:
        device_context(device_id)
        message = decode(payload, self._limits)
        entry = _Entry(
            device_id=device_id,
            message=message,
            moment=timestamp_of(message.timestamp, self._limits.telemetry_future_s),
            # Status is injected into the telemetries: part of the state and of the history.
            values={**message.telemetries, "status": message.status},
            then=then,
            settled=settled,
        )
        if not self._pending:
            # Before the append: a closed store raises here, and must not leave the entry
            # pending with no job to take it (every later message would wait for good).
            taken: list[list[_Entry]] = []
            written = self._store.submit_later(lambda: self._take(taken))
            written.add_done_callback(lambda w: self._settle(taken, w))
        self._pending.append(entry)

    def _take(self, taken: list[list[_Entry]]) -> "WriteJob[list[tuple[str | None, Any]]]":
        batch, self._pending = self._pending, []
        taken.append(batch)
        most = self._limits.telemetry_keys_per_device
        return lambda conn: _write(conn, batch, most)

    def _settle(
        self, taken: list[list[_Entry]], written: "asyncio.Future[list[tuple[str | None, Any]]]"
    ) -> None:
        batch = taken[0] if taken else []
        failure = written.exception()
        if failure is not None:
            for entry in batch:
                _tell(entry, None, failure)
            return
        for entry, (org_id, value) in zip(batch, written.result(), strict=True):
            if org_id is None:
                _tell(entry, None, value)
                continue
            _tell(entry, value, None)
            self._events.publish(
                org_id,
                "telemetry",
                {
                    "device_id": entry.device_id,
                    "timestamp": entry.moment,
                    "telemetries": entry.values,
                },
            )


def _resolve(done: "asyncio.Future[Any]", value: Any, failure: BaseException | None) -> None:
    if done.done():
        return  # its caller was cancelled (a client gone): nobody waits for the outcome
    if failure is None:
        done.set_result(value)
    else:
        done.set_exception(failure)


def _tell(entry: _Entry, value: Any, failure: BaseException | None) -> None:
    """One entry's outcome to its caller; a caller's fault must not keep the rest untold."""
    try:
        entry.settled(value, failure)
    except Exception:
        log.exception("telling the outcome of a telemetry message of %s failed", entry.device_id)


async def _write(
    conn: Connection, batch: list[_Entry], most_keys: int
) -> list[tuple[str | None, Any]]:
    """The whole batch in one job: per message (org id, answer), or (None, the error)."""
    states = await _current(conn, list(dict.fromkeys(e.device_id for e in batch)))
    history: list[tuple[str, str, str, str]] = []
    changed: dict[str, str | None] = {}
    refused: dict[int, FleetstateError] = {}
    for n, entry in enumerate(batch):
        found = states.get(entry.device_id)
        if found is None:
            continue
        state = found[1]
        merged = merge(state, entry.values, override=entry.message.override)
        if len(merged) > most_keys and len(merged) > len(state):
            refused[n] = TooLarge(
                f"the device's telemetry state would hold {len(merged)} keys; at most"
                f" {most_keys} (send null for keys no longer used, or override)"
            )
            continue
        # Keys an override drops leave a null in the history, as if removed one by one.
        gone = [k for k in state if k not in entry.values] if entry.message.override else []
        states[entry.device_id] = (found[0], merged)
        changed[entry.device_id] = entry.message.message
        history += [
            (entry.device_id, entry.moment, k, _encoder.encode(v).decode())
            for k, v in entry.values.items()
        ]
        history += [(entry.device_id, entry.moment, k, "null") for k in gone]
    await _store(conn, {d: (states[d][1], message) for d, message in changed.items()})
    await q.add_history(conn, history)
    return [
        (None, refused[n]) if n in refused else await _outcome(conn, entry, states)
        for n, entry in enumerate(batch)
    ]


async def _outcome(
    conn: Connection, entry: _Entry, states: dict[str, tuple[str, dict[str, Any]]]
) -> tuple[str | None, Any]:
    found = states.get(entry.device_id)
    if found is None:
        return None, NotFound("device", entry.device_id)
    return found[0], None if entry.then is None else await entry.then(conn, entry.device_id)


async def _current(
    conn: Connection, device_ids: list[str]
) -> dict[str, tuple[str, dict[str, Any]]]:
    """(org id, state) of each device that exists."""
    found: dict[str, tuple[str, dict[str, Any]]] = {}
    for row in await q.states(conn, device_ids):
        state = {} if row.state is None else _state_decoder.decode(row.state)
        found[row.id] = (row.org_id, state)
    return found


async def _store(conn: Connection, states: dict[str, tuple[dict[str, Any], str | None]]) -> None:
    # A device talking over HTTP is seen too, although only MQTT sessions make it online.
    await q.set_states(
        conn,
        [(d, _encoder.encode(state).decode(), message) for d, (state, message) in states.items()],
        now_text(),
    )


class Answer(msgspec.Struct, frozen=True, kw_only=True):
    """What the telemetry answer tells the device to look at next (SPEC section 4)."""

    config_version: int
    command: bool
    new_licenses: bool
    info_version: int
    latest_fw_version: str | None
    latest_fw_file_id: str | None
    space_data_version: int = 0
    """Spaces are not modelled: always 0, so a device never fetches space data."""
    success: bool = True


async def answer(conn: Connection, device_id: str) -> Answer:
    version = await q.desired_version(conn, device_id)
    new_licenses, info_version = await licenses.flags(conn, device_id)
    firmware = await files.latest_firmware(conn, device_id)
    return Answer(
        config_version=version or 0,
        command=await commands.has_waiting(conn, device_id),
        new_licenses=new_licenses,
        info_version=info_version,
        latest_fw_version=None if firmware is None else firmware["version"],
        latest_fw_file_id=None if firmware is None else firmware["id"],
    )


# -- reading -----------------------------------------------------------------------------------


async def _require_device(store: Store, org_id: str, device_id: str) -> None:
    if not await store.query(lambda conn: sql.exists(conn, "devices", org_id, device_id)):
        raise NotFound("device", device_id)


async def state(store: Store, org_id: str, device_id: str) -> dict[str, Any]:
    await _require_device(store, org_id, device_id)
    row = await store.query(lambda conn: q.state(conn, device_id))
    return {
        "device_id": device_id,
        "state": {} if row is None else _state_decoder.decode(row.state),
        "message": None if row is None else row.message,
        "updated_at": None if row is None else row.updated_at,
    }


class HistoryQuery(msgspec.Struct, frozen=True, kw_only=True):
    start: str | None = None
    end: str | None = None
    key: str | None = None


async def history(
    store: Store, org_id: str, device_id: str, query: HistoryQuery, page: Page
) -> dict[str, Any]:
    """Rows in time order, `start` inclusive and `end` exclusive; the cursor is `<ts>,<id>`."""
    await _require_device(store, org_id, device_id)
    after = None
    if page.cursor:
        cursor_ts, _, cursor_id = page.cursor.rpartition(",")
        if not _decimal(cursor_id):
            raise Invalid("malformed cursor")
        after = (cursor_ts, int(cursor_id))
    given = q.HistoryFilter(start=query.start, end=query.end, key=query.key, after=after)
    rows = await store.query(lambda conn: q.history(conn, device_id, given, page.limit + 1))
    items = [
        {
            "cursor": f"{r.ts},{r.id}",
            "timestamp": r.ts,
            "key": r.key,
            "value": msgspec.json.decode(r.value),
        }
        for r in rows
    ]
    result = page_of(items, page, key="cursor")
    for item in result["items"]:
        del item["cursor"]
    return {"device_id": device_id, **result}


# -- retention ---------------------------------------------------------------------------------


async def purge_expired(store: Store, retention_days: int) -> int:
    """Delete telemetry history older than the retention (`service.retention` runs it with
    the other histories); returns how many rows went. A retention of 0 keeps everything."""
    return await retention.purge_older(store, retention.TELEMETRY, retention_days)
