"""Fixed-fleet goodput: the highest arrival rate a fleet serves with attainment >= a target.

Method (README "Definitions"): arrivals are Poisson at the candidate rate, each request's (prompt, output)
pair resampled from the trace, for a fixed simulated duration (default 600 s) of which the first ``warmup``
seconds (default 60) are excluded, so every candidate has a steady state. The seed is the same at every
step (common random numbers: request *i* has the same lengths and tier at every rate).

Three criteria, each stricter than the one before (so their goodputs never increase):
- ``overall``: attainment over all measured requests >= target;
- ``all_tiers``: every tier >= target, so a policy cannot buy its figure by sacrificing one tier;
- ``tail_bounded`` (the headline): ``all_tiers`` and, in every tier, the p99 of TTFT / TTFT SLO over *all*
  its requests that were not shed (attained or not, waiting ones counted with their wait) is at most
  ``tail_factor`` (2): a request left waiting for minutes is a failure the user sees, even when it is one of
  the 10% the target forgives.

Search: the upper end is the work bound (``sim/bound.py``), a rate no policy can pass above, computed on the
same workload; the search starts below it (``start_rate`` or 0.7 x the bound), steps down x0.85 while
failing (up x1.15 while passing, never past the bound), then bisects to ``rel_tol`` (default 1%). Each
candidate rate is simulated once and judged on all three criteria; searches of the later criteria reuse
those runs. A run stops early once more measured requests have missed than the overall target allows (all
three verdicts are then "fail"); a run also stops at the last deadline any request could still meet, and
what is unfinished then counts as missed.

Where the runs happen: in this process by default; with an ``executor`` (``experiments/executor.py``: a local
process pool or Ray) every simulation (a probe, the work bound, a full run at the goodput) is a task. The
search itself stays sequential and runs here: it is a generator of candidate rates (``_steps``) fed with
verdicts, so the rates it may ask for next can be listed by replaying it under hypothetical verdicts
(``experiments/speculation.py``) and simulated ahead on idle workers. A speculative result is only a cached
value: the search records a probe when it asks for that rate, in the same order as without speculation, so
the result (probes, goodputs, summaries) is identical whatever the executor and the number of workers.

Stationarity: every simulated candidate records its attainment in each quarter of the counted window, so a
report can show that the warm-up was long enough (``stationarity``: the largest gap between a quarter and
the whole window, at the goodput rate).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Generator
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from polyserve.core.errors import ConfigError
from polyserve.core.tiers import TierSet
from polyserve.experiments.runner import PolicySpec, SimResult, run_workload
from polyserve.experiments.speculation import frontier
from polyserve.metrics.records import ATTAINED
from polyserve.sim.bound import BoundSetup, work_bound_rps
from polyserve.sim.config import SimConfig
from polyserve.workload import TraceData, poisson_lengths_workload

if TYPE_CHECKING:
    from polyserve.experiments.executor import Executor

CRITERIA = ("overall", "all_tiers", "tail_bounded")


@dataclass(frozen=True)
class GoodputSettings:
    target: float = 0.9
    duration_s: float = 600.0
    warmup_s: float = 60.0
    rel_tol: float = 0.01  # stop bisecting when (hi - lo) / hi < rel_tol
    max_evals: int = 40  # simulated candidates per criterion at most
    start_rate: float | None = None  # first candidate; default 0.7 x the work bound
    tail_factor: float = 2.0  # tail_bounded: every tier's p99 TTFT / TTFT SLO (all requests) at most this
    use_bound: bool = True  # False: search without the work bound above (tests use it to check the bound)

    def __post_init__(self) -> None:
        if not 0 < self.target <= 1:
            raise ConfigError(f"--target must be in (0, 1], got {self.target}")
        if not (self.duration_s > 0 and 0 <= self.warmup_s < self.duration_s):
            raise ConfigError(f"need 0 <= warmup ({self.warmup_s}) < duration ({self.duration_s})")
        if not 0 < self.rel_tol < 1:
            raise ConfigError(f"rel_tol must be in (0, 1), got {self.rel_tol}")
        if not (math.isfinite(self.tail_factor) and self.tail_factor > 0):
            raise ConfigError(f"tail_factor must be a finite number > 0, got {self.tail_factor}")
        if self.start_rate is not None and not (math.isfinite(self.start_rate) and self.start_rate > 0):
            raise ConfigError(f"--start-rate must be > 0 req/s, got {self.start_rate}")


@dataclass
class Probe:
    """One simulated candidate rate, judged on every criterion."""

    rate: float
    passed: dict[str, bool]
    attainment: float | None  # over measured requests (None if the run stopped early)
    tier_attainment: dict[str, float | None]
    tier_ttft_over_slo_p99: dict[str, float | None]
    shed_fraction: float | None
    measured: int
    aborted: bool
    quarters: list[float | None]  # attainment in each quarter of the counted window (stationarity)


@dataclass
class GoodputResult:
    goodput_rps: float
    goodput_rps_all_tiers: float
    target: float
    goodput_rps_tail_bounded: float = 0.0
    bound_rps: float | None = None  # work bound, overall criterion (sim/bound.py)
    bound_rps_all_tiers: float | None = None  # work bound with every tier at the target
    probes: list[Probe] = field(default_factory=list)
    at_goodput: dict[str, object] | None = None  # summary of the run at goodput_rps (full, not aborted)
    at_goodput_all_tiers: dict[str, object] | None = None
    at_goodput_tail_bounded: dict[str, object] | None = None
    stationarity: dict[str, object] | None = None  # quarters of the counted window at the headline rate


def _horizon(wl) -> float:
    """Seconds after which no request can meet its last deadline: nothing left can change the verdict."""
    if len(wl) == 0:
        return 1.0
    last = wl.arrival_s + (wl.ttft_ms + (wl.output_tokens - 1) * wl.tpot_ms) / 1e3
    return float(last.max()) + 1.0


class GoodputSearch:
    """Evaluate candidate rates for one (fleet, policy, trace, seed) and search every criterion."""

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
        bounds: tuple[float, float] | None = None,
        executor: Executor | None = None,
    ) -> None:
        """``bounds``: (overall, all-tiers) work bounds if already known for this workload (they depend on
        the trace, fleet, model, seed and window, not on the policy), else computed on first use.
        ``executor``: where the simulations run (None: here, one after another); the search pickles itself
        (without its probes and caches) into each task, so everything it holds must be picklable."""
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
        self._cache: dict[float, tuple[Probe, dict[str, object] | None]] = {}
        self._bounds = bounds
        self.executor = executor
        self._spec: dict[float, Future] = {}  # speculative probes submitted, not yet asked for (rate key)
        self.speculated = 0  # probes submitted ahead of the search (asked for later or not)

    _RUNTIME = ("progress", "probes", "_cache", "executor", "_spec")

    def __getstate__(self) -> dict[str, object]:
        """What a task needs to run a probe: the workload, fleet and policy, not the search's own state."""
        return {k: v for k, v in self.__dict__.items() if k not in self._RUNTIME}

    def __setstate__(self, state: dict[str, object]) -> None:
        self.__dict__.update(state)
        self.progress, self.probes, self._cache, self.executor, self._spec = None, [], {}, None, {}

    def _call(self, fn: Callable[..., object], *args: object) -> object:
        """``fn(self, *args)`` here, or as a task on the executor (waiting for it)."""
        if self.executor is None:
            return fn(self, *args)
        return self.executor.submit(fn, self, *args).result()

    def workload(self, rate: float):
        return poisson_lengths_workload(self.trace, rate, self.s.duration_s, self.tiers, self.seed,
                                        self.use_tier_column)

    @property
    def window(self) -> tuple[float, float]:
        return (self.s.warmup_s, self.s.duration_s)

    def bounds(self) -> tuple[float, float]:
        """(overall, every-tier) work bounds for this workload, in req/s."""
        if self._bounds is None:
            self._bounds = self._call(_bounds_task)  # type: ignore[assignment]
        return self._bounds  # type: ignore[return-value]

    def compute_bounds(self) -> tuple[float, float]:
        setup = BoundSetup.for_sim(self.model, self.config)
        start = self.s.start_rate or 4.0 * self.config.instances
        b = work_bound_rps(self.workload, setup, self.window, self.s.target, False, start)
        b_all = work_bound_rps(self.workload, setup, self.window, self.s.target, True, b)
        return (b, min(b, b_all))

    def run_at(self, rate: float, early_stop: bool = False) -> SimResult:
        """One run at ``rate``; ``early_stop``: it may stop once the overall target is out of reach."""
        s = self.s
        wl = self.workload(rate)
        cfg = SimConfig(**{**self.config.to_dict(), "horizon_s": _horizon(wl)})
        win = self.window
        budget = None
        if early_stop:
            measured = (wl.arrival_s >= win[0]) & (wl.arrival_s < win[1])
            budget = math.floor((1 - s.target) * int(measured.sum()) + 1e-9)
        return run_workload(wl, self.model, self.policy, cfg, self.seed, window=win, violation_budget=budget)

    def _quarters(self, res: SimResult) -> list[float | None]:
        wl, rec = res.workload, res.records
        w0, w1 = self.window
        out: list[float | None] = []
        for k in range(4):
            a, b = w0 + (w1 - w0) * k / 4, w0 + (w1 - w0) * (k + 1) / 4
            m = (wl.arrival_s >= a) & (wl.arrival_s < b)
            n = int(m.sum())
            out.append(round(int((m & (rec.status == ATTAINED)).sum()) / n, 6) if n else None)
        return out

    def verdicts(self, sm: dict[str, object]) -> dict[str, bool]:
        tgt = self.s.target - 1e-12
        tiers = sm["tiers"]  # type: ignore[index]
        att = sm["attainment"]
        overall = att is not None and att >= tgt  # type: ignore[operator]
        every = all(v["attainment"] is None or v["attainment"] >= tgt for v in tiers.values())  # type: ignore[union-attr]
        tail = every and all(
            v["ttft_over_slo_p99"] is None or v["ttft_over_slo_p99"] <= self.s.tail_factor + 1e-12
            for v in tiers.values()  # type: ignore[union-attr]
        )
        return {"overall": overall, "all_tiers": every, "tail_bounded": tail}

    def evaluate(self, rate: float) -> tuple[Probe, dict[str, object] | None]:
        """One early-stopping run at ``rate``, judged on every criterion, with its summary if it ran in full.
        A function of the workload and the rate alone: where or when it runs does not change it."""
        res = self.run_at(rate, early_stop=True)
        sm = res.summary
        tiers = sm["tiers"]  # type: ignore[index]
        if res.aborted:
            passed = dict.fromkeys(CRITERIA, False)
        else:
            passed = self.verdicts(sm)
        p = Probe(
            rate, passed, None if res.aborted else sm["attainment"],  # type: ignore[arg-type]
            {k: v["attainment"] for k, v in tiers.items()},  # type: ignore[union-attr]
            {k: v["ttft_over_slo_p99"] for k, v in tiers.items()},  # type: ignore[union-attr]
            sm["shed_fraction"], int(sm["requests"]), res.aborted, self._quarters(res),  # type: ignore[arg-type]
        )
        return p, None if res.aborted else sm

    def probe(self, rate: float) -> Probe:
        """The verdicts at ``rate``: simulated once (or taken from a speculative run), recorded in ``probes``
        in the order the search asks, cached for every later question."""
        key = round(rate, 9)
        if key in self._cache:
            return self._cache[key][0]
        fut = self._spec.pop(key, None)
        if fut is not None:
            p, sm = fut.result()
        else:
            p, sm = self._call(_probe_task, rate)  # type: ignore[misc]
        self._cache[key] = (p, sm)
        self.probes.append(p)
        if self.progress:
            verdict = ", ".join(f"{c} {'pass' if v else 'fail'}" for c, v in p.passed.items())
            self.progress(f"{rate:.3f} req/s -> {verdict}")
        return p

    def summary_at(self, rate: float) -> dict[str, object] | None:
        """The full run's summary at ``rate`` (a cached probe that passed any criterion ran in full)."""
        hit = self._cache.get(round(rate, 9))
        if hit is not None and hit[1] is not None:
            return hit[1]
        return self.full_summary(rate) if rate > 0 else None

    def full_summary(self, rate: float) -> dict[str, object]:
        """The summary of a full run (no early stop) at ``rate``, on the executor if there is one."""
        return self._call(_full_summary_task, rate)  # type: ignore[return-value]

    def search(self, criterion: str, hint: float | None = None) -> float:
        """Highest passing rate for ``criterion``, to ``rel_tol``, below the work bound."""
        if criterion not in CRITERIA:
            raise ConfigError(f"unknown goodput criterion {criterion!r}; allowed: {', '.join(CRITERIA)}")
        hi: float | None = None
        if self.s.use_bound:
            b, b_all = self.bounds()
            hi = b if criterion == "overall" else b_all
            if hi <= 0:
                return 0.0
        before = list(self.probes)

        def steps() -> Generator[float, bool, float]:
            return self._steps(criterion, hint, hi, before)

        gen = steps()
        try:
            rate = next(gen)
            while True:
                if round(rate, 9) not in self._cache:
                    self._speculate(criterion, steps, rate)
                rate = gen.send(self.probe(rate).passed[criterion])
        except StopIteration as stop:
            return stop.value

    def _speculate(self, criterion: str, steps: Callable[[], Generator[float, bool, float]], needed: float) -> None:
        """Before waiting for ``needed``: submit it, then fill idle workers with the rates the search may ask
        for after it (breadth first over its next verdicts), so they are ready if it does."""
        ex = self.executor
        if ex is None:
            return
        k = round(needed, 9)
        if k not in self._spec:
            self._spec[k] = ex.submit(_probe_task, self, needed)
        room = ex.idle()
        if room <= 0:
            return

        def known(rate: float) -> bool | None:
            hit = self._cache.get(round(rate, 9))
            return None if hit is None else hit[0].passed[criterion]

        last = self.probes[-1].passed[criterion] if self.probes else False
        for rate in frontier(steps, known, lambda r: round(r, 9) in self._spec, room, prefer=last):
            self._spec[round(rate, 9)] = ex.submit(_probe_task, self, rate)
            self.speculated += 1

    def _steps(self, criterion: str, hint: float | None, hi: float | None,
               before: list[Probe]) -> Generator[float, bool, float]:
        """The search for ``criterion`` as a generator: yields each rate it needs judged, receives whether it
        passed, returns the goodput. Pure given ``before`` (the probes recorded when the search began) and
        the verdicts it is sent, so it can be replayed under hypothetical verdicts."""
        s = self.s
        done = [p for p in before if hi is None or p.rate < hi]
        fails = [p.rate for p in done if not p.passed[criterion]]
        if fails:
            hi = min(fails) if hi is None else min(hi, min(fails))
        passes = [p.rate for p in done if p.passed[criterion] and (hi is None or p.rate < hi)]
        lo = max(passes) if passes else 0.0
        evals = 0
        if lo == 0.0:
            rate = hint or s.start_rate or (0.7 * hi if hi is not None else 2.0 * self.config.instances)
            if hi is not None and rate >= hi:
                rate = 0.7 * hi
            while evals < s.max_evals:
                evals += 1
                if rate < 1e-3:
                    return 0.0
                if (yield rate):
                    lo = rate
                    break
                hi = rate
                rate *= 0.85
            if lo == 0.0:
                return 0.0
        while evals < s.max_evals and (hi is None or lo * 1.15 < hi):
            evals += 1
            rate = lo * 1.15
            if (yield rate):
                lo = rate
            else:
                hi = rate
        if hi is None:
            return lo
        while (hi - lo) / hi >= s.rel_tol and evals < s.max_evals:
            evals += 1
            mid = (lo + hi) / 2
            if (yield mid):
                lo = mid
            else:
                hi = mid
        return lo

    def run(self) -> GoodputResult:
        g = self.search("overall")
        g_all = min(self.search("all_tiers"), g)
        g_tail = min(self.search("tail_bounded"), g_all)
        b, b_all = self.bounds() if self.s.use_bound else (None, None)
        at = self.summary_at(g) if g > 0 else None
        at_all = self.summary_at(g_all) if g_all > 0 else None
        at_tail = self.summary_at(g_tail) if g_tail > 0 else None
        stat = None
        hit = self._cache.get(round(g_tail, 9)) if g_tail > 0 else None
        if hit is not None:
            q = [x for x in hit[0].quarters if x is not None]
            whole = hit[0].attainment
            stat = {"rate": g_tail, "quarters": hit[0].quarters, "attainment": whole,
                    "max_gap": round(max(abs(x - whole) for x in q), 6) if q and whole is not None else None}
        self.drop_speculation()
        return GoodputResult(g, g_all, self.s.target, g_tail, b, b_all, list(self.probes), at, at_all, at_tail,
                             stat)

    def drop_speculation(self) -> None:
        """Cancel the speculative probes the search never asked for (those already running may finish)."""
        for fut in self._spec.values():
            if self.executor is not None:
                self.executor.cancel(fut)
        self._spec.clear()


# ---- tasks: module-level, so an executor can send them to another process --------------------------------------
def _probe_task(gs: GoodputSearch, rate: float) -> tuple[Probe, dict[str, object] | None]:
    return gs.evaluate(rate)


def _bounds_task(gs: GoodputSearch) -> tuple[float, float]:
    return gs.compute_bounds()


def _full_summary_task(gs: GoodputSearch, rate: float) -> dict[str, object]:
    return gs.run_at(rate).summary
