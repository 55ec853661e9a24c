"""``polyserve up`` runs each engine with the scheduler the policy runs in the simulator."""

from __future__ import annotations

import pytest

from polyserve.core.errors import ConfigError
from polyserve.up import engine_policy_for


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        ("polyserve", ("deadline", None)),  # dynamic chunking on the forwarded deadlines
        ("slos-serve", ("deadline", None)),
        ("minimal-edf", ("edf", None)),
        ("minimal", ("fcfs", None)),  # vLLM's default
        ("round-robin", ("fcfs", None)),
    ],
)
def test_the_engines_run_the_scheduler_the_policy_runs_in_the_simulator(policy, expected):
    assert engine_policy_for(policy) == expected


def test_co_chunk_engines_take_its_static_token_budget():
    sched, budget = engine_policy_for("co-chunk")
    assert sched == "fcfs" and isinstance(budget, int) and budget > 0


def test_an_explicit_engine_scheduler_wins_and_an_unknown_one_names_the_flag():
    assert engine_policy_for("polyserve", "fcfs") == ("fcfs", None)
    with pytest.raises(ConfigError, match="--engine-scheduler"):
        engine_policy_for("polyserve", "sjf")


def test_disaggregated_engines_run_the_simulators_scheduler_of_their_role():
    assert engine_policy_for("polyserve", role="prefill") == ("edf", None)  # a prefill server: EDF on TTFT
    assert engine_policy_for("polyserve", role="decode") == ("deadline", None)
    assert engine_policy_for("minimal", role="decode") == ("fcfs", None)
