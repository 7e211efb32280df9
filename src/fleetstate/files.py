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

from fleetstate import semver
from fleetstate.blobs import BlobStore, StoredContent
from fleetstate.clock import now_text
from fleetstate.errors import Conflict, Invalid, NotFound, TooLarge
from fleetstate.ids import new_id
from fleetstate.pagination import Page, page_of
from fleetstate.store import Connection, Store, WriteJob

MAX_CONTENT = 8 * 1024 * 1024
OCTETS = "application/octet-stream"
FIRMWARE = "firmware"
_FILE_TYPE = re.compile(r"^[a-z0-9_-]{1,32}$")
_COLUMNS = "id, profile_id, name, version, file_type, sha256, size, created_at"


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
        async with conn.execute(
            "SELECT 1 FROM profiles WHERE id = ? AND org_id = ? AND kind = 'device'",
            (new.profile_id, org_id),
        ) as cur:
            if await cur.fetchone() is None:
                raise NotFound("device profile", new.profile_id)
        async with conn.execute(
            "SELECT id FROM files WHERE profile_id = ? AND file_type = ? AND name = ?"
            " AND version = ?",
            (new.profile_id, new.file_type, new.name, new.version),
        ) as cur:
            if existing := await cur.fetchone():
                raise Conflict(f"{new.name} {new.version} exists already (file {existing[0]})")
        await conn.execute(
            "INSERT INTO files (id, org_id, profile_id, name, version, file_type, sha256, size,"
            " blob_key, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                file_id,
                org_id,
                new.profile_id,
                new.name,
                new.version,
                new.file_type,
                hashlib.sha256(new.content).hexdigest(),
                len(new.content),
                blob_key(file_id),
                now_text(),
            ),
        )

    return job


async def get(store: Store, org_id: str, file_id: str) -> dict[str, Any]:
    row = await store.fetchone(
        f"SELECT {_COLUMNS} FROM files WHERE id = ? AND org_id = ?", (file_id, org_id)
    )
    if row is None:
        raise NotFound("file", file_id)
    return dict(row)


async def list_page(
    store: Store, org_id: str, page: Page, profile_id: str | None, file_type: str | None
) -> dict[str, Any]:
    where, params = "org_id = ? AND id > ?", [org_id, page.cursor or ""]
    for column, value in (("profile_id", profile_id), ("file_type", file_type)):
        if value is not None:
            where += f" AND {column} = ?"
            params.append(value)
    rows = await store.fetchall(
        f"SELECT {_COLUMNS} FROM files WHERE {where} ORDER BY id LIMIT ?",
        [*params, page.limit + 1],
    )
    return page_of([dict(r) for r in rows], page)


def _newest_first(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(rows, key=lambda r: (semver.key(r["version"]), r["id"]), reverse=True)


async def for_device(store: Store, device_id: str) -> list[dict[str, Any]]:
    """The files of the device's profile, newest version first."""
    rows = await store.fetchall(
        f"SELECT {_COLUMNS} FROM files WHERE profile_id ="
        " (SELECT profile_id FROM devices WHERE id = ?)",
        (device_id,),
    )
    return _newest_first([dict(r) for r in rows])


async def get_for_device(store: Store, device_id: str, file_id: str) -> dict[str, Any]:
    """One file of the device's profile; another profile's file is as unknown as a missing one."""
    row = await store.fetchone(
        f"SELECT {_COLUMNS} FROM files WHERE id = ? AND profile_id ="
        " (SELECT profile_id FROM devices WHERE id = ?)",
        (file_id, device_id),
    )
    if row is None:
        raise NotFound("file", file_id)
    return dict(row)


async def stored_for_device(store: Store, device_id: str, file_id: str) -> StoredContent:
    """Where the bytes of one file of the device's profile are."""
    row = await store.fetchone(
        "SELECT sha256, size, content, blob_key FROM files WHERE id = ? AND profile_id ="
        " (SELECT profile_id FROM devices WHERE id = ?)",
        (file_id, device_id),
    )
    if row is None:
        raise NotFound("file", file_id)
    return StoredContent(
        size=row["size"],
        hash="sha256:" + row["sha256"],
        content_type=OCTETS,
        content=None if row["content"] is None else bytes(row["content"]),
        blob_key=row["blob_key"],
    )


async def latest_firmware(conn: Connection, device_id: str) -> dict[str, Any] | None:
    """The newest `firmware` file of the device's profile by SemVer precedence (1.10.0 > 1.9.2);
    among equal precedence (builds of one version) the newest upload."""
    async with conn.execute(
        "SELECT id, version FROM files WHERE file_type = ? AND profile_id ="
        " (SELECT profile_id FROM devices WHERE id = ?)",
        (FIRMWARE, device_id),
    ) as cur:
        rows = await cur.fetchall()
    ranked = _newest_first([dict(r) for r in rows])
    return ranked[0] if ranked else None
