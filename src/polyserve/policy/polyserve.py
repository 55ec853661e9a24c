"""The PolyServe router: tiers, the decision ladder, the load gradient, lazy promotion and scale-down.

The algorithm (``../shared/design/polyserve.md`` §2; choices the paper leaves open are marked *ours*):

1. **Tiers.** Requests are binned by TPOT SLO; each tier owns servers; the rest sit in the idle pool.
2. **Ladder** for a new or pending request of tier *t*:
   a. among tier *t*'s servers that can still meet the request's deadlines, the **most loaded** (most
      outstanding requests). Packing the busiest server first builds a load gradient, so the least loaded
      server drains and can be released;
   b. else **promote** (lazily, only now that tier *t* is full): the same choice among a tighter tier's
      servers, judged against the *host* tier's TPOT because a server's batch is bounded by its tightest
      request; the nearest tighter tier is tried first (*ours*: it wastes the least headroom);
   c. else **scale up**: take a server from the idle pool into tier *t*.
   *Ours*: by default (c) is tried before (b), so promotion is the overflow valve of a fleet whose idle pool
   is empty. In the paper's literal order, loose requests fill the tight tier's spare seats, the tight tier's
   own requests then find it full and scale *it* up, and the fleet drifts to the tightest tier's small
   batches (measured: t20 held 28 of 32 servers at 250 req/s). ``promote_before_scale_up=True`` restores
   the literal order;
   d. else **pending**: the driver retries on every completion and tick. Once the request's TTFT can no
      longer be met it is a lost cause (*ours*): shed with the reason if shedding is enabled, else placed
      as soon as a server has *batch* room (TPOT and KV still protected for everyone else), so it
      completes late instead of hanging.
3. **Attainable?** From a linear cost surrogate of the latency model (``cost.py``), in O(1) per server:
   - batch: one more than the server's outstanding requests, at most ``max_num_seqs``;
   - KV at its peak: every outstanding prompt plus its tier's expected output (learned online from finished
     requests, bounded by ``max_tokens``), plus the new one, within ``kv_headroom`` of capacity;
   - TPOT: the decode iteration at that peak batch and KV within ``tpot_headroom`` of the host TPOT;
   - first token (wait-time aware): the prefill work queued ahead plus this prompt, in chunks as large as
     the host TPOT leaves room for next to the peak decode batch (*continuous chunked-prefill prediction*:
     that chunk must be sustainable for the whole prefill, and positive), one host-TPOT iteration each,
     counted from ``now`` (so router pending time counts) against ``arrival + TTFT``;
   - second token: the first-token estimate plus one host-TPOT iteration within ``TTFT + TPOT``.
   Disaggregated decode servers do no prefill: only batch, KV and TPOT apply. Prefill servers (a shared
   pool, *ours*) take the most loaded one whose queued prefill still finishes by the TTFT deadline.
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
from dataclasses import dataclass

from polyserve.core.fleet import FleetState, Phase, RequestInfo, RoutingDecision, ScaleAction, ServerState
from polyserve.policy.base import ROUTERS
from polyserve.policy.cost import LinearCost, fit_cost


@dataclass(frozen=True)
class PolyServeOptions:
    promotion: bool = True
    promote_before_scale_up: bool = False  # the paper's literal ladder order (see route())
    gradient: bool = True
    wait_aware: bool = True
    dynamic_chunking: bool = True
    shed: bool = False  # shed requests whose TTFT can no longer be met (with the reason)
    tpot_headroom: float = 0.95  # fraction of the host TPOT a predicted decode iteration may use
    kv_headroom: float = 0.95  # fraction of KV capacity the predicted peak may use
    min_chunk: int = 16  # a server that cannot sustain a prefill chunk this large cannot take new prompts
    scale_down_period_s: float = 1.0
    scale_down_hysteresis_s: float = 1.0
    min_servers_per_tier: int = 0


class PolyServeRouter:
    name = "polyserve"
    tiered = True

    def __init__(self, rng: random.Random | None = None, options: PolyServeOptions | None = None, name: str = "") -> None:
        self.o = options or PolyServeOptions()
        if name:
            self.name = name
        self._cost: LinearCost | None = None
        self._cost_model: object | None = None
        self._next_scale_down = 0.0
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
    def cost(self, fleet: FleetState) -> LinearCost:
        if self._cost is None or self._cost_model is not fleet.model:
            self._cost = fit_cost(fleet.model, fleet.config.max_num_seqs, fleet.config.max_num_batched_tokens)
            self._cost_model = fleet.model
        return self._cost

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
        ahead = s.prefill_tokens if self.o.wait_aware else 0
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
    ) -> bool:
        """Can ``s`` take ``req`` and still meet every deadline (see the module docstring, step 3)?"""
        cfg = fleet.config
        o = self.o
        n = s.num_requests + 1
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
            eta = c.prefill_seconds(s.prefill_tokens + req.input_tokens, cfg.max_num_batched_tokens)
            return now + eta <= req.ttft_deadline
        if c.decode(n, kv_peak) > host_tpot * o.tpot_headroom:
            return False
        if phase == "decode" or lost_cause:
            return True
        eta = self._first_token_eta(s, req, fleet, c, host_tpot, now)
        if o.wait_aware:
            first = now + eta
            deadline = req.ttft_deadline
        else:
            first = eta
            deadline = req.ttft_slo
        if first > deadline:
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
            if s.routable(now) and self.feasible(s, req, fleet, host_tpot, now, phase, lost_cause):
                return sid
        return None

    def is_lost(self, req: RequestInfo, fleet: FleetState, now: float, phase: Phase) -> bool:
        """For the driver's pending retries: lost causes wait until no attainable request is pending."""
        return self._lost_cause(req, fleet, now, phase)

    def _lost_cause(self, req: RequestInfo, fleet: FleetState, now: float, phase: Phase) -> bool:
        """True when even an idle server could not produce the first token by its deadline."""
        if phase == "decode":
            return False
        c = self.cost(fleet)
        best = c.prefill_seconds(req.input_tokens, fleet.config.max_num_batched_tokens)
        return now + best > req.ttft_deadline

    # ---- the ladder ---------------------------------------------------------------------------------------
    def route(self, req: RequestInfo, fleet: FleetState, now: float, phase: Phase) -> RoutingDecision:
        tiers = fleet.tiers
        lost = self._lost_cause(req, fleet, now, phase)
        if lost and self.o.shed:
            return RoutingDecision("shed", None, "TTFT deadline can no longer be met")
        if phase == "prefill":
            sid = self._pick(fleet, None, "prefill", req, 0.0, now, phase, lost)
            if sid is not None:
                return RoutingDecision.to(sid, "prefill: most loaded prefill server meeting the TTFT")
            idle = self._idle(fleet, "prefill", now)
            if idle is not None:
                return RoutingDecision.to(
                    idle, "prefill: scale up", (ScaleAction(idle, True, None, "prefill pool full"),)
                )
            return RoutingDecision.wait("prefill pool full and no idle server")
        role = "mixed" if phase == "mixed" else "decode"
        t = req.tier
        own_tpot = tiers[t].tpot_ms / 1e3
        # (a) own tier
        sid = self._pick(fleet, t, role, req, own_tpot, now, phase, lost)
        if sid is not None:
            return RoutingDecision.to(sid, "own tier")
        # (b) lazy promotion, then (c) scale-up; by default (ours) scale-up comes first and promotion is the
        # overflow valve once the idle pool is empty: promoting first fills the tight tier's servers with
        # loose requests, so the tight tier's own requests then scale *it* up, at its small batches (measured:
        # with the paper's literal order, t20 grew to 28 of 32 servers at 250 req/s and attainment fell)
        if self.o.promotion and self.o.promote_before_scale_up:
            sid = self._promote(fleet, req, role, now, phase, lost)
            if sid is not None:
                return self._promoted(fleet, sid)
        idle = self._idle(fleet, role, now)
        if idle is not None:
            s = fleet.servers[idle]
            if self.feasible(s, req, fleet, own_tpot, now, phase, lost) or lost:
                return RoutingDecision.to(
                    idle, "scale up", (ScaleAction(idle, True, t, f"tier {tiers[t].name} full"),)
                )
        if self.o.promotion and not self.o.promote_before_scale_up:
            sid = self._promote(fleet, req, role, now, phase, lost)
            if sid is not None:
                return self._promoted(fleet, sid)
        # (d) pending
        why = "lost cause: waiting for batch room" if lost else "no server can meet the deadlines"
        return RoutingDecision.wait(why)

    @staticmethod
    def _promoted(fleet: FleetState, sid: int) -> RoutingDecision:
        host = fleet.servers[sid].tier
        return RoutingDecision.to(sid, f"promoted to tier {fleet.tiers[host].name}", promoted=True)  # type: ignore[index]

    def _promote(
        self, fleet: FleetState, req: RequestInfo, role: str, now: float, phase: Phase, lost: bool
    ) -> int | None:
        tiers = fleet.tiers
        for h in range(req.tier - 1, -1, -1):
            sid = self._pick(fleet, h, role, req, tiers[h].tpot_ms / 1e3, now, phase, lost)
            if sid is not None:
                return sid
        return None

    @staticmethod
    def _idle(fleet: FleetState, role: str, now: float) -> int | None:
        for s in fleet.servers:
            if not s.active and s.role == role:
                return s.sid
        return None

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
        return out


def _factory(name: str, summary: str, **kw: object) -> None:
    def make(rng: random.Random, **options: object) -> PolyServeRouter:
        return PolyServeRouter(rng, PolyServeOptions(**{**kw, **options}), name)  # type: ignore[arg-type]

    ROUTERS.add(name, make, summary)


_factory("polyserve", "PolyServe: tiers, most-loaded feasible server (load gradient), lazy promotion, scaling")
_factory("polyserve-no-promotion", "ablation: PolyServe without lazy promotion", promotion=False)
_factory("polyserve-no-gradient", "ablation: PolyServe placing on the least loaded feasible server", gradient=False)
_factory("polyserve-no-wait", "ablation: PolyServe without wait-time awareness", wait_aware=False)
_factory("polyserve-static-chunk", "ablation: PolyServe with vLLM's static chunk budget", dynamic_chunking=False)
