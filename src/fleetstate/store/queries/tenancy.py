"""Organizations and API tokens."""

import msgspec

from fleetstate.store.connection import Connection
from fleetstate.store.queries import sql


class TokenCaller(msgspec.Struct, frozen=True):
    """A token with what authentication needs: its hash and its organization."""

    id: str
    secret_hash: str
    is_operator: int
    org_id: str
    slug: str


class OrganizationRow(msgspec.Struct, frozen=True):
    id: str
    slug: str
    name: str
    created_at: str


class TokenRow(msgspec.Struct, frozen=True):
    id: str
    name: str
    is_operator: int
    created_at: str


_SECRET_HASH = "SELECT secret_hash FROM api_tokens WHERE id = ?"
_ORG_OF_SLUG = "SELECT id FROM organizations WHERE slug = ?"
_INSERT_ORG = "INSERT INTO organizations (id, slug, name, created_at) VALUES (?, ?, ?, ?)"
# An upsert both dialects spell alike.
_SET_OPERATOR = (
    "INSERT INTO api_tokens (id, org_id, name, secret_hash, is_operator, created_at)"
    " VALUES (?, ?, 'admin', ?, 1, ?) ON CONFLICT (id) DO UPDATE"
    " SET secret_hash = excluded.secret_hash, is_operator = 1"
)
_END_SESSIONS = "DELETE FROM web_sessions WHERE token_id = ?"
_INSERT_TOKEN = (
    "INSERT INTO api_tokens (id, org_id, name, secret_hash, is_operator, created_at)"
    " VALUES (?, ?, ?, ?, ?, ?)"
)
_CALLER = (
    "SELECT t.id, t.secret_hash, t.is_operator, o.id AS org_id, o.slug"
    " FROM api_tokens t JOIN organizations o ON o.id = t.org_id WHERE t.id = ?"
)
_GET_ORG = f"SELECT {sql.columns(OrganizationRow)} FROM organizations WHERE id = ?"
_TOKEN = sql.columns(TokenRow)
_GET_TOKEN = f"SELECT {_TOKEN} FROM api_tokens WHERE id = ? AND org_id = ?"
_TOKENS = f"SELECT {_TOKEN} FROM api_tokens WHERE org_id = ? ORDER BY id"
_IS_OPERATOR = "SELECT is_operator FROM api_tokens WHERE id = ? AND org_id = ?"
_DELETE_TOKEN = "DELETE FROM api_tokens WHERE id = ?"


async def secret_hash(conn: Connection, token_id: str) -> str | None:
    value = await sql.fetch_value(conn, _SECRET_HASH, (token_id,))
    return None if value is None else str(value)


async def org_of_slug(conn: Connection, slug: str) -> str | None:
    value = await sql.fetch_value(conn, _ORG_OF_SLUG, (slug,))
    return None if value is None else str(value)


async def insert_org(conn: Connection, org_id: str, slug: str, name: str, now: str) -> None:
    await conn.execute(_INSERT_ORG, (org_id, slug, name, now))


async def set_operator_token(
    conn: Connection, token_id: str, org_id: str, secret_hash: str, now: str
) -> None:
    """Create or re-key the operator token and end the web sessions signed in with it."""
    await conn.execute(_SET_OPERATOR, (token_id, org_id, secret_hash, now))
    await conn.execute(_END_SESSIONS, (token_id,))


async def insert_token(
    conn: Connection,
    token_id: str,
    org_id: str,
    name: str,
    secret_hash: str,
    *,
    operator: bool,
    now: str,
) -> None:
    await conn.execute(_INSERT_TOKEN, (token_id, org_id, name, secret_hash, int(operator), now))


async def caller(conn: Connection, token_id: str) -> TokenCaller | None:
    return await sql.fetch_one(conn, TokenCaller, _CALLER, (token_id,))


async def organization(conn: Connection, org_id: str) -> OrganizationRow | None:
    return await sql.fetch_one(conn, OrganizationRow, _GET_ORG, (org_id,))


async def token(conn: Connection, org_id: str, token_id: str) -> TokenRow | None:
    return await sql.fetch_one(conn, TokenRow, _GET_TOKEN, (token_id, org_id))


async def tokens(conn: Connection, org_id: str) -> list[TokenRow]:
    return await sql.fetch_all(conn, TokenRow, _TOKENS, (org_id,))


async def is_operator(conn: Connection, org_id: str, token_id: str) -> bool | None:
    """Whether the token is the operator's; None for no such token."""
    value = await sql.fetch_value(conn, _IS_OPERATOR, (token_id, org_id))
    return None if value is None else bool(value)


async def delete_token(conn: Connection, token_id: str) -> None:
    await conn.execute(_DELETE_TOKEN, (token_id,))
