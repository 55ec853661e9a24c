"""``polyserve bench [flags]`` runs a benchmark; ``polyserve bench plot RESULT.json`` draws its figures.

A typer group whose callback carries the benchmark flags (``invoke_without_command``), so both forms work.
``--goodput`` takes vLLM's spelling ``--goodput ttft:500 tpot:50`` (several words after one flag): the
group rewrites those words into repeated ``--goodput`` options before parsing.

Exit codes: 0 when at least one request completed, 1 when none did (an unreachable or failing server),
2 for bad flags or files (one line on stderr).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Annotated

import typer
from typer.core import TyperGroup

_GOODPUT_ITEM = re.compile(r"^(ttft|tpot|e2el):")
_METADATA_ITEM = re.compile(r"^[^-][^=]*=")
MULTI = {"--goodput": _GOODPUT_ITEM, "--metadata": _METADATA_ITEM}  # vLLM's nargs flags and their items


def spread_multi(args: list[str]) -> list[str]:
    """vLLM's several-words flags as repeated options: ``--goodput ttft:500 tpot:50`` -> ``--goodput ttft:500
    --goodput tpot:50``, ``--metadata a=1 b=2`` -> ``--metadata a=1 --metadata b=2``."""
    out: list[str] = []
    flag: str | None = None
    for a in args:
        if a in MULTI:
            flag = a
            out.append(a)
            continue
        if flag is not None and MULTI[flag].match(a):
            if out[-1] != flag:
                out.append(flag)
            out.append(a)
            continue
        flag = None
        out.append(a)
    return out


spread_goodput = spread_multi  # the name earlier code and tests use


class BenchGroup(TyperGroup):
    def parse_args(self, ctx, args):  # type: ignore[no-untyped-def]
        return super().parse_args(ctx, spread_multi(list(args)))


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

    rate = doc["request_rate"] or "trace"
    if doc.get("ramp_up_strategy"):
        rate = f"{doc['ramp_up_start_rps']}->{doc['ramp_up_end_rps']} ({doc['ramp_up_strategy']} ramp-up)"
    t = Table(title=f"polyserve bench: {doc['model_id']} at {rate} req/s", title_justify="left")
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
            _fmt(b["dslo_request_goodput"], 2),
        ]
        for m in metrics:
            cells.append(" / ".join(_fmt(b.get(f"{pkey(p)}_{m}_ms")) for p in shown))
        t.add_row(*cells)
    console.print(t)
    line = (
        f"duration {doc['duration']:.2f} s, request throughput {doc['request_throughput']:.2f} req/s, "
        f"output {doc['output_throughput']:.1f} tok/s (peak {doc['max_output_tokens_per_s']:.0f} in one second, "
        f"{doc['max_concurrent_requests']} requests in flight at most), "
        f"dslo_request_goodput {doc['dslo_request_goodput']:.2f} req/s"
    )
    if doc.get("request_goodput") is not None:
        line += f", request_goodput (--goodput) {doc['request_goodput']:.2f} req/s"
    console.print(line, highlight=False)
    if doc["error_kinds"]:
        console.print("errors: " + ", ".join(f"{k} {v}" for k, v in doc["error_kinds"].items()), highlight=False)
    if doc.get("not_sent"):
        console.print(f"not sent (after --duration): {doc['not_sent']}", highlight=False)


@bench_app.callback()
def bench(
    ctx: typer.Context,
    base_url: Annotated[
        str | None, typer.Option("--base-url", help="Server root, e.g. http://127.0.0.1:8000 (default: from --host and --port)")
    ] = None,
    host: Annotated[str, typer.Option("--host", help="Server host when --base-url is not given")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="Server port when --base-url is not given")] = 8000,
    endpoint: Annotated[
        str, typer.Option("--endpoint", help="/v1/completions or /v1/chat/completions")
    ] = "/v1/completions",
    backend: Annotated[
        str | None, typer.Option("--backend", help="openai | vllm (completions) | openai-chat (chat); default: from --endpoint")
    ] = None,
    model: Annotated[
        str | None, typer.Option("--model", help="Model id (default: the first at /v1/models)")
    ] = None,
    served_model_name: Annotated[
        str | None, typer.Option("--served-model-name", help="Model name sent in requests (default: --model)")
    ] = None,
    tokenizer: Annotated[
        str | None, typer.Option("--tokenizer", help="Recorded as tokenizer_id; never loaded or downloaded (token counts: the server's usage, else words)")
    ] = None,
    dataset_name: Annotated[str, typer.Option("--dataset-name", help="random | sharegpt | trace")] = "random",
    dataset_path: Annotated[
        Path | None,
        typer.Option(
            "--dataset-path",
            help="ShareGPT JSON for sharegpt; trace file for trace (Azure, Vidur, BurstGPT CSV, Mooncake JSONL)",
            dir_okay=False,
        ),
    ] = None,
    sharegpt_output_len: Annotated[
        int | None, typer.Option("--sharegpt-output-len", help="Output tokens per request, overriding the answers' lengths")
    ] = None,
    no_oversample: Annotated[
        bool, typer.Option("--no-oversample", help="sharegpt: do not repeat samples to reach --num-prompts")
    ] = False,
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
        float, typer.Option("--random-range-ratio", help="Lengths uniform in [floor(L(1-r)), ceil(L(1+r))]")
    ] = 0.0,
    random_prefix_len: Annotated[
        int, typer.Option("--random-prefix-len", help="A fixed prefix of this many tokens before every random prompt")
    ] = 0,
    ignore_eos: Annotated[
        bool, typer.Option("--ignore-eos", help="Send ignore_eos (always sent for the random and trace datasets)")
    ] = False,
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
    ramp_up_strategy: Annotated[
        str | None, typer.Option("--ramp-up-strategy", help="linear | exponential: the rate goes from --ramp-up-start-rps to --ramp-up-end-rps over the run")
    ] = None,
    ramp_up_start_rps: Annotated[int | None, typer.Option("--ramp-up-start-rps", help="Ramp-up: first rate (req/s)")] = None,
    ramp_up_end_rps: Annotated[int | None, typer.Option("--ramp-up-end-rps", help="Ramp-up: last rate (req/s)")] = None,
    num_warmups: Annotated[int, typer.Option("--num-warmups", help="Requests sent before the measured run (not in the result)")] = 0,
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
    save_detailed: Annotated[
        bool, typer.Option("--save-detailed", help="Add vLLM's per-request lists (input_lens, ttfts, itls, generated_texts, errors, ...)")
    ] = False,
    metadata: Annotated[
        list[str] | None, typer.Option("--metadata", help="KEY=VALUE ... saved as top-level keys of the result")
    ] = None,
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
    from polyserve.bench.config import METRICS, BenchConfig, parse_goodput, parse_list, parse_metadata, parse_weights
    from polyserve.bench.progress import ProgressLine
    from polyserve.bench.result import save_result as write
    from polyserve.core.errors import PolyServeError
    from polyserve.serving.loop import run as run_loop

    try:
        if base_url is None:
            base_url = f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
        cfg = BenchConfig(
            base_url=base_url,
            endpoint=endpoint,
            backend=backend,
            model=model,
            served_model_name=served_model_name,
            tokenizer=tokenizer,
            sharegpt_output_len=sharegpt_output_len,
            no_oversample=no_oversample,
            random_prefix_len=random_prefix_len,
            ignore_eos=ignore_eos,
            ramp_up_strategy=ramp_up_strategy,
            ramp_up_start_rps=ramp_up_start_rps,
            ramp_up_end_rps=ramp_up_end_rps,
            num_warmups=num_warmups,
            save_detailed=save_detailed,
            metadata=parse_metadata(metadata),
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
        if tokenizer:
            err.print(f"note: --tokenizer {tokenizer} is recorded as tokenizer_id, not loaded (nothing is "
                      "downloaded): lengths are the server's usage counts when it reports them, else words",
                      highlight=False)
        try:
            with ProgressLine(err, enabled=not disable_tqdm and sys.stderr.isatty()) as line:
                doc = run_loop(benchmark(cfg, progress=line.update))
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
