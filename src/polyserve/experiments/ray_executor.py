"""``RayExecutor``: experiment tasks as Ray tasks (``polyserve compare --ray [ADDRESS]``, ``goodput --ray``).

Without an address it starts a local Ray instance with ``cpus`` CPUs (every core by default) and shuts it
down on ``close``; with one (``auto``, ``ray://HOST:10001``, a GCS ``HOST:PORT``) it joins that cluster and
leaves it running. A process that already called ``ray.init`` (tests, notebooks) is reused as it is.

Joining a cluster, this package is shipped with the job (Ray's ``runtime_env`` ``py_modules``), so the
workers run exactly the driver's code: the results are the same as a local run's only if the code is.
Its dependencies (numpy, PyYAML, ...) must be installed on the nodes; no task reads a file (traces, tier
files and latency coefficients are read here and travel inside the tasks' arguments).

Each task asks for one CPU. A task that raises fails its future with the same exception (Ray wraps it;
``.result()`` re-raises); a worker that dies is retried by Ray (its default for system failures).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import Any

from polyserve.core.extras import import_extra
from polyserve.experiments.executor import InFlight


def _call(fn: Callable[..., Any], *args: Any) -> Any:
    return fn(*args)


class RayExecutor:
    name = "ray"

    def __init__(self, address: str | None = None, cpus: int | None = None) -> None:
        ray = import_extra("ray", "ray", "--ray")
        self._ray = ray
        self._owned = False
        if not ray.is_initialized():
            kw: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False,
                                  "logging_level": logging.WARNING}
            if address:
                import polyserve

                kw["runtime_env"] = {"py_modules": [str(Path(polyserve.__file__).parent)]}
                ray.init(address=address, **kw)
            else:
                ray.init(num_cpus=cpus, **kw)
            self._owned = True
        self.workers = max(1, int(ray.cluster_resources().get("CPU", 1)))
        self._task = ray.remote(num_cpus=1)(_call)
        self._flight = InFlight()
        self._refs: dict[int, Any] = {}
        self._closed = False

    def submit(self, fn: Callable[..., Any], /, *args: Any) -> Future:
        if self._closed:
            raise RuntimeError("the Ray executor is closed")
        ref = self._task.remote(fn, *args)
        fut = ref.future()
        self._refs[id(fut)] = ref
        fut.add_done_callback(lambda f: self._refs.pop(id(f), None))
        return self._flight.track(fut)

    def idle(self) -> int:
        return max(0, self.workers - self._flight.count)

    def cancel(self, fut: Future) -> None:
        ref = self._refs.pop(id(fut), None)
        if ref is not None and not fut.done():
            self._ray.cancel(ref)

    def close(self) -> None:
        """No new task; the ones not finished are cancelled; a Ray this executor started is shut down."""
        if self._closed:
            return
        self._closed = True
        for ref in list(self._refs.values()):
            with contextlib.suppress(Exception):
                self._ray.cancel(ref)
        if self._owned and self._ray.is_initialized():
            self._ray.shutdown()
