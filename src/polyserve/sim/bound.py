"""The work bound: a goodput that no policy can exceed under the simulator's own rules.

Why a new bound: the design note's fluid formula (``policy/bound.py``, reported as ``fluid_estimate_rps``)
holds every iteration to the TPOT and uses mean lengths. Deadlines are cumulative, so a policy may spend a
request's banked TTFT slack on slower tokens, and 10% of requests may be dropped for free; measured runs went
up to 112.5% of it. This bound counts both, so *no run can pass above it*.

The argument, for the linear cost ``iteration = b0 + b1*prefill_tokens + b2*decode_seqs`` (exact for the
default BLIS model; for another model a linear function below it on the operating grid, ``lower_cost``):

For request *i* with prompt ``P``, output ``D``, TTFT ``F`` and TPOT ``s``, let ``m = D - 1``.
- Its first token needs its whole prompt prefilled, in chunks of at most ``B`` (the token budget), one
  iteration each: ``pre = ceil(P/B)*b0 + b1*P``; attained needs ``pre <= F``.
- Its other ``m`` tokens come from ``m`` iterations after the first token (one token each), all before the
  last deadline ``arrival + F + m*s``: their durations sum to at most ``W = F + m*s - pre`` (minus the KV
  hand-off in disaggregated mode). Each iteration takes at least ``b0 + b2`` (it decodes at least this one
  request), so attained needs ``W >= m*(b0 + b2)``.
- An iteration of duration ``tau`` holds at most ``min(M, (tau - b0)/b2)`` decoding requests (``M`` =
  ``max_num_seqs``), so each one's share of its fixed cost ``b0`` is at least
  ``g(tau) = max(b0/M, b0*b2/(tau - b0))``, convex and decreasing in ``tau``. By Jensen, with the ``m``
  durations summing to at most ``W``, the request's shares sum to at least ``m*g(W/m)``.
- So a server spends at least ``c_i = b1*P + m*(b2 + g(W/m))`` seconds of iteration time on an attained
  request (prefill tokens, decode slots, its share of the fixed cost), and holds at least
  ``k_i = (b0 + b2) * sum_{k=1..m} (P + k)`` token-seconds of KV for it.
A fleet of ``N`` servers has ``N*(T - w0)`` seconds of iteration time and ``N*K*(T - w0)`` token-seconds of KV
between the window's start ``w0`` and any time ``T``; a request arriving in the window works only after its
arrival and, to be attained, before its last deadline ``d_i``. So for every ``T``: the attained requests with
``d_i <= T`` must fit, and the attainment target needs at least ``ceil(q*n) - #{d_i > T}`` of them (per tier
for the every-tier criteria). Choosing the cheapest ones gives the weakest demand: if even that does not fit
at some ``T``, no schedule attains the target (``necessary``). Disaggregated: prefill and decode servers
together are the ``N`` servers, whatever the split; the decode window also loses the KV transfer time.

``work_bound_rps`` is the highest rate at which ``necessary`` holds on the goodput search's own workload
(same trace, seed, duration and window), found by bisection. A goodput probe the bound rules out fails
without being simulated. Preemption only adds work, so it cannot break the bound. Ignored (so the bound is
looser than the truth, never tighter): TTFT queueing, the b0 of prefill-only iterations, KV-dependent
costs (``b3``), and the TTFT tail bound of the headline criterion.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from polyserve.latency.base import kv_transfer_time
from polyserve.policy.cost import LinearCost, fit_cost

EPS_S = 1e-6  # the simulator rounds times to 1 ns; give the policy a microsecond per request for it
T_POINTS = 256  # candidate end times T checked per evaluation


def lower_cost(model, max_num_seqs: int = 256, max_chunk: int = 8192) -> LinearCost:
    """A linear cost at or below ``model.iteration_time`` everywhere on the router's operating grid.

    Exact for the linear model. Otherwise the least-squares surrogate scaled down by its worst
    over-prediction on a grid of batches 1..``max_num_seqs``, contexts and chunks up to ``max_chunk`` (a bound
    on that grid; a model that drops below it off the grid could in principle beat it)."""
    c = fit_cost(model, max_num_seqs, max_chunk)
    if c.max_rel_error == 0.0:
        return c
    worst = 1.0
    for n in (0, 1, 2, 4, 8, 16, 32, 64, 128, max_num_seqs):
        for per_seq in (0, 100, 300, 1200, 3000, 8000):
            for p in (0, 1, 16, 256, 1024, max_chunk // 2, max_chunk):
                if n == 0 and p == 0:
                    continue
                kv = n * per_seq
                y = model.iteration_time(n, kv, p)
                f = c.iteration(n, kv, p)
                if f > 0:
                    worst = min(worst, y / f)
    w = max(0.0, worst)
    return LinearCost(c.b0 * w, c.b1 * w, c.b2 * w, 0.0, 0.0)


@dataclass(frozen=True)
class BoundSetup:
    """What the bound knows of the fleet (all from the simulator's own configuration)."""

    instances: int
    kv_capacity: int
    max_num_seqs: int
    max_num_batched_tokens: int
    cost: LinearCost
    transfer_s_per_token: float = 0.0  # disaggregated: KV hand-off seconds per token (0 co-located)

    @staticmethod
    def for_sim(model, config) -> BoundSetup:
        xfer = 0.0
        if config.mode == "disaggregated":
            xfer = kv_transfer_time(model.deployment, 1, config.kv_link_gbps)
        return BoundSetup(
            instances=config.instances,
            kv_capacity=int(model.deployment.kv_capacity_tokens),
            max_num_seqs=config.max_num_seqs,
            max_num_batched_tokens=config.max_num_batched_tokens,
            cost=lower_cost(model, config.max_num_seqs, config.max_num_batched_tokens),
            transfer_s_per_token=xfer,
        )


def request_costs(setup: BoundSetup, inp: np.ndarray, out: np.ndarray, ttft_s: np.ndarray, tpot_s: np.ndarray
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Per request: the least server time ``c_i`` and KV token-seconds ``k_i`` it takes to attain it (inf: it
    can never be attained, whatever the policy)."""
    c = setup.cost
    b0, b1, b2 = c.b0, c.b1, c.b2
    p = inp.astype(np.float64)
    m = np.maximum(out.astype(np.float64) - 1.0, 0.0)
    pre = np.ceil(p / setup.max_num_batched_tokens) * b0 + b1 * p
    xfer = np.where(m > 0, setup.transfer_s_per_token * (p + 1), 0.0)
    window = ttft_s + m * tpot_s - pre - xfer + EPS_S
    ok = pre <= ttft_s + EPS_S
    with np.errstate(divide="ignore", invalid="ignore"):
        mean_iter = np.where(m > 0, window / np.maximum(m, 1.0), np.inf)
        ok &= (m == 0) | (mean_iter >= b0 + b2)
        share = np.full_like(p, b0 / setup.max_num_seqs)
        if b2 > 0:
            share = np.maximum(share, b0 * b2 / np.maximum(mean_iter - b0, 1e-30))
    cost = b1 * p + m * (b2 + share)
    kv = (b0 + b2) * (m * p + m * (m + 1) / 2)
    cost = np.where(ok, cost, np.inf)
    kv = np.where(ok, kv, np.inf)
    return cost, kv


def _cheapest_sum(x: np.ndarray, k: int) -> float:
    if k <= 0:
        return 0.0
    if k > x.size:
        return math.inf
    if k == x.size:
        return float(x.sum())
    return float(np.partition(x, k - 1)[:k].sum())


def necessary(setup: BoundSetup, workload, window: tuple[float, float], target: float, per_tier: bool) -> bool:
    """False when no policy can reach ``target`` attainment (overall, or in every tier with ``per_tier``) on
    ``workload``, counting requests arriving in ``window``; True otherwise (it may still be unreachable)."""
    a = workload.arrival_s
    sel = (a >= window[0]) & (a < window[1])
    if not sel.any():
        return True
    inp = workload.input_tokens[sel]
    out = workload.output_tokens[sel]
    ttft = workload.ttft_ms[sel] / 1e3
    tpot = workload.tpot_ms[sel] / 1e3
    cost, kv = request_costs(setup, inp, out, ttft, tpot)
    deadline = a[sel] + ttft + np.maximum(out - 1, 0) * tpot + EPS_S
    groups = [workload.tier[sel] == t for t in np.unique(workload.tier[sel])] if per_tier else [np.ones(inp.size, bool)]
    needs = [math.ceil(target * int(g.sum()) - 1e-9) for g in groups]
    w0 = window[0]
    cap_t = setup.instances
    cap_kv = setup.instances * setup.kv_capacity
    ends = np.unique(np.quantile(deadline, np.linspace(0.0, 1.0, T_POINTS)))
    for end in ends.tolist():
        due = deadline <= end
        total_c = total_k = 0.0
        for g, need in zip(groups, needs, strict=True):
            later = int((g & ~due).sum())  # counted as attained for free at this T
            k = need - later
            gd = g & due
            total_c += _cheapest_sum(cost[gd], k)
            total_k += _cheapest_sum(kv[gd], k)
            if not (math.isfinite(total_c) and math.isfinite(total_k)):
                return False
        span = end - w0
        if total_c > cap_t * span or total_k > cap_kv * span:
            return False
    return True


def work_bound_rps(
    make_workload: Callable[[float], object],
    setup: BoundSetup,
    window: tuple[float, float],
    target: float,
    per_tier: bool,
    start: float,
    rel_tol: float = 1e-3,
) -> float:
    """The highest rate at which ``necessary`` holds, by bracketing from ``start`` and bisecting to
    ``rel_tol``. ``make_workload(rate)`` must be the goodput search's own workload generator."""

    def ok(rate: float) -> bool:
        return necessary(setup, make_workload(rate), window, target, per_tier)

    lo, hi = 0.0, max(start, 1e-3)
    while ok(hi):
        lo, hi = hi, hi * 1.5
        if hi > 1e7:
            return math.inf
    if lo == 0.0:
        r = hi
        while r > 1e-3:
            r *= 0.6
            if ok(r):
                lo = r
                break
            hi = r
        else:
            return 0.0
    while (hi - lo) / hi > rel_tol:
        mid = (lo + hi) / 2
        if ok(mid):
            lo = mid
        else:
            hi = mid
    return lo
