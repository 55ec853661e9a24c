"""Each PolyServe ablation changes decisions on a workload built to exercise it (issue 4, "Baselines and ablations").

Fleets and numbers as in ``test_polyserve_ladder.py`` (BLIS Llama-3.1-8B/H100, default tiers; a t20 server with
38 decoding requests has no room for a 1000-token t20 request, a t30 server with 70 none for a t30 one).
"""

from __future__ import annotations

import random

from polyserve.core.fleet import RoutingDecision
from polyserve.experiments.runner import PolicySpec, run_workload, scheduler_choice
from polyserve.metrics.records import ATTAINED, VIOLATED
from polyserve.policy import make_router
from polyserve.sim.config import SimConfig

from .helpers import activate, fleet, load, model, req
from .workloads import workload

T20, T30 = 0, 1
MS = 1_000_000


def both(ablation: str):
    return make_router("polyserve", random.Random(0)), make_router(ablation, random.Random(0))


def test_no_promotion_waits_where_polyserve_promotes():
    """t30 full, idle pool empty, a t20 server with room: PolyServe promotes there; the ablation keeps it pending."""
    f = fleet(2)
    activate(f, 0, T20)
    load(f, 0, 5, tier=T20)
    activate(f, 1, T30)
    load(f, 1, 70, tier=T30)
    full, ablated = both("polyserve-no-promotion")
    assert full.route(req(1, T30), f, 0.0, "mixed") == RoutingDecision("dispatch", 0, "promoted to tier t20", (), True)
    assert ablated.route(req(1, T30), f, 0.0, "mixed") == RoutingDecision.wait("no server can meet the deadlines")


def test_no_gradient_picks_the_least_loaded_feasible_server():
    """t20 servers with 2, 10 and 20 requests (all feasible): PolyServe packs the 20; the ablation picks the 2."""
    f = fleet(4)
    for sid, k in ((0, 10), (1, 2), (2, 20)):
        activate(f, sid, T20)
        load(f, sid, k, tier=T20)
    full, ablated = both("polyserve-no-gradient")
    assert full.route(req(1, T20), f, 0.0, "mixed").server == 2
    assert ablated.route(req(1, T20), f, 0.0, "mixed").server == 1


def test_no_gradient_still_skips_infeasible_servers():
    """The ablation only reorders feasible servers: of 38 (full), 7 and 9 requests it takes the 7, never the 38."""
    f = fleet(3)
    for sid, k in ((0, 38), (1, 7), (2, 9)):
        activate(f, sid, T20)
        load(f, sid, k, tier=T20)
    _, ablated = both("polyserve-no-gradient")
    assert ablated.route(req(1, T20), f, 0.0, "mixed").server == 1


def test_no_wait_ignores_the_prefill_queue_ahead():
    """Server 0 holds 20 t20 prompts of 1000 tokens still waiting for prefill; server 1 has 2 decoding requests.

    New t20 request (1000 tokens, deadline 0.6 s). On server 0, n = 21: chunk = (19 - 6.472 - 6.392) ms / 19.8 us
    = 309 tokens, so 21,000 queued tokens need 68 iterations of 20 ms = 1.36 s: too late. Wait-aware PolyServe
    therefore uses server 1; the ablation counts only its own 1000 tokens (4 iterations, 80 ms) and packs server 0.
    """
    f = fleet(3)
    activate(f, 0, T20)
    load(f, 0, 20, tier=T20, first_token=False)
    activate(f, 1, T20)
    load(f, 1, 2, tier=T20)
    full, ablated = both("polyserve-no-wait")
    assert full.route(req(1, T20), f, 0.0, "mixed") == RoutingDecision("dispatch", 1, "own tier", (), False)
    assert ablated.route(req(1, T20), f, 0.0, "mixed") == RoutingDecision("dispatch", 0, "own tier", (), False)


def test_no_wait_ignores_time_already_spent_pending():
    """A t20 request (1000 tokens, arrived at 0, deadline 0.6 s) still pending at 0.565 s, one empty t20 server.

    Prefill there: chunk floor((19 - 6.472 - 0.304) ms / 19.8 us) = 617 tokens -> 2 iterations of 20 ms = 0.04 s.
    PolyServe counts from now: 0.605 s > 0.6 s, so it keeps waiting (not yet a lost cause: an idle server's best
    prefill, 26.3 ms, would still make it). The ablation compares 0.04 s with the 0.6 s TTFT and dispatches.
    """
    f = fleet(1)
    activate(f, 0, T20)
    full, ablated = both("polyserve-no-wait")
    r = req(1, T20)
    assert full.route(r, f, 0.565, "mixed") == RoutingDecision.wait("no server can meet the deadlines")
    assert ablated.route(r, f, 0.565, "mixed") == RoutingDecision("dispatch", 0, "own tier", (), False)


def test_static_chunk_uses_vllm_static_budget_schedulers():
    """PolyServe runs its dynamic-chunk scheduler on mixed and decode servers; the ablation vLLM's fcfs."""
    full, ablated = both("polyserve-static-chunk")
    assert scheduler_choice(full, PolicySpec("polyserve")) == {
        "mixed": ("polyserve-dynamic", {}), "prefill": ("edf", {}), "decode": ("polyserve-dynamic", {})}
    assert scheduler_choice(ablated, PolicySpec("polyserve-static-chunk")) == {
        "mixed": ("fcfs", {}), "prefill": ("edf", {}), "decode": ("fcfs", {})}


def test_static_chunk_stalls_a_tight_decode_that_dynamic_chunking_protects():
    """One server. A (t20, 100 in, 200 out, TTFT 30 ms) decodes; B (t100, 8000 in, 10 out) arrives at 50 ms and is
    promoted onto A's server. The static budget prefills B's 8000 tokens in one 165 ms iteration, so A's next
    token is 31 ms late; dynamic chunking sizes B's chunks to A's slack and A meets every deadline."""
    wl = workload([(0.0, 100, 200, 0), (0.050, 8000, 10, 3)], ttft_ms=[30.0, 5000.0])
    out = {}
    for name in ("polyserve", "polyserve-static-chunk"):
        res = run_workload(wl, model(), PolicySpec(router=name), SimConfig(instances=1), seed=0)
        out[name] = res.records
    dyn, static = out["polyserve"], out["polyserve-static-chunk"]
    assert list(dyn.promoted) == list(static.promoted) == [False, True]  # same routing...
    assert dyn.first_token[0] == static.first_token[0]  # ...and the same first token for A
    assert list(dyn.status) == [ATTAINED, ATTAINED]
    assert list(static.status) == [VIOLATED, ATTAINED]
    assert dyn.worst_slack[0] >= 0
    assert static.worst_slack[0] < -30 * MS
    # B's first token comes sooner with the static budget (one big chunk) than with slack-sized chunks
    assert static.first_token[1] < dyn.first_token[1]
