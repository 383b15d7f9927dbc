"""Live updates over the process's pub/sub hub: the feedItemAdded and
notificationAdded subscriptions."""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator
from typing import TYPE_CHECKING

from domain.notifications import NotificationRecord
from infra.feedstore import FOLLOWS_CHANGED, author_channel, user_channel
from infra.pubsub import CONTROL_MESSAGES, Listener, notification_channel
from models import PostStatus
from schema.context import Info
from schema.posts import Post, build_posts

if TYPE_CHECKING:  # schema.notifications imports this module
    from schema.notifications import Notification

log = logging.getLogger(__name__)

# How often a subscription whose channels could not be re-read tries again.
RESYNC_RETRY_SECONDS = 5.0


async def _live_channels(info: Info, viewer_id: int) -> list[str]:
    """The viewer's own channel (fan-out publishes there while the viewer is present, and
    the follow graph when whom the viewer follows changes) and the channels of the
    celebrities the viewer follows, read fresh from PostgreSQL."""
    celebrities = await info.context.home_feed.celebrities(viewer_id)
    return [user_channel(viewer_id), *(author_channel(c) for c in celebrities)]


async def _resync(info: Info, listener: Listener, viewer_id: int) -> None:
    """Listen to the channels the viewer's follows call for now. If they cannot be read,
    the listener stays stale: events from celebrity channels are dropped meanwhile
    (never a post of one the viewer may have unfollowed, or been blocked by), and the
    read is tried again with the next event or after `RESYNC_RETRY_SECONDS`."""
    listener.stale = False
    try:
        await listener.update_channels(await _live_channels(info, viewer_id))
    except Exception:
        log.warning("could not re-read live channels of %d", viewer_id, exc_info=True)
        listener.stale = True


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
        own = user_channel(viewer_id)
        while True:
            event = await listener.next_event(RESYNC_RETRY_SECONDS if listener.stale else None)
            if listener.stale:  # whom the viewer follows changed, or messages were lost
                await _resync(info, listener, viewer_id)
            if event is None or event.data == FOLLOWS_CHANGED:
                continue
            channel, message = event
            # Who may reach the viewer's own channel is decided by fan-out (it walks the
            # author's followers); a celebrity's channel counts while the viewer follows
            # them, i.e. while it is among the listener's channels (an event queued just
            # before an unfollow or a block is dropped here). No query per event: one
            # process may hold a thousand subscribers of the same author.
            if channel != own and (listener.stale or channel not in listener.channels):
                continue
            record = await context.resources.recent.post(int(message))
            if record is None or record.post.status != PostStatus.READY:
                continue
            author = await context.resources.recent.user(record.post.author_id)
            if author is None:
                continue
            # Loaders are per operation, but a WebSocket connection's context outlives
            # them: nested fields of this event must not read the last event's rows.
            context.renew_loaders()
            # With its engagement when the document asks for it (one read per event).
            [post] = await build_posts(
                info, [(record.post, record.media or [])], authors={author.id: author}
            )
            yield post


async def notification_added(info: Info) -> AsyncGenerator[Notification, None]:
    """The viewer's new notifications as the worker writes them (it publishes each new
    row, whole, on the recipient's channel while they are present). Those from an actor
    a block now hides from the viewer are dropped here too (the worker checked when it
    wrote them; a block may have come since)."""
    from schema.notifications import build_notifications

    context = info.context
    viewer_id = context.require_viewer()
    async with context.pubsub.subscribe(
        [notification_channel(viewer_id)], presence_user=viewer_id
    ) as listener:
        while True:
            event = await listener.next_event()
            if event is None or event.data in CONTROL_MESSAGES:
                # Only the hub's wake-up after a lost connection: this one channel is all
                # there is to listen to, so there is nothing to re-read.
                listener.stale = False
                continue
            try:
                record = NotificationRecord.from_message(event.data)
            except (ValueError, KeyError):
                log.warning("malformed notification message on %s", event.channel)
                continue
            if record.recipient_id != viewer_id:
                continue
            # Loaders are per operation, but a WebSocket connection's context outlives
            # them: each event reads the hidden set and the rows afresh.
            context.renew_loaders()
            if await context.loaders.is_hidden(record.actor_id):
                continue
            built = await build_notifications(info, [record])
            if built:
                yield built[0]
