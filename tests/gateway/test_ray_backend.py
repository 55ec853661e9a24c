"""``polyserve up --backend ray``: engines are Ray actors; a request is served end to end, and an actor killed
with ``ray.kill`` is replaced by a new one (on the 2-CPU Ray every Ray test shares: ``tests/conftest.py``)."""

from __future__ import annotations

import time

import httpx
import pytest

from polyserve.gateway.process import launch_gateway


def _engine_actors(ray) -> set[str]:
    return {a["name"] for a in ray.util.list_named_actors(all_namespaces=True)
            if a["name"].startswith("polyserve-engine-")}


def test_up_on_ray_serves_a_request_and_replaces_a_killed_engine_actor(ray_local):
    ray = ray_local
    address = ray.get_runtime_context().gcs_address
    up = launch_gateway(["up", "--backend", "ray", "--ray-address", address, "--port", "0", "--engines", "2",
                         "--time-scale", "20"], startup_timeout=120)
    try:
        assert [line.split(" (")[1] for line in up.lines if line.startswith("engine ")] == [
            "ray actor polyserve-engine-0)", "ray actor polyserve-engine-1)"]
        r = httpx.post(up.url + "/v1/completions", json={"prompt": "a", "max_tokens": 3}, timeout=30)
        assert r.status_code == 200 and r.json()["choices"][0]["text"] == "the quick brown"
        assert _engine_actors(ray) == {"polyserve-engine-0", "polyserve-engine-1"}

        ray.kill(ray.get_actor("polyserve-engine-0", namespace="polyserve"))
        deadline = time.monotonic() + 60
        while _engine_actors(ray) != {"polyserve-engine-1", "polyserve-engine-2"}:
            assert time.monotonic() < deadline, f"not replaced: {_engine_actors(ray)}"
            time.sleep(0.2)
        while httpx.get(up.url + "/health").json()["backends_up"] != 2:
            assert time.monotonic() < deadline, "the replacement never came up"
            time.sleep(0.2)
        for _ in range(4):  # both servers serve again (the router spreads these over the fleet)
            r = httpx.post(up.url + "/v1/completions", json={"prompt": "a", "max_tokens": 3}, timeout=30)
            assert r.status_code == 200, r.text
        assert up.stop(timeout=30) == 0
        deadline = time.monotonic() + 30
        while _engine_actors(ray):  # the actors belonged to up's process: gone with it
            assert time.monotonic() < deadline, f"left behind: {_engine_actors(ray)}"
            time.sleep(0.2)
    finally:
        up.stop()


def test_a_missing_ray_extra_or_a_stray_address_is_a_clear_error():
    from polyserve.core.errors import ConfigError
    from polyserve.up import UpSpec, run_up

    with pytest.raises(ConfigError, match="--ray-address is for --backend ray"):
        run_up(UpSpec(engines=1, ray_address="auto"))
    with pytest.raises(ConfigError, match="--backend must be one of local, ray"):
        run_up(UpSpec(engines=1, backend="k8s"))


def test_an_engine_actor_leaves_rays_worker_niceness_where_it_may():
    """Ray niceness 15 made an engine actor take ~27 s to start on a busy machine (1.3 s at 0)."""
    import os
    import subprocess
    import sys

    if os.geteuid() != 0:
        pytest.skip("lowering niceness needs root or CAP_SYS_NICE")
    code = "import os; from polyserve.engine.ray_actor import _unnice; _unnice(); print(os.nice(0))"
    out = subprocess.run(["nice", "-n", "15", sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "0"


def test_up_on_ray_runs_a_real_engines_command_in_each_actor_and_replaces_a_killed_one(ray_local):
    """``--engine-command`` on Ray (``polyserve engine`` standing in for ``vllm serve``): the command runs as the
    actor's child; ``ray.kill`` of the actor takes the engine down with it (the guard) and a new actor replaces
    it."""
    import sys

    ray = ray_local
    address = ray.get_runtime_context().gcs_address
    cmd = f"{sys.executable} -m polyserve engine --time-scale 20"
    up = launch_gateway(["up", "--backend", "ray", "--ray-address", address, "--port", "0", "--engines", "2",
                         "--engine-command", cmd], startup_timeout=180)
    try:
        urls = {line.split("(ray actor ")[1].rstrip(")"): line.split(": ", 1)[1].split(" (")[0]
                for line in up.lines if line.startswith("engine ")}
        r = httpx.post(up.url + "/v1/completions", json={"prompt": "a", "max_tokens": 3}, timeout=30)
        assert r.status_code == 200 and r.json()["choices"][0]["text"] == "the quick brown"
        before = _engine_actors(ray)
        victim = sorted(before)[0]
        ray.kill(ray.get_actor(victim, namespace="polyserve"))
        deadline = time.monotonic() + 120
        while victim in _engine_actors(ray) or len(_engine_actors(ray)) < 2:
            assert time.monotonic() < deadline, f"not replaced: {_engine_actors(ray)}"
            time.sleep(0.2)
        gone = urls[victim]
        while True:  # the killed actor's engine process ended with it
            try:
                httpx.get(gone + "/health", timeout=1)
            except httpx.HTTPError:
                break
            assert time.monotonic() < deadline, f"the engine at {gone} outlived its actor"
            time.sleep(0.2)
        while httpx.get(up.url + "/health").json()["backends_up"] != 2:
            assert time.monotonic() < deadline, "the replacement never came up"
            time.sleep(0.2)
        for _ in range(4):
            r = httpx.post(up.url + "/v1/completions", json={"prompt": "a", "max_tokens": 3}, timeout=30)
            assert r.status_code == 200, r.text
        assert up.stop(timeout=30) == 0
    finally:
        up.stop()
