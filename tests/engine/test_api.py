"""The engine speaks OpenAI's protocol: chunk format, usage, exact token counts, errors, models, metrics."""

from __future__ import annotations

import pytest

from .helpers import client_for, completion, linear, make_app, metric_value, run, stream_events, token_texts


def fast_app(**config):
    return make_app(linear(1.0, 0.0, 0.1), **config)


@pytest.mark.parametrize("chat", [False, True])
def test_stream_is_openai_chunks_then_usage_then_done(chat: bool) -> None:
    async def main():
        async with client_for(fast_app(served_model_name="m")) as c:
            if chat:
                body = {
                    "model": "m",
                    "messages": [{"role": "user", "content": "one two three"}],
                    "stream": True,
                    "max_tokens": 5,
                    "stream_options": {"include_usage": True},
                }
                path = "/v1/chat/completions"
            else:
                body = completion(3, 5, model="m", stream_options={"include_usage": True})
                path = "/v1/completions"
            return await stream_events(c, path, body)

    events, done = run(main())
    assert done and events[-1][1] == "[DONE]"
    chunks = [e for _, e in events[:-1]]
    obj = "chat.completion.chunk" if chat else "text_completion"
    assert all(e["object"] == obj and e["model"] == "m" for e in chunks)
    assert len({e["id"] for e in chunks}) == 1
    texts = token_texts(events, chat)
    assert texts == ["the", " quick", " brown", " fox", " jumps"]
    usage = chunks[-1]
    assert usage["choices"] == []
    assert usage["usage"] == {"prompt_tokens": 3, "completion_tokens": 5, "total_tokens": 8}
    content = [e for e in chunks if e["choices"]]
    reasons = [e["choices"][0]["finish_reason"] for e in content]
    assert reasons[-1] == "length" and all(r is None for r in reasons[:-1])
    assert all("usage" in e and e["usage"] is None for e in content)  # include_usage: null until the end
    if chat:
        assert content[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}


def test_stream_without_include_usage_has_no_usage_chunk() -> None:
    async def main():
        async with client_for(fast_app()) as c:
            return await stream_events(c, "/v1/completions", completion(2, 3))

    events, done = run(main())
    assert done
    assert all(e == "[DONE]" or ("usage" not in e and e["choices"]) for _, e in events)
    assert len(token_texts(events, chat=False)) == 3


@pytest.mark.parametrize("max_tokens", [1, 2, 17])
def test_non_streaming_returns_exactly_max_tokens(max_tokens: int) -> None:
    async def main():
        async with client_for(fast_app()) as c:
            r = await c.post("/v1/completions", json=completion(6, max_tokens, stream=False))
            assert r.status_code == 200
            return r.json()

    doc = run(main())
    assert doc["object"] == "text_completion"
    assert len(doc["choices"][0]["text"].split()) == max_tokens
    assert doc["choices"][0]["finish_reason"] == "length"
    assert doc["usage"] == {
        "prompt_tokens": 6,
        "completion_tokens": max_tokens,
        "total_tokens": 6 + max_tokens,
    }


def test_chat_counts_all_message_words_and_reads_max_completion_tokens() -> None:
    async def main():
        async with client_for(fast_app()) as c:
            r = await c.post(
                "/v1/chat/completions",
                json={
                    "messages": [
                        {"role": "system", "content": "be brief"},
                        {"role": "user", "content": [{"type": "text", "text": "a b c"}]},
                    ],
                    "max_completion_tokens": 4,
                    "max_tokens": 99,
                    "ignore_eos": True,
                    "temperature": 0,
                },
            )
            return r.json()

    doc = run(main())
    assert doc["object"] == "chat.completion"
    assert doc["choices"][0]["message"]["role"] == "assistant"
    assert doc["usage"] == {"prompt_tokens": 5, "completion_tokens": 4, "total_tokens": 9}


def test_default_output_len_applies_without_max_tokens() -> None:
    async def main():
        async with client_for(fast_app(default_output_len=7)) as c:
            return (await c.post("/v1/completions", json=completion(2, None, stream=False))).json()

    assert run(main())["usage"]["completion_tokens"] == 7


def test_token_id_prompts_and_priority_field_are_accepted() -> None:
    async def main():
        async with client_for(fast_app()) as c:
            r = await c.post("/v1/completions", json={"prompt": [1, 2, 3, 4], "max_tokens": 2, "priority": 3})
            return r.status_code, r.json()

    status, doc = run(main())
    assert status == 200 and doc["usage"]["prompt_tokens"] == 4


def test_deadlines_come_as_the_body_field_or_the_header_and_a_bad_header_is_a_400_naming_it() -> None:
    async def main():
        app = fast_app(scheduling_policy="deadline")
        async with client_for(app) as c:
            ok_body = await c.post("/v1/completions", json={"prompt": "a b", "max_tokens": 2,
                                                            "polyserve_slo": {"ttft_ms": -5, "tpot_ms": 20}})
            ok_head = await c.post("/v1/completions", json={"prompt": "a b", "max_tokens": 2},
                                   headers={"x-polyserve-slo": "ttft_ms=300;tpot_ms=20"})
            bad = await c.post("/v1/completions", json={"prompt": "a b", "max_tokens": 2},
                               headers={"x-polyserve-slo": "ttft_ms=soon"})
            return ok_body.status_code, ok_head.status_code, bad.status_code, bad.json()

    a, b, c, doc = run(main())
    assert (a, b, c) == (200, 200, 400)
    assert doc["error"]["param"] == "polyserve_slo" and "x-polyserve-slo" in doc["error"]["message"]


def test_a_prefilled_stream_carries_tokens_two_to_n_without_a_role_chunk_and_usage_counts_all() -> None:
    async def main():
        async with client_for(fast_app()) as c:
            body = {"messages": [{"role": "user", "content": "a b c"}], "max_tokens": 4, "stream": True,
                    "stream_options": {"include_usage": True}, "polyserve_kv": {"prefilled": True}}
            events, done = await stream_events(c, "/v1/chat/completions", body)
            return [e for _, e in events], done

    events, done = run(main())
    deltas = [e["choices"][0]["delta"] for e in events if e != "[DONE]" and e["choices"]]
    assert done and len(deltas) == 3 and all("role" not in d for d in deltas)
    usage = [e["usage"] for e in events if e != "[DONE]" and e.get("usage")]
    assert usage[-1]["completion_tokens"] == 4


@pytest.mark.parametrize(
    ("path", "body", "status", "param"),
    [
        ("/v1/completions", b"{not json", 400, None),
        ("/v1/completions", b"[1, 2]", 400, None),
        ("/v1/completions", {"max_tokens": 3}, 400, "prompt"),
        ("/v1/completions", {"prompt": "x", "max_tokens": 0}, 400, "max_tokens"),
        ("/v1/completions", {"prompt": "x", "max_tokens": "9"}, 400, "max_tokens"),
        ("/v1/completions", {"prompt": "x", "stream": "yes"}, 400, "stream"),
        ("/v1/completions", {"prompt": "x", "priority": 1.5}, 400, "priority"),
        ("/v1/completions", {"prompt": "x", "n": 2}, 400, "n"),
        ("/v1/completions", {"prompt": []}, 400, "prompt"),
        ("/v1/completions", {"prompt": ["a", 5]}, 400, "prompt"),
        ("/v1/completions", {"prompt": ["a", [1, 2]]}, 400, "prompt"),
        ("/v1/completions", {"prompt": ["a", []]}, 400, "prompt"),
        ("/v1/completions", {"prompt": ["a"] * 257}, 400, "prompt"),
        ("/v1/completions", {"prompt": "x", "max_tokens": 10**9}, 400, "max_tokens"),
        ("/v1/chat/completions", {"messages": []}, 400, "messages"),
        ("/v1/chat/completions", {"messages": [{"content": "x"}]}, 400, "messages"),
        ("/v1/completions", {"prompt": "x", "model": "other"}, 404, "model"),
        ("/v1/completions", {"prompt": "x", "polyserve_slo": 5}, 400, "polyserve_slo"),
        ("/v1/completions", {"prompt": "x", "polyserve_slo": {"ttft_ms": 100}}, 400, "polyserve_slo"),
        ("/v1/completions", {"prompt": "x", "polyserve_slo": {"ttft_ms": "1", "tpot_ms": 5}}, 400, "polyserve_slo"),
        ("/v1/completions", {"prompt": "x", "polyserve_slo": {"ttft_ms": 10, "tpot_ms": 0}}, 400, "polyserve_slo"),
        ("/v1/completions", {"prompt": "x", "polyserve_kv": {"prefilled": 1}}, 400, "polyserve_kv"),
        ("/v1/completions", {"prompt": "x", "logprobs": 2}, 400, "logprobs"),
        ("/v1/chat/completions", {"messages": [{"role": "user", "content": "x"}], "logprobs": True,
                                  "top_logprobs": 2}, 400, "logprobs"),
        ("/v1/completions", {"prompt": "x", "max_tokens": 1, "polyserve_kv": {"prefilled": True}}, 400, "max_tokens"),
    ],
)
def test_bad_requests_get_openai_error_bodies(path: str, body, status: int, param: str | None) -> None:
    async def main():
        async with client_for(fast_app()) as c:
            if isinstance(body, bytes):
                r = await c.post(path, content=body, headers={"content-type": "application/json"})
            else:
                r = await c.post(path, json=body)
            return r.status_code, r.json()

    got, doc = run(main())
    assert got == status
    err = doc["error"]
    assert set(err) >= {"message", "type", "code"} and err["code"] == status and err["message"]
    assert err["param"] == param


def test_unknown_route_is_an_openai_404() -> None:
    async def main():
        async with client_for(fast_app()) as c:
            return await c.get("/v1/nothing")

    r = run(main())
    assert r.status_code == 404 and r.json()["error"]["code"] == 404


def test_models_and_health() -> None:
    async def main():
        async with client_for(fast_app(served_model_name="my-model")) as c:
            return (await c.get("/health")).status_code, (await c.get("/v1/models")).json()

    health, models = run(main())
    assert health == 200
    assert [m["id"] for m in models["data"]] == ["my-model"]
    assert models["data"][0]["root"] == "llama-3.1-8b"


def test_metrics_have_vllm_names_model_label_and_count_tokens() -> None:
    async def main():
        async with client_for(fast_app(served_model_name="m")) as c:
            for _ in range(2):
                await stream_events(c, "/v1/completions", completion(3, 4))
            text = (await c.get("/metrics")).text
            return text, {
                n: await metric_value(c, n)
                for n in (
                    "vllm:prompt_tokens_total",
                    "vllm:generation_tokens_total",
                    "vllm:request_success_total",
                    "vllm:time_to_first_token_seconds_count",
                    "vllm:inter_token_latency_seconds_count",
                    "vllm:num_requests_running",
                    "vllm:num_requests_waiting",
                    "vllm:kv_cache_usage_perc",
                )
            }

    text, v = run(main())
    for name in (
        "vllm:num_requests_running",
        "vllm:num_requests_waiting",
        "vllm:kv_cache_usage_perc",
        "vllm:time_to_first_token_seconds_bucket",
        "vllm:inter_token_latency_seconds_bucket",
    ):
        assert f"{name}{{" in text and 'model_name="m"' in text
    assert v["vllm:prompt_tokens_total"] == 6
    assert v["vllm:generation_tokens_total"] == 8
    assert v["vllm:request_success_total"] == 2
    assert v["vllm:time_to_first_token_seconds_count"] == 2
    assert v["vllm:inter_token_latency_seconds_count"] == 6
    assert (
        v["vllm:num_requests_running"] == v["vllm:num_requests_waiting"] == v["vllm:kv_cache_usage_perc"] == 0
    )


def test_two_apps_in_one_loop_keep_separate_state_and_metrics() -> None:
    async def main():
        a, b = fast_app(served_model_name="a"), fast_app(served_model_name="b")
        async with client_for(a) as ca, client_for(b) as cb:
            await stream_events(ca, "/v1/completions", completion(2, 3))
            return await metric_value(ca, "vllm:request_success_total"), await metric_value(
                cb, "vllm:request_success_total"
            )

    assert run(main()) == (1, 0)


def test_a_list_of_prompts_gets_one_choice_per_prompt_by_index_streaming_or_not() -> None:
    """vLLM/OpenAI batch semantics: ``prompt`` a list of n prompts -> n choices, ``index`` the prompt's
    position, each its own max_tokens; usage sums the batch; one id; one [DONE] at the end."""

    async def main():
        async with client_for(fast_app()) as c:
            whole = (await c.post("/v1/completions", json={"prompt": ["a b", "c d e", "f g h i"],
                                                           "max_tokens": 3})).json()
            ids = (await c.post("/v1/completions", json={"prompt": [[7, 8], [9, 10, 11]], "max_tokens": 2})).json()
            events, done = await stream_events(c, "/v1/completions", {
                "prompt": ["a", "b c"], "max_tokens": 4, "stream": True, "stream_options": {"include_usage": True}})
            return whole, ids, [e for _, e in events], done

    whole, ids, events, done = run(main())
    assert [ch["index"] for ch in ids["choices"]] == [0, 1] and ids["usage"]["prompt_tokens"] == 5
    assert [ch["index"] for ch in whole["choices"]] == [0, 1, 2]
    assert all(ch["text"] == "the quick brown" for ch in whole["choices"])
    assert whole["usage"] == {"prompt_tokens": 9, "completion_tokens": 9, "total_tokens": 18}
    assert done and events[-1] == "[DONE]" and events.count("[DONE]") == 1
    chunks = [e for e in events[:-1] if e["choices"]]
    assert len({e["id"] for e in events[:-1]}) == 1
    for i in (0, 1):
        texts = [e["choices"][0]["text"] for e in chunks if e["choices"][0]["index"] == i]
        assert texts == ["the", " quick", " brown", " fox"]
    usage = [e["usage"] for e in events[:-1] if not e["choices"]]
    assert usage == [{"prompt_tokens": 3, "completion_tokens": 8, "total_tokens": 11}]


def test_response_ids_are_unique_across_engines_and_created_is_the_request_time() -> None:
    import time

    async def main():
        out = []
        for _ in range(2):  # two engine processes' worth of apps: each has its own random id part
            async with client_for(fast_app()) as c:
                for _ in range(3):
                    out.append((await c.post("/v1/completions", json=completion(2, 2, stream=False))).json())
        return out

    t0 = int(time.time())
    docs = run(main())
    ids = [d["id"] for d in docs]
    assert len(set(ids)) == len(ids) and all(i.startswith("cmpl-") for i in ids)
    assert len({i[:-1] for i in ids}) == 2  # the per-process part differs between the two apps
    assert all(t0 <= d["created"] <= int(time.time()) for d in docs)


def test_created_is_per_request_not_the_engine_start() -> None:
    from polyserve.engine import create_engine_app

    async def main():
        app = create_engine_app(__import__("polyserve.engine", fromlist=["EngineConfig"]).EngineConfig(),
                                latency_model=linear(1.0, 0.0, 0.1))
        app.state.engine.created -= 1000  # as if the engine had started long ago
        async with client_for(app) as c:
            doc = (await c.post("/v1/completions", json=completion(2, 2, stream=False))).json()
            events, _ = await stream_events(c, "/v1/completions", completion(2, 2))
            models = (await c.get("/v1/models")).json()
        return doc, events, models, app.state.engine.created

    import time

    doc, events, models, started = run(main())
    now = int(time.time())
    assert now - 2 <= doc["created"] <= now
    assert all(now - 2 <= e["created"] <= now for _, e in events if e != "[DONE]")
    assert models["data"][0]["created"] == started  # the model's own time stays the start


def test_a_hand_off_continues_the_prefill_response_id_and_created() -> None:
    async def main():
        async with client_for(fast_app()) as c:
            body = completion(3, 4, polyserve_kv={"prefilled": True, "id": "cmpl-abc", "created": 1234})
            events, _ = await stream_events(c, "/v1/completions", body)
            bad = await c.post("/v1/completions", json=completion(3, 4, polyserve_kv={"prefilled": True, "id": 5}))
            return events, bad

    events, bad = run(main())
    assert {(e["id"], e["created"]) for _, e in events if e != "[DONE]"} == {("cmpl-abc", 1234)}
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "polyserve_kv"
