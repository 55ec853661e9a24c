"""``make demo``: a short PolyServe-vs-baselines comparison on the shipped Azure conversation trace.

It is ``polyserve compare`` with small settings so it ends in a few minutes on 2 cores: PolyServe and the
paper's baselines (Random, Minimal, CO-Chunk with three static budgets), co-located and disaggregated, on 32
H100 instances of Llama-3.1-8B under the default (BLIS linear) latency model, goodput probes of 120 simulated
seconds (20 s warm-up) instead of 600 s, one seed instead of three, no sensitivity model, no rate or fleet
sweeps. Its figures are
therefore noisier than the full run's; README "Results" holds the full run and the command that made it.

Usage: ``python -m polyserve.cli.demo [--out DIR]`` (default ``runs/demo``).
"""

from __future__ import annotations

import sys

DEMO_ARGS = [
    "compare",
    "--policies", "polyserve,random,minimal,co-chunk",
    "--modes", "colocated,disaggregated",
    "--co-chunk-budgets", "512,2048,8192",
    "--duration", "120",
    "--warmup", "20",
    "--sensitivity-model", "none",
    "--rate-sweep", "",
    "--fleet-sizes", "",
    "--seeds", "0",
]
FULL_RUN = ("make compare  (polyserve compare --out runs/compare --duration 150 --warmup 50 --seeds 0,1,2 ...; "
            "README 'Results')")


def main(argv: list[str] | None = None) -> int:
    from polyserve.cli.main import app
    from polyserve.cli.options import console

    argv = list(sys.argv[1:] if argv is None else argv)
    out = "runs/demo"
    if argv[:1] == ["--out"] and len(argv) >= 2:
        out = argv[1]
    elif argv:
        console.print("usage: python -m polyserve.cli.demo [--out DIR]", highlight=False)
        return 2
    console.print(
        "PolyServe demo: PolyServe vs the paper's baselines on the shipped Azure 2023 conversation trace, "
        "32 x Llama-3.1-8B on H100 (short goodput probes: 120 s simulated, 20 s warm-up)",
        highlight=False,
    )
    try:
        app([*DEMO_ARGS, "--out", out], standalone_mode=False)
    except SystemExit as e:  # a failing command exits through typer
        return int(e.code or 0)
    console.print(f"\nDemo outputs: {out}/ (compare.json, compare.csv, goodput_by_policy.png, ...)", highlight=False)
    console.print(f"Full run (150 s probes, 3 seeds, every baseline and ablation): {FULL_RUN}", highlight=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
