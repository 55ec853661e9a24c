"""The OpenAI request fields the emulated engine reads, checked; and the response bodies it writes.

Parsing is by hand rather than by pydantic models so every problem becomes one OpenAI-style 400 that names
the field (``{"error": {"message", "type", "code", "param"}}``), never FastAPI's 422. Fields the engine has no
use for (``temperature``, ``ignore_eos``, ``top_p``, ...) are accepted and ignored, as a real server would not
reject a benchmark for sending them. ``priority`` (vLLM's field, an int; lower = sooner) is accepted and used
only with ``--scheduling-policy priority``.

PolyServe's extension: the request's own token deadlines, so an engine can schedule by them
(``--scheduling-policy deadline``), as the body field ``"polyserve_slo": {"ttft_ms": T, "tpot_ms": P}`` or the
header ``x-polyserve-slo: ttft_ms=T;tpot_ms=P`` (the field wins when both are sent). ``T`` is the time left,
from when the engine receives the request, until the first token is due (it may be <= 0: already late);
``P`` > 0 the gap allowed between tokens, so token ``k`` is due at ``receipt + T + (k-1)*P``. Both are
wall-clock milliseconds: relative times need no clock shared between gateway and engine. An engine not
scheduling by deadline accepts and ignores them.

Disaggregated hand-off (``"polyserve_kv": {"prefilled": true}``, emulated engines only): the prompt was
prefilled, and the first token produced, on another engine; this one receives the KV (emulated: it waits the
transfer time of ``prompt + 1`` tokens over its ``--kv-link-gbps``), then decodes tokens 2..``max_tokens``.
Its stream carries those tokens only (no chat role chunk); ``usage.completion_tokens`` counts the first too.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass

from polyserve.serving.text import count_words, prompt_tokens


class RequestError(Exception):
    """A request the engine refuses: HTTP ``status`` with an OpenAI-style error body."""

    TYPES = {400: "BadRequestError", 404: "NotFoundError", 500: "InternalServerError"}

    def __init__(self, status: int, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param

    def body(self) -> dict[str, object]:
        return error_body(self.status, self.message, self.param)


def error_body(status: int, message: str, param: str | None = None) -> dict[str, object]:
    return {
        "error": {
            "message": message,
            "type": RequestError.TYPES.get(status, "Error"),
            "param": param,
            "code": status,
        }
    }


@dataclass(frozen=True)
class GenerationRequest:
    """What the engine needs from a /v1/completions or /v1/chat/completions body."""

    chat: bool
    model: str | None
    prompt_tokens: int
    max_tokens: int | None  # None: the engine's --default-output-len
    stream: bool
    include_usage: bool
    priority: int
    slo: RequestSlo | None = None  # the polyserve_slo extension field
    prefilled: bool = False  # polyserve_kv.prefilled: the first token came from a prefill engine
    # /v1/completions with a list of prompts: each one's token count (vLLM/OpenAI: one choice per prompt,
    # ``index`` its position); None for one prompt. ``prompt_tokens`` is then the longest.
    batch: tuple[int, ...] | None = None
    # a hand-off's response identity (polyserve_kv.id/created): the decode leg continues the prefill's response
    response_id: str | None = None
    created: int | None = None


KV_FIELD = "polyserve_kv"


SLO_FIELD = "polyserve_slo"
SLO_HEADER = "x-polyserve-slo"


@dataclass(frozen=True)
class RequestSlo:
    """A request's token deadlines relative to its receipt: token k is due ``ttft_ms + (k-1)*tpot_ms`` later."""

    ttft_ms: float
    tpot_ms: float


def _slo_values(get, where: str) -> RequestSlo:
    vals: dict[str, float] = {}
    for key in ("ttft_ms", "tpot_ms"):
        v = get(key)
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
            raise RequestError(400, f"{where}: '{key}' must be a finite number of milliseconds, got {json.dumps(v)}",
                               SLO_FIELD)
        vals[key] = float(v)
    if vals["tpot_ms"] <= 0:
        raise RequestError(400, f"{where}: 'tpot_ms' must be > 0, got {vals['tpot_ms']:g}", SLO_FIELD)
    return RequestSlo(vals["ttft_ms"], vals["tpot_ms"])


def parse_slo(body: Mapping[str, object], headers: Mapping[str, str] | None = None) -> RequestSlo | None:
    """The request's deadlines from the ``polyserve_slo`` body field, else the ``x-polyserve-slo`` header
    (``ttft_ms=T;tpot_ms=P``); None if neither. A malformed one is a 400 naming it."""
    v = body.get(SLO_FIELD)
    if v is not None:
        if not isinstance(v, dict):
            raise RequestError(400, f"'{SLO_FIELD}' must be an object {{\"ttft_ms\": .., \"tpot_ms\": ..}}, "
                               f"got {json.dumps(v)}", SLO_FIELD)
        return _slo_values(v.get, f"'{SLO_FIELD}'")
    raw = (headers or {}).get(SLO_HEADER)
    if raw is None:
        return None
    parts: dict[str, float] = {}
    for item in raw.split(";"):
        k, sep, val = item.partition("=")
        if not sep:
            raise RequestError(400, f"header {SLO_HEADER}: expected 'ttft_ms=T;tpot_ms=P', got {raw!r}", SLO_FIELD)
        try:
            parts[k.strip()] = float(val)
        except ValueError:
            raise RequestError(400, f"header {SLO_HEADER}: {k.strip()}={val.strip()!r} is not a number",
                               SLO_FIELD) from None
    return _slo_values(parts.get, f"header {SLO_HEADER}")


MAX_JSON_DEPTH = 32  # nesting levels a request body may have (OpenAI's own bodies need about 6)


def parse_json(raw: bytes) -> dict[str, object]:
    """The body as a JSON object, or a 400 naming what is wrong. Nesting deeper than ``MAX_JSON_DEPTH`` is
    refused here, in the gateway and in the engine alike, so a body one parser accepts can never overflow the
    other's stack (the gateway would blame the engine for it)."""
    try:
        body = json.loads(raw)
    except RecursionError:
        raise RequestError(400, f"request body is nested deeper than {MAX_JSON_DEPTH} levels") from None
    except (ValueError, UnicodeDecodeError) as e:
        raise RequestError(400, f"request body is not valid JSON: {e}") from None
    if not isinstance(body, dict):
        raise RequestError(400, f"request body must be a JSON object, got {type(body).__name__}")
    # every level opens a bracket, so a body with few brackets (nearly all: about 6 levels) needs no walk
    if raw.count(b"{") + raw.count(b"[") > MAX_JSON_DEPTH and _depth(body) > MAX_JSON_DEPTH:
        raise RequestError(400, f"request body is nested deeper than {MAX_JSON_DEPTH} levels")
    return body


def _depth(doc: object) -> int:
    """Nesting depth of a parsed document, without recursion (a deep one must not overflow the stack here)."""
    deepest = 0
    stack: list[tuple[object, int]] = [(doc, 1)]
    while stack:
        x, d = stack.pop()
        if d > deepest:
            deepest = d
            if d > MAX_JSON_DEPTH:
                return d
        if isinstance(x, dict):
            stack.extend((v, d + 1) for v in x.values() if isinstance(v, dict | list))
        elif isinstance(x, list):
            stack.extend((v, d + 1) for v in x if isinstance(v, dict | list))
    return deepest


def _int_field(body: dict[str, object], name: str, *, minimum: int) -> int | None:
    v = body.get(name)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int):
        raise RequestError(400, f"'{name}' must be an integer, got {json.dumps(v)}", name)
    if v < minimum:
        raise RequestError(400, f"'{name}' must be >= {minimum}, got {v}", name)
    return v


def _bool_field(body: dict[str, object], name: str) -> bool:
    v = body.get(name, False)
    if v is None:
        return False
    if not isinstance(v, bool):
        raise RequestError(400, f"'{name}' must be true or false, got {json.dumps(v)}", name)
    return v


def _common(body: dict[str, object], chat: bool, words: int, batch: tuple[int, ...] | None = None
            ) -> GenerationRequest:  # fmt: skip
    model = body.get("model")
    if model is not None and not isinstance(model, str):
        raise RequestError(400, f"'model' must be a string, got {json.dumps(model)}", "model")
    max_tokens = _int_field(body, "max_tokens", minimum=1)
    if chat:
        mct = _int_field(body, "max_completion_tokens", minimum=1)
        if mct is not None:
            max_tokens = mct
    n = _int_field(body, "n", minimum=1)
    if n is not None and n != 1:
        raise RequestError(400, f"'n' > 1 is not supported by the emulated engine (got {n})", "n")
    stream = _bool_field(body, "stream")
    include_usage = False
    so = body.get("stream_options")
    if so is not None:
        if not isinstance(so, dict):
            raise RequestError(400, "'stream_options' must be an object", "stream_options")
        if not stream:
            raise RequestError(400, "'stream_options' is only allowed with 'stream': true", "stream_options")
        include_usage = _bool_field(so, "include_usage")
    priority = body.get("priority", 0)
    if priority is None:
        priority = 0
    if isinstance(priority, bool) or not isinstance(priority, int):
        raise RequestError(400, f"'priority' must be an integer, got {json.dumps(priority)}", "priority")
    prefilled, rid, created = _handoff(body)
    return GenerationRequest(chat, model, prompt_tokens(words), max_tokens, stream, include_usage, priority,
                             parse_slo(body), prefilled, batch, rid, created)


def _handoff(body: Mapping[str, object]) -> tuple[bool, str | None, int | None]:
    """``polyserve_kv``: ``{"prefilled": bool, "id": str, "created": int}`` (id and created optional: the
    response's identity, so a hand-off's tokens carry the same ``id`` and ``created`` as its first token)."""
    v = body.get(KV_FIELD)
    if v is None:
        return False, None, None
    if (not isinstance(v, dict) or set(v) - {"prefilled", "id", "created"}
            or not isinstance(v.get("prefilled", False), bool) or not isinstance(v.get("id", ""), str)
            or isinstance(v.get("created"), bool) or not isinstance(v.get("created", 0), int)):
        raise RequestError(400, f"'{KV_FIELD}' must be {{\"prefilled\": true|false, \"id\": string, \"created\": "
                           f"integer}} (id and created optional), got {json.dumps(v)}", KV_FIELD)
    return bool(v.get("prefilled", False)), v.get("id"), v.get("created")  # type: ignore[return-value]


MAX_BATCH = 256  # prompts in one /v1/completions request


def _prompt_words(p: object) -> int | None:
    """Words (tokens) of one prompt: a string, or a non-empty list of token ids; None if it is neither."""
    if isinstance(p, str):
        return count_words(p)
    if isinstance(p, list) and p and all(isinstance(x, int) and not isinstance(x, bool) for x in p):
        return len(p)
    return None


def parse_completion(body: dict[str, object]) -> GenerationRequest:
    """``prompt``: a string, a list of token ids, or a list of several of either (a batch: one choice per
    prompt, in order, as vLLM answers it; at most ``MAX_BATCH``)."""
    if "prompt" not in body:
        raise RequestError(400, "'prompt' is required", "prompt")
    p = body["prompt"]
    words = _prompt_words(p)
    if words is not None:
        return _common(body, False, words)
    if not isinstance(p, list) or not p:
        raise RequestError(400, "'prompt' must be a string, a list of token ids, or a non-empty list of either",
                           "prompt")
    if len(p) > MAX_BATCH:
        raise RequestError(400, f"'prompt': at most {MAX_BATCH} prompts in one request, got {len(p)}", "prompt")
    counts = []
    for i, x in enumerate(p):
        w = _prompt_words(x)
        if w is None:
            raise RequestError(400, f"prompt[{i}] must be a string or a non-empty list of token ids", "prompt")
        counts.append(prompt_tokens(w))
    if len(counts) == 1:
        return _common(body, False, counts[0])
    if any(isinstance(x, str) for x in p) and not all(isinstance(x, str) for x in p):
        raise RequestError(400, "'prompt': a list mixes strings and token-id lists; use one kind", "prompt")
    return _common(body, False, max(counts), tuple(counts))


def parse_chat(body: dict[str, object]) -> GenerationRequest:
    """``messages``: a non-empty list of ``{role, content}``; content a string or a list of text parts."""
    msgs = body.get("messages")
    if not isinstance(msgs, list) or not msgs:
        raise RequestError(400, "'messages' must be a non-empty list of {role, content} objects", "messages")
    words = 0
    for i, m in enumerate(msgs):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str):
            raise RequestError(400, f"messages[{i}] must be an object with a string 'role'", "messages")
        c = m.get("content")
        if c is None:
            continue
        if isinstance(c, str):
            words += count_words(c)
        elif isinstance(c, list):
            for part in c:
                if isinstance(part, dict) and isinstance(part.get("text"), str):
                    words += count_words(part["text"])
        else:
            raise RequestError(400, f"messages[{i}].content must be a string or a list of parts", "messages")
    return _common(body, True, words)


# ---- responses --------------------------------------------------------------------------------------------
def usage(prompt: int, completion: int) -> dict[str, int]:
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


class ChunkWriter:
    """SSE chunks of one streamed response in OpenAI's format, from string templates (cheap per token)."""

    def __init__(self, chat: bool, rid: str, created: int, model: str, include_usage: bool, index: int = 0) -> None:
        self.chat = chat
        obj = "chat.completion.chunk" if chat else "text_completion"
        head = (
            f'data: {{"id":{json.dumps(rid)},"object":"{obj}","created":{created},'
            f'"model":{json.dumps(model)},"choices":[{{"index":{index},'
        )
        self._head = head
        self._tail_usage = ',"usage":null' if include_usage else ""
        self._obj = obj
        self._rid = rid
        self._created = created
        self._model = model

    def role(self) -> str:
        """Chat only: the first chunk, naming the assistant role (vLLM sends it before the first token)."""
        return (
            self._head
            + '"delta":{"role":"assistant","content":""},"logprobs":null,"finish_reason":null}]'
            + self._tail_usage
            + "}\n\n"
        )

    def token(self, text: str, last: bool) -> str:
        fin = '"length"' if last else "null"
        body = f'"delta":{{"content":{json.dumps(text)}}}' if self.chat else f'"text":{json.dumps(text)}'
        return self._head + body + f',"logprobs":null,"finish_reason":{fin}}}]' + self._tail_usage + "}\n\n"

    def usage(self, prompt: int, completion: int) -> str:
        doc = {
            "id": self._rid,
            "object": self._obj,
            "created": self._created,
            "model": self._model,
            "choices": [],
            "usage": usage(prompt, completion),
        }
        return "data: " + json.dumps(doc, separators=(",", ":")) + "\n\n"

    @staticmethod
    def done() -> str:
        return "data: [DONE]\n\n"


def full_response(
    chat: bool, rid: str, created: int, model: str, text: str, prompt: int, completion: int, choices: int = 1
) -> dict[str, object]:
    """The whole response; ``choices`` > 1: a batch of that many prompts, each answered ``text`` (``prompt``
    and ``completion`` are then the batch's totals)."""
    if chat:
        choice: dict[str, object] = {
            "index": 0,
            "message": {"role": "assistant", "content": text},
            "logprobs": None,
            "finish_reason": "length",
        }
        obj = "chat.completion"
    else:
        choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": "length"}
        obj = "text_completion"
    return {
        "id": rid,
        "object": obj,
        "created": created,
        "model": model,
        "choices": [{**choice, "index": i} for i in range(choices)] if choices > 1 else [choice],
        "usage": usage(prompt, completion),
    }
