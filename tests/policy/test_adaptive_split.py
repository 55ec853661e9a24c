"""Disaggregated PolyServe moves servers between the prefill pool and the decode tiers by demand
(``adaptive_split``), where the fixed 25% split of ``--prefill-fraction`` holds every other policy."""

from __future__ import annotations

from polyserve.experiments.runner import PolicySpec, run_workload
from polyserve.sim.config import SimConfig
from polyserve.workload import WorkloadSpec, build_workload

from .helpers import model, tiers


def _roles_used(res) -> tuple[set[int], set[int]]:
    r = res.records
    arrived = r.status >= 0
    return set(r.prefill_instance[arrived & (r.prefill_instance >= 0)].tolist()), set(
        r.instance[arrived & (r.instance >= 0)].tolist())


def test_prefill_heavy_load_gets_more_prefill_servers_than_the_fixed_split():
    """Long prompts, short outputs, 8 servers (fixed split: 2 prefill): the adaptive split runs prefill on
    more than 2 servers, and with it off prefill stays on servers 0-1."""
    wl = build_workload(WorkloadSpec(rate=30.0, num_requests=900, input_len="uniform:3000:7000",
                                     output_len="uniform:5:30"), tiers(), seed=2)
    cfg = SimConfig(instances=8, mode="disaggregated")
    on = run_workload(wl, model(), PolicySpec(router="polyserve"), cfg, seed=2)
    off = run_workload(wl, model(), PolicySpec(router="polyserve", router_options={"adaptive_split": False}), cfg,
                       seed=2)
    pre_on, _ = _roles_used(on)
    pre_off, _ = _roles_used(off)
    assert pre_off <= {0, 1}
    assert len(pre_on) > 2
    assert on.summary["attainment"] >= off.summary["attainment"]
    c = on.records.counts()
    assert c["unfinished"] == 0 and c["attained"] + c["violated"] + c["shed"] + c["rejected"] == len(wl)
