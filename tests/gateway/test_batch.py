"""``BatchMerger``: n answers in, vLLM's one batch answer out; it ends whatever the prompts' tasks do."""

from __future__ import annotations

import asyncio
import json

from polyserve.gateway.batch import BatchMerger


def _run_merger(n: int, scripts, stream: bool = False):
    """Each script sends messages through its sender; returns the messages the client got."""
    got: list[dict] = []

    async def client_send(m: dict) -> None:
        got.append(m)

    async def main():
        merger = BatchMerger(n, stream, False, "cmpl-b", 7, [])
        loop = asyncio.get_running_loop()
        tasks = [loop.create_task(script(merger.sender(i))) for i, script in enumerate(scripts)]
        for i, t in enumerate(tasks):
            t.add_done_callback(lambda _t, i=i: merger.ended(i))
        return merger, tasks

    async def go():
        merger, tasks = await main()
        if len(tasks) > 1:
            tasks[1].cancel()  # cancelled before its first step: it never sends, never runs a finally
        await asyncio.wait_for(merger.run(client_send, tasks), 5)
        return merger

    merger = asyncio.run(go())
    return got, merger


def test_a_failure_answers_the_batch_even_when_a_prompt_never_started() -> None:
    async def fails(send):
        await send({"type": "http.response.start", "status": 429, "headers": [(b"retry-after", b"1")]})
        await send({"type": "http.response.body", "body": b'{"error": {"message": "shed"}}', "more_body": False})

    async def never(send):
        await asyncio.sleep(10)

    got, merger = _run_merger(2, [fails, never])
    assert got[0]["status"] == 429 and (b"retry-after", b"1") in got[0]["headers"]
    assert json.loads(got[1]["body"])["error"]["message"] == "shed" and merger.complete


def test_whole_answers_merge_into_one_choice_per_prompt() -> None:
    def answer(text: str):
        async def script(send):
            doc = {"id": "x", "object": "text_completion", "created": 1, "model": "m",
                   "choices": [{"index": 0, "text": text, "finish_reason": "length"}],
                   "usage": {"prompt_tokens": 2, "completion_tokens": 3, "total_tokens": 5}}
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": json.dumps(doc).encode(), "more_body": False})
        return script

    got: list[dict] = []

    async def go():
        async def client_send(m: dict) -> None:
            got.append(m)

        merger = BatchMerger(3, False, False, "cmpl-b", 7, [])
        loop = asyncio.get_running_loop()
        tasks = [loop.create_task(answer(t)(merger.sender(i))) for i, t in enumerate("abc")]
        for i, t in enumerate(tasks):
            t.add_done_callback(lambda _t, i=i: merger.ended(i))
        await asyncio.wait_for(merger.run(client_send, tasks), 5)

    asyncio.run(go())
    doc = json.loads(got[1]["body"])
    assert [(c["index"], c["text"]) for c in doc["choices"]] == [(0, "a"), (1, "b"), (2, "c")]
    assert doc["usage"] == {"prompt_tokens": 6, "completion_tokens": 9, "total_tokens": 15}
    assert (doc["id"], doc["created"]) == ("cmpl-b", 7)
