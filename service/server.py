"""What ``hpscale serve`` hands uvicorn besides the app: its HTTP protocol class and the
time a worker may take to answer the supervisor's health ping.

A module of its own, outside ``service.api``: each worker of ``hpscale serve --workers N`` is
a new (spawned) process that unpickles its configuration, and so imports this module, before
it starts answering the supervisor's health pings; uvicorn kills a worker that does not
answer in time and starts another, which on a busy machine repeated forever while the workers
imported the whole app first (issue 13). This module imports uvicorn alone; the app is imported
after the pings are answered. And the CLI must not import uvicorn until a server is started.
"""

from __future__ import annotations

import asyncio
import socket

try:  # the faster parser when installed (uvicorn[standard]), else the pure-Python one
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol as _HTTPProtocol
except ImportError:
    from uvicorn.protocols.http.h11_impl import H11Protocol as _HTTPProtocol  # type: ignore[assignment]


WORKER_HEALTHCHECK_S = 30
"""Seconds a worker may take to answer uvicorn's health ping (uvicorn's default: 5). A worker
starts answering once it has imported this module and uvicorn (about 0.5 s of CPU), but on a
machine whose cores are taken by other work that CPU can take many times as long to come by."""


class NoDelayHTTPProtocol(_HTTPProtocol):  # type: ignore[misc, valid-type]
    """uvicorn's HTTP protocol with TCP_NODELAY on every connection.

    With several workers uvicorn binds the listening socket itself without naming the TCP
    protocol, so asyncio does not switch Nagle's algorithm off on accepted connections: a
    response written in two pieces then waits for the client's delayed ACK, about 40 ms per
    request (measured: 90 requests/s instead of over 2,000 with two workers)."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:  # type: ignore[override]
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        super().connection_made(transport)  # type: ignore[arg-type]
