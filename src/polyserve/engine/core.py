"""``EngineCore``: one emulated vLLM engine: requests in, token times out, on the running event loop.

``submit`` turns a request into a ``SimRequest`` on the simulator's ``Instance`` hosted by a ``RealtimeHost``;
each token the instance emits is put on the request's ``TokenStream`` queue (as the loop time it was due),
which the HTTP layer turns into SSE chunks. A preempted request's queue simply stays empty until it is
recomputed, as with vLLM. ``abort`` (client gone, stream crashed) frees the request's seat and KV at once if
it waits, at the next iteration boundary if it runs (``Instance.abort``).

By default the engine is SLO-unaware, like vLLM: every request gets the same (unused) SLO fields, except that with
``scheduling_policy="priority"`` the instance's deadline-ordered queue is fed a key that orders by the
request's ``priority`` (lower first), then arrival; its preemption victim is then the lowest priority, latest
arrival, which is vLLM's priority policy. With ``scheduling_policy="deadline"`` the engine runs PolyServe's
own scheduler (``polyserve-dynamic``: EDF queue and dynamic chunking; ``"edf"``: the EDF queue alone) on each
request's deadlines, given as
(seconds to the first token, seconds per token) of wall time and converted to the model's clock
(``time_scale``); a request without them is scheduled as if it had no deadline (last in the queue, never
the one a chunk is sized for).

One ``EngineCore`` belongs to one event loop (its timers live there). Several cores can share a loop (the
gateway runs N engines in one process).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field

from polyserve.core.errors import ConfigError
from polyserve.engine.config import DEADLINE_POLICIES, EngineConfig
from polyserve.engine.host import RealtimeHost
from polyserve.latency.base import kv_transfer_time
from polyserve.policy import SCHEDULERS
from polyserve.sim.config import default_max_num_batched_tokens
from polyserve.sim.instance import Instance
from polyserve.sim.request import SimRequest

# priority -> queue key: far above any arrival span (1e6 s), so priority dominates and arrival breaks ties
PRIORITY_NS = 10**15
NO_DEADLINE_NS = 10**15  # "deadline" policy, a request without an SLO: due in ~11.6 days (never binding)


@dataclass(eq=False)
class TokenStream:
    """One request's tokens as they are produced. The consumer reads ``queue`` until it has ``max_tokens``."""

    rid: int
    req: SimRequest
    prompt_tokens: int
    max_tokens: int
    arrival: float  # loop time the request reached the engine (TTFT counts from here)
    queue: asyncio.Queue[float] = field(default_factory=asyncio.Queue)  # loop time each token was due
    emitted: int = 0
    first_token: float | None = None
    last_token: float | None = None
    preemptions: int = 0
    error: BaseException | None = None  # set if the engine itself failed; the consumer raises it
    finished: bool = False


@dataclass
class EngineObserver:
    """Hooks for metrics (all optional). Times are loop seconds."""

    on_first_token: Callable[[TokenStream, float], None] | None = None  # (stream, ttft_s)
    on_token: Callable[[TokenStream, float], None] | None = None  # (stream, gap since the previous token)
    on_finish: Callable[[TokenStream, float], None] | None = None  # (stream, e2e_s)
    on_preempt: Callable[[TokenStream], None] | None = None


class EngineCore:
    def __init__(
        self,
        config: EngineConfig,
        model: object,
        loop: asyncio.AbstractEventLoop,
        observer: EngineObserver | None = None,
    ) -> None:
        self.config = config
        self.model = model
        self.loop = loop
        self.observer = observer or EngineObserver()
        kv = config.kv_capacity_tokens or model.deployment.kv_capacity_tokens  # type: ignore[attr-defined]
        if kv < 2:
            raise ConfigError(
                f"the instance has no room for KV cache ({kv} tokens); use a larger GPU or --tp"
            )
        self.kv_capacity = int(kv)
        sched = {"priority": "edf", "deadline": "polyserve-dynamic", "edf": "edf"}.get(config.scheduling_policy, "fcfs")
        self.host = RealtimeHost(loop, config.time_scale, self)
        self.instance = Instance(
            0,
            "mixed",
            model,
            self.kv_capacity,
            SCHEDULERS.create(sched),
            self.host,
            max_num_seqs=config.max_num_seqs,
            max_num_batched_tokens=config.max_num_batched_tokens
            or default_max_num_batched_tokens(config.gpu),
            fast=False,
        )
        self.instance.on_tokens = self.host.on_tokens
        self._live: dict[int, TokenStream] = {}
        self._next_rid = 0
        self.broken: BaseException | None = None

    # ---- state -------------------------------------------------------------------------------------------
    @property
    def num_running(self) -> int:
        return self.instance.num_running

    @property
    def num_waiting(self) -> int:
        return self.instance.num_waiting

    @property
    def num_live(self) -> int:
        """Requests whose client is still being served (finished ones leave at their last token)."""
        return len(self._live)

    def kv_usage(self) -> float:
        return self.instance.kv_used / self.kv_capacity

    # ---- requests ------------------------------------------------------------------------------------------
    def submit(self, prompt_tokens: int, max_tokens: int, arrival: float, priority: int = 0,
               slo: tuple[float, float] | None = None, prefilled: bool = False) -> TokenStream:
        """Queue a request now; its tokens come on the returned stream. ``arrival``: loop time it came in.
        ``slo``: (wall seconds from now to the first token's deadline, wall seconds per token).
        ``prefilled``: a disaggregated hand-off: its KV arrives after the transfer time of ``prompt + 1``
        tokens, then it decodes tokens 2..``max_tokens`` (the stream carries ``max_tokens - 1``)."""
        if self.broken is not None:
            raise RuntimeError(f"engine stopped after an internal error: {self.broken!r}")
        rid = self._next_rid
        self._next_rid += 1
        now = self.host.catch_up(self.instance)
        policy = self.config.scheduling_policy
        if policy == "priority":
            ttft, tpot = priority * PRIORITY_NS, 1
        elif policy in DEADLINE_POLICIES and slo is not None:
            scale = self.config.time_scale * 1e9  # wall seconds -> model ns
            ttft, tpot = round(slo[0] * scale), max(1, round(slo[1] * scale))
        elif policy in DEADLINE_POLICIES:
            ttft, tpot = NO_DEADLINE_NS, NO_DEADLINE_NS
        else:
            ttft, tpot = 0, 1
        req = SimRequest(rid, rid, now, prompt_tokens, max_tokens, 0, ttft, tpot)
        if prefilled:
            if max_tokens < 2:
                raise ValueError("a prefilled request must ask for at least 2 tokens (the first came with it)")
            req.prefill_target = prompt_tokens
            req.generated = 1
            stream = TokenStream(rid, req, prompt_tokens, max_tokens - 1, arrival)
            self._live[rid] = stream
            dt = kv_transfer_time(self.model.deployment, prompt_tokens + 1, self.config.kv_link_gbps)  # type: ignore[attr-defined]

            def arrived() -> None:
                if rid in self._live:  # not aborted while its KV was in flight
                    self.instance.enqueue_prefilled(req, self.host.catch_up(self.instance))

            self.loop.call_later(dt / self.config.time_scale, arrived)
            return stream
        stream = TokenStream(rid, req, prompt_tokens, max_tokens, arrival)
        self._live[rid] = stream
        self.instance.enqueue(req, now)
        return stream

    def abort(self, stream: TokenStream) -> None:
        """Stop serving ``stream``'s request and free its seat and KV (idempotent; no-op once finished)."""
        if self._live.pop(stream.rid, None) is None:
            return
        self.host.catch_up(self.instance)
        self.instance.abort(stream.req)

    def close(self) -> None:
        self.host.close()

    # ---- HostListener --------------------------------------------------------------------------------------
    def on_tokens(self, inst: Instance, reqs: list[SimRequest], t: int) -> None:
        wall = self.host.wall(t)
        obs = self.observer
        for req in reqs:
            s = self._live.get(req.rid)
            if s is None:
                continue  # aborted: its last iteration still emitted
            s.emitted += 1
            if s.first_token is None:
                s.first_token = wall
                if obs.on_first_token is not None:
                    obs.on_first_token(s, wall - s.arrival)
            elif obs.on_token is not None:
                obs.on_token(s, wall - (s.last_token or wall))
            s.last_token = wall
            s.queue.put_nowait(wall)
            if s.emitted >= s.max_tokens:
                s.finished = True
                del self._live[req.rid]
                if obs.on_finish is not None:
                    obs.on_finish(s, wall - s.arrival)

    def on_finish(self, inst: Instance, req: SimRequest, t: int) -> None:
        pass  # a stream ends with its last token (on_tokens), which may come after this call

    def on_preempt(self, inst: Instance, req: SimRequest, t: int) -> None:
        s = self._live.get(req.rid)
        if s is not None:
            s.preemptions += 1
            if self.observer.on_preempt is not None:
                self.observer.on_preempt(s)

    def on_error(self, exc: BaseException) -> None:
        self.broken = exc
        for s in list(self._live.values()):
            s.error = exc
            s.queue.put_nowait(float("nan"))
        self._live.clear()
