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
import shutil
import subprocess
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

from domain.text import MAX_HASHTAG, MAX_TEXT, hashtags_of, mentions_of, normalize_hashtag
from tests.conftest import Server

ROOT = Path(__file__).resolve().parent.parent
WEB = ROOT / "web"
SOURCES = [*sorted((WEB / "app").rglob("*.js")), WEB / "index.html"]
GENERATED = WEB / "app" / "documents.js"

# The data-testid contract of the common brief (tests/browser/ selects by these), then
# the ones tests/browser/ uses beyond it (the API proposal, hints, empty states).
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
api-proposal api-proposal-use api-proposal-stay api-notice api-notice-reset
demo-hint search-empty new-post-close post-video
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


# What may come before a `/` that starts a regular expression literal (rather than a
# division): an operator or an opening bracket, or one of these keywords.
_REGEX_AFTER_CHARS = set("(,=:[!&|?{};+-*%<>~^")
_REGEX_AFTER_WORDS = {"return", "typeof", "case", "do", "else", "in", "of", "new", "void"}


def code_only(source: str) -> str:
    """JavaScript with its comments blanked (newlines kept, so line numbers hold) and
    everything else as it was: strings, template literals (with their `${...}`) and
    regular expression literals are read whole, so a `/*` or `//` inside one
    (`accept: "image/*,video/*"`, a URL) is not taken for a comment."""
    out: list[str] = []
    i, n = 0, len(source)
    # One entry per open template literal: the brace depth its current `${` started at.
    templates: list[int] = []
    depth = 0
    last = ""  # the last significant token (a character, or a word)

    def read_quoted(end: str) -> None:
        nonlocal i
        start = i
        i += 1
        while i < n and source[i] != end and source[i] != "\n":
            i += 2 if source[i] == "\\" else 1
        i += 1
        out.append(source[start:i])

    def read_template() -> None:
        """From just after a backtick (or a closing `}` of `${`) to the closing
        backtick, or into the code of the next `${`."""
        nonlocal i, depth
        start = i
        while i < n:
            if source[i] == "\\":
                i += 2
            elif source[i] == "`":
                i += 1
                out.append(source[start:i])
                return
            elif source.startswith("${", i):
                i += 2
                out.append(source[start:i])
                templates.append(depth)
                depth += 1
                return
            else:
                i += 1
        out.append(source[start:i])

    while i < n:
        char = source[i]
        if source.startswith("//", i):
            end = source.find("\n", i)
            i = n if end < 0 else end
        elif source.startswith("/*", i):
            end = source.find("*/", i + 2)
            end = n if end < 0 else end + 2
            out.append("".join(c if c == "\n" else " " for c in source[i:end]))
            i = end
        elif char in "\"'":
            read_quoted(char)
            last = "string"
        elif char == "`":
            out.append(char)
            i += 1
            read_template()
            last = "string"
        elif char == "/" and (
            last == "" or last in _REGEX_AFTER_CHARS or last in _REGEX_AFTER_WORDS
        ):
            start = i
            i += 1
            in_class = False
            while i < n and source[i] != "\n":
                if source[i] == "\\":
                    i += 2
                    continue
                if source[i] == "[":
                    in_class = True
                elif source[i] == "]":
                    in_class = False
                elif source[i] == "/" and not in_class:
                    break
                i += 1
            i += 1
            while i < n and source[i].isalpha():  # flags
                i += 1
            out.append(source[start:i])
            last = "regex"
        elif char == "}" and templates and depth - 1 == templates[-1]:
            templates.pop()
            depth -= 1
            out.append(char)
            i += 1
            read_template()
            last = "string"
        else:
            if char == "{":
                depth += 1
            elif char == "}":
                depth -= 1
            if char.isalnum() or char in "_$":
                start = i
                while i < n and (source[i].isalnum() or source[i] in "_$"):
                    i += 1
                out.append(source[start:i])
                last = source[start:i]
                continue
            if not char.isspace():
                last = char
            out.append(char)
            i += 1
    return "".join(out)


def code_of(path: Path) -> str:
    """A source as code: comments blanked (JavaScript, or the HTML shell)."""
    text = path.read_text()
    if path.suffix == ".html":
        return re.sub(r"<!--.*?-->", lambda m: re.sub(r"[^\n]", " ", m.group()), text, flags=re.S)
    return code_only(text)


def test_code_only_blanks_comments_and_nothing_else() -> None:
    source = "\n".join(
        [
            'const a = { accept: "image/*,video/*" }; sink.innerHTML = x; // GONE1 */',
            "const b = `http://x/${c /* GONE2 */ + `/*${d}*/`}` + y; /* GONE3",
            "GONE4 */ const re = /\\/*[/*]/g; z = 1 / 2 / 3; // GONE5",
            "const s = '//' + \"/*\";",
        ]
    )
    code = code_only(source)

    assert len(code.splitlines()) == len(source.splitlines())
    assert 'accept: "image/*,video/*" }; sink.innerHTML = x;' in code
    assert "GONE" not in code
    assert "`http://x/${c " in code and "+ `/*${d}*/`}` + y;" in code
    assert "const re = /\\/*[/*]/g; z = 1 / 2 / 3;" in code
    assert "const s = '//' + \"/*\";" in code


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


# Client functions whose first argument is the data-testid of the element they build.
TESTID_HELPERS = ("postGrid", "navLink", "count")


def setter_of(testid: str) -> re.Pattern[str]:
    """The ways the client gives an element a data-testid: `t("tag", "<id>", ...)`,
    `"data-testid": "<id>"` in h()'s attributes, `data-testid="<id>"` in HTML, and
    the helpers that take one first (TESTID_HELPERS) or as a `testid = "<id>"` default."""
    quoted = rf"""["']{re.escape(testid)}["']"""
    return re.compile(
        rf"""\bt\(\s*["'][\w-]+["']\s*,\s*{quoted}"""
        rf"""|["']data-testid["']\s*:\s*{quoted}"""
        rf"""|\bdata-testid={quoted}"""
        rf"""|\b(?:{"|".join(TESTID_HELPERS)})\(\s*{quoted}"""
        rf"""|\btestid\s*=\s*{quoted}"""
    )


@pytest.mark.parametrize("testid", TESTIDS)
def test_data_testid_contract_is_in_the_sources(testid: str) -> None:
    """A cheap guard: renaming a data-testid breaks tests/browser/ silently otherwise."""
    pattern = setter_of(testid)
    assert any(pattern.search(code_of(p)) for p in SOURCES if p != GENERATED), testid


def test_the_testid_check_fails_on_a_removed_id() -> None:
    """The check above is not vacuous: an id only named elsewhere (a selector, a
    comment, a CSS class) does not count, only one set on an element."""
    assert setter_of("post").search('t("article", "post", { class: "card post" })')
    assert setter_of("feed").search('h("div", { "data-testid": "feed" })')
    assert not setter_of("post").search('h("article", { class: "post" }, "post")')
    assert not setter_of("feed").search(code_only('// t("div", "feed")'))
    assert not setter_of("comment").search('querySelector("[data-testid=comment]")')


def test_no_source_builds_html_from_strings() -> None:
    """Every string reaches the DOM as text (textContent, text nodes) or an attribute."""
    offenders = [
        f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
        for path in SOURCES
        for number, line in enumerate(code_of(path).splitlines(), 1)
        if HTML_SINKS.search(line)
    ]
    assert offenders == []


def test_index_html_is_a_shell_without_inline_script() -> None:
    html = (WEB / "index.html").read_text()
    assert re.findall(r"<script(?![^>]*\bsrc=)[^>]*>", html) == []
    assert 'type="module"' in html


# ----------------------------------------------------------------- captions (Node)

ZWNJ, ZWJ = "\u200c", "\u200d"
# Captions and comments as people write them, and the cases tests/test_text.py pins
# the server's parser down with: the client must link exactly what the server saw.
CAPTIONS = [
    "Sun #Sun #sun #sea",
    "a#b is no tag, nor is mail#box",
    "#tag#other: the second # sits inside a word",
    "end of sentence #tag.",
    "(#paren) [#bracket] #comma, #excl!",
    "#snake_case #123 #_ #_1 #2024summer",
    "#8 and &#39; and &#x27; and #٣",
    f"#می{ZWNJ}خواهم today",
    f"#ශ්{ZWJ}රී",
    f"#{ZWNJ}abc #abc{ZWNJ} ok",
    "#\u0301abc",
    "# alone, #, ## and #!",
    "##double",
    "#हिन्दी keeps its vowel signs",
    "full-width \uff03東京 is a tag, small \ufe5fsign too",
    "#ﬁre (a ligature) #Ⅻ (a numeral)",
    "#café #日本 #Ünïcödé #Cafe #CAFÉ",
    "#" + "a" * MAX_HASHTAG + " #" + "b" * (MAX_HASHTAG + 1),
    "thanks @Alice and @bob.smith.",
    "@alice @ALICE @alice!",
    "mail carol@example.com is no mention",
    "@al is too short, @" + "x" * 31 + " too long",
    "(@dave) @erin, @frank_1?",
    "@gustavé runs on with a letter no username has",
    "@@heidi",
    "full-width \uff20ivan and \uff20\uff4a\uff55\uff44\uff59",
    "<img src=x onerror=alert(1)> hi @frances #tag",
    "mail carol@example.com, #नमस्ते #8 a#b &#39; #café",
    "@bob.#tag and #tag@bob and @bob...",
    "#first " + "x" * (MAX_TEXT - len("#first ") - 1) + " #after @after_it",
    "",
]

SPLIT_ALL = """
const [module, cases] = [process.argv[1], JSON.parse(process.argv[2])];
const { splitText } = await import(module);
console.log(JSON.stringify(cases.map((text) => splitText(text))));
"""


@pytest.mark.skipif(shutil.which("node") is None, reason="Node.js not installed")
def test_caption_links_follow_the_servers_rules(tmp_path: Path) -> None:
    """web/app/text.js (what richText links) run by Node on the captions above gives
    the hashtags and mentions domain.text finds, in order, and loses no text."""
    module = tmp_path / "text.mjs"  # .mjs: an ES module whatever Node's defaults
    shutil.copy(WEB / "app" / "text.js", module)
    node = shutil.which("node") or "node"
    result = subprocess.run(  # noqa: S603 - fixed argv, no shell
        [node, "--input-type=module", "-e", SPLIT_ALL, module.as_uri(), json.dumps(CAPTIONS)],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    split: list[list[dict[str, str]]] = json.loads(result.stdout)

    for text, parts in zip(CAPTIONS, split, strict=True):
        assert "".join(part["text"] for part in parts) == text
        tags = [p for p in parts if p["kind"] == "tag"]
        mentions = [p for p in parts if p["kind"] == "mention"]
        linked_tags = list(dict.fromkeys(normalize_hashtag(p["text"][1:]) for p in tags))
        linked_names = list(dict.fromkeys(p["name"] for p in mentions))
        assert linked_tags == hashtags_of(text), text
        assert linked_names == mentions_of(text), text
        for tag in tags:  # the link goes where the server files the tag
            assert normalize_hashtag(tag["name"]) == normalize_hashtag(tag["text"][1:]), text
