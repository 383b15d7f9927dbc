"""Build a trusted-documents manifest from .graphql files.

    python -m schema.manifest src/graphql/*.graphql -o trusted-documents.json
    python -m schema.manifest src/graphql/ --per-operation --prefixed -o manifest.json

Each file (or, with `--per-operation`, each operation with the fragments it uses) is
checked against `schema.graphql` and written as `{"<sha256 hex>": "<document>"}`,
the format `TRUSTED_DOCUMENTS` loads. The hash is taken over the exact text the
client must send: a whole file byte for byte, or an operation as graphql-core prints
it. A client that sends something else (Apollo Client adds `__typename`, Relay and
GraphQL Code Generator print their own text) must use its own tool's manifest;
see docs/persisted-queries.md.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path

from graphql import (
    DocumentNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
    GraphQLSchema,
    OperationDefinitionNode,
    build_schema,
    parse,
    print_ast,
    validate,
    visit,
)
from graphql.language import Visitor

from schema.documents import hash_document
from settings import ROOT


class _SpreadCollector(Visitor):
    def __init__(self) -> None:
        super().__init__()
        self.names: set[str] = set()

    def enter_fragment_spread(self, node: FragmentSpreadNode, *_: object) -> None:
        self.names.add(node.name.value)


def _fragments_used(
    node: OperationDefinitionNode | FragmentDefinitionNode,
    fragments: dict[str, FragmentDefinitionNode],
) -> list[FragmentDefinitionNode]:
    """The fragments `node` spreads, recursively, in first-use order."""
    seen: dict[str, FragmentDefinitionNode] = {}
    pending = [node]
    while pending:
        collector = _SpreadCollector()
        visit(pending.pop(), collector)
        for name in sorted(collector.names):
            if name not in seen and name in fragments:
                seen[name] = fragments[name]
                pending.append(fragments[name])
    return list(seen.values())


def operations_of(document: DocumentNode) -> list[str]:
    """One printed document per operation, each with the fragments it needs."""
    fragments = {
        d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)
    }
    printed = []
    for definition in document.definitions:
        if isinstance(definition, OperationDefinitionNode):
            parts = [definition, *_fragments_used(definition, fragments)]
            printed.append("\n\n".join(print_ast(part) for part in parts))
    return printed


def _graphql_files(paths: Iterable[Path]) -> list[Path]:
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            files.extend(sorted(p for p in path.rglob("*") if p.suffix in (".graphql", ".gql")))
        else:
            files.append(path)
    return files


def build_manifest(
    paths: Sequence[Path],
    *,
    schema: GraphQLSchema | None,
    per_operation: bool = False,
    prefixed: bool = False,
) -> dict[str, str]:
    """`{hash: document}` for the given files or directories (recursing into *.graphql,
    *.gql). Raises ValueError listing every document that fails to parse or validate."""
    manifest: dict[str, str] = {}
    problems: list[str] = []
    for path in _graphql_files(paths):
        text = path.read_text(encoding="utf-8")
        try:
            parsed = parse(text)
        except GraphQLError as exc:
            problems.append(f"{path}: {exc.message}")
            continue
        documents = operations_of(parsed) if per_operation else [text]
        for document in documents:
            if schema is not None:
                errors = validate(schema, parse(document))
                problems.extend(f"{path}: {error.message}" for error in errors)
                if errors:
                    continue
            digest = hash_document(document)
            manifest[f"sha256:{digest}" if prefixed else digest] = document
    if problems:
        raise ValueError("\n".join(problems))
    return dict(sorted(manifest.items()))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m schema.manifest",
        description="Build a trusted-documents manifest ({sha256: document}) from .graphql files.",
    )
    parser.add_argument("paths", nargs="+", type=Path, help=".graphql files or directories")
    parser.add_argument("-o", "--output", type=Path, help="write here instead of stdout")
    parser.add_argument(
        "--per-operation",
        action="store_true",
        help="one document per operation (printed by graphql-core, with its fragments) "
        "instead of one per file as written",
    )
    parser.add_argument(
        "--prefixed", action="store_true", help="write keys as 'sha256:<hex>' instead of '<hex>'"
    )
    parser.add_argument(
        "--schema",
        type=Path,
        default=ROOT / "schema.graphql",
        help="SDL to validate against (default: the committed schema.graphql)",
    )
    parser.add_argument("--no-validate", action="store_true", help="skip schema validation")
    args = parser.parse_args(argv)
    schema = None if args.no_validate else build_schema(args.schema.read_text(encoding="utf-8"))
    try:
        manifest = build_manifest(
            args.paths, schema=schema, per_operation=args.per_operation, prefixed=args.prefixed
        )
    except ValueError as exc:
        print(exc, file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"cannot read documents: {exc}", file=sys.stderr)
        return 1
    out = json.dumps(manifest, indent=2, ensure_ascii=False) + "\n"
    if args.output:
        args.output.write_text(out, encoding="utf-8")
        print(f"{len(manifest)} documents written to {args.output}", file=sys.stderr)
    else:
        sys.stdout.write(out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
