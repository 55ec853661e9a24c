"""Listening sockets for the HTTP faces (engine, gateway): bound before the server starts, so ``--port 0`` is
race-free and the bound URL can be printed."""

from __future__ import annotations

import socket

from polyserve.core.errors import ConfigError


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` (``port`` 0: any free port). ``ConfigError`` if it is taken."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto must be IPPROTO_TCP (not 0): asyncio sets TCP_NODELAY on accepted sockets only then; without it
    # Nagle holds each small SSE chunk behind the client's delayed ACK (~40 ms stalls). The option is also set
    # on the listening socket, which Linux copies to accepted ones.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise ConfigError(
            f"cannot listen on {host}:{port}: {e.strerror or e}; choose another --port"
        ) from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock
