"""``Breaker``: when a failed request means the backend is down, and when it means nothing about the backend.

A backend that refuses connections is down: it is marked dead at once. Any other failure before the first
token (an HTTP 5xx, a stream that breaks, a timeout) may be the *request's* fault: a body that overflows the
engine's parser fails on every backend, and marking each dead in turn would let one poison request take the
whole fleet out of rotation. So such failures are *strikes*, and a backend is marked dead only after
``threshold`` consecutive strikes from *different* requests; any first token it delivers clears its strikes.
The same request failing on one backend twice counts once.

Pure bookkeeping, no clock: the gateway calls ``failure`` and ``success`` and acts on the answer.
"""

from __future__ import annotations

from dataclasses import dataclass, field

DEAD_AT_ONCE = frozenset({"connect"})  # failure kinds that say the backend itself is down
NO_STRIKE = frozenset({"slow"})  # a request re-routed for waiting past its SLO: the backend may just be loaded


@dataclass
class Breaker:
    threshold: int = 3  # consecutive strikes from different requests before a backend is marked dead
    _strikes: dict[int, list[int]] = field(default_factory=dict)  # sid -> distinct request ids since a success

    def __post_init__(self) -> None:
        if self.threshold < 1:
            raise ValueError(f"breaker threshold must be >= 1, got {self.threshold}")

    def failure(self, sid: int, rid: int, kind: str) -> bool:
        """Record that request ``rid`` failed on server ``sid`` before its first token; True: mark it dead."""
        if kind in DEAD_AT_ONCE:
            self._strikes.pop(sid, None)
            return True
        if kind in NO_STRIKE:
            return False
        seen = self._strikes.setdefault(sid, [])
        if rid not in seen:
            seen.append(rid)
        if len(seen) >= self.threshold:
            self._strikes.pop(sid, None)
            return True
        return False

    def success(self, sid: int) -> None:
        """Server ``sid`` delivered a first token: whatever failed before was not the server."""
        self._strikes.pop(sid, None)

    def strikes(self, sid: int) -> int:
        return len(self._strikes.get(sid, ()))
