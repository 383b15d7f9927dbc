"""Hashtags and @mentions in captions and comments (issue 8, discovery work).

Interface: `hashtags_of(text) -> list[str]` (normalised: NFKC + case folding, unique, in
order of appearance) and `mentions_of(text) -> list[str]` (usernames, normalised as
usernames are). Stubs until the discovery work lands.
"""

from __future__ import annotations


def hashtags_of(text: str | None) -> list[str]:
    del text
    return []


def mentions_of(text: str | None) -> list[str]:
    del text
    return []
