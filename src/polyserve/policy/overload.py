"""The overload contract: what happens to a request whose TTFT deadline can no longer be met.

Why it lives here and not in a router: a fair comparison gives every policy the same rule. Before, only
PolyServe knew a "lost cause" (held back, served last, or shed), while the baselines served every late
request in arrival order, so the two were measured under different rules. Now the *driver* (the simulator,
and the gateway) applies one contract to every router:

- ``serve`` (the default): a lost cause is still served, but only once no attainable request of its phase
  is waiting in the router (else overload snowballs: everyone queued behind lost causes becomes one);
  inside an engine it waits behind every request that can still make it (``edf`` queues) or in arrival
  order (``fcfs``). It completes late; its TTFT counts in every tail figure.
- ``shed``: a lost cause is dropped with the reason, wherever it waits: in the router's pending queue, or
  in an engine's waiting queue before its prefill starts (a request that has streamed a token is never
  dropped). The client gets an explicit error at once instead of a token minutes late.

A request is *lost* when even an idle server could not produce its first token by ``arrival + TTFT``:
``now + prefill_seconds(prompt) > ttft_deadline``, with the prefill time from the latency model's cost
surrogate (one prefill alone, in chunks of the engine's token budget). It is a conservative test: a request
it calls lost is certainly late; one it lets through may still miss.

The decode phase (disaggregated: the first token is out, the request waits in the router for a decode seat)
has its lost causes too: once even the shortest decode iteration (one sequence, no KV) cannot bring its
second token by ``arrival + TTFT + TPOT``, it is a certain miss. It is never dropped, under either mode (it
has streamed a token): it is served after every attainable decode waiting, as ``serve`` does. Why: a router
that holds decodes (PolyServe, whose decode admission keeps each server within its tier's TPOT) served them
first come first served, so in a burst the late ones took the seats that freed up and made every request
queued behind them late too. Measured (Azure conversation, 32 x H100, disaggregated, 150 s probes, seed 0):
at 295 req/s, 2% over PolyServe's goodput rate then, attainment per tier fell to 58-76%, and with this rule it
is 93.6-100%; tail-bounded goodput went 289.8 -> 304.8 req/s (``polyserve goodput --policy polyserve --mode
disaggregated --duration 150 --warmup 50 --overload shed --seed 0``). The baselines never hold a decode (they
always place it at once), so for them the rule never fires; it is the driver's, like the rest of the contract.

Pure and clock-free like the rest of ``policy/``: ``now`` comes in as an argument.
"""

from __future__ import annotations

from dataclasses import dataclass

from polyserve.core.errors import ConfigError
from polyserve.core.fleet import IterationTimeModel, Phase, RequestInfo
from polyserve.policy.cost import LinearCost, fit_cost

OVERLOAD_MODES: tuple[str, ...] = ("serve", "shed")
LOST_REASON = "TTFT deadline can no longer be met"


def check_overload_mode(mode: str) -> str:
    if mode not in OVERLOAD_MODES:
        raise ConfigError(f"overload must be one of {', '.join(OVERLOAD_MODES)}, got {mode!r}")
    return mode


@dataclass
class LostCauseTest:
    """``lost(prompt, ttft_deadline, now)``: can this request's first token still be on time?

    Built once per (model, token budget); each call is a few flops.
    """

    model: IterationTimeModel
    max_num_seqs: int = 256
    max_num_batched_tokens: int = 8192
    _cost: LinearCost | None = None
    _min_decode: float | None = None

    @property
    def cost(self) -> LinearCost:
        if self._cost is None:
            self._cost = fit_cost(self.model, self.max_num_seqs, self.max_num_batched_tokens)
        return self._cost

    def min_first_token_s(self, input_tokens: int) -> float:
        """The fastest possible first token: the prompt prefilled alone on an idle server."""
        return self.cost.prefill_seconds(input_tokens, self.max_num_batched_tokens)

    def lost(self, input_tokens: int, ttft_deadline: float, now: float) -> bool:
        return now + self.min_first_token_s(input_tokens) > ttft_deadline

    @property
    def min_decode_s(self) -> float:
        """The shortest decode iteration: one sequence, no KV, no prefill (the latency model's own)."""
        if self._min_decode is None:
            self._min_decode = self.model.iteration_time(1, 0, 0)
        return self._min_decode

    def lost_info(self, req: RequestInfo, now: float, phase: Phase) -> bool:
        """The router-side form: the first token (``mixed``, ``prefill``), or, in the ``decode`` phase (the first
        token is out), the second, due at ``arrival + TTFT + TPOT``."""
        if phase == "decode":
            return now + self.min_decode_s > req.token_deadline(2)
        return self.lost(req.input_tokens, req.ttft_deadline, now)
