"""``RealtimeHost``: runs one simulator ``Instance`` on the wall clock instead of the virtual one.

The simulator's event loop is one ``Host`` (virtual time: events pop off a heap as fast as they can); this is
the other implementation of the same protocol, after SimPy's ``RealtimeEnvironment``: only *when* a step runs
differs. The instance plans an iteration ending at virtual time ``t`` (ns since the host started) and calls
``schedule_step(inst, t)``; the host arms an asyncio timer for wall time ``t0 + t / 1e9 / time_scale`` that
calls ``inst.step(t, version)``.

The virtual timeline stays exact whatever the timer jitter: a step runs at its *planned* virtual time, and the
next iteration is planned from there, so a late timer delays delivery by the lag but never stretches the model
(a timer already in the past fires on the next loop turn and the schedule catches up). New work (an arrival,
an abort) first runs ``catch_up``: every step already due on the wall clock is processed before the new event
is stamped, so events keep the order they would have in the simulator.

No fast path: the instance must run with ``fast=False`` (one event per iteration) so every token is observed
as it is produced; ``processed_past_step`` is never asked then and answers False.

Failure mode: an exception inside a step (a bug) is handed to ``listener.on_error`` (the engine fails every
live request with it) instead of silently stopping the timer chain.
"""

from __future__ import annotations

import asyncio
from typing import Protocol

from polyserve.sim.instance import Instance
from polyserve.sim.request import SimRequest

NS = 1_000_000_000


class HostListener(Protocol):
    """What the engine wants to hear from the instance (times are virtual ns)."""

    def on_tokens(self, inst: Instance, reqs: list[SimRequest], t: int) -> None: ...
    def on_finish(self, inst: Instance, req: SimRequest, t: int) -> None: ...
    def on_preempt(self, inst: Instance, req: SimRequest, t: int) -> None: ...
    def on_error(self, exc: BaseException) -> None: ...


class RealtimeHost:
    """Host of one instance on the running asyncio loop; ``time_scale`` > 1 runs the model faster."""

    def __init__(self, loop: asyncio.AbstractEventLoop, time_scale: float, listener: HostListener) -> None:
        self.loop = loop
        self.time_scale = float(time_scale)
        self.listener = listener
        self.t0 = loop.time()
        self._timers: dict[int, tuple[asyncio.TimerHandle, int, int]] = {}  # sid -> (handle, t, version)
        self._last = 0  # virtual time of the last event processed (never decreases)

    # ---- clock --------------------------------------------------------------------------------------------
    def now(self) -> int:
        """Virtual ns now: wall time since start times the scale (never before the last event processed)."""
        t = int((self.loop.time() - self.t0) * self.time_scale * NS)
        return t if t > self._last else self._last

    def wall(self, t: int) -> float:
        """The loop time (s) at which virtual time ``t`` is due."""
        return self.t0 + t / NS / self.time_scale

    def catch_up(self, inst: Instance) -> int:
        """Process every step of ``inst`` due by now; returns the virtual now at which new work is stamped."""
        now = self.now()
        while True:
            entry = self._timers.get(inst.sid)
            if entry is None or entry[1] > now:
                return max(now, self._last)
            entry[0].cancel()
            self._fire(inst, entry[1], entry[2])

    def close(self) -> None:
        """Cancel pending timers (the engine is shutting down or being rebuilt)."""
        for handle, _, _ in self._timers.values():
            handle.cancel()
        self._timers.clear()

    # ---- Host protocol ------------------------------------------------------------------------------------
    def schedule_step(self, inst: Instance, t: int) -> None:
        old = self._timers.get(inst.sid)
        if old is not None:
            old[0].cancel()
        version = inst.version
        handle = self.loop.call_at(self.wall(t), self._fire, inst, t, version)
        self._timers[inst.sid] = (handle, t, version)

    def processed_past_step(self, inst: Instance, t: int) -> bool:
        return False  # only the fast path asks, and the engine runs without it

    def on_first_token(self, inst: Instance, req: SimRequest, t: int) -> None:
        pass  # the engine sees the first token in on_tokens

    def on_finish(self, inst: Instance, req: SimRequest, t: int) -> None:
        self.listener.on_finish(inst, req, t)

    def on_handoff(self, inst: Instance, req: SimRequest, t: int) -> None:
        raise RuntimeError("the emulated engine runs a co-located ('mixed') instance; it never hands off KV")

    def on_preempt(self, inst: Instance, req: SimRequest, t: int) -> None:
        self.listener.on_preempt(inst, req, t)

    def on_tokens(self, inst: Instance, reqs: list[SimRequest], t: int) -> None:
        self.listener.on_tokens(inst, reqs, t)

    # ---- timers -------------------------------------------------------------------------------------------
    def _fire(self, inst: Instance, t: int, version: int) -> None:
        entry = self._timers.get(inst.sid)
        if entry is not None and entry[2] == version:
            del self._timers[inst.sid]
        if t > self._last:
            self._last = t
        try:
            inst.step(t, version)
        except Exception as e:  # a bug in the model: fail loudly to every waiting client
            self.listener.on_error(e)
