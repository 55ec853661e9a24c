"""The router's linear cost surrogate (``policy/cost.py``): the inverse it offers agrees with the forward."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from polyserve.policy.cost import LinearCost


@given(
    b0=st.one_of(st.just(0.0), st.floats(1e-5, 0.02)),
    b1=st.one_of(st.just(0.0), st.floats(1e-7, 1e-4)),
    chunk=st.sampled_from([1, 16, 512, 2048, 8192]),
    seconds=st.floats(-0.5, 5.0),
)
def test_prefill_tokens_within_is_the_largest_prompt_prefill_seconds_fits(b0, b1, chunk, seconds):
    """``prefill_tokens_within(s)`` is -1 for a negative budget, else the largest ``T`` whose
    ``prefill_seconds(T)`` is at most ``s`` (``T + 1`` is over it), so a test on tokens decides as the test
    on seconds would."""
    c = LinearCost(b0, b1, 0.0, 0.0)
    t = c.prefill_tokens_within(seconds, chunk)
    if seconds < 0:
        assert t == -1
        return
    if b0 == 0.0 and b1 == 0.0:
        assert t >= 1 << 62  # free prefill: no prompt is too long
        return
    assert t >= 0
    assert c.prefill_seconds(t, chunk) <= seconds < c.prefill_seconds(t + 1, chunk)
