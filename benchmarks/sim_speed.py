"""Simulator speed and memory, measured on whole `polyserve simulate` processes (start-up, reading and
writing included). Prints simulated requests per wall-clock second and peak memory (max RSS), median of
several runs side by side.

    .venv/bin/python benchmarks/sim_speed.py            # Azure conv @ 50 req/s on 32 instances, 5 runs
    .venv/bin/python benchmarks/sim_speed.py --million  # also 1,000,000 synthetic requests (about a minute)

Targets (issue 3): >= 10,000 requests/s on one core; < 1 GB for a million requests.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def run(args: list[str]) -> tuple[float, float]:
    """(wall seconds, peak RSS MiB) of one `polyserve simulate` child process."""
    with tempfile.TemporaryDirectory() as out:
        cmd = [sys.executable, "-m", "polyserve", "simulate", *args, "--out", out, "--quiet"]
        t0 = time.perf_counter()
        before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        p = subprocess.run(cmd, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        if p.returncode != 0:
            sys.exit(f"failed: {' '.join(cmd)}\n{p.stderr}")
        rss_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        # ru_maxrss of children is the max over all waited-for children: run each case in its own process
        del before
        with open(os.path.join(out, "requests.csv"), encoding="utf-8") as f:
            rows = sum(1 for _ in f) - 1
    return wall, rss_kib / 1024, rows  # type: ignore[return-value]


def measure(label: str, args: list[str], repeats: int) -> None:
    walls, rsss = [], []
    rows = 0
    for _ in range(repeats):
        # a fresh grandchild per run so max RSS is this run's own
        out = subprocess.run(
            [sys.executable, __file__, "--one", "--", *args], capture_output=True, text=True, check=True
        ).stdout.split()
        walls.append(float(out[0]))
        rsss.append(float(out[1]))
        rows = int(out[2])
    w = statistics.median(walls)
    print(
        f"{label}: {rows:,} requests, median wall {w:.2f} s over {repeats} runs "
        f"(min {min(walls):.2f}, max {max(walls):.2f}) -> {rows / w:,.0f} simulated requests/s; "
        f"peak RSS median {statistics.median(rsss):.0f} MiB"
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--million", action="store_true", help="also run 1,000,000 synthetic requests")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("rest", nargs="*")
    a = ap.parse_args()
    if a.one:
        wall, rss, rows = run(a.rest)
        print(wall, rss, rows)
        return
    measure("Azure conv @ 50 req/s, 32 instances", ["--rate", "50", "--instances", "32"], a.repeats)
    if a.million:
        measure(
            "1M synthetic (poisson 1000 req/s, 1024 in / 128 out, 100 instances)",
            ["--synthetic", "--num-requests", "1000000", "--rate", "1000", "--instances", "100"],
            1,
        )


if __name__ == "__main__":
    main()
