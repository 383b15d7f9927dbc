"""The keyword arguments a compiled field passes its resolver, planned once per field.

Per call, graphql-core coerces the field's arguments (`get_argument_values`) and
Strawberry converts them to Python values (`convert_arguments`): ~8 µs for the feed's
`feed(first: 20, after: $after)`. Most of that is decided by the document alone, so:

- literal arguments (and defaults) are coerced and converted here, once; the values
  are shared by every call when they are immutable (numbers, strings, enum members);
- an argument that is a bare variable of a nullable scalar or enum type (which
  Strawberry passes through unchanged) is a lookup in the coerced variables, with the
  argument's default when the variable was not given, exactly graphql-core's rule;
- anything else (variables inside lists or inputs, non-null arguments fed by
  variables, `Maybe`, `GlobalID`) runs graphql-core's and Strawberry's own functions
  per call.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import Any, Literal

from graphql import FieldNode, GraphQLError, VariableNode, is_leaf_type, is_non_null_type
from graphql.execution.values import (
    VariableValues,
    get_argument_values,
    maybe_use_default_value,
)
from strawberry.relay.types import GlobalID
from strawberry.scalars import is_scalar
from strawberry.types.arguments import StrawberryArgument, convert_arguments
from strawberry.types.base import StrawberryList, StrawberryMaybe, StrawberryOptional
from strawberry.types.enum import has_enum_definition
from strawberry.types.lazy_type import LazyType

from schema.compiler.runtime import FieldSite, Run
from schema.compiler.support import SchemaFacts, uses_variables

# Converted values safe to share between every call of every request.
IMMUTABLE = (type(None), bool, int, float, str, bytes, Enum)

Converter = Callable[[dict[str, Any], Any], dict[str, Any]]


@dataclass(frozen=True)
class ArgumentPlan:
    """How one field gets its resolver's keyword arguments:

    - "fixed": `kwargs`, the same for every call;
    - "convert": Strawberry's conversion of `raw` (fixed) per call (mutable values);
    - "lookup": `lookup(run.variables.coerced)`, which cannot fail;
    - "general": `convert(read(run), info)`, graphql-core's and Strawberry's functions,
      which can fail (the field's error).
    """

    mode: Literal["fixed", "convert", "lookup", "general"]
    kwargs: dict[str, Any]
    raw: dict[str, Any]
    convert: Converter
    lookup: Callable[[dict[str, Any]], dict[str, Any]]
    read: Callable[[Run], dict[str, Any]]


_MISSING = object()


def plan_arguments(facts: SchemaFacts, site: FieldSite, variables: VariableValues) -> ArgumentPlan:
    """The plan of the cheapest exact way to get `site`'s resolver arguments."""
    field = site.strawberry_field
    assert field is not None  # a field with a resolver is a Strawberry field
    field_def, node = site.field_def, site.details[0].node
    registry = facts.schema.schema_converter.scalar_registry
    config = facts.schema.config
    arguments = field.arguments

    def convert(raw: dict[str, Any], info: Any) -> dict[str, Any]:
        return convert_arguments(raw, arguments, scalar_registry=registry, config=config, info=info)

    def read(run: Run) -> dict[str, Any]:
        return get_argument_values(field_def, node, run.variables)

    def plan(mode: Any, **values: Any) -> ArgumentPlan:
        parts: dict[str, Any] = {"kwargs": {}, "raw": {}, "lookup": dict, **values}
        return ArgumentPlan(mode=mode, convert=convert, read=read, **parts)

    given = {argument.name.value: argument for argument in node.arguments or ()}
    variable_arguments = {
        name: argument for name, argument in given.items() if uses_variables(argument.value)
    }
    if not variable_arguments:
        try:
            raw = get_argument_values(field_def, node, variables)
            kwargs = convert(raw, None)
        except Exception:  # e.g. a literal Strawberry cannot convert: the field's error
            return plan("general")
        if all(isinstance(value, IMMUTABLE) for value in kwargs.values()):
            return plan("fixed", kwargs=kwargs)
        return plan("convert", raw=raw)

    by_name = {config.name_converter.from_argument(argument): argument for argument in arguments}
    lookups: list[tuple[str, str, Any]] = []
    for name, argument in variable_arguments.items():
        arg_def = field_def.args.get(name)
        strawberry_argument = by_name.get(name)
        if (
            arg_def is None
            or strawberry_argument is None
            or not isinstance(argument.value, VariableNode)
            or is_non_null_type(arg_def.type)
            or not is_leaf_type(arg_def.type)
            or arg_def.out_name not in (None, name)
            or not _passes_through(strawberry_argument, registry)
        ):
            return plan("general")
        default: dict[str, Any] = {}
        try:
            maybe_use_default_value(default, name, arg_def, _invalid_default)
        except GraphQLError:
            return plan("general")
        lookups.append(
            (
                argument.value.name.value,
                strawberry_argument.python_name,
                default.get(name, _MISSING),
            )
        )

    # The literal arguments and the defaults of the absent ones, converted now.
    literal_node = FieldNode(
        name=node.name,
        arguments=tuple(a for name, a in given.items() if name not in variable_arguments),
    )
    try:
        coerced = get_argument_values(field_def, literal_node, variables)
        raw = {name: value for name, value in coerced.items() if name not in variable_arguments}
        fixed = convert(raw, None)
    except Exception:
        return plan("general")
    if not all(isinstance(value, IMMUTABLE) for value in fixed.values()):
        return plan("general")

    def lookup(coerced: dict[str, Any]) -> dict[str, Any]:
        kwargs = dict(fixed)
        for variable, python_name, default in lookups:
            value = coerced.get(variable, _MISSING)
            if value is _MISSING:
                # Not given: the argument's default if it has one, else left out.
                if default is not _MISSING:
                    kwargs[python_name] = default
            else:
                kwargs[python_name] = value
        return kwargs

    return plan("lookup", lookup=lookup)


def _invalid_default(error: GraphQLError, path: list[str | int]) -> None:
    raise error  # the general path then reports it per call, as graphql-core does


def _passes_through(argument: StrawberryArgument, registry: Any) -> bool:
    """Whether Strawberry's `convert_argument` returns this argument's values unchanged
    (a scalar other than GlobalID, or an enum: graphql-core already made the member)."""
    type_: Any = argument.type
    if isinstance(type_, StrawberryMaybe):
        return False
    while isinstance(type_, StrawberryOptional):
        type_ = type_.of_type
    if isinstance(type_, LazyType):
        type_ = type_.resolve_type()
    if type_ is GlobalID or isinstance(type_, StrawberryList):
        return False
    return has_enum_definition(type_) or is_scalar(type_, registry)
