"""The latency-model protocol every model implements, and the registry of models.

A latency model answers one question: how long does one engine iteration take, given
- ``num_decode``: requests in the batch that each produce one output token this iteration,
- ``kv_tokens``: the KV-cache tokens those decode requests hold (what attention must read),
- ``prefill_tokens``: prompt tokens processed this iteration (chunked prefill).
Plus the P/D hand-off cost: the time to move a request's KV cache between instances.

Times are seconds (float). The simulator converts to integer nanoseconds at its edge.

``kv_independent`` lets the simulator take its fast path: when a decode-only iteration's time does not
depend on ``kv_tokens``, *k* identical iterations take exactly ``k`` times one.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from polyserve.latency.hardware import Deployment


@runtime_checkable
class LatencyModel(Protocol):
    name: str
    deployment: Deployment
    kv_independent: bool

    def iteration_time(self, num_decode: int, kv_tokens: int, prefill_tokens: int) -> float:
        """Seconds for one iteration. ``num_decode == prefill_tokens == 0`` is an idle engine: 0."""
        ...

    def describe(self) -> dict[str, object]:
        """Name, parameters and provenance, embedded in every report."""
        ...


def kv_transfer_time(deployment: Deployment, kv_tokens: int, link_gbps: float) -> float:
    """Seconds to move ``kv_tokens`` tokens of KV cache over a ``link_gbps`` Gbit/s link (P/D hand-off)."""
    if link_gbps <= 0:
        raise ValueError(f"link bandwidth must be > 0 Gbit/s, got {link_gbps}")
    return kv_tokens * deployment.model.kv_bytes_per_token * 8 / (link_gbps * 1e9)
