"""Rate limits on actions (issue 10, point 3; docs/limits.md): logIn per account and per
client address, signUp per address, createPost, follow, likePost and addComment per
user, each RATE_LIMITED with `retryAfter`; and the GCRA primitive under them.

The limited server uses Redis DB 9 and small limits from its settings (RATE_LIMITS).
Other client addresses come from `X-Forwarded-For`, which uvicorn honours from
127.0.0.1 (its FORWARDED_ALLOW_IPS default: a proxy on the same machine).
"""

from __future__ import annotations

import asyncio
import logging
import tempfile
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest
from uvicorn.main import main as uvicorn_main

from domain.limits import check_settings
from infra.embedded import EmbeddedRedis
from infra.ids import to_global_id
from infra.ratelimit import Rate, address_key, client_address, forwarded_allow_ips, take
from run import api_commands
from settings import Settings
from tests.conftest import Server, clean_state, serve, with_redis_db
from tests.factories import PASSWORD, Factory

LOG_IN = """
mutation ($username: String!, $password: String!) {
  logIn(username: $username, password: $password) { token errors { code } }
}
"""
SIGN_UP = """
mutation ($username: String!, $email: String!) {
  signUp(username: $username, email: $email, password: "long enough password") {
    token errors { code }
  }
}
"""
CREATE_POST = """
mutation {
  createPost(input: {media: [{contentType: "image/jpeg", byteSize: 1000}]}) { post { id } }
}
"""
FOLLOW = "mutation ($id: ID!) { follow(userId: $id) { errors { code } } }"
LIKE = "mutation ($id: ID!) { likePost(postId: $id) { errors { code } } }"
COMMENT = 'mutation ($id: ID!) { addComment(postId: $id, text: "hi") { errors { code } } }'
ATTACKER, OWNER = "203.0.113.66", "192.0.2.10"
DEADLINE = 30.0  # for what must happen by itself (polled, not timed)

LIMITS = (
    "log_in_address=15/3600",
    # Short periods, so a slowed owner gets in within seconds (polled): 3 failures per
    # account and address, then one every 4 s; 5 per account, then one every 4 s.
    "log_in_failures=3/12",
    "log_in_account=5/20",
    "sign_up=3/3600",
    "create_post=2/3600",
    "follow=2/3600",
    "like=2/3600",
    "comment=2/3600",
)


@pytest.fixture(scope="module")
async def limited_instance(settings: Settings) -> AsyncIterator[Server]:
    base = replace(
        settings,
        redis_url=with_redis_db(settings.redis_url, 9),
        media_root=settings.media_root / "limits-server",
        rate_limits=LIMITS,
    )
    async with serve(base) as running:
        yield running


@pytest.fixture
async def limited(limited_instance: Server) -> Server:
    await clean_state(limited_instance)
    return limited_instance


@pytest.fixture
async def client(limited: Server) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=limited.base_url, timeout=30) as http:
        yield http


async def call(
    http: httpx.AsyncClient,
    query: str,
    token: str | None = None,
    address: str | None = None,
    **variables: Any,
) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    if address:
        headers["X-Forwarded-For"] = address
    response = await http.post(
        "/graphql", json={"query": query, "variables": variables}, headers=headers
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def rate_limited(body: dict[str, Any], field: str) -> int:
    """The retryAfter of a RATE_LIMITED error on `field` (fails otherwise)."""
    assert body["data"] is None, body
    [error] = body["errors"]
    assert error["path"] == [field]
    assert error["extensions"]["code"] == "RATE_LIMITED", error
    retry_after = error["extensions"]["retryAfter"]
    assert isinstance(retry_after, int) and retry_after > 0
    return retry_after


def succeeded(body: dict[str, Any], field: str) -> None:
    assert "errors" not in body, body["errors"]
    assert body["data"][field].get("errors", []) == []


# logIn


async def log_in(
    http: httpx.AsyncClient, username: str, password: str, address: str | None = None
) -> dict[str, Any]:
    return await call(http, LOG_IN, None, address, username=username, password=password)


def wrong(body: dict[str, Any]) -> None:
    assert body["data"]["logIn"]["errors"] == [{"code": "INVALID_INPUT"}], body


async def eventually_logged_in(http: httpx.AsyncClient, username: str, address: str) -> None:
    """Try logIn with the right password, as a client told to retry after n seconds
    would, until it succeeds (every attempt counts against the address limit)."""
    async with asyncio.timeout(DEADLINE):
        while True:
            body = await log_in(http, username, PASSWORD, address)
            if body["data"] is not None:
                succeeded(body, "logIn")
                return
            await asyncio.sleep(rate_limited(body, "logIn"))


async def test_failures_from_one_address_do_not_slow_the_owner_on_another(limited, client, factory):
    alice, bob = await factory.user("alice"), await factory.user("bob")
    # Right passwords are not failures: no limit for an owner who knows it.
    for _ in range(4):
        succeeded(await log_in(client, "alice", PASSWORD, ATTACKER), "logIn")
    for _ in range(3):
        wrong(await log_in(client, "alice", "wrong password", ATTACKER))
    # The attacker's address is slowed on that account, before its password is checked,
    # even with the right one (one attempt every 4 s here, 90 s by default)...
    assert rate_limited(await log_in(client, "ALICE", PASSWORD, ATTACKER), "logIn") <= 4
    # ...while the owner, on their own address, logs in; and the attacker's address may
    # still try other accounts.
    succeeded(await log_in(client, "alice", PASSWORD, OWNER), "logIn")
    succeeded(await log_in(client, "bob", PASSWORD, ATTACKER), "logIn")
    assert alice.pk != bob.pk


async def test_an_owner_slowed_on_their_own_address_is_not_locked_out(limited, client, factory):
    await factory.user("alice")
    for _ in range(3):
        wrong(await log_in(client, "alice", "forgotten", OWNER))
    rate_limited(await log_in(client, "alice", PASSWORD, OWNER), "logIn")
    await eventually_logged_in(client, "alice", OWNER)


async def test_a_guesser_spread_over_addresses_slows_the_account_not_locks_it(
    limited, client, factory
):
    await factory.user("alice")
    # One failure from each of five addresses: the account's 5.
    guesses = [log_in(client, "alice", "guess", f"198.51.100.{index}") for index in range(5)]
    for body in await asyncio.gather(*guesses):
        wrong(body)
    rate_limited(await log_in(client, "alice", "guess", "198.51.100.99"), "logIn")
    rate_limited(await log_in(client, "alice", PASSWORD, OWNER), "logIn")  # slowed too...
    await eventually_logged_in(client, "alice", OWNER)  # ...not locked out


async def test_log_in_attempts_are_limited_per_address(limited, client, factory):
    await factory.user("carol")
    for index in range(15):  # different accounts: only the address limit counts them all
        body = await call(client, LOG_IN, None, "203.0.113.5", username=f"n{index}", password="x")
        assert body["data"]["logIn"]["errors"] == [{"code": "INVALID_INPUT"}]
    refused = await call(client, LOG_IN, None, "203.0.113.5", username="carol", password=PASSWORD)
    rate_limited(refused, "logIn")
    # Another address logs in.
    ok = await call(client, LOG_IN, None, "203.0.113.6", username="carol", password=PASSWORD)
    succeeded(ok, "logIn")


# signUp


async def test_sign_up_is_limited_per_address(limited, client):
    for index in range(3):
        body = await call(
            client, SIGN_UP, None, "192.0.2.1", username=f"new{index}", email=f"{index}@x.io"
        )
        succeeded(body, "signUp")
    refused = await call(client, SIGN_UP, None, "192.0.2.1", username="new9", email="9@x.io")
    rate_limited(refused, "signUp")
    other = await call(client, SIGN_UP, None, "192.0.2.2", username="new9", email="9@x.io")
    succeeded(other, "signUp")


# Per-user actions


async def test_create_post_is_limited_per_user(limited, client, factory):
    alice, bob = await factory.user("alice"), await factory.user("bob")
    for _ in range(2):
        assert (await call(client, CREATE_POST, alice.token))["data"]["createPost"]["post"]
    rate_limited(await call(client, CREATE_POST, alice.token), "createPost")
    assert (await call(client, CREATE_POST, bob.token))["data"]["createPost"]["post"]


async def test_follows_are_limited_per_user(limited, client, factory):
    alice, bob = await factory.user("alice"), await factory.user("bob")
    targets = [await factory.user(f"t{index}") for index in range(3)]
    for target in targets[:2]:
        succeeded(await call(client, FOLLOW, alice.token, id=target.id), "follow")
    rate_limited(await call(client, FOLLOW, alice.token, id=targets[2].id), "follow")
    succeeded(await call(client, FOLLOW, bob.token, id=targets[2].id), "follow")


async def test_likes_and_comments_are_limited_per_user(limited, client, factory):
    author, fan, other = [await factory.user(name) for name in ("author", "fan", "other")]
    posts = [to_global_id("Post", await factory.ready_post(author)) for _ in range(3)]
    for post in posts[:2]:
        succeeded(await call(client, LIKE, fan.token, id=post), "likePost")
        succeeded(await call(client, COMMENT, fan.token, id=post), "addComment")
    rate_limited(await call(client, LIKE, fan.token, id=posts[2]), "likePost")
    rate_limited(await call(client, COMMENT, fan.token, id=posts[2]), "addComment")
    succeeded(await call(client, LIKE, other.token, id=posts[2]), "likePost")
    succeeded(await call(client, COMMENT, other.token, id=posts[2]), "addComment")


# The primitive


async def test_gcra_takes_costs_atomically_refunds_and_refills(server):
    redis = server.redis
    rate = Rate(5, 0.5)  # five at once, one back every 0.1 s
    taken = await asyncio.gather(*(take(redis, "limit:test", rate) for _ in range(8)))
    assert sum(verdict.allowed for verdict in taken) == 5  # concurrent takes never overshoot
    refused = next(verdict for verdict in taken if not verdict.allowed)
    assert 0 < refused.retry_after <= 0.1 + 1e-6 and refused.retry_after_seconds == 1
    assert not (await take(redis, "limit:test", rate, 1)).allowed
    assert (await take(redis, "limit:test", rate, -2)).allowed  # a refund
    assert (await take(redis, "limit:test", rate, 2)).allowed
    # Refilled with time, by the server's clock (polled, no timed assertion).
    for _ in range(600):  # up to 30 s
        refilled = await take(redis, "limit:test", rate, 5)
        if refilled.allowed:
            break
        await asyncio.sleep(0.05)
    assert refilled.allowed
    # A lease takes what is there, up to its size.
    lease = await take(redis, "limit:lease", Rate(10, 3600), 1, up_to=25)
    assert (lease.allowed, lease.granted, lease.remaining) == (True, 10, 0)
    assert await redis.ttl("limit:lease") > 0  # forgotten once full again


def test_ipv6_clients_are_keyed_by_their_64_and_mapped_ipv4_as_ipv4() -> None:
    one = client_address({"client": ("2001:db8:1:2:aaaa::1", 5000)})
    other = client_address({"client": ("2001:db8:1:2:ffff:ffff:ffff:ffff", 5000)})
    assert one == other == "2001:db8:1:2::/64"
    assert client_address({"client": ("2001:db8:1:3::1", 5000)}) == "2001:db8:1:3::/64"
    assert client_address({"client": ("::ffff:192.0.2.1", 5000)}) == "192.0.2.1"
    assert client_address({"client": ("192.0.2.1", 5000)}) == "192.0.2.1"
    assert client_address({"headers": []}) == "unknown"
    assert address_key("not-an-address") == "not-an-address"


async def test_sign_ups_from_one_ipv6_network_share_a_limit(limited, client):
    # uvicorn takes X-Forwarded-For from 127.0.0.1 (TRUSTED_PROXIES' default).
    for index in range(3):
        address = f"2001:db8:5:6::{index + 1}"
        body = await call(
            client, SIGN_UP, None, address, username=f"six{index}", email=f"{index}@x.io"
        )
        succeeded(body, "signUp")
    same_network = "2001:db8:5:6:ffff::9"
    refused = await call(client, SIGN_UP, None, same_network, username="six9", email="9@x.io")
    rate_limited(refused, "signUp")
    other = await call(client, SIGN_UP, None, "2001:db8:5:7::1", username="six9", email="9@x.io")
    succeeded(other, "signUp")


def test_trusted_proxies_are_uvicorns_forwarded_allow_ips() -> None:
    assert forwarded_allow_ips(["10.0.0.1/8", " ::1 ", "192.0.2.7"]) == "10.0.0.0/8,::1,192.0.2.7"
    assert forwarded_allow_ips([]) == ""
    # Both ways run.py starts the API hand them to uvicorn, which reads them as such.
    proxies = ("10.0.0.0/8", "192.0.2.7")
    [single] = api_commands("127.0.0.1", 8000, 1, trusted_proxies=proxies)
    params = uvicorn_main.make_context("uvicorn", single[3:]).params
    assert params["proxy_headers"] is True
    assert params["forwarded_allow_ips"] == "10.0.0.0/8,192.0.2.7"
    [none] = api_commands("127.0.0.1", 8000, 1, trusted_proxies=())
    assert uvicorn_main.make_context("uvicorn", none[3:]).params["proxy_headers"] is False
    several = api_commands("127.0.0.1", 8000, 2, trusted_proxies=proxies)
    assert all(argv[-2:] == ["--forwarded-allow-ips", "10.0.0.0/8,192.0.2.7"] for argv in several)
    assert Settings().trusted_proxies == ("127.0.0.1", "::1")  # uvicorn's own default


def test_malformed_limit_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown action"):
        check_settings(replace(Settings(), rate_limits=("likes=1/60",)))
    with pytest.raises(ValueError, match="name=limit/seconds"):
        check_settings(replace(Settings(), rate_limits=("like=many",)))
    with pytest.raises(ValueError):
        check_settings(replace(Settings(), trusted_proxies=("not an address",)))
    with pytest.raises(ValueError):
        check_settings(replace(Settings(), trusted_proxies=("10.0.0.0/33",)))


# Redis down


async def test_with_redis_down_log_in_limits_hold_in_the_process(settings, caplog):
    with tempfile.TemporaryDirectory(prefix="instagraph-limits-") as root:
        redis_server = EmbeddedRedis(Path(root) / "redis", persistent=False).start()
        try:
            await log_in_limits_without_redis(settings, redis_server, caplog)
        finally:
            redis_server.stop()


async def log_in_limits_without_redis(
    settings: Settings, redis_server: EmbeddedRedis, caplog: pytest.LogCaptureFixture
) -> None:
    private = replace(
        settings,
        redis_url=redis_server.url,
        media_root=settings.media_root / "limits-no-redis",
        rate_limits=LIMITS,
        redis_timeout_seconds=0.5,
        redis_retry_after_seconds=0.5,
    )
    async with serve(private) as app:
        await clean_state(app)
        factory = Factory(engine=app.engine, settings=app.settings)
        await factory.user("alice")
        redis_server.stop()  # Redis is gone: every limit falls back
        caplog.set_level(logging.WARNING, logger="instagraph.redis")
        async with httpx.AsyncClient(base_url=app.base_url, timeout=30) as http:
            for _ in range(3):
                wrong(await log_in(http, "alice", "guess", ATTACKER))
            # Counted in the process: the guesser is slowed as with Redis...
            rate_limited(await log_in(http, "alice", PASSWORD, ATTACKER), "logIn")
            # ...the owner elsewhere is not.
            succeeded(await log_in(http, "alice", PASSWORD, OWNER), "logIn")
    # One warning per limit, not one per request.
    warned = [r.getMessage() for r in caplog.records if "rate limit log_in" in r.getMessage()]
    assert len(warned) == len(set(warned)) and len(warned) <= 3
    assert all("counted in this process" in message for message in warned)
