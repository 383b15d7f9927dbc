"""From a validated operation to Python source: one function per object selection, one
per async root field and a root function, compiled with `compile()` once per document
(and per combination of variable-driven `@skip`/`@include`).

What graphql-core decides per value at run time (which fields, which resolver, which
arguments, how to serialize, what is nullable) is decided here instead, so a plain
field costs an attribute fetch, a class check and a dict entry (~60 ns, against ~120 ns
for a closure per field and ~3.5 µs in graphql-core). The rules followed are those of
graphql-core's `Executor` (3.3); the differential tests in `tests/test_compiler.py`
hold the two together. A generated object function, for `author { id }`:

    def object7(s, p, st):
        if s.__class__ is not CLASS8:   # the type's own class: no is_type_of to call
            CHECK9(s, p, st)
        try:
            v = s.id
            r10 = v if v.__class__ is str else LEAF12(v)   # else graphql-core's rules
        except Exception as e:
            raise locate(e, SITE11, p)  # non-null: the parent's problem
        return {'id': r10}

A resolver marked `may_return_awaitable` is followed by `if is_awaitable(v): defer(v)`,
and in plans that select one, every `except Exception` is preceded by `except DEFERRED:
raise`, so the deferral leaves the plan (and the request goes to Strawberry).

`p` is the object's position in the response, `st` the request's `Run`. The source
holds only names made here and `repr()`s of GraphQL names; every value (sites,
resolvers, messages, argument values) sits in the namespace the code runs in.
"""

from __future__ import annotations

import itertools
import keyword
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from enum import Enum
from typing import Any

from graphql import (
    GraphQLBoolean,
    GraphQLEnumType,
    GraphQLField,
    GraphQLFloat,
    GraphQLID,
    GraphQLInt,
    GraphQLList,
    GraphQLNonNull,
    GraphQLObjectType,
    GraphQLOutputType,
    GraphQLScalarType,
    GraphQLString,
    is_leaf_type,
    is_non_null_type,
)
from graphql.execution.collect_fields import (
    FieldDetails,
    FragmentDetails,
    collect_fields,
    collect_subfields,
)
from graphql.execution.values import VariableValues
from graphql.pyutils import Undefined
from strawberry.execution.is_awaitable import optimized_is_awaitable

from schema.compiler.arguments import ArgumentPlan, plan_arguments
from schema.compiler.runtime import (
    CompiledInfo,
    Deferred,
    FieldSite,
    OperationShape,
    Run,
    checked_leaf,
    defer,
    leaf_completer,
    list_checker,
    locate,
    locate_item,
    object_checker,
)
from schema.compiler.support import DEFINITION, SchemaFacts, may_await, strawberry_field

LeafType = GraphQLScalarType | GraphQLEnumType


class _Never:
    """A class no value has: the fast path of a type whose `is_type_of` is its own."""


@dataclass(frozen=True)
class Plan:
    """One compiled variant: `root(run)` runs the sync part of the root fields and
    returns the data dict, with coroutines in place of the async root fields (listed
    with their keys in `run.pending`) still to be awaited."""

    root: Callable[[Run], dict[str, Any]]
    source: str


class _Source:
    """Lines of Python with the indentation of the block being written."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.depth = 0

    def line(self, text: str) -> None:
        self.lines.append("    " * self.depth + text)

    @contextmanager
    def block(self, header: str) -> Iterator[None]:
        self.line(header)
        self.depth += 1
        try:
            yield
        finally:
            self.depth -= 1

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


class Generator:
    """Writes, compiles and loads the source of one variant of an operation."""

    def __init__(
        self,
        facts: SchemaFacts,
        shape: OperationShape,
        fragments: dict[str, FragmentDetails],
        variables: VariableValues,
        *,
        deferring: bool = False,
    ) -> None:
        self.facts = facts
        self.shape = shape
        self.fragments = fragments
        # The decisions of variable-driven @skip/@include come from these variables.
        self.variables = variables
        # The operation selects a resolver marked `may_return_awaitable`: every field's
        # error handling lets `Deferred` through (written only then; it costs nothing
        # at run time, but the plain plans stay as they were).
        self.deferring = deferring
        self.namespace: dict[str, Any] = {
            "CompiledInfo": CompiledInfo,
            "DEFERRED": Deferred,
            "defer": defer,
            "is_awaitable": optimized_is_awaitable,
            "locate": locate,
            "locate_item": locate_item,
            "checked_leaf": checked_leaf,
            "Undefined": Undefined,
            "FLOAT_MIN": float("-inf"),
            "FLOAT_MAX": float("inf"),
        }
        self.functions: list[str] = []
        self.objects: dict[tuple[GraphQLObjectType, int], str] = {}
        self.site_names: dict[int, str] = {}
        self.argument_plans: dict[int, ArgumentPlan] = {}
        self.counter: Iterator[int] = itertools.count()

    def constant(self, prefix: str, value: Any) -> str:
        name = f"{prefix}{next(self.counter)}"
        self.namespace[name] = value
        return name

    def fresh(self, prefix: str) -> str:
        return f"{prefix}{next(self.counter)}"

    def site_name(self, site: FieldSite) -> str:
        name = self.site_names.get(id(site))
        if name is None:
            name = self.site_names[id(site)] = self.constant("SITE", site)
        return name

    def plan(self) -> Plan:
        schema = self.facts.graphql_schema
        root_type = schema.query_type
        assert root_type is not None  # checked by support.unsupported_reason
        grouped = collect_fields(
            schema, self.fragments, self.variables, root_type, self.shape.operation
        ).grouped_field_set
        out = _Source()
        with out.block("def root(st):"):
            out.line("s = st.root_value")
            out.line("d = {}")
            for key, details in grouped.items():
                self.root_field(out, root_type, key, details)
            out.line("return d")
        self.functions.append(out.text)
        source = "\n\n".join(self.functions) + "\n"
        name = self.shape.operation.name
        code = compile(source, f"<graphql {name.value if name else 'query'}>", "exec")
        exec(code, self.namespace)  # noqa: S102 - our own generated source, see module doc
        return Plan(root=self.namespace["root"], source=source)

    # Root fields

    def root_field(
        self, out: _Source, root_type: GraphQLObjectType, key: str, details: list[FieldDetails]
    ) -> None:
        name = details[0].node.name.value
        if name == "__typename":
            out.line(f"d[{key!r}] = {root_type.name!r}")
            return
        site = self.site(root_type, key, details, root_type.fields[name])
        field = site.strawberry_field
        if field is None or not field.is_async:
            # A sync root field resolves and completes in place, as graphql-core does
            # while it walks the root fields, before any async one runs.
            self.field(out, site, "None", f"d[{key!r}]")
            return
        function = self.fresh("root_field")
        arguments = self.arguments(site)
        if arguments.mode == "general":
            # Arguments are coerced now (an error is this field's, reported before any
            # async field runs) and converted to Python values when the coroutine
            # starts, as graphql-core and Strawberry's resolver wrapper do.
            with out.block("try:"):
                out.line(f"a = {self.constant('ARGS', arguments.read)}(st)")
            with out.block("except Exception as e:"):
                self.handle(out, site, "None", f"d[{key!r}]")
            with out.block("else:"):
                out.line(f"d[{key!r}] = c = {function}(s, st, a)")
                out.line(f"st.pending.append(({key!r}, c))")
            header = f"async def {function}(s, st, raw):"
        else:
            out.line(f"d[{key!r}] = c = {function}(s, st)")
            out.line(f"st.pending.append(({key!r}, c))")
            header = f"async def {function}(s, st):"
        body = _Source()
        with body.block(header):
            self.field(body, site, "None", "r", awaited=True)
            body.line("return r")
        self.functions.append(body.text)

    # Objects and fields

    def site(
        self,
        parent: GraphQLObjectType,
        key: str,
        details: list[FieldDetails],
        field_def: GraphQLField,
    ) -> FieldSite:
        return FieldSite(
            key=key,
            field_name=details[0].node.name.value,
            parent_type=parent,
            field_def=field_def,
            details=details,
            strawberry_field=strawberry_field(field_def),
        )

    def object_function(self, gtype: GraphQLObjectType, site: FieldSite) -> str:
        """The function completing `gtype` values of `site`, written once per site (as
        graphql-core memoizes its subfield collection per field group)."""
        cache_key = (gtype, id(site.details))
        existing = self.objects.get(cache_key)
        if existing is not None:
            return existing
        function = self.objects[cache_key] = self.fresh("object")
        grouped = collect_subfields(
            self.facts.graphql_schema,
            self.fragments,
            self.variables,
            self.shape.operation,
            gtype,
            site.details,
        ).grouped_field_set
        definition = (gtype.extensions or {}).get(DEFINITION)
        own_class = getattr(definition, "origin", _Never)
        if getattr(definition, "is_type_of", None) is not None:
            own_class = _Never  # a type's own is_type_of must see every value
        out = _Source()
        results: list[tuple[str, str]] = []
        with out.block(f"def {function}(s, p, st):"):
            with out.block(f"if s.__class__ is not {self.constant('CLASS', own_class)}:"):
                out.line(f"{self.constant('CHECK', object_checker(gtype, site))}(s, p, st)")
            for key, details in grouped.items():
                name = details[0].node.name.value
                target = self.fresh("r")
                results.append((key, target))
                if name == "__typename":
                    out.line(f"{target} = {gtype.name!r}")
                else:
                    field_site = self.site(gtype, key, details, gtype.fields[name])
                    self.field(out, field_site, "p", target)
            entries = ", ".join(f"{key!r}: {target}" for key, target in results)
            out.line(f"return {{{entries}}}")
        self.functions.append(out.text)
        return function

    def field(
        self, out: _Source, site: FieldSite, parent: str, target: str, *, awaited: bool = False
    ) -> None:
        """Resolve and complete one field of the object `s` at position `parent`; a
        failure is the field's error: raised on when the field is non-null, else
        collected with null in its place."""
        position = f"({parent}, {site.key!r}, {site.parent_type.name!r})"
        with out.block("try:"):
            self.fetch(out, site, parent, awaited=awaited)
            self.complete(out, site, site.field_def.type, "v", target, position)
        self.let_deferral_through(out)
        with out.block("except Exception as e:"):
            self.handle(out, site, parent, target)

    def let_deferral_through(self, out: _Source) -> None:
        if self.deferring:
            with out.block("except DEFERRED:"):
                out.line("raise")

    def handle(self, out: _Source, site: FieldSite, parent: str, target: str) -> None:
        located = f"locate(e, {self.site_name(site)}, {parent})"
        if is_non_null_type(site.field_def.type):
            out.line(f"raise {located}")
        else:
            out.line(f"st.add({located})")
            out.line(f"{target} = None")

    def fetch(self, out: _Source, site: FieldSite, parent: str, *, awaited: bool) -> None:
        """`v = <the field's value>`, got the way Strawberry's resolver wrapper does: the
        attribute for a plain field, else the resolver called with `self` or root,
        `info` and the converted arguments."""
        field = site.strawberry_field
        assert field is not None  # checked by support.unsupported_reason
        resolver = field.base_resolver
        if resolver is None:
            default = self.facts.schema.config.default_resolver
            name = field.python_name
            if default is getattr and name.isidentifier() and not keyword.iskeyword(name):
                out.line(f"v = s.{name}")
            else:
                out.line(f"v = {self.constant('RESOLVE', default)}(s, {name!r})")
            return
        parts: list[str] = []
        if resolver.self_parameter:
            parts.append("s")
        for parameter in (resolver.parent_parameter, resolver.root_parameter):
            if parameter is not None:
                parts.append(f"{parameter.name}=s")
        info = "None"
        if resolver.info_parameter is not None:
            info = "info"
            out.line(f"info = CompiledInfo({self.site_name(site)}, st, {parent})")
            parts.append(f"{resolver.info_parameter.name}=info")
        arguments = self.arguments(site)
        if arguments.mode == "fixed":
            parts += [
                f"{name}={self.constant('ARG', value)}" for name, value in arguments.kwargs.items()
            ]
        elif arguments.mode == "lookup":
            parts.append(f"**{self.constant('LOOKUP', arguments.lookup)}(st.variables.coerced)")
        else:
            # Mutable Python values (lists, inputs) are converted afresh per call, as
            # Strawberry does, so that a resolver changing one cannot leak it.
            convert = self.constant("CONVERT", arguments.convert)
            if arguments.mode == "convert":
                source = self.constant("RAW", arguments.raw)
            else:
                source = "raw" if awaited else f"{self.constant('ARGS', arguments.read)}(st)"
            parts.append(f"**{convert}({source}, {info})")
        call = f"{self.constant('RESOLVER', resolver.wrapped_func)}({', '.join(parts)})"
        out.line(f"v = {'await ' if awaited else ''}{call}")
        if not awaited and may_await(field):
            # graphql-core would await it; the plan hands the request to Strawberry.
            with out.block("if is_awaitable(v):"):
                out.line("defer(v)")

    def arguments(self, site: FieldSite) -> ArgumentPlan:
        plan = self.argument_plans.get(id(site))
        if plan is None:
            plan = self.argument_plans[id(site)] = plan_arguments(self.facts, site, self.variables)
        return plan

    # Values

    def complete(
        self,
        out: _Source,
        site: FieldSite,
        gtype: GraphQLOutputType,
        var: str,
        target: str,
        position: str,
    ) -> None:
        """`target = <var completed as gtype>` (graphql-core's `complete_value`) for the
        value at the Python expression `position`."""
        nullable = not is_non_null_type(gtype)
        inner = gtype.of_type if isinstance(gtype, GraphQLNonNull) else gtype
        if is_leaf_type(inner):
            assert isinstance(inner, LeafType)
            self.leaf(out, site, inner, var, target, nullable=nullable)
            return
        if nullable:
            with out.block(f"if {var} is None:"):
                out.line(f"{target} = None")
            out.line("else:")
            out.depth += 1
        else:
            with out.block(f"if {var} is None:"):
                out.line(f"raise TypeError({self.constant('NULL', site.null_message)})")
        if isinstance(inner, GraphQLList):
            self.list_value(out, site, inner, var, target, position)
        else:
            assert isinstance(inner, GraphQLObjectType)
            function = self.object_function(inner, site)
            out.line(f"{target} = {function}({var}, {position}, st)")
        if nullable:
            out.depth -= 1

    def list_value(
        self,
        out: _Source,
        site: FieldSite,
        gtype: GraphQLList[Any],
        var: str,
        target: str,
        position: str,
    ) -> None:
        n = next(self.counter)
        here, index, item, value, error = f"lp{n}", f"i{n}", f"x{n}", f"y{n}", f"e{n}"
        with out.block(f"if {var}.__class__ is not list:"):
            out.line(f"{self.constant('CHECK', list_checker(site))}({var})")
        out.line(f"{here} = {position}")
        out.line(f"{target} = []")
        with out.block(f"for {index}, {item} in enumerate({var}):"):
            with out.block("try:"):
                item_position = f"({here}, {index}, None)"
                self.complete(out, site, gtype.of_type, item, value, item_position)
            self.let_deferral_through(out)
            with out.block(f"except Exception as {error}:"):
                located = f"locate_item({error}, {self.site_name(site)}, {here}, {index})"
                if is_non_null_type(gtype.of_type):
                    out.line(f"raise {located}")
                else:
                    out.line(f"st.add({located})")
                    out.line(f"{value} = None")
            out.line(f"{target}.append({value})")

    def leaf(
        self,
        out: _Source,
        site: FieldSite,
        gtype: LeafType,
        var: str,
        target: str,
        *,
        nullable: bool,
    ) -> None:
        """An inline fast path for the usual Python class of the type's values; any
        other value (None, an exception, another class) takes graphql-core's rules whole."""
        fallback = f"{self.constant('LEAF', leaf_completer(gtype, site, nullable=nullable))}({var})"
        if gtype is GraphQLString or gtype is GraphQLID:
            expression = f"{var} if {var}.__class__ is str else {fallback}"
        elif gtype is GraphQLBoolean:
            expression = f"{var} if {var}.__class__ is bool else {fallback}"
        elif gtype is GraphQLInt:
            expression = (
                f"{var} if {var}.__class__ is int and -2147483648 <= {var} <= 2147483647"
                f" else {fallback}"
            )
        elif gtype is GraphQLFloat:
            expression = (
                f"{var} if {var}.__class__ is float and FLOAT_MIN < {var} < FLOAT_MAX"
                f" else {fallback}"
            )
        elif (enum := _enum_names(gtype)) is not None:
            names, enum_class = enum
            expression = (
                f"{self.constant('NAMES', names)}[{var}]"
                f" if {var}.__class__ is {self.constant('ENUM', enum_class)} else {fallback}"
            )
        elif isinstance(gtype, GraphQLScalarType) and gtype.name in self.facts.scalar_classes:
            # A custom scalar: its own serializer inline, checked like graphql-core does.
            python_class = self.constant("SCALAR", self.facts.scalar_classes[gtype.name])
            with out.block(f"if {var}.__class__ is {python_class}:"):
                out.line(f"{target} = {self.constant('COERCE', gtype.coerce_output_value)}({var})")
                with out.block(f"if {target} is None or {target} is Undefined:"):
                    out.line(f"checked_leaf({self.constant('TYPE', gtype)}, {target}, {var})")
            with out.block("else:"):
                out.line(f"{target} = {fallback}")
            return
        else:
            expression = fallback
        out.line(f"{target} = {expression}")


def _enum_names(gtype: LeafType) -> tuple[dict[Any, str], type] | None:
    """Member -> name for a Strawberry enum, each computed by the type itself, once."""
    enum_class = getattr(gtype, "wrapped_cls", None)
    if not isinstance(gtype, GraphQLEnumType) or not isinstance(enum_class, type):
        return None
    if not issubclass(enum_class, Enum):
        return None
    names: dict[Any, str] = {}
    for member in enum_class:
        try:
            name = gtype.coerce_output_value(member)
        except Exception:  # a member the type cannot serialize: the slow path reports it
            return None
        if not isinstance(name, str):
            return None
        names[member] = name
    return names, enum_class


def plan_operation(
    facts: SchemaFacts,
    shape: OperationShape,
    fragments: dict[str, FragmentDetails],
    variables: VariableValues,
    *,
    deferring: bool = False,
) -> Plan:
    """Compile the variant of the operation that these variables' `@skip`/`@include`
    decisions select (`deferring`: it selects a resolver marked
    `may_return_awaitable`)."""
    return Generator(facts, shape, fragments, variables, deferring=deferring).plan()
