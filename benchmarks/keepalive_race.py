"""Requests lost between a client's keep-alive pool and the gateway's idle-connection timer.

    .venv/bin/python benchmarks/keepalive_race.py [--connections 200] [--rounds 8] [--gap 5.0] [--keep-alive S]

Starts ``polyserve up`` (2 emulated engines) and keeps ``--connections`` clients, one shared ``httpx`` pool
with its default 5 s idle expiry (the openai client's too), each sending a short streaming completion, then
idling ``--gap`` +- 50 ms, ``--rounds`` times, all starting together (so the gateway is busy, its event loop
late, when they come back). A gap near 5 s is the worst case: the client still trusts a
pooled connection that the server is about to close. Every request ends one way: an HTTP status, or an
exception (``ReadError``: reset by the server; ``RemoteProtocolError``: closed before any response) that the
gateway never saw. Printed: those counts, and the gateway's own count of requests (``polyserve_requests_total``,
every outcome), which must equal the HTTP answers.

``--keep-alive S`` runs the gateway with ``timeouts.keep_alive_s: S`` (5 = uvicorn's default, what the gateway
ran before issue 11 item 8); without it the gateway's default.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import random
import sys
import tempfile
from pathlib import Path

import httpx

from polyserve.gateway.process import launch_gateway


async def load(url: str, connections: int, rounds: int, gap: float) -> collections.Counter[str]:
    counts: collections.Counter[str] = collections.Counter()
    body = {"model": "llama-3.1-8b", "prompt": "w w w w", "max_tokens": 2, "stream": True}

    async def client(c: httpx.AsyncClient, k: int) -> None:
        rng = random.Random(k)
        for _ in range(rounds):
            try:
                async with c.stream("POST", url + "/v1/completions", json=body,
                                    headers={"x-slo-tpot-ms": "100"}) as r:
                    await r.aread()
                    counts[f"http_{r.status_code}"] += 1
            except httpx.HTTPError as e:
                counts[type(e).__name__] += 1
            await asyncio.sleep(gap + rng.uniform(-0.05, 0.05))

    limits = httpx.Limits(max_connections=None, max_keepalive_connections=None)  # expiry: httpx's default
    async with httpx.AsyncClient(timeout=60, limits=limits) as c:
        await asyncio.gather(*(client(c, k) for k in range(connections)))
    return counts


def gateway_count(url: str) -> int:
    total = 0.0
    for line in httpx.get(url + "/metrics").text.splitlines():
        if line.startswith("polyserve_requests_total{"):
            total += float(line.rsplit(" ", 1)[1])
    return round(total)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--connections", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--gap", type=float, default=5.0, help="idle seconds between a client's requests")
    ap.add_argument("--keep-alive", type=float, default=None, help="the gateway's timeouts.keep_alive_s")
    args = ap.parse_args()
    cmd = ["up", "--engines", "2", "--port", "0"]
    if args.keep_alive is not None:
        cfg = Path(tempfile.mkdtemp(prefix="keepalive-race-")) / "gateway.yaml"
        cfg.write_text(f"timeouts: {{keep_alive_s: {args.keep_alive}}}\n")
        cmd += ["--config", str(cfg)]
    gw = launch_gateway(cmd)
    try:
        counts = asyncio.run(load(gw.url, args.connections, args.rounds, args.gap))
        seen = gateway_count(gw.url)
    finally:
        gw.stop()
    sent = sum(counts.values())
    answered = sum(v for k, v in counts.items() if k.startswith("http_"))
    ka = "default" if args.keep_alive is None else f"{args.keep_alive:g} s"
    print(f"gateway keep-alive {ka}; {args.connections} connections x {args.rounds} rounds, gap {args.gap:g} s")
    print(f"sent {sent}: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    print(f"lost in flight (an exception, never seen by the gateway): {sent - answered}")
    print(f"gateway counted {seen} (HTTP answers {answered})")
    return 0 if sent == answered == seen else 1


if __name__ == "__main__":
    sys.exit(main())
