"""Replace rows of one ``polyserve compare`` output with the rows of another, and recompute the headline.

    .venv/bin/python benchmarks/merge_compare.py BASE_DIR NEW_DIR OUT_DIR [--drop POLICY ...]

Why this is sound: every row of ``compare.json`` comes from its own deterministic tasks (policy x mode x seed,
the work bound depends only on the workload), so a row computed in a later run with the same trace, fleet,
probe settings and seeds is exactly the row a full rerun would give. Use it after changing one policy, to
re-measure only that policy's rows. Rows of NEW that BASE lacks are appended; ``--drop`` removes the rows of a
policy that no longer exists (a renamed variant). Refuses to merge outputs whose settings differ (it names the
field); the trace may be named by two paths (runs from two checkouts) when it is the same file.

``--allow-sim FIELD``: a simulator setting added or changed since BASE ran, which provably leaves BASE's other
rows as they are (say why where the figures are quoted; e.g. ``decode_seat_timeout_s`` only ends decodes held in
the router, and the baselines never hold one). The merged output records NEW's value and, in ``merged_from``,
which field was allowed to differ and BASE's value of it.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from polyserve.experiments.compare import CompareResult, CompareSettings, Context, headline, write_outputs
from polyserve.experiments.goodput import GoodputSettings
from polyserve.latency.build import FleetSpec
from polyserve.sim.config import SimConfig

SAME = ("trace", "fleet", "sim", "goodput")  # meta fields that must agree (sim.mode may differ: rows name it)
SAME_OPTIONAL = ("trace_format", "tiers", "tier_weights")  # recorded since the tail-bounded compare


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("base", type=Path)
    ap.add_argument("new", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--drop", action="append", default=[], help="remove this policy's rows (repeatable)")
    ap.add_argument("--allow-sim", action="append", default=[], metavar="FIELD",
                    help="a meta.sim field that may differ (NEW's value is kept); only one that cannot change "
                         "BASE's rows (repeatable)")
    a = ap.parse_args()
    base_d = json.loads((a.base / "compare_details.json").read_text())
    new_d = json.loads((a.new / "compare_details.json").read_text())
    trace = _same_trace(base_d["meta"]["trace"], new_d["meta"]["trace"])
    if trace is None:
        print(f"merge_compare: meta.trace differs between {a.base} and {a.new} (another file); refusing to merge",
              file=sys.stderr)
        return 2
    base_d["meta"]["trace"] = new_d["meta"]["trace"] = trace
    allowed = {f: base_d["meta"]["sim"].get(f, "absent") for f in a.allow_sim}
    for k in SAME:
        x, y = base_d["meta"][k], new_d["meta"][k]
        if isinstance(x, dict) and isinstance(y, dict):
            x, y = dict(x), dict(y)
            for f in ("mode", *(a.allow_sim if k == "sim" else ())):
                x.pop(f, None)
                y.pop(f, None)
        if x != y:
            print(f"merge_compare: meta.{k} differs between {a.base} and {a.new}; refusing to merge", file=sys.stderr)
            return 2
    for k in SAME_OPTIONAL:
        if base_d["meta"].get(k) != new_d["meta"].get(k):
            print(f"merge_compare: meta.{k} differs between {a.base} and {a.new}; refusing to merge", file=sys.stderr)
            return 2
    if base_d["meta"]["settings"]["seeds"] != new_d["meta"]["settings"]["seeds"]:
        print("merge_compare: the two runs used different seeds; refusing to merge", file=sys.stderr)
        return 2
    rows = json.loads((a.base / "compare.json").read_text())
    new_rows = {(r["policy"], r["mode"]): r for r in json.loads((a.new / "compare.json").read_text())}
    replaced = 0
    for i, r in enumerate(rows):
        n = new_rows.get((r["policy"], r["mode"]))
        if n is not None:
            rows[i] = n
            replaced += 1
    have = {(r["policy"], r["mode"]) for r in rows}
    rows += [r for k, r in new_rows.items() if k not in have]
    rows = [r for r in rows if r["policy"] not in set(a.drop)]
    st = base_d["meta"]["settings"]
    policies = [p for p in dict.fromkeys([*st["policies"], *(r["policy"] for r in rows)]) if p not in set(a.drop)]
    modes = tuple(m for m in ("colocated", "disaggregated")
                  if m in {*st["modes"], *new_d["meta"]["settings"]["modes"]})  # a run per mode merges whole
    settings = CompareSettings(policies=tuple(policies), modes=modes, seeds=tuple(st["seeds"]),
                               co_chunk_budgets=tuple(st["co_chunk_budgets"]),
                               prefill_fractions=tuple(st.get("prefill_fractions") or ()), sensitivity_model=None,
                               rate_sweep=(), fleet_sizes=())
    meta = base_d["meta"]
    for f in a.allow_sim:
        meta["sim"][f] = new_d["meta"]["sim"].get(f)
    ctx = Context(meta["trace"], meta.get("trace_format"), meta.get("tiers"), meta.get("tier_weights"),
                  FleetSpec(**meta["fleet"]), SimConfig(**meta["sim"]), meta["seed"],
                  GoodputSettings(**meta["goodput"]))
    head = headline(rows, ctx, settings, base_d["headline"]["autoscale_rate"],
                    base_d["headline"].get("best_paper_baseline_colocated"))
    timelines = dict(base_d.get("servers_timeline") or {})
    timelines.update(new_d.get("servers_timeline") or {})
    res = CompareResult(rows, [], base_d.get("rate_sweep") or {}, base_d.get("fleet_scaling") or [], timelines, head)
    files = write_outputs(a.out, ctx, settings, res)
    details = json.loads((a.out / "compare_details.json").read_text())
    details["meta"] = {**meta, "settings": details["meta"]["settings"],  # the merged policy list
                       "merged_from": [*meta.get("merged_from", []),
                                       {"base": str(a.base), "new": str(a.new),
                                        "rows": sorted(f"{p}/{m}" for p, m in new_rows),
                                        **({"allowed_sim_differences": {f: {"base": v, "new": meta["sim"][f]}
                                                                        for f, v in allowed.items()}}
                                           if allowed else {})}]}
    (a.out / "compare_details.json").write_text(json.dumps(details, indent=2) + "\n", encoding="utf-8")
    print(f"replaced {replaced} rows; wrote " + ", ".join(str(f) for f in files))
    return 0


def _same_trace(x: str, y: str) -> str | None:
    """The trace both runs read, as a path that exists here, or None if they read different files. The same
    path, or the same file name in two checkouts (``meta.trace`` is the path as given, so a run from another
    checkout names the same shipped trace differently): byte-identical when both paths exist."""
    if x == y:
        return x
    px, py = Path(x), Path(y)
    if px.name != py.name:
        return None
    if px.exists() and py.exists():
        return y if px.read_bytes() == py.read_bytes() else None
    return y if py.exists() else x


if __name__ == "__main__":
    sys.exit(main())
