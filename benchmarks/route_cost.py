"""Routing decision cost: microseconds per ``route()`` call at 64 and at 1,000 servers.

    .venv/bin/python benchmarks/route_cost.py [--decisions 20000] [--repeats 5]

Each fleet is co-located, split evenly over the shipped four tiers, each server holding a random decoding
batch of its tier (0 to 30 requests). A stream of requests (random tier, 200-2,000 prompt tokens) is routed;
every dispatch is followed by the finish of a random outstanding request, so the load stays steady. Only the
``route()`` call is timed (``time.perf_counter_ns`` around it). Two scenarios:

- ``steady``: the fleet above; the walk usually stops at the first server it looks at;
- ``saturated``: every server at its tier's TPOT-bound batch, so each decision walks the whole ladder and
  ends pending (the worst case).

Reported: median and p99 per decision, side by side with ``minimal`` (a baseline that scores every server),
medians over ``--repeats`` runs of all routers in one process, interleaved.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time

from polyserve.core.fleet import FleetConfig, FleetState, RequestInfo, ScaleAction
from polyserve.core.tiers import TierSet
from polyserve.data import DEFAULT_TIERS
from polyserve.latency.hardware import get_deployment
from polyserve.latency.linear import blis_linear_model
from polyserve.policy import make_router


def build(n: int, scenario: str, seed: int) -> tuple[FleetState, random.Random]:
    rng = random.Random(seed)
    tiers = TierSet.from_toml(DEFAULT_TIERS)
    m = blis_linear_model(get_deployment("llama-3.1-8b", "h100"))
    f = FleetState(tiers, FleetConfig(kv_capacity_tokens=m.deployment.kv_capacity_tokens), m, ["mixed"] * n)
    rid = 10_000_000
    for s in f.servers:
        t = s.sid % len(tiers)
        f.apply_scale(ScaleAction(s.sid, True, t, "bench"), 0.0)
        cap = int((tiers[t].tpot_ms / 1e3 - 0.00647) / 0.000304)  # the linear model's TPOT-bound batch
        k = cap if scenario == "saturated" else rng.randint(0, 30)
        for _ in range(k):
            r = RequestInfo(rid, 0.0, 200, t, tiers[t].ttft_slo_ms(200) / 1e3, tiers[t].tpot_ms / 1e3)
            f.on_dispatch(r, s.sid, 0.0)
            f.on_first_token(rid, 0.0)
            rid += 1
    return f, rng


def run(router_name: str, n: int, scenario: str, decisions: int, seed: int) -> list[int]:
    f, rng = build(n, scenario, seed)
    router = make_router(router_name, random.Random(seed))
    tiers = f.tiers
    now = 10.0
    times: list[int] = []
    outstanding = list(f.entries)
    for rid in range(decisions):
        t = rng.randrange(len(tiers))
        inp = rng.randint(200, 2000)
        req = RequestInfo(rid, now, inp, t, tiers[t].ttft_slo_ms(inp) / 1e3, tiers[t].tpot_ms / 1e3)
        t0 = time.perf_counter_ns()
        d = router.route(req, f, now, "mixed")
        times.append(time.perf_counter_ns() - t0)
        if d.action == "dispatch" and d.server is not None:
            for a in d.scale:
                f.apply_scale(a, now)
            f.on_dispatch(req, d.server, now)
            f.on_first_token(req.rid, now)
            outstanding.append(req.rid)
            j = rng.randrange(len(outstanding))
            outstanding[j], outstanding[-1] = outstanding[-1], outstanding[j]
            f.on_finish(outstanding.pop(), now, 100)
        now += 1e-3
    return times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--decisions", type=int, default=20_000)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    routers = ("polyserve", "minimal")
    print(f"{'servers':>7} {'scenario':>9} {'router':>10} {'median us':>10} {'p99 us':>8}  "
          f"(medians of {args.repeats} runs, {args.decisions} decisions each)")
    for n in (64, 1000):
        for scenario in ("steady", "saturated"):
            res: dict[str, list[tuple[float, float]]] = {r: [] for r in routers}
            for k in range(args.repeats):
                for r in routers:  # interleaved, so machine noise hits both alike
                    ts = sorted(run(r, n, scenario, args.decisions, seed=k))
                    res[r].append((ts[len(ts) // 2] / 1e3, ts[int(len(ts) * 0.99)] / 1e3))
            for r in routers:
                med = statistics.median(x[0] for x in res[r])
                p99 = statistics.median(x[1] for x in res[r])
                print(f"{n:>7} {scenario:>9} {r:>10} {med:>10.1f} {p99:>8.1f}")


if __name__ == "__main__":
    main()
