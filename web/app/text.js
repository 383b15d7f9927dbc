// Hashtags and @mentions in a caption or comment, found by the server's rules
// (domain/text.py: hashtags_of, mentions_of), so a link is shown exactly where the
// server saw a tag or a mention. No DOM here: tests/test_web_client.py runs this
// module with Node against the server's parser.
//
// Hashtags: `#` (or the full-width/small number sign) not preceded by a word character
// nor `&`, then a run of word characters (letters, digits, combining marks, `_`) in
// which ZWNJ/ZWJ may stand; at least one letter, not starting with a mark, at most
// MAX_HASHTAG characters once normalised (NFKC, lower case, NFKC).
// Mentions: in the NFKC form of the text, `@` not preceded by a word character (so an
// email address is none), then a username (3 to 30 of a-z 0-9 . _, trailing dots end
// the sentence), not followed by another word character.

const HASH_SIGNS = "#\uff03\ufe5f";
const JOINERS = "\u200c\u200d";
const MAX_HASHTAG = 100;
const MAX_TEXT = 2200; // the server never scans further
const WORD = /^[\p{L}\p{N}\p{M}_]$/u;
const LETTER = /^\p{L}$/u;
const MARK = /^\p{M}$/u;
const USERNAME_CHAR = /^[A-Za-z0-9._]$/;
const USERNAME = /^[a-z0-9._]{3,30}$/;

const isWordChar = (c) => c !== undefined && WORD.test(c);
const isTagChar = (c) => c !== undefined && (JOINERS.includes(c) || WORD.test(c));

/** As the server stores a tag (it case-folds; lower case is what a link needs). */
export function normalizeHashtag(tag) {
  return tag.normalize("NFKC").toLowerCase().normalize("NFKC");
}

/** The tag a run of tag characters names, or null. */
function tagOf(run) {
  let end = run.length;
  while (end > 0 && JOINERS.includes(run[end - 1])) end--;
  const typed = run.slice(0, end);
  const tag = [...normalizeHashtag(typed.join(""))];
  if (
    !tag.length ||
    tag.length > MAX_HASHTAG ||
    JOINERS.includes(tag[0]) ||
    MARK.test(tag[0]) ||
    !tag.some((c) => LETTER.test(c)) ||
    !tag.every(isTagChar)
  ) {
    return null;
  }
  return { typed: typed.length, name: tag.join("") };
}

/** [start, end, kind, name] over code point indexes of `cps`, for each hashtag. */
function hashtagSpans(cps) {
  const spans = [];
  for (let start = 0; start < cps.length; start++) {
    if (!HASH_SIGNS.includes(cps[start])) continue;
    if (start && (isWordChar(cps[start - 1]) || cps[start - 1] === "&")) continue;
    let end = start + 1;
    while (end < cps.length && isTagChar(cps[end])) end++;
    if (end === start + 1 || isWordChar(cps[end])) continue;
    const tag = tagOf(cps.slice(start + 1, end));
    if (tag) spans.push([start, start + 1 + tag.typed, "tag", tag.name]);
  }
  return spans;
}

/** The same for mentions, read in the NFKC form of each code point (`＠ａｄａ` is @ada). */
function mentionSpans(cps) {
  const norm = cps.map((c) => c.normalize("NFKC"));
  const last = (i) => (i >= 0 && norm[i] ? [...norm[i]].pop() : undefined);
  const first = (i) => (i < norm.length && norm[i] ? [...norm[i]][0] : undefined);
  const spans = [];
  for (let start = 0; start < norm.length; start++) {
    if (norm[start] !== "@") continue;
    if (start && isWordChar(last(start - 1))) continue;
    let end = start + 1;
    while (end < norm.length && [...norm[end]].every((c) => USERNAME_CHAR.test(c))) end++;
    if (end === start + 1 || isWordChar(first(end))) continue;
    // Trailing dots end a sentence ("thanks @ada."): not part of the link.
    let linkEnd = end;
    while (linkEnd > start + 1 && /^\.+$/.test(norm[linkEnd - 1])) linkEnd--;
    const name = norm.slice(start + 1, end).join("").replace(/\.+$/, "").toLowerCase();
    if (USERNAME.test(name)) spans.push([start, linkEnd, "mention", name]);
  }
  return spans;
}

/**
 * A text as segments: { kind: "text" | "tag" | "mention", text, name } where `text`
 * is the text as written and `name` the tag or username a link goes to.
 */
export function splitText(text) {
  const all = [...(text || "")];
  const cps = all.slice(0, MAX_TEXT);
  // A tag's characters are never a username's sigil and the other way round, so the
  // spans never overlap.
  const spans = [...hashtagSpans(cps), ...mentionSpans(cps)].sort((a, b) => a[0] - b[0]);
  const out = [];
  let at = 0;
  for (const [start, end, kind, name] of spans) {
    if (start > at) out.push({ kind: "text", text: all.slice(at, start).join("") });
    out.push({ kind, text: all.slice(start, end).join(""), name });
    at = end;
  }
  if (at < all.length) out.push({ kind: "text", text: all.slice(at).join("") });
  return out;
}
