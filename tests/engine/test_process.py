"""``polyserve engine`` as a process: the launcher finds its port, real sockets stream, SIGTERM stops it."""

from __future__ import annotations

import json
import time

import httpx
import pytest
from typer.testing import CliRunner

from polyserve.cli import app as cli_app
from polyserve.engine import EngineConfig, EngineStartError, engine_argv, launch_engine


def test_engine_argv_round_trips_through_the_cli(monkeypatch: pytest.MonkeyPatch) -> None:
    config = EngineConfig(
        gpu="a100",
        time_scale=4.0,
        served_model_name="m",
        default_output_len=9,
        max_num_seqs=3,
        max_num_batched_tokens=512,
        kv_capacity_tokens=1000,
        scheduling_policy="priority",
        fail_after=5,
        crash_mid_stream=2,
        add_latency_ms=1.5,
    )
    seen = {}

    def fake_serve(cfg, host, port, **kw):
        seen.update(config=cfg, host=host, port=port)

    monkeypatch.setattr("polyserve.engine.server.serve", fake_serve)
    result = CliRunner().invoke(cli_app, engine_argv(config, "127.0.0.1", 0))
    assert result.exit_code == 0, result.output
    assert seen == {"config": config, "host": "127.0.0.1", "port": 0}


def test_bad_engine_flags_exit_2_with_one_line() -> None:
    result = CliRunner().invoke(cli_app, ["engine", "--time-scale", "0", "--port", "0"])
    assert result.exit_code == 2
    assert "--time-scale must be" in result.output


def test_launched_engine_streams_over_loopback_and_stops_on_sigterm() -> None:
    with launch_engine(EngineConfig(time_scale=20, served_model_name="m")) as proc:
        assert proc.url.startswith("http://127.0.0.1:")
        models = httpx.get(proc.url + "/v1/models").json()
        assert models["data"][0]["id"] == "m"
        chunks = []
        with httpx.stream(
            "POST",
            proc.url + "/v1/chat/completions",
            timeout=10,
            json={
                "model": "m",
                "messages": [{"role": "user", "content": "hi"}],
                "max_tokens": 6,
                "stream": True,
            },
        ) as r:
            for line in r.iter_lines():
                if line.startswith("data: {"):
                    chunks.append(json.loads(line[6:]))
        assert sum(1 for c in chunks if c["choices"][0]["delta"].get("content")) == 6
        # an open stream must not keep the engine from stopping
        with httpx.stream(
            "POST",
            proc.url + "/v1/completions",
            timeout=10,
            json={"prompt": "x", "max_tokens": 100_000, "stream": True},
        ) as r:
            next(r.iter_lines())
            t0 = time.monotonic()
            code = proc.stop(timeout=15)
            stopped_in = time.monotonic() - t0
    assert code in (0, -15)
    assert stopped_in < 10


def test_launched_engine_crash_drops_a_real_connection() -> None:
    with launch_engine(EngineConfig(time_scale=20, crash_mid_stream=2)) as proc:
        lines = []
        with (
            pytest.raises(httpx.RemoteProtocolError),
            httpx.stream(
                "POST",
                proc.url + "/v1/completions",
                timeout=10,
                json={"prompt": "x", "max_tokens": 10, "stream": True},
            ) as r,
        ):
            for line in r.iter_lines():
                if line:
                    lines.append(line)
        assert len(lines) == 2
        assert httpx.get(proc.url + "/health").status_code == 200  # the engine itself survives


def test_served_sockets_disable_nagle() -> None:
    """Without TCP_NODELAY, small SSE chunks wait ~40 ms for the client's delayed ACK."""
    import socket

    from polyserve.serving.net import bind_socket

    sock = bind_socket("127.0.0.1", 0)
    try:
        assert sock.proto == socket.IPPROTO_TCP  # asyncio sets TCP_NODELAY on accepted sockets only then
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
    finally:
        sock.close()


def test_first_chunks_are_not_held_back_over_loopback() -> None:
    with launch_engine(EngineConfig(time_scale=20)) as proc, httpx.Client(timeout=10) as client:
        gaps = []
        for _ in range(5):  # keep-alive: the stall shows from the second request on a connection
            with client.stream(
                "POST", proc.url + "/v1/completions", json={"prompt": "x", "max_tokens": 4, "stream": True}
            ) as r:
                t0 = time.perf_counter()
                times = [time.perf_counter() - t0 for line in r.iter_lines() if line.startswith("data: {")]
            gaps.append(times[1])
    assert sorted(gaps)[2] < 0.02  # modelled: about 1 ms at time scale 20; Nagle makes it ~40 ms


def test_launch_failure_says_why() -> None:
    with pytest.raises(EngineStartError, match="unknown model"):
        launch_engine(EngineConfig(model="no-such-model"), startup_timeout=30)
