"""Comments: addComment's text rules, deleteComment's permissions, Post.comments oldest
first with stable cursors, blocks hiding comments both ways, node(id) of a comment."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import text

import domain.engagement
from domain.engagement import counts_key, first_key, liked_key
from infra.ids import to_global_id
from tests.conftest import count_statements
from tests.social_factories import deliver_notifications

ADD = """
mutation ($id: ID!, $text: String!) {
  addComment(postId: $id, text: $text) {
    comment { id text createdAt author { username } }
    errors { field message code }
  }
}
"""
DELETE = """
mutation ($id: ID!) { deleteComment(id: $id) { deletedId errors { field message code } } }
"""
COMMENTS = """
query ($id: ID!, $first: Int, $after: String) {
  post(id: $id) {
    comments(first: $first, after: $after) {
      edges { cursor node { id text author { username } } }
      pageInfo { hasNextPage hasPreviousPage startCursor endCursor }
    }
  }
}
"""
NODE = """
query ($id: ID!) {
  node(id: $id) { __typename id ... on Comment { text author { username } } }
}
"""
COMMENT_COUNT = "query ($id: ID!) { post(id: $id) { commentCount } }"
CREATE_POST = """
mutation {
  createPost(input: {media: [{contentType: "image/jpeg", byteSize: 1000}]}) {
    post { id } errors { code }
  }
}
"""
BLOCK = "mutation ($id: ID!) { block(userId: $id) { errors { code } } }"
USER = "query ($name: String!) { user(username: $name) { id } }"


def gid(pk: int) -> str:
    return to_global_id("Post", pk)


async def comment(gql, user, post_id: int, body: str) -> dict:
    payload = (await gql(ADD, token=user.token, id=gid(post_id), text=body))["addComment"]
    assert payload["errors"] == [], payload
    return payload["comment"]


async def counted_comments(engine, post_id: int) -> tuple[int, int]:
    """(comment rows, the sum of the post's comment counter shards)."""
    async with engine.connect() as conn:
        rows = await conn.scalar(
            text("SELECT count(*) FROM comments WHERE post_id = :p"), {"p": post_id}
        )
        counted = await conn.scalar(
            text("SELECT coalesce(sum(comment_count), 0) FROM post_counters WHERE post_id = :p"),
            {"p": post_id},
        )
    return int(rows), int(counted)


async def named(factory, *names):
    return [await factory.user(name) for name in names]


async def comment_texts(gql, user, post_id: int, first: int = 20, after=None) -> list[str]:
    data = await gql(COMMENTS, token=user.token, id=gid(post_id), first=first, after=after)
    return [edge["node"]["text"] for edge in data["post"]["comments"]["edges"]]


async def test_comment_text_is_trimmed_and_holds_1_to_2200_characters(gql, factory, server):
    alice, bob = await factory.user("alice"), await factory.user("bob")
    post_id = await factory.ready_post(alice)
    # Refused: empty, blank, 2,201 characters after trimming
    for refused in ("", "  \n\t ", "x" * 2201, "  " + "é" * 2201 + "  "):
        payload = (await gql(ADD, token=bob.token, id=gid(post_id), text=refused))["addComment"]
        assert payload["comment"] is None
        assert [(e["field"], e["code"]) for e in payload["errors"]] == [("text", "INVALID_INPUT")]
    # A NUL character is refused before anything runs (issue 10: no text PostgreSQL
    # cannot store reaches it): a request error, nothing written.
    body = await gql.raw(ADD, token=bob.token, id=gid(post_id), text="a\x00b")
    assert body["data"] is None
    assert [e["extensions"]["code"] for e in body["errors"]] == ["INVALID_INPUT"]
    assert await counted_comments(server.engine, post_id) == (0, 0)
    # Accepted: trimmed, and 2,200 characters (code points, not bytes) after trimming
    assert (await comment(gql, bob, post_id, "  nice shot!\n"))["text"] == "nice shot!"
    longest = await comment(gql, bob, post_id, "\n" + "é" * 2200 + "  ")
    assert longest["text"] == "é" * 2200
    assert longest["author"] == {"username": "bob"}
    assert await counted_comments(server.engine, post_id) == (2, 2)


async def post_json(http, token: str | None, query: str, **variables) -> dict:
    """POST a document whose variables hold escapes a JSON client may send but a Python
    client encodes only when asked: a lone surrogate travels as the JSON "\\ud800"."""
    headers = {"content-type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    body = json.dumps({"query": query, "variables": variables})  # ASCII: escapes kept
    response = await http.post("/graphql", content=body, headers=headers)
    assert response.status_code == 200, response.text
    return response.json()


async def refused_before_running(http, token: str | None, query: str, **variables) -> None:
    """Text holding NUL or a lone surrogate is refused as INVALID_INPUT before anything
    runs (issue 10): a lone surrogate already by the body's JSON parser (400), NUL by the
    variables' check (a request error: 200 with no data in application/json mode)."""
    headers = {"content-type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    body = json.dumps({"query": query, "variables": variables})  # ASCII: escapes kept
    response = await http.post("/graphql", content=body, headers=headers)
    assert response.status_code in (200, 400), response.text
    answer = response.json()
    assert answer.get("data") is None
    assert [e["extensions"]["code"] for e in answer["errors"]] == ["INVALID_INPUT"]


async def test_text_nobody_can_see_or_store_is_invalid_input_not_a_driver_error(
    gql, http, factory, server
):
    alice, bob = await factory.user("alice"), await factory.user("bob")
    post_id = await factory.ready_post(alice)
    for refused in ("hi \ud800 there", "\udfff"):  # lone surrogates: not UTF-8
        await refused_before_running(http, bob.token, ADD, id=gid(post_id), text=refused)
    for refused in (
        " \u200b\u3000\u200b ",  # zero-width and ideographic spaces only
        "\u200c\u200d\u2060\ufeff",  # joiners, word joiner, byte order mark
    ):
        body = await post_json(http, bob.token, ADD, id=gid(post_id), text=refused)
        assert "errors" not in body, body
        payload = body["data"]["addComment"]
        assert payload["comment"] is None
        assert [(e["field"], e["code"]) for e in payload["errors"]] == [("text", "INVALID_INPUT")]
    assert await counted_comments(server.engine, post_id) == (0, 0)
    # Invisible characters among visible ones are text like any other.
    assert (await comment(gql, bob, post_id, "\u200bhi"))["text"] == "\u200bhi"


async def test_a_username_no_account_can_have_finds_no_one(http, factory):
    viewer = await factory.user("viewer")
    for name in ("ab\u0000c", "ab\ud800c"):
        await refused_before_running(http, viewer.token, USER, name=name)
    body = await post_json(http, viewer.token, USER, name="x" * 100_000)
    assert body == {"data": {"user": None}}


async def test_comments_on_posts_the_viewer_cannot_see_are_not_found(gql, factory, server):
    alice, bob = await factory.user("alice"), await factory.user("bob")
    secret = await factory.user("secret", is_private=True)
    pending = (await gql(CREATE_POST, token=alice.token))["createPost"]["post"]["id"]
    private = gid(await factory.ready_post(secret))
    unknown = gid(987654321)
    for post_id in (pending, private, unknown):
        payload = (await gql(ADD, token=bob.token, id=post_id, text="hi"))["addComment"]
        assert payload == {
            "comment": None,
            "errors": [{"field": "postId", "message": "Post not found.", "code": "NOT_FOUND"}],
        }
    # Once bob follows the private account, he may comment
    await factory.follow(bob, secret)
    assert (await gql(ADD, token=bob.token, id=private, text="hi"))["addComment"]["errors"] == []


async def test_only_the_comments_author_or_the_posts_author_deletes_it(gql, factory, server):
    alice, bob, carol = await named(factory, "alice", "bob", "carol")
    post_id = await factory.ready_post(alice)
    by_bob = await comment(gql, bob, post_id, "first")
    again = await comment(gql, bob, post_id, "second")
    # Carol can see the comment but may not delete it
    refused = (await gql(DELETE, token=carol.token, id=by_bob["id"]))["deleteComment"]
    assert refused["deletedId"] is None
    assert [(e["field"], e["code"]) for e in refused["errors"]] == [("id", "FORBIDDEN")]
    assert await counted_comments(server.engine, post_id) == (2, 2)
    # Its author may, and the post's author may delete anyone's comment on the post
    assert (await gql(DELETE, token=bob.token, id=by_bob["id"]))["deleteComment"] == {
        "deletedId": by_bob["id"],
        "errors": [],
    }
    assert (await gql(DELETE, token=alice.token, id=again["id"]))["deleteComment"] == {
        "deletedId": again["id"],
        "errors": [],
    }
    assert await counted_comments(server.engine, post_id) == (0, 0)
    # A comment deleted already is not found, and counted once only
    gone = (await gql(DELETE, token=bob.token, id=by_bob["id"]))["deleteComment"]
    assert [(e["field"], e["code"]) for e in gone["errors"]] == [("id", "NOT_FOUND")]
    assert await counted_comments(server.engine, post_id) == (0, 0)
    malformed = (await gql(DELETE, token=bob.token, id=gid(post_id)))["deleteComment"]
    assert [(e["field"], e["code"]) for e in malformed["errors"]] == [("id", "INVALID_INPUT")]


async def test_a_block_hides_comments_both_ways(gql, factory, server):
    alice, bob, carol, dave = await named(factory, "alice", "bob", "carol", "dave")
    post_id = await factory.ready_post(alice)
    by_carol = await comment(gql, carol, post_id, "from carol")
    # Given carol blocked dave
    assert (await gql(BLOCK, token=carol.token, id=dave.id))["block"]["errors"] == []
    # Then dave cannot see carol's comment, nor delete it as if it were there
    assert (await gql(NODE, token=dave.token, id=by_carol["id"]))["node"] is None
    gone = (await gql(DELETE, token=dave.token, id=by_carol["id"]))["deleteComment"]
    assert [e["code"] for e in gone["errors"]] == ["NOT_FOUND"]
    # And neither can comment on the other's posts
    carols_post = await factory.ready_post(carol)
    for user, target in ((dave, carols_post), (carol, await factory.ready_post(dave))):
        payload = (await gql(ADD, token=user.token, id=gid(target), text="hi"))["addComment"]
        assert [e["code"] for e in payload["errors"]] == ["NOT_FOUND"]
    # While bob still sees it
    seen = (await gql(NODE, token=bob.token, id=by_carol["id"]))["node"]
    assert seen == {
        "__typename": "Comment",
        "id": by_carol["id"],
        "text": "from carol",
        "author": {"username": "carol"},
    }
    # And when the post's author blocked the commenter, the post's comments are theirs to
    # see no more either (and the commenter no longer sees the post at all)
    assert (await gql(BLOCK, token=alice.token, id=carol.id))["block"]["errors"] == []
    assert (await gql(NODE, token=alice.token, id=by_carol["id"]))["node"] is None
    assert (await gql(NODE, token=carol.token, id=by_carol["id"]))["node"] is None


async def test_node_resolves_a_comment_the_viewer_can_see(gql, factory):
    alice, bob = await named(factory, "alice", "bob")
    secret = await factory.user("secret", is_private=True)
    post_id = await factory.ready_post(alice)
    made = await comment(gql, bob, post_id, "hello @alice")
    found = (await gql(NODE, id=made["id"]))["node"]  # anonymous: the post is public
    assert found == {
        "__typename": "Comment",
        "id": made["id"],
        "text": "hello @alice",
        "author": {"username": "bob"},
    }
    # A comment on a private account's post, for someone who does not follow it: null
    private_post = await factory.ready_post(secret)
    on_private = await comment(gql, secret, private_post, "just us")
    assert (await gql(NODE, token=bob.token, id=on_private["id"]))["node"] is None
    assert (await gql(NODE, token=secret.token, id=on_private["id"]))["node"]["text"] == "just us"


async def test_post_comments_page_oldest_first_with_stable_cursors(gql, factory):
    alice, bob = await named(factory, "alice", "bob")
    post_id = await factory.ready_post(alice)
    for n in range(5):
        await comment(gql, bob if n % 2 else alice, post_id, f"c{n}")
    # The first page is the oldest two
    data = await gql(COMMENTS, token=bob.token, id=gid(post_id), first=2)
    page = data["post"]["comments"]
    assert [e["node"]["text"] for e in page["edges"]] == ["c0", "c1"]
    assert page["pageInfo"]["hasNextPage"] is True
    assert page["pageInfo"]["hasPreviousPage"] is False
    assert page["pageInfo"]["endCursor"] == page["edges"][-1]["cursor"]
    # A comment added meanwhile neither shifts nor repeats a page: it comes last
    await comment(gql, alice, post_id, "c5")
    after = page["pageInfo"]["endCursor"]
    assert await comment_texts(gql, bob, post_id, first=3, after=after) == ["c2", "c3", "c4"]
    assert await comment_texts(gql, bob, post_id, first=3, after=after) == ["c2", "c3", "c4"]
    rest = await gql(COMMENTS, token=bob.token, id=gid(post_id), first=10, after=after)
    rest_page = rest["post"]["comments"]
    assert [e["node"]["text"] for e in rest_page["edges"]] == ["c2", "c3", "c4", "c5"]
    assert rest_page["pageInfo"]["hasNextPage"] is False
    assert rest_page["pageInfo"]["hasPreviousPage"] is True
    # first is 1..100, cursors are opaque and checked
    for bad in ({"first": 0}, {"first": 101}, {"after": "bogus"}):
        body = await gql.raw(COMMENTS, token=bob.token, id=gid(post_id), **bad)
        assert body["errors"][0]["extensions"]["code"] == "INVALID_INPUT"


async def test_post_comments_leave_out_authors_hidden_from_the_viewer(gql, factory):
    alice, bob, carol = await named(factory, "alice", "bob", "carol")
    post_id = await factory.ready_post(alice)
    await comment(gql, bob, post_id, "from bob")
    await comment(gql, carol, post_id, "from carol")
    await comment(gql, alice, post_id, "from alice")
    assert (await gql(BLOCK, token=bob.token, id=carol.id))["block"]["errors"] == []
    # Bob and carol no longer see each other's comments; alice sees both
    assert await comment_texts(gql, bob, post_id) == ["from bob", "from alice"]
    assert await comment_texts(gql, carol, post_id) == ["from carol", "from alice"]
    assert await comment_texts(gql, alice, post_id) == ["from bob", "from carol", "from alice"]
    # A page stays full: one comment hidden does not make a short page
    assert await comment_texts(gql, bob, post_id, first=2) == ["from bob", "from alice"]


async def test_a_page_of_comments_costs_the_same_statements_whatever_its_size(gql, factory, server):
    alice = await factory.user("alice")
    post_id = await factory.ready_post(alice)
    for commenter in await factory.users(20):
        await comment(gql, commenter, post_id, f"by {commenter.username}")
    # Cold: the post's engagement (counts, first comments, the viewer's likes: at most 3),
    # the post and its media when not cached, the 20 authors in one batch, and the page
    with count_statements(server.engine) as cold:
        assert len(await comment_texts(gql, alice, post_id, first=20)) == 20
    assert cold.count <= 7, cold.statements
    # Warm (records and engagement cached in Redis): the page itself only
    with count_statements(server.engine) as warm:
        assert len(await comment_texts(gql, alice, post_id, first=20)) == 20
    assert warm.count <= 1, warm.statements


async def test_comment_count_and_first_comments_follow_adds_and_deletes(gql, factory, server):
    alice, bob = await named(factory, "alice", "bob")
    post_id = await factory.ready_post(alice)
    # Read once first, so that what a page carries of the post is cached before it changes
    assert await comment_texts(gql, alice, post_id, first=2) == []
    made = [await comment(gql, bob, post_id, f"c{n}") for n in range(3)]
    assert await comment_texts(gql, alice, post_id, first=2) == ["c0", "c1"]
    await gql(DELETE, token=bob.token, id=made[0]["id"])
    data = await gql(COMMENT_COUNT, token=bob.token, id=gid(post_id))
    assert data["post"]["commentCount"] == 2
    assert await counted_comments(server.engine, post_id) == (2, 2)
    assert await comment_texts(gql, alice, post_id, first=2) == ["c1", "c2"]


NOTIFICATIONS = """
query { notifications(first: 20) { edges { node { kind actor { username } comment { text } } } } }
"""


async def notified(gql, user) -> list[tuple[str, str, str | None]]:
    edges = (await gql(NOTIFICATIONS, token=user.token))["notifications"]["edges"]
    return sorted(
        (
            e["node"]["kind"],
            e["node"]["actor"]["username"],
            (e["node"]["comment"] or {}).get("text"),
        )
        for e in edges
    )


async def test_a_mentioned_post_author_gets_the_comment_and_the_mention(gql, factory, feed_server):
    alice, bob, carol, dave = await named(factory, "alice", "bob", "carol", "dave")
    post_id = await factory.ready_post(alice)
    # Given dave blocked bob
    assert (await gql(BLOCK, token=dave.token, id=bob.id))["block"]["errors"] == []
    # When bob comments on alice's post naming alice, carol, dave, himself and nobody
    said = "@alice @carol @dave @bob @nobody look"
    await comment(gql, bob, post_id, said)
    await deliver_notifications(feed_server)
    # Then alice hears of the comment and of the mention, once each; carol of the mention;
    # dave (a block stands between them) and bob himself hear nothing
    assert await notified(gql, alice) == [("COMMENT", "bob", said), ("MENTION", "bob", said)]
    assert await notified(gql, carol) == [("MENTION", "bob", said)]
    assert await notified(gql, dave) == []
    assert await notified(gql, bob) == []


async def test_a_read_stands_when_redis_refuses_to_cache_what_it_read(gql, factory, server):
    alice, bob = await named(factory, "alice", "bob")
    post_id = await factory.ready_post(alice)
    await comment(gql, bob, post_id, "first!")
    read = "query ($id: ID!) { post(id: $id) { commentCount comments(first: 2) { edges { node { text } } } } }"
    expected = {"post": {"commentCount": 1, "comments": {"edges": [{"node": {"text": "first!"}}]}}}
    assert await gql(read, token=bob.token, id=gid(post_id)) == expected
    # Given the post's engagement no longer cached (expired), and Redis out of memory:
    # it refuses every write, the caching of what a read found included.
    redis = server.redis
    await redis.delete(counts_key(post_id), first_key(post_id), liked_key(bob.pk))
    server.resources.engagement.clear()
    policy = (await redis.config_get("maxmemory-policy"))["maxmemory-policy"]
    await redis.config_set("maxmemory-policy", "noeviction")
    await redis.config_set("maxmemory", "1")
    try:
        body = await gql.raw(read, token=bob.token, id=gid(post_id))
    finally:
        await redis.config_set("maxmemory", "0")
        await redis.config_set("maxmemory-policy", policy)
    # Then the read answers what it read, and nothing was cached.
    assert body == {"data": expected}
    assert await redis.get(counts_key(post_id)) is None


async def test_the_memo_of_first_comments_stays_bounded_however_many_posts_are_read(
    gql, factory, server, monkeypatch: pytest.MonkeyPatch
):
    # Each API process memoizes what every viewer sees of a post (counts, first
    # comments) for a moment; smaller bounds here stand for the real ones.
    monkeypatch.setattr(domain.engagement, "MEMO_TTL_SECONDS", 3600.0)
    monkeypatch.setattr(domain.engagement, "MEMO_MAX", 4)
    monkeypatch.setattr(domain.engagement, "MEMO_MAX_TEXT", 2_500)
    engagement = server.resources.engagement
    alice, bob = await named(factory, "alice", "bob")
    posts = [await factory.ready_post(alice) for _ in range(8)]
    for index, post_id in enumerate(posts):
        await comment(gql, bob, post_id, f"{index}" + "x" * 999)
        if index % 2:
            await comment(gql, bob, post_id, "short")
    engagement.clear()
    # Read in turn, every post's comments are right, and the memo keeps within both
    # bounds: the posts read last, up to MEMO_MAX, as much of their text as fits.
    for index, post_id in enumerate(posts):
        texts = await comment_texts(gql, alice, post_id, first=2)
        assert [t[:1] for t in texts] == ([str(index), "s"] if index % 2 else [str(index)])
        size = engagement.memo_size()
        assert size.entries <= 4
        assert size.text <= 2_500
    assert engagement.memo_size().entries >= 2  # it still memoizes
    # Entries past their moment go at the next read, whatever the room left (here each
    # expires at once: only the last read's stays).
    monkeypatch.setattr(domain.engagement, "MEMO_TTL_SECONDS", 0.0)
    engagement.clear()
    for post_id in posts[:4:2]:
        assert len(await comment_texts(gql, alice, post_id, first=2)) == 1
        assert engagement.memo_size().entries == 1


async def test_a_later_field_of_the_same_document_sees_a_comment_deleted_before_it(gql, factory):
    alice, bob = await named(factory, "alice", "bob")
    post_id = await factory.ready_post(alice)
    # More comments than a post carries, so that `comments(first: 5)` reads a page.
    made = [await comment(gql, bob, post_id, f"c{n}") for n in range(6)]
    document = """
    mutation ($post: ID!, $comment: ID!) {
      a: likePost(postId: $post) { post { comments(first: 5) { edges { node { text } } } } }
      d: deleteComment(id: $comment) { deletedId errors { code } }
      b: likePost(postId: $post) { post { comments(first: 5) { edges { node { text } } } } }
    }
    """
    data = await gql(document, token=alice.token, post=gid(post_id), comment=made[1]["id"])

    def texts(field: str) -> list[str]:
        return [e["node"]["text"] for e in data[field]["post"]["comments"]["edges"]]

    assert data["d"] == {"deletedId": made[1]["id"], "errors": []}
    assert texts("a") == ["c0", "c1", "c2", "c3", "c4"]
    assert texts("b") == ["c0", "c2", "c3", "c4", "c5"]
