"""Baseline routers: the paper's (Random, Minimal, CO-Chunk) and stronger ones.

Every baseline runs on the same instance model with vLLM's defaults and has no router-side admission: a
request always goes to some server at once (it pends only while no server of the needed role is routable,
e.g. all cold-starting). Each is as strong as its definition allows:

- ``random``: a uniformly random server (the injected RNG).
- ``minimal``: the server with the smallest predicted iteration time once the request is added (decode batch,
  KV and queued prefill, from the same cost surrogate PolyServe uses).
- ``co-chunk``: co-located chunked prefill with a static token budget, no tiers (the paper's CO-Chunk);
  routes like ``minimal``; ``token_budget`` is swept by ``polyserve compare`` and the best is reported.
  Disaggregated mode has no CO-Chunk (the comparison marks it n/a).
- ``round-robin`` (in ``simple.py``), ``least-outstanding`` (fewest outstanding requests),
  ``power-of-two`` (the less loaded of two random servers, as Ray Serve's default request router),
  ``static-partition`` (PolyServe's binning only: each tier owns a fixed share of the fleet, sized by the
  tier's demand in server units, least outstanding within it), and ``edf-pool`` (one pool, least
  outstanding routing, earliest-deadline-first scheduling inside each engine).
- ``minimal-edf``: ``minimal`` routing with earliest-deadline-first engines (the gain of EDF alone).
- ``slos-serve``: SLOs-Serve-style per-server deadline-aware token allocation behind ``minimal`` routing, no
  tiers: every engine runs PolyServe's own per-server scheduler (EDF queue, each iteration's prefill chunk
  sized to the batch's tightest remaining slack). A simplification of SLOs-Serve (no dynamic-programming
  planner, no burst routing); it gives a baseline the per-server mechanism PolyServe has, so the comparison
  attributes to PolyServe's router only what the router adds.

Every baseline gets the same overload contract (``overload.py``) from the driver as PolyServe.
"""

from __future__ import annotations

import math
import random

from polyserve.core.errors import ConfigError
from polyserve.core.fleet import FleetState, Phase, RequestInfo, RoutingDecision, ScaleAction, ServerState
from polyserve.policy.base import ROUTERS, RouterBase
from polyserve.policy.cost import LinearCost, fit_cost


def _role(phase: Phase) -> str:
    return "mixed" if phase == "mixed" else phase


def _routable(fleet: FleetState, role: str, now: float, tier: int | None = None) -> list[ServerState]:
    return [s for s in fleet.servers if s.role == role and s.tier == tier and s.routable(now)]


class _Untiered(RouterBase):
    tiered = False


class RandomRouter(_Untiered):
    name = "random"

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    def route(self, req: RequestInfo, fleet: FleetState, now: float, phase: Phase) -> RoutingDecision:
        cands = _routable(fleet, _role(phase), now)
        if not cands:
            return RoutingDecision.wait("no routable server")
        return RoutingDecision.to(self.rng.choice(cands).sid, "random")


class MinimalRouter(_Untiered):
    """Smallest predicted iteration time after adding the request."""

    name = "minimal"

    def __init__(self, rng: random.Random | None = None) -> None:
        self._cost: LinearCost | None = None
        self._model: object | None = None

    def predicted(self, s: ServerState, req: RequestInfo, fleet: FleetState, c: LinearCost) -> float:
        n = s.num_requests + 1
        kv = s.input_tokens + req.input_tokens
        prefill = min(s.prefill_tokens + req.input_tokens, fleet.config.max_num_batched_tokens)
        return c.iteration(n, kv, prefill)

    def route(self, req: RequestInfo, fleet: FleetState, now: float, phase: Phase) -> RoutingDecision:
        if self._cost is None or self._model is not fleet.model:
            self._cost = fit_cost(fleet.model, fleet.config.max_num_seqs, fleet.config.max_num_batched_tokens)
            self._model = fleet.model
        c = self._cost
        best: ServerState | None = None
        best_t = math.inf
        for s in fleet.servers:
            if s.role == _role(phase) and s.routable(now):
                t = self.predicted(s, req, fleet, c)
                if t < best_t:
                    best, best_t = s, t
        if best is None:
            return RoutingDecision.wait("no routable server")
        return RoutingDecision.to(best.sid, f"smallest predicted iteration ({best_t * 1e3:.2f} ms)")


class MinimalSchedRouter(MinimalRouter):
    """``minimal`` routing with another engine scheduler on every server (``minimal-edf``, ``slos-serve``)."""

    def __init__(self, rng: random.Random | None, scheduler: str, name: str) -> None:
        super().__init__(rng)
        self.name = name
        choice: dict[str, tuple[str, dict[str, object]]] = {r: (scheduler, {}) for r in ("mixed", "prefill", "decode")}
        if scheduler == "polyserve-dynamic":
            choice["prefill"] = ("edf", {})  # a prefill-only server has no decode slack to protect
        self.scheduler_for = choice


class CoChunkRouter(MinimalRouter):
    name = "co-chunk"

    def __init__(self, rng: random.Random | None = None, token_budget: int = 2048) -> None:
        super().__init__(rng)
        if token_budget < 1:
            raise ConfigError(f"co-chunk token_budget must be >= 1, got {token_budget}")
        self.token_budget = token_budget
        self.scheduler_for = {"mixed": ("fcfs", {"token_budget": token_budget})}

    def describe(self) -> dict[str, object]:
        return {"token_budget": self.token_budget}

    def route(self, req: RequestInfo, fleet: FleetState, now: float, phase: Phase) -> RoutingDecision:
        if phase != "mixed":
            raise ConfigError("co-chunk is a co-located policy; it has no disaggregated mode")
        return super().route(req, fleet, now, phase)


class LeastOutstandingRouter(_Untiered):
    name = "least-outstanding"

    def __init__(self, rng: random.Random | None = None, scheduler: str = "fcfs", name: str = "") -> None:
        if name:
            self.name = name
        if scheduler != "fcfs":
            self.scheduler_for = {r: (scheduler, {}) for r in ("mixed", "prefill", "decode")}

    def route(self, req: RequestInfo, fleet: FleetState, now: float, phase: Phase) -> RoutingDecision:
        servers = fleet.servers
        for sid in fleet.index(None, _role(phase)).ascending():  # type: ignore[arg-type]
            if servers[sid].routable(now):
                return RoutingDecision.to(sid, "fewest outstanding requests")
        return RoutingDecision.wait("no routable server")


class PowerOfTwoRouter(_Untiered):
    name = "power-of-two"

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    def route(self, req: RequestInfo, fleet: FleetState, now: float, phase: Phase) -> RoutingDecision:
        cands = _routable(fleet, _role(phase), now)
        if not cands:
            return RoutingDecision.wait("no routable server")
        if len(cands) == 1:
            return RoutingDecision.to(cands[0].sid, "only server")
        a, b = self.rng.sample(cands, 2)
        pick = a if (a.num_requests, a.sid) <= (b.num_requests, b.sid) else b
        return RoutingDecision.to(pick.sid, "less loaded of two random servers")


class StaticPartitionRouter(RouterBase):
    """Each tier owns a fixed set of servers (binning only: no promotion, no scaling, no admission)."""

    name = "static-partition"
    tiered = True

    def __init__(self, rng: random.Random | None = None, shares: dict[str, float] | None = None) -> None:
        self.shares = shares

    def describe(self) -> dict[str, object]:
        return {"shares": self.shares}

    def initial_actions(self, fleet: FleetState) -> list[ScaleAction]:
        """Partition the decode (or co-located) servers among tiers by share; prefill servers are shared."""
        tiers = fleet.tiers
        if self.shares:
            unknown = set(self.shares) - set(tiers.names)
            if unknown:
                raise ConfigError(f"static-partition shares name unknown tiers: {sorted(unknown)}")
            w = [max(0.0, float(self.shares.get(t.name, 0.0))) for t in tiers]
        else:
            w = tiers.weights()
        total = sum(w) or 1.0
        acts: list[ScaleAction] = []
        pool = [s for s in fleet.servers if s.role != "prefill"]
        quotas = _largest_remainder([x / total for x in w], len(pool))
        k = 0
        for t, q in enumerate(quotas):
            for _ in range(q):
                acts.append(ScaleAction(pool[k].sid, True, t, "static partition"))
                k += 1
        for s in fleet.servers:
            if s.role == "prefill":
                acts.append(ScaleAction(s.sid, True, None, "shared prefill pool"))
        return acts

    def route(self, req: RequestInfo, fleet: FleetState, now: float, phase: Phase) -> RoutingDecision:
        tier = None if phase == "prefill" else req.tier
        servers = fleet.servers
        idx = fleet.index(tier, _role(phase))  # type: ignore[arg-type]
        for sid in idx.ascending():
            if servers[sid].routable(now):
                return RoutingDecision.to(sid, "own partition, fewest outstanding")
        if idx.size == 0 and not any(s.draining for s in servers):
            name = "prefill pool" if tier is None else f"tier {fleet.tiers[tier].name}"
            return RoutingDecision(
                "reject", None, f"static partition gives the {name} no server (fleet too small for its tiers)"
            )
        return RoutingDecision.wait("the tier's partition has no routable server")


def _largest_remainder(fractions: list[float], n: int) -> list[int]:
    """Split ``n`` items by ``fractions`` (summing to 1), every tier with a positive share getting >= 1 if n
    allows."""
    raw = [f * n for f in fractions]
    base = [math.floor(x) for x in raw]
    for i, f in enumerate(fractions):
        if f > 0 and base[i] == 0 and sum(base) < n:
            base[i] = 1
    rest = n - sum(base)
    order = sorted(range(len(raw)), key=lambda i: (-(raw[i] - math.floor(raw[i])), i))
    for i in order[: max(0, rest)]:
        base[i] += 1
    while sum(base) > n:
        i = max(range(len(base)), key=lambda j: (base[j], -j))
        base[i] -= 1
    return base


def _reg(name: str, summary: str, factory, options: tuple[str, ...] = ()) -> None:
    """Register ``factory``; an option it does not take is an error (naming the allowed ones), not ignored."""

    def make(rng, **o):
        bad = sorted(set(o) - set(options))
        if bad:
            allowed = ", ".join(options) or "none"
            raise ConfigError(f"unknown {name} option(s) {', '.join(bad)}; allowed: {allowed}")
        return factory(rng, **o)

    ROUTERS.add(name, make, summary)


_reg("random", "paper baseline: a uniformly random server", lambda rng: RandomRouter(rng))
_reg(
    "minimal",
    "paper baseline: the server with the smallest predicted iteration time",
    lambda rng: MinimalRouter(rng),
)
_reg(
    "co-chunk",
    "paper baseline: co-located chunked prefill, static token budget (swept), no tiers",
    lambda rng, token_budget=2048: CoChunkRouter(rng, int(token_budget)),
    options=("token_budget",),
)
_reg(
    "least-outstanding",
    "the server with the fewest outstanding requests",
    lambda rng: LeastOutstandingRouter(rng),
)
_reg("power-of-two", "the less loaded of two random servers", lambda rng: PowerOfTwoRouter(rng))
_reg(
    "static-partition",
    "tiers own fixed server shares (binning only), fewest outstanding within",
    lambda rng, shares=None: StaticPartitionRouter(rng, shares),  # type: ignore[arg-type]
    options=("shares",),
)
_reg(
    "minimal-edf",
    "minimal routing, earliest-deadline-first scheduling in each engine",
    lambda rng: MinimalSchedRouter(rng, "edf", "minimal-edf"),
)
_reg(
    "slos-serve",
    "SLOs-Serve-style: minimal routing, per-server deadline-aware token allocation (PolyServe's engine scheduler)",
    lambda rng: MinimalSchedRouter(rng, "polyserve-dynamic", "slos-serve"),
)
_reg(
    "edf-pool",
    "one pool, fewest outstanding, earliest-deadline-first scheduling in each engine",
    lambda rng: LeastOutstandingRouter(rng, scheduler="edf", name="edf-pool"),
)
