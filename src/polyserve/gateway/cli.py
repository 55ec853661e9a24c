"""``polyserve gateway`` and ``polyserve up`` (see ``polyserve.gateway``)."""

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
        app = Gateway(load_config(config))
        serve_app(app, host, port, graceful_timeout_s=graceful_timeout, log_level=log_level)
    except PolyServeError as e:
        _fail(e)
    except KeyboardInterrupt:  # pragma: no cover - uvicorn handles SIGINT itself
        pass


def up(
    port: Annotated[int, typer.Option("--port", help="Gateway TCP port (0: any free port; the URL is printed)")] = 8080,
    engines: Annotated[
        int, typer.Option("--engines", help="Local emulated engines to start (the idle pool)", min=1)
    ] = 2,
    tiers: Annotated[
        Path | None,
        typer.Option("--tiers", help="Tier file (TOML). Default: the shipped t20/t30/t50/t100 tiers.", dir_okay=False),
    ] = None,
    default_tier: Annotated[
        str | None, typer.Option("--default-tier", help="Tier of requests without SLO headers (default: the loosest)")
    ] = None,
    host: Annotated[str, typer.Option("--host", help="Address to listen on")] = "127.0.0.1",
    model: Annotated[str, typer.Option("--model", help="llama-3.1-8b | llama-3.1-70b | qwen2.5-7b")] = "llama-3.1-8b",
    gpu: Annotated[str, typer.Option("--gpu", help="h100 | h200 | a100")] = "h100",
    time_scale: Annotated[
        float, typer.Option("--time-scale", help="Engines run the model this many times faster than real time")
    ] = 1.0,
    policy: Annotated[str, typer.Option("--policy", help="Router (see `polyserve policies`)")] = "polyserve",
    shedding: Annotated[
        bool, typer.Option("--shedding/--no-shedding", help="Shed requests whose TTFT can no longer be met (429)")
    ] = False,
    stop_idle: Annotated[
        bool,
        typer.Option(
            "--stop-idle/--keep-idle",
            help="Stop an engine when the policy releases its server to the idle pool (restart on demand)",
        ),
    ] = False,
    log_level: Annotated[str, typer.Option("--log-level", help="uvicorn log level")] = "warning",
    engine_scheduler: Annotated[
        str,
        typer.Option(
            "--engine-scheduler",
            help="auto (the policy's engine scheduler, as in the simulator: polyserve -> deadline, with each "
            "request's deadlines forwarded) | fcfs | priority | deadline | edf",
        ),
    ] = "auto",
) -> None:
    """Start N local emulated engines and the gateway in front of them; Ctrl-C or SIGTERM stops them all."""
    from polyserve.core.errors import PolyServeError
    from polyserve.gateway.up import UpSpec, run_up

    try:
        run_up(
            UpSpec(
                engines=engines,
                host=host,
                port=port,
                tiers_path=str(tiers) if tiers else None,
                default_tier=default_tier,
                model=model,
                gpu=gpu,
                time_scale=time_scale,
                policy=policy,
                shedding=shedding,
                stop_idle=stop_idle,
                log_level=log_level,
                engine_scheduler=engine_scheduler,
            )
        )
    except PolyServeError as e:
        _fail(e)


def register(app: typer.Typer) -> None:
    app.command("gateway")(gateway)
    app.command("up")(up)
