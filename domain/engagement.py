"""What a post page shows of its engagement: like and comment counts, whether the viewer
liked it, and its first comments, for a whole page of posts at once (issue 8, point 9).

    engagement = resources.engagement
    found = await engagement.read(viewer_id, post_ids)   # {post_id: PostEngagement}
    await engagement.like_changed(post_id, user_id, liked=True)   # after the commit
    await engagement.comments_changed(post_id)                     # after the commit

PostgreSQL is the truth (`domain.counters` keeps the counts exact in the liking or
commenting transaction); Redis caches what a page shows (with no SQL when warm):

    engagement:{P}:counts  "likes comments" of post P
    engagement:{P}:first   its CACHED_COMMENTS oldest comments, and whether that is all
    engagement:{P}:gen     a token each hook replaces (see below)
    engagement:{P}:cgen    the same for its first comments (a like burst replaces
                           `gen` many times a second: first comments must not wait)
    liked:{U}              sorted set of the ids of the posts user U liked, scored by
                           post id (time-ordered, below 2^53: exact as scores), the
                           newest LIKED_CAP at most. Member `floor` (score -floor-1,
                           below any post id): from which post id on the set is
                           complete; lower ids are asked of PostgreSQL (one batched
                           statement).
    liked:{U}:gen          a token the like hook replaces (as a post's `gen`)

The post id sits in braces (a Redis Cluster hash tag), so a post's keys share a slot and
the scripts touching several work on a cluster too; a page's MGET spans slots, so a
cluster deployment would split it per slot as `infra.cache.RecordCache` does.

Each API process also holds what every viewer sees of a post (its counts and cached first
comments) for MEMO_TTL_SECONDS: concurrent readers of the same posts share one read
(batched, single flight), so under load a post's counts and comments are read from
Redis about once a second per process, not once per page. Each memo entry holds its own
post's value once read (a read in flight is shared by the posts it brings until then);
expired entries go at the next read, and the memo keeps within MEMO_MAX entries and
MEMO_MAX_TEXT characters of comment text (`Engagement.memo_size`). What is the viewer's own (the
ZMSCORE of their liked set over the page, and their hidden set from `domain.blocks`) is
read per request: a feed page sends it in the pipeline of its posts' MGET (`ViewerRead`,
an `infra.cache.Rider` of `HomeFeed.read`), so a warm social page makes no more round
trips than a plain one; other pages send it in one pipeline of its own.

Misses are read from PostgreSQL (one statement per kind missing: counts, first comments,
the viewer's newest likes, likes below the floor) and written back in one more round
trip. Comment authors come through the process' `RecentRecords` (none
read when read a moment ago); comments by accounts hidden from the viewer (blocks,
either way) are left out per request, which is why more are cached than a page shows.

Writers never adjust a cached value. A hook, after the commit, replaces the tokens
of what changed and deletes it (a like: the post's counts and the liker's liked set; a
comment: the post's counts and first comments), in one script; a fill writes only if
its token still holds what its reader saw before reading PostgreSQL (and only where
nothing is cached: SET NX). So a reader that read PostgreSQL before a commit never
caches its old value once the hook ran, and hooks commute: two of them run in either
order (a like's and an unlike's by the same user through two API processes) leave the
same thing, nothing cached, and the next read refills from PostgreSQL. A like or
unlike that changed nothing (a repeated tap) runs its hook too, so a cache left wrong
by a hook that never ran is repaired by the user's next tap.

Redis is a cache: a read that Redis fails (unreachable, refusing) is answered from
PostgreSQL alone, uncached (one connection, a statement per kind), and a fill Redis
refuses (out of memory, a read-only replica) is skipped; both log a warning.

Consistency windows:
- Between a commit and its hook (the same request, before it answers) other readers
  may see the old value; the request itself sees its change.
- The per-process memo of counts and first comments: a hook drops its post's entries in
  its own process (before and after its Redis script), so every request that process
  serves after the hook (the author of the change's next ones included) sees the
  change; every other API process may go on answering the old counts and first
  comments for up to MEMO_TTL_SECONDS (1 s) after the hook ran. Whether the viewer
  liked a post and whom they hide are never memoized (viewerHasLiked follows their own
  like at once, whichever process answers).
- A hook that never ran (the process died after the commit, or Redis was unreachable:
  hooks are best effort and log) is run again by the outbox relay: the liking or
  commenting transaction wrote an `invalidate` row (`domain.outbox`), which the relay
  applies (`changed(..., best_effort=False)`) once Redis answers, within about a second
  of that. Until then the old value may be read.
- Counts are totals over everyone: likes and comments by accounts hidden from the
  viewer count (a per-viewer count would be a query per page); their comments are not
  shown.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Generic, TypeVar

import orjson
from redis.asyncio import Redis
from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError, RedisError
from sqlalchemy import any_, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from domain.blocks import HiddenUsers, hidden_ids, hidden_key
from domain.comments import CommentRecord, first_comments
from domain.counters import post_counts
from domain.likes import liked_among, recent_likes
from domain.records import RecentRecords
from domain.users import USER_COLUMNS, users
from infra.cache import RecordCache
from infra.redis import log_fallback
from models import IDS

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
# How long a process answers a post's counts and first comments from its own memo, and
# how many posts it holds at most (each entry: two counts and up to CACHED_COMMENTS rows).
MEMO_TTL_SECONDS = 1.0
MEMO_MAX = 20_000
# The comment texts each of a process' memos holds at most, in characters, over all its
# entries (a comment has up to 2,200: an entry count alone would let them grow to
# gigabytes).
MEMO_MAX_TEXT = 20_000_000

K = TypeVar("K")
V = TypeVar("V")
HiddenProvider = Callable[[], Awaitable[frozenset[int]]]
ScriptCall = tuple[AsyncScript, list[str], list[Any]]


def counts_key(post_id: int) -> str:
    return f"engagement:{{{post_id}}}:counts"


def first_key(post_id: int) -> str:
    return f"engagement:{{{post_id}}}:first"


def gen_key(post_id: int) -> str:
    return f"engagement:{{{post_id}}}:gen"


def comments_gen_key(post_id: int) -> str:
    return f"engagement:{{{post_id}}}:cgen"


def liked_key(user_id: int) -> str:
    return f"liked:{{{user_id}}}"


def liked_gen_key(user_id: int) -> str:
    return f"liked:{{{user_id}}}:gen"


def _token() -> str:
    """A fresh generation token (never one a reader could have seen before)."""
    return uuid.uuid4().hex


# Numbers reach Redis as strings formatted here ('%.0f'): Lua's own number-to-string
# conversion keeps 14 digits, fewer than a post id has.

# KEYS: n tokens to replace, then the keys to delete. ARGV: a new token, ttl, n.
DROP_LUA = """
local n = tonumber(ARGV[3])
for i = 1, n do redis.call('SET', KEYS[i], ARGV[1], 'EX', ARGV[2]) end
redis.call('DEL', unpack(KEYS, n + 1))
return 1
"""

# KEYS: the token guarding the key to fill (a post's gen or cgen), the key. ARGV: the
# token the reader saw ('' for none), ttl, the value. Nothing is written if a hook ran
# since the read, or if a value is there.
FILL_LUA = """
if (redis.call('GET', KEYS[1]) or '') ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[2], ARGV[3], 'EX', ARGV[2], 'NX')
return 1
"""

# KEYS: a liked set, its gen. ARGV: the token the reader saw ('' for none), ttl, the
# floor's score, then post ids. Fill a missing set, unless the like hook ran since the
# read.
LIKED_FILL_LUA = """
local key = KEYS[1]
if redis.call('EXISTS', key) == 1 then return 0 end
if (redis.call('GET', KEYS[2]) or '') ~= ARGV[1] then return 0 end
redis.call('ZADD', key, ARGV[3], 'floor')
for i = 4, #ARGV do redis.call('ZADD', key, ARGV[i], ARGV[i]) end
redis.call('EXPIRE', key, ARGV[2])
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
    # When first_comments is the post's shared preview (what every viewer hiding none of
    # its authors is shown): a dict the process' memo keeps with it (MEMO_TTL_SECONDS),
    # where the schema keeps what it builds from the preview (`schema.posts`), so that
    # concurrent pages build it once. Else None.
    views: dict[Any, Any] | None = None


@dataclass(slots=True)
class _Post:
    """One post's cached engagement as read, then with its misses filled."""

    counts: tuple[int, int] | None
    first: tuple[list[list[Any]], bool] | None  # raw rows, and whether they are all
    token: str  # its `gen` as read ('' for none)
    comments_token: str  # its `cgen` as read ('' for none)


@dataclass(slots=True)
class _Shared:
    """What every viewer sees of one post (the process' memo holds it a moment)."""

    likes: int
    comments: int
    rows: list[list[Any]]  # its cached first comments, raw: [id, author_id, text, at]
    complete: bool  # whether `rows` are all its comments
    authors: frozenset[int]  # authors of `rows`
    # What a viewer hiding none of `authors` is shown when every author of the preview
    # is found (`preview_authors`): the first FIRST_COMMENTS + 1 rows, decoded once,
    # whether they are all, and what the schema builds from them (a dict: see
    # `PostEngagement.views`).
    preview: _Shown
    preview_authors: frozenset[int]

    @classmethod
    def of(cls, post_id: int, entry: _Post) -> _Shared:
        likes, comments = entry.counts or (0, 0)
        rows, complete = entry.first or ([], True)
        head = rows[: FIRST_COMMENTS + 1]
        return cls(
            likes=likes,
            comments=comments,
            rows=rows,
            complete=complete,
            authors=frozenset(r[1] for r in rows),
            preview=(
                [_decode_row(post_id, r) for r in head],
                complete and len(rows) <= FIRST_COMMENTS + 1,
                {},
            ),
            preview_authors=frozenset(r[1] for r in head),
        )


SharedRead = asyncio.Future[dict[int, _Shared]]


# A post's first comments as shown to a viewer: the rows, whether they are all, and the
# views of the post's shared preview when they are it (`PostEngagement.views`).
_Shown = tuple[list[CommentRecord], bool, dict[Any, Any] | None]


@dataclass(slots=True)
class MemoSize:
    """How much the memo of counts and first comments holds (`Engagement.memo_size`)."""

    entries: int
    text: int  # characters of comment text


@dataclass(slots=True)
class _MemoEntry:
    expiry: float
    # The read bringing it while in flight (shared by the posts read together, so
    # concurrent readers wait for the one read), then the post's own value: an entry
    # never keeps the other posts of its batch alive.
    value: SharedRead | _Shared
    text: int = 0  # characters of comment text in `value`, once it is in


class _SharedMemo:
    """Post id -> what every viewer sees of it, for MEMO_TTL_SECONDS, bounded: at most
    MEMO_MAX entries and MEMO_MAX_TEXT characters of comment text (oldest go first).
    Entries are kept in insertion order, which is expiry order (a constant TTL, an
    entry re-inserted goes to the end), so the expired ones are dropped from the
    front on every lookup: the memo holds about what a second of reads brought."""

    def __init__(self) -> None:
        self._entries: OrderedDict[int, _MemoEntry] = OrderedDict()
        self._text = 0

    def size(self) -> MemoSize:
        return MemoSize(entries=len(self._entries), text=self._text)

    def expire(self, now: float) -> None:
        entries = self._entries
        while entries:
            first = next(iter(entries.values()))
            if first.expiry >= now:
                break
            entries.popitem(last=False)
            self._text -= first.text

    def get(self, post_id: int, now: float) -> SharedRead | _Shared | None:
        entry = self._entries.get(post_id)
        return entry.value if entry is not None and entry.expiry >= now else None

    def start(self, post_ids: list[int], read: SharedRead, expiry: float) -> None:
        """These posts' values come with `read` (until it completes, see `settle`)."""
        for post_id in post_ids:
            self.pop(post_id)  # so that it goes to the end: expiry order
            self._entries[post_id] = _MemoEntry(expiry, read)
        self._bound()

    def settle(self, post_ids: list[int], read: SharedRead) -> None:
        """`read` completed: each post still waiting on it gets its own value (or, if
        the read failed, no entry: the next reader tries again)."""
        failed = read.cancelled() or read.exception() is not None
        for post_id in post_ids:
            entry = self._entries.get(post_id)
            if entry is None or entry.value is not read:
                continue  # dropped by a hook, evicted, or read again meanwhile
            if failed:
                self.pop(post_id)
                continue
            shared = read.result()[post_id]
            entry.value = shared
            entry.text = sum(len(row[2]) for row in shared.rows)
            self._text += entry.text
        self._bound()

    def pop(self, post_id: int) -> None:
        entry = self._entries.pop(post_id, None)
        if entry is not None:
            self._text -= entry.text

    def clear(self) -> None:
        self._entries.clear()
        self._text = 0

    def _bound(self) -> None:
        entries = self._entries
        while entries and (len(entries) > MEMO_MAX or self._text > MEMO_MAX_TEXT):
            _, oldest = entries.popitem(last=False)
            self._text -= oldest.text


@dataclass(slots=True)
class ViewerRead:
    """The viewer's part of a page's engagement (the ZMSCORE of their liked set over
    the page's posts, its token, and their hidden set), sent in another reader's round
    trip: an `infra.cache.Rider` for `HomeFeed.read`, then handed to `Engagement.read`."""

    viewer_id: int
    ids: list[int] = field(default_factory=list)
    # Once read: the `floor` score then one per id of `ids`; the liked set's token; the
    # hidden blob.
    scores: list[float | None] | None = None
    token: bytes | None = None
    hidden_blob: bytes | None = None

    def add(self, pipe: Any, post_ids: Sequence[int]) -> int:
        self.ids = list(post_ids)
        return _queue_viewer_read(pipe, self.viewer_id, self.ids)

    def take(self, results: list[Any]) -> None:
        """The replies of `add`'s commands. If Redis refused any (an ACL, a WRONGTYPE),
        none is kept: `Engagement.read` then sends its own viewer read, which answers
        from PostgreSQL when Redis fails it."""
        if any(isinstance(reply, Exception) for reply in results):
            return
        self.scores, self.token, self.hidden_blob = results

    def scores_of(self, ids: list[int]) -> list[float | None] | None:
        """The liked set's scores for these ids as `_liked` takes them, when this read
        covers them all (else None: the engagement read asks Redis itself)."""
        if self.scores is None:
            return None
        if ids == self.ids:  # a feed page: the same posts, in the same order
            return self.scores
        by_id = dict(zip(self.ids, self.scores[1:], strict=True))
        if not all(i in by_id for i in ids):
            return None
        return [self.scores[0], *(by_id[i] for i in ids)]


def _queue_viewer_read(pipe: Any, viewer_id: int, ids: Sequence[int]) -> int:
    """Queue the viewer's part of a read on `pipe`: the liked set's `floor` and the
    page's ids in it, its token, the hidden set. Returns how many commands."""
    pipe.zmscore(liked_key(viewer_id), ["floor", *map(str, ids)])
    pipe.get(liked_gen_key(viewer_id))
    pipe.get(hidden_key(viewer_id))
    return 3


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
        self._memo = _SharedMemo()

    def clear(self) -> None:
        """Forget the memo of counts and first comments (tests count round trips from
        cold, and empty the database between cases)."""
        self._memo.clear()

    def memo_size(self) -> MemoSize:
        """How many posts the process' memo of counts and first comments holds now, and
        how many characters of comment text (bounded: MEMO_MAX, MEMO_MAX_TEXT)."""
        return self._memo.size()

    # -- reading -------------------------------------------------------------------

    async def read(
        self,
        viewer_id: int | None,
        post_ids: Sequence[int],
        *,
        hidden_users: HiddenProvider | None = None,
        viewer_read: ViewerRead | None = None,
    ) -> dict[int, PostEngagement]:
        """Every post's engagement as `viewer_id` sees it (every id asked for has one).
        The viewer's part comes from `viewer_read` when it was read (riding the posts'
        round trip of a feed page) for these posts, else from a round trip of its own.

        Warm: the counts and first comments from the process' memo, and one Redis round
        trip for the viewer's part (their likes among the posts and their hidden set);
        then the comment authors not read in the last moment (one round trip at most).
        Memo misses: one round trip for all of them, shared with concurrent readers
        (made while the viewer's part is read). Cache misses: PostgreSQL (one statement
        per kind missing) and one round trip caching them (skipped if Redis refuses).
        Redis failing: `read_uncached` answers instead."""
        ids = list(dict.fromkeys(post_ids))
        if not ids:
            return {}
        try:
            return await self._read(viewer_id, ids, hidden_users, viewer_read)
        except RedisError as error:  # logged once a minute at most: an outage fails them all
            log_fallback("engagement reads", error)
            return await self.read_uncached(viewer_id, ids)

    async def _read(
        self,
        viewer_id: int | None,
        ids: list[int],
        hidden_users: HiddenProvider | None,
        viewer_read: ViewerRead | None,
    ) -> dict[int, PostEngagement]:
        reads = self._shared_reads(ids)
        liked = hidden_blob = None
        if viewer_id is not None:
            scores = token = None
            if viewer_read is not None and viewer_read.viewer_id == viewer_id:
                scores = viewer_read.scores_of(ids)
                token, hidden_blob = viewer_read.token, viewer_read.hidden_blob
            if scores is None:
                pipe = self.redis.pipeline(transaction=False)
                _queue_viewer_read(pipe, viewer_id, ids)
                scores, token, hidden_blob = await pipe.execute()
            liked = _liked(ids, scores, token)
            if liked.missing or liked.unknown:
                async with self.engine.connect() as conn:
                    await _read_likes(conn, viewer_id, liked)
                if liked.missing:
                    keys = [liked_key(viewer_id), liked_gen_key(viewer_id)]
                    await self._fill_quietly([(self._liked_fill, keys, liked.fill_args())])
        shared: dict[int, _Shared] = {}
        pending: dict[int, tuple[SharedRead, list[int]]] = {}
        for post_id, value in reads.items():
            if isinstance(value, _Shared):
                shared[post_id] = value
            else:
                pending.setdefault(id(value), (value, []))[1].append(post_id)
        for read, read_ids in pending.values():
            # Shielded: a waiter cancelled (a client gone) must not cancel the others' read.
            result = read.result() if read.done() else await asyncio.shield(read)
            shared.update((post_id, result[post_id]) for post_id in read_ids)
        shown, authors = await self._shown_comments(shared, viewer_id, hidden_blob, hidden_users)
        known = liked.known if liked is not None else ()
        found: dict[int, PostEngagement] = {}
        for post_id in ids:
            entry = shared[post_id]
            # A post without comments: its (empty) preview.
            rows, complete, views = shown.get(post_id, entry.preview)
            found[post_id] = PostEngagement(
                entry.likes, entry.comments, post_id in known, rows, complete, authors, views
            )
        return found

    async def read_uncached(
        self, viewer_id: int | None, post_ids: Sequence[int]
    ) -> dict[int, PostEngagement]:
        """What `read` answers, from PostgreSQL alone (one connection, one statement per
        kind: hidden set, counts, first comments, likes, comment authors), nothing
        cached: what a read answers when Redis fails."""
        ids = list(dict.fromkeys(post_ids))
        if not ids:
            return {}
        async with self.engine.connect() as conn:
            hidden: frozenset[int] = frozenset()
            liked: set[int] = set()
            if viewer_id is not None:
                hidden = await hidden_ids(conn=conn, user_id=viewer_id)
                liked = await liked_among(conn=conn, user_id=viewer_id, post_ids=ids)
            counts = await post_counts(conn=conn, post_ids=ids)
            firsts = await first_comments(
                conn=conn, post_ids=ids, limit=FIRST_COMMENTS + 2, hidden=hidden
            )
            wanted = list({row.author_id for rows in firsts.values() for row in rows})
            authors: dict[int, Any] = {}
            if wanted:
                found_users = await conn.execute(
                    select(*USER_COLUMNS).where(users.c.id == any_(IDS)), {"ids": wanted}
                )
                authors = {row.id: row for row in found_users}
        found: dict[int, PostEngagement] = {}
        for post_id in ids:
            rows = firsts[post_id]
            likes, comments = counts[post_id]
            found[post_id] = PostEngagement(
                likes,
                comments,
                post_id in liked,
                [row for row in rows if row.author_id in authors][: FIRST_COMMENTS + 1],
                len(rows) <= FIRST_COMMENTS + 1,
                authors,
            )
        return found

    def _shared_reads(self, ids: list[int]) -> dict[int, SharedRead | _Shared]:
        """Each post's `_Shared`, or the read bringing it: the memo's while fresh, else
        one new read for all the others (started now, awaited by the caller)."""
        now = asyncio.get_running_loop().time()
        memo = self._memo
        memo.expire(now)
        reads: dict[int, SharedRead | _Shared] = {}
        missing: list[int] = []
        for post_id in ids:
            value = memo.get(post_id, now)
            if value is not None:
                reads[post_id] = value
            else:
                missing.append(post_id)
        if missing:
            read = asyncio.ensure_future(self._read_shared(missing))
            memo.start(missing, read, now + MEMO_TTL_SECONDS)
            reads.update(dict.fromkeys(missing, read))
            read.add_done_callback(functools.partial(memo.settle, missing))
        return reads

    async def _read_shared(self, ids: list[int]) -> dict[int, _Shared]:
        """The posts' counts and first comments from Redis (one MGET), misses from
        PostgreSQL (one connection), cached for the next reader (one round trip)."""
        keys: list[str] = []
        for post_id in ids:
            keys += (
                counts_key(post_id),
                first_key(post_id),
                gen_key(post_id),
                comments_gen_key(post_id),
            )
        blobs = await self.redis.mget(keys)
        cached = {ids[i // 4]: _decode(blobs[i : i + 4]) for i in range(0, len(blobs), 4)}
        if any(c.counts is None or c.first is None for c in cached.values()):
            async with self.engine.connect() as conn:
                fills = await self._read_posts(conn, cached)
            await self._fill_quietly(fills)
        return {post_id: _Shared.of(post_id, entry) for post_id, entry in cached.items()}

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
            if post_id in counts:
                entry.counts = likes, comments = counts[post_id]
                keys = [gen_key(post_id), counts_key(post_id)]
                args = [entry.token, ENGAGEMENT_TTL_SECONDS, f"{likes} {comments}"]
                calls.append((self._fill, keys, args))
            if post_id in firsts:
                rows = firsts[post_id]
                entry.first = raw, complete = (
                    [_encode_row(r) for r in rows[:CACHED_COMMENTS]],
                    len(rows) <= CACHED_COMMENTS,
                )
                blob = orjson.dumps([complete, raw])
                keys = [comments_gen_key(post_id), first_key(post_id)]
                args = [entry.comments_token, ENGAGEMENT_TTL_SECONDS, blob]
                calls.append((self._fill, keys, args))
        return calls

    async def _fill_quietly(self, calls: list[ScriptCall]) -> None:
        """Cache what was read: optional, so Redis refusing (out of memory, a read-only
        replica, unreachable) only logs, and the read answers what it read."""
        try:
            await self._run(calls)
        except RedisError:
            log.warning("the engagement cache refused a fill", exc_info=True)

    async def _shown_comments(
        self,
        shared: dict[int, _Shared],
        viewer_id: int | None,
        hidden_blob: bytes | None,
        hidden_users: HiddenProvider | None,
    ) -> tuple[dict[int, _Shown], dict[int, Any]]:
        """Per post with comments, its first comments the viewer may see (comments by
        accounts hidden from them and by accounts gone left out), up to
        FIRST_COMMENTS + 1, whether they are all, and the entry's views when they are
        its preview; and their authors' rows."""
        with_rows = {p: entry for p, entry in shared.items() if entry.rows}
        if not with_rows:
            return {}, {}
        hidden: frozenset[int] = frozenset()
        if viewer_id is not None:
            cached_hidden = _cached_hidden(hidden_blob)
            if cached_hidden is not None:
                hidden = cached_hidden
            else:  # not cached, or a block being written: the request's memo, or Redis
                # and PostgreSQL through `HiddenUsers`
                hidden = await (hidden_users() if hidden_users else self.hidden.of(viewer_id))
        # A post none of whose cached comments is by a hidden account (always so for a
        # viewer hiding nobody) keeps its rows, and its preview answers when every
        # author of it is found.
        visible: dict[int, list[list[Any]]] = {}
        wanted: set[int] = set()
        for post_id, entry in with_rows.items():
            if hidden.isdisjoint(entry.authors):
                visible[post_id] = entry.rows
                wanted.update(entry.preview_authors)
            else:
                rows = visible[post_id] = [r for r in entry.rows if r[1] not in hidden]
                wanted.update(r[1] for r in rows[: FIRST_COMMENTS + 1])
        authors = await self.recent.users(list(wanted)) if wanted else {}
        shown: dict[int, _Shown] = {}
        for post_id, rows in visible.items():
            entry = with_rows[post_id]
            if rows is entry.rows and authors.keys() >= entry.preview_authors:
                shown[post_id] = entry.preview
                continue
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
            shown[post_id] = (first, entry.complete and not cut, None)
        return shown, authors

    # -- hooks (after a commit) ---------------------------------------------------------

    async def like_changed(self, post_id: int, user_id: int, *, liked: bool) -> None:
        """A like of user_id on post_id was added (liked) or removed, and committed, or
        a like or unlike changed nothing (a repeated tap: whatever a missed hook left
        cached goes all the same): the post's cached counts and the user's liked set go.
        Either way alike (so hooks run in any order leave the same). Best effort (see the
        module doc for the window when Redis is unreachable)."""
        await self.changed(likes=[(post_id, user_id)])

    async def comments_changed(self, post_id: int) -> None:
        """A comment of post_id was added or deleted, and committed: its cached counts
        and first comments go. Best effort."""
        await self.changed(comments=[post_id])

    async def changed(
        self,
        *,
        likes: Sequence[tuple[int, int]] = (),
        comments: Sequence[int] = (),
        best_effort: bool = True,
    ) -> None:
        """After commits that changed likes (post id, user id) and the comments of these
        posts, e.g. a block's clean-up: one script per post and per user, in one
        pipelined round trip whatever their number. Best effort (a Redis failure is
        logged) unless `best_effort` is False: then it raises, as the outbox relay needs
        (it applies the same drop from the change's `invalidate` row, `domain.outbox`,
        and must keep the row when Redis refused it)."""
        commented = set(comments)
        posts = list(dict.fromkeys([*(post_id for post_id, _ in likes), *comments]))
        token = _token()
        calls: list[ScriptCall] = []
        for post_id in posts:
            if post_id in commented:
                keys = [gen_key(post_id), comments_gen_key(post_id)]
                keys += (counts_key(post_id), first_key(post_id))
                calls.append((self._drop, keys, [token, ENGAGEMENT_TTL_SECONDS, 2]))
            else:
                keys = [gen_key(post_id), counts_key(post_id)]
                calls.append((self._drop, keys, [token, ENGAGEMENT_TTL_SECONDS, 1]))
        for user_id in dict.fromkeys(user_id for _, user_id in likes):
            keys = [liked_gen_key(user_id), liked_key(user_id)]
            calls.append((self._drop, keys, [token, LIKED_TTL_SECONDS, 1]))
        await self._run_hooks(posts, calls, best_effort=best_effort)

    async def _run_hooks(
        self, post_ids: list[int], calls: list[ScriptCall], *, best_effort: bool
    ) -> None:
        # The memo entries go before the scripts and again after them: one made meanwhile
        # may hold what Redis had before the scripts, one made after them cannot.
        for post_id in post_ids:
            self._memo.pop(post_id)
        try:
            await self._run(calls)
        except RedisError:
            if not best_effort:
                raise
            # The change's `invalidate` outbox row drops the same keys once Redis is back.
            log.warning("the engagement cache missed a change", exc_info=True)
        finally:
            for post_id in post_ids:
                self._memo.pop(post_id)

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


@dataclass(slots=True)
class _Liked:
    """The viewer's likes among a page's posts, as the cached set answered them."""

    known: set[int]  # liked
    unknown: list[int]  # not answered by the set (below its floor, or no set)
    missing: bool  # no set cached: `recent` and `floor` fill it
    token: str  # its token as read ('' for none)
    recent: list[int] = field(default_factory=list)
    floor: int = 0

    def fill_args(self) -> list[Any]:
        # The floor's score as an exact integer string (below 2^53, see the module doc).
        return [self.token, LIKED_TTL_SECONDS, str(-1 - self.floor), *self.recent]


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


def _liked(ids: list[int], scores: list[float | None], gen: bytes | None) -> _Liked:
    floor_score, *post_scores = scores
    token = gen.decode() if gen else ""
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
    counts, first, token, comments_token = blobs
    parsed = None
    if counts is not None:
        likes, comments = counts.split()
        parsed = (int(likes), int(comments))
    decoded = None
    if first is not None:
        complete, rows = orjson.loads(first)
        decoded = (rows, complete)
    return _Post(
        counts=parsed,
        first=decoded,
        token=token.decode() if token else "",
        comments_token=comments_token.decode() if comments_token else "",
    )


def _encode_row(row: CommentRecord) -> list[Any]:
    # Compact: [id, author_id, text, created_at] (the post id is the key's).
    return [row.id, row.author_id, row.text, row.created_at.isoformat()]


def _decode_row(post_id: int, raw: list[Any]) -> CommentRecord:
    # Comments never change: each is decoded once per process (bounded memo).
    record = _RECORDS.get(raw[0])
    if record is None:
        record = CommentRecord(
            id=raw[0],
            post_id=post_id,
            author_id=raw[1],
            text=raw[2],
            created_at=datetime.fromisoformat(raw[3]),
        )
        _RECORDS.put(raw[0], record, len(record.text))
    return record


class BoundedMemo(Generic[K, V]):
    """A process-wide memo of values that never change, emptied when full: at most
    `max_entries` entries and `max_text` characters of text (each entry's size is given
    by its writer), so that long texts cannot make it grow past a known bound."""

    def __init__(self, max_entries: int, max_text: int) -> None:
        self.max_entries = max_entries
        self.max_text = max_text
        self._items: dict[K, tuple[V, int]] = {}
        self._text = 0

    def __len__(self) -> int:
        return len(self._items)

    @property
    def text_size(self) -> int:
        """Characters of text held now."""
        return self._text

    def get(self, key: K) -> V | None:
        item = self._items.get(key)
        return item[0] if item is not None else None

    def put(self, key: K, value: V, size: int) -> None:
        old = self._items.pop(key, None)
        if old is not None:
            self._text -= old[1]
        if len(self._items) >= self.max_entries or self._text + size > self.max_text:
            self._items.clear()
            self._text = 0
        self._items[key] = (value, size)
        self._text += size

    def clear(self) -> None:
        self._items.clear()
        self._text = 0


_RECORDS: BoundedMemo[int, CommentRecord] = BoundedMemo(20_000, MEMO_MAX_TEXT)
