"""``GatewayConfig``: what ``polyserve gateway --config FILE`` reads, validated in one place.

The file is YAML (``.yaml``/``.yml``) or TOML (``.toml``); both give the same document::

    model: llama-3.1-8b            # the name clients send; /v1/models lists it
    backends:                      # one entry per engine (vLLM, SGLang or `polyserve engine`)
      - url: http://127.0.0.1:8001
        priority: true             # vLLM started with --scheduling-policy priority: forward the tier
      - url: http://127.0.0.1:8002
        deadlines: true            # `polyserve engine --scheduling-policy deadline|edf`: forward the
                                   # request's token deadlines (the polyserve_slo body field)
        role: mixed                # mixed (default) | prefill | decode: disaggregated serving needs every
                                   # backend to be prefill or decode (emulated engines; see the reference)
    tiers: tiers.toml              # optional, relative to this file; default: the shipped t20/t30/t50/t100
    default_tier: t50              # optional; default: the loosest tier
    policy: polyserve              # a router name from `polyserve policies`
    policy_options: {}             # keyword options of that router
    autoscaler: target-concurrency # optional, untiered policies only (tiered ones scale themselves)
    autoscaler_options: {}         # keyword options of that autoscaler
    shedding: true                 # default: shed requests whose TTFT can no longer be met (429 +
                                   # Retry-After); false serves them late instead (they still count)
    max_pending: 10000             # with shedding: more requests waiting than this -> 503 + Retry-After
    deadline_margin_ms: 0          # deadlines forwarded to `deadlines: true` engines are this much earlier
                                   # than the client's (room for the relay back to the client)
    api_keys:                      # optional; when present every request needs one of these keys
      - key: sk-team-a
        tiers: [t20, t30, t50, t100]
    timeouts: {connect_s: 2, first_token_s: 60, idle_s: 30, keep_alive_s: 75}
    engine: {model: llama-3.1-8b, gpu: h100, tp: 1}   # what the backends run: the policy's latency model
    kubernetes: {...}              # instead of backends: engine pods found by label selector and scaled
                                   # through their Deployments (polyserve.gateway.k8s; the k8s extra)

Every problem raises ``ConfigError`` with ``FILE: FIELD: what is wrong (what is allowed)``; unknown keys are
errors (a typo must not silently fall back to a default).
"""

from __future__ import annotations

import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from polyserve.core.errors import ConfigError, PolyServeError
from polyserve.core.tiers import TierSet


@dataclass(frozen=True)
class BackendSpec:
    url: str
    priority: bool = False  # forward the tier index as the body's `priority` (vLLM --scheduling-policy priority)
    deadlines: bool = False  # forward the request's deadlines as `polyserve_slo` (polyserve engine, deadline policy)
    role: str = "mixed"  # mixed | prefill | decode (disaggregated: prefill engines, then decode engines)


@dataclass(frozen=True)
class ApiKey:
    key: str
    tiers: tuple[str, ...]  # tier names this key may use


@dataclass(frozen=True)
class Timeouts:
    connect_s: float = 2.0  # TCP connect to a backend; a refused or timed-out connect marks it dead
    first_token_s: float = 120.0  # dispatch to first token (queueing in the engine included), at most
    # one attempt also gives up once the request has waited first_token_slo_factor x its TTFT SLO (at least
    # 1 s), and is re-routed: a hung backend holds a request seconds, not minutes (0: no such limit)
    first_token_slo_factor: float = 2.0
    # longest silence between two chunks of a stream before it counts as stalled; disaggregated, also the longest
    # wait for a decode seat after the first token (then the stream ends with a 503 error event)
    idle_s: float = 30.0
    scrape_s: float = 2.0  # one GET /metrics
    # how long an idle client connection stays open. Longer than clients' own idle expiry (httpx and the
    # openai client: 5 s), so the client, never the gateway, closes an idle keep-alive connection: when a
    # server closes one at the moment a client reuses it, the request is lost in flight (the client reads a
    # reset, the gateway never saw it). uvicorn's default, 5 s, raced httpx's 5 s (issue 11, item 8).
    keep_alive_s: float = 75.0
    # a client must send a request's head (request line, headers) within request_head_s of its first byte,
    # and its body within request_body_s of the head; else 408 and the connection is closed (slowloris)
    request_head_s: float = 10.0
    request_body_s: float = 30.0


TIMEOUT_KEYS = frozenset(Timeouts.__dataclass_fields__)


@dataclass(frozen=True)
class EngineSpec:
    """What the backends are, so the policy can predict their iterations (the simulator's latency models)."""

    model: str = "llama-3.1-8b"
    gpu: str = "h100"
    tp: int = 1
    latency_model: str = "auto"
    gpu_memory_utilization: float = 0.9
    time_scale: float = 1.0  # the backends run this many times faster than the model (emulated engines)
    kv_capacity_tokens: int | None = None  # override the capacity derived from GPU memory
    max_num_seqs: int = 256
    max_num_batched_tokens: int = 8192
    kv_link_gbps: float = 400.0  # disaggregated: the prefill -> decode KV link the router plans with


@dataclass(frozen=True)
class GatewayConfig:
    model: str
    backends: tuple[BackendSpec, ...]
    tiers_path: str | None = None
    default_tier: str | None = None  # None: the loosest tier
    policy: str = "polyserve"
    policy_options: dict[str, Any] = field(default_factory=dict)
    autoscaler: str | None = None  # an AUTOSCALERS name; the gateway's FleetDriver calls it every tick
    autoscaler_options: dict[str, Any] = field(default_factory=dict)
    shedding: bool = True  # the overload contract: shed lost causes (429), or serve them late (False)
    max_pending: int | None = None  # only with shedding
    retry_after_s: float = 1.0
    # deadlines forwarded to `deadlines: true` engines are this much earlier than the client's, so a token the
    # engine schedules just in time still reaches the client in time after the relay (engine -> gateway ->
    # client); wall-clock ms, not scaled with engine.time_scale (the relay's delay is wall-clock)
    deadline_margin_ms: float = 0.0
    api_keys: tuple[ApiKey, ...] = ()
    timeouts: Timeouts = Timeouts()
    retries: int = 2  # extra attempts on another server for a request that failed before its first token
    max_body_bytes: int = 4 * 1024 * 1024
    tick_s: float = 0.05  # router tick: scale-down and pending retries
    scrape_interval_s: float = 1.0
    dead_after: int = 2  # consecutive failed scrapes before a backend is marked dead
    breaker_failures: int = 3  # consecutive failures of different requests (5xx, broken, timeout) before dead
    engine: EngineSpec = EngineSpec()
    seed: int = 0  # the policy's injected RNG
    source: str = "<config>"
    kubernetes: Any = None  # gateway.k8s.KubeSettings: the backends are engine pods (one slot per replica)

    def __post_init__(self) -> None:
        src = self.source
        if not self.model or not isinstance(self.model, str):
            raise ConfigError(f"{src}: model: must be a non-empty string (the name clients send)")
        if not self.backends:
            raise ConfigError(f"{src}: backends: give at least one backend (a list of {{url: ...}})")
        seen: set[str] = set()
        for i, b in enumerate(self.backends):
            if not b.url.startswith(("http://", "https://")):
                raise ConfigError(f"{src}: backends[{i}].url: must start with http:// or https://, got {b.url!r}")
            if b.url in seen:
                raise ConfigError(f"{src}: backends[{i}].url: {b.url} is listed twice")
            seen.add(b.url)
            if b.role not in ("mixed", "prefill", "decode"):
                raise ConfigError(f"{src}: backends[{i}].role: must be mixed, prefill or decode, got {b.role!r}")
        roles = {b.role for b in self.backends}
        if roles != {"mixed"} and roles != {"prefill", "decode"}:
            raise ConfigError(f"{src}: backends: roles {', '.join(sorted(roles))}: either every backend is mixed "
                              "(co-located) or each is prefill or decode, with at least one of each (disaggregated)")
        from polyserve.policy import ROUTERS

        if self.policy not in ROUTERS:
            raise ConfigError(f"{src}: policy: unknown router {self.policy!r}; known: {', '.join(ROUTERS.names())}")
        if self.autoscaler is not None:
            from polyserve.policy import AUTOSCALERS

            if self.autoscaler not in AUTOSCALERS:
                raise ConfigError(f"{src}: autoscaler: unknown autoscaler {self.autoscaler!r}; known: "
                                  f"{', '.join(AUTOSCALERS.names())}")
        elif self.autoscaler_options:
            raise ConfigError(f"{src}: autoscaler_options: given without an autoscaler")
        for name, v, lo in (
            ("retry_after_s", self.retry_after_s, 0.0),
            ("deadline_margin_ms", self.deadline_margin_ms, 0.0),
            ("tick_s", self.tick_s, 1e-3),
            ("scrape_interval_s", self.scrape_interval_s, 1e-3),
            ("timeouts.connect_s", self.timeouts.connect_s, 1e-3),
            ("timeouts.first_token_s", self.timeouts.first_token_s, 1e-3),
            ("timeouts.idle_s", self.timeouts.idle_s, 1e-3),
            ("timeouts.scrape_s", self.timeouts.scrape_s, 1e-3),
            ("timeouts.keep_alive_s", self.timeouts.keep_alive_s, 1e-3),
            ("timeouts.request_head_s", self.timeouts.request_head_s, 1e-3),
            ("timeouts.request_body_s", self.timeouts.request_body_s, 1e-3),
            ("timeouts.first_token_slo_factor", self.timeouts.first_token_slo_factor, 0.0),
            ("engine.time_scale", self.engine.time_scale, 1e-9),
            ("engine.kv_link_gbps", self.engine.kv_link_gbps, 1e-9),
        ):
            if not (isinstance(v, int | float) and math.isfinite(v) and v >= lo):
                raise ConfigError(f"{src}: {name}: must be a finite number >= {lo:g}, got {v!r}")
        for name, v, lo in (
            ("retries", self.retries, 0),
            ("max_body_bytes", self.max_body_bytes, 1),
            ("dead_after", self.dead_after, 1),
            ("breaker_failures", self.breaker_failures, 1),
            ("engine.max_num_seqs", self.engine.max_num_seqs, 1),
            ("engine.max_num_batched_tokens", self.engine.max_num_batched_tokens, 1),
        ):
            if v < lo:
                raise ConfigError(f"{src}: {name}: must be an integer >= {lo}, got {v!r}")
        if self.max_pending is not None and self.max_pending < 0:
            raise ConfigError(f"{src}: max_pending: must be an integer >= 0, got {self.max_pending}")
        keys = [k.key for k in self.api_keys]
        if len(set(keys)) != len(keys):
            raise ConfigError(f"{src}: api_keys: a key is listed twice")
        tiers = self.load_tiers()
        if self.default_tier is not None and self.default_tier not in tiers.names:
            raise ConfigError(
                f"{src}: default_tier: unknown tier {self.default_tier!r}; known: {', '.join(tiers.names)}"
            )
        for i, k in enumerate(self.api_keys):
            if not k.key:
                raise ConfigError(f"{src}: api_keys[{i}].key: must be a non-empty string")
            if not k.tiers:
                raise ConfigError(f"{src}: api_keys[{i}].tiers: list at least one tier ({', '.join(tiers.names)})")
            for t in k.tiers:
                if t not in tiers.names:
                    raise ConfigError(
                        f"{src}: api_keys[{i}].tiers: unknown tier {t!r}; known: {', '.join(tiers.names)}"
                    )

    @property
    def disaggregated(self) -> bool:
        return any(b.role != "mixed" for b in self.backends)

    def load_tiers(self) -> TierSet:
        from polyserve.data import DEFAULT_TIERS

        try:
            return TierSet.from_toml(self.tiers_path or DEFAULT_TIERS)
        except PolyServeError as e:
            raise ConfigError(f"{self.source}: tiers: {e}") from None

    def default_tier_index(self, tiers: TierSet) -> int:
        return tiers.index(self.default_tier) if self.default_tier else len(tiers) - 1


# ---- reading the file -----------------------------------------------------------------------------------------
_TOP = {
    "model", "backends", "tiers", "default_tier", "policy", "policy_options", "autoscaler", "autoscaler_options",
    "shedding", "max_pending", "deadline_margin_ms",
    "retry_after_s", "api_keys", "timeouts", "retries", "max_body_bytes", "tick_s", "scrape_interval_s",
    "dead_after", "breaker_failures", "engine", "seed", "kubernetes",
}  # fmt: skip


def check_keys(src: str, where: str, doc: dict[str, Any], allowed: set[str]) -> None:
    """``ConfigError`` "SRC: WHEREKEY: unknown key; allowed: ..." for the first key of ``doc`` not in ``allowed``
    (a typo in a config must not be ignored silently)."""
    unknown = sorted(set(doc) - allowed)
    if unknown:
        raise ConfigError(f"{src}: {where}{unknown[0]}: unknown key; allowed: {', '.join(sorted(allowed))}")


def _num(src: str, name: str, v: Any, integer: bool = False) -> Any:
    ok = isinstance(v, int) if integer else isinstance(v, int | float)
    if isinstance(v, bool) or not ok:
        kind = "an integer" if integer else "a number"
        raise ConfigError(f"{src}: {name}: must be {kind}, got {v!r}")
    return v


def _bool(src: str, name: str, v: Any) -> bool:
    if not isinstance(v, bool):
        raise ConfigError(f"{src}: {name}: must be true or false, got {v!r}")
    return v


def _str(src: str, name: str, v: Any) -> str:
    if not isinstance(v, str):
        raise ConfigError(f"{src}: {name}: must be a string, got {v!r}")
    return v


def config_from_dict(doc: Any, source: str = "<config>", base_dir: Path | None = None) -> GatewayConfig:
    """Build and validate a ``GatewayConfig`` from a parsed document; relative paths are under ``base_dir``."""
    src = source
    if not isinstance(doc, dict):
        raise ConfigError(f"{src}: the file must hold a mapping of settings (model, backends, ...)")
    check_keys(src, "", doc, _TOP)
    kube = None
    if "kubernetes" in doc:
        from polyserve.gateway.k8s import settings_from_dict, slot_backends

        if "backends" in doc:
            raise ConfigError(f"{src}: backends: not with kubernetes (the engine pods its selector finds are the "
                              "backends); remove one of them")
        kube = settings_from_dict(doc["kubernetes"], src)
        doc = {**doc, "backends": slot_backends(kube)}
    for req in ("model", "backends"):
        if req not in doc:
            raise ConfigError(f"{src}: {req}: missing (a gateway config needs at least model and backends)")
    raw_backends = doc["backends"]
    if not isinstance(raw_backends, list) or not raw_backends:
        raise ConfigError(f"{src}: backends: must be a non-empty list of {{url, priority, deadlines}} entries")
    backends = []
    for i, b in enumerate(raw_backends):
        if isinstance(b, str):
            b = {"url": b}
        if not isinstance(b, dict):
            raise ConfigError(f"{src}: backends[{i}]: must be a URL or a mapping {{url, priority, deadlines}}")
        check_keys(src, f"backends[{i}].", b, {"url", "priority", "deadlines", "role"})
        if "url" not in b:
            raise ConfigError(f"{src}: backends[{i}].url: missing")
        url = _str(src, f"backends[{i}].url", b["url"]).rstrip("/")
        backends.append(BackendSpec(url, _bool(src, f"backends[{i}].priority", b.get("priority", False)),
                                    _bool(src, f"backends[{i}].deadlines", b.get("deadlines", False)),
                                    _str(src, f"backends[{i}].role", b.get("role", "mixed"))))
    kw: dict[str, Any] = {"model": _str(src, "model", doc["model"]), "backends": tuple(backends), "source": src,
                          "kubernetes": kube}
    if "tiers" in doc:
        p = Path(_str(src, "tiers", doc["tiers"]))
        if not p.is_absolute() and base_dir is not None:
            p = base_dir / p
        kw["tiers_path"] = str(p)
    if "default_tier" in doc:
        kw["default_tier"] = _str(src, "default_tier", doc["default_tier"])
    if "policy" in doc:
        kw["policy"] = _str(src, "policy", doc["policy"])
    if "policy_options" in doc:
        if not isinstance(doc["policy_options"], dict):
            raise ConfigError(f"{src}: policy_options: must be a mapping of the router's options")
        kw["policy_options"] = dict(doc["policy_options"])
    if "autoscaler" in doc:
        kw["autoscaler"] = _str(src, "autoscaler", doc["autoscaler"])
    if "autoscaler_options" in doc:
        if not isinstance(doc["autoscaler_options"], dict):
            raise ConfigError(f"{src}: autoscaler_options: must be a mapping of the autoscaler's options")
        kw["autoscaler_options"] = dict(doc["autoscaler_options"])
    if "shedding" in doc:
        kw["shedding"] = _bool(src, "shedding", doc["shedding"])
    for name in ("max_pending", "retries", "max_body_bytes", "dead_after", "breaker_failures", "seed"):
        if name in doc:
            kw[name] = _num(src, name, doc[name], integer=True)
    for name in ("retry_after_s", "deadline_margin_ms", "tick_s", "scrape_interval_s"):
        if name in doc:
            kw[name] = float(_num(src, name, doc[name]))
    if "api_keys" in doc:
        raw = doc["api_keys"]
        if not isinstance(raw, list):
            raise ConfigError(f"{src}: api_keys: must be a list of {{key, tiers}} entries")
        keys = []
        for i, k in enumerate(raw):
            if not isinstance(k, dict):
                raise ConfigError(f"{src}: api_keys[{i}]: must be a mapping {{key, tiers}}")
            check_keys(src, f"api_keys[{i}].", k, {"key", "tiers"})
            if "key" not in k or "tiers" not in k:
                raise ConfigError(f"{src}: api_keys[{i}]: needs both key and tiers")
            tl = k["tiers"]
            if not isinstance(tl, list) or not all(isinstance(t, str) for t in tl):
                raise ConfigError(f"{src}: api_keys[{i}].tiers: must be a list of tier names")
            keys.append(ApiKey(_str(src, f"api_keys[{i}].key", k["key"]), tuple(tl)))
        kw["api_keys"] = tuple(keys)
    if "timeouts" in doc:
        t = doc["timeouts"]
        if not isinstance(t, dict):
            raise ConfigError(f"{src}: timeouts: must be a mapping of {', '.join(sorted(TIMEOUT_KEYS))}")
        allowed = TIMEOUT_KEYS
        check_keys(src, "timeouts.", t, allowed)
        kw["timeouts"] = Timeouts(**{k: float(_num(src, f"timeouts.{k}", v)) for k, v in t.items()})
    if "engine" in doc:
        e = doc["engine"]
        if not isinstance(e, dict):
            raise ConfigError(f"{src}: engine: must be a mapping (model, gpu, tp, ...)")
        allowed = {f for f in EngineSpec.__dataclass_fields__}
        check_keys(src, "engine.", e, allowed)
        ekw: dict[str, Any] = {}
        for k, v in e.items():
            if k in ("model", "gpu", "latency_model"):
                ekw[k] = _str(src, f"engine.{k}", v)
            elif k in ("tp", "max_num_seqs", "max_num_batched_tokens"):
                ekw[k] = _num(src, f"engine.{k}", v, integer=True)
            elif k == "kv_capacity_tokens":
                ekw[k] = None if v is None else _num(src, f"engine.{k}", v, integer=True)
            else:
                ekw[k] = float(_num(src, f"engine.{k}", v))
        kw["engine"] = EngineSpec(**ekw)
    return GatewayConfig(**kw)


def load_config(path: str | Path) -> GatewayConfig:
    """Read a YAML or TOML gateway config. ``ConfigError`` names the file and the field for any problem."""
    path = Path(path)
    return config_from_dict(read_config_doc(path), str(path), path.parent)


def read_config_doc(path: str | Path) -> Any:
    """The parsed document of a YAML or TOML config file (not yet validated)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"{path}: cannot read the gateway config: {e.strerror or e}") from None
    if path.suffix.lower() == ".toml":
        try:
            doc: Any = tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"{path}: not valid TOML: {e}") from None
    elif path.suffix.lower() in (".yaml", ".yml", ".json"):
        import yaml

        try:
            doc = yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: not valid YAML: {str(e).splitlines()[0]}") from None
    else:
        raise ConfigError(f"{path}: unknown config format; name it .yaml, .yml or .toml")
    return doc
