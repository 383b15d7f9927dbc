"""The GraphQL schema: Strawberry types per domain, assembled in `schema.root`.

`create_schema(settings)` builds the Schema with its security limits and caches.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from schema.root import InstagraphSchema
    from settings import Settings


def create_schema(settings: Settings) -> InstagraphSchema:
    # Imported here, not at the top: the root imports every resolver, and resolvers import
    # this package's type modules, so a top-level import would make the order of first
    # imports matter.
    from schema.root import create_schema as build

    return build(settings)
