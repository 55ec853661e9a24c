"""One serving instance (a vLLM engine on ``tp`` GPUs) with continuous batching, as vLLM V1 schedules it.

Each iteration (one forward pass) the engine:
1. gives every decoding request one token slot (preempting by recompute, most recent first, when KV is
   short);
2. spends the rest of the token budget (``max_num_batched_tokens`` minus the decode tokens) first on
   partially prefilled requests, then admits waiting requests in queue order while seats
   (``max_num_seqs``) and KV last, chunking the last prompt to fit the budget;
3. takes ``latency_model.iteration_time(num_decode, kv_tokens, prefill_tokens)``.
A request whose prefill completes emits its first token at the end of that iteration; each decoding request
emits one token per iteration. KV is counted in tokens (vLLM allocates 16-token blocks; token granularity
differs by under 16 tokens per request).

Fast path: when an iteration has no prefill work and nothing waiting could be admitted, the next iterations
are identical until a request finishes or KV runs out, so the instance plans the whole run at once and
schedules one event at its end. Token counts advance through the iteration counter ``C`` and slack through
``SlackTrack``; nothing per request happens between events. If work arrives mid-run, the run is cut at the
first iteration boundary at or after the arrival, exactly where step-by-step simulation would admit it.
``fast=False`` steps one iteration per event (the emulated engine and the equivalence tests use it).

Times are integer nanoseconds.
"""

from __future__ import annotations

import contextlib
import heapq
from bisect import bisect_left, insort
from collections import deque
from collections.abc import Callable
from typing import Protocol

from polyserve.policy.base import BatchInfo, InstanceScheduler
from polyserve.sim.request import DECODING, DONE, NEW, PREFILLING, WAITING, SimRequest, SlackTrack

NONE, SINGLE, RUN = 0, 1, 2
INF = float("inf")


class Host(Protocol):
    """What an instance needs from the cluster that owns it."""

    def schedule_step(self, inst: Instance, t: int) -> None: ...
    def processed_past_step(self, inst: Instance, t: int) -> bool:
        """True if an event at ``t`` ordered after ``inst``'s step events has already been processed."""
        ...

    def on_first_token(self, inst: Instance, req: SimRequest, t: int) -> None: ...
    def on_finish(self, inst: Instance, req: SimRequest, t: int) -> None: ...
    def on_handoff(self, inst: Instance, req: SimRequest, t: int) -> None: ...
    def on_preempt(self, inst: Instance, req: SimRequest, t: int) -> None: ...
    def on_shed(self, inst: Instance, req: SimRequest, t: int) -> None:
        """Only called when the instance was built with ``shed_lost``: ``req`` left the waiting queue unserved."""
        ...


class Instance:
    def __init__(
        self,
        sid: int,
        role: str,
        model: object,
        kv_capacity: int,
        scheduler: InstanceScheduler,
        host: Host,
        *,
        max_num_seqs: int = 256,
        max_num_batched_tokens: int = 8192,
        fast: bool = True,
        shed_lost: Callable[[SimRequest, int], bool] | None = None,
    ) -> None:
        """``shed_lost(req, now)``: the overload contract's test (``policy/overload.py``, mode ``shed``); a
        waiting request that has produced no token and for which it is true is dropped at the head of the
        queue and handed to ``host.on_shed``. None: nothing is ever dropped (vLLM's behaviour)."""
        self.sid = sid
        self.shed_lost = shed_lost
        self.role = role  # "mixed" | "prefill" | "decode"
        self.model = model
        self.kv_capacity = kv_capacity
        self.host = host
        self.max_num_seqs = max_num_seqs
        self.max_num_batched_tokens = max_num_batched_tokens
        self.fast = fast
        self._use_scheduler(scheduler)
        self._kv_indep = bool(getattr(model, "kv_independent", False))
        self._step_cache: dict[int, int] = {}
        # queues
        self.waiting: deque[SimRequest] = deque()
        self._wheap: list[tuple[tuple[int, int], int, SimRequest]] = []
        self.ready: deque[SimRequest] = deque()  # decode role: KV arrived, waiting for a decode seat
        self.prefilling: list[SimRequest] = []
        self.decoding: dict[int, SimRequest] = {}
        # per TPOT (ns): sorted deadline offsets K of the decoding requests that have not missed their first
        # token (token j of such a request is due at K + j * tpot), so the dynamic chunk budget finds the
        # next deadline in O(tiers log n) instead of a scan of the whole batch every iteration
        self._k_by_s: dict[int, list[int]] = {}
        self._fin: list[tuple[int, int, SimRequest]] = []
        self._n_by_s: dict[int, int] = {}
        self._tracks: dict[int, SlackTrack] = {}
        # counters
        self.C = 0  # iterations completed
        self.kv_used = 0  # tokens allocated (never above kv_capacity)
        self.kv_decode = 0  # tokens held by decoding requests
        self.iterations = 0
        self.busy_ns = 0
        self.preemptions = 0
        self.peak_kv = 0
        # current plan
        self.plan = NONE
        self.version = 0
        self._scheduled = False
        self._in_step = False
        self._chunks: list[tuple[SimRequest, int]] = []
        self._plan_n = 0
        self._run_start = 0
        self._run_k = 0
        self._run_d = 0
        self._run_ends: list[int] | None = None
        self._plan_end = 0
        self.on_tokens: Callable[[Instance, list[SimRequest], int], None] | None = None
        self._aborted: list[SimRequest] = []  # running requests to drop at the next iteration boundary
        self.aborts = 0

    def set_role(self, role: str, scheduler: InstanceScheduler) -> None:
        """An idle server moves between the prefill pool and the decode pools (disaggregated, adaptive split)."""
        if not self.is_empty():
            raise RuntimeError(f"instance {self.sid} holds requests; only an empty instance changes role")
        self.role = role
        self._use_scheduler(scheduler)

    def _use_scheduler(self, scheduler: InstanceScheduler) -> None:
        self.scheduler = scheduler
        self._edf = scheduler.queue == "edf"
        self._dynamic = scheduler.dynamic_budget
        self._budget = scheduler.token_budget or self.max_num_batched_tokens

    # ---- queries ----------------------------------------------------------------------------------------
    @property
    def num_waiting(self) -> int:
        return len(self.waiting) + len(self._wheap) + len(self.ready)

    @property
    def num_running(self) -> int:
        return len(self.decoding) + len(self.prefilling)

    def is_empty(self) -> bool:
        return not (self.decoding or self.prefilling or self.waiting or self._wheap or self.ready)

    def generated(self, req: SimRequest) -> int:
        """Tokens emitted so far (exact at event boundaries)."""
        if req.state == DECODING:
            return req.g0 + self.C - req.c0
        return req.generated

    def kv_now(self, t: int) -> int:
        """KV tokens allocated at time ``t`` (inside a fast-path run, counts only iterations started)."""
        if self.plan != RUN:
            return self.kv_used
        n = self._plan_n
        started = self._iterations_started(t)
        return self.kv_used - n * (self._run_k - started)

    # ---- aborts (a live engine's client went away; the simulator never aborts) ------------------------------
    def abort(self, req: SimRequest) -> None:
        """Remove ``req`` from this instance: now if it waits, at the next iteration boundary if it runs.

        A waiting request (new, or preempted and queued for recompute) holds no KV: it leaves the queue at
        once. A request in the running batch is part of the iteration in flight, whose token and KV counts
        were fixed when it was planned; removing it mid-iteration would corrupt them, so it is dropped when
        the next iteration is planned, with the bookkeeping a preemption uses. Tokens of that last iteration
        still reach the host, which drops them. Idempotent; a finished request is left alone.
        """
        if req.state == DONE:
            return
        self.aborts += 1
        if req.state in (NEW, WAITING):
            self._remove_waiting(req)
            req.state = DONE
        elif req.state in (PREFILLING, DECODING):
            self._aborted.append(req)

    @property
    def pending_aborts(self) -> int:
        """Aborted requests still in the iteration in flight (gone at its end)."""
        return len(self._aborted)

    def _remove_waiting(self, req: SimRequest) -> None:
        if self._edf:
            for i, entry in enumerate(self._wheap):
                if entry[2] is req:
                    self._wheap[i] = self._wheap[-1]
                    self._wheap.pop()
                    heapq.heapify(self._wheap)
                    return
        else:
            with contextlib.suppress(ValueError):
                self.waiting.remove(req)

    def _drop_aborted(self) -> None:
        for req in self._aborted:
            if req.state == DECODING and self.decoding.get(req.rid) is req:
                self._leave_decode(req)
            elif req.state == PREFILLING and req in self.prefilling:
                self.prefilling.remove(req)
                self.kv_used -= req.prefilled
                req.prefilled = 0
            elif req.state == WAITING:  # preempted since it was marked
                self._remove_waiting(req)
            else:
                continue  # finished in the last iteration
            req.state = DONE
        self._aborted.clear()

    # ---- intake -----------------------------------------------------------------------------------------
    def enqueue(self, req: SimRequest, now: int) -> None:
        """A new request (or one to recompute) joins the waiting queue."""
        req.state = WAITING
        if self._edf:
            heapq.heappush(self._wheap, (self._edf_key(req, now), req.rid, req))
        else:
            self.waiting.append(req)
        self.wake(now)

    @staticmethod
    def _edf_key(req: SimRequest, now: int) -> tuple[int, int]:
        """Earliest deadline first, but requests already past their deadline after all others: serving a
        lost cause first would make the requests behind it late too (EDF's overload domino effect)."""
        dl = req.deadline(req.generated + 1)
        return (1 if dl < now else 0, dl)

    def enqueue_prefilled(self, req: SimRequest, now: int) -> None:
        """Decode role: a request whose KV has arrived from a prefill instance."""
        req.state = WAITING
        self.ready.append(req)
        self.wake(now)

    def wake(self, now: int) -> None:
        """New work arrived at ``now``: start iterating if idle, or cut a fast-path run at the next boundary.

        Exactness: stepping one event per iteration would have a step event at every boundary. If ``now`` is
        exactly a boundary, that virtual event counts as already handled iff the host has already processed an
        event at ``now`` whose key is above the step's key (``host.processed_past_step``); then the iteration
        starting at ``now`` is already planned without the new work, as it would be when stepping.
        """
        if self._in_step:
            return  # the planning that follows this step sees the new work
        if not self._scheduled:
            self._scheduled = True
            self.version += 1
            self.host.schedule_step(self, now)
        elif self.plan == RUN:
            j = max(1, self._iterations_started(now))
            if j < self._run_k:
                self.kv_used -= self._plan_n * (self._run_k - j)
                self._run_k = j
                self._plan_end = self._run_end_time(j)
                self.version += 1
                self.host.schedule_step(self, self._plan_end)

    def _iterations_started(self, t: int) -> int:
        """Iterations of the current run already started at ``t`` (the one in progress counts)."""
        start, k = self._run_start, self._run_k
        if t <= start:
            strict, exact = 0, t == start
        elif self._run_ends is None:
            full, rem = divmod(t - start, self._run_d)
            strict, exact = (full + 1, False) if rem else (full, True)
        else:
            ends = self._run_ends
            i = bisect_left(ends, t, 0, k - 1)  # iteration i+2 starts at ends[i]
            strict = 1 + i
            exact = i < k - 1 and ends[i] == t
        if exact and self.host.processed_past_step(self, t):
            strict += 1
        return min(k, strict)

    def _run_end_time(self, j: int) -> int:
        if self._run_ends is None:
            return self._run_start + j * self._run_d
        return self._run_ends[j - 1]

    # ---- the event handler --------------------------------------------------------------------------------
    def step(self, now: int, version: int) -> None:
        """Handle this instance's step event: finish the planned iteration(s), plan the next."""
        if version != self.version:
            return  # superseded (the run was cut)
        self._scheduled = False
        self._in_step = True
        try:
            if self.plan == RUN:
                self._complete_run(now)
            elif self.plan == SINGLE:
                self._complete_single(now)
            self.plan = NONE
            self._plan_next(now)
        finally:
            self._in_step = False

    # ---- completing iterations -----------------------------------------------------------------------------
    def _complete_run(self, now: int) -> None:
        k = self._run_k
        n = self._plan_n
        j1 = self.C + 1
        self.C += k
        self.iterations += k
        self.busy_ns += now - self._run_start
        self.kv_decode += n * k
        tracks = self._tracks
        if self._run_ends is None:
            # h(j) = j*s - E(j) is linear over a run of equal iterations, and requests join and leave only
            # between runs, so the run is represented by one point at its start holding its minimum.
            e1 = self._run_start + self._run_d
            C = self.C
            for s, cnt in self._n_by_s.items():
                if cnt:
                    h1 = j1 * s - e1
                    h2 = C * s - now
                    tracks[s].push_h(j1, h1 if h1 < h2 else h2)
        else:
            ends = self._run_ends
            for s, cnt in self._n_by_s.items():
                if cnt:
                    h = min((j1 + i) * s - ends[i] for i in range(k))
                    tracks[s].push_h(j1, h)
        if self.on_tokens is not None:
            self.on_tokens(self, list(self.decoding.values()), now)
        self._pop_finished(now)

    def _complete_single(self, now: int) -> None:
        self.C += 1
        self.iterations += 1
        self.busy_ns += now - self._run_start
        n = self._plan_n
        emitted: list[SimRequest] | None = [] if self.on_tokens is not None else None
        if n:
            self.kv_decode += n
            C = self.C
            for s, cnt in self._n_by_s.items():
                if cnt:
                    self._tracks[s].push(C, now)
            if emitted is not None:
                emitted.extend(self.decoding.values())
        for req, c in self._chunks:
            req.prefilled += c
            if req.prefilled >= req.prefill_target:
                if emitted is not None:
                    emitted.append(req)
                self._prefill_done(req, now)
        self._chunks = []
        if emitted is not None and emitted and self.on_tokens is not None:
            self.on_tokens(self, emitted, now)
        self._pop_finished(now)

    def _prefill_done(self, req: SimRequest, now: int) -> None:
        self.prefilling.remove(req)
        k = req.generated + 1  # index of the token emitted now
        if k == 1:
            req.first_token_time = now
            req.prefill_done_time = now
            req.ttft_slack = req.arrival + req.ttft - now
        else:
            slack = req.arrival + req.ttft + (k - 1) * req.tpot - now
            if slack < req.worst_slack:
                req.worst_slack = slack
        req.generated = k
        if k == 1:
            self.host.on_first_token(self, req, now)
        if k >= req.output_tokens:
            self.kv_used -= req.prefilled
            req.state = DONE
            req.finish_time = now
            self.host.on_finish(self, req, now)
        elif self.role == "prefill":
            self.kv_used -= req.prefilled
            req.prefilled = 0
            self.host.on_handoff(self, req, now)
        else:
            self._join_decode(req)

    def _join_decode(self, req: SimRequest) -> None:
        req.state = DECODING
        c0 = self.C
        req.c0 = c0
        req.g0 = req.generated
        s = req.tpot
        req.K = req.arrival + req.ttft + (req.g0 - c0 - 1) * s
        self.decoding[req.rid] = req
        if req.ttft_slack is None or req.ttft_slack >= 0:
            insort(self._k_by_s.setdefault(s, []), req.K)
        heapq.heappush(self._fin, (c0 + req.output_tokens - req.g0, req.rid, req))
        self.kv_decode += req.prefill_target
        cnt = self._n_by_s.get(s)
        if cnt is None:
            self._tracks[s] = SlackTrack(s)
            cnt = 0
        elif cnt == 0:
            self._tracks[s].trim_before(c0 + 1)
        self._n_by_s[s] = cnt + 1

    def _leave_decode(self, req: SimRequest) -> int:
        """Remove a decoding request; settle its token count and worst slack. Returns the KV it held."""
        del self.decoding[req.rid]
        s = req.tpot
        if req.ttft_slack is None or req.ttft_slack >= 0:
            ks = self._k_by_s[s]
            del ks[bisect_left(ks, req.K)]
        done = self.C - req.c0
        if done > 0:
            m = self._tracks[s].min_from(req.c0 + 1)
            if m is not None and req.K + m < req.worst_slack:
                req.worst_slack = req.K + m
        req.generated = req.g0 + done
        self._n_by_s[s] -= 1
        held = req.prefill_target + done
        self.kv_used -= held
        self.kv_decode -= held
        return held

    def _pop_finished(self, now: int) -> None:
        fin = self._fin
        C = self.C
        while fin and fin[0][0] <= C:
            j, rid, req = heapq.heappop(fin)
            if self.decoding.get(rid) is not req or req.c0 + req.output_tokens - req.g0 != j:
                continue  # stale: preempted earlier (a fresh entry exists if it rejoined)
            self._leave_decode(req)
            req.state = DONE
            req.finish_time = now
            self.host.on_finish(self, req, now)

    # ---- preemption -------------------------------------------------------------------------------------
    def _victim(self) -> SimRequest:
        if not self._edf:
            if self.prefilling:
                return self.prefilling[-1]
            return next(reversed(self.decoding.values()))
        cands = list(self.prefilling) + list(self.decoding.values())
        return max(cands, key=lambda r: (r.deadline(self.generated(r) + 1), r.rid))

    def _preempt(self, req: SimRequest, now: int) -> None:
        if req.state == DECODING:
            self._leave_decode(req)
        else:
            self.prefilling.remove(req)
            self.kv_used -= req.prefilled
        req.prefilled = 0
        req.prefill_target = req.input_tokens + req.generated
        req.preemptions += 1
        self.preemptions += 1
        req.state = WAITING
        if self._edf:
            heapq.heappush(self._wheap, (self._edf_key(req, now), req.rid, req))
        else:
            self.waiting.appendleft(req)
        self.host.on_preempt(self, req, now)

    # ---- planning the next iteration ----------------------------------------------------------------------
    def _peek_waiting(self) -> SimRequest | None:
        if self._edf:
            return self._wheap[0][2] if self._wheap else None
        return self.waiting[0] if self.waiting else None

    def _pop_waiting(self) -> SimRequest:
        if self._edf:
            return heapq.heappop(self._wheap)[2]
        return self.waiting.popleft()

    def _step_ns(self, n: int, kv: int, prefill: int) -> int:
        if prefill == 0 and self._kv_indep:
            d = self._step_cache.get(n)
            if d is None:
                d = max(1, round(self.model.iteration_time(n, kv, 0) * 1e9))  # type: ignore[attr-defined]
                self._step_cache[n] = d
            return d
        return max(1, round(self.model.iteration_time(n, kv, prefill) * 1e9))  # type: ignore[attr-defined]

    def _plan_next(self, now: int) -> None:
        if self._aborted:
            self._drop_aborted()
        cap = self.kv_capacity
        n = len(self.decoding)
        if (
            n
            and self.fast
            and not (self.prefilling or self.waiting or self._wheap or self.ready)
            and self.kv_used + n <= cap
        ):
            # the common case: a decode-only batch with nothing to admit
            self.kv_used += n
            self._plan_n = n
            self._run_start = now
            self._plan_run(now, n)
            return
        ready = self.ready
        while True:
            n = len(self.decoding)
            while n and self.kv_used + n > cap:
                self._preempt(self._victim(), now)
                n = len(self.decoding)
            # decode role: requests whose KV has arrived join the batch (vLLM schedules them with the waiting)
            while ready and n + len(self.prefilling) < self.max_num_seqs:
                req = ready[0]
                if self.kv_used + n + req.prefill_target + 1 > cap:
                    break
                ready.popleft()
                req.instances.append(self.sid)
                if req.scheduled_time < 0:
                    req.scheduled_time = now
                self.kv_used += req.prefill_target
                req.prefilled = req.prefill_target
                self._join_decode(req)
                n += 1
            if self._dynamic:
                budget = self._dynamic_budget(n, now)
            else:
                budget = self._budget - n
            chunks: list[tuple[SimRequest, int]] = []
            kv_free = cap - self.kv_used - n
            for req in self.prefilling:
                if budget <= 0 or kv_free <= 0:
                    break
                c = min(req.prefill_target - req.prefilled, budget, kv_free)
                chunks.append((req, c))
                budget -= c
                kv_free -= c
            blocked_by_budget = False
            seats = self.max_num_seqs - n - len(self.prefilling)
            while seats > 0:
                req = self._peek_waiting()
                if req is None:
                    break
                if self.shed_lost is not None and req.generated == 0 and self.shed_lost(req, now):
                    self._pop_waiting()
                    req.state = DONE
                    self.host.on_shed(self, req, now)
                    continue
                if budget <= 0:
                    blocked_by_budget = True
                    break
                c = min(req.prefill_target, budget)
                if c > kv_free:
                    break
                self._pop_waiting()
                req.state = PREFILLING
                req.prefilled = 0
                self.prefilling.append(req)
                req.instances.append(self.sid)
                if req.scheduled_time < 0:
                    req.scheduled_time = now
                chunks.append((req, c))
                seats -= 1
                budget -= c
                kv_free -= c
            if n or chunks:
                break
            if self.prefilling:
                # partial prefills hold all the KV and none can continue: recompute the newest later
                self._preempt(self.prefilling[-1], now)
                continue
            return  # idle
        prefill_tokens = 0
        for _, c in chunks:
            prefill_tokens += c
        self.kv_used += n + prefill_tokens
        self._plan_n = n
        self._run_start = now
        if not chunks and self.fast and not blocked_by_budget:
            self._plan_run(now, n)
            return
        self._chunks = chunks
        self._run_ends = None
        self._run_k = 1
        d = self._step_ns(n, self.kv_decode, prefill_tokens)
        self._run_d = d
        self.plan = SINGLE
        self._arm(now + d)

    def _plan_run(self, now: int, n: int) -> None:
        """Plan a fast-path run of decode-only iterations (the first one's KV is already allocated)."""
        cap = self.kv_capacity
        k = self._fin[0][0] - self.C
        more_kv = (cap - self.kv_used) // n
        if more_kv + 1 < k:
            k = more_kv + 1
        if self._kv_indep:
            d = self._step_cache.get(n)
            if d is None:
                d = self._step_ns(n, self.kv_decode, 0)
            self._run_ends = None
            self._run_d = d
            end = now + k * d
        else:
            ends = []
            t = now
            kv = self.kv_decode
            for _ in range(k):
                t += self._step_ns(n, kv, 0)
                ends.append(t)
                kv += n
            self._run_ends = ends
            end = t
        self.kv_used += n * (k - 1)
        self._run_k = k
        self.plan = RUN
        self._arm(end)

    def _arm(self, end: int) -> None:
        if self.kv_used > self.peak_kv:
            self.peak_kv = self.kv_used
        self._plan_end = end
        self._scheduled = True
        self.version += 1
        self.host.schedule_step(self, end)

    def _next_deadline(self, now: int) -> tuple[float, float]:
        """(the earliest next-token deadline not already missed, the tightest TPOT among those requests), ns;
        (INF, INF) when every decoding request has missed. Requests that missed their first token are not in
        the index: nothing is left to protect for them."""
        tight = nxt = INF
        C1 = self.C + 1
        for s, ks in self._k_by_s.items():
            i = bisect_left(ks, now - C1 * s)  # the first K whose next deadline K + C1 * s >= now
            if i < len(ks):
                dl = ks[i] + C1 * s
                if dl < nxt:
                    nxt = dl
                if s < tight:
                    tight = s
        return nxt, tight

    def _dynamic_budget(self, n: int, now: int) -> int:
        if n == 0:
            return self._budget  # no decode token to protect: the static budget
        nxt, tight = self._next_deadline(now)
        if nxt == INF:
            return self._budget - n
        info = BatchInfo(
            num_decode=n,
            kv_decode_tokens=self.kv_decode,
            kv_used=self.kv_used,
            kv_capacity=self.kv_capacity,
            max_num_batched_tokens=self.max_num_batched_tokens,
            min_next_deadline=nxt / 1e9,
            tightest_tpot=tight / 1e9 if tight != INF else INF,
        )
        return int(self.scheduler.prefill_budget(info, self.model, now / 1e9))
