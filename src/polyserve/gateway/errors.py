"""``GatewayError``: a request the gateway refuses, as an HTTP status with an OpenAI-style body.

The body is the one vLLM (and the emulated engine) writes, ``{"error": {"message", "type", "param",
"code"}}`` with ``code`` the HTTP status, so a client written for vLLM reads the gateway's errors the same way.
``retry_after`` (seconds) becomes a ``Retry-After`` header: overload answers (429, 503) always carry one;
``close`` adds ``connection: close`` (an answer sent before the body was read: 408, 413).
"""

from __future__ import annotations

import json

TYPES = {
    400: "BadRequestError",
    401: "AuthenticationError",
    403: "PermissionDeniedError",
    404: "NotFoundError",
    405: "MethodNotAllowedError",
    408: "RequestTimeoutError",
    413: "RequestTooLargeError",
    429: "RateLimitError",
    500: "InternalServerError",
    502: "BadGatewayError",
    503: "ServiceUnavailableError",
    504: "GatewayTimeoutError",
}


def error_body(status: int, message: str, param: str | None = None) -> dict[str, object]:
    return {"error": {"message": message, "type": TYPES.get(status, "Error"), "param": param, "code": status}}


def error_bytes(status: int, message: str, param: str | None = None) -> bytes:
    return json.dumps(error_body(status, message, param)).encode()


class GatewayError(Exception):
    """Refuse the request with ``status``. Raised before any byte of the response is sent."""

    def __init__(self, status: int, message: str, param: str | None = None, retry_after: float | None = None,
                 *, close: bool = False) -> None:  # fmt: skip
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.retry_after = retry_after
        self.close = close  # close the connection after the answer (the request was not read to its end)

    def body(self) -> bytes:
        return error_bytes(self.status, self.message, self.param)
