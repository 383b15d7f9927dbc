"""The lean HTTP path of /graphql: compiled documents answered without Strawberry's
per-request and per-field machinery.

A GET or POST carrying one JSON GraphQL request whose document the compiler accepts
(`schema.compiler`: validated once, compiled into a plan that builds the response
straight from the resolvers' objects) is parsed with orjson, authenticated, executed
by the plan and answered here. Anything else (GraphiQL, batches, multipart uploads,
streaming subscriptions over HTTP, documents outside the compiled subset, variables
holding text the schema refuses) returns None and goes through Strawberry's view
unchanged; a body or parameter that cannot be a GraphQL request is a 400 on either
path (`schema.graphql_http.check_request_body`). So both paths answer every request
the same way (the differential tests in tests/test_compiler.py hold the compiled one
to that).

Persisted documents are resolved first, for both paths: an Apollo APQ hash or a
trusted-document id becomes its text, or the request gets the protocol's error.
Status codes and media types are `schema.graphql_http`'s, as on Strawberry's path.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from graphql import OperationType
from starlette.requests import Request
from starlette.responses import Response

from infra.metrics import COMPILED, count_errors
from schema.compiler import DocumentCompiler, FallBack
from schema.context import Context
from schema.cost import QueryRefused, refused_body
from schema.documents import DocumentRegistry, PersistedQueryError
from schema.graphql_http import (
    JSON,
    check_request_body,
    graphql_response,
    mutation_over_get,
    negotiate,
    parse_request_json,
    persisted_query_error_response,
)
from schema.input_strings import unsafe_variables_error

log = logging.getLogger(__name__)

_UNSEEN = object()
ContextFactory = Callable[[Request], Awaitable[Context]]
DOCUMENT_IDS = ("documentId", "doc_id")
RequestData = tuple[
    str | None, dict[str, Any] | None, str | None, dict[str, Any] | None, str | None
]


class FastPath:
    """`streaming(headers)` tells whether Strawberry would stream the answer (a
    subscription over multipart HTTP): those requests are left to it."""

    def __init__(
        self,
        compiler: DocumentCompiler,
        documents: DocumentRegistry | None,
        *,
        streaming: Callable[[Mapping[str, str]], bool],
    ) -> None:
        self.compiler = compiler
        self.documents = documents
        self.streaming = streaming

    async def handle(self, request: Request, make_context: ContextFactory) -> Response | None:
        """The response for a request the compiled path serves, else None."""
        data = await _request_data(request)
        if data is None:
            return None
        query, variables, operation_name, extensions, document_id = data
        media_type = negotiate(request.headers.get("accept"))
        if self.documents is not None:
            try:
                query = await self.documents.resolve(query, extensions, document_id=document_id)
            except PersistedQueryError as error:
                return persisted_query_error_response(error, media_type)
            # Strawberry's path (when the document is not compiled) takes it from here.
            request.state.graphql_document = query
        if query is None or self.streaming(request.headers):
            return None
        compiled = self.compiler.get(query, operation_name)
        if compiled is None:
            return None
        if request.method == "GET" and compiled.operation_type is not OperationType.QUERY:
            # Not reached today (the compiler takes queries only), but if it ever is: the
            # same 405 as Strawberry's path, which answers every mutation over GET.
            return mutation_over_get(compiled.operation_type.value, media_type)
        context = await make_context(request)
        costs = self.compiler.schema.costs  # type: ignore[attr-defined]  # an InstagraphSchema
        if compiled.cost_function is None and costs.enabled:
            compiled.cost_function = costs.cost_function(query, operation_name)
        try:  # the cost budget, as Strawberry's path charges it (schema/cost.py)
            request.state.query_charge = charge = await costs.charge(
                context, query, operation_name, variables, function=compiled.cost_function
            )
        except QueryRefused as refused:
            body = refused_body(refused, costs.report)
            count_errors(body, "graphql")
            return graphql_response(body, media_type)
        try:
            result = await compiled.execute(context, variables)
        except FallBack:
            # Strawberry answers this one whole: a directive the plan leaves to it, or a
            # resolver that must await (queries only, so running it again is safe).
            return None
        except Exception:  # a compiler bug must cost speed, never a wrong answer or a 500
            log.exception("compiled execution failed; Strawberry answers: %.80s", query)
            return None
        COMPILED.inc()
        if "errors" in result:
            count_errors(result, "graphql")
        if charge is not None and costs.report:
            result["extensions"] = {"cost": charge.report()}
        return graphql_response(result, media_type)

    async def resolve_document(
        self, request: Request, query: str | None, extensions: Any
    ) -> str | None:
        """For Strawberry's path: the document this request names, resolved by `handle`
        already when it saw the request, else here (requests `handle` does not parse)."""
        resolved = getattr(request.state, "graphql_document", _UNSEEN)
        if resolved is None or isinstance(resolved, str):
            return resolved
        if self.documents is None:
            return query
        return await self.documents.resolve(
            query, extensions if isinstance(extensions, dict) else None
        )


async def _request_data(
    request: Request,
) -> RequestData | None:
    """(query, variables, operationName, extensions, document id) of a plain single
    GraphQL request, or None for anything the fast path leaves to Strawberry. A body or
    parameter that cannot be a GraphQL request raises HTTPException(400) (answered by
    `app.GraphQLApp`), by the rules Strawberry's path follows too
    (`schema.graphql_http.parse_request_json`, `check_request_body`)."""
    if request.method == "POST":
        content_type = request.headers.get("content-type", "")
        if not content_type.startswith(JSON):
            return None
        data = check_request_body(parse_request_json(await request.body()))
        if isinstance(data, list):
            return None  # a batch: Strawberry answers it
    elif request.method == "GET":
        params = request.query_params
        data = {name: params.get(name) for name in ("query", "operationName", *DOCUMENT_IDS)}
        for name in ("variables", "extensions"):
            raw = params.get(name)
            if raw:  # Strawberry's rule: an empty one is absent
                data[name] = parse_request_json(raw)
        if all(data.get(name) is None for name in ("query", "extensions", *DOCUMENT_IDS)):
            return None  # GraphiQL, when a browser asks for it
        check_request_body(data)
    else:
        return None
    if unsafe_variables_error(data.get("variables")) is not None:
        return None  # Strawberry's path refuses it (`InstagraphSchema.execute`)
    document_id = next((data[n] for n in DOCUMENT_IDS if data.get(n) is not None), None)
    return (
        data.get("query"),
        data.get("variables"),
        data.get("operationName"),
        data.get("extensions"),
        document_id,
    )
