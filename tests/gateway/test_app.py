"""The OpenAI-compatible front in-process: routes, errors with OpenAI bodies, pass-through, priority, metrics."""

from __future__ import annotations

import asyncio
import time

import pytest

from polyserve.engine import EngineConfig
from polyserve.gateway.config import config_from_dict

from .helpers import MODEL, completion, engine_configs, harness, metric, outcomes, read_stream, run, texts


def test_health_models_and_a_streamed_completion() -> None:
    async def main():
        async with harness() as h:
            health = (await h.client.get("/health")).json()
            models = (await h.client.get("/v1/models")).json()
            status, headers, events = await read_stream(h.client, completion(3, 6))
            return health, models, status, headers, events

    health, models, status, headers, events = run(main())
    assert health["backends_up"] == 2
    assert models["data"][0]["id"] == MODEL
    assert status == 200 and headers["content-type"].startswith("text/event-stream")
    assert texts(events) == ["the", " quick", " brown", " fox", " jumps", " over"]
    assert events[-1] == "[DONE]"
    assert headers["x-polyserve-tier"] == "t100"  # no header: the default (loosest) tier


def test_chat_and_non_streaming_answers_match_the_engine() -> None:
    async def main():
        async with harness() as h:
            chat = await h.client.post(
                "/v1/chat/completions",
                json={"model": MODEL, "messages": [{"role": "user", "content": "a b"}], "max_tokens": 3},
            )
            comp = await h.client.post("/v1/completions", json=completion(5, 4, stream=False))
            _, _, events = await read_stream(
                h.client,
                {"messages": [{"role": "user", "content": "x"}], "max_tokens": 2, "stream": True,
                 "stream_options": {"include_usage": True}},
                path="/v1/chat/completions",
            )  # fmt: skip
            return chat.json(), comp.json(), events

    chat, comp, events = run(main())
    assert chat["object"] == "chat.completion"
    assert chat["choices"][0]["message"] == {"role": "assistant", "content": "the quick brown"}
    assert chat["usage"]["completion_tokens"] == 3
    assert comp["choices"][0]["text"] == "the quick brown fox" and comp["usage"]["prompt_tokens"] == 5
    assert events[0]["choices"][0]["delta"]["role"] == "assistant"
    assert events[-2]["usage"]["completion_tokens"] == 2 and events[-1] == "[DONE]"


def test_stream_is_passed_through_as_tokens_come_not_buffered_whole() -> None:
    async def main():
        # 40 tokens at ~10 ms each (time scale 1, one decode ~7-10 ms): the first arrives long before the last
        async with harness([EngineConfig(time_scale=1.0)]) as h:
            t0 = time.perf_counter()
            arrivals = []
            async with h.client.stream("POST", "/v1/completions", json=completion(2, 40)) as r:
                async for line in r.aiter_lines():
                    if line.startswith("data: {"):
                        arrivals.append(time.perf_counter() - t0)
            return arrivals

    arrivals = run(main())
    assert len(arrivals) == 40
    assert arrivals[-1] - arrivals[0] > 0.15  # spread over the generation, not one burst at the end
    assert len({round(a, 3) for a in arrivals}) > 10


@pytest.mark.parametrize(
    ("body", "headers", "status", "param"),
    [
        (b"{not json", {}, 400, None),
        (b"[1, 2]", {}, 400, None),
        (b'{"prompt": "x", "max_tokens": -1}', {}, 400, "max_tokens"),
        (b'{"max_tokens": 3}', {}, 400, "prompt"),
        (b'{"prompt": "x", "model": "other"}', {}, 404, "model"),
        (b'{"prompt": "x"}', {"x-slo-tpot-ms": "fast"}, 400, "x-slo-tpot-ms"),
        (b'{"prompt": "x"}', {"x-slo-tpot-ms": "5"}, 400, "x-slo-tpot-ms"),
        (b'{"prompt": "x", "max_tokens": 100000000}', {}, 400, "max_tokens"),
    ],
)
def test_bad_requests_get_openai_error_bodies(body: bytes, headers: dict, status: int, param: str | None) -> None:
    async def main():
        async with harness(1) as h:
            r = await h.client.post(
                "/v1/completions", content=body, headers={"content-type": "application/json", **headers}
            )
            return r.status_code, r.json(), outcomes(h.gateway)

    code, doc, counts = run(main())
    assert code == status
    assert set(doc["error"]) >= {"message", "type", "code"} and doc["error"]["code"] == status
    assert doc["error"]["param"] == param
    assert counts["rejected"] == 1 and counts["completed"] == counts["failed"] == 0


def test_oversize_body_is_413_and_unknown_route_404() -> None:
    async def main():
        async with harness(1, {"max_body_bytes": 1000}) as h:
            big = await h.client.post("/v1/completions", json=completion(600))
            nope = await h.client.get("/v1/nothing")
            wrong = await h.client.get("/v1/completions")
            return big, nope, wrong

    big, nope, wrong = run(main())
    assert big.status_code == 413 and big.json()["error"]["type"] == "RequestTooLargeError"
    assert nope.status_code == 404 and "error" in nope.json()
    assert wrong.status_code == 405


def test_api_keys_401_without_a_key_and_403_for_a_tighter_tier() -> None:
    keys = {"api_keys": [{"key": "sk-loose", "tiers": ["t50", "t100"]}]}

    async def main():
        async with harness(1, keys) as h:
            c = h.client
            none = await c.post("/v1/completions", json=completion(stream=False))
            bad = await c.post("/v1/completions", json=completion(stream=False), headers={"authorization": "Bearer x"})
            auth = {"authorization": "Bearer sk-loose"}
            tight = await c.post(
                "/v1/completions", json=completion(stream=False), headers={**auth, "x-slo-tpot-ms": "20"}
            )
            ok = await c.post("/v1/completions", json=completion(stream=False), headers={**auth, "x-slo-tpot-ms": "50"})
            return none, bad, tight, ok

    none, bad, tight, ok = run(main())
    assert none.status_code == 401 and bad.status_code == 401
    assert tight.status_code == 403 and tight.json()["error"]["code"] == 403
    assert ok.status_code == 200 and ok.headers["x-polyserve-tier"] == "t50"


def test_priority_is_forwarded_only_to_priority_backends() -> None:
    async def main():
        doc = {"backends": [{"url": "http://e0", "priority": True}, {"url": "http://e1"}], "policy": "round-robin"}
        async with harness(2, doc) as h:
            for _ in range(4):
                await h.client.post(
                    "/v1/completions", json=completion(stream=False, priority=99), headers={"x-slo-tpot-ms": "35"}
                )
            return h.fleet.seen

    seen = run(main())
    assert seen["e0"] and seen["e1"]
    assert all(b["priority"] == 1 for b in seen["e0"])  # t30 is tier index 1 (lower = sooner)
    assert all("priority" not in b for b in seen["e1"])


def test_deadlines_are_forwarded_only_to_deadline_backends_as_the_time_left_and_a_clients_own_are_dropped():
    async def main():
        doc = {"backends": [{"url": "http://e0", "deadlines": True}, {"url": "http://e1"}], "policy": "round-robin"}
        async with harness(2, doc) as h:
            for _ in range(4):
                await h.client.post(
                    "/v1/completions", headers={"x-slo-tpot-ms": "35", "x-slo-ttft-ms": "400"},
                    json=completion(stream=False, polyserve_slo={"ttft_ms": 1e9, "tpot_ms": 1e9}),
                )
            return h.fleet.seen

    seen = run(main())
    assert seen["e0"] and seen["e1"]
    for b in seen["e0"]:
        slo = b["polyserve_slo"]
        assert slo["tpot_ms"] == 35.0  # the TPOT the client asked for (its tier, t30, promises at least that)
        assert 0 < slo["ttft_ms"] <= 400.0  # the client's TTFT, minus the time already spent in the gateway
    assert all("polyserve_slo" not in b for b in seen["e1"])


def test_forwarded_deadlines_are_earlier_than_the_clients_by_the_margin():
    """``deadline_margin_ms``: the engine aims each token that much ahead of the client's deadline, room for the
    relay back (the engine's just-in-time token otherwise reaches the client late)."""

    async def main():
        doc = {"backends": [{"url": "http://e0", "deadlines": True}], "policy": "round-robin",
               "deadline_margin_ms": 150}
        async with harness(1, doc) as h:
            for _ in range(3):
                await h.client.post("/v1/completions", headers={"x-slo-tpot-ms": "35", "x-slo-ttft-ms": "400"},
                                    json=completion(stream=False))
            return h.fleet.seen

    seen = run(main())
    for b in seen["e0"]:
        assert 200.0 < b["polyserve_slo"]["ttft_ms"] <= 250.0  # 400 - 150, less the time spent in the gateway
        assert b["polyserve_slo"]["tpot_ms"] == 35.0  # the margin moves every token's deadline alike


def test_metrics_count_requests_per_tier_with_ttft_tpot_and_attainment() -> None:
    async def main():
        async with harness() as h:
            for tpot in ("20", "100", "100"):
                await read_stream(h.client, completion(2, 5), {"x-slo-tpot-ms": tpot})
            text = (await h.client.get("/metrics")).text
            return text, h.gateway

    text, gw = run(main())
    assert metric(gw, "polyserve_requests_total", tier="t20", outcome="completed") == 1
    assert metric(gw, "polyserve_requests_total", tier="t100", outcome="completed") == 2
    assert metric(gw, "polyserve_dslo_attained_total") == 3  # a light load at time scale 20 meets every SLO
    assert metric(gw, "polyserve_ttft_seconds_count", tier="t100") == 2
    assert metric(gw, "polyserve_tpot_seconds_count", tier="t20") == 1
    for name in ("polyserve_pending_requests{", "polyserve_servers{", "polyserve_scaling_actions_total{",
                 "polyserve_backend_outstanding{"):  # fmt: skip
        assert name in text
    assert metric(gw, "polyserve_scaling_actions_total", action="activate") >= 2  # two tiers scaled up


def test_an_autoscaler_in_the_config_runs_in_the_gateway_and_scales_out_under_load() -> None:
    """Untiered policy + target-concurrency: one server at start (min_servers), more once requests pile up."""
    doc = {"policy": "minimal", "autoscaler": "target-concurrency",
           "autoscaler_options": {"target": 1.0, "upscale_delay_s": 0.0}, "tick_s": 0.01}

    async def main():
        async with harness(engine_configs(3, time_scale=1.0), doc) as h:
            before = h.gateway.dispatcher.servers_by_state()
            first = [asyncio.ensure_future(read_stream(h.client, completion(2, 60))) for _ in range(6)]
            await asyncio.sleep(0.3)  # ticks see 6 in flight on one server: the autoscaler adds servers
            during = h.gateway.dispatcher.servers_by_state()
            await asyncio.gather(*first, *(read_stream(h.client, completion(2, 5)) for _ in range(6)))
            return before, during, h.gateway.dispatcher.fleet.scaling_actions, h.fleet.seen

    before, during, actions, seen = run(main())
    assert before["shared"] == 1 and before["idle"] == 2
    assert during["shared"] >= 2 and actions >= 1
    assert len([k for k, v in seen.items() if v]) >= 2, "the second wave reaches the servers added"


def test_an_autoscaler_with_a_tiered_policy_or_an_unknown_name_is_a_config_error() -> None:
    from polyserve.core.errors import ConfigError
    from polyserve.gateway.app import create_gateway_app

    base = {"model": "llama-3.1-8b", "backends": ["http://a"]}
    with pytest.raises(ConfigError, match="scales its own tiers"):
        create_gateway_app(config_from_dict({**base, "policy": "polyserve", "autoscaler": "target-concurrency"}))
    with pytest.raises(ConfigError, match="unknown autoscaler 'nope'"):
        config_from_dict({**base, "policy": "minimal", "autoscaler": "nope"})
    with pytest.raises(ConfigError, match="without an autoscaler"):
        config_from_dict({**base, "autoscaler_options": {"target": 2}})


def _disagg_doc(policy: str = "polyserve") -> dict:
    return {"backends": [{"url": "http://e0", "role": "prefill", "deadlines": True},
                         {"url": "http://e1", "role": "decode", "deadlines": True}], "policy": policy}


@pytest.mark.parametrize("policy", ["polyserve", "minimal"])
def test_disaggregated_prefill_then_hand_off_then_decode_streams_every_token_once(policy) -> None:
    """The prefill engine gets max_tokens 1 and its token goes to the client at once; the decode engine gets
    the hand-off (polyserve_kv) and streams tokens 2..N; the client sees N tokens, in order, and [DONE]."""
    async def main():
        async with harness(2, _disagg_doc(policy)) as h:
            s = await read_stream(h.client, completion(6, 5), {"x-slo-tpot-ms": "100"})
            c = await h.client.post("/v1/chat/completions", json={
                "model": MODEL, "messages": [{"role": "user", "content": "a b c"}], "max_tokens": 4})
            one = await read_stream(h.client, completion(3, 1))
            return s, c, one, h.fleet.seen, h.gateway.dispatcher.fleet

    (status, _headers, events), chat, one, seen, fleet = run(main())
    assert status == 200 and events[-1] == "[DONE]"
    toks = texts(events)
    assert len(toks) == 5 and toks[0] and all(t.startswith(" ") for t in toks[1:])
    finishes = [e["choices"][0].get("finish_reason") for e in events[:-1] if e["choices"]]
    assert finishes[:-1] == [None] * (len(finishes) - 1), "the prefill's finish_reason does not end the stream"
    assert all(b["max_tokens"] == 1 and "polyserve_kv" not in b for b in seen["e0"])
    assert [b["polyserve_kv"]["prefilled"] for b in seen["e1"]] == [True] * 2
    # one response: the decode leg continues the prefill's id and created
    assert len({(e["id"], e["created"]) for e in events[:-1]}) == 1
    assert chat.status_code == 200 and len(chat.json()["choices"][0]["message"]["content"].split()) == 4
    assert chat.json()["usage"]["completion_tokens"] == 4
    assert one[0] == 200 and len(texts(one[2])) == 1 and len(seen["e1"]) == 2, "one token: no decode leg"
    assert not fleet.entries and all(s.num_requests == 0 for s in fleet.servers)


def test_a_decode_that_gets_no_seat_ends_with_an_error_within_idle_s_never_hangs() -> None:
    """The wait for a decode seat is a silence in the stream, bounded by ``timeouts.idle_s``: the client has
    its first token, then an error event (503, naming the limit); the request leaves the router's queue."""
    from polyserve.core.fleet import RoutingDecision

    async def main():
        async with harness(2, {**_disagg_doc("minimal"), "timeouts": {"idle_s": 0.3}}) as h:
            router = h.gateway.dispatcher.router
            route = router.route
            router.route = lambda req, fleet, now, phase: (  # every decode seat is taken
                RoutingDecision.wait("test: no decode seat") if phase == "decode" else route(req, fleet, now, phase))
            t0 = time.perf_counter()
            s = await read_stream(h.client, completion(6, 5))
            return s, time.perf_counter() - t0, h.gateway, h.fleet.seen

    (status, _headers, events), took, gw, seen = run(main())
    d = gw.dispatcher
    assert status == 200 and len(texts(events[:-1])) == 1, "the first token went out before the hand-off"
    err = events[-1]["error"]
    assert err["code"] == 503 and "timeouts.idle_s" in err["message"]
    assert 0.3 <= took < 5.0
    assert not d.driver.waiting and not d.fleet.entries
    assert not seen.get("e1"), "no decode leg was sent"
    assert outcomes(gw)["failed"] == 1


def test_roles_must_be_all_mixed_or_prefill_and_decode() -> None:
    from polyserve.core.errors import ConfigError

    base = {"model": "m"}
    with pytest.raises(ConfigError, match="at least one of each"):
        config_from_dict({**base, "backends": [{"url": "http://a", "role": "prefill"}, "http://b"]})
    with pytest.raises(ConfigError, match="role: must be mixed, prefill or decode"):
        config_from_dict({**base, "backends": [{"url": "http://a", "role": "both"}]})
