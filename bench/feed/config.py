"""The feed bench's knobs: one frozen `Config`, built from the command line."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass, replace

HELP = "Home feed benchmark: fan-out, the feed page against its baselines, live delivery."


@dataclass(frozen=True)
class Config:
    """Sizes and durations of one run (`--quick` shrinks them for a smoke test)."""

    users: int = 10_000
    posts: int = 100_000
    viewers: int = 50
    viewer_follows: int = 500
    celebrities: int = 5
    read_threshold: int | None = None  # None: the follower count of the k-th most followed
    fanout_threshold: int = 10_000
    feed_cap: int = 800
    fanout_sizes: tuple[int, ...] = (100, 5_000, 9_999)
    clients: tuple[int, ...] = (1, 16, 64)
    duration: float = 6.0
    warmup: float = 1.0
    # Half of the floor's saturation throughput: the fixed offered rate of the open loop.
    open_fraction: float = 0.5
    open_duration: float = 8.0
    open_connections: int = 64
    # The history network: this many of the viewers' followees get this many older posts.
    history_authors: int = 500
    history_posts_each: int = 2_000
    history_clients: tuple[int, ...] = (1, 16, 64)
    # API processes compared (uvicorn --workers).
    workers: tuple[int, ...] = (1, 2)
    live_subscribers: int = 1_000
    live_posts: int = 3
    skip: tuple[str, ...] = ()  # phases left out
    seed: int = 42
    quick: bool = False


# Phases that can be left out (`--skip live,fanout`) when re-measuring one part.
PHASES = ("fixed", "workers", "social", "live", "history", "fanout")

QUICK = {
    "users": 1_500,
    "posts": 6_000,
    "viewers": 20,
    "viewer_follows": 200,
    "history_authors": 100,
    "history_posts_each": 500,
    "clients": (1, 16),
    "history_clients": (1, 16),
    "duration": 1.5,
    "warmup": 0.5,
    "open_duration": 2.0,
    "live_subscribers": 200,
    "live_posts": 2,
}


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.feed", description=HELP)
    add = parser.add_argument
    add("--quick", action="store_true", help="small network, short runs (~1.5 minutes)")
    add("--users", type=int, help="network size (10,000)")
    add("--posts", type=int, help="READY posts over the last 30 days (100,000)")
    add("--viewers", type=int, help="accounts the read phase logs in as (50)")
    add("--viewer-follows", type=int, help="followees of each viewer (500)")
    add("--celebrities", type=int, help="accounts pulled at read time (5)")
    add("--read-threshold", type=int, help="explicit read-phase celebrity threshold")
    add("--fanout-threshold", type=int, help="fan-out phase threshold (10,000)")
    add("--feed-cap", type=int, help="feed length kept in Redis (800)")
    add("--fanout-sizes", help="follower counts to fan out to (100,5000,9999)")
    add("--clients", help="closed-loop connection counts (1,16,64)")
    add("--duration", type=float, help="seconds measured per closed-loop run (6)")
    add("--warmup", type=float, help="seconds discarded at the start of each run (1)")
    add("--open-duration", type=float, help="seconds measured per fixed-rate run (8)")
    add("--history-authors", type=int, help="viewers' followees given a long history (500)")
    add("--history-posts-each", type=int, help="older posts per history author (2,000)")
    add("--history-clients", help="closed-loop connection counts on the history network")
    add("--workers", help="API process counts to compare (1,2)")
    add("--live-subscribers", type=int, help="WebSocket subscribers of one author (1,000)")
    add("--live-posts", type=int, help="posts delivered live, one after another (3)")
    add("--seed", type=int, help="random seed of the network (42)")
    add("--skip", help=f"phases to leave out, comma-separated: {', '.join(PHASES)}")
    return parser.parse_args(argv)


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split(",") if part.strip())


def build_config(args: argparse.Namespace) -> Config:
    """Defaults, then `--quick`, then explicit flags; refuses sizes that cannot work."""
    cfg = Config()
    if args.quick:
        cfg = replace(cfg, quick=True, **QUICK)  # type: ignore[arg-type]  # QUICK's keys are fields
    scalars = (
        "users", "posts", "viewers", "viewer_follows", "celebrities", "read_threshold",
        "fanout_threshold", "feed_cap", "duration", "warmup", "open_duration",
        "history_authors", "history_posts_each", "live_subscribers", "live_posts", "seed",
    )  # fmt: skip
    changes: dict[str, object] = {
        k: getattr(args, k) for k in scalars if getattr(args, k) is not None
    }
    for name in ("clients", "history_clients", "workers", "fanout_sizes"):
        if getattr(args, name):
            changes[name] = _ints(getattr(args, name))
    if args.skip:
        skip = tuple(part.strip() for part in args.skip.split(",") if part.strip())
        if not set(skip) <= set(PHASES):
            raise SystemExit(f"--skip: choose among {', '.join(PHASES)}")
        changes["skip"] = skip
    cfg = replace(cfg, **changes)  # type: ignore[arg-type]  # names checked above
    if not args.fanout_sizes and cfg.users <= 9_999:
        cfg = replace(cfg, fanout_sizes=(100, cfg.users // 2, cfg.users - 1))
    if max(cfg.fanout_sizes) > cfg.users:
        raise SystemExit("--fanout-sizes: an author cannot have more followers than --users")
    if max(cfg.fanout_sizes) >= cfg.fanout_threshold:
        raise SystemExit("--fanout-sizes must stay below --fanout-threshold to be fanned out")
    if cfg.viewer_follows >= cfg.users:
        raise SystemExit("--viewer-follows must be below --users")
    if cfg.live_subscribers >= cfg.fanout_threshold:
        raise SystemExit("--live-subscribers must stay below --fanout-threshold")
    return cfg
