"""Over real loopback sockets: the official openai client through a gateway process, an engine killed
mid-run, and ``polyserve up`` stopped by SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import httpx
import openai
import pytest

from polyserve.engine import EngineConfig, launch_engine
from polyserve.gateway.process import launch_gateway

MODEL = "llama-3.1-8b"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory):
    """Two engines (time scale 2: a 400-token stream lasts over a second) and a gateway process in front."""
    engines = [launch_engine(EngineConfig(time_scale=2)) for _ in range(2)]
    cfg = tmp_path_factory.mktemp("gw") / "gateway.yaml"
    cfg.write_text(
        "model: llama-3.1-8b\n"
        f"backends: [{engines[0].url}, {engines[1].url}]\n"
        "engine: {time_scale: 2}\n"
        "scrape_interval_s: 0.3\n"
        "timeouts: {connect_s: 1, first_token_s: 20, idle_s: 5}\n"
    )
    gw = launch_gateway(["gateway", "--config", str(cfg), "--port", "0"])
    try:
        yield gw, engines
    finally:
        gw.stop()
        for e in engines:
            e.stop()


def _counts(url: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for line in httpx.get(url + "/metrics").text.splitlines():
        if line.startswith("polyserve_requests_total{"):
            outcome = line.split('outcome="', 1)[1].split('"', 1)[0]
            out[outcome] = out.get(outcome, 0.0) + float(line.rsplit(" ", 1)[1])
        if line.startswith("polyserve_requests_accepted_total{"):
            out["accepted"] = out.get("accepted", 0.0) + float(line.rsplit(" ", 1)[1])
    return out


def test_openai_client_streams_and_gets_errors_through_the_gateway(stack) -> None:
    gw, _ = stack
    c = openai.OpenAI(base_url=gw.url + "/v1", api_key="unused", max_retries=0)
    assert [m.id for m in c.models.list()] == [MODEL]
    stream = c.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "hello there"}],
        max_tokens=5,
        stream=True,
        stream_options={"include_usage": True},
        extra_headers={"x-slo-ttft-ms": "2000", "x-slo-tpot-ms": "50"},
    )
    chunks = list(stream)
    words = [ch.choices[0].delta.content for ch in chunks if ch.choices and ch.choices[0].delta.content]
    assert words == ["the", " quick", " brown", " fox", " jumps"]
    assert chunks[-1].usage.completion_tokens == 5
    comp = c.completions.create(model=MODEL, prompt="a b c", max_tokens=3, stream=True)
    assert "".join(ch.choices[0].text for ch in comp) == "the quick brown"
    with pytest.raises(openai.BadRequestError):
        c.completions.create(model=MODEL, prompt="x", max_tokens=2, extra_headers={"x-slo-tpot-ms": "1"})
    with pytest.raises(openai.NotFoundError):
        c.completions.create(model="other", prompt="x", max_tokens=2)


def test_killing_an_engine_mid_run(stack) -> None:
    """Streams on the killed engine end with an error event; requests after it are placed elsewhere."""
    gw, engines = stack
    before = _counts(gw.url)
    results: list[dict] = [{} for _ in range(3)]
    started = threading.Barrier(4, timeout=30)

    def stream(k: int) -> None:
        res = results[k]
        res["events"] = []
        with httpx.stream(
            "POST", gw.url + "/v1/completions", timeout=30,
            json={"model": MODEL, "prompt": "x y", "max_tokens": 400, "stream": True},
        ) as r:  # fmt: skip
            res["server"] = int(r.headers["x-polyserve-server"])
            first = True
            for line in r.iter_lines():
                if line.startswith("data: "):
                    res["events"].append(line[6:])
                    if first:
                        first = False
                        started.wait()

    threads = [threading.Thread(target=stream, args=(k,)) for k in range(3)]
    for t in threads:
        t.start()
    started.wait()
    victims = {r["server"] for r in results}
    victim = max(victims, key=lambda s: sum(r["server"] == s for r in results))
    os.kill(engines[victim].proc.pid, signal.SIGKILL)
    for t in threads:
        t.join(30)
    for r in results:
        if r["server"] == victim:
            assert r["events"][-1] != "[DONE]"
            assert json.loads(r["events"][-1])["error"]["code"] == 502
        else:
            assert r["events"][-1] == "[DONE]"
    # new requests: the first may try the dead engine (connect refused) and is retried on the other
    c = openai.OpenAI(base_url=gw.url + "/v1", api_key="unused", max_retries=0)
    for _ in range(4):
        out = c.completions.create(model=MODEL, prompt="p q", max_tokens=4)
        assert out.choices[0].text == "the quick brown fox"
    after = _counts(gw.url)
    killed = sum(r["server"] == victim for r in results)
    assert after["failed"] - before.get("failed", 0) == killed
    assert after["completed"] - before.get("completed", 0) == 4 + 3 - killed
    assert after["accepted"] == after["completed"] + after["failed"] + after["shed"]
    health = httpx.get(gw.url + "/health").json()
    assert health["backends_up"] == 1


def test_up_starts_engines_and_sigterm_stops_them_all(tmp_path: Path) -> None:
    up = launch_gateway(["up", "--port", "0", "--engines", "2", "--time-scale", "20"])
    try:
        pids = [int(line.rsplit("pid ", 1)[1].rstrip(")")) for line in up.lines if line.startswith("engine ")]
        assert len(pids) == 2
        assert httpx.get(up.url + "/v1/models").json()["data"][0]["id"] == MODEL
        r = httpx.post(up.url + "/v1/completions", json={"prompt": "a", "max_tokens": 3}, timeout=10)
        assert r.json()["choices"][0]["text"] == "the quick brown"
        t0 = time.monotonic()
        code = up.stop(timeout=20)
        assert code == 0 and time.monotonic() - t0 < 15
        for pid in pids:
            assert not Path(f"/proc/{pid}").exists()  # stopped and reaped by `up`
    finally:
        up.stop()
