"""The PolyServe router: tiers, the decision ladder, the load gradient, lazy promotion and scale-down.

The algorithm (``../shared/design/polyserve.md`` §2; choices the paper leaves open are marked *ours*):

1. **Tiers.** Requests are binned by TPOT SLO; each tier owns servers; the rest sit in the idle pool.
2. **Ladder** for a new or pending request of tier *t*:
   a. among tier *t*'s servers that can still meet the request's deadlines, the **most loaded** (most
      outstanding requests). Packing the busiest server first builds a load gradient, so the least loaded
      server drains and can be released;
   b. else **scale up**: take a server from the idle pool into tier *t* (*ours*: before promotion);
   c. else **promote** (lazily, only now that tier *t* is full and nothing is idle): the same choice among a
      tighter tier's servers, judged against the *host* tier's TPOT because a server's batch is bounded by
      its tightest request; the nearest tighter tier is tried first (*ours*: it wastes the least headroom).
      *Ours*, ``protect_host_tier``: never into a tier whose own requests are waiting in the router, and
      ``promotion_reserve`` (4): a promoted request must leave room on the host for that many more of the
      host tier's own requests (judged as if they were already there). Without them, loose requests fill
      the tight tier's spare seats and the tight tier's own arrivals then miss.
      *Ours*, ``fair_promotion``: never into a tier that has lost a larger share of its own requests over
      the last 30 s (certain misses: sheds and lost causes, ``fleet.outcomes``, written by the driver) than
      the promoted request's tier. On a full fleet promotion is zero-sum: a seat or prefill slot a looser
      request takes on a t50 server is one a later t50 arrival lacks, and with 7-10 servers per tier one
      server is 10-14% of a tier's capacity, so whole-server rebalancing cannot even out the tiers; the
      rule lets promotion move the fractional rest only from a better-off tier to a worse-off one. A
      disaggregated decode reads decode-phase misses only (second tokens lost waiting for a seat): a prompt
      shed in the shared prefill pool says nothing about its tier's decode servers. Measured
      (code trace, co-located, 600 req/s, seed 0, 150 s, from 50 s): every miss a router shed; t20 / t30 /
      t50 / t100 attained 91.7 / 89.2 / 88.7 / 97.2% without the rule (t100 promoted 5.8% of its requests),
      93.1 / 90.5 / 90.1 / 92.5% with it.
      The order, measured (Azure conversation, 32 x H100, overload shed, tail-bounded goodput): on 200 s
      probes, seed 0, the paper's order (promotion before scale-up, ``promote_before_scale_up=True``,
      registered as ``polyserve-promote-first``) alone 288.5 req/s, scale-up first 303.7, no promotion
      312.8, scale-up first with the protection 315.8, the paper's order with it 318.8 (321.8 with the
      reserve); on 150 s probes, 3 seeds, both orders with protection and reserve tie co-located (316.4) and
      scale-up first wins disaggregated (285.5 vs 281.0); under the roofline model the paper's order
      collapses (attainment 76% at 300 req/s: promoted requests wait in the host's queue, sized by its
      tight slack, until they are shed) where scale-up first attains 99.5%. So scale-up comes first;
   c'. *ours*: a tier that owns no server at all, with none idle, takes the least loaded looser-tier tail
      server whose batch still fits its TPOT (a fleet with fewer servers than tiers would else starve it);
   d. else **pending**: the driver retries on every completion and tick. Once the request's TTFT (a
      decode's: its second token) can no longer be met it is a lost cause: the driver's overload contract
      (``overload.py``, the same for every router) sheds it (never a decode) or serves it after every
      attainable request of its phase; when it is served, the router places
      it as soon as a server has *batch* room (TPOT and KV still protected for everyone else), so it
      completes late instead of hanging.
3. **Attainable?** From a linear cost surrogate of the latency model (``cost.py``), in O(1) per server:
   - batch: one more than the server's outstanding requests, at most ``max_num_seqs``;
   - KV at its peak: every outstanding prompt plus its tier's expected output (learned online from finished
     requests, bounded by ``max_tokens``), plus the new one, within ``kv_headroom`` of capacity;
   - TPOT: the decode iteration at that peak batch and KV within ``tpot_headroom`` of the host TPOT;
   - first token (wait-time aware): the prefill work queued ahead plus this prompt, in chunks as large as
     the host TPOT leaves room for next to the peak decode batch (*continuous chunked-prefill prediction*:
     that chunk must be sustainable for the whole prefill, and positive), one host-TPOT iteration each,
     counted from ``now`` (so router pending time counts), within ``mixed_slack_share`` of the time left to
     ``arrival + TTFT`` (*ours*: the server queues by TTFT deadline, so later and tighter prompts jump ahead
     of an admitted one, and each chunk is sized by the batch's tightest slack, often below the TPOT limit
     the estimate assumes; admitting to the last millisecond makes admitted prompts miss in the queue).
     The share applies to a busy server of a full fleet only: an empty server, or any server while one of
     its role is idle, may fill the whole slack (held back, the request would only scale up one more);
   - second token: the first-token estimate plus one host-TPOT iteration within ``TTFT + TPOT``.
   Disaggregated decode servers do no prefill: only batch, KV and TPOT apply. Prefill servers (a shared
   pool, *ours*) take the most loaded one whose queued prefill still finishes within ``prefill_slack_share``
   (0.5) of the time left to the TTFT deadline (the queue ahead: prompts of the request's own and tighter
   tiers, plus ``prefill_looser_weight`` (1.0) of the looser ones, which EDF runs after it), and early
   enough that the KV hand-off and one decode iteration still meet the second token's deadline (``TTFT +
   TPOT``): the pool runs earliest deadline first, so later and tighter requests jump the queue, and a queue
   packed to the last millisecond misses (measured, Azure conversation, 32 x H100, 120 s at 290 req/s:
   attainment 85.3% with the whole slack, 99.7% with half). *Ours*, ``prefill_edf_admission`` (off; the
   ``polyserve-edf-prefill`` variant): the queue ahead is read in deadline order instead, so a tight prompt
   waits only for prompts due before it, and each prompt due after it must keep its share and a decode bank
   (``prefill_decode_bank``; ``_edf_admits``), prefill counted by an envelope never below the latency model.
   *Ours*, ``fair_prefill``: the shared pool gives way to a tighter tier that has lost a larger share of its
   requests than the prompt's own tier (``fleet.outcomes``, as ``fair_promotion``): while such a tier's
   prompts wait in the router, a looser prompt waits too; and a server admits a looser prompt only if it
   could still admit, after it, a prompt of that tier of its recent mean length. Without it, looser prompts
   admitted against their long TTFTs pack the queues, and a tight prompt, which EDF would run first, cannot
   enter without pushing a queued prompt past its margin (code trace, 600 req/s: t20 lost 21.6% of its
   requests while the other tiers attained 99.6-100%). Only while no server that could become a prefill
   server is idle: the pool is zero-sum only then.
   *Ours*, ``adaptive_split``: disaggregated prefill and decode servers share one idle pool, so an idle
   server becomes a prefill or a decode server as demand asks; once the pool is empty, the rebalancer
   (``tick``) also moves servers between the prefill pool and the decode tiers by measured demand.
   *Ours*, ``rebalance_backlog``: the rebalancer's demand of a tier is its arrival rate times the server-seconds
   a request costs, plus the requests waiting for it in the router in servers' worth of seats: the rate
   estimate lags and runs low, and a queue is demand whatever the estimate says.
4. **Scale-down** (``tick``): every ``scale_down_period_s``, each active server that has been empty for
   ``scale_down_hysteresis_s`` goes back to the idle pool. The gradient is what empties them.

Ablations (registered as separate names): ``promotion=False``, ``gradient=False`` (least loaded feasible
server instead of most loaded), ``wait_aware=False`` (the first-token check ignores the queue ahead and
the time already spent pending), ``dynamic_chunking=False`` (vLLM's static token budget on the servers).

Decision cost: the candidate walk uses the ledger's load buckets from the top (``LoadIndex``), so a decision
looks at a handful of servers whatever the fleet size; ``benchmarks/route_cost.py`` measures it.
"""

from __future__ import annotations

import math
import random
from bisect import bisect_right
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, fields

from polyserve.core.errors import ConfigError
from polyserve.core.fleet import FleetState, Phase, RequestInfo, RoutingDecision, ScaleAction, ServerState
from polyserve.policy.base import ROUTERS, RouterBase
from polyserve.policy.cost import LinearCost, fit_cost, fit_prefill_envelope
from polyserve.policy.overload import LostCauseTest


@dataclass(frozen=True)
class PolyServeOptions:
    promotion: bool = True
    promote_before_scale_up: bool = False  # True: the paper's ladder order (promotion before scale-up)
    protect_host_tier: bool = True  # never promote into a tier whose own requests are pending (ours)
    promotion_reserve: int = 4  # seats a promoted request must leave free for the host tier's own requests
    # never promote into a tier that has lost a larger share of its own requests than the promoted request's
    # tier over the last 30 s (``fleet.outcomes``: sheds and lost causes); see the module docstring (ours).
    # Measured (polyserve compare, 150 s probes, 50 s warm-up, 3 seeds, tail-bounded req/s, off -> on):
    # co-located: conversation 323.8 -> 324.7, code trace 583.1 -> 597.6, arXiv lengths 199.8 -> 204.7,
    # roofline 550.8 -> 547.4 (one bisection step on seed 0); disaggregated: 305.3 -> 305.3, 575.9 -> 574.1,
    # 192.6 -> 190.5, 436.4 -> 436.4 (docs/results.md)
    fair_promotion: bool = True
    # disaggregated (ours): the shared prefill pool gives way to a tighter tier that has lost a larger share of
    # its own requests over the last 30 s than a prompt's tier (``fleet.outcomes``, as fair_promotion): while
    # such a tier has prompts waiting in the router, the looser prompt waits too (``_worse_off_waiting``); and
    # a prefill server admits it only if it could still admit, after it, a prompt of each such tier of that
    # tier's recent mean length arriving now (``_reserve_admits``). Why: a looser prompt, admitted against its
    # long TTFT, packs a shared queue that a later tight prompt cannot enter (EDF runs it first, but every
    # prompt behind it must keep its margin). Measured (code trace, disaggregated, seed 0, 150 s, from 50 s;
    # t20 / t30 / t50 / t100 attained): default admission at 600 req/s, 77.9 / 100 / 99.6 / 100% without it,
    # 85.8 / 100 / 99.8 / 96.3% with the reserve alone, 86.4 / 90.1 / 93.6 / 96.2% with the wait alone,
    # 96.3 / 97.9 / 98.3 / 97.7% with both; polyserve-edf-prefill at 640 req/s, 83.3 / 100 / 100 / 100%
    # without it, 87.7 / 90.7 / 100 / 100 reserve, 88.3 / 90.6 / 90.3 / 92.9 wait, 89.5 / 93.3 / 90.6 / 90.3
    # both. Only on a full pool: with a server idle that could prefill, a tight prompt that finds no room scales
    # it up (code trace replayed at 315 req/s, scaling on: 10.40 attained per instance-second with the rule on
    # an idle pool too, 11.76 with this gate, 11.85 without the rule; attainment 99.9 / 99.9 / 99.4%)
    fair_prefill: bool = True
    gradient: bool = True
    wait_aware: bool = True
    dynamic_chunking: bool = True
    # share of the remaining TTFT slack a prefill server's queue may fill: EDF lets later, tighter requests
    # jump the queue, so what is admitted behind it must leave room for them (ours)
    prefill_slack_share: float = 0.5
    # the queue ahead of a new prompt on a prefill server: its own and tighter tiers' prompts in full, looser
    # tiers' at this weight (EDF runs the new prompt before them; 1.0 keeps every queued deadline protected).
    # Measured (ours; disaggregated, 150 s probes, 50 s warm-up, tail-bounded): 0.5 gave, on seed 0,
    # conversation 304.8 -> 310.3 req/s and code trace 578.0 -> 583.4, but over 3 seeds the conversation mean
    # moved 305.3 -> 306.3 (310.3 / 305.0 / 303.5) and the code trace's 575.9 -> 579.5, inside the seed spread,
    # so the default stays 1.0; 0 (the pure EDF count: queued looser prompts unprotected) collapses to 48.5
    # and 38.8 req/s
    prefill_looser_weight: float = 1.0
    # disaggregated (ours; registered as polyserve-edf-prefill): the prefill admission test reads the server's
    # queue in deadline order (EDF): the new prompt waits only for prompts due before it, and every prompt
    # due after it must still end within prefill_slack_share of the time left to its own deadline; prefill
    # is counted by an envelope never below the latency model, and each deadline pays a busy server's
    # iteration granularity. Off by default, measured (polyserve compare, disaggregated, 150 s probes, 50 s
    # warm-up, tail-bounded req/s, 3 seeds; docs/results.md), with prefill_decode_bank 0.2: code trace
    # 575.9 -> 599.3 (overall 621.0 -> 675.5), Azure conversation 305.3 -> 300.7, arXiv lengths
    # 192.6 -> 181.8, roofline model 436.4 -> 400.3; with fair_promotion (both rows rerun): code 574.1 vs
    # 611.4, conversation 305.3 vs 302.6, arXiv 190.5 vs 181.3, roofline 436.4 vs 400.3. As first shipped
    # (no bank, envelope or granularity):
    # 604.8, 296.1, 70.2 and 45.9: repeated jumps held a looser prompt at the share of its shrinking time
    # left, so its first token crept to its deadline and its long decode had no banked slack (the bank);
    # queues packed to the least-squares surrogate met its 14% underestimate of the roofline's prefill (the
    # envelope), and a t20 prompt behind full 298 ms iterations missed (the granularity)
    # False: the whole queue, looser prompts at prefill_looser_weight, counts ahead of the new prompt
    prefill_edf_admission: bool = False
    # with prefill_edf_admission (ours): every prompt, queued or new, must keep a decode bank between its
    # first token and its TTFT deadline, this fraction of its tier's TPOT times the tier's learned mean
    # output (at most 1 - prefill_slack_share of its TTFT; the KV hand-off is paid from it): repeated jumps
    # may no longer hold a long-output prompt's first token at its deadline, where its later tokens miss
    prefill_decode_bank: float = 0.0
    # co-located: the share of the time left to the TTFT deadline the first-token estimate may fill (ours;
    # see the module docstring, step 3). Measured (co-located, 150 s probes, 50 s warm-up, seed 0,
    # tail-bounded req/s; shares 1.0 / 0.8 / 0.6 / 0.5 / 0.4 / 0.35 / 0.3 / 0.25 / 0.2): Azure conversation
    # 318.7 / 324.2 / 324.2 / 324.2 / 329.8 / 329.8 / 324.2 / 321.5 / 315.9; code trace 541.9 / 546.5 / 551.1 /
    # 556.5 / 561.9 / 567.2 / 588.8 / 599.6 / -; arXiv lengths 199.1 at 1.0, 201.0 at 0.4 and 0.3; roofline
    # model, conversation, seed 1: 504.0 at 1.0, 525.8 at 0.8, 546.8 at 0.4 and 0.3. One value for every
    # workload: 0.3 has the largest mean gain over the three traces (the code trace keeps gaining below it,
    # the conversation trace loses). That sweep ran before the empty-server rule; over 3 seeds with it
    # (docs/results.md), 1.0 -> 0.3: conversation 317.3 -> 322.0, code 541.7 -> 584.9, arXiv 200.4 -> 199.2,
    # roofline 519.2 -> 545.7 req/s, p99 TTFT of all requests down 28-63%; autoscaled attained requests per
    # instance-second down 6-13% (a request held for a quieter server also scales up one more). Applied only
    # on a full fleet (no idle server of the role; since 7d02e92), 3 seeds: 322.0 -> 323.8, 584.9 -> 583.1,
    # 199.2 -> 199.8, 545.7 -> 550.8 req/s, and autoscaled back to the level before the share (conversation
    # 7.62 -> 8.26, code 9.58 -> 11.13, arXiv 4.46 -> 4.75, roofline 11.27 -> 12.83)
    mixed_slack_share: float = 0.3
    tpot_headroom: float = 0.95  # fraction of the host TPOT a predicted decode iteration may use
    kv_headroom: float = 0.95  # fraction of KV capacity the predicted peak may use
    min_chunk: int = 16  # a server that cannot sustain a prefill chunk this large cannot take new prompts
    scale_down_period_s: float = 1.0
    scale_down_hysteresis_s: float = 1.0
    min_servers_per_tier: int = 0
    # disaggregated decode servers only: the share of a tier's TTFT slack, spread over its mean output, that a
    # decode iteration may add to the TPOT (``tier_budget``). Off; measured (code trace, 150 s probes, 50 s
    # warm-up, tail-bounded req/s, 75% initial prefill share): seed 0, 615.9 at 0, 632.1 at 0.1, 643.0 at 0.2,
    # 615.9 at 0.3, 594.2 at 0.4; 0.2 on seeds 0 / 1 / 2: 643.0 / 612.3 / 613.3 against 615.9 / 623.1 / 607.8
    # (mean 622.8 vs 615.6, inside the seed spread; overall goodput 640.9 both: it buys no capacity, the prefill
    # pool binds). Co-located (where it applied too until it was restricted), seed 0: 599.6 at 0, 588.8 / 578.0
    # / 583.4 / 583.4 at 0.1 / 0.2 / 0.3 / 0.5: the dynamic chunker already spends the bank there
    bank_fraction: float = 0.0
    rebalance: bool = True  # move servers between tiers by measured demand when the idle pool is empty
    rebalance_window_s: float = 30.0  # arrival-rate window of the demand estimate
    rebalance_margin: float = 0.75  # servers a donor must have above, and a receiver below, its target
    rebalance_reserve_s: float = 120.0  # how long a server freed by a rebalance is held for its receiver
    # disaggregated: servers move between the prefill pool and the decode tiers by demand (ours)
    adaptive_split: bool = True
    # rebalance: the busy share a prefill server is sized for (TTFT queueing); measured (Azure conversation,
    # 32 x H100, disaggregated, 150 s probes, seed 0): tail-bounded goodput 275.6 req/s at 0.6, 280.3 at 0.9
    prefill_target_util: float = 0.9
    # rebalance: a tier's router backlog counts as demand, in servers' worth of its seats (ours); measured
    # (150 s probes, 50 s warm-up, seed 0, tail-bounded): conversation disaggregated 287.4 -> 289.8 req/s,
    # co-located 315.9 -> 318.7; code trace disaggregated 560.4 -> 578.0, co-located 541.9 both
    rebalance_backlog: bool = True

    def __post_init__(self) -> None:
        if not 0.0 <= self.prefill_looser_weight <= 1.0:
            raise ConfigError(f"polyserve option prefill_looser_weight={self.prefill_looser_weight}: allowed 0 to 1 "
                              "(the share of a prefill server's queued looser-tier prompts counted ahead)")
        if not (self.prefill_decode_bank >= 0.0 and math.isfinite(self.prefill_decode_bank)):
            raise ConfigError(f"polyserve option prefill_decode_bank={self.prefill_decode_bank}: allowed a finite "
                              "number >= 0 (the fraction of a tier's TPOT x mean output a prompt keeps before "
                              "its TTFT deadline)")
        for name in ("mixed_slack_share", "prefill_slack_share"):
            v = getattr(self, name)
            if not 0.0 < v <= 1.0:
                raise ConfigError(f"polyserve option {name}={v}: allowed above 0, at most 1 (the share of the time "
                                  "left to the TTFT deadline a server's queue may fill)")


_EdfView = tuple[list[float], list[int], list[float], list[float]]  # deadlines, prefix tokens, alpha, beta
PREFILL = -1  # the prefill pool's key where tier indices are used (rebalancing, reservations)


class PolyServeRouter(RouterBase):
    name = "polyserve"
    tiered = True
    needs_tick = True  # periodic scale-down and rebalancing

    def __init__(
        self, rng: random.Random | None = None, options: PolyServeOptions | None = None, name: str = ""
    ) -> None:
        self.o = options or PolyServeOptions()
        if name:
            self.name = name
        self._cost: LinearCost | None = None
        self._prefill_cost: LinearCost | None = None  # the EDF admission's prefill envelope (``cost``)
        self._cost_model: object | None = None
        self._lost_test: LostCauseTest | None = None
        self._next_scale_down = 0.0
        # demand estimate: first-routing times and prompt lengths per tier, over a sliding window
        self._seen: dict[int, float] = {}
        self._arrivals: list[deque[tuple[float, int]]] = []
        self._arrival_tokens: list[int] = []  # prompt tokens in each tier's ``_arrivals`` window
        # fair_prefill: the tighter tiers the request being routed must leave room for, as (tier, mean prompt,
        # TTFT s), for the (request id, now) in ``_reserve_key``; None until ``_reserve_admits`` works it out,
        # reset by every ``route`` call (outcomes change between calls)
        self._reserve_for: list[tuple[int, int, float]] | None = None
        self._reserve_key: tuple[int, float] | None = None
        self._draining: dict[int, int] = {}  # server being drained for rebalancing -> receiving tier
        self._reserved: tuple[int, float] | None = None  # (tier, until): next idle server is for that tier
        # prefill servers' EDF queues (``_edf_view``): sid -> (server, its prefill_version, view)
        self._edf_views: dict[int, tuple[ServerState, int, _EdfView]] = {}
        self.rebalances = 0
        self.scheduler_for = {
            "mixed": ("polyserve-dynamic", {}) if self.o.dynamic_chunking else ("fcfs", {}),
            "prefill": ("edf", {}),
            "decode": ("polyserve-dynamic", {}) if self.o.dynamic_chunking else ("fcfs", {}),
        }

    def describe(self) -> dict[str, object]:
        d = dict(self.o.__dict__)
        if self._cost is not None:
            d["cost_surrogate"] = {
                "b0_ms": self._cost.b0 * 1e3,
                "b1_us": self._cost.b1 * 1e6,
                "b2_us": self._cost.b2 * 1e6,
                "b3_us": self._cost.b3 * 1e6,
                "max_rel_error": round(self._cost.max_rel_error, 4),
            }
        return d

    # ---- helpers -------------------------------------------------------------------------------------------
    def tier_budget(self, fleet: FleetState, tier: int, role: str) -> float:
        """Seconds a decode iteration of a tier's server may take: its TPOT, plus, on a disaggregated decode
        server (``role`` "decode"), ``bank_fraction`` of the slack its requests bank by a first token before the
        TTFT deadline, spread over the tier's mean output (the deadline SLO is cumulative, so banked slack can
        pay for slower tokens later). Not on a co-located server: its scheduler already spends the bank, on
        larger prefill chunks (``DynamicChunkScheduler`` sizes each chunk to the batch's tightest deadline), so
        admission spending it again counts it twice (measured in ``PolyServeOptions``). Failure mode: the
        spread is over the *mean* output; a request much longer than its tier's mean runs out of bank on a
        server packed to this budget, and its later tokens are late."""
        t = fleet.tiers[tier]
        base = t.tpot_ms / 1e3
        if self.o.bank_fraction <= 0 or role != "decode":
            return base
        p = self._mean_prompt(tier) or 1000.0
        d = max(1.0, fleet.expected_output(tier))
        return base + self.o.bank_fraction * t.ttft_slo_ms(int(p)) / 1e3 / d

    def cost(self, fleet: FleetState) -> LinearCost:
        if self._cost is None or self._cost_model is not fleet.model:
            self._cost = fit_cost(fleet.model, fleet.config.max_num_seqs, fleet.config.max_num_batched_tokens)
            self._cost_model = fleet.model
            self._prefill_cost = (
                fit_prefill_envelope(fleet.model, fleet.config.max_num_batched_tokens)
                if self.o.prefill_edf_admission else None
            )
            self._edf_views.clear()  # built with the old model's envelope
            self._lost_test = LostCauseTest(fleet.model, fleet.config.max_num_seqs,
                                            fleet.config.max_num_batched_tokens, self._cost)
        return self._cost

    def _edf_admits(self, s: ServerState, req: RequestInfo, fleet: FleetState, now: float) -> bool:
        """Can a prefill server, which runs its queue earliest TTFT deadline first, take ``req``?

        In deadline order, the prompts due before ``req`` run ahead of it: their work and its own must fit
        ``prefill_slack_share`` of the time left to its deadline (tighter prompts that arrive later will jump
        it too) and leave its decode bank (``_decode_bank``: the KV hand-off, or slack for its later tokens if
        more) before its deadline. Every prompt due after it runs later by its work, and must still end within
        the same share of the time left to its own deadline, its own bank kept: the share that admitted it
        stays its margin. That margin shrinks as the prompt waits, so repeated jumps can hold its first token
        ever nearer its deadline; the bank stops that short of it (measured cost and gain: the options'
        comments in ``PolyServeOptions``). Prefill time is the envelope ``fit_prefill_envelope``, never below
        the latency model's: a queue packed to its prediction has no other margin. Each deadline also pays
        the iteration granularity of a busy server (the iteration in flight, and the fill of a prompt's last
        iteration by prompts due after it: ``_grain``, at most one iteration's fixed cost and two chunks). The
        delay ``req`` causes the prompts behind it is counted as its prefill alone, which overstates the true
        shift by at most one iteration's fixed cost (``b0``): the price of a test that costs a bisection
        instead of a walk of the queue. Failure mode: the ledger counts a prompt whole until its first token,
        so a partly prefilled head is overcounted (conservative, never optimistic)."""
        c = self._prefill_cost
        assert c is not None  # set by ``cost`` when prefill_edf_admission is on
        chunk = fleet.config.max_num_batched_tokens
        deadlines, prefix, alpha, beta = self._edf_view(s, fleet, c)
        pos = bisect_right(deadlines, req.ttft_deadline)
        w = req.input_tokens
        own = c.prefill_seconds(w, chunk)
        share = self.o.prefill_slack_share
        if alpha[pos] - share * now < own or beta[pos] - now < own:
            return False
        eta = c.prefill_seconds(prefix[pos] + w, chunk)
        left = req.ttft_deadline - now
        grain = self._grain(c, prefix[-1], prefix[-1] - prefix[pos], chunk)
        bank = self._decode_bank(fleet, req, w, self._tier_banks(fleet))
        return eta <= share * left and eta + grain + bank <= left

    def _mean_prompt(self, tier: int) -> float:
        """Mean prompt tokens of ``tier``'s arrivals in the demand window; 0 with none seen."""
        q = self._arrivals[tier] if self._arrivals else None
        return self._arrival_tokens[tier] / len(q) if q else 0.0

    def _worse_off(
        self, req: RequestInfo, fleet: FleetState, now: float, among: Callable[[int], bool]
    ) -> Iterator[int]:
        """Tighter tiers than ``req``'s, tightest first, that pass ``among`` and have lost a larger share of their
        requests over the outcome window than ``req``'s tier (``fair_prefill``). ``among`` is tested first:
        it is the cheap test, and ``req``'s own share is read only once one passes.

        Nothing while a server that could become a prefill server is idle: the pool is then not zero-sum (a
        tighter prompt that finds no room scales one up), and giving way would only make the looser prompt
        scale one up itself or wait (measured: the code trace replayed at 315 req/s with scaling on attained
        99.9% at 10.40 attained requests per instance-second with the rule on an idle pool too, 99.4% at 11.85
        without the rule). An idle server that a rebalance holds for another pool does not count (``_idle``
        would not give it): counted, fair_prefill went off for most of each rebalance (arXiv lengths, 190
        req/s, seed 0: 93.0% attained instead of 96.2%, t50 81.1% with 18.9% of its requests late)."""
        if self._can_scale_up(fleet, "prefill", now, PREFILL):
            return
        outcomes = fleet.outcomes
        guest = -1.0
        for h in range(req.tier):
            if not among(h):
                continue
            if guest < 0:
                guest = outcomes.miss_share(req.tier, now)
            if outcomes.miss_share(h, now) > guest:
                yield h

    def _worse_off_waiting(self, req: RequestInfo, fleet: FleetState, now: float) -> int | None:
        """A tighter tier with prompts waiting in the router that has lost a larger share of its requests than
        ``req``'s tier over the outcome window (``fair_prefill``), or None."""
        return next(self._worse_off(req, fleet, now, lambda h: bool(fleet.pending[h])), None)

    def _reserve_admits(self, s: ServerState, req: RequestInfo, fleet: FleetState, now: float) -> bool:
        """``fair_prefill``: with ``req`` admitted, could prefill server ``s`` still admit a prompt of each tighter
        tier that has lost a larger share of its requests than ``req``'s tier (over the outcome window),
        of that tier's recent mean length, arriving now? True when no tighter tier is worse off.

        The hypothetical prompt ``x`` is judged by the server's own admission rule: under
        ``prefill_edf_admission``, the prompts due before it and its own work within ``prefill_slack_share``
        of its TTFT, and every prompt due after it (``req`` included) keeping room for it; otherwise the queue
        ahead of it (its own and tighter tiers' prompts, looser ones at ``prefill_looser_weight``, ``req``
        among them) within that share. Failure mode: the reserve is one mean prompt, not a burst; a tighter
        tier whose prompts vary widely in length is protected only on average.

        Which tiers to reserve for depends on the request and the fleet's outcomes, not on the server: it is
        worked out once per ``route`` call (``_reserve_for``, reset there) and reused for every server the
        walk tries (measured: 2.7x the simulator's wall time without the reuse, code trace at 600 req/s)."""
        return all(self._fits_reserve(s, req, fleet, now, h, px, ttft)
                   for h, px, ttft in self._reserve_tiers(req, fleet, now))

    def _reserve_tiers(self, req: RequestInfo, fleet: FleetState, now: float) -> list[tuple[int, int, float]]:
        """(tier, mean prompt, TTFT s) of each tighter tier ``req`` must leave room for; cached per route call."""
        key = (req.rid, now)
        if self._reserve_for is None or self._reserve_key != key:
            self._reserve_key = key
            self._reserve_for = []
            for h in self._worse_off(req, fleet, now, lambda h: bool(self._arrivals and self._arrivals[h])):
                px = max(1, round(self._mean_prompt(h)))
                self._reserve_for.append((h, px, fleet.tiers[h].ttft_slo_ms(px) / 1e3))
        return self._reserve_for

    def _no_reserve_anywhere(self, req: RequestInfo, fleet: FleetState, now: float, lost: bool) -> bool:
        """True when ``_reserve_admits`` would refuse ``req`` on every prefill server, known without the walk: under
        the whole-queue test at ``prefill_looser_weight`` 1.0 a server's room for a reserved prompt depends only
        on its queued prompt tokens, so the server with the fewest decides for all. Only a shortcut (the same
        decisions; a pending request is retried against the whole pool on every completion, and under overload
        most of those walks end in this refusal)."""
        o = self.o
        if lost or not o.fair_prefill or o.prefill_edf_admission or o.prefill_looser_weight != 1.0:
            return False
        idx = fleet.index(None, "prefill")
        if idx.size == 0 or not self._reserve_tiers(req, fleet, now):  # nothing to reserve: no walk for the min
            return False
        servers = fleet.servers
        fewest = min((servers[sid] for sid in idx.ascending() if servers[sid].routable(now)),
                     key=lambda x: x.prefill_tokens, default=None)
        return fewest is not None and not self._reserve_admits(fewest, req, fleet, now)

    def _fits_reserve(
        self, s: ServerState, req: RequestInfo, fleet: FleetState, now: float, h: int, px: int, ttft: float
    ) -> bool:
        """Would a prompt of tier ``h`` and ``px`` tokens, arriving now with TTFT ``ttft`` seconds, still pass
        ``s``'s admission once ``req`` is queued (``_reserve_admits``)?"""
        o = self.o
        dx = now + ttft
        chunk = fleet.config.max_num_batched_tokens
        share = o.prefill_slack_share
        w = req.input_tokens
        if o.prefill_edf_admission:
            c = self._prefill_cost
            assert c is not None
            deadlines, prefix, alpha, beta = self._edf_view(s, fleet, c)
            pos = bisect_right(deadlines, dx)
            before = req.ttft_deadline <= dx
            ex = c.prefill_seconds(prefix[pos] + (w if before else 0) + px, chunk)
            if ex > share * ttft:
                return False
            rx = c.prefill_seconds(px, chunk)
            # every prompt due after x, and req if it is, must keep room for x (and for req, if behind req)
            room = rx + (c.prefill_seconds(w, chunk) if before else 0.0)
            if alpha[pos] - share * now < room or beta[pos] - now < room:
                return False
            if before:
                return True
            # req runs after x: it and every prompt due after it must keep room for both
            rpos = bisect_right(deadlines, req.ttft_deadline)
            room += c.prefill_seconds(w, chunk)
            if alpha[rpos] - share * now < room or beta[rpos] - now < room:
                return False
            eta = c.prefill_seconds(prefix[rpos] + w, chunk) + rx
            return eta <= share * (req.ttft_deadline - now)
        c = self.cost(fleet)
        own = sum(s.prefill_by_tier[: h + 1])  # x's tier and tighter ones run before x in full; req is looser
        ahead = own + int(o.prefill_looser_weight * (s.prefill_tokens - own + w))
        return c.prefill_seconds(ahead + px, chunk) <= share * ttft

    @staticmethod
    def _grain(c: LinearCost, queued: int, behind: int, chunk: int) -> float:
        """Seconds a prompt's first token may come after ``prefill_seconds`` of the work ahead of it on a busy
        prefill server, by iteration granularity: the iteration in flight may hold prompts due after it (the
        ledger counts those due before it already), and prompts due after it fill its last iteration; each at
        most a chunk of the ``behind`` tokens, plus one iteration's fixed cost for the misaligned chunks. At
        a full chunk under the roofline model that is 2 x 298 ms, more than a t20 TTFT; 0 on an idle server."""
        return c.b0 + 2 * c.b1 * min(behind, chunk) if queued else 0.0

    def _tier_banks(self, fleet: FleetState) -> list[float]:
        """Per tier, ``prefill_decode_bank`` x its TPOT x its learned mean output, in seconds (``_decode_bank``
        before its cap); empty when the option is off."""
        k = self.o.prefill_decode_bank
        if k <= 0:
            return []
        return [k * t.tpot_ms / 1e3 * fleet.expected_output(i) for i, t in enumerate(fleet.tiers)]

    def _decode_bank(self, fleet: FleetState, info: RequestInfo, tokens: int, banks: list[float]) -> float:
        """Seconds a prompt must keep between its first token and its TTFT deadline on a prefill server: the
        KV hand-off of its ``tokens`` (and the first token), or, if more, ``prefill_decode_bank`` x its tier's
        TPOT x the tier's learned mean output, capped at ``1 - prefill_slack_share`` of its TTFT (a bank
        larger than the slack the share leaves would refuse it even on an empty server). The deadline SLO is
        cumulative: slack left at the first token pays for slower later tokens (decode batches grow, KV
        transfers queue); a long output needs more of it. ``banks``: ``_tier_banks(fleet)``."""
        handoff = fleet.config.kv_transfer_s_per_token * (tokens + 1)
        if not banks:
            return handoff
        return max(handoff, min(banks[info.tier], (1.0 - self.o.prefill_slack_share) * info.ttft_slo))

    def _edf_view(self, s: ServerState, fleet: FleetState, c: LinearCost) -> _EdfView:
        """A prefill server's EDF queue as (deadlines, prefix token sums, alpha, beta), rebuilt in O(queue)
        only when the queue changes (``prefill_version``). A queued prompt ``j`` ends after ``E_j =
        prefill_seconds(prefix[j + 1])`` and may be pushed back by ``x`` seconds while ``E_j + x <= share *
        (d_j - now)`` and ``E_j + x <= d_j - now - bank_j - grain_j`` (``_decode_bank``, ``_grain``: a new
        prompt ahead of ``j`` adds no tokens behind it): with ``alpha[i]`` the least ``share * d_j - E_j`` and
        ``beta[i]`` the least ``d_j - bank_j - grain_j - E_j`` over ``j >= i``, the room ahead
        of position ``i`` at time ``now`` is ``min(alpha[i] - share * now, beta[i] - now)``, so ``now`` never
        enters the cached part: pending requests are retried on every completion, each against every prefill
        server. Failure mode: a bank follows its tier's learned mean output, read when the view is built, so
        it lags that estimate until the queue next changes."""
        hit = self._edf_views.get(s.sid)
        if hit is not None and hit[0] is s and hit[1] == s.prefill_version:
            return hit[2]
        q = s.prefill_queue
        chunk = fleet.config.max_num_batched_tokens
        share = self.o.prefill_slack_share
        n = len(q)
        deadlines = [d for d, _, _ in q]
        prefix = [0] * (n + 1)
        for i, (_, _, t) in enumerate(q):
            prefix[i + 1] = prefix[i] + t
        alpha = [math.inf] * (n + 1)
        beta = [math.inf] * (n + 1)
        a = b = math.inf
        entries, banks = fleet.entries, self._tier_banks(fleet)
        for i in range(n - 1, -1, -1):
            d, rid, t = q[i]
            end = c.prefill_seconds(prefix[i + 1], chunk)
            a = min(a, share * d - end)
            bank = self._decode_bank(fleet, entries[rid].info, t, banks)
            b = min(b, d - bank - self._grain(c, prefix[n], prefix[n] - prefix[i + 1], chunk) - end)
            alpha[i] = a
            beta[i] = b
        view = (deadlines, prefix, alpha, beta)
        self._edf_views[s.sid] = (s, s.prefill_version, view)
        return view

    def _first_token_eta(
        self, s: ServerState, req: RequestInfo, fleet: FleetState, c: LinearCost, host_tpot: float, now: float
    ) -> float:
        """Seconds from ``now`` to this request's first token on ``s``; inf if its prefill cannot progress."""
        cfg = fleet.config
        n = s.num_requests + 1
        kv = s.input_tokens + req.input_tokens
        budget = host_tpot * self.o.tpot_headroom
        chunk = min(c.max_chunk(budget, n, kv), cfg.max_num_batched_tokens - n)
        if chunk < self.o.min_chunk:
            return math.inf
        # servers queue by TTFT deadline (EDF): prompts of looser tiers (later deadlines) wait behind this one
        ahead = sum(s.prefill_by_tier[: req.tier + 1]) if self.o.wait_aware else 0
        iters = math.ceil((ahead + req.input_tokens) / chunk)
        return iters * max(host_tpot, c.iteration(n, kv, chunk))

    def feasible(
        self,
        s: ServerState,
        req: RequestInfo,
        fleet: FleetState,
        host_tpot: float,
        now: float,
        phase: Phase,
        lost_cause: bool = False,
        reserve: int = 0,
    ) -> bool:
        """Can ``s`` take ``req`` and still meet every deadline (see the module docstring, step 3)?

        ``reserve``: seats that must stay free for the host tier's own requests (promotion)."""
        cfg = fleet.config
        o = self.o
        n = s.num_requests + 1 + reserve
        if n > cfg.max_num_seqs:
            return False
        c = self.cost(fleet)
        exp_new = fleet.expected_output(req.tier, req.max_tokens)
        kv_peak = s.input_tokens + s.expected_output + req.input_tokens + exp_new
        if phase == "prefill":
            kv_peak = s.input_tokens + req.input_tokens
        if kv_peak > cfg.kv_capacity_tokens * o.kv_headroom:
            return False
        if phase == "prefill":
            if lost_cause:
                return True
            if o.fair_prefill and not self._reserve_admits(s, req, fleet, now):
                return False
            if o.prefill_edf_admission:
                return self._edf_admits(s, req, fleet, now)
            ahead = s.prefill_tokens
            if o.prefill_looser_weight < 1.0:  # the default 1.0 counts the whole queue: no per-tier sum
                own = sum(s.prefill_by_tier[: req.tier + 1])
                ahead = own + int(o.prefill_looser_weight * (ahead - own))
            eta = c.prefill_seconds(ahead + req.input_tokens, cfg.max_num_batched_tokens)
            if eta > o.prefill_slack_share * (req.ttft_deadline - now):
                return False
            # the second token: the KV hand-off and one decode iteration (at most the TPOT) after the first
            # token, by the deadline arrival + TTFT + TPOT
            xfer = cfg.kv_transfer_s_per_token * (req.input_tokens + 1)
            return now + eta + xfer <= req.ttft_deadline
        if c.decode(n, kv_peak) > host_tpot * o.tpot_headroom:
            return False
        if phase == "decode" or lost_cause:
            return True
        eta = self._first_token_eta(s, req, fleet, c, host_tpot, now)
        # an empty server has no queue to be jumped and no batch to shrink its chunks: the whole slack counts
        # (else a TTFT shorter than an iteration over the share could never be admitted, not even by scale-up).
        # While a server of this role is idle, the whole slack counts too: the share would hold the request
        # for a scale-up, one more server paid for, where the gradient packs it onto a busy one; the share
        # guards the queues of a full fleet (measured, docs/results.md)
        share = o.mixed_slack_share if s.num_requests and not fleet.num_idle(s.role) else 1.0
        if o.wait_aware:
            first, deadline, left = now + eta, req.ttft_deadline, req.ttft_deadline - now
        else:
            first, deadline, left = eta, req.ttft_slo, req.ttft_slo
        if eta > share * left:
            return False
        return first + host_tpot <= deadline + req.tpot_slo

    def _pick(
        self,
        fleet: FleetState,
        tier: int | None,
        role: str,
        req: RequestInfo,
        host_tpot: float,
        now: float,
        phase: Phase,
        lost_cause: bool,
        reserve: int = 0,
    ) -> int | None:
        idx = fleet.index(tier, role)  # type: ignore[arg-type]
        if idx.size == 0:
            return None
        servers = fleet.servers
        below = fleet.config.max_num_seqs
        if phase != "prefill":
            # no server with this many requests passes the TPOT check even with no KV: skip them unseen
            c = self.cost(fleet)
            if c.b2 > 0:
                below = min(below, int((host_tpot * self.o.tpot_headroom - c.b0) / c.b2))
        order = idx.descending(below) if self.o.gradient else idx.ascending()
        for sid in order:
            s = servers[sid]
            if s.routable(now) and self.feasible(s, req, fleet, host_tpot, now, phase, lost_cause, reserve):
                return sid
        return None

    def _lost_cause(self, req: RequestInfo, fleet: FleetState, now: float, phase: Phase) -> bool:
        """True when even an idle server could not produce the first token by its deadline: the driver's
        overload test (``overload.LostCauseTest``), on the router's own cost surrogate."""
        self.cost(fleet)
        assert self._lost_test is not None  # set with the cost surrogate
        return self._lost_test.lost_info(req, now, phase)

    # ---- the ladder ---------------------------------------------------------------------------------------
    def route(self, req: RequestInfo, fleet: FleetState, now: float, phase: Phase) -> RoutingDecision:
        tiers = fleet.tiers
        self._reserve_for = None
        if phase != "decode" and req.rid not in self._seen:
            if not self._arrivals:
                self._arrivals = [deque() for _ in tiers]
                self._arrival_tokens = [0] * len(tiers)
            self._seen[req.rid] = now
            self._arrivals[req.tier].append((now, req.input_tokens))
            self._arrival_tokens[req.tier] += req.input_tokens
        lost = self._lost_cause(req, fleet, now, phase)
        if phase == "prefill":
            if self.o.fair_prefill and not lost:
                h = self._worse_off_waiting(req, fleet, now)
                if h is not None:
                    return RoutingDecision.wait(f"prefill: tier {tiers[h].name} is worse off and waiting")
            sid = None if self._no_reserve_anywhere(req, fleet, now, lost) else self._pick(
                fleet, None, "prefill", req, 0.0, now, phase, lost)
            if sid is not None:
                return RoutingDecision.to(sid, "prefill: most loaded prefill server meeting the TTFT")
            idle = self._idle(fleet, "prefill", now, PREFILL)
            if idle is not None:
                if self._reserved is not None and self._reserved[0] == PREFILL:
                    self._reserved = None
                act = ScaleAction(idle, True, None, "prefill pool full", role=_new_role(fleet, idle, "prefill"))
                return RoutingDecision.to(idle, "prefill: scale up", (act,))
            return RoutingDecision.wait("prefill pool full and no idle server")
        role = "mixed" if phase == "mixed" else "decode"
        t = req.tier
        own_tpot = self.tier_budget(fleet, t, role)
        # (a) own tier
        sid = self._pick(fleet, t, role, req, own_tpot, now, phase, lost)
        if sid is not None:
            return RoutingDecision.to(sid, "own tier")
        # scale-up, then lazy promotion (ours; promote_before_scale_up=True: the paper's order, promotion first).
        # protect_host_tier keeps a tier whose own requests wait from hosting promoted ones (module docstring)
        if self.o.promotion and self.o.promote_before_scale_up:
            sid = self._promote(fleet, req, role, now, phase, lost)
            if sid is not None:
                return self._promoted(fleet, sid)
        idle = self._idle(fleet, role, now, t)
        if idle is not None:
            s = fleet.servers[idle]
            if self.feasible(s, req, fleet, own_tpot, now, phase, lost) or lost:
                if self._reserved is not None and self._reserved[0] == t:
                    self._reserved = None
                act = ScaleAction(idle, True, t, f"tier {tiers[t].name} full", role=_new_role(fleet, idle, role))
                return RoutingDecision.to(idle, "scale up", (act,))
        if self.o.promotion and not self.o.promote_before_scale_up:
            sid = self._promote(fleet, req, role, now, phase, lost)
            if sid is not None:
                return self._promoted(fleet, sid)
        # (c') a starved tier (ours): with no server of its own and none idle, it takes a looser tier's least
        # loaded server whose batch fits this tier's TPOT, instead of waiting for a rebalance that may never
        # come (a fleet with fewer servers than tiers would otherwise starve its tightest tiers)
        if fleet.index(t, role).size == 0:  # type: ignore[arg-type]
            sid = self._starved_take(fleet, req, role, own_tpot, now, phase, lost)
            if sid is not None:
                donor = tiers[fleet.servers[sid].tier].name  # type: ignore[index]
                return RoutingDecision.to(
                    sid, f"tier {tiers[t].name} has no server: took one from {donor}",
                    (ScaleAction(sid, True, t, f"tier {tiers[t].name} starved: from {donor}"),),
                )
        # (d) pending
        why = "lost cause: waiting for batch room" if lost else "no server can meet the deadlines"
        return RoutingDecision.wait(why)

    @staticmethod
    def _promoted(fleet: FleetState, sid: int) -> RoutingDecision:
        host = fleet.servers[sid].tier
        return RoutingDecision.to(sid, f"promoted to tier {fleet.tiers[host].name}", promoted=True)  # type: ignore[index]

    def _starved_take(
        self, fleet: FleetState, req: RequestInfo, role: str, own_tpot: float, now: float, phase: Phase,
        lost: bool,
    ) -> int | None:
        """The least loaded server among looser tiers' tail servers that can take ``req`` under this tier's
        TPOT. A donor may give its last server: its own requests can still be promoted onto it."""
        best: tuple[int, int] | None = None
        servers = fleet.servers
        for h in range(req.tier + 1, len(fleet.tiers)):
            for sid in fleet.index(h, role).ascending():  # type: ignore[arg-type]
                s = servers[sid]
                if s.routable(now):
                    if (best is None or s.num_requests < best[0]) and self.feasible(
                        s, req, fleet, own_tpot, now, phase, lost
                    ):
                        best = (s.num_requests, sid)
                    break  # the tail server only: the gradient keeps it the lightest
        return None if best is None else best[1]

    def _promote(
        self, fleet: FleetState, req: RequestInfo, role: str, now: float, phase: Phase, lost: bool
    ) -> int | None:
        pending = fleet.pending_decode if phase == "decode" else fleet.pending
        fair = self.o.fair_promotion
        if fair:  # a decode tier answers for its decodes' misses only (the prefill pool is shared)
            outcomes = fleet.outcomes
            decode = phase == "decode"
            guest = outcomes.miss_share(req.tier, now, decode)
        for h in range(req.tier - 1, -1, -1):
            if pending[h] and self.o.protect_host_tier:
                continue  # the host tier's own requests are waiting: its seats are theirs (ours)
            if fair and outcomes.miss_share(h, now, decode) > guest:
                continue  # the host tier is losing more of its own requests: its capacity is not spare (ours)
            sid = self._pick(fleet, h, role, req, self.tier_budget(fleet, h, role), now, phase, lost,
                             self.o.promotion_reserve)
            if sid is not None:
                return sid
        return None

    def _idle_roles(self, role: str) -> tuple[str, ...]:
        """The idle servers ``role`` may take: with ``adaptive_split``, prefill and decode share one pool."""
        return ("prefill", "decode") if self.o.adaptive_split and role in ("prefill", "decode") else (role,)

    def _held_back(self, num_idle: int, now: float, tier: int | None) -> bool:
        """Is the last idle server kept for another tier (or pool) that a rebalance freed it for?"""
        r = self._reserved
        return r is not None and tier is not None and r[0] != tier and now < r[1] and num_idle <= 1

    def _can_scale_up(self, fleet: FleetState, role: str, now: float, tier: int | None = None) -> bool:
        """Would ``_idle`` give ``role`` (for ``tier``) a server now? O(1): it counts, it does not list."""
        n = sum(fleet.num_idle(r) for r in self._idle_roles(role))  # type: ignore[arg-type]
        return n > 0 and not self._held_back(n, now, tier)

    def _idle(self, fleet: FleetState, role: str, now: float, tier: int | None = None) -> int | None:
        """An idle server for ``role``; the last one is kept for a tier a rebalance freed it for.

        Disaggregated with ``adaptive_split``: prefill and decode share one idle pool (a server of the same
        role first, else one that changes role), so the prefill/decode split follows demand."""
        roles = self._idle_roles(role)
        # same role first (stable sort keeps server-id order within each group)
        idle = sorted((s.sid for s in fleet.servers if not s.active and s.role in roles),
                      key=lambda sid: fleet.servers[sid].role != role)
        if not idle or self._held_back(len(idle), now, tier):
            return None
        return idle[0]

    # ---- scale-down ---------------------------------------------------------------------------------------
    def tick(self, fleet: FleetState, now: float) -> list[ScaleAction]:
        """Release servers that have been empty for the hysteresis (the gradient drains them)."""
        if now + 1e-12 < self._next_scale_down:
            return []
        self._next_scale_down = now + self.o.scale_down_period_s
        out: list[ScaleAction] = []
        keep: dict[tuple[int | None, str], int] = {}
        for s in fleet.servers:
            if s.active:
                keep[(s.tier, s.role)] = keep.get((s.tier, s.role), 0) + 1
        for s in fleet.servers:
            if not s.active or s.num_requests or s.became_empty_at is None:
                continue
            if now - s.became_empty_at < self.o.scale_down_hysteresis_s:
                continue
            key = (s.tier, s.role)
            if keep[key] <= self.o.min_servers_per_tier:
                continue
            keep[key] -= 1
            out.append(ScaleAction(s.sid, False, None, "empty past the hysteresis"))
        if self.o.rebalance:
            out += self._rebalance(fleet, now)
        return out

    # ---- rebalancing (ours) ---------------------------------------------------------------------------------
    def demand(self, fleet: FleetState, now: float, role: str) -> list[float]:
        """Servers each tier needs now: its arrival rate over the window times the server-seconds one request
        costs at the tier's TPOT (the optimal bound's ``1/mu_t`` with the learned prompt and output means).
        The TPOT, not ``tier_budget``: with the decode bank counted here too, the code trace (disaggregated,
        ``bank_fraction`` 0.2, 3 seeds) lost what the bank gained on seed 0 (tail-bounded 643.0 -> 621.3 req/s)."""
        tiers = fleet.tiers
        if not self._arrivals:
            return [0.0] * len(tiers)
        w = self.o.rebalance_window_s
        span = min(w, max(now, 1.0))
        c = self.cost(fleet)
        cap = fleet.config.kv_capacity_tokens * self.o.kv_headroom
        out = []
        for t, q in enumerate(self._arrivals):
            while q and q[0][0] < now - w:
                self._arrival_tokens[t] -= q.popleft()[1]
            if not q:
                out.append(0.0)
                continue
            rate = len(q) / span
            p = self._mean_prompt(t)
            d = fleet.expected_output(t)
            s = tiers[t].tpot_ms / 1e3 * self.o.tpot_headroom
            work = c.b2 * d + c.b3 * (p + d / 2) * d + (c.b1 * p if role == "mixed" else 0.0)
            mu = min((1 - c.b0 / s) / work if work > 0 and s > c.b0 else 0.0, cap / ((p + d / 2) * d * s))
            out.append(rate / mu if mu > 0 else float(fleet.config.max_num_seqs))
        for rid in [r for r, t0 in self._seen.items() if t0 < now - w]:
            del self._seen[rid]
        return out

    def seats(self, fleet: FleetState, tier: int) -> int:
        """Requests one server of ``tier`` can batch within its TPOT (no KV term): at least 1."""
        c = self.cost(fleet)
        s = fleet.tiers[tier].tpot_ms / 1e3 * self.o.tpot_headroom
        n = int((s - c.b0) / c.b2) if c.b2 > 0 else fleet.config.max_num_seqs
        return max(1, min(n, fleet.config.max_num_seqs))

    def prefill_demand(self, fleet: FleetState, now: float) -> float:
        """Prefill servers needed now (disaggregated): prompt tokens per second over the window times the
        prefill cost per token, over ``prefill_target_util`` (a prefill server must keep room for TTFT
        queueing). Call after ``demand``, which trims the arrival window."""
        if not self._arrivals:
            return 0.0
        span = min(self.o.rebalance_window_s, max(now, 1.0))
        c = self.cost(fleet)
        tokens = sum(self._arrival_tokens)
        reqs = sum(len(q) for q in self._arrivals)
        busy = (c.b1 * tokens + c.b0 * reqs / 8) / span  # b0 amortised over batches of a few prompts
        return busy / self.o.prefill_target_util

    def _plan(
        self, fleet: FleetState, now: float, role: str, pool: list[ServerState]
    ) -> tuple[list[float], list[float], list[int]] | None:
        """Demand, target and current allocation per pool of ``role``'s servers ``pool`` (index ``ntiers``: the
        prefill pool, disaggregated with ``adaptive_split``); None when there is no demand yet.

        Demand is ``demand`` plus (``rebalance_backlog``) the tier's router backlog in servers' worth of seats:
        the rate estimate lags and runs low (the learned output mean is biased to short requests early on),
        and a tier whose requests queue in the router needs more servers whatever the estimate says. Targets
        scale the demand to the pool only when it asks for more than there is."""
        ntiers = len(fleet.tiers)
        need = self.demand(fleet, now, role)
        if self.o.rebalance_backlog:
            pend = fleet.pending_decode if role == "decode" else fleet.pending
            for t in range(ntiers):
                if pend[t]:
                    need[t] += len(pend[t]) / self.seats(fleet, t)
        if role == "decode" and self.o.adaptive_split:
            need.append(self.prefill_demand(fleet, now))
        total = sum(need)
        if total <= 0:
            return None
        n = len(pool)
        target = [x * n / total for x in need] if total > n else need
        alloc = [0] * len(need)
        for s in pool:
            if s.active and not s.draining:
                if s.role == "prefill":
                    alloc[ntiers] += 1
                elif s.tier is not None:
                    alloc[s.tier] += 1
        return need, target, alloc

    def _rebalance(self, fleet: FleetState, now: float) -> list[ScaleAction]:
        """With the idle pool empty, drain the tail server of the pool most above its demand so the pool
        most below it can scale up (one move at a time; the gradient keeps the tail server lightly loaded).
        Pools are the tiers; disaggregated with ``adaptive_split``, also the prefill pool (key ``PREFILL``)."""
        for sid in [s for s in self._draining if not fleet.servers[s].active or not fleet.servers[s].draining]:
            self._draining.pop(sid)
        if self._draining or (self._reserved is not None and now < self._reserved[1]):
            return []
        out: list[ScaleAction] = []
        ntiers = len(fleet.tiers)
        for role in ("mixed", "decode"):
            roles = ("decode", "prefill") if role == "decode" and self.o.adaptive_split else (role,)
            pool = [s for s in fleet.servers if s.role in roles]
            if not any(s.role == role for s in pool) or any(not s.active for s in pool):
                continue
            plan = self._plan(fleet, now, role, pool)
            if plan is None:
                continue
            need, target, alloc = plan
            gaps = [target[t] - alloc[t] for t in range(len(alloc))]
            recv = max(range(len(gaps)), key=lambda t: gaps[t])
            donor = min(range(len(gaps)), key=lambda t: gaps[t])
            m = self.o.rebalance_margin
            if gaps[recv] < m or -gaps[donor] < m or alloc[donor] <= max(1, self.o.min_servers_per_tier):
                continue
            idx = fleet.index(None, "prefill") if donor == ntiers else fleet.index(donor, role)  # type: ignore[arg-type]
            tail = next((sid for sid in idx.ascending() if not fleet.servers[sid].draining), None)
            if tail is None:
                continue
            key = PREFILL if recv == ntiers else recv
            self._draining[tail] = key
            # the server this frees is the receiver's (until it takes it, or for a few minutes at most)
            self._reserved = (key, now + self.o.rebalance_reserve_s)
            self.rebalances += 1

            def name(t: int) -> str:
                return "prefill pool" if t == ntiers else f"tier {fleet.tiers[t].name}"

            out.append(ScaleAction(tail, False, None, f"rebalance: {name(donor)} -> {name(recv)} "
                                   f"(demand {need[donor]:.1f} / {need[recv]:.1f})"))
        return out


def _new_role(fleet: FleetState, sid: int, role: str):
    """The role a scale-up gives server ``sid``: None when it keeps its own."""
    return None if fleet.servers[sid].role == role else role


def _factory(name: str, summary: str, **kw: object) -> None:
    def make(rng: random.Random, **options: object) -> PolyServeRouter:
        allowed = [f.name for f in fields(PolyServeOptions)]
        bad = sorted(set(options) - set(allowed))
        if bad:
            raise ConfigError(f"unknown {name} option(s) {', '.join(bad)}; allowed: {', '.join(allowed)}")
        return PolyServeRouter(rng, PolyServeOptions(**{**kw, **options}), name)  # type: ignore[arg-type]

    ROUTERS.add(name, make, summary)


_factory("polyserve", "PolyServe: tiers, most-loaded feasible server (load gradient), lazy promotion, scaling")
_factory("polyserve-no-promotion", "ablation: PolyServe without lazy promotion", promotion=False)
_factory("polyserve-no-gradient", "ablation: PolyServe placing on the least loaded feasible server", gradient=False)
_factory("polyserve-no-wait", "ablation: PolyServe without wait-time awareness", wait_aware=False)
_factory("polyserve-static-chunk", "ablation: PolyServe with vLLM's static chunk budget", dynamic_chunking=False)
_factory("polyserve-promote-first", "variant: the paper's ladder order (promotion before scale-up)",
         promote_before_scale_up=True)
_factory("polyserve-edf-prefill", "variant: disaggregated prefill admission by the EDF queue (tight prompts jump "
         "looser ones that keep their slack share and a decode bank)", prefill_edf_admission=True,
         prefill_decode_bank=0.2)
