"""``Dispatcher``: the gateway's host for the ``FleetDriver`` (``polyserve.control``), on the wall clock.

The driver is the very object the simulator hosts on its virtual clock: routing, the overload contract,
pending retries, ticks, scaling with drain-before-release and dead-backend parking are written once there.
This class adds only what is live:

- ``acquire(info)`` returns a future that the HTTP handler awaits: it resolves with the server id when the
  driver dispatches the request (at once, or later from the pending queue) and fails with ``Shed`` (429,
  or 503 when ``max_pending`` requests already wait) or ``Refused`` when the driver ends it unserved;
  ``handoff(info)`` likewise for the decode seat, failing with ``NoSeat`` once the request has waited
  ``decode_seat_s`` (the driver's seat timeout; the gateway passes ``timeouts.idle_s``);
- ``first_token`` / ``tokens`` / ``finish`` feed the ledger from what has streamed back (the gateway's own
  accounting: it cannot see inside the engines); a client that goes away while pending is forgotten;
- scale actions reach the ``Actuator`` (start on activation, stop on release) and the ``on_scale`` hook.

``now`` is ``clock() - t0`` in seconds (the gateway's time starts at 0, as a simulation's does).
Everything runs on one event loop; no method awaits, so the ledger is never seen half-updated.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import replace

from polyserve.control.driver import DecisionLog, DriverOptions, FleetDriver, HostBase, Outcome, ScaleKind
from polyserve.core.fleet import FleetConfig, FleetState, IterationTimeModel, Phase, RequestInfo, ScaleAction
from polyserve.core.tiers import TierSet
from polyserve.gateway.actuator import Actuator
from polyserve.policy.base import Autoscaler, Router
from polyserve.policy.overload import LostCauseTest

NO_BACKEND = "no backend is up (all are failing their health checks)"


class Shed(Exception):
    """The request was shed for overload: answer ``status`` (429 or 503) with ``Retry-After``."""

    def __init__(self, reason: str, status: int = 429) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status


class Refused(Exception):
    """The router rejected the request (no server could ever serve it)."""


class NoSeat(Exception):
    """Disaggregated: no decode seat within the driver's ``decode_seat_s``; the stream ends with a 503 event."""


class Dispatcher(HostBase):
    def __init__(
        self,
        tiers: TierSet,
        config: FleetConfig,
        model: IterationTimeModel,
        router: Router,
        actuator: Actuator,
        n_servers: int,
        *,
        clock: Callable[[], float],
        max_pending: int | None = None,
        on_scale: Callable[[ScaleAction, str], None] | None = None,
        shed: bool = False,
        autoscaler: Autoscaler | None = None,
        log: DecisionLog | None = None,
        roles: list[str] | None = None,
        decode_seat_s: float | None = None,
    ) -> None:
        self.tiers = tiers
        self.router = router
        self.actuator = actuator
        self.clock = clock
        self.t0 = clock()
        self.on_scale = on_scale
        roles = roles or ["mixed"] * n_servers
        if len(roles) != n_servers:
            raise ValueError(f"{len(roles)} roles for {n_servers} servers")
        self.disaggregated = any(r != "mixed" for r in roles)
        self.fleet = FleetState(tiers, config, model, roles)  # type: ignore[arg-type]
        self._futures: dict[int, asyncio.Future[int]] = {}
        self.driver = FleetDriver(
            self.fleet, router, self, LostCauseTest(model, config.max_num_seqs, config.max_num_batched_tokens),
            DriverOptions(shed=shed, max_pending=max_pending, colocated=not self.disaggregated,
                          decode_seat_s=decode_seat_s),
            autoscaler=autoscaler, log=log,
        )
        self.driver.start(0.0)

    def now(self) -> float:
        return self.clock() - self.t0

    @property
    def parked(self) -> set[int]:
        return self.driver.parked

    @property
    def max_pending(self) -> int | None:
        return self.driver.options.max_pending

    @max_pending.setter
    def max_pending(self, cap: int | None) -> None:
        self.driver.options = replace(self.driver.options, max_pending=cap)

    # ---- reads ------------------------------------------------------------------------------------------
    def num_pending(self) -> int:
        return len(self.driver.waiting)

    def pending_by_tier(self) -> list[int]:
        return self.driver.pending_by_tier()

    def servers_by_state(self) -> dict[str, int]:
        return self.driver.servers_by_state()

    def routable_count(self) -> int:
        """Servers that are healthy (active or idle): the gateway can route while this is > 0."""
        return self.driver.routable_count()

    def is_healthy(self, sid: int) -> bool:
        return self.driver.is_healthy(sid)

    # ---- requests -----------------------------------------------------------------------------------------
    def acquire(self, info: RequestInfo) -> asyncio.Future[int]:
        """Route ``info``; the future resolves with the server id once dispatched (at once, or from pending).

        The future fails with ``Shed`` (503) when the request would wait and ``max_pending`` requests
        already do, and with ``Shed`` (429) or ``Refused`` if it is shed or rejected."""
        fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        if self.driver.routable_count() == 0:  # an outage, not overload: answer at once, never wait for it
            fut.set_exception(Shed(NO_BACKEND, 503))
            return fut
        self._futures[info.rid] = fut
        self.driver.arrive(info, self.now())
        return fut

    def handoff(self, info: RequestInfo) -> asyncio.Future[int]:
        """Disaggregated: ``info``'s prefill is done and its first token sent; it leaves the prefill server
        and is routed to a decode server. The future resolves with that server (at once, or from the
        pending decode queue)."""
        fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._futures[info.rid] = fut
        self.driver.handoff(info, self.now())
        return fut

    def reroute_decode(self, info: RequestInfo) -> asyncio.Future[int]:
        """Disaggregated: the decode server failed before its first token; place the decode elsewhere."""
        fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._futures[info.rid] = fut
        self.driver.route(info, self.now(), "decode")
        return fut

    def first_token(self, rid: int, tokens: int) -> None:
        self.driver.first_token(rid, self.now(), tokens)

    def tokens(self, rid: int, tokens: int) -> None:
        self.driver.tokens(rid, tokens)

    def finish(self, rid: int, output_tokens: int | None) -> None:
        """The request left its server (completed: ``output_tokens``; failed or aborted: None).
        Idempotent; also drops a request still pending (its client went away)."""
        fut = self._futures.pop(rid, None)
        if fut is not None and not fut.done():
            fut.cancel()
        self.driver.cancel(rid)
        self.driver.finish(rid, self.now(), output_tokens)

    def retry_pending(self, now: float | None = None) -> None:
        self.driver.retry_pending(self.now() if now is None else now)

    def tick(self) -> None:
        """The driver's tick, when it can decide anything (as the simulator ticks): requests wait in the router,
        or the router or an autoscaler decides periodically. An idle untiered gateway then costs no CPU."""
        d = self.driver
        if d.waiting or d.periodic:
            d.tick(self.now())

    # ---- health -------------------------------------------------------------------------------------------
    def mark_dead(self, sid: int) -> None:
        self.driver.mark_dead(sid, self.now())
        if self.driver.routable_count() == 0:  # the last backend went: nobody waiting can be served
            for rid in self.driver.cancel_all():
                fut = self._futures.pop(rid, None)
                if fut is not None and not fut.done():
                    fut.set_exception(Shed(NO_BACKEND, 503))

    def mark_alive(self, sid: int) -> None:
        self.driver.mark_alive(sid, self.now())

    # ---- DriverHost ---------------------------------------------------------------------------------------
    def dispatch(self, info: RequestInfo, sid: int, phase: Phase, promoted: bool, now: float) -> None:
        fut = self._futures.pop(info.rid, None)
        if fut is not None and not fut.done():
            fut.set_result(sid)

    def end(self, info: RequestInfo, outcome: Outcome, reason: str, now: float) -> None:
        fut = self._futures.pop(info.rid, None)
        if fut is None or fut.done():
            return
        if outcome == "rejected":
            fut.set_exception(Refused(reason))
        elif outcome == "timeout":
            fut.set_exception(NoSeat(reason))
        else:
            fut.set_exception(Shed(reason, 503 if outcome == "overflow" else 429))

    def scaled(self, action: ScaleAction, kind: ScaleKind, now: float) -> None:
        if kind in ("initial", "activate"):
            self.actuator.activate(action.server)
        elif kind == "release":
            self.actuator.deactivate(action.server)
        if kind != "initial" and self.on_scale is not None:
            self.on_scale(action, kind)
