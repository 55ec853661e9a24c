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


def test_up_runs_a_real_engines_command_and_routes_to_it():
    """``--engine-command`` with ``polyserve engine`` standing in for ``vllm serve``."""
    import sys

    import httpx

    from polyserve.gateway.process import launch_gateway

    cmd = f"{sys.executable} -m polyserve engine --time-scale 20 --scheduling-policy priority"
    up = launch_gateway(["up", "--engine-command", cmd, "--engines", "2", "--port", "0"], startup_timeout=120)
    try:
        assert any(line.startswith("engines run: ") and "as its priority" in line for line in up.lines), up.lines
        for _ in range(3):
            r = httpx.post(up.url + "/v1/completions", json={"prompt": "a", "max_tokens": 3}, timeout=30)
            assert r.status_code == 200, r.text
        assert httpx.get(up.url + "/health").json()["backends_up"] == 2
    finally:
        assert up.stop(timeout=30) == 0


def test_up_refuses_an_engine_that_serves_another_model_name_and_flags_it_cannot_honour():
    import sys

    from polyserve.gateway.process import GatewayStartError, launch_gateway
    from polyserve.up import UpSpec, run_up

    cmd = f"{sys.executable} -m polyserve engine --served-model-name other"
    with pytest.raises(GatewayStartError, match=r"serves \['other'\].*--served-model-name llama-3.1-8b"):
        launch_gateway(["up", "--engine-command", cmd, "--engines", "1", "--port", "0"], startup_timeout=120)
    for spec, msg in [(UpSpec(engines=2, engine_command="x", prefill_engines=1), "co-located engines only"),
                      (UpSpec(engines=1, engine_command="x", time_scale=4.0), "drop --time-scale"),
                      (UpSpec(engines=1, engine_command="x", engine_scheduler="fcfs"), "put the engine's own flag"),
                      (UpSpec(engines=1, engine_command="x", engine_gpus=-1), "--engine-gpus must be >= 0")]:
        with pytest.raises(ConfigError, match=msg):
            run_up(spec)
