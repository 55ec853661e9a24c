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
    engine_command: str | None = None  # a real engine's command line (vllm serve ...) instead of the emulated one
    engine_gpus: int = 0  # GPUs per command engine (Ray: the actor's num_gpus; local: CUDA_VISIBLE_DEVICES)
    engine_startup_timeout: float = 600.0  # a command engine must answer /health within this (weights load)


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
    """(launch(sid, config) -> engine handle, shutdown or None, actuator class) for ``spec.backend``; with
    ``engine_command`` the engine is that command (``engine.command``), and ``config`` only names the model."""
    from polyserve.core.errors import ConfigError

    if spec.backend not in BACKENDS:
        raise ConfigError(f"--backend must be one of {', '.join(BACKENDS)}, got {spec.backend!r}")
    cmd, gpus = spec.engine_command, spec.engine_gpus
    if spec.backend == "local":
        if cmd is not None:
            from polyserve.engine.command import launch_command

            def launch_local(sid: int, cfg: EngineConfig):
                env = {"CUDA_VISIBLE_DEVICES": ",".join(str(d) for d in range(sid * gpus, (sid + 1) * gpus))}
                return launch_command(cmd, host=spec.host, startup_timeout=spec.engine_startup_timeout,
                                      env=env if gpus else None)

            return launch_local, None, LocalEngineActuator
        from polyserve.engine.process import launch_engine

        return (lambda sid, cfg: launch_engine(cfg, host=spec.host)), None, LocalEngineActuator
    from polyserve.engine.ray_actor import RayEngines
    from polyserve.gateway.ray_actuator import RayEngineActuator

    engines = RayEngines(spec.ray_address)
    if cmd is not None:
        return ((lambda sid, cfg: engines.launch_command(cmd, gpus=gpus, startup_timeout=spec.engine_startup_timeout)),
                engines.shutdown, RayEngineActuator)
    return (lambda sid, cfg: engines.launch(cfg)), engines.shutdown, RayEngineActuator


def check_served_model(url: str, name: str) -> None:
    """A command engine must serve the model under the name the gateway routes (``--model``); else every
    request would fail at the engine. Raises ``ConfigError`` naming both."""
    import httpx

    from polyserve.core.errors import ConfigError

    try:
        ids = [m.get("id") for m in httpx.get(url + "/v1/models", timeout=10.0).json().get("data", [])]
    except (httpx.HTTPError, ValueError, AttributeError) as e:
        raise ConfigError(f"the engine at {url} did not list its models (GET /v1/models): {e}") from None
    if name not in ids:
        raise ConfigError(f"the engine serves {ids}, but the gateway routes model {name!r} (--model); add "
                          f"--served-model-name {name} to --engine-command")


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
    doc.update(model=model, backends=[{"url": b.url, "priority": b.priority, "deadlines": b.deadlines, "role": b.role}
                                      for b in backends],
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
    if spec.engine_command is not None:
        if spec.prefill_engines:
            raise ConfigError("--engine-command runs co-located engines only: a real engine's prefill/decode "
                              "hand-off needs its own KV connector; drop --prefill-engines")
        if spec.engine_scheduler != "auto":
            raise ConfigError("--engine-scheduler sets the emulated engine's scheduler; with --engine-command "
                              "put the engine's own flag in the command (vLLM: --scheduling-policy priority)")
        if spec.time_scale != 1.0:
            raise ConfigError("--time-scale slows the emulated engines; a real engine (--engine-command) runs "
                              "in real time: drop --time-scale")
    if spec.engine_gpus < 0:
        raise ConfigError(f"--engine-gpus must be >= 0, got {spec.engine_gpus}")
    old = signal.signal(signal.SIGTERM, _interrupt)  # until uvicorn takes over: stop what was started
    started: dict[int, object] = {}
    actuator: LocalEngineActuator | None = None
    shutdown = None
    try:
        launch, shutdown, actuator_cls = engine_launcher(spec)
        with ThreadPoolExecutor(max_workers=min(spec.engines, 8)) as pool:
            futs = {i: pool.submit(launch, i, cfgs[roles[i]]) for i in range(spec.engines)}
            errors = []
            for i, f in futs.items():
                try:
                    started[i] = f.result()
                except Exception as e:
                    errors.append(e)
            if errors:
                raise errors[0]
        for i, e in started.items():
            sys.stdout.write(f"engine {i}: {e.url} ({e.where})\n")  # type: ignore[attr-defined]
        if spec.engine_command is not None:
            from polyserve.engine.command import forwards_priority

            check_served_model(started[0].url, ecfg.name)  # type: ignore[attr-defined]
            priority = forwards_priority(spec.engine_command)
            sys.stdout.write(f"engines run: {spec.engine_command}; the gateway forwards "
                             + ("each request's tier as its priority\n" if priority else
                                "no priority (add --scheduling-policy priority to a vLLM command for it)\n"))
            backend_specs = tuple(BackendSpec(started[i].url, priority=priority)  # type: ignore[attr-defined]
                                  for i in range(spec.engines))
        else:
            for role, c in cfgs.items():
                sys.stdout.write(f"{role} engines schedule with --scheduling-policy {c.scheduling_policy}"
                                 + (f", token budget {c.max_num_batched_tokens}" if c.max_num_batched_tokens
                                    else "")
                                 + ("; the gateway forwards each request's deadlines"
                                    if c.scheduling_policy in DEADLINE_POLICIES else "") + "\n")
            backend_specs = tuple(BackendSpec(started[i].url,  # type: ignore[attr-defined]
                                              deadlines=cfgs[roles[i]].scheduling_policy in DEADLINE_POLICIES,
                                              role=roles[i])
                                  for i in range(spec.engines))
        config = up_config(spec, ecfg.name, backend_specs)
        backends = [Backend(i, b.url, b.priority, deadlines=b.deadlines) for i, b in enumerate(config.backends)]
        own = {"shutdown": shutdown} if shutdown is not None else {}  # Ray is released after its last actor
        actuator = actuator_cls(backends, lambda sid: launch(sid, cfgs[roles[sid]]), started, stop_idle=spec.stop_idle,
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
