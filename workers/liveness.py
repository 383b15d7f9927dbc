"""Which workers are alive: heartbeat keys in Redis, plus a process check on the same host.

Each worker process writes `worker:heartbeat:<name>` every `WORKER_HEARTBEAT_SECONDS`,
with an expiry of two intervals set by Redis itself: while the key exists the worker is
alive, and no host's clock is compared with another's. A worker whose process is gone is
dead at once for a reader on the same machine and PID namespace (its replacement under
`make run` or systemd), whatever its key says; for anyone else, once its key has expired.

Deciding "dead" from a missing key needs care after Redis itself was away: a Redis
restarted without its data, or down longer than two beats, holds no key at all until the
workers beat again. So an absent key counts only when the reader's own heartbeat is in
Redis and it has beaten without a failure for two intervals (`dead(..., watched_for=)`):
every live worker has had a chance to beat since. `/readyz` reports these, and the
sweepers re-run the work of dead workers (workers/media.py, `release_dead_workers_jobs`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import socket
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

HEARTBEAT_PREFIX = "worker:heartbeat:"
# A heartbeat key lives this many intervals: a worker that missed two beats is dead.
STALE_AFTER_BEATS = 2


def _read(path: str) -> str:
    with contextlib.suppress(OSError):
        return Path(path).read_text().strip()
    return ""


def _process_start(pid: int) -> str:
    """The process' start time in clock ticks since boot (field 22 of /proc/<pid>/stat),
    or "" when there is no such process (or no /proc)."""
    stat = _read(f"/proc/{pid}/stat")
    # The command name (field 2) may hold spaces and parentheses: split after its last ")".
    fields = stat.rpartition(")")[2].split()
    return fields[19] if len(fields) > 19 else ""


def _namespace() -> str:
    """This machine's boot and PID namespace: processes sharing it can see each other's
    /proc entries (two containers of one pod may share a hostname but not this)."""
    boot = _read("/proc/sys/kernel/random/boot_id")
    with contextlib.suppress(OSError):
        return f"{boot}/{os.readlink('/proc/self/ns/pid')}" if boot else ""
    return ""


def _tag(namespace: str) -> str:
    return hashlib.sha256(namespace.encode()).hexdigest()[:12] if namespace else "unknown"


@dataclass(frozen=True)
class WorkerIdentity:
    """One worker process: host and pid for people, the rest to tell a live process
    from a dead one whose pid was reused. Its `name` carries all of it (the namespace
    as a short hash), so that a reader can check a worker whose heartbeat is gone."""

    host: str
    pid: int
    started: str
    namespace: str

    @classmethod
    def current(cls) -> WorkerIdentity:
        pid = os.getpid()
        return cls(socket.gethostname(), pid, _process_start(pid), _namespace())

    @property
    def name(self) -> str:
        return f"{self.host}:{self.pid}:{self.started or 'unknown'}:{_tag(self.namespace)}"


def runs_here(name: str) -> bool | None:
    """Whether the worker called `name` still runs, if this process can tell (same machine
    and PID namespace, and the name is one of ours), else None."""
    parts = name.rsplit(":", 3)
    if len(parts) != 4 or parts[3] == "unknown" or parts[2] == "unknown":
        return None
    _, pid, started, tag = parts
    if tag != _tag(_namespace()) or not pid.isdigit():
        return None
    return _process_start(int(pid)) == started


@dataclass(frozen=True)
class WorkerStatus:
    """What /readyz reports of one worker: its last beat's age (by Redis' clock, from
    the key's remaining time to live)."""

    name: str
    age_seconds: float
    alive: bool

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


async def beat(redis: Any, identity: WorkerIdentity, interval: int) -> None:
    record = {"at": time.time(), **asdict(identity)}  # for people; liveness is the key
    await redis.set(
        HEARTBEAT_PREFIX + identity.name, json.dumps(record), ex=STALE_AFTER_BEATS * interval
    )


async def forget(redis: Any, identity: WorkerIdentity) -> None:
    """A worker stopping cleanly removes its heartbeat at once."""
    await redis.delete(HEARTBEAT_PREFIX + identity.name)


async def workers(redis: Any, interval: int) -> list[WorkerStatus]:
    """Every worker with a heartbeat key, alive or not (a killed one on this machine, until
    its key expires), by name."""
    keys = sorted([_text(key) async for key in redis.scan_iter(f"{HEARTBEAT_PREFIX}*")])
    if not keys:
        return []
    async with redis.pipeline(transaction=False) as pipe:
        for key in keys:
            pipe.pttl(key)
        ttls = await pipe.execute()
    keep_ms = STALE_AFTER_BEATS * interval * 1000
    found = []
    for key, ttl in zip(keys, ttls, strict=True):
        if ttl is None or ttl == -2:  # expired between SCAN and PTTL
            continue
        name = key.removeprefix(HEARTBEAT_PREFIX)
        age = max(0.0, (keep_ms - ttl) / 1000) if ttl >= 0 else -1.0
        found.append(WorkerStatus(name, round(age, 1), runs_here(name) is not False))
    return found


async def dead(
    redis: Any, names: set[str], me: str, *, watched_for: float, interval: int
) -> set[str]:
    """The workers among `names` known to be dead: gone from this machine, or (when the
    reader `me` has beaten without a failure for `watched_for` >= two intervals and its
    own heartbeat is there) without a heartbeat key. Others are alive, or not known dead."""
    others = sorted(names - {me})
    if not others:
        return set()
    present = await redis.exists(HEARTBEAT_PREFIX + me)
    keys = [HEARTBEAT_PREFIX + name for name in others]
    async with redis.pipeline(transaction=False) as pipe:
        for key in keys:
            pipe.exists(key)
        exists = await pipe.execute()
    trust_absence = bool(present) and watched_for >= STALE_AFTER_BEATS * interval
    return {
        name
        for name, there in zip(others, exists, strict=True)
        if runs_here(name) is False or (not there and trust_absence)
    }


def watched_for(ctx: dict[str, Any]) -> float:
    """How long this worker has beaten without a failure (`workers.settings` keeps
    `beating_since`, a monotonic time, None after a failed beat)."""
    since = ctx.get("beating_since")
    return 0.0 if since is None else time.monotonic() - float(since)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


# Which worker runs an arq job (arq itself records only that someone does: its
# in-progress key, kept for the job's timeout + 10 s, ~610 s for the longest here).
JOB_OWNER_PREFIX = "worker:job:"
JOB_OWNER_TTL_SECONDS = 24 * 3600
IN_PROGRESS_PREFIX = "arq:in-progress:"

# Drop a dead worker's job marks only if the job is still recorded as that worker's: if
# another recoverer released it first and a worker has started it again since, the
# owner record names that worker (set by its on_job_start) or is gone, and the new
# in-progress mark stays. KEYS: owner record, arq's in-progress mark; ARGV: dead name.
_RELEASE_IF_OWNED = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1], KEYS[2])
  return 1
end
return 0
"""


async def job_started(redis: Any, identity: WorkerIdentity, job_id: str) -> None:
    await redis.set(JOB_OWNER_PREFIX + job_id, identity.name, ex=JOB_OWNER_TTL_SECONDS)


async def job_ended(redis: Any, job_id: str) -> None:
    await redis.delete(JOB_OWNER_PREFIX + job_id)


async def job_owners(redis: Any, job_ids: list[str]) -> list[str | None]:
    """The worker recorded for each job (None: no worker has it now)."""
    if not job_ids:
        return []
    raw = await redis.mget([JOB_OWNER_PREFIX + job_id for job_id in job_ids])
    return [None if value is None else _text(value) for value in raw]


async def release_dead_workers_jobs(
    redis: Any,
    me: WorkerIdentity,
    interval: int,
    *,
    watched_for: float,
    skip: tuple[str, ...] = (),
) -> list[str]:
    """Jobs a dead worker was running: drop arq's in-progress mark, so arq runs each again
    at once (as its own retry, counted against max_tries) instead of ~610 s later.
    Returns their ids. Jobs whose id starts with a `skip` prefix are left alone."""
    marks = [_text(key) async for key in redis.scan_iter(f"{IN_PROGRESS_PREFIX}*")]
    job_ids = [
        mark.removeprefix(IN_PROGRESS_PREFIX)
        for mark in marks
        if not mark.removeprefix(IN_PROGRESS_PREFIX).startswith(skip)
    ]
    owners = await job_owners(redis, job_ids)
    gone = await dead(
        redis,
        {owner for owner in owners if owner is not None},
        me.name,
        watched_for=watched_for,
        interval=interval,
    )
    release = redis.register_script(_RELEASE_IF_OWNED)
    released = []
    for job_id, owner in zip(job_ids, owners, strict=True):
        if owner in gone:
            keys = [JOB_OWNER_PREFIX + job_id, IN_PROGRESS_PREFIX + job_id]
            if await release(keys=keys, args=[owner]):
                released.append(job_id)
    return released
