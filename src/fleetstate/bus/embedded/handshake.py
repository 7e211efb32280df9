"""The MQTT-over-TLS listener's TLS handshake, run by the endpoint itself (`loop.start_tls` on an
accepted TCP connection) rather than by asyncio's TLS server, so that nothing a failed one
leaves waits for the cyclic collector.

In asyncio's TLS server (Python 3.11) the handshake's failure reaches no code of ours, and it
leaves the TLS layer (`SSLProtocol`, with its read buffer: 256 KiB by default,
`app.TLS_READ_BUFFER` here) in reference cycles: the exception's traceback holds the frames that
raised it, and those frames hold the exception and the future it was set on. Only the cyclic
collector frees them, and at the service's thresholds (`app.GC_THRESHOLDS`) it ran after thousands:
3,000 plain-TCP connections to the TLS port took the service from 78 to 488 MiB. Here the failure
is an exception in our own task, which drops its traceback, so reference counting frees it all at
once, and unties the TCP transport as a lost plain connection does (`connection.untie`). A
completed handshake hands its TLS transport to a `Connection`, told the TCP transport under it to
untie in turn when lost.
"""

import asyncio
import ssl
import time
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING

from fleetstate.bus.embedded.connection import Connection, untie

if TYPE_CHECKING:
    from fleetstate.bus.embedded.endpoint import EmbeddedBroker

Run = Callable[[Coroutine[None, None, None]], None]


class Handshake(asyncio.Protocol):
    """A connection to the TLS listener until its handshake completed: the TCP transport's
    protocol until `start_tls` puts the TLS layer in between, then the TLS transport's until
    the `Connection` takes over."""

    __slots__ = ("_accepted", "_connection", "_context", "_early", "_endpoint", "_lost", "_run")

    def __init__(self, endpoint: "EmbeddedBroker", context: ssl.SSLContext, run: Run) -> None:
        self._endpoint = endpoint
        self._context = context
        self._run = run
        """Runs the handshake as a task the endpoint knows of (`stop()` cancels it)."""
        self._accepted = time.monotonic()
        self._early = bytearray()
        self._connection: Connection | None = None
        self._lost = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        transport.pause_reading()  # no byte read before the TLS layer is there to read it
        self._run(self._handshake(transport))

    def data_received(self, data: bytes) -> None:
        # Decrypted bytes the device sent right behind its handshake (its CONNECT), read before
        # `_handshake` resumed: at most one read, as that resumes on the next loop turn.
        self._early += data

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = True
        if self._connection is not None:  # lost as it was handed over: told before the hand-over
            self._connection.connection_lost(exc)

    async def _handshake(self, tcp: asyncio.Transport) -> None:
        loop = asyncio.get_running_loop()
        try:
            tls = await loop.start_tls(
                tcp,
                self,
                self._context,
                server_side=True,
                ssl_handshake_timeout=self._endpoint.limits.connect_timeout_s,
            )
        # ssl.SSLError, the peer's close, the timeout's ConnectionAbortedError: all OSError.
        except OSError as exc:
            exc.__traceback__ = None  # the frames in it hold the TLS layer (see the module doc)
            tls = None
        if tls is None or self._lost:  # None: the TCP connection was lost during the handshake
            untie(tcp)
            return
        connection = Connection(self._endpoint, tcp=tcp)
        connection.opened = self._accepted  # the CONNECT is due counting from the accept
        self._connection = connection
        tls.set_protocol(connection)
        connection.connection_made(tls)
        if self._early:
            early, self._early = bytes(self._early), bytearray()
            connection.data_received(early)
