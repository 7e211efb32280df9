"""Web app sessions, looked up by the hash of their secret."""

import msgspec

from fleetstate.store.connection import Connection
from fleetstate.store.queries import sql


class SessionCaller(msgspec.Struct, frozen=True):
    token_id: str
    is_operator: int
    org_id: str
    slug: str


# `IN (SELECT ... LIMIT ?)` bounds the purge; PostgreSQL accepts the same text.
_PURGE = (
    "DELETE FROM web_sessions WHERE id IN (SELECT id FROM web_sessions"
    " WHERE expires_at <= ? LIMIT ?)"
)
_INSERT = "INSERT INTO web_sessions (id, token_id, created_at, expires_at) VALUES (?, ?, ?, ?)"
_CALLER = (
    "SELECT t.id, t.is_operator, o.id AS org_id, o.slug FROM web_sessions s"
    " JOIN api_tokens t ON t.id = s.token_id JOIN organizations o ON o.id = t.org_id"
    " WHERE s.id = ? AND s.expires_at > ?"
)
_DELETE = "DELETE FROM web_sessions WHERE id = ?"


async def start(
    conn: Connection,
    session_id: str,
    token_id: str,
    now: str,
    expires_at: str,
    *,
    purge_limit: int,
) -> None:
    """Record a session, removing up to `purge_limit` expired ones first."""
    await conn.execute(_PURGE, (now, purge_limit))
    await conn.execute(_INSERT, (session_id, token_id, now, expires_at))


async def caller(conn: Connection, session_id: str, now: str) -> SessionCaller | None:
    """Who a session live at `now` belongs to."""
    return await sql.fetch_one(conn, SessionCaller, _CALLER, (session_id, now))


async def end(conn: Connection, session_id: str) -> None:
    await conn.execute(_DELETE, (session_id,))
