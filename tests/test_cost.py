"""Query cost budgets (issue 10, point 2; docs/limits.md): the cost model, the maximum
(QUERY_TOO_COMPLEX before anything runs), the per-user budget with `extensions.cost`,
and RATE_LIMITED with `retryAfter` once it is spent, on both executors and over the
WebSocket.

The limited server uses Redis DB 8 and small budgets from its settings.
"""

from __future__ import annotations

import asyncio
import gc
import json
import tracemalloc
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import websockets
from graphql import (
    GraphQLInterfaceType,
    GraphQLNamedType,
    GraphQLObjectType,
    get_named_type,
    get_nullable_type,
    is_list_type,
)
from prometheus_client import REGISTRY
from websockets.typing import Subprotocol

from domain import stories as story_domain
from domain.stories import StoryMedia, StoryRecord
from infra.ratelimit import LeasedBuckets, Rate, take
from models import PostStatus
from schema.cost import LIST_SIZES
from schema.root import create_schema
from settings import Settings
from tests.conftest import (
    Server,
    clean_state,
    count_redis_round_trips,
    count_statements,
    serve,
    with_redis_db,
)

FEED = """
query ($first: Int) {
  feed(first: $first) { edges { node { id caption comments(first: 2) { edges { node { id } } } } } }
}
"""
# Three nested connections of 100: 1 + 100 + 10,000 fetches -> 101 points.
NESTED = """
query {
  viewer { followers(first: 100) { edges { node {
    followers(first: 100) { edges { node { followers(first: 100) { edges { node { id } } } } } }
  } } } }
}
"""
# 15 feeds of 100 posts with 100 comments each: 15 x 101 fetches -> 15 points; compiles.
WIDE_FEED = (
    "query { "
    + " ".join(
        f"f{n}: feed(first: 100) {{ edges {{ node {{ id comments(first: 100) "
        "{ edges { node { id } } } } } }"
        for n in range(15)
    )
    + " }"
)
VIEWER = "query { viewer { username } }"
FOLLOW = "mutation ($id: ID!) { follow(userId: $id) { errors { code } } }"
SUBSCRIBE = "subscription { feedItemAdded { id } }"


def costs(document: str, variables: dict[str, Any] | None = None, **settings: Any) -> int:
    schema = create_schema(replace(Settings(), **settings))
    assert schema.costs is not None
    function = schema.costs.cost_function(document, None)
    assert function is not None
    return function.of(variables)


def story(author_id: int, n: int) -> StoryRecord:
    """A READY story record, `n` minutes old, of `author_id` (id author * 1000 + n)."""
    at = datetime(2026, 1, 1, tzinfo=UTC) + timedelta(minutes=n)
    media = StoryMedia(
        id=author_id * 1000 + n,
        kind="PHOTO",
        width=1,
        height=1,
        placeholder=None,
        duration_seconds=None,
        rendition_keys={},
        video_key=None,
    )
    return StoryRecord(
        id=author_id * 1000 + n,
        author_id=author_id,
        status=PostStatus.READY,
        failure_reason=None,
        created_at=at,
        ready_at=at,
        expires_at=at + timedelta(days=1),
        seen=False,
        media=media,
    )


def executions(executor: str) -> float:
    value = REGISTRY.get_sample_value("instagraph_graphql_executions_total", {"executor": executor})
    return value or 0.0


# The model


def test_connections_cost_their_fetches_over_100_multiplied_through_nesting() -> None:
    assert costs(VIEWER) == 1  # no connection: the minimum
    assert costs(NESTED) == 101  # (1 + 100 + 100 * 100) / 100, rounded
    two = "query { viewer { followers(first: 100) { edges { node { following(first: 60) "
    two += "{ edges { node { id } } } } } } } }"
    assert costs(two) == 1  # 1 + 100 = 101 fetches: rounded to 1, as GitHub's example
    deeper = "{ edges { node { followers(first: 10) { edges { node { id } } } } } }"
    three = two.replace("{ edges { node { id } } }", deeper, 1)
    assert costs(three) == 61  # 1 + 100 + 100 * 60 = 6,101 fetches -> 61


def test_variables_defaults_and_fragments_count() -> None:
    nested = """
    query ($a: Int, $b: Int = 50) {
      viewer { followers(first: $a) { edges { node { ...F } } } }
    }
    fragment F on User { followers(first: $b) { edges { node { followers { edges { node { id } } } } } } }
    """
    # $a absent: the field's default (20); $b its default (50); the last `first` absent: 20.
    assert costs(nested) == round((1 + 20 + 20 * 50) / 100)
    assert costs(nested, {"a": 100, "b": 100}) == round((1 + 100 + 100 * 100) / 100)
    # null is the field's default (20), not the variable's; a value coercion refuses
    # costs the largest page (and one more: 101).
    assert costs(nested, {"a": None, "b": None}) == round((1 + 20 + 20 * 20) / 100)
    assert costs(nested, {"a": 20, "b": "x"}) == round((1 + 20 + 20 * 101) / 100)


# Three nested pages of $n (default 1).
NESTED_VAR = """
query ($n: Int = 1) { viewer { followers(first: $n) { edges { node {
  followers(first: $n) { edges { node { followers(first: $n) { edges { node { id } } } } } }
} } } } }
"""


def test_variables_cost_as_graphql_core_coerces_them() -> None:
    # graphql-core coerces 100.0 to the Int 100: it costs what 100 costs.
    assert costs(NESTED_VAR, {"n": 100.0}) == costs(NESTED_VAR, {"n": 100}) == 101
    assert costs(NESTED_VAR) == 1  # absent: the variable's default (1)
    assert costs(NESTED_VAR, {"n": None}) == round((1 + 20 + 400) / 100)  # the field's 20
    for refused in ("100", 100.5, True, [100], {"n": 1}):
        assert costs(NESTED_VAR, {"n": refused}) == round((1 + 101 + 101 * 101) / 100)


def test_huge_pages_count_as_one_more_than_the_largest() -> None:
    literal = NESTED_VAR.replace("($n: Int = 1)", "").replace("$n", "100000000000000000000")
    assert costs(literal) == costs(NESTED_VAR, {"n": 10**30}) == round((1 + 101 + 10201) / 100)


def test_lists_without_first_multiply_by_their_domain_bound() -> None:
    nested = (
        "{ edges { node { followers(first: 100) { edges { node { followers(first: 100) "
        "{ edges { node { id } } } } } } } } }"
    )
    tray = "query { storiesTray { author { followers(first: 100) " + nested + " } } }"
    # 1 (the tray) + 100 reels x (1 + 100 + 100 x 100) followers pages.
    assert story_domain.TRAY_MAX_REELS == 100
    assert costs(tray) == round((1 + 100 * (1 + 100 + 10_000)) / 100)
    stories = "query { storiesTray { stories { author { followers(first: 10) { edges { node { id } } } } } } }"
    # 1 + 100 reels x 100 stories x one page each.
    assert costs(stories) == round((1 + 100 * 100) / 100)
    read = (
        "mutation { markNotificationsRead { edges { node { actor { followers(first: 100) "
        "{ edges { node { followers(first: 100) { edges { node { id } } } } } } } } } } }"
    )
    # 5 + (1 (the page) + 20 notifications x (1 + 100)) / 100.
    assert costs(read) == 5 + round((1 + 20 * 101) / 100)
    # A connection's edges are counted by its `first`, not again.
    assert costs("query { feed(first: 100) { edges { node { id } } } }") == 1


def test_every_list_that_can_hold_pages_has_a_bound() -> None:
    """Every list field without `first` (and connection-typed field without it) whose
    items can reach a paged field is in LIST_SIZES: a new one must say its bound."""
    schema = create_schema(Settings())._schema
    reaches: dict[str, bool] = {}

    def holds_pages(named: GraphQLNamedType, seen: frozenset[str] = frozenset()) -> bool:
        if not isinstance(named, GraphQLObjectType | GraphQLInterfaceType):
            return False
        if named.name in seen:
            return False
        if named.name not in reaches:
            reaches[named.name] = any(
                "first" in field.args
                or holds_pages(get_named_type(field.type), seen | {named.name})
                for field in named.fields.values()
            )
        return reaches[named.name]

    unbounded = []
    for named in schema.type_map.values():
        if named.name.startswith("__") or not isinstance(named, GraphQLObjectType):
            continue
        for name, field in named.fields.items():
            item = get_named_type(field.type)
            listed = is_list_type(get_nullable_type(field.type)) or item.name.endswith("Connection")
            edges = name == "edges" and named.name.endswith("Connection")
            if listed and not edges and "first" not in field.args and holds_pages(item):
                if (named.name, name) not in LIST_SIZES:
                    unbounded.append(f"{named.name}.{name}")
    assert unbounded == []
    assert {("Query", "storiesTray"), ("StoryReel", "stories")} <= set(LIST_SIZES)


def test_the_tray_is_bounded_by_the_domain() -> None:
    viewer = 1
    records = [
        story(author, n) for author in range(2, 2 + 130) for n in range(3 if author > 2 else 120)
    ]
    reels = story_domain.order_reels(records, viewer)
    assert len(reels) == story_domain.TRAY_MAX_REELS
    [big] = [reel for reel in reels if reel.author_id == 2]
    assert len(big.stories) == story_domain.REEL_MAX_STORIES
    assert big.stories[-1].id == 2 * 1000 + 119  # the newest are kept


def test_mutations_cost_a_fixed_price_per_root_field_plus_their_selection() -> None:
    assert costs(FOLLOW) == 5
    assert costs(FOLLOW, mutation_cost=7) == 7
    aliased = (
        "mutation ($id: ID!) { "
        + " ".join(f"f{n}: follow(userId: $id) {{ errors {{ code }} }}" for n in range(15))
        + " }"
    )
    assert costs(aliased) == 15 * 5
    spread = (
        "mutation ($id: ID!) { ...F unfollow(userId: $id) { errors { code } } __typename }"
        " fragment F on Mutation { follow(userId: $id) { errors { code } } }"
    )
    assert costs(spread) == 2 * 5
    with_page = (
        "mutation ($id: ID!) { follow(userId: $id) { user { followers(first: 100) "
        "{ edges { node { followers(first: 100) { edges { node { id } } } } } } } } }"
    )
    assert costs(with_page) == 5 + 1  # (1 + 100) fetches / 100 -> 1, plus 5


# The server


@pytest.fixture(scope="module")
async def limited_instance(settings: Settings) -> AsyncIterator[Server]:
    """The app with a budget of 10 points an hour charged exactly (no lease), a maximum
    cost of 10, and `extensions.cost` on."""
    base = replace(
        settings,
        redis_url=with_redis_db(settings.redis_url, 8),
        media_root=settings.media_root / "cost-server",
        max_query_cost=10,
        max_subscription_cost=2,
        query_budget_points=10,
        query_budget_lease_points=1,
        query_cost_extension=True,
    )
    async with serve(base) as running:
        yield running


@pytest.fixture(scope="module")
async def leased_instance(settings: Settings) -> AsyncIterator[Server]:
    """The app with a budget of 30 points an hour and the default lease (100 points):
    a process leases the whole budget at once. Redis DB 10."""
    base = replace(
        settings,
        redis_url=with_redis_db(settings.redis_url, 10),
        media_root=settings.media_root / "cost-leased-server",
        query_budget_points=30,
        query_budget_lease_points=Settings.query_budget_lease_points,
        query_cost_extension=True,
    )
    async with serve(base) as running:
        yield running


@pytest.fixture
async def leased(leased_instance: Server) -> Server:
    await clean_state(leased_instance)
    return leased_instance


@pytest.fixture
async def limited(limited_instance: Server) -> Server:
    await clean_state(limited_instance)
    return limited_instance


@pytest.fixture
async def client(limited: Server) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=limited.base_url, timeout=30) as http:
        yield http


async def post(
    http: httpx.AsyncClient, query: str, token: str | None = None, **variables: Any
) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return await http.post(
        "/graphql", json={"query": query, "variables": variables}, headers=headers
    )


async def test_too_complex_is_refused_before_anything_runs(limited, client, factory):
    reader = await factory.user("reader")
    with count_statements(limited.engine) as sql:
        response = await post(client, NESTED, reader.token)
    assert response.status_code == 200  # a request error: 200 in JSON mode, as the others
    [error] = response.json()["errors"]
    assert error["extensions"] == {
        "code": "QUERY_TOO_COMPLEX",
        "requestedQueryCost": 101,
        "maximumQueryCost": 10,
    }
    assert "data" not in response.json() or response.json()["data"] is None
    assert sql.count == 0  # not even the viewer was read
    # The spec's media type: 400 and no data; and nothing was charged.
    spec = await client.post(
        "/graphql",
        json={"query": NESTED},
        headers={
            "Authorization": f"Bearer {reader.token}",
            "Accept": "application/graphql-response+json",
        },
    )
    assert spec.status_code == 400 and "data" not in spec.json()
    ok = (await post(client, VIEWER, reader.token)).json()
    assert ok["extensions"]["cost"]["remaining"] == 9


async def test_a_float_page_size_costs_what_graphql_core_runs(limited, client, factory):
    reader = await factory.user("reader")
    for _ in range(3):  # Strawberry's path, then the compiled one
        body = (await post(client, NESTED_VAR, reader.token, n=100.0)).json()
        [error] = body["errors"]
        assert error["extensions"]["code"] == "QUERY_TOO_COMPLEX"
        assert error["extensions"]["requestedQueryCost"] == 101


async def test_too_complex_on_the_compiled_path_too(limited, client, factory):
    reader = await factory.user("reader")
    answers = []
    before = executions("strawberry")
    for _ in range(3):  # documents compile on their second use
        with count_statements(limited.engine) as sql:
            answers.append((await post(client, WIDE_FEED, reader.token)).json())
        assert sql.count == 0
    assert executions("strawberry") - before == 1  # the first only; then the fast path
    for body in answers:
        [error] = body["errors"]
        assert error["extensions"]["code"] == "QUERY_TOO_COMPLEX"
        assert error["extensions"]["requestedQueryCost"] == 15
    assert answers[0] == answers[1] == answers[2]


async def test_the_budget_is_charged_and_reported_on_both_executors(limited, client, factory):
    reader = await factory.user("reader")
    strawberry_before, compiled_before = executions("strawberry"), executions("compiled")
    seen = []
    for _ in range(3):
        body = (await post(client, FEED, reader.token, first=5)).json()
        assert body["data"]["feed"]["edges"] == []
        seen.append(body["extensions"]["cost"])
    # First through Strawberry, then compiled: charged alike.
    assert executions("strawberry") - strawberry_before == 1
    assert executions("compiled") - compiled_before == 2
    assert [cost["remaining"] for cost in seen] == [9, 8, 7]
    for cost in seen:
        assert cost["requestedQueryCost"] == 1 and cost["limit"] == 10
        assert cost["resetAt"].endswith("Z")
    # A mutation costs 5 and says so; another user's budget is untouched.
    other = await factory.user("other")
    follow = (await post(client, FOLLOW, reader.token, id=other.id)).json()
    assert follow["extensions"]["cost"] == {**follow["extensions"]["cost"], "remaining": 2}
    assert follow["extensions"]["cost"]["requestedQueryCost"] == 5
    fresh = (await post(client, VIEWER, other.token)).json()["extensions"]["cost"]
    assert fresh["remaining"] == 9


async def test_a_spent_budget_is_rate_limited_with_retry_after(limited, client, factory):
    reader = await factory.user("reader")
    for _ in range(2):
        assert (await post(client, FOLLOW, reader.token, id=reader.id)).status_code == 200
    # 10 points spent. Strawberry's path (a new document), then the compiled path.
    for document in (VIEWER, FEED, FEED, FEED):
        with count_statements(limited.engine) as sql:
            response = await post(client, document, reader.token, first=5)
        assert response.status_code == 429, response.text
        retry_after = int(response.headers["Retry-After"])
        body = response.json()
        assert "data" not in body
        [error] = body["errors"]
        assert error["extensions"]["code"] == "RATE_LIMITED"
        assert error["extensions"]["retryAfter"] == retry_after
        assert 0 < retry_after <= 3600 // 10  # one point comes back every 360 s
        assert body["extensions"]["cost"]["remaining"] == 0
        assert sql.count == 0
    # Anonymous requests have their own budget, by client address.
    anonymous = await post(client, VIEWER)
    assert anonymous.status_code == 200
    assert anonymous.json()["extensions"]["cost"]["remaining"] == 9


async def test_a_subscription_is_charged_when_it_starts(limited, client, factory):
    reader = await factory.user("reader")
    for _ in range(2):
        await post(client, FOLLOW, reader.token, id=reader.id)  # 10 points spent
    message = await subscribe(limited, reader.token, SUBSCRIBE)
    errors = message["payload"] if message["type"] == "error" else message["payload"]["errors"]
    assert errors[0]["extensions"]["code"] == "RATE_LIMITED"
    assert errors[0]["extensions"]["retryAfter"] > 0


async def subscribe(server: Server, token: str, query: str) -> dict[str, Any]:
    """The first message a subscription gets (its first event, or its error)."""
    url = server.base_url.replace("http://", "ws://") + "/graphql"
    async with websockets.connect(url, subprotocols=[Subprotocol("graphql-transport-ws")]) as ws:
        init = {"authorization": f"Bearer {token}"}
        await ws.send(json.dumps({"type": "connection_init", "payload": init}))
        async with asyncio.timeout(30):
            assert json.loads(await ws.recv())["type"] == "connection_ack"
            await ws.send(json.dumps({"id": "1", "type": "subscribe", "payload": {"query": query}}))
            message: dict[str, Any] = json.loads(await ws.recv())
    assert message["id"] == "1"
    return message


async def test_a_subscription_costing_more_per_event_than_its_maximum_is_refused(
    limited, client, factory
):
    reader = await factory.user("reader")
    # 1 + 100 x 5 = 501 fetches per event: 5 points, under MAX_QUERY_COST (10) but over
    # MAX_SUBSCRIPTION_COST (2 here).
    inner = " ".join(f"f{n}: followers(first: 1) {{ edges {{ node {{ id }} }} }}" for n in range(5))
    costly = (
        "subscription { feedItemAdded { author { followers(first: 100) { edges { node { "
        + inner
        + " } } } } } }"
    )
    message = await subscribe(limited, reader.token, costly)
    [error] = message["payload"] if message["type"] == "error" else message["payload"]["errors"]
    assert error["extensions"] == {
        "code": "QUERY_TOO_COMPLEX",
        "requestedQueryCost": 5,
        "maximumQueryCost": 2,
    }
    # Nothing was charged.
    ok = (await post(client, VIEWER, reader.token)).json()
    assert ok["extensions"]["cost"]["remaining"] == 9


# Leases: a warm budget costs no Redis round trip

# 1 + 40 + 40 x 100 fetches: 40 points, more than the leased server's whole budget (30).
FORTY = """
query { viewer { followers(first: 40) { edges { node {
  followers(first: 100) { edges { node { followers(first: 1) { edges { node { id } } } } } }
} } } } }
"""


async def test_with_the_default_lease_a_refused_costly_query_leaves_cheap_ones(leased, factory):
    reader = await factory.user("reader")
    async with httpx.AsyncClient(base_url=leased.base_url, timeout=30) as http:
        first = await post(http, VIEWER, reader.token)
        assert first.json()["extensions"]["cost"]["remaining"] == 29  # 30 leased, 1 spent
        refused = await post(http, FORTY, reader.token)
        assert refused.status_code == 429
        # The 29 points this process holds still serve cheaper requests, at once.
        for expected in (28, 27):
            cheap = await post(http, VIEWER, reader.token)
            assert cheap.status_code == 200, cheap.text
            assert cheap.json()["extensions"]["cost"]["remaining"] == expected
        assert (await post(http, FORTY, reader.token)).status_code == 429


async def test_with_the_default_lease_a_burst_shares_one_lease(leased, factory):
    reader = await factory.user("reader")
    async with httpx.AsyncClient(base_url=leased.base_url, timeout=30) as http:
        burst = await asyncio.gather(*(post(http, VIEWER, reader.token) for _ in range(12)))
    assert [response.status_code for response in burst] == [200] * 12
    remaining = sorted(r.json()["extensions"]["cost"]["remaining"] for r in burst)
    assert remaining == list(range(18, 30))
    # One lease of the whole budget was taken, once.
    key = f"limit:budget:user:{reader.pk}"
    assert (await take(leased.redis, key, Rate(30, 3600), 0)).remaining == 0


async def test_concurrent_misses_wait_for_one_lease(server):
    redis = server.redis
    buckets = LeasedBuckets()
    rate = Rate(50, 3600)
    with count_redis_round_trips(redis) as trips:
        burst = await asyncio.gather(
            *(buckets.spend(redis, "limit:budget:burst", rate, 1, lease=20) for _ in range(20))
        )
    assert all(verdict.allowed for verdict in burst)
    assert trips.count == 1  # the first took a lease of 20; the others waited and spent it
    assert (await take(redis, "limit:budget:burst", rate, 0)).remaining == 30
    # Costs larger than a lease: never past the budget, whatever the interleaving.
    small = Rate(10, 3600)
    spent = await asyncio.gather(
        *(buckets.spend(redis, "limit:budget:big", small, 3, lease=5) for _ in range(6))
    )
    assert sum(verdict.allowed for verdict in spent) == 3  # 9 of 10 points
    assert (await take(redis, "limit:budget:big", small, 0)).remaining == 0


async def test_a_refusal_blocks_only_requests_costing_as_much(server):
    redis = server.redis
    buckets = LeasedBuckets()
    rate = Rate(30, 3600)
    assert (await buckets.spend(redis, "limit:budget:mixed", rate, 1, lease=100)).granted == 1
    refused = await buckets.spend(redis, "limit:budget:mixed", rate, 40, lease=100)
    assert not refused.allowed and refused.remaining == 29
    with count_redis_round_trips(redis) as trips:
        cheap = await buckets.spend(redis, "limit:budget:mixed", rate, 5, lease=100)
        again = await buckets.spend(redis, "limit:budget:mixed", rate, 40, lease=100)
    assert cheap.allowed and cheap.remaining == 24
    assert not again.allowed and again.retry_after > 0
    assert trips.count == 0  # the lease served one; the remembered refusal the other


async def test_huge_costs_reach_redis_clamped(server):
    rate = Rate(10, 3600)
    refused = await take(server.redis, "limit:budget:huge", rate, 10**30)
    assert not refused.allowed
    # Refused for what more than the whole bucket costs: one interval past a full one.
    assert 0 < refused.retry_after <= rate.interval + 1
    assert (await take(server.redis, "limit:budget:huge", rate, 10)).allowed


def test_the_cost_cache_keeps_no_document_text() -> None:
    schema = create_schema(Settings())
    assert schema.costs is not None
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for n in range(20):  # 20 documents of 200 kB: 4 MB if they were kept
            document = f"query Q{n} {{ viewer {{ username }} }}" + " " * 200_000
            function = schema.costs.cost_function(document, None)
            assert function is not None and function.of(None) == 1
            del document
        gc.collect()
        kept = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert kept < 1_000_000


async def test_leased_budgets_charge_locally_and_stay_within_the_budget(server):
    redis = server.redis
    buckets = LeasedBuckets()
    rate = Rate(50, 3600)
    with count_redis_round_trips(redis) as trips:
        first = await buckets.spend(redis, "limit:budget:test", rate, 1, lease=20)
        rest = [
            await buckets.spend(redis, "limit:budget:test", rate, 1, lease=20) for _ in range(19)
        ]
    assert trips.count == 1  # one lease of 20 served all twenty
    assert first.allowed and all(v.allowed for v in rest)
    assert rest[-1].remaining == 30
    # Redis agrees: 20 points are gone.
    assert (await take(redis, "limit:budget:test", rate, 0)).remaining == 30
    # Spending it all, across leases, never goes past the budget.
    allowed = 0
    for _ in range(60):
        allowed += (await buckets.spend(redis, "limit:budget:test", rate, 1, lease=20)).allowed
    assert allowed == 30
    refused = await buckets.spend(redis, "limit:budget:test", rate, 1, lease=20)
    assert not refused.allowed and refused.retry_after > 0
