"""A fleet with fewer servers than tiers must not starve its tightest tier (PolyServe's starved-tier step)."""

from __future__ import annotations

from polyserve.experiments.runner import PolicySpec, run_workload
from polyserve.sim.config import SimConfig
from polyserve.workload import WorkloadSpec, build_workload

from .helpers import model, tiers


def test_two_servers_four_tiers_every_tier_is_served():
    """2 servers, 4 tiers, light load: each tier's attainment stays high (t20 used to wait for a rebalance)."""
    wl = build_workload(WorkloadSpec(rate=4.0, num_requests=400, input_len="uniform:100:1500",
                                     output_len="uniform:20:300"), tiers(), seed=5)
    res = run_workload(wl, model(), PolicySpec(router="polyserve"), SimConfig(instances=2), seed=5)
    by_tier = {k: v["attainment"] for k, v in res.summary["tiers"].items()}
    assert min(by_tier.values()) >= 0.95, by_tier
