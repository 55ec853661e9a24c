"""The router's cost surrogates (``policy/cost.py``): the prefill envelope is never below the latency model."""

from __future__ import annotations

import pytest

from polyserve.latency.hardware import get_deployment
from polyserve.latency.linear import blis_linear_model
from polyserve.latency.roofline import RooflineLatencyModel
from polyserve.policy.cost import fit_cost, fit_prefill_envelope


@pytest.mark.parametrize("chunk", [512, 2048, 8192])
@pytest.mark.parametrize(
    ("model", "gpu", "tp"), [("llama-3.1-8b", "h100", 1), ("llama-3.1-8b", "a100", 1), ("qwen2.5-7b", "h200", 1),
                             ("llama-3.1-70b", "h100", 4)],
)
def test_prefill_envelope_is_never_below_the_roofline_model_and_exact_at_one_token_and_a_full_chunk(
    model, gpu, tp, chunk
):
    """Every prefill-only iteration of 1..chunk tokens (every 7th, and both ends) takes at most what the
    envelope predicts, and the envelope is the model at 1 token and a full chunk (the roofline is convex,
    so its chord bounds it); ``max_rel_error`` is its worst overestimate. The least-squares surrogate, by
    contrast, underestimates some sizes: the envelope is a margin the fit lacks."""
    m = RooflineLatencyModel(get_deployment(model, gpu, tp))
    env = fit_prefill_envelope(m, chunk)
    assert (env.b2, env.b3) == (0.0, 0.0)
    sizes = sorted({1, chunk, *range(1, chunk + 1, 7)})
    over = 0.0
    for p in sizes:
        y = m.iteration_time(0, 0, p)
        assert env.iteration(0, 0, p) >= y * (1 - 1e-12), p
        over = max(over, env.iteration(0, 0, p) / y - 1)
    for p in (1, chunk):
        assert env.iteration(0, 0, p) == pytest.approx(m.iteration_time(0, 0, p), rel=1e-9)
    assert env.max_rel_error <= over + 1e-12
    ls = fit_cost(m, 256, chunk)
    assert any(ls.iteration(0, 0, p) < m.iteration_time(0, 0, p) for p in sizes)


def test_prefill_envelope_of_the_linear_model_is_the_model():
    """For the BLIS linear model the envelope is its own ``b0`` and ``b1`` (no margin, no overestimate), so
    admission under the default latency model is unchanged by the envelope."""
    m = blis_linear_model(get_deployment("llama-3.1-8b", "h100"))
    env = fit_prefill_envelope(m, 8192)
    assert env.b0 == pytest.approx(m.b0, rel=1e-9) and env.b1 == pytest.approx(m.b1, rel=1e-9)
    assert env.max_rel_error == pytest.approx(0.0, abs=1e-9)
    assert env.prefill_seconds(20_000, 8192) == pytest.approx(fit_cost(m).prefill_seconds(20_000, 8192), rel=1e-9)


class _Concave:
    """A prefill cost that saturates (concave in tokens), so its chord lies below it in the middle."""

    def iteration_time(self, num_decode: int, kv_tokens: int, prefill_tokens: int) -> float:
        return 0.005 + 0.02 * (prefill_tokens / 8192) ** 0.5


def test_prefill_envelope_of_a_concave_model_is_scaled_up_to_cover_its_grid():
    """Where the model is not convex the chord alone falls below it; the envelope scales the chord up by the
    worst ratio on its grid, so it is at least the model at every grid size (and strictly above the chord)."""
    m = _Concave()
    env = fit_prefill_envelope(m, 8192)
    for p in (1, 16, 64, 256, 512, 1024, 2048, 4096, 6144, 8192):
        assert env.iteration(0, 0, p) >= m.iteration_time(0, 0, p) * (1 - 1e-12), p
    chord_1 = m.iteration_time(0, 0, 1)
    assert env.iteration(0, 0, 1) > chord_1
