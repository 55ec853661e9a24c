"""``polyserve up``: local emulated engines and the gateway in front of them (see ``polyserve.up``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from polyserve.cli.options import fail, parse_policy_options


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
        bool, typer.Option("--shedding/--no-shedding", help="Shed requests whose TTFT can no longer be met (429; the default), or serve them late")
    ] = True,
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
    config: Annotated[
        Path | None,
        typer.Option("--config", help="Gateway config file (YAML/TOML) for every other setting: api_keys, "
                     "max_body_bytes, retries, timeouts, shedding, ... (not backends, model or engine)", dir_okay=False),
    ] = None,
    policy_option: Annotated[
        list[str] | None,
        typer.Option("--policy-option", help="Router option KEY=VALUE, repeatable (as for simulate)"),
    ] = None,
    prefill_engines: Annotated[
        int, typer.Option("--prefill-engines", help="Disaggregated: this many engines prefill, the rest decode (0: co-located)")
    ] = 0,
    kv_link_gbps: Annotated[
        float, typer.Option("--kv-link-gbps", help="Disaggregated: the emulated prefill -> decode KV link, Gbit/s")
    ] = 400.0,
    backend: Annotated[
        str, typer.Option("--backend", help="Where the engines run: local (subprocesses) | ray (Ray actors, a dead one is replaced; needs the ray extra)")
    ] = "local",
    ray_address: Annotated[
        str | None, typer.Option("--ray-address", help="--backend ray: join this Ray cluster (auto, HOST:PORT, ray://HOST:10001); default: start a local Ray")
    ] = None,
    engine_command: Annotated[
        str | None,
        typer.Option("--engine-command", help="Run this OpenAI-compatible engine instead of the emulated one, "
                     "e.g. 'vllm serve meta-llama/Llama-3.1-8B-Instruct --served-model-name llama-3.1-8b "
                     "--scheduling-policy priority' (polyserve appends --host and --port); co-located only"),
    ] = None,
    engine_gpus: Annotated[
        int, typer.Option("--engine-gpus", help="--engine-command: GPUs per engine (Ray: the actor's num_gpus; "
                          "local: engine i gets CUDA_VISIBLE_DEVICES i*N..i*N+N-1)")
    ] = 0,
    engine_startup_timeout: Annotated[
        float, typer.Option("--engine-startup-timeout", help="--engine-command: seconds for an engine to answer "
                            "/health (weights load first)")
    ] = 600.0,
) -> None:
    """Start N engines (emulated, or a real one with --engine-command; local processes, or Ray actors with
    --backend ray) and the gateway in front of them; Ctrl-C or SIGTERM stops them all."""
    from polyserve.core.errors import PolyServeError
    from polyserve.up import UpSpec, run_up

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
                prefill_engines=prefill_engines,
                config_path=str(config) if config else None,
                policy_options=tuple(parse_policy_options(policy_option).items()),
                kv_link_gbps=kv_link_gbps,
                backend=backend,
                ray_address=ray_address,
                engine_command=engine_command,
                engine_gpus=engine_gpus,
                engine_startup_timeout=engine_startup_timeout,
            )
        )
    except PolyServeError as e:
        fail(e)



def register(app: typer.Typer) -> None:
    app.command("up")(up)
