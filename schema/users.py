"""User, its connections, and the payloads of account mutations."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Annotated

import strawberry

from domain.follows import follow_page
from infra.ids import encode_cursor, to_global_id
from models import DbRow
from schema.common import Node, PageInfo, check_page_size, page_info, parse_cursor
from schema.context import Info
from schema.errors import UserError

if TYPE_CHECKING:
    from schema.posts import PostConnection


@strawberry.type(description="An account.")
class User(Node):
    pk: strawberry.Private[int]
    id: strawberry.ID = strawberry.field(description="The user's global ID.")
    username: str = strawberry.field(description="Unique handle, lower-case [a-z0-9._], 3-30.")
    display_name: str | None = strawberry.field(description="Name shown on the profile.")
    bio: str | None = strawberry.field(description="Profile text, up to 150 characters.")
    is_private: bool = strawberry.field(
        description="Private accounts approve each follower; `follow` files a request."
    )
    created_at: datetime = strawberry.field(description="When the account was created.")
    follower_count: int = strawberry.field(description="Accounts following this one.")
    following_count: int = strawberry.field(description="Accounts this one follows.")
    post_count: int = strawberry.field(description="READY posts of this account.")

    @classmethod
    def from_row(cls, row: DbRow) -> User:
        return cls(
            pk=row.id,
            id=strawberry.ID(to_global_id("User", row.id)),
            username=row.username,
            display_name=row.display_name,
            bio=row.bio,
            is_private=row.is_private,
            created_at=row.created_at,
            follower_count=row.follower_count,
            following_count=row.following_count,
            post_count=row.post_count,
        )

    @strawberry.field(description="Whether the viewer follows this account.")
    async def viewer_is_following(self, info: Info) -> bool:
        return await info.context.loaders.followed_by_viewer.load(self.pk)

    @strawberry.field(
        description="Whether the viewer has asked to follow this private account and awaits "
        "its approval (false once approved: `viewerIsFollowing` is then true)."
    )
    async def viewer_has_requested_follow(self, info: Info) -> bool:
        return await info.context.loaders.requested_by_viewer.load(self.pk)

    @strawberry.field(description="Whether this account follows the viewer.")
    async def follows_viewer(self, info: Info) -> bool:
        return await info.context.loaders.follows_viewer.load(self.pk)

    @strawberry.field(
        description="Newest first. The author sees their own PENDING and FAILED posts too."
    )
    async def posts(
        self, info: Info, first: int | None = 20, after: str | None = None
    ) -> Annotated[PostConnection, strawberry.lazy("schema.posts")]:
        from schema.posts import user_posts

        return await user_posts(info, self.pk, first, after)

    @strawberry.field(description="Accounts following this one, newest first.")
    async def followers(
        self, info: Info, first: int | None = 20, after: str | None = None
    ) -> UserConnection:
        return await user_connection(info, self.pk, "followers", first, after)

    @strawberry.field(description="Accounts this one follows, newest first.")
    async def following(
        self, info: Info, first: int | None = 20, after: str | None = None
    ) -> UserConnection:
        return await user_connection(info, self.pk, "following", first, after)


@strawberry.type(description="A user in a connection, with its cursor.")
class UserEdge:
    cursor: str = strawberry.field(description="Opaque cursor of this edge.")
    node: User = strawberry.field(description="The user.")


@strawberry.type(description="A page of users.")
class UserConnection:
    edges: list[UserEdge] = strawberry.field(description="The users of this page.")
    page_info: PageInfo = strawberry.field(description="Paging state.")


async def can_see_private_content_of(info: Info, author_id: int) -> bool:
    """Whether the viewer may see this account's posts, stories and follow lists: never
    when a block stands between them (either way: `domain.blocks`), and a private
    account's only for the followers it approved (and itself)."""
    viewer_id = info.context.viewer_id
    if viewer_id == author_id:
        return True
    if await info.context.loaders.is_hidden(author_id):
        return False
    author = await info.context.loaders.user_by_id.load(author_id)
    if author is None:
        return False
    return not author.is_private or await info.context.loaders.followed_by_viewer.load(author_id)


async def user_connection(
    info: Info, user_id: int, direction: str, first: int | None, after: str | None
) -> UserConnection:
    """Followers or followees as a connection: one statement for the page (which leaves
    out the accounts a block hides from the viewer), whose rows also prime the user
    loader, so nested user fields cost nothing more."""
    size = check_page_size(first)
    cursor = parse_cursor(after, 1)
    if not await can_see_private_content_of(info, user_id):
        return UserConnection(
            edges=[], page_info=page_info([], has_next=False, has_previous=False, cursor=str)
        )
    async with info.context.engine.connect() as conn:
        rows = await follow_page(
            conn=conn,
            user_id=user_id,
            direction=direction,
            first=size,
            after=cursor[0] if cursor else None,
            viewer_id=info.context.viewer_id,
        )
    page = rows[:size]
    info.context.loaders.user_by_id.prime_rows(page)
    edges = [UserEdge(cursor=encode_cursor(row.edge_id), node=User.from_row(row)) for row in page]
    return UserConnection(
        edges=edges,
        page_info=page_info(
            edges,
            has_next=len(rows) > size,
            has_previous=cursor is not None,
            cursor=lambda e: e.cursor,
        ),
    )


@strawberry.type(description="Result of signUp and logIn.")
class AuthPayload:
    token: str | None = strawberry.field(
        default=None, description="Bearer token for the Authorization header; expires."
    )
    user: User | None = strawberry.field(default=None, description="The account.")
    errors: list[UserError] = strawberry.field(
        default_factory=list, description="Expected failures."
    )


@strawberry.type(description="Result of a mutation about one user.")
class UserPayload:
    user: User | None = strawberry.field(default=None, description="The user, as it is now.")
    errors: list[UserError] = strawberry.field(
        default_factory=list, description="Expected failures."
    )
