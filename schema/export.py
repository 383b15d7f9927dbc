"""Write the server's SDL to schema.graphql: `python -m schema.export [PATH]`."""

from __future__ import annotations

import sys
from pathlib import Path

from schema import create_schema
from settings import ROOT, Settings

SCHEMA_PATH = ROOT / "schema.graphql"


def sdl() -> str:
    return create_schema(Settings()).as_str() + "\n"


def main(argv: list[str]) -> int:
    path = Path(argv[0]) if argv else SCHEMA_PATH
    path.write_text(sdl())
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
