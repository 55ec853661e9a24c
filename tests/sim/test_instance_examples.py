"""Hand-worked examples of the instance model and the deadline SLO (DSLO) arithmetic."""

from __future__ import annotations

from polyserve.metrics.records import ATTAINED, VIOLATED
from polyserve.sim.request import SimRequest

from .helpers import linear_model, one_tier, simulation, workload

MS = 1_000_000


def test_token_deadline_is_arrival_plus_ttft_plus_k_minus_1_tpot():
    r = SimRequest(
        0, 0, arrival=1_000 * MS, input_tokens=10, output_tokens=3, tier=0, ttft=500 * MS, tpot=20 * MS
    )
    assert [r.deadline(k) for k in (1, 2, 3)] == [1500 * MS, 1520 * MS, 1540 * MS]


def test_hand_worked_two_requests_batching_and_slack():
    """b0 = 5 ms, b1 = 10 us/prefill token, b2 = 1 ms/decode seq; TTFT 20 ms, TPOT 10 ms.

    A (t=0, 1000 in, 3 out): iteration 1 prefills A (5 + 10 = 15 ms) -> A token 1 at 15 ms.
    B (t=1 ms, 500 in, 2 out) waits for the next iteration.
    Iteration 2 (15 -> 26 ms): decode A + prefill B: 5 + 1 + 5 = 11 ms -> A token 2, B token 1 at 26 ms.
    Iteration 3 (26 -> 33 ms): decode A and B: 5 + 2 = 7 ms -> A token 3, B token 2 at 33 ms.
    A: deadlines 20/30/40 ms -> slacks 5/4/7 ms: attained, worst 4 ms.
    B: deadlines 21/31 ms -> slacks -5/-2 ms: violated (TTFT and TPOT both missed).
    """
    wl = workload([(0.0, 1000, 3, 0), (0.001, 500, 2, 0)], tiers=one_tier(10.0, 20.0))
    sim = simulation(wl, linear_model(5.0, 0.01, 1.0), instances=1)
    sim.run()
    r = sim.records
    assert list(r.first_token) == [15 * MS, 26 * MS]
    assert list(r.finish) == [33 * MS, 33 * MS]
    assert list(r.ttft_slack) == [5 * MS, -5 * MS]
    assert list(r.worst_slack) == [4 * MS, -2 * MS]
    assert list(r.status) == [ATTAINED, VIOLATED]
    assert list(r.scheduled) == [0, 15 * MS]


def test_banked_slack_absorbs_a_slow_iteration():
    """A request ahead of schedule banks slack, so one iteration slower than its TPOT does not violate it.

    b0 = 5 ms, b1 = 10 us/token, b2 = 1 ms/seq; TTFT 20 ms, TPOT 10 ms.
    A (t=0, 100 in, 6 out): token 1 at 6 ms, then 6 ms decode steps: tokens 2-4 at 12/18/24 ms.
    B (t=20 ms, 2000 in) is prefilled with A's 5th token: 5 + 1 + 20 = 26 ms (> TPOT) -> token 5 at 50 ms.
    Then A and B decode together (7 ms): A token 6 at 57 ms.
    A's slacks: 14, 18, 22, 26, 10, 13 ms -> attained, worst 10 ms despite the 26 ms stall.
    """
    wl = workload([(0.0, 100, 6, 0), (0.020, 2000, 2, 0)], tiers=one_tier(10.0, 20.0))
    sim = simulation(wl, linear_model(5.0, 0.01, 1.0), instances=1)
    sim.run()
    r = sim.records
    assert r.status[0] == ATTAINED
    assert r.ttft_slack[0] == 14 * MS
    assert r.worst_slack[0] == 10 * MS
    assert r.finish[0] == 57 * MS


def test_chunked_prefill_splits_long_prompt_over_the_token_budget():
    """A 10,000-token prompt with a 4,096-token budget needs three iterations before its first token."""
    wl = workload([(0.0, 10_000, 2, 0)], tiers=one_tier(50.0, 1000.0))
    sim = simulation(wl, linear_model(5.0, 0.01, 1.0), instances=1, max_num_batched_tokens=4096)
    sim.run()
    # 4096 + 4096 + 1808 prefill tokens: (5 + 40.96) + (5 + 40.96) + (5 + 18.08) ms, then one decode of 6 ms
    ft = round((5 + 40.96 + 5 + 40.96 + 5 + 18.08) * MS)
    assert sim.records.first_token[0] == ft
    assert sim.records.finish[0] == ft + 6 * MS
    assert sim.instances[0].iterations == 4


def test_max_num_seqs_caps_the_batch():
    wl = workload([(0.0, 10, 50, 0)] * 5, tiers=one_tier(100.0, 10_000.0))
    sim = simulation(wl, linear_model(5.0, 0.0, 1.0), instances=1, max_num_seqs=2)
    sim.run()
    r = sim.records
    # requests 0,1 run together; 2,3 start when a seat frees; 4 after that
    assert r.scheduled[0] == r.scheduled[1] == 0
    assert r.scheduled[2] == r.finish[0] and r.scheduled[3] == r.finish[1]
    assert r.scheduled[4] >= r.finish[2]


def test_preemption_by_recompute_when_kv_runs_out():
    """Two requests that together outgrow KV: the newer one is preempted and recomputed, and both finish."""
    model = linear_model(5.0, 0.0, 1.0, kv_fraction=0.193)  # about 4,000 tokens of KV
    cap = model.deployment.kv_capacity_tokens
    assert 2000 < cap < 6000
    big = cap // 2
    wl = workload([(0.0, big - 100, 400, 0), (0.0, big - 100, 400, 0)], tiers=one_tier(100.0, 1e6))
    sim = simulation(wl, model, instances=1)
    stats = sim.run()
    assert stats.preemptions >= 1
    assert sim.records.preemptions[1] >= 1 and sim.records.preemptions[0] == 0
    assert list(sim.records.generated) == [400, 400]
    assert sim.instances[0].peak_kv <= cap


def test_request_larger_than_kv_is_rejected_not_hung():
    model = linear_model(kv_fraction=0.193)
    cap = model.deployment.kv_capacity_tokens
    wl = workload([(0.0, cap, 10, 0), (0.0, 10, 10, 0)], tiers=one_tier(100.0, 1e6))
    sim = simulation(wl, model, instances=1)
    sim.run()
    c = sim.records.counts()
    assert c["rejected"] == 1 and c["attained"] == 1
    assert "KV capacity" in sim.records.reason[0]


def test_disaggregated_first_token_on_prefill_then_kv_transfer_then_decode():
    """Prefill server emits token 1; the KV moves at the link speed; the decode server emits token 2 on."""
    model = linear_model(5.0, 0.01, 1.0)
    wl = workload([(0.0, 1000, 3, 0)], tiers=one_tier(50.0, 1000.0))
    sim = simulation(wl, model, instances=2, mode="disaggregated", kv_link_gbps=100.0)
    sim.run()
    r = sim.records
    assert r.prefill_instance[0] == 0 and r.instance[0] == 1
    assert r.first_token[0] == 15 * MS  # 5 + 1000 * 0.01
    kv_bytes = 1001 * model.deployment.model.kv_bytes_per_token
    transfer = round(kv_bytes * 8 / 100e9 * 1e9)
    assert r.finish[0] == 15 * MS + transfer + 2 * 6 * MS  # two decode iterations of 5 + 1 ms
