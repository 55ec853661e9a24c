"""``polyserve compare``: policies x modes on one workload and fleet, side by side, with the same seeds.

Every policy runs under the same rules: the same overload contract (``SimConfig.overload``, default ``shed``:
a request whose TTFT can no longer be met is dropped with the reason, whatever the router), the same engine
model, and, in autoscaled runs, no scale-up delay for the baselines' autoscaler (PolyServe scales on the
routing decision itself).

What each row reports (``compare.json``; README "Results" holds a full run), means over ``seeds``:
- ``goodput_rps_tail_bounded`` (the headline): every tier >= target and each tier's p99 TTFT (all requests,
  attained or not) within ``tail_factor`` x its TTFT SLO; ``_min``/``_max`` over the seeds beside it;
- ``goodput_rps``: overall attainment >= target; ``goodput_rps_all_tiers``: every tier >= target;
- ``optimal_rps``: the work bound (``sim/bound.py``), a rate no policy can pass above (overall criterion),
  ``optimal_rps_all_tiers`` with every tier at the target; ``goodput_fraction`` = goodput_rps / optimal_rps
  and ``tail_bounded_fraction`` = goodput_rps_tail_bounded / optimal_rps_all_tiers;
  ``fluid_estimate_rps``: the design note's fluid formula (``policy/bound.py``), not a bound;
- at the headline rate, first seed: ``attainment_by_tier``, ``ttft_p50_ms``/``ttft_p99_ms`` (completed
  requests), ``ttft_p99_ms_all`` (every request not shed), ``shed_fraction``, ``timed_out_fraction``
  (disaggregated: no decode seat within ``SimConfig.decode_seat_timeout_s``), ``tpot_*`` (completed requests),
  ``stationarity``;
  ``ttft_p99_ms_all_at_goodput_rps``: the same tail at the overall goodput rate (what that figure hides);
- ``autoscaled_goodput_per_instance_s`` and ``scaling_actions``: the trace replayed at ``autoscale_rate``
  with scaling on (PolyServe variants scale themselves; other routers get the ``target-concurrency``
  autoscaler; ``static-partition`` keeps its fixed partition);
- ``co-chunk``: its static token budget is swept and the best (by headline goodput) is reported;
- pairs a policy does not support, or where it is the same policy as PolyServe (an ablation of a mechanism
  the mode does not use), are rows of nulls with ``na: true`` and a ``note``.

Beside the headline (default latency model) the same comparison runs under a second latency model
(``--sensitivity-model``, default roofline) into ``compare_<model>.json``; plus a rate sweep (attainment per
tier vs rate for PolyServe and the best paper baseline) and a fleet-size sweep (goodput per instance from 8 to
64 instances), both on the first seed.

Where it runs: every simulation is a task on an ``Executor`` (``experiments/executor.py``: inline for
``--jobs 1``, a local process pool, or Ray with ``--ray``); the goodput searches themselves run here, several
at once (threads that mostly wait), each submitting its probes and, when workers are idle, speculative ones
(``goodput.py``). Inputs (trace, tiers, latency model) are read here once and travel inside the tasks, so no
worker reads a file. The results are assembled in a fixed order, so the outputs are byte-identical whatever
the executor, the number of workers and the order in which tasks finish.
"""

from __future__ import annotations

import csv
import json
import math
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from polyserve import __version__
from polyserve.core.errors import ConfigError
from polyserve.experiments.executor import Executor, InlineExecutor, make_executor
from polyserve.experiments.goodput import GoodputSearch, GoodputSettings
from polyserve.experiments.runner import PolicySpec, jsonable, load_tiers, run_workload
from polyserve.latency.build import FleetSpec, build_model
from polyserve.policy import ROUTERS
from polyserve.policy.bound import BoundInputs, optimal_rate, tier_rate
from polyserve.policy.cost import fit_cost
from polyserve.sim.config import SimConfig
from polyserve.workload import TraceData, WorkloadSpec, build_workload, read_trace

PAPER_BASELINES = ("random", "minimal", "co-chunk")
STRONGER_BASELINES = ("round-robin", "least-outstanding", "power-of-two", "static-partition", "edf-pool",
                      "minimal-edf", "slos-serve")
ABLATIONS = ("polyserve-no-promotion", "polyserve-no-gradient", "polyserve-no-wait", "polyserve-static-chunk",
             "polyserve-promote-first", "polyserve-edf-prefill")
DEFAULT_POLICIES = ("polyserve", *PAPER_BASELINES, *STRONGER_BASELINES, *ABLATIONS)
# (policy, mode) pairs that are n/a, with the reason: unsupported, or identical to PolyServe in that mode
NOT_APPLICABLE = {
    ("co-chunk", "disaggregated"): "co-chunk is a co-located policy",
    ("polyserve-no-wait", "disaggregated"): "no-op here: wait-time awareness only acts on co-located first-token "
                                            "checks (decode servers do no prefill, prefill servers check TTFT slack)",
    ("polyserve-static-chunk", "disaggregated"): "no-op here: decode servers do no prefill, so their chunk budget "
                                                 "is never used",
    ("polyserve-edf-prefill", "colocated"): "no-op here: the EDF admission test is the disaggregated prefill "
                                            "servers' (co-located servers have none)",
}
CSV_SKIP = ("attainment_by_tier", "latency_model_params", "seeds", "per_seed", "stationarity")
ROW_KEYS = (
    "policy", "mode", "latency_model", "goodput_rps_tail_bounded", "goodput_rps_tail_bounded_min",
    "goodput_rps_tail_bounded_max", "goodput_rps", "goodput_rps_min", "goodput_rps_max", "goodput_rps_all_tiers",
    "optimal_rps", "optimal_rps_all_tiers", "goodput_fraction", "tail_bounded_fraction", "fluid_estimate_rps",
    "autoscaled_goodput_per_instance_s", "scaling_actions", "attainment_by_tier", "ttft_p50_ms", "ttft_p99_ms",
    "ttft_p99_ms_all", "ttft_p99_ms_all_at_goodput_rps", "shed_fraction", "timed_out_fraction", "tpot_p50_ms",
    "tpot_p99_ms", "autoscaled_attainment", "autoscaled_instance_seconds", "token_budget", "prefill_fraction", "na",
    "seeds", "per_seed", "stationarity", "latency_model_params",
)


@dataclass(frozen=True)
class Context:
    """Everything a worker process needs to rebuild a run (picklable)."""

    trace: str
    trace_format: str | None
    tiers_path: str | None
    tier_weights: dict[str, float] | None
    fleet: FleetSpec
    sim: SimConfig
    seed: int  # the first seed: autoscaled runs and sweeps use it
    goodput: GoodputSettings


@dataclass(frozen=True)
class CompareSettings:
    policies: tuple[str, ...] = DEFAULT_POLICIES
    modes: tuple[str, ...] = ("colocated", "disaggregated")
    co_chunk_budgets: tuple[int, ...] = (256, 512, 1024, 2048, 4096, 8192)
    # disaggregated: every policy is run at each initial prefill-pool share and reported at its best one, so no
    # baseline is judged on a split that suits another trace (empty: only SimConfig.prefill_fraction)
    prefill_fractions: tuple[float, ...] = ()
    sensitivity_model: str | None = "roofline"
    sensitivity_policies: tuple[str, ...] = ("polyserve", *PAPER_BASELINES)
    autoscale_rate: float | None = None  # None: 0.6 x the co-located fluid estimate
    rate_sweep: tuple[float, ...] = (0.6, 0.8, 0.9, 1.0, 1.1, 1.2)  # fractions of the fluid estimate
    fleet_sizes: tuple[int, ...] = (8, 16, 32, 64)
    seeds: tuple[int, ...] = (0, 1, 2)
    jobs: int = 0  # 0 = os.cpu_count(); the local executor's processes, or a local Ray's CPUs

    def __post_init__(self) -> None:
        for p in self.policies:
            ROUTERS.get(p)
        bad = set(self.modes) - {"colocated", "disaggregated"}
        if bad or not self.modes:
            raise ConfigError(f"--modes takes colocated and/or disaggregated, got {','.join(self.modes) or '(none)'}")
        if any(b < 1 for b in self.co_chunk_budgets):
            raise ConfigError("--co-chunk-budgets must be positive token counts")
        if any(not 0 < f < 1 for f in self.prefill_fractions):
            raise ConfigError(f"--prefill-fractions must be shares in (0, 1), got {list(self.prefill_fractions)}")
        if not self.seeds or any(x < 0 for x in self.seeds) or len(set(self.seeds)) != len(self.seeds):
            raise ConfigError(f"--seeds must be distinct integers >= 0, got {list(self.seeds)}")


# ---- the fluid estimate (not a bound) ---------------------------------------------------------------------------
def bound_inputs(ctx: Context, model, instances: int | None = None) -> BoundInputs:
    tiers = _tiers(ctx)
    tr = _trace(ctx)
    c = fit_cost(model, ctx.sim.max_num_seqs, ctx.sim.max_num_batched_tokens)
    if tr.tier is not None and ctx.tier_weights is None:
        counts = np.bincount(tr.tier.astype(np.intp), minlength=len(tiers))
        mix = counts / counts.sum()
    else:
        mix = np.array(tiers.weights())
    return BoundInputs(
        instances=instances or ctx.sim.instances,
        mean_prompt=float(tr.input_tokens.mean()),
        mean_output=float(tr.output_tokens.mean()),
        kv_capacity=float(model.deployment.kv_capacity_tokens),
        t0=c.b0,
        c_prefill=c.b1,
        c_decode=c.b2 + c.b3 * float(tr.input_tokens.mean() + tr.output_tokens.mean() / 2),
        tiers=tuple((t.tpot_ms / 1e3, float(f)) for t, f in zip(tiers, mix, strict=True)),
    )


def partition_shares(b: BoundInputs, names: list[str], mode: str) -> dict[str, float]:
    """Each tier's demand in server units (``f_t / mu_t``): the strongest static partition."""
    dis = mode == "disaggregated"
    return {n: f / tier_rate(b, tpot, dis) for n, (tpot, f) in zip(names, b.tiers, strict=True) if f > 0}


def _tiers(ctx: Context):
    tiers = load_tiers(ctx.tiers_path)
    return tiers.with_weights(ctx.tier_weights) if ctx.tier_weights else tiers


_TRACES: dict[tuple, TraceData] = {}
_TRACES_LOCK = threading.Lock()


def _trace(ctx: Context) -> TraceData:
    """The trace, read once per process and file (the searches share it; nothing modifies a ``TraceData``)."""
    k = (ctx.trace, ctx.trace_format, ctx.tiers_path, tuple(sorted((ctx.tier_weights or {}).items())))
    with _TRACES_LOCK:
        tr = _TRACES.get(k)
        if tr is None:
            tr = _TRACES[k] = read_trace(ctx.trace, ctx.trace_format, _tiers(ctx))
        return tr


SIM_EXTRAS = ("prefill_fraction",)  # variant keys that configure the simulated fleet, not the router


def _split(extra: dict | None) -> tuple[dict[str, object], dict[str, object]]:
    """A variant's (router options, SimConfig fields)."""
    e = dict(extra or {})
    return {k: v for k, v in e.items() if k not in SIM_EXTRAS}, {k: v for k, v in e.items() if k in SIM_EXTRAS}


def _policy(name: str, mode: str, ctx: Context, model, extra: dict | None = None, autoscale: bool = False):
    opts, _ = _split(extra)
    if name == "static-partition" and "shares" not in opts:
        opts["shares"] = partition_shares(bound_inputs(ctx, model), _tiers(ctx).names, mode)
    router = ROUTERS.create(name, rng=None, **opts)  # type: ignore[arg-type]
    scaler = None
    scaler_opts: dict[str, object] = {}
    if autoscale and not router.tiered:
        # fair: no extra delay before a baseline scales up (PolyServe scales on the routing decision itself;
        # the baselines' autoscaler still acts on the 1 s tick)
        scaler, scaler_opts = "target-concurrency", {"upscale_delay_s": 0.0}
    return PolicySpec(router=name, router_options=opts, autoscaler=scaler, autoscaler_options=scaler_opts)


# ---- tasks -----------------------------------------------------------------------------------------------------
# Each task_* runs here (in a coordinator thread) and hands its simulations to the executor; the _run_*
# functions are what the workers run, on arguments that carry their data (no file is read there).
def _model(ctx: Context, kind: str | None):
    fleet = ctx.fleet if kind is None else replace(ctx.fleet, latency_model=kind, latency_coefficients=None,
                                                   latency_profile=None)
    return build_model(fleet)


def _search(ctx: Context, policy: str, mode: str, kind: str | None, extra: dict | None, seed: int,
            instances: int | None, bounds: tuple[float, float] | None,
            executor: Executor | None = None) -> tuple[GoodputSearch, object]:
    model = _model(ctx, kind)
    sim = replace(ctx.sim, mode=mode, **({"instances": instances} if instances else {}), **_split(extra)[1])
    tiers = _tiers(ctx)
    tr = _trace(ctx)
    pol = _policy(policy, mode, replace(ctx, sim=sim), model, extra)
    gs = GoodputSearch(tr, tiers, model, pol, sim, seed, ctx.goodput, use_tier_column=ctx.tier_weights is None,
                       bounds=bounds, executor=executor)
    return gs, model


def task_bound(ctx: Context, mode: str, kind: str | None, seed: int, instances: int | None,
               executor: Executor | None = None) -> dict[str, object]:
    gs, _ = _search(ctx, "round-robin", mode, kind, None, seed, instances, None, executor)
    b, b_all = gs.bounds()
    return {"bound": b, "bound_all_tiers": b_all}


def task_goodput(ctx: Context, policy: str, mode: str, kind: str | None, extra: dict | None, seed: int,
                 instances: int | None = None, bounds: tuple[float, float] | None = None,
                 executor: Executor | None = None) -> dict[str, object]:
    gs, model = _search(ctx, policy, mode, kind, extra, seed, instances, bounds, executor)
    res = gs.run()
    at = res.at_goodput_tail_bounded or {}
    at_overall = res.at_goodput or {}
    tiers_at = at.get("tiers") or {}
    sim = replace(ctx.sim, mode=mode, **({"instances": instances} if instances else {}), **_split(extra)[1])
    fluid = optimal_rate(bound_inputs(replace(ctx, sim=sim), model), mode)
    return {
        "goodput_rps": res.goodput_rps,
        "goodput_rps_all_tiers": res.goodput_rps_all_tiers,
        "goodput_rps_tail_bounded": res.goodput_rps_tail_bounded,
        "optimal_rps": res.bound_rps,
        "optimal_rps_all_tiers": res.bound_rps_all_tiers,
        "fluid_estimate_rps": fluid,
        "attainment_by_tier": {k: v["attainment"] for k, v in tiers_at.items()} or None,  # type: ignore[union-attr]
        "ttft_p50_ms": (at.get("ttft_ms") or {}).get("p50"),  # type: ignore[union-attr]
        "ttft_p99_ms": (at.get("ttft_ms") or {}).get("p99"),  # type: ignore[union-attr]
        "ttft_p99_ms_all": (at.get("ttft_ms_all") or {}).get("p99"),  # type: ignore[union-attr]
        "ttft_p99_ms_all_at_goodput_rps": (at_overall.get("ttft_ms_all") or {}).get("p99"),  # type: ignore[union-attr]
        "shed_fraction": at.get("shed_fraction"),
        "timed_out_fraction": at.get("timed_out_fraction"),
        "tpot_p50_ms": (at.get("tpot_ms") or {}).get("p50"),  # type: ignore[union-attr]
        "tpot_p99_ms": (at.get("tpot_ms") or {}).get("p99"),  # type: ignore[union-attr]
        "stationarity": res.stationarity,
        "probes": len(res.probes),
        "latency_model_params": model.describe(),
    }


def _run_autoscale(wl, model, pol: PolicySpec, sim: SimConfig, seed: int, rate: float) -> dict[str, object]:
    res = run_workload(wl, model, pol, sim, seed)
    s = res.summary
    return {
        "autoscaled_goodput_per_instance_s": s["attained_per_instance_s"],
        "scaling_actions": s["scaling_actions"],
        "autoscaled_attainment": s["attainment"],
        "autoscaled_instance_seconds": s["instance_seconds"],
        "servers_timeline": res.stats.servers_timeline,
        "rate": rate,
    }


def task_autoscale(ctx: Context, policy: str, mode: str, rate: float, extra: dict | None,
                   executor: Executor | None = None) -> dict[str, object]:
    model = _model(ctx, None)
    tiers = _tiers(ctx)
    tr = _trace(ctx)
    if tr.arrival_s is None:  # a lengths-only trace has nothing to replay: Poisson arrivals over a probe's span
        spec = WorkloadSpec(trace=ctx.trace, trace_format=ctx.trace_format, rate=rate, arrival="poisson",
                            duration_s=ctx.goodput.duration_s)
    else:
        spec = WorkloadSpec(trace=ctx.trace, trace_format=ctx.trace_format, rate=rate)
    wl = build_workload(spec, tiers, ctx.seed, trace=tr)
    sim = replace(ctx.sim, mode=mode, **_split(extra)[1])
    pol = _policy(policy, mode, replace(ctx, sim=sim), model, extra, autoscale=True)
    ex = executor or InlineExecutor()
    return ex.submit(_run_autoscale, wl, model, pol, sim, ctx.seed, rate).result()


def task_sweep(ctx: Context, policy: str, mode: str, rate: float, extra: dict | None,
               executor: Executor | None = None) -> dict[str, object]:
    gs, _ = _search(ctx, policy, mode, None, extra, ctx.seed, None, None, executor)
    s = gs.full_summary(rate)
    return {"rate": rate, "attainment": s["attainment"], "ttft_p99_ms_all": s["ttft_ms_all"]["p99"],  # type: ignore[index]
            "tiers": {k: v["attainment"] for k, v in s["tiers"].items()}}  # type: ignore[union-attr]


def _run(kind: str, args: tuple, executor: Executor) -> tuple[str, tuple, dict[str, object]]:
    fn = {"bound": task_bound, "goodput": task_goodput, "autoscale": task_autoscale, "sweep": task_sweep}[kind]
    return kind, args, fn(*args, executor=executor)  # type: ignore[operator]


# ---- orchestration -------------------------------------------------------------------------------------------
@dataclass
class CompareResult:
    rows: list[dict[str, object]]
    sensitivity: list[dict[str, object]]
    sweep: dict[str, list[dict[str, object]]] = field(default_factory=dict)
    fleet: list[dict[str, object]] = field(default_factory=list)
    timelines: dict[str, list] = field(default_factory=dict)
    summary: dict[str, object] = field(default_factory=dict)


def run_compare(ctx: Context, st: CompareSettings, progress: Callable[[int, int, str], None] | None = None,
                executor: Executor | None = None) -> CompareResult:
    """Run the comparison. ``executor``: where the simulations run (default: ``make_executor(st.jobs)``,
    closed at the end; one passed in is left open). ``progress(done, total, what)`` after each task."""
    ex = executor or make_executor(st.jobs)
    try:
        return _compare(ctx, st, progress, ex)
    finally:
        if executor is None:
            ex.close()


def _compare(ctx: Context, st: CompareSettings, progress: Callable[[int, int, str], None] | None,
             ex: Executor) -> CompareResult:
    model = _model(ctx, None)
    fluid_co = optimal_rate(bound_inputs(ctx, model), "colocated")
    as_rate = st.autoscale_rate or 0.6 * fluid_co
    pairs = [(p, m) for p in st.policies for m in st.modes]
    kinds: list[str | None] = [None] + ([st.sensitivity_model] if st.sensitivity_model else [])
    # coordinators: one at a time in-process (the plain sequential run); else enough to keep every worker fed
    coordinators = 1 if isinstance(ex, InlineExecutor) else 2 * ex.workers
    lock = threading.Lock()
    state = {"done": 0, "total": 0}

    def finished(k_a_o: tuple[str, tuple, dict[str, object]]) -> None:
        with lock:
            state["done"] += 1
            n = state["done"]
        if progress:
            k, a, o = k_a_o
            probes = f" ({o['probes']} probes)" if k == "goodput" else ""
            progress(n, state["total"], f"{k} {_label(k, a)}{probes}")

    def execute(batch: list[tuple[str, tuple]]) -> list[tuple[str, tuple, dict[str, object]]]:
        """Run ``batch``; results in ``batch`` order (never completion order: outputs must not depend on it)."""
        state["total"] += len(batch)
        if coordinators == 1:  # in this thread, one after another: Ctrl-C stops it at once
            out = []
            for kind, args in batch:
                out.append(_run(kind, args, ex))
                finished(out[-1])
            return out
        with ThreadPoolExecutor(max_workers=min(coordinators, len(batch)) or 1) as pool:
            futs = {pool.submit(_run, kind, args, ex): i for i, (kind, args) in enumerate(batch)}
            got: list[tuple[str, tuple, dict[str, object]] | None] = [None] * len(batch)
            try:
                for f in as_completed(futs):
                    got[futs[f]] = f.result()
                    finished(got[futs[f]])  # type: ignore[arg-type]
            except BaseException:  # an error or Ctrl-C: no new task starts, the searches fail fast
                pool.shutdown(wait=False, cancel_futures=True)
                ex.close()
                raise
        return got  # type: ignore[return-value]

    # phase 1: the work bounds (policy-independent) for every mode, model and seed
    bound_tasks = [("bound", (ctx, m, k, sd, None)) for m in st.modes for k in kinds for sd in st.seeds]
    bounds = {(a[1], a[2] or "default", a[3]): (o["bound"], o["bound_all_tiers"]) for _, a, o in execute(bound_tasks)}

    def budgets(p: str, m: str) -> list[dict | None]:
        """The variants a policy is swept over in a mode; its row reports the best."""
        if p == "co-chunk":
            return [{"token_budget": b} for b in st.co_chunk_budgets]
        if m == "disaggregated" and st.prefill_fractions:
            return [{"prefill_fraction": f} for f in st.prefill_fractions]
        return [None]

    tasks: list[tuple[str, tuple]] = []
    for p, m in pairs:
        if (p, m) in NOT_APPLICABLE:
            continue
        for extra in budgets(p, m):
            for sd in st.seeds:
                tasks.append(("goodput", (ctx, p, m, None, extra, sd, None, bounds[(m, "default", sd)])))
        tasks.append(("autoscale", (ctx, p, m, as_rate, budgets(p, m)[len(budgets(p, m)) // 2])))
    if st.sensitivity_model:
        for p in st.sensitivity_policies:
            for m in st.modes:
                if (p, m) in NOT_APPLICABLE:
                    continue
                for extra in budgets(p, m):
                    for sd in st.seeds:
                        tasks.append(("goodput", (ctx, p, m, st.sensitivity_model, extra, sd, None,
                                                  bounds[(m, st.sensitivity_model, sd)])))
    main = execute(tasks)
    rows, sens, timelines = _assemble(main, st, pairs)
    # follow-ups need the headline: the best paper baseline, co-located, first seed
    co_rows = {r["policy"]: r for r in rows if r["mode"] == "colocated" and not r["na"]}
    paper = [p for p in PAPER_BASELINES if p in co_rows and co_rows[p]["goodput_rps_tail_bounded"] is not None]
    best_paper = max(paper, key=lambda p: co_rows[p]["goodput_rps_tail_bounded"]) if paper else None  # type: ignore[arg-type,return-value]
    follow: list[tuple[str, tuple]] = []
    focus = [p for p in ("polyserve", best_paper) if p and p in st.policies]
    extra_of = {p: ({"token_budget": co_rows[p]["token_budget"]} if p == "co-chunk" else None) for p in focus}
    if "colocated" in st.modes:
        for p in focus:
            for f in st.rate_sweep:
                follow.append(("sweep", (ctx, p, "colocated", f * fluid_co, extra_of[p])))
            for n in st.fleet_sizes:
                follow.append(("goodput", (ctx, p, "colocated", None, extra_of[p], ctx.seed, n, None)))
    sweep: dict[str, list[dict[str, object]]] = {}
    fleet: list[dict[str, object]] = []
    for kind, args, out in execute(follow):
        if kind == "sweep":
            sweep.setdefault(args[1], []).append(out)
        else:
            n = args[6]
            fleet.append({"policy": args[1], "instances": n, "goodput_rps": out["goodput_rps"],
                          "goodput_rps_tail_bounded": out["goodput_rps_tail_bounded"],
                          "goodput_per_instance": out["goodput_rps_tail_bounded"] / n,
                          "optimal_rps": out["optimal_rps"]})
    for v in sweep.values():
        v.sort(key=lambda r: r["rate"])  # type: ignore[arg-type,return-value]
    fleet.sort(key=lambda r: (r["policy"], r["instances"]))  # type: ignore[arg-type,return-value]
    summary = headline(rows, ctx, st, as_rate, best_paper)
    if sens:
        summary["sensitivity"] = headline(sens, ctx, st, as_rate, None)
    return CompareResult(rows, sens, sweep, fleet, timelines, summary)


def _label(kind: str, args: tuple) -> str:
    if kind == "bound":
        return f"{args[1]} {args[2] or 'default'} seed {args[3]}"
    if kind == "goodput":
        return f"{args[1]} {args[2]} {args[3] or ''} seed {args[5]}".replace("  ", " ")
    return f"{args[1]} {args[2]}"


def _stats(xs: list[float]) -> tuple[float, float, float]:
    return (sum(xs) / len(xs), min(xs), max(xs))


def _assemble(done, st: CompareSettings, pairs):
    good: dict[tuple[str, str, str], dict[int | None, list[tuple[int, dict]]]] = {}
    auto: dict[tuple[str, str], dict] = {}
    for kind, args, out in done:
        if kind == "goodput" and args[6] is None:
            _, p, m, k, extra, sd = args[:6]
            variant = tuple(sorted((extra or {}).items()))
            good.setdefault((p, m, k or "default"), {}).setdefault(variant, []).append((sd, out))
        elif kind == "autoscale":
            auto[(args[1], args[2])] = out
    timelines = {f"{p}/{m}": a.get("servers_timeline") for (p, m), a in auto.items()}

    def row(p: str, m: str, k: str) -> dict[str, object]:
        r: dict[str, object] = dict.fromkeys(ROW_KEYS)
        r.update(policy=p, mode=m, latency_model=k, na=False)
        if (p, m) in NOT_APPLICABLE:
            r["na"] = True
            r["note"] = NOT_APPLICABLE[(p, m)]
            return r
        by_variant = good.get((p, m, k), {})
        if not by_variant:
            return r

        def mean_of(runs: list[tuple[int, dict]], key: str) -> float:
            return _stats([o[key] for _, o in runs])[0]

        def size(v: tuple) -> float:  # tie-break: the smaller budget / prefill pool
            return sum(float(x) for _, x in v)

        # best variant by the headline (mean tail-bounded goodput), then overall goodput, then the smaller one
        best = max(by_variant, key=lambda v: (mean_of(by_variant[v], "goodput_rps_tail_bounded"),
                                              mean_of(by_variant[v], "goodput_rps"), -size(v)))
        runs = sorted(by_variant[best], key=lambda so: so[0])
        first = runs[0][1]
        r.update({k2: v for k2, v in first.items() if k2 in ROW_KEYS})
        for key in ("goodput_rps_tail_bounded", "goodput_rps"):
            mean, lo, hi = _stats([o[key] for _, o in runs])
            r[key], r[f"{key}_min"], r[f"{key}_max"] = mean, lo, hi
        for key in ("goodput_rps_all_tiers", "optimal_rps", "optimal_rps_all_tiers"):
            r[key] = _stats([o[key] for _, o in runs])[0]
        r["goodput_fraction"] = r["goodput_rps"] / r["optimal_rps"] if r["optimal_rps"] else None  # type: ignore[operator]
        r["tail_bounded_fraction"] = (r["goodput_rps_tail_bounded"] / r["optimal_rps_all_tiers"]  # type: ignore[operator]
                                      if r["optimal_rps_all_tiers"] else None)
        r["seeds"] = [sd for sd, _ in runs]
        r["per_seed"] = [{"seed": sd, **{key: o[key] for key in ("goodput_rps_tail_bounded", "goodput_rps",
                                                                  "goodput_rps_all_tiers", "optimal_rps")}}
                         for sd, o in runs]
        params = first.get("latency_model_params") or {}
        r["latency_model"] = params.get("name", k)  # the model's own name (linear, roofline, table), not the role
        r["probes"] = sum(o.get("probes", 0) for _, o in runs)
        if best:
            r.update(dict(best))  # token_budget and/or prefill_fraction of the best variant
            r["sweep"] = [{**dict(v), "goodput_rps_tail_bounded": mean_of(runs_v, "goodput_rps_tail_bounded"),
                           "goodput_rps": mean_of(runs_v, "goodput_rps"),
                           "goodput_rps_all_tiers": mean_of(runs_v, "goodput_rps_all_tiers")}
                          for v, runs_v in sorted(by_variant.items(), key=lambda vr: size(vr[0]))]
        if k == "default":
            a = auto.get((p, m))
            if a:
                r.update({k2: v for k2, v in a.items() if k2 in ROW_KEYS})
                tiered = ROUTERS.create(p, rng=None, **({"shares": {}} if p == "static-partition" else {})).tiered
                r["autoscaler"] = ("fixed partition" if p == "static-partition" else
                                   "self (tiers + idle pool)" if tiered else "target-concurrency")
        return r

    rows = [row(p, m, "default") for p, m in pairs]
    sens = []
    if st.sensitivity_model:
        sens = [row(p, m, st.sensitivity_model) for p in st.sensitivity_policies for m in st.modes]
    return rows, sens, timelines


def headline(rows, ctx: Context, st: CompareSettings, as_rate: float, best_paper: str | None) -> dict[str, object]:
    """Ratios of PolyServe's headline (tail-bounded) goodput to the best of each group, per mode; the
    ``_min_seed`` form compares PolyServe's worst seed with the group's best seed."""
    out: dict[str, object] = {"autoscale_rate": as_rate, "best_paper_baseline_colocated": best_paper,
                              "criterion": "goodput_rps_tail_bounded", "seeds": list(st.seeds)}
    key = "goodput_rps_tail_bounded"
    for m in st.modes:
        by = {r["policy"]: r for r in rows if r["mode"] == m and not r["na"] and r[key] is not None}
        ps = by.get("polyserve")
        if not ps:
            continue
        paper = [by[p] for p in PAPER_BASELINES if p in by]
        others = [r for p, r in by.items() if p != "polyserve" and p not in ABLATIONS]
        ablations = [by[p] for p in ABLATIONS if p in by]
        entry: dict[str, object] = {"polyserve_goodput_rps_tail_bounded": ps[key],
                                    "polyserve_goodput_rps": ps["goodput_rps"],
                                    "tail_bounded_fraction_of_bound": ps["tail_bounded_fraction"],
                                    "goodput_fraction_of_bound": ps["goodput_fraction"]}
        for label, group in (("paper", paper), ("other", others), ("ablation", ablations)):
            if group:
                b = max(group, key=lambda r: r[key])
                entry[f"best_{label}"] = b["policy"]
                entry[f"best_{label}_goodput_rps_tail_bounded"] = b[key]
                entry[f"ratio_vs_best_{label}"] = ps[key] / b[key] if b[key] else None
                entry[f"ratio_vs_best_{label}_min_seed"] = (
                    ps[f"{key}_min"] / b[f"{key}_max"] if b.get(f"{key}_max") else None)
                bo = max(group, key=lambda r: r["goodput_rps"] or 0)
                entry[f"ratio_overall_vs_best_{label}"] = (ps["goodput_rps"] / bo["goodput_rps"]
                                                          if bo["goodput_rps"] else None)
        out[m] = entry
    return out


# ---- outputs --------------------------------------------------------------------------------------------------
def write_outputs(out: Path, ctx: Context, st: CompareSettings, res: CompareResult) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    written = []
    meta = {"polyserve_version": __version__, "trace": ctx.trace, "trace_format": ctx.trace_format,
            "tiers": ctx.tiers_path, "tier_weights": ctx.tier_weights, "fleet": asdict(ctx.fleet),
            "sim": ctx.sim.to_dict(), "seed": ctx.seed, "goodput": asdict(ctx.goodput),
            # where it ran (--jobs, --ray) is not a setting of the result: every executor writes the same bytes
            "settings": {k: v for k, v in asdict(st).items() if k != "jobs"}}
    for name, rows in (("compare", res.rows), (f"compare_{st.sensitivity_model}", res.sensitivity)):
        if name.endswith("None") or (name != "compare" and not rows):
            continue
        p = out / f"{name}.json"
        p.write_text(json.dumps(jsonable(rows), indent=2) + "\n", encoding="utf-8")
        written.append(p)
        c = out / f"{name}.csv"
        with open(c, "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f, lineterminator="\n")
            seen = {t for r in rows for t in (r.get("attainment_by_tier") or {})}
            tiers = [t for t in _tiers(ctx).names if t in seen]  # tightest first, as in the tier file
            flat = [k for k in ROW_KEYS if k not in CSV_SKIP]
            w.writerow(flat + [f"attainment_{t}" for t in tiers])
            for r in rows:
                ab = r.get("attainment_by_tier") or {}
                w.writerow([_cell(r.get(k)) for k in flat] + [_cell(ab.get(t)) for t in tiers])
        written.append(c)
    extra = {"meta": meta, "headline": res.summary, "rate_sweep": res.sweep, "fleet_scaling": res.fleet,
             "servers_timeline": res.timelines}
    p = out / "compare_details.json"
    p.write_text(json.dumps(jsonable(extra), indent=2) + "\n", encoding="utf-8")
    written.append(p)
    written += plot_all(out, res, ctx)
    return written


def _cell(v: object) -> object:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.6g}" if math.isfinite(v) else ""
    return v


def _save(fig, path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_all(out: Path, res: CompareResult, ctx: Context) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    # goodput by policy
    modes = sorted({r["mode"] for r in res.rows})
    fig, axes = plt.subplots(1, len(modes), figsize=(7 * len(modes), 4.5), squeeze=False)
    for ax, m in zip(axes[0], modes, strict=True):
        rows = [r for r in res.rows if r["mode"] == m and not r["na"] and r["goodput_rps"] is not None]
        names = [str(r["policy"]) for r in rows]
        ax.barh(names, [r["goodput_rps"] for r in rows], color=["tab:red" if n == "polyserve" else "tab:blue"
                                                                  for n in names], label="overall >= target")
        ax.barh(names, [r["goodput_rps_all_tiers"] or 0 for r in rows], color="none", edgecolor="black",
                hatch="//", label="every tier >= target")
        if rows and rows[0]["optimal_rps"]:
            ax.axvline(rows[0]["optimal_rps"], color="gray", ls="--", label="optimal bound")  # type: ignore[arg-type]
        ax.set_title(f"fixed-fleet goodput, {m}")
        ax.set_xlabel("requests / s")
        ax.invert_yaxis()
        ax.legend(loc="lower right", fontsize=8)
    paths.append(_save(fig, out / "goodput_by_policy.png"))
    # attainment vs rate per tier
    if res.sweep:
        fig, axes = plt.subplots(1, len(res.sweep), figsize=(6 * len(res.sweep), 4.2), squeeze=False)
        for ax, (pol, pts) in zip(axes[0], sorted(res.sweep.items()), strict=True):
            rates = [pt["rate"] for pt in pts]
            tiers = list(pts[0]["tiers"]) if pts else []  # type: ignore[arg-type]
            for t in tiers:
                ax.plot(rates, [pt["tiers"][t] for pt in pts], marker="o", label=t)  # type: ignore[index]
            ax.plot(rates, [pt["attainment"] for pt in pts], color="black", lw=2, label="all")
            ax.axhline(ctx.goodput.target, color="gray", ls="--")
            ax.set_ylim(0, 1.02)
            ax.set_title(f"attainment vs rate: {pol}")
            ax.set_xlabel("requests / s")
            ax.legend(fontsize=8)
        paths.append(_save(fig, out / "attainment_vs_rate.png"))
    # servers per tier over time (PolyServe, autoscaled)
    tl = res.timelines.get("polyserve/colocated") or next((v for k, v in res.timelines.items()
                                                           if k.startswith("polyserve/") and v), None)
    if tl:
        tiers = _tiers(ctx).names
        fig, ax = plt.subplots(figsize=(8, 4))
        ts = [pt[0] for pt in tl]
        for i, t in enumerate(tiers):
            ax.step(ts, [pt[1][i] for pt in tl], where="post", label=t)
        ax.step(ts, [pt[2] for pt in tl], where="post", label="shared (prefill)", ls=":")
        ax.set_xlabel("simulated time (s)")
        ax.set_ylabel("servers")
        ax.set_title("PolyServe servers per tier (autoscaled trace replay)")
        ax.legend(fontsize=8)
        paths.append(_save(fig, out / "servers_per_tier.png"))
    if res.fleet:
        fig, ax = plt.subplots(figsize=(7, 4))
        for pol in sorted({r["policy"] for r in res.fleet}):
            pts = [r for r in res.fleet if r["policy"] == pol]
            ax.plot([r["instances"] for r in pts], [r["goodput_per_instance"] for r in pts], marker="o", label=pol)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("instances")
        ax.set_ylabel("goodput per instance (req/s)")
        ax.set_title("goodput per instance as the fleet grows (co-located)")
        ax.legend(fontsize=8)
        paths.append(_save(fig, out / "fleet_scaling.png"))
    return paths
