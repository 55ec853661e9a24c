"""Which rates a sequential search may ask for next: the frontier of its decision tree, for speculative runs.

A goodput search is sequential: each candidate rate depends on the verdicts before it. With idle workers,
the rates it *may* need next can still be simulated ahead. ``frontier`` finds them by replaying the search
(a generator that yields rates and is sent verdicts) from the start under hypothetical verdicts, breadth
first: first the rate it needs now, then the rate after each possible verdict of it, and so on.

Why replay instead of a model of the search: the replay runs the search's own code, so a listed rate is
bit-for-bit the float the search will ask for, and a result computed ahead is found in the cache by the
same key. Replaying costs arithmetic only (the verdicts it knows come from results already in hand).

Failure modes: none that change results: a rate listed but never asked for is wasted work, and one asked
for but not listed is simply simulated when asked. The exploration is bounded (``max_nodes``) so a search
with many steps left costs microseconds, not an explosion of branches.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Generator


def key(rate: float) -> float:
    """The cache key of a rate (the search's own: rounding to 1e-9 req/s)."""
    return round(rate, 9)


def frontier(
    steps: Callable[[], Generator[float, bool, object]],
    known: Callable[[float], bool | None],
    taken: Callable[[float], bool],
    limit: int,
    *,
    prefer: bool = False,
    max_nodes: int = 64,
) -> list[float]:
    """Up to ``limit`` rates the search may ask for next, most likely needed first, leaving out the ones
    ``taken`` (already submitted). ``steps()`` starts a fresh replay of the search; ``known(rate)`` is the
    verdict in hand for a rate (None if unknown). Under each unknown verdict both outcomes are explored,
    ``prefer`` first (the more likely one: the last verdict seen, since a search stepping down keeps failing
    and one stepping up keeps passing)."""
    out: list[float] = []
    seen: set[float] = set()
    queue: deque[dict[float, bool]] = deque([{}])
    nodes = 0
    while queue and len(out) < limit and nodes < max_nodes:
        hypo = queue.popleft()
        nodes += 1
        gen = steps()
        try:
            rate = next(gen)
            while True:
                verdict = known(rate)
                if verdict is None:
                    verdict = hypo.get(key(rate))
                if verdict is None:
                    break
                rate = gen.send(verdict)
        except StopIteration:
            continue  # under these hypotheses the search ends: nothing more to run
        k = key(rate)
        if k not in seen:
            seen.add(k)
            if not taken(rate):
                out.append(rate)
        queue.append({**hypo, k: prefer})
        queue.append({**hypo, k: not prefer})
    return out[:limit]
