// Search: "#tag" looks up the hashtag (by its exact name), anything else searches users.
import { gql } from "../api.js";
import { avatar, h, plural, t } from "../dom.js";
import { showError } from "../toast.js";

const DEBOUNCE_MS = 250;

export function searchView(root, params, query = new URLSearchParams()) {
  const input = t("input", "search-input", { type: "search", placeholder: "Search users or #hashtags", "aria-label": "Search", autocomplete: "off", autocapitalize: "none", spellcheck: "false", value: query.get("q") || "" });
  const results = t("ul", "search-results", { class: "card search-results", "aria-live": "polite" });
  const hint = h("p", { class: "muted small" }, "Type a name, or # and a tag.");
  let timer = null;
  let latest = 0;

  async function run() {
    const q = input.value.trim();
    const mine = ++latest;
    if (q.length < 2 || q === "#") {
      results.replaceChildren();
      results.hidden = true;
      return;
    }
    try {
      let items;
      if (q.startsWith("#") || q.startsWith("＃")) {
        // The API looks a tag up by its exact name, and answers every valid name (a tag
        // nobody used has no posts): only a tag with posts is a result.
        const { hashtag } = await gql("Hashtag", { name: q.slice(1), first: 1, after: null });
        if (hashtag && hashtag.postCount > 0) items = [hashtagResult(hashtag)];
        else items = [t("li", "search-empty", { class: "muted empty" }, `No posts tagged #${hashtag ? hashtag.name : q.slice(1)} yet.`)];
      } else {
        const { searchUsers } = await gql("SearchUsers", { query: q, first: 15 });
        items = searchUsers.map(userResult);
      }
      if (mine !== latest) return; // a newer query answered first
      results.hidden = false;
      results.replaceChildren(...(items.length ? items : [t("li", "search-empty", { class: "muted empty" }, "No results.")]));
    } catch (error) {
      if (mine !== latest) return;
      results.hidden = false;
      results.replaceChildren(h("li", { class: "form-error" }, error.message));
      if (error.code !== "INVALID_INPUT") showError(error, "Search failed");
    }
  }

  input.addEventListener("input", () => {
    clearTimeout(timer);
    timer = setTimeout(run, DEBOUNCE_MS);
    const url = new URL(window.location.href);
    url.hash = `#/search?q=${encodeURIComponent(input.value)}`;
    history.replaceState(null, "", url);
  });
  input.addEventListener("keydown", (event) => {
    if (event.key === "Enter") {
      clearTimeout(timer);
      run();
    }
  });

  results.hidden = true;
  root.append(h("section", { class: "search-page" }, input, hint, results));
  input.focus();
  if (input.value) run();
  return () => clearTimeout(timer);
}

function userResult(user) {
  return t(
    "li",
    "search-result",
    { "data-kind": "user" },
    h(
      "a",
      { href: `#/u/${encodeURIComponent(user.username)}`, class: "result" },
      avatar(user, 44),
      h("span", { class: "result-text" }, h("strong", {}, user.username), h("span", { class: "muted" }, [user.displayName, plural(user.followerCount, "follower")].filter(Boolean).join(" · "))),
    ),
  );
}

function hashtagResult(tag) {
  return t(
    "li",
    "search-result",
    { "data-kind": "hashtag" },
    h(
      "a",
      { href: `#/tags/${encodeURIComponent(tag.name)}`, class: "result" },
      h("span", { class: "hashtag-icon small", "aria-hidden": "true" }, "#"),
      h("span", { class: "result-text" }, h("strong", {}, `#${tag.name}`), h("span", { class: "muted" }, plural(tag.postCount, "post"))),
    ),
  );
}
