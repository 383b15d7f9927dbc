"""`HomeFeed`: reading, graph reactions and fan-out of the home feed (see the package doc)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from arq.connections import ArqRedis
from redis.exceptions import RedisError
from sqlalchemy.ext.asyncio import AsyncEngine

from domain.feed import queries
from domain.records import RecentRecords, fetch_posts
from infra.cache import RecordCache, Rider
from infra.feedstore import FeedPage, FeedStore
from infra.metrics import FEED_HIT, FEED_MISS, FEED_READS
from infra.outages import Overloaded
from infra.redis import log_fallback
from models import PostStatus
from settings import Settings
from workers.jobs import enqueue_announce_celebrity, enqueue_backfill_author

log = logging.getLogger("instagraph.feed")

# Extra ids read per page, so a few deleted posts do not leave the page short.
SLACK = 5
REBUILD_WAIT_SECONDS = 2.0
KNOWN_CELEBRITY_LISTS = 20_000  # ~20 MB at worst: one tuple of ids per recent reader
FAN_OUT_PROGRESS_TTL_SECONDS = 24 * 3600


def _progress_key(post_id: int) -> str:
    return f"fanout:progress:{post_id}"


@dataclass(frozen=True, slots=True)
class FeedItem:
    """One hydrated post of a page: its row, media rows (position order) and author row."""

    post: Any
    media: list[Any]
    author: Any


@dataclass(frozen=True, slots=True)
class FeedResult:
    """A page of the feed, newest first, and whether more follow it."""

    items: list[FeedItem]
    has_next: bool


class HomeFeed:
    def __init__(
        self,
        *,
        engine: AsyncEngine,
        feeds: FeedStore,
        cache: RecordCache,
        settings: Settings,
        recent: RecentRecords,
        jobs: ArqRedis | None = None,
    ) -> None:
        self.engine = engine
        self.feeds = feeds
        self.cache = cache
        self.settings = settings
        self.recent = recent
        self.jobs = jobs
        # Per process, a hint only: which celebrities each recent reader followed.
        self._known_celebrities: OrderedDict[int, tuple[int, ...]] = OrderedDict()
        # Feed pages being read from PostgreSQL because Redis failed (`page_ids`).
        self.fallback_limit = settings.feed_fallback_concurrency or max(
            1, settings.db_pool_size // 2
        )
        self._fallbacks = 0

    # -- reading -------------------------------------------------------------------

    async def read(
        self, viewer_id: int, *, first: int, below: int | None, rider: Rider | None = None
    ) -> FeedResult:
        """A page of `first` READY posts below the cursor post id, hydrated: Redis ids
        and celebrity pulls (one pipelined round trip when this process read the viewer's
        feed before, else two), then posts and their authors from the record caches (one
        round trip each when warm, authors only when this process did not read them a
        moment ago: `RecentRecords`; PostgreSQL for misses). Ids of posts deleted since fan-out
        are dropped from the viewer's feed. `rider`'s commands about the page's ids (the
        viewer's part of its engagement) share the posts' round trip."""
        want = first + 1 + SLACK
        ids = await self.page_ids(viewer_id, below=below, count=want)
        found = await fetch_posts(self.engine, self.cache, ids, rider=rider)
        gone = [i for i in ids if i not in found]
        if gone:  # deleted after fan-out: drop the stale ids from the viewer's feed
            with contextlib.suppress(RedisError):  # or at a later read
                await self.feeds.remove_from_feed(viewer_id, gone)
        shown = [found[i] for i in ids if i in found and found[i].post.status == PostStatus.READY]
        page = shown[:first]
        authors = await self.recent.users(list({r.post.author_id for r in page}))
        items = [
            FeedItem(r.post, r.media or [], authors[r.post.author_id])
            for r in page
            if r.post.author_id in authors
        ]
        # More to come: past this page, or ids were dropped from a full read.
        has_next = len(shown) > first or (len(ids) == want and len(shown) < len(ids))
        return FeedResult(items=items, has_next=has_next)

    async def page_ids(self, viewer_id: int, *, below: int | None, count: int) -> list[int]:
        """The viewer's next `count` feed ids below the cursor, newest first: their Redis
        feed merged with the posts of the celebrities they follow, continued from
        PostgreSQL past what Redis holds, rebuilt first if Redis lost it.

        When Redis fails (down, stalled, refusing: see `infra.redis`), the rebuild's query
        answers the page alone (every followed author, celebrities too), and nothing is
        written back: the first read after Redis returns rebuilds the feed there. At
        most `fallback_limit` such queries run at once in this process; a read beyond it
        is refused at once (`Overloaded`: SERVICE_UNAVAILABLE) rather than queueing for
        the pool into the database timeout (docs/degradation.md)."""
        try:
            return await self._page_ids(viewer_id, below=below, count=count)
        except RedisError as error:
            if self._fallbacks >= self.fallback_limit:
                FEED_READS.labels("shed").inc()
                raise Overloaded("too many feed pages read from PostgreSQL at once") from error
            log_fallback("feed pages", error)
            FEED_READS.labels("fallback").inc()
            self._fallbacks += 1
            try:
                async with self.engine.connect() as conn:
                    return await queries.home_feed_ids(
                        conn=conn, viewer_id=viewer_id, below=below, limit=count
                    )
            finally:
                self._fallbacks -= 1

    async def _page_ids(self, viewer_id: int, *, below: int | None, count: int) -> list[int]:
        feeds = self.feeds
        # The celebrities this viewer followed last time, pulled in the same round trip
        # as the feed; the list read there says whether the guess still holds.
        guess = self._known_celebrities.get(viewer_id, ())
        page = await feeds.read(viewer_id, below=below, count=count, pull_from=guess)
        if page.maintained:
            FEED_HIT.inc()
        else:
            FEED_MISS.inc()
            page = await self._rebuild(viewer_id, below, count)
        celebrities = await self.celebrities(viewer_id, page)
        self._remember_celebrities(viewer_id, celebrities)
        if page.pulled is not None:
            pulled = page.pulled
        else:
            pulled = await feeds.author_posts(celebrities, below=below, count=count)
        if page.truncated and len(page.ids) < count:
            # Past what Redis holds: below its lowest id only PostgreSQL, which covers
            # every followed author (celebrities too), knows the order; continue there.
            floor = min(page.ids) if page.ids else below
            above = [p for p in pulled if floor is None or p > floor]
            ids = sorted(set(page.ids) | set(above), reverse=True)[:count]
            if len(ids) < count:
                async with self.engine.connect() as conn:
                    ids += await queries.home_feed_ids(
                        conn=conn, viewer_id=viewer_id, below=floor, limit=count - len(ids)
                    )
            return ids
        return sorted(set(page.ids) | set(pulled), reverse=True)[:count]

    def clear_memos(self) -> None:
        """Forget which celebrities recent readers followed (tests empty the database
        between cases, and ids start again)."""
        self._known_celebrities.clear()

    def _remember_celebrities(self, viewer_id: int, celebrities: list[int]) -> None:
        known = tuple(celebrities)
        if self._known_celebrities.get(viewer_id) != known:
            self._known_celebrities[viewer_id] = known
        self._known_celebrities.move_to_end(viewer_id)  # least recently read go first
        if len(self._known_celebrities) > KNOWN_CELEBRITY_LISTS:
            self._known_celebrities.popitem(last=False)

    async def celebrities(self, viewer_id: int, page: FeedPage | None = None) -> list[int]:
        """Followed accounts at or above the threshold (pulled at read time): the cached
        list the page read brought, else from PostgreSQL, cached for the next read."""
        if page is not None and page.celebrities is not None:
            return page.celebrities
        async with self.engine.connect() as conn:
            celebrities = await queries.celebrity_followees(
                conn=conn,
                viewer_id=viewer_id,
                threshold=self.settings.celebrity_follower_threshold,
            )
        await self.feeds.store_celebrities(viewer_id, celebrities)
        return celebrities

    async def _rebuild(self, viewer_id: int, below: int | None, count: int) -> FeedPage:
        """Rebuild a missing feed from PostgreSQL and write it back, once per viewer at a
        time: concurrent readers wait for the rebuild instead of repeating it."""
        feeds = self.feeds
        cap = self.settings.feed_cap
        token = uuid.uuid4().hex
        if await feeds.lock_rebuild(viewer_id, token):
            FEED_READS.labels("rebuild").inc()
            try:
                # Opened before reading PostgreSQL, so a post fanned out meanwhile is kept.
                await feeds.begin_rebuild(viewer_id)
                async with self.engine.connect() as conn:
                    ids = await queries.home_feed_ids(
                        conn=conn, viewer_id=viewer_id, below=None, limit=cap + 1
                    )
                await feeds.finish_rebuild(viewer_id, ids[:cap], truncated=len(ids) > cap)
            finally:
                await feeds.unlock_rebuild(viewer_id, token)
            return await feeds.read(viewer_id, below=below, count=count)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + REBUILD_WAIT_SECONDS
        while loop.time() < deadline:
            await asyncio.sleep(0.02)
            page = await feeds.read(viewer_id, below=below, count=count)
            if page.maintained:
                return page
        # The other rebuild is slow or died: answer from PostgreSQL without writing.
        async with self.engine.connect() as conn:
            ids = await queries.home_feed_ids(
                conn=conn, viewer_id=viewer_id, below=below, limit=count
            )
        return FeedPage(maintained=True, truncated=True, ids=ids, celebrities=None)

    # -- reactions to the follow graph and to deletes ---------------------------------

    async def follow_changed(
        self, follower_id: int, followee_id: int, *, added: bool, followers: int
    ) -> None:
        """A follow edge appeared (follow, approved request) or went away (unfollow,
        block). Follow backfills the followee's recent posts into the follower's feed;
        unfollow takes them out. A followee crossing the celebrity threshold stales every
        cached celebrity list at once; the crossing's jobs (`act_on_crossing`) come from
        the edge's outbox row only, once. A live subscription of the follower is told to
        re-read which celebrity channels it listens to."""
        try:
            await self._follow_changed(follower_id, followee_id, added=added)
            if self.crosses_threshold(added=added, followers=followers):
                await self.feeds.bump_celebrity_epoch()
        finally:
            # Again once the feed work is done (the caller told them before it, see
            # `tell_follows_changed`): a celebrity's channel must not outlive the edge.
            await self.tell_follows_changed([follower_id])

    def crosses_threshold(self, *, added: bool, followers: int) -> bool:
        """`followers` is the count the edge's transaction left: exactly one change sees
        the threshold crossed, whatever runs concurrently."""
        threshold = self.settings.celebrity_follower_threshold
        return followers == (threshold if added else threshold - 1)

    async def act_on_crossing(
        self, followee_id: int, *, added: bool, followers: int, crossing: int
    ) -> bool:
        """The edge's job (`workers.outbox.follow_changed`), whether or not the edge was
        reversed since (its reversal is a crossing of its own): when this change crossed
        the threshold, every cached celebrity list goes stale, and live followers start
        listening to the author's channel (upwards) or the author's recent posts are
        pushed to followers (downwards). The jobs are named by `crossing` (the outbox
        row's id), so a repeated or retried run enqueues them once. Returns whether the
        threshold was crossed."""
        if not self.crosses_threshold(added=added, followers=followers):
            return False
        await self.feeds.bump_celebrity_epoch()
        if self.jobs is not None:
            if added:  # live followers must start listening to the author's channel
                await enqueue_announce_celebrity(self.jobs, followee_id, crossing=crossing)
            else:
                await enqueue_backfill_author(self.jobs, followee_id, crossing=crossing)
        return True

    async def tell_follows_changed(self, user_ids: list[int]) -> None:
        """Have these users' live subscriptions re-read whom to listen to. Best effort,
        one user at a time: when Redis is down, their pub/sub connections are too, and
        the hub marks them stale when it reconnects."""
        for user_id in user_ids:
            try:
                await self.feeds.publish_follows_changed(user_id)
            except RedisError:
                log.warning("could not tell %d's live subscriptions", user_id, exc_info=True)

    async def _follow_changed(self, follower_id: int, followee_id: int, *, added: bool) -> None:
        cap = self.settings.feed_cap
        async with self.engine.connect() as conn:
            recent = await queries.recent_post_ids(conn=conn, author_id=followee_id, limit=cap + 1)
        if added:
            # More than the cap: the feed must continue in PostgreSQL past its end.
            await self.feeds.merge_into(follower_id, recent[:cap], more=len(recent) > cap)
        else:
            await self.feeds.remove_from_feed(follower_id, recent)
        await self.feeds.forget_celebrities(follower_id)

    async def post_deleted(self, author_id: int, post_id: int) -> None:
        """Gone from every feed at once: the cached copy becomes a tombstone (feeds that
        still hold the id drop it when they hydrate), the author's pull set loses it and
        the author's cached counts are forgotten."""
        await self.cache.bury_post(post_id)
        await self.recent.forget_users([author_id])
        await self.feeds.remove_post(author_id, post_id)

    # -- fan-out on write -----------------------------------------------------------

    async def fan_out_post(self, post_id: int) -> dict[str, int]:
        """Put a READY post into its author's and followers' feeds.

        Celebrities (follower count at or above the threshold) are not fanned out: their
        posts are merged in at read time from `posts:{author}` and published once on the
        author's channel. Others: followers in keyset batches from PostgreSQL, each batch
        inserted (and trimmed, and published to live followers) by one Lua call. A killed
        run resumes after its last finished batch.
        """
        feeds = self.feeds
        redis = feeds.redis
        async with self.engine.connect() as conn:
            post = await queries.post_for_fan_out(conn=conn, post_id=post_id)
        if post is None:  # deleted (or not READY) since: nothing to deliver
            return {"feeds": 0}
        author_id = post.author_id
        await feeds.record_author_post(author_id, post_id)
        await feeds.merge_into(author_id, [post_id])
        if await feeds.is_live(author_id):
            await feeds.publish_to_user(author_id, post_id)
        if post.follower_count >= self.settings.celebrity_follower_threshold:
            await feeds.publish_author_post(author_id, post_id)
            return {"feeds": 1, "celebrity": 1}

        progress = await redis.get(_progress_key(post_id))
        delivered = 0
        async for followers, last_edge in self._follower_batches(
            author_id, after_edge=int(progress) if progress else None
        ):
            delivered += await feeds.fan_out(followers, post_id)
            await redis.set(_progress_key(post_id), last_edge, ex=FAN_OUT_PROGRESS_TTL_SECONDS)
        await redis.delete(_progress_key(post_id))
        return {"feeds": delivered + 1}

    async def backfill_author(self, author_id: int) -> int:
        """An author fell below the celebrity threshold: readers stop pulling their posts,
        so push the recent ones into followers' feeds now (no post is lost)."""
        cap = self.settings.feed_cap
        async with self.engine.connect() as conn:
            recent = await queries.recent_post_ids(conn=conn, author_id=author_id, limit=cap + 1)
        if not recent:
            return 0
        delivered = 0
        async for followers, _ in self._follower_batches(author_id):
            for follower_id in followers:
                await self.feeds.merge_into(follower_id, recent[:cap], more=len(recent) > cap)
            delivered += len(followers)
        return delivered

    async def announce_celebrity(self, author_id: int) -> int:
        """An author crossed the threshold upwards: their posts are no longer fanned out
        but published on their own channel, so tell their live followers' subscriptions
        to re-read which celebrity channels to listen to. Returns how many were told."""
        told = 0
        async for followers, _ in self._follower_batches(author_id):
            told += await self.feeds.tell_live_follows_changed(followers)
        return told

    async def _follower_batches(
        self, author_id: int, *, after_edge: int | None = None
    ) -> AsyncIterator[tuple[list[int], int]]:
        """An author's followers in keyset batches from PostgreSQL, with each batch's last
        edge id (the resume point)."""
        while True:
            async with self.engine.connect() as conn:
                batch = await queries.follower_batch(
                    conn=conn,
                    author_id=author_id,
                    after_edge=after_edge,
                    limit=self.settings.fanout_batch_size,
                )
            if not batch:
                return
            after_edge = batch[-1].id
            yield [row.follower_id for row in batch], after_edge
