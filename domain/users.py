from __future__ import annotations

import re
from typing import Any

from email_validator import EmailNotValidError, validate_email
from sqlalchemy import func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from domain.errors import DomainError, ErrorCode
from models import DbRow, User, table_of

users = table_of(User)

USERNAME_RE = re.compile(r"^[a-z0-9._]{3,30}$")
MIN_PASSWORD_LENGTH = 8
MAX_PASSWORD_LENGTH = 256  # argon2 takes any length; this caps the work one request can ask for.
MAX_DISPLAY_NAME = 64
MAX_BIO = 150

# The columns every User view needs; the password hash is never among them.
USER_COLUMNS = (
    users.c.id,
    users.c.username,
    users.c.display_name,
    users.c.bio,
    users.c.is_private,
    users.c.created_at,
    users.c.follower_count,
    users.c.following_count,
    users.c.post_count,
)


def normalize_username(raw: str) -> str:
    """Usernames are case-insensitive: stored and compared lower-cased."""
    return raw.strip().lower()


def check_username(raw: str) -> str:
    username = normalize_username(raw)
    if not USERNAME_RE.match(username):
        raise DomainError(
            ErrorCode.INVALID_INPUT,
            "Usernames are 3 to 30 characters of letters, digits, '.' and '_'.",
            field="username",
        )
    return username


def check_email(raw: str) -> str:
    try:
        checked = validate_email(raw.strip(), check_deliverability=False)
    except EmailNotValidError as exc:
        raise DomainError(ErrorCode.INVALID_INPUT, str(exc), field="email") from exc
    return checked.normalized.lower()


def check_password(password: str) -> None:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise DomainError(
            ErrorCode.INVALID_INPUT,
            f"Passwords are at least {MIN_PASSWORD_LENGTH} characters.",
            field="password",
        )
    if len(password) > MAX_PASSWORD_LENGTH:
        raise DomainError(
            ErrorCode.INVALID_INPUT,
            f"Passwords are at most {MAX_PASSWORD_LENGTH} characters.",
            field="password",
        )


async def create_user(
    *, conn: AsyncConnection, username: str, email: str, password_hash: str
) -> DbRow:
    """Insert an account; a taken username or email is CONFLICT (also under a race)."""
    taken = (
        await conn.execute(
            select(users.c.username, users.c.email).where(
                (users.c.username == username) | (func.lower(users.c.email) == email)
            )
        )
    ).all()
    for row in taken:
        if row.username == username:
            raise DomainError(ErrorCode.CONFLICT, "That username is taken.", field="username")
        raise DomainError(ErrorCode.CONFLICT, "That email is already registered.", field="email")
    try:
        async with conn.begin_nested():
            result = await conn.execute(
                insert(users)
                .values(username=username, email=email, password_hash=password_hash)
                .returning(*USER_COLUMNS)
            )
    except IntegrityError as exc:
        # Lost a race with a concurrent sign-up of the same name or email.
        field = "email" if "email" in str(exc.orig) else "username"
        raise DomainError(ErrorCode.CONFLICT, f"That {field} is taken.", field=field) from exc
    return result.one()


async def credentials_for(*, conn: AsyncConnection, username: str) -> DbRow | None:
    return (
        await conn.execute(
            select(users.c.id, users.c.password_hash).where(
                users.c.username == normalize_username(username)
            )
        )
    ).one_or_none()


async def user_by_username(*, conn: AsyncConnection, username: str) -> DbRow | None:
    return (
        await conn.execute(
            select(*USER_COLUMNS).where(users.c.username == normalize_username(username))
        )
    ).one_or_none()


async def update_profile(
    *, conn: AsyncConnection, user_id: int, changes: dict[str, Any]
) -> DbRow | None:
    """Apply the given columns (display_name, bio, is_private) and return the new row."""
    display_name = changes.get("display_name")
    if display_name is not None and len(display_name) > MAX_DISPLAY_NAME:
        raise DomainError(
            ErrorCode.INVALID_INPUT,
            f"Display names are at most {MAX_DISPLAY_NAME} characters.",
            field="displayName",
        )
    bio = changes.get("bio")
    if bio is not None and len(bio) > MAX_BIO:
        raise DomainError(
            ErrorCode.INVALID_INPUT, f"Bios are at most {MAX_BIO} characters.", field="bio"
        )
    if "is_private" in changes and changes["is_private"] is None:
        raise DomainError(ErrorCode.INVALID_INPUT, "isPrivate cannot be null.", field="isPrivate")
    if not changes:
        return (
            await conn.execute(select(*USER_COLUMNS).where(users.c.id == user_id))
        ).one_or_none()
    return (
        await conn.execute(
            update(users).where(users.c.id == user_id).values(**changes).returning(*USER_COLUMNS)
        )
    ).one_or_none()


async def search_users(*, conn: AsyncConnection, query: str, limit: int) -> list[DbRow]:
    """Accounts whose username starts with the query, most followed first."""
    prefix = normalize_username(query)
    if not prefix:
        return []
    escaped = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return list(
        (
            await conn.execute(
                select(*USER_COLUMNS)
                .where(users.c.username.like(escaped + "%", escape="\\"))
                .order_by(users.c.follower_count.desc(), users.c.id)
                .limit(limit)
            )
        ).all()
    )
