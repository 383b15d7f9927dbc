"""Bearer tokens: verified once, then remembered until their own expiry, never after."""

from __future__ import annotations

import time

from infra.security import issue_token, user_id_from_token

SECRET = "s" * 32


def test_a_remembered_token_still_expires():
    issued = time.time()
    token = issue_token(7, secret=SECRET, ttl_seconds=60, now=issued)
    assert user_id_from_token(token, secret=SECRET) == 7  # verified, then remembered
    assert user_id_from_token(token, secret=SECRET, now=issued + 30) == 7
    assert user_id_from_token(token, secret=SECRET, now=issued + 61) is None


def test_a_token_is_remembered_per_secret_and_forgeries_never():
    token = issue_token(8, secret=SECRET, ttl_seconds=60)
    assert user_id_from_token(token, secret=SECRET) == 8
    assert user_id_from_token(token, secret="t" * 32) is None  # another key signs nothing
    forged = token[:-2] + ("AA" if not token.endswith("AA") else "BB")
    assert user_id_from_token(forged, secret=SECRET) is None
    assert user_id_from_token(forged, secret=SECRET) is None
