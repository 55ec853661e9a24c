"""Wiring: from specs (what the CLI flags and the Python API say) to a finished simulation and its reports.

``run_simulation`` is the one path every face uses (``polyserve simulate``, ``goodput``, ``compare`` and the
``polyserve.simulate`` notebook API), so they all report the same figures the same way.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from polyserve import __version__
from polyserve.core.tiers import TierSet
from polyserve.data import DEFAULT_TIERS
from polyserve.latency.build import FleetSpec, build_model, describe_model
from polyserve.metrics.records import RequestRecords
from polyserve.metrics.summary import summarize, write_requests_csv
from polyserve.policy import AUTOSCALERS, SCHEDULERS, make_router
from polyserve.sim.cluster import RunStats, Simulation, make_rng
from polyserve.sim.config import SimConfig
from polyserve.workload import Workload, WorkloadSpec, build_workload


@dataclass(frozen=True)
class PolicySpec:
    """Router, per-instance scheduler and autoscaler by registry name, with options."""

    router: str = "round-robin"
    scheduler: str | None = None  # None: the router's default (``default_scheduler``), else fcfs
    autoscaler: str | None = None
    router_options: dict[str, object] = field(default_factory=dict)
    scheduler_options: dict[str, object] = field(default_factory=dict)
    autoscaler_options: dict[str, object] = field(default_factory=dict)


@dataclass
class SimResult:
    workload: Workload
    records: RequestRecords
    stats: RunStats
    summary: dict[str, object]
    aborted: bool = False


def load_tiers(path: str | Path | None) -> TierSet:
    return TierSet.from_toml(path or DEFAULT_TIERS)


def scheduler_choice(router, policy: PolicySpec) -> dict[str, tuple[str, dict[str, object]]]:
    """Per-role instance scheduler: the explicit ``--scheduler`` for every role, else the router's choice
    (``router.scheduler_for``: role -> (name, options)), else vLLM's ``fcfs``."""
    out: dict[str, tuple[str, dict[str, object]]] = {}
    own = router.scheduler_for
    for role in ("mixed", "prefill", "decode"):
        if policy.scheduler:
            out[role] = (policy.scheduler, dict(policy.scheduler_options))
        else:
            name, opts = own.get(role, ("fcfs", {}))
            out[role] = (name, {**opts, **policy.scheduler_options})
    return out


def run_workload(
    workload: Workload,
    model,
    policy: PolicySpec,
    config: SimConfig,
    seed: int,
    *,
    progress: Callable[[float], None] | None = None,
    window: tuple[float, float] | None = None,
    violation_budget: int | None = None,
    tier_violation_budget: list[int] | None = None,
) -> SimResult:
    """Simulate ``workload`` on a fleet; fills records and stats and returns the summary."""
    router = make_router(policy.router, make_rng(seed), **policy.router_options)
    per_role = scheduler_choice(router, policy)
    for name, _ in per_role.values():
        SCHEDULERS.get(name)  # fail early on an unknown name

    def sched_factory(role: str):
        name, opts = per_role[role]
        return SCHEDULERS.create(name, **opts)

    autoscaler = None
    if policy.autoscaler:
        autoscaler = AUTOSCALERS.create(policy.autoscaler, **policy.autoscaler_options)
    sim = Simulation(
        workload,
        model,
        router,
        sched_factory,
        config,
        autoscaler=autoscaler,
        progress=progress,
        count_window_s=window,
        violation_budget=violation_budget,
        tier_violation_budget=tier_violation_budget,
    )
    stats = sim.run()
    summary = summarize(workload, sim.records, window=window, end_s=stats.end_ns / 1e9)
    st = stats
    summary["instance_seconds"] = round(st.instance_ns / 1e9, 6)
    summary["attained_per_instance_s"] = (
        round(summary["attained"] / summary["instance_seconds"], 6) if st.instance_ns else None  # type: ignore[operator]
    )
    summary["simulated_s"] = round(st.end_ns / 1e9, 6)
    summary["scaling_actions"] = st.scaling_actions
    summary["stopped_at_horizon"] = st.stopped_at_horizon
    summary["stalled"] = st.stalled
    summary["iterations"] = st.iterations
    summary["events"] = st.events
    summary["peak_kv_fraction"] = round(st.peak_kv_fraction, 6)
    summary["busy_fraction"] = round(st.busy_ns / max(1, st.instance_ns), 6) if st.instance_ns else None
    summary["decisions"] = dict(sorted(st.decisions.items()))
    summary["policy"] = {
        "router": policy.router,
        "router_options": policy.router_options,
        "schedulers": {role: {"name": n, "options": o} for role, (n, o) in per_role.items()},
        "autoscaler": policy.autoscaler,
        "autoscaler_options": policy.autoscaler_options,
        "parameters": router.describe(),
    }
    return SimResult(workload, sim.records, stats, summary, aborted=sim.aborted)


def finish_summary(
    result: SimResult, fleet: FleetSpec, config: SimConfig, model, seed: int
) -> dict[str, object]:
    """Add provenance: latency model, fleet, workload, seed, version (so a result can be reproduced)."""
    s = result.summary
    s["latency_model"] = describe_model(model, fleet)
    s["fleet"] = {**asdict(fleet), **config.to_dict()}
    s["workload"] = result.workload.description
    s["tier_definitions"] = result.workload.tiers.to_dict()
    s["seed"] = seed
    s["polyserve_version"] = __version__
    return s


def write_outputs(out: str | Path, result: SimResult) -> tuple[Path, Path]:
    """``DIR/requests.csv`` and ``DIR/summary.json``; ``DIR`` may already exist (files are replaced)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    csv_path = out / "requests.csv"
    json_path = out / "summary.json"
    tmp = csv_path.with_suffix(".csv.tmp")
    write_requests_csv(tmp, result.workload, result.records)
    tmp.replace(csv_path)
    tmpj = json_path.with_suffix(".json.tmp")
    tmpj.write_text(json.dumps(jsonable(result.summary), indent=2, sort_keys=False) + "\n", encoding="utf-8")
    tmpj.replace(json_path)
    return csv_path, json_path


def jsonable(x):
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {str(k): jsonable(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [jsonable(v) for v in x]
    if hasattr(x, "item") and callable(x.item):
        return jsonable(x.item())
    return x


def simulate(
    trace: str | None = None,
    *,
    tiers: str | None = None,
    instances: int = 32,
    mode: str = "colocated",
    model: str = "llama-3.1-8b",
    gpu: str = "h100",
    tp: int = 1,
    latency_model: str = "auto",
    policy: str = "round-robin",
    scheduler: str | None = None,
    autoscaler: str | None = None,
    rate: float | None = None,
    duration: float | None = None,
    seed: int = 0,
    out: str | None = None,
    workload: WorkloadSpec | None = None,
    sim: dict[str, object] | None = None,
    policy_options: dict[str, object] | None = None,
) -> dict[str, object]:
    """Run one simulation and return its summary (the dict written to ``summary.json``).

    Notebook API. ``workload`` overrides ``trace``/``rate``/``duration`` with a full ``WorkloadSpec``;
    ``sim`` passes further ``SimConfig`` fields (e.g. ``{"prefill_fraction": 0.3}``).
    """
    tierset = load_tiers(tiers)
    spec = workload or WorkloadSpec(trace=trace, rate=rate, duration_s=duration)
    wl = build_workload(spec, tierset, seed)
    fleet = FleetSpec(model=model, gpu=gpu, tp=tp, latency_model=latency_model)
    m = build_model(fleet)
    cfg_kwargs: dict[str, object] = {"instances": instances, "mode": mode}
    if gpu.lower().startswith("a100"):
        cfg_kwargs["max_num_batched_tokens"] = 2048
    cfg_kwargs.update(sim or {})
    config = SimConfig(**cfg_kwargs)  # type: ignore[arg-type]
    pol = PolicySpec(
        router=policy, scheduler=scheduler, autoscaler=autoscaler, router_options=policy_options or {}
    )
    result = run_workload(wl, m, pol, config, seed)
    finish_summary(result, fleet, config, m, seed)
    if out is not None:
        write_outputs(out, result)
    return result.summary
