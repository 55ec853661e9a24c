"""Faults, in-process: every accepted request ends in a completion or an explicit error, never a hang."""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import pytest

from polyserve.engine import EngineConfig, StreamingASGITransport
from polyserve.gateway import config_from_dict, create_gateway_app

from .helpers import MODEL, Fleet, completion, harness, metric, outcomes, read_stream, run, texts


def _ok(events: list) -> bool:
    return bool(events) and events[-1] == "[DONE]"


def test_backend_failing_before_the_first_token_is_retried_on_another_server() -> None:
    async def main():
        engines = [EngineConfig(time_scale=20, fail_after=0), EngineConfig(time_scale=20)]
        async with harness(engines, {"policy": "round-robin"}) as h:
            results = [await read_stream(h.client, completion(2, 4)) for _ in range(4)]
            return results, h.gateway, len(h.fleet.seen["e0"])

    results, gw, tried_e0 = run(main())
    assert tried_e0 >= 1  # the failing engine was tried ...
    assert all(s == 200 and _ok(ev) and hd["x-polyserve-server"] == "1" for s, hd, ev in results)  # ... and none lost
    assert metric(gw, "polyserve_retries_total") >= 1
    assert metric(gw, "polyserve_backend_errors_total", backend="s0", kind="status") >= 1


def test_refused_connections_mark_the_backend_dead_and_requests_go_elsewhere() -> None:
    async def main():
        async with harness(2, {"policy": "round-robin", "scrape_interval_s": 30}) as h:
            h.fleet.down.add("e0")
            results = [await read_stream(h.client, completion(2, 3)) for _ in range(3)]
            return results, h.gateway

    results, gw = run(main())
    assert all(_ok(ev) for _, _, ev in results)
    assert not gw.dispatcher.is_healthy(0)
    assert gw.dispatcher.servers_by_state()["dead"] == 1


def test_every_backend_failing_ends_in_a_502_not_a_hang() -> None:
    async def main():
        async with harness([EngineConfig(time_scale=20, fail_after=0)], {"retries": 1}) as h:
            r = await h.client.post("/v1/completions", json=completion(2, 3))
            return r.status_code, r.json(), outcomes(h.gateway)

    code, doc, counts = run(main())
    assert code == 502 and doc["error"]["code"] == 502 and "HTTP 500" in doc["error"]["message"]
    assert counts["failed"] == 1


def test_crash_mid_stream_ends_with_an_error_event_and_no_done() -> None:
    async def main():
        async with harness([EngineConfig(time_scale=20, crash_mid_stream=3)]) as h:
            status, _, events = await read_stream(h.client, completion(2, 10))
            await asyncio.sleep(0.02)
            return status, events, h.gateway, h.core("e0").num_live

    status, events, gw, live = run(main())
    assert status == 200
    assert len(texts(events)) == 3
    assert "[DONE]" not in events
    assert events[-1]["error"]["code"] == 502
    assert outcomes(gw)["failed"] == 1 and not gw.dispatcher.fleet.entries and live == 0


class StallingEngine:
    """Answers /metrics, and streams ``tokens`` tokens then goes silent forever (a hung backend)."""

    def __init__(self, tokens: int) -> None:
        self.tokens = tokens

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return
        if scope["path"] == "/metrics":
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b""})
            return
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/event-stream")]})
        for k in range(self.tokens):
            chunk = {"choices": [{"index": 0, "text": f" t{k}", "finish_reason": None}]}
            await send(
                {"type": "http.response.body", "body": f"data: {json.dumps(chunk)}\n\n".encode(), "more_body": True}
            )
        while (await receive())["type"] != "http.disconnect":  # silent until the gateway hangs up
            pass


def _gateway_over(apps: dict, **doc):
    fleet = Fleet(apps)
    base = {"model": MODEL, "backends": [f"http://{h}" for h in apps], "policy": "round-robin",
            "timeouts": {"first_token_s": 0.3, "idle_s": 0.3}, **doc}  # fmt: skip
    return create_gateway_app(config_from_dict(base), transport=fleet), fleet


def test_a_backend_that_stops_answering_times_out_before_and_after_the_first_token() -> None:
    async def main():
        # before the first token: retried on the healthy engine; after: an error event ends the stream
        from polyserve.engine import create_engine_app

        gw, _ = _gateway_over({"e0": StallingEngine(0), "e1": create_engine_app(EngineConfig(time_scale=20))})
        async with httpx.AsyncClient(transport=StreamingASGITransport(gw), base_url="http://g", timeout=10) as c:
            before = await read_stream(c, completion(2, 3))
        await gw.aclose()
        gw2, _ = _gateway_over({"e0": StallingEngine(2)})
        async with httpx.AsyncClient(transport=StreamingASGITransport(gw2), base_url="http://g", timeout=10) as c:
            after = await asyncio.wait_for(read_stream(c, completion(2, 5)), 5)
        await gw2.aclose()
        return before, after, gw2

    (s1, h1, ev1), (s2, _, ev2), gw2 = run(main())
    assert s1 == 200 and _ok(ev1) and h1["x-polyserve-server"] == "1"
    assert s2 == 200 and len(texts(ev2)) == 2 and "[DONE]" not in ev2
    assert ev2[-1]["error"]["code"] == 504 and "idle timeout" in ev2[-1]["error"]["message"]
    assert metric(gw2, "polyserve_backend_errors_total", kind="timeout") == 1


def test_client_disconnect_aborts_upstream_and_frees_the_ledger() -> None:
    async def main():
        async with harness([EngineConfig(time_scale=5)]) as h:
            got = 0
            async with h.client.stream("POST", "/v1/completions", json=completion(2, 500)) as r:
                async for line in r.aiter_lines():
                    if line.startswith("data: {"):
                        got += 1
                        if got == 3:
                            break
            for _ in range(100):  # the engine notices at its next iteration boundary
                if h.core("e0").num_live == 0 and not h.gateway.dispatcher.fleet.entries:
                    break
                await asyncio.sleep(0.01)
            return got, h.core("e0").num_live, dict(h.gateway.dispatcher.fleet.entries), h.gateway

    got, live, entries, gw = run(main())
    assert got == 3 and live == 0 and entries == {}
    assert metric(gw, "polyserve_client_disconnects_total") == 1
    assert outcomes(gw)["failed"] == 1


def test_client_leaving_while_pending_frees_its_place() -> None:
    async def main():
        engines = [EngineConfig(time_scale=2, max_num_seqs=1)]
        doc = {"engine": {"time_scale": 2, "max_num_seqs": 1}}
        async with harness(engines, doc) as h:
            first = asyncio.ensure_future(read_stream(h.client, completion(2, 100)))  # ~0.35 s
            await asyncio.sleep(0.05)
            waiting = asyncio.ensure_future(read_stream(h.client, completion(2, 4)))
            await asyncio.sleep(0.05)
            pending_before = h.gateway.dispatcher.num_pending()
            waiting.cancel()
            await asyncio.sleep(0.05)
            pending_after = h.gateway.dispatcher.num_pending()
            await first
            return pending_before, pending_after, outcomes(h.gateway)

    before, after, counts = run(main())
    assert before == 1 and after == 0
    assert counts["completed"] == 1 and counts["failed"] == 1


def test_shedding_answers_429_with_retry_after() -> None:
    """A request that could have made it but waited in the router past its TTFT deadline (its only server is
    busy: one seat, as the gateway is told) is shed: 429 with Retry-After, and counted shed."""
    async def main():
        doc = {"engine": {"time_scale": 1, "max_num_seqs": 1}, "retry_after_s": 2, "tick_s": 0.01}
        async with harness(1, doc) as h:
            long = asyncio.ensure_future(h.client.post("/v1/completions", json=completion(2, 400, stream=False)))
            await asyncio.sleep(0.02)
            r = await h.client.post("/v1/completions", json=completion(2, 3), headers={"x-slo-ttft-ms": "60"})
            await long
            ok = await h.client.post("/v1/completions", json=completion(2, 3, stream=False))
            return r, ok, outcomes(h.gateway)

    r, ok, counts = run(main())
    assert r.status_code == 429 and r.headers["retry-after"] == "2", r.text
    assert r.json()["error"]["type"] == "RateLimitError" and "TTFT deadline" in r.json()["error"]["message"]
    assert ok.status_code == 200
    assert counts["shed"] == 1 and counts["completed"] == 2


def test_a_ttft_no_server_could_ever_meet_is_a_400_not_a_429() -> None:
    """x-slo-ttft-ms: 1 cannot be met even on an idle server: a client error (retrying is futile), whatever
    the shedding setting, and the message says the least it would take."""
    async def main():
        async with harness(1, {"engine": {"time_scale": 1}, "shedding": False}) as h:
            return await h.client.post("/v1/completions", json=completion(2, 3), headers={"x-slo-ttft-ms": "1"})

    r = run(main())
    assert r.status_code == 400 and "retry-after" not in r.headers
    err = r.json()["error"]
    assert err["param"] == "x-slo-ttft-ms" and "can never be met" in err["message"]


def test_invariant_accepted_equals_completed_plus_failed_plus_shed() -> None:
    async def main():
        # polyserve packs one tier onto the first server (the load gradient): that engine crashes streams
        # longer than 4 tokens; 1 ms TTFTs are refused (400: no server could meet them); some clients leave;
        # two bodies are malformed
        engines = [EngineConfig(time_scale=20, crash_mid_stream=4), EngineConfig(time_scale=20)]
        doc = {"shedding": True, "engine": {"time_scale": 1}}
        async with harness(engines, doc) as h:
            c = h.client

            async def disconnect():
                async with c.stream("POST", "/v1/completions", json=completion(2, 200)) as r:
                    async for line in r.aiter_lines():
                        if line.startswith("data: {"):
                            return

            jobs = [read_stream(c, completion(2, 6 if k % 2 else 3)) for k in range(8)]
            jobs += [read_stream(c, completion(2, 3), {"x-slo-ttft-ms": "1"}) for _ in range(3)]
            jobs += [disconnect() for _ in range(3)]
            jobs += [c.post("/v1/completions", content=b"{bad") for _ in range(2)]
            await asyncio.gather(*jobs)
            await asyncio.sleep(0.05)
            return h.gateway

    gw = run(main())
    counts = outcomes(gw)
    accepted = metric(gw, "polyserve_requests_accepted_total")
    assert accepted == gw.accepted == 11
    assert accepted == counts["completed"] + counts["failed"] + counts["shed"]
    assert counts["rejected"] == 5 and counts["completed"] >= 1 and counts["failed"] >= 3
    assert not gw.dispatcher.fleet.entries and gw.dispatcher.num_pending() == 0


def test_every_backend_down_answers_503_with_retry_after_at_once_and_fails_the_waiting() -> None:
    """An outage is not overload: with shedding off too, nobody waits for a backend that is not there."""
    async def main():
        async with harness(2, {"policy": "round-robin", "scrape_interval_s": 30, "shedding": False,
                               "retries": 1}) as h:
            h.fleet.down.update({"e0", "e1"})
            first = await h.client.post("/v1/completions", json=completion(2, 3))  # finds both dead
            t0 = time.perf_counter()
            later = await h.client.post("/v1/completions", json=completion(2, 3))
            return first, later, time.perf_counter() - t0, outcomes(h.gateway)

    first, later, wait_s, counts = run(main())
    assert first.status_code in (502, 503)
    assert later.status_code == 503 and later.headers["retry-after"] and wait_s < 1.0
    assert "no backend is up" in later.json()["error"]["message"]
    assert counts["shed"] + counts["failed"] == 2


def test_error_messages_name_the_server_never_its_internal_url() -> None:
    async def main():
        async with harness(1, {"retries": 0, "scrape_interval_s": 30}) as h:
            h.fleet.down.add("e0")
            return await h.client.post("/v1/completions", json=completion(2, 3))

    r = run(main())
    msg = r.json()["error"]["message"]
    assert r.status_code == 502 and "http://e0" not in msg and "server s0" in msg, msg


def test_a_client_that_closes_right_after_done_is_a_completed_request() -> None:
    async def main():
        async with harness(1) as h:
            for _ in range(5):
                async with h.client.stream("POST", "/v1/completions", json=completion(2, 4)) as r:
                    async for line in r.aiter_lines():
                        if line == "data: [DONE]":
                            break  # leave at once: the context closes the connection
            await asyncio.sleep(0.05)
            return outcomes(h.gateway)

    counts = run(main())
    assert counts["completed"] == 5 and counts["failed"] == 0


def test_a_deeply_nested_body_is_a_400_naming_the_limit_at_gateway_and_engine_and_no_backend_is_blamed() -> None:
    from polyserve.serving.openai import MAX_JSON_DEPTH

    deep = b'{"prompt": "x", "a": ' + b"[" * 2000 + b"]" * 2000 + b"}"
    mid = b'{"prompt": "x", "a": ' + b"[" * 950 + b"]" * 950 + b"}"

    async def main():
        async with harness(1) as h:
            rs = [await h.client.post("/v1/completions", content=body) for body in (deep, mid)]
            engine = h.engines["e0"]
            async with httpx.AsyncClient(transport=StreamingASGITransport(engine), base_url="http://e") as c:
                direct = await c.post("/v1/completions", content=mid)
            ok = await h.client.post("/v1/completions", json=completion(2, 3, stream=False))
            return rs, direct, ok, h.gateway

    rs, direct, ok, gw = run(main())
    for r in (*rs, direct):
        assert r.status_code == 400 and f"deeper than {MAX_JSON_DEPTH} levels" in r.json()["error"]["message"]
    assert ok.status_code == 200 and gw.dispatcher.is_healthy(0)


def test_get_model_by_id_answers_the_served_model_and_404s_another() -> None:
    async def main():
        async with harness(1) as h:
            return (await h.client.get(f"/v1/models/{MODEL}"), await h.client.get("/v1/models/other"))

    ok, nope = run(main())
    assert ok.status_code == 200 and ok.json()["id"] == MODEL and ok.json()["object"] == "model"
    assert nope.status_code == 404 and nope.json()["error"]["param"] == "model"


@pytest.mark.parametrize("shedding", [False, True])
def test_a_hung_backend_holds_a_request_about_twice_its_ttft_then_it_is_rerouted_without_a_strike(shedding) -> None:
    """e0 answers nothing for 6 s (a stalled process): a request with a 200 ms TTFT gives up on it after
    max(1 s, 2 x TTFT) and is re-routed; by then it is a lost cause, so with shedding on it gets its 429 at
    once, and with shedding off it completes, late, on e1. Either way e0 is not blamed (a slow backend may
    just be loaded)."""
    async def main():
        engines = [EngineConfig(time_scale=20, add_latency_ms=6000), EngineConfig(time_scale=20)]
        doc = {"policy": "round-robin", "scrape_interval_s": 30, "shedding": shedding}
        async with harness(engines, doc) as h:
            t0 = time.perf_counter()
            r = await h.client.post("/v1/completions", json=completion(2, 3, stream=False),
                                    headers={"x-slo-ttft-ms": "200"})
            return r, time.perf_counter() - t0, h.gateway

    r, wall, gw = run(main())
    if shedding:
        assert r.status_code == 429 and "TTFT deadline" in r.json()["error"]["message"]
    else:
        assert r.status_code == 200 and r.headers["x-polyserve-server"] == "1"
    assert 0.9 < wall < 4.0, wall
    assert gw.dispatcher.is_healthy(0) and gw.breaker.strikes(0) == 0
