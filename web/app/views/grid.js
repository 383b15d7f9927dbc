// A 3-column grid of post thumbnails, paged by cursor as it scrolls into view.
import { h, t } from "../dom.js";
import { icon } from "../icons.js";
import { gridImage, mediaAlt } from "../media.js";
import { showError } from "../toast.js";

/**
 * grid(testid, fetchPage) where fetchPage(after) -> { edges, pageInfo } of PostThumb.
 * Returns { element, load, dispose }.
 */
export function postGrid(testid, fetchPage, first = null) {
  const grid = t("div", testid, { class: "post-grid" });
  const sentinel = h("div", { class: "sentinel", "aria-hidden": "true" });
  let cursor = null;
  let hasNext = true;
  let busy = false;

  function add(connection) {
    for (const { node: post } of connection.edges) {
      const cover = post.media[0];
      grid.append(
        t(
          "a",
          "grid-item",
          { class: "grid-item", href: `#/p/${encodeURIComponent(post.id)}`, "data-post-id": post.id, "data-status": post.status },
          cover ? gridImage(cover, mediaAlt(post, 0)) : null,
          post.media.length > 1 ? h("span", { class: "grid-badge multi", "aria-label": "Several photos" }, "❐") : null,
          post.status !== "READY" ? h("span", { class: "grid-status" }, post.status.toLowerCase()) : null,
          h(
            "span",
            { class: "grid-hover" },
            icon("heart", { size: 18, filled: true }),
            String(post.likeCount),
            icon("comment", { size: 18 }),
            String(post.commentCount),
          ),
        ),
      );
    }
    cursor = connection.pageInfo.endCursor;
    hasNext = connection.pageInfo.hasNextPage;
  }

  async function load() {
    if (busy || !hasNext) return;
    busy = true;
    try {
      add(await fetchPage(cursor));
    } catch (error) {
      hasNext = false;
      showError(error, "Could not load posts");
    } finally {
      busy = false;
    }
  }

  if (first) add(first);
  const observer = new IntersectionObserver((entries) => {
    if (entries.some((e) => e.isIntersecting)) load();
  }, { rootMargin: "400px 0px" });
  observer.observe(sentinel);

  return { element: h("div", {}, grid, sentinel), load, dispose: () => observer.disconnect() };
}
