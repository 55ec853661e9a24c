"""``polyserve gateway`` (see ``polyserve.gateway``)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer


def _fail(e: Exception) -> None:
    sys.stderr.write(f"error: {e}".replace("\n", " ") + "\n")
    raise typer.Exit(2)


def gateway(
    config: Annotated[
        Path, typer.Option("--config", help="Gateway config file (YAML or TOML; see the README)", dir_okay=False)
    ],
    port: Annotated[int, typer.Option("--port", help="TCP port (0: any free port; the URL is printed)")] = 8080,
    host: Annotated[str, typer.Option("--host", help="Address to listen on")] = "127.0.0.1",
    graceful_timeout: Annotated[
        float, typer.Option("--graceful-timeout", help="Seconds open streams get to finish on SIGTERM/Ctrl-C")
    ] = 5.0,
    log_level: Annotated[str, typer.Option("--log-level", help="uvicorn log level")] = "warning",
) -> None:
    """Serve the PolyServe gateway: OpenAI-compatible API in front of the configured backends."""
    from polyserve.core.errors import PolyServeError
    from polyserve.gateway.app import Gateway
    from polyserve.gateway.config import load_config
    from polyserve.gateway.server import serve_app

    try:
        cfg = load_config(config)
        if cfg.kubernetes is not None:  # engine pods by label selector, scaled through their Deployments
            from polyserve.gateway.backend import Backend
            from polyserve.gateway.k8s import build_actuator

            backends = [Backend(i, b.url, b.priority, deadlines=b.deadlines) for i, b in enumerate(cfg.backends)]
            app = Gateway(cfg, actuator=build_actuator(cfg.kubernetes, backends), backends=backends)
        else:
            app = Gateway(cfg)
        serve_app(app, host, port, graceful_timeout_s=graceful_timeout, log_level=log_level)
    except PolyServeError as e:
        _fail(e)
    except KeyboardInterrupt:  # pragma: no cover - uvicorn handles SIGINT itself
        pass


def register(app: typer.Typer) -> None:
    app.command("gateway")(gateway)
