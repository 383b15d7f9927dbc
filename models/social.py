"""Likes, comments and the sharded per-post engagement counters (issue 8, points 1-2).

The like and comment rows are the truth. `post_counters` holds each post's counts split
over a few shard rows (see `domain.counters`): a burst of likes on one viral post updates
several rows instead of queueing behind one row lock, and reading a count is a SUM over
at most `COUNTER_SHARDS` rows found by the primary key.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, DateTime, ForeignKey, Index, Integer, SmallInteger, Text, func
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base
from models.posts import SNOWFLAKE_DEFAULT


class Like(Base):
    """user_id likes post_id; the primary key makes a second like a no-op."""

    __tablename__ = "likes"

    post_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("posts.id", ondelete="CASCADE"), primary_key=True
    )
    user_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now()
    )

    # "Which of these posts did I like" and "what did I like lately, newest post first"
    # (post ids are time-ordered); also what the users foreign key cascades through.
    __table_args__ = (Index("ix_likes_user_id_post_id", user_id, post_id.desc()),)


class Comment(Base):
    """A comment; ids are time-ordered (next_snowflake), so a post's comments page oldest
    first on (post_id, id) with the id alone as the cursor."""

    __tablename__ = "comments"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, server_default=SNOWFLAKE_DEFAULT)
    post_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("posts.id", ondelete="CASCADE"), nullable=False
    )
    author_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("users.id", ondelete="CASCADE"), nullable=False
    )
    text: Mapped[str] = mapped_column(Text, nullable=False)
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now()
    )

    __table_args__ = (
        Index("ix_comments_post_id_id", post_id, id),
        # What the users foreign key cascades through (without it, a seq scan per user).
        Index("ix_comments_author_id", author_id),
    )


class PostCounter(Base):
    """One shard of a post's like and comment counts; a post's count is the SUM of its
    shards. Each like or comment is counted in exactly one shard, chosen from its own
    key, so a shard never goes negative."""

    __tablename__ = "post_counters"

    post_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("posts.id", ondelete="CASCADE"), primary_key=True
    )
    shard: Mapped[int] = mapped_column(SmallInteger, primary_key=True)
    like_count: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    comment_count: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
