"""Small factories that build rows directly, for the given part of a test."""

from __future__ import annotations

import itertools
from dataclasses import dataclass

from argon2 import PasswordHasher
from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncEngine

from domain.follows import add_follow
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
