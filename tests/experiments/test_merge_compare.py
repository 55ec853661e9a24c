"""``benchmarks/merge_compare.py``: which runs' traces count as the same file."""

from __future__ import annotations

import importlib.util
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "merge_compare.py"
spec = importlib.util.spec_from_file_location("merge_compare", SCRIPT)
mc = importlib.util.module_from_spec(spec)
spec.loader.exec_module(mc)  # type: ignore[union-attr]


def test_the_same_trace_from_two_checkouts_merges_and_another_file_never_does(tmp_path):
    a, b = tmp_path / "one" / "conv.csv", tmp_path / "two" / "conv.csv"
    for p in (a, b):
        p.parent.mkdir()
        p.write_text("t,in,out\n0,10,5\n")
    assert mc._same_trace(str(a), str(a)) == str(a)
    assert mc._same_trace(str(a), str(b)) == str(b), "byte-identical, two paths: one trace"
    assert mc._same_trace("/gone/checkout/conv.csv", str(b)) == str(b), "the old checkout is gone: by name"
    b.write_text("t,in,out\n0,11,5\n")
    assert mc._same_trace(str(a), str(b)) is None, "same name, other content: two traces"
    assert mc._same_trace(str(a), str(tmp_path / "one" / "code.csv")) is None
