"""The shape limits of a request, checked before any route reads it.

uvicorn (httptools) takes header fields and bodies of any size, so a 1 MB
`Authorization` header or a 50 MB JSON body reached the application whole. This ASGI
middleware refuses, with a GraphQL error response (`schema.graphql_http`):

- any header field (name and value) above `max_header_bytes`, or all of them together
  above `MAX_HEADER_FIELDS_FACTOR` times that: 431, TOO_LARGE (a WebSocket handshake
  is refused, 403, before it is accepted);
- a query string above `max_body_bytes`: 414, TOO_LARGE;
- on the body-limited paths (/graphql: the upload routes have their own limits), a body
  whose `Content-Length` says more than `max_body_bytes` (at once, nothing read), or
  that turns out longer while it is read (chunked): 413, TOO_LARGE. A body within the
  limit is read here, whole, and handed to the route as it came;
- on those paths, a body not all in within `body_timeout_seconds` of the request's head
  (a client sending a byte a second would hold its connection and a task for as long
  as it likes): 408, INVALID_INPUT.

An answer given before the body was read to its end says `Connection: close` (the
server would otherwise have to read and throw away what the client still sends); every
other refusal keeps the connection open.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from schema.graphql_http import GRAPHQL_PATH, http_error_response, negotiate

# Headers together may take this many times one field's limit (nginx: 4 buffers of 8 KB).
MAX_HEADER_FIELDS_FACTOR = 4


class RequestLimitsMiddleware:
    """Refuses requests whose headers, query string or body exceed their limits."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        max_body_bytes: int,
        max_header_bytes: int,
        body_timeout_seconds: float = 30.0,
        body_paths: Iterable[str] = (GRAPHQL_PATH,),
    ) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.max_header_bytes = max_header_bytes
        self.body_timeout_seconds = body_timeout_seconds
        self.body_paths = frozenset(body_paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        headers: list[tuple[bytes, bytes]] = scope["headers"]
        if self._headers_too_large(headers):
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": 1009})
                return
            await _refuse(scope, send, 431, "A request header field is too large.")
            return
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if len(scope.get("query_string", b"")) > self.max_body_bytes:
            await _refuse(scope, send, 414, "The query string is too large.")
            return
        if scope["path"] not in self.body_paths or not _has_body(headers):
            await self.app(scope, receive, send)
            return
        declared = _content_length(headers)
        if declared is not None and declared > self.max_body_bytes:
            await _refuse(scope, send, 413, self._too_large())
            return
        try:
            async with asyncio.timeout(self.body_timeout_seconds):
                body = await self._read_body(receive)
        except TimeoutError:
            await _refuse(scope, send, 408, self._too_slow())
            return
        if body is None:  # the client went away: nothing to answer
            return
        if len(body) > self.max_body_bytes:
            await _refuse(scope, send, 413, self._too_large())
            return
        await self.app(scope, _replay(body, receive), send)

    async def _read_body(self, receive: Receive) -> bytes | None:
        """The request's body, or its first part beyond `max_body_bytes` (read no
        further), or None when the client disconnected."""
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return None
            chunk = message.get("body", b"")
            size += len(chunk)
            chunks.append(chunk)
            if size > self.max_body_bytes or not message.get("more_body", False):
                return b"".join(chunks)

    def _headers_too_large(self, headers: list[tuple[bytes, bytes]]) -> bool:
        total = 0
        for name, value in headers:
            size = len(name) + len(value)
            if size > self.max_header_bytes:
                return True
            total += size
        return total > self.max_header_bytes * MAX_HEADER_FIELDS_FACTOR

    def _too_large(self) -> str:
        return f"The request body is larger than {self.max_body_bytes} bytes."

    def _too_slow(self) -> str:
        return f"The request body was not received within {self.body_timeout_seconds:g} seconds."


def _has_body(headers: list[tuple[bytes, bytes]]) -> bool:
    for name, value in headers:
        if name == b"transfer-encoding" or (name == b"content-length" and value.strip() != b"0"):
            return True
    return False


def _content_length(headers: list[tuple[bytes, bytes]]) -> int | None:
    for name, value in headers:
        if name == b"content-length":
            # uvicorn has refused a malformed one already; digits only, however long.
            digits = value.strip()
            return int(digits) if digits.isdigit() and len(digits) < 20 else 2**63
    return None


def _replay(body: bytes, receive: Receive) -> Receive:
    """The body read here, as one message, then whatever the client sends next (its
    disconnection)."""
    sent = False

    async def replayed() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replayed


async def _refuse(scope: Scope, send: Send, status: int, message: str) -> None:
    headers = dict(scope["headers"])
    accept = headers.get(b"accept", b"").decode("latin-1")
    extra = {"Connection": "close"} if _has_body(scope["headers"]) else None
    response = http_error_response(status, message, negotiate(accept), extra)

    async def no_body() -> Message:  # the response reads nothing from the request
        return {"type": "http.disconnect"}

    await response(scope, no_body, send)
