"""What a post page shows of its engagement: like and comment counts, whether the viewer
liked it, and its first comments, for a whole page of posts at once (issue 8, point 9).

    engagement = resources.engagement
    found = await engagement.read(viewer_id, post_ids)   # {post_id: PostEngagement}
    await engagement.like_changed(post_id, user_id, liked=True)   # after the commit
    await engagement.comments_changed(post_id)                     # after the commit

PostgreSQL is the truth (`domain.counters` keeps the counts exact in the liking or
commenting transaction); Redis caches what a page shows, and a warm page reads all of
it in one round trip (an MGET and a ZMSCORE, pipelined; the viewer's hidden set from
`domain.blocks` rides in the MGET), with no SQL:

    engagement:{P}:counts  "likes comments" of post P
    engagement:{P}:first   its CACHED_COMMENTS oldest comments, and whether that is all
    engagement:{P}:gen     a token each hook replaces (see below)
    liked:{U}              sorted set of the ids of the posts user U liked, scored by
                           post id (time-ordered, below 2^53: exact as scores), the
                           newest LIKED_CAP at most. Member `floor` (score -floor-1):
                           from which post id on the set is complete; lower ids are
                           asked of PostgreSQL (one batched statement). Member `gen`: a
                           token the like hook replaces. Both score below any post id.

The post id sits in braces (a Redis Cluster hash tag), so a post's keys share a slot and
the scripts touching several work on a cluster too; a page's MGET spans slots, so a
cluster deployment would split it per slot as `infra.cache.RecordCache` does.

Misses are read from PostgreSQL (one statement per kind missing: counts, first comments,
the viewer's newest likes, likes below the floor; one connection) and written back in
one more round trip. Comment authors come through the process' `RecentRecords` (none
read when read a moment ago); comments by accounts hidden from the viewer (blocks,
either way) are left out per request, which is why more are cached than a page shows.

Writers never adjust a cached count. A hook, after the commit, replaces the post's
`gen` token and deletes what changed (the counts; the first comments too for a comment),
in one script; a fill writes only if `gen` still holds the token its reader saw before
reading PostgreSQL (and only where nothing is cached: SET NX). So a reader that read
PostgreSQL before a commit never caches its old value once the hook ran, and no change
is counted twice: a cached value is right as soon as its hook has run. The liked set is
updated in place by the hook when present (adding or removing an id is idempotent),
with its `gen` replaced all the same.

Consistency windows:
- Between a commit and its hook (the same request, before it answers) other readers
  may see the old value; the request itself sees its change.
- A hook that never ran (the process died after the commit, or Redis was unreachable:
  hooks are best effort and log) leaves the old value until it expires: a fill sets the
  TTL and nothing extends it, so no cached count or comment is older than
  ENGAGEMENT_TTL_SECONDS, and no liked set older than LIKED_TTL_SECONDS (its TTL is set
  once, when the key is created).
- Counts are totals over everyone: likes and comments by accounts hidden from the
  viewer count (a per-viewer count would be a query per page); their comments are not
  shown.
"""

from __future__ import annotations

import logging
import secrets
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson
from redis.asyncio import Redis
from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError, RedisError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from domain.blocks import HiddenUsers, hidden_key
from domain.comments import CommentRecord, first_comments
from domain.counters import post_counts
from domain.likes import liked_among, recent_likes
from domain.records import RecentRecords
from infra.cache import RecordCache

log = logging.getLogger("instagraph.engagement")

# How many of a post's oldest comments a page answers `comments(first: n)` from without
# SQL: n up to FIRST_COMMENTS (a post carries one more, which says whether more follow).
FIRST_COMMENTS = 3
# Oldest comments cached per post: more than a page shows, so that a few by accounts
# hidden from the viewer can be left out and the preview still filled.
CACHED_COMMENTS = 10
# Newest liked post ids cached per user; older likes are asked of PostgreSQL.
LIKED_CAP = 1000
ENGAGEMENT_TTL_SECONDS = 900
LIKED_TTL_SECONDS = 3600

HiddenProvider = Callable[[], Awaitable[frozenset[int]]]
ScriptCall = tuple[AsyncScript, list[str], list[Any]]


def counts_key(post_id: int) -> str:
    return f"engagement:{{{post_id}}}:counts"


def first_key(post_id: int) -> str:
    return f"engagement:{{{post_id}}}:first"


def gen_key(post_id: int) -> str:
    return f"engagement:{{{post_id}}}:gen"


def liked_key(user_id: int) -> str:
    return f"liked:{{{user_id}}}"


def _token() -> str:
    """A fresh generation token (never one a reader could have seen before)."""
    return uuid.uuid4().hex


def _score_token() -> int:
    """A fresh generation token for a sorted set: a negative score, exact as a double."""
    return -secrets.randbelow(2**52) - 2


# Numbers reach Redis as strings formatted here ('%.0f'): Lua's own number-to-string
# conversion keeps 14 digits, fewer than a post id has.

# KEYS: a post's gen, then the keys to delete. ARGV: a new token, ttl.
DROP_LUA = """
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
redis.call('DEL', unpack(KEYS, 2))
return 1
"""

# KEYS: a post's gen, the key to fill. ARGV: the token the reader saw ('' for none), ttl,
# the value. Nothing is written if a hook ran since the read, or if a value is there.
FILL_LUA = """
if (redis.call('GET', KEYS[1]) or '') ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[2], ARGV[3], 'EX', ARGV[2], 'NX')
return 1
"""

# KEYS: one liked set. ARGV: the `gen` score the reader saw ('' for none), ttl, floor,
# then post ids. Fill a missing set, unless the like hook ran since the read.
LIKED_FILL_LUA = """
local key = KEYS[1]
if redis.call('ZSCORE', key, 'floor') then return 0 end
if (redis.call('ZSCORE', key, 'gen') or '') ~= ARGV[1] then return 0 end
redis.call('ZADD', key, string.format('%.0f', -1 - tonumber(ARGV[3])), 'floor')
for i = 4, #ARGV do redis.call('ZADD', key, ARGV[i], ARGV[i]) end
if redis.call('TTL', key) < 0 then redis.call('EXPIRE', key, ARGV[2]) end
return 1
"""

# KEYS: one liked set. ARGV: post id, '1' liked or '0' unliked, cap, ttl, a new `gen`.
# Replace `gen`; when the set is there, add or remove the post and trim the lowest post
# ids past the cap, raising the floor above them.
LIKED_CHANGE_LUA = """
local key, post, cap = KEYS[1], ARGV[1], tonumber(ARGV[3])
redis.call('ZADD', key, ARGV[5], 'gen')
if redis.call('TTL', key) < 0 then redis.call('EXPIRE', key, ARGV[4]) end
local floor = redis.call('ZSCORE', key, 'floor')
if not floor then return 0 end
if ARGV[2] == '1' then redis.call('ZADD', key, post, post) else redis.call('ZREM', key, post) end
local extra = redis.call('ZCARD', key) - 2 - cap
if extra > 0 then
  local gone = redis.call('ZRANGEBYSCORE', key, 0, '+inf', 'LIMIT', 0, extra)
  local top = gone[#gone]
  redis.call('ZREMRANGEBYSCORE', key, 0, top)
  local known = math.max(-1 - tonumber(floor), tonumber(top) + 1)
  redis.call('ZADD', key, string.format('%.0f', -1 - known), 'floor')
end
return 1
"""


@dataclass(slots=True)
class PostEngagement:
    """What one post shows of its engagement to one viewer."""

    like_count: int = 0
    comment_count: int = 0
    viewer_has_liked: bool = False
    # The post's oldest comments the viewer may see (rows with id, post_id, author_id,
    # text, created_at), up to FIRST_COMMENTS + 1, and whether they are all it has.
    first_comments: list[Any] = field(default_factory=list)
    all_comments: bool = True
    # User rows of the authors of first_comments (shared by the posts of a page).
    comment_authors: Mapping[int, Any] = field(default_factory=dict)


@dataclass(slots=True)
class _Post:
    """One post's cached engagement as read, then with its misses filled."""

    counts: tuple[int, int] | None
    first: tuple[list[list[Any]], bool] | None  # raw rows, and whether they are all
    token: str  # its `gen` as read ('' for none)


class Engagement:
    def __init__(
        self,
        engine: AsyncEngine,
        redis: Redis,
        *,
        recent: RecentRecords | None = None,
        hidden: HiddenUsers | None = None,
    ) -> None:
        self.engine = engine
        self.redis = redis
        # Comment authors: the process' shared memo of users (the API's own, from the
        # resource bundle), else one of this object's.
        self.recent = recent or RecentRecords(engine, RecordCache(redis, ENGAGEMENT_TTL_SECONDS))
        self.hidden = hidden or HiddenUsers(engine, redis)
        self._drop = redis.register_script(DROP_LUA)
        self._fill = redis.register_script(FILL_LUA)
        self._liked_fill = redis.register_script(LIKED_FILL_LUA)
        self._liked_change = redis.register_script(LIKED_CHANGE_LUA)

    # -- reading -------------------------------------------------------------------

    async def read(
        self,
        viewer_id: int | None,
        post_ids: Sequence[int],
        *,
        hidden_users: HiddenProvider | None = None,
    ) -> dict[int, PostEngagement]:
        """Every post's engagement as `viewer_id` sees it (every id asked for has one).

        Warm: one Redis round trip; when some post has comments, the viewer's hidden set
        (`hidden_users`, the request's memo, else read here) and the comment authors not
        read in the last moment (one round trip each at most). Misses: one connection to
        PostgreSQL with one statement per kind missing, and one round trip caching them."""
        ids = list(dict.fromkeys(post_ids))
        if not ids:
            return {}
        keys: list[str] = []
        for post_id in ids:
            keys += (counts_key(post_id), first_key(post_id), gen_key(post_id))
        liked = hidden_blob = None
        if viewer_id is None:
            blobs = await self.redis.mget(keys)
        else:
            # The viewer's hidden set rides along: no round trip of its own.
            keys.append(hidden_key(viewer_id))
            pipe = self.redis.pipeline(transaction=False)
            pipe.mget(keys)
            pipe.zmscore(liked_key(viewer_id), ["floor", "gen", *map(str, ids)])
            blobs, scores = await pipe.execute()
            hidden_blob = blobs.pop()
            liked = _liked(ids, scores)
        cached = {ids[i // 3]: _decode(blobs[i : i + 3]) for i in range(0, len(blobs), 3)}
        needs_posts = any(c.counts is None or c.first is None for c in cached.values())
        needs_likes = liked is not None and (liked.missing or bool(liked.unknown))
        if needs_posts or needs_likes:
            fills: list[ScriptCall] = []
            async with self.engine.connect() as conn:
                if needs_posts:
                    fills += await self._read_posts(conn, cached)
                if viewer_id is not None and liked is not None and needs_likes:
                    await _read_likes(conn, viewer_id, liked)
                    if liked.missing:
                        fills.append((self._liked_fill, [liked_key(viewer_id)], liked.fill_args()))
            await self._run(fills)
        shown, authors = await self._shown_comments(cached, viewer_id, hidden_blob, hidden_users)
        known = liked.known if liked is not None else ()
        found: dict[int, PostEngagement] = {}
        for post_id, entry in cached.items():
            likes, comments = entry.counts or (0, 0)
            rows, complete = shown.get(post_id, _NONE)
            found[post_id] = PostEngagement(
                likes, comments, post_id in known, rows, complete, authors
            )
        return found

    async def _read_posts(
        self, conn: AsyncConnection, cached: dict[int, _Post]
    ) -> list[ScriptCall]:
        """Read the posts' missing counts and first comments from PostgreSQL (one
        statement per kind) into `cached`; returns the calls that cache them, each
        guarded by the token its reader saw."""
        no_counts = [p for p, c in cached.items() if c.counts is None]
        no_first = [p for p, c in cached.items() if c.first is None]
        counts = await post_counts(conn=conn, post_ids=no_counts) if no_counts else {}
        firsts = (
            await first_comments(conn=conn, post_ids=no_first, limit=CACHED_COMMENTS + 1)
            if no_first
            else {}
        )
        calls: list[ScriptCall] = []
        for post_id, entry in cached.items():
            guard = [gen_key(post_id)]
            if post_id in counts:
                entry.counts = likes, comments = counts[post_id]
                args = [entry.token, ENGAGEMENT_TTL_SECONDS, f"{likes} {comments}"]
                calls.append((self._fill, [*guard, counts_key(post_id)], args))
            if post_id in firsts:
                rows = firsts[post_id]
                entry.first = raw, complete = (
                    [_encode_row(r) for r in rows[:CACHED_COMMENTS]],
                    len(rows) <= CACHED_COMMENTS,
                )
                blob = orjson.dumps([complete, raw])
                args = [entry.token, ENGAGEMENT_TTL_SECONDS, blob]
                calls.append((self._fill, [*guard, first_key(post_id)], args))
        return calls

    async def _shown_comments(
        self,
        cached: dict[int, _Post],
        viewer_id: int | None,
        hidden_blob: bytes | None,
        hidden_users: HiddenProvider | None,
    ) -> tuple[dict[int, tuple[list[CommentRecord], bool]], dict[int, Any]]:
        """Per post with comments, its first comments the viewer may see (comments by
        accounts hidden from them and by accounts gone left out), up to
        FIRST_COMMENTS + 1, and whether they are all; and their authors' rows."""
        raw = {p: entry.first for p, entry in cached.items() if entry.first and entry.first[0]}
        if not raw:
            return {}, {}
        hidden: frozenset[int] = frozenset()
        if viewer_id is not None:
            cached_hidden = _cached_hidden(hidden_blob)
            if cached_hidden is not None:
                hidden = cached_hidden
            else:  # not cached, or a block being written: the request's memo, or Redis
                # and PostgreSQL through `HiddenUsers`
                hidden = await (hidden_users() if hidden_users else self.hidden.of(viewer_id))
        visible = {p: [r for r in rows if r[1] not in hidden] for p, (rows, _) in raw.items()}
        wanted = {r[1] for rows in visible.values() for r in rows[: FIRST_COMMENTS + 1]}
        authors = await self.recent.users(list(wanted)) if wanted else {}
        shown: dict[int, tuple[list[CommentRecord], bool]] = {}
        for post_id, rows in visible.items():
            # The longest run of rows a page can show (up to FIRST_COMMENTS + 1; rows by
            # accounts gone are skipped, a row whose author was not read ends it), and
            # whether it reached the post's last comment. Only those rows are decoded.
            first: list[CommentRecord] = []
            cut = False
            for row in rows:
                if len(first) > FIRST_COMMENTS or row[1] not in wanted:
                    cut = True
                    break
                if row[1] in authors:
                    first.append(_decode_row(post_id, row))
            shown[post_id] = (first, raw[post_id][1] and not cut)
        return shown, authors

    # -- hooks (after a commit) ---------------------------------------------------------

    async def like_changed(self, post_id: int, user_id: int, *, liked: bool) -> None:
        """A like of user_id on post_id was added (liked) or removed, and committed: the
        post's cached counts go, the user's liked set follows. Best effort (see the
        module doc for the window when Redis is unreachable)."""
        liked_args = [post_id, int(liked), LIKED_CAP, LIKED_TTL_SECONDS, _score_token()]
        await self._run_hooks(
            [
                (
                    self._drop,
                    [gen_key(post_id), counts_key(post_id)],
                    [_token(), ENGAGEMENT_TTL_SECONDS],
                ),
                (self._liked_change, [liked_key(user_id)], liked_args),
            ]
        )

    async def comments_changed(self, post_id: int) -> None:
        """A comment of post_id was added or deleted, and committed: its cached counts
        and first comments go. Best effort."""
        keys = [gen_key(post_id), counts_key(post_id), first_key(post_id)]
        await self._run_hooks([(self._drop, keys, [_token(), ENGAGEMENT_TTL_SECONDS])])

    async def _run_hooks(self, calls: list[ScriptCall]) -> None:
        try:
            await self._run(calls)
        except RedisError:
            log.warning("the engagement cache missed a change", exc_info=True)

    async def _run(self, calls: list[ScriptCall]) -> None:
        """Script calls in one pipelined round trip (EVALSHA; when Redis does not know a
        script yet, it is loaded and the calls that failed are sent again, once)."""
        for attempt in range(2):
            if not calls:
                return
            pipe = self.redis.pipeline(transaction=False)
            for script, keys, args in calls:
                pipe.evalsha(script.sha, len(keys), *keys, *args)
            results = await pipe.execute(raise_on_error=False)
            errors = [r for r in results if isinstance(r, Exception)]
            if not errors:
                return
            if attempt or not all(isinstance(e, NoScriptError) for e in errors):
                raise errors[0]
            failed = [c for c, r in zip(calls, results, strict=True) if isinstance(r, Exception)]
            for script in {id(c[0]): c[0] for c in failed}.values():
                script.sha = await self.redis.script_load(script.script)
            calls = failed


_NONE: tuple[list[CommentRecord], bool] = ([], True)


@dataclass(slots=True)
class _Liked:
    """The viewer's likes among a page's posts, as the cached set answered them."""

    known: set[int]  # liked
    unknown: list[int]  # not answered by the set (below its floor, or no set)
    missing: bool  # no set cached: `recent` and `floor` fill it
    token: str  # its `gen` as read ('' for none)
    recent: list[int] = field(default_factory=list)
    floor: int = 0

    def fill_args(self) -> list[Any]:
        return [self.token, LIKED_TTL_SECONDS, self.floor, *self.recent]


async def _read_likes(conn: AsyncConnection, viewer_id: int, liked: _Liked) -> None:
    """What the viewer's cached set could not say: their newest likes when there is no
    set (to cache it), then the page's posts below its floor (one statement each)."""
    if liked.missing:
        recent = await recent_likes(conn=conn, user_id=viewer_id, limit=LIKED_CAP + 1)
        liked.floor = recent[LIKED_CAP] + 1 if len(recent) > LIKED_CAP else 0
        liked.recent = recent[:LIKED_CAP]
        newest = set(liked.recent)
        liked.known = {p for p in liked.unknown if p in newest}
        liked.unknown = [p for p in liked.unknown if p < liked.floor]
    if liked.unknown:
        liked.known |= await liked_among(conn=conn, user_id=viewer_id, post_ids=liked.unknown)


def _liked(ids: list[int], scores: list[float | None]) -> _Liked:
    floor_score, gen_score, *post_scores = scores
    token = "" if gen_score is None else f"{gen_score:.0f}"
    if floor_score is None:
        return _Liked(known=set(), unknown=list(ids), missing=True, token=token)
    floor = -int(floor_score) - 1
    known = {p for p, score in zip(ids, post_scores, strict=True) if score is not None}
    unknown = [p for p in ids if p not in known and p < floor]
    return _Liked(known=known, unknown=unknown, missing=False, token=token)


def _cached_hidden(blob: bytes | None) -> frozenset[int] | None:
    """The viewer's hidden set from its `domain.blocks` cache entry, read in this
    module's round trip: a JSON array of user ids; anything else (missing, a writer's
    tombstone) is None, and `HiddenUsers.of` answers instead."""
    if blob is not None and blob[:1] == b"[":
        return frozenset(orjson.loads(blob))
    return None


def _decode(blobs: list[bytes | None]) -> _Post:
    counts, first, token = blobs
    parsed = None
    if counts is not None:
        likes, comments = counts.split()
        parsed = (int(likes), int(comments))
    decoded = None
    if first is not None:
        complete, rows = orjson.loads(first)
        decoded = (rows, complete)
    return _Post(counts=parsed, first=decoded, token=token.decode() if token else "")


def _encode_row(row: CommentRecord) -> list[Any]:
    # Compact: [id, author_id, text, created_at] (the post id is the key's).
    return [row.id, row.author_id, row.text, row.created_at.isoformat()]


def _decode_row(post_id: int, raw: list[Any]) -> CommentRecord:
    # Comments never change: each is decoded once per process (bounded memo).
    record = _RECORDS.get(raw[0])
    if record is None:
        if len(_RECORDS) >= _RECORDS_MAX:
            _RECORDS.clear()
        record = _RECORDS[raw[0]] = CommentRecord(
            id=raw[0],
            post_id=post_id,
            author_id=raw[1],
            text=raw[2],
            created_at=datetime.fromisoformat(raw[3]),
        )
    return record


_RECORDS: dict[int, CommentRecord] = {}
_RECORDS_MAX = 20_000
