"""The cluster simulation: a fleet of instances, a router with pending queues, ticks and scaling.

Event loop with a virtual clock (integer ns). Heap key ``(time, class, tiebreak, seq)`` (class and tiebreak
packed into one int): at one instant,
arrivals (class 0) come before KV hand-offs (1), servers becoming ready (2), instance steps (3, by server id)
and the periodic tick (4). Tie-breaking by id, not by push order, keeps the order canonical, which is what
makes the fast path (fewer step events) give exactly the results of stepping every iteration.

Routing, pending retries, the overload contract, ticks and scaling are the ``FleetDriver``'s
(``polyserve.control``), the same object the live gateway hosts: this module is its virtual-clock host. It
feeds the driver arrivals, first tokens, finishes, hand-offs and ticks, and carries out what the driver
hands back (enqueue into an instance model, start a KV transfer, end a request, count a server as paid).
The router reads the ``FleetState`` ledger, updated from dispatch, first token and finish only: the same
information a live gateway has. Instance-seconds count every active (paid) server, including while it
cold-starts.

Failure modes: a request longer than an instance's KV capacity is rejected with the reason, never left to
hang; a run that reaches ``horizon_s`` stops and reports what is unfinished.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from polyserve.control.driver import DriverOptions, FleetDriver, Outcome, ScaleKind
from polyserve.core.fleet import FleetConfig, FleetState, Phase, RequestInfo, ScaleAction
from polyserve.latency.base import kv_transfer_time
from polyserve.metrics.records import ATTAINED, REJECTED, SHED, TIMED_OUT, UNFINISHED, VIOLATED, RequestRecords
from polyserve.policy.base import Autoscaler, InstanceScheduler, Router
from polyserve.policy.overload import LOST_REASON, LostCauseTest
from polyserve.sim.config import SimConfig
from polyserve.sim.instance import Instance
from polyserve.sim.request import DECODING, DONE, PENDING, TRANSFER, SimRequest

_OUTCOME_STATUS = {"shed": SHED, "rejected": REJECTED, "overflow": SHED, "timeout": TIMED_OUT}

ARRIVAL, KV_DONE, READY, STEP, TICK = range(5)
SHIFT = 48  # event key = class << SHIFT | tiebreak (request or server id): one int compares fast
NS = 1_000_000_000


@dataclass
class RunStats:
    """Fleet-level outcome of one run (the per-request outcome is in ``RequestRecords``)."""

    end_ns: int = 0
    events: int = 0
    instance_ns: int = 0  # integral of active servers over time
    scaling_actions: int = 0
    preemptions: int = 0
    iterations: int = 0
    busy_ns: int = 0
    peak_kv_fraction: float = 0.0
    stopped_at_horizon: bool = False
    stalled: bool = False  # ended by the stall guard: requests pending that no router decision could place
    servers_timeline: list[tuple[float, list[int], int]] = field(
        default_factory=list
    )  # (t_s, per tier, shared)
    decisions: dict[str, int] = field(default_factory=dict)  # router action (dispatch, pending, ...) -> count


class Simulation:
    """One run: ``Simulation(...).run()`` fills ``records`` and returns ``RunStats``."""

    def __init__(
        self,
        workload,  # polyserve.workload.Workload
        model,  # a LatencyModel
        router: Router,
        scheduler_factory: Callable[[str], InstanceScheduler],
        config: SimConfig,
        autoscaler: Autoscaler | None = None,
        progress: Callable[[float], None] | None = None,
        count_window_s: tuple[float, float] | None = None,
        violation_budget: int | None = None,
        tier_violation_budget: list[int] | None = None,
        log: object | None = None,  # a polyserve.control.DecisionLog to fill (tests)
    ) -> None:
        self.w = workload
        self.model = model
        self.router = router
        self.scheduler_factory = scheduler_factory
        self.config = config
        self.autoscaler = autoscaler
        self.progress = progress
        # early stop (goodput search): abort once more requests arriving in the window missed their SLO than
        # the attainment target allows, overall or in any one tier
        self._win = (
            None if count_window_s is None else (round(count_window_s[0] * NS), round(count_window_s[1] * NS))
        )
        self._budget = violation_budget
        self._tier_budget = tier_violation_budget
        self.violations = 0
        self.tier_violations = [0] * len(workload.tiers)
        self.aborted = False
        self.kv_capacity = model.deployment.kv_capacity_tokens
        roles = config.roles()
        # the overload contract, the same for every router (policy/overload.py)
        self.lost_test = LostCauseTest(model, config.max_num_seqs, config.max_num_batched_tokens)
        self._shed = config.overload == "shed"
        shed_fn = self._engine_lost if self._shed else None
        self.fleet = FleetState(
            workload.tiers,
            FleetConfig(
                kv_capacity_tokens=self.kv_capacity,
                max_num_seqs=config.max_num_seqs,
                max_num_batched_tokens=config.max_num_batched_tokens,
                output_len_prior=config.output_len_prior,
                kv_transfer_s_per_token=(
                    kv_transfer_time(model.deployment, 1, config.kv_link_gbps)
                    if config.mode == "disaggregated" else 0.0
                ),
            ),
            model,
            roles,  # type: ignore[arg-type]
        )
        self.instances = [
            Instance(
                sid,
                role,
                model,
                self.kv_capacity,
                scheduler_factory(role),
                self,
                max_num_seqs=config.max_num_seqs,
                max_num_batched_tokens=config.max_num_batched_tokens,
                fast=config.fast,
                shed_lost=shed_fn,
            )
            for sid, role in enumerate(roles)
        ]
        self.records = RequestRecords(len(workload))
        self.stats = RunStats()
        self.driver = FleetDriver(
            self.fleet, router, self, self.lost_test,
            DriverOptions(shed=self._shed, cold_start_s=config.cold_start_s, colocated=config.mode == "colocated",
                          decode_seat_s=config.decode_seat_timeout_s),
            autoscaler=autoscaler, log=log,  # type: ignore[arg-type]
        )
        self.stats.decisions = self.driver.decisions
        self._heap: list[
            tuple[int, int, int, object, int]
        ] = []  # (time, class<<SHIFT|tiebreak, seq, obj, ver)
        self._seq = 0
        self._now = 0
        self._hw = -1  # highest (class << SHIFT | tiebreak) processed at self._now
        self._live: dict[int, SimRequest] = {}
        self._next_arrival = 0
        self._tick_scheduled = False
        self._idle_ticks = 0  # consecutive ticks with requests pending and nothing else left to happen
        self._active_since = 0
        self._active_count = 0
        # workload columns, converted to Python ints a chunk at a time (fast scalar access, bounded memory)
        self._n = len(workload)
        self._cols = (
            (workload.arrival_s * NS).round().astype(np.int64),
            workload.input_tokens,
            workload.output_tokens,
            workload.tier,
            (workload.ttft_ms * 1_000_000).round().astype(np.int64),
            (workload.tpot_ms * 1_000_000).round().astype(np.int64),
        )
        self._chunk_base = -1
        self._chunk: tuple[list[int], ...] = ()
        self._horizon = None if config.horizon_s is None else round(config.horizon_s * NS)

    # ---- Host protocol (called by instances) ---------------------------------------------------------------
    def schedule_step(self, inst: Instance, t: int) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (t, (STEP << SHIFT) | inst.sid, self._seq, inst, inst.version))

    def processed_past_step(self, inst: Instance, t: int) -> bool:
        return t == self._now and self._hw > ((STEP << SHIFT) | inst.sid)

    def on_first_token(self, inst: Instance, req: SimRequest, t: int) -> None:
        self.driver.first_token(req.rid, t / NS)

    def on_finish(self, inst: Instance, req: SimRequest, t: int) -> None:
        self._live.pop(req.rid, None)
        self._record(req, t)
        self.driver.finish(req.rid, t / NS, req.output_tokens)

    def on_handoff(self, inst: Instance, req: SimRequest, t: int) -> None:
        self.records.prefill_instance[req.index] = inst.sid
        self.driver.handoff(req.info, t / NS)  # type: ignore[arg-type]

    def on_preempt(self, inst: Instance, req: SimRequest, t: int) -> None:
        self.stats.preemptions += 1

    def on_shed(self, inst: Instance, req: SimRequest, t: int) -> None:
        """Overload ``shed``: a lost cause dropped from an engine's waiting queue before its prefill began."""
        self.stats.decisions["shed_in_engine"] = self.stats.decisions.get("shed_in_engine", 0) + 1
        self._end(req, SHED, t, f"{LOST_REASON} (in server {inst.sid}'s queue)")
        self.driver.shed_in_engine(req.rid, t / NS)

    def _engine_lost(self, req: SimRequest, t: int) -> bool:
        return self.lost_test.lost(req.input_tokens, (req.arrival + req.ttft) / NS, t / NS)

    # ---- event plumbing ---------------------------------------------------------------------------------
    def _push(self, t: int, cls: int, tiebreak: int, obj: object, version: int = 0) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (t, (cls << SHIFT) | tiebreak, self._seq, obj, version))

    def _row(self, i: int) -> tuple[int, ...]:
        """Request ``i``'s (arrival ns, input, output, tier, ttft ns, tpot ns) as Python ints."""
        base = i - (i & 4095)
        if base != self._chunk_base:
            self._chunk_base = base
            self._chunk = tuple(c[base : base + 4096].tolist() for c in self._cols)
        k = i - base
        return tuple(c[k] for c in self._chunk)

    def _push_next_arrival(self) -> None:
        i = self._next_arrival
        if i < self._n:
            self._push(self._row(i)[0], ARRIVAL, i, i)

    def _ensure_tick(self, now: int) -> None:
        if not self._tick_scheduled:
            self._tick_scheduled = True
            self._push(now + round(self.config.tick_s * NS), TICK, 0, None)

    # ---- main loop ----------------------------------------------------------------------------------------
    def run(self) -> RunStats:
        self.driver.start(0.0)
        self._active_count = sum(1 for s in self.fleet.servers if s.active)
        self._timeline_point(0)
        self._push_next_arrival()
        if self.driver.periodic:
            self._ensure_tick(0)
        heap = self._heap
        total = max(1, self._n)
        next_progress = 0
        horizon = self._horizon
        pop = heapq.heappop
        stats = self.stats
        step_base = STEP << SHIFT
        events = 0
        while heap:
            t, key, _, obj, version = pop(heap)
            if horizon is not None and t > horizon:
                stats.stopped_at_horizon = True
                heap.clear()
                break
            if t != self._now:
                self._now = t
                self._hw = -1
            events += 1
            if key >= step_base and key < TICK << SHIFT:
                if version != obj.version:  # type: ignore[attr-defined]
                    continue
                if key > self._hw:
                    self._hw = key
                obj.step(t, version)  # type: ignore[attr-defined]
            else:
                if key > self._hw:
                    self._hw = key
                cls = key >> SHIFT
                if cls == ARRIVAL:
                    self._arrive(obj, t)  # type: ignore[arg-type]
                    if self.progress is not None and obj >= next_progress:  # type: ignore[operator]
                        self.progress(obj / total)  # type: ignore[operator]
                        next_progress = obj + max(1, total // 200)  # type: ignore[operator]
                elif cls == KV_DONE:
                    req, sid = obj  # type: ignore[misc]
                    self.instances[sid].enqueue_prefilled(req, t)
                elif cls == READY:
                    if self.driver.waiting:
                        self.driver.retry_pending(t / NS)
                else:  # TICK
                    self._tick_scheduled = False
                    self._tick(t)
            if self.aborted:
                heap.clear()
                break
        stats.events = events
        end = self._now if horizon is None or not self.stats.stopped_at_horizon else horizon
        self._finalize(end)
        return self.stats

    # ---- arrivals and routing ---------------------------------------------------------------------------
    def _arrive(self, i: int, t: int) -> None:
        _, inp, out, tier, ttft, tpot = self._row(i)
        self._next_arrival = i + 1
        self._push_next_arrival()
        req = SimRequest(i, i, t, inp, out, tier, ttft, tpot)
        req.info = RequestInfo(
            rid=i,
            arrival=t / NS,
            input_tokens=req.input_tokens,
            tier=req.tier,
            ttft_slo=req.ttft / NS,
            tpot_slo=req.tpot / NS,
            max_tokens=req.output_tokens if self.config.send_max_tokens else None,
        )
        self.records.status[i] = UNFINISHED
        self._live[i] = req
        if req.input_tokens + req.output_tokens > self.kv_capacity:
            self._end(
                req,
                REJECTED,
                t,
                f"prompt+output ({req.input_tokens + req.output_tokens} tokens) exceeds "
                f"an instance's KV capacity ({self.kv_capacity} tokens)",
            )
            return
        self.driver.arrive(req.info, t / NS)

    # ---- DriverHost (called by the FleetDriver) -------------------------------------------------------------
    def dispatch(self, info: RequestInfo, sid: int, phase: Phase, promoted: bool, now: float) -> None:
        req = self._live[info.rid]
        t = round(now * NS)
        if promoted:
            self.records.promoted[req.index] = True
        if phase == "decode":
            self.records.instance[req.index] = sid
            req.state = TRANSFER
            req.prefill_target = req.input_tokens
            dt = round(
                kv_transfer_time(self.model.deployment, req.input_tokens + 1, self.config.kv_link_gbps) * NS
            )
            self._push(t + dt, KV_DONE, req.rid, (req, sid))
            return
        if phase == "mixed":
            self.records.instance[req.index] = sid
        else:
            self.records.prefill_instance[req.index] = sid
        self.instances[sid].enqueue(req, t)

    def end(self, info: RequestInfo, outcome: Outcome, reason: str, now: float) -> None:
        req = self._live[info.rid]
        if req.first_token_time >= 0:  # a decode that got no seat: what it streamed stays on record
            self._record_partial(req)
        self._end(req, _OUTCOME_STATUS[outcome], round(now * NS), reason)

    def lost(self, info: RequestInfo, now: float) -> None:
        self._count_violation(self._live[info.rid])

    def waiting(self, info: RequestInfo, now: float) -> None:
        self._live[info.rid].state = PENDING
        self._ensure_tick(round(now * NS))

    def set_role(self, sid: int, role: str) -> None:
        self.instances[sid].set_role(role, self.scheduler_factory(role))

    def server_empty(self, sid: int) -> bool:
        return self.instances[sid].is_empty()

    def scaled(self, action: ScaleAction, kind: ScaleKind, now: float) -> None:
        t = round(now * NS)
        if kind == "activate":
            self._account_active(t)
            self._active_count += 1
            if self.config.cold_start_s > 0:
                self._push(t + round(self.config.cold_start_s * NS), READY, action.server, None)
        elif kind == "release":
            self._account_active(t)
            self._active_count -= 1
        elif kind != "move":
            return  # initial (counted once the fleet is set up) or drain (still paid)
        self._timeline_point(t)

    def _tick(self, t: int) -> None:
        d = self.driver
        before = d.decisions.get("dispatch", 0)
        pending = bool(d.waiting)
        d.tick(t / NS)
        if pending:
            # stall guard: no event is left but this tick and no tick places anything (say, a tier with no
            # server at all): the state can no longer change, so the run ends and the requests still
            # pending are reported unfinished instead of ticking forever
            if not self._heap and d.decisions.get("dispatch", 0) == before:
                self._idle_ticks += 1
                if self._idle_ticks >= self.config.stall_ticks:
                    self.stats.stalled = True
                    return
            else:
                self._idle_ticks = 0
        if d.waiting or (d.periodic and (self._live or self._next_arrival < self._n)):
            self._ensure_tick(t)

    # ---- scaling accounting ------------------------------------------------------------------------------
    def _account_active(self, t: int) -> None:
        self.stats.instance_ns += self._active_count * (t - self._active_since)
        self._active_since = t

    def _timeline_point(self, t: int) -> None:
        per_tier = [0] * len(self.fleet.tiers)
        shared = 0
        for s in self.fleet.servers:
            if s.active:
                if s.tier is None:
                    shared += 1
                else:
                    per_tier[s.tier] += 1
        self.stats.servers_timeline.append((t / NS, per_tier, shared))

    # ---- outcomes ----------------------------------------------------------------------------------------
    def _record(self, req: SimRequest, t: int) -> None:
        r = self.records
        i = req.index
        r.first_token[i] = req.first_token_time
        r.finish[i] = t
        r.scheduled[i] = req.scheduled_time
        r.prefill_done[i] = req.prefill_done_time
        if req.ttft_slack is not None:
            r.ttft_slack[i] = req.ttft_slack
        if req.output_tokens > 1:
            r.worst_slack[i] = req.worst_slack
        r.generated[i] = req.output_tokens
        r.preemptions[i] = req.preemptions
        ok = (
            req.ttft_slack is not None
            and req.ttft_slack >= 0
            and (req.output_tokens == 1 or req.worst_slack >= 0)
        )
        r.status[i] = ATTAINED if ok else VIOLATED
        if not ok:
            self._count_violation(req)

    def _count_violation(self, req: SimRequest) -> None:
        """Count a certain SLO miss of a measured request once (for the early stop of goodput probes)."""
        if req.counted:
            return
        req.counted = True
        win = self._win
        if win is None or not (win[0] <= req.arrival < win[1]):
            return
        self.violations += 1
        self.tier_violations[req.tier] += 1
        if self._budget is not None and self.violations > self._budget:
            self.aborted = True
        if self._tier_budget is not None and self.tier_violations[req.tier] > self._tier_budget[req.tier]:
            self.aborted = True

    def _record_partial(self, req: SimRequest) -> None:
        """What is known of a request that did not finish: its first token, slack and tokens so far."""
        r = self.records
        i = req.index
        r.first_token[i] = req.first_token_time
        r.scheduled[i] = req.scheduled_time
        r.prefill_done[i] = req.prefill_done_time
        if req.ttft_slack is not None:
            r.ttft_slack[i] = req.ttft_slack
        r.preemptions[i] = req.preemptions
        r.generated[i] = self.instances[req.instances[-1]].generated(req) if req.state == DECODING else req.generated

    def _end(self, req: SimRequest, status: int, t: int, reason: str) -> None:
        self._live.pop(req.rid, None)
        req.state = DONE
        self.records.status[req.index] = status
        self.records.reason[req.index] = reason
        self.records.finish[req.index] = t
        self._count_violation(req)

    def _finalize(self, end: int) -> None:
        self._account_active(end)
        st = self.stats
        st.end_ns = end
        for inst in self.instances:
            st.iterations += inst.iterations
            st.busy_ns += inst.busy_ns
            st.peak_kv_fraction = max(st.peak_kv_fraction, inst.peak_kv / max(1, inst.kv_capacity))
        for req in self._live.values():  # still queued or running: unfinished, with what we know
            self.records.status[req.index] = UNFINISHED
            self._record_partial(req)
        st.scaling_actions = self.fleet.scaling_actions


def make_rng(seed: int) -> random.Random:
    """The injected RNG for policies (never the global ``random``)."""
    return random.Random(seed)
