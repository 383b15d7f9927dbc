"""Small factories that build rows directly, for the given part of a test."""

from __future__ import annotations

import itertools
from dataclasses import dataclass

from argon2 import PasswordHasher
from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncEngine

from domain.follows import add_follow
from domain.posts import (
    MediaOutcome,
    MediaSpec,
    create_post,
    mark_ready,
    rendition_key,
    start_processing,
)
from infra.ids import to_global_id
from infra.security import issue_token
from models import User, table_of
from settings import Settings

PASSWORD = "correct horse battery"
# Hashed once: factories make many users, and argon2 is slow on purpose.
PASSWORD_HASH = PasswordHasher().hash(PASSWORD)
_sequence = itertools.count(1)


@dataclass
class MadeUser:
    pk: int
    username: str
    token: str

    @property
    def id(self) -> str:
        return to_global_id("User", self.pk)


@dataclass
class Factory:
    engine: AsyncEngine
    settings: Settings

    async def user(self, username: str | None = None, *, is_private: bool = False) -> MadeUser:
        name = username or f"user{next(_sequence)}"
        async with self.engine.begin() as conn:
            pk = await conn.scalar(
                insert(table_of(User))
                .values(
                    username=name,
                    email=f"{name}@example.com",
                    password_hash=PASSWORD_HASH,
                    is_private=is_private,
                )
                .returning(table_of(User).c.id)
            )
        assert pk is not None
        return MadeUser(pk=pk, username=name, token=self.token_for(pk))

    def token_for(self, pk: int, ttl_seconds: int | None = None, now: float | None = None) -> str:
        return issue_token(
            pk,
            secret=self.settings.secret_key,
            ttl_seconds=ttl_seconds or self.settings.token_ttl_seconds,
            now=now,
        )

    async def users(self, count: int) -> list[MadeUser]:
        return [await self.user() for _ in range(count)]

    async def follow(self, follower: MadeUser, followee: MadeUser) -> None:
        async with self.engine.begin() as conn:
            await add_follow(conn=conn, follower_id=follower.pk, followee_id=followee.pk)

    async def ready_post(self, author: MadeUser, caption: str | None = None) -> int:
        """A post taken through the real state machine to READY (the same transaction that
        writes the fan-out outbox row), with rendition keys standing in for processing."""
        async with self.engine.begin() as conn:
            created = await create_post(
                conn=conn,
                author_id=author.pk,
                caption=caption,
                items=[MediaSpec("image/jpeg", 1000)],
                idempotency_key=None,
            )
            post_id = created.post.id
            await start_processing(conn=conn, post_id=post_id)
            media_id = created.media[0].id
            outcome = MediaOutcome(
                media_id=media_id,
                detected_type="image/jpeg",
                width=1080,
                height=1080,
                placeholder="LEHV6nWB2yk8pyo0adR*.7kCMdnj",
                rendition_keys={
                    f"{size}:{fmt}": rendition_key(post_id, media_id, size, fmt)
                    for size in ("THUMB", "FEED", "FULL")
                    for fmt in ("JPEG", "WEBP")
                },
            )
            await mark_ready(conn=conn, post_id=post_id, outcomes=[outcome])
        return int(post_id)
