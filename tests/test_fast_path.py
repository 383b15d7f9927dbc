"""The lean HTTP path: compiled documents are answered without Strawberry's machinery,
everything else goes through Strawberry unchanged. (That both executors give the same
answers is tests/test_compiler.py's differential test; every feed test in
tests/test_feed.py runs through the compiled path, which this file checks.)"""

from __future__ import annotations

import orjson
from prometheus_client import REGISTRY

from tests.conftest import count_redis_round_trips, count_statements
from tests.test_feed import FEED, post_and_fan_out

FOLLOW = "mutation ($id: ID!) { follow(userId: $id) { errors { code } } }"


def executions(executor: str) -> float:
    value = REGISTRY.get_sample_value("instagraph_graphql_executions_total", {"executor": executor})
    return value or 0.0


class Served:
    """How many requests each executor served while the block ran."""

    def __enter__(self) -> Served:
        self.start = {e: executions(e) for e in ("compiled", "strawberry")}
        return self

    def __exit__(self, *exc: object) -> None:
        self.compiled = executions("compiled") - self.start["compiled"]
        self.strawberry = executions("strawberry") - self.start["strawberry"]


async def test_the_feed_is_served_compiled_and_right(feed_server, gql, factory, http):
    author, reader = await factory.user("author"), await factory.user("reader")
    await factory.follow(reader, author)
    assert (await gql(FEED, token=reader.token))["feed"]["edges"] == []  # builds the feed
    posts = [await post_and_fan_out(feed_server, factory, author, f"p{i}") for i in range(3)]
    with Served() as served:
        page = (await gql(FEED, token=reader.token, first=2))["feed"]
    assert (served.compiled, served.strawberry) == (1, 0)
    assert [e["node"]["caption"] for e in page["edges"]] == ["p2", "p1"]
    assert page["pageInfo"]["hasNextPage"] is True
    # The next page through a GET (queries only), also compiled, with the cursor.
    with Served() as served:
        response = await http.get(
            "/graphql",
            params={
                "query": FEED,
                "variables": orjson.dumps(
                    {"first": 2, "after": page["pageInfo"]["endCursor"]}
                ).decode(),
            },
            headers={"Authorization": f"Bearer {reader.token}", "Accept": "application/json"},
        )
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    rest = response.json()["data"]["feed"]
    assert [e["node"]["caption"] for e in rest["edges"]] == ["p0"]
    assert rest["pageInfo"]["hasNextPage"] is False
    assert (served.compiled, served.strawberry) == (1, 0)
    assert len(posts) == 3


async def test_a_warm_compiled_page_costs_no_sql_and_few_redis_round_trips(
    feed_server, gql, factory
):
    author, reader = await factory.user("author"), await factory.user("reader")
    await factory.follow(reader, author)
    await gql(FEED, token=reader.token)
    for i in range(5):
        await post_and_fan_out(feed_server, factory, author, f"p{i}")
    await gql(FEED, token=reader.token)  # warms the record caches
    with (
        Served() as served,
        count_statements(feed_server.engine) as sql,
        count_redis_round_trips(feed_server.redis) as trips,
    ):
        await gql(FEED, token=reader.token)
    assert served.compiled == 1
    assert sql.count == 0
    # Feed and celebrity pull in one trip (this process read this reader before), posts,
    # and authors unless this process read them in the last 2 s.
    assert trips.count <= 3


async def test_errors_on_the_compiled_path_read_as_strawberry_words_them(feed_server, gql, factory):
    reader = await factory.user("reader")
    await gql.raw(FEED)  # documents compile on their second use
    with Served() as served:
        anonymous = await gql.raw(FEED)
        bad_page = await gql.raw(FEED, token=reader.token, first=0)
        bad_cursor = await gql.raw(FEED, token=reader.token, after="nope")
    assert served.compiled == 3
    codes = []
    for body in (anonymous, bad_page, bad_cursor):
        assert body["data"] is None  # feed is non-null: the error nulls the whole result
        [error] = body["errors"]
        assert error["path"] == ["feed"]
        assert error["locations"] == [{"line": 3, "column": 3}]
        codes.append(error["extensions"]["code"])
    assert codes == ["UNAUTHENTICATED", "INVALID_INPUT", "INVALID_INPUT"]


async def test_what_the_compiler_does_not_take_goes_through_strawberry(
    feed_server, gql, factory, http
):
    fan, star = await factory.user("fan"), await factory.user("star")
    with Served() as served:
        result = await gql(FOLLOW, token=fan.token, id=star.id)  # a mutation
    assert result["follow"]["errors"] == []
    assert (served.compiled, served.strawberry) == (0, 1)
    # A mutation over GET is refused (GET is for queries only; the GraphQL-over-HTTP
    # spec's 405 with Allow: POST), in Strawberry's words.
    response = await http.get(
        "/graphql", params={"query": 'mutation { logIn(username: "x", password: "y") { token } }'}
    )
    assert response.status_code == 405
    assert response.headers["allow"] == "POST"
    assert "not allowed" in response.text
    # Malformed requests keep Strawberry's answers.
    response = await http.post(
        "/graphql", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert response.status_code == 400
    # An invalid document: Strawberry validates and words the error.
    body = await gql.raw("{ feed { nope } }", token=fan.token)
    assert body["data"] is None
    assert body["errors"][0]["extensions"]["code"] == "INVALID_INPUT"


async def test_a_document_compiles_on_its_second_use(server, gql, factory):
    # A one-off document (a new one per request, as an attacker or a client inlining
    # literals sends) never costs a compilation: Strawberry runs it.
    user = await factory.user("once")
    document = f'{{ user(username: "{user.username}") {{ username postCount }} }}'
    expected = {"user": {"username": user.username, "postCount": 0}}
    with Served() as first:
        assert await gql(document) == expected
    with Served() as second:
        assert await gql(document) == expected
    assert (first.compiled, first.strawberry) == (0, 1)
    assert (second.compiled, second.strawberry) == (1, 0)
