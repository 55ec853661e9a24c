"""Where experiment tasks run: in this process, in a local process pool, or on a Ray cluster.

``polyserve compare`` and ``polyserve goodput`` hand every simulation (a goodput probe at one rate, a work
bound, an autoscaled replay, a sweep point) to an ``Executor`` as a task; the searches that decide which
rates to probe stay in this process (``goodput.py``). The contract:

- ``submit(fn, *args) -> Future``: ``fn`` is a module-level function and ``args`` are picklable (they may
  cross a process or machine boundary); the future holds ``fn(*args)`` or the exception it raised;
- ``workers``: how many tasks run at once (the caller sizes its concurrency by it);
- ``idle()``: workers with no submitted task to run now: the room for speculative probes (0: none);
- ``cancel(future)``: the task is no longer needed (best effort: a running task may still finish);
- ``close()``: no new task; tasks not started are cancelled; the workers are released (a Ray cluster joined
  by address is left running). Closing twice is harmless.

Determinism: an executor decides where and when a task runs, never what it computes: every task's result is
a function of its arguments alone (seeded, no shared state), so every executor gives byte-identical outputs.

Implementations, by name (``EXECUTORS``): ``local`` (``jobs == 1``: inline, in the calling thread, the
plain sequential run; more: a ``ProcessPoolExecutor``) and ``ray`` (``experiments/ray_executor.py``, needs
the ``ray`` extra).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor
from typing import Any, Protocol

from polyserve.core.errors import ConfigError
from polyserve.core.registry import Registry


class Executor(Protocol):
    name: str
    workers: int

    def submit(self, fn: Callable[..., Any], /, *args: Any) -> Future: ...

    def idle(self) -> int: ...

    def cancel(self, fut: Future) -> None: ...

    def close(self) -> None: ...


class InFlight:
    """Counts submitted tasks not yet finished (thread-safe): ``idle`` for the pools."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.count = 0

    def track(self, fut: Future) -> Future:
        with self._lock:
            self.count += 1
        fut.add_done_callback(self._done)
        return fut

    def _done(self, fut: Future) -> None:
        with self._lock:
            self.count -= 1


class InlineExecutor:
    """Runs each task at once, in the calling thread: the plain sequential run (``--jobs 1``)."""

    name = "inline"
    workers = 1

    def submit(self, fn: Callable[..., Any], /, *args: Any) -> Future:
        fut: Future = Future()
        try:
            fut.set_result(fn(*args))
        except Exception as e:  # the caller sees it from .result(), as from a pool
            fut.set_exception(e)
        return fut

    def idle(self) -> int:
        return 0  # a speculative task here would run before the needed one: never worth it

    def cancel(self, fut: Future) -> None:
        return None

    def close(self) -> None:
        return None


class ProcessExecutor:
    """A local ``ProcessPoolExecutor`` of ``jobs`` processes."""

    name = "processes"

    def __init__(self, jobs: int) -> None:
        self.workers = jobs
        self._pool = ProcessPoolExecutor(max_workers=jobs)
        self._flight = InFlight()

    def submit(self, fn: Callable[..., Any], /, *args: Any) -> Future:
        return self._flight.track(self._pool.submit(fn, *args))

    def idle(self) -> int:
        return max(0, self.workers - self._flight.count)

    def cancel(self, fut: Future) -> None:
        fut.cancel()

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


EXECUTORS: Registry[Executor] = Registry("executor")


@EXECUTORS.register("local", "this machine: inline for --jobs 1, else a pool of --jobs processes")
def _local(jobs: int = 0, address: str | None = None) -> Executor:
    if address is not None:
        raise ConfigError("the local executor takes no address (an address is for --ray)")
    n = jobs or os.cpu_count() or 1
    return InlineExecutor() if n == 1 else ProcessExecutor(n)


@EXECUTORS.register("ray", "Ray tasks: a local ray.init (--jobs CPUs) or the cluster at --ray ADDRESS")
def _ray(jobs: int = 0, address: str | None = None) -> Executor:
    from polyserve.experiments.ray_executor import RayExecutor

    return RayExecutor(address, cpus=jobs or None)


def make_executor(jobs: int = 0, ray: str | None = None) -> Executor:
    """The executor the CLI flags ask for: ``ray`` None -> local (``jobs``: 0 = every core); ``ray`` "local"
    -> a local Ray instance with ``jobs`` CPUs (0: every core); any other ``ray`` -> that cluster address."""
    if jobs < 0:
        raise ConfigError(f"--jobs must be >= 0 (0: every core), got {jobs}")
    if ray is None:
        return EXECUTORS.create("local", jobs=jobs)
    return EXECUTORS.create("ray", jobs=jobs, address=None if ray == "local" else ray)
