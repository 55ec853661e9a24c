"""Start ``polyserve gateway`` or ``polyserve up`` in its own process and stop it (benchmarks, end-to-end tests).

The child's stdout is read line by line until ``polyserve gateway listening on URL``; the lines before it
(``polyserve up`` prints one per engine it started) are kept in ``lines``. Then ``GET /health`` is polled
until 200. ``stop()`` sends SIGTERM and waits (SIGKILL after ``timeout``).

Failure modes: a child that exits, or prints no URL within ``startup_timeout``, raises ``GatewayStartError``
with its exit code and the tail of its stderr; the child is killed, never left behind.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field

import httpx

from polyserve.core.errors import PolyServeError
from polyserve.gateway.server import READY_PREFIX
from polyserve.serving.procs import log_tail as _tail
from polyserve.serving.procs import read_ready_url


class GatewayStartError(PolyServeError):
    """The gateway process did not come up."""


@dataclass
class GatewayProcess:
    proc: subprocess.Popen[bytes]
    url: str
    lines: list[str] = field(default_factory=list)  # stdout lines before the ready line
    log_path: str = ""

    def stop(self, timeout: float = 20.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def __enter__(self) -> GatewayProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()




def launch_gateway(
    args: list[str], *, python: str = sys.executable, startup_timeout: float = 60.0
) -> GatewayProcess:
    """``args``: the command after ``polyserve``, e.g. ``["gateway", "--config", F, "--port", "0"]``."""
    fd, log = tempfile.mkstemp(prefix="polyserve-gateway-", suffix=".log")
    os.close(fd)
    with open(log, "wb") as err:
        proc = subprocess.Popen(
            [python, "-m", "polyserve", *args], stdout=subprocess.PIPE, stderr=err, stdin=subprocess.DEVNULL
        )
    deadline = time.monotonic() + startup_timeout
    lines: list[str] = []
    try:
        url = _read_url(proc, deadline, lines, log)
        threading.Thread(target=_drain, args=(proc,), daemon=True).start()
        with httpx.Client(timeout=2.0) as c:
            while True:
                if proc.poll() is not None:
                    raise GatewayStartError(f"gateway exited with code {proc.returncode}; stderr: {_tail(log)}")
                try:
                    if c.get(url + "/health").status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise GatewayStartError(f"gateway at {url} never became healthy; stderr: {_tail(log)}")
                time.sleep(0.05)
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    return GatewayProcess(proc, url, lines, log)


def _read_url(proc: subprocess.Popen[bytes], deadline: float, lines: list[str], log: str) -> str:
    url = read_ready_url(proc, deadline, READY_PREFIX, lines)
    if url is not None:
        return url
    code = proc.poll()
    why = f"exited with code {code}" if code is not None else "timed out"
    raise GatewayStartError(f"gateway did not report its URL ({why}); stderr: {_tail(log) or '(empty)'}")


def _drain(proc: subprocess.Popen[bytes]) -> None:
    assert proc.stdout is not None
    try:
        while proc.stdout.read(65536):
            pass
    except (OSError, ValueError):
        pass
