"""Hashtags: the Hashtag type and the `hashtag(name:)` root field (issue 8, point 3)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import strawberry

from schema.context import Info

if TYPE_CHECKING:
    from schema.posts import PostConnection

HASHTAG_NAME_RULE = (
    "The name with or without its leading '#', as typed: it is normalised as tags in "
    "captions are (NFKC, then case folding), so `CAFÉ`, `#café` and `café` name one tag, "
    "while `cafe` is another. Not one hashtag (empty, spaces or punctuation inside, "
    "longer than 100 characters): an INVALID_INPUT error. Never null for a valid name: "
    "a tag nobody used yet has postCount 0 and no posts."
)


@strawberry.type(description="A hashtag and the posts that carry it.")
class Hashtag:
    name: str = strawberry.field(
        description="The tag without '#', normalised (NFKC, then case folding)."
    )

    @strawberry.field(
        description=(
            "How many READY posts carry the tag, all of them (private accounts' too), as "
            "`posts` lists only those the viewer may see. Exact: moved in the transaction "
            "that makes a post READY or deletes it."
        )
    )
    async def post_count(self, info: Info) -> int:
        return await hashtag_resolvers.post_count(info, self.name)

    @strawberry.field(
        description=(
            "Newest first: READY posts the viewer may see (public accounts, their own, "
            "private ones they follow; never an account hidden by a block). Cursors are "
            "stable: posts added meanwhile never shift a page."
        )
    )
    async def posts(
        self, info: Info, first: int | None = 20, after: str | None = None
    ) -> Annotated[PostConnection, strawberry.lazy("schema.posts")]:
        return await hashtag_resolvers.tag_posts(info, self.name, first, after)


@strawberry.type
class HashtagQuery:
    @strawberry.field(description=f"A hashtag's page. {HASHTAG_NAME_RULE}")
    def hashtag(self, name: str) -> Hashtag | None:
        return hashtag_resolvers.hashtag(name)


# Root-field classes this module adds to Query, Mutation and Subscription (schema/root.py
# merges them), and extra types the schema must know.
QUERIES: tuple[type, ...] = (HashtagQuery,)
MUTATIONS: tuple[type, ...] = ()
SUBSCRIPTIONS: tuple[type, ...] = ()
TYPES: tuple[type, ...] = (Hashtag,)

# Last: resolvers.hashtags builds the type above (the fields call it at request time).
from resolvers import hashtags as hashtag_resolvers  # noqa: E402
