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


def _run_dir(root: Path, name: str, sim: dict, seeds: list[int]) -> Path:
    import json

    d = root / name
    d.mkdir()
    meta = {"trace": "conv.csv", "fleet": {}, "sim": sim, "goodput": {}, "settings": {"seeds": seeds}}
    (d / "compare_details.json").write_text(json.dumps({"meta": meta}))
    return d


def test_a_simulator_setting_that_differs_refuses_the_merge_unless_named(tmp_path, capsys, monkeypatch):
    """Rows computed under other simulator settings never mix silently; ``--allow-sim FIELD`` lets only the named
    field differ (shown here by the merge going on to its next check, the seeds)."""
    import sys

    base = _run_dir(tmp_path, "base", {"instances": 32}, [0, 1, 2])
    new = _run_dir(tmp_path, "new", {"instances": 32, "decode_seat_timeout_s": 30.0}, [0, 1])
    monkeypatch.setattr(sys, "argv", ["merge_compare", str(base), str(new), str(tmp_path / "out")])
    assert mc.main() == 2
    assert "meta.sim differs" in capsys.readouterr().err
    monkeypatch.setattr(sys, "argv", [*sys.argv, "--allow-sim", "decode_seat_timeout_s"])
    assert mc.main() == 2
    assert "different seeds" in capsys.readouterr().err, "the named field no longer blocks the merge"
    new2 = _run_dir(tmp_path, "new2", {"instances": 16, "decode_seat_timeout_s": 30.0}, [0, 1, 2])
    monkeypatch.setattr(sys, "argv", ["merge_compare", str(base), str(new2), str(tmp_path / "out"),
                                      "--allow-sim", "decode_seat_timeout_s"])
    assert mc.main() == 2
    assert "meta.sim differs" in capsys.readouterr().err, "any other field still refuses"
