"""Serving one engine app over HTTP with uvicorn (what ``polyserve engine`` runs).

The listening socket is bound here, before uvicorn starts, so ``--port 0`` picks a free port race-free; the
bound URL is then printed on stdout as one line ``polyserve engine listening on http://HOST:PORT ...`` which
the subprocess launcher reads. uvicorn handles SIGINT/SIGTERM: it stops accepting, gives open streams
``graceful_timeout_s`` to finish, then cancels them (each cancelled stream aborts its request) and exits 0.
"""

from __future__ import annotations

import socket
import sys

from polyserve.core.errors import ConfigError
from polyserve.engine.config import EngineConfig

READY_PREFIX = "polyserve engine listening on "


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


def serve(
    config: EngineConfig,
    host: str = "127.0.0.1",
    port: int = 8000,
    *,
    graceful_timeout_s: float = 5.0,
    log_level: str = "warning",
) -> None:
    """Run the engine until SIGINT/SIGTERM. Raises ``ConfigError`` for a bad config or a taken port."""
    import uvicorn

    from polyserve.engine.app import create_engine_app

    app = create_engine_app(config)
    sock = bind_socket(host, port)
    bound = sock.getsockname()[1]
    shown = f"[{host}]" if ":" in host else host
    engine = app.state.engine
    desc = engine.model.describe() if hasattr(engine.model, "describe") else {}
    sys.stdout.write(
        f"{READY_PREFIX}http://{shown}:{bound} (model {config.name}, latency model {desc.get('name', '?')}, "
        f"{config.gpu} tp{config.tp}, kv {engine.kv_capacity} tokens, time scale {config.time_scale:g})\n"
    )
    sys.stdout.flush()
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            log_level=log_level,
            access_log=False,
            timeout_graceful_shutdown=graceful_timeout_s,
            lifespan="on",
        )
    )
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
