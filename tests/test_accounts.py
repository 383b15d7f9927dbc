"""Sign-up, log-in, tokens, viewer and profile."""

from __future__ import annotations

import time

import jwt

from tests.factories import PASSWORD

SIGN_UP = """
mutation ($username: String!, $email: String!, $password: String!) {
  signUp(username: $username, email: $email, password: $password) {
    token
    user { id username followerCount followingCount postCount isPrivate createdAt }
    errors { field message code }
  }
}
"""

LOG_IN = """
mutation ($username: String!, $password: String!) {
  logIn(username: $username, password: $password) {
    token
    user { username }
    errors { field message code }
  }
}
"""

VIEWER = "query { viewer { id username displayName bio isPrivate } }"

UPDATE_PROFILE = """
mutation ($displayName: String, $bio: String, $isPrivate: Boolean) {
  updateProfile(displayName: $displayName, bio: $bio, isPrivate: $isPrivate) {
    user { displayName bio isPrivate }
    errors { field message code }
  }
}
"""


async def test_sign_up_returns_a_token_that_identifies_the_user(gql):
    # When
    data = await gql(SIGN_UP, username="Alice.B", email="alice@example.com", password="s3cret-pass")
    # Then
    payload = data["signUp"]
    assert payload["errors"] == []
    assert payload["user"]["username"] == "alice.b"
    assert payload["user"]["followerCount"] == 0
    viewer = await gql(VIEWER, token=payload["token"])
    assert viewer["viewer"]["username"] == "alice.b"
    assert viewer["viewer"]["id"] == payload["user"]["id"]


async def test_sign_up_stores_an_argon2_hash_never_the_password(gql, server):
    await gql(SIGN_UP, username="hashy", email="h@example.com", password="plain-text-pw")
    async with server.engine.connect() as conn:
        from sqlalchemy import text

        stored = await conn.scalar(text("SELECT password_hash FROM users WHERE username='hashy'"))
    assert stored.startswith("$argon2id$")
    assert "plain-text-pw" not in stored


async def test_sign_up_rejects_bad_input_with_typed_errors(gql):
    cases = [
        ({"username": "ab"}, "username"),
        ({"username": "no spaces"}, "username"),
        ({"username": "x" * 31}, "username"),
        ({"username": "émile"}, "username"),
        ({"email": "not-an-email"}, "email"),
        ({"password": "short"}, "password"),
    ]
    for override, field in cases:
        args = {"username": "valid_name", "email": "v@example.com", "password": "long-enough"}
        args.update(override)
        payload = (await gql(SIGN_UP, **args))["signUp"]
        assert payload["token"] is None, override
        assert payload["errors"] == [
            {"field": field, "message": payload["errors"][0]["message"], "code": "INVALID_INPUT"}
        ], override


async def test_usernames_and_emails_are_unique_case_insensitively(gql):
    first = await gql(SIGN_UP, username="carol", email="carol@example.com", password="password1")
    assert first["signUp"]["errors"] == []
    same_name = await gql(
        SIGN_UP, username="CAROL", email="other@example.com", password="password1"
    )
    assert same_name["signUp"]["errors"][0]["code"] == "CONFLICT"
    assert same_name["signUp"]["errors"][0]["field"] == "username"
    same_email = await gql(
        SIGN_UP, username="carol2", email="Carol@Example.com", password="password1"
    )
    assert same_email["signUp"]["errors"][0]["code"] == "CONFLICT"
    # Not said to be the email (issue 10: no account enumeration; tests/test_input_hardening.py).
    assert same_email["signUp"]["errors"][0]["field"] is None


async def test_log_in_gives_the_same_error_for_wrong_password_and_unknown_user(gql, factory):
    await factory.user("dave")
    ok = (await gql(LOG_IN, username="Dave", password=PASSWORD))["logIn"]
    assert ok["errors"] == [] and ok["user"]["username"] == "dave" and ok["token"]

    wrong_password = (await gql(LOG_IN, username="dave", password="nope-nope"))["logIn"]
    unknown_user = (await gql(LOG_IN, username="nobody", password="nope-nope"))["logIn"]
    assert wrong_password["token"] is None and unknown_user["token"] is None
    assert wrong_password["errors"] == unknown_user["errors"]


async def test_viewer_is_null_without_a_valid_token(gql, factory, server):
    user = await factory.user()
    expired = factory.token_for(user.pk, ttl_seconds=60, now=time.time() - 3600)
    forged = jwt.encode(
        {"sub": str(user.pk), "exp": time.time() + 60, "typ": "access"},
        "another-secret-key-that-is-long-enough-0123",
    )
    for token in (None, "garbage", expired, forged):
        assert (await gql(VIEWER, token=token))["viewer"] is None


async def test_operations_that_need_auth_say_unauthenticated(gql, factory):
    user = await factory.user()
    expired = factory.token_for(user.pk, ttl_seconds=60, now=time.time() - 3600)
    forged = jwt.encode(
        {"sub": str(user.pk), "exp": time.time() + 60, "typ": "access"},
        "another-secret-key-that-is-long-enough-0123",
    )
    for token in (None, "not.a.jwt", expired, forged):
        body = await gql.raw(UPDATE_PROFILE, token=token, bio="hi")
        assert body["data"] is None
        assert body["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED", token


async def test_update_profile_changes_only_what_is_given(gql, factory):
    user = await factory.user()
    first = await gql(UPDATE_PROFILE, token=user.token, displayName="Eve", bio="Hello")
    assert first["updateProfile"]["user"] == {
        "displayName": "Eve",
        "bio": "Hello",
        "isPrivate": False,
    }
    second = await gql(UPDATE_PROFILE, token=user.token, isPrivate=True)
    assert second["updateProfile"]["user"] == {
        "displayName": "Eve",
        "bio": "Hello",
        "isPrivate": True,
    }
    cleared = await gql(UPDATE_PROFILE, token=user.token, bio=None)
    assert cleared["updateProfile"]["user"]["bio"] is None
    too_long = await gql(UPDATE_PROFILE, token=user.token, bio="x" * 151)
    assert too_long["updateProfile"]["errors"][0]["code"] == "INVALID_INPUT"
    assert too_long["updateProfile"]["errors"][0]["field"] == "bio"


async def test_user_lookup_by_username_and_node(gql, factory):
    user = await factory.user("frank")
    by_name = await gql('query { user(username: "FRANK") { id username } }')
    assert by_name["user"] == {"id": user.id, "username": "frank"}
    node = await gql(
        "query ($id: ID!) { node(id: $id) { id ... on User { username } } }", id=user.id
    )
    assert node["node"] == {"id": user.id, "username": "frank"}
    assert (await gql('query { user(username: "nobody") { id } }'))["user"] is None


async def test_malformed_global_ids_are_invalid_input(gql):
    for bad in ("", "!!!", "VXNlcjp4", "Zm9vOjE", "a" * 500):
        body = await gql.raw("query ($id: ID!) { node(id: $id) { id } }", id=bad)
        assert body["errors"][0]["extensions"]["code"] == "INVALID_INPUT", bad


async def test_search_users_by_prefix(gql, factory):
    await factory.user("grace")
    await factory.user("gregory")
    await factory.user("hannah")
    data = await gql('query { searchUsers(query: "GR") { username } }')
    assert sorted(u["username"] for u in data["searchUsers"]) == ["grace", "gregory"]
    assert (await gql('query { searchUsers(query: "%") { username } }'))["searchUsers"] == []
