"""The command line's own behaviour around the service (not the service itself)."""

import asyncio
import os
import signal
from types import FrameType

from fleetstate import cli


async def test_cli_stop_signals_restore_the_handlers_they_replaced() -> None:
    seen: list[int] = []

    def custom(signum: int, _frame: FrameType | None) -> None:
        seen.append(signum)

    sigint = signal.getsignal(signal.SIGINT)  # asyncio.run's own handler, under pytest
    before = signal.signal(signal.SIGTERM, custom)
    try:
        stop = asyncio.Event()
        with cli._stop_on_signals(stop):
            os.kill(os.getpid(), signal.SIGTERM)
            async with asyncio.timeout(5):
                await stop.wait()
        assert seen == []  # while serving, SIGTERM stops the service
        assert signal.getsignal(signal.SIGTERM) is custom
        assert signal.getsignal(signal.SIGINT) is sigint
    finally:
        signal.signal(signal.SIGTERM, before)
