"""The gateway's OpenAPI document (``GET /openapi.json``): what a client, or a schema-driven fuzzer, may send.

Hand-written rather than generated (the gateway is a plain ASGI app, no framework models): the request bodies
list the fields the gateway reads and checks (the rest of OpenAI's fields pass through to the engine), the
headers its SLO extension reads, and every error answer in OpenAI's shape. A test keeps it in step with the
routes the app serves.
"""

from __future__ import annotations

from typing import Any

_ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {"error": {"type": "object", "required": ["message", "type", "code"], "properties": {
        "message": {"type": "string"}, "type": {"type": "string"}, "param": {"type": ["string", "null"]},
        "code": {"type": "integer"}}}},
}
_JSON_ERROR = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
_ERRORS = {str(c): {"description": d, "content": _JSON_ERROR}
           for c, d in ((400, "bad body, field or header"), (401, "missing or unknown API key"),
                        (403, "tier not allowed for this key"), (404, "unknown model"),
                        (408, "request head or body not received in time"),
                        (413, "body over the size limit"), (429, "shed: the TTFT deadline can no longer be met"),
                        (502, "backend failure"), (503, "no backend is up, or too many requests waiting"),
                        (504, "backend timeout"))}
_SLO_HEADERS = [
    {"name": "x-slo-ttft-ms", "in": "header", "schema": {"type": "number", "exclusiveMinimum": 0},
     "description": "the client's own TTFT SLO (ms); default: the tier's"},
    {"name": "x-slo-tpot-ms", "in": "header", "schema": {"type": "number", "exclusiveMinimum": 0},
     "description": "the TPOT needed (ms): the loosest tier at least that tight"},
    {"name": "x-polyserve-tier", "in": "header", "schema": {"type": "string"}, "description": "a tier by name"},
]
_COMMON = {
    "model": {"type": "string"}, "max_tokens": {"type": "integer", "minimum": 1},
    "stream": {"type": "boolean"}, "n": {"type": "integer", "enum": [1]},
    "stream_options": {"type": "object", "properties": {"include_usage": {"type": "boolean"}}},
    "priority": {"type": "integer"},
}


def openapi(model: str, tiers: list[str]) -> dict[str, Any]:
    def gen(body: dict[str, Any], summary: str) -> dict[str, Any]:
        return {"post": {
            "summary": summary, "parameters": _SLO_HEADERS,
            "requestBody": {"required": True, "content": {"application/json": {"schema": body}}},
            "responses": {"200": {"description": "the completion (JSON), or a stream of SSE events ending in "
                                                 "`data: [DONE]` with `stream: true`"}, **_ERRORS},
        }}

    completion = {"type": "object", "required": ["prompt"], "properties": {
        **_COMMON, "prompt": {"description": "one prompt, or a batch of up to 256 (one choice per prompt, `index` "
                                             "its position)",
                              "oneOf": [{"type": "string"},
                                        {"type": "array", "minItems": 1, "items": {"type": "integer"}},
                                        {"type": "array", "minItems": 1, "maxItems": 256, "items": {"type": "string"}},
                                        {"type": "array", "minItems": 1, "maxItems": 256, "items": {
                                            "type": "array", "minItems": 1, "items": {"type": "integer"}}}]}}}
    chat = {"type": "object", "required": ["messages"], "properties": {
        **_COMMON, "max_completion_tokens": {"type": "integer", "minimum": 1},
        "messages": {"type": "array", "minItems": 1, "items": {"type": "object", "required": ["role"],
                                                               "properties": {"role": {"type": "string"}}}}}}
    return {
        "openapi": "3.1.0",
        "info": {"title": "PolyServe gateway", "version": "1",
                 "description": f"OpenAI-compatible, multi-SLO; serves `{model}`; tiers {', '.join(tiers)}"},
        "paths": {
            "/v1/completions": gen(completion, "text completion"),
            "/v1/chat/completions": gen(chat, "chat completion"),
            "/v1/models": {"get": {"summary": "the served model", "responses": {"200": {"description": "list"}}}},
            "/v1/models/{id}": {"get": {"summary": "one model", "parameters": [
                {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}],
                "responses": {"200": {"description": "the model"}, "404": _ERRORS["404"]}}},
            "/health": {"get": {"summary": "200 while a backend is up, else 503",
                                "responses": {"200": {"description": "ok"}, "503": {"description": "down"}}}},
            "/metrics": {"get": {"summary": "Prometheus metrics", "responses": {"200": {"description": "text"}}}},
            "/openapi.json": {"get": {"summary": "this document", "responses": {"200": {"description": "json"}}}},
        },
        "components": {"schemas": {"Error": _ERROR}},
    }
