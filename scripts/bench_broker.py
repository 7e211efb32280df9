"""A bare amqtt 0.12.1 broker in its own process: the transport ceiling for scripts/bench.py.

Anonymous, no plugins of ours, on 127.0.0.1 port 0; prints `mqtt listening on mqtt://HOST:PORT`
once bound and runs until SIGTERM/SIGINT. Only the debug logging amqtt would do is switched off.
"""

import asyncio
import logging
import signal

from amqtt.broker import Broker


async def main() -> None:
    config = {
        "listeners": {"default": {"type": "tcp", "bind": "127.0.0.1:0"}},
        "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}},
    }
    broker = Broker(config)
    await broker.start()
    host, port = broker._servers["default"].instance.sockets[0].getsockname()[:2]
    print(f"mqtt listening on mqtt://{host}:{port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    await broker.shutdown()


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    for noisy in ("amqtt", "transitions"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    asyncio.run(main())
