"""``polyserve compare``: policies x modes on one workload and fleet, side by side, with the same seeds.

What each row reports (``compare.json``; README "Results" holds a full run):
- ``goodput_rps``: fixed-fleet goodput (``polyserve goodput``'s bisection, overall attainment >= target);
- ``goodput_rps_all_tiers``: the same with every tier >= target;
- ``attainment_by_tier`` and p50/p99 TTFT/TPOT: a full run at ``goodput_rps``;
- ``optimal_rps`` and ``goodput_fraction``: the optimal bound (``policy/bound.py``) and goodput over it;
- ``autoscaled_goodput_per_instance_s`` and ``scaling_actions``: the trace replayed at ``autoscale_rate``
  with scaling on (PolyServe variants scale themselves; other routers get the conventional
  ``target-concurrency`` autoscaler; ``static-partition`` keeps its fixed partition);
- ``co-chunk``: its static token budget is swept and the best is reported (``token_budget``, ``sweep``);
- pairs a policy does not support (``co-chunk`` disaggregated) are rows of nulls with ``na: true``.

Beside the headline (default latency model) the same comparison runs under a second latency model
(``--sensitivity-model``, default roofline) into ``compare_<model>.json``; plus a rate sweep (attainment per
tier vs rate for PolyServe and the best paper baseline) and a fleet-size sweep (goodput per instance from 8 to
64 instances). Work is split into independent tasks run in parallel over processes.
"""

from __future__ import annotations

import csv
import json
import math
import os
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from polyserve import __version__
from polyserve.core.errors import ConfigError
from polyserve.goodput import GoodputSearch, GoodputSettings
from polyserve.policy import ROUTERS
from polyserve.policy.bound import BoundInputs, optimal_rate, tier_rate
from polyserve.policy.cost import fit_cost
from polyserve.runner import FleetSpec, PolicySpec, _jsonable, build_model, load_tiers, run_workload
from polyserve.sim.config import SimConfig
from polyserve.workload import WorkloadSpec, build_workload, read_trace

PAPER_BASELINES = ("random", "minimal", "co-chunk")
STRONGER_BASELINES = ("round-robin", "least-outstanding", "power-of-two", "static-partition", "edf-pool")
ABLATIONS = ("polyserve-no-promotion", "polyserve-no-gradient", "polyserve-no-wait", "polyserve-static-chunk")
DEFAULT_POLICIES = ("polyserve", *PAPER_BASELINES, *STRONGER_BASELINES, *ABLATIONS)
COLOCATED_ONLY = {"co-chunk"}
CSV_SKIP = ("attainment_by_tier", "latency_model_params")  # nested: JSON only (the CSV has attainment_<tier>)
ROW_KEYS = (
    "policy", "mode", "latency_model", "goodput_rps", "goodput_rps_all_tiers", "optimal_rps", "goodput_fraction",
    "autoscaled_goodput_per_instance_s", "scaling_actions", "attainment_by_tier", "ttft_p50_ms", "ttft_p99_ms",
    "tpot_p50_ms", "tpot_p99_ms", "autoscaled_attainment", "autoscaled_instance_seconds", "token_budget", "na",
    "latency_model_params",
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
    seed: int
    goodput: GoodputSettings


@dataclass(frozen=True)
class CompareSettings:
    policies: tuple[str, ...] = DEFAULT_POLICIES
    modes: tuple[str, ...] = ("colocated", "disaggregated")
    co_chunk_budgets: tuple[int, ...] = (256, 512, 1024, 2048, 4096, 8192)
    sensitivity_model: str | None = "roofline"
    sensitivity_policies: tuple[str, ...] = ("polyserve", *PAPER_BASELINES)
    autoscale_rate: float | None = None  # None: 0.6 x the co-located optimal bound
    rate_sweep: tuple[float, ...] = (0.6, 0.8, 0.9, 1.0, 1.1, 1.2)  # fractions of the optimal bound
    fleet_sizes: tuple[int, ...] = (8, 16, 32, 64)
    jobs: int = 0  # 0 = os.cpu_count()

    def __post_init__(self) -> None:
        for p in self.policies:
            ROUTERS.get(p)
        bad = set(self.modes) - {"colocated", "disaggregated"}
        if bad or not self.modes:
            raise ConfigError(f"--modes takes colocated and/or disaggregated, got {','.join(self.modes) or '(none)'}")
        if any(b < 1 for b in self.co_chunk_budgets):
            raise ConfigError("--co-chunk-budgets must be positive token counts")


# ---- the bound -----------------------------------------------------------------------------------------------
def bound_inputs(ctx: Context, model, instances: int | None = None) -> BoundInputs:
    tiers = _tiers(ctx)
    tr = read_trace(ctx.trace, ctx.trace_format, tiers)
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


def _policy(name: str, mode: str, ctx: Context, model, extra: dict | None = None, autoscale: bool = False):
    opts: dict[str, object] = dict(extra or {})
    if name == "static-partition" and "shares" not in opts:
        opts["shares"] = partition_shares(bound_inputs(ctx, model), _tiers(ctx).names, mode)
    router = ROUTERS.create(name, rng=None, **opts)  # type: ignore[arg-type]
    scaler = None
    if autoscale and not router.tiered:
        scaler = "target-concurrency"
    return PolicySpec(router=name, router_options=opts, autoscaler=scaler)


# ---- tasks -----------------------------------------------------------------------------------------------------
def _model(ctx: Context, kind: str | None):
    fleet = ctx.fleet if kind is None else replace(ctx.fleet, latency_model=kind, latency_coefficients=None,
                                                   latency_profile=None)
    return build_model(fleet)


def task_goodput(ctx: Context, policy: str, mode: str, kind: str | None, extra: dict | None,
                 instances: int | None = None) -> dict[str, object]:
    model = _model(ctx, kind)
    sim = replace(ctx.sim, mode=mode, **({"instances": instances} if instances else {}))
    ctx2 = replace(ctx, sim=sim)
    tiers = _tiers(ctx)
    tr = read_trace(ctx.trace, ctx.trace_format, tiers)
    bound = optimal_rate(bound_inputs(ctx2, model), mode)
    gs = replace(ctx.goodput, start_rate=ctx.goodput.start_rate or max(0.5, 0.9 * bound))
    pol = _policy(policy, mode, ctx2, model, extra)
    res = GoodputSearch(tr, tiers, model, pol, sim, ctx.seed, gs, use_tier_column=ctx.tier_weights is None).run()
    at = res.at_goodput or {}
    tiers_at = at.get("tiers") or {}
    return {
        "goodput_rps": res.goodput_rps,
        "goodput_rps_all_tiers": res.goodput_rps_all_tiers,
        "optimal_rps": bound,
        "goodput_fraction": res.goodput_rps / bound if bound > 0 else None,
        "attainment_by_tier": {k: v["attainment"] for k, v in tiers_at.items()} or None,  # type: ignore[union-attr]
        "ttft_p50_ms": (at.get("ttft_ms") or {}).get("p50"),  # type: ignore[union-attr]
        "ttft_p99_ms": (at.get("ttft_ms") or {}).get("p99"),  # type: ignore[union-attr]
        "tpot_p50_ms": (at.get("tpot_ms") or {}).get("p50"),  # type: ignore[union-attr]
        "tpot_p99_ms": (at.get("tpot_ms") or {}).get("p99"),  # type: ignore[union-attr]
        "probes": len(res.probes),
        "latency_model_params": model.describe(),
    }


def task_autoscale(ctx: Context, policy: str, mode: str, rate: float, extra: dict | None) -> dict[str, object]:
    model = _model(ctx, None)
    tiers = _tiers(ctx)
    tr = read_trace(ctx.trace, ctx.trace_format, tiers)
    if tr.arrival_s is None:  # a lengths-only trace has nothing to replay: Poisson arrivals over a probe's span
        spec = WorkloadSpec(trace=ctx.trace, trace_format=ctx.trace_format, rate=rate, arrival="poisson",
                            duration_s=ctx.goodput.duration_s)
    else:
        spec = WorkloadSpec(trace=ctx.trace, trace_format=ctx.trace_format, rate=rate)
    wl = build_workload(spec, tiers, ctx.seed)
    sim = replace(ctx.sim, mode=mode)
    pol = _policy(policy, mode, replace(ctx, sim=sim), model, extra, autoscale=True)
    res = run_workload(wl, model, pol, sim, ctx.seed)
    s = res.summary
    return {
        "autoscaled_goodput_per_instance_s": s["attained_per_instance_s"],
        "scaling_actions": s["scaling_actions"],
        "autoscaled_attainment": s["attainment"],
        "autoscaled_instance_seconds": s["instance_seconds"],
        "servers_timeline": res.stats.servers_timeline,
        "rate": rate,
    }


def task_sweep(ctx: Context, policy: str, mode: str, rate: float, extra: dict | None) -> dict[str, object]:
    model = _model(ctx, None)
    tiers = _tiers(ctx)
    tr = read_trace(ctx.trace, ctx.trace_format, tiers)
    sim = replace(ctx.sim, mode=mode)
    pol = _policy(policy, mode, replace(ctx, sim=sim), model, extra)
    gs = GoodputSearch(tr, tiers, model, pol, sim, ctx.seed, ctx.goodput, use_tier_column=ctx.tier_weights is None)
    s = gs.run_at(rate).summary
    return {"rate": rate, "attainment": s["attainment"],
            "tiers": {k: v["attainment"] for k, v in s["tiers"].items()}}  # type: ignore[union-attr]


def _run(kind: str, args: tuple) -> tuple[str, tuple, dict[str, object]]:
    fn = {"goodput": task_goodput, "autoscale": task_autoscale, "sweep": task_sweep}[kind]
    return kind, args, fn(*args)


# ---- orchestration -------------------------------------------------------------------------------------------
@dataclass
class CompareResult:
    rows: list[dict[str, object]]
    sensitivity: list[dict[str, object]]
    sweep: dict[str, list[dict[str, object]]] = field(default_factory=dict)
    fleet: list[dict[str, object]] = field(default_factory=list)
    timelines: dict[str, list] = field(default_factory=dict)
    summary: dict[str, object] = field(default_factory=dict)


def run_compare(ctx: Context, st: CompareSettings, progress: Callable[[int, int, str], None] | None = None
                ) -> CompareResult:
    model = _model(ctx, None)
    bound_co = optimal_rate(bound_inputs(ctx, model), "colocated")
    as_rate = st.autoscale_rate or 0.6 * bound_co
    tasks: list[tuple[str, tuple]] = []
    pairs = [(p, m) for p in st.policies for m in st.modes]

    def budgets(p: str) -> list[dict | None]:
        return [{"token_budget": b} for b in st.co_chunk_budgets] if p == "co-chunk" else [None]

    for p, m in pairs:
        if p in COLOCATED_ONLY and m != "colocated":
            continue
        for extra in budgets(p):
            tasks.append(("goodput", (ctx, p, m, None, extra)))
        tasks.append(("autoscale", (ctx, p, m, as_rate, budgets(p)[len(budgets(p)) // 2])))
    if st.sensitivity_model:
        for p in st.sensitivity_policies:
            for m in st.modes:
                if p in COLOCATED_ONLY and m != "colocated":
                    continue
                for extra in budgets(p):
                    tasks.append(("goodput", (ctx, p, m, st.sensitivity_model, extra)))
    jobs = st.jobs or os.cpu_count() or 1
    done: list[tuple[str, tuple, dict[str, object]]] = []
    total = len(tasks)

    def execute(batch: list[tuple[str, tuple]]) -> None:
        if jobs == 1:
            for kind, args in batch:
                done.append(_run(kind, args))
                if progress:
                    progress(len(done), total, f"{kind} {args[1]} {args[2]}")
            return
        with ProcessPoolExecutor(max_workers=jobs) as ex:
            futs = [ex.submit(_run, kind, args) for kind, args in batch]
            for f in as_completed(futs):
                done.append(f.result())
                if progress:
                    k, a, _ = done[-1]
                    progress(len(done), total, f"{k} {a[1]} {a[2]}")

    execute(tasks)
    rows, sens, timelines = _assemble(done, st, pairs)
    # follow-ups need the headline: the best paper baseline, co-located
    co_rows = {r["policy"]: r for r in rows if r["mode"] == "colocated" and not r["na"]}
    paper = [p for p in PAPER_BASELINES if p in co_rows]
    best_paper = max(paper, key=lambda p: co_rows[p]["goodput_rps"] or 0.0) if paper else None  # type: ignore[arg-type,return-value]
    follow: list[tuple[str, tuple]] = []
    focus = [p for p in ("polyserve", best_paper) if p and p in st.policies]
    extra_of = {p: ({"token_budget": co_rows[p]["token_budget"]} if p == "co-chunk" else None) for p in focus}
    if "colocated" in st.modes:
        for p in focus:
            for f in st.rate_sweep:
                follow.append(("sweep", (ctx, p, "colocated", f * bound_co, extra_of[p])))
            for n in st.fleet_sizes:
                follow.append(("goodput", (ctx, p, "colocated", None, extra_of[p], n)))
    total += len(follow)
    before = len(done)
    execute(follow)
    sweep: dict[str, list[dict[str, object]]] = {}
    fleet: list[dict[str, object]] = []
    for kind, args, out in done[before:]:
        if kind == "sweep":
            sweep.setdefault(args[1], []).append(out)
        else:
            n = args[5]
            fleet.append({"policy": args[1], "instances": n, "goodput_rps": out["goodput_rps"],
                          "goodput_per_instance": out["goodput_rps"] / n, "optimal_rps": out["optimal_rps"]})
    for v in sweep.values():
        v.sort(key=lambda r: r["rate"])  # type: ignore[arg-type,return-value]
    fleet.sort(key=lambda r: (r["policy"], r["instances"]))  # type: ignore[arg-type,return-value]
    summary = headline(rows, ctx, st, as_rate, best_paper)
    return CompareResult(rows, sens, sweep, fleet, timelines, summary)


def _assemble(done, st: CompareSettings, pairs):
    good: dict[tuple[str, str, str], list[tuple[dict | None, dict]]] = {}
    auto: dict[tuple[str, str], dict] = {}
    for kind, args, out in done:
        if kind == "goodput" and len(args) == 5:
            _, p, m, k, extra = args
            good.setdefault((p, m, k or "default"), []).append((extra, out))
        elif kind == "autoscale":
            auto[(args[1], args[2])] = out
    timelines = {f"{p}/{m}": a.get("servers_timeline") for (p, m), a in auto.items()}

    def row(p: str, m: str, k: str) -> dict[str, object]:
        r: dict[str, object] = dict.fromkeys(ROW_KEYS)
        r.update(policy=p, mode=m, latency_model=k, na=False)
        if p in COLOCATED_ONLY and m != "colocated":
            r["na"] = True
            r["note"] = f"{p} is a co-located policy"
            return r
        results = good.get((p, m, k), [])
        if not results:
            return r
        best_extra, best = max(results, key=lambda eo: (eo[1]["goodput_rps"], -(eo[0] or {}).get("token_budget", 0)))
        r.update({k2: v for k2, v in best.items() if k2 in ROW_KEYS})
        params = best.get("latency_model_params") or {}
        r["latency_model"] = params.get("name", k)  # the model's own name (linear, roofline, table), not the role
        r["probes"] = best.get("probes")
        if best_extra:
            r["token_budget"] = best_extra["token_budget"]
            r["sweep"] = [{"token_budget": (e or {}).get("token_budget"), "goodput_rps": o["goodput_rps"],
                           "goodput_rps_all_tiers": o["goodput_rps_all_tiers"]} for e, o in sorted(
                               results, key=lambda eo: (eo[0] or {}).get("token_budget", 0))]
        if k == "default":
            a = auto.get((p, m))
            if a:
                r.update({k2: v for k2, v in a.items() if k2 in ROW_KEYS})
                r["autoscaler"] = "self (tiers + idle pool)" if p.startswith("polyserve") else (
                    "fixed partition" if p == "static-partition" else "target-concurrency")
        return r

    rows = [row(p, m, "default") for p, m in pairs]
    sens = []
    if st.sensitivity_model:
        sens = [row(p, m, st.sensitivity_model) for p in st.sensitivity_policies for m in st.modes]
    return rows, sens, timelines


def headline(rows, ctx: Context, st: CompareSettings, as_rate: float, best_paper: str | None) -> dict[str, object]:
    out: dict[str, object] = {"autoscale_rate": as_rate, "best_paper_baseline_colocated": best_paper}
    for m in st.modes:
        by = {r["policy"]: r for r in rows if r["mode"] == m and not r["na"] and r["goodput_rps"] is not None}
        ps = by.get("polyserve")
        if not ps:
            continue
        paper = [by[p] for p in PAPER_BASELINES if p in by]
        strong = [by[p] for p in STRONGER_BASELINES if p in by]
        entry: dict[str, object] = {"polyserve_goodput_rps": ps["goodput_rps"],
                                    "goodput_fraction_of_optimal": ps["goodput_fraction"]}
        for label, group in (("paper", paper), ("stronger", strong)):
            if group:
                b = max(group, key=lambda r: r["goodput_rps"])
                entry[f"best_{label}_baseline"] = b["policy"]
                entry[f"best_{label}_goodput_rps"] = b["goodput_rps"]
                entry[f"ratio_vs_best_{label}"] = ps["goodput_rps"] / b["goodput_rps"] if b["goodput_rps"] else None
                ba = max(group, key=lambda r: r["goodput_rps_all_tiers"] or 0)
                entry[f"ratio_all_tiers_vs_best_{label}"] = (
                    ps["goodput_rps_all_tiers"] / ba["goodput_rps_all_tiers"] if ba["goodput_rps_all_tiers"] else None)
        out[m] = entry
    return out


# ---- outputs --------------------------------------------------------------------------------------------------
def write_outputs(out: Path, ctx: Context, st: CompareSettings, res: CompareResult) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    written = []
    meta = {"polyserve_version": __version__, "trace": ctx.trace, "fleet": asdict(ctx.fleet),
            "sim": ctx.sim.to_dict(), "seed": ctx.seed, "goodput": asdict(ctx.goodput), "settings": asdict(st)}
    for name, rows in (("compare", res.rows), (f"compare_{st.sensitivity_model}", res.sensitivity)):
        if name.endswith("None") or (name != "compare" and not rows):
            continue
        p = out / f"{name}.json"
        p.write_text(json.dumps(_jsonable(rows), indent=2) + "\n", encoding="utf-8")
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
    p.write_text(json.dumps(_jsonable(extra), indent=2) + "\n", encoding="utf-8")
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
