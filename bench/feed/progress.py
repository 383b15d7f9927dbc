"""Progress lines: one line per step, flushed at once (a long step says what it is doing)."""

from __future__ import annotations

import time

_STARTED = time.monotonic()


def progress(message: str) -> None:
    """Print `message` prefixed with the seconds since the bench started."""
    print(f"[{time.monotonic() - _STARTED:6.1f}s] {message}", flush=True)
