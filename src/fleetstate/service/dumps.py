"""Dumps: state reports a device uploads for remote support (Xyte's Send Dump API).

A device posts the first part with its content type and file name and gets the dump's id; it may
append more parts with that id. The bytes are kept in the blob store under `dumps/<id>` (an
append rewrites the blob whole: dumps are bounded, so the cost is bounded too); operators list
and download a device's dumps. One lock per dump orders concurrent appends, so none is lost.
"""

import re

import msgspec

from fleetstate.blobs import BlobStore, StoredContent, read_all
from fleetstate.config import DumpConfig
from fleetstate.domain.clock import now_text
from fleetstate.domain.ids import new_id
from fleetstate.domain.pagination import Page, page_of
from fleetstate.errors import Invalid, NotFound, TooLarge
from fleetstate.service.coordination import KeyedLocks, LocalLocks
from fleetstate.store import Connection, Store, WriteJob
from fleetstate.store.queries import dumps as q
from fleetstate.store.queries import sql

_CONTENT_TYPE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]*/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]*$")
_FILE_NAME = re.compile(r"^[^/\\\x00-\x1f\x7f]{1,255}$")


class Dump(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    device_id: str
    file_name: str
    content_type: str
    size: int
    parts: int
    created_at: str
    updated_at: str


class DumpPage(msgspec.Struct, frozen=True, kw_only=True):
    items: list[Dump]
    next_cursor: str | None


def blob_key(dump_id: str) -> str:
    return f"dumps/{dump_id}"


def check_names(content_type: str, file_name: str) -> None:
    if not _CONTENT_TYPE.match(content_type) or len(content_type) > 127:
        raise Invalid(f"content type {content_type[:60]!r}: use type/subtype, e.g. text/plain")
    if not _FILE_NAME.match(file_name) or file_name in (".", ".."):
        raise Invalid("file name: 1-255 characters, no slashes or control characters")


def check_size(size: int, limit: int) -> None:
    if size > limit:
        raise TooLarge(f"the dump would be {size} bytes; at most {limit}")


class Dumps:
    def __init__(
        self,
        store: Store,
        blobs: BlobStore,
        config: DumpConfig,
        locks: KeyedLocks | None = None,
    ) -> None:
        self._store, self._blobs, self.max_size = store, blobs, config.max_size
        self._appends = LocalLocks() if locks is None else locks
        """Appends to one dump run one at a time, in order (read, grow, write back)."""

    async def create(self, device_id: str, content_type: str, file_name: str, data: bytes) -> Dump:
        check_names(content_type, file_name)
        check_size(len(data), self.max_size)
        if not data:
            raise Invalid("a dump must not be empty")
        dump_id = new_id()
        await self._blobs.put_bytes(blob_key(dump_id), data, content_type=content_type)

        async def job(conn: Connection) -> None:
            org_id = await q.org_of_device(conn, device_id)
            if org_id is None:
                raise NotFound("device", device_id)
            now = now_text()
            await q.insert(
                conn,
                q.NewDumpRow(
                    id=dump_id,
                    org_id=org_id,
                    device_id=device_id,
                    file_name=file_name,
                    content_type=content_type,
                    size=len(data),
                    blob_key=blob_key(dump_id),
                    created_at=now,
                    updated_at=now,
                ),
            )

        try:
            await self._store.write(job)
        except BaseException:
            await self._blobs.delete(blob_key(dump_id))
            raise
        return await self._get(device_id, dump_id)

    async def append(self, device_id: str, dump_id: str, data: bytes) -> Dump:
        """Add bytes at the end; refused whole (413) when the dump would grow past the limit."""
        if not data:
            raise Invalid("nothing to append")
        async with self._appends.hold(dump_id):
            found = await self._get(device_id, dump_id)
            check_size(found.size + len(data), self.max_size)
            before = await read_all(self._blobs, blob_key(dump_id), limit=self.max_size)
            await self._blobs.put_bytes(
                blob_key(dump_id), before + data, content_type=found.content_type
            )
            await self._store.write(_grown_job(dump_id, len(before) + len(data)))
        return await self._get(device_id, dump_id)

    async def _get(self, device_id: str, dump_id: str) -> Dump:
        row = await self._store.query(lambda conn: q.get(conn, device_id, dump_id))
        if row is None:
            raise NotFound("dump", dump_id)
        return _dump(row)


def _dump(row: q.DumpRow) -> Dump:
    return Dump(**msgspec.structs.asdict(row))


def _grown_job(dump_id: str, size: int) -> WriteJob[None]:
    async def job(conn: Connection) -> None:
        await q.grown(conn, dump_id, size, now_text())

    return job


# -- what operators see --------------------------------------------------------------------------


async def _require_device(store: Store, org_id: str, device_id: str) -> None:
    if not await store.query(lambda conn: sql.exists(conn, "devices", org_id, device_id)):
        raise NotFound("device", device_id)


async def list_page(store: Store, org_id: str, device_id: str, page: Page) -> DumpPage:
    """The device's dumps, oldest first."""
    await _require_device(store, org_id, device_id)
    after = page.cursor or ""
    rows = await store.query(lambda conn: q.page(conn, device_id, after, page.limit + 1))
    listed = page_of([msgspec.structs.asdict(r) for r in rows], page)
    return DumpPage(items=[Dump(**r) for r in listed["items"]], next_cursor=listed["next_cursor"])


async def stored(
    store: Store, org_id: str, device_id: str, dump_id: str
) -> tuple[StoredContent, str]:
    """Where a dump's bytes are, and its file name."""
    row = await store.query(lambda conn: q.blob(conn, org_id, device_id, dump_id))
    if row is None:
        raise NotFound("dump", dump_id)
    # No hash is kept (an append would re-read the whole dump for it): downloads need none.
    content = StoredContent(
        size=row.size, hash="", content_type=row.content_type, blob_key=row.blob_key
    )
    return content, row.file_name
