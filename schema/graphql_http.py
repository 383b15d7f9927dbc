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

Errors raised before a GraphQL result exists are a 4xx with a GraphQL error response
(`{"errors": [{"message", "extensions": {"code"}}]}`, no `data`) in either media type
(`http_error_response`): a body that is not JSON, not UTF-8, or holds a number no
parser should take (`parse_request_json`); a body that is not an object (nor an array),
or whose `query`, `variables`, `operationName` or `extensions` has the wrong type
(`check_request_body`); an unsupported content type (400, INVALID_INPUT); a body above
the size limit (413) or a header above its limit (431), both TOO_LARGE, a body not
in within its deadline (408, INVALID_INPUT) (`schema.request_limits`). Both executors
parse the body with `parse_request_json`.

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
from starlette.responses import Response

from domain.errors import ErrorCode
from infra.metrics import ERRORS, count_errors
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
UNREADABLE_JSON = "Unable to parse request body as JSON"
# What each parameter of a GraphQL request may be (null or absent included), in the
# words Strawberry uses for the ones it checks itself.
_PARAMETERS: tuple[tuple[str, type | tuple[type, ...], str], ...] = (
    ("query", str, "a string"),
    ("variables", dict, "an object"),
    ("operationName", str, "a string"),
    ("extensions", dict, "an object"),
    ("documentId", str, "a string"),
    ("doc_id", str, "a string"),
)


# How deep a request's JSON may nest, anywhere in it. A variable deeper than 64 is
# refused anyway (`schema.input_strings`); this bounds the rest (`extensions`, members
# nothing reads) and answers them all at the body check, the same in both media types.
MAX_JSON_DEPTH = 1000
TOO_DEEP_JSON = f"{UNREADABLE_JSON}: it nests deeper than {MAX_JSON_DEPTH} levels"
# orjson refuses nesting deeper than this on its own (tests/test_input_hardening.py
# checks it): a body parsed inside ORJSON_MAX_DEPTH - MAX_JSON_DEPTH more arrays is
# refused by it exactly when it nests deeper than MAX_JSON_DEPTH, at the price of one
# copy of the body; no walk over what it holds.
ORJSON_MAX_DEPTH = 1024
_PAD = ORJSON_MAX_DEPTH - MAX_JSON_DEPTH


def parse_request_json(raw: str | bytes) -> Any:
    """A request's JSON (a POST body, or a GET's `variables` or `extensions`), parsed the
    one way both executors parse it: orjson, which takes only UTF-8, refuses unpaired
    surrogate escapes, numbers beyond a double's range (a 5,000-digit number), NaN and
    Infinity; nesting deeper than MAX_JSON_DEPTH anywhere is refused too. Anything
    refused is HTTPException(400).

    A body of up to 2 * MAX_JSON_DEPTH bytes (a request's usual one: a few hundred)
    cannot nest that deep and is parsed as it is; a longer one inside `_PAD` arrays.

    (The standard library's parser would take surrogates and NaN, and raise ValueError,
    UnicodeDecodeError or RecursionError on the rest: 500s, the issue 10 found.)
    """
    if len(raw) <= 2 * MAX_JSON_DEPTH:  # each level takes two bytes
        return _loads(raw)
    try:
        if isinstance(raw, str):
            wrapped = orjson.loads("[" * _PAD + raw + "]" * _PAD)
        else:
            wrapped = orjson.loads(b"[" * _PAD + raw + b"]" * _PAD)
    except orjson.JSONDecodeError:
        _loads(raw)  # raises the body's own error, if it has one
        raise HTTPException(400, TOO_DEEP_JSON) from None  # else, only the depth
    for _ in range(_PAD):
        # Each level one element: the body was one JSON value (not, say, `1], [2`).
        if not (isinstance(wrapped, list) and len(wrapped) == 1):
            return _loads(raw)
        wrapped = wrapped[0]
    return wrapped


def _loads(raw: str | bytes) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        message = str(exc)
        if message.startswith("depth limit exceeded"):
            raise HTTPException(400, TOO_DEEP_JSON) from exc
        reason = "it is not valid UTF-8" if "UTF-8" in message else message
        raise HTTPException(400, f"{UNREADABLE_JSON}: {reason}") from exc


def check_request_body(data: object) -> dict[str, Any] | list[Any]:
    """A parsed JSON body of `POST /graphql` (or a GET's parameters), if it can be read as
    GraphQL: an object (one request) whose parameters have their types, or an array (a
    batch, which Strawberry answers: 400 while batching is off).

    Anything else (`null`, a number, a string, a boolean; `"query": 5`, `"variables":
    []`...) raises HTTPException(400), which both executors answer like any malformed
    body (`http_error_response`, via `app.GraphQLApp`): the one rule for the fast path
    and Strawberry's view.
    """
    if isinstance(data, list):
        return data
    if not isinstance(data, dict):
        raise HTTPException(400, NOT_A_GRAPHQL_REQUEST)
    for name, kind, words in _PARAMETERS:
        value = data.get(name)
        if value is not None and not isinstance(value, kind):
            raise HTTPException(
                400, f"The GraphQL operation's `{name}` must be {words} or null, if provided."
            )
    return data


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
    """The HTTP answer carrying a GraphQL response (or a batch of them) in `media_type`.

    A request refused for its budget (a request error RATE_LIMITED, `schema.cost`) is
    429 with `Retry-After` in both media types: the spec lets a server deny a request
    with the relevant 4xx whatever the client accepts, and HTTP clients, proxies and
    retry policies know 429. Nothing ran, so there is no `data`."""
    status = 200
    if isinstance(body, Mapping) and is_request_error_response(body):
        retry_after = _retry_after(body)
        if retry_after is not None:
            headers = {**(headers or {}), "Retry-After": str(retry_after)}
            body = {key: value for key, value in body.items() if key != "data"}
            return _graphql_response_json(body, 429, headers, media_type)
        if media_type == GRAPHQL_RESPONSE:
            status = 400
            body = {key: value for key, value in body.items() if key != "data"}
    return _graphql_response_json(body, status, headers, media_type)


def _retry_after(body: Mapping[str, Any]) -> int | None:
    """The `retryAfter` of a request error refused as RATE_LIMITED, else None."""
    for error in body.get("errors") or ():
        extensions = error.get("extensions") if isinstance(error, Mapping) else None
        if isinstance(extensions, Mapping) and extensions.get("code") == "RATE_LIMITED":
            retry_after = extensions.get("retryAfter")
            return retry_after if isinstance(retry_after, int) else 1
    return None


def persisted_query_error_response(error: PersistedQueryError, media_type: str) -> Response:
    """A persisted-query protocol error, with its own status in either media type: the
    refusals are 4xx already (400 malformed, 403 not trusted, 404 not in the manifest),
    and the two APQ handshake answers (`PersistedQueryNotFound`, `...NotSupported`) stay
    200, as APQ clients expect whatever they accept (`PersistedQueryError.not_found`)."""
    response = error.response()
    count_errors(response, "http")
    return _graphql_response_json(response, error.status, error.headers, media_type)


# The code of a request refused before any GraphQL result exists, by its status.
_STATUS_CODES = {
    404: ErrorCode.NOT_FOUND,
    413: ErrorCode.TOO_LARGE,
    414: ErrorCode.TOO_LARGE,
    415: ErrorCode.UNSUPPORTED_MEDIA_TYPE,
    431: ErrorCode.TOO_LARGE,
}


def http_error_response(
    status: int, message: str, media_type: str, headers: Mapping[str, str] | None = None
) -> Response:
    """A request refused before any GraphQL result exists (malformed body, wrong method,
    too large): a GraphQL error response (no `data`) with this status, in the media type
    the client accepts, its `extensions.code` by status (`_STATUS_CODES`, else
    INVALID_INPUT). A 405 says what /graphql takes (`Allow: GET, POST`) unless `headers`
    says otherwise.
    """
    if status == 405:
        headers = {"Allow": ALLOWED_METHODS, **(headers or {})}
    code = _STATUS_CODES.get(status, ErrorCode.INVALID_INPUT).value
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
    ERRORS.labels(code, "http").inc()
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
