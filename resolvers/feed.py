"""The home feed: ids from Redis (plus the celebrity pull), PostgreSQL past the cap or
when Redis lost the feed, hydrated in one batch per type by the loaders."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncGenerator

from domain import feed as feed_domain
from infra.feedstore import FeedPage, author_channel, user_channel
from infra.ids import encode_cursor
from infra.pubsub import PubSubHub
from loaders import Loaders
from models import PostStatus
from schema.common import check_page_size, page_info, parse_cursor
from schema.context import Info
from schema.posts import Post, PostConnection, PostEdge, build_posts, edge_cursor

# Extra ids read per page, so a few deleted posts do not leave the page short.
SLACK = 5
REBUILD_WAIT_SECONDS = 2.0


async def _celebrities(info: Info, viewer_id: int, page: FeedPage | None) -> list[int]:
    if page is not None and page.celebrities is not None:
        return page.celebrities
    async with info.context.engine.connect() as conn:
        celebrities = await feed_domain.celebrity_followees(
            conn=conn,
            viewer_id=viewer_id,
            threshold=info.context.settings.celebrity_follower_threshold,
        )
    await info.context.feeds.store_celebrities(viewer_id, celebrities)
    return celebrities


async def _rebuild(info: Info, viewer_id: int, below: int | None, count: int) -> FeedPage:
    """Rebuild a missing feed from PostgreSQL and write it back, once per viewer at a
    time: concurrent requests wait for the rebuild instead of repeating it."""
    feeds = info.context.feeds
    cap = info.context.settings.feed_cap
    token = uuid.uuid4().hex
    if await feeds.lock_rebuild(viewer_id, token):
        try:
            # Opened before reading PostgreSQL, so a post fanned out meanwhile is kept.
            await feeds.begin_rebuild(viewer_id)
            async with info.context.engine.connect() as conn:
                ids = await feed_domain.home_feed_ids(
                    conn=conn, viewer_id=viewer_id, below=None, limit=cap + 1
                )
            await feeds.finish_rebuild(viewer_id, ids[:cap], truncated=len(ids) > cap)
        finally:
            await feeds.unlock_rebuild(viewer_id, token)
        return await feeds.read(viewer_id, below=below, count=count)
    deadline = asyncio.get_running_loop().time() + REBUILD_WAIT_SECONDS
    while asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.02)
        page = await feeds.read(viewer_id, below=below, count=count)
        if page.maintained:
            return page
    # The other rebuild is slow or died: answer from PostgreSQL without writing.
    async with info.context.engine.connect() as conn:
        ids = await feed_domain.home_feed_ids(
            conn=conn, viewer_id=viewer_id, below=below, limit=count
        )
    return FeedPage(maintained=True, truncated=True, ids=ids, celebrities=None)


async def feed(info: Info, first: int | None = 20, after: str | None = None) -> PostConnection:
    viewer_id = info.context.require_viewer()
    size = check_page_size(first)
    cursor = parse_cursor(after, 2)
    below = cursor[1] if cursor else None
    want = size + 1 + SLACK
    feeds = info.context.feeds

    page = await feeds.read(viewer_id, below=below, count=want)
    if not page.maintained:
        page = await _rebuild(info, viewer_id, below, want)
    celebrities = await _celebrities(info, viewer_id, page)
    pulled = await feeds.author_posts(celebrities, below=below, count=want)
    if page.truncated and len(page.ids) < want:
        # Past what Redis holds: below its lowest id only PostgreSQL, which covers every
        # followed author (celebrities too), knows the order; continue from there.
        floor = min(page.ids) if page.ids else below
        above = [p for p in pulled if floor is None or p > floor]
        ids = sorted(set(page.ids) | set(above), reverse=True)[:want]
        if len(ids) < want:
            async with info.context.engine.connect() as conn:
                ids += await feed_domain.home_feed_ids(
                    conn=conn, viewer_id=viewer_id, below=floor, limit=want - len(ids)
                )
    else:
        ids = sorted(set(page.ids) | set(pulled), reverse=True)[:want]

    records = await info.context.loaders.post_by_id.load_many(ids)
    shown = [r for r in records if r is not None and r.post.status == PostStatus.READY]
    gone = [i for i, r in zip(ids, records, strict=True) if r is None]
    if gone:  # deleted after fan-out: drop the stale ids from the viewer's feed
        await feeds.remove_from_feed(viewer_id, gone)
    posts = await build_posts(info, [(r.post, r.media) for r in shown[:size]])
    edges = [PostEdge(cursor=encode_cursor(p.pk, p.pk), node=p) for p in posts]
    return PostConnection(
        edges=edges,
        page_info=page_info(
            edges,
            # More to come: past this page, or ids were dropped from a full read.
            has_next=len(shown) > size or (len(ids) == want and len(shown) < len(ids)),
            has_previous=cursor is not None,
            cursor=edge_cursor,
        ),
    )


async def feed_item_added(info: Info) -> AsyncGenerator[Post, None]:
    """READY posts entering the viewer's feed, live: the viewer's own channel (fan-out
    publishes there while the viewer is present) and the channels of followed celebrities."""
    context = info.context
    viewer_id = context.require_viewer()
    celebrities = await _celebrities(info, viewer_id, None)
    channels = [user_channel(viewer_id), *(author_channel(c) for c in celebrities)]
    hub: PubSubHub = context.pubsub
    async for message in hub.listen(channels, presence_user=viewer_id):
        # Fresh loaders per event: a long-lived subscription must not serve stale rows.
        context.loaders = Loaders(context.engine, context.cache, viewer_id)
        record = await context.loaders.post_by_id.load(int(message))
        if record is None or record.post.status != PostStatus.READY:
            continue
        author_id = record.post.author_id
        # Checked per event: an unfollow or a block must stop a celebrity's channel too.
        if author_id != viewer_id and not await context.loaders.followed_by_viewer.load(author_id):
            continue
        [post] = await build_posts(info, [(record.post, record.media)])
        yield post
