"""Posts, media and upload targets."""

from __future__ import annotations

from datetime import datetime
from enum import Enum
from typing import Any

import strawberry

from domain.posts import author_posts_page
from infra.ids import encode_cursor, to_global_id
from infra.storage import UploadTarget as StorageTarget
from models import DbRow
from models import PostStatus as PostStatusValues
from schema.common import (
    Node,
    PageInfo,
    UnsignedInt64,
    check_page_size,
    page_info,
    parse_cursor,
)
from schema.context import Info
from schema.errors import UserError
from schema.users import User, can_see_private_content_of


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
    # Built whole, author and media included, so that every field resolves from memory:
    # async field resolvers cost the executor a task each, which dominates a feed page.
    row: strawberry.Private[Any]
    pk: strawberry.Private[int]
    id: strawberry.ID = strawberry.field(description="The post's global ID.")
    author: User = strawberry.field(description="Who posted it.")
    caption: str | None = strawberry.field(description="Text under the media.")
    hashtags: list[str] = strawberry.field(description="Hashtags of the caption, lower-cased.")
    created_at: datetime = strawberry.field(description="When the post was created.")
    status: PostStatus = strawberry.field(description="Where the post is in its life.")
    media: list[Media] = strawberry.field(
        description="1 to 10 items, in the order given at creation."
    )

    @classmethod
    def build(cls, row: Any, media: list[Any], author: Any) -> Post:
        ready = row.status == PostStatusValues.READY
        return cls(
            row=row,
            pk=row.id,
            id=strawberry.ID(to_global_id("Post", row.id)),
            author=User.from_row(author),
            caption=row.caption,
            hashtags=list(row.hashtags),
            created_at=row.created_at,
            status=PostStatus(row.status),
            media=[Media.from_row(item, ready=ready) for item in media],
        )

    @strawberry.field(description="Why processing failed; visible to the author only.")
    def failure_reason(self, info: Info) -> str | None:
        return self.row.failure_reason if info.context.viewer_id == self.row.author_id else None


async def build_posts(info: Info, posts: list[tuple[Any, list[Any] | None]]) -> list[Post]:
    """Posts from rows (with their media when already loaded): the missing media and
    every author come through the loaders, one batch each."""
    loaders = info.context.loaders
    missing = [row.id for row, media in posts if media is None]
    loaded = dict(zip(missing, await loaders.media_by_post_id.load_many(missing), strict=True))
    authors = await loaders.user_by_id.load_many(list({row.author_id for row, _ in posts}))
    by_id = {author.id: author for author in authors if author is not None}
    return [
        Post.build(row, media if media is not None else loaded[row.id], by_id[row.author_id])
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
