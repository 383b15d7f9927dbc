"""arq workers: `arq workers.WorkerSettings`.

Imported lazily: the domain enqueues through `workers.jobs`, and loading the worker's
settings (which build the resource bundle, which builds the domain) on that import
would be a cycle.
"""

from typing import Any

__all__ = ["WorkerSettings"]


def __getattr__(name: str) -> Any:
    if name == "WorkerSettings":
        from workers.settings import WorkerSettings

        return WorkerSettings
    raise AttributeError(name)
