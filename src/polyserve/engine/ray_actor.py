"""An emulated engine hosted by a Ray actor: ``RayEngines(address).launch(config) -> RayEngine``.

For ``polyserve up --backend ray``: each engine is one Ray actor that serves the engine app
(``create_engine_app``, the same app ``polyserve engine`` serves) with uvicorn on a thread of its own, on a
free port of its node. The handle has what the gateway's actuators need: ``url``, ``stop()`` and
``alive()`` (``gateway.actuator.EngineHandle``).

- Liveness: the actor's ``serve()`` call returns only when the server stops; the handle keeps that call's
  object reference, and ``alive()`` is a zero-timeout ``ray.wait`` on it. A killed actor (``ray.kill``, its
  node lost, its process OOM-killed) resolves the reference with an error: ``alive()`` is then False, at
  once and without a network call, so the actuator's supervision can run on every scrape round.
- Placement: a local Ray (no address) binds engines to 127.0.0.1; on a cluster an engine binds 0.0.0.0 and
  advertises its node's IP, so the gateway must be able to reach the nodes.
- Priority: Ray runs workers at niceness 15; an engine actor renices itself to 0 where it may, and a local
  Ray started here runs its workers at 0 (a cluster's operator: ``RAY_worker_niceness=0 ray start ...``).
- Resources: each engine actor asks for ``cpus`` (default 1: an emulated engine paces a model in real time
  and needs a core to keep time). With fewer free CPUs than engines, ``launch`` waits ``startup_timeout``
  and raises ``EngineStartError``.
- Actors are named ``polyserve-engine-N`` in the ``polyserve`` namespace (a new N for every start), so an
  operator can find and kill one (``ray.get_actor(name, namespace="polyserve")``); they belong to the
  process that launched them and die with it.

Failure modes: an engine that does not serve within ``startup_timeout`` raises ``EngineStartError`` with the
actor's error; the actor is killed, never left behind.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from polyserve.core.extras import import_extra
from polyserve.engine.config import EngineConfig
from polyserve.engine.process import EngineStartError

NAMESPACE = "polyserve"
ACTOR_PREFIX = "polyserve-engine-"


def _unnice() -> None:
    """Ray starts worker processes at niceness 15 (its ``worker_niceness``): fine for batch tasks, not for an
    engine that paces a model in real time and answers a gateway. Back to 0 where the process may (root or
    CAP_SYS_NICE); otherwise it stays niced, and a cluster's operator sets ``RAY_worker_niceness=0`` on
    ``ray start`` (a local Ray that ``RayEngines`` starts is configured so)."""
    import os

    with contextlib.suppress(OSError):
        n = os.nice(0)
        if n > 0:
            os.nice(-n)


def _advertised(bind: str) -> str:
    """The address the gateway reaches an actor's engine at: its node's IP when it binds every interface (a
    cluster), else the bind address itself."""
    if bind != "0.0.0.0":
        return bind
    import ray

    return ray.util.get_node_ip_address()


class _EngineServer:
    """The actor's body: one engine app served by uvicorn on a daemon thread."""

    def __init__(self, config: EngineConfig, bind: str) -> None:
        _unnice()
        import uvicorn

        from polyserve.engine.app import create_engine_app
        from polyserve.serving.net import bind_socket

        app = create_engine_app(config)
        sock = bind_socket(bind, 0)
        self._url = f"http://{_advertised(bind)}:{sock.getsockname()[1]}"
        self._server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on",
                                                     timeout_graceful_shutdown=5))
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [sock]}, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 30
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the engine server at {self._url} did not start")
            time.sleep(0.01)

    def url(self) -> str:
        return self._url

    def serve(self) -> str:
        """Returns when the server has stopped: its reference is the actor's liveness signal."""
        self._thread.join()
        return "stopped"

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(10)


class _CommandServer:
    """The actor's body for a real engine (``--engine-command``, e.g. ``vllm serve``): the command runs as a
    child process of the actor, on the actor's node and GPUs (Ray sets ``CUDA_VISIBLE_DEVICES`` for an actor
    that asks for ``num_gpus``; the child inherits it)."""

    def __init__(self, command: str, bind: str, startup_timeout: float) -> None:
        _unnice()
        from polyserve.engine.command import launch_command

        self._engine = launch_command(command, host=bind, advertise=_advertised(bind),
                                      startup_timeout=startup_timeout)

    def url(self) -> str:
        return self._engine.url

    def serve(self) -> int:
        """Returns (the exit code) when the engine process has exited: the actor's liveness signal."""
        return self._engine.proc.wait()

    def stop(self) -> None:
        self._engine.stop()


@dataclass
class RayEngine:
    """A running engine actor (``EngineHandle``)."""

    url: str
    name: str
    actor: Any
    serving: Any  # the ObjectRef of actor.serve(): ready once the server stopped or the actor died
    ray: Any = field(repr=False)

    @property
    def where(self) -> str:
        return f"ray actor {self.name}"

    def alive(self) -> bool:
        ready, _ = self.ray.wait([self.serving], timeout=0)
        return not ready

    def stop(self, timeout: float = 10.0) -> int:
        """Graceful stop (open streams get a few seconds), then kill the actor. Returns 0."""
        if self.alive():
            with contextlib.suppress(Exception):  # dead or stuck: the kill below ends it either way
                self.ray.get(self.actor.stop.remote(), timeout=timeout)
        self.ray.kill(self.actor, no_restart=True)
        return 0


class RayEngines:
    """Starts engine actors on a Ray: a local one (``address`` None: ``ray.init`` with ``num_cpus``) or the
    cluster at ``address``. ``shutdown()`` stops a local Ray this object started."""

    def __init__(self, address: str | None = None, *, num_cpus: int | None = None, cpus: float = 1.0,
                 startup_timeout: float = 60.0) -> None:
        ray = import_extra("ray", "ray", "--backend ray")
        self.ray = ray
        self.owned = False
        self.local = address is None
        if not ray.is_initialized():
            kw: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False,
                                  "logging_level": logging.WARNING, "namespace": NAMESPACE}
            if address is None:
                # workers at niceness 0, not Ray's 15: on a busy machine a niced engine actor took ~27 s to
                # import and start (1.3 s at 0) and would pace its model late (see _unnice)
                ray.init(num_cpus=num_cpus, _system_config={"worker_niceness": 0}, **kw)
            else:
                from pathlib import Path

                import polyserve

                kw["runtime_env"] = {"py_modules": [str(Path(polyserve.__file__).parent)]}
                ray.init(address=address, **kw)
            self.owned = True
        self.cpus = cpus
        self.startup_timeout = startup_timeout
        self._ids = itertools.count()
        self._cls = ray.remote(_EngineServer)
        self._cmd_cls = ray.remote(_CommandServer)

    def launch(self, config: EngineConfig) -> RayEngine:
        """Start one emulated engine actor and wait until it serves (blocking: the actuator calls it in a
        thread)."""
        return self._start(self._cls, (config,), {}, self.startup_timeout)

    def launch_command(self, command: str, *, gpus: float = 0.0, startup_timeout: float = 600.0) -> RayEngine:
        """Start one actor running a real engine's ``command`` (``engine.command``) with ``gpus`` GPUs, and wait
        until it serves ``/health`` (up to ``startup_timeout``: weights load first)."""
        return self._start(self._cmd_cls, (command,), {"num_gpus": gpus} if gpus else {}, startup_timeout,
                           after=(startup_timeout,))

    def _start(self, cls: Any, args: tuple, extra: dict[str, Any], timeout: float, after: tuple = ()) -> RayEngine:
        name = f"{ACTOR_PREFIX}{next(self._ids)}"
        opts: dict[str, Any] = {"name": name, "namespace": NAMESPACE, "num_cpus": self.cpus,
                                "max_concurrency": 4, "max_restarts": 0, **extra}
        actor = cls.options(**opts).remote(*args, "127.0.0.1" if self.local else "0.0.0.0", *after)
        try:
            url = self.ray.get(actor.url.remote(), timeout=timeout)
        except Exception as e:
            self.ray.kill(actor, no_restart=True)
            need = f"{self.cpus:g} CPU" + (f" and {extra['num_gpus']:g} GPU" if extra.get("num_gpus") else "")
            raise EngineStartError(f"engine actor {name} did not start within {timeout:g} s "
                                   f"(too few free resources for another engine of {need}?): {e}") from None
        return RayEngine(url, name, actor, actor.serve.remote(), self.ray)

    def shutdown(self) -> None:
        if self.owned and self.ray.is_initialized():
            self.ray.shutdown()
