"""Feed jobs: fan-out on write, and backfill after a threshold crossing. The rules are
`domain.feed.home.HomeFeed`'s; these are the arq entry points.

Fan-out is at least once: a post's READY transition writes an outbox row in the same
transaction, relayed by `workers.outbox.relay_outbox` (re-exported here with
`kick_relay` and `prune_outbox`, where the worker settings and the media jobs take them)
into a job with a deterministic id. Fan-out is idempotent (ZADD of a member already
there changes nothing) and resumable (it records the last finished follower batch).
"""

from __future__ import annotations

import time
from typing import Any

from infra.metrics import FAN_OUT_LAG
from infra.resources import Resources
from workers.outbox import kick_relay, prune_outbox, relay_outbox

__all__ = [
    "announce_celebrity",
    "backfill_author",
    "fan_out_post",
    "kick_relay",
    "prune_outbox",
    "relay_outbox",
]


async def fan_out_post(
    ctx: dict[str, Any], post_id: int, ready_at: float | None = None
) -> dict[str, int]:
    """Put a READY post into its author's and followers' feeds (`HomeFeed.fan_out_post`).
    `ready_at`, when the outbox row says it, times the lag from READY to the last feed."""
    resources: Resources = ctx["resources"]
    delivered = await resources.home_feed.fan_out_post(post_id)
    if ready_at is not None and delivered.get("feeds"):  # not for a post deleted since
        FAN_OUT_LAG.observe(max(0.0, time.time() - float(ready_at)))
    return delivered


async def backfill_author(ctx: dict[str, Any], author_id: int) -> int:
    """An author fell below the celebrity threshold (`HomeFeed.backfill_author`)."""
    resources: Resources = ctx["resources"]
    return await resources.home_feed.backfill_author(author_id)


async def announce_celebrity(ctx: dict[str, Any], author_id: int) -> int:
    """An author crossed the threshold upwards (`HomeFeed.announce_celebrity`)."""
    resources: Resources = ctx["resources"]
    return await resources.home_feed.announce_celebrity(author_id)
