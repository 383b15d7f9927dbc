"""Record caches read a batch in one round trip, grouped by hash slot for Redis Cluster."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

from redis.crc import key_slot
from sqlalchemy import text

from domain.records import RecentRecords
from infra.cache import RecordCache, post_key, slot_groups, user_key
from infra.redis import HiredisPackingConnection, create_redis
from tests.conftest import count_redis_round_trips


def test_slot_groups_put_only_keys_of_one_slot_together():
    keys = [user_key(i) for i in range(200)] + ["feed:{7}", "seen:{7}"]
    groups = slot_groups(keys)
    assert sorted(i for group in groups for i in group) == list(range(len(keys)))
    for group in groups:
        assert len({key_slot(keys[i].encode()) for i in group}) == 1
    # The hash tag keeps a user's keys in one slot, hence one group.
    assert any(set(group) == {200, 201} for group in groups)


async def test_cluster_grouped_reads_match_plain_reads_in_one_round_trip(server):
    users = [SimpleNamespace(id=i, username=f"u{i}") for i in range(1, 60)]
    plain = RecordCache(server.redis, 60)
    grouped = RecordCache(server.redis, 60, cluster=True)
    await plain.put_users(users[:40])
    ids = [u.id for u in users]
    with count_redis_round_trips(server.redis) as trips:
        by_slot = await grouped.get_users(ids)
    assert trips.count == 1
    assert by_slot == await plain.get_users(ids)
    assert sorted(by_slot) == ids[:40]
    assert by_slot[7].username == "u7"
    # Posts: tombstones are told apart from misses the same way on both paths.
    await server.redis.set(post_key(5), b"-")
    assert await grouped.get_posts([5, 6]) == await plain.get_posts([5, 6]) == ({}, {5})


async def test_live_deliveries_share_one_read_of_a_post(server, factory):
    # A thousand subscribers of one process receiving the same post read it once.
    author = await factory.user("author")
    post_id = await factory.ready_post(author, "shared")
    recent = RecentRecords(server.engine, server.resources.cache, ttl=60)
    with count_redis_round_trips(server.redis) as trips:
        records = await asyncio.gather(*(recent.post(post_id) for _ in range(1000)))
        authors = await asyncio.gather(*(recent.user(author.pk) for _ in range(1000)))
    assert {r.post.caption for r in records if r is not None} == {"shared"}
    assert all(r is records[0] for r in records)
    assert {a.username for a in authors if a is not None} == {"author"}
    # A cold read: one MGET and a fill per kind (PostgreSQL behind them).
    assert trips.count <= 4
    assert await recent.post(10**15) is None  # unknown ids are None, not errors


async def test_commands_packed_by_hiredis_round_trip_every_value_kind(server):
    redis = create_redis(server.settings.redis_url)
    try:
        pool_class = redis.connection_pool.connection_class
        assert pool_class is HiredisPackingConnection
        await redis.set("k:str", "café ☕")
        await redis.set("k:bytes", b"\x00\xffbytes")
        await redis.zadd("k:z", {"a": 2**53 - 1, "b": 1.5})
        assert await redis.get("k:str") == "café ☕".encode()
        assert await redis.get("k:bytes") == b"\x00\xffbytes"
        assert await redis.zscore("k:z", "a") == 2**53 - 1
        assert await redis.zscore("k:z", "b") == 1.5
        assert await redis.config_get("maxmemory")  # a command name with a space in it
        pipe = redis.pipeline(transaction=False)
        pipe.incrby("k:n", 7)
        pipe.expire("k:n", 60)
        assert await pipe.execute() == [7, True]
    finally:
        await redis.aclose()


async def test_a_forgotten_user_is_read_again_at_once(server, factory):
    # Feed pages reuse the authors this process read a moment ago; a writer here forgets
    # them (and tombstones Redis), so its own next page shows the change.
    author = await factory.user("renamed")
    recent = RecentRecords(server.engine, server.resources.cache, ttl=60)
    before = await recent.users([author.pk])
    async with server.engine.begin() as conn:
        await conn.execute(
            text("UPDATE users SET display_name = 'New Name' WHERE id = :id"), {"id": author.pk}
        )
    assert (await recent.users([author.pk]))[author.pk] is before[author.pk]  # memo
    await recent.forget_users([author.pk])
    after = await recent.users([author.pk])
    assert after[author.pk].display_name == "New Name"
    assert await server.redis.get(f"user:{author.pk}") == b"-"  # readers elsewhere too
