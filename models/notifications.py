from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, CheckConstraint, DateTime, ForeignKey, Index, String, func, text
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base
from models.posts import SNOWFLAKE_DEFAULT


class Notification(Base):
    """Something another user did that concerns `recipient_id` (issue 8, point 5).

    Written by the `deliver_notifications` job from an outbox row, never on the request
    path. The id is time-ordered (`next_snowflake()`), so the newest-first connection
    pages on the id alone. A like, unlike and like again is one row: the unique index
    on (recipient, kind, actor, post, comment) turns the repeat into ON CONFLICT DO
    NOTHING. A deleted comment takes its notifications with it (foreign key cascade);
    a deleted post is soft-deleted, so the read side leaves its notifications out.
    """

    __tablename__ = "notifications"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, server_default=SNOWFLAKE_DEFAULT)
    recipient_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("users.id", ondelete="CASCADE"), nullable=False
    )
    kind: Mapped[str] = mapped_column(String(16), nullable=False)
    actor_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("users.id", ondelete="CASCADE"), nullable=False
    )
    post_id: Mapped[int | None] = mapped_column(
        BigInteger, ForeignKey("posts.id", ondelete="CASCADE")
    )
    comment_id: Mapped[int | None] = mapped_column(
        BigInteger, ForeignKey("comments.id", ondelete="CASCADE")
    )
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now()
    )
    read_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    __table_args__ = (
        CheckConstraint(
            "kind IN ('LIKE', 'COMMENT', 'FOLLOW', 'MENTION', 'FOLLOW_REQUEST')",
            name="kind_known",
        ),
        CheckConstraint("recipient_id <> actor_id", name="not_own_action"),
        # One notification per (recipient, kind, actor, post, comment): NULLs are distinct
        # in a plain unique index, hence the coalesce.
        Index(
            "uq_notifications_once",
            recipient_id,
            kind,
            actor_id,
            func.coalesce(post_id, 0),
            func.coalesce(comment_id, 0),
            unique=True,
        ),
        # The connection: a recipient's notifications newest first, keyset on id.
        Index("ix_notifications_recipient_id_id", recipient_id, id.desc()),
        # What deleting a comment cascades through (comments are deleted for real; posts
        # and users are not, so they need no such index).
        Index(
            "ix_notifications_comment_id",
            comment_id,
            postgresql_where=text("comment_id IS NOT NULL"),
        ),
        # unreadCount reads only the unread rows of one recipient.
        Index(
            "ix_notifications_unread",
            recipient_id,
            postgresql_where=text("read_at IS NULL"),
        ),
    )
