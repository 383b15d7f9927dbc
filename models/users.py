from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Boolean, DateTime, Identity, Index, Integer, String, func, text
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base


class User(Base):
    """An account. Counters are denormalised and kept exact in the same transaction
    as the row that changes them (a follow, a post becoming READY)."""

    __tablename__ = "users"

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    # Stored lower-cased: usernames are unique case-insensitively and match [a-z0-9._].
    username: Mapped[str] = mapped_column(String(30), nullable=False, unique=True)
    email: Mapped[str] = mapped_column(String(254), nullable=False)
    password_hash: Mapped[str] = mapped_column(String(200), nullable=False)
    display_name: Mapped[str | None] = mapped_column(String(64))
    bio: Mapped[str | None] = mapped_column(String(150))
    is_private: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default=text("false"))
    follower_count: Mapped[int] = mapped_column(Integer, nullable=False, server_default=text("0"))
    following_count: Mapped[int] = mapped_column(Integer, nullable=False, server_default=text("0"))
    post_count: Mapped[int] = mapped_column(Integer, nullable=False, server_default=text("0"))
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now()
    )

    __table_args__ = (
        Index("uq_users_email_lower", func.lower(email), unique=True),
        # searchUsers looks usernames up by prefix.
        Index(
            "ix_users_username_prefix", username, postgresql_ops={"username": "text_pattern_ops"}
        ),
    )
