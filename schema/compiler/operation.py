"""Compiled GraphQL queries: `DocumentCompiler.get(query, operation_name)` parses,
validates and compiles a document once; `CompiledOperation.execute` then builds the
response straight from what the root resolvers return.

The response is the one Strawberry's HTTP view gives for the same request (graphql-core
execution, `schema.process_errors`, `process_result`), byte for byte once encoded;
`tests/test_compiler.py` checks it against Strawberry on generated documents.

Supported: query operations over object types, lists, non-null, scalars and enums,
aliases, `__typename`, fragments, `@skip`/`@include`, plain fields, sync resolvers, and
async resolvers on root fields (run concurrently, as graphql-core does). A sync resolver
marked `may_return_awaitable` (`schema.compiler.support`) answers from memory when it
can; when it returns an awaitable instead, the plan closes it and `execute` raises
`FallBack`, so Strawberry answers that request (and awaits it). Anything else
(mutations, subscriptions, interfaces and unions, permissions or other field
extensions, async resolvers below the root, introspection, schema extensions other than
the parser/validation caches and the limiters) makes `get` return None: the caller
runs Strawberry instead.

Known differences, none reachable with this schema's resolvers: an unmarked *sync*
resolver returning an awaitable, or a list field returning an async iterable, is not
awaited; an
object of exactly a type's own class that was `strawberry.cast` to another type is taken
as its class; a root field failing synchronously discards the async root fields not
started yet instead of running them in the background; `info.input_extensions` (the
request's `extensions`) is None; an input type's `from_input` gets `info` only when the
field's resolver takes one.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from functools import lru_cache
from typing import Any

from graphql import (
    DocumentNode,
    FragmentDefinitionNode,
    GraphQLError,
    OperationDefinitionNode,
    OperationType,
    parse,
    specified_rules,
)
from graphql.execution.collect_fields import (
    CollectFieldsContext,
    FragmentDetails,
    should_include_node,
)
from graphql.execution.values import VariableValues, get_variable_values
from graphql.pyutils import gather_with_cancel
from strawberry.extensions import (
    AddValidationRules,
    MaxTokensLimiter,
    ParserCache,
    ValidationCache,
)
from strawberry.schema import Schema
from strawberry.schema.schema import StrawberryGraphQLCoreExecutionContext, validate_document
from strawberry.types import ExecutionContext, Info
from strawberry.types.graphql import OperationType as StrawberryOperationType

from schema.compiler.codegen import Plan, plan_operation
from schema.compiler.runtime import Deferred, OperationShape, Run
from schema.compiler.support import (
    SchemaFacts,
    conditional_nodes,
    selects_may_await,
    unsupported_reason,
)

log = logging.getLogger("instagraph.compiler")

# graphql-core's default, which Strawberry keeps.
MAX_COERCION_ERRORS = 50
# Compiled variants per document, one per combination of variable-driven @skip/@include.
MAX_VARIANTS = 16

_NO_VARIABLES = VariableValues({}, {})


class FallBack(Exception):
    """Raised by `CompiledOperation.execute` when this request needs something the plan
    does not do: the caller runs the same request through Strawberry, which answers it
    whole (the plan's response is dropped). Either before any resolver ran (a
    `@skip`/`@include` whose variable is explicitly null, which graphql-core reports as
    a request or a field error depending on where the directive sits), or when a
    resolver marked `may_return_awaitable` returned an awaitable: resolvers ran then,
    but only those of a query (the compiler compiles nothing else), which read and do
    not change anything the second run would see differently."""


class CompiledOperation:
    """One query operation of one document, ready to run many times."""

    def __init__(
        self,
        compiler: DocumentCompiler,
        query: str,
        document: DocumentNode,
        operation: OperationDefinitionNode,
        fragments: dict[str, FragmentDefinitionNode],
    ) -> None:
        self.operation_type: OperationType = operation.operation
        # This operation's cost function (`schema.cost.OperationCost`), set once by the
        # fast path: a request it serves then looks nothing up by the document's text.
        self.cost_function: Any = None
        self._compiler = compiler
        self._query = query
        self._document = document
        self._operation_name = operation.name.value if operation.name else None
        self._shape = OperationShape(compiler.facts.graphql_schema, operation, fragments)
        self._fragments = {name: FragmentDetails(node) for name, node in fragments.items()}
        self._variable_definitions = operation.variable_definitions or ()
        self._conditions = conditional_nodes(operation, fragments)
        self._condition_context = CollectFieldsContext(
            compiler.facts.graphql_schema,
            self._fragments,
            _NO_VARIABLES,
            operation,
            compiler.facts.graphql_schema.query_type,  # type: ignore[arg-type]  # checked by the compiler
            {},
            False,
            [],
            False,
        )
        self._deferring = selects_may_await(compiler.facts, operation, fragments)
        self._variants: OrderedDict[tuple[bool, ...], Plan] = OrderedDict()
        # Without variable-driven directives there is one variant: compile it now, so a
        # bug or an unexpected schema shows at `get` (which then returns None).
        self._plan = None if self._conditions else self._compile(_NO_VARIABLES)

    def _compile(self, variables: VariableValues) -> Plan:
        return plan_operation(
            self._compiler.facts,
            self._shape,
            self._fragments,
            variables,
            deferring=self._deferring,
        )

    def _plan_for(self, variables: VariableValues) -> Plan:
        try:
            decisions = tuple(
                should_include_node(self._condition_context, node, variables)
                for node in self._conditions
            )
        except GraphQLError as error:
            raise FallBack(error.message) from error
        plan = self._variants.get(decisions)
        if plan is None:
            if len(self._variants) >= MAX_VARIANTS:
                # A client cycling through directive combinations must not make every
                # request pay a compilation: the first variants stay, the rest run on
                # Strawberry (whose caches hold the parsed document).
                raise FallBack("too many directive variants")
            try:
                plan = self._compile(variables)
            except Exception as error:  # a bug here must cost speed, never a wrong answer
                log.exception("could not compile a variant; Strawberry will run it")
                raise FallBack(str(error)) from error
            self._variants[decisions] = plan
        return plan

    @property
    def source(self) -> str:
        """The generated Python of the variant without variable-driven directives (for
        debugging and tests)."""
        plan = self._plan or self._compile(_NO_VARIABLES)
        return plan.source

    async def execute(
        self, context: Any, variables: dict[str, Any] | None, root_value: Any = None
    ) -> dict[str, Any]:
        """The JSON-ready response dict, identical to what Strawberry's HTTP view returns
        for the same request: `{"data": ...}` plus `"errors"` when there are errors,
        formatted after `schema.process_errors`. Variable coercion errors give the same
        `{"data": None, "errors": [...]}` as Strawberry. Raises `FallBack` for the rare
        request the plan leaves to Strawberry."""
        coerced = _NO_VARIABLES
        if self._variable_definitions:
            result = get_variable_values(
                self._shape.schema,
                self._variable_definitions,
                variables or {},
                max_errors=MAX_COERCION_ERRORS,
            )
            if isinstance(result, list):
                return self._respond(None, result, context, variables, root_value)
            coerced = result
        plan = self._plan or self._plan_for(coerced)
        run = Run(self._shape, context, root_value, coerced)
        data: dict[str, Any] | None
        try:
            data = plan.root(run)
        except (GraphQLError, Deferred) as error:
            # A non-null root field failed before the async ones started: graphql-core
            # would settle them in the background and drop whatever they report.
            for _, coroutine in run.pending:
                coroutine.close()
            if isinstance(error, Deferred):
                raise FallBack(str(error)) from None
            data = self._null_data(run, error)
        else:
            pending = run.pending
            try:
                if len(pending) == 1:
                    key, coroutine = pending[0]
                    data[key] = await coroutine
                elif pending:
                    # The first failure cancels the others (a deferral included).
                    values = await gather_with_cancel(*(coroutine for _, coroutine in pending))
                    for (key, _), value in zip(pending, values, strict=True):
                        data[key] = value
            except GraphQLError as error:
                data = self._null_data(run, error)
            except Deferred as deferred:
                raise FallBack(str(deferred)) from None
        return self._respond(data, run.errors, context, variables, root_value)

    @staticmethod
    def _null_data(run: Run, error: GraphQLError) -> None:
        run.add(error)
        run.nulled = True
        return None

    def _respond(
        self,
        data: dict[str, Any] | None,
        errors: list[GraphQLError],
        context: Any,
        variables: dict[str, Any] | None,
        root_value: Any,
    ) -> dict[str, Any]:
        if not errors:
            return {"data": data}
        schema = self._compiler.schema
        execution_context = ExecutionContext(
            query=self._query,
            schema=schema,
            allowed_operations=(StrawberryOperationType(self.operation_type.value),),
            context=context,
            variables=variables,
            root_value=root_value,
            provided_operation_name=self._operation_name,
        )
        execution_context.graphql_document = self._document
        execution_context.pre_execution_errors = errors
        # Strawberry's own entry point: field suggestions removed when configured, then
        # the schema's process_errors (classification, logging, masking).
        schema._process_errors(errors, execution_context)
        return {"data": data, "errors": [error.formatted for error in errors]}


class DocumentCompiler:
    """Parses, validates and compiles query documents for one Strawberry schema, with a
    bounded LRU of the outcome (negative ones included) keyed by (query, operation name).

    The parse limit and the extra validation rules are read from the schema's own
    extensions (`MaxTokensLimiter`, `AddValidationRules` and its subclasses), so a
    document compiles only if Strawberry would run it. A schema with any other kind of
    extension (which could hook into execution), custom directives or a custom Info
    class compiles nothing.
    """

    def __init__(self, schema: Schema, *, maxsize: int = 512, compile_after: int = 1) -> None:
        """`compile_after`: how many requests must bring the same (document, operation)
        before it is compiled. Compiling costs tens of milliseconds of CPU on the event
        loop; with 2, a client sending a new document every time (an attacker, or a
        client building documents with literals) never triggers it and runs on
        Strawberry, while a real client's documents compile on their second use.
        Documents known in advance are compiled at start with `pin`."""
        self.schema = schema
        self.compile_after = compile_after
        self._sightings: OrderedDict[tuple[str, str | None], int] = OrderedDict()
        self._maxsize = maxsize
        self._pinned: dict[tuple[str, str | None], CompiledOperation | None] = {}
        self.facts = SchemaFacts.of(schema)
        self.max_tokens: int | None = None
        rules: list[Any] = []
        self.disabled: str | None = None
        for extension in schema.get_extensions():
            if isinstance(extension, (ParserCache, ValidationCache)):
                continue
            if getattr(extension, "handled_by_fast_path", False):
                continue  # applied around the compiled plan too (schema.cost, schema.fast_path)
            if isinstance(extension, MaxTokensLimiter):
                self.max_tokens = extension.max_token_count
            elif isinstance(extension, AddValidationRules):
                rules.extend(extension.validation_rules)
            else:
                self.disabled = f"schema extension {type(extension).__name__}"
        if schema.config.info_class is not Info:
            self.disabled = "custom Info class"
        if getattr(schema.config, "enable_experimental_incremental_execution", False):
            self.disabled = "incremental execution"
        if schema.execution_context_class is not StrawberryGraphQLCoreExecutionContext:
            self.disabled = "custom execution context"
        if self.disabled:
            log.warning("compiled execution disabled: %s", self.disabled)
        self.validation_rules = (*specified_rules, *rules)
        self._get = lru_cache(maxsize=maxsize)(self._compile)

    def get(self, query: str, operation_name: str | None) -> CompiledOperation | None:
        """The compiled operation, or None when the document is invalid or outside the
        subset, or not yet seen `compile_after` times (the caller then runs Strawberry,
        which reports any error)."""
        key = (query, operation_name)
        if key in self._pinned:
            return self._pinned[key]
        if self.compile_after > 1 and not self._seen_enough(key):
            return None
        return self._get(query, operation_name)

    def _seen_enough(self, key: tuple[str, str | None]) -> bool:
        seen = min(self._sightings.pop(key, 0) + 1, self.compile_after)
        self._sightings[key] = seen  # most recent last; the least recent go first
        if len(self._sightings) > self._maxsize:
            self._sightings.popitem(last=False)
        return seen >= self.compile_after

    def pin(self, query: str) -> int:
        """Compile every operation of a document known in advance (a trusted document),
        under its name and, for a single-operation document, under no name too, as
        clients send either; kept outside the LRU. Returns how many compiled."""
        try:
            document = parse(query, max_tokens=self.max_tokens)
        except GraphQLError:
            return 0
        names: list[str | None] = [
            d.name.value if d.name else None
            for d in document.definitions
            if isinstance(d, OperationDefinitionNode)
        ]
        if len(names) == 1 and names[0] is not None:
            names.append(None)
        for name in names:
            self._pinned[(query, name)] = self._compile(query, name)
        return sum(1 for name in names if self._pinned[(query, name)] is not None)

    def is_valid(self, query: str) -> bool:
        """Whether the document parses within the token limit and passes validation with
        the schema's rules (what Strawberry would check before running it)."""
        try:
            document = parse(query, max_tokens=self.max_tokens)
        except GraphQLError:
            return False
        return not validate_document(self.facts.graphql_schema, document, self.validation_rules)

    def cache_info(self) -> Any:
        """The LRU's statistics (`functools._CacheInfo`)."""
        return self._get.cache_info()

    def _compile(self, query: str, operation_name: str | None) -> CompiledOperation | None:
        if self.disabled:
            return None
        try:
            document = (
                parse(query, max_tokens=self.max_tokens)
                if self.max_tokens is not None
                else parse(query)
            )
        except GraphQLError:
            return None
        if validate_document(self.facts.graphql_schema, document, self.validation_rules):
            return None
        operations = [d for d in document.definitions if isinstance(d, OperationDefinitionNode)]
        fragments = {
            d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)
        }
        # graphql-core's choice: the named operation, else the only one. Several and no
        # name is a request error, which Strawberry's path reports (INVALID_INPUT).
        if operation_name is not None:
            chosen = [o for o in operations if o.name and o.name.value == operation_name]
        elif len(operations) == 1:
            chosen = operations[:1]
        else:
            chosen = []
        if not chosen:
            return None
        operation = chosen[0]
        reason = unsupported_reason(self.facts, operation, fragments)
        if reason is not None:
            log.debug("not compiled (%s): %.80s", reason, query)
            return None
        try:
            return CompiledOperation(self, query, document, operation, fragments)
        except Exception:  # a bug here must cost speed, never a wrong answer
            log.exception("could not compile a document; Strawberry will run it")
            return None


__all__ = ["CompiledOperation", "DocumentCompiler", "FallBack"]
