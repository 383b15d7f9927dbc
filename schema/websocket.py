"""The WebSocket transports of /graphql, hardened: Strawberry's graphql-transport-ws and
legacy graphql-ws handlers, with every client message checked before it is used, the
limits of a public API, and every failure answered the way the protocol says.

graphql-transport-ws (https://github.com/enisdenjo/graphql-ws/blob/master/PROTOCOL.md):

- A message of a type or shape the protocol does not define closes the socket with
  `4400` (the checks are those of the reference server's `validateMessage`, so what the
  reference client sends always passes). Strawberry would index into whatever JSON came,
  and `[1,2]`, `null` or a string payload ended in a TypeError and a socket dropped
  without a close frame; an integer id ran the operation.
- A document that does not parse or validate, or names no operation it holds, gets an
  `error` message with the GraphQL errors (`extensions.code` INVALID_INPUT, or
  QUERY_TOO_COMPLEX for a document over the token limit), as the protocol's `Error`
  message describes; the socket and its other subscriptions stay. Strawberry closed the
  socket for some of these and, for a syntax error caught by the parser cache, sent a
  bare `complete`. So does an operation refused before it runs (variables that do not
  coerce, a cost limit), which Strawberry sent as a `next`. (The refusals are made by
  `InstagraphSchema.stream` with `schema.streaming.pre_execution_guard`, for multipart
  HTTP too; here Strawberry's 4400 close for some of them is turned off.)
- A `subscribe` payload's `extensions` reach the schema (Strawberry drops them), so a
  persisted query (`extensions.persistedQuery`) is resolved and verified exactly as
  over HTTP: a hash alone runs a stored document, a hash that does not match the text is
  refused.
- Limits: `connection_init` within WS_INIT_TIMEOUT_SECONDS (else `4408`, Strawberry's);
  at most WS_MAX_OPERATIONS_PER_CONNECTION operations in flight on one socket (one more
  gets an `error` message, RATE_LIMITED, and the socket stays); at most
  WS_MAX_CONNECTIONS_PER_USER sockets per user, and WS_MAX_ANONYMOUS_CONNECTIONS_PER_ADDRESS
  anonymous sockets per client address, across every API process (one more is closed
  with `4429: Too many connections` before its `connection_ack`); operation ids of at
  most 256 characters; messages no larger than MAX_REQUEST_BODY_BYTES (uvicorn's
  `ws_max_size`, set by run.py: a larger one is closed with 1009).

Legacy graphql-ws (subscriptions-transport-ws): the same checks and limits, answered in
that protocol's words: `connection_error` for a message it cannot read (the socket
stays, as its protocol says), an `error` message for an operation it cannot run.

Connections are counted in Redis (`ConnectionLimiter`): a lease per socket, renewed
while it lives and expiring on its own, so a crashed process does not hold its users'
slots for longer than WS_CONNECTION_LEASE_SECONDS. A socket opened while Redis does not
answer is admitted, and counted from its first renewal that Redis answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncGenerator, Iterator, Mapping
from contextvars import ContextVar
from json import JSONDecodeError
from typing import Any, cast

import orjson
from graphql import GraphQLError
from redis.asyncio import Redis
from redis.exceptions import RedisError
from starlette.websockets import WebSocketDisconnect, WebSocketState
from strawberry.asgi import ASGIWebSocketAdapter
from strawberry.http.exceptions import (
    NonJsonMessageReceived,
    NonTextMessageReceived,
    WebSocketDisconnected,
)
from strawberry.schema import BaseSchema
from strawberry.schema.schema import StreamResult
from strawberry.subscriptions.protocols.graphql_transport_ws.handlers import (
    BaseGraphQLTransportWSHandler,
)
from strawberry.subscriptions.protocols.graphql_transport_ws.types import (
    ConnectionInitMessage,
    Message,
    SubscribeMessage,
)
from strawberry.subscriptions.protocols.graphql_ws.handlers import BaseGraphQLWSHandler
from strawberry.subscriptions.protocols.graphql_ws.types import (
    ConnectionInitMessage as LegacyConnectionInitMessage,
)
from strawberry.subscriptions.protocols.graphql_ws.types import (
    OperationMessage,
    StartMessage,
)

from domain.errors import ErrorCode
from infra.ratelimit import client_address
from infra.redis import log_fallback
from schema.context import Context

log = logging.getLogger("instagraph.websocket")

# Close codes (graphql-transport-ws; the legacy protocol has none of its own, so it uses
# the same ones).
INVALID_MESSAGE = 4400
INIT_TIMEOUT = 4408
TOO_MANY_REQUESTS = 4429
SUBSCRIBER_EXISTS = 4409

TOO_MANY_CONNECTIONS = "Too many connections"
# RFC 6455: a close frame's reason is at most 123 bytes of UTF-8; a longer one makes the
# server fail the close itself. Reasons that quote the client (an operation id) are cut.
MAX_CLOSE_REASON_BYTES = 123
# An operation id is the client's name for it, echoed in every message about it: a short
# one is plenty (the reference client uses UUIDs).
MAX_OPERATION_ID_LENGTH = 256
# The connection counter is asked with this deadline: a stalled Redis admits the
# connection (fail open: the limit protects capacity, it is not a permission).
LIMITER_TIMEOUT_SECONDS = 2.0


def decode_message(text: str) -> object:
    """One WebSocket message's JSON. Anything unreadable raises JSONDecodeError: orjson
    refuses nesting beyond 1,024 levels and numbers it cannot hold, where the standard
    parser would raise RecursionError or ValueError past the transport's handling."""
    return orjson.loads(text)


def close_reason(text: str) -> str:
    """`text` cut to what a close frame can carry."""
    encoded = text.encode()
    if len(encoded) <= MAX_CLOSE_REASON_BYTES:
        return text
    return encoded[: MAX_CLOSE_REASON_BYTES - 3].decode(errors="ignore") + "..."


class TextFrameWebSocketAdapter(ASGIWebSocketAdapter):
    """graphql-transport-ws and graphql-ws messages are JSON in text frames: the reference
    `graphql-ws` client, Python `gql` and browsers reject (or hand over as Blobs) binary
    frames, which Strawberry sends whenever the view's encoder returns bytes. Incoming
    messages are read with `decode_message`, and close reasons are cut to fit a frame."""

    async def iter_json(self, *, ignore_parsing_errors: bool = False) -> AsyncGenerator[object]:
        try:
            while self.ws.application_state != WebSocketState.DISCONNECTED:
                text = await self.ws.receive_text()
                try:
                    message = decode_message(text)
                except JSONDecodeError as error:
                    if ignore_parsing_errors:
                        continue
                    raise NonJsonMessageReceived from error
                yield message
        except KeyError as error:  # Starlette's receive_text on a binary frame
            raise NonTextMessageReceived from error
        except WebSocketDisconnect:
            pass

    async def send_json(self, message: Mapping[str, object]) -> None:
        try:
            await self.ws.send_text(orjson.dumps(message).decode())
        except WebSocketDisconnect as exc:
            raise WebSocketDisconnected from exc

    async def close(self, code: int, reason: str) -> None:
        # Closing twice (a limit's close racing the client's, or the handler's own after
        # ours) is a no-op, not Starlette's RuntimeError.
        if self.ws.application_state == WebSocketState.DISCONNECTED:
            return
        with contextlib.suppress(RuntimeError):
            await self.ws.close(code=code, reason=close_reason(reason))


# -- Message shapes ---------------------------------------------------------------------


def _nullish_or_object(value: object) -> bool:
    return value is None or isinstance(value, dict)


def operation_payload_problem(payload: object) -> str | None:
    """What is wrong with a `subscribe` (or legacy `start`) payload, or None: an object
    with `query` a string, `variables` and `extensions` objects or null, and
    `operationName` a string or null."""
    if not isinstance(payload, dict):
        return "payload must be an object"
    if not isinstance(payload.get("query"), str):
        return "payload.query must be a string"
    if not _nullish_or_object(payload.get("variables")):
        return "payload.variables must be an object or null"
    name = payload.get("operationName")
    if name is not None and not isinstance(name, str):
        return "payload.operationName must be a string or null"
    if not _nullish_or_object(payload.get("extensions")):
        return "payload.extensions must be an object or null"
    return None


def _id_problem(message: Mapping[str, Any]) -> str | None:
    operation_id = message.get("id")
    if not isinstance(operation_id, str) or not operation_id:
        return f"{message['type']} needs a non-empty string id"
    if len(operation_id) > MAX_OPERATION_ID_LENGTH:
        return f"{message['type']} id must be at most {MAX_OPERATION_ID_LENGTH} characters"
    return None


# What a client may send (connection_ack, next and error go the other way only).
TRANSPORT_CLIENT_TYPES = frozenset({"connection_init", "ping", "pong", "subscribe", "complete"})


def transport_message_problem(message: object) -> str | None:
    """Why a graphql-transport-ws message from a client is invalid (the reason to close
    with 4400), or None. The rules of the reference server's `validateMessage`."""
    if not isinstance(message, dict):
        return "Message must be a JSON object"
    kind = message.get("type")
    if not isinstance(kind, str):
        return "Message type must be a string"
    if kind not in TRANSPORT_CLIENT_TYPES:
        return "Unknown message type"
    if kind in ("connection_init", "ping", "pong"):
        if not _nullish_or_object(message.get("payload")):
            return f"{kind} payload must be an object or null"
        return None
    if problem := _id_problem(message):
        return problem
    if kind == "subscribe" and (problem := operation_payload_problem(message.get("payload"))):
        return f"subscribe {problem}"
    return None


LEGACY_CLIENT_TYPES = frozenset({"connection_init", "connection_terminate", "start", "stop"})


def legacy_message_problem(message: object) -> str | None:
    """Why a legacy graphql-ws message cannot even be addressed to an operation (answered
    with `connection_error`), or None. A `start` whose id is fine but whose payload is
    not is the operation's own error (`operation_payload_problem`)."""
    if not isinstance(message, dict):
        return "Message must be a JSON object"
    kind = message.get("type")
    if not isinstance(kind, str):
        return "Message type must be a string"
    if kind not in LEGACY_CLIENT_TYPES:
        return "Unknown message type"
    if kind in ("start", "stop"):
        return _id_problem(message)
    return None


# -- Errors as the protocols carry them --------------------------------------------------


def operation_limit_error(limit: int) -> GraphQLError:
    return GraphQLError(
        f"Too many operations on this connection: at most {limit} at a time; complete one first.",
        extensions={"code": ErrorCode.RATE_LIMITED.value},
    )


# A `subscribe` (or `start`) payload's `extensions`, for the operation's task: set around
# Strawberry's handler, which starts the task (copying this context) and drops them.
OPERATION_EXTENSIONS: ContextVar[dict[str, Any] | None] = ContextVar(
    "ws_operation_extensions", default=None
)


class ExtensionsForwardingSchema:
    """The schema as the WebSocket handlers see it: `stream` and `subscribe` get the
    operation's `extensions` (OPERATION_EXTENSIONS), which Strawberry's handlers do not
    pass, so `InstagraphSchema.stream` resolves and verifies a persisted query as it does
    over HTTP. Everything else is the schema's own."""

    def __init__(self, schema: BaseSchema) -> None:
        self.schema = schema

    def __getattr__(self, name: str) -> Any:
        return getattr(self.schema, name)

    async def stream(self, *args: Any, **kwargs: Any) -> StreamResult:
        kwargs.setdefault("operation_extensions", OPERATION_EXTENSIONS.get())
        return await self.schema.stream(*args, **kwargs)

    async def subscribe(self, *args: Any, **kwargs: Any) -> StreamResult:
        kwargs.setdefault("operation_extensions", OPERATION_EXTENSIONS.get())
        return await self.schema.subscribe(*args, **kwargs)


@contextlib.contextmanager
def operation_extensions(payload: object) -> Iterator[None]:
    """OPERATION_EXTENSIONS set to `payload`'s `extensions` while Strawberry's handler
    starts the operation's task."""
    extensions = payload.get("extensions") if isinstance(payload, dict) else None
    token = OPERATION_EXTENSIONS.set(extensions if isinstance(extensions, dict) else None)
    try:
        yield
    finally:
        OPERATION_EXTENSIONS.reset(token)


# -- Connections per user (and per address, for anonymous sockets) -------------------


def connections_key(subject: int | str) -> str:
    """A sorted set of a subject's open sockets: connection id -> lease expiry (Redis
    time, ms). The subject is a user id, or `addr:<client address>` for anonymous
    sockets. In braces: one hash slot on a Redis Cluster."""
    return f"ws:connections:{{{subject}}}"


# KEYS: connections:{S}. ARGV: connection id, cap, lease ms. Drops expired leases (those
# of a process that died), then adds this one unless the subject holds `cap` already.
# Redis' own clock, so the API processes' clocks do not matter. 1: claimed, 0: full.
CLAIM_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then
  return 0
end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1
"""

# KEYS: connections:{S}. ARGV: connection id, lease ms. Extends a live socket's lease, or
# adds it (without the cap) when it expired while Redis was away or was never claimed
# (Redis was down when the socket opened): the socket is open, so it counts.
RENEW_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
"""

REDIS_FAILURES = (RedisError, OSError, TimeoutError)
# The scripts are sent with EVAL, not EVALSHA: they are small, and after a Redis restart
# (an empty script cache) EVALSHA's NOSCRIPT reply does not close the client's breaker
# (infra/redis.py), so the SCRIPT LOAD that follows is refused while it is open: sockets
# opened during an outage would never be counted again when only they ask Redis.


class ConnectionLease:
    """One socket's place in its subject's count, renewed by `keep` while the socket
    lives."""

    def __init__(self, redis: Redis, subject: int | str, lease_ms: int) -> None:
        self.redis = redis
        self.key = connections_key(subject)
        self.connection_id = uuid.uuid4().hex
        self.lease_ms = lease_ms

    @property
    def task_name(self) -> str:
        """The name of the task that keeps it (`keep`), for operators and tests."""
        return f"ws-lease {self.key} {self.connection_id}"

    async def renew(self) -> None:
        async with asyncio.timeout(LIMITER_TIMEOUT_SECONDS):
            await self.redis.eval(RENEW_LUA, 1, self.key, self.connection_id, str(self.lease_ms))  # type: ignore[misc]  # redis-py types sync and async alike

    async def keep(self) -> None:
        """Renew every third of the lease until cancelled. A failed renewal is retried at
        the next one (the lease outlives two failures; after a longer outage, the first
        renewal Redis answers counts the socket again)."""
        while True:
            await asyncio.sleep(self.lease_ms / 3000)
            try:
                await self.renew()
            except REDIS_FAILURES as error:
                # Once a minute, not once per socket per renewal, during an outage.
                log_fallback("WebSocket lease", error, instead="not renewed (retried)")

    async def release(self) -> None:
        async with asyncio.timeout(LIMITER_TIMEOUT_SECONDS):
            await self.redis.zrem(self.key, self.connection_id)


class ConnectionLimiter:
    """At most `cap` open sockets per subject (a user id, or `addr:<address>`), counted
    in Redis across API processes.

    A socket claims a lease (`claim`) and gives it back when it closes; a lease not
    renewed for `lease_seconds` (its process died) no longer counts.

        lease = ConnectionLimiter(redis, cap=20, lease_seconds=90).lease(user_id)
        if not await limiter.claim(lease): ...  # the user has 20 sockets open already
    """

    def __init__(self, redis: Redis, *, cap: int, lease_seconds: float) -> None:
        self.redis = redis
        self.cap = cap
        self.lease_ms = max(1, int(lease_seconds * 1000))

    def lease(self, subject: int | str) -> ConnectionLease:
        """A new socket's lease, not yet claimed."""
        return ConnectionLease(self.redis, subject, self.lease_ms)

    async def claim(self, lease: ConnectionLease) -> bool:
        """Count `lease` unless its subject is at the cap (False)."""
        async with asyncio.timeout(LIMITER_TIMEOUT_SECONDS):
            claimed = await self.redis.eval(  # type: ignore[misc]  # redis-py types sync and async alike
                CLAIM_LUA, 1, lease.key, lease.connection_id, str(self.cap), str(self.lease_ms)
            )
        return int(claimed) == 1

    async def count(self, subject: int | str) -> int:
        """How many unexpired leases the subject holds (for tests and operators)."""
        now_s, now_us = await self.redis.time()
        now_ms = int(now_s) * 1000 + int(now_us) // 1000
        return int(await self.redis.zcount(connections_key(subject), f"({now_ms}", "+inf"))


def address_subject(context: Context) -> str:
    """The subject an anonymous socket is counted under: its client's address (an IPv6
    client's /64), as the anonymous rate limits key it."""
    request = context.request
    return "addr:" + (client_address(request.scope) if request is not None else "unknown")


class TooManyConnections(Exception):
    """The viewer has WS_MAX_CONNECTIONS_PER_USER sockets open already (or, anonymous,
    the address has WS_MAX_ANONYMOUS_CONNECTIONS_PER_ADDRESS)."""


class ConnectionAdmission:
    """The connection-count side of one socket: admitted once the viewer is known (at the
    ack), its lease kept while it lives, and released when it closes."""

    def __init__(self, context: Context) -> None:
        self.context = context
        self.lease: ConnectionLease | None = None
        self.keeper: asyncio.Task[None] | None = None

    def _subject_and_cap(self) -> tuple[int | str, int]:
        settings = self.context.settings
        viewer_id = self.context.viewer_id
        if viewer_id is not None:
            return viewer_id, settings.ws_max_connections_per_user
        return address_subject(self.context), settings.ws_max_anonymous_connections_per_address

    async def admit(self) -> None:
        """Raises TooManyConnections when the viewer (or, anonymous, the address) is at
        the cap. If Redis does not answer, the socket is admitted (the cap protects
        capacity, it is not a permission) and its keeper counts it from the first
        renewal Redis answers; a claim cut by the timeout after Redis ran it is the same
        lease, released when the socket closes."""
        if self.lease is not None:
            return
        subject, cap = self._subject_and_cap()
        if cap <= 0:
            return
        limiter = ConnectionLimiter(
            self.context.redis,
            cap=cap,
            lease_seconds=self.context.settings.ws_connection_lease_seconds,
        )
        lease = limiter.lease(subject)
        try:
            claimed = await limiter.claim(lease)
        except REDIS_FAILURES as error:
            log_fallback("WebSocket connection", error, instead="admitted uncounted")
            claimed = True
        if not claimed:
            raise TooManyConnections
        self.lease = lease
        self.keeper = asyncio.create_task(lease.keep(), name=lease.task_name)

    async def release(self) -> None:
        if self.keeper is not None:
            await cancel_and_wait(self.keeper)
        if self.lease is not None:
            lease, self.lease = self.lease, None
            try:
                await lease.release()
            except REDIS_FAILURES as error:
                # It expires on its own after WS_CONNECTION_LEASE_SECONDS.
                log_fallback("WebSocket lease release", error, instead="left to expire")


async def cancel_and_wait(task: asyncio.Task[None]) -> None:
    """Cancel `task` and wait until it is done, without swallowing a cancellation of the
    caller (awaiting the cancelled task in `suppress(CancelledError)` would)."""
    task.cancel()
    await asyncio.wait({task})


# -- The handlers ------------------------------------------------------------------------


class GraphQLTransportWSHandler(BaseGraphQLTransportWSHandler[Context, None]):
    """Strawberry's graphql-transport-ws handler with the checks and limits above."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.schema = cast("BaseSchema", ExtensionsForwardingSchema(self.schema))
        self.admission = ConnectionAdmission(self.context)

    async def handle(self) -> None:
        try:
            await super().handle()
        finally:
            await self.admission.release()

    async def handle_message(self, message: Message) -> None:
        if problem := transport_message_problem(message):
            await self.handle_invalid_message(problem)
            return
        if message["type"] == "connection_init" and message.get("payload") is None:
            # `payload: null` is allowed (nullish); Strawberry would refuse it.
            message = ConnectionInitMessage(type="connection_init", payload={})
        await super().handle_message(message)

    async def handle_connection_init(self, message: ConnectionInitMessage) -> None:
        try:
            await super().handle_connection_init(message)
        except TooManyConnections:
            # 4429: the reference client does not retry it (it would only be refused
            # again until one of the user's sockets closes).
            await self.websocket.close(code=TOO_MANY_REQUESTS, reason=TOO_MANY_CONNECTIONS)

    async def send_message(self, message: Message) -> None:
        if message["type"] == "connection_ack":
            # Counted here: after `on_ws_connect` authenticated the viewer, before the
            # client may start anything. TooManyConnections stops the ack.
            await self.admission.admit()
        await super().send_message(message)

    async def handle_subscribe(self, message: SubscribeMessage) -> None:
        if self.connection_acknowledged:
            operation_id = message["id"]
            if operation_id in self.operations:
                reason = close_reason(f"Subscriber for {operation_id} already exists")
                await self.websocket.close(code=SUBSCRIBER_EXISTS, reason=reason)
                return
            limit = self.max_subscriptions_per_connection
            if limit is not None and len(self.operations) >= limit:
                await self.send_message(
                    {
                        "id": operation_id,
                        "type": "error",
                        "payload": [operation_limit_error(limit).formatted],
                    }
                )
                return
        with operation_extensions(message.get("payload")):
            await super().handle_subscribe(message)

    @staticmethod
    def _get_pre_execution_close_reason(error: GraphQLError) -> str | None:
        """Never close for a document's errors (Strawberry closes with 4400 for a syntax
        error or an unknown operation name): they are the operation's, sent as its
        `error` message, like validation errors."""
        return None


class GraphQLWSHandler(BaseGraphQLWSHandler[Context, None]):
    """Strawberry's legacy graphql-ws handler with the checks and limits above, and the
    `connection_init` timeout Strawberry gives only the newer protocol."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.schema = cast("BaseSchema", ExtensionsForwardingSchema(self.schema))
        self.admission = ConnectionAdmission(self.context)
        self.connection_init_received = False

    async def handle(self) -> None:
        timer = asyncio.create_task(self._close_unless_initialised())
        try:
            await super().handle()
        finally:
            await cancel_and_wait(timer)
            await self.admission.release()

    async def _close_unless_initialised(self) -> None:
        await asyncio.sleep(self.view.connection_init_wait_timeout.total_seconds())
        if not self.connection_init_received:
            with contextlib.suppress(Exception):  # the client may be gone already
                await self.websocket.close(
                    code=INIT_TIMEOUT, reason="Connection initialisation timeout"
                )

    async def handle_message(self, message: OperationMessage) -> None:
        if problem := legacy_message_problem(message):
            await self.send_message(
                {
                    "type": "connection_error",
                    "payload": {"message": problem, "code": ErrorCode.INVALID_INPUT.value},
                }
            )
            return
        if message["type"] == "start" and self.connection_acknowledged:  # else 4401
            if problem := operation_payload_problem(message.get("payload")):
                await self._send_error(
                    message["id"], GraphQLError(problem), ErrorCode.INVALID_INPUT
                )
                return
        await super().handle_message(message)

    async def handle_connection_init(self, message: LegacyConnectionInitMessage) -> None:
        if self.connection_init_received:
            await self.websocket.close(
                code=TOO_MANY_REQUESTS, reason="Too many initialisation requests"
            )
            return
        self.connection_init_received = True
        try:
            await super().handle_connection_init(message)
        except TooManyConnections:
            await self.send_message(
                {
                    "type": "connection_error",
                    "payload": {
                        "message": TOO_MANY_CONNECTIONS,
                        "code": ErrorCode.RATE_LIMITED.value,
                    },
                }
            )
            await self.websocket.close(code=TOO_MANY_REQUESTS, reason=TOO_MANY_CONNECTIONS)

    async def send_message(self, message: OperationMessage) -> None:
        if message["type"] == "connection_ack":
            await self.admission.admit()  # as in GraphQLTransportWSHandler.send_message
        await super().send_message(message)

    async def handle_start(self, message: StartMessage) -> None:
        operation_id = message["id"]
        limit = self.max_subscriptions_per_connection
        if (
            self.connection_acknowledged
            and limit is not None
            and operation_id not in self.tasks  # a restart replaces its operation
            and len(self.tasks) >= limit
        ):
            await self._send_error(operation_id, operation_limit_error(limit), None)
            return
        with operation_extensions(message.get("payload")):
            await super().handle_start(message)

    async def _send_error(
        self, operation_id: str, error: GraphQLError, code: ErrorCode | None
    ) -> None:
        if code is not None:
            error.extensions = {**(error.extensions or {}), "code": code.value}
        await self.send_message({"type": "error", "id": operation_id, "payload": error.formatted})
