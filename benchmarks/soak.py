"""Soak and faults: steady load through ``polyserve up`` while one engine is SIGKILLed and another SIGSTOPped.

    .venv/bin/python benchmarks/soak.py [--minutes 10] [--engines 4] [--rate 12] [--time-scale 1]

Open-loop Poisson load of short streaming completions (32-word prompts, 32 tokens, the four default tiers)
for ``--minutes``; at 1/3 of the run one engine process is SIGKILLed (``polyserve up`` must replace it), at
1/2 another is SIGSTOPped for 30 s then SIGCONTed. Every request is accounted: ``completed`` (200 and
``[DONE]``), ``shed`` (429/503), ``failed`` (any other answer, or a stream that ends without ``[DONE]``),
``hung`` (no end within ``--timeout`` seconds). Printed: accepted = completed + failed + shed (+ hung), and the
gateway process's RSS sampled every 10 s with its least-squares slope after the first third (MB/min).

Goals (issue 11): 0 lost (every request ends one of those ways), 0 hung, RSS slope < 1 MB/min after warm-up.
The default rate is about 80% of what 4 engines serve at time scale 1 on this workload (measured by hand:
raise ``--rate`` until shedding starts, take 80%).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import re
import signal
import sys
import time

import httpx
import numpy as np

from polyserve.gateway.process import launch_gateway

TIERS = ("20", "30", "50", "100")


def rss_mb(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


async def one(c: httpx.AsyncClient, url: str, k: int, timeout: float, counts: dict[str, int]) -> None:
    body = {"model": "llama-3.1-8b", "prompt": " ".join(["w"] * 32), "max_tokens": 32, "stream": True}
    headers = {"x-slo-tpot-ms": TIERS[k % len(TIERS)]}
    try:
        async with asyncio.timeout(timeout):
            async with c.stream("POST", url + "/v1/completions", json=body, headers=headers) as r:
                if r.status_code in (429, 503):
                    await r.aread()
                    counts["shed"] += 1
                    return
                if r.status_code != 200:
                    await r.aread()
                    counts["failed"] += 1
                    return
                done = False
                async for line in r.aiter_lines():
                    if line == "data: [DONE]":
                        done = True
                counts["completed" if done else "failed"] += 1
    except TimeoutError:
        counts["hung"] += 1
    except httpx.HTTPError:
        counts["failed"] += 1  # the connection itself broke: counted, not lost


async def load(url: str, args, pids: list[int], gw_pid: int) -> tuple[dict[str, int], list[tuple[float, float]], int]:
    counts = dict.fromkeys(("completed", "failed", "shed", "hung"), 0)
    rss: list[tuple[float, float]] = []
    total = args.minutes * 60
    rng = random.Random(0)
    tasks: set[asyncio.Task[None]] = set()
    sent = 0
    faults = [(total / 3, "kill"), (total / 2, "stop"), (total / 2 + 30, "cont")]
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=200)
    async with httpx.AsyncClient(timeout=None, limits=limits) as c:
        t0 = time.monotonic()
        next_rss = 0.0
        nxt = 0.0
        while (now := time.monotonic() - t0) < total:
            while faults and now >= faults[0][0]:
                _, what = faults.pop(0)
                if what == "kill":
                    os.kill(pids[0], signal.SIGKILL)
                elif what == "stop":
                    os.kill(pids[1], signal.SIGSTOP)
                else:
                    os.kill(pids[1], signal.SIGCONT)
                print(f"{now:7.1f} s  {what} engine", file=sys.stderr)
            if now >= next_rss:
                m = rss_mb(gw_pid)
                if m is not None:
                    rss.append((now, m))
                next_rss += 10.0
            if now >= nxt:
                t = asyncio.create_task(one(c, url, sent, args.timeout, counts))
                tasks.add(t)
                t.add_done_callback(tasks.discard)
                sent += 1
                nxt += rng.expovariate(args.rate)
            await asyncio.sleep(max(0.0, min(nxt, next_rss) - (time.monotonic() - t0)))
        if tasks:
            await asyncio.wait(tasks, timeout=args.timeout + 5)
    return counts, rss, sent


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--engines", type=int, default=4)
    ap.add_argument("--rate", type=float, default=12.0, help="req/s, Poisson")
    ap.add_argument("--time-scale", type=float, default=1.0)
    ap.add_argument("--timeout", type=float, default=120.0, help="a request with no end by then is hung")
    args = ap.parse_args()
    gw = launch_gateway(["up", "--engines", str(args.engines), "--port", "0", "--time-scale", repr(args.time_scale)])
    try:
        pids = [int(m.group(1)) for line in gw.lines if (m := re.search(r"\(pid (\d+)\)", line))]
        if len(pids) < 2:
            print(f"soak: could not read the engines' pids from polyserve up: {gw.lines}", file=sys.stderr)
            return 2
        counts, rss, sent = asyncio.run(load(gw.url, args, pids, gw.proc.pid))
    finally:
        gw.stop()
    ended = sum(counts.values())
    print(f"{args.minutes:g} min at {args.rate:g} req/s through polyserve up ({args.engines} engines, time scale "
          f"{args.time_scale:g}); engine 0 SIGKILLed at 1/3, engine 1 SIGSTOPped 30 s at 1/2")
    print(f"sent {sent}: completed {counts['completed']}, failed {counts['failed']}, shed {counts['shed']}, "
          f"hung {counts['hung']}; lost (sent - ended) {sent - ended}")
    after = [(t, m) for t, m in rss if t >= args.minutes * 60 / 3]
    if len(after) >= 3:
        ts, ms = np.array(after).T
        slope = float(np.polyfit(ts / 60, ms, 1)[0])
        print(f"gateway RSS {rss[0][1]:.1f} -> {rss[-1][1]:.1f} MB; slope after warm-up {slope:+.2f} MB/min "
              f"({len(after)} samples)")
    else:
        print("gateway RSS: too few samples after warm-up for a slope (run longer)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
