"""The public contract cannot break silently: schema.graphql against the last released SDL.

schema/released/schema.graphql is the schema clients were promised. A breaking change
(graphql-core's `find_breaking_changes`: a type, field, argument or enum value removed,
a type narrowed, a required argument added...) fails here; a dangerous one (an enum
value or an optional argument added, a default changed: safe for the server, but a
client switching over every enum value or relying on a default may be surprised) is
reported as a warning. That schema.graphql is the server's real SDL is checked by
tests/test_schema_contract.py, so comparing the committed files is enough.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import replace

import pytest
from graphql import (
    BreakingChange,
    DangerousChange,
    EnumTypeDefinitionNode,
    GraphQLSchema,
    ObjectTypeDefinitionNode,
    build_ast_schema,
    build_schema,
    find_breaking_changes,
    find_dangerous_changes,
    parse,
)

from schema.export import SCHEMA_PATH
from settings import ROOT

RELEASED_PATH = ROOT / "schema" / "released" / "schema.graphql"

HOW_TO_PROCEED = (
    "If the change is a mistake, restore the old shape in the server and run `make schema`. "
    "Prefer additive changes: add the new field or argument beside the old one and mark the "
    "old one @deprecated(reason: ...). If the breaking change is deliberate and has been "
    "announced to the client teams, release it: copy schema.graphql over "
    "schema/released/schema.graphql in the same commit (see schema/released/README.md)."
)


class DangerousSchemaChange(UserWarning):
    """A change that old clients survive but may misread (see the module docstring)."""


def describe(changes: Sequence[BreakingChange | DangerousChange]) -> str:
    return "\n".join(f"  - {change.type.name}: {change.description}" for change in changes)


def breaking_report(changes: Sequence[BreakingChange]) -> str:
    return (
        f"schema.graphql breaks the released schema (schema/released/schema.graphql) "
        f"in {len(changes)} place(s):\n{describe(changes)}\n{HOW_TO_PROCEED}"
    )


def released() -> GraphQLSchema:
    return build_schema(RELEASED_PATH.read_text(encoding="utf-8"))


def current() -> GraphQLSchema:
    return build_schema(SCHEMA_PATH.read_text(encoding="utf-8"))


def edited(sdl: str, type_name: str, edit: str) -> GraphQLSchema:
    """The schema of `sdl` with one change made on its AST, as a server change would."""
    document = parse(sdl)
    definitions = []
    for definition in document.definitions:
        if isinstance(definition, ObjectTypeDefinitionNode | EnumTypeDefinitionNode) and (
            definition.name.value == type_name
        ):
            if edit == "remove first field" and isinstance(definition, ObjectTypeDefinitionNode):
                definition = replace(definition, fields=(definition.fields or ())[1:])
            elif edit == "remove first value" and isinstance(definition, EnumTypeDefinitionNode):
                definition = replace(definition, values=(definition.values or ())[1:])
            else:
                raise AssertionError(f"cannot {edit} of {type_name}")
        definitions.append(definition)
    return build_ast_schema(replace(document, definitions=tuple(definitions)))


# --- the guard itself ------------------------------------------------------------------


@pytest.mark.filterwarnings("always::tests.test_schema_compat.DangerousSchemaChange")
def test_schema_keeps_the_released_contract():
    old, new = released(), current()
    breaking = find_breaking_changes(old, new)
    dangerous = find_dangerous_changes(old, new)
    if dangerous:
        warnings.warn(
            DangerousSchemaChange(
                "schema.graphql makes changes to the released schema that old clients may "
                f"misread (not a failure; announce them):\n{describe(dangerous)}"
            ),
            stacklevel=1,
        )
    assert not breaking, breaking_report(breaking)


def test_released_schema_is_a_complete_schema():
    schema = released()
    assert schema.query_type is not None and schema.query_type.name == "Query"
    assert schema.mutation_type is not None and schema.subscription_type is not None
    assert "Post" in schema.type_map and "User" in schema.type_map


# --- the guard catches what it must ----------------------------------------------------


def _sdl() -> str:
    return SCHEMA_PATH.read_text(encoding="utf-8")


def test_a_removed_field_is_caught():
    schema = current()
    post = schema.type_map["Post"]
    first_field = next(iter(post.fields))  # type: ignore[attr-defined]
    breaking = find_breaking_changes(schema, edited(_sdl(), "Post", "remove first field"))
    assert [c.type.name for c in breaking] == ["FIELD_REMOVED"]
    assert f"Post.{first_field}" in breaking[0].description
    report = breaking_report(breaking)
    assert f"FIELD_REMOVED: {breaking[0].description}" in report
    assert "schema/released/schema.graphql" in report


def test_a_removed_enum_value_and_a_narrowed_argument_are_caught():
    sdl = _sdl()
    schema = current()
    status = schema.type_map["PostStatus"]
    first_value = next(iter(status.values))  # type: ignore[attr-defined]
    breaking = find_breaking_changes(schema, edited(sdl, "PostStatus", "remove first value"))
    assert [c.type.name for c in breaking] == ["VALUE_REMOVED_FROM_ENUM"]
    assert first_value in breaking[0].description

    # An optional argument made required breaks every client that leaves it out.
    assert "feed(first: Int" in sdl
    narrowed = build_schema(sdl.replace("feed(first: Int", "feed(first: Int!", 1))
    kinds = {c.type.name for c in find_breaking_changes(schema, narrowed)}
    assert kinds == {"ARG_CHANGED_KIND"}


def test_additions_pass_and_new_enum_values_are_only_dangerous():
    sdl = _sdl()
    schema = current()
    added = build_schema(
        sdl
        + '\n"""A new type."""\ntype Extra {\n  """A field."""\n  value: Int\n}\n'
        + "extend type Query {\n  extra: Extra\n}\n"
        + "extend enum PostStatus {\n  ARCHIVED\n}\n"
    )
    assert find_breaking_changes(schema, added) == []
    dangerous = find_dangerous_changes(schema, added)
    assert [c.type.name for c in dangerous] == ["VALUE_ADDED_TO_ENUM"]
    assert "ARCHIVED" in dangerous[0].description and "PostStatus" in dangerous[0].description
