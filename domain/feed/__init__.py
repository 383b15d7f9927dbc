"""The home feed: every rule of it, in one place.

`domain.feed.home.HomeFeed` owns reading a page (Redis ids, the celebrity merge, the
PostgreSQL continuation past the cap, the single-flight rebuild of a lost feed,
stale-id cleanup, hydration), its reactions to the follow graph (follow, unfollow,
block, a threshold crossing) and to a deleted post, and fan-out on write. It takes
the engine, the Redis feed store, the record cache and settings, never a GraphQL
`info`: the resolver, the worker and the benchmark's floor call the same code.
`domain.feed.queries` holds the PostgreSQL side (and the fan-out outbox).

Nothing is imported here, so that `domain.posts` (which writes the outbox row) and
`domain.feed.home` (which reads posts) can import each other's modules freely.
"""
