"""Posts, media and upload targets."""

from __future__ import annotations

import asyncio
import importlib
import sys
from collections.abc import Awaitable, Sequence
from datetime import datetime
from enum import Enum
from types import ModuleType
from typing import TYPE_CHECKING, Annotated, Any

import strawberry
from graphql import (
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    InlineFragmentNode,
    OperationDefinitionNode,
    SelectionSetNode,
)

from domain.engagement import MEMO_MAX_TEXT, BoundedMemo, PostEngagement, ViewerRead
from domain.posts import author_posts_page
from infra.ids import encode_cursor, to_global_id
from infra.storage import UploadTarget as StorageTarget
from models import DbRow
from models import PostStatus as PostStatusValues
from schema.common import (
    MAX_PAGE_SIZE,
    Node,
    PageInfo,
    UnsignedInt64,
    check_page_size,
    page_info,
    parse_cursor,
)
from schema.compiler import may_return_awaitable
from schema.context import Info
from schema.errors import UserError
from schema.users import User, can_see_private_content_of

if TYPE_CHECKING:
    from schema.social import CommentConnection, CommentEdge


@strawberry.enum(description="Where a post is in its life.")
class PostStatus(Enum):
    PENDING = strawberry.enum_value(
        PostStatusValues.PENDING, description="Created; waiting for its media bytes."
    )
    PROCESSING = strawberry.enum_value(
        PostStatusValues.PROCESSING, description="Bytes received; being verified and rendered."
    )
    READY = strawberry.enum_value(PostStatusValues.READY, description="Visible to others.")
    FAILED = strawberry.enum_value(
        PostStatusValues.FAILED, description="Processing failed; see failureReason."
    )


@strawberry.enum(description="Photo or video.")
class MediaKind(Enum):
    PHOTO = "PHOTO"
    VIDEO = "VIDEO"


@strawberry.enum(description="Widths: THUMB 150 (square crop), FEED 640, FULL 1080.")
class ImageSize(Enum):
    THUMB = "THUMB"
    FEED = "FEED"
    FULL = "FULL"


@strawberry.enum(description="Encoding of an image rendition.")
class ImageFormat(Enum):
    JPEG = "JPEG"
    WEBP = "WEBP"


@strawberry.type(description="One photo or video of a post.")
class Media(Node):
    row: strawberry.Private[Any]
    ready: strawberry.Private[bool]
    id: strawberry.ID = strawberry.field(description="The media item's global ID.")
    kind: MediaKind = strawberry.field(description="Photo or video.")
    width: int | None = strawberry.field(description="Pixel width, once processed.")
    height: int | None = strawberry.field(description="Pixel height, once processed.")
    placeholder: str | None = strawberry.field(
        description="A BlurHash string a client can paint before the image arrives."
    )
    duration_seconds: float | None = strawberry.field(description="Length of a video.")

    @classmethod
    def from_row(cls, row: Any, *, ready: bool) -> Media:
        return cls(
            row=row,
            ready=ready,
            id=strawberry.ID(to_global_id("Media", row.id)),
            kind=MediaKind(row.kind),
            width=row.width,
            height=row.height,
            placeholder=row.placeholder,
            duration_seconds=row.duration_seconds,
        )

    @strawberry.field(description="Null until the post is READY. For a video, its poster frame.")
    def url(
        self,
        info: Info,
        size: ImageSize | None = ImageSize.FEED,
        format: ImageFormat | None = ImageFormat.JPEG,
    ) -> str | None:
        if not self.ready:
            return None
        wanted = f"{(size or ImageSize.FEED).value}:{(format or ImageFormat.JPEG).value}"
        key = self.row.rendition_keys.get(wanted)
        return info.context.storage.public_url(key) if key else None

    @strawberry.field(description="H.264 MP4 rendition of a video; null for photos.")
    def video_url(self, info: Info) -> str | None:
        key = self.row.video_key if self.ready else None
        return info.context.storage.public_url(key) if key else None


@strawberry.type(description="A photo or video post with its caption.")
class Post(Node):
    # Built whole, author, media and engagement included, so that every field resolves
    # from memory: async field resolvers cost the executor a task each, which dominates
    # a feed page.
    row: strawberry.Private[Any]
    pk: strawberry.Private[int]
    # None when the request's document selects no engagement field (`wants_engagement`):
    # then likeCount, commentCount and viewerHasLiked are None too, never read.
    engagement: strawberry.Private[PostEngagement | None]
    id: strawberry.ID = strawberry.field(description="The post's global ID.")
    author: User = strawberry.field(description="Who posted it.")
    caption: str | None = strawberry.field(description="Text under the media.")
    hashtags: list[str] = strawberry.field(description="Hashtags of the caption, lower-cased.")
    created_at: datetime = strawberry.field(description="When the post was created.")
    status: PostStatus = strawberry.field(description="Where the post is in its life.")
    media: list[Media] = strawberry.field(
        description="1 to 10 items, in the order given at creation."
    )
    like_count: int | None = strawberry.field(graphql_type=int, description="How many likes.")
    comment_count: int | None = strawberry.field(graphql_type=int, description="How many comments.")
    viewer_has_liked: bool | None = strawberry.field(
        graphql_type=bool, description="Whether the viewer likes this post."
    )

    @classmethod
    def build(
        cls, row: Any, media: list[Any], author: Any, engagement: PostEngagement | None = None
    ) -> Post:
        """A post from its rows and, when the document selects engagement fields, its
        `PostEngagement` (see `read_engagement`)."""
        ready = row.status == PostStatusValues.READY
        return cls(
            row=row,
            pk=row.id,
            engagement=engagement,
            id=strawberry.ID(to_global_id("Post", row.id)),
            author=User.from_row(author),
            caption=row.caption,
            hashtags=list(row.hashtags),
            created_at=row.created_at,
            status=PostStatus(row.status),
            media=[Media.from_row(item, ready=ready) for item in media],
            like_count=engagement.like_count if engagement else None,
            comment_count=engagement.comment_count if engagement else None,
            viewer_has_liked=engagement.viewer_has_liked if engagement else None,
        )

    @strawberry.field(description="Why processing failed; visible to the author only.")
    def failure_reason(self, info: Info) -> str | None:
        return self.row.failure_reason if info.context.viewer_id == self.row.author_id else None

    @strawberry.field(
        graphql_type=Annotated["CommentConnection", strawberry.lazy("schema.social")],
        description="Oldest first.",
    )
    @may_return_awaitable
    def comments(
        self, info: Info, first: int | None = 20, after: str | None = None
    ) -> CommentConnection | Awaitable[CommentConnection]:
        # The first page, when the comments the post carries answer it, needs no I/O;
        # any other is read from PostgreSQL (an awaitable: the compiled executor then
        # hands the request to Strawberry, see `schema.compiler.FallBack`).
        carried = self.engagement
        if (
            carried is not None
            and after is None
            and first is not None
            and 1 <= first <= MAX_PAGE_SIZE
            and (first < len(carried.first_comments) or carried.all_comments)
        ):
            return carried_comments(carried, first)
        awaitable: Awaitable[CommentConnection] = _social().comment_connection(
            info, self.pk, first, after
        )
        return awaitable


def carried_comments(carried: PostEngagement, first: int) -> CommentConnection:
    """The first `first` comments of a post from those it carries: the same page as
    `schema.social.comment_connection` reads from PostgreSQL."""
    authors = carried.comment_authors
    rows = carried.first_comments
    shown = [authors[row.author_id] for row in rows[:first]]
    # The post's shared preview: the connection an earlier page built for it, while its
    # authors' rows are the same (the same objects: `RecentRecords` hands one out for a
    # while; or equal).
    views = carried.views
    if views is not None:
        built = views.get(first)
        if built is not None and built[0] == shown:
            connection: CommentConnection = built[1]
            return connection
    social = _social()
    edges = [_comment_edge(social, row, author) for row, author in zip(rows, shown, strict=False)]
    connection = social.CommentConnection(
        edges=edges,
        page_info=page_info(
            edges, has_next=len(rows) > first, has_previous=False, cursor=_comment_cursor
        ),
    )
    if views is not None:
        views[first] = (shown, connection)
    return connection


# Comment id -> (its author's row, its edge): comments never change, and the same author
# row object (`RecentRecords` hands one out for a while) means the same author, so a
# page reuses the edges earlier pages built. Bounded by entries and by comment text
# (emptied when full).
_EDGES: BoundedMemo[int, tuple[Any, CommentEdge]] = BoundedMemo(20_000, MEMO_MAX_TEXT)


def _comment_edge(social: ModuleType, row: Any, author: Any) -> CommentEdge:
    built = _EDGES.get(row.id)
    if built is not None and built[0] is author:
        return built[1]
    edge: CommentEdge = social.CommentEdge(
        cursor=encode_cursor(row.id), node=social.Comment.from_row(row, author)
    )
    _EDGES.put(row.id, (author, edge), len(row.text))
    return edge


def _social() -> ModuleType:
    """`schema.social` (which imports this module, so not at import time)."""
    return sys.modules.get("schema.social") or importlib.import_module("schema.social")


def _comment_cursor(edge: CommentEdge) -> str:
    return edge.cursor


# Post fields whose values come from `domain.engagement`.
ENGAGEMENT_FIELDS = frozenset({"likeCount", "commentCount", "viewerHasLiked", "comments"})
# Operation node id -> (the node, whether its document selects an engagement field).
_SELECTS_ENGAGEMENT: dict[int, tuple[OperationDefinitionNode, bool]] = {}
_SELECTS_ENGAGEMENT_MAX = 1024


def wants_engagement(info: Info) -> bool:
    """Whether the request's operation selects an engagement field of Post anywhere
    (with its fragments; whatever `@skip`/`@include` decide, so never wrongly False).
    Pages without them (the plain feed) skip the engagement read. Memoized per parsed
    operation: the parser caches of both executors keep the same node per document."""
    # graphql-core's info, which Strawberry's Info wraps (the compiled executor's builds
    # it on first use): the public `selected_fields` converts the whole tree each call.
    raw = info._raw_info
    operation = raw.operation
    memo = _SELECTS_ENGAGEMENT.get(id(operation))
    if memo is not None and memo[0] is operation:
        return memo[1]
    found = _selects(operation.selection_set, raw.fragments, set())
    if len(_SELECTS_ENGAGEMENT) >= _SELECTS_ENGAGEMENT_MAX:
        _SELECTS_ENGAGEMENT.clear()
    _SELECTS_ENGAGEMENT[id(operation)] = (operation, found)
    return found


def _selects(
    selection_set: SelectionSetNode | None,
    fragments: dict[str, FragmentDefinitionNode],
    seen: set[str],
) -> bool:
    for selection in selection_set.selections if selection_set else ():
        if isinstance(selection, FieldNode):
            if selection.name.value in ENGAGEMENT_FIELDS:
                return True
            if _selects(selection.selection_set, fragments, seen):
                return True
        elif isinstance(selection, FragmentSpreadNode):
            name = selection.name.value
            if name not in seen and name in fragments:
                seen.add(name)
                if _selects(fragments[name].selection_set, fragments, seen):
                    return True
        elif isinstance(selection, InlineFragmentNode):
            if _selects(selection.selection_set, fragments, seen):
                return True
    return False


async def read_engagement(
    info: Info, post_ids: Sequence[int], *, viewer_read: ViewerRead | None = None
) -> dict[int, PostEngagement] | None:
    """The engagement of these posts as the viewer sees it, when the request's document
    selects any (else None, at no cost): one `Engagement.read` for the whole batch, with
    the viewer's part from `viewer_read` when it rode an earlier round trip."""
    if not post_ids or not wants_engagement(info):
        return None
    context = info.context
    return await context.resources.engagement.read(
        # Through a lambda: the request's loaders are built only if the set is needed.
        context.viewer_id,
        post_ids,
        hidden_users=lambda: context.loaders.hidden_users(),
        viewer_read=viewer_read,
    )


async def build_posts(
    info: Info,
    posts: list[tuple[Any, list[Any] | None]],
    *,
    authors: dict[int, Any] | None = None,
) -> list[Post]:
    """Posts from rows (with their media when already loaded): the missing media and
    every author (unless given) come through the loaders, one batch each, and their
    engagement in one read (`read_engagement`), all at once."""
    loaders = info.context.loaders
    missing = [row.id for row, media in posts if media is None]
    wanted = list(
        {row.author_id for row, _ in posts if not authors or row.author_id not in authors}
    )
    media_rows, author_rows, engagement = await asyncio.gather(
        loaders.media_by_post_id.load_many(missing),
        loaders.user_by_id.load_many(wanted),
        read_engagement(info, [row.id for row, _ in posts]),
    )
    loaded = dict(zip(missing, media_rows, strict=True))
    by_id = dict(authors or {})
    by_id.update({author.id: author for author in author_rows if author is not None})
    return [
        Post.build(
            row,
            media if media is not None else loaded[row.id],
            by_id[row.author_id],
            engagement[row.id] if engagement is not None else None,
        )
        for row, media in posts
    ]


@strawberry.type(description="A post in a connection, with its cursor.")
class PostEdge:
    cursor: str = strawberry.field(description="Opaque cursor of this edge.")
    node: Post = strawberry.field(description="The post.")


def edge_cursor(edge: PostEdge) -> str:
    return edge.cursor


@strawberry.type(description="A page of posts.")
class PostConnection:
    edges: list[PostEdge] = strawberry.field(description="The posts of this page.")
    page_info: PageInfo = strawberry.field(description="Paging state.")


async def post_connection(
    info: Info, rows: list[DbRow], size: int, *, has_previous: bool
) -> PostConnection:
    """A page from first + 1 rows ordered newest first; cursors are the post ids."""
    posts = await build_posts(info, [(row, None) for row in rows[:size]])
    edges = [PostEdge(cursor=encode_cursor(post.pk), node=post) for post in posts]
    return PostConnection(
        edges=edges,
        page_info=page_info(
            edges, has_next=len(rows) > size, has_previous=has_previous, cursor=edge_cursor
        ),
    )


@strawberry.type(description="An HTTP header or form field.")
class HttpField:
    name: str = strawberry.field(description="Header or field name.")
    value: str = strawberry.field(description="Its value.")


@strawberry.type(
    description="Where and how the client sends one media item's bytes, straight to the blob store."
)
class UploadTarget:
    media_id: strawberry.ID = strawberry.field(description="The media item these bytes are for.")
    method: str = strawberry.field(
        description=(
            "PUT: send the bytes as the body with `headers`. "
            "POST: multipart form with `fields` then the file."
        )
    )
    url: str = strawberry.field(description="Where to send the bytes.")
    headers: list[HttpField] = strawberry.field(description="Headers to send as they are.")
    fields: list[HttpField] = strawberry.field(description="Form fields, before the file (POST).")
    expires_at: datetime = strawberry.field(description="The target stops working after this.")
    part_size: UnsignedInt64 | None = strawberry.field(
        description=(
            "For large videos: the bytes go in parts of partSize to partUrls[i] (PUT), in order."
        )
    )
    part_urls: list[str] | None = strawberry.field(description="One URL per part, in order.")

    @classmethod
    def build(cls, media_id: int, target: StorageTarget) -> UploadTarget:
        return cls(
            media_id=strawberry.ID(to_global_id("Media", media_id)),
            method=target.method,
            url=target.url,
            headers=[HttpField(name=k, value=v) for k, v in target.headers.items()],
            fields=[HttpField(name=k, value=v) for k, v in target.fields.items()],
            expires_at=target.expires_at,
            part_size=UnsignedInt64(target.part_size) if target.part_size else None,
            part_urls=target.part_urls,
        )


@strawberry.input(description="One photo or video to upload.")
class MediaInput:
    content_type: str = strawberry.field(
        description="e.g. image/jpeg, image/png, image/webp, video/mp4, video/quicktime"
    )
    byte_size: UnsignedInt64 = strawberry.field(description="Exact size of the file in bytes.")


@strawberry.input(description="A new post.")
class CreatePostInput:
    caption: str | None = strawberry.field(default=None, description="Up to 2,200 characters.")
    media: list[MediaInput] = strawberry.field(description="1 to 10 photos or videos, in order.")
    idempotency_key: str | None = strawberry.field(
        default=None,
        description="Retrying with the same key returns the same post instead of a second one.",
    )


@strawberry.type(description="Result of createPost.")
class CreatePostPayload:
    post: Post | None = strawberry.field(default=None, description="The PENDING post.")
    uploads: list[UploadTarget] = strawberry.field(
        default_factory=list, description="One upload target per media item, in order."
    )
    errors: list[UserError] = strawberry.field(
        default_factory=list, description="Expected failures."
    )


@strawberry.type(description="Result of a mutation about one post.")
class PostPayload:
    post: Post | None = strawberry.field(default=None, description="The post, as it is now.")
    errors: list[UserError] = strawberry.field(
        default_factory=list, description="Expected failures."
    )


@strawberry.type(description="Result of a deletion.")
class DeletePayload:
    deleted_id: strawberry.ID | None = strawberry.field(
        default=None, description="Global ID of what was deleted."
    )
    errors: list[UserError] = strawberry.field(
        default_factory=list, description="Expected failures."
    )


async def user_posts(
    info: Info, author_id: int, first: int | None, after: str | None
) -> PostConnection:
    """User.posts: newest first; the author also sees PENDING, PROCESSING and FAILED."""
    size = check_page_size(first)
    cursor = parse_cursor(after, 1)
    if not await can_see_private_content_of(info, author_id):
        return await post_connection(info, [], size, has_previous=cursor is not None)
    async with info.context.engine.connect() as conn:
        rows = await author_posts_page(
            conn=conn,
            author_id=author_id,
            include_unready=info.context.viewer_id == author_id,
            first=size,
            after=cursor[0] if cursor else None,
        )
    return await post_connection(info, rows, size, has_previous=cursor is not None)
