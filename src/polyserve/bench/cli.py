"""``polyserve bench [flags]`` runs a benchmark; ``polyserve bench plot RESULT.json`` draws its figures.

A typer group whose callback carries the benchmark flags (``invoke_without_command``), so both forms work.
``--goodput`` takes vLLM's spelling ``--goodput ttft:500 tpot:50`` (several words after one flag): the
group rewrites those words into repeated ``--goodput`` options before parsing.

Exit codes: 0 when at least one request completed, 1 when none did (an unreachable or failing server),
2 for bad flags or files (one line on stderr).
"""

from __future__ import annotations

import asyncio
import re
import sys
from pathlib import Path
from typing import Annotated

import typer
from typer.core import TyperGroup

_GOODPUT_ITEM = re.compile(r"^(ttft|tpot|e2el):")


def spread_goodput(args: list[str]) -> list[str]:
    """``--goodput ttft:500 tpot:50`` -> ``--goodput ttft:500 --goodput tpot:50``."""
    out: list[str] = []
    in_goodput = False
    for a in args:
        if a == "--goodput":
            in_goodput = True
            out.append(a)
            continue
        if in_goodput and _GOODPUT_ITEM.match(a):
            if out[-1] != "--goodput":
                out.append("--goodput")
            out.append(a)
            continue
        in_goodput = False
        out.append(a)
    return out


class BenchGroup(TyperGroup):
    def parse_args(self, ctx, args):  # type: ignore[no-untyped-def]
        return super().parse_args(ctx, spread_goodput(list(args)))


bench_app = typer.Typer(
    cls=BenchGroup,
    invoke_without_command=True,
    no_args_is_help=True,
    add_completion=False,
    help="Benchmark an OpenAI-compatible endpoint with SLO tiers (vllm bench serve flags); `plot` draws a "
    "result.",
)


def _fail(e: Exception) -> None:
    sys.stderr.write(f"error: {e}".replace("\n", " ") + "\n")
    raise typer.Exit(2)


def _fmt(x: object, nd: int = 1) -> str:
    return "-" if x is None else f"{x:.{nd}f}"  # type: ignore[str-format]


def print_report(doc: dict, metrics: list[str], percentiles: list[float], console) -> None:
    from rich.table import Table

    from polyserve.bench.report import pkey

    t = Table(
        title=f"polyserve bench: {doc['model_id']} at {doc['request_rate'] or 'trace'} req/s",
        title_justify="left",
    )
    for col in ("tier", "completed", "failed", "attained", "goodput/s"):
        t.add_column(col, justify="left" if col == "tier" else "right")
    shown = sorted({50.0, *percentiles})
    for m in metrics:
        t.add_column(f"{m.upper()} ms {'/'.join(pkey(p) for p in shown)}", justify="right", no_wrap=True)
    rows = [*doc["tiers"].items(), ("all", doc)]
    for name, b in rows:
        att = b["attainment"]
        cells = [
            name,
            str(b["completed"]),
            str(b["failed"]),
            "-" if att is None else f"{att:.1%}",
            _fmt(b["request_goodput"], 2),
        ]
        for m in metrics:
            cells.append(" / ".join(_fmt(b.get(f"{pkey(p)}_{m}_ms")) for p in shown))
        t.add_row(*cells)
    console.print(t)
    line = (
        f"duration {doc['duration']:.2f} s, request throughput {doc['request_throughput']:.2f} req/s, "
        f"output {doc['output_throughput']:.1f} tok/s, request_goodput (DSLO) {doc['request_goodput']:.2f} req/s"
    )
    if "vllm_request_goodput" in doc:
        line += f", vLLM goodput {doc['vllm_request_goodput']:.2f} req/s"
    console.print(line, highlight=False)
    if doc["errors"]:
        console.print("errors: " + ", ".join(f"{k} {v}" for k, v in doc["errors"].items()), highlight=False)
    if doc.get("not_sent"):
        console.print(f"not sent (after --duration): {doc['not_sent']}", highlight=False)


@bench_app.callback()
def bench(
    ctx: typer.Context,
    base_url: Annotated[
        str, typer.Option("--base-url", help="Server root, e.g. http://127.0.0.1:8000")
    ] = "http://127.0.0.1:8000",
    endpoint: Annotated[
        str, typer.Option("--endpoint", help="/v1/completions or /v1/chat/completions")
    ] = "/v1/completions",
    model: Annotated[
        str | None, typer.Option("--model", help="Model name to send (default: the first at /v1/models)")
    ] = None,
    dataset_name: Annotated[str, typer.Option("--dataset-name", help="random | trace")] = "random",
    dataset_path: Annotated[
        Path | None,
        typer.Option(
            "--dataset-path",
            help="Trace file for --dataset-name trace (Azure, Vidur, BurstGPT CSV, Mooncake JSONL)",
            dir_okay=False,
        ),
    ] = None,
    trace_format: Annotated[
        str | None,
        typer.Option("--trace-format", help="azure|vidur|burstgpt|mooncake|lengths (default: detect)"),
    ] = None,
    random_input_len: Annotated[
        int, typer.Option("--random-input-len", help="Prompt tokens (words) per request")
    ] = 1024,
    random_output_len: Annotated[
        int, typer.Option("--random-output-len", help="Output tokens per request (max_tokens)")
    ] = 128,
    random_range_ratio: Annotated[
        float, typer.Option("--random-range-ratio", help="Lengths uniform in [L(1-r), L(1+r)]")
    ] = 0.0,
    num_prompts: Annotated[
        int | None,
        typer.Option("--num-prompts", help="Requests to send (default 1000; a trace: all its rows)"),
    ] = None,
    request_rate: Annotated[
        float | None,
        typer.Option(
            "--request-rate",
            help="req/s; inf = all at once (random default); a trace replays its own times unless given",
        ),
    ] = None,
    burstiness: Annotated[
        float, typer.Option("--burstiness", help="Gamma shape of the gaps (1 = Poisson)")
    ] = 1.0,
    max_concurrency: Annotated[
        int | None, typer.Option("--max-concurrency", help="At most this many requests in flight")
    ] = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the arrivals, lengths, tiers and prompts")] = 0,
    duration: Annotated[
        float | None, typer.Option("--duration", help="Stop sending after this many seconds")
    ] = None,
    timeout: Annotated[
        float, typer.Option("--timeout", help="Seconds one request may take, whole stream")
    ] = 600.0,
    tiers: Annotated[
        Path | None,
        typer.Option(
            "--tiers", help="Tier file (TOML); default: the shipped t20/t30/t50/t100", dir_okay=False
        ),
    ] = None,
    tier_weights: Annotated[
        str | None, typer.Option("--tier-weights", help="Mix, e.g. 't20=1,t30=1,t50=2,t100=0'")
    ] = None,
    percentile_metrics: Annotated[
        str, typer.Option("--percentile-metrics", help="Comma list of ttft,tpot,itl,e2el")
    ] = "ttft,tpot,itl,e2el",
    metric_percentiles: Annotated[
        str,
        typer.Option("--metric-percentiles", help="Comma list, e.g. 90,99 (50 and 99 are always reported)"),
    ] = "99",
    goodput: Annotated[
        list[str] | None,
        typer.Option("--goodput", help="vLLM goodput SLOs: --goodput ttft:MS tpot:MS [e2el:MS]"),
    ] = None,
    save_result: Annotated[bool, typer.Option("--save-result", help="Write the result JSON")] = False,
    result_dir: Annotated[
        Path, typer.Option("--result-dir", help="Directory for --save-result", file_okay=False)
    ] = Path("."),
    result_filename: Annotated[
        str | None,
        typer.Option(
            "--result-filename", help="File name (default: polyserve-bench-<rate>qps-<model>-<time>.json)"
        ),
    ] = None,
    disable_tqdm: Annotated[bool, typer.Option("--disable-tqdm", help="No live progress line")] = False,
) -> None:
    """Send requests with SLO headers per tier; report TTFT, TPOT, ITL, E2E, DSLO attainment and goodput."""
    if ctx.invoked_subcommand is not None:
        return
    from rich.console import Console

    from polyserve.bench.api import benchmark
    from polyserve.bench.config import METRICS, BenchConfig, parse_goodput, parse_list, parse_weights
    from polyserve.bench.progress import ProgressLine
    from polyserve.bench.result import save_result as write
    from polyserve.core.errors import PolyServeError

    try:
        cfg = BenchConfig(
            base_url=base_url,
            endpoint=endpoint,
            model=model,
            dataset_name=dataset_name,
            dataset_path=str(dataset_path) if dataset_path else None,
            trace_format=trace_format,
            random_input_len=random_input_len,
            random_output_len=random_output_len,
            random_range_ratio=random_range_ratio,
            num_prompts=num_prompts,
            request_rate=request_rate,
            burstiness=burstiness,
            max_concurrency=max_concurrency,
            seed=seed,
            duration_s=duration,
            timeout_s=timeout,
            percentile_metrics=parse_list(percentile_metrics, "--percentile-metrics"),
            metric_percentiles=parse_list(metric_percentiles, "--metric-percentiles", float),
            goodput_slo_ms=parse_goodput(goodput),
            tiers_path=str(tiers) if tiers else None,
            tier_weights=parse_weights(tier_weights),
        )
        err = Console(stderr=True)
        try:
            with ProgressLine(err, enabled=not disable_tqdm and sys.stderr.isatty()) as line:
                doc = asyncio.run(benchmark(cfg, progress=line.update))
        except KeyboardInterrupt:
            sys.stderr.write("interrupted: no result (requests in flight were cancelled)\n")
            raise typer.Exit(130) from None
        path = write(doc, result_dir, result_filename) if save_result else None
    except PolyServeError as e:
        _fail(e)
        return
    console = Console(width=None if sys.stdout.isatty() else 160)
    metrics = [m for m in METRICS if m in cfg.percentile_metrics]
    print_report(doc, metrics, list(cfg.metric_percentiles), console)
    if path is not None:
        console.print(f"wrote {path}", highlight=False)
    if doc["completed"] == 0:
        raise typer.Exit(1)


@bench_app.command("plot")
def plot(
    result: Annotated[
        Path, typer.Argument(help="A result JSON written by polyserve bench --save-result", dir_okay=False)
    ],
    out: Annotated[
        Path | None,
        typer.Option("--out", help="Directory for the PNGs (default: beside the result)", file_okay=False),
    ] = None,
) -> None:
    """Draw TTFT and TPOT CDFs per tier and attainment over time from a result file (PNG)."""
    from polyserve.bench.plot import plot_result
    from polyserve.core.errors import PolyServeError

    try:
        paths = plot_result(result, out)
    except PolyServeError as e:
        _fail(e)
        return
    for p in paths:
        typer.echo(f"wrote {p}")


def register(app: typer.Typer) -> None:
    app.add_typer(bench_app, name="bench")
