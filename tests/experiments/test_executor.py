"""Executors (``experiments/executor.py``) and speculation (``speculation.py``): where a task runs and which
rates are run ahead never change a result."""

from __future__ import annotations

import pytest

from polyserve.core.errors import ConfigError
from polyserve.core.extras import MissingExtraError, import_extra
from polyserve.data import AZURE_CONV
from polyserve.experiments.executor import EXECUTORS, InlineExecutor, ProcessExecutor, make_executor
from polyserve.experiments.goodput import GoodputSearch, GoodputSettings
from polyserve.experiments.runner import PolicySpec, load_tiers
from polyserve.experiments.speculation import frontier
from polyserve.latency.build import FleetSpec, build_model
from polyserve.sim.config import SimConfig
from polyserve.workload import read_trace


def bisect(lo: float, hi: float, tol: float):
    """A toy search: bisection to ``tol``, as a generator of rates fed with verdicts."""
    def steps():
        a, b = lo, hi
        while b - a > tol:
            mid = (a + b) / 2
            if (yield mid):
                a = mid
            else:
                b = mid
        return a
    return steps


def test_the_frontier_starts_with_the_rate_needed_now_then_both_next_ones():
    rates = frontier(bisect(0.0, 16.0, 1.0), lambda r: None, lambda r: False, 7, prefer=True)
    assert rates == [8.0, 12.0, 4.0, 14.0, 10.0, 6.0, 2.0], "breadth first, the preferred verdict first"


def test_the_frontier_follows_known_verdicts_and_leaves_out_rates_already_taken():
    known = {8.0: False}
    rates = frontier(bisect(0.0, 16.0, 1.0), known.get, lambda r: r == 4.0, 3, prefer=False)
    assert rates == [2.0, 6.0, 1.0], "8 failed: the search is at 4 (taken), so next are 2 and 6"


def test_a_finished_search_has_an_empty_frontier():
    known = {8.0: True, 12.0: True, 14.0: True, 15.0: True}
    assert frontier(bisect(0.0, 16.0, 1.0), known.get, lambda r: False, 4) == []


def test_inline_executor_runs_at_once_and_hands_errors_to_the_future():
    ex = InlineExecutor()
    assert ex.submit(pow, 2, 10).result() == 1024
    with pytest.raises(ZeroDivisionError):
        ex.submit(divmod, 1, 0).result()
    assert ex.idle() == 0 and ex.workers == 1


def test_make_executor_picks_inline_for_one_job_and_a_pool_for_more():
    assert isinstance(make_executor(1), InlineExecutor)
    ex = make_executor(2)
    try:
        assert isinstance(ex, ProcessExecutor) and ex.workers == 2 and ex.idle() == 2
    finally:
        ex.close()
    with pytest.raises(ConfigError, match="--jobs"):
        make_executor(-1)
    assert {"local", "ray"} <= set(EXECUTORS.names())


def test_a_missing_extra_names_the_extra_and_how_to_install_it():
    with pytest.raises(MissingExtraError, match=r"--ray needs the ray extra: pip install 'polyserve\[ray\]'"):
        import_extra("polyserve_no_such_module", "ray", "--ray")


def test_a_bare_ray_flag_means_a_local_ray():
    from polyserve.cli.options import bare_to_default

    assert bare_to_default(["--ray"], "--ray", "local") == ["--ray", "local"]
    assert bare_to_default(["--ray", "--quiet"], "--ray", "local") == ["--ray", "local", "--quiet"]
    assert bare_to_default(["--ray", "auto", "-q"], "--ray", "local") == ["--ray", "auto", "-q"]
    assert bare_to_default(["--seeds", "0"], "--ray", "local") == ["--seeds", "0"]


TIERS = load_tiers(None)
TRACE = read_trace(str(AZURE_CONV), None, TIERS)


def tiny_search(executor=None):
    st = GoodputSettings(duration_s=30.0, warmup_s=5.0, rel_tol=0.02)
    return GoodputSearch(TRACE, TIERS, build_model(FleetSpec()), PolicySpec(router="polyserve"),
                         SimConfig(instances=2, overload="shed"), 0, st, executor=executor)


def test_speculation_never_changes_the_result_only_where_it_runs():
    """The same search inline and on a 2-process pool that simulates rates ahead: the same probes in the same
    order, the same goodputs and summaries; some rates were run ahead (so the test exercises speculation)."""
    plain = tiny_search()
    ref = plain.run()
    ex = make_executor(2)
    try:
        spec = tiny_search(ex)
        got = spec.run()
    finally:
        ex.close()
    assert spec.speculated > 0, "the pool had an idle worker: rates were simulated ahead"
    assert [p.__dict__ for p in got.probes] == [p.__dict__ for p in ref.probes]
    assert (got.goodput_rps, got.goodput_rps_all_tiers, got.goodput_rps_tail_bounded) == (
        ref.goodput_rps, ref.goodput_rps_all_tiers, ref.goodput_rps_tail_bounded)
    assert got.at_goodput == ref.at_goodput and got.stationarity == ref.stationarity
    assert (got.bound_rps, got.bound_rps_all_tiers) == (ref.bound_rps, ref.bound_rps_all_tiers)


def test_ray_flags_without_the_ray_extra_fail_with_one_line_naming_it():
    """As if ray were not installed (a None entry in sys.modules makes its import fail)."""
    import subprocess
    import sys

    code = ("import sys; sys.modules['ray'] = None; sys.argv = ['polyserve', 'goodput', '--ray', '-q']; "
            "from polyserve.cli import main; main()")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    assert r.stderr.strip() == ("error: --ray needs the ray extra: pip install 'polyserve[ray]' "
                                "(no module named 'ray')")
