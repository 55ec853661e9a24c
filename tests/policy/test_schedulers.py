"""Per-instance schedulers (``policy/schedulers.py``, ``policy/chunking.py``), unit by unit and as the instance
model (``sim/instance.py``) calls them: queue order from ``scheduler.queue``, a static ``token_budget`` minus the
decode tokens, and ``prefill_budget(BatchInfo, model, now)`` each iteration for dynamic schedulers.

Latency model for the hand-worked runs: step = 5 ms + 10 us per prefill token + 1 ms per decode sequence.
"""

from __future__ import annotations

import pytest

from polyserve.core.errors import ConfigError
from polyserve.metrics.records import ATTAINED, VIOLATED
from polyserve.policy import SCHEDULERS, BatchInfo, make_router
from polyserve.policy.chunking import DynamicChunkScheduler
from polyserve.policy.schedulers import StaticScheduler
from polyserve.sim.cluster import Simulation, make_rng
from polyserve.sim.config import SimConfig
from polyserve.sim.instance import Instance
from polyserve.sim.request import SimRequest

from .workloads import linear_model, workload

MS = 1_000_000
INF = float("inf")


def batch(num_decode=4, deadline=INF, max_tokens=8192, kv=0) -> BatchInfo:
    return BatchInfo(num_decode, kv, kv, 400_000, max_tokens, deadline, 0.010 if deadline != INF else INF)


def run(wl, scheduler_factory, **cfg) -> Simulation:
    sim = Simulation(wl, linear_model(), make_router("round-robin", make_rng(0)), scheduler_factory,
                     SimConfig(instances=1, **cfg))
    sim.run()
    return sim


# ---- registry and static budgets ----------------------------------------------------------------------------
def test_registered_schedulers_declare_queue_order_and_budget_kind():
    """fcfs: arrival order, static; edf: deadline order, static; polyserve-dynamic: deadline order, dynamic."""
    got = {n: (s.queue, s.dynamic_budget) for n in ("fcfs", "edf", "polyserve-dynamic") for s in [SCHEDULERS.create(n)]}
    assert got == {"fcfs": ("fcfs", False), "edf": ("edf", False), "polyserve-dynamic": ("edf", True)}


def test_static_budget_is_token_budget_minus_decode_tokens():
    """A 512-token budget with 3 decodes leaves 509 prefill tokens; no budget means the engine's 8192 - 3."""
    assert StaticScheduler(token_budget=512).prefill_budget(batch(3), None, 0.0) == 509
    assert StaticScheduler().prefill_budget(batch(3), None, 0.0) == 8189
    assert SCHEDULERS.create("edf", token_budget=100).prefill_budget(batch(0), None, 0.0) == 100


@pytest.mark.parametrize("budget", [0, -5])
def test_static_budget_below_one_is_a_config_error(budget):
    """A token budget must be >= 1."""
    with pytest.raises(ConfigError):
        StaticScheduler(token_budget=budget)


def test_static_token_budget_is_respected_by_the_instance():
    """1000-token prompt, budget 512: iterations of 512 (10.12 ms) and 488 (9.88 ms): first token at 20 ms exactly.

    Then one decode step (6 ms) for the second and last token.
    """
    wl = workload([(0.0, 1000, 2, 3)])
    sim = run(wl, lambda role: SCHEDULERS.create("fcfs", token_budget=512))
    assert sim.records.first_token[0] == 20 * MS
    assert sim.records.finish[0] == 26 * MS
    assert sim.instances[0].iterations == 3


# ---- queue order --------------------------------------------------------------------------------------------
def _order_workload():
    """A (t100) runs alone in the one free seat (max_num_seqs 2); B (t100, 1 ms) and C (t20, 2 ms) queue.

    A's prefill is 5 + 1 = 6 ms; at 6 ms one seat is free for either B (earlier arrival, TTFT deadline 4.002 s)
    or C (later arrival, TTFT deadline 0.503 s).
    """
    return workload([(0.0, 100, 20, 3), (0.001, 10, 2, 3), (0.002, 10, 2, 0)])


def test_fcfs_admits_waiting_requests_in_arrival_order():
    """FCFS: B (arrived first) takes the seat at 6 ms; C waits until B leaves."""
    sim = run(_order_workload(), lambda role: SCHEDULERS.create("fcfs"), max_num_seqs=2)
    sched = sim.records.scheduled
    assert sched[0] == 0 and sched[1] == 6 * MS
    assert sched[2] > sched[1]
    assert sched[2] == sim.records.finish[1]


def test_edf_admits_the_earliest_ttft_deadline_first():
    """EDF: C (deadline 0.503 s) takes the seat at 6 ms although B arrived before it."""
    sim = run(_order_workload(), lambda role: SCHEDULERS.create("edf"), max_num_seqs=2)
    sched = sim.records.scheduled
    assert sched[0] == 0 and sched[2] == 6 * MS
    assert sched[1] > sched[2]
    assert sched[1] == sim.records.finish[2]


def test_edf_puts_requests_already_past_their_deadline_last():
    """EDF key: a request whose next deadline has passed sorts after every on-time one (no overload domino)."""
    late = SimRequest(1, 1, arrival=0, input_tokens=10, output_tokens=2, tier=0, ttft=100 * MS, tpot=20 * MS)
    on_time = SimRequest(2, 2, arrival=0, input_tokens=10, output_tokens=2, tier=3, ttft=4000 * MS, tpot=100 * MS)
    now = 200 * MS
    assert Instance._edf_key(late, now) == (1, 100 * MS)
    assert Instance._edf_key(on_time, now) == (0, 4000 * MS)
    assert sorted([Instance._edf_key(late, now), Instance._edf_key(on_time, now)])[0] == (0, 4000 * MS)


# ---- dynamic chunking ---------------------------------------------------------------------------------------
def test_dynamic_chunk_fills_the_tightest_slack_minus_the_guard():
    """4 decodes, next deadline 30 ms away: (30 ms * 0.95 - 5 ms - 4 ms) / 10 us = 1950 tokens (floor)."""
    s = DynamicChunkScheduler()
    got = s.prefill_budget(batch(4, deadline=0.030), linear_model(), 0.0)
    assert got in (1949, 1950)  # floor(0.0195 / 1e-5) is 1949 in binary floating point
    m, budget = linear_model(), 0.030 * 0.95
    assert m.iteration_time(4, 0, got) <= budget + 1e-12
    assert m.iteration_time(4, 0, got + 2) > budget + 1e-12  # at most one token short (float floor)


def test_dynamic_chunk_is_zero_when_decodes_alone_use_the_slack():
    """Slack 8 ms * 0.95 = 7.6 ms < 9 ms of decode: no prefill this iteration; past deadlines give 0 too."""
    s = DynamicChunkScheduler()
    assert s.prefill_budget(batch(4, deadline=1.008), linear_model(), 1.0) == 0
    assert s.prefill_budget(batch(4, deadline=0.990), linear_model(), 1.0) == 0


def test_dynamic_chunk_is_capped_by_the_token_budget_minus_decodes():
    """A huge slack is capped at the engine budget (8192 - 4) or the scheduler's own cap (300 - 4)."""
    assert DynamicChunkScheduler().prefill_budget(batch(4, deadline=100.0), linear_model(), 0.0) == 8188
    assert DynamicChunkScheduler(token_budget=300).prefill_budget(batch(4, deadline=100.0), linear_model(), 0.0) == 296


def test_dynamic_chunk_grows_with_slack():
    """More slack, bigger chunk (monotone), guard 0 uses all of it."""
    s = DynamicChunkScheduler(guard=0.0)
    sizes = [s.prefill_budget(batch(2, deadline=d), linear_model(), 0.0) for d in (0.010, 0.020, 0.040, 0.080)]
    assert sizes == sorted(sizes) and sizes[0] < sizes[-1]
    assert sizes[1] in (1299, 1300)  # (20 - 7) ms / 10 us


class _Spy(DynamicChunkScheduler):
    """Records every call the instance makes."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[float, BatchInfo, int]] = []

    def prefill_budget(self, batch, model, now):
        b = super().prefill_budget(batch, model, now)
        self.calls.append((now, batch, b))
        return b


def _slack_workload():
    """A (TTFT 20, TPOT 10 ms) and C (TTFT 20, TPOT 50 ms), 100-token prompts, arrive at 0; prefilled together
    (7 ms), then 7 ms decode steps: tokens at 7, 14, 21 ms. B (5000 tokens, loose) arrives at 20.5 ms.
    At 21 ms A's 4th token is due at 20 + 3*10 = 50 ms, C's at 20 + 3*50 = 170 ms: A's is the tightest slack."""
    return workload(
        [(0.0, 100, 50, 0), (0.0, 100, 50, 2), (0.0205, 5000, 2, 3)], ttft_ms=[20, 20, 5000], tpot_ms=[10, 50, 100]
    )


def test_instance_sizes_the_chunk_to_the_batch_tightest_slack():
    """First call at 21 ms: deadline 50 ms (A's, not C's 170 ms); chunk (29 * 0.95 - 7) ms / 10 us = 2055 tokens;
    that iteration ends at 21 + 27.55 = 48.55 ms, before A's deadline, and every token of A is on time."""
    spies: list[_Spy] = []

    def make(role):
        spies.append(_Spy())
        return spies[-1]

    sim = run(_slack_workload(), make)
    now, info, chunk = spies[0].calls[0]
    assert now == pytest.approx(0.021, abs=1e-12)
    assert info.num_decode == 2 and info.tightest_tpot == pytest.approx(0.010)
    assert info.min_next_deadline == pytest.approx(0.050, abs=1e-12)
    assert chunk in (2054, 2055)
    now2, info2, _ = spies[0].calls[1]
    assert now2 == pytest.approx(0.021 + 0.005 + 0.002 + chunk * 1e-5, abs=1e-9)
    assert info2.min_next_deadline == pytest.approx(0.060, abs=1e-12)
    assert list(sim.records.status) == [ATTAINED, ATTAINED, ATTAINED]


def test_static_budget_on_the_same_batch_misses_the_tight_deadline():
    """fcfs prefills B's 5000 tokens at once: 5 + 2 + 50 = 57 ms from 21 ms, so A's 50 ms token lands at 78 ms."""
    sim = run(_slack_workload(), lambda role: SCHEDULERS.create("fcfs"))
    assert list(sim.records.status) == [VIOLATED, ATTAINED, ATTAINED]
    assert sim.records.worst_slack[0] == -28 * MS


def test_dynamic_chunk_with_no_deadline_is_the_static_cap():
    """min_next_deadline = inf (documented 'if none'): nothing to protect, so the cap 8192 - 4."""
    assert DynamicChunkScheduler().prefill_budget(batch(4, deadline=INF), linear_model(), 0.0) == 8188
