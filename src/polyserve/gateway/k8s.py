"""Kubernetes: engine pods found by label selector, scaled through their Deployments' scale subresource.

The gateway config's ``kubernetes`` section replaces ``backends`` (``deploy/k8s/`` has the manifests)::

    kubernetes:
      namespace: polyserve
      selector: app.kubernetes.io/name=polyserve-engine   # which pods are engines
      port: 8000                                           # the engines' HTTP port
      poll_s: 2                                            # how often the pod list is read
      stop_idle: false                                     # true: a server released to the idle pool is
                                                           # scaled away (its pod deleted), re-created on demand
      pools:                                               # one per engine Deployment (one per tier)
        - {deployment: polyserve-engine-t20, tier: t20, max_replicas: 4, role: mixed, deadlines: true}

**Slots.** The router's fleet has a fixed size: one server (slot) per possible replica, ``max_replicas`` for
each pool, in pool order. A pod is bound to a slot of its pool (its ``polyserve.io/tier`` label, and
``polyserve.io/role``) while it is running and ready; its URL is ``http://POD_IP:port``. A slot with no pod
is idle in the router: ``activate`` (the policy wants it) raises its Deployment's replicas (``PATCH
.../deployments/NAME/scale``) to the number of its wanted (or occupied) slots and requests wait until a new pod is ready
(a real cold start: scheduling, image pull, model load, up to ``ready_timeout_s``). With ``stop_idle``,
``deactivate`` marks the released slot's pod for deletion first (the ``controller.kubernetes.io/
pod-deletion-cost`` annotation, so the ReplicaSet deletes that pod, not a busy one) and lowers the
replicas. Pod tier labels are not the router's tiers: the router moves servers between its tiers as it
does everywhere; the label says which Deployment (and so which scale subresource) a pod belongs to.

**Dead pods.** Each poll (a worker thread; the event loop never blocks on the API) rebinds: a wanted slot
whose pod vanished or stopped being ready loses its URL (not scraped, not ready) and takes the next ready
pod of its pool, normally the one its Deployment creates in its place (counted in ``replaced``); a slot of
a pod that was deleted on purpose is unwanted and stays empty. A pod that is not bound (more pods than
slots) is left alone and logged.

Failure modes: an API error during a poll keeps the last binding (logged; the scraper still marks a dead
pod's server dead); a failed scale patch makes the waiting requests fail over (``UpstreamFailure``
"connect", retried elsewhere) and is retried on the next activation; nothing here exits the gateway.
The ``kubernetes`` package (the ``k8s`` extra) is imported only when a client is made.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from polyserve.core.errors import ConfigError
from polyserve.gateway.backend import Backend
from polyserve.gateway.config import check_keys
from polyserve.serving.upstream import UpstreamFailure

log = logging.getLogger("polyserve.gateway.k8s")

LABEL_TIER = "polyserve.io/tier"
LABEL_ROLE = "polyserve.io/role"
DELETION_COST = "controller.kubernetes.io/pod-deletion-cost"


# ---- settings ---------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Pool:
    """One engine Deployment: its pods carry ``polyserve.io/tier: tier`` (and ``polyserve.io/role: role``)."""

    deployment: str
    tier: str
    max_replicas: int = 4
    role: str = "mixed"
    deadlines: bool = False  # polyserve engines (deadline scheduling): forward each request's deadlines
    priority: bool = False  # vLLM --scheduling-policy priority: forward the tier as `priority`


@dataclass(frozen=True)
class KubeSettings:
    pools: tuple[Pool, ...]
    namespace: str = "polyserve"
    selector: str = "app.kubernetes.io/name=polyserve-engine"
    port: int = 8000
    poll_s: float = 2.0
    ready_timeout_s: float = 600.0  # a new pod has this long to become ready before its requests fail over
    stop_idle: bool = False


_SETTINGS_KEYS = {"namespace", "selector", "port", "poll_s", "ready_timeout_s", "stop_idle", "pools"}
_POOL_KEYS = {"deployment", "tier", "max_replicas", "role", "deadlines", "priority"}


def settings_from_dict(doc: Any, src: str) -> KubeSettings:
    """Validate the config's ``kubernetes`` section; ``ConfigError`` names ``FILE: kubernetes.FIELD``."""
    where = f"{src}: kubernetes"
    if not isinstance(doc, dict):
        raise ConfigError(f"{where}: must be a mapping (namespace, selector, port, pools, ...)")
    check_keys(src, "kubernetes.", doc, _SETTINGS_KEYS)
    raw = doc.get("pools")
    if not isinstance(raw, list) or not raw:
        raise ConfigError(f"{where}.pools: give at least one pool {{deployment, tier, max_replicas, role}}")
    pools = []
    for i, p in enumerate(raw):
        w = f"{where}.pools[{i}]"
        if not isinstance(p, dict):
            raise ConfigError(f"{w}: must be a mapping {{deployment, tier, max_replicas, role}}")
        check_keys(src, f"kubernetes.pools[{i}].", p, _POOL_KEYS)
        for k in ("deployment", "tier"):
            if not isinstance(p.get(k), str) or not p[k]:
                raise ConfigError(f"{w}.{k}: must be a non-empty string")
        n = p.get("max_replicas", 4)
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ConfigError(f"{w}.max_replicas: must be an integer >= 1, got {n!r}")
        role = p.get("role", "mixed")
        if role not in ("mixed", "prefill", "decode"):
            raise ConfigError(f"{w}.role: must be mixed, prefill or decode, got {role!r}")
        flags = {k: p.get(k, False) for k in ("deadlines", "priority")}
        for k, v in flags.items():
            if not isinstance(v, bool):
                raise ConfigError(f"{w}.{k}: must be true or false, got {v!r}")
        pools.append(Pool(p["deployment"], p["tier"], n, role, **flags))
    names = [p.deployment for p in pools]
    if len(set(names)) != len(names):
        raise ConfigError(f"{where}.pools: a deployment is listed twice")
    keys = [(p.tier, p.role) for p in pools]
    if len(set(keys)) != len(keys):
        raise ConfigError(f"{where}.pools: two pools select the same pods (tier and role labels)")
    kw: dict[str, Any] = {"pools": tuple(pools)}
    for k in ("namespace", "selector"):
        if k in doc:
            if not isinstance(doc[k], str) or not doc[k]:
                raise ConfigError(f"{where}.{k}: must be a non-empty string")
            kw[k] = doc[k]
    if "port" in doc:
        if isinstance(doc["port"], bool) or not isinstance(doc["port"], int) or not 0 < doc["port"] < 65536:
            raise ConfigError(f"{where}.port: must be a TCP port (1-65535), got {doc['port']!r}")
        kw["port"] = doc["port"]
    for k in ("poll_s", "ready_timeout_s"):
        if k in doc:
            v = doc[k]
            if isinstance(v, bool) or not isinstance(v, int | float) or not v > 0:
                raise ConfigError(f"{where}.{k}: must be a number > 0, got {v!r}")
            kw[k] = float(v)
    if "stop_idle" in doc:
        if not isinstance(doc["stop_idle"], bool):
            raise ConfigError(f"{where}.stop_idle: must be true or false, got {doc['stop_idle']!r}")
        kw["stop_idle"] = doc["stop_idle"]
    return KubeSettings(**kw)


def slot_backends(s: KubeSettings) -> list[dict[str, object]]:
    """The gateway's backends: one per slot, with a placeholder URL until a pod is bound to it."""
    return [{"url": f"http://{p.deployment}.slot-{i}.unbound", "deadlines": p.deadlines, "priority": p.priority,
             "role": p.role} for p in s.pools for i in range(p.max_replicas)]


# ---- the API calls (the official client; tests replay recorded responses under it) ----------------------------
@dataclass(frozen=True)
class EnginePod:
    name: str
    uid: str
    ip: str | None
    tier: str | None
    role: str
    ready: bool
    deleting: bool

    def url(self, port: int) -> str:
        return f"http://[{self.ip}]:{port}" if self.ip and ":" in self.ip else f"http://{self.ip}:{port}"


def kube_api(config_file: str | None = None) -> tuple[Any, Any]:
    """(CoreV1Api, AppsV1Api): in-cluster credentials (the pod's service account) when running in a pod,
    else the kubeconfig. ``MissingExtraError`` without the ``k8s`` extra."""
    from polyserve.core.extras import import_extra

    k8s = import_extra("kubernetes", "k8s", "the Kubernetes discovery and actuator")
    try:
        k8s.config.load_incluster_config()
    except k8s.config.ConfigException:
        try:
            k8s.config.load_kube_config(config_file=config_file)
        except Exception as e:
            raise ConfigError(f"kubernetes: no in-cluster service account and no usable kubeconfig: {e}") from None
    return k8s.client.CoreV1Api(), k8s.client.AppsV1Api()


def read_pods(core: Any, namespace: str, selector: str) -> list[EnginePod]:
    """The engine pods (``GET /api/v1/namespaces/NS/pods?labelSelector=...``), sorted by name."""
    out = []
    for p in core.list_namespaced_pod(namespace, label_selector=selector).items:
        labels = p.metadata.labels or {}
        conds = (p.status.conditions or []) if p.status else []
        ready = (p.status is not None and p.status.phase == "Running"
                 and any(c.type == "Ready" and c.status == "True" for c in conds))
        out.append(EnginePod(p.metadata.name, p.metadata.uid, p.status.pod_ip if p.status else None,
                             labels.get(LABEL_TIER), labels.get(LABEL_ROLE, "mixed"), ready and bool(p.status.pod_ip),
                             p.metadata.deletion_timestamp is not None))
    return sorted(out, key=lambda e: e.name)


def read_replicas(apps: Any, namespace: str, deployment: str) -> int:
    """``GET /apis/apps/v1/namespaces/NS/deployments/NAME/scale``: the desired replicas."""
    return int(apps.read_namespaced_deployment_scale(deployment, namespace).spec.replicas or 0)


def patch_replicas(apps: Any, namespace: str, deployment: str, replicas: int) -> int:
    """``PATCH .../deployments/NAME/scale`` with ``{"spec": {"replicas": N}}``; the replicas the API answers."""
    scale = apps.patch_namespaced_deployment_scale(deployment, namespace, {"spec": {"replicas": replicas}})
    return int(scale.spec.replicas or 0)


def mark_for_deletion(core: Any, namespace: str, pod: str) -> None:
    """The ReplicaSet deletes pods of the lowest deletion cost first: this one, when its Deployment shrinks."""
    core.patch_namespaced_pod(pod, namespace, {"metadata": {"annotations": {DELETION_COST: "-1000"}}})


# ---- the actuator -------------------------------------------------------------------------------------------------
class KubeActuator:
    """The ``Actuator`` over Kubernetes Deployments (see the module docstring). ``core``/``apps``: the
    client's ``CoreV1Api`` and ``AppsV1Api``; every API call runs in a worker thread."""

    def __init__(self, settings: KubeSettings, backends: list[Backend], core: Any, apps: Any) -> None:
        self.s = settings
        self.backends = backends
        self.core = core
        self.apps = apps
        self.pool_of: list[int] = [i for i, p in enumerate(settings.pools) for _ in range(p.max_replicas)]
        if len(self.pool_of) != len(backends):
            raise ConfigError(f"kubernetes: {len(self.pool_of)} slots but {len(backends)} backends")
        self.bound: dict[int, EnginePod] = {}
        self._want: dict[int, bool] = dict.fromkeys(range(len(backends)), False)
        self._ready: dict[int, asyncio.Event] = {}
        self._failed: dict[int, str] = {}
        self._poller: asyncio.Task[None] | None = None
        self._lost: set[int] = set()  # wanted slots whose pod went away: the next pod bound replaces it
        # pods released with stop_idle, waiting for the ReplicaSet to delete them: bound again only to a wanted
        # slot that lost its pod (the deletion cost is a preference: the ReplicaSet may delete another pod)
        self._released: set[str] = set()
        self._unused: set[str] = set()  # pods already logged as unused (once each)
        self._replaced: list[int] = []
        self.replaced = 0
        self.patches = 0
        self._tasks: list[asyncio.Task[None]] = []
        self._deferred: set[int] = set()  # pools to scale once the loop runs

    # -- binding ---------------------------------------------------------------------------------------------
    def refresh(self, pods: list[EnginePod]) -> None:
        """Bind ready pods to slots, unbind the ones gone (on the loop, or before it starts)."""
        live = {p.uid: p for p in pods if p.ready and not p.deleting}
        for sid, pod in list(self.bound.items()):
            if pod.uid not in live:
                del self.bound[sid]
                self._event(sid).clear()
                if self._want[sid]:
                    self._lost.add(sid)
        taken = {p.uid for p in self.bound.values()}
        self._released &= {p.uid for p in pods}
        for pod in live.values():
            if pod.uid in taken:
                continue
            pool = next((i for i, pl in enumerate(self.s.pools) if pl.tier == pod.tier and pl.role == pod.role), None)
            free = [sid for sid, pi in enumerate(self.pool_of) if pi == pool and sid not in self.bound
                    and (pod.uid not in self._released or sid in self._lost)]
            if pod.uid in self._released and not free:
                continue  # on its way out
            if pool is None or not free:
                if pod.uid not in self._unused:
                    self._unused.add(pod.uid)
                    log.warning("engine pod %s (tier %s, role %s) matches no pool with a free slot; not used",
                                pod.name, pod.tier, pod.role)
                continue
            sid = min(free, key=lambda x: (not self._want[x], x))  # a wanted slot first: a replacement
            self.bound[sid] = pod
            self.backends[sid].url = pod.url(self.s.port)
            self._released.discard(pod.uid)
            self._failed.pop(sid, None)
            if sid in self._lost:
                self._lost.discard(sid)
                self.replaced += 1
                self._replaced.append(sid)
            self._event(sid).set()

    def _event(self, sid: int) -> asyncio.Event:
        ev = self._ready.get(sid)
        if ev is None:
            ev = self._ready[sid] = asyncio.Event()
            if sid in self.bound:
                ev.set()
        return ev

    # -- the Actuator protocol ---------------------------------------------------------------------------------
    def activate(self, sid: int) -> None:
        self._start_polling()
        self._want[sid] = True
        self._failed.pop(sid, None)
        if sid not in self.bound:
            self._scale(self.pool_of[sid])

    def deactivate(self, sid: int) -> None:
        if not self.s.stop_idle:
            return
        self._want[sid] = False
        self._lost.discard(sid)
        pod = self.bound.pop(sid, None)
        if pod is not None:
            self._released.add(pod.uid)
        self._event(sid).clear()
        self._scale(self.pool_of[sid], pod.name if pod else None)

    def is_ready(self, sid: int) -> bool:
        return sid in self.bound

    async def wait_ready(self, sid: int) -> None:
        if sid in self.bound:
            return
        if not self._want.get(sid):
            raise UpstreamFailure("connect", f"server {sid} has no engine pod", retryable=True)
        try:
            await asyncio.wait_for(self._event(sid).wait(), self.s.ready_timeout_s)
        except TimeoutError:
            raise UpstreamFailure("connect", f"no engine pod of {self.s.pools[self.pool_of[sid]].deployment} "
                                  f"became ready within {self.s.ready_timeout_s:g} s", retryable=True) from None
        if sid in self._failed:
            raise UpstreamFailure("connect", self._failed[sid], retryable=True)

    def expects_up(self, sid: int) -> bool:
        return sid in self.bound

    def supervise(self) -> list[int]:
        """Start polling if not yet; the wanted servers whose pod was replaced since the last call."""
        self._start_polling()
        out, self._replaced = self._replaced, []
        return out

    async def aclose(self) -> None:
        for t in self._tasks:
            with contextlib.suppress(BaseException):
                await t
        if self._poller is not None:
            self._poller.cancel()
            with contextlib.suppress(BaseException):
                await self._poller
            self._poller = None

    # -- API work, off the loop -------------------------------------------------------------------------------
    def _start_polling(self) -> None:
        if self._poller is None:
            with contextlib.suppress(RuntimeError):  # no running loop (a sync caller): polling starts later
                self._poller = asyncio.get_running_loop().create_task(self._poll())

    async def _poll(self) -> None:
        for pool in sorted(self._deferred):
            self._scale(pool)
        self._deferred.clear()
        while True:
            await self.poll_once()
            await asyncio.sleep(self.s.poll_s)

    async def poll_once(self) -> None:
        try:
            pods = await asyncio.to_thread(read_pods, self.core, self.s.namespace, self.s.selector)
        except Exception as e:  # keep the last binding; the scraper still sees dead pods
            log.warning("listing engine pods failed: %r", e)
            return
        self.refresh(pods)

    def desired(self, pool: int) -> int:
        """The pool's replicas: its wanted slots and any other slot holding a pod (a pod that appeared
        without being asked for, e.g. a manual scale, is kept, not scaled away by the next activation)."""
        return sum(1 for sid, pi in enumerate(self.pool_of) if pi == pool and (self._want[sid] or sid in self.bound))

    def _scale(self, pool: int, victim: str | None = None) -> None:
        """Set the pool's Deployment to its wanted slots (in a worker thread; the scale calls are ordered
        per actuator by the event loop that schedules them)."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # the router's initial fleet, set before the gateway's loop runs
            self._deferred.add(pool)
            return
        n = self.desired(pool)
        self._tasks.append(loop.create_task(self._scale_async(pool, n, victim)))
        self._tasks = [t for t in self._tasks if not t.done()]

    async def _scale_async(self, pool: int, n: int, victim: str | None) -> None:
        dep = self.s.pools[pool].deployment
        try:
            await asyncio.to_thread(self._apply_scale, dep, n, victim)
        except Exception as e:
            why = f"scaling deployment {dep} to {n} replicas failed: {e}"
            log.warning(why)
            for sid, pi in enumerate(self.pool_of):
                if pi == pool and self._want[sid] and sid not in self.bound:
                    self._failed[sid] = why
                    self._event(sid).set()  # wake the waiters: they fail over
                    self._event(sid).clear()

    def _apply_scale(self, dep: str, n: int, victim: str | None) -> None:
        if victim is not None:
            mark_for_deletion(self.core, self.s.namespace, victim)
        patch_replicas(self.apps, self.s.namespace, dep, n)
        self.patches += 1


def build_actuator(settings: KubeSettings, backends: list[Backend],
                   api: Callable[[], tuple[Any, Any]] = kube_api) -> KubeActuator:
    """The actuator with the pods bound that are ready now (one synchronous listing before serving)."""
    core, apps = api()
    act = KubeActuator(settings, backends, core, apps)
    act.refresh(read_pods(core, settings.namespace, settings.selector))
    for sid in act.bound:
        act._want[sid] = True  # running before the gateway started, as up's engines: the policy's initial fleet
    return act
