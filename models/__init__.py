"""SQLAlchemy models (table definitions) and the engine factory.

Tables are declared with the ORM so Alembic and mypy see them; the hot paths
query them with Core statements (`User.__table__`) into plain rows, which run
several times faster than ORM sessions (see ../shared/FACTS.md).
"""

from models.base import IDS, Base, DbRow, create_engine, table_of
from models.follows import Block, Follow, FollowRequest
from models.hashtags import Hashtag, PostHashtag
from models.notifications import Notification
from models.outbox import OutboxEvent
from models.posts import Media, Post, PostStatus
from models.social import Comment, Like, PostCounter
from models.stories import Story, StoryView
from models.users import User

__all__ = [
    "IDS",
    "Base",
    "Block",
    "Comment",
    "DbRow",
    "Follow",
    "FollowRequest",
    "Hashtag",
    "Like",
    "Media",
    "Notification",
    "OutboxEvent",
    "Post",
    "PostCounter",
    "PostHashtag",
    "PostStatus",
    "Story",
    "StoryView",
    "User",
    "create_engine",
    "table_of",
]
