"""Serving one engine app over HTTP with uvicorn (what ``polyserve engine`` runs).

The listening socket is bound here, before uvicorn starts, so ``--port 0`` picks a free port race-free; the
bound URL is then printed on stdout as one line ``polyserve engine listening on http://HOST:PORT ...`` which
the subprocess launcher reads. uvicorn handles SIGINT/SIGTERM: it stops accepting, gives open streams
``graceful_timeout_s`` to finish, then cancels them (each cancelled stream aborts its request) and exits 0.
"""

from __future__ import annotations

import sys

from polyserve.engine.config import EngineConfig
from polyserve.serving.net import bind_socket

READY_PREFIX = "polyserve engine listening on "


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
