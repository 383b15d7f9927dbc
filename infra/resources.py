"""The one resource bundle: what the API, the worker and the benchmarks share, built the
same way in each and called by the same names.

    engine     the SQLAlchemy async engine (PostgreSQL)
    redis      the application's Redis: feeds, record caches, pub/sub, locks
    jobs       the arq pool the process enqueues jobs with (`workers.jobs` helpers)
    storage    the blob store (local or S3)
    cache      record caches of users and READY posts, in `redis`
    feeds      the Redis side of the home feed (`infra.feedstore.FeedStore`)
    home_feed  the feed's rules (`domain.feed.home.HomeFeed`)
    recent     posts and users this process read a moment ago, shared by its requests
               and subscriptions (`domain.records.RecentRecords`); writers forget users
               through it
    pubsub     the process's pub/sub hub for live subscriptions (connects on first use)
    budgets    this process's leases of query cost budgets (`infra.ratelimit.LeasedBuckets`)

In the worker, arq's own `ctx["redis"]` stays arq's; our code uses `ctx["resources"]`.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

from arq.connections import ArqRedis
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine

from domain.blocks import HiddenUsers
from domain.engagement import Engagement
from domain.feed.home import HomeFeed
from domain.records import RecentRecords
from infra.cache import RecordCache
from infra.feedstore import FeedStore, create_feed_store
from infra.pubsub import PubSubHub
from infra.ratelimit import LeasedBuckets
from infra.redis import RedisHealth, create_redis, redis_health
from infra.storage import Storage, create_storage
from models import create_engine
from settings import Settings


@dataclass(frozen=True)
class Resources:
    settings: Settings
    engine: AsyncEngine
    redis: Redis
    jobs: ArqRedis
    storage: Storage
    cache: RecordCache
    feeds: FeedStore
    home_feed: HomeFeed
    recent: RecentRecords
    pubsub: PubSubHub
    hidden: HiddenUsers
    engagement: Engagement
    budgets: LeasedBuckets

    @classmethod
    def create(
        cls, settings: Settings, *, storage: Storage | None = None, worker: bool = False
    ) -> Resources:
        """Build every resource; all connect lazily, so a process starts (and reports
        itself unready) while PostgreSQL or Redis is still down. `worker`: the worker's
        engine, with its own statement timeout (`models.create_engine`)."""
        if not settings.redis_url:
            raise RuntimeError("REDIS_URL is not set (the embedded servers start first)")
        engine = create_engine(settings, role="worker" if worker else "api")
        # One breaker for both clients of the same server (docs/degradation.md).
        timeout = settings.redis_timeout_seconds
        redis = create_redis(
            settings.redis_url,
            timeout=timeout,
            health=RedisHealth(settings.redis_retry_after_seconds),
        )
        jobs = create_redis(
            settings.redis_url, timeout=timeout, health=redis_health(redis), client_class=ArqRedis
        )
        cache = RecordCache(redis, settings.cache_ttl_seconds)
        feeds = create_feed_store(redis, settings)
        recent = RecentRecords(engine, cache)
        hidden = HiddenUsers(engine, redis)
        return cls(
            settings=settings,
            engine=engine,
            redis=redis,
            jobs=jobs,
            storage=storage if storage is not None else create_storage(settings),
            cache=cache,
            feeds=feeds,
            home_feed=HomeFeed(
                engine=engine, feeds=feeds, cache=cache, settings=settings, recent=recent, jobs=jobs
            ),
            recent=recent,
            pubsub=PubSubHub(redis),
            hidden=hidden,
            engagement=Engagement(engine, redis, recent=recent, hidden=hidden),
            budgets=LeasedBuckets(),
        )

    @classmethod
    @contextlib.asynccontextmanager
    async def open(
        cls, settings: Settings, *, storage: Storage | None = None
    ) -> AsyncIterator[Resources]:
        resources = cls.create(settings, storage=storage)
        try:
            yield resources
        finally:
            await resources.close()

    async def close(self) -> None:
        """Close everything, each even if closing another failed (then re-raised)."""
        async with contextlib.AsyncExitStack() as stack:
            # Run in reverse order of registration: the pub/sub hub first, the engine last.
            stack.push_async_callback(self.engine.dispose)
            stack.push_async_callback(self.redis.aclose)
            stack.push_async_callback(self.storage.close)
            stack.push_async_callback(self.jobs.aclose)
            stack.push_async_callback(self.pubsub.close)
