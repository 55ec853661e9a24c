"""LocalEngineActuator: starts an engine when the policy activates a server, stops it after the drain."""

from __future__ import annotations

import asyncio
import time

import pytest

from polyserve.gateway.actuator import LocalEngineActuator, StaticActuator
from polyserve.gateway.backend import Backend
from polyserve.serving.upstream import UpstreamFailure

from .helpers import run


class FakeEngine:
    def __init__(self, url: str, log: list[str]) -> None:
        self.url = url
        self.log = log

        self.dead = False

    def stop(self) -> int:
        time.sleep(0.01)
        self.log.append(f"stop {self.url}")
        return 0

    def alive(self) -> bool:
        return not self.dead


def test_activate_starts_deactivate_stops_and_restarts_on_a_new_url() -> None:
    async def main():
        log: list[str] = []
        counter = iter(range(100))

        def start(sid: int) -> FakeEngine:
            time.sleep(0.02)
            url = f"http://e{sid}-{next(counter)}"
            log.append(f"start {url}")
            return FakeEngine(url, log)

        backends = [Backend(0, "http://none"), Backend(1, "http://none")]
        act = LocalEngineActuator(backends, start, stop_idle=True)
        assert not act.is_ready(0)
        act.activate(0)
        await act.wait_ready(0)
        assert act.is_ready(0) and backends[0].url == "http://e0-0"
        act.deactivate(0)
        act.activate(0)  # re-activated before the stop began: the running engine is kept
        await act.wait_ready(0)
        assert backends[0].url == "http://e0-0"
        act.deactivate(0)
        assert not act.is_ready(0)
        for _ in range(100):
            if 0 not in act.engines and not act._tasks:
                break
            await asyncio.sleep(0.01)
        act.activate(0)  # stopped: started again, on a new URL
        await act.wait_ready(0)
        assert backends[0].url == "http://e0-1"
        with pytest.raises(UpstreamFailure):
            await act.wait_ready(1)  # never activated: not running
        await act.aclose()
        return log, act

    log, act = run(main())
    assert log == ["start http://e0-0", "stop http://e0-0", "start http://e0-1", "stop http://e0-1"]
    assert act.starts == 2 and act.stops == 1


def test_a_failed_start_is_reported_as_a_connect_failure() -> None:
    async def main():
        def start(sid: int) -> FakeEngine:
            raise RuntimeError("port taken")

        act = LocalEngineActuator([Backend(0, "http://x")], start)
        act.activate(0)
        with pytest.raises(UpstreamFailure) as e:
            await act.wait_ready(0)
        return e.value

    e = run(main())
    assert e.kind == "connect" and "port taken" in e.message


def test_keep_idle_leaves_engines_running_and_static_is_always_ready() -> None:
    async def main():
        log: list[str] = []
        eng = FakeEngine("http://e0", log)
        act = LocalEngineActuator([Backend(0, "http://e0")], lambda sid: eng, {0: eng}, stop_idle=False)
        act.activate(0)
        act.deactivate(0)
        await asyncio.sleep(0.05)
        ready = act.is_ready(0)
        await act.aclose()
        s = StaticActuator()
        s.activate(0)
        await s.wait_ready(0)
        return ready, log, s.is_ready(0)

    ready, log, static_ready = run(main())
    assert ready and log == ["stop http://e0"] and static_ready


def test_a_killed_engine_is_replaced_by_a_new_one_on_a_new_url() -> None:
    async def main():
        log: list[str] = []
        counter = iter(range(100))

        def start(sid: int) -> FakeEngine:
            return FakeEngine(f"http://e{sid}-{next(counter)}", log)

        backends = [Backend(0, "http://none"), Backend(1, "http://none")]
        act = LocalEngineActuator(backends, start, stop_idle=True)
        act.activate(0)
        await act.wait_ready(0)
        first = act.engines[0]
        assert act.supervise() == []  # alive: left alone
        first.dead = True  # SIGKILL
        assert act.supervise() == [0] and not act.is_ready(0)
        await act.wait_ready(0)
        assert backends[0].url == "http://e0-1" and act.replaced == 1
        act.deactivate(0)  # released on purpose and stopped: not a death
        for _ in range(100):
            if 0 not in act.engines and not act._tasks:
                break
            await asyncio.sleep(0.01)
        assert act.supervise() == [] and StaticActuator().supervise() == []
        await act.aclose()
        return act

    act = run(main())
    assert act.starts == 2 and act.replaced == 1


def test_a_sigkilled_engine_process_is_replaced_by_a_new_process_that_answers() -> None:
    """Real processes: the engine behind server 0 is SIGKILLed; supervise() starts a new one, on a new port."""
    import signal

    import httpx

    from polyserve.engine import EngineConfig, launch_engine

    async def main():
        backends = [Backend(0, "http://none")]
        act = LocalEngineActuator(backends, lambda sid: launch_engine(EngineConfig(time_scale=20)), stop_idle=True)
        try:
            act.activate(0)
            await act.wait_ready(0)
            first = act.engines[0]
            first.proc.send_signal(signal.SIGKILL)
            first.proc.wait(10)
            assert act.supervise() == [0]
            await act.wait_ready(0)
            async with httpx.AsyncClient(timeout=10) as c:
                r = await c.get(backends[0].url + "/health")
            return first.url, backends[0].url, r.status_code, act.engines[0].alive()
        finally:
            await act.aclose()

    old, new, status, alive = run(main())
    assert new != old and status == 200 and alive
