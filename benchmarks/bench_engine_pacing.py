"""Emulated engine under load: does it keep the modelled pace, and what does a token cost it in CPU?

The engine runs in its own process (``launch_engine``, real loopback sockets, time scale 1); the load comes
from ``polyserve bench`` in this process: N streams at once (N = 1, 10, 100, 250), each 32 prompt and
OUTPUT output tokens. For each N it prints the mean inter-token gap the client measured, the same figure from
the engine's own ``vllm:inter_token_latency_seconds`` histogram (the model's timeline), the latency model's
decode iteration for a batch of N, and the CPU both processes used (engine per generated token, from /proc).

    .venv/bin/python benchmarks/bench_engine_pacing.py [--output 64] [--streams 1,10,100,300]

What to expect: client and engine ITL agree within a few percent (delivery keeps the modelled pace) while
both processes have CPU to spare. The engine ITL falls below the model's full-batch figure as N grows because
a Python client needs a while to open N connections: early requests decode in a smaller batch, and leave it
early. Past what one core can deliver, the engine's timeline stays exact but delivery lags.
"""

from __future__ import annotations

import argparse
import asyncio
import os

import httpx

from polyserve.bench import BenchConfig, benchmark
from polyserve.engine import EngineConfig, launch_engine
from polyserve.latency.build import FleetSpec, build_model


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def engine_itl(url: str) -> tuple[float, float]:
    """(sum, count) of the engine's own vllm:inter_token_latency_seconds histogram."""
    total = count = 0.0
    for line in httpx.get(url + "/metrics").text.splitlines():
        if line.startswith("vllm:inter_token_latency_seconds_sum"):
            total = float(line.rsplit(" ", 1)[1])
        elif line.startswith("vllm:inter_token_latency_seconds_count"):
            count = float(line.rsplit(" ", 1)[1])
    return total, count


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--output", type=int, default=64)
    ap.add_argument("--streams", default="1,10,100,250")
    args = ap.parse_args()
    model = build_model(FleetSpec())
    print(
        f"{'streams':>8} {'client ITL mean ms':>19} {'engine ITL mean ms':>19} {'model ms':>9} "
        f"{'TPOT p50 ms':>12} {'engine CPU us/token':>20} {'engine CPU':>10} {'client CPU':>10}"
    )
    with launch_engine(EngineConfig()) as engine:
        for n in (int(x) for x in args.streams.split(",")):
            cfg = BenchConfig(
                base_url=engine.url,
                num_prompts=n,
                random_input_len=32,
                random_output_len=args.output,
                max_concurrency=n,
            )
            c0, m0, (s0, k0) = cpu_seconds(engine.proc.pid), os.times(), engine_itl(engine.url)
            doc = asyncio.run(benchmark(cfg))
            cpu, m1, (s1, k1) = cpu_seconds(engine.proc.pid) - c0, os.times(), engine_itl(engine.url)
            mine = (m1.user + m1.system) - (m0.user + m0.system)
            tokens = doc["total_output_tokens"]
            want = model.iteration_time(min(n, 256), 0, 0) * 1e3  # vLLM's max_num_seqs: 256 run at once
            print(
                f"{n:>8} {doc['mean_itl_ms']:>19.2f} {(s1 - s0) / max(1, k1 - k0) * 1e3:>19.2f} {want:>9.2f} "
                f"{doc['median_tpot_ms']:>12.2f} {cpu / tokens * 1e6:>20.1f} {cpu / doc['duration']:>10.0%} "
                f"{mine / doc['duration']:>10.0%}",
                flush=True,
            )


if __name__ == "__main__":
    main()
