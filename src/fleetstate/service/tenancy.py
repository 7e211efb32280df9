"""Organizations and API tokens: who may see what.

The bootstrap organization `default` and its admin token (also the operator token that may create
organizations) are made on first start. Tokens are shown once and stored only as scrypt hashes.
"""

import asyncio
import logging
import re
from typing import Annotated, Any

import msgspec

from fleetstate.domain.clock import now_text
from fleetstate.domain.ids import new_id
from fleetstate.domain.names import Name
from fleetstate.domain.throttle import FailureThrottle
from fleetstate.errors import Conflict, Forbidden, Invalid, NotFound, Unauthorized
from fleetstate.service import credentials
from fleetstate.store import Connection, Store
from fleetstate.store.queries import tenancy as q

log = logging.getLogger(__name__)
DEFAULT_SLUG = "default"
BOOTSTRAP_TOKEN_ID = "admin"
MIN_ADMIN_TOKEN_LENGTH = 16
"""A chosen operator token shorter than this is refused at start: scrypt slows guessing, but
no hash makes a short secret hard to guess."""
_SLUG = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")


class Principal(msgspec.Struct, frozen=True, kw_only=True):
    """The caller behind an API token."""

    org_id: str
    org_slug: str
    token_id: str
    is_operator: bool


class NewOrganization(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    slug: Annotated[str, msgspec.Meta(pattern=_SLUG.pattern)]
    """1-63 lowercase letters, digits or '-', starting alphanumeric."""
    name: Name


class NewToken(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    name: str = "api"


def check_admin_token(admin_token: str | None) -> None:
    """Refuse a chosen operator token that is too short to resist guessing."""
    if admin_token and len(admin_token) < MIN_ADMIN_TOKEN_LENGTH:
        raise Invalid(
            f"the admin token (FLEETSTATE_ADMIN_TOKEN or --admin-token) must have at least"
            f" {MIN_ADMIN_TOKEN_LENGTH} characters; it has {len(admin_token)}"
        )


async def bootstrap(store: Store, admin_token: str | None) -> str | None:
    """Make sure the default organization and its operator token exist.

    On first start both are made. Later, a given `admin_token` replaces the operator token's
    value when it differs and brings the token back if it was revoked; without one, a revoked
    operator token is issued again with a generated value. Returns a generated value (the caller
    writes it to a file), None when the value was given or nothing changed.
    """
    check_admin_token(admin_token)
    current = await store.query(lambda conn: q.secret_hash(conn, BOOTSTRAP_TOKEN_ID))
    if current is not None and (
        admin_token is None
        or await asyncio.to_thread(credentials.verify_secret_sync, admin_token, current)
    ):
        return None  # unchanged: its hash (and the sessions signed in with it) stay
    generated = None if admin_token else credentials.new_secret()
    secret = admin_token or generated
    assert secret is not None
    secret_hash = await asyncio.to_thread(credentials.hash_secret, secret)
    await store.write(_operator_token_job(secret_hash))
    return generated


def _operator_token_job(secret_hash: str) -> Any:
    async def job(conn: Connection) -> None:
        found = await q.org_of_slug(conn, DEFAULT_SLUG)
        org_id = found or new_id()
        if found is None:
            await _insert_org(conn, org_id, DEFAULT_SLUG, "Default organization")
        # Sessions signed in with the old value end: as good as revoked.
        await q.set_operator_token(conn, BOOTSTRAP_TOKEN_ID, org_id, secret_hash, now_text())

    return job


async def _insert_org(conn: Connection, org_id: str, slug: str, name: str) -> None:
    await q.insert_org(conn, org_id, slug, name, now_text())


async def _insert_token(
    conn: Connection, token_id: str, org_id: str, name: str, secret: str, *, operator: bool
) -> None:
    secret_hash = credentials.hash_secret(secret)
    await q.insert_token(
        conn, token_id, org_id, name, secret_hash, operator=operator, now=now_text()
    )


class Authenticator:
    """Turns a bearer token into a Principal, remembering verified tokens and throttling
    failures per source address and per token id (SPEC section 8)."""

    def __init__(self, store: Store, throttle: FailureThrottle | None = None) -> None:
        self._store = store
        self._verifier = credentials.Verifier()
        self.throttle = throttle or FailureThrottle()
        self.failures_total = 0
        """Tokens that were presented and refused (for metrics; throttled ones not counted)."""

    async def authenticate(self, token: str, source: str | None = None) -> Principal:
        """The token's caller; `Throttled` while its address or token id is blocked (even for
        the right token), `Unauthorized` for a wrong one. `source` is the peer address."""
        parsed = credentials.parse_token(token)
        token_id = parsed[0] if parsed else BOOTSTRAP_TOKEN_ID
        keys = (f"token:{token_id}", f"addr:{source}") if source else (f"token:{token_id}",)
        self.throttle.check(*keys)
        try:
            return await self._verify(token, parsed)
        except Unauthorized:
            self.failures_total += 1
            log.warning("refused API token %r from %s", token_id[:64], source or "?")
            for key in self.throttle.failed(*keys):
                log.warning(
                    "%s blocked for %.0f s after repeated failures", key, self.throttle.block_s
                )
            raise

    async def _verify(self, token: str, parsed: tuple[str, str] | None) -> Principal:
        token_id, secret = parsed if parsed else (BOOTSTRAP_TOKEN_ID, token)
        row = await self._store.query(lambda conn: q.caller(conn, token_id))
        if row is None and parsed:
            return await self._bootstrap_fallback(token)
        if row is None or not await self._verifier.verify(secret, row.secret_hash):
            raise Unauthorized("invalid API token")
        return Principal(
            org_id=row.org_id,
            org_slug=row.slug,
            token_id=row.id,
            is_operator=bool(row.is_operator),
        )

    async def _bootstrap_fallback(self, token: str) -> Principal:
        # A configured admin token may itself look like a generated one.
        row = await self._store.query(lambda conn: q.caller(conn, BOOTSTRAP_TOKEN_ID))
        if row is None or not await self._verifier.verify(token, row.secret_hash):
            raise Unauthorized("invalid API token")
        return Principal(
            org_id=row.org_id,
            org_slug=row.slug,
            token_id=BOOTSTRAP_TOKEN_ID,
            is_operator=True,
        )


async def create_organization(store: Store, new: NewOrganization) -> dict[str, Any]:
    if not _SLUG.match(new.slug):
        raise Invalid("slug must be 1-63 lowercase letters, digits or '-', starting alphanumeric")
    if not new.name.strip():
        raise Invalid("name must not be empty")
    org_id, token_id, secret = new_id(), new_id(), credentials.new_secret()

    async def job(conn: Connection) -> None:
        if await q.org_of_slug(conn, new.slug) is not None:
            raise Conflict(f"organization {new.slug!r} already exists")
        await _insert_org(conn, org_id, new.slug, new.name)
        await _insert_token(conn, token_id, org_id, "admin", secret, operator=False)

    await store.write(job)
    org = await get_organization(store, org_id)
    return {**org, "token": credentials.format_token(token_id, secret)}


async def get_organization(store: Store, org_id: str) -> dict[str, Any]:
    row = await store.query(lambda conn: q.organization(conn, org_id))
    if row is None:
        raise NotFound("organization", org_id)
    return msgspec.structs.asdict(row)


async def create_token(store: Store, org_id: str, new: NewToken) -> dict[str, Any]:
    token_id, secret = new_id(), credentials.new_secret()

    async def job(conn: Connection) -> None:
        await _insert_token(conn, token_id, org_id, new.name, secret, operator=False)

    await store.write(job)
    token = await get_token(store, org_id, token_id)
    return {**token, "token": credentials.format_token(token_id, secret)}


async def create_token_by_slug(store: Store, slug: str, name: str) -> str:
    org_id = await store.query(lambda conn: q.org_of_slug(conn, slug))
    if org_id is None:
        raise NotFound("organization", slug)
    created = await create_token(store, org_id, NewToken(name=name))
    return str(created["token"])


async def get_token(store: Store, org_id: str, token_id: str) -> dict[str, Any]:
    row = await store.query(lambda conn: q.token(conn, org_id, token_id))
    if row is None:
        raise NotFound("token", token_id)
    return _token_out(row)


async def list_tokens(store: Store, org_id: str) -> list[dict[str, Any]]:
    rows = await store.query(lambda conn: q.tokens(conn, org_id))
    return [_token_out(r) for r in rows]


def _token_out(row: q.TokenRow) -> dict[str, Any]:
    return {**msgspec.structs.asdict(row), "is_operator": bool(row.is_operator)}


async def delete_token(
    store: Store, org_id: str, token_id: str, *, by_operator: bool = False
) -> None:
    """Revoke a token of the organization; only the operator may revoke the operator token."""

    async def job(conn: Connection) -> None:
        operator = await q.is_operator(conn, org_id, token_id)
        if operator is None:
            raise NotFound("token", token_id)
        if operator and not by_operator:
            raise Forbidden("only the operator token may revoke the operator token")
        await q.delete_token(conn, token_id)

    await store.write(job)
