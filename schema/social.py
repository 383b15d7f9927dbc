"""Social: comments (types, connection, payload) and the like and comment root fields
(issue 8, points 1-2).

Other schema modules use these names: `Comment.from_row(row, author_row)`, the
`CommentConnection` of `Post.comments` built by `comment_connection`, `CommentPayload`.
This module imports nothing from schema.posts at import time (schema.posts imports this
one for Post.comments); the root fields name PostPayload and DeletePayload lazily.
"""

from __future__ import annotations

import weakref
from collections import defaultdict
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any

import strawberry
from aiodataloader import DataLoader
from sqlalchemy.ext.asyncio import AsyncEngine
from strawberry.permission import BasePermission

from domain.comments import CommentRecord, first_comments
from infra.ids import encode_cursor, to_global_id
from schema.common import Node, PageInfo, check_page_size, page_info, parse_cursor
from schema.context import Info, IsAuthenticated
from schema.errors import UserError
from schema.users import User

if TYPE_CHECKING:
    from schema.posts import DeletePayload, PostPayload


@strawberry.type(description="A comment on a post.")
class Comment(Node):
    row: strawberry.Private[CommentRecord]
    id: strawberry.ID = strawberry.field(description="The comment's global ID.")
    author: User = strawberry.field(description="Who wrote it.")
    text: str = strawberry.field(description="The comment, trimmed; 1 to 2,200 characters.")
    created_at: datetime = strawberry.field(description="When it was written.")

    @classmethod
    def from_row(cls, row: CommentRecord | Any, author_row: Any) -> Comment:
        """A comment from its row (a `CommentRecord`, or any row with id, post_id,
        author_id, text, created_at) and its author's user row."""
        return cls(
            row=row,
            id=strawberry.ID(to_global_id("Comment", row.id)),
            author=User.from_row(author_row),
            text=row.text,
            created_at=row.created_at,
        )


@strawberry.type(description="A comment in a connection, with its cursor.")
class CommentEdge:
    cursor: str = strawberry.field(description="Opaque cursor of this edge.")
    node: Comment = strawberry.field(description="The comment.")


@strawberry.type(description="A page of comments, oldest first.")
class CommentConnection:
    edges: list[CommentEdge] = strawberry.field(description="The comments of this page.")
    page_info: PageInfo = strawberry.field(description="Paging state.")


@strawberry.type(description="Result of addComment.")
class CommentPayload:
    comment: Comment | None = strawberry.field(default=None, description="The new comment.")
    errors: list[UserError] = strawberry.field(
        default_factory=list, description="Expected failures."
    )


async def build_comments(info: Info, rows: list[CommentRecord]) -> list[Comment]:
    """Comments from rows, their authors through the user loader in one batch (authors
    gone meanwhile are left out)."""
    authors = await info.context.loaders.user_by_id.load_many(
        list(dict.fromkeys(row.author_id for row in rows))
    )
    by_id = {author.id: author for author in authors if author is not None}
    return [Comment.from_row(row, by_id[row.author_id]) for row in rows if row.author_id in by_id]


def _edge_cursor(edge: CommentEdge) -> str:
    return edge.cursor


# A page of a post's comments: (post id, page size, the comment id it comes after).
PageKey = tuple[int, int, int | None]


class CommentPagesLoader(DataLoader[PageKey, list[CommentRecord]]):
    """Pages of comments of many posts (a feed's `comments(first: 5)` past what posts
    carry): one statement per distinct (size, after) in a batch, whatever the number of
    posts (`domain.comments.first_comments`, with the viewer's hidden authors left out).
    Request-scoped: one per `Loaders` (see `_page_loader`)."""

    def __init__(self, engine: AsyncEngine, loaders: Any) -> None:
        super().__init__()
        self.engine = engine
        # Weak: the loader is kept by its `Loaders` (a weak key), and must not keep it.
        self.loaders = weakref.ref(loaders)

    async def batch_load_fn(self, keys: list[PageKey]) -> list[list[CommentRecord]]:
        loaders = self.loaders()
        if loaders is None:  # pragma: no cover - a request's loaders outlive its fields
            raise RuntimeError("the request's loaders are gone")
        hidden = await loaders.hidden_users()
        groups: dict[tuple[int, int | None], list[int]] = defaultdict(list)
        for post_id, size, after in keys:
            groups[(size, after)].append(post_id)
        found: dict[PageKey, list[CommentRecord]] = {}
        async with self.engine.connect() as conn:
            for (size, after), post_ids in groups.items():
                pages = await first_comments(
                    conn=conn,
                    post_ids=list(dict.fromkeys(post_ids)),
                    limit=size + 1,
                    hidden=hidden,
                    after=after,
                )
                found.update({(p, size, after): rows for p, rows in pages.items()})
        return [found[key] for key in keys]


_PAGE_LOADERS: weakref.WeakKeyDictionary[Any, CommentPagesLoader] = weakref.WeakKeyDictionary()


def _page_loader(info: Info) -> CommentPagesLoader:
    """The request's `CommentPagesLoader`, kept with its `Loaders` (renewed per request
    and per WebSocket operation), so it goes with them."""
    loaders = info.context.loaders
    loader = _PAGE_LOADERS.get(loaders)
    if loader is None:
        loader = _PAGE_LOADERS[loaders] = CommentPagesLoader(info.context.engine, loaders)
    return loader


def forget_comment_pages(info: Info) -> None:
    """After a comment was added or deleted: the request's pages of comments read so
    far go, so that a later field of the same document (mutations run one after the
    other) reads them again and sees the change."""
    loader = _PAGE_LOADERS.get(info.context.loaders)
    if loader is not None:
        loader.clear_all()


async def comment_connection(
    info: Info, post_id: int, first: int | None, after: str | None
) -> CommentConnection:
    """Post.comments: oldest first, keyset on (post_id, id), cursors are comment ids (so
    comments added meanwhile never shift a page), without comments by accounts hidden
    from the viewer. The caller has checked that the viewer can see the post.
    Cost: the posts of a request asking for the same page share one statement
    (`CommentPagesLoader`), plus the user loader's batch for the authors."""
    size = check_page_size(first)
    cursor = parse_cursor(after, 1)
    rows = await _page_loader(info).load((post_id, size, cursor[0] if cursor else None))
    comments = await build_comments(info, rows[:size])
    edges = [CommentEdge(cursor=encode_cursor(c.row.id), node=c) for c in comments]
    return CommentConnection(
        edges=edges,
        page_info=page_info(
            edges,
            has_next=len(rows) > size,
            has_previous=cursor is not None,
            cursor=_edge_cursor,
        ),
    )


auth: list[type[BasePermission]] = [IsAuthenticated]


@strawberry.type
class SocialMutation:
    @strawberry.mutation(permission_classes=auth, description="Idempotent.")
    async def like_post(
        self, info: Info, post_id: strawberry.ID
    ) -> Annotated[PostPayload, strawberry.lazy("schema.posts")]:
        return await social_resolvers.like_post(info, post_id)

    @strawberry.mutation(permission_classes=auth, description="Idempotent.")
    async def unlike_post(
        self, info: Info, post_id: strawberry.ID
    ) -> Annotated[PostPayload, strawberry.lazy("schema.posts")]:
        return await social_resolvers.unlike_post(info, post_id)

    @strawberry.mutation(
        permission_classes=auth,
        description=(
            "Comment on a post the viewer can see: 1 to 2,200 characters after trimming. "
            "Notifies the post's author and the @mentioned users."
        ),
    )
    async def add_comment(self, info: Info, post_id: strawberry.ID, text: str) -> CommentPayload:
        return await social_resolvers.add_comment(info, post_id, text)

    @strawberry.mutation(
        permission_classes=auth,
        description="By the comment's author or the post's author; others get FORBIDDEN.",
    )
    async def delete_comment(
        self, info: Info, id: strawberry.ID
    ) -> Annotated[DeletePayload, strawberry.lazy("schema.posts")]:
        return await social_resolvers.delete_comment(info, id)


# Root-field classes this module adds to Query, Mutation and Subscription (schema/root.py
# merges them), and extra types the schema must know.
QUERIES: tuple[type, ...] = ()
MUTATIONS: tuple[type, ...] = (SocialMutation,)
SUBSCRIPTIONS: tuple[type, ...] = ()
TYPES: tuple[type, ...] = (Comment, CommentConnection)

# Last, because resolvers.social builds the types above (the root fields call it only at
# request time); importing it here also registers Comment for node(id:) at start.
from resolvers import social as social_resolvers  # noqa: E402
