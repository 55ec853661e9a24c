"""Actuators: the only part of the gateway that changes the world when the policy scales.

The contract (``Actuator``), called by the ``Dispatcher`` on the event loop, never blocking:

- ``activate(sid)``: the server joined a tier (from the idle pool). The ledger has already moved it; the
  actuator makes sure the backend runs. Requests dispatched to it meanwhile wait on ``wait_ready``;
- ``deactivate(sid)``: the server went back to the idle pool, *already drained* (the dispatcher holds a busy
  server in ``draining`` until its last request finishes, so nothing is cut off);
- ``is_ready(sid)`` / ``wait_ready(sid)``: whether requests may be sent now / wait until they may. A backend
  that failed to start makes ``wait_ready`` raise ``UpstreamFailure("connect")``, so the request is retried
  elsewhere and the server marked dead;
- ``expects_up(sid)``: whether the backend should answer now (the scraper does not call a server that was
  stopped on purpose dead);
- ``supervise()``: called on every scrape round; replaces a backend that died on its own (a local engine
  process killed or crashed is started again: a new process, a new port) and returns the servers replaced.
  Until the replacement answers, the scraper has marked the server dead, so nothing is routed to it;
- ``aclose()``: stop whatever the actuator started.

Tier moves need no actuator call: they are instant in the router (a server's tier is only the router's
bookkeeping; engines are SLO-unaware).

``StaticActuator``: fixed backends (real vLLM/SGLang): the idle pool is servers the router does not use;
nothing starts or stops. ``LocalEngineActuator``: each server is a local emulated engine subprocess
(``polyserve.engine.process``); with ``stop_idle`` a server released to the idle pool is stopped (SIGTERM)
and started again (a new process, a new port) when the policy activates it, which makes its cold start
(~1-2 s) real. Starting and stopping run in worker threads, one at a time per server, so the loop never
blocks.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Protocol

from polyserve.gateway.backend import Backend
from polyserve.serving.upstream import UpstreamFailure


class Actuator(Protocol):
    def activate(self, sid: int) -> None: ...

    def deactivate(self, sid: int) -> None: ...

    def is_ready(self, sid: int) -> bool: ...

    async def wait_ready(self, sid: int) -> None: ...

    def expects_up(self, sid: int) -> bool: ...

    def supervise(self) -> list[int]: ...

    async def aclose(self) -> None: ...


class EngineHandle(Protocol):
    """A started engine, as ``LocalEngineActuator``'s ``start`` returns it (``engine.process.EngineProcess``)."""

    url: str

    def stop(self) -> int: ...

    def alive(self) -> bool: ...


class StaticActuator:
    """Fixed backends: scaling moves servers in the router only."""

    def activate(self, sid: int) -> None:
        pass

    def deactivate(self, sid: int) -> None:
        pass

    def is_ready(self, sid: int) -> bool:
        return True

    async def wait_ready(self, sid: int) -> None:
        return None

    def expects_up(self, sid: int) -> bool:
        return True

    def supervise(self) -> list[int]:
        return []  # a fixed backend is someone else's to restart

    async def aclose(self) -> None:
        return None


class LocalEngineActuator:
    """Local emulated engines, one subprocess per server.

    ``start(sid)`` (blocking; run in a thread) returns a started engine with ``.url`` and ``.stop()``;
    by default it is ``polyserve.engine.process.launch_engine(config)``. ``engines`` are ones already
    running (``polyserve up`` starts them all at once, in the idle pool). ``backends`` are the gateway's
    records whose ``url`` is updated when a server restarts on a new port.
    """

    def __init__(
        self,
        backends: list[Backend],
        start: Callable[[int], object],
        engines: dict[int, object] | None = None,
        *,
        stop_idle: bool = True,
    ) -> None:
        self.backends = backends
        self._start = start
        self.engines: dict[int, object] = dict(engines or {})
        self.stop_idle = stop_idle
        self._want: dict[int, bool] = {b.sid: b.sid in self.engines for b in backends}
        self._ready: dict[int, asyncio.Event] = {}
        self._failed: dict[int, str] = {}
        self._tasks: dict[int, asyncio.Task[None]] = {}
        self.starts = 0
        self.stops = 0
        self.replaced = 0

    def _event(self, sid: int) -> asyncio.Event:
        ev = self._ready.get(sid)
        if ev is None:
            ev = self._ready[sid] = asyncio.Event()
            if sid in self.engines:
                ev.set()
        return ev

    def activate(self, sid: int) -> None:
        self._want[sid] = True
        self._failed.pop(sid, None)
        self._reconcile(sid)

    def deactivate(self, sid: int) -> None:
        if self.stop_idle:
            self._want[sid] = False
            self._reconcile(sid)

    def is_ready(self, sid: int) -> bool:
        return sid in self.engines and self._event(sid).is_set() and sid not in self._tasks

    async def wait_ready(self, sid: int) -> None:
        while not self.is_ready(sid):
            if sid in self._failed:
                raise UpstreamFailure("connect", self._failed[sid], retryable=True)
            task = self._tasks.get(sid)
            if task is not None:
                await asyncio.shield(task)
            elif not self._want.get(sid):
                raise UpstreamFailure("connect", f"server {sid} is stopped", retryable=True)
            else:
                self._reconcile(sid)
                await asyncio.sleep(0)

    def expects_up(self, sid: int) -> bool:
        return self.is_ready(sid)

    def supervise(self) -> list[int]:
        """Start a new engine for every wanted server whose process has exited (killed, crashed, OOM)."""
        dead = [sid for sid, e in self.engines.items()
                if self._want.get(sid) and sid not in self._tasks and not e.alive()]  # type: ignore[attr-defined]
        for sid in dead:
            self.engines.pop(sid)
            self._event(sid).clear()
            self.replaced += 1
            self._reconcile(sid)
        return dead

    def _reconcile(self, sid: int) -> None:
        if sid in self._tasks:
            return  # the running task re-checks the wish when it finishes
        if self._want.get(sid) == (sid in self.engines):
            return
        self._tasks[sid] = asyncio.get_running_loop().create_task(self._drive(sid))

    async def _drive(self, sid: int) -> None:
        try:
            while self._want.get(sid) != (sid in self.engines):
                if self._want.get(sid):
                    try:
                        eng = await asyncio.to_thread(self._start, sid)
                    except Exception as e:  # EngineStartError and anything the launcher raised
                        self._failed[sid] = f"engine for server {sid} failed to start: {e}"
                        self._want[sid] = False
                        return
                    self.engines[sid] = eng
                    self.backends[sid].url = eng.url  # type: ignore[attr-defined]
                    self.starts += 1
                    self._event(sid).set()
                else:
                    eng = self.engines.pop(sid)
                    self._event(sid).clear()
                    await asyncio.to_thread(eng.stop)  # type: ignore[attr-defined]
                    self.stops += 1
        finally:
            self._tasks.pop(sid, None)

    async def aclose(self) -> None:
        for t in list(self._tasks.values()):
            with contextlib.suppress(BaseException):
                await t
        engines = list(self.engines.values())
        self.engines.clear()
        await asyncio.gather(*(asyncio.to_thread(e.stop) for e in engines), return_exceptions=True)  # type: ignore[attr-defined]

    def close_sync(self) -> None:
        """Stop every engine from outside the loop (shutdown paths, ``polyserve up``'s finally)."""
        for e in list(self.engines.values()):
            with contextlib.suppress(Exception):
                e.stop()  # type: ignore[attr-defined]
        self.engines.clear()
