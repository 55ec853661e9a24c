"""Request parsing shared by the gateway and the engine: the nesting limit holds exactly, whatever shortcut
``parse_json`` takes (it skips the walk when the body has too few brackets to be that deep)."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from polyserve.serving.openai import MAX_JSON_DEPTH, RequestError, _depth, parse_json


def nested(depth: int, inner: object = 1) -> object:
    doc: object = inner
    for i in range(depth):
        doc = [doc] if i % 2 else {"k": doc}
    return doc


@given(st.integers(1, MAX_JSON_DEPTH + 3), st.text(alphabet="[]{}ab\"\\", max_size=40), st.booleans())
@settings(max_examples=200, deadline=None)
def test_a_body_is_refused_exactly_when_it_is_nested_deeper_than_the_limit(depth, text, spread) -> None:
    """Brackets inside strings count in the shortcut but not in the depth: they must never decide."""
    body = {"prompt": text, "a": nested(depth - 1, text)} if depth > 1 else {"prompt": text}
    if spread:  # many shallow brackets: past the shortcut's count, the walk decides
        body["b"] = [[1] for _ in range(MAX_JSON_DEPTH)]
    raw = json.dumps(body).encode()
    deep = _depth(body) > MAX_JSON_DEPTH
    if deep:
        with pytest.raises(RequestError, match=f"deeper than {MAX_JSON_DEPTH} levels"):
            parse_json(raw)
    else:
        assert parse_json(raw) == body


def test_the_limit_is_inclusive() -> None:
    ok = {"a": nested(MAX_JSON_DEPTH - 1)}
    assert _depth(ok) == MAX_JSON_DEPTH and parse_json(json.dumps(ok).encode()) == ok
    with pytest.raises(RequestError):
        parse_json(json.dumps({"a": nested(MAX_JSON_DEPTH)}).encode())
