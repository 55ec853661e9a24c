"""Serving a gateway app over HTTP with uvicorn (what ``polyserve gateway`` and ``polyserve up`` run).

The listening socket comes from the engine's ``bind_socket``: bound before uvicorn starts (``--port 0`` picks
a free port race-free) and with ``TCP_NODELAY`` on accepted sockets, without which Nagle holds small SSE
chunks behind the client's delayed ACK (~40 ms stalls). Once bound, one line ``polyserve gateway listening
on http://HOST:PORT ...`` goes to stdout (launchers read it). uvicorn handles SIGINT/SIGTERM: it stops
accepting, gives open streams ``graceful_timeout_s``, runs the app's lifespan shutdown (which stops the
gateway's tasks and, through the actuator, any engines it started) and returns.

Connections are handled by ``httpconn.GuardedHttpProtocol`` (uvicorn's httptools protocol): an idle
connection is closed after ``timeouts.keep_alive_s`` (longer than clients keep theirs: the client, not the
gateway, closes an idle one, so no request is sent on a connection being closed), a request head must be
whole within ``timeouts.request_head_s`` and at most 64 KiB, and a malformed request gets a JSON 400.
"""

from __future__ import annotations

import gc
import signal
import sys
import threading

from polyserve.gateway.app import Gateway
from polyserve.serving.net import bind_socket

READY_PREFIX = "polyserve gateway listening on "


def serve_app(
    app: Gateway,
    host: str = "127.0.0.1",
    port: int = 8080,
    *,
    graceful_timeout_s: float = 5.0,
    log_level: str = "warning",
    note: str = "",
) -> None:
    """Run ``app`` until SIGINT/SIGTERM. Raises ``ConfigError`` for a taken port."""
    import uvicorn

    from polyserve.gateway.httpconn import guarded_protocol

    sock = bind_socket(host, port)
    bound = sock.getsockname()[1]
    shown = f"[{host}]" if ":" in host else host
    cfg = app.config
    sys.stdout.write(
        f"{READY_PREFIX}http://{shown}:{bound} (model {cfg.model}, policy {cfg.policy}, "
        f"{len(app.backends)} backends{note})\n"
    )
    sys.stdout.flush()
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            log_level=log_level,
            access_log=False,
            timeout_graceful_shutdown=graceful_timeout_s,
            timeout_keep_alive=cfg.timeouts.keep_alive_s,  # type: ignore[arg-type]  # a float works
            http=guarded_protocol(cfg.timeouts.request_head_s),
            ws="none",
            # no X-Forwarded-* rewriting (the gateway never reads the client's address; one middleware layer
            # less per request, ~20-90 us of the first token's path, one stream) and no "server: uvicorn"
            proxy_headers=False,
            server_header=False,
            lifespan="on",
        )
    )
    # uvicorn re-raises the signal that stopped it once it has shut down; with the default SIGTERM action
    # that would kill the process before its callers' cleanup (``polyserve up`` stopping its engines) runs
    # and exit -15: a handler that raises KeyboardInterrupt turns it into a clean return (exit 0)
    # what exists now (modules, the app, its policy and latency model) lives as long as the process: kept out
    # of the collector's generations, a full collection no longer walks it (a stall on the token path)
    gc.collect()
    gc.freeze()
    main = threading.current_thread() is threading.main_thread()
    old = signal.signal(signal.SIGTERM, _interrupt) if main else None
    try:
        server.run(sockets=[sock])
    except KeyboardInterrupt:
        pass
    finally:
        sock.close()
        if main:
            signal.signal(signal.SIGTERM, old)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt
