"""The compiled GraphQL executor: a query document compiled once into Python that builds
the response straight from the objects the root resolvers return, skipping graphql-core's
per-field machinery and Strawberry's per-field wrappers (~25x less execution time on
the feed page; `bench/compiler.py`). See `schema.compiler.operation` for what it
supports and how it stays identical to Strawberry.

    compiler = DocumentCompiler(schema)  # once per process
    operation = compiler.get(query, operation_name)
    if operation is None:
        ...  # Strawberry runs the request (and reports any error)
    try:
        body = await operation.execute(context, variables)
    except FallBack:
        ...  # rare (see FallBack): Strawberry runs the request
"""

from schema.compiler.operation import CompiledOperation, DocumentCompiler, FallBack
from schema.compiler.support import may_return_awaitable

__all__ = ["CompiledOperation", "DocumentCompiler", "FallBack", "may_return_awaitable"]
