"""The synthetic social network: who follows whom and who posted what, in memory.

Deterministic for a seed, so two runs measure the same network. Popularity is
Zipf-like (weight 1/(rank+2)) over a random order of users, so a few accounts are
followed by most users and the median one by ~15; following counts are log-normal
(median 25), except the viewers', which are exactly `Config.viewer_follows`; posting
activity is heavy-tailed (Pareto) and independent of popularity.
"""

from __future__ import annotations

import heapq
import itertools
import math
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime

from bench.feed.config import Config

# Snowflake ids as migration 0002 makes them: milliseconds since 2025-01-01, then a
# 12-bit sequence (53 bits in all, exact as a Redis score).
SNOWFLAKE_EPOCH_MS = 1_735_689_600_000
SEQUENCE_BITS = 12
# Seeded posts span the 30 days before a minute ago (posts made during the run are
# newer than every one of them); the history network's posts are older still.
RECENT_SPAN_MS = 30 * 24 * 3600 * 1000


def snowflake(ms: int, sequence: int) -> int:
    """The id `next_snowflake()` would give at `ms` (Unix milliseconds)."""
    return ((ms - SNOWFLAKE_EPOCH_MS) << SEQUENCE_BITS) | (sequence % (1 << SEQUENCE_BITS))


@dataclass
class Network:
    """Users 1..n, their follows, the viewers the read phase logs in as, and posts."""

    users: int
    following: list[list[int]]  # following[u]: who u follows (index 0 unused)
    viewers: list[int]
    post_ids: list[int]  # ascending, time-ordered snowflakes
    post_authors: list[int]
    post_times: list[datetime]
    follower_count: list[int] = field(default_factory=list)
    post_count: list[int] = field(default_factory=list)

    @property
    def edges(self) -> int:
        return sum(len(f) for f in self.following)

    def posts_by_author(self) -> list[list[int]]:
        """Each author's post ids, newest first."""
        by_author: list[list[int]] = [[] for _ in range(self.users + 1)]
        for post_id, author in zip(self.post_ids, self.post_authors, strict=True):
            by_author[author].append(post_id)
        for ids in by_author:
            ids.reverse()
        return by_author

    def oldest_post_ms(self) -> int:
        """Unix milliseconds of the oldest seeded post (history goes below it)."""
        return (self.post_ids[0] >> SEQUENCE_BITS) + SNOWFLAKE_EPOCH_MS

    def most_followed_by_viewers(self, count: int) -> list[int]:
        """The `count` accounts most viewers follow (ties: the more followed overall):
        the followees whose long histories the history network adds."""
        among_viewers = Counter(f for v in self.viewers for f in self.following[v])
        ranked = sorted(among_viewers, key=lambda u: (-among_viewers[u], -self.follower_count[u]))
        return ranked[:count]


def build_network(cfg: Config) -> Network:
    """The network of a config (see the module doc for its shape)."""
    rng = random.Random(cfg.seed)  # noqa: S311 - synthetic data, not secrets
    n = cfg.users
    ids = list(range(1, n + 1))
    order = ids[:]
    rng.shuffle(order)
    weight = [0.0] * (n + 1)
    for rank, user in enumerate(order):
        weight[user] = 1.0 / (rank + 2)
    cumulative = list(itertools.accumulate(weight[1:]))
    viewers = rng.sample(ids, cfg.viewers)
    viewer_set = set(viewers)
    following: list[list[int]] = [[]]
    for user in ids:
        if user in viewer_set:
            want = cfg.viewer_follows
        else:
            want = max(1, min(n // 4, int(rng.lognormvariate(math.log(25), 1.1))))
        chosen: dict[int, None] = {}
        while len(chosen) < want:
            for followee in rng.choices(ids, cum_weights=cumulative, k=(want - len(chosen)) * 2):
                if followee != user:
                    chosen[followee] = None
        following.append(list(chosen)[:want])

    activity = [rng.paretovariate(1.2) for _ in ids]
    authors = rng.choices(ids, weights=activity, k=cfg.posts)
    newest = int(time.time() * 1000) - 60_000
    moments = sorted(rng.sample(range(newest - RECENT_SPAN_MS, newest), cfg.posts))
    # One millisecond per post, sequence 0 for the post and 1 for its media: unique ids.
    post_ids = [snowflake(ms, 0) for ms in moments]
    times = [datetime.fromtimestamp(ms / 1000, UTC) for ms in moments]
    net = Network(n, following, viewers, post_ids, authors, times)
    net.follower_count = [0] * (n + 1)
    for followees in following:
        for followee in followees:
            net.follower_count[followee] += 1
    net.post_count = [0] * (n + 1)
    for author in authors:
        net.post_count[author] += 1
    return net


def feed_ids(net: Network, by_author: list[list[int]], user: int, cap: int) -> list[int]:
    """What `home_feed_ids(limit=cap + 1)` returns: own and followees' posts, newest first."""
    candidates = list(by_author[user])
    for followee in net.following[user]:
        candidates += by_author[followee]
    if len(candidates) > 4 * (cap + 1):
        return heapq.nlargest(cap + 1, candidates)
    candidates.sort(reverse=True)
    return candidates[: cap + 1]
