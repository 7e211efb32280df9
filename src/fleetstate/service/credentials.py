"""Secrets shown once and stored only as hashes: API tokens and device access keys.

Generated secrets are 256-bit random values. API tokens are hashed with scrypt at a high cost
(stored with the hash) because the operator may choose the admin token's value. Device access
keys and hardware keys are always generated, so stretching adds nothing against guessing a 2^256
space (nor against a stolen database: SHA-256 has no known preimage attack), while even scrypt's
lowest sensible cost (N=2^10, about 2 ms) made a reconnect storm of 10,000 devices cost 20 s of
CPU: they are stored as a plain SHA-256 digest and checked in about a microsecond, on the event
loop. Hashes stored by older versions (`scrypt$10$...`) still verify. scrypt verification runs in
a worker thread, off the event loop, and a successful one is remembered (keyed by the stored
hash, so a rotated key misses at once).

What is remembered must not make guessing cheaper: a secret that does not match the remembered
one is checked with scrypt again, so a wrong guess costs a full scrypt whether or not the right
secret was seen before (only the right one is fast). The remembered value is an HMAC under a
key made at process start, never a plain hash: memory holds nothing that could be looked up or
cracked without that key, and nothing that matches between processes.
"""

import asyncio
import base64
import hashlib
import hmac
import secrets

TOKEN_COST = 14
"""log2 of scrypt's N for API tokens (about 40 ms)."""
_GENERATED = "sha256"
"""The scheme of generated secrets' hashes: `sha256$<digest>`."""
_SCRYPT_R = 8
_SCRYPT_P = 1
_TOKEN_PREFIX = "fst"


def new_secret() -> str:
    return secrets.token_urlsafe(32)


def hash_secret(secret: str, cost: int = TOKEN_COST) -> str:
    salt = secrets.token_bytes(16)
    digest = _scrypt(secret, salt, cost)
    return f"scrypt${cost}$" + _b64(salt) + "$" + _b64(digest)


def hash_generated(secret: str) -> str:
    """The stored form of a secret this service generated (device and hardware keys)."""
    return f"{_GENERATED}$" + _b64(_sha256(secret))


def _sha256(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


def _is_generated(stored: str) -> bool:
    return stored.startswith(_GENERATED + "$")


def _verify_generated(secret: str, stored: str) -> bool:
    return hmac.compare_digest(_sha256(secret), _unb64(stored[len(_GENERATED) + 1 :]))


def _scrypt(secret: str, salt: bytes, cost: int) -> bytes:
    return hashlib.scrypt(secret.encode(), salt=salt, n=2**cost, r=_SCRYPT_R, p=_SCRYPT_P, dklen=32)


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def verify_secret_sync(secret: str, stored: str) -> bool:
    if _is_generated(stored):
        return _verify_generated(secret, stored)
    try:
        scheme, cost, salt, digest = stored.split("$")
    except ValueError:
        return False
    if scheme != "scrypt" or not (cost.isascii() and cost.isdigit()) or not 1 <= int(cost) <= 20:
        return False
    return hmac.compare_digest(_scrypt(secret, _unb64(salt), int(cost)), _unb64(digest))


class Verifier:
    """Verifies secrets against stored hashes, remembering the pairs that matched."""

    def __init__(self, max_entries: int = 100_000) -> None:
        self._matched: dict[str, bytes] = {}
        self._max_entries = max_entries
        self._key = secrets.token_bytes(32)
        self.scrypt_checks = 0
        """Verifications that ran scrypt (for metrics: cache misses and wrong secrets)."""

    def _fingerprint(self, secret: str, stored: str) -> bytes:
        message = stored.encode() + b"\0" + secret.encode()
        return hmac.new(self._key, message, hashlib.sha256).digest()

    async def verify(self, secret: str, stored: str) -> bool:
        if _is_generated(stored):
            return _verify_generated(secret, stored)  # a microsecond: nothing to remember
        fingerprint = self._fingerprint(secret, stored)
        remembered = self._matched.get(stored)
        if remembered is not None and hmac.compare_digest(remembered, fingerprint):
            return True
        # Not remembered, or not the remembered secret: a mismatch costs what it always did.
        self.scrypt_checks += 1
        ok = await asyncio.to_thread(verify_secret_sync, secret, stored)
        if ok:
            if len(self._matched) >= self._max_entries:
                self._matched.clear()
            self._matched[stored] = fingerprint
        return ok


def format_token(token_id: str, secret: str) -> str:
    """API tokens carry their row id so lookup is by primary key, never by scanning hashes."""
    return f"{_TOKEN_PREFIX}_{token_id}_{secret}"


def parse_token(token: str) -> tuple[str, str] | None:
    parts = token.split("_", 2)
    if len(parts) != 3 or parts[0] != _TOKEN_PREFIX or not parts[1] or not parts[2]:
        return None
    return parts[1], parts[2]
