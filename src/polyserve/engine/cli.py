"""``polyserve engine``: serve one emulated vLLM engine over HTTP (see ``polyserve.engine``)."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from polyserve.engine.config import EngineConfig

_D = EngineConfig()


def engine(
    port: Annotated[
        int, typer.Option("--port", help="TCP port (0: any free port; the URL is printed)")
    ] = 8000,
    host: Annotated[str, typer.Option("--host", help="Address to listen on")] = "127.0.0.1",
    model: Annotated[
        str,
        typer.Option(
            "--model",
            help="Architecture timed by the latency model: llama-3.1-8b | llama-3.1-70b | qwen2.5-7b",
        ),
    ] = _D.model,
    gpu: Annotated[str, typer.Option("--gpu", help="h100 | h200 | a100")] = _D.gpu,
    tp: Annotated[int, typer.Option("--tp", help="Tensor parallelism", min=1)] = _D.tp,
    time_scale: Annotated[
        float, typer.Option("--time-scale", help="Run the model this many times faster than real time")
    ] = _D.time_scale,
    latency_model: Annotated[
        str, typer.Option("--latency-model", help="auto | linear | roofline | table")
    ] = _D.latency_model,
    latency_coefficients: Annotated[
        str | None,
        typer.Option(
            "--latency-coefficients", help="Coefficients file from `polyserve profile fit` (linear)"
        ),
    ] = None,
    latency_profile: Annotated[
        str | None, typer.Option("--latency-profile", help="Vidur mlp.csv profile (table)")
    ] = None,
    gpu_memory_utilization: Annotated[
        float,
        typer.Option("--gpu-memory-utilization", help="vLLM gpu_memory_utilization (sets the KV capacity)"),
    ] = _D.gpu_memory_utilization,
    served_model_name: Annotated[
        str | None, typer.Option("--served-model-name", help="Model name clients send (default: --model)")
    ] = None,
    default_output_len: Annotated[
        int,
        typer.Option("--default-output-len", help="Tokens generated when a request has no max_tokens", min=1),
    ] = _D.default_output_len,
    max_num_seqs: Annotated[
        int, typer.Option("--max-num-seqs", help="vLLM max_num_seqs", min=1)
    ] = _D.max_num_seqs,
    max_num_batched_tokens: Annotated[
        int | None,
        typer.Option(
            "--max-num-batched-tokens", help="vLLM token budget per iteration (default: 8192, 2048 on A100)"
        ),
    ] = None,
    kv_capacity_tokens: Annotated[
        int | None,
        typer.Option(
            "--kv-capacity-tokens", help="Override the KV cache size in tokens (default: from GPU memory)"
        ),
    ] = None,
    scheduling_policy: Annotated[
        str,
        typer.Option(
            "--scheduling-policy",
            help="fcfs | priority (order by the request's `priority` field, as vLLM) | deadline (PolyServe's "
            "EDF + dynamic chunking on each request's polyserve_slo deadlines)",
        ),
    ] = _D.scheduling_policy,
    kv_link_gbps: Annotated[
        float,
        typer.Option("--kv-link-gbps", help="Disaggregated hand-off: a prefilled request's KV arrives over this link (Gbit/s)"),
    ] = _D.kv_link_gbps,
    fail_after: Annotated[
        int | None,
        typer.Option("--fail-after", help="Fault: after N requests, answer new ones with HTTP 500"),
    ] = None,
    crash_mid_stream: Annotated[
        int | None,
        typer.Option("--crash-mid-stream", help="Fault: drop each stream's connection after K tokens"),
    ] = None,
    add_latency_ms: Annotated[
        float,
        typer.Option(
            "--add-latency-ms", help="Fault: extra delay (ms) before each generation response starts"
        ),
    ] = 0.0,
    graceful_timeout: Annotated[
        float, typer.Option("--graceful-timeout", help="Seconds open streams get to finish on SIGTERM/Ctrl-C")
    ] = 5.0,
    log_level: Annotated[str, typer.Option("--log-level", help="uvicorn log level")] = "warning",
) -> None:
    """Serve an emulated vLLM engine: OpenAI-compatible API, tokens paced by the latency model, vLLM metrics."""
    from polyserve.core.errors import PolyServeError
    from polyserve.engine.server import serve

    try:
        config = EngineConfig(
            model=model,
            gpu=gpu,
            tp=tp,
            time_scale=time_scale,
            latency_model=latency_model,
            latency_coefficients=latency_coefficients,
            latency_profile=latency_profile,
            gpu_memory_utilization=gpu_memory_utilization,
            served_model_name=served_model_name,
            default_output_len=default_output_len,
            max_num_seqs=max_num_seqs,
            max_num_batched_tokens=max_num_batched_tokens,
            kv_capacity_tokens=kv_capacity_tokens,
            scheduling_policy=scheduling_policy,
            kv_link_gbps=kv_link_gbps,
            fail_after=fail_after,
            crash_mid_stream=crash_mid_stream,
            add_latency_ms=add_latency_ms,
        )
        serve(config, host, port, graceful_timeout_s=graceful_timeout, log_level=log_level)
    except PolyServeError as e:
        sys.stderr.write(f"error: {e}".replace("\n", " ") + "\n")
        raise typer.Exit(2) from None
    except KeyboardInterrupt:  # pragma: no cover - uvicorn handles SIGINT itself
        pass


def register(app: typer.Typer) -> None:
    app.command("engine")(engine)
