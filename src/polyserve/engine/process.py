"""Start an emulated engine in its own process and stop it: ``launch_engine(config) -> EngineProcess``.

For ``polyserve up``, benchmarks that need the engine on another core, and end-to-end tests. The child runs
``python -m polyserve engine ... --port 0``; the launcher reads the bound URL from the child's first stdout
line, then polls ``GET /health`` until it answers 200. ``stop()`` sends SIGTERM (graceful: open streams get a
few seconds), then SIGKILL after ``timeout``.

Failure modes: a child that exits or prints no URL within ``startup_timeout`` raises ``EngineStartError``
with its exit code and the tail of its stderr; the child is killed, never left behind.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, fields

import httpx

from polyserve.core.errors import PolyServeError
from polyserve.engine.config import EngineConfig
from polyserve.engine.server import READY_PREFIX
from polyserve.serving.procs import log_tail, read_ready_url


class EngineStartError(PolyServeError):
    """The engine process did not come up (bad flags, import error, port taken...)."""


def engine_argv(config: EngineConfig, host: str = "127.0.0.1", port: int = 0) -> list[str]:
    """The ``polyserve engine`` arguments that reproduce ``config`` (each field is ``--field-name``)."""
    argv = ["engine", "--host", host, "--port", str(port)]
    default = EngineConfig()
    for f in fields(EngineConfig):
        v = getattr(config, f.name)
        if v == getattr(default, f.name) or v is None:
            continue
        argv += ["--" + f.name.replace("_", "-"), str(v)]
    return argv


@dataclass
class EngineProcess:
    """A running engine child process; a context manager that stops it on exit."""

    proc: subprocess.Popen[bytes]
    url: str
    log_path: str | None = None  # the child's stderr, when the launcher captured it

    def stop(self, timeout: float = 10.0) -> int:
        """SIGTERM, wait up to ``timeout`` s, then SIGKILL. Returns the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    @property
    def where(self) -> str:
        return f"pid {self.proc.pid}"

    def alive(self) -> bool:
        return self.proc.poll() is None

    def __enter__(self) -> EngineProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def launch_engine(
    config: EngineConfig,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    python: str = sys.executable,
    startup_timeout: float = 60.0,
    stderr_path: str | None = None,
    env: dict[str, str] | None = None,
) -> EngineProcess:
    """Start ``python -m polyserve engine`` for ``config`` and wait until it serves ``/health``.

    ``stderr_path``: where the child's log goes (default: a temporary file, named in ``EngineProcess``).
    """
    if stderr_path is None:
        fd, stderr_path = tempfile.mkstemp(prefix="polyserve-engine-", suffix=".log")
        os.close(fd)
    log = open(stderr_path, "wb")  # noqa: SIM115 - handed to the child, closed below
    cmd = [python, "-m", "polyserve", *engine_argv(config, host, port)]
    try:
        proc = subprocess.Popen(
            cmd,
            stdout=subprocess.PIPE,
            stderr=log,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **(env or {})},
        )
    finally:
        log.close()
    deadline = time.monotonic() + startup_timeout
    try:
        url = _read_url(proc, deadline, stderr_path)
        threading.Thread(target=_drain, args=(proc,), daemon=True).start()
        wait_healthy(proc, url, deadline, stderr_path)
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    return EngineProcess(proc, url, stderr_path)


def _read_url(proc: subprocess.Popen[bytes], deadline: float, log: str) -> str:
    url = read_ready_url(proc, deadline, READY_PREFIX)
    if url is not None:
        return url
    code = proc.poll()
    why = f"exited with code {code}" if code is not None else "timed out"
    raise EngineStartError(f"engine did not report its URL ({why}); stderr: {log_tail(log) or '(empty)'}")


def _drain(proc: subprocess.Popen[bytes]) -> None:
    """Keep reading the child's stdout so it never blocks on a full pipe."""
    assert proc.stdout is not None
    with contextlib.suppress(OSError, ValueError):
        while proc.stdout.read(65536):
            pass


def wait_healthy(proc: subprocess.Popen[bytes], url: str, deadline: float, log: str) -> None:
    with httpx.Client(timeout=2.0) as client:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise EngineStartError(
                    f"engine at {url} exited with code {proc.returncode}; stderr: {log_tail(log)}"
                )
            try:
                if client.get(url + "/health").status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
    raise EngineStartError(
        f"engine at {url} did not answer /health within the startup timeout; stderr: {log_tail(log)}"
    )
