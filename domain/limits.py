"""Rate limits on actions: which action, keyed by what, at which rate, in one place.

Resolvers call one line per action; the limit itself is `infra.ratelimit.take` (GCRA
in Redis, atomic across API processes):

    await limits.hit(info.context, limits.FOLLOW, viewer_id)   # per user
    await limits.hit(info.context, limits.SIGN_UP)              # per client address

An action over its limit raises `RateLimited`, which reaches the client as a GraphQL
error with `extensions: {"code": "RATE_LIMITED", "retryAfter": <seconds>}` (the
convention for limits: `schema.errors`; a mutation's payload `errors` are for what is
wrong with the input, and a `UserError` has no field for the retry time).

`logIn` is limited three times (credential stuffing): every attempt per client address
(one address trying many accounts), failures per account and address (`LOG_IN_FAILURES`:
10 per 15 minutes, then one attempt per 90 s from that address), and failures per
account from every address together, a looser limit (`LOG_IN_ACCOUNT`: 100 an hour,
then one per 36 s: many addresses trying one account). Failures are counted up front and
a correct password gives them back. So an attacker guessing from some addresses slows
those addresses, not the owner logging in from theirs; only a guesser spread over many
addresses reaches the account-wide limit, which slows everyone on that account (never
a lock-out: one attempt per 36 s still gets through, and a right password gives its
point back).

Rates are the defaults below, overridden by RATE_LIMITS (`name=limit/seconds`, comma
separated) and switched off by RATE_LIMITS_ENABLED=false (settings.py). Redis down:
the log-in limits are counted in this process's memory instead (`LocalBuckets`: a
password guesser must not gain from an outage); the others let the action through.
Either way a warning is logged at most once a minute (`infra.redis.log_fallback`).
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Protocol

from redis.asyncio import Redis
from redis.exceptions import RedisError

from domain.errors import ErrorCode
from infra.ratelimit import Rate, Verdict, client_address, forwarded_allow_ips, take
from infra.redis import log_fallback
from settings import Settings

log = logging.getLogger("instagraph.limits")

KEY_PREFIX = "limit:"


@dataclass(frozen=True, slots=True)
class Action:
    """A limited action: `name` (its key in Redis and in RATE_LIMITS), what it is keyed
    by ("user", "address", "account" or "account and address"), its default rate, the
    words of its error, and whether it holds while Redis is down (`held_without_redis`:
    counted in this process's memory then; otherwise the action is let through)."""

    name: str
    keyed_by: str
    default: Rate
    doing: str
    held_without_redis: bool = False


LOG_IN_ADDRESS = Action(
    "log_in_address", "address", Rate(100, 3600), "log-in attempts", held_without_redis=True
)
LOG_IN_FAILURES = Action(
    "log_in_failures",
    "account and address",
    Rate(10, 900),
    "failed log-ins",
    held_without_redis=True,
)
LOG_IN_ACCOUNT = Action(
    "log_in_account", "account", Rate(100, 3600), "failed log-ins", held_without_redis=True
)
SIGN_UP = Action("sign_up", "address", Rate(20, 3600), "sign-ups")
CREATE_POST = Action("create_post", "user", Rate(100, 3600), "posts")
FOLLOW = Action("follow", "user", Rate(200, 3600), "follows")
LIKE = Action("like", "user", Rate(500, 3600), "likes")
COMMENT = Action("comment", "user", Rate(200, 3600), "comments")

ACTIONS = {
    action.name: action
    for action in (
        LOG_IN_ADDRESS,
        LOG_IN_FAILURES,
        LOG_IN_ACCOUNT,
        SIGN_UP,
        CREATE_POST,
        FOLLOW,
        LIKE,
        COMMENT,
    )
}


class RateLimited(Exception):
    """An action over its limit. Its `extensions` become the GraphQL error's (graphql-core
    copies an original error's `extensions`)."""

    def __init__(self, doing: str, retry_after: int) -> None:
        super().__init__(f"Too many {doing}; try again in {retry_after} seconds.")
        self.retry_after = retry_after
        self.extensions: dict[str, object] = {
            "code": ErrorCode.RATE_LIMITED.value,
            "retryAfter": retry_after,
        }


class LimitsContext(Protocol):
    """What a limit needs from a request's context (`schema.context.Context` has it)."""

    @property
    def redis(self) -> Redis: ...

    @property
    def settings(self) -> Settings: ...

    @property
    def request(self) -> Any: ...

    @property
    def resources(self) -> Any: ...


@lru_cache(maxsize=8)
def rates(overrides: tuple[str, ...]) -> dict[str, Rate]:
    """Every action's rate: the defaults with RATE_LIMITS' `name=limit/seconds` entries
    applied. Raises ValueError on an unknown name or a malformed entry."""
    chosen = {name: action.default for name, action in ACTIONS.items()}
    for entry in overrides:
        name, _, spec = entry.partition("=")
        limit, _, period = spec.partition("/")
        name = name.strip()
        if name not in ACTIONS:
            raise ValueError(f"RATE_LIMITS: unknown action {name!r} (known: {', '.join(ACTIONS)})")
        try:
            chosen[name] = Rate(int(limit), float(period))
        except ValueError as exc:
            raise ValueError(f"RATE_LIMITS: {entry!r} is not name=limit/seconds") from exc
    return chosen


def check_settings(settings: Settings) -> None:
    """Raise ValueError when RATE_LIMITS or TRUSTED_PROXIES cannot be read (at start)."""
    rates(settings.rate_limits)
    forwarded_allow_ips(settings.trusted_proxies)
    if "*" in settings.trusted_proxies:
        log.warning(
            "TRUSTED_PROXIES=* trusts X-Forwarded-For from every peer: any client that can "
            "reach the API directly chooses its own address for the limits (docs/limits.md)"
        )


def address_of(context: LimitsContext) -> str:
    """The client address of the request (or WebSocket) behind `context`: the key of the
    limits on anonymous work (`infra.ratelimit.client_address`)."""
    request = context.request
    if request is None:
        return "unknown"
    return client_address(request.scope)


def _key(action: Action, subject: object) -> str:
    return f"{KEY_PREFIX}{action.name}:{subject}"


async def _take(context: LimitsContext, action: Action, subject: object, cost: int) -> Verdict:
    """`take` on the action's bucket; while Redis is down, on this process's fallback
    bucket for the actions `held_without_redis`, else an allowing verdict."""
    rate = rates(context.settings.rate_limits)[action.name]
    key = _key(action, subject)
    try:
        return await take(context.redis, key, rate, cost)
    except RedisError as exc:
        if action.held_without_redis:
            log_fallback(f"rate limit {action.name}", exc, instead="counted in this process")
            fallback = context.resources.budgets.fallback
            verdict: Verdict = fallback.take(key, rate, cost)
            return verdict
        log_fallback(f"rate limit {action.name}", exc, instead="not checked (allowed)")
        return Verdict(True, 0, rate.limit, 0.0, 0.0)


async def hit(
    context: LimitsContext, action: Action, subject: object = None, *, cost: int = 1
) -> None:
    """Count one `action` by `subject` (the user id; the client address when None),
    raising RateLimited when it is over its limit."""
    if not context.settings.rate_limits_enabled:
        return
    if subject is None:
        subject = address_of(context)
    verdict = await _take(context, action, subject, cost)
    if not verdict.allowed:
        raise RateLimited(action.doing, verdict.retry_after_seconds)


def account_key(username: str) -> str:
    """The failure counter's subject for a log-in name (hashed: any text a client sends
    makes a bounded, printable key; case-folded as usernames are)."""
    folded = username.strip().casefold().encode("utf-8", "surrogatepass")
    return hashlib.blake2b(folded, digest_size=12).hexdigest()


@dataclass(slots=True)
class LogInAttempt:
    """One `logIn`, counted against its address, its account and address, and its
    account (`log_in_attempt`)."""

    context: LimitsContext
    account: str
    account_and_address: str

    async def succeeded(self) -> None:
        """The password was right: the failures counted up front are given back."""
        if not self.context.settings.rate_limits_enabled:
            return
        await _give_back(self.context, LOG_IN_FAILURES, self.account_and_address)
        await _give_back(self.context, LOG_IN_ACCOUNT, self.account)


async def log_in_attempt(context: LimitsContext, username: str) -> LogInAttempt:
    """Count a log-in attempt before its password is checked (so a refused attempt costs
    no password hashing): against the client address, and as a failure against the
    account from this address and against the account, given back by
    `LogInAttempt.succeeded` (counted up front so that concurrent guesses cannot all
    pass before the first failure is recorded). A refused attempt counts as no failure."""
    account = account_key(username)
    address = address_of(context)
    account_and_address = f"{account}:{address}"
    await hit(context, LOG_IN_ADDRESS, address)
    await hit(context, LOG_IN_FAILURES, account_and_address)
    try:
        await hit(context, LOG_IN_ACCOUNT, account)
    except RateLimited:
        await _give_back(context, LOG_IN_FAILURES, account_and_address)
        raise
    return LogInAttempt(context, account, account_and_address)


async def _give_back(context: LimitsContext, action: Action, subject: object) -> None:
    await _take(context, action, subject, -1)
