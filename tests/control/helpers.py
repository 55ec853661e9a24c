"""Shared pieces of the driver tests: a decode-gating router, the queue reader, the operation strategy."""

from __future__ import annotations

from hypothesis import strategies as st

from polyserve.control import FleetDriver
from polyserve.core.fleet import RoutingDecision
from polyserve.policy.base import RouterBase


class DecodeGate(RouterBase):
    """Prefills go to server 0 at once; decodes go to server 1 only while ``open``, else wait in the router."""

    name = "decode-gate"

    def __init__(self) -> None:
        self.open = False

    def route(self, req, fleet, now, phase) -> RoutingDecision:
        if phase == "prefill":
            return RoutingDecision.to(0, "prefill")
        return RoutingDecision.to(1, "decode") if self.open else RoutingDecision.wait("no decode seat")


def queued(d: FleetDriver) -> list[int]:
    """Every request id in the driver's queues: the tier queues of both phases and the lost queues."""
    f = d.fleet
    out = [i.rid for qs in (f.pending, f.pending_decode) for q in qs for i in q]
    return out + [i.rid for q in d.lost_queues.values() for i in q]


def driver_ops(max_wait_ms: int):
    """Sequences of arrive (tier) / cancel (rid) / toggle (the gate) / wait (ms) operations."""
    return st.lists(
        st.one_of(
            st.tuples(st.just("arrive"), st.integers(0, 3)),
            st.tuples(st.just("cancel"), st.integers(0, 30)),
            st.tuples(st.just("toggle"), st.just(0)),
            st.tuples(st.just("wait"), st.integers(1, max_wait_ms)),
        ),
        max_size=40,
    )
