"""What a post page shows of its engagement: like and comment counts, whether the viewer
liked it, and its first comments, for a whole page of posts at once (issue 8, point 9).

Interface (the likes and comments work calls the hooks after its commits):

    engagement = resources.engagement
    found = await engagement.read(viewer_id, post_ids)   # {post_id: PostEngagement}
    await engagement.like_changed(post_id, user_id, liked=True)
    await engagement.comments_changed(post_id)

Stub until the social-feed work lands: zero counts, nothing liked, no comments.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

# How many of a post's oldest comments a page carries with it.
FIRST_COMMENTS = 3


@dataclass(slots=True)
class PostEngagement:
    like_count: int = 0
    comment_count: int = 0
    viewer_has_liked: bool = False
    # The post's oldest comments (rows with id, post_id, author_id, text, created_at),
    # up to FIRST_COMMENTS, and whether they are all it has.
    first_comments: list[Any] = field(default_factory=list)
    all_comments: bool = True


class Engagement:
    def __init__(self, engine: AsyncEngine, redis: Any) -> None:
        self.engine = engine
        self.redis = redis

    async def read(
        self, viewer_id: int | None, post_ids: Sequence[int]
    ) -> dict[int, PostEngagement]:
        del viewer_id
        return {post_id: PostEngagement() for post_id in post_ids}

    async def like_changed(self, post_id: int, user_id: int, *, liked: bool) -> None:
        del post_id, user_id, liked

    async def comments_changed(self, post_id: int) -> None:
        del post_id
