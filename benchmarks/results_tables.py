"""Markdown tables of a ``polyserve compare`` output directory (what README "Results" shows).

    .venv/bin/python benchmarks/results_tables.py runs/compare [--title TEXT]

Reads ``compare.json``, ``compare_<model>.json`` (if any) and ``compare_details.json``; prints one table per
file plus the headline ratios and, when present, the fleet-size sweep. Numbers are printed as measured.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def _f(x: object, nd: int = 1) -> str:
    return "-" if x is None else f"{x:.{nd}f}"  # type: ignore[str-format]


def _pct(x: object) -> str:
    return "-" if x is None else f"{x:.1%}"  # type: ignore[str-format]


def table(rows: list[dict], tiers: list[str]) -> str:
    head = ["policy", "mode", "goodput req/s", "every-tier req/s", "% of bound", *[f"att {t}" for t in tiers],
            "autoscaled att/inst-s", "scale acts", "TTFT p50/p99 ms", "TPOT p50/p99 ms"]
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        if r.get("na"):
            out.append("| " + " | ".join([r["policy"], r["mode"], *["n/a"] * (len(head) - 2)]) + " |")
            continue
        ab = r.get("attainment_by_tier") or {}
        name = r["policy"] + (f" ({r['token_budget']})" if r.get("token_budget") else "")
        cells = [name, r["mode"], _f(r["goodput_rps"]), _f(r["goodput_rps_all_tiers"]), _pct(r["goodput_fraction"]),
                 *[_pct(ab.get(t)) for t in tiers], _f(r["autoscaled_goodput_per_instance_s"], 3),
                 str(r["scaling_actions"]) if r.get("scaling_actions") is not None else "-",
                 f"{_f(r['ttft_p50_ms'], 0)} / {_f(r['ttft_p99_ms'], 0)}",
                 f"{_f(r['tpot_p50_ms'])} / {_f(r['tpot_p99_ms'])}"]
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dir", type=Path)
    args = ap.parse_args()
    details = json.loads((args.dir / "compare_details.json").read_text())
    tiers: list[str] = []
    for f in sorted(args.dir.glob("compare*.json")):
        if f.name == "compare_details.json":
            continue
        rows = json.loads(f.read_text())
        for r in rows:
            for t in r.get("attainment_by_tier") or {}:
                if t not in tiers:
                    tiers.append(t)
        models = sorted({r["latency_model"] for r in rows if not r.get("na")})
        print(f"**{f.name}** (latency model: {', '.join(models)})\n")
        print(table(rows, tiers))
        print()
    head = details.get("headline") or {}
    for mode in ("colocated", "disaggregated"):
        h = head.get(mode)
        if not isinstance(h, dict):
            continue
        print(f"- {mode}: PolyServe {_f(h.get('polyserve_goodput_rps'))} req/s "
              f"({_pct(h.get('goodput_fraction_of_optimal'))} of the bound); "
              f"x{_f(h.get('ratio_vs_best_paper'), 3)} the best paper baseline ({h.get('best_paper_baseline')}, "
              f"{_f(h.get('best_paper_goodput_rps'))}), x{_f(h.get('ratio_vs_best_stronger'), 3)} the best "
              f"stronger one ({h.get('best_stronger_baseline')}, {_f(h.get('best_stronger_goodput_rps'))}); "
              f"every-tier goodput x{_f(h.get('ratio_all_tiers_vs_best_paper'), 3)} / "
              f"x{_f(h.get('ratio_all_tiers_vs_best_stronger'), 3)}")
    fleet = details.get("fleet_scaling") or []
    if fleet:
        print("\n| policy | instances | goodput req/s | per instance | bound req/s |\n|---|---|---|---|---|")
        for r in fleet:
            print(f"| {r['policy']} | {r['instances']} | {_f(r['goodput_rps'])} | {_f(r['goodput_per_instance'], 2)}"
                  f" | {_f(r['optimal_rps'])} |")
    sweep = details.get("rate_sweep") or {}
    if sweep:
        print("\n| policy | rate req/s | attainment | " + " | ".join(tiers) + " |\n|---|---|---|" + "---|" * len(tiers))
        for pol, pts in sorted(sweep.items()):
            for p in pts:
                print(f"| {pol} | {_f(p['rate'])} | {_pct(p['attainment'])} | "
                      + " | ".join(_pct(p["tiers"].get(t)) for t in tiers) + " |")


if __name__ == "__main__":
    main()
