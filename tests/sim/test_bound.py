"""The work bound (``sim/bound.py``): hand-worked per-request costs, and the invariant that names it: no
registered policy's goodput search ever passes a rate above it, on several workloads and in both modes.

Hand example (BLIS Llama-3.1-8B/H100: b0 = 6.472 ms, b1 = 19.797 us, b2 = 304.4 us; M = 256, B = 8192):
P = 1000, D = 11, TTFT = 0.6 s, TPOT = 20 ms.
- prefill alone: pre = b0 + 1000*b1 = 26.27 ms <= 600 ms (attainable);
- decode window: W = 0.6 + 10*0.02 - pre = 773.73 ms for m = 10 iterations, mean 77.37 ms;
- fixed-cost share per iteration: max(b0/256, b0*b2/(77.37 ms - b0)) = max(25.3 us, 27.8 us) = 27.8 us;
- c = 1000*b1 + 10*(b2 + 27.8 us) = 19.80 + 3.32 = 23.12 ms.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from polyserve.data import ARXIV_LENGTHS, AZURE_CODE, AZURE_CONV
from polyserve.experiments.goodput import GoodputSearch, GoodputSettings
from polyserve.experiments.runner import PolicySpec, load_tiers
from polyserve.latency.build import FleetSpec, build_model
from polyserve.policy import ROUTERS
from polyserve.sim.bound import BoundSetup, lower_cost, necessary, request_costs
from polyserve.sim.config import SimConfig
from polyserve.workload import read_trace

MODEL = build_model(FleetSpec())
SETUP = BoundSetup.for_sim(MODEL, SimConfig(instances=4))


def _cost(p, d, ttft, tpot, setup=SETUP):
    c, k = request_costs(setup, np.array([p]), np.array([d]), np.array([ttft]), np.array([tpot]))
    return float(c[0]), float(k[0])


def test_request_cost_matches_the_hand_worked_example():
    c, kv = _cost(1000, 11, 0.6, 0.020)
    b0, b1, b2 = SETUP.cost.b0, SETUP.cost.b1, SETUP.cost.b2
    pre = b0 + 1000 * b1
    mean_iter = (0.6 + 10 * 0.020 - pre + 1e-6) / 10
    share = max(b0 / 256, b0 * b2 / (mean_iter - b0))
    assert share == pytest.approx(27.8e-6, rel=2e-3)
    assert c == pytest.approx(1000 * b1 + 10 * (b2 + share), rel=1e-12)
    assert c == pytest.approx(23.12e-3, rel=1e-3)
    assert kv == pytest.approx((b0 + b2) * (10 * 1000 + 55), rel=1e-12)


def test_banked_ttft_slack_lowers_the_cost_a_request_needs():
    """Cumulative deadlines: the same request with a 5 s TTFT may run in bigger, slower batches, so the
    least fixed-cost share it must carry falls (to the max_num_seqs floor b0/M)."""
    tight, _ = _cost(1000, 11, 0.6, 0.020)
    loose, _ = _cost(1000, 11, 5.0, 0.020)
    assert loose < tight
    assert loose == pytest.approx(1000 * SETUP.cost.b1 + 10 * (SETUP.cost.b2 + SETUP.cost.b0 / 256), rel=1e-9)


def test_a_request_no_schedule_can_attain_costs_infinity():
    assert math.isinf(_cost(40_000, 2, 0.1, 0.02)[0])  # the prompt alone takes longer than its TTFT
    assert math.isinf(_cost(100, 100, 0.001 + 0.0067, 0.005)[0])  # 5 ms TPOT < one decode iteration (6.8 ms)


def test_lower_cost_is_at_or_below_the_model_on_its_grid():
    for kind in ("linear", "roofline"):
        m = build_model(FleetSpec(latency_model=kind))
        c = lower_cost(m)
        for n in (1, 7, 64, 256):
            for p in (0, 100, 4096):
                assert c.iteration(n, n * 500, p) <= m.iteration_time(n, n * 500, p) * (1 + 1e-9)


def test_necessary_fails_when_the_fleet_cannot_fit_the_cheapest_target_share():
    """Identical requests, each costing 23.12 ms of server time, arriving over 10 s: 4 servers from 0 to the
    last deadline (10.8 s) fit 1868 of them. 2200 arrivals need 1980 attained: impossible; 2000 need 1800
    and 1500 need 1350: not ruled out."""
    from polyserve.workload import Workload

    def wl(n):
        t = load_tiers(None)
        return Workload(np.linspace(0, 10, n, endpoint=False), np.full(n, 1000), np.full(n, 11),
                        np.zeros(n, dtype=np.int16), np.full(n, 600.0), np.full(n, 20.0), t, {"source": "test"})

    assert not necessary(SETUP, wl(2200), (0.0, 10.0), 0.9, per_tier=False)
    assert necessary(SETUP, wl(2000), (0.0, 10.0), 0.9, per_tier=False)
    assert necessary(SETUP, wl(1500), (0.0, 10.0), 0.9, per_tier=False)


WORKLOADS = [
    ("conversation", str(AZURE_CONV), "colocated"),
    ("conversation", str(AZURE_CONV), "disaggregated"),
    ("code", str(AZURE_CODE), "colocated"),
    ("arxiv", str(ARXIV_LENGTHS), "colocated"),
]


@pytest.mark.parametrize("policy", ROUTERS.names())
@pytest.mark.parametrize("label,trace,mode", WORKLOADS)
def test_no_policy_passes_above_the_work_bound(policy, label, trace, mode):
    """The search runs without the bound above it (bracketing up freely), so any rate a policy can pass is
    found; none is above the bound, and the bound's necessary condition holds at every passing rate."""
    if policy == "co-chunk" and mode != "colocated":
        pytest.skip("co-chunk is co-located only")
    tiers = load_tiers(None)
    tr = read_trace(trace, None, tiers)
    cfg = SimConfig(instances=3, mode=mode, overload="shed")
    st = GoodputSettings(duration_s=40.0, warmup_s=10.0, rel_tol=0.05, use_bound=False, start_rate=8.0)
    opts = {"shares": {"t20": 1, "t30": 1, "t50": 1}} if policy == "static-partition" else {}
    gs = GoodputSearch(tr, tiers, MODEL, PolicySpec(router=policy, router_options=opts), cfg, 0, st)
    res = gs.run()
    b, b_all = gs.bounds()
    assert res.goodput_rps <= b and res.goodput_rps_all_tiers <= b_all
    setup = BoundSetup.for_sim(MODEL, cfg)
    for p in res.probes:
        if p.passed["overall"]:
            assert necessary(setup, gs.workload(p.rate), gs.window, st.target, per_tier=False), p.rate
        if p.passed["all_tiers"]:
            assert necessary(setup, gs.workload(p.rate), gs.window, st.target, per_tier=True), p.rate
