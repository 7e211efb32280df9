"""Config artefacts: immutable, versioned per name, validated against their profile's schema.

Each POST with a known name creates the next version; nothing is edited in place. Inline content
is stored as canonical JSON and hashed over exactly those bytes.
"""

import json
from typing import Any

import msgspec

from fleetstate.blobs import StoredContent
from fleetstate.domain.canonical import canonical_bytes, content_hash
from fleetstate.domain.clock import now_text
from fleetstate.domain.ids import new_id
from fleetstate.domain.names import Name
from fleetstate.domain.pagination import Page, page_of
from fleetstate.errors import Conflict, Invalid, NotFound, SchemaInvalid, TooLarge
from fleetstate.service import profiles
from fleetstate.store import Connection, Store
from fleetstate.store.queries import artefacts as q
from fleetstate.store.queries import numbering

INLINE_LIMIT = 64 * 1024


class NewArtefact(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    name: Name
    profile_id: str
    content: Any


def _row(row: q.ArtefactRow) -> dict[str, Any]:
    out: dict[str, Any] = msgspec.structs.asdict(row)
    out["storage"] = "blob" if out.pop("stored_in_blob") else "inline"
    return out


async def create_inline(store: Store, org_id: str, new: NewArtefact) -> dict[str, Any]:
    if not new.name.strip():
        raise Invalid("name must not be empty")
    data = canonical_bytes(new.content)
    if len(data) > INLINE_LIMIT:
        raise TooLarge(
            f"inline content is {len(data)} bytes; the limit is {INLINE_LIMIT}."
            " Upload larger content with POST /api/v1/config-artefacts/upload-url",
            details={"size": len(data), "limit": INLINE_LIMIT},
        )
    profile_row = await store.query(lambda conn: q.profile_schema(conn, org_id, new.profile_id))
    if profile_row is None:
        raise NotFound("profile", new.profile_id)
    validator = profiles.validator_for(profile_row.id, profile_row.config_schema)
    problems = profiles.violations(validator, new.content)
    if problems:
        raise SchemaInvalid(
            "content does not satisfy the profile's config_schema", details=problems
        )
    artefact_id = new_id()

    async def job(conn: Connection) -> None:
        await insert_version(
            conn,
            org_id,
            artefact_id,
            new.name,
            new.profile_id,
            StoredContent(
                size=len(data),
                hash=content_hash(data),
                content_type="application/json",
                content=data,
            ),
        )

    await store.write(job)
    return await get(store, org_id, artefact_id)


async def insert_version(
    conn: Connection,
    org_id: str,
    artefact_id: str,
    name: str,
    profile_id: str,
    stored: StoredContent,
) -> int:
    """Insert the next version of `name` inside the caller's write job; return its version."""
    version = await _next_version(conn, org_id, name, profile_id)
    await q.insert(
        conn,
        q.NewVersion(
            id=artefact_id,
            org_id=org_id,
            name=name,
            version=version,
            profile_id=profile_id,
            content=stored.content,
            blob_key=stored.blob_key,
            size=stored.size,
            hash=stored.hash,
            content_type=stored.content_type,
            created_at=now_text(),
        ),
    )
    return version


async def _next_version(conn: Connection, org_id: str, name: str, profile_id: str) -> int:
    """The next version of `name`; every version of a name is for the same profile."""
    latest = await q.latest(conn, org_id, name)
    if latest is not None and latest.profile_id != profile_id:
        raise Conflict(
            f"artefact {name!r} belongs to profile {latest.profile_id}; versions share a profile"
        )
    return await numbering.next_artefact_version(conn, org_id, name)


async def get(store: Store, org_id: str, artefact_id: str) -> dict[str, Any]:
    row = await store.query(lambda conn: q.get(conn, org_id, artefact_id))
    if row is None:
        raise NotFound("config artefact", artefact_id)
    return _row(row)


async def list_page(store: Store, org_id: str, page: Page, name: str | None) -> dict[str, Any]:
    after = page.cursor or ""
    rows = await store.query(lambda conn: q.page(conn, org_id, after, page.limit + 1, name))
    return page_of([_row(r) for r in rows], page)


async def inline_content(store: Store, org_id: str, artefact_id: str) -> tuple[bytes, str] | None:
    """The stored bytes and content type, or None for content kept in the blob store."""
    found = await store.query(lambda conn: q.content(conn, org_id, artefact_id))
    if found is None:
        raise NotFound("config artefact", artefact_id)
    data, content_type = found
    return None if data is None else (data, content_type)


async def delete(store: Store, org_id: str, artefact_id: str) -> str | None:
    """Delete an artefact nothing uses; returns its blob key (the caller removes the blob once
    the row is gone, so a failed delete never loses bytes still referenced)."""

    async def job(conn: Connection) -> str | None:
        found = await q.blob_key(conn, org_id, artefact_id)
        if found is None:
            raise NotFound("config artefact", artefact_id)
        await _refuse_if_used(conn, artefact_id)
        await q.delete(conn, artefact_id)
        return found[0]

    return await store.write(job)


async def _refuse_if_used(conn: Connection, artefact_id: str) -> None:
    bound = await q.a_binding(conn, artefact_id)
    if bound:
        raise Conflict(f"the artefact is bound (binding {bound}); delete the binding first")
    command = await q.an_open_command(conn, artefact_id)
    if command:
        raise Conflict(f"command {command} still uses the artefact; wait for it or cancel it")


def parse_json_content(data: bytes) -> Any:
    return json.loads(data)
