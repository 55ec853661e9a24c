"""``Dispatcher``: drives a policy router on the wall clock, exactly as the simulator drives it on a virtual one.

The router objects are the simulator's (``polyserve.policy``), pure and clock-free; this class is the live
twin of ``polyserve.sim.cluster.Simulation``'s ``_route`` / ``_retry_pending`` / ``_tick`` / ``_apply_scale``:

- ``acquire(info)``: ask the router; apply its scale actions; on ``dispatch`` write the ledger
  (``FleetState.on_dispatch``) and resolve the request's future with the server id; on ``pending`` queue it
  in ``fleet.pending``; on ``shed``/``reject`` fail the future (``Shed`` / ``Refused``);
- pending requests are retried on every finish, on every tick and when a backend comes back: heads only,
  tightest tier first; lost causes (the overload contract, ``policy/overload.py``, the same for every
  router) are shed with ``shed=True``, else wait until no attainable request is pending;
- ``first_token`` / ``tokens`` / ``finish`` feed the ledger from what has streamed back (the gateway's own
  accounting: it cannot see inside the engines);
- ``tick()``: the router's periodic scale-down, then the pending retries.

``now`` is ``clock() - t0`` in seconds (the gateway's time starts at 0, as a simulation's does).

Scale actions go through the ``Actuator``: tier moves are instant in the ledger; a server leaving for the
idle pool drains first (marked ``draining``, released when its last request finishes), then the actuator
may stop it. Dead backends: ``mark_dead`` makes a server unroutable; once empty it is *parked* (held active,
tier-less and draining, so neither the router's idle-pool scan nor its tier scans can pick it, and its
scale actions are ignored) until ``mark_alive`` returns it to the idle pool.

Everything runs on one event loop; no method awaits, so the ledger is never seen half-updated.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable

from polyserve.core.fleet import FleetConfig, FleetState, IterationTimeModel, RequestInfo, ScaleAction
from polyserve.core.tiers import TierSet
from polyserve.gateway.actuator import Actuator
from polyserve.policy.overload import LOST_REASON, LostCauseTest


class Shed(Exception):
    """The request was shed for overload: answer ``status`` (429 or 503) with ``Retry-After``."""

    def __init__(self, reason: str, status: int = 429) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status


class Refused(Exception):
    """The router rejected the request (no server could ever serve it)."""


class Dispatcher:
    def __init__(
        self,
        tiers: TierSet,
        config: FleetConfig,
        model: IterationTimeModel,
        router: object,
        actuator: Actuator,
        n_servers: int,
        *,
        clock: Callable[[], float],
        max_pending: int | None = None,
        on_scale: Callable[[ScaleAction, str], None] | None = None,
        shed: bool = False,
    ) -> None:
        self.tiers = tiers
        self.router = router
        self.actuator = actuator
        self.clock = clock
        self.t0 = clock()
        self.max_pending = max_pending
        self.on_scale = on_scale
        self.fleet = FleetState(tiers, config, model, ["mixed"] * n_servers)
        self.tiered = bool(getattr(router, "tiered", False))
        self._waiting: dict[int, asyncio.Future[int]] = {}
        self._lost: deque[RequestInfo] = deque()
        self.parked: set[int] = set()
        self.shed = shed
        self._lost_test = LostCauseTest(model, config.max_num_seqs, config.max_num_batched_tokens)
        self._tick_fn = getattr(router, "tick", None)
        self._initial_fleet()

    def now(self) -> float:
        return self.clock() - self.t0

    def _initial_fleet(self) -> None:
        """As the simulator: tiered routers start from the idle pool (plus their ``initial_actions``),
        untiered ones get every server in the shared pool."""
        f = self.fleet
        if self.tiered:
            init = getattr(self.router, "initial_actions", None)
            for a in init(f) if init is not None else []:
                f.apply_scale(a, 0.0, 0.0)
                self.actuator.activate(a.server)
            f.scaling_actions = 0
        else:
            f.set_active_all(0.0)
            for s in f.servers:
                self.actuator.activate(s.sid)

    # ---- reads ------------------------------------------------------------------------------------------
    def num_pending(self) -> int:
        return len(self._waiting)

    def pending_by_tier(self) -> list[int]:
        out = [0] * len(self.tiers)
        for q in self.fleet.pending:
            for info in q:
                if info.rid in self._waiting:
                    out[info.tier] += 1
        for info in self._lost:
            if info.rid in self._waiting:
                out[info.tier] += 1
        return out

    def servers_by_state(self) -> dict[str, int]:
        out = {t.name: 0 for t in self.tiers}
        out.update(idle=0, dead=0, shared=0)
        for s in self.fleet.servers:
            if s.sid in self.parked or not s.healthy:
                out["dead"] += 1
            elif not s.active:
                out["idle"] += 1
            elif s.tier is None:
                out["shared"] += 1
            else:
                out[self.tiers[s.tier].name] += 1
        return out

    def routable_count(self) -> int:
        """Servers that are healthy (active or idle): the gateway can route while this is > 0."""
        return sum(1 for s in self.fleet.servers if s.healthy and s.sid not in self.parked)

    # ---- requests -----------------------------------------------------------------------------------------
    def acquire(self, info: RequestInfo) -> asyncio.Future[int]:
        """Route ``info``; the future resolves with the server id once dispatched (at once, or from pending).

        The future fails with ``Shed`` (503) when the request would wait and ``max_pending`` requests
        already do, and with ``Shed`` (429) or ``Refused`` if the router sheds or rejects it."""
        fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._waiting[info.rid] = fut
        now = self.now()
        if self.shed and self._lost_test.lost_info(info, now, "mixed"):
            self._waiting.pop(info.rid)
            fut.set_exception(Shed(LOST_REASON))
            return fut
        self._route(info, now, queued=False)
        return fut

    def _route(self, info: RequestInfo, now: float, queued: bool) -> bool:
        d = self.router.route(info, self.fleet, now, "mixed")  # type: ignore[attr-defined]
        for a in d.scale:
            self._apply_scale(a, now)
        if d.action == "dispatch":
            self._dispatch(info, d.server, now)
            return True
        if d.action == "pending":
            if not queued:
                waiting = len(self._waiting) - 1
                if self.max_pending is not None and waiting >= self.max_pending:
                    fut = self._waiting.pop(info.rid)
                    fut.set_exception(Shed(f"{waiting} requests already waiting (max_pending)", 503))
                    return True
                self.fleet.pending[info.tier].append(info)
            return False
        fut = self._waiting.pop(info.rid, None)
        if fut is not None and not fut.done():
            fut.set_exception(Shed(d.reason) if d.action == "shed" else Refused(d.reason))
        return True

    def _dispatch(self, info: RequestInfo, sid: int | None, now: float) -> None:
        srv = self.fleet.servers[sid] if sid is not None else None
        if srv is None or not srv.active or sid in self.parked:
            raise RuntimeError(f"router sent request {info.rid} to server {sid}, which is not active")
        self.fleet.on_dispatch(info, srv.sid, now)
        fut = self._waiting.pop(info.rid)
        fut.set_result(srv.sid)

    def first_token(self, rid: int, tokens: int) -> None:
        e = self.fleet.entries.get(rid)
        if e is not None:
            self.fleet.on_first_token(rid, self.now())
            e.tokens_out = tokens

    def tokens(self, rid: int, tokens: int) -> None:
        e = self.fleet.entries.get(rid)
        if e is not None:
            e.tokens_out = tokens

    def finish(self, rid: int, output_tokens: int | None) -> None:
        """The request left its server (completed: ``output_tokens``; failed or aborted: None).
        Idempotent; also drops a request still pending (its client went away)."""
        fut = self._waiting.pop(rid, None)
        if fut is not None and not fut.done():
            fut.cancel()
        if rid not in self.fleet.entries:
            return
        now = self.now()
        e = self.fleet.on_finish(rid, now, output_tokens)
        s = self.fleet.servers[e.server]
        if s.num_requests == 0:
            if not s.healthy:
                self._park(s.sid, now)
            elif s.draining and s.sid not in self.parked:
                self._release(s.sid, now, "drained")
        if self._waiting:
            self.retry_pending(now)

    # ---- pending ------------------------------------------------------------------------------------------
    def retry_pending(self, now: float | None = None) -> None:
        """Re-route pending requests, as the simulator does: attainable ones first, tightest tier first,
        oldest first, heads only; lost causes only once no attainable request is waiting."""
        if now is None:
            now = self.now()
        f = self.fleet
        waiting = self._waiting
        lost_fn = self._lost_test.lost_info
        for q in f.pending:
            while q:
                info = q[0]
                if info.rid not in waiting:
                    q.popleft()
                    continue
                if lost_fn(info, now, "mixed"):
                    q.popleft()
                    if self.shed:
                        fut = waiting.pop(info.rid)
                        if not fut.done():
                            fut.set_exception(Shed(LOST_REASON))
                        continue
                    self._lost.append(info)
                    continue
                q.popleft()
                if not self._route(info, now, queued=True):
                    q.appendleft(info)
                    break
        lost = self._lost
        if lost and not any(f.pending):
            while lost:
                info = lost.popleft()
                if info.rid not in waiting:
                    continue
                if not self._route(info, now, queued=True):
                    lost.appendleft(info)
                    break

    def tick(self) -> None:
        now = self.now()
        if self._tick_fn is not None:
            for a in self._tick_fn(self.fleet, now):
                self._apply_scale(a, now)
        if self._waiting:
            self.retry_pending(now)

    # ---- scaling ------------------------------------------------------------------------------------------
    def _apply_scale(self, a: ScaleAction, now: float) -> None:
        srv = self.fleet.servers[a.server]
        if a.server in self.parked:
            return  # a dead backend stays out until it answers again
        if a.activate:
            was_active = srv.active
            if was_active and srv.tier == a.tier and not srv.draining:
                return
            self.fleet.apply_scale(a, now, 0.0)
            if self.on_scale is not None:
                self.on_scale(a, "move" if was_active else "activate")
            if not was_active:
                self.actuator.activate(a.server)
            return
        if not srv.active:
            return
        if srv.num_requests:
            srv.draining = True
            if self.on_scale is not None:
                self.on_scale(a, "drain")
            return
        self._release(a.server, now, a.reason)

    def _release(self, sid: int, now: float, reason: str) -> None:
        self.fleet.apply_scale(ScaleAction(sid, False, None, reason), now)
        if self.on_scale is not None:
            self.on_scale(ScaleAction(sid, False, None, reason), "release")
        self.actuator.deactivate(sid)

    # ---- health -------------------------------------------------------------------------------------------
    def mark_dead(self, sid: int) -> None:
        s = self.fleet.servers[sid]
        s.healthy = False
        if s.num_requests == 0:
            self._park(sid, self.now())

    def _park(self, sid: int, now: float) -> None:
        if sid in self.parked:
            return
        s = self.fleet.servers[sid]
        self.fleet.apply_scale(ScaleAction(sid, True, None, "parked: backend down"), now, 0.0)
        s.draining = True
        self.parked.add(sid)

    def mark_alive(self, sid: int) -> None:
        s = self.fleet.servers[sid]
        if s.healthy and sid not in self.parked:
            return
        s.healthy = True
        if sid in self.parked:
            self.parked.discard(sid)
            now = self.now()
            if self.tiered:
                self.fleet.apply_scale(ScaleAction(sid, False, None, "recovered"), now)
            else:
                s.draining = False
        if self._waiting:
            self.retry_pending()

    def is_healthy(self, sid: int) -> bool:
        return self.fleet.servers[sid].healthy and sid not in self.parked
