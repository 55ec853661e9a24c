"""``StreamingASGITransport``: call an ASGI app in-process with httpx, with real streaming and disconnects.

httpx's own ``ASGITransport`` runs the app to completion and buffers the whole body before returning, so a
client cannot see tokens as they are produced, and closing a response early never reaches the app. This
transport runs the app as a task and hands body chunks to the client as the app sends them. Closing the
response (``aclose()``, leaving ``client.stream(...)``) delivers ``http.disconnect`` to the app, as a socket
close would; so does cancelling the request before its response starts. An app that fails after the response
started (or returns without finishing the body) makes the client's read raise ``httpx.RemoteProtocolError``,
as a dropped connection does; one that fails before starting raises its exception to the caller (like
``ASGITransport(raise_app_exceptions=True)``).

It is what lets the bench client, the gateway and the emulated engine meet in tests without sockets.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx

_END = object()


class _BodyStream(httpx.AsyncByteStream):
    def __init__(
        self, queue: asyncio.Queue[Any], task: asyncio.Task[None], disconnect: asyncio.Event
    ) -> None:
        self._queue = queue
        self._task = task
        self._disconnect = disconnect

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while True:
            item = await self._queue.get()
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise httpx.RemoteProtocolError(
                    f"peer closed connection without sending complete message body ({item!r})"
                )
            yield item

    async def aclose(self) -> None:
        self._disconnect.set()
        if not self._task.done():
            done, _ = await asyncio.wait({self._task}, timeout=2.0)
            if not done:
                self._task.cancel()


class StreamingASGITransport(httpx.AsyncBaseTransport):
    """In-process transport to ``app`` (any ASGI 3 app); spec version 2.3, as uvicorn reports."""

    def __init__(self, app: Any, client: tuple[str, int] = ("127.0.0.1", 50000)) -> None:
        self.app = app
        self.client = client

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        body = await request.aread()
        scope = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": "1.1",
            "method": request.method,
            "headers": [(k.lower(), v) for k, v in request.headers.raw],
            "scheme": request.url.scheme,
            "path": request.url.path,
            "raw_path": request.url.raw_path.split(b"?")[0],
            "query_string": request.url.query,
            "server": (request.url.host, request.url.port or 80),
            "client": self.client,
            "root_path": "",
            "state": {},
        }
        queue: asyncio.Queue[Any] = asyncio.Queue()
        started = asyncio.Event()
        disconnect = asyncio.Event()
        status: list[int] = []
        headers: list[tuple[bytes, bytes]] = []
        finished = False
        body_sent = False

        async def receive() -> dict[str, Any]:
            nonlocal body_sent
            if not body_sent:
                body_sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            await disconnect.wait()
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            nonlocal finished
            if disconnect.is_set():
                raise OSError("client disconnected")
            if message["type"] == "http.response.start":
                status.append(message["status"])
                headers.extend(message.get("headers", []))
                started.set()
            elif message["type"] == "http.response.body":
                chunk = message.get("body", b"")
                if chunk:
                    queue.put_nowait(bytes(chunk))
                if not message.get("more_body", False):
                    finished = True
                    queue.put_nowait(_END)

        async def run() -> None:
            try:
                await self.app(scope, receive, send)
            except BaseException as e:
                if not started.is_set():
                    queue.put_nowait(e)
                    started.set()
                    return
                if not finished:
                    queue.put_nowait(e)
                if not isinstance(e, Exception):
                    raise
                return
            if not started.is_set():
                queue.put_nowait(RuntimeError("ASGI app returned without starting a response"))
                started.set()
            elif not finished:
                queue.put_nowait(ConnectionResetError("ASGI app returned without finishing the response"))

        task = asyncio.ensure_future(run())
        try:
            await started.wait()
        except asyncio.CancelledError:  # the caller gave up before the response started: a disconnect
            disconnect.set()
            raise
        if not status:
            exc = queue.get_nowait()
            raise exc
        return httpx.Response(
            status[0], headers=headers, stream=_BodyStream(queue, task, disconnect), request=request
        )
