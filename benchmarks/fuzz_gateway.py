"""Fuzz the gateway: 10,000+ generated requests over every route, then malformed HTTP over raw sockets.

    .venv/bin/python benchmarks/fuzz_gateway.py [--cases 10000] [--raw-cases 2000] [--seed 0]

Part 1, in-process (``--cases``): a gateway in front of two emulated engines (time scale 100, so a valid
request completes in milliseconds), driven by hypothesis: the method and path (every route of the gateway's
``/openapi.json``, with its ``{id}`` filled, plus unknown paths, query strings, odd encodings), headers (the
SLO headers, tier, API key, content type, with valid and invalid values), and the body: an OpenAI request whose
every field is either plausible or any JSON value (batches of prompts, token ids, streaming, usage, the
``polyserve_slo``/``polyserve_kv`` extensions, logprobs, ...), or any JSON document, or random bytes, or JSON
nested 20 to 60 deep. Every response is read to its end (streams too) within 20 s.

Part 2, over loopback sockets (``--raw-cases``): a gateway process with 1 engine; each case is a valid request
whose bytes are mutated (bytes flipped, inserted, deleted, the head or body truncated, CRLFs dropped, headers
duplicated or blown up), sent, the write side closed, and the answer read until the gateway closes, within
``request_head_s``/``request_body_s`` of 2 s plus a margin.

Printed: cases, answers by status, and the defects the goal (issue 11) counts: 5xx answers, error answers not in
OpenAI's shape (``{"error": {"message": str, "type": str, "param": str|null, "code": the status}}``, JSON
content type), streams that end without ``[DONE]`` or an OpenAI-shaped error event, hangs; with a few
examples of each. Exit 1 if any defect was found.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import random
import re
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from polyserve.engine import EngineConfig, StreamingASGITransport, create_engine_app, launch_engine
from polyserve.gateway import config_from_dict, create_gateway_app
from polyserve.gateway.process import launch_gateway

MODEL = "llama-3.1-8b"
CASE_TIMEOUT_S = 20.0


class Stats:
    def __init__(self) -> None:
        self.cases = 0
        self.status: collections.Counter[str] = collections.Counter()
        self.defects: collections.Counter[str] = collections.Counter()
        self.examples: dict[str, list[str]] = collections.defaultdict(list)

    def defect(self, kind: str, example: str) -> None:
        self.defects[kind] += 1
        if len(self.examples[kind]) < 3:
            self.examples[kind].append(example[:400])


def openai_shaped(status: int, content_type: str, body: bytes) -> str | None:
    """None if ``body`` is an OpenAI error for ``status``, else what is wrong."""
    if not content_type.startswith("application/json"):
        return f"content-type {content_type!r}"
    try:
        err = json.loads(body)["error"]
    except (ValueError, KeyError, TypeError):
        return f"not an error object: {body[:120]!r}"
    if not (isinstance(err, dict) and isinstance(err.get("message"), str) and isinstance(err.get("type"), str)
            and err.get("code") == status and (err.get("param") is None or isinstance(err.get("param"), str))):
        return f"bad fields: {err!r}"[:200]
    return None


# ---- part 1: generated requests, in-process ---------------------------------------------------------------
class Hosts(httpx.AsyncBaseTransport):
    def __init__(self, apps: dict[str, Any]) -> None:
        self.transports = {h: StreamingASGITransport(a) for h, a in apps.items()}

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        return await self.transports[request.url.host].handle_async_request(request)


JSONS = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=12),
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=8), kids, max_size=4),
    max_leaves=12,
)
WORDS = st.lists(st.sampled_from(["a", "b", "hello", "x", "é", "日本", ""]), max_size=12).map(" ".join)
PROMPT = (WORDS | st.lists(st.integers(0, 50_000), min_size=1, max_size=10)
          | st.lists(WORDS, min_size=1, max_size=5)
          | st.lists(st.lists(st.integers(0, 9), min_size=1, max_size=4), min_size=1, max_size=4) | JSONS)
MESSAGES = st.lists(st.fixed_dictionaries(
    {"role": st.sampled_from(["user", "system", "assistant"]) | JSONS},
    optional={"content": WORDS | st.lists(st.fixed_dictionaries({"type": st.just("text"), "text": WORDS}),
                                          max_size=2) | JSONS}), max_size=3) | JSONS
FIELDS = st.fixed_dictionaries({}, optional={
    "model": st.sampled_from([MODEL, MODEL, "other", ""]) | JSONS,
    "prompt": PROMPT, "messages": MESSAGES,
    "max_tokens": st.integers(-2, 24) | JSONS, "max_completion_tokens": st.integers(-1, 24) | JSONS,
    "stream": st.booleans() | JSONS,
    "stream_options": st.fixed_dictionaries({}, optional={"include_usage": st.booleans() | JSONS}) | JSONS,
    "n": st.integers(0, 3) | JSONS, "logprobs": st.booleans() | st.integers(0, 5) | JSONS,
    "top_logprobs": st.integers(0, 5) | JSONS, "echo": st.booleans(), "temperature": st.floats() | JSONS,
    "stop": JSONS, "seed": JSONS, "ignore_eos": st.booleans() | JSONS, "priority": st.integers(-3, 3) | JSONS,
    "polyserve_slo": st.fixed_dictionaries({}, optional={"ttft_ms": JSONS | st.floats(-10, 1e4),
                                                         "tpot_ms": JSONS | st.floats(-10, 200)}) | JSONS,
    "polyserve_kv": st.fixed_dictionaries({}, optional={"prefilled": JSONS, "id": JSONS, "created": JSONS}) | JSONS,
    "user": JSONS,
})
VALID_PROMPT = (WORDS | st.lists(WORDS, min_size=1, max_size=4)
                | st.lists(st.lists(st.integers(0, 9), min_size=1, max_size=4), min_size=1, max_size=3))
VALID = st.fixed_dictionaries(
    {"max_tokens": st.integers(1, 16), "stream": st.booleans(), "prompt": VALID_PROMPT,
     "messages": st.lists(st.fixed_dictionaries({"role": st.sampled_from(["user", "system"]), "content": WORDS}),
                          min_size=1, max_size=3)},
    optional={"model": st.just(MODEL), "stream_options": st.fixed_dictionaries({"include_usage": st.booleans()}),
              "temperature": st.floats(0, 2), "ignore_eos": st.booleans(), "priority": st.integers(-3, 3)},
).map(lambda d: d if d["stream"] or "stream_options" not in d else {**d, "stream": True})
# valid requests (prompt and messages both: each route reads its own), to exercise the serving paths
VALID_HEADERS = st.fixed_dictionaries({}, optional={
    "x-slo-ttft-ms": st.sampled_from(["500", "2000", "60000"]), "x-slo-tpot-ms": st.sampled_from(["20", "50", "100"]),
    "x-polyserve-tier": st.sampled_from(["t20", "t30", "t50", "t100"]), "content-type": st.just("application/json")})
HEADER_VALUE = st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=16)
HEADERS = st.fixed_dictionaries({}, optional={
    "x-slo-ttft-ms": st.sampled_from(["1", "0", "-5", "nan", "inf", "1e400", "500", "2000", "1e9", ""]) | HEADER_VALUE,
    "x-slo-tpot-ms": st.sampled_from(["1", "20", "35", "50", "100", "1000", "-1", "0.5"]) | HEADER_VALUE,
    "x-polyserve-tier": st.sampled_from(["t20", "t30", "t100", "nope", ""]) | HEADER_VALUE,
    "x-polyserve-slo": st.sampled_from(["ttft_ms=5;tpot_ms=20", "ttft_ms=x", ";;"]) | HEADER_VALUE,
    "authorization": st.sampled_from(["Bearer sk-a", "Bearer nope", "Basic y", ""]) | HEADER_VALUE,
    "content-type": st.sampled_from(["application/json", "text/plain", "multipart/form-data", ""]),
    "accept": st.sampled_from(["*/*", "text/event-stream", "application/xml"]),
})


def nested(depth: int) -> bytes:
    return ('{"prompt": "a", "x": ' + "[" * depth + "]" * depth + "}").encode()


BODY = st.one_of(
    FIELDS.map(lambda d: json.dumps(d).encode()),
    FIELDS.map(lambda d: json.dumps(d).encode()),
    FIELDS.map(lambda d: json.dumps(d).encode()),
    JSONS.map(lambda d: json.dumps(d).encode()),
    st.binary(max_size=64),
    st.integers(20, 60).map(nested),
    st.just(b""),
)


def paths(doc: dict[str, Any]) -> st.SearchStrategy[str]:
    known = [p.replace("{id}", MODEL) for p in doc["paths"]] + ["/v1/models/other", "/v1/models/"]
    return st.one_of(
        st.sampled_from(known),
        st.sampled_from(known).map(lambda p: p + "?x=1"),
        st.sampled_from(known).map(lambda p: p + "/"),
        st.text(st.characters(min_codepoint=33, max_codepoint=126), max_size=20).map(lambda t: "/" + t.lstrip("/")),
    )


async def one_case(c: httpx.AsyncClient, stats: Stats, method: str, path: str, headers: dict[str, str],
                   body: bytes) -> None:  # fmt: skip
    stats.cases += 1
    desc = f"{method} {path} {headers} {body[:160]!r}"
    try:
        async with asyncio.timeout(CASE_TIMEOUT_S):
            content = body if method in ("POST", "PUT", "PATCH") else None
            async with c.stream(method, path, content=content, headers=headers) as r:
                raw = await r.aread()
    except TimeoutError:
        stats.defect("hang", desc)
        return
    except httpx.HTTPError as e:
        stats.defect("transport error", f"{e!r} {desc}")
        return
    stats.status[str(r.status_code)] += 1
    ctype = r.headers.get("content-type", "")
    if r.status_code >= 500:
        stats.defect("5xx", f"{r.status_code} {raw[:200]!r} <- {desc}")
    if r.status_code >= 400 and method != "HEAD":
        why = openai_shaped(r.status_code, ctype, raw)
        if why is not None:
            stats.defect("error not OpenAI-shaped", f"{why} <- {desc}")
    if r.status_code == 200 and ctype.startswith("text/event-stream"):
        events = [ev for ev in raw.replace(b"\r\n", b"\n").split(b"\n\n") if ev.startswith(b"data:")]
        last = events[-1][5:].strip() if events else b""
        if last != b"[DONE]":
            try:
                err = json.loads(last)["error"]
                ok = isinstance(err["message"], str) and isinstance(err["code"], int)
            except (ValueError, KeyError, TypeError):
                ok = False
            if not ok:
                stats.defect("stream without [DONE] or an error event", f"{raw[-200:]!r} <- {desc}")


def run_inprocess(cases: int, seed: int) -> Stats:
    stats = Stats()
    engines = {f"e{i}": create_engine_app(EngineConfig(time_scale=100)) for i in range(2)}
    cfg = config_from_dict({"model": MODEL, "backends": [f"http://{h}" for h in engines],
                            "engine": {"time_scale": 100}, "scrape_interval_s": 0.2}, "fuzz")
    gw = create_gateway_app(cfg, transport=Hosts(engines))
    loop = asyncio.new_event_loop()
    client = httpx.AsyncClient(transport=StreamingASGITransport(gw), base_url="http://gw", timeout=None)
    doc = loop.run_until_complete(client.get("/openapi.json")).json()
    methods = st.sampled_from(["POST"] * 12 + ["GET"] * 3 + ["PUT", "DELETE", "PATCH", "OPTIONS"])

    @settings(max_examples=cases, deadline=None, database=None, derandomize=False,
              phases=[Phase.generate], suppress_health_check=list(HealthCheck))  # fmt: skip
    @given(method=methods, path=paths(doc), headers=HEADERS, body=BODY, gen=st.sampled_from(
        ["/v1/completions"] * 4 + ["/v1/chat/completions"] * 4 + [None]), valid=st.booleans(),
        valid_body=VALID, valid_headers=VALID_HEADERS)
    def case(method: str, path: str, headers: dict[str, str], body: bytes, gen: str | None, valid: bool,
             valid_body: dict[str, Any], valid_headers: dict[str, str]) -> None:  # fmt: skip
        if gen is not None and method == "POST":
            path = gen  # most POSTs go to a generation route (where the parsing is)
            if valid:  # half of those are valid requests, to exercise serving: streams, batches, usage
                body, headers = json.dumps(valid_body).encode(), valid_headers
        loop.run_until_complete(one_case(client, stats, method, path, headers, body))

    random.seed(seed)
    case()
    loop.run_until_complete(client.aclose())
    loop.run_until_complete(gw.aclose())
    loop.close()
    return stats


# ---- part 2: malformed HTTP over sockets ------------------------------------------------------------------
def valid_request(rng: random.Random) -> bytes:
    body = json.dumps({"model": MODEL, "prompt": "a b c", "max_tokens": rng.randint(1, 4),
                       "stream": rng.random() < 0.5}).encode()
    path = rng.choice(["/v1/completions", "/v1/completions", "/health", "/v1/models"])
    method = b"POST" if path == "/v1/completions" else b"GET"
    head = (method + b" " + path.encode() + b" HTTP/1.1\r\nhost: gw\r\ncontent-type: application/json\r\n"
            b"x-slo-tpot-ms: 100\r\ncontent-length: " + str(len(body)).encode() + b"\r\n\r\n")
    return head + (body if method == b"POST" else b"")


def mutate(raw: bytes, rng: random.Random) -> bytes:
    b = bytearray(raw)
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(9)
        i = rng.randrange(len(b) + 1) if b else 0
        if op == 0 and b:
            b[min(i, len(b) - 1)] = rng.randrange(256)
        elif op == 1:
            b[i:i] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
        elif op == 2 and b:
            del b[i : i + rng.randint(1, 8)]
        elif op == 3:
            del b[i:]
        elif op == 4:
            b = bytearray(bytes(b).replace(b"\r\n", b"\n", rng.randint(1, 3)))
        elif op == 5:
            b = bytearray(bytes(b).replace(b"host: gw\r\n", b"host: gw\r\nhost: gw\r\n"))
        elif op == 6:
            b = bytearray(bytes(b).replace(b"x-slo-tpot-ms: 100", b"x-big: " + b"a" * rng.randint(10, 70_000)))
        elif op == 7:
            b = bytearray(re.sub(rb"content-length: \d+", b"content-length: " + str(rng.randint(-5, 400)).encode(),
                                 bytes(b)))
        else:
            b += raw  # pipelined
    return bytes(b)


def raw_case(addr: tuple[str, int], data: bytes, bound_s: float) -> tuple[bytes, bool]:
    """(everything read until the gateway closed, whether it took longer than ``bound_s``)."""
    out = b""
    with socket.create_connection(addr, timeout=bound_s) as s:
        try:
            s.sendall(data)
            s.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        while True:
            try:
                chunk = s.recv(65536)
            except TimeoutError:
                return out, True
            except OSError:
                break
            if not chunk:
                break
            out += chunk
    return out, False


RESPONSE = re.compile(rb"HTTP/1\.[01] (\d{3}) [^\r\n]*\r\n(.*?)\r\n\r\n", re.S)


def run_raw(cases: int, seed: int) -> Stats:
    stats = Stats()
    engine = launch_engine(EngineConfig(time_scale=100))
    cfg = Path(tempfile.mkdtemp(prefix="fuzz-gw-")) / "gateway.yaml"
    cfg.write_text(f"model: {MODEL}\nbackends: [{engine.url}]\nengine: {{time_scale: 100}}\n"
                   "timeouts: {request_head_s: 2, request_body_s: 2, keep_alive_s: 2}\n")
    gw = launch_gateway(["gateway", "--config", str(cfg), "--port", "0"])
    host, port = gw.url.removeprefix("http://").rsplit(":", 1)
    rng = random.Random(seed)
    try:
        for _ in range(cases):
            data = mutate(valid_request(rng), rng)
            stats.cases += 1
            out, hung = raw_case((host, int(port)), data, 6.0)
            desc = f"{data[:200]!r}"
            if hung:
                stats.defect("hang", desc)
            for m in RESPONSE.finditer(out):
                code = int(m.group(1))
                stats.status[str(code)] += 1
                if code >= 500:
                    stats.defect("5xx", f"{out[:200]!r} <- {desc}")
                if code >= 400:
                    headers = m.group(2).lower()
                    ct = re.search(rb"content-type: ([^\r\n]*)", headers)
                    cl = re.search(rb"content-length: (\d+)", headers)
                    body = out[m.end() : m.end() + int(cl.group(1))] if cl else b""
                    if cl is None:  # chunked: the JSON is in the first chunk
                        rest = out[m.end() :]
                        size, _, after = rest.partition(b"\r\n")
                        body = after[: int(size, 16)] if re.fullmatch(rb"[0-9a-fA-F]+", size) else b""
                    why = openai_shaped(code, ct.group(1).decode() if ct else "", body)
                    if why is not None:
                        stats.defect("error not OpenAI-shaped", f"{why} <- {desc}")
            if not out:
                stats.status["closed without an answer"] += 1
    finally:
        gw.stop()
        engine.stop()
    return stats


def report(name: str, s: Stats, seconds: float) -> None:
    print(f"{name}: {s.cases} cases in {seconds:.0f} s")
    print("  answers: " + ", ".join(f"{k} {v}" for k, v in sorted(s.status.items())))
    kinds = ["5xx", "error not OpenAI-shaped", "stream without [DONE] or an error event", "hang", "transport error"]
    print("  defects: " + ", ".join(f"{k} {s.defects.get(k, 0)}" for k in kinds))
    for k, ex in s.examples.items():
        for e in ex:
            print(f"    {k}: {e}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cases", type=int, default=10_000)
    ap.add_argument("--raw-cases", type=int, default=2_000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    t0 = time.monotonic()
    a = run_inprocess(args.cases, args.seed) if args.cases else Stats()
    t1 = time.monotonic()
    b = run_raw(args.raw_cases, args.seed) if args.raw_cases else Stats()
    t2 = time.monotonic()
    if args.cases:
        report("generated requests (in-process)", a, t1 - t0)
    if args.raw_cases:
        report("malformed HTTP (sockets)", b, t2 - t1)
    total = sum(a.defects.values()) + sum(b.defects.values())
    print(f"total: {a.cases + b.cases} cases, {total} defects")
    return 1 if total else 0


if __name__ == "__main__":
    sys.exit(main())
