"""Protocols and registries for the pluggable policy parts: routers, instance schedulers, autoscalers.

Rules every implementation follows (checked by the shared contract tests):
- pure and clock-free: time comes in as ``now`` (float seconds), randomness from an injected
  ``random.Random``; no environment reads;
- decisions are returned, never applied: the driver (simulator or gateway) mutates the ``FleetState``;
- every decision carries a human-readable ``reason``.

This package imports only ``polyserve.core`` and the standard library.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Literal, Protocol, runtime_checkable

from polyserve.core.fleet import FleetState, Phase, RequestInfo, RoutingDecision, ScaleAction
from polyserve.core.registry import Registry

SchedulerChoice = Mapping[str, tuple[str, dict[str, object]]]  # role -> (instance scheduler name, options)


@runtime_checkable
class Router(Protocol):
    """Chooses a server for a request, or keeps it pending, sheds or rejects it.

    The driver (``polyserve.control.FleetDriver``) calls every member; ``RouterBase`` gives the no-op
    defaults, so a router only writes what it uses and the driver never probes with ``hasattr``.
    """

    name: str
    tiered: bool  # True: servers belong to tiers and start in the idle pool (scale-up on demand)
    needs_tick: bool  # True: call ``tick`` every tick_s even with nothing pending (periodic scale-down)
    scheduler_for: SchedulerChoice  # the engine scheduler this policy wants per role ({}: the engine default)

    def route(self, req: RequestInfo, fleet: FleetState, now: float, phase: Phase) -> RoutingDecision:
        """``phase``: "mixed" (co-located), "prefill" or "decode" (disaggregated hand-off)."""
        ...

    def tick(self, fleet: FleetState, now: float) -> list[ScaleAction]:
        """Periodic decisions (scale-down, rebalancing); called on every driver tick."""
        ...

    def initial_actions(self, fleet: FleetState) -> list[ScaleAction]:
        """The fleet at time 0 for a tiered router (servers start in the idle pool); ignored if untiered."""
        ...

    def describe(self) -> dict[str, object]:
        """Parameters worth recording beside a result (JSON-able)."""
        ...


class RouterBase:
    """No-op defaults for the optional parts of the ``Router`` protocol."""

    name = "router"
    tiered = False
    needs_tick = False
    scheduler_for: SchedulerChoice = MappingProxyType({})

    def route(self, req: RequestInfo, fleet: FleetState, now: float, phase: Phase) -> RoutingDecision:
        raise NotImplementedError(f"{type(self).__name__} must implement route()")

    def tick(self, fleet: FleetState, now: float) -> list[ScaleAction]:
        return []

    def initial_actions(self, fleet: FleetState) -> list[ScaleAction]:
        return []

    def describe(self) -> dict[str, object]:
        return {}


@dataclass(frozen=True, slots=True)
class BatchInfo:
    """What an instance scheduler sees when it sizes an iteration (built only for dynamic schedulers)."""

    num_decode: int
    kv_decode_tokens: int  # KV held by the decode batch
    kv_used: int
    kv_capacity: int
    max_num_batched_tokens: int
    min_next_deadline: float  # s: earliest deadline of any decoding request's next token (inf if none)
    tightest_tpot: float  # s: smallest TPOT in the decode batch (inf if none)


@runtime_checkable
class InstanceScheduler(Protocol):
    """The per-instance (engine) scheduler: queue order, prefill token budget, preemption victim.

    The instance model implements vLLM's continuous batching; the scheduler only answers the questions
    where engines differ. ``dynamic_budget = False`` means the static token budget
    (``token_budget`` or the engine's ``max_num_batched_tokens``) and lets the simulator take its fast path.
    """

    name: str
    queue: Literal["fcfs", "edf"]  # waiting-queue order: arrival, or earliest TTFT deadline first
    dynamic_budget: bool
    token_budget: int | None  # static per-iteration token budget; None = engine default

    def prefill_budget(self, batch: BatchInfo, model: object, now: float) -> int:
        """Prefill tokens allowed this iteration (only called when ``dynamic_budget``)."""
        ...


@runtime_checkable
class Autoscaler(Protocol):
    """Decides scale actions on each tick from the fleet ledger."""

    name: str

    def decide(self, fleet: FleetState, now: float) -> list[ScaleAction]: ...

    def initial_active(self, fleet: FleetState, role: str) -> int:
        """How many servers of ``role`` are active at time 0."""
        ...


ROUTERS: Registry[Router] = Registry("router")
SCHEDULERS: Registry[InstanceScheduler] = Registry("instance scheduler")
AUTOSCALERS: Registry[Autoscaler] = Registry("autoscaler")


def make_router(name: str, rng: random.Random, **options: object) -> Router:
    """Create a registered router; every factory takes ``rng`` and keyword options."""
    return ROUTERS.create(name, rng=rng, **options)
