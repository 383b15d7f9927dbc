"""Request-scoped DataLoaders, built per request in `get_context` (never at import time)."""

from loaders.users import FollowedByViewerLoader, FollowsViewerLoader, Loaders, UserByIdLoader

__all__ = ["FollowedByViewerLoader", "FollowsViewerLoader", "Loaders", "UserByIdLoader"]
