"""``polyserve compare`` and ``polyserve demo`` command-line faces (wired into ``polyserve.cli``)."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from polyserve.bench.config import parse_weights  # the --tier-weights parser bench uses too
from polyserve.cli.options import (
    ColdStart,
    DecodeSeatTimeout,
    Gpu,
    GpuMemUtil,
    Instances,
    KvLink,
    LatCoef,
    LatModel,
    LatProfile,
    MaxSeqs,
    MaxTokens,
    Model,
    OptionalRayCommand,
    PrefillFraction,
    Quiet,
    Ray,
    Tiers,
    TierWeights,
    Tp,
    Trace,
    TraceFormat,
    console,
    err,
    fail,
    parse_floats,
    parse_ints,
)
from polyserve.core.errors import PolyServeError


def _pct(x: object) -> str:
    return "-" if x is None else f"{x:.1%}"  # type: ignore[str-format]


def _num(x: object, nd: int = 1) -> str:
    return "-" if x is None else f"{x:.{nd}f}"  # type: ignore[str-format]


def print_rows(rows: list[dict], title: str) -> None:
    t = Table(title=title, title_justify="left")
    tiers = sorted({k for r in rows for k in (r.get("attainment_by_tier") or {})},
                   key=lambda n: [int(c) if c.isdigit() else c for c in n.replace("t", " ").split()])
    cols = ["policy", "mode", "tail-bounded (min-max)", "overall", "all tiers", "% bound", *[f"att {x}" for x in tiers],
            "TTFT p99 all", "shed / timed out", "autoscaled att/inst-s", "TPOT p50/p99"]
    for c in cols:
        t.add_column(c, justify="left" if c in ("policy", "mode") else "right")
    for r in rows:
        if r.get("na"):
            t.add_row(r["policy"], r["mode"], *(["n/a"] * (len(cols) - 2)))
            continue
        ab = r.get("attainment_by_tier") or {}
        name = r["policy"] + (f" ({r['token_budget']})" if r.get("token_budget") else "") + (
            f" (prefill {r['prefill_fraction']:.0%})" if r.get("prefill_fraction") else "")
        t.add_row(
            name, r["mode"],
            f"{_num(r['goodput_rps_tail_bounded'])} ({_num(r['goodput_rps_tail_bounded_min'])}-"
            f"{_num(r['goodput_rps_tail_bounded_max'])})",
            _num(r["goodput_rps"]), _num(r["goodput_rps_all_tiers"]), _pct(r["tail_bounded_fraction"]),
            *[_pct(ab.get(x)) for x in tiers], _num(r["ttft_p99_ms_all"], 0),
            f"{_pct(r['shed_fraction'])} / {_pct(r.get('timed_out_fraction'))}",
            _num(r["autoscaled_goodput_per_instance_s"], 3),
            f"{_num(r['tpot_p50_ms'])}/{_num(r['tpot_p99_ms'])}",
        )
    console.print(t)


def register(app: typer.Typer) -> None:
    @app.command(cls=OptionalRayCommand)
    def compare(
        trace: Trace = None, trace_format: TraceFormat = None, tiers: Tiers = None, tier_weights: TierWeights = None,
        instances: Instances = 32, prefill_fraction: PrefillFraction = 0.25, kv_link_gbps: KvLink = 400.0,
        cold_start: ColdStart = 0.0, model: Model = "llama-3.1-8b", gpu: Gpu = "h100", tp: Tp = 1,
        latency_model: LatModel = "auto", latency_coefficients: LatCoef = None, latency_profile: LatProfile = None,
        max_num_seqs: MaxSeqs = 256, max_num_batched_tokens: MaxTokens = None, gpu_memory_utilization: GpuMemUtil = 0.9,
        quiet: Quiet = False,
        policies: Annotated[str | None, typer.Option("--policies", help="Comma-separated registry names (default: PolyServe, the paper's and the stronger baselines, the ablations)")] = None,
        modes: Annotated[str, typer.Option("--modes", help="colocated,disaggregated")] = "colocated,disaggregated",
        out: Annotated[Path, typer.Option("--out", help="Output directory (created; may exist)", file_okay=False)] = Path("runs/compare"),
        target: Annotated[float, typer.Option("--target", help="Attainment threshold of goodput")] = 0.9,
        duration: Annotated[float, typer.Option("--duration", help="Simulated seconds of arrivals per goodput probe")] = 600.0,
        warmup: Annotated[float, typer.Option("--warmup", help="Seconds excluded at the start of each probe")] = 60.0,
        rel_tol: Annotated[float, typer.Option("--rel-tol", help="Goodput bisection tolerance (relative)")] = 0.01,
        seeds: Annotated[str, typer.Option("--seeds", help="Comma-separated seeds; figures are means with min-max")] = "0,1,2",
        overload: Annotated[str, typer.Option("--overload", help="For every policy alike: shed (drop a request whose TTFT can no longer be met) | serve (serve it late)")] = "shed",
        decode_seat_timeout: DecodeSeatTimeout = 30.0,
        tail_factor: Annotated[float, typer.Option("--tail-factor", help="Headline goodput: every tier's p99 TTFT (all requests) <= this x its TTFT SLO")] = 2.0,
        co_chunk_budgets: Annotated[str, typer.Option("--co-chunk-budgets", help="Static token budgets swept for co-chunk")] = "256,512,1024,2048,4096,8192",
        prefill_fractions: Annotated[str, typer.Option("--prefill-fractions", help="Disaggregated: initial prefill-pool shares swept for every policy alike, each reported at its best ('' = only --prefill-fraction)")] = "",
        sensitivity_model: Annotated[str, typer.Option("--sensitivity-model", help="Second latency model for the sensitivity table ('none' to skip)")] = "roofline",
        autoscale_rate: Annotated[float | None, typer.Option("--autoscale-rate", help="req/s of the autoscaled trace replay (default 0.6 x the optimal bound)")] = None,
        rate_sweep: Annotated[str, typer.Option("--rate-sweep", help="Fractions of the optimal bound for the attainment-vs-rate sweep ('' to skip)")] = "0.6,0.8,0.9,1.0,1.1,1.2",
        fleet_sizes: Annotated[str, typer.Option("--fleet-sizes", help="Fleet sizes for goodput per instance ('' to skip)")] = "8,16,32,64",
        jobs: Annotated[int, typer.Option("--jobs", "-j", help="Parallel processes (0 = all cores); with a bare --ray, the local Ray's CPUs")] = 0,
        ray: Ray = None,
    ) -> None:
        """Goodput of policies x modes on one workload and fleet: table, CSV/JSON and PNG plots in --out."""
        try:
            from polyserve.data import AZURE_CONV
            from polyserve.experiments.compare import DEFAULT_POLICIES, CompareSettings, Context, write_outputs
            from polyserve.experiments.goodput import GoodputSettings
            from polyserve.latency.build import FleetSpec, build_model
            from polyserve.sim.config import SimConfig, default_max_num_batched_tokens

            w = parse_weights(tier_weights)
            fleet = FleetSpec(model=model, gpu=gpu, tp=tp, latency_model=latency_model,
                              latency_coefficients=str(latency_coefficients) if latency_coefficients else None,
                              latency_profile=str(latency_profile) if latency_profile else None,
                              gpu_memory_utilization=gpu_memory_utilization)
            build_model(fleet)  # fail early
            sim = SimConfig(instances=instances, prefill_fraction=prefill_fraction, kv_link_gbps=kv_link_gbps,
                            cold_start_s=cold_start, max_num_seqs=max_num_seqs,
                            max_num_batched_tokens=max_num_batched_tokens or default_max_num_batched_tokens(gpu),
                            overload=overload, decode_seat_timeout_s=decode_seat_timeout or None)
            gs = GoodputSettings(target=target, duration_s=duration, warmup_s=warmup, rel_tol=rel_tol,
                                 tail_factor=tail_factor)
            seed_list = parse_ints(seeds, "--seeds")
            if not seed_list:
                raise PolyServeError("--seeds: give at least one seed")
            ctx = Context(str(trace or AZURE_CONV), trace_format, str(tiers) if tiers else None, w, fleet, sim,
                          seed_list[0], gs)
            pols = tuple(p.strip() for p in policies.split(",") if p.strip()) if policies else DEFAULT_POLICIES
            st = CompareSettings(
                policies=pols, modes=tuple(m.strip() for m in modes.split(",") if m.strip()),
                co_chunk_budgets=parse_ints(co_chunk_budgets, "--co-chunk-budgets"),
                prefill_fractions=parse_floats(prefill_fractions, "--prefill-fractions"),
                sensitivity_model=None if sensitivity_model.lower() == "none" else sensitivity_model,
                sensitivity_policies=tuple(p for p in ("polyserve", "random", "minimal", "co-chunk") if p in pols),
                autoscale_rate=autoscale_rate, rate_sweep=parse_floats(rate_sweep, "--rate-sweep"),
                fleet_sizes=parse_ints(fleet_sizes, "--fleet-sizes"), seeds=seed_list, jobs=jobs,
            )
            t0 = time.perf_counter()
            res = _run_with_progress(ctx, st, quiet, ray)
            files = write_outputs(out, ctx, st, res)
        except PolyServeError as e:
            fail(e)
            return
        if not quiet:
            print_rows(res.rows, f"goodput (req/s) at >= {target:.0%} attainment, {instances} x {model}/{gpu}, "
                       f"headline latency model, overload {overload}, seeds {','.join(map(str, seed_list))}")
            if res.sensitivity:
                print_rows(res.sensitivity, f"sensitivity: the same under the {st.sensitivity_model} model")
            for m, h in res.summary.items():
                if isinstance(h, dict) and "polyserve_goodput_rps_tail_bounded" in h:
                    console.print(
                        f"{m}: PolyServe tail-bounded {_num(h.get('polyserve_goodput_rps_tail_bounded'))} req/s "
                        f"({_pct(h.get('tail_bounded_fraction_of_bound'))} of the work bound); "
                        f"x{_num(h.get('ratio_vs_best_paper'), 3)} vs best paper baseline "
                        f"({h.get('best_paper')}), x{_num(h.get('ratio_vs_best_other'), 3)} vs best other policy "
                        f"({h.get('best_other')}), x{_num(h.get('ratio_vs_best_ablation'), 3)} vs best ablation "
                        f"({h.get('best_ablation')})", highlight=False)
            console.print(f"{time.perf_counter() - t0:.0f} s wall; wrote " + ", ".join(str(p) for p in files),
                          highlight=False)


def _run_with_progress(ctx, st, quiet: bool, ray: str | None = None):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from polyserve.experiments.compare import run_compare
    from polyserve.experiments.executor import make_executor

    ex = make_executor(st.jobs, ray)
    where = f"{ex.name}, {ex.workers} worker{'s' if ex.workers != 1 else ''}"
    try:
        if quiet or not sys.stderr.isatty():
            def log(i: int, n: int, what: str) -> None:
                if not quiet:
                    err.print(f"[{i}/{n}] {what}", highlight=False)
            if not quiet:
                err.print(f"compare: simulations run on {where}", highlight=False)
            return run_compare(ctx, st, progress=log, executor=ex)
        with Progress(TextColumn(f"compare ({where})"), BarColumn(), MofNCompleteColumn(),
                      TextColumn("{task.description}"), TimeElapsedColumn(), console=err, transient=True) as prog:
            task = prog.add_task("", total=None)

            def cb(i: int, n: int, what: str) -> None:
                prog.update(task, completed=i, total=n, description=what)

            return run_compare(ctx, st, progress=cb, executor=ex)
    finally:
        ex.close()
