"""SQLAlchemy models (table definitions) and the engine factory.

Tables are declared with the ORM so Alembic and mypy see them; the hot paths
query them with Core statements (`User.__table__`) into plain rows, which run
several times faster than ORM sessions (see ../shared/FACTS.md).
"""

from models.base import IDS, Base, DbRow, create_engine, table_of
from models.follows import Block, Follow, FollowRequest
from models.outbox import OutboxEvent
from models.posts import Media, Post, PostStatus
from models.users import User

__all__ = [
    "IDS",
    "Base",
    "Block",
    "DbRow",
    "Follow",
    "FollowRequest",
    "Media",
    "OutboxEvent",
    "Post",
    "PostStatus",
    "User",
    "create_engine",
    "table_of",
]
