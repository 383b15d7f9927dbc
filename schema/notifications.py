"""Notifications: the Notification type, its connection, and the notifications,
markNotificationsRead and notificationAdded root fields (issue 8, point 5).

A page costs one statement for the notifications (blocked actors and deleted posts are
left out in SQL, see `domain.notifications`), the user loader's batch for the actors,
the page's posts built in one batch when asked for (`PagePosts`: the post loader, the
visibility loaders and one engagement read, whatever the page size), one statement for
the comments asked for, and one for `unreadCount` when asked for.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator
from datetime import datetime
from typing import TYPE_CHECKING, Annotated

import strawberry
from aiodataloader import DataLoader
from sqlalchemy import any_, select
from sqlalchemy.ext.asyncio import AsyncEngine
from strawberry.permission import BasePermission

from domain import notifications as notification_domain
from domain.comments import COLUMNS, CommentRecord, comments
from domain.notifications import NotificationKind, NotificationRecord
from infra.ids import encode_cursor, to_global_id
from models import IDS
from schema.common import Node, PageInfo, page_info
from schema.context import Info, IsAuthenticated
from schema.users import User

if TYPE_CHECKING:
    from schema.posts import Post
    from schema.social import Comment

# Registers the domain's enum as the GraphQL NotificationKind (the decorator returns the
# same class).
strawberry.enum(
    NotificationKind,
    description=(
        "What happened: LIKE (liked the viewer's post), COMMENT (commented on it), FOLLOW "
        "(started following the viewer, or was approved to), MENTION (@mentioned the "
        "viewer in a comment or caption), FOLLOW_REQUEST (asked to follow the viewer's "
        "private account)."
    ),
)


class CommentByIdLoader(DataLoader[int, CommentRecord | None]):
    """The comments of one page of notifications, in one statement, None for a deleted
    one. Scoped to the page (or the live event) that made it, so a page whose comments
    nobody asked for reads none."""

    def __init__(self, engine: AsyncEngine) -> None:
        super().__init__()
        self.engine = engine

    async def batch_load_fn(self, keys: list[int]) -> list[CommentRecord | None]:
        async with self.engine.connect() as conn:
            rows = await conn.execute(
                select(*COLUMNS).where(comments.c.id == any_(IDS)), {"ids": keys}
            )
        found = {row.id: CommentRecord(*row) for row in rows}
        return [found.get(key) for key in keys]


class PagePosts:
    """The posts of one page of notifications (or one live event), built together the
    first time any notification's `post` is resolved (`resolvers.posts.load_posts`: one
    batch, the visibility rules of `load_post`, one `build_posts`).
    A page whose posts nobody asked for reads none."""

    def __init__(self, info: Info, post_ids: list[int]) -> None:
        self.info = info
        self.post_ids = list(dict.fromkeys(post_ids))
        self._built: asyncio.Future[dict[int, Post]] | None = None

    async def get(self, post_id: int) -> Post | None:
        """The post as the viewer may see it; None when they may not (or it is gone)."""
        if self._built is None:
            self._built = asyncio.ensure_future(self._build())
        # Shielded: one field resolver cancelled must not cancel the page's other posts.
        return (await asyncio.shield(self._built)).get(post_id)

    async def _build(self) -> dict[int, Post]:
        from resolvers.posts import load_posts

        return await load_posts(self.info, self.post_ids)


@strawberry.type(description="Something another user did that concerns the viewer.")
class Notification(Node):
    record: strawberry.Private[NotificationRecord]
    comments: strawberry.Private[CommentByIdLoader]
    posts: strawberry.Private[PagePosts]
    id: strawberry.ID = strawberry.field(description="The notification's global ID.")
    kind: NotificationKind = strawberry.field(description="What happened.")
    actor: User = strawberry.field(description="Who did it.")
    created_at: datetime = strawberry.field(description="When it happened.")
    read: bool = strawberry.field(
        description="Whether the viewer has marked it read (markNotificationsRead)."
    )

    @strawberry.field(
        description=(
            "The post it is about (LIKE, COMMENT, MENTION); null for a follow, and when "
            "the viewer can no longer see the post. Notifications about a deleted post "
            "are not listed at all."
        )
    )
    async def post(self, info: Info) -> Annotated[Post, strawberry.lazy("schema.posts")] | None:
        if self.record.post_id is None:
            return None
        return await self.posts.get(self.record.post_id)

    @strawberry.field(
        description=(
            "The comment it is about (COMMENT, and MENTION in a comment); null otherwise, "
            "and when the viewer can no longer see the post."
        )
    )
    async def comment(
        self, info: Info
    ) -> Annotated[Comment, strawberry.lazy("schema.social")] | None:
        from schema.social import Comment

        if self.record.comment_id is None or await self.post(info) is None:
            return None
        row = await self.comments.load(self.record.comment_id)
        if row is None:
            return None
        author = await info.context.loaders.user_by_id.load(row.author_id)
        return Comment.from_row(row, author) if author is not None else None


async def build_notifications(info: Info, records: list[NotificationRecord]) -> list[Notification]:
    """Notifications from records, their actors through the user loader in one batch
    (a record whose actor is gone is left out)."""
    actors = await info.context.loaders.user_by_id.load_many(
        list(dict.fromkeys(record.actor_id for record in records))
    )
    by_id = {actor.id: actor for actor in actors if actor is not None}
    comments = CommentByIdLoader(info.context.engine)
    posts = PagePosts(info, [record.post_id for record in records if record.post_id is not None])
    return [
        Notification(
            record=record,
            comments=comments,
            posts=posts,
            id=strawberry.ID(to_global_id("Notification", record.id)),
            kind=record.kind,
            actor=User.from_row(by_id[record.actor_id]),
            created_at=record.created_at,
            read=record.read_at is not None,
        )
        for record in records
        if record.actor_id in by_id
    ]


@strawberry.type(description="A notification in a connection, with its cursor.")
class NotificationEdge:
    cursor: str = strawberry.field(description="Opaque cursor of this edge.")
    node: Notification = strawberry.field(description="The notification.")


def _edge_cursor(edge: NotificationEdge) -> str:
    return edge.cursor


@strawberry.type(description="A page of the viewer's notifications, newest first.")
class NotificationConnection:
    recipient_id: strawberry.Private[int]
    edges: list[NotificationEdge] = strawberry.field(description="The notifications of this page.")
    page_info: PageInfo = strawberry.field(description="Paging state.")

    @strawberry.field(
        description=(
            "How many of the viewer's notifications are unread, whatever the page (counted "
            "up to 1,000)."
        )
    )
    async def unread_count(self, info: Info) -> int:
        async with info.context.engine.connect() as conn:
            return await notification_domain.unread_count(conn=conn, recipient_id=self.recipient_id)


async def notification_connection(
    info: Info, recipient_id: int, records: list[NotificationRecord], size: int, *, after: bool
) -> NotificationConnection:
    """A page from first + 1 records ordered newest first; cursors are the ids."""
    built = await build_notifications(info, records[:size])
    edges = [NotificationEdge(cursor=encode_cursor(n.record.id), node=n) for n in built]
    return NotificationConnection(
        recipient_id=recipient_id,
        edges=edges,
        page_info=page_info(
            edges, has_next=len(records) > size, has_previous=after, cursor=_edge_cursor
        ),
    )


auth: list[type[BasePermission]] = [IsAuthenticated]


@strawberry.type
class NotificationQuery:
    @strawberry.field(
        permission_classes=auth,
        description=(
            "The viewer's notifications, newest first, with the unread count. Never about "
            "the viewer's own actions; none from accounts a block stands between."
        ),
    )
    async def notifications(
        self, info: Info, first: int | None = 20, after: str | None = None
    ) -> NotificationConnection:
        return await notification_resolvers.notifications(info, first, after)


@strawberry.type
class NotificationMutation:
    @strawberry.mutation(
        permission_classes=auth,
        description="Mark every notification of the viewer read; returns the first page.",
    )
    async def mark_notifications_read(self, info: Info) -> NotificationConnection:
        return await notification_resolvers.mark_notifications_read(info)


@strawberry.type
class NotificationSubscription:
    @strawberry.subscription(
        permission_classes=auth,
        description=(
            "The viewer's new notifications, as they are written (within about a second "
            "of the action). Best effort: read `notifications` after a reconnect."
        ),
    )
    async def notification_added(self, info: Info) -> AsyncGenerator[Notification, None]:
        # aclosing: when the client stops, the live subscription (its channel, presence)
        # is released at once, not whenever the inner generator is collected.
        async with contextlib.aclosing(live_resolvers.notification_added(info)) as added:
            async for notification in added:
                yield notification


# Root-field classes this module adds to Query, Mutation and Subscription (schema/root.py
# merges them), and extra types the schema must know.
QUERIES: tuple[type, ...] = (NotificationQuery,)
MUTATIONS: tuple[type, ...] = (NotificationMutation,)
SUBSCRIPTIONS: tuple[type, ...] = (NotificationSubscription,)
TYPES: tuple[type, ...] = (Notification,)

# Last: the resolvers build the types above (the root fields call them only at request
# time); importing them here also registers Notification for node(id:) at start.
from resolvers import live as live_resolvers  # noqa: E402
from resolvers import notifications as notification_resolvers  # noqa: E402
