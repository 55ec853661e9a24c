"""``FleetDriver``: the one loop around a router, hosted by the simulator and by the live gateway.

Why one class: the simulator's measurements only predict the gateway if the same code turns router
decisions into fleet changes in both. Everything that is *policy-independent fleet logic* lives here once:

- the initial fleet (a tiered router's ``initial_actions``, an autoscaler's ``initial_active``, else all);
- routing: ask the router, apply its scale actions, write the ledger (``FleetState`` methods only), hand the
  request to the host (``dispatch``) or queue it pending; ``max_pending`` caps the queue (gateway);
- the overload contract (``policy/overload.py``), the same for every router: a request whose TTFT can no
  longer be met is shed with the reason (``shed=True``) or served only once no attainable request of its
  phase waits (``shed=False``);
- pending retries on every finish, hand-off and tick: heads only, decode phase first, tightest tier first;
- the tick: the autoscaler's and the router's periodic decisions, then the retries;
- scaling: activation with the cold start, tier and role moves, drain-before-release;
- health: a dead server is unroutable and, once empty, *parked* (held active, tier-less and draining, so no
  scan picks it and its scale actions are ignored) until it is alive again;
- disaggregated hand-off: a finished prefill leaves its server and is routed to a decode server; a request
  that then waits longer than ``decode_seat_s`` for a decode seat ends (outcome ``timeout``): it has streamed
  its first token, so the wait is a silence in its stream, and a client is never left waiting for minutes.

Clock-agnostic: every entry point takes ``now`` (seconds from the start of the run). What happens to a
request or a server outside the ledger is the host's (``DriverHost``): the simulator enqueues into its
instance models and schedules events on a virtual clock; the gateway resolves a future that the HTTP handler
awaits and starts or stops engines through its actuator, on the wall clock.

Failure modes: a router that dispatches to a server that is inactive, parked or of the wrong role raises
``RuntimeError`` naming the router, request and server (a policy bug, never silently absorbed). No method
awaits or blocks, so a host on an event loop never sees the ledger half-updated.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal, Protocol

from polyserve.core.fleet import FleetState, Phase, RequestInfo, RoutingDecision, ScaleAction
from polyserve.policy.base import Autoscaler, Router
from polyserve.policy.overload import LOST_REASON, LostCauseTest

# how a request ends without (full) service; ``timeout``: no decode seat within ``decode_seat_s`` after its
# first token (the only outcome of a request that has streamed a token)
Outcome = Literal["shed", "rejected", "overflow", "timeout"]
ScaleKind = Literal["initial", "activate", "move", "drain", "release"]


class DriverHost(Protocol):
    """What the driver asks of where it runs. ``HostBase`` gives no-op defaults."""

    def dispatch(self, info: RequestInfo, sid: int, phase: Phase, promoted: bool, now: float) -> None:
        """Hand ``info`` to server ``sid`` (the ledger already holds it). Decode phase: start the KV hand-off."""
        ...

    def end(self, info: RequestInfo, outcome: Outcome, reason: str, now: float) -> None:
        """``info`` ends unserved: shed (overload), rejected (no server can ever serve it), overflow
        (``max_pending`` requests already wait), or timeout (disaggregated: its first token streamed, it got
        no decode seat within ``decode_seat_s``; the host ends its stream with an error)."""
        ...

    def lost(self, info: RequestInfo, now: float) -> None:
        """Overload ``serve``: ``info`` is now a certain SLO miss (it will still be served, last)."""
        ...

    def scaled(self, action: ScaleAction, kind: ScaleKind, now: float) -> None:
        """The ledger carried out ``action``: ``initial`` (fleet at time 0), ``activate`` (from the idle
        pool; cold start), ``move`` (tier change), ``drain`` (release once empty) or ``release``."""
        ...

    def set_role(self, sid: int, role: str) -> None:
        """An idle server changes role (adaptive prefill/decode split) before it is activated."""
        ...

    def server_empty(self, sid: int) -> bool:
        """Whether the server holds no work the ledger does not see (e.g. a KV transfer in flight)."""
        ...

    def waiting(self, info: RequestInfo, now: float) -> None:
        """``info`` went (or stayed) pending: the host must call ``tick`` again soon."""
        ...


class HostBase:
    """No-op defaults for ``DriverHost``."""

    def dispatch(self, info: RequestInfo, sid: int, phase: Phase, promoted: bool, now: float) -> None:
        raise NotImplementedError(f"{type(self).__name__} must implement dispatch()")

    def end(self, info: RequestInfo, outcome: Outcome, reason: str, now: float) -> None:
        raise NotImplementedError(f"{type(self).__name__} must implement end()")

    def lost(self, info: RequestInfo, now: float) -> None:
        return None

    def scaled(self, action: ScaleAction, kind: ScaleKind, now: float) -> None:
        return None

    def set_role(self, sid: int, role: str) -> None:
        return None

    def server_empty(self, sid: int) -> bool:
        return True

    def waiting(self, info: RequestInfo, now: float) -> None:
        return None


@dataclass(frozen=True)
class DriverOptions:
    shed: bool = False  # the overload contract: shed lost causes (True) or serve them last (False)
    max_pending: int | None = None  # cap on requests waiting in the router (None: unbounded)
    cold_start_s: float = 0.0  # an activated idle server routes only after this long
    colocated: bool = True  # False: disaggregated (prefill pool, then decode servers after the hand-off)
    # disaggregated: the longest wait in the router for a decode seat (a silence in a stream that has sent its
    # first token); then the request ends with outcome ``timeout``. None: unbounded. The gateway sets its
    # ``timeouts.idle_s``, the simulator its ``decode_seat_timeout_s`` (the same 30 s by default)
    decode_seat_s: float | None = None


@dataclass
class DecisionLog:
    """Every routing and scaling decision, in order: what the sim-vs-gateway equivalence test compares."""

    # (rid, action, server, promoted) per routing decision
    routes: list[tuple[int, str, int | None, bool]] = field(default_factory=list)
    # (server, activate, tier, role, kind) per carried-out scale action
    scales: list[tuple[int, bool, int | None, str | None, str]] = field(default_factory=list)


class FleetDriver:
    def __init__(
        self,
        fleet: FleetState,
        router: Router,
        host: DriverHost,
        lost_test: LostCauseTest,
        options: DriverOptions = DriverOptions(),
        autoscaler: Autoscaler | None = None,
        log: DecisionLog | None = None,
    ) -> None:
        self.fleet = fleet
        self.router = router
        self.host = host
        self.lost_test = lost_test
        self.options = options
        self.autoscaler = autoscaler
        self.log = log
        self.main_phase: Phase = "mixed" if options.colocated else "prefill"
        self.waiting: dict[int, RequestInfo] = {}  # every request in a pending or lost queue
        self.lost_queues: dict[str, deque[RequestInfo]] = {"mixed": deque(), "prefill": deque(), "decode": deque()}
        self.parked: set[int] = set()
        # decode seat waits, for ``decode_seat_s``: when each waiting decode started to wait, and the same in
        # time order (stale pairs, of requests seated or gone since, are skipped when they reach the head)
        self._seat_since: dict[int, float] = {}
        self._seat_order: deque[tuple[float, int]] = deque()
        self.decisions: dict[str, int] = {}  # router action (dispatch, pending, ...) -> count

    @property
    def periodic(self) -> bool:
        """Whether ticks matter with nothing pending (an autoscaler, or a router with periodic decisions)."""
        return self.autoscaler is not None or self.router.needs_tick

    # ---- the fleet at time 0 -----------------------------------------------------------------------------
    def start(self, now: float = 0.0) -> None:
        """Who is active at ``now`` (ready at once, no cold start, not counted as scaling): a tiered router
        starts from the idle pool plus its ``initial_actions``; an untiered one gets the autoscaler's
        ``initial_active`` per role, else the whole fleet."""
        f = self.fleet
        actions: list[ScaleAction] = []
        if self.router.tiered:
            actions = list(self.router.initial_actions(f))
        elif self.autoscaler is not None:
            for role in ("mixed", "prefill", "decode"):
                pool = [s for s in f.servers if s.role == role]
                n = self.autoscaler.initial_active(f, role)
                actions += [ScaleAction(s.sid, True, None, "initial") for s in pool[:n]]
        else:
            f.set_active_all(now)
            actions = [ScaleAction(s.sid, True, None, "initial") for s in f.servers]
            for a in actions:
                self._scaled(a, "initial", now)
            return
        for a in actions:
            if a.role is not None and a.role != f.servers[a.server].role:
                self.host.set_role(a.server, a.role)
            f.apply_scale(a, now, 0.0, counted=False)
            self._scaled(a, "initial", now)

    # ---- requests ------------------------------------------------------------------------------------------
    def arrive(self, info: RequestInfo, now: float) -> None:
        """A new request: shed at once if already lost (``shed``), else routed (dispatched or pending)."""
        self.fleet.outcomes.arrived(info.tier, now)
        if self.options.shed and self.lost_test.lost_info(info, now, self.main_phase):
            self._end(info, "shed", f"{LOST_REASON} (on arrival)", now)
            return
        self.route(info, now, self.main_phase)

    def route(self, info: RequestInfo, now: float, phase: Phase, queued: bool = False) -> bool:
        """Ask the router; apply its decision. False: the request stays pending.

        ``queued``: it already sits in a pending queue (a retry), so a refusal leaves it in place."""
        d: RoutingDecision = self.router.route(info, self.fleet, now, phase)
        for a in d.scale:
            self.apply_scale(a, now)
        self.decisions[d.action] = self.decisions.get(d.action, 0) + 1
        if self.log is not None:
            self.log.routes.append((info.rid, d.action, d.server, d.promoted))
        if d.action == "dispatch":
            self._dispatch(info, d.server, now, phase, d.promoted)
            return True
        if d.action == "pending":
            if not queued:
                cap = self.options.max_pending
                if cap is not None and len(self.waiting) >= cap:
                    self._end(info, "overflow", f"{len(self.waiting)} requests already waiting (max_pending)", now)
                    return True
                q = self.fleet.pending_decode if phase == "decode" else self.fleet.pending
                q[info.tier].append(info)
                self.waiting[info.rid] = info
                if phase == "decode" and self.options.decode_seat_s is not None:
                    self._seat_since[info.rid] = now
                    self._seat_order.append((now, info.rid))
            self.host.waiting(info, now)
            return False
        self._end(info, "shed" if d.action == "shed" else "rejected", d.reason, now)
        return True

    def _dispatch(self, info: RequestInfo, sid: int | None, now: float, phase: Phase, promoted: bool) -> None:
        role = "mixed" if phase == "mixed" else phase
        srv = self.fleet.servers[sid] if sid is not None and 0 <= sid < len(self.fleet.servers) else None
        if srv is None or not srv.active or srv.role != role or srv.sid in self.parked:
            state = ("no such server" if srv is None else
                     f"active={srv.active}, role={srv.role}, parked={srv.sid in self.parked}")
            raise RuntimeError(f"router {self.router.name} sent request {info.rid} to server {sid} ({state}) "
                               f"for phase {phase}")
        self.fleet.on_dispatch(info, srv.sid, now, has_first_token=phase == "decode")
        self.waiting.pop(info.rid, None)
        if self._seat_since.pop(info.rid, None) is not None and not self._seat_since:
            self._seat_order.clear()  # nothing waits for a seat: every record left is stale
        self.host.dispatch(info, srv.sid, phase, promoted, now)

    def _end(self, info: RequestInfo, outcome: Outcome, reason: str, now: float) -> None:
        self.waiting.pop(info.rid, None)
        self.fleet.outcomes.missed(info.tier, now)  # every outcome here is a request ended unserved
        self.host.end(info, outcome, reason, now)

    def cancel(self, rid: int) -> bool:
        """The client went away while ``rid`` was pending: forget it and take it out of its queue at once.
        True if it was pending.

        Why at once: routers and autoscalers read the queues (``fleet.pending``: the fair_prefill wait rule,
        ``protect_host_tier``, ``rebalance_backlog``, the target-concurrency backlog), so an entry left for a
        lazy skip would count as demand, or hold a looser request back, until it reached its queue's head.
        Costs one scan of the request's tier queue (O(queued)); ``cancel_all`` empties every queue in one go."""
        info = self.waiting.pop(rid, None)
        if info is None:
            return False
        self._seat_since.pop(rid, None)
        f = self.fleet
        self._unqueue(info, (f.pending[info.tier], f.pending_decode[info.tier]), self.lost_queues.values())
        return True

    @staticmethod
    def _unqueue(info: RequestInfo, tier_queues: Iterable[deque[RequestInfo]],
                 lost_queues: Iterable[deque[RequestInfo]]) -> bool:
        """Take ``info`` out of the one of these queues it sits in; True if that was a lost queue. Scans from
        the head, where the oldest wait (a seat timeout's request is the oldest of its queue: found at once)."""
        for lost, queues in ((False, tier_queues), (True, lost_queues)):
            for q in queues:
                for i, x in enumerate(q):
                    if x.rid == info.rid:
                        del q[i]
                        return lost
        return False

    def cancel_all(self) -> list[int]:
        """Forget every pending request (no backend left to serve them): the rids, in no particular order."""
        rids = list(self.waiting)
        self.waiting.clear()
        self._seat_since.clear()
        self._seat_order.clear()
        for queues in (self.fleet.pending, self.fleet.pending_decode):
            for q in queues:
                q.clear()
        for q in self.lost_queues.values():
            q.clear()
        return rids

    def first_token(self, rid: int, now: float, tokens: int | None = None) -> None:
        if rid in self.fleet.entries:
            self.fleet.on_first_token(rid, now)
            if tokens is not None:
                self.fleet.on_tokens(rid, tokens)

    def tokens(self, rid: int, tokens: int) -> None:
        self.fleet.on_tokens(rid, tokens)

    def finish(self, rid: int, now: float, output_tokens: int | None, retry: bool = True) -> None:
        """``rid`` left its server: completed (``output_tokens``), or failed, aborted or shed inside the
        engine (None). Frees its slot, releases a drained server, parks a dead one, retries pending
        (``retry``). Idempotent: an unknown ``rid`` is ignored."""
        if rid not in self.fleet.entries:
            return
        e = self.fleet.on_finish(rid, now, output_tokens)
        self._emptied(e.server, now)
        if retry and self.waiting:
            self.retry_pending(now)

    def shed_in_engine(self, rid: int, now: float) -> None:
        """Overload ``shed``: an engine dropped ``rid`` from its waiting queue before its prefill began (a
        certain miss, counted in ``fleet.outcomes``); frees its slot like ``finish`` without a retry."""
        e = self.fleet.entries.get(rid)
        if e is None:
            return
        self.fleet.outcomes.missed(e.info.tier, now)
        self.finish(rid, now, None, retry=False)

    def handoff(self, info: RequestInfo, now: float) -> None:
        """Disaggregated: ``info``'s prefill is done; it leaves the prefill server and goes to decode."""
        e = self.fleet.on_finish(info.rid, now, None)
        self._emptied(e.server, now)
        self.route(info, now, "decode")
        if self.waiting:
            self.retry_pending(now)

    def _emptied(self, sid: int, now: float) -> None:
        s = self.fleet.servers[sid]
        if s.num_requests:
            return
        if not s.healthy:
            self._park(sid, now)
        elif s.draining and sid not in self.parked:
            self.release(sid, now, "drained")

    # ---- pending --------------------------------------------------------------------------------------------
    def retry_pending(self, now: float) -> None:
        """Re-route pending requests: decode phase first, tightest tier first, oldest first, heads only (so a
        retry costs O(tiers) however long the queues grow). Lost causes leave the tier queues as they reach
        the head: shed with the reason, or (``serve``, and always in the decode phase, whose requests have streamed
        their first token) moved to the phase's lost queue, reported to the host as certain misses, and retried
        only once no attainable request of that phase is waiting."""
        f = self.fleet
        if self._seat_order:
            self._expire_seats(now)
        waiting = self.waiting
        lost_fn = self.lost_test.lost_info
        for phase, queues in (("decode", f.pending_decode), (self.main_phase, f.pending)):
            lost_q = self.lost_queues[phase]
            for q in queues:
                while q:
                    info = q[0]
                    if info.rid not in waiting:  # defensive: ``cancel`` removes its entry at once
                        q.popleft()
                        continue
                    if lost_fn(info, now, phase):  # type: ignore[arg-type]
                        q.popleft()
                        if self.options.shed and phase != "decode":  # (a decode has streamed its first token)
                            self._end(info, "shed", f"{LOST_REASON} (pending in the router)", now)
                            continue
                        lost_q.append(info)
                        self.fleet.outcomes.missed(info.tier, now, decode=phase == "decode")
                        self.host.lost(info, now)
                        continue
                    q.popleft()
                    if not self.route(info, now, phase, queued=True):  # type: ignore[arg-type]
                        q.appendleft(info)
                        break
            if lost_q and not any(queues):
                while lost_q:
                    info = lost_q.popleft()
                    if info.rid not in waiting:
                        continue
                    if not self.route(info, now, phase, queued=True):  # type: ignore[arg-type]
                        lost_q.appendleft(info)
                        break

    def _expire_seats(self, now: float) -> None:
        """End every decode that has waited ``decode_seat_s`` for a seat (outcome ``timeout``), oldest first.

        Why the driver and not each host: the simulator and the gateway must end the same requests at the same
        time, or the simulator would show as late completions what the gateway ends with an error. The request
        leaves its queue at once (routers read ``fleet.pending_decode``); one still in its tier's queue is
        counted a miss now, one in the decode lost queue was counted when it went there. Costs O(1) per wait;
        an expiry finds its request near its queue's head (the oldest wait)."""
        limit = self.options.decode_seat_s
        if limit is None:
            return
        order, since, waiting = self._seat_order, self._seat_since, self.waiting
        while order:
            t, rid = order[0]
            if since.get(rid) != t or rid not in waiting:  # seated, gone, or waiting again since a later time
                order.popleft()
                continue
            if now < t + limit:
                break
            order.popleft()
            del since[rid]
            info = waiting.pop(rid)
            # only the decode queues: a long queue of prompts of the same tier is never scanned for it
            if not self._unqueue(info, (self.fleet.pending_decode[info.tier],), (self.lost_queues["decode"],)):
                # (a lost one was counted a miss when it went to the lost queue)
                self.fleet.outcomes.missed(info.tier, now, decode=True)
            self.host.end(info, "timeout", f"no decode server within {limit:g} s", now)

    # ---- the tick ----------------------------------------------------------------------------------------------
    def tick(self, now: float) -> None:
        """The autoscaler's and the router's periodic decisions, then the pending retries."""
        if self.autoscaler is not None:
            for a in self.autoscaler.decide(self.fleet, now):
                self.apply_scale(a, now)
        for a in self.router.tick(self.fleet, now):
            self.apply_scale(a, now)
        if self.waiting:
            self.retry_pending(now)

    # ---- scaling ---------------------------------------------------------------------------------------------
    def apply_scale(self, a: ScaleAction, now: float) -> None:
        """Carry out a router's or autoscaler's action; a busy server asked to leave drains first. Actions on
        a parked (dead) server are ignored until it is alive again."""
        srv = self.fleet.servers[a.server]
        if a.server in self.parked:
            return
        if a.activate:
            was_active = srv.active
            if was_active and srv.tier == a.tier and not srv.draining:
                return
            if a.role is not None and a.role != srv.role:
                self.host.set_role(a.server, a.role)
            self.fleet.apply_scale(a, now, 0.0 if was_active else self.options.cold_start_s)
            self._scaled(a, "move" if was_active else "activate", now)
            return
        if not srv.active:
            return
        if srv.num_requests or not self.host.server_empty(a.server):
            self.fleet.mark_draining(a.server)
            self._scaled(a, "drain", now)
            return
        self.release(a.server, now, a.reason)

    def release(self, sid: int, now: float, reason: str) -> None:
        a = ScaleAction(sid, False, None, reason)
        self.fleet.apply_scale(a, now)
        self._scaled(a, "release", now)

    def _scaled(self, a: ScaleAction, kind: ScaleKind, now: float) -> None:
        if self.log is not None:
            s = self.fleet.servers[a.server]
            self.log.scales.append((a.server, a.activate, s.tier, s.role, kind))
        self.host.scaled(a, kind, now)

    # ---- health ----------------------------------------------------------------------------------------------
    def mark_dead(self, sid: int, now: float) -> None:
        """The backend stopped answering: never routable again until ``mark_alive``; parked once empty."""
        self.fleet.set_healthy(sid, False)
        if self.fleet.servers[sid].num_requests == 0:
            self._park(sid, now)

    def _park(self, sid: int, now: float) -> None:
        if sid in self.parked:
            return
        self.fleet.apply_scale(ScaleAction(sid, True, None, "parked: backend down"), now, 0.0)
        self.fleet.mark_draining(sid)
        self.parked.add(sid)

    def mark_alive(self, sid: int, now: float) -> None:
        """The backend answers again: a parked server returns to the idle pool (tiered) or the shared pool."""
        s = self.fleet.servers[sid]
        if s.healthy and sid not in self.parked:
            return
        self.fleet.set_healthy(sid, True)
        if sid in self.parked:
            self.parked.discard(sid)
            if self.router.tiered:
                self.fleet.apply_scale(ScaleAction(sid, False, None, "recovered"), now)
            else:
                self.fleet.mark_draining(sid, False)
        if self.waiting:
            self.retry_pending(now)

    def is_healthy(self, sid: int) -> bool:
        return self.fleet.servers[sid].healthy and sid not in self.parked

    def routable_count(self) -> int:
        """Servers that are healthy (active or idle): requests can be served while this is > 0."""
        return sum(1 for s in self.fleet.servers if s.healthy and s.sid not in self.parked)

    def pending_by_tier(self) -> list[int]:
        out = [0] * len(self.fleet.tiers)
        for info in self.waiting.values():
            out[info.tier] += 1
        return out

    def servers_by_state(self) -> dict[str, int]:
        out = {t.name: 0 for t in self.fleet.tiers}
        out.update(idle=0, dead=0, shared=0)
        for s in self.fleet.servers:
            if s.sid in self.parked or not s.healthy:
                out["dead"] += 1
            elif not s.active:
                out["idle"] += 1
            elif s.tier is None:
                out["shared"] += 1
            else:
                out[self.fleet.tiers[s.tier].name] += 1
        return out
