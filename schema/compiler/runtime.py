"""What a compiled plan calls while it runs: the per-request state, the `Info` handed to
resolvers, and the slow paths (errors, unusual values) kept out of the generated code.

Positions in the response are plain tuples `(parent, key, typename)` chained to the root
(`None`), the shape of graphql-core's `Path` without its constructor cost; they become
`Path` objects or lists only when an error or a resolver's `info.path` needs them.
"""

from __future__ import annotations

from asyncio import ensure_future, gather
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn

from graphql import (
    FieldNode,
    FragmentDefinitionNode,
    GraphQLError,
    GraphQLField,
    GraphQLLeafType,
    GraphQLObjectType,
    GraphQLResolveInfo,
    GraphQLSchema,
    OperationDefinitionNode,
    located_error,
)
from graphql.execution.collect_fields import FieldDetails
from graphql.execution.executor import invalid_return_type_error
from graphql.execution.values import VariableValues
from graphql.pyutils import Path, Undefined, gather_with_cancel, inspect, is_iterable
from graphql.type import GraphQLResolveInfoHelpers
from strawberry.execution.is_awaitable import optimized_is_awaitable
from strawberry.schema.schema import (
    _OperationContextAwareGraphQLResolveInfo as _StrawberryResolveInfo,
)
from strawberry.types.field import StrawberryField
from strawberry.types.info import Info

# (parent position, response key or list index, parent type name or None for an index)
Position = tuple[Any, str | int, str | None] | None


@dataclass(frozen=True)
class OperationShape:
    """What every field of one operation shares: enough to build a graphql-core
    `GraphQLResolveInfo` on demand."""

    schema: GraphQLSchema
    operation: OperationDefinitionNode
    fragments: dict[str, FragmentDefinitionNode]


@dataclass(frozen=True, eq=False)
class FieldSite:
    """One field of the document as the plan runs it (a response key on a parent type,
    with every node merged into it): what error locations, null errors and `Info` need."""

    key: str
    field_name: str
    parent_type: GraphQLObjectType
    field_def: GraphQLField
    details: list[FieldDetails]
    strawberry_field: StrawberryField | None

    @property
    def nodes(self) -> list[FieldNode]:
        return [detail.node for detail in self.details]

    @property
    def null_message(self) -> str:
        # graphql-core's wording, for the field and for the items of its lists alike.
        return f"Cannot return null for non-nullable field {self.parent_type}.{self.field_name}."


class Run:
    """The state of one execution: the request's values and the errors collected so far.

    `nulled` mirrors graphql-core's rule that once the whole `data` is null, later field
    errors are dropped (`CollectedErrors.has_nulled_position(None)`).
    """

    __slots__ = ("context", "errors", "nulled", "pending", "root_value", "shape", "variables")

    def __init__(
        self, shape: OperationShape, context: Any, root_value: Any, variables: VariableValues
    ) -> None:
        self.shape = shape
        self.context = context
        self.root_value = root_value
        self.variables = variables
        self.errors: list[GraphQLError] = []
        self.nulled = False
        # Coroutines of root fields not awaited yet, closed if a sync root field fails.
        self.pending: list[Any] = []

    def add(self, error: GraphQLError) -> None:
        if not self.nulled:
            self.errors.append(error)


class Deferred(Exception):
    """A resolver marked `may_return_awaitable` returned an awaitable, which the plan
    does not await: the generated code lets this through every field's error handling
    and `CompiledOperation.execute` hands the request to Strawberry (`FallBack`)."""


def defer(value: Any) -> NoReturn:
    """Drop the awaitable a marked resolver returned (a coroutine not started is closed,
    so nothing of it ran) and stop the plan."""
    close = getattr(value, "close", None)
    cancel = getattr(value, "cancel", None)
    if callable(close):
        close()
    elif callable(cancel):
        cancel()
    raise Deferred(f"a resolver returned {type(value).__name__}")


def path_list(position: Position) -> list[str | int]:
    """The response path of a position, as errors report it."""
    keys: list[str | int] = []
    while position is not None:
        keys.append(position[1])
        position = position[0]
    keys.reverse()
    return keys


def to_path(position: Position) -> Path | None:
    """The graphql-core `Path` of a position, as resolvers see it in `info.path`."""
    if position is None:
        return None
    return Path(to_path(position[0]), position[1], position[2])


def locate(error: Exception, site: FieldSite, parent: Position) -> GraphQLError:
    """The located error of a field of the object at `parent` (graphql-core's
    `handle_field_error`): an error that already has a path keeps it."""
    return located_error(error, site.nodes, [*path_list(parent), site.key])


def locate_item(
    error: Exception, site: FieldSite, list_position: Position, index: int
) -> GraphQLError:
    """The located error of the item `index` of the list at `list_position`."""
    return located_error(error, site.nodes, [*path_list(list_position), index])


def field_parent(position: Position) -> Position:
    """The parent object of the field holding the value at `position` (list indices
    skipped): graphql-core gives list items the field's own `info`."""
    while position is not None and isinstance(position[1], int):
        position = position[0]
    return position[0] if position is not None else None


def _track(values: Sequence[Any]) -> None:
    awaitables = [value for value in values if optimized_is_awaitable(value)]
    if awaitables:
        _BACKGROUND.add(future := ensure_future(gather(*awaitables, return_exceptions=True)))
        future.add_done_callback(_BACKGROUND.discard)


def _gather(values: Sequence[Awaitable[Any]]) -> Awaitable[list[Any]]:
    return gather_with_cancel(*values)


_BACKGROUND: set[Any] = set()
# What graphql-core's executor offers resolvers as `info.async_helpers`.
_HELPERS = GraphQLResolveInfoHelpers(gather=_gather, track=_track)


def resolve_info(site: FieldSite, run: Run, parent: Position) -> GraphQLResolveInfo:
    """A real graphql-core `GraphQLResolveInfo` for the field at `parent`, built only
    when a resolver (or an `is_type_of`) looks past `info.context`."""
    shape = run.shape
    # Strawberry's executor hands resolvers this NamedTuple (graphql-core's fields plus
    # the request's operation extensions, which this path does not receive).
    return _StrawberryResolveInfo(  # type: ignore[return-value]  # a NamedTuple with its fields
        site.field_name,
        site.nodes,
        site.field_def.type,
        site.parent_type,
        Path(to_path(parent), site.key, site.parent_type.name),
        shape.schema,
        shape.fragments,
        run.root_value,
        shape.operation,
        # Strawberry's executor gives resolvers the plain coerced dict.
        run.variables.coerced,
        run.context,
        optimized_is_awaitable,
        None,
        _HELPERS,
        None,  # type: ignore[arg-type]  # no operation extensions on this path
    )


class CompiledInfo(Info[Any, Any]):
    """The `strawberry.Info` a compiled plan hands to resolvers: a real `Info` whose
    graphql-core half (`_raw_info`: path, nodes, operation, variables...) is built on
    first use, so `info.context`, `info.field_name` and `info.python_name` cost one
    small object per call (~0.2 µs instead of ~1.5 µs for a full one)."""

    __slots__ = ("_parent", "_raw", "_run", "_site")

    def __init__(self, site: FieldSite, run: Run, parent: Position) -> None:
        self._site = site
        self._run = run
        self._parent = parent
        self._raw: GraphQLResolveInfo | None = None

    @property
    def _field(self) -> StrawberryField:  # type: ignore[override]  # an Info field, read-only here
        field = self._site.strawberry_field
        assert field is not None  # sites with resolvers always have their Strawberry field
        return field

    @property
    def _raw_info(self) -> GraphQLResolveInfo:  # type: ignore[override]  # an Info field, lazy here
        raw = self._raw
        if raw is None:
            raw = self._raw = resolve_info(self._site, self._run, self._parent)
        return raw

    @property
    def context(self) -> Any:
        return self._run.context

    @property
    def field_name(self) -> str:
        return self._site.field_name


def leaf_completer(
    gtype: GraphQLLeafType, site: FieldSite, *, nullable: bool
) -> Callable[[Any], Any]:
    """graphql-core's `complete_value` for a leaf, whole: the generated code calls it
    for any value its inline fast path (an exact `str`, `int`... ) does not take."""
    coerce = gtype.coerce_output_value
    null_message = site.null_message

    def complete(value: Any) -> Any:
        if value is None or value is Undefined:
            if nullable:
                return None
            raise TypeError(null_message)
        if isinstance(value, Exception):
            raise value
        return checked_leaf(gtype, coerce(value), value)

    return complete


def checked_leaf(gtype: GraphQLLeafType, coerced: Any, value: Any) -> Any:
    if coerced is None or coerced is Undefined:
        raise TypeError(
            f"Expected `{inspect(gtype)}.coerce_output_value({inspect(value)})`"
            f" to return non-nullable value, returned: {inspect(coerced)}"
        )
    return coerced


def list_checker(site: FieldSite) -> Callable[[Any], None]:
    """For a list field's value that is not a `list`: graphql-core's checks."""
    message = (
        f"Expected Iterable, but did not find one for field '{site.parent_type}.{site.field_name}'."
    )

    def check(value: Any) -> None:
        if isinstance(value, Exception):
            raise value
        if not is_iterable(value):
            raise GraphQLError(message)

    return check


def object_checker(
    gtype: GraphQLObjectType, site: FieldSite
) -> Callable[[Any, Position, Run], None]:
    """For an object value whose class is not the type's own: graphql-core's checks
    (an exception returned as a value, then the type's `is_type_of`)."""
    is_type_of = gtype.is_type_of

    def check(value: Any, position: Position, run: Run) -> None:
        if isinstance(value, Exception):
            raise value
        if is_type_of is None:
            return
        if not is_type_of(value, resolve_info(site, run, field_parent(position))):
            raise invalid_return_type_error(gtype, value, site.details)

    return check
