"""The live progress line shows what the run has done so far, and stays silent when disabled."""

from __future__ import annotations

import io

from rich.console import Console

from polyserve.bench.progress import ProgressLine
from polyserve.bench.runner import Progress


def test_progress_line_reports_counts_and_attainment() -> None:
    line = ProgressLine(Console(file=io.StringIO()), enabled=False)
    assert "connecting" in str(line.__rich__())
    line.update(Progress(total=10, started=0.0, sent=6, completed=4, failed=1, attained=3))
    text = str(line.__rich__())
    for part in ("sent 6/10", "completed 4", "failed 1", "in flight 1", "attained 3 (60.0%)"):
        assert part in text


def test_disabled_progress_line_writes_nothing() -> None:
    out = io.StringIO()
    with ProgressLine(Console(file=out), enabled=False) as line:
        line.update(Progress(total=1, started=0.0))
    assert out.getvalue() == ""
