"""Large config artefacts through the blob store: upload URLs, finalize, downloads, cleanup.

The flow (SPEC sections 2 and 5): `create_upload` records a pending upload and hands out a
presigned PUT URL for `uploads/<upload id>`; the client sends the bytes straight to the blob store;
`finalize` moves them to `artefacts/<artefact id>` (where no client URL can touch them any more),
checks the size and SHA-256 of what landed there, validates JSON content against the profile's
schema, and only then creates the next version of the artefact. Any check that fails deletes the
upload: the same bytes would fail again. Uploads never finalized are removed after their expiry by
`cleanup_loop`, a named task of the service's TaskGroup.

No transaction is ever held across blob I/O: blobs are moved and checked first, then one write
job deletes the upload row and inserts the artefact together.
"""

import asyncio
import contextlib
import logging
from datetime import datetime, timedelta
from typing import Annotated, Any

import msgspec

from fleetstate.blobs import UPLOADS_PREFIX, BlobStore, StoredContent, read_all
from fleetstate.blobs.store import check_sha256, check_upload_terms
from fleetstate.config import UploadConfig
from fleetstate.domain.clock import rfc3339, utcnow
from fleetstate.domain.ids import new_id
from fleetstate.domain.names import Name
from fleetstate.domain.pagination import Page
from fleetstate.errors import Conflict, FleetstateError, Invalid, NotFound, SchemaInvalid, TooLarge
from fleetstate.service import artefacts, profiles
from fleetstate.store import Connection, Store
from fleetstate.store.queries import artefacts as artefact_q
from fleetstate.store.queries import uploads as q

log = logging.getLogger(__name__)

ARTEFACTS_PREFIX = "artefacts/"
_CLEANUP_BATCH = 500
_SWEEP_MARGIN = timedelta(hours=1)
"""Blobs under `uploads/` younger than the oldest pending upload plus this margin are never swept
(it absorbs clock skew with an S3 server and its whole-second `LastModified`)."""

_Positive = Annotated[int, msgspec.Meta(gt=0)]


class NewUpload(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    name: Name
    profile_id: str
    size: _Positive
    """Exact number of bytes that will be uploaded."""
    sha256: Annotated[str, msgspec.Meta(pattern="^[0-9A-Fa-f]{64}$")]
    """Hex SHA-256 of those bytes."""
    content_type: Annotated[str, msgspec.Meta(pattern="^[ -~]+$")]
    """`application/json` (or `…+json`) content is validated against the profile's schema."""


class FinalizeUpload(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    upload_id: str


class UploadTicket(msgspec.Struct, frozen=True, kw_only=True):
    """How to upload: send `method` to `url` with exactly these `headers` before `expires_at`."""

    upload_id: str
    url: str
    method: str
    headers: dict[str, str]
    expires_at: str


class ContentMismatch(SchemaInvalid):
    """The uploaded bytes are not the ones announced (size or SHA-256)."""

    code = "content_mismatch"


_Upload = q.UploadRow


def upload_key(upload_id: str) -> str:
    return f"{UPLOADS_PREFIX}{upload_id}"


def artefact_key(artefact_id: str) -> str:
    return f"{ARTEFACTS_PREFIX}{artefact_id}"


def is_json(content_type: str) -> bool:
    media_type = content_type.split(";", 1)[0].strip().lower()
    return media_type == "application/json" or media_type.endswith("+json")


# -- upload URLs -------------------------------------------------------------------------------


async def create_upload(
    store: Store, blobs: BlobStore, limits: UploadConfig, org_id: str, new: NewUpload
) -> UploadTicket:
    """Record a pending upload and presign the URL its bytes go to."""
    if not new.name.strip():
        raise Invalid("name must not be empty")
    if new.size <= 0:
        raise Invalid("size must be a positive number of bytes")
    if new.size > limits.max_size:
        raise TooLarge(
            f"an artefact may have at most {limits.max_size} bytes",
            details={"size": new.size, "limit": limits.max_size},
        )
    if is_json(new.content_type) and new.size > limits.max_json_size:
        raise TooLarge(
            f"JSON artefacts are validated in memory and may have at most {limits.max_json_size}"
            " bytes",
            details={"size": new.size, "limit": limits.max_json_size},
        )
    sha256 = check_sha256(new.sha256)
    check_upload_terms(new.size, new.content_type)
    await _profile_schema(store, org_id, new.profile_id)
    # Early feedback only (finalize decides): every version of a name shares one profile.
    first = await artefacts.list_page(store, org_id, Page(limit=1), new.name)
    if first["items"] and first["items"][0]["profile_id"] != new.profile_id:
        owner = first["items"][0]["profile_id"]
        raise Conflict(
            f"artefact {new.name!r} belongs to profile {owner}; versions share a profile"
        )

    upload = _Upload(
        id=new_id(),
        org_id=org_id,
        artefact_id=new_id(),
        name=new.name,
        profile_id=new.profile_id,
        size=new.size,
        sha256=sha256,
        content_type=new.content_type,
        expires_at="",
    )
    signed = await blobs.presign_put(
        upload_key(upload.id), size=new.size, sha256_hex=sha256, content_type=new.content_type
    )
    url_expiry = datetime.fromisoformat(signed.expires_at)
    expires_at = rfc3339(url_expiry + timedelta(seconds=limits.finalize_grace_s))

    # The row exists before anyone has the URL, so every blob under uploads/ has its row.
    async def job(conn: Connection) -> None:
        await q.insert(
            conn, msgspec.structs.replace(upload, expires_at=expires_at), rfc3339(utcnow())
        )

    await store.write(job)
    log.info("upload %s of %d bytes for artefact %r", upload.id, new.size, new.name)
    return UploadTicket(
        upload_id=upload.id,
        url=signed.url,
        method=signed.method,
        headers=signed.headers,
        expires_at=signed.expires_at,
    )


# -- finalize ----------------------------------------------------------------------------------


async def finalize(
    store: Store, blobs: BlobStore, limits: UploadConfig, org_id: str, upload_id: str
) -> dict[str, Any]:
    """Check what landed for `upload_id` and create the next version of its artefact."""
    upload = await _load(store, org_id, upload_id)
    if upload.expires_at <= rfc3339(utcnow()):
        await _forget(store, blobs, upload)
        raise NotFound("upload", upload_id)
    source, target = upload_key(upload.id), artefact_key(upload.artefact_id)
    if await blobs.stat(source) is not None:
        # Promote first: no upload URL points at `artefacts/`, so the checks below see final bytes.
        # NotFound: a concurrent finalize moved it already; what is at `target` is checked below.
        with contextlib.suppress(NotFound):
            await blobs.move(source, target)
    if await blobs.stat(target) is None:
        raise Conflict(
            "nothing has been uploaded yet: PUT the bytes to the upload URL, then finalize"
        )
    try:
        schema = await _profile_schema(store, org_id, upload.profile_id)
        digest = await _check_content(blobs, limits, upload, target, schema)
        stored = StoredContent(
            size=upload.size,
            hash=f"sha256:{digest}",
            content_type=upload.content_type,
            blob_key=target,
        )
        await store.write(_promote_job(upload, stored))
    except FleetstateError:
        # The same bytes would fail the same way: the upload is of no further use. (When its row
        # is already gone, a concurrent finalize may have won: `_forget` spares its blob.)
        await _forget(store, blobs, upload)
        raise
    # A replay of the upload URL may have landed at `source` while this ran; the URL's PUT checks
    # for the row after storing, so whatever arrives from now on is removed there.
    await blobs.delete(source)
    log.info("upload %s finalized as artefact %s", upload.id, upload.artefact_id)
    return await artefacts.get(store, org_id, upload.artefact_id)


async def _check_content(
    blobs: BlobStore, limits: UploadConfig, upload: _Upload, key: str, schema: tuple[str, str]
) -> str:
    """Size, SHA-256 and (for JSON) the profile schema of the blob at `key`; the hex digest."""
    info = await blobs.stat(key)
    if info is None:
        raise NotFound("upload", upload.id)
    if info.size != upload.size:
        raise ContentMismatch(
            f"the upload has {info.size} bytes, {upload.size} were announced",
            details={"size": info.size, "expected": upload.size},
        )
    # Always hashed here, streaming: a backend that trusted the client's checksum is not enough.
    digest = await blobs.sha256_of(key)
    if digest != upload.sha256:
        raise ContentMismatch(
            "the upload's sha256 differs from the announced one",
            details={"sha256": digest, "expected": upload.sha256},
        )
    if is_json(upload.content_type):
        if upload.size > limits.max_json_size:
            raise TooLarge(
                f"JSON artefacts may have at most {limits.max_json_size} bytes",
                details={"size": upload.size, "limit": limits.max_json_size},
            )
        data = await read_all(blobs, key, limit=limits.max_json_size)
        _validate_json(data, schema)
    return digest


def _validate_json(data: bytes, schema: tuple[str, str]) -> None:
    try:
        document = msgspec.json.decode(data)
    except msgspec.DecodeError as exc:
        raise SchemaInvalid(
            "the content is declared as JSON but does not parse",
            details=[{"path": "$", "message": str(exc)}],
        ) from exc
    problems = profiles.violations(profiles.validator_for(*schema), document)
    if problems:
        raise SchemaInvalid(
            "content does not satisfy the profile's config_schema", details=problems
        )


def _promote_job(upload: _Upload, stored: StoredContent) -> Any:
    async def job(conn: Connection) -> int:
        if not await q.delete(conn, upload.id, org_id=upload.org_id):
            raise NotFound("upload", upload.id)
        return await artefacts.insert_version(
            conn, upload.org_id, upload.artefact_id, upload.name, upload.profile_id, stored
        )

    return job


async def accepts_bytes(store: Store, key: str) -> bool:
    """Whether a signed PUT may store bytes at `key`: only while its upload is pending. After
    finalize (or removal) its URL, though still signed, would only leave a blob nothing uses."""
    if not key.startswith(UPLOADS_PREFIX):
        return True  # not an upload's key: the signature alone decides
    upload_id = key.removeprefix(UPLOADS_PREFIX)
    return await store.query(lambda conn: q.pending(conn, upload_id))


async def _load(store: Store, org_id: str, upload_id: str) -> _Upload:
    row = await store.query(lambda conn: q.get(conn, org_id, upload_id))
    if row is None:
        raise NotFound("upload", upload_id)
    return row


async def _profile_schema(store: Store, org_id: str, profile_id: str) -> tuple[str, str]:
    """(profile id, schema text) of a profile of this organization; raises NotFound."""
    row = await store.query(lambda conn: artefact_q.profile_schema(conn, org_id, profile_id))
    if row is None:
        raise NotFound("profile", profile_id)
    return row.id, row.config_schema


async def _artefact_exists(store: Store, artefact_id: str) -> bool:
    return await store.query(lambda conn: q.artefact_exists(conn, artefact_id))


async def _delete_blobs(blobs: BlobStore, upload: _Upload) -> None:
    await blobs.delete(upload_key(upload.id))
    await blobs.delete(artefact_key(upload.artefact_id))


async def _forget(
    store: Store, blobs: BlobStore, upload: _Upload, *, expired_by: str | None = None
) -> bool:
    """Delete the upload's row (only if expired by `expired_by`, when given), then its blobs.

    The row goes first: once it is gone no finalize can create the artefact, so deleting the
    blobs cannot take an artefact's bytes with them. If the row was gone already, the blobs are
    kept exactly when a finalize turned them into an artefact. Returns whether the row was ours.
    """

    deleted = await store.write(lambda conn: q.delete(conn, upload.id, expired_by=expired_by))
    if deleted or not await _artefact_exists(store, upload.artefact_id):
        await _delete_blobs(blobs, upload)
    return deleted


# -- downloads ---------------------------------------------------------------------------------


async def artefact_for_device(store: Store, device_id: str, artefact_id: str) -> StoredContent:
    """An artefact in the device's current desired state; NotFound for any other."""
    row = await store.query(lambda conn: q.stored_for_device(conn, device_id, artefact_id))
    if row is None:
        raise NotFound("config artefact in this device's desired state", artefact_id)
    return _stored(row)


async def artefact_for_org(store: Store, org_id: str, artefact_id: str) -> StoredContent:
    row = await store.query(lambda conn: q.stored_for_org(conn, org_id, artefact_id))
    if row is None:
        raise NotFound("config artefact", artefact_id)
    return _stored(row)


def _stored(row: q.StoredRow) -> StoredContent:
    return StoredContent(
        content_type=row.content_type,
        hash=row.hash,
        size=row.size,
        content=None if row.content is None else bytes(row.content),
        blob_key=row.blob_key,
    )


# -- cleanup -----------------------------------------------------------------------------------


async def cleanup_expired(store: Store, blobs: BlobStore, now: datetime | None = None) -> int:
    """Remove uploads whose expiry has passed (rows and blobs); return how many."""
    moment = now or utcnow()
    cutoff = rfc3339(moment)
    removed = 0
    while True:
        rows = await store.query(lambda conn: q.expired(conn, cutoff, _CLEANUP_BATCH))
        for row in rows:
            if await _forget(store, blobs, row, expired_by=cutoff):
                removed += 1
        if len(rows) < _CLEANUP_BATCH:
            break
    await _sweep_rowless_blobs(store, blobs, moment)
    if removed:
        log.info("removed %d expired uploads", removed)
    return removed


async def _sweep_rowless_blobs(store: Store, blobs: BlobStore, now: datetime) -> None:
    """Blobs under `uploads/` older than every pending upload belong to none (a crash between
    deleting a row and its blob, an organization deleted): remove them too."""
    created = await store.query(q.oldest_created)
    oldest = now if created is None else min(now, datetime.fromisoformat(created))
    swept = await blobs.cleanup_expired_uploads(oldest - _SWEEP_MARGIN)
    if swept:
        log.info("removed %d upload blobs that no pending upload refers to", swept)


async def cleanup_loop(store: Store, blobs: BlobStore, interval_s: float) -> None:
    """Run `cleanup_expired` now and every `interval_s` seconds until cancelled."""
    while True:
        try:
            await cleanup_expired(store, blobs)
        except Exception:
            # Best effort by design: a blob store that is briefly unreachable must not stop the
            # service; whatever was not removed is found again next round.
            log.exception("removing expired uploads failed; retrying in %.0f s", interval_s)
        await asyncio.sleep(interval_s)
