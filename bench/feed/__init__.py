"""The home feed benchmark: `make bench` (or `python -m bench.feed [--quick]`).

In one run on one machine, against the bench's own PostgreSQL and Redis:

- today's network (10,000 users, 100,000 recent posts, 50 viewers following 500) and
  a history network (the same plus ~1,000,000 older posts by the viewers' followees);
- the feed page through the API (`/graphql`, 1 and 2 uvicorn processes) against the
  naive design (fan-out on read in SQL) and the floor (the same `HomeFeed.read`
  without GraphQL), closed loop and at a fixed offered rate, with the PostgreSQL,
  Redis and server CPU each page costs;
- the feed page with its social fields (likeCount, commentCount, viewerHasLiked, the
  first 2 comments) against the same page without them, on posts with likes and a
  few comments, checked against PostgreSQL, with the SQL and Redis commands a warm
  social page costs (`--skip` the other phases to run only this one: a minute with
  `--quick`);
- live delivery to 1,000 WebSocket subscribers of one author;
- fan-out on write against Redis's own ZADD ceiling, and Redis memory per feed entry.

Modules: `config` (flags), `network` (the synthetic network), `seeding` (PostgreSQL and
Redis), `servers` (processes), `load` (the HTTP load generator), `pgcpu` (CPU
accounting), `apps` (the baselines), `reads`, `social`, `live`, `fanout` (the phases),
`report`, and `__main__` (the run, start to end). Results go to bench/results/feed-<time>.json;
docs/benchmarks.md explains every figure.
"""
