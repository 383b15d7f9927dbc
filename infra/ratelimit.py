"""Rate limits in Redis: one atomic primitive, `take`, used by every limit of the API
(action limits, `domain.limits`; query cost budgets, `schema.cost`; WebSocket
connections per user), plus the client address the anonymous limits are keyed by.

    verdict = await take(redis, "limit:log_in:ip:203.0.113.7", Rate(100, 3600))
    if not verdict.allowed:
        ...  # refuse, telling the client to come back in verdict.retry_after seconds

The algorithm is GCRA (the generic cell rate algorithm, a token bucket written as one
timestamp): a key holds the "theoretical arrival time" (TAT) of the bucket, in
microseconds of the Redis server's clock. `Rate(limit, period)` allows `limit` points
at once (the burst) and refills one point every `period / limit` seconds, smoothly:
there is no window edge at which a client gets twice its limit. Taking `cost` points
moves the TAT `cost` intervals forward, and is refused when that would put it more
than `period` ahead of now. One key per limit and subject, one script call per take:
safe on Redis Cluster (a script touches only its one key) and atomic across every API
process, with the server's clock (`TIME`), so API machines' clocks need not agree.
A key expires when its bucket is full again, so idle subjects cost no memory.

Why not the `limits` library (alisaifee): it keeps its own storage and connection
pool (a URI, not our redis-py client with its retry policy and hiredis packing), its
strategies are fixed or moving windows and a sliding-window counter (no GCRA; a
moving window stores one entry per point, which is no way to hold a 5,000-point
budget), `hit` answers a bare bool, so the retry time costs a second round trip
(`get_window_stats`), and nothing takes "up to N points", which the cost budget's
per-process leases need (`schema.cost`). The whole algorithm is the 25 lines of Lua
below.
"""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
import math
import time
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, NamedTuple

from redis.asyncio import Redis
from redis.exceptions import NoScriptError

# KEYS[1]: the bucket's TAT (microseconds of the server clock), absent when full.
# ARGV: interval (microseconds a point takes to come back), period (the burst, in
# microseconds: limit * interval), cost (points needed; negative gives points back),
# up_to (points taken when available, at least cost: a lease).
# Returns {allowed (0/1), granted, remaining, retry_after_us, reset_after_us}.
GCRA_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local period = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local up_to = tonumber(ARGV[4])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local available = math.floor((period - (tat - now)) / interval)
if cost > available then
  -- refused: nothing changes; the points needed are back when the TAT is low enough
  return {0, 0, available, tat + cost * interval - period - now, tat - now}
end
local granted = cost
if up_to > cost then granted = math.min(up_to, available) end
local new_tat = tat + granted * interval
if new_tat <= now then
  redis.call('DEL', KEYS[1])  -- full again (a refund): nothing to remember
  return {1, granted, math.floor(period / interval), 0, 0}
end
redis.call('SET', KEYS[1], new_tat, 'PX', math.ceil((new_tat - now) / 1000) + 1)
return {1, granted, available - granted, 0, new_tat - now}
"""
_GCRA_SHA = hashlib.sha1(GCRA_LUA.encode()).hexdigest()  # noqa: S324  # EVALSHA's name
_MICRO = 1_000_000


@dataclass(frozen=True, slots=True)
class Rate:
    """`limit` points per `period` seconds: a burst of `limit`, refilled smoothly (one
    point every `period / limit` seconds). `Rate(10, 900)`: ten at once, then one
    every 90 s."""

    limit: int
    period: float

    def __post_init__(self) -> None:
        if self.limit <= 0 or self.period <= 0:
            raise ValueError(f"a rate needs a positive limit and period, got {self}")

    @property
    def interval(self) -> float:
        """Seconds for one point to come back."""
        return self.period / self.limit


class Verdict(NamedTuple):
    """What `take` decided (a named tuple: built on every request of the hot path).

    allowed      whether the points were taken
    granted      points taken (0 when refused; up to `up_to` for a lease)
    remaining    points left in the bucket after this take
    retry_after  seconds until the points asked for are there (0 when allowed)
    reset_after  seconds until the bucket is full again
    """

    allowed: bool
    granted: int
    remaining: int
    retry_after: float
    reset_after: float

    @property
    def retry_after_seconds(self) -> int:
        """`retry_after` rounded up to whole seconds, at least 1 when refused (what a
        `Retry-After` header and `extensions.retryAfter` carry)."""
        return max(1, math.ceil(self.retry_after)) if not self.allowed else 0


async def take(
    redis: Redis, key: str, rate: Rate, cost: int = 1, *, up_to: int | None = None
) -> Verdict:
    """Take `cost` points from the bucket `key` refilling at `rate`, atomically, in one
    round trip. Refused (nothing taken) when fewer than `cost` points are left.

    `up_to`: take as many as are available up to this many, but at least `cost` (a
    lease of points to spend locally later). A negative `cost` gives points back (a
    refund; never above the limit). Raises redis' errors: callers choose whether a
    limit fails open (`domain.limits` and `schema.cost` do, logging it).
    """
    # No bucket holds more than `limit`: larger numbers change no answer (a cost above
    # it is refused all the same), and Lua's numbers are doubles.
    cost = max(-rate.limit, min(cost, rate.limit + 1))
    interval = max(1, round(rate.interval * _MICRO))
    period = interval * rate.limit
    most = max(cost, min(up_to, rate.limit) if up_to is not None else cost)
    args = (str(interval), str(period), str(cost), str(most))
    try:
        raw = await redis.evalsha(_GCRA_SHA, 1, key, *args)  # type: ignore[misc]  # redis-py types sync and async alike
    except NoScriptError:  # a restarted or new server: EVAL loads the script
        raw = await redis.eval(GCRA_LUA, 1, key, *args)  # type: ignore[misc]  # as above
    allowed, granted, remaining, retry_us, reset_us = (int(value) for value in raw)
    return Verdict(
        allowed=bool(allowed),
        granted=granted,
        remaining=max(0, remaining),
        retry_after=max(0, retry_us) / _MICRO,
        reset_after=max(0, reset_us) / _MICRO,
    )


class LocalBuckets:
    """GCRA buckets in this process's memory, `take`'s semantics (without `up_to`): the
    fallback of the limits that must hold while Redis is down (`domain.limits`: the
    log-in limits, so a Redis outage does not open the door to password guessing). Each
    process counts on its own then, so N processes allow N times the limit: still a
    limit. Bounded: the least recently used bucket is forgotten past `maxsize`."""

    def __init__(self, maxsize: int = 100_000) -> None:
        self._tats: OrderedDict[str, float] = OrderedDict()
        self._maxsize = maxsize

    def clear(self) -> None:
        self._tats.clear()

    def take(self, key: str, rate: Rate, cost: int = 1) -> Verdict:
        now = time.monotonic()
        interval = rate.interval
        tat = max(now, self._tats.get(key, now))
        available = math.floor((rate.period - (tat - now)) / interval + 1e-9)
        if cost > available:
            retry = tat + cost * interval - rate.period - now
            return Verdict(False, 0, max(0, available), max(0.0, retry), tat - now)
        new_tat = tat + cost * interval
        if new_tat <= now:
            self._tats.pop(key, None)
            return Verdict(True, cost, rate.limit, 0.0, 0.0)
        self._tats[key] = new_tat
        self._tats.move_to_end(key)
        if len(self._tats) > self._maxsize:
            self._tats.popitem(last=False)
        return Verdict(True, cost, available - cost, 0.0, new_tat - now)


# -- the client's address ------------------------------------------------------------


def forwarded_allow_ips(entries: Iterable[str]) -> str:
    """TRUSTED_PROXIES as uvicorn's `--forwarded-allow-ips` (`run.py` passes it): each
    entry an address or a CIDR network (host bits allowed, normalised: uvicorn would
    silently treat `10.0.0.1/8` as a name that matches nothing), or `*` (trust every
    peer: unsafe unless no client can reach the API but through the proxy, as any
    client could then choose its address). Raises ValueError on a malformed entry
    (checked when the app starts)."""
    normalised: list[str] = []
    for raw in entries:
        entry = raw.strip()
        if entry == "*":
            normalised.append(entry)
        elif "/" in entry:
            normalised.append(str(ipaddress.ip_network(entry, strict=False)))
        else:
            normalised.append(str(ipaddress.ip_address(entry)))
    return ",".join(normalised)


def client_address(scope: Mapping[str, Any]) -> str:
    """The client of an ASGI request or WebSocket, as the anonymous limits key it: the
    scope's `client`, which uvicorn has already replaced by the right-most untrusted
    `X-Forwarded-For` address when the peer is a trusted proxy (TRUSTED_PROXIES, passed
    as its `--forwarded-allow-ips` by `run.py`). An IPv6 client is keyed by its /64 (one
    subscriber's network: a client holds a whole /64 and could take a new address per
    request), an IPv4-mapped IPv6 one (`::ffff:192.0.2.1`) by its IPv4 address. "unknown"
    when the server gives no peer (a test client, a Unix socket)."""
    client = scope.get("client")
    return address_key(str(client[0])) if client else "unknown"


@lru_cache(maxsize=4096)
def address_key(host: str) -> str:
    """A client address as a limit's subject (`client_address`): IPv4 as is, IPv6 as its
    /64, IPv4-mapped IPv6 as IPv4; anything else (a name a proxy sent) as is, cut short.

    >>> address_key("2001:db8:1:2:3:4:5:6"), address_key("::ffff:192.0.2.1")
    ('2001:db8:1:2::/64', '192.0.2.1')
    """
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return host[:64]
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((int(ip) >> 64 << 64, 64)))
    return str(ip)


# -- leases: budgets charged locally --------------------------------------------------


@dataclass(slots=True)
class _Lease:
    points: int = 0  # taken from Redis, not spent yet
    remaining: int = 0  # what Redis said the bucket held after the last take
    taken_at: float = 0.0  # time.monotonic() of that take
    # Redis refused `refused_cost` points until `blocked_until` (monotonic): requests
    # costing that much or more are refused until then without asking Redis again.
    refused_cost: int = 0
    blocked_until: float = 0.0
    # A take in flight for this bucket: concurrent requests wait for it (one lease for
    # a burst, not one each).
    pending: asyncio.Future[None] | None = None


class LeasedBuckets:
    """Buckets spent in this process from leases of points taken from Redis: a request
    that fits in its subject's lease costs no round trip; one that does not takes what
    it needs plus up to `lease` more in one `take`, while concurrent requests of that
    subject wait for that one take (single flight) and then spend its lease too. A
    refusal is remembered until its retry time for requests costing at least as much,
    so a client hammering a spent budget costs no Redis either; cheaper requests still
    spend what the lease holds, or ask Redis.

    The price: points leased and not spent by a process are lost to its subject (at
    most `lease` per process and subject, refilled like any others), and `remaining`
    is this process's estimate. `lease=1` charges every request in Redis, exactly.
    One per process (`infra.resources.Resources.budgets`), with the process's
    `fallback` buckets (`LocalBuckets`) for the limits that hold while Redis is down;
    `clear` forgets both.
    """

    def __init__(self, maxsize: int = 100_000) -> None:
        self._leases: OrderedDict[str, _Lease] = OrderedDict()
        self._maxsize = maxsize
        self.fallback = LocalBuckets(maxsize)

    def clear(self) -> None:
        self._leases.clear()
        self.fallback.clear()

    async def spend(self, redis: Redis, key: str, rate: Rate, cost: int, *, lease: int) -> Verdict:
        """Spend `cost` points of the bucket `key` (`take`'s semantics)."""
        cost = max(0, min(cost, rate.limit + 1))  # no bucket holds more (`take`)
        while True:
            now = time.monotonic()
            held = self._leases.get(key)
            if held is None:
                held = self._leases[key] = _Lease(remaining=rate.limit, taken_at=now)
                if len(self._leases) > self._maxsize:
                    self._leases.popitem(last=False)
            else:
                self._leases.move_to_end(key)
            if held.points >= cost:
                held.points -= cost
                return self._estimate(held, rate, now, cost)
            if held.blocked_until > now and cost >= held.refused_cost:
                wait = held.blocked_until - now
                return Verdict(False, 0, held.points, wait, wait + rate.period)
            if held.pending is None:
                break
            # Another request of this subject is taking a lease: wait for it, then look
            # again (its lease may cover this request too). shield: a cancelled waiter
            # must not cancel the take it waits for.
            await asyncio.shield(held.pending)
        return await self._take(redis, key, held, rate, cost, lease)

    async def _take(
        self, redis: Redis, key: str, held: _Lease, rate: Rate, cost: int, lease: int
    ) -> Verdict:
        done = held.pending = asyncio.get_running_loop().create_future()
        have, held.points = held.points, 0  # spent on this request, unless Redis refuses
        need = cost - have
        try:
            verdict = await take(redis, key, rate, need, up_to=max(need, lease))
        except BaseException:
            held.points += have
            raise
        finally:
            held.pending = None
            done.set_result(None)
        now = time.monotonic()
        if not verdict.allowed:
            # The points held stay here for cheaper requests, and count as remaining.
            held.points += have
            held.refused_cost = cost
            held.blocked_until = now + verdict.retry_after
            return verdict._replace(remaining=verdict.remaining + held.points)
        held.points += verdict.granted - need
        held.remaining = verdict.remaining
        held.taken_at = now
        return self._estimate(held, rate, now, cost)

    @staticmethod
    def _estimate(held: _Lease, rate: Rate, now: float, cost: int) -> Verdict:
        refilled = int((now - held.taken_at) / rate.interval)
        remaining = min(rate.limit, held.remaining + held.points + refilled)
        return Verdict(True, cost, remaining, 0.0, (rate.limit - remaining) * rate.interval)
