"""The simulator ends a decode that got no seat within ``decode_seat_timeout_s``, as the gateway does.

The request has streamed its first token; it ends with status ``timed_out`` (its first token and TTFT on
record, never completed nor attained), at the seat timeout after its hand-off (within one tick), so the
simulator shows as an error what a gateway user sees as one, not as a completion minutes late.
"""

from __future__ import annotations

import numpy as np

from polyserve.core.fleet import RoutingDecision
from polyserve.metrics.records import ATTAINED, TIMED_OUT, VIOLATED
from polyserve.metrics.summary import summarize
from polyserve.policy import SCHEDULERS
from polyserve.policy.base import RouterBase
from polyserve.sim.cluster import Simulation
from polyserve.sim.config import SimConfig
from sim.helpers import blis, workload


class SeatCap(RouterBase):
    """Prefill on server 0; a decode takes server 1 only while it has a free seat (``max_num_seqs``), else it
    waits in the router: a router that never over-fills a decode server."""

    name = "seat-cap"

    def route(self, req, fleet, now, phase) -> RoutingDecision:
        if phase == "prefill":
            return RoutingDecision.to(0, "prefill")
        s = fleet.servers[1]
        if s.num_requests < fleet.config.max_num_seqs:
            return RoutingDecision.to(1, "seat free")
        return RoutingDecision.wait("no decode seat")


def run(seat_s: float | None):
    # 8 long decodes at once, 2 seats: each pair decodes ~21 s, so pairs 3 and 4 would wait 42 and 63 s
    wl = workload([(0.01 * i, 100, 3000, 3) for i in range(8)])
    cfg = SimConfig(instances=2, mode="disaggregated", max_num_seqs=2, decode_seat_timeout_s=seat_s)
    sim = Simulation(wl, blis(), SeatCap(), lambda role: SCHEDULERS.create("fcfs"), cfg)
    stats = sim.run()
    return wl, sim, stats


def test_a_decode_without_a_seat_in_time_ends_timed_out_with_its_first_token_on_record():
    wl, sim, stats = run(30.0)
    r = sim.records
    out = r.status == TIMED_OUT
    assert out.sum() == 4, "pairs 3 and 4 would wait 42 s and 63 s for a seat"
    waited = (r.finish[out] - r.prefill_done[out]) / 1e9
    assert np.all(waited >= 30.0) and np.all(waited < 30.0 + cfg_tick()), "ends at the timeout, within a tick"
    assert np.all(r.first_token[out] >= 0) and np.all(r.generated[out] == 1)
    assert r.reason[int(np.nonzero(out)[0][0])].startswith("no decode server within 30 s")
    s = summarize(wl, r, end_s=stats.end_ns / 1e9)
    assert s["status"]["timed_out"] == 4 and s["timed_out_fraction"] == 0.5
    assert s["tiers"]["t100"]["completed"] == 4, "a timed-out request is not a completion"
    assert s["attained"] == int((r.status == ATTAINED).sum()) <= 4


def test_without_a_seat_timeout_the_same_decodes_complete_minutes_late():
    """The same run unbounded: the waits the timeout ends are real (the test above is not vacuous)."""
    _, sim, _ = run(None)
    r = sim.records
    assert (r.status == TIMED_OUT).sum() == 0
    waited = (r.finish - r.prefill_done) / 1e9 - 21.0  # decode alone takes ~21 s
    assert (r.status == VIOLATED).sum() >= 4 and waited.max() > 40.0


def cfg_tick() -> float:
    return SimConfig().tick_s


def test_the_cli_flag_reaches_the_config_and_bad_values_name_the_flag(tmp_path):
    import json

    from typer.testing import CliRunner

    from polyserve.cli import app

    args = ["simulate", "--num-requests", "20", "--rate", "5", "--instances", "2", "--mode", "disaggregated",
            "--quiet", "--out", str(tmp_path)]
    for flag, want in (([], 30.0), (["--decode-seat-timeout", "12.5"], 12.5), (["--decode-seat-timeout", "0"], None)):
        r = CliRunner().invoke(app, [*args, *flag])
        assert r.exit_code == 0, r.output
        assert json.loads((tmp_path / "summary.json").read_text())["fleet"]["decode_seat_timeout_s"] == want
    bad = CliRunner().invoke(app, [*args, "--decode-seat-timeout", "-1"])
    assert bad.exit_code != 0 and "--decode-seat-timeout" in bad.output
