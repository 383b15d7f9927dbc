"""What the fuzz tests (tests/test_fuzz.py) send and how they judge an answer.

- `check_answer`: the pass condition for one HTTP response of /graphql: a 200 carrying
  a GraphQL response, or a 4xx carrying a GraphQL error (no `data`), whose errors all
  have a documented `extensions.code`; never a 5xx, never a driver's or Python's text
  (`INTERNALS`, in the raw body and in every decoded string).
- `Tally`: what a run's answers were (statuses, with data or not, codes, mutation
  payloads), so a run can show it reached the resolvers.
- `errors_logged`: the records logged at ERROR, by the app or by uvicorn (whose own
  logging config keeps its loggers from the root logger, where `caplog` listens).
- `Known` and the value strategies: GraphQL values biased toward what exists (seeded ids
  of the type an argument's name asks for, usernames, cursors, emails), so generated
  operations reach real resolvers, mixed with hostile ones (NUL, lone surrogates,
  out-of-range ids and integers, non-canonical digits).
- `single_field_operations`: one root field per operation, seeded values by argument
  name (`with_arguments_by_name`): documents that reach their resolver.
- `with_variables`: a generated document with its literal arguments moved into
  variables, so the same values also travel the variable-coercion path, as JSON.
- `variables_for`: variables for a fixed document (the web client's), from its
  variable definitions and where each variable is used (`variable_uses`).
"""

from __future__ import annotations

import base64
import contextlib
import logging
import re
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import graphql
import httpx
from hypothesis import strategies as st
from hypothesis_graphql import from_schema, nodes

from domain.errors import ErrorCode
from infra.ids import to_global_id

# Every `extensions.code` the API documents: the domain's ErrorCode (schema.graphql's
# enum) and the persisted-query protocol's codes (docs/persisted-queries.md,
# docs/front-end.md). INTERNAL_SERVER_ERROR is deliberately not here: it is a failure.
DOCUMENTED_CODES = frozenset(
    {code.value for code in ErrorCode}
    | {
        "PERSISTED_QUERY_NOT_FOUND",
        "PERSISTED_QUERY_NOT_SUPPORTED",
        "PERSISTED_QUERY_NOT_IN_LIST",
        "QUERY_NOT_IN_SAFELIST",
    }
)

# Text that only a driver, the ORM or Python itself writes: none may reach a client.
# Upper-case SQL only (as drivers print statements), so English prose cannot match;
# Python's exception names and its own messages as it words them (tests/test_fuzz.py's
# `test_the_internals_pattern_*` hold a sample of each, and of API messages it must spare).
INTERNALS = re.compile(
    "|".join(
        (
            # drivers, the ORM, SQL
            r"asyncpg",
            r"sqlalchemy",
            r"psycopg",
            r"redis\.exceptions",
            r"Error \d+ connecting",
            r"\bINSERT INTO\b",
            r"\bDELETE FROM\b",
            r"\bUPDATE \S+ SET\b",
            r"\bSELECT\b.*\bFROM\b",
            r"\$\d+::",
            r"\[SQL:",
            r"\[parameters:",
            r"Background on this error",
            r"(Unique|ForeignKey|NotNull|Check)Violation",
            r"IntegrityError|DataError|ProgrammingError|InterfaceError",
            r"CharacterNotInRepertoire|UntranslatableCharacter",
            r"invalid byte sequence for encoding",
            r"out of range for type",
            r"violates (foreign key|unique|not-null|check) constraint",
            # Python: tracebacks, reprs, exception names
            r"Traceback",
            r'File "[^"]*", line \d+',
            r"<class '",
            r"<(function|bound method|coroutine object) ",
            r" object at 0x[0-9a-f]+",
            r"\b(Type|Value|Key|Index|Attribute|Name|Runtime|Assertion|ZeroDivision|Overflow"
            r"|Recursion|UnicodeDecode|UnicodeEncode|JSONDecode|NotImplemented|Lookup)Error\b",
            r"\bStopIteration\b|\bCancelledError\b|\bTimeoutError\b",
            # Python's own messages
            r"invalid literal for int\(\)",
            r"could not convert string to float",
            r"codec can't (en|de)code",
            r"unhashable type",
            r"(list|string|tuple) index out of range",
            r"object has no attribute",
            r"NoneType",
            r"takes \d+ positional",
            r"(got an|unexpected) (unexpected )?keyword argument",
            r"missing \d+ required (positional|keyword)",
            r"maximum recursion depth",
            r"is not subscriptable",
            r"object is not (callable|iterable)",
            r"not supported between instances of",
            r"unsupported operand type",
            r"can only concatenate",
            r"must be (str|int|bytes|real number), not",
            r"division by zero",
            r"too (large|big) to convert",
            r"Exceeds the limit \(\d+ digits\) for integer string conversion",
            r"surrogates not allowed",
            r"was never awaited",
        )
    ),
    re.DOTALL,
)

JSON = "application/json"
GRAPHQL_RESPONSE = "application/graphql-response+json"
ACCEPTS = {
    "json": {"Accept": JSON},
    "graphql-response": {"Accept": f"{GRAPHQL_RESPONSE}, {JSON};q=0.9"},
}


class BadAnswer(AssertionError):
    """An answer that breaks the pass condition; its message says what was sent."""


def check_answer(response: httpx.Response, sent: str = "") -> dict[str, Any]:
    """Fail unless `response` is a clean answer; returns its GraphQL body.

    Clean: a 200 with a JSON object that has `data` and/or an `errors` list, or a 4xx
    with a GraphQL error body (an `errors` list, no `data`: every refusal of the app,
    early ones included, is one, `schema.graphql_http.http_error_response`); every error
    with a string `message` free of internals and a documented `extensions.code`. Never
    a 5xx, another status, or a body that is not GraphQL's.
    """

    def fail(reason: str) -> BadAnswer:
        return BadAnswer(
            f"{reason}\n  status {response.status_code}, body {response.text[:2000]!r}"
            f"\n  sent: {sent[:3000]}"
        )

    status = response.status_code
    if status >= 500:
        raise fail("a 5xx")
    if not (status == 200 or 400 <= status < 500):
        raise fail("neither 200 nor a 4xx")
    if INTERNALS.search(response.text):  # the text as sent (JSON-escaped, if JSON)
        raise fail("internals in the answer")
    content_type = response.headers.get("content-type", "")
    if not content_type.startswith((JSON, GRAPHQL_RESPONSE)):
        raise fail(f"an answer that is not JSON ({content_type!r})")
    try:
        body = response.json()
    except ValueError:
        raise fail("unreadable JSON") from None
    if any(INTERNALS.search(text) for text in strings_in(body)):  # as decoded, unescaped
        raise fail("internals in the answer")
    if not isinstance(body, dict) or not ({"data", "errors"} & body.keys()):
        raise fail("not a GraphQL response")
    errors = body.get("errors", [])
    if not isinstance(errors, list) or ("data" not in body and not errors):
        raise fail("`errors` is not a non-empty list")
    if status != 200 and (not errors or body.get("data") is not None):
        raise fail("a 4xx that is not a GraphQL error (errors, no data)")
    for error in errors:
        if not isinstance(error, dict) or not isinstance(error.get("message"), str):
            raise fail("an error without a message")
        code = (error.get("extensions") or {}).get("code")
        if code not in DOCUMENTED_CODES:
            raise fail(f"undocumented extensions.code {code!r}")
    return body


def strings_in(value: Any) -> Iterator[str]:
    """Every string in a JSON value, keys included."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield key
            yield from strings_in(item)
    elif isinstance(value, list):
        for item in value:
            yield from strings_in(item)


def codes_in(body: Mapping[str, Any] | None) -> set[str]:
    """Every error code in an answer: top-level `extensions.code`s and the `code` of each
    mutation payload's `errors` (UserError)."""
    if body is None:
        return set()
    found = {(e.get("extensions") or {}).get("code") for e in body.get("errors") or []}
    for payload in (body.get("data") or {}).values():
        if isinstance(payload, dict):
            found |= {e.get("code") for e in payload.get("errors") or [] if isinstance(e, dict)}
    return {code for code in found if isinstance(code, str)}


@dataclass
class Tally:
    """What a run's answers were, so a run can show it reached the resolvers (an API
    refusing everything with a clean 400 would pass `check_answer` alone).

    - `answers`, `statuses`: every answer, by HTTP status.
    - `executed`: `data` is an object: execution started (the root resolvers ran).
    - `with_data`: and some root field holds a value (not all null).
    - `clean`: with a value and no error at all.
    - `codes`: answers holding each error code (top-level or in a payload's `errors`).
    - `payloads`: mutations answered with a payload object (the resolver ran to its end:
      a result or its typed `errors`).
    """

    answers: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    executed: int = 0
    with_data: int = 0
    clean: int = 0
    codes: Counter[str] = field(default_factory=Counter)
    payloads: int = 0

    def add(self, response: httpx.Response, body: Mapping[str, Any] | None, kind: str) -> None:
        self.answers += 1
        self.statuses[response.status_code] += 1
        data = (body or {}).get("data")
        if isinstance(data, dict):
            self.executed += 1
            if any(value is not None for value in data.values()):
                self.with_data += 1
                if not codes_in(body):
                    self.clean += 1
            if kind == "mutation" and any(isinstance(v, dict) for v in data.values()):
                self.payloads += 1
        self.codes.update(codes_in(body))

    def share(self, count: int) -> float:
        return count / self.answers if self.answers else 0.0

    @property
    def refused(self) -> int:
        """Answers with a 4xx status."""
        return sum(n for status, n in self.statuses.items() if 400 <= status < 500)

    def __str__(self) -> str:
        return (
            f"{self.answers} answers: {self.with_data} with data ({self.clean} without"
            f" errors), {self.executed} executed, {self.refused} 4xx,"
            f" {self.payloads} mutation payloads; statuses {dict(sorted(self.statuses.items()))},"
            f" codes {dict(self.codes.most_common())}"
        )


# -- the error log -----------------------------------------------------------------------

# Loggers that uvicorn's logging config, which every `uvicorn.Config` applies (the test
# servers' included, after the app routed them to the root logger), cuts off from the
# root logger, where pytest's `caplog` listens: "uvicorn" does not propagate, so an
# "Exception in ASGI application" on "uvicorn.error" never reached it.
UVICORN_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.asgi", "uvicorn.access")


class _ErrorRecords(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        # A record propagating from "uvicorn.error" to "uvicorn" (and on) is kept once.
        if not any(seen is record for seen in self.records):
            self.records.append(record)


@contextlib.contextmanager
def errors_logged() -> Iterator[list[logging.LogRecord]]:
    """The records logged at ERROR or above while the block runs, by the app (the root
    logger) or by uvicorn (its own loggers, wherever they propagate to)."""
    handler = _ErrorRecords()
    loggers = [logging.getLogger(), *(logging.getLogger(name) for name in UVICORN_LOGGERS)]
    for logger in loggers:
        logger.addHandler(handler)
    try:
        yield handler.records
    finally:
        for logger in loggers:
            logger.removeHandler(handler)


# -- values ------------------------------------------------------------------------------

INT64_MAX = 2**63 - 1

# Strings no client should send, each of which once reached the database or a parser
# (issue 10): NUL, lone surrogates, non-canonical digits, long runs, LIKE wildcards.
HOSTILE_STRINGS = (
    "",
    " ",
    "\x00",
    "bob\x00",
    "\ud800",
    "a\udfffb",
    "\u202eevil",
    "%",
    "_%_",
    "\\",
    "' OR '1'='1",
    "@",
    "#",
    "#\x00tag",
    "١٢٣",
    "1_000",
    "\U0001d532\U0001d52b",  # mathematical letters that NFKC folds to "un"
    "x" * 3000,
)


def hostile_ids() -> list[str]:
    """Global ids that decode to nothing we store: unknown types, ids out of int64 range,
    negative or zero, and base64 that is not an id at all."""
    return [
        to_global_id("User", INT64_MAX + 1),
        to_global_id("Post", -1),
        to_global_id("Comment", 0),
        to_global_id("Story", 10**30),
        to_global_id("Nope", 1),
        base64.b64encode(b"User:\x00").decode(),
        base64.b64encode(b"\xff\xfe").decode(),
        "not base64!",
        "VXNlcjox\x00",
    ]


# What an argument's name says of the value it wants: (word in the name, kind), first
# match wins; names with no word take any seeded value.
ID_KINDS = (("post", "Post"), ("user", "User"), ("comment", "Comment"), ("story", "Story"))
STRING_KINDS = (
    ("after", "cursor"),
    ("cursor", "cursor"),
    ("email", "email"),
    ("password", "password"),
    ("username", "username"),
    ("query", "username"),
    ("contenttype", "contentType"),
    ("name", "tag"),
    ("text", "text"),
    ("caption", "text"),
    ("bio", "text"),
)


def _kind(name: str, kinds: tuple[tuple[str, str], ...]) -> str | None:
    name = name.lower()
    return next((kind for word, kind in kinds if word in name), None)


@dataclass
class Known:
    """What the seeded world holds, for strategies to pick from: ids by type ("User",
    "Post", ...) and strings by kind ("username", "cursor", "email", ...)."""

    ids: dict[str, list[str]] = field(default_factory=dict)
    strings: dict[str, list[str]] = field(default_factory=dict)

    def id_values(self, one_in: int = 4, name: str = "") -> st.SearchStrategy[Any]:
        """A seeded id (of the type `name`, an argument's or a variable's, suggests: a
        `postId` gets a post's), else (one time in `one_in`) a hostile one."""
        kind = _kind(name, ID_KINDS)
        ids = self.ids.get(kind, []) if kind else [i for ids in self.ids.values() for i in ids]
        return mostly(
            st.sampled_from(ids or [i for ids in self.ids.values() for i in ids]),
            st.one_of(
                st.sampled_from(hostile_ids()),
                st.integers(-(2**70), 2**70),
                st.text(max_size=20),
            ),
            one_in,
        )

    def string_values(self, one_in: int = 4, name: str = "") -> st.SearchStrategy[str]:
        """A seeded string (of the kind `name` suggests: an `after` gets a cursor, an
        `email` an address), else (one time in `one_in`) a hostile one."""
        kind = _kind(name, STRING_KINDS)
        every = [value for values in self.strings.values() for value in values]
        return mostly(
            st.sampled_from(self.strings.get(kind, every) if kind else every),
            st.one_of(st.sampled_from(HOSTILE_STRINGS), st.text(max_size=40)),
            one_in,
        )

    def values_for(self, name: str, scalar: str, one_in: int) -> st.SearchStrategy[Any] | None:
        """Values for an ID or String argument (or variable, or input field) named `name`."""
        if scalar == "ID":
            return self.id_values(one_in, name)
        if scalar == "String":
            return self.string_values(one_in, name)
        return None

    def custom_scalars(self, one_in: int = 4) -> dict[str, st.SearchStrategy[graphql.ValueNode]]:
        """hypothesis-graphql's value-node strategies for the schema's scalars: the custom
        ones (it cannot guess them) and ID and String, biased toward real values (a
        hostile one one time in `one_in`)."""
        return {
            "Int": int_values(one_in).map(to_value_node),
            "UnsignedInt64": unsigned_int64_values().map(to_value_node),
            "DateTime": date_times().map(to_value_node),
            "ID": self.id_values(one_in).map(to_value_node),
            "String": self.string_values(one_in).map(to_value_node),
        }


def mostly(
    usual: st.SearchStrategy[Any], rare: st.SearchStrategy[Any], one_in: int = 4
) -> st.SearchStrategy[Any]:
    """`rare` one time in `one_in`, else `usual`: generated operations should mostly get
    past argument checks to the resolvers, and now and then probe the checks."""
    return st.integers(1, one_in).flatmap(lambda n: rare if n == 1 else usual)


def int_values(one_in: int = 4) -> st.SearchStrategy[int]:
    """Page sizes and such: small ones mostly, then the edges of Int and beyond."""
    return mostly(
        st.integers(-1, 30),
        st.one_of(
            st.integers(-(2**31), 2**31 - 1),
            st.sampled_from([2**31 - 1, 2**31, -(2**31) - 1, INT64_MAX + 1]),
        ),
        one_in,
    )


def unsigned_int64_values() -> st.SearchStrategy[Any]:
    """Byte sizes: plausible ones, the int64 edges, and the forms UnsignedInt64 refuses
    (fractions, signs, separators, other scripts' digits, leading zeros)."""
    return st.one_of(
        st.integers(0, 60 * 1024 * 1024),
        st.integers(0, 2**64 + 1),
        st.integers(0, 10**12).map(str),
        st.sampled_from(
            [-1, 1.9, "1.9", "-1", "+1", "1_000", "١٢٣", " 1", "01", "", "1e3", str(2**64), 2**64]
        ),
    )


def date_times() -> st.SearchStrategy[str]:
    return st.sampled_from(["2024-01-01T00:00:00+00:00", "not a date", "", "9999-99-99"])


def to_value_node(value: Any) -> graphql.ValueNode:
    """A GraphQL literal for a JSON-like value (as hypothesis-graphql's `nodes` build)."""
    if isinstance(value, bool):
        return nodes.Boolean(value)
    if isinstance(value, int):
        return nodes.Int(value)
    if isinstance(value, float):
        return nodes.Float(value)
    if value is None:
        return graphql.NullValueNode()
    return nodes.String(value)


# -- documents and variables ---------------------------------------------------------------


def single_field_operations(
    schema: graphql.GraphQLSchema, known: Known
) -> st.SearchStrategy[graphql.DocumentNode]:
    """Operations of one root field each (a query two times in three), never null, with each ID and String argument a seeded value of the kind its name
    says (`Known.values_for`: a `postId` a post's id, an `email` an address) nine times
    in ten: documents that reach their resolver, where the whole-schema strategy's
    (many fields, hostile values one time in four) are often refused before any runs."""
    scalars = known.custom_scalars(one_in=10)

    def by_field(root: graphql.GraphQLObjectType | None) -> st.SearchStrategy[Any]:
        strategies = {
            name: from_schema(
                schema, fields=[name], custom_scalars=scalars, allow_null=False, print_ast=_as_is
            )
            for name in sorted(root.fields if root else ())
        }
        return st.sampled_from(sorted(strategies)).flatmap(strategies.__getitem__)

    # Queries twice as often as mutations (the schema has twice as many mutations, most
    # of them refused to an anonymous client).
    queries, mutations = by_field(schema.query_type), by_field(schema.mutation_type)
    documents = st.sampled_from([queries, queries, mutations]).flatmap(lambda kind: kind)

    @st.composite
    def operations(draw: st.DrawFn) -> graphql.DocumentNode:
        document = draw(documents)
        return with_arguments_by_name(
            schema,
            document,
            lambda name, scalar: (
                None
                if (values := known.values_for(name, scalar, one_in=10)) is None
                else to_value_node(draw(values))
            ),
        )

    return operations()


def with_arguments_by_name(
    schema: graphql.GraphQLSchema,
    document: graphql.DocumentNode,
    value_for: Any,
) -> graphql.DocumentNode:
    """The document with each scalar literal of an argument or input field replaced by
    `value_for(its name, its scalar type's name)`, unless that is None; an argument's
    name is said with its field's (`post id`, `addComment postId`)."""
    type_info = graphql.TypeInfo(schema)

    def replace(node: Any, name: str, type_: graphql.GraphQLInputType | None) -> Any:
        if type_ is None or isinstance(node.value, graphql.VariableNode):
            return None
        named = graphql.get_nullable_type(type_)
        if not isinstance(named, graphql.GraphQLScalarType):
            return None
        value = value_for(name, named.name)
        if value is None:
            return None
        return node.__class__(name=node.name, value=value)

    fields: list[str] = []  # the fields we are in, for their names

    class Fill(graphql.Visitor):
        def enter_field(self, node: graphql.FieldNode, *_: Any) -> None:
            fields.append(node.name.value)

        def leave_field(self, *_: Any) -> None:
            fields.pop()

        def enter_argument(self, node: graphql.ArgumentNode, *_: Any) -> Any:
            argument = type_info.get_argument()
            name = f"{fields[-1]} {node.name.value}" if fields else node.name.value
            return replace(node, name, argument.type if argument else None)

        def enter_object_field(self, node: graphql.ObjectFieldNode, *_: Any) -> Any:
            return replace(node, node.name.value, type_info.get_input_type())

    return graphql.visit(document, graphql.TypeInfoVisitor(type_info, Fill()))


def _as_is(document: graphql.DocumentNode) -> graphql.DocumentNode:
    return document


def with_variables(
    schema: graphql.GraphQLSchema, document: graphql.DocumentNode
) -> tuple[str, dict[str, Any]]:
    """The document with each literal argument replaced by a variable of the argument's
    type, and the variables' values: `{ user(username: "bob") { id } }` becomes
    `query ($v0: String!) { user(username: $v0) { id } }` with `{"v0": "bob"}`."""
    type_info = graphql.TypeInfo(schema)
    variables: dict[str, Any] = {}
    definitions: list[graphql.VariableDefinitionNode] = []

    class Extract(graphql.Visitor):
        def enter_argument(self, node: graphql.ArgumentNode, *_: Any) -> Any:
            argument = type_info.get_argument()
            if argument is None or isinstance(node.value, graphql.VariableNode):
                return None
            name = f"v{len(definitions)}"
            variables[name] = graphql.value_from_ast_untyped(node.value)
            definitions.append(
                graphql.VariableDefinitionNode(
                    variable=graphql.VariableNode(name=graphql.NameNode(value=name)),
                    type=graphql.parse_type(str(argument.type)),
                    directives=(),
                )
            )
            return graphql.ArgumentNode(
                name=node.name,
                value=graphql.VariableNode(name=graphql.NameNode(value=name)),
            )

    visited = graphql.visit(document, graphql.TypeInfoVisitor(type_info, Extract()))
    operations = [
        graphql.OperationDefinitionNode(
            operation=op.operation,
            name=op.name,
            directives=op.directives,
            selection_set=op.selection_set,
            variable_definitions=tuple(definitions),
        )
        if isinstance(op, graphql.OperationDefinitionNode)
        else op
        for op in visited.definitions
    ]
    return graphql.print_ast(graphql.DocumentNode(definitions=tuple(operations))), variables


def operation_type(document: str) -> str:
    """ "query", "mutation" or "subscription" of a (one-operation) document."""
    for definition in graphql.parse(document).definitions:
        if isinstance(definition, graphql.OperationDefinitionNode):
            return definition.operation.value
    raise ValueError("no operation")


JUNK_VALUES: tuple[Any, ...] = (None, "", "x", 0, -1, 1.5, True, [], {}, 2**70, [None], {"a": 1})


def variables_for(
    schema: graphql.GraphQLSchema, document: str, known: Known, one_in: int = 8
) -> st.SearchStrategy[dict[str, Any]]:
    """Values for a fixed document's variables, from their declared types and names:
    mostly of the right type (seeded ids, names and cursors, a hostile one one time in
    `one_in`), now and then (one time in twenty) of a wrong one."""
    operation = next(
        d
        for d in graphql.parse(document).definitions
        if isinstance(d, graphql.OperationDefinitionNode)
    )
    required: dict[str, st.SearchStrategy[Any]] = {}
    optional: dict[str, st.SearchStrategy[Any]] = {}
    hints = variable_uses(operation)
    for definition in operation.variable_definitions or ():
        type_ = graphql.type_from_ast(schema, definition.type)
        if type_ is None or not graphql.is_input_type(type_):
            raise ValueError(f"not an input type: {graphql.print_ast(definition.type)}")
        target = optional if definition.default_value is not None else required
        name = definition.variable.name.value
        hint = hints.get(name, name)
        target[name] = _sometimes_wrong(input_values(type_, known, hint, one_in))
    return st.fixed_dictionaries(required, optional=optional)


def variable_uses(operation: graphql.OperationDefinitionNode) -> dict[str, str]:
    """Where each variable is used, as `field argument` (`post id`, `follow userId`), or
    the input field's name: what its value should be (`Known.values_for`)."""
    uses: dict[str, str] = {}
    fields: list[str] = []

    class Uses(graphql.Visitor):
        def enter_field(self, node: graphql.FieldNode, *_: Any) -> None:
            fields.append(node.name.value)

        def leave_field(self, *_: Any) -> None:
            fields.pop()

        def enter_argument(self, node: graphql.ArgumentNode, *_: Any) -> None:
            if isinstance(node.value, graphql.VariableNode) and fields:
                uses.setdefault(node.value.name.value, f"{fields[-1]} {node.name.value}")

        def enter_object_field(self, node: graphql.ObjectFieldNode, *_: Any) -> None:
            if isinstance(node.value, graphql.VariableNode):
                uses.setdefault(node.value.name.value, node.name.value)

    graphql.visit(operation, Uses())
    return uses


def _sometimes_wrong(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """A value of the wrong type one time in twenty."""
    return mostly(strategy, st.sampled_from(JUNK_VALUES), 20)


def input_values(
    type_: graphql.GraphQLInputType, known: Known, name: str = "", one_in: int = 4
) -> st.SearchStrategy[Any]:
    """JSON values of a GraphQL input type (as a variable's value), those of IDs and
    Strings as its (the variable's or the input field's) `name` suggests; a hostile
    value one time in `one_in`."""
    if isinstance(type_, graphql.GraphQLNonNull):
        return input_values(type_.of_type, known, name, one_in)
    nullable: st.SearchStrategy[Any] = st.none()
    if isinstance(type_, graphql.GraphQLList):
        items = input_values(type_.of_type, known, name, one_in)
        return st.one_of(st.lists(items, max_size=3), items, nullable)
    if isinstance(type_, graphql.GraphQLInputObjectType):
        fields = {
            field_name: _sometimes_wrong(input_values(f.type, known, field_name, one_in))
            for field_name, f in type_.fields.items()
        }
        need = {n: s for n, s in fields.items() if graphql.is_required_input_field(type_.fields[n])}
        rest = {n: s for n, s in fields.items() if n not in need}
        return st.fixed_dictionaries(need, optional=rest)
    if isinstance(type_, graphql.GraphQLEnumType):
        return st.sampled_from([*type_.values, "NOPE"])
    assert isinstance(type_, graphql.GraphQLScalarType)
    scalars: dict[str, st.SearchStrategy[Any]] = {
        "Int": int_values(one_in),
        "Float": st.floats(allow_nan=False, allow_infinity=False),
        "Boolean": st.booleans(),
        "String": known.string_values(one_in, name),
        "ID": known.id_values(one_in, name),
        "UnsignedInt64": unsigned_int64_values(),
        "DateTime": date_times(),
    }
    return scalars.get(type_.name, st.text(max_size=10))


def documents_of(operations: Mapping[str, str]) -> dict[str, str]:
    """The queries and mutations among named operations (subscriptions left out)."""
    return {
        name: text
        for name, text in sorted(operations.items())
        if operation_type(text) in {"query", "mutation"}
    }
