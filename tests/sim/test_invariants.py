"""Simulator invariants, each a test named after it, on hand-made and hypothesis-generated workloads.

- conservation: every arrived request ends attained, violated, shed, rejected or unfinished, exactly once;
- the clock never goes back: events are processed in non-decreasing time, nothing is scheduled in the past;
- KV use never exceeds capacity;
- determinism: same seed and inputs give byte-identical outputs;
- the fast path gives exactly the per-request results of stepping iteration by iteration;
- the lazily tracked slack equals the slack of every token recorded one by one.
"""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from polyserve.experiments.runner import PolicySpec, run_workload, write_outputs
from polyserve.metrics.records import ATTAINED, NO_SLACK, NOT_ARRIVED, STATUS_NAMES
from polyserve.sim import instance as instance_mod
from polyserve.sim.cluster import Simulation
from polyserve.sim.config import SimConfig

from .helpers import blis, default_tiers, linear_model, simulation, token_oracle, workload

RECORD_FIELDS = (
    "status",
    "first_token",
    "finish",
    "scheduled",
    "prefill_done",
    "ttft_slack",
    "worst_slack",
    "generated",
    "preemptions",
    "instance",
    "prefill_instance",
)


@st.composite
def workloads(draw, max_n=40):
    n = draw(st.integers(1, max_n))
    gaps = draw(st.lists(st.floats(0.0, 0.3), min_size=n, max_size=n))
    arrivals = np.cumsum(gaps)
    rows = []
    for i in range(n):
        rows.append(
            (
                float(arrivals[i]),
                draw(st.integers(1, 3000)),
                draw(st.integers(1, 300)),
                draw(st.integers(0, 3)),
            )
        )
    return workload(rows)


def _cases():
    return st.sampled_from(
        [
            {"instances": 1},
            {"instances": 3},
            {"instances": 2, "mode": "disaggregated"},
            {"instances": 4, "mode": "disaggregated", "prefill_fraction": 0.5},
            {"instances": 2, "max_num_batched_tokens": 512},
            {"instances": 1, "max_num_seqs": 4},
        ]
    )


def _model(kind: str):
    if kind == "tiny_kv":
        return blis(kv_fraction=0.1905)  # ~1,600 tokens: preemption
    if kind == "kv_term":
        return linear_model(5.0, 0.02, 0.3, b3_ms=0.00005)  # per-iteration times vary (no constant step)
    return blis()


def _run(wl, model, fast, scheduler="fcfs", **cfg):
    sim = simulation(wl, model, fast=fast, scheduler=scheduler, **cfg)
    stats = sim.run()
    return sim, stats


def assert_same_records(a, b):
    for f in RECORD_FIELDS:
        x, y = getattr(a.records, f), getattr(b.records, f)
        assert np.array_equal(x, y), f"{f} differs at {np.nonzero(x != y)[0][:5]}"


# ---- conservation ---------------------------------------------------------------------------------------


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(wl=workloads(), cfg=_cases(), kind=st.sampled_from(["blis", "tiny_kv", "kv_term"]))
def test_conservation_every_arrived_request_ends_in_exactly_one_state(wl, cfg, kind):
    sim, _ = _run(wl, _model(kind), True, **cfg)
    counts = sim.records.counts()
    assert counts["not_arrived"] == 0
    assert sum(counts.values()) == len(wl)
    assert counts["unfinished"] == 0  # no horizon: every request completes (or is rejected with a reason)
    done = (sim.records.status == ATTAINED) | (sim.records.status == 2)
    assert np.array_equal(sim.records.generated[done], wl.output_tokens[done])


def test_conservation_with_a_horizon_counts_unfinished():
    wl = workload([(0.0, 500, 2000, 0), (0.0, 100, 5, 3), (50.0, 10, 10, 3)])
    sim = simulation(wl, blis(), instances=1, horizon_s=1.0)
    stats = sim.run()
    c = sim.records.counts()
    assert stats.stopped_at_horizon
    assert c["unfinished"] == 1 and c["not_arrived"] == 1 and c["attained"] == 1
    assert sum(c.values()) == 3
    assert set(STATUS_NAMES) == set(c)


# ---- the clock -----------------------------------------------------------------------------------------


class ClockCheckingSimulation(Simulation):
    def __init__(self, *a, **k):
        super().__init__(*a, **k)
        self.seen: list[int] = []

    def schedule_step(self, inst, t):
        assert t >= self._now, f"step scheduled in the past: {t} < {self._now}"
        super().schedule_step(inst, t)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(wl=workloads(), cfg=_cases())
def test_clock_never_goes_back(wl, cfg):
    from polyserve.policy import SCHEDULERS, make_router
    from polyserve.sim.cluster import make_rng

    sim = ClockCheckingSimulation(
        wl,
        blis(),
        make_router("round-robin", make_rng(0)),
        lambda role: SCHEDULERS.create("fcfs"),
        SimConfig(**cfg),
    )
    times: list[int] = []
    orig = instance_mod.Instance.step

    def step(self, now, version):
        times.append(now)
        return orig(self, now, version)

    instance_mod.Instance.step = step  # type: ignore[method-assign]
    try:
        sim.run()
    finally:
        instance_mod.Instance.step = orig  # type: ignore[method-assign]
    assert times == sorted(times)
    r = sim.records
    fin = r.finish[r.finish >= 0]
    assert (fin >= (wl.arrival_s[r.finish >= 0] * 1e9).round().astype(np.int64)).all()
    ok = r.first_token >= 0
    assert (r.finish[ok] >= r.first_token[ok]).all()


# ---- KV capacity ----------------------------------------------------------------------------------------


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(wl=workloads(), cfg=_cases())
def test_kv_use_never_exceeds_capacity(wl, cfg):
    model = _model("tiny_kv")
    cap = model.deployment.kv_capacity_tokens
    orig = instance_mod.Instance._plan_next
    worst = [0]

    def plan(self, now):
        orig(self, now)
        worst[0] = max(worst[0], self.kv_used)
        assert 0 <= self.kv_used <= self.kv_capacity

    instance_mod.Instance._plan_next = plan  # type: ignore[method-assign]
    try:
        sim, stats = _run(wl, model, True, **cfg)
    finally:
        instance_mod.Instance._plan_next = orig  # type: ignore[method-assign]
    assert worst[0] <= cap
    assert stats.peak_kv_fraction <= 1.0
    for inst in sim.instances:
        assert inst.kv_used == 0 and inst.kv_decode == 0  # everything freed at the end


# ---- determinism ----------------------------------------------------------------------------------------


def test_determinism_same_seed_same_bytes(tmp_path):
    from polyserve.workload import WorkloadSpec, build_workload

    outs = []
    for k in range(2):
        wl = build_workload(
            WorkloadSpec(
                rate=40.0, num_requests=800, input_len="uniform:10:3000", output_len="uniform:1:400"
            ),
            default_tiers(),
            seed=7,
        )
        res = run_workload(wl, blis(kv_fraction=0.2), PolicySpec(), SimConfig(instances=3), seed=7)
        write_outputs(tmp_path / str(k), res)
        outs.append(
            (
                (tmp_path / str(k) / "requests.csv").read_bytes(),
                (tmp_path / str(k) / "summary.json").read_bytes(),
            )
        )
    assert outs[0] == outs[1]
    assert len(outs[0][0]) > 10_000


# ---- fast path == step by step --------------------------------------------------------------------------


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    wl=workloads(),
    cfg=_cases(),
    kind=st.sampled_from(["blis", "tiny_kv", "kv_term"]),
    sched=st.sampled_from(["fcfs", "edf"]),
)
def test_fast_path_equals_step_by_step(wl, cfg, kind, sched):
    model = _model(kind)
    a, sa = _run(wl, model, True, scheduler=sched, **cfg)
    b, sb = _run(wl, model, False, scheduler=sched, **cfg)
    assert_same_records(a, b)
    assert sa.iterations == sb.iterations and sa.busy_ns == sb.busy_ns and sa.preemptions == sb.preemptions
    assert sa.events <= sb.events


def test_fast_path_equals_step_by_step_on_trace_slices():
    """Several realistic workloads (Azure conversation and code, busy and calm, KV pressure, P/D)."""
    from polyserve.data import AZURE_CODE, AZURE_CONV
    from polyserve.workload import WorkloadSpec, build_workload

    cases = [
        (AZURE_CONV, 30.0, {"instances": 4}, None),
        (AZURE_CODE, 20.0, {"instances": 3}, None),
        (AZURE_CONV, 25.0, {"instances": 4, "mode": "disaggregated"}, None),
        (AZURE_CONV, 15.0, {"instances": 2}, 0.196),
    ]
    for path, rate, cfg, kvf in cases:
        wl = build_workload(
            WorkloadSpec(trace=str(path), rate=rate, num_requests=700), default_tiers(), seed=1
        )
        model = blis(kv_fraction=kvf) if kvf else blis()
        a, _ = _run(wl, model, True, **cfg)
        b, _ = _run(wl, model, False, **cfg)
        assert_same_records(a, b)
        if kvf:
            assert a.stats.preemptions > 0


# ---- lazy slack == token-by-token oracle ----------------------------------------------------------------


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(wl=workloads(max_n=25), cfg=_cases(), kind=st.sampled_from(["blis", "tiny_kv", "kv_term"]))
def test_slack_matches_every_token_recorded(wl, cfg, kind):
    sim = simulation(wl, _model(kind), fast=False, **cfg)
    times = token_oracle(sim)
    sim.run()
    r = sim.records
    arr = (wl.arrival_s * 1e9).round().astype(np.int64)
    ttft = (wl.ttft_ms * 1e6).round().astype(np.int64)
    tpot = (wl.tpot_ms * 1e6).round().astype(np.int64)
    for i in range(len(wl)):
        if r.status[i] == NOT_ARRIVED or r.status[i] == 4:
            continue
        ts = times[i]
        assert len(ts) == wl.output_tokens[i]
        slacks = [arr[i] + ttft[i] + k * tpot[i] - t for k, t in enumerate(ts)]
        assert r.ttft_slack[i] == slacks[0]
        later = min(slacks[1:]) if len(slacks) > 1 else NO_SLACK
        assert r.worst_slack[i] == later
        assert r.finish[i] == ts[-1] and r.first_token[i] == ts[0]
        assert (r.status[i] == ATTAINED) == (min(slacks) >= 0)


# ---- the dynamic chunk budget's deadline index == a scan of the batch -------------------------------------


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(wl=workloads(max_n=30), cfg=_cases(), kind=st.sampled_from(["blis", "tiny_kv"]),
       probe=st.lists(st.integers(-50_000_000, 50_000_000), min_size=1, max_size=4))
def test_deadline_index_matches_a_scan_of_the_batch(wl, cfg, kind, probe):
    """``Instance._next_deadline`` reads per-TPOT sorted lists; at every budget decision, and at times around
    it (so deadlines already missed are crossed), it must agree with a scan of every decoding request."""
    orig = instance_mod.Instance._dynamic_budget

    def scan(inst, now):
        tight = nxt = instance_mod.INF
        for req in inst.decoding.values():
            dl = req.K + (inst.C + 1) * req.tpot
            if dl < now or (req.ttft_slack is not None and req.ttft_slack < 0):
                continue
            nxt = min(nxt, dl)
            tight = min(tight, req.tpot)
        return nxt, tight

    def checked(self, n, now):
        for t in [now, *(now + d for d in probe)]:
            assert self._next_deadline(t) == scan(self, t)
        return orig(self, n, now)

    instance_mod.Instance._dynamic_budget = checked
    try:
        simulation(wl, _model(kind), fast=True, scheduler="polyserve-dynamic", **cfg).run()
    finally:
        instance_mod.Instance._dynamic_budget = orig
