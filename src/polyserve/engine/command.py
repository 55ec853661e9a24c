"""Start any OpenAI-compatible engine from its command line: ``launch_command(command) -> EngineProcess``.

For ``polyserve up --engine-command``: real engines (``vllm serve MODEL ...``, SGLang's launcher) instead of
the emulated one, as local processes or inside Ray actors (``engine/ray_actor.py``). The launcher picks a
free port, appends ``--host HOST --port PORT`` to the command (the flags vLLM's and SGLang's servers and
``polyserve engine`` all take), and polls ``GET /health`` until it answers 200 (vLLM answers once the model
is loaded). The result is the same ``EngineProcess`` handle ``launch_engine`` returns, so the gateway's
actuators start, supervise, replace and stop it alike.

What the gateway can forward to such an engine: ``priority`` (the request's tier) when the command runs vLLM
with ``--scheduling-policy priority``; never the token deadlines, which only ``polyserve engine`` reads.

The engine runs in a session of its own, watched by a detached process (``python -m polyserve.engine.command
--watch LAUNCHER ENGINE``, double-forked so that it is nobody's child) that ends the engine's whole process
group when its launcher dies, however it dies: a Ray actor killed with ``ray.kill`` (Ray kills the actor and
its direct children, not what they started) or a SIGKILLed ``polyserve up`` would otherwise leave a vLLM
server, or its worker processes, holding a GPU. The watcher exits when the engine does.

Failure modes: an empty command, a command that exits, or one that does not answer ``/health`` within
``startup_timeout`` raises ``EngineStartError`` with the exit code and the tail of its output; the process
is killed, never left behind.
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import tempfile
import time

from polyserve.engine.process import EngineProcess, EngineStartError, wait_healthy
from polyserve.serving.net import bind_socket


def command_argv(command: str, host: str, port: int) -> list[str]:
    """``command`` split as a shell would (no shell runs it), with ``--host`` and ``--port`` appended."""
    argv = shlex.split(command)
    if not argv:
        raise EngineStartError("--engine-command is empty; give the engine's command line, e.g. "
                               "'vllm serve meta-llama/Llama-3.1-8B-Instruct --served-model-name llama-3.1-8b'")
    return [*argv, "--host", host, "--port", str(port)]


def forwards_priority(command: str) -> bool:
    """Whether the engine schedules by the request's ``priority`` (vLLM ``--scheduling-policy priority``): only
    then may the gateway send one (vLLM's FCFS rejects a request that carries a priority)."""
    argv = shlex.split(command)
    for i, a in enumerate(argv):
        if a == "--scheduling-policy" and i + 1 < len(argv) and argv[i + 1] == "priority":
            return True
        if a == "--scheduling-policy=priority":
            return True
    return False


def free_port(host: str) -> int:
    """A port free on ``host`` now (the engine binds it itself; another process could take it in between,
    which surfaces as the engine exiting at start-up, reported with its output)."""
    with bind_socket(host, 0) as s:
        return int(s.getsockname()[1])


def launch_command(
    command: str,
    *,
    host: str = "127.0.0.1",
    advertise: str | None = None,
    startup_timeout: float = 600.0,
    env: dict[str, str] | None = None,
) -> EngineProcess:
    """Run ``command --host host --port P`` and wait until ``http://advertise:P/health`` answers 200.

    ``advertise``: the address the gateway reaches the engine at (default ``host``; a Ray actor on a cluster
    binds 0.0.0.0 and advertises its node's IP). ``startup_timeout`` defaults to 10 minutes: a real engine
    loads its weights and captures CUDA graphs before it serves."""
    port = free_port(host)
    argv = command_argv(command, host, port)
    fd, log_path = tempfile.mkstemp(prefix="polyserve-engine-cmd-", suffix=".log")
    os.close(fd)
    with open(log_path, "wb") as log:
        try:
            proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    env={**os.environ, **(env or {})}, start_new_session=True)
        except OSError as e:
            raise EngineStartError(f"--engine-command {argv[0]!r} could not be started: {e}") from None
    # the watcher's first process exits as soon as it has forked the real watcher: wait for that
    subprocess.run([sys.executable, "-m", "polyserve.engine.command", "--watch", str(os.getpid()), str(proc.pid)],
                   stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, check=False, start_new_session=True)
    url = f"http://{advertise or host}:{port}"
    try:
        wait_healthy(proc, url, time.monotonic() + startup_timeout, log_path)
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    return EngineProcess(proc, url, log_path)


WATCH_POLL_S = 0.5
WATCH_GRACE_S = 8.0  # SIGTERM to SIGKILL for the engine's group


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def watch(launcher: int, engine: int) -> int:
    """Until the engine exits: when ``launcher`` is gone, end the engine's process group (SIGTERM, then SIGKILL
    after ``WATCH_GRACE_S``). The engine leads its own session, so its group id is its pid."""
    while _alive(engine):
        if not _alive(launcher):
            for sig in (signal.SIGTERM, signal.SIGKILL):
                try:
                    os.killpg(engine, sig)
                except ProcessLookupError:
                    return 0
                end = time.monotonic() + WATCH_GRACE_S
                while time.monotonic() < end:
                    try:
                        os.killpg(engine, 0)
                    except ProcessLookupError:
                        return 0
                    time.sleep(0.1)
            return 0
        time.sleep(WATCH_POLL_S)
    return 0


def main(args: list[str]) -> int:
    if len(args) != 3 or args[0] != "--watch":
        sys.stderr.write("usage: python -m polyserve.engine.command --watch LAUNCHER_PID ENGINE_PID\n")
        return 2
    launcher, engine = int(args[1]), int(args[2])
    if os.fork() > 0:  # detach: the launcher waits for this first process only; the watcher is nobody's child
        return 0
    os.setsid()
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    return watch(launcher, engine)


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
