// #/tags/<name>: the tag's post count and its posts grid.
import { gql } from "../api.js";
import { h, t } from "../dom.js";
import { showError } from "../toast.js";
import { postGrid } from "./grid.js";

const PAGE = 24;

export function hashtagView(root, { name }) {
  let grid = null;
  let disposed = false; // left the page before the tag loaded: build nothing
  const page = t("section", "hashtag", { class: "hashtag-page", "data-name": name }, h("div", { class: "spinner" }));
  root.append(page);
  (async () => {
    try {
      const { hashtag } = await gql("Hashtag", { name, first: PAGE, after: null });
      if (disposed) return;
      if (!hashtag) {
        page.replaceChildren(h("div", { class: "card empty-state" }, h("h2", {}, `#${name}`), h("p", { class: "muted" }, "No posts with this tag yet (or it is not a hashtag)."), h("a", { href: "#/", class: "button" }, "Back to the feed")));
        return;
      }
      page.dataset.name = hashtag.name;
      grid = postGrid("hashtag-grid", async (after) => (await gql("Hashtag", { name, first: PAGE, after })).hashtag.posts, hashtag.posts);
      page.replaceChildren(
        h(
          "header",
          { class: "hashtag-header" },
          h("div", { class: "hashtag-icon", "aria-hidden": "true" }, "#"),
          h("div", {}, t("h1", "hashtag-name", {}, `#${hashtag.name}`), h("p", {}, t("strong", "hashtag-post-count", {}, String(hashtag.postCount)), hashtag.postCount === 1 ? " post" : " posts")),
        ),
        hashtag.posts.edges.length ? grid.element : h("p", { class: "muted center" }, "No posts with this tag yet."),
      );
    } catch (error) {
      if (disposed) return;
      page.replaceChildren(h("div", { class: "card empty-state" }, h("h2", {}, `Cannot show #${name}`), h("p", { class: "muted" }, error.message)));
      showError(error, "Could not load the hashtag");
    }
  })();
  return () => {
    disposed = true;
    if (grid) grid.dispose();
  };
}
