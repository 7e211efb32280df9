"""Secrets shown once and stored only as hashes: API tokens and device access keys.

Both are 256-bit random values, hashed with scrypt. Verification costs tens of milliseconds by
design, so a successful verification is remembered (keyed by the stored hash, so a rotated key
misses at once) and runs in a worker thread, off the event loop.
"""

import asyncio
import base64
import hashlib
import hmac
import secrets

_SCRYPT_N = 2**14
_SCRYPT_R = 8
_SCRYPT_P = 1
_TOKEN_PREFIX = "fst"


def new_secret() -> str:
    return secrets.token_urlsafe(32)


def hash_secret(secret: str) -> str:
    salt = secrets.token_bytes(16)
    digest = _scrypt(secret, salt)
    return "scrypt$" + _b64(salt) + "$" + _b64(digest)


def _scrypt(secret: str, salt: bytes) -> bytes:
    return hashlib.scrypt(
        secret.encode(), salt=salt, n=_SCRYPT_N, r=_SCRYPT_R, p=_SCRYPT_P, dklen=32
    )


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def verify_secret_sync(secret: str, stored: str) -> bool:
    try:
        scheme, salt, digest = stored.split("$")
    except ValueError:
        return False
    if scheme != "scrypt":
        return False
    return hmac.compare_digest(_scrypt(secret, _unb64(salt)), _unb64(digest))


class Verifier:
    """Verifies secrets against stored hashes, remembering the pairs that matched."""

    def __init__(self, max_entries: int = 100_000) -> None:
        self._matched: dict[str, bytes] = {}
        self._max_entries = max_entries

    async def verify(self, secret: str, stored: str) -> bool:
        fingerprint = hashlib.sha256(secret.encode()).digest()
        remembered = self._matched.get(stored)
        if remembered is not None:
            return hmac.compare_digest(remembered, fingerprint)
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
