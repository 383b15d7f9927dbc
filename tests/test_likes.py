"""Likes: idempotent likePost / unlikePost on posts the viewer can see, and a like count
that equals the like rows, also under a burst of concurrent likes and unlikes."""

from __future__ import annotations

import asyncio

from sqlalchemy import text

from domain import likes as like_domain
from infra.ids import to_global_id

LIKE = """
mutation ($id: ID!) {
  likePost(postId: $id) {
    post { id likeCount viewerHasLiked author { username } }
    errors { field message code }
  }
}
"""
UNLIKE = """
mutation ($id: ID!) {
  unlikePost(postId: $id) { post { id likeCount viewerHasLiked } errors { field message code } }
}
"""
LIKE_COUNT = "query ($id: ID!) { post(id: $id) { likeCount viewerHasLiked } }"
CREATE_POST = """
mutation {
  createPost(input: {media: [{contentType: "image/jpeg", byteSize: 1000}]}) {
    post { id } errors { code }
  }
}
"""
BLOCK = "mutation ($id: ID!) { block(userId: $id) { errors { code } } }"


def gid(pk: int) -> str:
    return to_global_id("Post", pk)


async def like_rows(engine, post_id: int) -> int:
    async with engine.connect() as conn:
        return int(
            await conn.scalar(text("SELECT count(*) FROM likes WHERE post_id = :p"), {"p": post_id})
        )


async def counted_likes(engine, post_id: int) -> int:
    """The like count as the sharded counters hold it (the sum of the post's shards)."""
    async with engine.connect() as conn:
        return int(
            await conn.scalar(
                text("SELECT coalesce(sum(like_count), 0) FROM post_counters WHERE post_id = :p"),
                {"p": post_id},
            )
        )


async def api_like_count(gql, post_id: int, token: str) -> int:
    count: int = (await gql(LIKE_COUNT, token=token, id=gid(post_id)))["post"]["likeCount"]
    return count


async def test_a_double_like_is_one_like_and_a_double_unlike_is_none(gql, factory, server):
    alice, bob = await factory.user("alice"), await factory.user("bob")
    post_id = await factory.ready_post(alice)
    # When bob likes alice's post twice
    for _ in range(2):
        payload = (await gql(LIKE, token=bob.token, id=gid(post_id)))["likePost"]
        assert payload == {
            "post": {
                "id": gid(post_id),
                "likeCount": 1,
                "viewerHasLiked": True,
                "author": {"username": "alice"},
            },
            "errors": [],
        }
    # Then there is one like, counted once, and liked by bob only
    assert await like_rows(server.engine, post_id) == 1
    assert await counted_likes(server.engine, post_id) == 1
    seen_by_alice = (await gql(LIKE_COUNT, token=alice.token, id=gid(post_id)))["post"]
    assert seen_by_alice == {"likeCount": 1, "viewerHasLiked": False}
    # And unliking twice leaves none, without errors
    for _ in range(2):
        payload = (await gql(UNLIKE, token=bob.token, id=gid(post_id)))["unlikePost"]
        assert payload == {
            "post": {"id": gid(post_id), "likeCount": 0, "viewerHasLiked": False},
            "errors": [],
        }
    assert await like_rows(server.engine, post_id) == 0
    assert await counted_likes(server.engine, post_id) == 0
    assert await api_like_count(gql, post_id, alice.token) == 0


async def test_an_author_may_like_their_own_post(gql, factory, server):
    alice = await factory.user("alice")
    post_id = await factory.ready_post(alice)
    payload = (await gql(LIKE, token=alice.token, id=gid(post_id)))["likePost"]
    assert payload["errors"] == []
    assert await counted_likes(server.engine, post_id) == 1


async def test_the_count_equals_the_rows_after_concurrent_likes_and_unlikes(gql, factory, server):
    alice = await factory.user("alice")
    post_id = await factory.ready_post(alice)
    fans = await factory.users(100)
    # Given 60 of 100 users already like the post (liked all at once)
    liked = await asyncio.gather(*(gql(LIKE, token=f.token, id=gid(post_id)) for f in fans[:60]))
    assert all(r["likePost"]["errors"] == [] for r in liked)
    assert await counted_likes(server.engine, post_id) == 60
    # When, at once, the first 40 unlike it, the other 60 like it (20 of them again), and
    # 20 users send their request twice
    unlikes = [gql(UNLIKE, token=f.token, id=gid(post_id)) for f in fans[:40]]
    likes = [gql(LIKE, token=f.token, id=gid(post_id)) for f in fans[40:]]
    repeats = [gql(UNLIKE, token=f.token, id=gid(post_id)) for f in fans[:10]] + [
        gql(LIKE, token=f.token, id=gid(post_id)) for f in fans[90:]
    ]
    results = await asyncio.gather(*unlikes, *likes, *repeats)
    assert all(next(iter(r.values()))["errors"] == [] for r in results)
    # Then the 60 who like it last are counted, exactly as many as the like rows
    assert await like_rows(server.engine, post_id) == 60
    assert await counted_likes(server.engine, post_id) == 60
    assert await api_like_count(gql, post_id, alice.token) == 60


async def test_a_post_the_viewer_cannot_see_is_not_found(gql, factory):
    alice, bob = await factory.user("alice"), await factory.user("bob")
    secret = await factory.user("secret", is_private=True)
    pending = (await gql(CREATE_POST, token=alice.token))["createPost"]["post"]["id"]
    private = gid(await factory.ready_post(secret))
    not_found = [{"field": "postId", "message": "Post not found.", "code": "NOT_FOUND"}]
    # Alice's PENDING post and a private account bob does not follow: as if they did not exist
    for post_id in (pending, private):
        for document, name in ((LIKE, "likePost"), (UNLIKE, "unlikePost")):
            payload = (await gql(document, token=bob.token, id=post_id))[name]
            assert payload == {"post": None, "errors": not_found}
    # An unknown post, and a malformed id
    unknown = (await gql(LIKE, token=bob.token, id=gid(123456789)))["likePost"]
    assert unknown["errors"] == not_found
    malformed = (await gql(LIKE, token=bob.token, id="not-an-id"))["likePost"]
    assert malformed["errors"][0]["code"] == "INVALID_INPUT"
    assert malformed["errors"][0]["field"] == "postId"
    # The author may like their own post in any state
    assert (await gql(LIKE, token=alice.token, id=pending))["likePost"]["errors"] == []


async def test_a_block_either_way_hides_the_post_from_likes(gql, factory, server):
    alice, bob, carol = await factory.user("alice"), await factory.user("bob"), await factory.user()
    alices_post = await factory.ready_post(alice)
    bobs_post = await factory.ready_post(bob)
    # Given alice blocked bob
    assert (await gql(BLOCK, token=alice.token, id=bob.id))["block"]["errors"] == []
    # Then neither can like the other's post, and the answer is NOT_FOUND, as for nothing
    for user, post_id in ((bob, alices_post), (alice, bobs_post)):
        payload = (await gql(LIKE, token=user.token, id=gid(post_id)))["likePost"]
        assert payload["post"] is None
        assert payload["errors"][0]["code"] == "NOT_FOUND"
        payload = (await gql(UNLIKE, token=user.token, id=gid(post_id)))["unlikePost"]
        assert payload["errors"][0]["code"] == "NOT_FOUND"
    assert await like_rows(server.engine, alices_post) == 0
    # While someone else still can
    assert (await gql(LIKE, token=carol.token, id=gid(alices_post)))["likePost"]["errors"] == []


async def test_liking_needs_a_logged_in_viewer(gql, factory):
    alice = await factory.user("alice")
    post_id = await factory.ready_post(alice)
    for document in (LIKE, UNLIKE):
        body = await gql.raw(document, id=gid(post_id))
        assert body["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"


# -- the cached engagement after likes, whatever order hooks run in, and Redis failing ---


async def likes_seen(gql, post_id: int, user) -> dict:
    """The post's likeCount and viewerHasLiked as `user` reads them."""
    post: dict = (await gql(LIKE_COUNT, token=user.token, id=gid(post_id)))["post"]
    return post


async def test_like_hooks_run_out_of_order_leave_what_the_rows_say(gql, factory, server):
    alice, bob = await factory.user("alice"), await factory.user("bob")
    post_id = await factory.ready_post(alice)
    assert await likes_seen(gql, post_id, bob) == {"likeCount": 0, "viewerHasLiked": False}
    engagement = server.resources.engagement
    # Bob likes then unlikes through two API processes, and the like's hook (run again
    # here, as the process that served the like would) comes after the unlike's.
    await gql(LIKE, token=bob.token, id=gid(post_id))
    await gql(UNLIKE, token=bob.token, id=gid(post_id))
    await engagement.like_changed(post_id, bob.pk, liked=True)
    assert await likes_seen(gql, post_id, bob) == {"likeCount": 0, "viewerHasLiked": False}
    # And the other way round: an unlike's hook arriving after a later like's.
    await gql(LIKE, token=bob.token, id=gid(post_id))
    await engagement.like_changed(post_id, bob.pk, liked=False)
    assert await likes_seen(gql, post_id, bob) == {"likeCount": 1, "viewerHasLiked": True}


async def test_a_repeated_tap_repairs_what_a_lost_hook_left_cached(gql, factory, server):
    alice, bob = await factory.user("alice"), await factory.user("bob")
    post_id = await factory.ready_post(alice)
    assert await likes_seen(gql, post_id, bob) == {"likeCount": 0, "viewerHasLiked": False}
    # A like committed by a process that died before its hook ran: the caches still
    # hold what they read before it.
    async with server.engine.begin() as conn:
        await like_domain.like(conn=conn, post_id=post_id, post_author_id=alice.pk, user_id=bob.pk)
    assert await likes_seen(gql, post_id, bob) == {"likeCount": 0, "viewerHasLiked": False}
    # Bob, seeing the heart empty, taps it again: nothing changes in PostgreSQL, and the
    # caches are repaired.
    payload = (await gql(LIKE, token=bob.token, id=gid(post_id)))["likePost"]
    assert payload["errors"] == []
    assert (payload["post"]["likeCount"], payload["post"]["viewerHasLiked"]) == (1, True)
    assert await likes_seen(gql, post_id, bob) == {"likeCount": 1, "viewerHasLiked": True}


async def test_a_like_stands_when_redis_refuses_the_engagement_read(gql, factory, server):
    alice, bob = await factory.user("alice"), await factory.user("bob")
    post_id = await factory.ready_post(alice)
    assert await likes_seen(gql, post_id, bob) == {"likeCount": 0, "viewerHasLiked": False}
    # Given Redis refuses the engagement read (ZMSCORE of the liked set) but not the rest...
    await server.redis.execute_command("ACL", "SETUSER", "default", "-zmscore")
    try:
        # ...a like is answered as done, from PostgreSQL...
        payload = (await gql(LIKE, token=bob.token, id=gid(post_id)))["likePost"]
        # ...and so is a read.
        seen = await likes_seen(gql, post_id, bob)
    finally:
        await server.redis.execute_command("ACL", "SETUSER", "default", "+@all")
    assert payload["errors"] == []
    assert (payload["post"]["likeCount"], payload["post"]["viewerHasLiked"]) == (1, True)
    assert seen == {"likeCount": 1, "viewerHasLiked": True}
    assert await like_rows(server.engine, post_id) == 1
    assert await likes_seen(gql, post_id, bob) == {"likeCount": 1, "viewerHasLiked": True}
