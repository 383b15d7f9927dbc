// One post with all its comments.
import { gql } from "../api.js";
import { h } from "../dom.js";
import { postCard } from "../post-card.js";
import { showError } from "../toast.js";

const COMMENTS_PAGE = 50;

export function postView(root, { id }) {
  const page = h("div", { class: "post-page" }, h("div", { class: "spinner", "aria-label": "Loading" }));
  root.append(page);
  (async () => {
    try {
      const { post } = await gql("PostDetail", { id });
      if (!post) {
        page.replaceChildren(h("div", { class: "card empty-state" }, h("h2", {}, "Post not found"), h("p", { class: "muted" }, "It may have been deleted, or you cannot see it."), h("a", { href: "#/", class: "button" }, "Back to the feed")));
        return;
      }
      const card = postCard(post, { eager: true });
      page.replaceChildren(card);
      if (post.status === "FAILED" && post.failureReason) {
        card.querySelector(".post-body").append(h("p", { class: "form-error" }, `Processing failed: ${post.failureReason}`));
      }
      // Replace the 2-comment preview with the full list, page by page.
      const list = card.commentsList;
      let after = null;
      let first = true;
      const more = h("button", { class: "link-button more-comments", type: "button", hidden: true }, "Load more comments");
      list.after(more);
      const load = async () => {
        more.disabled = true;
        try {
          const data = await gql("PostComments", { id, first: COMMENTS_PAGE, after });
          if (first) list.replaceChildren();
          first = false;
          data.post.comments.edges.forEach((e) => card.appendComment(e.node));
          after = data.post.comments.pageInfo.endCursor;
          more.hidden = !data.post.comments.pageInfo.hasNextPage;
        } catch (error) {
          showError(error, "Could not load comments");
        } finally {
          more.disabled = false;
        }
      };
      more.addEventListener("click", load);
      if (post.commentCount > (post.comments ? post.comments.edges.length : 0)) await load();
    } catch (error) {
      page.replaceChildren(h("div", { class: "card empty-state" }, h("h2", {}, "Could not load the post"), h("p", { class: "muted" }, error.message)));
      showError(error, "Could not load the post");
    }
  })();
}
