"""Text the API refuses anywhere in a request: NUL characters and unpaired surrogates.

PostgreSQL stores neither (`text` cannot hold NUL; a surrogate is not UTF-8), and the
driver's refusal would carry the SQL statement and its parameters to the client. So
every string a request carries into a resolver is checked once, before anything runs,
the same way on every transport and in every mode:

- string literals of the document, by a validation rule (`SafeStringLiterals`), so the
  check is cached with the document's validation and costs a request nothing;
- variable values, by `unsafe_variables_error` (a walk over the values, a few
  microseconds for a page's variables), called by `schema.root.InstagraphSchema`'s
  `execute` (plain HTTP) and `stream` (WebSocket and multipart HTTP subscriptions), and
  by the compiled fast path, which leaves such a request to that `execute`.

Both answer a request error with `extensions.code` INVALID_INPUT (400 in
`application/graphql-response+json` mode, `schema.graphql_http`). The walk does not go
deeper than `MAX_VARIABLE_DEPTH`: a variable nested deeper (no input type of the schema
is) is refused the same way, with its own message (`TOO_DEEP`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from graphql import GraphQLError, StringValueNode, ValidationRule

from domain.errors import ErrorCode

# A Python str holds a surrogate code point only when it came from a lone `\ud800`-style
# escape (a valid pair decodes to one code point): any of them is unpaired.
_UNSAFE = re.compile("[\x00\ud800-\udfff]")
UNSAFE_TEXT = "Text may not contain NUL characters or unpaired surrogates"
# Deeper than any variable the schema declares; a deeper value is refused, not walked.
MAX_VARIABLE_DEPTH = 64
TOO_DEEP = f"Values may not nest deeper than {MAX_VARIABLE_DEPTH} levels"


def is_unsafe_text(value: str) -> bool:
    """Whether `value` holds a NUL character or a surrogate code point."""
    return _UNSAFE.search(value) is not None


def _refused_path(
    value: object, path: list[str | int], depth: int
) -> tuple[list[str | int], str] | None:
    """Where inside `value` the first refused part is, and why (UNSAFE_TEXT or TOO_DEEP)."""
    if isinstance(value, str):
        return (path, UNSAFE_TEXT) if is_unsafe_text(value) else None
    if depth > MAX_VARIABLE_DEPTH:
        return path, TOO_DEEP
    if isinstance(value, Mapping):
        for key, item in value.items():
            if isinstance(key, str) and is_unsafe_text(key):
                return [*path, key], UNSAFE_TEXT
            found = _refused_path(item, [*path, key], depth + 1)
            if found is not None:
                return found
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            found = _refused_path(item, [*path, index], depth + 1)
            if found is not None:
                return found
    return None


def unsafe_variables_error(variables: Mapping[str, Any] | None) -> GraphQLError | None:
    """A request error naming the first variable (and where inside it) whose text holds
    a NUL or an unpaired surrogate, or that nests deeper than MAX_VARIABLE_DEPTH, else
    None."""
    if not variables:
        return None
    found = _refused_path(variables, [], 0)
    if found is None:
        return None
    path, reason = found
    name = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path[1:])
    return GraphQLError(
        f"Variable '${path[0]}{name}': {reason}.",
        extensions={"code": ErrorCode.INVALID_INPUT.value},
    )


class SafeStringLiterals(ValidationRule):
    """String literals (block strings included) may hold no NUL or unpaired surrogate:
    the lexer turns `"\\u0000"` into a NUL and takes one raw inside a block string."""

    def enter_string_value(self, node: StringValueNode, *_args: object) -> None:
        if is_unsafe_text(node.value):
            self.report_error(
                GraphQLError(
                    f"String literal: {UNSAFE_TEXT}.",
                    node,
                    extensions={"code": ErrorCode.INVALID_INPUT.value},
                )
            )
