"""Telemetry from devices (SPEC section 4): the merged state per device and its history.

`record` is the one domain function for a telemetry message, whether it came over HTTP or MQTT.
Each message is one job of the store's group-commit writer: it merges the message into the
device's state row and appends one history row per key in the same transaction, so a storm of
messages costs a few commits, not one each. History rows older than the retention are pruned by
`retention_loop`.
"""

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import msgspec

from fleetstate import commands, desired, files, licenses
from fleetstate.clock import now_text, rfc3339, utcnow
from fleetstate.errors import Invalid, NotFound, TooLarge
from fleetstate.events import EventHub
from fleetstate.pagination import Page, page_of
from fleetstate.store import Connection, Store, WriteJob

log = logging.getLogger(__name__)

MAX_BODY = 128 * 1024
MAX_STRING = 1000
"""Longest string value, key or message, in UTF-8 bytes."""
RETENTION_INTERVAL_S = 3600.0
_PURGE_CHUNK = 5000
_FIRST_YEAR = 1970

Value = int | float | bool | str | None


class Telemetry(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    status: Literal["online", "offline", "error"]
    timestamp: str | float | None = None
    """ISO 8601 with a time zone, or seconds or milliseconds since the epoch; server time when
    absent."""
    telemetries: dict[str, Value] = {}
    override: bool = False
    """True: the message replaces the whole state instead of merging into it."""
    message: str | None = None


_decoder = msgspec.json.Decoder(Telemetry)
_state_decoder = msgspec.json.Decoder(dict[str, Any])
_encoder = msgspec.json.Encoder()


def decode(payload: bytes) -> Telemetry:
    """Raises TooLarge, Invalid, or msgspec's DecodeError / ValidationError for bad input."""
    if len(payload) > MAX_BODY:
        raise TooLarge(f"telemetry is {len(payload)} bytes; at most {MAX_BODY}")
    message = _decoder.decode(payload)
    for key, value in message.telemetries.items():
        if not key:
            raise Invalid("telemetry keys must not be empty")
        _check_length(f"key {key[:40]!r}...", key)
        if isinstance(value, str):
            _check_length(f"value of {key!r}", value)
    if message.message is not None:
        _check_length("message", message.message)
    return message


def _check_length(what: str, text: str) -> None:
    size = len(text.encode())
    if size > MAX_STRING:
        raise Invalid(f"{what} is {size} bytes; strings are at most {MAX_STRING} bytes")


_EPOCH_MS_FROM = 1e11
"""Epoch numbers from here on are milliseconds (1e11 s is the year 5138; 1e11 ms is 1973)."""


def timestamp_of(value: str | float | None) -> str:
    """Xyte's forms: ISO 8601 with a zone (`2021-08-04T07:45:44.122Z`), or epoch seconds or
    milliseconds, as a number or a numeric string."""
    if value is None:
        return now_text()
    try:
        if isinstance(value, str) and not value.strip().replace(".", "", 1).isdigit():
            moment = datetime.fromisoformat(value)
        else:
            seconds = float(value)
            if seconds >= _EPOCH_MS_FROM:
                seconds /= 1000
            moment = datetime.fromtimestamp(seconds, UTC)
    except (ValueError, OverflowError, OSError) as exc:
        raise Invalid(
            f"timestamp {value!r}: use ISO 8601 with a zone, or seconds or milliseconds since"
            " the epoch"
        ) from exc
    if moment.tzinfo is None:
        raise Invalid(f"timestamp {value!r} has no time zone; e.g. 2026-01-31T12:00:00Z")
    if moment.astimezone(UTC).year < _FIRST_YEAR:
        # Stored times compare as text, which holds only for four-digit years.
        raise Invalid(f"timestamp {value!r} is before {_FIRST_YEAR}")
    return rfc3339(moment)


def merge(state: dict[str, Any], values: dict[str, Value], *, override: bool) -> dict[str, Any]:
    """New keys are added, existing ones overwritten, a null removes the key; `override`
    starts from nothing."""
    merged = {} if override else dict(state)
    for key, value in values.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = value
    return merged


class _Entry(msgspec.Struct, kw_only=True):
    """One accepted message waiting for the writer."""

    device_id: str
    message: Telemetry
    moment: str
    values: dict[str, Value]
    then: "Callable[[Connection, str], Awaitable[Any]] | None"
    done: "asyncio.Future[Any]"


class Recorder:
    """Accepts telemetry messages (HTTP bodies, MQTT payloads) and writes them in batches.

    Every message that arrives while the writer is busy goes into one job, made when the
    writer takes it (`Store.submit_later`): one read of those devices' states, one statement
    per table for all of them, each message merged in the order it arrived. A message one at
    a time cost a savepoint and five statements, a third of the service's time under MQTT
    telemetry load (docs/benchmarks.md). Each caller still returns only once its own message
    is committed, and a message for a device that is gone fails alone."""

    def __init__(self, store: Store, events: EventHub) -> None:
        self._store, self._events = store, events
        self._pending: list[_Entry] = []

    async def record(self, device_id: str, payload: bytes) -> None:
        """Returns after the message committed, then tells the organization's subscribers."""
        await self._add(device_id, payload, None)

    async def record_and_answer(self, device_id: str, payload: bytes) -> "Answer":
        """`record`, and what the device should look at next, read in the same transaction:
        the HTTP answer costs no read of its own."""
        found: Answer = await self._add(device_id, payload, answer)
        return found

    def _add(
        self,
        device_id: str,
        payload: bytes,
        then: "Callable[[Connection, str], Awaitable[Any]] | None",
    ) -> "asyncio.Future[Any]":
        message = decode(payload)
        entry = _Entry(
            device_id=device_id,
            message=message,
            moment=timestamp_of(message.timestamp),
            # Status is injected into the telemetries: part of the state and of the history.
            values={**message.telemetries, "status": message.status},
            then=then,
            done=asyncio.get_running_loop().create_future(),
        )
        if not self._pending:
            # Before the append: a closed store raises here, and must not leave the entry
            # pending with no job to take it (every later message would wait for good).
            taken: list[list[_Entry]] = []
            written = self._store.submit_later(lambda: self._take(taken))
            written.add_done_callback(lambda w: self._settle(taken, w))
        self._pending.append(entry)
        return entry.done

    def _take(self, taken: list[list[_Entry]]) -> "WriteJob[list[tuple[str | None, Any]]]":
        batch, self._pending = self._pending, []
        taken.append(batch)
        return lambda conn: _write(conn, batch)

    def _settle(
        self, taken: list[list[_Entry]], written: "asyncio.Future[list[tuple[str | None, Any]]]"
    ) -> None:
        batch = taken[0] if taken else []
        failure = written.exception()
        if failure is not None:
            for entry in batch:
                entry.done.set_exception(failure)
            return
        for entry, (org_id, value) in zip(batch, written.result(), strict=True):
            if org_id is None:
                entry.done.set_exception(value)
                continue
            entry.done.set_result(value)
            self._events.publish(
                org_id,
                "telemetry",
                {
                    "device_id": entry.device_id,
                    "timestamp": entry.moment,
                    "telemetries": entry.values,
                },
            )


async def _write(conn: Connection, batch: list[_Entry]) -> list[tuple[str | None, Any]]:
    """The whole batch in one job: per message (org id, answer), or (None, the error)."""
    states = await _current(conn, list(dict.fromkeys(e.device_id for e in batch)))
    history: list[tuple[str, str, str, str]] = []
    changed: dict[str, str | None] = {}
    for entry in batch:
        found = states.get(entry.device_id)
        if found is None:
            continue
        state = found[1]
        merged = merge(state, entry.values, override=entry.message.override)
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
    await conn.executemany(
        "INSERT INTO telemetry_history (device_id, ts, key, value) VALUES (?, ?, ?, ?)", history
    )
    return [await _outcome(conn, entry, states) for entry in batch]


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
    for part in desired.chunks(device_ids):
        async with conn.execute(
            "SELECT d.id, d.org_id, s.state FROM devices d"
            " LEFT JOIN telemetry_state s ON s.device_id = d.id"
            f" WHERE d.id IN ({desired.marks(part)})",
            part,
        ) as cur:
            for row in await cur.fetchall():
                state = {} if row[2] is None else _state_decoder.decode(row[2])
                found[str(row[0])] = (str(row[1]), state)
    return found


async def _store(conn: Connection, states: dict[str, tuple[dict[str, Any], str | None]]) -> None:
    now = now_text()
    await conn.executemany(
        "INSERT INTO telemetry_state (device_id, state, message, updated_at) VALUES (?, ?, ?, ?)"
        " ON CONFLICT (device_id) DO UPDATE SET state = excluded.state,"
        " message = excluded.message, updated_at = excluded.updated_at",
        [
            (d, _encoder.encode(state).decode(), message, now)
            for d, (state, message) in states.items()
        ],
    )
    # A device talking over HTTP is seen too, although only MQTT sessions make it online.
    await conn.executemany(
        "UPDATE devices SET last_seen = ? WHERE id = ?", [(now, d) for d in states]
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
    async with conn.execute(
        "SELECT version FROM desired_documents WHERE device_id = ?", (device_id,)
    ) as cur:
        row = await cur.fetchone()
    new_licenses, info_version = await licenses.flags(conn, device_id)
    firmware = await files.latest_firmware(conn, device_id)
    return Answer(
        config_version=0 if row is None else int(row[0]),
        command=await commands.has_waiting(conn, device_id),
        new_licenses=new_licenses,
        info_version=info_version,
        latest_fw_version=None if firmware is None else firmware["version"],
        latest_fw_file_id=None if firmware is None else firmware["id"],
    )


# -- reading -----------------------------------------------------------------------------------


async def _require_device(store: Store, org_id: str, device_id: str) -> None:
    row = await store.fetchone(
        "SELECT 1 FROM devices WHERE id = ? AND org_id = ?", (device_id, org_id)
    )
    if row is None:
        raise NotFound("device", device_id)


async def state(store: Store, org_id: str, device_id: str) -> dict[str, Any]:
    await _require_device(store, org_id, device_id)
    row = await store.fetchone(
        "SELECT state, message, updated_at FROM telemetry_state WHERE device_id = ?", (device_id,)
    )
    return {
        "device_id": device_id,
        "state": {} if row is None else _state_decoder.decode(row[0]),
        "message": None if row is None else row[1],
        "updated_at": None if row is None else row[2],
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
    where, params = ["device_id = ?"], [device_id]
    for condition, value in (
        ("ts >= ?", query.start),
        ("ts < ?", query.end),
        ("key = ?", query.key),
    ):
        if value is not None:
            where.append(condition)
            params.append(value)
    if page.cursor:
        cursor_ts, _, cursor_id = page.cursor.rpartition(",")
        if not cursor_id.isdigit():
            raise Invalid("malformed cursor")
        where.append("(ts, id) > (?, ?)")
        params += [cursor_ts, str(int(cursor_id))]
    rows = await store.fetchall(
        f"SELECT id, ts, key, value FROM telemetry_history WHERE {' AND '.join(where)}"
        " ORDER BY ts, id LIMIT ?",
        [*params, page.limit + 1],
    )
    items = [
        {
            "cursor": f"{r[1]},{r[0]}",
            "timestamp": r[1],
            "key": r[2],
            "value": msgspec.json.decode(r[3]),
        }
        for r in rows
    ]
    result = page_of(items, page, key="cursor")
    for item in result["items"]:
        del item["cursor"]
    return {"device_id": device_id, **result}


def parse_time(name: str, value: str | None) -> str | None:
    """An RFC 3339 time given by a caller, in the stored format (UTC, milliseconds, `Z`)."""
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError as exc:
        raise Invalid(f"{name} must be an RFC 3339 time, e.g. 2026-01-31T12:00:00Z") from exc
    if moment.tzinfo is None:
        raise Invalid(f"{name} needs a time zone, e.g. 2026-01-31T12:00:00Z")
    return rfc3339(moment)


# -- retention ---------------------------------------------------------------------------------


async def purge_expired(store: Store, retention_days: int) -> int:
    """Delete history older than the retention, in chunks so no transaction grows large;
    returns how many rows went. A retention of 0 keeps everything."""
    if retention_days <= 0:
        return 0
    cutoff = rfc3339(utcnow() - timedelta(days=retention_days))

    async def job(conn: Connection) -> int:
        async with conn.execute(
            "DELETE FROM telemetry_history WHERE id IN"
            " (SELECT id FROM telemetry_history WHERE ts < ? LIMIT ?)",
            (cutoff, _PURGE_CHUNK),
        ) as cur:
            return cur.rowcount

    total = 0
    while True:
        deleted = await store.write(job)
        total += deleted
        if deleted < _PURGE_CHUNK:
            return total


async def retention_loop(
    store: Store, retention_days: int, interval_s: float = RETENTION_INTERVAL_S
) -> None:
    """Prune now and every `interval_s` seconds until cancelled."""
    while True:
        removed = await purge_expired(store, retention_days)
        if removed:
            log.info(
                "removed %d telemetry history rows older than %d days", removed, retention_days
            )
        await asyncio.sleep(interval_s)
