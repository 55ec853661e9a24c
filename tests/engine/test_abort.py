"""Aborting a request frees its seat and KV: at once if it waits, at the next iteration boundary if it runs.

The instance tests here run on a hand-stepped virtual host; the HTTP tests check that a client that goes away
(stream closed, request cancelled) aborts its request in the engine.
"""

from __future__ import annotations

import asyncio
import random

import pytest

from polyserve.policy import SCHEDULERS
from polyserve.sim.instance import Instance
from polyserve.sim.request import DONE, SimRequest

from .helpers import client_for, completion, linear, make_app, run


class StepHost:
    """A Host whose single pending step is run by hand; records tokens and finishes."""

    def __init__(self) -> None:
        self.next: tuple[int, int] | None = None
        self.tokens: dict[int, int] = {}
        self.finished: list[int] = []
        self.preempted = 0

    def schedule_step(self, inst, t: int) -> None:
        self.next = (t, inst.version)

    def processed_past_step(self, inst, t: int) -> bool:
        return False

    def on_first_token(self, inst, req, t) -> None:
        pass

    def on_finish(self, inst, req, t) -> None:
        self.finished.append(req.rid)

    def on_handoff(self, inst, req, t) -> None:
        raise AssertionError("no hand-off in a mixed instance")

    def on_preempt(self, inst, req, t) -> None:
        self.preempted += 1

    def on_tokens(self, inst, reqs, t) -> None:
        for r in reqs:
            self.tokens[r.rid] = self.tokens.get(r.rid, 0) + 1

    def step(self, inst) -> int | None:
        if self.next is None:
            return None
        t, v = self.next
        self.next = None
        inst.step(t, v)
        return t


def instance(kv: int = 10_000, seqs: int = 256, budget: int = 8192, queue: str = "fcfs"):
    host = StepHost()
    inst = Instance(
        0,
        "mixed",
        linear(),
        kv,
        SCHEDULERS.create(queue),
        host,
        max_num_seqs=seqs,
        max_num_batched_tokens=budget,
        fast=False,
    )
    inst.on_tokens = host.on_tokens
    return inst, host


def req(rid: int, prompt: int = 4, out: int = 10) -> SimRequest:
    return SimRequest(rid, rid, 0, prompt, out, 0, 0, 1)


def test_abort_of_a_waiting_request_removes_it_at_once() -> None:
    inst, host = instance(seqs=1)
    a, b = req(0), req(1)
    inst.enqueue(a, 0)
    inst.enqueue(b, 0)
    host.step(inst)  # a admitted; b waits for a seat
    assert inst.num_waiting == 1
    inst.abort(b)
    assert inst.num_waiting == 0 and b.state == DONE
    while host.step(inst) is not None:
        pass
    assert host.tokens == {0: 10} and host.finished == [0]
    assert inst.kv_used == 0 and inst.is_empty()


@pytest.mark.parametrize("queue", ["fcfs", "edf"])
def test_abort_of_a_decoding_request_frees_its_kv_at_the_next_boundary(queue: str) -> None:
    inst, host = instance(queue=queue)
    a, b = req(0, out=50), req(1, out=5)
    inst.enqueue(a, 0)
    inst.enqueue(b, 0)
    for _ in range(3):
        host.step(inst)
    assert inst.num_running == 2 and inst.kv_used > 0
    inst.abort(a)
    assert inst.pending_aborts == 1  # still in the iteration in flight
    host.step(inst)
    assert inst.num_running == 1 and inst.pending_aborts == 0 and a.state == DONE
    tokens_a = host.tokens[0]
    while host.step(inst) is not None:
        pass
    assert host.tokens[0] == tokens_a  # nothing after the boundary
    assert host.tokens[1] == 5
    assert inst.kv_used == 0 and inst.kv_decode == 0 and inst.is_empty()


def test_abort_mid_chunked_prefill_releases_the_prefilled_chunk() -> None:
    inst, host = instance(budget=16)
    a = req(0, prompt=100, out=3)
    inst.enqueue(a, 0)
    host.step(inst)  # planning: first 16-token chunk
    host.step(inst)  # chunk done, next planned
    assert a.prefilled > 0 and inst.kv_used > 0
    inst.abort(a)
    host.step(inst)
    assert inst.kv_used == 0 and inst.num_running == 0 and host.next is None
    assert 0 not in host.tokens


def test_abort_of_a_preempted_request_waiting_for_recompute() -> None:
    inst, host = instance(kv=30)
    a, b = req(0, prompt=10, out=15), req(1, prompt=10, out=15)
    inst.enqueue(a, 0)
    inst.enqueue(b, 0)
    while host.preempted == 0:
        assert host.step(inst) is not None
    victim = next(r for r in (a, b) if r.state != DONE and r.rid not in inst.decoding)
    inst.abort(victim)
    while host.step(inst) is not None:
        pass
    other = b if victim is a else a
    assert host.tokens[other.rid] == 15
    assert inst.kv_used == 0 and inst.is_empty()


@pytest.mark.parametrize("seed", range(8))
def test_kv_and_seats_are_conserved_under_random_aborts(seed: int) -> None:
    """Whatever is aborted when, the instance ends empty with no KV held, and every request that was not
    aborted got exactly its tokens."""
    rng = random.Random(seed)
    inst, host = instance(
        kv=rng.choice([60, 200, 10_000]), seqs=rng.choice([2, 4, 64]), budget=rng.choice([8, 64])
    )
    reqs = [req(i, prompt=rng.randint(1, 20), out=rng.randint(1, 20)) for i in range(30)]
    aborted: set[int] = set()
    pending = list(reqs)
    t = 0
    for _ in range(2000):
        if pending and rng.random() < 0.3:
            inst.enqueue(pending.pop(0), t)
        if rng.random() < 0.1:
            live = [r for r in reqs if r.state != DONE and r not in pending]
            if live:
                victim = rng.choice(live)
                inst.abort(victim)
                aborted.add(victim.rid)
        nt = host.step(inst)
        t = nt if nt is not None else t
        assert 0 <= inst.kv_used <= inst.kv_capacity
        if not pending and host.next is None:
            break
    while host.step(inst) is not None:
        pass
    assert inst.kv_used == 0 and inst.kv_decode == 0 and inst.is_empty()
    for r in reqs:
        if r.rid not in aborted:
            assert host.tokens.get(r.rid) == r.output_tokens, r.rid


# ---- through HTTP -----------------------------------------------------------------------------------------
def test_closing_a_stream_aborts_its_request_and_frees_kv() -> None:
    async def main():
        app = make_app(linear(5.0, 0.0, 0.5), time_scale=10)
        core_state = {}
        async with client_for(app) as c:
            async with c.stream("POST", "/v1/completions", json=completion(50, 10_000)) as r:
                n = 0
                async for line in r.aiter_lines():
                    if line.startswith("data: "):
                        n += 1
                        if n == 3:
                            break
                core = app.state.engine.core
                core_state["during"] = (core.num_running, core.instance.kv_used)
            await asyncio.sleep(0.01)  # > one iteration (0.5 ms wall)
            core_state["after"] = (
                core.num_running,
                core.instance.kv_used,
                core.num_live,
                core.instance.aborts,
            )
        return core_state

    s = run(main())
    assert s["during"][0] == 1 and s["during"][1] > 50
    assert s["after"] == (0, 0, 0, 1)


def test_closing_a_stream_that_still_waits_removes_it_from_the_queue_at_once() -> None:
    async def main():
        app = make_app(linear(5.0, 0.0, 0.5), time_scale=10, max_num_seqs=1)
        async with client_for(app) as c:
            # the first holds the only seat for ~170 ms (wall)
            first = asyncio.ensure_future(c.post("/v1/completions", json=completion(2, 300, stream=False)))
            await asyncio.sleep(0.002)
            async with c.stream("POST", "/v1/completions", json=completion(2, 30)) as r:
                assert r.status_code == 200
                core = app.state.engine.core
                waiting_before = core.num_waiting
            waiting_after = core.num_waiting
            doc = (await first).json()
        return waiting_before, waiting_after, doc["usage"]["completion_tokens"]

    assert run(main()) == (1, 0, 300)


def test_cancelling_a_non_streaming_request_aborts_it() -> None:
    async def main():
        app = make_app(linear(5.0, 0.0, 0.5), time_scale=10)
        async with client_for(app) as c:
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(0.05):
                    await c.post("/v1/completions", json=completion(2, 100_000, stream=False))
            await asyncio.sleep(0.01)
            core = app.state.engine.core
            return core.num_running, core.num_live, core.instance.kv_used

    assert run(main()) == (0, 0, 0)
