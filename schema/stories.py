"""Stories: types, payloads and root fields.

A story is built whole (author, media and the viewer's seen flag come with it from
one statement, see `domain.stories`), so its fields resolve from memory and a tray of
any size costs the same few statements.
"""

from __future__ import annotations

from datetime import datetime

import strawberry
from strawberry.permission import BasePermission

from domain.stories import StoryRecord
from infra.ids import to_global_id
from models import DbRow
from schema.common import Node
from schema.context import Info, IsAuthenticated
from schema.errors import UserError
from schema.posts import Media, PostStatus, UploadTarget
from schema.users import User

MEDIA_DESCRIPTION = (
    "The story's photo or video. `url(size: FULL)` is the full-screen 1080x1920 frame "
    "(a centred cover crop to 9:16, enlarged when the original is smaller); THUMB (150 "
    "square) and FEED (640 wide, the original's shape) are as for posts; width and height "
    "are the original's. For a video the images are its poster frame and `videoUrl` is "
    "the H.264 rendition in the video's own shape. Null URLs until READY."
)


@strawberry.type(description="A photo or video shown for 24 hours from READY, and never after.")
class Story(Node):
    record: strawberry.Private[StoryRecord]
    id: strawberry.ID = strawberry.field(description="The story's global ID.")
    author: User = strawberry.field(description="Who posted it.")
    media: Media = strawberry.field(description=MEDIA_DESCRIPTION)
    created_at: datetime = strawberry.field(description="When the story was created.")
    expires_at: datetime = strawberry.field(
        description=(
            "24 hours after the story became READY; it is not shown to anyone after this. "
            "Before READY (the author's own story): when it is discarded unless READY by then."
        )
    )
    viewer_has_seen: bool = strawberry.field(
        description="Whether the viewer marked it seen (markStorySeen)."
    )
    status: PostStatus = strawberry.field(
        description="As for posts; others only ever see READY stories."
    )

    @classmethod
    def build(cls, record: StoryRecord, author: DbRow) -> Story:
        return cls(
            record=record,
            id=strawberry.ID(to_global_id("Story", record.id)),
            author=User.from_row(author),
            media=Media.from_row(record.media, ready=record.ready),
            created_at=record.created_at,
            expires_at=record.expires_at,
            viewer_has_seen=record.seen,
            status=PostStatus(record.status),
        )

    @strawberry.field(description="Why processing failed; visible to the author only.")
    def failure_reason(self, info: Info) -> str | None:
        if info.context.viewer_id != self.record.author_id:
            return None
        return self.record.failure_reason


@strawberry.type(description="One account's live stories in the tray.")
class StoryReel:
    author: User = strawberry.field(description="Whose stories these are.")
    stories: list[Story] = strawberry.field(description="Live stories, oldest first.")
    has_unseen: bool = strawberry.field(
        description="Whether any of these stories is not yet seen by the viewer."
    )


@strawberry.type(description="Result of a mutation about one story.")
class StoryPayload:
    story: Story | None = strawberry.field(default=None, description="The story, as it is now.")
    uploads: list[UploadTarget] = strawberry.field(
        default_factory=list,
        description="createStory: the one upload target for the story's bytes; else empty.",
    )
    errors: list[UserError] = strawberry.field(
        default_factory=list, description="Expected failures."
    )


# The root fields come after the types: the resolvers build these types (and import
# them from here), so this module must define them before it imports the resolvers.
from resolvers import stories as story_resolvers  # noqa: E402

auth: list[type[BasePermission]] = [IsAuthenticated]


@strawberry.type
class StoryQuery:
    stories_tray: list[StoryReel] = strawberry.field(
        resolver=story_resolvers.stories_tray,
        permission_classes=auth,
        description=(
            "Followed accounts with unexpired stories, accounts with unseen stories first. "
            "The viewer's own reel comes first when they have live stories; then reels "
            "with unseen stories, then the rest, each group by most recent story first."
        ),
    )


@strawberry.type
class StoryMutation:
    create_story: StoryPayload = strawberry.mutation(
        resolver=story_resolvers.create_story,
        permission_classes=auth,
        description=(
            "Creates a PENDING story of one photo or video (checked as a post's media) "
            "and its upload target."
        ),
    )
    complete_story_upload: StoryPayload = strawberry.mutation(
        resolver=story_resolvers.complete_story_upload,
        permission_classes=auth,
        description=(
            "Author only (others: NOT_FOUND). Tells the server the bytes are uploaded; the "
            "server checks the blob store itself, then a worker verifies and renders them."
        ),
    )
    mark_story_seen: StoryPayload = strawberry.mutation(
        resolver=story_resolvers.mark_story_seen,
        permission_classes=auth,
        description="Idempotent. NOT_FOUND for a story the viewer cannot see.",
    )


# Root-field classes this module adds to Query, Mutation and Subscription (schema/root.py
# merges them), and extra types the schema must know.
QUERIES: tuple[type, ...] = (StoryQuery,)
MUTATIONS: tuple[type, ...] = (StoryMutation,)
SUBSCRIPTIONS: tuple[type, ...] = ()
TYPES: tuple[type, ...] = (Story, StoryReel, StoryPayload)
