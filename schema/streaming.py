"""What every streamed operation (graphql-transport-ws, legacy graphql-ws, multipart HTTP)
gets before its first result: `pre_execution_guard`, applied by `InstagraphSchema.stream`.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Any

from graphql import GraphQLError
from strawberry.schema import BaseSchema
from strawberry.schema.schema import StreamResult
from strawberry.types.execution import ExecutionResult, PreExecutionError
from strawberry.utils.aio import aclosing

from schema.graphql_http import is_request_error


async def refused_stream(error: GraphQLError) -> AsyncGenerator[PreExecutionError, None]:
    """A request refused before it runs (unsafe variables, a persisted-query error), as
    a stream's first and only result: the WebSocket protocols answer it with an `error`
    message, multipart HTTP with an error part."""
    yield PreExecutionError(data=None, errors=[error])


async def pre_execution_guard(source: StreamResult, schema: BaseSchema) -> AsyncGenerator[Any]:
    """`source`, with a first result that refuses the operation before it ran made a
    PreExecutionError: the WebSocket handlers answer it with an `error` message (not a
    `next`, nor nothing), multipart HTTP with an error part that ends the stream.

    - a GraphQL error raised before the first result: Strawberry's parser cache and
      token limiter raise a syntax error (or "more than N tokens") from their parsing
      hook, outside Strawberry's handling; WebSocket sent a bare `complete`, and multipart
      HTTP broke its chunked body off with an ASGI exception;
    - a first result with no data and only request errors (`is_request_error`: no
      `path`), as a refusal from an `on_execute` hook (cost limits) comes.
    """
    async with aclosing(source):
        try:
            first = await anext(source)
        except StopAsyncIteration:
            return
        except GraphQLError as error:
            schema.process_errors([error])
            yield PreExecutionError(data=None, errors=[error])
            return
        if (
            isinstance(first, ExecutionResult)
            and not isinstance(first, PreExecutionError)
            and first.data is None
            and first.errors
            and all(is_request_error(error.path) for error in first.errors)
        ):
            yield PreExecutionError(data=None, errors=first.errors, extensions=first.extensions)
            return
        yield first
        async for result in source:
            yield result
