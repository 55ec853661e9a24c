"""The ``polyserve`` command line. The only module that prints for the user and exits.

Errors raised on purpose (``PolyServeError``) become one line on stderr and exit code 2; input-file errors
read ``FILE:LINE: FIELD: what is wrong``.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from polyserve import __version__
from polyserve.bench.config import parse_weights  # the --tier-weights parser bench uses too
from polyserve.cli.options import (
    Arrival,
    Autoscaler,
    Burstiness,
    ColdStart,
    DecodeSeatTimeout,
    Duration,
    Gpu,
    GpuMemUtil,
    InputLen,
    Instances,
    KvLink,
    LatCoef,
    LatModel,
    LatProfile,
    MaxSeqs,
    MaxTokens,
    Mode,
    Model,
    NumRequests,
    OptionalRayCommand,
    Out,
    OutputLen,
    Overload,
    Policy,
    PolicyOption,
    PrefillFraction,
    Quiet,
    Rate,
    Ray,
    Scheduler,
    Seed,
    Step,
    Tiers,
    TierWeights,
    Tile,
    Tp,
    Trace,
    TraceFormat,
    console,
    err,
    fail,
    parse_policy_options,
)
from polyserve.core.errors import PolyServeError

app = typer.Typer(
    name="polyserve",
    help="Multi-SLO LLM serving: simulate fleets, compare routing policies, serve and benchmark.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
profile_app = typer.Typer(help="Latency profiles: fit linear coefficients from measured iterations.", no_args_is_help=True)
app.add_typer(profile_app, name="profile")

def _common(
    trace, trace_format, tiers, tier_weights, instances, mode, prefill_fraction, kv_link_gbps, cold_start,
    model, gpu, tp, latency_model, latency_coefficients, latency_profile, policy, scheduler, autoscaler,
    max_num_seqs, max_num_batched_tokens, gpu_memory_utilization, step, policy_options=None, overload="serve",
    decode_seat_timeout=30.0,
):
    from polyserve.data import AZURE_CONV
    from polyserve.experiments.runner import PolicySpec, load_tiers
    from polyserve.latency.build import FleetSpec, build_model
    from polyserve.sim.config import SimConfig, default_max_num_batched_tokens

    tierset = load_tiers(tiers)
    w = parse_weights(tier_weights)
    if w is not None:
        tierset = tierset.with_weights(w)
    fleet = FleetSpec(
        model=model, gpu=gpu, tp=tp, latency_model=latency_model,
        latency_coefficients=str(latency_coefficients) if latency_coefficients else None,
        latency_profile=str(latency_profile) if latency_profile else None,
        gpu_memory_utilization=gpu_memory_utilization,
    )
    m = build_model(fleet)
    config = SimConfig(
        instances=instances, mode=mode, prefill_fraction=prefill_fraction, kv_link_gbps=kv_link_gbps,
        cold_start_s=cold_start, max_num_seqs=max_num_seqs,
        max_num_batched_tokens=max_num_batched_tokens or default_max_num_batched_tokens(gpu), fast=not step,
        overload=overload, decode_seat_timeout_s=decode_seat_timeout or None,
    )
    opts = parse_policy_options(policy_options)
    pol = PolicySpec(router=policy, scheduler=scheduler, autoscaler=autoscaler, router_options=opts)
    from polyserve.policy import ROUTERS

    ROUTERS.create(policy, rng=None, **opts)  # an unknown name or option fails here, before the run
    trace_path = str(trace) if trace else str(AZURE_CONV)
    return tierset, w, fleet, m, config, pol, trace_path, trace_format


def _progress(quiet: bool, label: str):
    if quiet or not sys.stderr.isatty():
        return None, None
    prog = Progress(TextColumn(label), BarColumn(), TextColumn("{task.percentage:>5.1f}%"), TimeElapsedColumn(),
                    console=err, transient=True)
    task = prog.add_task(label, total=1.0)
    return prog, (lambda f: prog.update(task, completed=f))


def _fmt(x, nd=1):
    return "-" if x is None else f"{x:.{nd}f}"


def print_summary(s: dict, title: str) -> None:
    t = Table(title=title, title_justify="left")
    for col in ("tier", "requests", "attainment", "TTFT p50/p99 ms", "TPOT p50/p99 ms", "E2E p50 ms"):
        t.add_column(col, justify="right" if col != "tier" else "left")
    rows = [(k, v) for k, v in s["tiers"].items()] + [("all", s)]
    for name, b in rows:
        att = b["attainment"]
        t.add_row(
            name, str(b["requests"]), "-" if att is None else f"{att:.1%}",
            f"{_fmt(b['ttft_ms']['p50'])} / {_fmt(b['ttft_ms']['p99'])}",
            f"{_fmt(b['tpot_ms']['p50'])} / {_fmt(b['tpot_ms']['p99'])}",
            _fmt(b["e2e_ms"]["p50"]),
        )
    console.print(t)
    lm = s.get("latency_model", {})
    console.print(
        f"throughput {_fmt(s['throughput_rps'], 2)} req/s, goodput {_fmt(s['goodput_rps'], 2)} req/s, "
        f"instance-seconds {_fmt(s['instance_seconds'], 1)}, preemptions {s['preemptions']}, "
        f"latency model {lm.get('name')} ({lm.get('model')} on {lm.get('gpu')} tp{lm.get('tp')})",
        highlight=False,
    )


@app.command()
def simulate(
    trace: Trace = None, trace_format: TraceFormat = None, tiers: Tiers = None, tier_weights: TierWeights = None,
    instances: Instances = 32, mode: Mode = "colocated", prefill_fraction: PrefillFraction = 0.25,
    kv_link_gbps: KvLink = 400.0, cold_start: ColdStart = 0.0, model: Model = "llama-3.1-8b", gpu: Gpu = "h100",
    tp: Tp = 1, latency_model: LatModel = "auto", latency_coefficients: LatCoef = None,
    latency_profile: LatProfile = None, policy: Policy = "round-robin", policy_option: PolicyOption = None, scheduler: Scheduler = None,
    overload: Overload = "serve", decode_seat_timeout: DecodeSeatTimeout = 30.0, autoscaler: Autoscaler = None, rate: Rate = None, duration: Duration = None, tile: Tile = False,
    arrival: Arrival = "trace", num_requests: NumRequests = None, input_len: InputLen = None,
    output_len: OutputLen = None, burstiness: Burstiness = 1.0, seed: Seed = 0, out: Out = None,
    max_num_seqs: MaxSeqs = 256, max_num_batched_tokens: MaxTokens = None,
    gpu_memory_utilization: GpuMemUtil = 0.9, step: Step = False, quiet: Quiet = False,
    synthetic: Annotated[bool, typer.Option("--synthetic", help="Ignore the default trace: synthetic requests only")] = False,
) -> None:
    """Simulate a fleet serving a workload; write requests.csv and summary.json to --out."""
    try:
        from polyserve.experiments.runner import finish_summary, run_workload, write_outputs
        from polyserve.workload import WorkloadSpec, build_workload

        tierset, w, fleet, m, config, pol, trace_path, fmt = _common(
            trace, trace_format, tiers, tier_weights, instances, mode, prefill_fraction, kv_link_gbps,
            cold_start, model, gpu, tp, latency_model, latency_coefficients, latency_profile, policy, scheduler,
            autoscaler, max_num_seqs, max_num_batched_tokens, gpu_memory_utilization, step, policy_option, overload,
            decode_seat_timeout,
        )
        if synthetic or (trace is None and (input_len or output_len) and arrival == "trace"):
            trace_path = None
        spec = WorkloadSpec(
            trace=trace_path, trace_format=fmt, rate=rate, arrival=arrival, burstiness=burstiness,
            duration_s=duration, tile=tile, num_requests=num_requests, input_len=input_len,
            output_len=output_len, tier_weights=w,
        )
        t0 = time.perf_counter()
        wl = build_workload(spec, tierset, seed)
        prog, cb = _progress(quiet, "simulating")
        if prog:
            prog.start()
        try:
            result = run_workload(wl, m, pol, config, seed, progress=cb)
        finally:
            if prog:
                prog.stop()
        s = finish_summary(result, fleet, config, m, seed)
        wall = time.perf_counter() - t0
        if out is not None:
            write_outputs(out, result)
    except PolyServeError as e:
        fail(e)
        return
    if not quiet:
        print_summary(s, f"{pol.router} on {config.instances} x {fleet.model}/{fleet.gpu} ({config.mode})")
        console.print(
            f"{len(wl)} requests simulated in {wall:.2f} s wall ({len(wl) / max(wall, 1e-9):,.0f} req/s)"
            + (f"; wrote {out}/requests.csv and {out}/summary.json" if out else ""),
            highlight=False,
        )


@app.command(cls=OptionalRayCommand)
def goodput(
    trace: Trace = None, trace_format: TraceFormat = None, tiers: Tiers = None, tier_weights: TierWeights = None,
    instances: Instances = 32, mode: Mode = "colocated", prefill_fraction: PrefillFraction = 0.25,
    kv_link_gbps: KvLink = 400.0, cold_start: ColdStart = 0.0, model: Model = "llama-3.1-8b", gpu: Gpu = "h100",
    tp: Tp = 1, latency_model: LatModel = "auto", latency_coefficients: LatCoef = None,
    latency_profile: LatProfile = None, policy: Policy = "round-robin", policy_option: PolicyOption = None, scheduler: Scheduler = None,
    overload: Overload = "shed", decode_seat_timeout: DecodeSeatTimeout = 30.0, autoscaler: Autoscaler = None, seed: Seed = 0,
    out: Out = None, max_num_seqs: MaxSeqs = 256,
    max_num_batched_tokens: MaxTokens = None, gpu_memory_utilization: GpuMemUtil = 0.9, step: Step = False,
    quiet: Quiet = False,
    target: Annotated[float, typer.Option("--target", help="Attainment threshold")] = 0.9,
    duration: Annotated[float, typer.Option("--duration", help="Simulated seconds of arrivals per candidate rate")] = 600.0,
    warmup: Annotated[float, typer.Option("--warmup", help="Seconds excluded at the start")] = 60.0,
    rel_tol: Annotated[float, typer.Option("--rel-tol", help="Bisection stops at this relative bracket")] = 0.01,
    start_rate: Annotated[float | None, typer.Option("--start-rate", help="First candidate rate (default 0.7 x the work bound)")] = None,
    tail_factor: Annotated[float, typer.Option("--tail-factor", help="Tail-bounded goodput: every tier's p99 TTFT (all requests) <= this x its TTFT SLO")] = 2.0,
    jobs: Annotated[int | None, typer.Option("--jobs", "-j", help="Workers: 1 = every run in this process (the default without --ray); more: runs on a pool of that many processes, or a local Ray's CPUs with a bare --ray (default there: 0 = every core), rates the search may need next simulated ahead on idle ones. Same results")] = None,
    ray: Ray = None,
) -> None:
    """Highest arrival rate (Poisson, lengths resampled from the trace) with attainment >= --target.

    Three criteria: overall, every tier, and every tier with its p99 TTFT within --tail-factor x its SLO
    (the headline); the search stays below the work bound, which no policy can pass above."""
    try:
        from polyserve.experiments.goodput import GoodputSearch, GoodputSettings
        from polyserve.experiments.runner import jsonable
        from polyserve.latency.build import describe_model
        from polyserve.workload import read_trace

        tierset, w, fleet, m, config, pol, trace_path, fmt = _common(
            trace, trace_format, tiers, tier_weights, instances, mode, prefill_fraction, kv_link_gbps,
            cold_start, model, gpu, tp, latency_model, latency_coefficients, latency_profile, policy, scheduler,
            autoscaler, max_num_seqs, max_num_batched_tokens, gpu_memory_utilization, step, policy_option, overload,
            decode_seat_timeout,
        )
        tr = read_trace(trace_path, fmt, tierset)
        settings = GoodputSettings(target=target, duration_s=duration, warmup_s=warmup, rel_tol=rel_tol,
                                   start_rate=start_rate, tail_factor=tail_factor)
        from polyserve.experiments.executor import make_executor

        ex = make_executor(jobs if jobs is not None else (0 if ray else 1), ray)
        t0 = time.perf_counter()
        try:
            gs = GoodputSearch(tr, tierset, m, pol, config, seed, settings, use_tier_column=w is None, executor=ex)
            res = _search_with_progress(gs, quiet, ex)
        finally:
            ex.close()
        wall = time.perf_counter() - t0
    except PolyServeError as e:
        fail(e)
        return
    doc = {
        "goodput_rps": res.goodput_rps,
        "goodput_rps_all_tiers": res.goodput_rps_all_tiers,
        "goodput_rps_tail_bounded": res.goodput_rps_tail_bounded,
        "bound_rps": res.bound_rps,
        "bound_rps_all_tiers": res.bound_rps_all_tiers,
        "stationarity": res.stationarity,
        "target": target,
        "attainment_by_tier": (res.at_goodput or {}).get("tiers") and {
            k: v["attainment"] for k, v in res.at_goodput["tiers"].items()  # type: ignore[union-attr]
        },
        "policy": pol.router,
        "latency_model": describe_model(m, fleet),
        "fleet": {"instances": config.instances, "mode": config.mode, "model": fleet.model, "gpu": fleet.gpu, "tp": fleet.tp},
        "trace": {"path": tr.path, "sha256": tr.sha256, "format": tr.format},
        "settings": {"duration_s": duration, "warmup_s": warmup, "rel_tol": rel_tol, "seed": seed,
                     "tail_factor": tail_factor, "overload": config.overload},
        "probes": [p.__dict__ for p in res.probes],
        "at_goodput": res.at_goodput,
        "at_goodput_tail_bounded": res.at_goodput_tail_bounded,
        "polyserve_version": __version__,
    }
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "goodput.json").write_text(json.dumps(jsonable(doc), indent=2) + "\n", encoding="utf-8")
    console.print(f"goodput_rps {res.goodput_rps:.3f}", highlight=False)
    console.print(f"goodput_rps_all_tiers {res.goodput_rps_all_tiers:.3f}", highlight=False)
    console.print(f"goodput_rps_tail_bounded {res.goodput_rps_tail_bounded:.3f}", highlight=False)
    if res.bound_rps is not None:
        console.print(f"bound_rps {res.bound_rps:.3f} (every tier {res.bound_rps_all_tiers:.3f})", highlight=False)
    if not quiet:
        ahead = f", {gs.speculated} simulated ahead on {ex.name} x {ex.workers}" if gs.speculated else ""
        console.print(f"({len(res.probes)} runs{ahead} in {wall:.1f} s wall"
                      + (f"; wrote {out}/goodput.json)" if out else ")"), highlight=False)


def _search_with_progress(gs, quiet: bool, ex):
    """Run the search, with a progress bar over its probes on a terminal (a line per probe otherwise)."""
    if quiet:
        return gs.run()
    if not sys.stderr.isatty():
        gs.progress = lambda msg: err.print(f"  {msg}", highlight=False)
        return gs.run()
    where = f"{ex.name}, {ex.workers} worker{'s' if ex.workers != 1 else ''}"
    with Progress(TextColumn(f"goodput ({where})"), BarColumn(), TextColumn("{task.completed} probes"),
                  TextColumn("{task.description}"), TimeElapsedColumn(), console=err, transient=True) as prog:
        task = prog.add_task("", total=None)

        def cb(msg: str) -> None:
            prog.console.print(f"  {msg}", highlight=False)
            prog.update(task, completed=len(gs.probes),
                        description=f"({gs.speculated} ahead)" if gs.speculated else "")

        gs.progress = cb
        return gs.run()


@profile_app.command("fit")
def profile_fit(
    csv_path: Annotated[Path, typer.Argument(help="CSV of measured iterations: num_prefill_tokens,num_decode_tokens[,kv_tokens],iteration_time_ms", dir_okay=False)],
    model: Model = "llama-3.1-8b", gpu: Gpu = "h100", tp: Tp = 1,
    out: Annotated[Path | None, typer.Option("--out", help="Write the coefficients here (YAML) for --latency-coefficients", dir_okay=False)] = None,
) -> None:
    """Fit linear latency coefficients (non-negative least squares) from measured iterations."""
    try:
        from polyserve.latency.fit import fit_linear, fit_report, save_linear_coefficients
        from polyserve.latency.hardware import get_deployment

        dep = get_deployment(model, gpu, tp)
        lm = fit_linear(csv_path, dep)
        rep = fit_report(lm, csv_path)
        if out is not None:
            save_linear_coefficients(lm, out, report=rep)
    except PolyServeError as e:
        fail(e)
        return
    d = lm.describe()
    console.print(
        f"b0 {d['b0_us']:.3f} us, b1 {d['b1_us_per_prefill_token']:.4f} us/prefill token, "
        f"b2 {d['b2_us_per_decode_token']:.4f} us/decode seq, b3 {d['b3_us_per_kv_token']:.5f} us/kv token",
        highlight=False,
    )
    console.print(json.dumps(rep.as_dict()), highlight=False)
    if out is not None:
        console.print(f"wrote {out}", highlight=False)


@app.command()
def policies() -> None:
    """List the registered routers, instance schedulers and autoscalers, one line each."""
    from polyserve.policy import AUTOSCALERS, ROUTERS, SCHEDULERS

    for title, reg in (("routers (--policy)", ROUTERS), ("schedulers (--scheduler)", SCHEDULERS),
                       ("autoscalers (--autoscaler)", AUTOSCALERS)):
        console.print(f"[bold]{title}[/bold]")
        for e in reg:
            console.print(f"  {e.name:<22} {e.summary}", highlight=False)


@app.command()
def version() -> None:
    """Print the package version."""
    console.print(__version__)


def _register_faces() -> None:
    """Commands of the other faces (compare, engine, gateway, up, bench) live beside their code; each module
    exposes ``register(app)``. Every face is part of the package: one that fails to import is a bug and
    fails loudly here, never a command silently missing from ``polyserve --help``."""
    from polyserve.bench import cli as bench_cli
    from polyserve.cli import compare as compare_cli
    from polyserve.cli import up as up_cli
    from polyserve.engine import cli as engine_cli
    from polyserve.gateway import cli as gateway_cli

    for module in (compare_cli, engine_cli, gateway_cli, up_cli, bench_cli):
        module.register(app)


_register_faces()


def main() -> None:
    try:
        app()
    except PolyServeError as e:  # pragma: no cover - commands catch their own
        err.print(f"error: {e}", highlight=False)
        sys.exit(2)


if __name__ == "__main__":
    main()
