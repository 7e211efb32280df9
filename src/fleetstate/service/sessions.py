"""Web app sessions: signing in with an API token issues a session; the cookie carries only the
session's random secret, never the token.

The secret is 256 random bits, so a plain SHA-256 is enough to store it (no guessing to slow
down) and lookup is by that hash, the primary key. A session is valid for `[web] session_ttl_s`
after sign-in, until sign-out deletes it, and only while its API token exists (the row cascades
with the token, and every lookup joins it). Expired rows are removed as new sessions are made.
"""

import hashlib
import logging
from datetime import timedelta

from fleetstate.domain.clock import rfc3339, utcnow
from fleetstate.service import credentials
from fleetstate.service.tenancy import Principal
from fleetstate.store import Connection, Store
from fleetstate.store.queries import sessions as q

log = logging.getLogger(__name__)
_PURGE_BATCH = 1000


def _session_id(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


async def create(store: Store, principal: Principal, ttl_s: float) -> str:
    """A new session for the token behind `principal`; returns the secret for the cookie."""
    secret = credentials.new_secret()
    now = utcnow()
    expires_at = rfc3339(now + timedelta(seconds=ttl_s))

    async def job(conn: Connection) -> None:
        # Bounded work per sign-in; the index on expires_at finds them without a scan.
        await q.start(
            conn,
            _session_id(secret),
            principal.token_id,
            rfc3339(now),
            expires_at,
            purge_limit=_PURGE_BATCH,
        )

    await store.write(job)
    log.info("web session started for token %s", principal.token_id)
    return secret


async def principal(store: Store, secret: str) -> Principal | None:
    """The caller of a live session, None for an unknown, ended or expired one."""
    session_id, now = _session_id(secret), rfc3339(utcnow())
    row = await store.query(lambda conn: q.caller(conn, session_id, now))
    if row is None:
        return None
    return Principal(
        org_id=row.org_id,
        org_slug=row.slug,
        token_id=row.token_id,
        is_operator=bool(row.is_operator),
    )


async def end(store: Store, secret: str) -> None:
    """Sign out: the session stops working at once (unknown secrets change nothing)."""

    async def job(conn: Connection) -> None:
        await q.end(conn, _session_id(secret))

    await store.write(job)
