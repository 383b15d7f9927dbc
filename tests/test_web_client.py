"""The reference web client (web/): served at /app, whole, valid, and safe.

Cheap guards that need no browser (tests/browser/ drives it in Chromium): every file
the page loads is served with the right type, every operation in web/graphql/ validates
against schema.graphql and runs through the APQ protocol as the client speaks it, the
data-testid contract the browser tests select by is present in the sources, and no
source builds HTML from strings (API text is user input: captions, comments, names).
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

import httpx
import pytest
from graphql import (
    DocumentNode,
    FragmentDefinitionNode,
    GraphQLSchema,
    OperationDefinitionNode,
    build_schema,
    parse,
    validate,
)
from graphql.language import FragmentSpreadNode, Visitor, visit

from tests.conftest import Server

ROOT = Path(__file__).resolve().parent.parent
WEB = ROOT / "web"
SOURCES = [*sorted((WEB / "app").rglob("*.js")), WEB / "index.html"]
GENERATED = WEB / "app" / "documents.js"

# The data-testid contract of the common brief (tests/browser/ selects by these).
TESTIDS = """
login-form login-username login-password login-submit login-error signup-toggle signup-email
nav-feed nav-new-post nav-search nav-notifications notification-badge nav-profile logout
feed post post-author post-caption post-media post-placeholder post-image like-button
like-count comment-count comments comment comment-input comment-submit feed-sentinel feed-end
new-posts-banner
new-post-dialog file-input caption-input post-submit upload-progress upload-status
profile profile-username follower-count following-count post-count follow-button
profile-grid grid-item
stories-tray story-ring story-viewer story-media story-close
search-input search-results search-result
notifications notification
""".split()

# Module graph: `import ... from "x"`, `export ... from "x"` and `import "x"` statements.
IMPORT = re.compile(r"""^\s*(?:(?:import|export)\b[^'"]*?\bfrom|import)\s*["']([^"']+)["']""", re.M)
# <script src>, <link href> in index.html.
HTML_REF = re.compile(r"""<(?:script|link)\b[^>]*?\b(?:src|href)="([^"]+)\"""")
# gql("Name", ...) and subscribe("Name", ...) in the client.
OPERATION_USE = re.compile(r"""\b(?:gql|subscribe)\(\s*(?:[^"'()]*\?\s*)?["']([A-Za-z]\w*)["']""")
# Anything that turns a string into markup.
HTML_SINKS = re.compile(
    r"\.(?:innerHTML|outerHTML)\s*[+]?=|insertAdjacentHTML|document\.write|createContextualFragment"
    r"|DOMParser|srcdoc"
)


def load_schema() -> GraphQLSchema:
    return build_schema((ROOT / "schema.graphql").read_text())


def client_documents() -> tuple[list[OperationDefinitionNode], dict[str, FragmentDefinitionNode]]:
    operations: list[OperationDefinitionNode] = []
    fragments: dict[str, FragmentDefinitionNode] = {}
    for path in sorted((WEB / "graphql").glob("*.graphql")):
        for definition in parse(path.read_text()).definitions:
            if isinstance(definition, OperationDefinitionNode):
                operations.append(definition)
            elif isinstance(definition, FragmentDefinitionNode):
                assert definition.name.value not in fragments, f"fragment defined twice: {path}"
                fragments[definition.name.value] = definition
    return operations, fragments


def spreads(node: Any) -> set[str]:
    found: set[str] = set()

    class Collect(Visitor):
        def enter_fragment_spread(self, node: FragmentSpreadNode, *_: Any) -> None:
            found.add(node.name.value)

    visit(node, Collect())
    return found


def with_fragments(
    operation: OperationDefinitionNode, fragments: dict[str, FragmentDefinitionNode]
) -> DocumentNode:
    """The operation and every fragment it uses, transitively: what the client sends."""
    needed: list[str] = []
    todo = sorted(spreads(operation))
    while todo:
        name = todo.pop()
        if name not in needed:
            needed.append(name)
            todo.extend(sorted(spreads(fragments[name])))
    return DocumentNode(definitions=(operation, *(fragments[n] for n in needed)))


def generated_documents() -> dict[str, dict[str, str]]:
    """web/app/documents.js as data (`export const documents = {...};` holds JSON)."""
    text = GENERATED.read_text()
    start = text.index("export const documents =") + len("export const documents =")
    body = text[start:].strip().removesuffix(";")
    documents: dict[str, dict[str, str]] = json.loads(body)
    return documents


def strip_comments(source: str) -> str:
    source = re.sub(r"/\*.*?\*/", "", source, flags=re.DOTALL)
    return re.sub(r"(?m)^\s*//.*$", "", source)


# ------------------------------------------------------------------------ served


async def test_app_serves_index_html(server: Server) -> None:
    async with httpx.AsyncClient(base_url=server.base_url) as http:
        redirect = await http.get("/app")
        page = await http.get("/app/")

    assert redirect.status_code in (301, 307, 308)
    assert urlsplit(redirect.headers["location"]).path == "/app/"
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert '<script type="module" src="app/main.js"></script>' in page.text


async def test_every_file_the_page_loads_is_served(server: Server) -> None:
    """Walk index.html and the module graph over HTTP, as a browser would."""
    base = f"{server.base_url}/app/"
    seen: dict[str, httpx.Response] = {}
    async with httpx.AsyncClient() as http:
        index = await http.get(base)
        todo = [
            urljoin(base, ref)
            for ref in HTML_REF.findall(index.text)
            if not ref.startswith("data:")
        ]
        while todo:
            url = todo.pop()
            if url in seen:
                continue
            response = seen[url] = await http.get(url)
            assert response.status_code == 200, url
            if url.endswith(".js"):
                assert "javascript" in response.headers["content-type"], url
                todo += [urljoin(url, ref) for ref in IMPORT.findall(response.text)]
            elif url.endswith(".css"):
                assert response.headers["content-type"].startswith("text/css"), url

    loaded = {urlsplit(url).path.removeprefix("/app/") for url in seen}
    assert {"app/main.js", "app/styles.css", "app/documents.js"} <= loaded
    assert {"vendor/graphql-ws/client.js", "vendor/blurhash/blurhash.js"} <= loaded
    # No dead modules: every file of web/app/ is reachable from the page.
    on_disk = {str(p.relative_to(WEB)) for p in (WEB / "app").rglob("*") if p.is_file()}
    assert on_disk <= loaded, f"not loaded by the page: {sorted(on_disk - loaded)}"


def test_vendored_libraries_keep_their_licences() -> None:
    for library in ("graphql-ws", "blurhash"):
        folder = WEB / "vendor" / library
        licences = list(folder.glob("LICENSE*"))
        assert licences, f"{library}: no licence file"
        assert "Permission is hereby granted" in licences[0].read_text()
        assert (folder / "VERSION").read_text().startswith(library)
    script = (WEB / "vendor" / "update.sh").read_text()
    assert "npm pack" in script


# ---------------------------------------------------------------------- documents


def test_every_operation_validates_against_the_schema() -> None:
    schema = load_schema()
    operations, fragments = client_documents()
    names = [op.name.value for op in operations if op.name]

    assert len(names) == len(operations), "every operation is named"
    assert len(set(names)) == len(names), "operation names are unique"
    for operation in operations:
        errors = validate(schema, with_fragments(operation, fragments))
        assert not errors, f"{operation.name.value if operation.name else '?'}: {errors}"
    used = set().union(*(spreads(op) for op in operations))
    used |= set().union(*(spreads(fragments[name]) for name in used))
    assert set(fragments) == used, f"unused fragments: {set(fragments) - used}"


def test_the_client_only_sends_operations_it_has_documents_for() -> None:
    operations, _ = client_documents()
    defined = {op.name.value for op in operations if op.name}
    generated = generated_documents()
    used = {
        name
        for path in SOURCES
        if path != GENERATED
        for name in OPERATION_USE.findall(path.read_text())
    }

    assert used, "the pattern finds the client's gql()/subscribe() calls"
    assert used <= defined, f"used but not in web/graphql: {used - defined}"
    assert defined <= set(generated), (
        f"not in documents.js (run make documents): {defined - set(generated)}"
    )
    for name, doc in generated.items():
        assert doc["hash"] == hashlib.sha256(doc["text"].encode()).hexdigest(), name


QUERY_VIEWER = "Viewer"


async def test_documents_run_through_apq_as_the_client_sends_them(server: Server) -> None:
    """The client's protocol (api.js): hash only, then the text on PERSISTED_QUERY_NOT_FOUND."""
    documents = generated_documents()

    async def send(
        http: httpx.AsyncClient, name: str, token: str | None = None, **variables: Any
    ) -> Any:
        doc = documents[name]
        headers = {"Accept": "application/graphql-response+json, application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        body: dict[str, Any] = {
            "operationName": name,
            "variables": variables,
            "extensions": {"persistedQuery": {"version": 1, "sha256Hash": doc["hash"]}},
        }
        result = (await http.post("/graphql", json=body, headers=headers)).json()
        codes = [e.get("extensions", {}).get("code") for e in result.get("errors", [])]
        if "PERSISTED_QUERY_NOT_FOUND" in codes:
            result = (
                await http.post("/graphql", json={**body, "query": doc["text"]}, headers=headers)
            ).json()
        assert not result.get("errors"), result
        return result["data"]

    async with httpx.AsyncClient(base_url=server.base_url) as http:
        signed_up = await send(
            http,
            "SignUp",
            username="webclient",
            email="webclient@example.com",
            password="a-long-password",
        )
        token = signed_up["signUp"]["token"]
        viewer = await send(http, QUERY_VIEWER, token)
        feed = await send(http, "HomeFeed", token, first=10, after=None)
        refused = await send(http, "LogIn", username="webclient", password="wrong-password")

    assert signed_up["signUp"]["errors"] == []
    assert viewer["viewer"]["username"] == "webclient"
    assert viewer["notifications"]["unreadCount"] == 0
    assert feed["feed"]["edges"] == []
    assert feed["feed"]["pageInfo"]["hasNextPage"] is False
    assert refused["logIn"]["token"] is None
    assert refused["logIn"]["errors"][0]["code"]


# ----------------------------------------------------------------------- contract


@pytest.mark.parametrize("testid", TESTIDS)
def test_data_testid_contract_is_in_the_sources(testid: str) -> None:
    """A cheap guard: renaming a data-testid breaks tests/browser/ silently otherwise."""
    pattern = re.compile(rf"""["']{re.escape(testid)}["']""")
    assert any(pattern.search(strip_comments(p.read_text())) for p in SOURCES if p != GENERATED), (
        testid
    )


def test_no_source_builds_html_from_strings() -> None:
    """Every string reaches the DOM as text (textContent, text nodes) or an attribute."""
    offenders = [
        f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
        for path in SOURCES
        for number, line in enumerate(strip_comments(path.read_text()).splitlines(), 1)
        if HTML_SINKS.search(line)
    ]
    assert offenders == []


def test_index_html_is_a_shell_without_inline_script() -> None:
    html = (WEB / "index.html").read_text()
    assert re.findall(r"<script(?![^>]*\bsrc=)[^>]*>", html) == []
    assert 'type="module"' in html
