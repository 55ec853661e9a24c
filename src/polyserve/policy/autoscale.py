"""The conventional autoscaler that baselines get in autoscaled runs (PolyServe scales itself).

``target-concurrency`` follows Ray Serve's ``target_ongoing_requests`` policy: the desired number of servers
of a role is ``ceil(ongoing / target)`` (ongoing = outstanding plus pending requests), clamped to
``[min_servers, fleet size]``; it scales up once the desire has exceeded the current count for
``upscale_delay_s`` and down once it has been below for ``downscale_delay_s``, releasing the least loaded
servers (each drains before it stops). Ray's defaults (30 s up, 600 s down) are meant for minutes-long
deployments; ours default to 1 s and 10 s so a few minutes of simulated load exercise them (both are flags).

``target`` defaults to the batch a server can hold while a decode iteration stays within ``target_fraction``
(0.8) of the tightest tier's TPOT under the latency model, leaving the rest for chunked prefill: the
largest load an SLO-blind router can put on a server without hurting the tightest requests. An operator
would tune it; ``polyserve compare`` uses this derived value for every baseline.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from polyserve.core.errors import ConfigError
from polyserve.core.fleet import FleetState, ScaleAction
from polyserve.policy.base import AUTOSCALERS
from polyserve.policy.cost import fit_cost


@dataclass
class TargetConcurrencyAutoscaler:
    name: str = "target-concurrency"
    target: float | None = None  # ongoing requests per server; None = derived from the latency model
    target_fraction: float = 0.8
    upscale_delay_s: float = 1.0
    downscale_delay_s: float = 10.0
    min_servers: int = 1
    _above_since: dict[str, float | None] = field(default_factory=dict)
    _below_since: dict[str, float | None] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.target is not None and not self.target > 0:
            raise ConfigError(f"autoscaler target must be > 0, got {self.target}")
        for name in ("upscale_delay_s", "downscale_delay_s", "target_fraction"):
            v = getattr(self, name)
            if not (math.isfinite(v) and v >= 0):
                raise ConfigError(f"autoscaler {name} must be a finite number >= 0, got {v}")
        if self.min_servers < 1:
            raise ConfigError(f"autoscaler min_servers must be >= 1, got {self.min_servers}")

    def describe(self) -> dict[str, object]:
        return {k: v for k, v in self.__dict__.items() if not k.startswith("_")}

    def resolved_target(self, fleet: FleetState) -> float:
        if self.target is None:
            c = fit_cost(fleet.model, fleet.config.max_num_seqs, fleet.config.max_num_batched_tokens)
            tight = min(t.tpot_ms for t in fleet.tiers) / 1e3
            n = int((tight * self.target_fraction - c.b0) / c.b2) if c.b2 > 0 else fleet.config.max_num_seqs
            self.target = float(max(1, min(fleet.config.max_num_seqs, n)))
        return self.target

    def initial_active(self, fleet: FleetState, role: str) -> int:
        return self.min_servers

    def decide(self, fleet: FleetState, now: float) -> list[ScaleAction]:
        target = self.resolved_target(fleet)
        # a role's backlog is its own pending queue: prefill/co-located requests wait in ``pending``, decodes
        # waiting for a decode server in ``pending_decode``
        waiting = {"decode": sum(len(q) for q in fleet.pending_decode)}
        waiting["mixed"] = waiting["prefill"] = sum(len(q) for q in fleet.pending)
        out: list[ScaleAction] = []
        for role in sorted({s.role for s in fleet.servers}):
            pool = [s for s in fleet.servers if s.role == role]
            active = [s for s in pool if s.active and not s.draining]
            ongoing = sum(s.num_requests for s in active) + waiting[role]
            desired = max(self.min_servers, min(len(pool), math.ceil(ongoing / target)))
            cur = len(active)
            if desired > cur:
                self._below_since[role] = None
                since = self._above_since.get(role)
                if since is None:
                    self._above_since[role] = since = now
                if now - since >= self.upscale_delay_s:
                    idle = [s for s in pool if not s.active or s.draining]
                    idle.sort(key=lambda s: (not s.draining, s.sid))  # re-use draining servers first
                    for s in idle[: desired - cur]:
                        out.append(ScaleAction(s.sid, True, None, f"{ongoing} ongoing > {cur} x {target:g}"))
                    self._above_since[role] = None
            elif desired < cur:
                self._above_since[role] = None
                since = self._below_since.get(role)
                if since is None:
                    self._below_since[role] = since = now
                if now - since >= self.downscale_delay_s:
                    for s in sorted(active, key=lambda s: (s.num_requests, -s.sid))[: cur - desired]:
                        out.append(ScaleAction(s.sid, False, None, f"{ongoing} ongoing < {cur} x {target:g}"))
                    self._below_since[role] = None
            else:
                self._above_since[role] = None
                self._below_since[role] = None
        return out


@AUTOSCALERS.register("target-concurrency", "Ray Serve style: ceil(ongoing / target) servers, up/down delays")
def _target(**options: object) -> TargetConcurrencyAutoscaler:
    return TargetConcurrencyAutoscaler(**options)  # type: ignore[arg-type]
