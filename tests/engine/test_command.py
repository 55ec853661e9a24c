"""``--engine-command``: a real engine's command line run as the engine (``polyserve engine`` stands in for
vLLM here: the same flags ``--host``/``--port``, ``/health``, ``/v1/models`` and OpenAI surface)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import httpx
import pytest

from polyserve.engine import EngineStartError
from polyserve.engine.command import command_argv, forwards_priority, launch_command

STAND_IN = f"{sys.executable} -m polyserve engine --time-scale 20"


def test_the_command_is_split_like_a_shell_and_gets_host_and_port():
    assert command_argv("vllm serve 'my model' --max-model-len 4096", "0.0.0.0", 8001) == [
        "vllm", "serve", "my model", "--max-model-len", "4096", "--host", "0.0.0.0", "--port", "8001"]
    with pytest.raises(EngineStartError, match="--engine-command is empty"):
        command_argv("  ", "127.0.0.1", 1)


def test_priority_is_forwarded_only_to_an_engine_that_schedules_by_it():
    assert forwards_priority("vllm serve m --scheduling-policy priority")
    assert forwards_priority("vllm serve m --scheduling-policy=priority")
    assert not forwards_priority("vllm serve m")
    assert not forwards_priority("vllm serve m --scheduling-policy fcfs")


def test_a_command_engine_serves_and_stops():
    eng = launch_command(STAND_IN, startup_timeout=60)
    try:
        r = httpx.post(eng.url + "/v1/completions", json={"prompt": "a", "max_tokens": 3}, timeout=30)
        assert r.status_code == 200 and r.json()["choices"][0]["text"] == "the quick brown"
    finally:
        assert eng.stop() == 0 or not eng.alive()
    with pytest.raises(httpx.ConnectError):
        httpx.get(eng.url + "/health", timeout=2)


def test_a_command_that_exits_is_a_start_error_with_its_output():
    cmd = f"{sys.executable} -c \"import sys; print('no such model: x'); sys.exit(3)\""
    with pytest.raises(EngineStartError, match=r"exited with code 3.*no such model: x"):
        launch_command(cmd, startup_timeout=30)


def test_the_engine_dies_with_its_launcher_even_when_the_launcher_is_sigkilled():
    """A SIGKILLed Ray actor or ``polyserve up`` must not leave a real engine holding its GPU."""
    code = (f"from polyserve.engine.command import launch_command; import time; "
            f"e = launch_command({STAND_IN!r}, startup_timeout=60); print(e.url, flush=True); time.sleep(600)")
    launcher = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        url = launcher.stdout.readline().strip()
        assert url.startswith("http://"), url
        assert httpx.get(url + "/health", timeout=5).status_code == 200
        os.kill(launcher.pid, signal.SIGKILL)
        launcher.wait()
        deadline = time.monotonic() + 20
        while True:
            try:
                httpx.get(url + "/health", timeout=1)
            except httpx.HTTPError:
                break  # gone
            assert time.monotonic() < deadline, "the engine outlived its launcher"
            time.sleep(0.2)
    finally:
        launcher.kill()
