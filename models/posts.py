from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base

# Time-ordered ids (Instagram's scheme, narrowed to 53 bits): milliseconds since
# 2025-01-01 in the high 41 bits, a per-database sequence in the low 12. Ids sort by
# creation time and are exact as Redis scores (doubles), so the feed scores and pages
# by id alone. Defined in migration 0002.
SNOWFLAKE_DEFAULT = text("next_snowflake()")


class PostStatus:
    PENDING = "PENDING"
    PROCESSING = "PROCESSING"
    READY = "READY"
    FAILED = "FAILED"


class Post(Base):
    __tablename__ = "posts"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, server_default=SNOWFLAKE_DEFAULT)
    author_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("users.id", ondelete="CASCADE"), nullable=False
    )
    caption: Mapped[str | None] = mapped_column(Text)
    hashtags: Mapped[list[str]] = mapped_column(
        ARRAY(String(100)), nullable=False, server_default=text("'{}'")
    )
    status: Mapped[str] = mapped_column(String(16), nullable=False, server_default="PENDING")
    failure_reason: Mapped[str | None] = mapped_column(Text)
    idempotency_key: Mapped[str | None] = mapped_column(String(128))
    processing_attempts: Mapped[int] = mapped_column(
        Integer, nullable=False, server_default=text("0")
    )
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now()
    )
    status_changed_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now()
    )
    deleted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    __table_args__ = (
        CheckConstraint(
            "status IN ('PENDING', 'PROCESSING', 'READY', 'FAILED')", name="status_known"
        ),
        # Profile grids: an author's posts, newest first.
        Index("ix_posts_author_id_id", author_id, id.desc()),
        Index(
            "uq_posts_author_id_idempotency_key",
            author_id,
            idempotency_key,
            unique=True,
            postgresql_where=idempotency_key.isnot(None),
        ),
        # The sweeper finds stuck PROCESSING and abandoned PENDING posts.
        Index(
            "ix_posts_unfinished",
            status,
            status_changed_at,
            postgresql_where=text("status IN ('PENDING', 'PROCESSING')"),
        ),
    )


class Media(Base):
    __tablename__ = "media"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, server_default=SNOWFLAKE_DEFAULT)
    # A media item belongs to a post or (issue 8) to a story: exactly one of the two.
    post_id: Mapped[int | None] = mapped_column(
        BigInteger, ForeignKey("posts.id", ondelete="CASCADE")
    )
    story_id: Mapped[int | None] = mapped_column(
        BigInteger, ForeignKey("stories.id", ondelete="CASCADE")
    )
    position: Mapped[int] = mapped_column(Integer, nullable=False)
    kind: Mapped[str] = mapped_column(String(8), nullable=False)  # PHOTO or VIDEO
    content_type: Mapped[str] = mapped_column(String(64), nullable=False)  # as declared
    byte_size: Mapped[int] = mapped_column(BigInteger, nullable=False)  # as declared
    original_key: Mapped[str] = mapped_column(String(255), nullable=False)
    upload_id: Mapped[str | None] = mapped_column(String(255))  # S3 multipart upload
    detected_type: Mapped[str | None] = mapped_column(String(64))
    width: Mapped[int | None] = mapped_column(Integer)
    height: Mapped[int | None] = mapped_column(Integer)
    duration_seconds: Mapped[float | None] = mapped_column(Float)
    placeholder: Mapped[str | None] = mapped_column(String(64))
    # {"FEED:WEBP": "renditions/…/feed.webp", …}: relative keys, so a CDN change touches no row.
    rendition_keys: Mapped[dict[str, Any]] = mapped_column(
        JSONB, nullable=False, server_default=text("'{}'::jsonb")
    )
    video_key: Mapped[str | None] = mapped_column(String(255))

    __table_args__ = (
        Index("uq_media_post_id_position", post_id, position, unique=True),
        Index("uq_media_story_id", story_id, unique=True, postgresql_where=story_id.isnot(None)),
        CheckConstraint("kind IN ('PHOTO', 'VIDEO')", name="kind_known"),
        CheckConstraint("num_nonnulls(post_id, story_id) = 1", name="one_owner"),
    )
