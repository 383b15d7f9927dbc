"""One Redis pub/sub connection per API process, shared by all its subscriptions.

Each subscriber gets a bounded queue: a slow client loses its oldest undelivered
events instead of growing memory or blocking the others. While a user has a live
subscription here, the process refreshes their presence key so that fan-out
publishes to them (and skips the many followers who are offline).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter, defaultdict
from collections.abc import AsyncGenerator, Sequence

from redis.asyncio import Redis
from redis.asyncio.client import PubSub

from infra.feedstore import PRESENCE_TTL_SECONDS, live_key

log = logging.getLogger(__name__)

QUEUE_SIZE = 100
PRESENCE_REFRESH_SECONDS = PRESENCE_TTL_SECONDS / 3


class PubSubHub:
    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        self._pubsub: PubSub | None = None
        self._queues: dict[str, set[asyncio.Queue[bytes]]] = defaultdict(set)
        self._present: Counter[int] = Counter()
        self._reader: asyncio.Task[None] | None = None
        self._presence: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()

    async def listen(
        self, channels: Sequence[str], *, presence_user: int
    ) -> AsyncGenerator[bytes, None]:
        """Messages published on any of the channels, until the caller stops iterating."""
        queue: asyncio.Queue[bytes] = asyncio.Queue(maxsize=QUEUE_SIZE)
        await self._join(channels, queue, presence_user)
        try:
            while True:
                yield await queue.get()
        finally:
            await self._leave(channels, queue, presence_user)

    async def _join(
        self, channels: Sequence[str], queue: asyncio.Queue[bytes], user_id: int
    ) -> None:
        """Subscribe and mark presence first, register last: if Redis fails on the way,
        nothing is left registered that would keep a later listener from subscribing."""
        async with self._lock:
            if self._pubsub is None:
                self._pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
            new = [c for c in channels if not self._queues.get(c)]
            if new:
                await self._pubsub.subscribe(*new)
            await self.redis.set(live_key(user_id), 1, ex=PRESENCE_TTL_SECONDS)
            for channel in channels:
                self._queues[channel].add(queue)
            self._present[user_id] += 1
            if self._reader is None or self._reader.done():
                self._reader = asyncio.create_task(self._read())
            if self._presence is None or self._presence.done():
                self._presence = asyncio.create_task(self._refresh_presence())

    async def _leave(
        self, channels: Sequence[str], queue: asyncio.Queue[bytes], user_id: int
    ) -> None:
        async with self._lock:
            unused = []
            for channel in channels:
                listeners = self._queues[channel]
                listeners.discard(queue)
                if not listeners:
                    del self._queues[channel]
                    unused.append(channel)
            self._present[user_id] -= 1
            if self._present[user_id] <= 0:
                # Presence expires by its TTL: another process may still hold the user.
                del self._present[user_id]
            if unused and self._pubsub is not None:
                await self._pubsub.unsubscribe(*unused)

    async def _read(self) -> None:
        assert self._pubsub is not None
        while self._queues:
            try:
                message = await self._pubsub.get_message(timeout=1.0)
            except Exception:  # connection lost: back off, the client reconnects on next use
                log.warning("pub/sub read failed; retrying", exc_info=True)
                await asyncio.sleep(1)
                continue
            if message is None or message.get("type") != "message":
                continue
            channel = message["channel"]
            name = channel.decode() if isinstance(channel, bytes) else str(channel)
            for queue in list(self._queues.get(name, ())):
                if queue.full():  # slow consumer: drop its oldest event, never block
                    with contextlib.suppress(asyncio.QueueEmpty):
                        queue.get_nowait()
                queue.put_nowait(message["data"])

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
