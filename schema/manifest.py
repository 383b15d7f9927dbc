"""Build a trusted-documents manifest from .graphql files.

    python -m schema.manifest src/graphql/*.graphql -o trusted-documents.json
    python -m schema.manifest src/graphql/ --per-operation --prefixed -o manifest.json
    python -m schema.manifest --web          # what `make documents` runs

Each file (or, with `--per-operation`, each operation with the fragments it uses,
wherever among the given files they are defined) is checked against `schema.graphql`
and written as `{"<sha256 hex>": "<document>"}`, the format `TRUSTED_DOCUMENTS` loads.
The hash is taken over the exact text the client must send: a whole file byte for byte,
or an operation as graphql-core prints it. A client that sends something else (Apollo
Client adds `__typename`, Relay and GraphQL Code Generator print their own text) must
use its own tool's manifest, merged in with `--include`; see docs/persisted-queries.md.

`--web` generates the reference web client's two files from web/graphql/*.graphql:
web/app/documents.js (each operation's text and hash, imported by the client) and
web/trusted-documents.json (the server's default manifest), which also takes in the
persisted documents GraphQL Code Generator wrote for the TypeScript example
(examples/typescript), so both clients' hashes are trusted.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
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

from schema.documents import ManifestError, hash_document, load_manifest
from settings import ROOT

WEB_DOCUMENTS = ROOT / "web" / "graphql"
WEB_DOCUMENTS_JS = ROOT / "web" / "app" / "documents.js"
WEB_MANIFEST = ROOT / "web" / "trusted-documents.json"
CODEGEN_DOCUMENTS = ROOT / "examples" / "typescript" / "src" / "gql" / "persisted-documents.json"
WEB_COMMAND = "`make documents` (python -m schema.manifest --web)"


class _SpreadCollector(Visitor):
    """The names of the fragments a node spreads (any order: `_fragments_used` sorts)."""

    def __init__(self) -> None:
        super().__init__()
        self.names: set[str] = set()

    def enter_fragment_spread(self, node: FragmentSpreadNode, *_: object) -> None:
        self.names.add(node.name.value)


def _fragments_used(
    node: OperationDefinitionNode | FragmentDefinitionNode,
    fragments: dict[str, FragmentDefinitionNode],
) -> list[FragmentDefinitionNode]:
    """The fragments `node` spreads, transitively, each once, in the order this tool has
    always printed them: the names a node spreads are added in alphabetical order (not
    the order they appear in), and the added fragments are searched for further spreads
    last-added first (a stack): `query Q { ...B ...A }`, where A spreads C and B spreads
    D, prints Q, A, B, D, C. Do not change it: the order is part of the printed text, so
    of every hash a `--per-operation` manifest holds, and app builds already shipped
    send those hashes (with TRUSTED_DOCUMENTS_ONLY a rebuilt manifest refuses them)."""
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


def _print_operation(
    operation: OperationDefinitionNode, fragments: dict[str, FragmentDefinitionNode]
) -> str:
    parts = [operation, *_fragments_used(operation, fragments)]
    return "\n\n".join(print_ast(part) for part in parts)


def operations_of(document: DocumentNode) -> list[str]:
    """One printed document per operation, each with the fragments it needs."""
    fragments = {
        d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)
    }
    return [
        _print_operation(definition, fragments)
        for definition in document.definitions
        if isinstance(definition, OperationDefinitionNode)
    ]


@dataclass(frozen=True)
class Operation:
    path: Path
    name: str | None
    text: str


def _graphql_files(paths: Iterable[Path]) -> list[Path]:
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            files.extend(sorted(p for p in path.rglob("*") if p.suffix in (".graphql", ".gql")))
        else:
            files.append(path)
    return files


def _parse_files(
    paths: Sequence[Path], problems: list[str]
) -> list[tuple[Path, str, DocumentNode]]:
    parsed = []
    for path in _graphql_files(paths):
        text = path.read_text(encoding="utf-8")
        try:
            parsed.append((path, text, parse(text)))
        except GraphQLError as exc:
            problems.append(f"{path}: {exc.message}")
    return parsed


def _operations(
    parsed: Sequence[tuple[Path, str, DocumentNode]], problems: list[str]
) -> list[Operation]:
    """Every operation of the files, printed with the fragments it uses from any file."""
    fragments: dict[str, FragmentDefinitionNode] = {}
    where: dict[str, Path] = {}
    for path, _, document in parsed:
        for definition in document.definitions:
            if isinstance(definition, FragmentDefinitionNode):
                name = definition.name.value
                if name in where and where[name] == path:
                    problems.append(f"{path}: fragment {name} is defined twice")
                elif name in where:
                    problems.append(f"{path}: fragment {name} is also defined in {where[name]}")
                fragments[name] = definition
                where[name] = path
    return [
        Operation(
            path,
            definition.name.value if definition.name else None,
            _print_operation(definition, fragments),
        )
        for path, _, document in parsed
        for definition in document.definitions
        if isinstance(definition, OperationDefinitionNode)
    ]


def _validated(
    path: Path, document: str, schema: GraphQLSchema | None, problems: list[str]
) -> bool:
    """Whether the document parses and (given a schema) validates; what is wrong goes
    to `problems` (a document from an included manifest may not even parse)."""
    try:
        node = parse(document)
    except GraphQLError as exc:
        problems.append(f"{path}: {exc.message}")
        return False
    if schema is None:
        return True
    errors = validate(schema, node)
    problems.extend(f"{path}: {error.message}" for error in errors)
    return not errors


def build_manifest(
    paths: Sequence[Path],
    *,
    schema: GraphQLSchema | None,
    per_operation: bool = False,
    prefixed: bool = False,
    include: Sequence[Path] = (),
) -> dict[str, str]:
    """`{hash: document}` for the given files or directories (recursing into *.graphql,
    *.gql), plus the documents of the `include`d manifests (any format the server loads).
    Raises ValueError listing every document that fails to parse or validate."""
    problems: list[str] = []
    parsed = _parse_files(paths, problems)
    documents: list[tuple[Path, str]]
    if per_operation:
        documents = [(op.path, op.text) for op in _operations(parsed, problems)]
    else:
        documents = [(path, text) for path, text, _ in parsed]
    for manifest_path in include:
        try:
            documents.extend((manifest_path, doc) for doc in load_manifest(manifest_path).values())
        except ManifestError as exc:
            problems.append(str(exc))
    manifest: dict[str, str] = {}
    for path, document in documents:
        if _validated(path, document, schema, problems):
            digest = hash_document(document)
            manifest[f"sha256:{digest}" if prefixed else digest] = document
    if problems:
        raise ValueError("\n".join(problems))
    return dict(sorted(manifest.items()))


def named_operations(paths: Sequence[Path], *, schema: GraphQLSchema | None) -> dict[str, str]:
    """`{operation name: printed document}` for a client that looks operations up by
    name. Raises ValueError on anonymous or duplicate operations, and as build_manifest."""
    problems: list[str] = []
    operations = _operations(_parse_files(paths, problems), problems)
    named: dict[str, str] = {}
    origin: dict[str, Path] = {}
    for op in operations:
        if op.name is None:
            problems.append(f"{op.path}: every operation needs a name")
        elif op.name in named:
            problems.append(f"{op.path}: operation {op.name} is also defined in {origin[op.name]}")
        elif _validated(op.path, op.text, schema, problems):
            named[op.name] = op.text
            origin[op.name] = op.path
    if problems:
        raise ValueError("\n".join(problems))
    return named


def documents_module(operations: dict[str, str], *, source: str, command: str) -> str:
    """An ES module exporting `documents = {Name: {text, hash}}` (web/app/documents.js)."""
    entries = {
        name: {"text": text, "hash": hash_document(text)} for name, text in operations.items()
    }
    return (
        f"// Generated from {source} by {command}: do not edit.\n"
        "// Each operation with the fragments it uses, as the client sends it; `hash` is the\n"
        "// SHA-256 of `text`, and web/trusted-documents.json holds the same documents.\n"
        f"export const documents = {json.dumps(entries, indent=2, ensure_ascii=False)};\n"
    )


def manifest_json(manifest: dict[str, str]) -> str:
    return json.dumps(manifest, indent=2, ensure_ascii=False) + "\n"


def web_client_files(schema: GraphQLSchema | None = None) -> dict[Path, str]:
    """The contents `make documents` writes: web/app/documents.js and
    web/trusted-documents.json (the web client's operations, and the TypeScript
    example's persisted documents when they have been generated)."""
    if schema is None:
        schema = build_schema((ROOT / "schema.graphql").read_text(encoding="utf-8"))
    operations = named_operations([WEB_DOCUMENTS], schema=schema)
    include = [CODEGEN_DOCUMENTS] if CODEGEN_DOCUMENTS.is_file() else []
    manifest = build_manifest([WEB_DOCUMENTS], schema=schema, per_operation=True, include=include)
    source = f"{WEB_DOCUMENTS.relative_to(ROOT)}/*.graphql"
    return {
        WEB_DOCUMENTS_JS: documents_module(operations, source=source, command=WEB_COMMAND),
        WEB_MANIFEST: manifest_json(manifest),
    }


def _write_web_files(schema: GraphQLSchema) -> None:
    files = web_client_files(schema)
    for path, text in files.items():
        path.write_text(text, encoding="utf-8")
    count = len(json.loads(files[WEB_MANIFEST]))
    print(
        f"wrote {WEB_DOCUMENTS_JS.relative_to(ROOT)} and {WEB_MANIFEST.relative_to(ROOT)} "
        f"({count} documents)",
        file=sys.stderr,
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m schema.manifest",
        description="Build a trusted-documents manifest ({sha256: document}) from .graphql files.",
    )
    parser.add_argument("paths", nargs="*", type=Path, help=".graphql files or directories")
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
        "--include",
        action="append",
        type=Path,
        default=[],
        metavar="MANIFEST",
        help="also take in the documents of this manifest (e.g. GraphQL Code Generator's "
        "persisted-documents.json); repeatable",
    )
    parser.add_argument(
        "--web",
        action="store_true",
        help="write web/app/documents.js and web/trusted-documents.json from web/graphql/ "
        "(what `make documents` runs); takes no paths",
    )
    parser.add_argument(
        "--schema",
        type=Path,
        default=ROOT / "schema.graphql",
        help="SDL to validate against (default: the committed schema.graphql)",
    )
    parser.add_argument("--no-validate", action="store_true", help="skip schema validation")
    args = parser.parse_args(argv)
    if args.web and (args.paths or args.output or args.include or args.no_validate):
        parser.error("--web takes no paths, --output, --include or --no-validate")
    if not args.web and not args.paths:
        parser.error("give .graphql files or directories (or --web)")
    try:
        sdl = args.schema.read_text(encoding="utf-8")
        if args.web:
            _write_web_files(build_schema(sdl))
            return 0
        schema = None if args.no_validate else build_schema(sdl)
        manifest = build_manifest(
            args.paths,
            schema=schema,
            per_operation=args.per_operation,
            prefixed=args.prefixed,
            include=args.include,
        )
    except ValueError as exc:
        print(exc, file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"cannot read documents: {exc}", file=sys.stderr)
        return 1
    out = manifest_json(manifest)
    if args.output:
        args.output.write_text(out, encoding="utf-8")
        print(f"{len(manifest)} documents written to {args.output}", file=sys.stderr)
    else:
        sys.stdout.write(out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
