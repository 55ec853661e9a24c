"""Fixed-fleet goodput: the highest arrival rate a fleet serves with attainment >= a target.

Method (README "Definitions"): arrivals are Poisson at the candidate rate, each request's (prompt, output)
pair resampled from the trace, for a fixed simulated duration (default 600 s) of which the first ``warmup``
seconds (default 60) are excluded, so every candidate has a steady state. The seed is the same at every
step (common random numbers: request *i* has the same lengths and tier at every rate). The search brackets
the goodput from a starting rate (x1.25 up while runs pass, x0.8 down while they fail), then bisects to a
relative tolerance (default 2%).

Two criteria: ``overall`` (attainment over all requests >= target) and ``all_tiers`` (every tier >= target,
so a policy cannot buy its figure by sacrificing one tier). ``all_tiers`` goodput is never above ``overall``,
so its search starts below the overall figure.

Runs stop early once more measured requests have missed their SLO than the target allows (the verdict is
then known); a run also stops at the last deadline any request could still meet, and what is unfinished
then counts as missed.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from polyserve.core.errors import ConfigError
from polyserve.core.tiers import TierSet
from polyserve.runner import PolicySpec, SimResult, run_workload
from polyserve.sim.config import SimConfig
from polyserve.workload import TraceData, poisson_lengths_workload


@dataclass(frozen=True)
class GoodputSettings:
    target: float = 0.9
    duration_s: float = 600.0
    warmup_s: float = 60.0
    rel_tol: float = 0.02  # stop bisecting when (hi - lo) / hi < rel_tol
    max_evals: int = 24
    start_rate: float | None = None  # first candidate; default 2 req/s per instance (compare: 0.9 x bound)

    def __post_init__(self) -> None:
        if not 0 < self.target <= 1:
            raise ConfigError(f"--target must be in (0, 1], got {self.target}")
        if not (self.duration_s > 0 and 0 <= self.warmup_s < self.duration_s):
            raise ConfigError(f"need 0 <= warmup ({self.warmup_s}) < duration ({self.duration_s})")
        if not 0 < self.rel_tol < 1:
            raise ConfigError(f"rel_tol must be in (0, 1), got {self.rel_tol}")


@dataclass
class Probe:
    """One simulated candidate rate."""

    rate: float
    criterion: str
    passed: bool
    attainment: float | None  # over measured requests (None if the run stopped early)
    tier_attainment: dict[str, float | None]
    measured: int
    aborted: bool


@dataclass
class GoodputResult:
    goodput_rps: float
    goodput_rps_all_tiers: float
    target: float
    probes: list[Probe] = field(default_factory=list)
    at_goodput: dict[str, object] | None = None  # summary of the run at goodput_rps (full, not aborted)
    at_goodput_all_tiers: dict[str, object] | None = None


def _horizon(wl) -> float:
    """Seconds after which no request can meet its last deadline: nothing left can change the verdict."""
    if len(wl) == 0:
        return 1.0
    last = wl.arrival_s + (wl.ttft_ms + (wl.output_tokens - 1) * wl.tpot_ms) / 1e3
    return float(last.max()) + 1.0


class GoodputSearch:
    """Evaluate candidate rates for one (fleet, policy, trace) and search both criteria."""

    def __init__(
        self,
        trace: TraceData,
        tiers: TierSet,
        model,
        policy: PolicySpec,
        config: SimConfig,
        seed: int,
        settings: GoodputSettings,
        progress: Callable[[str], None] | None = None,
        use_tier_column: bool = True,
    ) -> None:
        self.trace = trace
        self.use_tier_column = use_tier_column  # False: explicit tier weights override a trace's tier column
        self.tiers = tiers
        self.model = model
        self.policy = policy
        self.config = config
        self.seed = seed
        self.s = settings
        self.progress = progress
        self.probes: list[Probe] = []
        self._cache: dict[tuple[float, str], Probe] = {}

    def run_at(self, rate: float, criterion: str | None = None) -> SimResult:
        """One run at ``rate``; with a criterion, it may stop early once that criterion has failed."""
        s = self.s
        wl = poisson_lengths_workload(self.trace, rate, s.duration_s, self.tiers, self.seed, self.use_tier_column)
        cfg = SimConfig(**{**self.config.to_dict(), "horizon_s": _horizon(wl)})
        win = (s.warmup_s, s.duration_s)
        measured = (wl.arrival_s >= win[0]) & (wl.arrival_s < win[1])
        budget = tier_budget = None
        if criterion == "overall":
            budget = math.floor((1 - s.target) * int(measured.sum()) + 1e-9)
        elif criterion == "all_tiers":
            counts = np.bincount(wl.tier[measured].astype(np.intp), minlength=len(self.tiers))
            tier_budget = [math.floor((1 - s.target) * int(c) + 1e-9) for c in counts]
        return run_workload(
            wl,
            self.model,
            self.policy,
            cfg,
            self.seed,
            window=win,
            violation_budget=budget,
            tier_violation_budget=tier_budget,
        )

    def probe(self, rate: float, criterion: str) -> Probe:
        key = (round(rate, 9), criterion)
        if key in self._cache:
            return self._cache[key]
        res = self.run_at(rate, criterion)
        sm = res.summary
        tiers = sm["tiers"]  # type: ignore[index]
        tier_att = {k: v["attainment"] for k, v in tiers.items()}  # type: ignore[union-attr]
        if res.aborted:
            passed = False
            att = None
        else:
            att = sm["attainment"]
            if criterion == "overall":
                passed = att is not None and att >= self.s.target - 1e-12  # type: ignore[operator]
            else:
                passed = all(a is None or a >= self.s.target - 1e-12 for a in tier_att.values())
        p = Probe(rate, criterion, passed, att, tier_att, int(sm["requests"]), res.aborted)  # type: ignore[arg-type]
        self._cache[key] = p
        self.probes.append(p)
        if self.progress:
            verdict = "pass" if passed else "fail"
            self.progress(f"{criterion}: {rate:.3f} req/s -> {verdict}")
        return p

    def search(self, criterion: str, hint: float | None = None, hi_known_fail: float | None = None) -> float:
        """Bracket from ``hint`` (x1.25 up while passing, x0.8 down while failing), then bisect."""
        s = self.s
        rate = hint or s.start_rate or 2.0 * self.config.instances
        lo, hi = 0.0, hi_known_fail
        if hi is not None and rate >= hi:
            rate = 0.9 * hi
        evals = 1
        if self.probe(rate, criterion).passed:
            lo = rate
            while hi is None and evals < s.max_evals:
                rate *= 1.25
                evals += 1
                if self.probe(rate, criterion).passed:
                    lo = rate
                else:
                    hi = rate
        else:
            hi = rate
            while evals < s.max_evals:
                rate *= 0.8
                evals += 1
                if rate < 1e-3:
                    return 0.0
                if self.probe(rate, criterion).passed:
                    lo = rate
                    break
                hi = rate
        if hi is None or lo == 0.0:
            return lo
        while (hi - lo) / hi >= s.rel_tol and evals < s.max_evals:
            evals += 1
            mid = (lo + hi) / 2
            if self.probe(mid, criterion).passed:
                lo = mid
            else:
                hi = mid
        return lo

    def run(self) -> GoodputResult:
        g = self.search("overall")
        fail_above = min(
            (p.rate for p in self.probes if p.criterion == "overall" and not p.passed), default=None
        )
        g_all = self.search("all_tiers", hi_known_fail=fail_above)
        g_all = min(g_all, g) if g > 0 else g_all
        at = self.run_at(g).summary if g > 0 else None
        at_all = self.run_at(g_all).summary if g_all > 0 else None
        return GoodputResult(g, g_all, self.s.target, list(self.probes), at, at_all)
