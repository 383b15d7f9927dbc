from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, CheckConstraint, DateTime, ForeignKey, Identity, Index, func
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base


class Follow(Base):
    """follower_id follows followee_id.

    The primary key answers "do I follow X" and lists who a viewer follows (the feed
    reads followees); the (followee_id, id) index lists an author's followers newest
    first and lets fan-out walk them in keyset batches. `id` is monotonic, so it is
    the stable cursor of both connections.
    """

    __tablename__ = "follows"

    follower_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    followee_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    id: Mapped[int] = mapped_column(BigInteger, Identity(), nullable=False)
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now()
    )

    __table_args__ = (
        CheckConstraint("follower_id <> followee_id", name="no_self_follow"),
        Index("ix_follows_followee_id_id", followee_id, id.desc()),
        Index("ix_follows_follower_id_id", follower_id, id.desc()),
    )


class FollowRequest(Base):
    """A pending request to follow a private account."""

    __tablename__ = "follow_requests"

    requester_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    target_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now()
    )

    __table_args__ = (Index("ix_follow_requests_target_id", target_id, created_at.desc()),)


class Block(Base):
    """blocker_id blocked blocked_id: no follow in either direction, no request."""

    __tablename__ = "blocks"

    blocker_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    blocked_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now()
    )

    __table_args__ = (Index("ix_blocks_blocked_id", blocked_id),)
