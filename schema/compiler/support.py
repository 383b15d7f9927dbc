"""What the compiler can run: the schema facts it relies on and the static check of a
document against the supported subset (see `schema.compiler.operation`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from inspect import isasyncgenfunction
from typing import Any, TypeVar

from graphql import (
    BooleanValueNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLField,
    GraphQLObjectType,
    GraphQLSchema,
    InlineFragmentNode,
    ListValueNode,
    ObjectValueNode,
    OperationDefinitionNode,
    OperationType,
    SelectionSetNode,
    ValueNode,
    VariableNode,
    get_named_type,
    is_leaf_type,
)
from graphql.execution.collect_fields import does_fragment_condition_match
from strawberry.schema import Schema
from strawberry.types.field import StrawberryField

DEFINITION = "strawberry-definition"
CONDITIONAL_DIRECTIVES = ("skip", "include")
# Set on a sync resolver by `may_return_awaitable`.
MAY_AWAIT = "_graphql_may_return_awaitable"

F = TypeVar("F", bound=Callable[..., Any])


def may_return_awaitable(resolver: F) -> F:
    """Mark a sync resolver that answers from memory when it can and otherwise returns
    an awaitable (which graphql-core awaits). The compiled executor does not await:
    when such a resolver returns an awaitable, the plan closes it and the request falls
    back to Strawberry (`schema.compiler.FallBack`). Unmarked sync resolvers must not
    return awaitables on the compiled path. Put it under `@strawberry.field`:

        @strawberry.field(description="...")
        @may_return_awaitable
        def comments(self, info: Info, first: int = 20) -> Page | Awaitable[Page]: ...
    """
    setattr(resolver, MAY_AWAIT, True)
    return resolver


Selection = FieldNode | InlineFragmentNode | FragmentSpreadNode


@dataclass
class SchemaFacts:
    """What the compiler needs from the Strawberry schema, read once."""

    schema: Schema
    graphql_schema: GraphQLSchema
    # GraphQL scalar name -> a Python class its values usually have (from the scalar
    # registry), for the inline fast path of custom scalars such as DateTime.
    scalar_classes: dict[str, type]

    @classmethod
    def of(cls, schema: Schema) -> SchemaFacts:
        classes: dict[str, type] = {}
        for python_type, scalar in schema.schema_converter.scalar_registry.items():
            name = getattr(getattr(scalar, "_scalar_definition", scalar), "name", None)
            if (
                isinstance(name, str)
                and isinstance(python_type, type)
                and not issubclass(python_type, BaseException)
                and python_type is not type(None)
            ):
                classes.setdefault(name, python_type)
        return cls(schema=schema, graphql_schema=schema._schema, scalar_classes=classes)

    def field_problem(self, field: StrawberryField | None, *, at_root: bool) -> str | None:
        """Why a field cannot be compiled, or None."""
        if field is None:
            return "not a Strawberry field"
        if field.extensions:
            return f"field {field.python_name} has extensions (permissions)"
        if field.is_subscription:
            return "subscription field"
        handlers = getattr(self.schema.schema_converter, "_get_field_exception_handlers", None)
        if handlers is not None and handlers(field):
            return f"field {field.python_name} has exception handlers"
        resolver = field.base_resolver
        if resolver is None:
            return None
        if not callable(resolver.wrapped_func) or isasyncgenfunction(resolver.wrapped_func):
            return f"field {field.python_name} has an unusual resolver"
        if field.is_async and not at_root:
            return f"async resolver below the root ({field.python_name})"
        return None


def may_await(field: StrawberryField | None) -> bool:
    """Whether a field's sync resolver is marked `may_return_awaitable`."""
    if field is None or field.base_resolver is None or field.is_async:
        return False
    return getattr(field.base_resolver.wrapped_func, MAY_AWAIT, False) is True


def selects_may_await(
    facts: SchemaFacts,
    operation: OperationDefinitionNode,
    fragments: dict[str, FragmentDefinitionNode],
) -> bool:
    """Whether the operation selects a field marked `may_return_awaitable` anywhere
    (whatever `@skip`/`@include` decide): only such plans need the deferral's code."""
    root = facts.graphql_schema.query_type
    seen: set[tuple[str, str]] = set()

    def visit(parent: GraphQLObjectType, selection_set: SelectionSetNode | None) -> bool:
        for selection in selection_set.selections if selection_set else ():
            if isinstance(selection, FieldNode):
                field_def = parent.fields.get(selection.name.value)
                if field_def is None:  # __typename
                    continue
                if may_await(strawberry_field(field_def)):
                    return True
                named = get_named_type(field_def.type)
                if isinstance(named, GraphQLObjectType) and visit(named, selection.selection_set):
                    return True
            elif isinstance(selection, FragmentSpreadNode):
                name = selection.name.value
                if (name, parent.name) not in seen:
                    seen.add((name, parent.name))
                    if visit(parent, fragments[name].selection_set):
                        return True
            elif isinstance(selection, InlineFragmentNode) and visit(
                parent, selection.selection_set
            ):
                return True
        return False

    return root is not None and visit(root, operation.selection_set)


def strawberry_field(field_def: GraphQLField) -> StrawberryField | None:
    """The Strawberry field behind a graphql-core field (Strawberry links them)."""
    field = (field_def.extensions or {}).get(DEFINITION)
    return field if isinstance(field, StrawberryField) else None


def unsupported_reason(
    facts: SchemaFacts,
    operation: OperationDefinitionNode,
    fragments: dict[str, FragmentDefinitionNode],
) -> str | None:
    """Why this operation is outside what the compiler handles, or None when every field
    it could select (whatever `@skip`/`@include` decide) is supported."""
    if operation.operation is not OperationType.QUERY:
        return f"{operation.operation.value} operation"
    if operation.directives:
        return "operation directives"
    if any(fragment.variable_definitions for fragment in fragments.values()):
        return "fragment variables"
    root = facts.graphql_schema.query_type
    if root is None:  # pragma: no cover - a Strawberry schema always has one
        return "no query type"
    return _selection_problem(facts, root, operation.selection_set, fragments, at_root=True)


def _directive_problem(node: Selection) -> str | None:
    for directive in node.directives or ():
        if directive.name.value not in CONDITIONAL_DIRECTIVES:
            return f"directive @{directive.name.value}"
        for argument in directive.arguments or ():
            if not isinstance(argument.value, (BooleanValueNode, VariableNode)):
                return "unusual @skip/@include argument"
    return None


def _selection_problem(
    facts: SchemaFacts,
    parent: GraphQLObjectType,
    selection_set: SelectionSetNode | None,
    fragments: dict[str, FragmentDefinitionNode],
    *,
    at_root: bool,
) -> str | None:
    for selection in selection_set.selections if selection_set else ():
        if not isinstance(selection, Selection):  # pragma: no cover - the AST has no other
            return "unknown selection"
        problem = _directive_problem(selection)
        if problem is not None:
            return problem
        if isinstance(selection, FieldNode):
            problem = _field_problem(facts, parent, selection, fragments, at_root=at_root)
        else:
            fragment = (
                fragments[selection.name.value]
                if isinstance(selection, FragmentSpreadNode)
                else selection
            )
            # On an object type a condition either always or never matches.
            if does_fragment_condition_match(facts.graphql_schema, fragment, parent):
                problem = _selection_problem(
                    facts, parent, fragment.selection_set, fragments, at_root=at_root
                )
        if problem is not None:
            return problem
    return None


def _field_problem(
    facts: SchemaFacts,
    parent: GraphQLObjectType,
    node: FieldNode,
    fragments: dict[str, FragmentDefinitionNode],
    *,
    at_root: bool,
) -> str | None:
    name = node.name.value
    if name == "__typename":
        return None
    if name.startswith("__"):
        return "introspection"
    field_def = parent.fields.get(name)
    if field_def is None:  # pragma: no cover - validation rejects unknown fields
        return f"unknown field {name}"
    problem = facts.field_problem(strawberry_field(field_def), at_root=at_root)
    if problem is not None:
        return problem
    named = get_named_type(field_def.type)
    if isinstance(named, GraphQLObjectType):
        return _selection_problem(facts, named, node.selection_set, fragments, at_root=False)
    if not is_leaf_type(named):
        return f"abstract type {named}"
    return None


def conditional_nodes(
    operation: OperationDefinitionNode, fragments: dict[str, FragmentDefinitionNode]
) -> list[Selection]:
    """Every selection whose `@skip`/`@include` reads a variable: their decisions, taken
    per request, pick which compiled variant of the operation runs."""
    found: list[Selection] = []
    seen: set[str] = set()

    def visit(selection_set: SelectionSetNode | None) -> None:
        for selection in selection_set.selections if selection_set else ():
            if not isinstance(selection, Selection):  # pragma: no cover
                continue
            if any(
                isinstance(argument.value, VariableNode)
                for directive in selection.directives or ()
                for argument in directive.arguments or ()
            ):
                found.append(selection)
            if isinstance(selection, FragmentSpreadNode):
                if selection.name.value not in seen:
                    seen.add(selection.name.value)
                    visit(fragments[selection.name.value].selection_set)
            else:
                visit(selection.selection_set)

    visit(operation.selection_set)
    return found


def uses_variables(value: ValueNode) -> bool:
    """Whether an argument's literal reads a variable anywhere inside."""
    if isinstance(value, VariableNode):
        return True
    if isinstance(value, ListValueNode):
        return any(uses_variables(item) for item in value.values)
    if isinstance(value, ObjectValueNode):
        return any(uses_variables(field.value) for field in value.fields)
    return False
