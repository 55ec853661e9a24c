"""``polyserve up``: a gateway plus N local emulated engines, for trying PolyServe by hand.

Each engine runs the instance scheduler the policy asks for (``Router.scheduler_for``, as in the simulator):
PolyServe's dynamic chunking becomes ``--scheduling-policy deadline`` and the gateway forwards every request's
token deadlines to it; a policy that wants vLLM's FCFS gets ``fcfs`` (with its static token budget, e.g.
co-chunk's). ``engine_scheduler`` overrides the choice.

The engines start first, all at once (one subprocess each, in parallel), and join the router's idle pool;
then the gateway binds its port and prints its URL, so ``/health`` and ``/v1/models`` answer as soon as
anything listens. The policy scales servers out of the idle pool on demand; with ``stop_idle`` a released
server's engine is stopped, and started again when the policy needs it (a real cold start).

``backend``: ``local`` (engine subprocesses, ``LocalEngineActuator``) or ``ray`` (engine Ray actors on a local
Ray or the cluster at ``ray_address``, ``gateway.ray_actuator.RayEngineActuator``; needs the ``ray`` extra).

Stopping: SIGINT (Ctrl-C) or SIGTERM stops the gateway (open streams get a few seconds), then every engine
(SIGTERM, then SIGKILL after a timeout). A signal during start-up stops the engines already started.
"""

from __future__ import annotations

import signal
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from polyserve.engine.config import DEADLINE_POLICIES, EngineConfig
from polyserve.gateway.actuator import LocalEngineActuator
from polyserve.gateway.backend import Backend
from polyserve.gateway.config import BackendSpec, GatewayConfig


@dataclass(frozen=True)
class UpSpec:
    engines: int = 2
    host: str = "127.0.0.1"
    port: int = 8080
    tiers_path: str | None = None
    default_tier: str | None = None
    model: str = "llama-3.1-8b"
    gpu: str = "h100"
    time_scale: float = 1.0
    policy: str = "polyserve"
    shedding: bool = True
    stop_idle: bool = False
    log_level: str = "warning"
    engine_scheduler: str = "auto"  # auto: the policy's choice; else an engine --scheduling-policy
    policy_options: tuple[tuple[str, object], ...] = ()  # the router's keyword options
    config_path: str | None = None  # a gateway config: every setting but backends, model and engine (up's own)
    prefill_engines: int = 0  # > 0: disaggregated, the first this many engines prefill, the rest decode
    kv_link_gbps: float = 400.0  # disaggregated: the emulated KV hand-off link
    backend: str = "local"  # local: engine subprocesses | ray: engine Ray actors
    ray_address: str | None = None  # backend ray: the cluster to join (None: start a local Ray)


ENGINE_POLICY = {"fcfs": "fcfs", "edf": "edf", "polyserve-dynamic": "deadline"}  # simulator scheduler -> engine


def engine_policy_for(policy: str, override: str = "auto", role: str = "mixed") -> tuple[str, int | None]:
    """(engine ``--scheduling-policy``, token budget or None) that runs what the simulator runs for ``policy``
    on a server of ``role``. Raises ``ConfigError`` for a scheduler the emulated engine does not implement."""
    from polyserve.core.errors import ConfigError
    from polyserve.engine.config import SCHEDULING_POLICIES
    from polyserve.policy import make_router

    if override != "auto":
        if override not in SCHEDULING_POLICIES:
            raise ConfigError(f"--engine-scheduler must be auto or one of {', '.join(SCHEDULING_POLICIES)}, "
                              f"got {override!r}")
        return override, None
    import random

    name, opts = make_router(policy, random.Random(0)).scheduler_for.get(role, ("fcfs", {}))
    if name not in ENGINE_POLICY:
        raise ConfigError(f"policy {policy} wants the {name!r} engine scheduler, which the emulated engine does not "
                          f"implement; pass --engine-scheduler ({', '.join(SCHEDULING_POLICIES)})")
    budget = opts.get("token_budget")
    return ENGINE_POLICY[name], int(budget) if isinstance(budget, int) else None


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


BACKENDS = ("local", "ray")


def engine_launcher(spec: UpSpec):
    """(launch(config) -> engine handle, shutdown or None, actuator class) for ``spec.backend``."""
    from polyserve.core.errors import ConfigError

    if spec.backend == "local":
        from polyserve.engine.process import launch_engine

        return (lambda cfg: launch_engine(cfg, host=spec.host)), None, LocalEngineActuator
    if spec.backend == "ray":
        from polyserve.engine.ray_actor import RayEngines
        from polyserve.gateway.ray_actuator import RayEngineActuator

        engines = RayEngines(spec.ray_address)
        return engines.launch, engines.shutdown, RayEngineActuator
    raise ConfigError(f"--backend must be one of {', '.join(BACKENDS)}, got {spec.backend!r}")


UP_OWNS = ("backends", "model", "engine")  # what polyserve up decides itself, whatever a --config says


def up_config(spec: UpSpec, model: str, backends: tuple[BackendSpec, ...]) -> GatewayConfig:
    """The gateway config of ``polyserve up``: its flags, or ``--config FILE`` for every other setting (API keys,
    body limits, retries, timeouts, shedding, ...). Raises ``ConfigError`` naming the file and field, and for
    a key ``up`` decides itself (``backends``, ``model``, ``engine``)."""
    from polyserve.core.errors import ConfigError
    from polyserve.gateway.config import config_from_dict, read_config_doc

    engine = {"model": spec.model, "gpu": spec.gpu, "time_scale": spec.time_scale, "kv_link_gbps": spec.kv_link_gbps}
    doc: dict = {"policy": spec.policy, "policy_options": dict(spec.policy_options), "shedding": spec.shedding}
    if spec.tiers_path:
        doc["tiers"] = spec.tiers_path
    if spec.default_tier:
        doc["default_tier"] = spec.default_tier
    base = None
    if spec.config_path:
        from pathlib import Path

        path = Path(spec.config_path)
        fdoc = read_config_doc(path)
        if not isinstance(fdoc, dict):
            raise ConfigError(f"{path}: must be a mapping of gateway settings")
        for k in UP_OWNS:
            if k in fdoc:
                raise ConfigError(f"{path}: {k}: set by polyserve up itself (its --engines, --model, --gpu, "
                                  f"--time-scale flags); remove it from the file")
        doc = {**doc, **fdoc}  # the file wins over up's defaults
        base = path.parent
    doc.update(model=model, backends=[{"url": b.url, "deadlines": b.deadlines, "role": b.role} for b in backends],
               engine=engine)
    return config_from_dict(doc, spec.config_path or "polyserve up", base)


def run_up(spec: UpSpec) -> None:
    """Start everything and serve until a signal. Raises ``PolyServeError`` for bad settings."""
    from polyserve.core.errors import ConfigError
    from polyserve.gateway.app import Gateway
    from polyserve.gateway.server import serve_app

    if spec.prefill_engines and not 0 < spec.prefill_engines < spec.engines:
        raise ConfigError(f"--prefill-engines must be between 1 and --engines - 1 ({spec.engines - 1}), "
                          f"got {spec.prefill_engines}")
    roles = (["prefill"] * spec.prefill_engines + ["decode"] * (spec.engines - spec.prefill_engines)
             if spec.prefill_engines else ["mixed"] * spec.engines)
    cfgs: dict[str, EngineConfig] = {}
    decode_sched = engine_policy_for(spec.policy, spec.engine_scheduler, "decode")
    for role in dict.fromkeys(roles):
        sched, budget = engine_policy_for(spec.policy, spec.engine_scheduler, role)
        if role == "prefill" and decode_sched[0] == "deadline":
            # an adaptive split moves servers between the pools, and an emulated engine serves either leg: a
            # deadline engine holding only prefills is EDF with the static budget, the prefill scheduler
            sched, budget = decode_sched
        cfgs[role] = EngineConfig(model=spec.model, gpu=spec.gpu, time_scale=spec.time_scale,
                                  scheduling_policy=sched, max_num_batched_tokens=budget,
                                  kv_link_gbps=spec.kv_link_gbps)
    ecfg = cfgs[roles[0]]
    if spec.ray_address is not None and spec.backend != "ray":
        raise ConfigError("--ray-address is for --backend ray")
    old = signal.signal(signal.SIGTERM, _interrupt)  # until uvicorn takes over: stop what was started
    started: dict[int, object] = {}
    actuator: LocalEngineActuator | None = None
    shutdown = None
    try:
        launch, shutdown, actuator_cls = engine_launcher(spec)
        with ThreadPoolExecutor(max_workers=min(spec.engines, 8)) as pool:
            futs = {i: pool.submit(launch, cfgs[roles[i]]) for i in range(spec.engines)}
            errors = []
            for i, f in futs.items():
                try:
                    started[i] = f.result()
                except Exception as e:
                    errors.append(e)
            if errors:
                raise errors[0]
        for i, e in started.items():
            where = f"pid {e.proc.pid}" if hasattr(e, "proc") else f"ray actor {e.name}"  # type: ignore[attr-defined]
            sys.stdout.write(f"engine {i}: {e.url} ({where})\n")  # type: ignore[attr-defined]
        for role, c in cfgs.items():
            sys.stdout.write(f"{role} engines schedule with --scheduling-policy {c.scheduling_policy}"
                             + (f", token budget {c.max_num_batched_tokens}" if c.max_num_batched_tokens else "")
                             + ("; the gateway forwards each request's deadlines"
                                if c.scheduling_policy in DEADLINE_POLICIES else "") + "\n")
        backend_specs = tuple(BackendSpec(started[i].url,  # type: ignore[attr-defined]
                                          deadlines=cfgs[roles[i]].scheduling_policy in DEADLINE_POLICIES,
                                          role=roles[i])
                              for i in range(spec.engines))
        config = up_config(spec, ecfg.name, backend_specs)
        backends = [Backend(i, b.url, b.priority, deadlines=b.deadlines) for i, b in enumerate(config.backends)]
        own = {"shutdown": shutdown} if shutdown is not None else {}  # Ray is released after its last actor
        actuator = actuator_cls(backends, lambda sid: launch(cfgs[roles[sid]]), started, stop_idle=spec.stop_idle,
                                **own)
        shutdown = None
        app = Gateway(config, actuator=actuator, backends=backends)
        kind = "local engines" if spec.backend == "local" else "engine Ray actors"
        serve_app(app, spec.host, spec.port, log_level=spec.log_level, note=f", {spec.engines} {kind}")
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, old)
        if actuator is not None:
            actuator.close_sync()
        else:
            for e in started.values():
                e.stop()  # type: ignore[attr-defined]
        if shutdown is not None:
            shutdown()
