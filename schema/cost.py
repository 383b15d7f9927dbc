"""Query cost: computed once per document, checked against a maximum, charged against
a per-user budget (issue 10, point 2; docs/limits.md).

The cost model is GitHub's (docs.github.com, "Rate limits and query limits for the
GraphQL API"): every paged field (a field with a `first` argument: the connections)
is one fetch per parent object, and its children are fetched once per item it
returns, so `first` multiplies through the nesting. A query costs the number of
fetches divided by 100, rounded, at least 1:

    viewer { followers(first: 100) { edges { node { followers(first: 50) { ... } } } } }
    1 fetch of followers + 100 fetches of their followers = 101 fetches -> cost 1
    feed(first: 20) { edges { node { comments(first: 2) { ... } } } }
    1 + 20 = 21 fetches -> cost 1

`first` is the literal in the document, else the variable's value as graphql-core
coerces it (`100.0` is 100), else the variable's default, else the field's own default
(20); an explicit null is the field's default. Any page counts as at most 101. A list
without `first` multiplies by its bound in the domain (`LIST_SIZES`: the stories tray,
a reel's stories, a post's media...). Fragments and both sides of `@skip`/`@include`
count. A mutation costs MUTATION_COST (5) per root field plus the fetches of its
selection / 100 (rounded, may be 0); a subscription costs what its selection costs,
charged once when it starts, and is refused above MAX_SUBSCRIPTION_COST (it re-runs its
selection on every event).

The cost function of each (document, operation) is built once (`OperationCost`, a
sum of products of constants and variables, kept in a bounded LRU keyed by a digest of
the document), so a request pays a digest, a dict lookup and a few multiplications.
Above MAX_QUERY_COST the request is refused with QUERY_TOO_COMPLEX before any resolver
runs. Then the cost is charged against the budget of the viewer (of the client address
when anonymous; `domain.limits.address_of`) through the process's leases
(`infra.ratelimit.LeasedBuckets`): a Redis round trip only when this process's lease of
that budget runs out. A spent budget refuses the request with RATE_LIMITED and
`extensions.retryAfter`, HTTP 429 with `Retry-After` (`schema.graphql_http`).

Both executors charge through `QueryCosts.charge`: Strawberry's with `QueryCostExtension`
(an `on_execute` hook, no `resolve` hook: execution keeps its speed), the compiled one
in `schema.fast_path` (the compiler ignores this extension: `handled_by_fast_path`).
Only requests that came through the app (HTTP or WebSocket: the context has a
`request`) are limited; in-process executions (tests, scripts) are not.

Successful responses carry the charge (`QUERY_COST_EXTENSION`, on by default):

    "extensions": {"cost": {"requestedQueryCost": 1, "limit": 5000, "remaining": 4999,
                            "resetAt": "2026-12-01T11:02:07Z"}}

`remaining` is what the budget holds after this request (this process's view: within
one lease of the truth per other API process serving the same user), `resetAt` when it
is full again (GCRA refills continuously: one point every period / limit seconds).
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections import OrderedDict
from collections.abc import AsyncGenerator, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, ClassVar, NamedTuple

from graphql import (
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLArgument,
    GraphQLError,
    GraphQLInterfaceType,
    GraphQLNamedType,
    GraphQLObjectType,
    GraphQLOutputType,
    GraphQLSchema,
    InlineFragmentNode,
    IntValueNode,
    NullValueNode,
    OperationDefinitionNode,
    OperationType,
    SelectionSetNode,
    VariableNode,
    get_named_type,
    get_nullable_type,
    is_list_type,
    parse,
)
from redis.exceptions import RedisError
from strawberry.extensions import SchemaExtension

from domain import posts as post_domain
from domain import stories as story_domain
from domain.errors import ErrorCode
from domain.limits import address_of
from infra.ratelimit import Rate, Verdict
from infra.redis import log_fallback
from schema.common import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE
from settings import Settings

log = logging.getLogger("instagraph.cost")

PAGE_ARGUMENT = "first"
FETCHES_PER_POINT = 100
COST_CACHE_SIZE = 512
BUDGET_KEY_PREFIX = "limit:budget:"
# A page size counts up to one more than the largest page: larger ones are refused by
# the resolvers anyway, and the cost stays a modest number whatever a client sends.
LARGEST_FACTOR = MAX_PAGE_SIZE + 1


class ListSize(NamedTuple):
    """A list field without `first`: how many items it returns at most (bounded by the
    domain), and whether it is a fetch of its own (one per parent object, as a paged
    field is) or comes with its parent's."""

    size: int
    fetch: bool


# Every list-returning field without a `first` argument whose items can hold paged
# fields, by (type, field), with the domain's bound on its size (a test checks that
# every such field of the schema is here). A list field not listed counts as the largest
# page; the `edges` of a connection count 1 (their connection's `first` counts them).
LIST_SIZES: dict[tuple[str, str], ListSize] = {
    ("Query", "storiesTray"): ListSize(story_domain.TRAY_MAX_REELS, fetch=True),
    ("StoryReel", "stories"): ListSize(story_domain.REEL_MAX_STORIES, fetch=False),
    ("Post", "media"): ListSize(post_domain.MAX_MEDIA_ITEMS, fetch=False),
    # Marks everything read and answers the first page (of DEFAULT_PAGE_SIZE).
    ("Mutation", "markNotificationsRead"): ListSize(DEFAULT_PAGE_SIZE, fetch=True),
}


class VariableFactor(NamedTuple):
    """A page size given by a variable: its name, the size when the variable is absent
    (its default, else the field's), and when it is null (the field's default)."""

    name: str
    absent: int
    null: int


# A factor of a term: a constant page size, or a variable's.
Factor = int | VariableFactor


@dataclass(frozen=True, slots=True)
class OperationCost:
    """The cost function of one operation: `fixed` plus the fetches (a sum over `terms`,
    each the product of its factors: one term per paged field) / 100."""

    operation: OperationType
    terms: tuple[tuple[Factor, ...], ...]
    fixed: int
    constant: int | None  # the cost when no factor depends on a variable

    def of(self, variables: Mapping[str, Any] | None) -> int:
        """The cost with these variables."""
        if self.constant is not None:
            return self.constant
        fetches = 0
        for term in self.terms:
            product = 1
            for factor in term:
                product *= factor if isinstance(factor, int) else _variable(variables, factor)
            fetches += product
        return self._points(fetches)

    def _points(self, fetches: int) -> int:
        rounded = (fetches + FETCHES_PER_POINT // 2) // FETCHES_PER_POINT
        if self.operation is OperationType.MUTATION:
            return self.fixed + rounded
        return max(1, rounded)

    @classmethod
    def build(
        cls, operation: OperationDefinitionNode, terms: list[tuple[Factor, ...]], fixed: int
    ) -> OperationCost:
        frozen = tuple(terms)
        cost = cls(operation.operation, frozen, fixed, None)
        if all(isinstance(f, int) for term in frozen for f in term):
            cost = cls(operation.operation, frozen, fixed, cost.of(None))
        return cost


_ABSENT = object()


def _variable(variables: Mapping[str, Any] | None, factor: VariableFactor) -> int:
    """A variable's page size as graphql-core will coerce it: an Int, or a Float with an
    integral value (`100.0` is Int 100); null is the field's default. Anything else is
    refused by coercion, and costs the largest page meanwhile."""
    value = variables.get(factor.name, _ABSENT) if variables else _ABSENT
    if value is _ABSENT:
        return factor.absent
    if value is None:
        return factor.null
    if isinstance(value, bool):
        return LARGEST_FACTOR
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, int):
        return max(0, min(value, LARGEST_FACTOR))
    return LARGEST_FACTOR


def operation_cost(
    schema: GraphQLSchema,
    document: DocumentNode,
    operation_name: str | None,
    *,
    mutation_cost: int,
) -> OperationCost | None:
    """The cost function of the operation a request runs (by name, else the only one);
    None when the document names no such operation (validation then reports it)."""
    operations = [d for d in document.definitions if isinstance(d, OperationDefinitionNode)]
    if operation_name is not None:
        chosen = [o for o in operations if o.name and o.name.value == operation_name]
    else:
        chosen = operations if len(operations) == 1 else []
    if not chosen:
        return None
    operation = chosen[0]
    root = schema.get_root_type(operation.operation)
    if root is None:
        return None
    fragments = {
        d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)
    }
    defaults: dict[str, int | None] = {}
    for definition in operation.variable_definitions or ():
        default = definition.default_value
        if isinstance(default, IntValueNode):
            defaults[definition.variable.name.value] = _clamp(int(default.value))
        elif isinstance(default, NullValueNode):
            defaults[definition.variable.name.value] = None
    terms: list[tuple[Factor, ...]] = []
    root_fields = 0

    def walk(
        parent: GraphQLNamedType,
        selection_set: SelectionSetNode,
        factors: tuple[Factor, ...],
        spread: frozenset[str],
    ) -> None:
        nonlocal root_fields
        for selection in selection_set.selections:
            if isinstance(selection, FieldNode):
                if not isinstance(parent, GraphQLObjectType | GraphQLInterfaceType):
                    continue
                field = parent.fields.get(selection.name.value)
                if field is None:  # __typename, or unknown (validation reports it)
                    continue
                if parent is root:
                    root_fields += 1
                inner = factors
                if PAGE_ARGUMENT in field.args:
                    terms.append(factors)  # one fetch per object of the parent level
                    page = _page_factor(selection, field.args[PAGE_ARGUMENT], defaults)
                    inner = (*factors, page)
                else:
                    sized = _list_size(parent, selection.name.value, field.type)
                    if sized is not None:
                        if sized.fetch:
                            terms.append(factors)
                        inner = (*factors, sized.size)
                if selection.selection_set is not None:
                    walk(get_named_type(field.type), selection.selection_set, inner, spread)
            elif isinstance(selection, InlineFragmentNode):
                condition = selection.type_condition
                target = schema.get_type(condition.name.value) if condition else parent
                if target is not None:
                    walk(target, selection.selection_set, factors, spread)
            elif isinstance(selection, FragmentSpreadNode):
                name = selection.name.value
                fragment = fragments.get(name)
                if fragment is None or name in spread:  # unknown or a cycle: validation's
                    continue
                target = schema.get_type(fragment.type_condition.name.value)
                if target is not None:
                    walk(target, fragment.selection_set, factors, spread | {name})

    walk(root, operation.selection_set, (), frozenset())
    # A mutation's price is per root field: 15 aliased follows are 15 follows.
    fixed = mutation_cost * root_fields if operation.operation is OperationType.MUTATION else 0
    return OperationCost.build(operation, terms, fixed)


def _list_size(parent: GraphQLNamedType, name: str, output: GraphQLOutputType) -> ListSize | None:
    """How a field without `first` multiplies what is below it (None: once)."""
    listed = LIST_SIZES.get((parent.name, name))
    if listed is not None:
        return listed
    if not is_list_type(get_nullable_type(output)):
        return None
    if name == "edges" and parent.name.endswith("Connection"):
        return None  # counted by the connection's `first`
    return ListSize(MAX_PAGE_SIZE, fetch=False)


def _clamp(size: int) -> int:
    return max(0, min(size, LARGEST_FACTOR))


def _page_factor(
    selection: FieldNode, argument: GraphQLArgument, defaults: Mapping[str, int | None]
) -> Factor:
    default = argument.default_value
    field_default = DEFAULT_PAGE_SIZE  # what the resolvers use when `first` is null
    if isinstance(default, int) and not isinstance(default, bool):
        field_default = _clamp(default)
    for node in selection.arguments or ():
        if node.name.value != PAGE_ARGUMENT:
            continue
        value = node.value
        if isinstance(value, IntValueNode):
            return _clamp(int(value.value))
        if isinstance(value, VariableNode):
            name = value.name.value
            absent = defaults.get(name, field_default)
            return VariableFactor(name, field_default if absent is None else absent, field_default)
        if isinstance(value, NullValueNode):
            return field_default
        return LARGEST_FACTOR  # a value validation refuses
    return field_default


# -- charging --------------------------------------------------------------------------


class Charge(NamedTuple):
    """A request's charge: the cost, and what the budget said (None: no budget)."""

    cost: int
    verdict: Verdict | None
    limit: int

    def report(self) -> dict[str, Any]:
        """`extensions.cost` (module doc)."""
        report: dict[str, Any] = {"requestedQueryCost": self.cost}
        if self.verdict is not None:
            report["limit"] = self.limit
            report["remaining"] = self.verdict.remaining
            report["resetAt"] = _utc_text(int(time.time() + self.verdict.reset_after + 0.999))
        return report


@lru_cache(maxsize=1024)
def _utc_text(second: int) -> str:
    """A Unix second as ISO 8601 UTC, formatted once per second (responses of one second
    share it: strftime is the costliest step of a charge's report)."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(second))


class QueryRefused(Exception):
    """A request refused before execution: too complex, or over its budget."""

    def __init__(self, error: GraphQLError, charge: Charge | None) -> None:
        super().__init__(error.message)
        self.error = error
        self.charge = charge


class QueryCosts:
    """The process's cost functions (an LRU by document and operation name) and the
    charging of requests against their budget. One per schema (`schema.costs`)."""

    def __init__(self, settings: Settings, schema: GraphQLSchema | None = None) -> None:
        self.schema = schema
        self.settings = settings
        self.max_cost = settings.max_query_cost
        self.budget = (
            Rate(settings.query_budget_points, settings.query_budget_period_seconds)
            if settings.query_budget_points > 0
            else None
        )
        self.lease = max(1, settings.query_budget_lease_points)
        self.max_subscription_cost = settings.max_subscription_cost
        self.report = settings.query_cost_extension
        # By a digest of the document: 512 documents of up to a megabyte each must not
        # be kept only to name their cost functions.
        self._costs: OrderedDict[tuple[bytes, str | None], OperationCost | None] = OrderedDict()

    def bind(self, schema: GraphQLSchema) -> None:
        """The schema's graphql-core schema (known once the Strawberry schema is built)."""
        self.schema = schema

    @property
    def enabled(self) -> bool:
        return self.max_cost > 0 or self.budget is not None

    def cost_function(
        self, query: str, operation_name: str | None, document: DocumentNode | None = None
    ) -> OperationCost | None:
        """The cost function of this (document, operation), built on first use."""
        digest = hashlib.blake2b(query.encode("utf-8", "surrogatepass"), digest_size=16)
        key = (digest.digest(), operation_name)
        try:
            found = self._costs[key]
        except KeyError:
            pass
        else:
            self._costs.move_to_end(key)
            return found
        if document is None:
            try:
                document = parse(query)
            except GraphQLError:
                return None
        if self.schema is None:
            raise RuntimeError("QueryCosts.bind was not called")
        found = operation_cost(
            self.schema, document, operation_name, mutation_cost=self.settings.mutation_cost
        )
        self._costs[key] = found
        if len(self._costs) > COST_CACHE_SIZE:
            self._costs.popitem(last=False)
        return found

    async def charge(
        self,
        context: Any,
        query: str,
        operation_name: str | None,
        variables: Mapping[str, Any] | None,
        document: DocumentNode | None = None,
        function: OperationCost | None = None,
    ) -> Charge | None:
        """Check and charge one request; None when it is not limited (no request behind
        the context, or limits off). Raises QueryRefused. `function`, when the caller
        holds the operation's cost function already, saves looking it up."""
        request = getattr(context, "request", None)
        if request is None or not self.enabled:
            return None
        if function is None:
            function = self.cost_function(query, operation_name, document)
        if function is None:
            return None
        cost = function.of(variables)
        if function.operation is OperationType.SUBSCRIPTION:
            self._check_subscription(cost)
        if self.max_cost > 0 and cost > self.max_cost:
            raise QueryRefused(
                GraphQLError(
                    f"This operation costs {cost} points, more than the maximum of "
                    f"{self.max_cost}: ask for fewer items per page (`first`) or nest fewer "
                    "connections (docs/limits.md).",
                    extensions={
                        "code": ErrorCode.QUERY_TOO_COMPLEX.value,
                        "requestedQueryCost": cost,
                        "maximumQueryCost": self.max_cost,
                    },
                ),
                None,
            )
        budget = self.budget
        if budget is None:
            return Charge(cost, None, 0)
        viewer_id = context.viewer_id
        subject = f"user:{viewer_id}" if viewer_id is not None else f"address:{address_of(context)}"
        try:
            verdict = await context.resources.budgets.spend(
                context.redis, BUDGET_KEY_PREFIX + subject, budget, cost, lease=self.lease
            )
        except RedisError as exc:
            log_fallback("query budget", exc, instead="not charged (allowed)")
            return Charge(cost, None, 0)
        charge = Charge(cost, verdict, budget.limit)
        if not verdict.allowed:
            retry = verdict.retry_after_seconds
            raise QueryRefused(
                GraphQLError(
                    f"This operation costs {cost} points and the budget of {budget.limit} "
                    f"points per {budget.period:g} seconds has {verdict.remaining} left; try "
                    f"again in {retry} seconds.",
                    extensions={"code": ErrorCode.RATE_LIMITED.value, "retryAfter": retry},
                ),
                charge,
            )
        return charge

    def _check_subscription(self, cost: int) -> None:
        """A subscription re-runs its selection on every event, for as long as it lives,
        and is charged once: its selection may cost MAX_SUBSCRIPTION_COST at most."""
        if 0 < self.max_subscription_cost < cost:
            raise QueryRefused(
                GraphQLError(
                    f"This subscription costs {cost} points per event, more than the maximum "
                    f"of {self.max_subscription_cost}: select fewer connections, or read them "
                    "with a query when an event arrives (docs/limits.md).",
                    extensions={
                        "code": ErrorCode.QUERY_TOO_COMPLEX.value,
                        "requestedQueryCost": cost,
                        "maximumQueryCost": self.max_subscription_cost,
                    },
                ),
                None,
            )


def refused_body(refused: QueryRefused, report: bool = True) -> dict[str, Any]:
    """The GraphQL response of a refused request, as Strawberry's path words it (`data`
    null, which `graphql_response` drops where the media type wants no `data`)."""
    body: dict[str, Any] = {"data": None, "errors": [refused.error.formatted]}
    if refused.charge is not None and report:
        body["extensions"] = {"cost": refused.charge.report()}
    return body


class QueryCostExtension(SchemaExtension):
    """Strawberry's executor's side of `QueryCosts.charge`: before execution (an
    `on_execute` hook; no `resolve` hook, which would slow every field), and the charge
    in `extensions.cost`. An HTTP request the compiled path charged already and then
    handed to Strawberry (`FallBack`) is not charged twice (`request.state`)."""

    # The compiled executor does this itself (schema.fast_path), so the compiler may
    # compile documents of a schema with this extension.
    handled_by_fast_path: ClassVar[bool] = True

    def __init__(self, costs: QueryCosts) -> None:
        self.costs = costs
        self.charge: Charge | None = None

    async def on_execute(self) -> AsyncGenerator[None, None]:
        context = self.execution_context.context
        request = getattr(context, "request", None)
        state = request.state if request is not None and request.scope["type"] == "http" else None
        self.charge = getattr(state, "query_charge", None) if state is not None else None
        if self.charge is None:
            execution = self.execution_context
            try:
                self.charge = await self.costs.charge(
                    context,
                    execution.query or "",
                    execution.operation_name,
                    execution.variables,
                    execution.graphql_document,
                )
            except QueryRefused as refused:
                self.charge = refused.charge
                raise refused.error from None
        yield

    def get_results(self) -> dict[str, Any]:
        if self.charge is None or not self.costs.report:
            return {}
        return {"cost": self.charge.report()}
