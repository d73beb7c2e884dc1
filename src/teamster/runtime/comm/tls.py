"""TLS transport ("tls://host:port"): the TCP comm over an SSL transport.

Certificates come from the ``Security`` given to ``connect``/``listen``; with
a CA both ends verify each other (mutual TLS). The token handshake runs
inside the encrypted channel exactly as over plain TCP.
"""

from __future__ import annotations

from typing import Any

from teamster.runtime.comm.core import Handler
from teamster.runtime.comm.tcp import TCPComm, TCPListener
from teamster.runtime.comm.tcp import connect as tcp_connect
from teamster.runtime.comm.tcp import listen as tcp_listen
from teamster.security import Security

__all__ = ["connect", "listen"]


async def connect(address: str, *, handshake: dict[str, Any], timeout: float = 10.0,
                  security: Security, **kwargs: Any) -> TCPComm:
    """Connect to "tls://host:port"; see ``tcp.connect``."""
    return await tcp_connect(address, handshake=handshake, timeout=timeout, security=security,
                             ssl_context=security.client_context(), **kwargs)


async def listen(address: str, handler: Handler, *, handshake: dict[str, Any],
                 security: Security, **kwargs: Any) -> TCPListener:
    """Listen on "tls://host:port"; see ``tcp.listen``."""
    return await tcp_listen(address, handler, handshake=handshake, security=security,
                            ssl_context=security.server_context(), **kwargs)
