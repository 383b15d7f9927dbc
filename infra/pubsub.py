"""One Redis pub/sub connection per API process, shared by all its subscriptions.

Each subscriber gets a bounded queue: a slow client loses its oldest undelivered
events instead of growing memory or blocking the others. While a user has a live
subscription here, the process refreshes their presence key so that fan-out
publishes to them (and skips the many followers who are offline).

A subscriber's channels can change while it listens (`Listener.update_channels`):
the live feed follows a celebrity's channel from the moment the viewer follows them.
Channels are reference-counted by their listeners, so a channel two listeners share
stays subscribed in Redis until the last of them lets go.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Iterable
from typing import Any, NamedTuple

from redis.asyncio import Redis
from redis.asyncio.client import PubSub

from infra.feedstore import FOLLOWS_CHANGED, PRESENCE_TTL_SECONDS, live_key

log = logging.getLogger(__name__)

QUEUE_SIZE = 100
# Messages that change what a listener should listen to (see `Listener.stale`).
CONTROL_MESSAGES = frozenset({FOLLOWS_CHANGED})


class Event(NamedTuple):
    """One message as a listener receives it: the channel it came on, and its data."""

    channel: str
    data: bytes


PRESENCE_REFRESH_SECONDS = PRESENCE_TTL_SECONDS / 3


def notification_channel(user_id: int) -> str:
    """Where a user's new notifications are announced (notificationAdded listens here).
    Its own channel, not the feed's: each subscription reads one kind of message."""
    return f"notifications:{{{user_id}}}"


# KEYS: live:{U}. ARGV: channel, message. Publish only while U has a live subscription
# somewhere: on a Redis Cluster a PUBLISH goes to every node, so offline users (most of
# them) cost one key lookup instead. Presence is the feed's (`infra.feedstore.live_key`).
PUBLISH_IF_LIVE_LUA = """
if redis.call('EXISTS', KEYS[1]) == 1 then
  return redis.call('PUBLISH', ARGV[1], ARGV[2])
end
return -1
"""


async def publish_if_live(redis: Redis, messages: Iterable[tuple[int, str, bytes]]) -> int:
    """Publish each (user id, channel, message) whose user is present (one round trip
    for all of them); returns how many were published."""
    script = redis.register_script(PUBLISH_IF_LIVE_LUA)
    pipe = redis.pipeline(transaction=False)
    count = 0
    for user_id, channel, message in messages:
        await script(keys=[live_key(user_id)], args=[channel, message], client=pipe)
        count += 1
    if not count:
        return 0
    return sum(1 for published in await pipe.execute() if int(published) >= 0)


class Listener:
    """One subscriber's registration in the hub: a bounded queue fed by its channels.

    Iterate it for the messages (bytes, in publication order per channel); call
    `update_channels` to listen to another set of channels without missing messages
    on the channels it keeps. Made by `PubSubHub.subscribe`, which unregisters it.

    `stale` says the listener's channels may be out of date: set when a control message
    (`CONTROL_MESSAGES`) arrives for it and after the hub lost its Redis connection
    (messages published meanwhile are gone; a control message is then put in its queue
    to wake it). Unlike the message itself, which a full queue may drop, the flag stays
    until the consumer clears it.
    """

    def __init__(self, hub: PubSubHub, channels: frozenset[str], user_id: int) -> None:
        self._hub = hub
        self.queue: asyncio.Queue[Event] = asyncio.Queue(maxsize=QUEUE_SIZE)
        self.channels = channels
        self.user_id = user_id
        self.active = False  # registered in the hub, between `subscribe` and its exit
        self.stale = False

    async def update_channels(self, channels: Iterable[str]) -> None:
        """Listen to exactly these channels from now on."""
        await self._hub._change(self, frozenset(channels))

    def __aiter__(self) -> Listener:
        return self

    async def __anext__(self) -> bytes:
        return (await self.queue.get()).data

    async def next_event(self, within: float | None = None) -> Event | None:
        """The next message with its channel, or None when none came `within` seconds."""
        if within is None:
            return await self.queue.get()
        try:
            async with asyncio.timeout(within):
                return await self.queue.get()
        except TimeoutError:
            return None


class PubSubHub:
    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        self._pubsub: PubSub | None = None
        self._listeners: dict[str, set[Listener]] = defaultdict(set)
        self._present: Counter[int] = Counter()
        self._reader: asyncio.Task[None] | None = None
        self._presence: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()

    @contextlib.asynccontextmanager
    async def subscribe(
        self, channels: Iterable[str], *, presence_user: int
    ) -> AsyncIterator[Listener]:
        """A listener on the channels, marking `presence_user` live, for the block's duration.

        async with hub.subscribe([user_channel(7)], presence_user=7) as listener:
            async for message in listener:
                ...
        """
        listener = Listener(self, frozenset(channels), presence_user)
        await self._join(listener)
        try:
            yield listener
        finally:
            await self._leave(listener)

    async def _join(self, listener: Listener) -> None:
        """Subscribe and mark presence first, register last: if Redis fails on the way,
        nothing is left registered that would keep a later listener from subscribing."""
        async with self._lock:
            if self._pubsub is None:
                self._pubsub = _HubPubSub(
                    self, self.redis.connection_pool, ignore_subscribe_messages=True
                )
            new = [c for c in listener.channels if not self._listeners.get(c)]
            if new:
                await self._pubsub.subscribe(*new)
            await self.redis.set(live_key(listener.user_id), 1, ex=PRESENCE_TTL_SECONDS)
            for channel in listener.channels:
                self._listeners[channel].add(listener)
            self._present[listener.user_id] += 1
            listener.active = True
            self._start_tasks()

    async def _change(self, listener: Listener, channels: frozenset[str]) -> None:
        """Move a listener to another set of channels: subscribe the new ones before
        dropping the old, so the channels it keeps never miss a message, and change
        nothing when Redis refuses the subscription (the caller may try again)."""
        async with self._lock:
            if not listener.active:  # it left: registering it again would leak its queue
                raise RuntimeError("this listener is no longer subscribed to the hub")
            added = channels - listener.channels
            removed = listener.channels - channels
            new = [c for c in added if not self._listeners.get(c)]
            if new and self._pubsub is not None:
                await self._pubsub.subscribe(*new)
            for channel in added:
                self._listeners[channel].add(listener)
            listener.channels = channels
            unused = self._release(removed, listener)
            self._start_tasks()  # the reader stops whenever no channel is listened to
            if unused and self._pubsub is not None:
                await self._pubsub.unsubscribe(*unused)

    async def _leave(self, listener: Listener) -> None:
        async with self._lock:
            listener.active = False
            unused = self._release(listener.channels, listener)
            self._present[listener.user_id] -= 1
            if self._present[listener.user_id] <= 0:
                # Presence expires by its TTL: another process may still hold the user.
                del self._present[listener.user_id]
            if unused and self._pubsub is not None:
                await self._pubsub.unsubscribe(*unused)

    def _start_tasks(self) -> None:
        """(Re)start the reader and the presence refresher, which stop when idle. They
        serve every subscriber: started in a fresh context, not in the one of the request
        that happened to start them (its request id would be on their log lines)."""
        if self._reader is None or self._reader.done():
            self._reader = asyncio.create_task(self._read(), context=contextvars.Context())
        if self._presence is None or self._presence.done():
            self._presence = asyncio.create_task(
                self._refresh_presence(), context=contextvars.Context()
            )

    def _release(self, channels: Iterable[str], listener: Listener) -> list[str]:
        """Unregister the listener from the channels; return those nobody listens to now."""
        unused = []
        for channel in channels:
            listeners = self._listeners.get(channel)
            if listeners is None:
                continue
            listeners.discard(listener)
            if not listeners:
                del self._listeners[channel]
                unused.append(channel)
        return unused

    async def _read(self) -> None:
        assert self._pubsub is not None
        while self._listeners:
            try:
                message = await self._pubsub.get_message(timeout=1.0)
            except Exception:  # connection lost: back off, the client reconnects on next use
                log.warning("pub/sub read failed; retrying", exc_info=True)
                self._lost_messages()
                await asyncio.sleep(1)
                continue
            if message is None or message.get("type") != "message":
                continue
            channel = message["channel"]
            name = channel.decode() if isinstance(channel, bytes) else str(channel)
            event = Event(name, message["data"])
            control = event.data in CONTROL_MESSAGES
            for listening in list(self._listeners.get(name, ())):
                if control:
                    listening.stale = True
                queue = listening.queue
                if queue.full():  # slow consumer: drop its oldest event, never block
                    with contextlib.suppress(asyncio.QueueEmpty):
                        queue.get_nowait()
                queue.put_nowait(event)

    def _lost_messages(self) -> None:
        """The connection to Redis dropped: whatever was published meanwhile is gone, so
        every listener must re-read what to listen to (and is woken up to do it)."""
        wake = Event("", FOLLOWS_CHANGED)
        for listening in {x for listeners in self._listeners.values() for x in listeners}:
            listening.stale = True
            if listening.queue.full():
                with contextlib.suppress(asyncio.QueueEmpty):
                    listening.queue.get_nowait()
            listening.queue.put_nowait(wake)

    async def _refresh_presence(self) -> None:
        while self._present:
            await asyncio.sleep(PRESENCE_REFRESH_SECONDS)
            users = list(self._present)
            if users:
                pipe = self.redis.pipeline(transaction=False)
                for user_id in users:
                    pipe.set(live_key(user_id), 1, ex=PRESENCE_TTL_SECONDS)
                with contextlib.suppress(Exception):
                    await pipe.execute()

    async def close(self) -> None:
        for task in (self._reader, self._presence):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if self._pubsub is not None:
            await self._pubsub.aclose()


class _HubPubSub(PubSub):
    """redis-py's PubSub, telling the hub when it reconnected: redis-py re-subscribes by
    itself after a dropped connection (its retries), without raising, and messages
    published in between are lost without a trace."""

    def __init__(self, hub: PubSubHub, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._hub = hub

    async def on_connect(self, connection: Any) -> None:
        await super().on_connect(connection)
        self._hub._lost_messages()
