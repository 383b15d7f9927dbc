"""Stories: one photo or video shown for 24 hours from READY, and who has seen each.

A story's media item is an ordinary `media` row whose `story_id` is set (instead of
`post_id`), so the upload, verification and rendition pipeline of posts is reused as is.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    func,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base
from models.posts import SNOWFLAKE_DEFAULT


class Story(Base):
    """A story moves PENDING -> PROCESSING -> READY or FAILED, as a post does (the same
    status values); `expires_at` is set with READY (`ready_at` + the TTL) and is what
    every read filters on, so a story disappears at that instant whether or not the
    cleanup cron has run."""

    __tablename__ = "stories"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, server_default=SNOWFLAKE_DEFAULT)
    author_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("users.id", ondelete="CASCADE"), nullable=False
    )
    status: Mapped[str] = mapped_column(String(16), nullable=False, server_default="PENDING")
    failure_reason: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now()
    )
    status_changed_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now()
    )
    ready_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # Re-enqueues by the sweeper of a story stuck in PROCESSING (workers/stories.py).
    processing_attempts: Mapped[int] = mapped_column(
        Integer, nullable=False, server_default=text("0")
    )

    __table_args__ = (
        CheckConstraint(
            "status IN ('PENDING', 'PROCESSING', 'READY', 'FAILED')", name="status_known"
        ),
        CheckConstraint("(status = 'READY') = (expires_at IS NOT NULL)", name="ready_expires"),
        # The tray: live stories of a set of authors (the viewer's followees).
        Index(
            "ix_stories_live",
            author_id,
            expires_at,
            postgresql_where=text("status = 'READY'"),
        ),
        # The cleanup cron: expired stories, oldest first.
        Index("ix_stories_expires_at", expires_at, postgresql_where=text("status = 'READY'")),
        # ... and stories that never became READY.
        Index("ix_stories_unfinished", created_at, postgresql_where=text("status <> 'READY'")),
    )


class StoryView(Base):
    """viewer_id has seen story_id; the primary key makes markStorySeen idempotent."""

    __tablename__ = "story_views"

    story_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("stories.id", ondelete="CASCADE"), primary_key=True
    )
    viewer_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    seen_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now()
    )
