from __future__ import annotations

import functools
import re
from typing import Any
from typing import cast as cast_type

from email_validator import EmailNotValidError, validate_email
from sqlalchemy import (
    BigInteger,
    Float,
    Integer,
    Select,
    String,
    bindparam,
    case,
    cast,
    func,
    insert,
    literal,
    or_,
    select,
    union_all,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from domain.blocks import not_hidden
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


# Said when the email belongs to an account: not which field, nor that the email is
# known. Usernames are public handles (`user(username:)` answers for any), so a taken one
# is named; an email address is not public, and signUp must not confirm it has an
# account (logIn does not either). A client that already sent a free username can still
# infer it, as with any sign-up that answers at once: only a flow that mails the address
# (none here) hides it fully; the signUp rate limit per address bounds how many it can try.
SIGN_UP_REFUSED = "We could not create an account with these details. If you have one, log in."


def _username_taken() -> DomainError:
    return DomainError(ErrorCode.CONFLICT, "That username is taken.", field="username")


def _refused() -> DomainError:
    return DomainError(ErrorCode.CONFLICT, SIGN_UP_REFUSED)


async def create_user(
    *, conn: AsyncConnection, username: str, email: str, password_hash: str
) -> DbRow:
    """Insert an account. A taken username is CONFLICT on `username`; a registered email
    is CONFLICT with no field and a message that does not say so (`SIGN_UP_REFUSED`);
    the same under a race."""
    taken = (
        await conn.execute(
            select(users.c.username, users.c.email).where(
                (users.c.username == username) | (func.lower(users.c.email) == email)
            )
        )
    ).all()
    if any(row.username == username for row in taken):
        raise _username_taken()
    if taken:
        raise _refused()
    try:
        async with conn.begin_nested():
            result = await conn.execute(
                insert(users)
                .values(username=username, email=email, password_hash=password_hash)
                .returning(*USER_COLUMNS)
            )
    except IntegrityError as exc:
        # Lost a race with a concurrent sign-up of the same name or email.
        raise (_refused() if "email" in str(exc.orig) else _username_taken()) from exc
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


# searchUsers: queries are trimmed (and a leading @ dropped) and capped at the longest
# name they can match; shorter than MIN_SEARCH they find nothing, shorter than MIN_FUZZY
# (too few trigrams to mean anything) they match by prefix only.
MIN_SEARCH = 2
MIN_FUZZY = 3
MAX_SEARCH = MAX_DISPLAY_NAME
# How similar a name must be to be a fuzzy match. Usernames by whole-string trigram
# similarity (`%`): pg_trgm's default, 0.3, lets the GIN index hand over ~2x more
# candidates to recheck for the same typos found (measured on the bench's 100,000 users:
# 58 of 60 one-typo usernames found at 0.3 and at 0.4). Display names by word similarity
# (`<%`): the default, 0.6, misses a swapped pair of letters in a 7-letter name
# ('gregroy' scores 0.5 against 'Gregory Kim'), so one word needs 0.5; several words
# need 0.6, or 'bruno weber' would match every Bruno and every Weber (0.5 each).
USERNAME_SIMILARITY = 0.4
WORD_SIMILARITY = 0.5
WORDS_SIMILARITY = 0.6
TRIGRAM_WORD = re.compile(r"[^\W_]+")
# For the search's transaction only (set_config's is_local): a pooled connection keeps
# no trace of it.
SET_SIMILARITY = select(
    func.set_config("pg_trgm.similarity_threshold", bindparam("username", type_=String), True),
    func.set_config("pg_trgm.word_similarity_threshold", bindparam("word", type_=String), True),
)


def similarity_thresholds(term: str) -> dict[str, str]:
    """SET_SIMILARITY's values for a search term."""
    # Words as pg_trgm cuts them: runs of letters and digits ('ana.souza' is two).
    word = WORDS_SIMILARITY if len(TRIGRAM_WORD.findall(term)) > 1 else WORD_SIMILARITY
    return {"username": str(USERNAME_SIMILARITY), "word": str(word)}


def is_text(raw: str) -> bool:
    """Whether a string can reach PostgreSQL as text: no NUL (text columns cannot hold
    one) and no lone surrogate (a JSON `\\ud800` escape decodes to one, and it has no
    UTF-8 form). Either would make the driver fail the statement."""
    if "\x00" in raw:
        return False
    try:
        raw.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def search_term(raw: str) -> str | None:
    """What searchUsers looks for: trimmed, without a leading @, at most MAX_SEARCH
    characters; None when shorter than MIN_SEARCH, or when it is no text (a NUL, a lone
    surrogate), so nothing is searched and the answer is an empty list."""
    term = raw.strip().removeprefix("@").strip()[:MAX_SEARCH]
    return term if len(term) >= MIN_SEARCH and is_text(term) else None


def search_statement(term: str, limit: int, viewer_id: int | None) -> Select[Any]:
    """The search for `term` with its values bound (EXPLAIN and benchmarks use it; the
    API runs `_search_query` with the same values as parameters)."""
    query = _search_query(len(term) >= MIN_FUZZY, viewer_id is None)
    return query.params(_search_values(term, limit, viewer_id))


def _search_values(term: str, limit: int, viewer_id: int | None) -> dict[str, Any]:
    escaped = term.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return {"term": term, "pattern": escaped + "%", "limit": limit, "viewer_id": viewer_id}


@functools.cache
def _search_query(fuzzy: bool, anonymous: bool) -> Select[Any]:
    """Exact username first, then prefix matches of the username or the display name,
    then (when those do not fill the page) fuzzy matches; within each class by
    similarity in steps of 0.1, then by follower count.

    A prefix match's similarity is the share of the name the query covers (`ann` is 0.75
    of `anna`, 0.3 of `annabelle.x`), which needs no trigram work; a fuzzy match's is
    the better of the username's trigram similarity (`%`) and the display name's word
    similarity (`<%`). The fuzzy part runs only when the prefix part found fewer than
    `limit` accounts (a one-time filter on its count), so a common prefix never pays for
    trigram scoring. Indexes: the username btree (exact), the username and
    lower(display_name) text_pattern_ops btrees (prefixes), their GIN trigram indexes
    (fuzzy).

    Built once per shape, values as parameters: building it costs more than running
    its cached compiled form.
    """
    query = func.lower(bindparam("term", type_=String))
    pattern = func.lower(bindparam("pattern", type_=String))
    limit = bindparam("limit", type_=Integer)
    # not_hidden takes the viewer's id; a parameter stands in for it here.
    viewer_id = None if anonymous else cast_type(int, bindparam("viewer_id", type_=BigInteger))
    display = func.lower(users.c.display_name)
    by_username = users.c.username.like(pattern, escape="\\")
    by_display = display.like(pattern, escape="\\")
    typed = cast(func.length(query), Float)
    coverage = func.greatest(
        case((by_username, typed / func.length(users.c.username))),
        case((by_display, typed / func.length(users.c.display_name))),
    )
    prefix = (
        select(
            users.c.id,
            case((users.c.username == query, 0), else_=1).label("rank"),
            coverage.label("score"),
        )
        .where(or_(by_username, by_display), not_hidden(viewer_id, users.c.id))
        .order_by("rank", func.floor(coverage * 10).desc(), users.c.follower_count.desc())
        .limit(limit)
        .cte("prefix")
        .prefix_with("MATERIALIZED")
    )
    parts = [select(prefix.c.id, prefix.c.rank, prefix.c.score)]
    if fuzzy:
        found = select(func.count()).select_from(prefix).scalar_subquery()
        # One branch per index (a single OR of both would evaluate the similarity
        # functions again as a filter after the index recheck: ~30% slower, measured).
        for name, matches, similarity in (
            (
                "similar_username",
                users.c.username.op("%")(query),
                func.similarity(users.c.username, query),
            ),
            ("similar_display_name", query.op("<%")(display), func.word_similarity(query, display)),
        ):
            branch = (
                select(users.c.id, literal(2).label("rank"), similarity.label("score"))
                .where(
                    matches,
                    ~by_username,
                    ~func.coalesce(by_display, False),
                    not_hidden(viewer_id, users.c.id),
                    found < limit,
                )
                .order_by(func.floor(similarity * 10).desc(), users.c.follower_count.desc())
                .limit(limit)
                .cte(name)
            )
            parts.append(select(branch.c.id, branch.c.rank, branch.c.score))
    # An account in both fuzzy branches counts with its better similarity. Each branch
    # keeps its own best `limit`, which is enough: an account missing from both has
    # `limit` others ahead of it in the branch of its better score.
    union = union_all(*parts).subquery("matches")
    hits = (
        select(
            union.c.id, func.min(union.c.rank).label("rank"), func.max(union.c.score).label("score")
        )
        .group_by(union.c.id)
        .subquery("hits")
    )
    return (
        select(*USER_COLUMNS)
        .join_from(users, hits, hits.c.id == users.c.id)
        .order_by(
            hits.c.rank,
            func.floor(hits.c.score * 10).desc(),
            users.c.follower_count.desc(),
            users.c.id,
        )
        .limit(limit)
    )


async def search_users(
    *, conn: AsyncConnection, query: str, limit: int, viewer_id: int | None = None
) -> list[DbRow]:
    """Accounts matching a search box's text, best first (see `_search_query`),
    never one hidden from the viewer by a block. Two statements: the similarity
    thresholds for this transaction, then the search (one for a two-character query:
    prefixes only)."""
    term = search_term(query)
    if term is None:
        return []
    fuzzy = len(term) >= MIN_FUZZY
    if fuzzy:
        await conn.execute(SET_SIMILARITY, similarity_thresholds(term))
    statement = _search_query(fuzzy, viewer_id is None)
    return list((await conn.execute(statement, _search_values(term, limit, viewer_id))).all())
