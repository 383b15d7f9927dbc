"""The Redis side of the home feed: one small interface over a few key families.

    feed:{U}     sorted set of post ids in U's home feed, scored by the (time-ordered)
                 post id. Member "0" is a sentinel: present whenever the feed is
                 maintained, its score 0 (complete) or 1 (older posts were trimmed
                 away and live only in PostgreSQL).
    seen:{U}     U read their feed recently; fan-out skips users without it, and a
                 read without it rebuilds the feed from PostgreSQL.
    live:{U}     a process holds a live feedItemAdded subscription for U.
    posts:{A}    A's newest READY post ids (the celebrity pull and follow backfill).
    celebs:{U}   cached ids of the celebrities U follows, with the epoch it was made in.

The user id sits in braces, a Redis Cluster hash tag: a user's feed, seen and live
keys share a slot, so the fan-out script touching all three works on a cluster
once callers group followers by slot (see `slot_groups`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import orjson
from redis.asyncio import Redis
from redis.crc import key_slot

from settings import Settings

SENTINEL = b"0"
COMPLETE, TRUNCATED = 0, 1
CELEB_EPOCH_KEY = "celebs:epoch"
CELEBS_TTL_SECONDS = 600
PRESENCE_TTL_SECONDS = 60
# Published on a user's own channel (where post ids go) when their follows change.
FOLLOWS_CHANGED = b"follows-changed"


def feed_key(user_id: int) -> str:
    return f"feed:{{{user_id}}}"


def seen_key(user_id: int) -> str:
    return f"seen:{{{user_id}}}"


def live_key(user_id: int) -> str:
    return f"live:{{{user_id}}}"


def posts_key(author_id: int) -> str:
    return f"posts:{{{author_id}}}"


def celebs_key(user_id: int) -> str:
    return f"celebs:{{{user_id}}}"


def user_channel(user_id: int) -> str:
    return f"feed-events:{{{user_id}}}"


def author_channel(author_id: int) -> str:
    return f"author-events:{{{author_id}}}"


# KEYS: feed, seen, live per follower (triples). ARGV: score, member, cap, then each
# follower's channel (named in Python only: `user_channel`).
# Adds the post to every maintained feed, trims each to the cap (keeping the sentinel
# at rank 0 and marking the feed truncated), and publishes to followers who are live.
# Returns how many feeds received the post.
FAN_OUT_LUA = """
local score, member, cap = ARGV[1], ARGV[2], tonumber(ARGV[3])
local added = 0
for i = 1, #KEYS, 3 do
  local feed, seen, live = KEYS[i], KEYS[i + 1], KEYS[i + 2]
  if redis.call('EXISTS', seen) == 1 and redis.call('ZSCORE', feed, '0') then
    redis.call('ZADD', feed, score, member)
    local extra = redis.call('ZCARD', feed) - cap - 1
    if extra > 0 then
      redis.call('ZREMRANGEBYRANK', feed, 1, extra)
      redis.call('ZADD', feed, 'XX', 1, '0')
    end
    added = added + 1
    if redis.call('EXISTS', live) == 1 then
      redis.call('PUBLISH', ARGV[3 + (i + 2) / 3], member)
    end
  end
end
return added
"""

# KEYS: live per user. ARGV: message, then each user's channel. Publishes the message
# to the users who hold a live subscription; returns how many.
TELL_LIVE_LUA = """
local told = 0
for i = 1, #KEYS do
  if redis.call('EXISTS', KEYS[i]) == 1 then
    redis.call('PUBLISH', ARGV[i + 1], ARGV[1])
    told = told + 1
  end
end
return told
"""

# KEYS: feed. ARGV: cap, sentinel state ('0' complete, '1' truncated, '' unchanged), then
# score/member pairs. Merge posts into one maintained feed (a missing feed is left alone).
MERGE_LUA = """
local feed, cap, state = KEYS[1], tonumber(ARGV[1]), ARGV[2]
if not redis.call('ZSCORE', feed, '0') then return 0 end
if state ~= '' then redis.call('ZADD', feed, 'XX', tonumber(state), '0') end
for i = 3, #ARGV, 2 do
  redis.call('ZADD', feed, ARGV[i], ARGV[i + 1])
end
local extra = redis.call('ZCARD', feed) - cap - 1
if extra > 0 then
  redis.call('ZREMRANGEBYRANK', feed, 1, extra)
  redis.call('ZADD', feed, 'XX', 1, '0')
end
return 1
"""


UNLOCK_LUA = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


def slot_groups(user_ids: Iterable[int]) -> list[list[int]]:
    """Followers grouped by the cluster slot their keys hash to (for Redis Cluster)."""
    groups: dict[int, list[int]] = {}
    for user_id in user_ids:
        groups.setdefault(key_slot(feed_key(user_id).encode()), []).append(user_id)
    return list(groups.values())


@dataclass
class FeedPage:
    """What one pipelined read of a viewer's feed returned."""

    maintained: bool  # the feed exists and the viewer was active: its contents are right
    truncated: bool  # older posts were trimmed: continue in PostgreSQL past the end
    ids: list[int]  # newest first, below the cursor
    celebrities: list[int] | None  # cached celebrity followees, or None when stale
    pulled: list[int] | None = None  # their posts, when read in the same round trip


class FeedStore:
    """Feed operations; each method is one Redis round trip unless it says otherwise."""

    def __init__(
        self,
        redis: Redis,
        *,
        cap: int,
        author_posts_cap: int,
        inactive_after_seconds: int,
        cluster: bool = False,
    ) -> None:
        self.redis = redis
        self.cap = cap
        self.author_posts_cap = author_posts_cap
        self.inactive_after = inactive_after_seconds
        self.cluster = cluster
        self._fan_out = redis.register_script(FAN_OUT_LUA)
        self._tell_live = redis.register_script(TELL_LIVE_LUA)
        self._merge = redis.register_script(MERGE_LUA)
        self._unlock = redis.register_script(UNLOCK_LUA)

    async def read(
        self,
        viewer_id: int,
        *,
        below: int | None,
        count: int,
        pull_from: Sequence[int] = (),
    ) -> FeedPage:
        """The viewer's next `count` ids below the cursor, the feed's state and the cached
        celebrity list, in one round trip; refreshes the viewer's activity mark.

        `pull_from`: celebrities whose newest posts to read in the same round trip (the
        caller's guess of the viewer's celebrity list); `FeedPage.pulled` has them when
        the guess matches the list read here, else None (the caller pulls separately)."""
        high = f"({below}" if below is not None else "+inf"
        pipe = self.redis.pipeline(transaction=False)
        pipe.zscore(feed_key(viewer_id), SENTINEL)
        pipe.exists(seen_key(viewer_id))
        # Scores above 1 only: the sentinel's score is 0 or 1, a post id is far larger.
        pipe.zrevrangebyscore(feed_key(viewer_id), high, "(1", start=0, num=count)
        pipe.get(celebs_key(viewer_id))
        pipe.get(CELEB_EPOCH_KEY)
        pipe.expire(seen_key(viewer_id), self.inactive_after)
        for author_id in pull_from:
            pipe.zrevrangebyscore(posts_key(author_id), high, "-inf", start=0, num=count)
        sentinel, seen, ids, celebs, epoch, _, *pulls = await pipe.execute()
        celebrities = _decode_celebs(celebs, epoch)
        pulled = None
        if celebrities is not None and list(pull_from) == celebrities:
            pulled = [int(i) for batch in pulls for i in batch]
        return FeedPage(
            maintained=sentinel is not None and bool(seen),
            truncated=sentinel is not None and int(sentinel) == TRUNCATED,
            ids=[int(i) for i in ids],
            celebrities=celebrities,
            pulled=pulled,
        )

    async def author_posts(
        self, author_ids: Sequence[int], *, below: int | None, count: int
    ) -> list[int]:
        """Newest ids of several authors' `posts:` sets below the cursor (one round trip)."""
        if not author_ids:
            return []
        high = f"({below}" if below is not None else "+inf"
        pipe = self.redis.pipeline(transaction=False)
        for author_id in author_ids:
            pipe.zrevrangebyscore(posts_key(author_id), high, "-inf", start=0, num=count)
        return [int(i) for ids in await pipe.execute() for i in ids]

    async def store_celebrities(self, viewer_id: int, celebrity_ids: list[int]) -> None:
        epoch = await self.redis.get(CELEB_EPOCH_KEY)
        value = orjson.dumps({"epoch": int(epoch or 0), "ids": celebrity_ids})
        await self.redis.set(celebs_key(viewer_id), value, ex=CELEBS_TTL_SECONDS)

    async def forget_celebrities(self, viewer_id: int) -> None:
        await self.redis.delete(celebs_key(viewer_id))

    async def bump_celebrity_epoch(self) -> int:
        """An author crossed the threshold: every cached celebrity list is stale. Returns
        the new epoch (it also names the crossing, e.g. in a job id)."""
        return int(await self.redis.incr(CELEB_EPOCH_KEY))

    async def write_rebuilt(self, viewer_id: int, ids: list[int], *, truncated: bool) -> None:
        """Replace the viewer's feed with ids rebuilt from PostgreSQL and mark them active."""
        pipe = self.redis.pipeline(transaction=True)
        pipe.delete(feed_key(viewer_id))
        mapping: dict[str, float] = {"0": TRUNCATED if truncated else COMPLETE}
        mapping.update({str(i): i for i in ids})
        pipe.zadd(feed_key(viewer_id), mapping)
        pipe.set(seen_key(viewer_id), 1, ex=self.inactive_after)
        await pipe.execute()

    async def begin_rebuild(self, viewer_id: int) -> None:
        """Open an empty feed marked truncated before reading PostgreSQL: fan-outs from
        now on land in it, and readers meanwhile continue from PostgreSQL."""
        pipe = self.redis.pipeline(transaction=True)
        pipe.delete(feed_key(viewer_id))
        pipe.zadd(feed_key(viewer_id), {"0": TRUNCATED})
        pipe.set(seen_key(viewer_id), 1, ex=self.inactive_after)
        await pipe.execute()

    async def finish_rebuild(self, viewer_id: int, ids: list[int], *, truncated: bool) -> None:
        """Add the rebuilt ids (merging with anything fanned out meanwhile)."""
        await self._merge_ids(viewer_id, ids, state="1" if truncated else "0")

    async def lock_rebuild(self, viewer_id: int, token: str) -> bool:
        return bool(await self.redis.set(f"rebuild:{{{viewer_id}}}", token, nx=True, px=5000))

    async def unlock_rebuild(self, viewer_id: int, token: str) -> None:
        """Release the lock only if it is still ours (a slow rebuild may have lost it)."""
        await self._unlock(keys=[f"rebuild:{{{viewer_id}}}"], args=[token])

    async def fan_out(self, follower_ids: list[int], post_id: int) -> int:
        """Add a post to the maintained feeds of a batch of followers, in Redis itself:
        one script call per batch (per slot group on a cluster)."""
        groups = slot_groups(follower_ids) if self.cluster else [follower_ids]
        added = 0
        for group in groups:
            keys = [k for f in group for k in (feed_key(f), seen_key(f), live_key(f))]
            args: list[int | str] = [post_id, post_id, self.cap]
            args += [user_channel(f) for f in group]
            added += int(await self._fan_out(keys=keys, args=args))
        return added

    async def record_author_post(self, author_id: int, post_id: int) -> None:
        pipe = self.redis.pipeline(transaction=True)
        pipe.zadd(posts_key(author_id), {str(post_id): post_id})
        pipe.zremrangebyrank(posts_key(author_id), 0, -self.author_posts_cap - 1)
        await pipe.execute()

    async def merge_into(self, viewer_id: int, post_ids: list[int], *, more: bool = False) -> None:
        """Add posts to one maintained feed (follow backfill); a missing feed is left for
        the next read to rebuild. `more`: older posts exist beyond these, so the feed
        must continue in PostgreSQL past its end."""
        if post_ids:
            await self._merge_ids(viewer_id, post_ids, state="1" if more else "")

    async def _merge_ids(self, viewer_id: int, post_ids: list[int], *, state: str) -> None:
        args: list[int | str] = [self.cap, state]
        for post_id in post_ids:
            args += [post_id, post_id]
        await self._merge(keys=[feed_key(viewer_id)], args=args)

    async def remove_from_feed(self, viewer_id: int, post_ids: list[int]) -> None:
        if post_ids:
            await self.redis.zrem(feed_key(viewer_id), *[str(i) for i in post_ids])

    async def remove_post(self, author_id: int, post_id: int) -> None:
        await self.redis.zrem(posts_key(author_id), str(post_id))

    async def is_live(self, user_id: int) -> bool:
        return bool(await self.redis.exists(live_key(user_id)))

    async def publish_author_post(self, author_id: int, post_id: int) -> None:
        await self.redis.publish(author_channel(author_id), str(post_id))

    async def publish_to_user(self, user_id: int, post_id: int) -> None:
        await self.redis.publish(user_channel(user_id), str(post_id))

    async def tell_live_follows_changed(self, user_ids: list[int]) -> int:
        """`publish_follows_changed` for those of these users who are live (one script
        call per batch, per slot group on a cluster); returns how many were told."""
        groups = slot_groups(user_ids) if self.cluster else [user_ids]
        told = 0
        for group in groups:
            args: list[bytes | str] = [FOLLOWS_CHANGED]
            args += [user_channel(u) for u in group]
            told += int(await self._tell_live(keys=[live_key(u) for u in group], args=args))
        return told

    async def publish_follows_changed(self, user_id: int) -> None:
        """Tell the user's live subscriptions (on any API process) that whom they follow
        changed, so they re-read which celebrity channels to listen to."""
        await self.redis.publish(user_channel(user_id), FOLLOWS_CHANGED)


def _decode_celebs(raw: bytes | None, epoch: bytes | None) -> list[int] | None:
    if raw is None:
        return None
    cached = orjson.loads(raw)
    if cached.get("epoch") != int(epoch or 0):
        return None
    return [int(i) for i in cached["ids"]]


def create_feed_store(redis: Redis, settings: Settings) -> FeedStore:
    return FeedStore(
        redis,
        cap=settings.feed_cap,
        author_posts_cap=settings.author_posts_cap,
        inactive_after_seconds=settings.inactive_after_seconds,
    )
