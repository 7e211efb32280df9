"""Firmware and other files per device profile, with SemVer versions (SPEC sections 4 and 5).

Operators upload a file for a profile; devices of that profile list and download them with their
access key, and the telemetry answer names the newest `firmware` file by SemVer precedence. The
bytes live in the blob store under `files/<id>` (written before the row, removed again if the
row cannot be written), so a device download streams them or follows a fresh presigned URL.
"""

import hashlib
import re
from typing import Annotated, Any

import msgspec

from fleetstate.blobs import BlobStore, StoredContent
from fleetstate.domain import semver
from fleetstate.domain.clock import now_text
from fleetstate.domain.ids import new_id
from fleetstate.domain.pagination import Page, page_of
from fleetstate.errors import Conflict, Invalid, NotFound, TooLarge
from fleetstate.store import Connection, Store, WriteJob
from fleetstate.store.queries import files as q

MAX_CONTENT = 8 * 1024 * 1024
OCTETS = "application/octet-stream"
FIRMWARE = "firmware"
_FILE_TYPE = re.compile(r"^[a-z0-9_-]{1,32}$")


class NewFile(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    profile_id: str
    name: Annotated[str, msgspec.Meta(pattern=r"\S", max_length=256)]
    version: Annotated[str, msgspec.Meta(max_length=128, pattern=semver.SCHEMA_PATTERN)]
    content: Annotated[bytes, msgspec.Meta(min_length=1)]
    """The file's bytes, base64-encoded in JSON."""
    file_type: Annotated[str, msgspec.Meta(pattern=_FILE_TYPE.pattern)] = FIRMWARE


def download_path(device_id: str, file_id: str) -> str:
    """The device-API path (relative to the hub URL) that answers the file's bytes."""
    return f"/v1/devices/{device_id}/files/{file_id}/download"


def blob_key(file_id: str) -> str:
    return f"files/{file_id}"


async def create(store: Store, blobs: BlobStore, org_id: str, new: NewFile) -> dict[str, Any]:
    if not new.name.strip():
        raise Invalid("name must not be empty")
    semver.key(new.version)
    if not _FILE_TYPE.match(new.file_type):
        raise Invalid("file_type: use 1-32 of a-z 0-9 _ -, e.g. 'firmware'")
    if len(new.content) > MAX_CONTENT:
        raise TooLarge(f"the file is {len(new.content)} bytes; at most {MAX_CONTENT} for now")
    if not new.content:
        raise Invalid("content must not be empty")
    file_id = new_id()
    await blobs.put_bytes(blob_key(file_id), new.content, content_type=OCTETS)
    try:
        await store.write(_insert_job(org_id, file_id, new))
    except BaseException:
        await blobs.delete(blob_key(file_id))
        raise
    return await get(store, org_id, file_id)


def _insert_job(org_id: str, file_id: str, new: NewFile) -> WriteJob[None]:
    async def job(conn: Connection) -> None:
        if not await q.device_profile_exists(conn, org_id, new.profile_id):
            raise NotFound("device profile", new.profile_id)
        existing = await q.same_version(conn, new.profile_id, new.file_type, new.name, new.version)
        if existing:
            raise Conflict(f"{new.name} {new.version} exists already (file {existing})")
        await q.insert(
            conn,
            q.NewFileRow(
                id=file_id,
                org_id=org_id,
                profile_id=new.profile_id,
                name=new.name,
                version=new.version,
                file_type=new.file_type,
                sha256=hashlib.sha256(new.content).hexdigest(),
                size=len(new.content),
                blob_key=blob_key(file_id),
                created_at=now_text(),
            ),
        )

    return job


async def get(store: Store, org_id: str, file_id: str) -> dict[str, Any]:
    row = await store.query(lambda conn: q.get(conn, org_id, file_id))
    if row is None:
        raise NotFound("file", file_id)
    return msgspec.structs.asdict(row)


async def list_page(
    store: Store, org_id: str, page: Page, profile_id: str | None, file_type: str | None
) -> dict[str, Any]:
    after = page.cursor or ""
    rows = await store.query(
        lambda conn: q.page(conn, org_id, after, page.limit + 1, profile_id, file_type)
    )
    return page_of([msgspec.structs.asdict(r) for r in rows], page)


def _newest_first(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(rows, key=lambda r: (semver.key(r["version"]), r["id"]), reverse=True)


async def for_device(store: Store, device_id: str) -> list[dict[str, Any]]:
    """The files of the device's profile, newest version first."""
    rows = await store.query(lambda conn: q.for_device(conn, device_id))
    return _newest_first([msgspec.structs.asdict(r) for r in rows])


async def get_for_device(store: Store, device_id: str, file_id: str) -> dict[str, Any]:
    """One file of the device's profile; another profile's file is as unknown as a missing one."""
    row = await store.query(lambda conn: q.get_for_device(conn, device_id, file_id))
    if row is None:
        raise NotFound("file", file_id)
    return msgspec.structs.asdict(row)


async def stored_for_device(store: Store, device_id: str, file_id: str) -> StoredContent:
    """Where the bytes of one file of the device's profile are."""
    row = await store.query(lambda conn: q.bytes_for_device(conn, device_id, file_id))
    if row is None:
        raise NotFound("file", file_id)
    return StoredContent(
        size=row.size,
        hash="sha256:" + row.sha256,
        content_type=OCTETS,
        content=None if row.content is None else bytes(row.content),
        blob_key=row.blob_key,
    )


async def latest_firmware(conn: Connection, device_id: str) -> dict[str, Any] | None:
    """The newest `firmware` file of the device's profile by SemVer precedence (1.10.0 > 1.9.2);
    among equal precedence (builds of one version) the newest upload."""
    rows = await q.versions_for_device(conn, device_id, FIRMWARE)
    ranked = _newest_first([msgspec.structs.asdict(r) for r in rows])
    return ranked[0] if ranked else None
