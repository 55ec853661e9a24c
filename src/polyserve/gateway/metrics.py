"""The gateway's Prometheus metrics (one ``CollectorRegistry`` per app, never the global one).

- ``polyserve_requests_total{tier,outcome}``: every request once, when its fate is known. ``rejected``: refused
  before it was accepted (bad body or headers, auth, unknown model, too large); ``completed``: the stream
  finished (``data: [DONE]``); ``failed``: accepted but ended by an error (backend failure after retries,
  timeout, client gone); ``shed``: refused for overload (429/503 + Retry-After);
- ``polyserve_requests_accepted_total{tier}``: the invariant is accepted = completed + failed + shed;
- ``polyserve_dslo_attained_total{tier}``: completed requests whose every token met its deadline
  (``arrival + TTFT + (k-1) * TPOT``, as the gateway saw the tokens);
- ``polyserve_pending_requests{tier}``, ``polyserve_servers{tier}`` (tier names, plus ``idle`` and ``dead``),
  read from the router when scraped;
- ``polyserve_ttft_seconds{tier}``, ``polyserve_tpot_seconds{tier}`` histograms (TTFT from the gateway's
  receipt of the request, pending time included; TPOT = (last - first token) / (tokens - 1));
- ``polyserve_scaling_actions_total{action}``, ``polyserve_backend_errors_total{backend,kind}``,
  ``polyserve_client_disconnects_total``, ``polyserve_retries_total``;
- ``polyserve_backend_outstanding{backend,source}``: the ledger's count next to the engine's own
  ``vllm:num_requests_running + waiting`` (source ``engine``, from the scrape), to cross-check.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from polyserve.serving.buckets import ITL_BUCKETS, TTFT_BUCKETS

CONTENT_TYPE = CONTENT_TYPE_LATEST
OUTCOMES = ("completed", "failed", "shed", "rejected")
NO_TIER = "none"  # label of requests refused before a tier was known


class GatewayMetrics:
    def __init__(self, tier_names: list[str], backend_names: list[str]) -> None:
        self.registry = r = CollectorRegistry(auto_describe=True)
        self.requests = Counter("polyserve_requests", "Requests by tier and outcome.", ["tier", "outcome"], registry=r)
        self.accepted = Counter("polyserve_requests_accepted", "Requests accepted.", ["tier"], registry=r)
        self.attained = Counter(
            "polyserve_dslo_attained", "Completed requests that met every token deadline.", ["tier"], registry=r
        )
        self.ttft = Histogram(
            "polyserve_ttft_seconds", "Time to first token at the gateway.", ["tier"], buckets=TTFT_BUCKETS,
            registry=r,
        )  # fmt: skip
        self.tpot = Histogram(
            "polyserve_tpot_seconds", "Mean time per output token after the first.", ["tier"],
            buckets=ITL_BUCKETS, registry=r,
        )  # fmt: skip
        self.scaling = Counter("polyserve_scaling_actions", "Scale actions applied.", ["action"], registry=r)
        self.backend_errors = Counter(
            "polyserve_backend_errors", "Backend failures seen by the gateway.", ["backend", "kind"], registry=r
        )
        self.disconnects = Counter("polyserve_client_disconnects", "Clients that went away early.", registry=r)
        self.retries = Counter("polyserve_retries", "Requests re-routed after a failure before the first token.",
                               registry=r)  # fmt: skip
        self._pending = Gauge("polyserve_pending_requests", "Requests waiting in the router.", ["tier"], registry=r)
        self._servers = Gauge("polyserve_servers", "Servers per tier (and idle, dead).", ["tier"], registry=r)
        self._outstanding = Gauge(
            "polyserve_backend_outstanding", "Requests on a backend: the ledger's and the engine's own count.",
            ["backend", "source"], registry=r,
        )  # fmt: skip
        self.tier_names = tier_names
        self.backend_names = backend_names
        for t in tier_names:
            for o in OUTCOMES:
                self.requests.labels(t, o)
            self.accepted.labels(t)
            self.attained.labels(t)
        self._cache: dict[tuple[str, str], object] = {}  # the children on the request path, by their labels
        self._accepted: dict[str, object] = {}

    def outcome(self, tier: str, outcome: str) -> None:
        key = (tier, outcome)
        c = self._cache.get(key)
        if c is None:
            c = self._cache[key] = self.requests.labels(tier, outcome)
        c.inc()  # type: ignore[attr-defined]

    def accept(self, tier: str) -> None:
        c = self._accepted.get(tier)
        if c is None:
            c = self._accepted[tier] = self.accepted.labels(tier)
        c.inc()  # type: ignore[attr-defined]

    def bind(
        self,
        pending: Callable[[], list[int]],
        servers: Callable[[], dict[str, int]],
        outstanding: Callable[[], list[tuple[int, float | None]]],
    ) -> None:
        """Gauges read from the router when scraped (through ``refresh``)."""
        self._read = (pending, servers, outstanding)

    def refresh(self) -> None:
        pending, servers, outstanding = self._read
        for name, n in zip(self.tier_names, pending(), strict=True):
            self._pending.labels(name).set(n)
        for name, n in servers().items():
            self._servers.labels(name).set(n)
        for name, (ledger, engine) in zip(self.backend_names, outstanding(), strict=True):
            self._outstanding.labels(name, "ledger").set(ledger)
            if engine is not None:
                self._outstanding.labels(name, "engine").set(engine)

    def render(self) -> bytes:
        self.refresh()
        return generate_latest(self.registry)
