"""The shared contract every registered router passes (one parametrised suite)."""

from __future__ import annotations

import copy
import random
import time

import numpy as np
import pytest

from polyserve.core.fleet import RoutingDecision
from polyserve.experiments.runner import PolicySpec, run_workload
from polyserve.policy import ROUTERS, make_router
from polyserve.sim.config import SimConfig
from polyserve.workload import WorkloadSpec, build_workload

from .helpers import fleet, load, req, tiers

ALL = ROUTERS.names()
COLOCATED_ONLY = {"co-chunk"}


def _prepared(name: str, phase: str = "mixed"):
    roles = ["mixed"] * 4 if phase == "mixed" else ["prefill", "decode", "decode", "decode"]
    f = fleet(roles=roles)
    router = make_router(name, random.Random(1))
    if router.tiered:
        for a in getattr(router, "initial_actions", lambda _f: [])(f):
            f.apply_scale(a, 0.0)
    else:
        f.set_active_all(0.0)
    # some load everywhere, so that decisions are not trivial
    for s in f.servers:
        if s.active:
            load(f, s.sid, 3 + s.sid, tier=s.tier or 0)
    return f, router


def _snapshot(f):
    return [
        (s.active, s.tier, s.num_requests, s.num_prefill, s.num_decode, s.prefill_tokens, s.input_tokens,
         round(s.expected_output, 6), tuple(s.tier_counts), s.draining)
        for s in f.servers
    ], [len(q) for q in f.pending], sorted(f.entries)


def _phases(name):
    return ["mixed"] if name in COLOCATED_ONLY else ["mixed", "prefill", "decode"]


@pytest.mark.parametrize("name", ALL)
def test_router_decisions_are_valid_and_explained(name):
    for phase in _phases(name):
        f, router = _prepared(name, "mixed" if phase == "mixed" else "disaggregated")
        for k, tier in enumerate((0, 1, 2, 3)):
            d = router.route(req(k, tier), f, 1.0, phase)
            assert isinstance(d, RoutingDecision)
            assert d.action in ("dispatch", "pending", "shed", "reject")
            assert d.reason, "every decision carries a reason"
            if d.action == "dispatch":
                for a in d.scale:
                    f.apply_scale(a, 1.0)
                s = f.servers[d.server]
                assert s.active and s.routable(1.0)
                assert s.role == ("mixed" if phase == "mixed" else phase)
                f.on_dispatch(req(k, tier), d.server, 1.0, has_first_token=phase == "decode")


@pytest.mark.parametrize("name", ALL)
def test_router_does_not_mutate_the_fleet(name):
    for phase in _phases(name):
        f, router = _prepared(name, "mixed" if phase == "mixed" else "disaggregated")
        before = _snapshot(f)
        frozen = copy.deepcopy(before)
        router.route(req(1, 2), f, 1.0, phase)
        assert _snapshot(f) == frozen


@pytest.mark.parametrize("name", ALL)
def test_router_reads_no_clock_and_no_global_random(name, monkeypatch):
    def boom(*a, **k):
        raise AssertionError("policy code read the wall clock or the global random")

    for fn in ("time", "monotonic", "perf_counter", "time_ns", "monotonic_ns"):
        monkeypatch.setattr(time, fn, boom)
    for fn in ("random", "choice", "randint", "sample", "shuffle", "uniform"):
        monkeypatch.setattr(random, fn, boom)
    monkeypatch.setattr(np.random, "random", boom)
    for phase in _phases(name):
        f, router = _prepared(name, "mixed" if phase == "mixed" else "disaggregated")
        for k in range(6):
            router.route(req(k, k % 4), f, 2.0, phase)
        if hasattr(router, "tick"):
            router.tick(f, 3.0)


@pytest.mark.parametrize("name", ALL)
def test_router_is_deterministic_for_a_seed(name):
    outs = []
    for _ in range(2):
        f, router = _prepared(name)
        outs.append([router.route(req(k, k % 4), f, 1.0, "mixed").server for k in range(8)])
    assert outs[0] == outs[1]


@pytest.mark.parametrize("name", ALL)
def test_router_serves_a_workload_end_to_end(name):
    """Conservation on a real run, in every mode the router supports."""
    wl = build_workload(WorkloadSpec(rate=20.0, num_requests=300, input_len="uniform:50:2000",
                                     output_len="uniform:1:200"), tiers(), seed=3)
    for mode in ("colocated",) if name in COLOCATED_ONLY else ("colocated", "disaggregated"):
        res = run_workload(wl, _model(), PolicySpec(router=name), SimConfig(instances=4, mode=mode), seed=3)
        c = res.records.counts()
        assert c["not_arrived"] == 0 and c["unfinished"] == 0
        assert sum(c.values()) == len(wl)
        assert c["attained"] + c["violated"] + c["shed"] + c["rejected"] == len(wl)


def _model():
    from .helpers import model

    return model()


def test_registry_lists_every_paper_name():
    for n in ("polyserve", "random", "minimal", "co-chunk", "round-robin", "least-outstanding", "power-of-two",
              "static-partition", "edf-pool", "polyserve-no-promotion", "polyserve-no-gradient",
              "polyserve-no-wait", "polyserve-static-chunk", "polyserve-promote-first", "minimal-edf", "slos-serve",
              "polyserve-edf-prefill"):
        assert n in ROUTERS
    for e in ROUTERS:
        assert e.summary and "\n" not in e.summary


def test_policy_package_imports_only_core():
    """The one rule enforced by a check: ``policy/`` imports only ``core/`` and the standard library."""
    import ast
    import pathlib
    import sys

    import polyserve.policy as pkg

    root = pathlib.Path(pkg.__file__).parent
    allowed_third_party: set[str] = set()
    for path in root.glob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            mods = []
            if isinstance(node, ast.Import):
                mods = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                mods = [node.module]
            for m in mods:
                top = m.split(".")[0]
                if top == "polyserve":
                    assert m.startswith(("polyserve.core", "polyserve.policy")), f"{path.name} imports {m}"
                else:
                    assert top in sys.stdlib_module_names or top in allowed_third_party, f"{path.name} imports {m}"


@pytest.mark.parametrize("name", ALL)
def test_router_refuses_an_option_it_does_not_take(name):
    """A misspelt option fails loudly, naming the allowed ones, instead of being ignored."""
    from polyserve.core.errors import ConfigError

    with pytest.raises(ConfigError, match="allowed"):
        make_router(name, random.Random(0), no_such_option=1)


def test_cli_policy_option_reaches_the_router(tmp_path):
    """`--policy-option` reaches the router (the summary records the options); `shed` is no router option any
    more (the driver's `--overload shed` is, for every policy alike), so it is refused, naming the allowed ones."""
    import json

    from typer.testing import CliRunner

    from polyserve.cli import app

    args = ["simulate", "--num-requests", "30", "--rate", "5", "--instances", "2", "--quiet", "--policy", "polyserve",
            "--policy-option", "promotion=false", "--policy-option", "tpot_headroom=0.9", "--out", str(tmp_path)]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    s = json.loads((tmp_path / "summary.json").read_text())
    assert s["policy"]["router_options"] == {"promotion": False, "tpot_headroom": 0.9}
    bad = CliRunner().invoke(app, [*args[:-4], "--policy-option", "shed=true", "--out", str(tmp_path)])
    assert bad.exit_code == 2 and "shed" in bad.output and "allowed" in bad.output
