"""Config artefacts: immutable, versioned per name, validated against their profile's schema.

Each POST with a known name creates the next version; nothing is edited in place. Inline content
is stored as canonical JSON and hashed over exactly those bytes.
"""

import json
from typing import Any

import msgspec

from fleetstate import profiles
from fleetstate.blobs import StoredContent
from fleetstate.canonical import canonical_bytes, content_hash
from fleetstate.clock import now_text
from fleetstate.errors import Conflict, Invalid, NotFound, SchemaInvalid, TooLarge
from fleetstate.ids import new_id
from fleetstate.names import Name
from fleetstate.pagination import Page, page_of
from fleetstate.store import Connection, Store

INLINE_LIMIT = 64 * 1024
_COLUMNS = (
    "a.id, a.name, a.version, a.profile_id, p.kind AS profile_kind, a.size, a.hash,"
    " a.content_type, a.blob_key IS NOT NULL AS stored_in_blob, a.created_at"
)


class NewArtefact(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    name: Name
    profile_id: str
    content: Any


def _row(row: Any) -> dict[str, Any]:
    out = dict(row)
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
    profile_row = await store.fetchone(
        "SELECT id, config_schema FROM profiles WHERE id = ? AND org_id = ?",
        (new.profile_id, org_id),
    )
    if profile_row is None:
        raise NotFound("profile", new.profile_id)
    validator = profiles.validator_for(profile_row["id"], profile_row["config_schema"])
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
    await conn.execute(
        "INSERT INTO config_artefacts (id, org_id, name, version, profile_id, content, blob_key,"
        " size, hash, content_type, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            artefact_id,
            org_id,
            name,
            version,
            profile_id,
            stored.content,
            stored.blob_key,
            stored.size,
            stored.hash,
            stored.content_type,
            now_text(),
        ),
    )
    return version


async def _next_version(conn: Connection, org_id: str, name: str, profile_id: str) -> int:
    async with conn.execute(
        "SELECT version, profile_id FROM config_artefacts WHERE org_id = ? AND name = ?"
        " ORDER BY version DESC LIMIT 1",
        (org_id, name),
    ) as cur:
        row = await cur.fetchone()
    if row is None:
        return 1
    if row[1] != profile_id:
        raise Conflict(f"artefact {name!r} belongs to profile {row[1]}; versions share a profile")
    return int(row[0]) + 1


async def get(store: Store, org_id: str, artefact_id: str) -> dict[str, Any]:
    row = await store.fetchone(
        f"SELECT {_COLUMNS} FROM config_artefacts a JOIN profiles p ON p.id = a.profile_id"
        " WHERE a.id = ? AND a.org_id = ?",
        (artefact_id, org_id),
    )
    if row is None:
        raise NotFound("config artefact", artefact_id)
    return _row(row)


async def list_page(store: Store, org_id: str, page: Page, name: str | None) -> dict[str, Any]:
    where, params = "a.org_id = ? AND a.id > ?", [org_id, page.cursor or ""]
    if name is not None:
        where += " AND a.name = ?"
        params.append(name)
    rows = await store.fetchall(
        f"SELECT {_COLUMNS} FROM config_artefacts a JOIN profiles p ON p.id = a.profile_id"
        f" WHERE {where} ORDER BY a.id LIMIT ?",
        [*params, page.limit + 1],
    )
    return page_of([_row(r) for r in rows], page)


async def inline_content(store: Store, org_id: str, artefact_id: str) -> tuple[bytes, str] | None:
    """The stored bytes and content type, or None for content kept in the blob store."""
    row = await store.fetchone(
        "SELECT content, content_type FROM config_artefacts WHERE id = ? AND org_id = ?",
        (artefact_id, org_id),
    )
    if row is None:
        raise NotFound("config artefact", artefact_id)
    return None if row[0] is None else (bytes(row[0]), str(row[1]))


async def delete(store: Store, org_id: str, artefact_id: str) -> str | None:
    """Delete an artefact nothing uses; returns its blob key (the caller removes the blob once
    the row is gone, so a failed delete never loses bytes still referenced)."""

    async def job(conn: Connection) -> str | None:
        async with conn.execute(
            "SELECT blob_key FROM config_artefacts WHERE id = ? AND org_id = ?",
            (artefact_id, org_id),
        ) as cur:
            row = await cur.fetchone()
        if row is None:
            raise NotFound("config artefact", artefact_id)
        await _refuse_if_used(conn, artefact_id)
        await conn.execute("DELETE FROM config_artefacts WHERE id = ?", (artefact_id,))
        return None if row[0] is None else str(row[0])

    return await store.write(job)


async def _refuse_if_used(conn: Connection, artefact_id: str) -> None:
    async with conn.execute(
        "SELECT id FROM bindings WHERE artefact_id = ? LIMIT 1", (artefact_id,)
    ) as cur:
        bound = await cur.fetchone()
    if bound:
        raise Conflict(f"the artefact is bound (binding {bound[0]}); delete the binding first")
    async with conn.execute(
        "SELECT id FROM commands WHERE status IN ('PENDING', 'SENT', 'ACKNOWLEDGED')"
        " AND json_extract(params, '$.artefact_id') = ? LIMIT 1",
        (artefact_id,),
    ) as cur:
        command = await cur.fetchone()
    if command:
        raise Conflict(f"command {command[0]} still uses the artefact; wait for it or cancel it")


def parse_json_content(data: bytes) -> Any:
    return json.loads(data)
