"""GraphQL over HTTP: the media type and status code of every answer of /graphql.

One rule for both executors (the compiled fast path, `schema.fast_path`, and
Strawberry's view, `app.GraphQLApp`), following the GraphQL-over-HTTP spec
(https://graphql.github.io/graphql-over-http/draft/):

- A client whose `Accept` names `application/graphql-response+json` (at a quality
  no lower than JSON's) gets that media type, with the spec's status codes: 400 and
  no `data` key for a request error (the document does not parse or validate, or is
  too complex; a variable does not coerce), 200 with `data` once execution started
  (field errors included). Persisted-query errors keep their statuses (4xx for a
  refusal; 200 for the APQ handshake's "not found, send the text", which APQ clients
  expect at 200 whatever they accept: `PersistedQueryError.not_found`).
- Every other client (no `Accept`, `*/*`, `application/json`, or only types we do
  not produce) gets `application/json` exactly as before the spec existed: 200 for
  any GraphQL result, so older clients that treat 4xx as a transport failure still
  read the errors. A client that accepts nothing we produce gets JSON too, which the
  spec allows instead of 406.
- A mutation or a subscription over GET is refused with 405 and `Allow: POST`, in both
  modes; any other method (HEAD included) with 405 and `Allow: GET, POST`.
- A subscription runs only on a streaming transport (POST with Apollo's multipart
  `Accept`, or the WebSocket): over a plain POST it is refused with 400 and a GraphQL
  error (`INVALID_INPUT`) in both modes, nothing run (`schema.root.InstagraphSchema`
  refuses the operation type; `subscription_not_streamed`).

Errors raised before a GraphQL result exists (a body that is not JSON, or neither an
object nor an array: `check_request_body`; an unsupported content type) keep
Strawberry's plain-text 4xx in JSON mode, and become a GraphQL error response with the
same status in `application/graphql-response+json` mode.

Every answer says `Vary: Accept, Origin`: it depends on the media type the client
accepts, and a cache must not hand a page on another origin an answer stored without
its CORS headers (`infra.cors` adds those only to requests that carry `Origin`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import TYPE_CHECKING, Any

import orjson
from cross_web import HTTPException
from starlette.responses import PlainTextResponse, Response

from schema.documents import PersistedQueryError

if TYPE_CHECKING:  # Python 3.13's typing.TypeIs; mypy ships typing_extensions
    from typing_extensions import TypeIs

JSON = "application/json"
GRAPHQL_RESPONSE = "application/graphql-response+json"
# The spec's examples name the charset; JSON is UTF-8 by definition (RFC 8259), so a
# client that ignores the parameter reads the same bytes.
GRAPHQL_RESPONSE_CONTENT_TYPE = f"{GRAPHQL_RESPONSE}; charset=utf-8"
# The answer depends on the request's Accept header, and its CORS headers on its Origin
# (infra/cors.py adds them only when there is one): caches must key on both.
VARY = {"Vary": "Accept, Origin"}
# The route and the methods it takes (the 405 answers' `Allow`; the CORS preflights'
# allowed methods, infra/cors.py).
GRAPHQL_PATH = "/graphql"
GRAPHQL_METHODS = ("GET", "POST")
ALLOWED_METHODS = ", ".join(GRAPHQL_METHODS)

_JSON_RANGES = {JSON: 2, "application/*": 1, "*/*": 0}  # value: specificity


@lru_cache(maxsize=256)
def negotiate(accept: str | None) -> str:
    """The media type to answer a request with this `Accept` header: GRAPHQL_RESPONSE
    or JSON.

    `application/graphql-response+json` only when named explicitly with a quality at
    least JSON's (a wildcard never selects it: the spec keeps `*/*` on JSON, and so
    does graphql-http's reference server). Quality values follow RFC 9110: the most
    specific range naming JSON gives JSON's quality. Cached: clients send a handful of
    distinct headers.

    `negotiate("application/graphql-response+json, application/json;q=0.9")` is
    GRAPHQL_RESPONSE; `negotiate("*/*")` and `negotiate(None)` are JSON.
    """
    if not accept:
        return JSON
    response_quality = 0.0
    json_quality, json_specificity = 0.0, -1
    for entry in accept.split(","):
        media_range, *parameters = entry.split(";")
        media_range = media_range.strip().lower()
        quality = _quality(parameters)
        if media_range == GRAPHQL_RESPONSE:
            response_quality = max(response_quality, quality)
        elif media_range in _JSON_RANGES:
            specificity = _JSON_RANGES[media_range]
            if specificity > json_specificity:
                json_quality, json_specificity = quality, specificity
            elif specificity == json_specificity:
                json_quality = max(json_quality, quality)
    if response_quality > 0 and response_quality >= json_quality:
        return GRAPHQL_RESPONSE
    return JSON


def _quality(parameters: Sequence[str]) -> float:
    for parameter in parameters:
        name, _, value = parameter.partition("=")
        if name.strip().lower() == "q":
            try:
                quality = float(value.strip())
            except ValueError:
                return 0.0  # malformed: treated as not acceptable
            return min(max(quality, 0.0), 1.0)
    return 1.0


# Said to a client whose JSON body is neither an object nor an array (`check_request_body`).
NOT_A_GRAPHQL_REQUEST = (
    "The request body must be a JSON object: a GraphQL request with `query` (or a "
    "persisted document's reference), `variables`, `operationName` and `extensions`"
)


def check_request_body(data: object) -> dict[str, Any] | list[Any]:
    """A parsed JSON body of `POST /graphql`, if it can be read as GraphQL: an object (one
    request) or an array (a batch, which Strawberry answers: 400 while batching is off).

    Anything else (`null`, a number, a string, a boolean) raises HTTPException(400), which
    both executors answer like any malformed body (`http_error_response`, via
    `app.GraphQLApp`): the one rule for the fast path and Strawberry's view.
    """
    if isinstance(data, dict | list):
        return data
    raise HTTPException(400, NOT_A_GRAPHQL_REQUEST)


def is_request_error(path: object) -> TypeIs[None]:
    """Whether a GraphQL error with this `path` is a request error (the document does not
    parse or validate, a variable does not coerce: nothing executed) rather than a field
    error. The one rule for both the error codes (`schema.root.InstagraphSchema`'s
    `process_errors`) and the status codes (`is_request_error_response`).

    graphql-core and the compiled executor give every field error a `path` (the field
    that failed), even one that nulls the whole result; request errors have none.
    """
    return path is None


def is_request_error_response(body: Mapping[str, Any]) -> bool:
    """Whether a GraphQL response reports a request error: no data, and only errors
    without a `path` (`is_request_error`)."""
    if body.get("data") is not None:
        return False
    errors = body.get("errors")
    if not isinstance(errors, list) or not errors:
        return False
    return all(
        isinstance(error, Mapping) and is_request_error(error.get("path")) for error in errors
    )


def graphql_response(
    body: Mapping[str, Any] | Sequence[Mapping[str, Any]],
    media_type: str,
    headers: Mapping[str, str] | None = None,
) -> Response:
    """The HTTP answer carrying a GraphQL response (or a batch of them) in `media_type`."""
    status = 200
    if (
        media_type == GRAPHQL_RESPONSE
        and isinstance(body, Mapping)
        and is_request_error_response(body)
    ):
        status = 400
        body = {key: value for key, value in body.items() if key != "data"}
    return _graphql_response_json(body, status, headers, media_type)


def persisted_query_error_response(error: PersistedQueryError, media_type: str) -> Response:
    """A persisted-query protocol error, with its own status in either media type: the
    refusals are 4xx already (400 malformed, 403 not trusted, 404 not in the manifest),
    and the two APQ handshake answers (`PersistedQueryNotFound`, `...NotSupported`) stay
    200, as APQ clients expect whatever they accept (`PersistedQueryError.not_found`)."""
    return _graphql_response_json(error.response(), error.status, error.headers, media_type)


def http_error_response(
    status: int, message: str, media_type: str, headers: Mapping[str, str] | None = None
) -> Response:
    """A request refused before any GraphQL result exists (malformed body, wrong method).

    JSON mode keeps Strawberry's plain-text answer; `application/graphql-response+json`
    mode answers a GraphQL error response (no `data`) with the same status. A 405 says
    what /graphql takes (`Allow: GET, POST`) unless `headers` says otherwise.
    """
    if status == 405:
        headers = {"Allow": ALLOWED_METHODS, **(headers or {})}
    if media_type != GRAPHQL_RESPONSE:
        return PlainTextResponse(message, status, headers={**VARY, **(headers or {})})
    code = "NOT_FOUND" if status == 404 else "INVALID_INPUT"
    return _graphql_error(status, message, code, media_type, headers)


def mutation_over_get(operation_type: str, media_type: str) -> Response:
    """The spec's answer to a mutation sent with GET: 405, `Allow: POST`, nothing run.

    `operation_type` is "mutation" or "subscription" (which streams over POST only); the
    words are Strawberry's.
    """
    return http_error_response(
        405, f"{operation_type}s are not allowed when using GET", media_type, {"Allow": "POST"}
    )


# Where a subscription can run; said to a client that sent one over a plain POST.
SUBSCRIPTION_NOT_STREAMED = (
    "subscriptions need a streaming transport: POST with `Accept: multipart/mixed;"
    "subscriptionSpec=1.0` (multipart HTTP) or the WebSocket (graphql-transport-ws)"
)


def subscription_not_streamed(media_type: str) -> Response:
    """A subscription sent over POST without a streaming `Accept`: 400 and a GraphQL
    error (`INVALID_INPUT`) in either media type, as a client library reads it (a
    subscription request is a programming mistake, never a document to answer with
    `data`), with the status Strawberry gives; nothing run."""
    return _graphql_error(400, SUBSCRIPTION_NOT_STREAMED, "INVALID_INPUT", media_type, None)


def _graphql_error(
    status: int, message: str, code: str, media_type: str, headers: Mapping[str, str] | None
) -> Response:
    body = {"errors": [{"message": message, "extensions": {"code": code}}]}
    return _graphql_response_json(body, status, headers, media_type)


def _graphql_response_json(
    body: object, status: int, headers: Mapping[str, str] | None, media_type: str
) -> Response:
    return Response(
        orjson.dumps(body),
        status,
        headers={**VARY, **(headers or {})},
        media_type=GRAPHQL_RESPONSE_CONTENT_TYPE if media_type == GRAPHQL_RESPONSE else JSON,
    )
