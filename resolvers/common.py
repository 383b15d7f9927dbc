from __future__ import annotations

from collections.abc import Awaitable, Callable

import strawberry

from domain.errors import DomainError, ErrorCode
from infra.ids import InvalidId, from_global_id, pk_from_global_id
from schema.common import Node
from schema.context import Info
from schema.errors import invalid_input

# type name -> loader of one object by primary key; each domain registers its Node types.
NodeResolver = Callable[[Info, int], Awaitable[Node | None]]
NODE_RESOLVERS: dict[str, NodeResolver] = {}


def register_node(type_name: str, resolver: NodeResolver) -> None:
    NODE_RESOLVERS[type_name] = resolver


def payload_pk(global_id: str, type_name: str, field: str) -> int:
    """A mutation argument's primary key; a malformed ID is a payload INVALID_INPUT."""
    try:
        return pk_from_global_id(global_id, type_name)
    except InvalidId as exc:
        raise DomainError(ErrorCode.INVALID_INPUT, f"Not a valid {type_name} ID.", field) from exc


def query_pk(global_id: str, type_name: str) -> int:
    """A query argument's primary key; a malformed ID is an INVALID_INPUT GraphQL error."""
    try:
        return pk_from_global_id(global_id, type_name)
    except InvalidId as exc:
        raise invalid_input(f"Not a valid {type_name} ID.") from exc


async def resolve_node(info: Info, id: strawberry.ID) -> Node | None:
    try:
        type_name, pk = from_global_id(id)
    except InvalidId as exc:
        raise invalid_input("Not a valid global ID.") from exc
    resolver = NODE_RESOLVERS.get(type_name)
    if resolver is None:
        raise invalid_input("Not a valid global ID.")
    return await resolver(info, pk)
