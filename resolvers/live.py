"""Live updates: the feedItemAdded subscription over the process's pub/sub hub."""

from __future__ import annotations

from collections.abc import AsyncGenerator

from infra.feedstore import author_channel, user_channel
from infra.pubsub import PubSubHub
from models import PostStatus
from schema.context import Info
from schema.posts import Post, build_posts


async def feed_item_added(info: Info) -> AsyncGenerator[Post, None]:
    """READY posts entering the viewer's feed, live: the viewer's own channel (fan-out
    publishes there while the viewer is present) and the channels of followed celebrities."""
    context = info.context
    viewer_id = context.require_viewer()
    celebrities = await context.home_feed.celebrities(viewer_id)
    channels = [user_channel(viewer_id), *(author_channel(c) for c in celebrities)]
    hub: PubSubHub = context.pubsub
    async for message in hub.listen(channels, presence_user=viewer_id):
        if not message.isdigit():  # a control message (follows changed): not a post
            continue
        # Fresh loaders per event: a long-lived subscription must not serve stale rows.
        context.renew_loaders()
        record = await context.loaders.post_by_id.load(int(message))
        if record is None or record.post.status != PostStatus.READY:
            continue
        author_id = record.post.author_id
        # Checked per event: an unfollow or a block must stop a celebrity's channel too.
        if author_id != viewer_id and not await context.loaders.followed_by_viewer.load(author_id):
            continue
        [post] = await build_posts(info, [(record.post, record.media)])
        yield post
