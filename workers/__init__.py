"""arq workers: `arq workers.WorkerSettings`."""

from workers.settings import WorkerSettings

__all__ = ["WorkerSettings"]
