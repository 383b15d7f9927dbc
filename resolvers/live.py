"""Live updates: the feedItemAdded subscription over the process's pub/sub hub."""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator

from infra.feedstore import FOLLOWS_CHANGED, author_channel, user_channel
from models import PostStatus
from schema.context import Info
from schema.posts import Post, build_posts

log = logging.getLogger(__name__)


async def _live_channels(info: Info, viewer_id: int) -> list[str]:
    """The viewer's own channel (fan-out publishes there while the viewer is present, and
    the follow graph when whom the viewer follows changes) and the channels of the
    celebrities the viewer follows, read fresh from PostgreSQL."""
    celebrities = await info.context.home_feed.celebrities(viewer_id)
    return [user_channel(viewer_id), *(author_channel(c) for c in celebrities)]


async def feed_item_added(info: Info) -> AsyncGenerator[Post, None]:
    """READY posts entering the viewer's feed, live, including those of celebrities the
    viewer starts following while subscribed."""
    context = info.context
    viewer_id = context.require_viewer()
    # The viewer's own channel first, the celebrities' after: a follow committed while
    # the subscription starts then still reaches it (as a follows-changed message).
    async with context.pubsub.subscribe(
        [user_channel(viewer_id)], presence_user=viewer_id
    ) as listener:
        await listener.update_channels(await _live_channels(info, viewer_id))
        async for message in listener:
            if message == FOLLOWS_CHANGED:
                try:
                    await listener.update_channels(await _live_channels(info, viewer_id))
                except Exception:
                    # Keep the channels we have rather than end the client's subscription:
                    # the per-event follow check below still hides unfollowed authors.
                    log.warning("could not re-read live channels of %d", viewer_id, exc_info=True)
                continue
            # Fresh loaders per event: a long-lived subscription must not serve stale rows.
            context.renew_loaders()
            record = await context.loaders.post_by_id.load(int(message))
            if record is None or record.post.status != PostStatus.READY:
                continue
            author_id = record.post.author_id
            # Checked per event too: the safety net when a control message is lost, or a
            # post of a just-unfollowed celebrity was already queued.
            if author_id != viewer_id and not await context.loaders.followed_by_viewer.load(
                author_id
            ):
                continue
            [post] = await build_posts(info, [(record.post, record.media)])
            yield post
