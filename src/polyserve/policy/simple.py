"""Simple routers that need no latency prediction."""

from __future__ import annotations

import random

from polyserve.core.errors import ConfigError
from polyserve.core.fleet import FleetState, Phase, RequestInfo, RoutingDecision
from polyserve.policy.base import ROUTERS, RouterBase


def _role_for(phase: Phase) -> str:
    return "mixed" if phase == "mixed" else phase


class RoundRobinRouter(RouterBase):
    """Cycles through the routable servers of the phase's role, in server-id order.

    Keeps one cursor per role, so prefill and decode placement in disaggregated mode rotate independently.
    Never pends unless no server is routable (e.g. every server still cold-starting).
    """

    name = "round-robin"
    tiered = False

    def __init__(self, rng: random.Random | None = None) -> None:
        self._cursor: dict[str, int] = {}

    def route(self, req: RequestInfo, fleet: FleetState, now: float, phase: Phase) -> RoutingDecision:
        role = _role_for(phase)
        servers = fleet.servers
        n = len(servers)
        start = self._cursor.get(role, 0)
        for k in range(n):
            s = servers[(start + k) % n]
            if s.role == role and s.routable(now):
                self._cursor[role] = (s.sid + 1) % n
                return RoutingDecision.to(s.sid, "next in rotation")
        return RoutingDecision.wait(f"no routable {role} server")


@ROUTERS.register("round-robin", "cycle through the servers in order (no SLO awareness)")
def _round_robin(rng: random.Random, **options: object) -> RoundRobinRouter:
    if options:
        raise ConfigError(f"unknown round-robin option(s) {', '.join(sorted(options))}; allowed: none")
    return RoundRobinRouter(rng)
