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


def test_up_config_takes_every_gateway_setting_from_a_file_but_backends(tmp_path):
    from polyserve.gateway.config import BackendSpec
    from polyserve.up import UpSpec, up_config

    f = tmp_path / "gw.yaml"
    f.write_text("api_keys: [{key: sk-a, tiers: [t50, t100]}]\nmax_body_bytes: 1000\nretries: 0\nshedding: false\n")
    backends = (BackendSpec("http://127.0.0.1:9001", deadlines=True),)
    cfg = up_config(UpSpec(engines=1, config_path=str(f)), "llama-3.1-8b", backends)
    assert cfg.api_keys[0].key == "sk-a" and cfg.max_body_bytes == 1000 and cfg.retries == 0
    assert not cfg.shedding and cfg.backends == backends and cfg.policy == "polyserve"
    assert up_config(UpSpec(engines=1), "llama-3.1-8b", backends).shedding, "shedding is on by default"
    f.write_text("backends: [http://x]\n")
    with pytest.raises(ConfigError, match="backends: set by polyserve up itself"):
        up_config(UpSpec(engines=1, config_path=str(f)), "llama-3.1-8b", backends)
    f.write_text("retries: many\n")
    with pytest.raises(ConfigError, match=r"gw\.yaml: retries: must be an integer"):
        up_config(UpSpec(engines=1, config_path=str(f)), "llama-3.1-8b", backends)
