"""What the benches and `make seed` share: GraphQL documents, machine facts, results."""

from __future__ import annotations

import json
import os
import platform
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"

# The scripts run as `python bench/<name>.py`: put the project itself on the path, so
# they do not depend on how (or whether) the venv's editable install maps its packages.
if str(ROOT) not in sys.path:
    sys.path.insert(1, str(ROOT))

# The page a client's home screen asks for: the document every feed figure is about.
FEED_QUERY = """query Feed($after: String) {
  feed(first: 20, after: $after) {
    edges {
      cursor
      node {
        id caption createdAt
        author { id username displayName }
        media { url width height placeholder }
      }
    }
    pageInfo { hasNextPage endCursor }
  }
}"""

# A post in three steps (createPost, the bytes to each upload target, completeUpload).
CREATE_POST = """
mutation ($input: CreatePostInput!) {
  createPost(input: $input) {
    post { id status }
    uploads { method url headers { name value } fields { name value } partSize partUrls }
    errors { field message code }
  }
}"""
COMPLETE_UPLOAD = """
mutation ($id: ID!) {
  completeUpload(postId: $id) { post { id status } errors { field message code } }
}"""

# What a live client subscribes to (graphql-transport-ws).
FEED_ITEM_ADDED = "subscription { feedItemAdded { id } }"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_info() -> dict[str, Any]:
    """Enough to tell two result files from different machines apart."""
    try:
        import psutil

        memory_gb: float | None = round(psutil.virtual_memory().total / 2**30, 1)
    except ImportError:  # psutil is a dev dependency; the facts below do not need it
        memory_gb = None
    return {
        "cores": os.cpu_count(),
        "cpu_model": cpu_model(),
        "memory_gb": memory_gb,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def stamp() -> str:
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")


def write_results(kind: str, report: dict[str, Any]) -> Path:
    """bench/results/<kind>-<timestamp>.json (ignored by git: results are per machine)."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{kind}-{report.get('timestamp') or stamp()}.json"
    path.write_text(json.dumps(report, indent=2, default=str) + "\n")
    return path
