"""Hashtags and @mentions in captions and comments: one parser, used by every writer.

    >>> hashtags_of("Breakfast #CAFÉ #café #Cafe, #日本! a#b")
    ['café', 'cafe', '日本']
    >>> mentions_of("thanks @Alice and @bob.smith. (mail: carol@example.com)")
    ['alice', 'bob.smith']

Hashtags: a `#` not preceded by a word character (nor by `&`: `&#39;` is an HTML
character reference), followed by a run of Unicode word characters (letters, digits,
combining marks, `_`) in which the zero-width non-joiner and joiner (U+200C, U+200D,
which Persian, Arabic and Indic spellings need, as in `#می‌خواهم`) may stand between
two of them. Each tag is normalised with NFKC then case folding (and NFKC again, which
recomposes what folding decomposed), so `#CAFÉ` and `#café` are one tag while `#Cafe`
stays another. As on Instagram, a tag has at least one letter (`#8` is none), and it
does not start with a combining mark; a tag longer than `MAX_HASHTAG` once normalised
is not a tag. The full-width number sign (U+FF03) counts as `#`.

Mentions: an `@` not preceded by a word character (so an email address is not a
mention), followed by a valid username (domain/users.py), lower-cased as usernames
are. A run that goes on with a word character no username has (`@aliceé`) is no
mention, and trailing dots end a sentence rather than belonging to the name.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Callable, Iterator

from sqlalchemy import String, any_, bindparam, select
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncConnection

from domain.blocks import not_hidden
from domain.users import USERNAME_RE, normalize_username, users

MAX_HASHTAG = 100  # posts.hashtags and post_hashtags.tag are VARCHAR(100)
# Captions and comments are at most 2,200 characters (domain.posts.MAX_CAPTION,
# domain.comments.MAX_COMMENT_LENGTH): the parser never scans more of a text, whatever
# a caller hands it.
MAX_TEXT = 2200
# The longest typed name that can normalise to a tag of MAX_HASHTAG characters: NFKC
# composes at most a base and three marks into one character (Greek `ᾆ`), so anything
# longer is refused before it is normalised.
_MAX_TYPED_HASHTAG = 4 * MAX_HASHTAG + 2  # and a `#` and a space or two
# Who one text can notify: a caption naming 500 people is spam, not a conversation
# (Instagram's own limit is 20 mentions per caption).
MAX_MENTIONS = 20

_USERNAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._")
# `#`, and the full-width and small number signs East Asian keyboards type.
_HASH_SIGNS = "#\uff03\ufe5f"
_NAMES = bindparam("names", type_=ARRAY(String(30)))
# Zero-width non-joiner and joiner: inside a tag only, between two word characters.
_JOINERS = "\u200c\u200d"


def is_word_char(char: str) -> bool:
    """Letters, digits, combining marks (so `#हिन्दी` stays whole) and `_`."""
    return char == "_" or char.isalnum() or unicodedata.category(char).startswith("M")


def _is_tag_char(char: str) -> bool:
    return char in _JOINERS or is_word_char(char)


def normalize_hashtag(tag: str) -> str:
    """NFKC, case folding, NFKC: `CAFÉ` -> `café`, `Ⅻ` -> `xii`."""
    return unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", tag).casefold())


def _runs_after(
    text: str, sigils: str, accept: Callable[[str], bool], not_after: str = ""
) -> Iterator[str]:
    """Each run of `accept`ed characters after one of the `sigils` that is not itself
    preceded by a word character (or one of `not_after`); a run followed by a word
    character it cannot contain is no name."""
    for start, char in enumerate(text):
        if char not in sigils:
            continue
        if start and (is_word_char(text[start - 1]) or text[start - 1] in not_after):
            continue
        end = start + 1
        while end < len(text) and accept(text[end]):
            end += 1
        if end > start + 1 and not (end < len(text) and is_word_char(text[end])):
            yield text[start + 1 : end]


def _tag(run: str) -> str | None:
    """A run of tag characters as a tag, or None when it is no tag: too long once
    normalised, without a letter (`#8`, `#_`), starting with a combining mark or a
    joiner, or turned by normalising into something that is not one (`½` becomes 1,
    FRACTION SLASH, 2). Joiners at the end are dropped (nothing follows them to join)."""
    tag = normalize_hashtag(run.rstrip(_JOINERS))
    if (
        not tag
        or len(tag) > MAX_HASHTAG
        or tag[0] in _JOINERS
        or unicodedata.category(tag[0]).startswith("M")
        or not any(char.isalpha() for char in tag)
        or not all(_is_tag_char(char) for char in tag)
    ):
        return None
    return tag


def hashtags_of(text: str | None) -> list[str]:
    """The normalised hashtags of a text (its first MAX_TEXT characters), unique, in
    order of first appearance."""
    if not text:
        return []
    seen: dict[str, None] = {}
    for run in _runs_after(text[:MAX_TEXT], _HASH_SIGNS, _is_tag_char, not_after="&"):
        tag = _tag(run)
        if tag is not None:
            seen.setdefault(tag, None)
    return list(seen)


def hashtag_name(raw: str) -> str | None:
    """A hashtag as a user types it in a search box (`#Café`, `café`, ` CAFÉ `),
    normalised; None when it is not one hashtag (`a b`, `#`, `café!`, `#8`), and for
    anything that is no text at all (a NUL, a lone surrogate: never sent to SQL)."""
    if len(raw) > _MAX_TYPED_HASHTAG:
        return None
    name = raw.strip()
    name = name[1:] if name[:1] in _HASH_SIGNS else name
    if not name or not all(_is_tag_char(char) for char in name):
        return None
    return _tag(name)


def mentions_of(text: str | None) -> list[str]:
    """The usernames @mentioned in a text, lower-cased, unique, in order of appearance."""
    # NFKC first: usernames are ASCII, and `@ivan` typed in full-width forms names `ivan`.
    text = unicodedata.normalize("NFKC", (text or "")[:MAX_TEXT])
    seen: dict[str, None] = {}
    for raw in _runs_after(text, "@", _USERNAME_CHARS.__contains__):
        username = normalize_username(raw.rstrip("."))
        if USERNAME_RE.match(username):
            seen.setdefault(username, None)
    return list(seen)


async def mentioned_user_ids(
    *, conn: AsyncConnection, author_id: int, text: str | None
) -> list[int]:
    """The existing accounts a text by `author_id` mentions and may notify, in order of
    first mention: never the author, never anyone hidden from the author by a block
    (either way), at most `MAX_MENTIONS`. One statement; none for a text with no mention."""
    names = mentions_of(text)[:MAX_MENTIONS]
    if not names:
        return []
    found = await conn.execute(
        select(users.c.id, users.c.username).where(
            users.c.username == any_(_NAMES),
            users.c.id != author_id,
            not_hidden(author_id, users.c.id),
        ),
        {"names": names},
    )
    by_name = {row.username: int(row.id) for row in found}
    return [by_name[name] for name in names if name in by_name]
