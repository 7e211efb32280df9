"""`LocalLocks`: one holder per key at a time, in the order they asked; other keys never wait;
a key nobody holds or waits for is forgotten."""

import asyncio

import pytest

from fleetstate.service.coordination import KeyedLocks, LocalLocks

WAIT = 5.0


async def _hold(locks: KeyedLocks, key: str, log: list[str], name: str) -> None:
    async with locks.hold(key):
        log.append(f"{name} in")
        await asyncio.sleep(0)  # give a waiter the chance to barge in, were it allowed to
        log.append(f"{name} out")


async def test_keyed_locks_same_key_one_holder_at_a_time_in_order() -> None:
    locks, log = LocalLocks(), []
    async with asyncio.timeout(WAIT):
        await asyncio.gather(*(_hold(locks, "device", log, n) for n in "abc"))
    assert log == ["a in", "a out", "b in", "b out", "c in", "c out"]
    assert len(locks) == 0


async def test_keyed_locks_other_keys_do_not_wait() -> None:
    locks = LocalLocks()
    async with asyncio.timeout(WAIT), locks.hold("one"), locks.hold("two"):
        assert len(locks) == 2
    assert len(locks) == 0


async def test_keyed_locks_forgotten_even_when_the_holder_raised() -> None:
    locks = LocalLocks()
    with pytest.raises(ValueError, match="append failed"):
        async with locks.hold("dump"):
            raise ValueError("append failed")
    assert len(locks) == 0
    async with asyncio.timeout(WAIT), locks.hold("dump"):
        pass
