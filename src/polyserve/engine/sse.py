"""``SSEResponse``: a streaming response that always notices a client going away, and cleans up after itself.

Starlette's ``StreamingResponse`` notices a disconnect only when it next writes (ASGI spec >= 2.4), so a
stream that is stalled (queued, or preempted) would keep its request in the engine until its next token.
This response listens for ``http.disconnect`` while it streams, whatever the server's spec version, cancels
the stream at once, and runs ``on_close`` however it ends (finished, disconnected, crashed, or cancelled
before it started), so the engine can always abort the request.

``InjectedCrash`` raised by the stream (``--crash-mid-stream``) drops the connection without ending the body:
``CrashMiddleware`` swallows it so the server just closes the socket (a client sees an incomplete chunked
body), without a traceback in the log.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import anyio
from starlette.responses import StreamingResponse
from starlette.types import ASGIApp, Receive, Scope, Send


class InjectedCrash(Exception):
    """Raised inside a stream to drop its connection on purpose (failure injection)."""


class SSEResponse(StreamingResponse):
    def __init__(
        self, content: AsyncIterator[str], on_close: Callable[[], None], headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(content, media_type="text/event-stream", headers=headers)
        self._on_close = on_close

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            try:
                async with anyio.create_task_group() as tg:

                    async def pump() -> None:
                        await self.stream_response(send)
                        tg.cancel_scope.cancel()

                    tg.start_soon(pump)
                    await self.listen_for_disconnect(receive)
                    tg.cancel_scope.cancel()
            except BaseExceptionGroup as eg:
                if len(eg.exceptions) == 1:
                    raise eg.exceptions[0] from None
                raise
        finally:
            self._on_close()


class CrashMiddleware:
    """Turns ``InjectedCrash`` into a dropped connection (the app returns with the body unfinished)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await self.app(scope, receive, send)
        except InjectedCrash:
            return
