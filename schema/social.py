"""Social: types, payloads and root fields (filled in by issue 8's social work)."""

from __future__ import annotations

# Root-field classes this module adds to Query, Mutation and Subscription (schema/root.py
# merges them), and extra types the schema must know.
QUERIES: tuple[type, ...] = ()
MUTATIONS: tuple[type, ...] = ()
SUBSCRIPTIONS: tuple[type, ...] = ()
TYPES: tuple[type, ...] = ()
