"""Stored secrets: generated keys as SHA-256, chosen tokens as scrypt, old hashes still valid."""

import pytest

from fleetstate.service import credentials

SECRET = credentials.new_secret()


@pytest.mark.parametrize(
    ("stored", "secret", "ok"),
    [
        (credentials.hash_generated(SECRET), SECRET, True),
        (credentials.hash_generated(SECRET), SECRET + "x", False),
        (credentials.hash_generated(SECRET), SECRET[:-1], False),
        (credentials.hash_generated(SECRET), "", False),
        # A device key stored by an earlier version (scrypt, N=2^10) still verifies.
        (credentials.hash_secret(SECRET, cost=10), SECRET, True),
        (credentials.hash_secret(SECRET, cost=10), SECRET + "x", False),
        (credentials.hash_secret(SECRET, cost=4), SECRET, True),
        ("sha256", SECRET, False),
        ("scrypt$99$c2FsdA$ZGlnZXN0", SECRET, False),
        ("plain-text", "plain-text", False),
    ],
    # Fixed ids: the stored values are random, and test ids must be the same in every process
    # that collects them (pytest-xdist's workers).
    ids=[
        "sha256-right",
        "sha256-longer",
        "sha256-shorter",
        "sha256-empty",
        "scrypt10-right",
        "scrypt10-wrong",
        "scrypt4-right",
        "scheme-only",
        "scrypt-cost-out-of-range",
        "no-scheme",
    ],
)
async def test_secret_hashes_verify(stored: str, secret: str, ok: bool) -> None:
    assert credentials.verify_secret_sync(secret, stored) is ok
    assert await credentials.Verifier().verify(secret, stored) is ok


def test_secret_hashes_generated_keys_never_hold_the_secret() -> None:
    stored = credentials.hash_generated(SECRET)
    assert stored.startswith("sha256$")
    assert SECRET not in stored
    assert stored == credentials.hash_generated(SECRET)  # unsalted: the secret itself is random
    assert credentials.hash_generated(credentials.new_secret()) != stored


async def test_secret_hashes_generated_keys_cost_no_scrypt() -> None:
    verifier = credentials.Verifier()
    for _ in range(3):
        assert await verifier.verify(SECRET, credentials.hash_generated(SECRET))
    assert verifier.scrypt_checks == 0
