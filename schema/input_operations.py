"""Which operation of a document a request runs: the one it names, or the only one.

Strawberry's `ExecutionContext.operation_name` falls back to the first operation's name
when the request names none, so a document with several operations and no
`operationName` ran its first one. The spec makes that a request error
(GetOperation: "If operationName is null: if document contains exactly one operation,
return it; otherwise raise a request error"), which graphql-core raises itself when it
is given no name: `OperationContext` gives it none in that case. The compiled path
follows the same rule (`schema.compiler.operation.DocumentCompiler`).
"""

from __future__ import annotations

from graphql import OperationDefinitionNode
from strawberry.types import ExecutionContext


class OperationContext(ExecutionContext):
    """Strawberry's execution context, without the fall-back to the first of several
    operations (graphql-core then answers "Must provide operation name if query contains
    multiple operations.": INVALID_INPUT, 400 in graphql-response+json mode)."""

    @property
    def operation_name(self) -> str | None:
        if self._provided_operation_name is not None:
            return self._provided_operation_name
        document = self.graphql_document
        if document is not None:
            operations = sum(isinstance(d, OperationDefinitionNode) for d in document.definitions)
            if operations > 1:
                return None
        return super().operation_name
