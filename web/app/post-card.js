// A post as a feed card (and on its own page): author, media, like, comments.
import { gql, payload } from "./api.js";
import { avatar, h, richText, t, timeAgo } from "./dom.js";
import { icon } from "./icons.js";
import { mediaAlt, mediaItem } from "./media.js";
import { showError } from "./toast.js";

function commentItem(comment) {
  return t(
    "li",
    "comment",
    { class: "comment", "data-comment-id": comment.id },
    h("a", { class: "username", href: `#/u/${encodeURIComponent(comment.author.username)}` }, comment.author.username),
    " ",
    h("span", { class: "comment-text" }, richText(comment.text)),
  );
}

function carousel(post, eager) {
  const items = post.media.map((m, i) => mediaItem(m, { eager: eager && i === 0, alt: mediaAlt(post, i) }));
  const track = h("div", { class: "carousel-track" }, items);
  const wrapper = t("div", "post-media", { class: "post-media" }, track);
  if (items.length > 1) {
    const dots = items.map((_, i) => h("span", { class: i === 0 ? "dot active" : "dot" }));
    const go = (delta) => track.scrollBy({ left: delta * track.clientWidth, behavior: "smooth" });
    const prev = h("button", { class: "carousel-nav prev", "aria-label": "Previous", onclick: () => go(-1) }, icon("chevronLeft", { size: 18 }));
    const next = h("button", { class: "carousel-nav next", "aria-label": "Next", onclick: () => go(1) }, icon("chevronRight", { size: 18 }));
    track.addEventListener("scroll", () => {
      const index = Math.round(track.scrollLeft / Math.max(1, track.clientWidth));
      dots.forEach((d, i) => d.classList.toggle("active", i === index));
    }, { passive: true });
    wrapper.append(prev, next, h("div", { class: "dots" }, dots));
  }
  return wrapper;
}

/**
 * The card. `options.comments` overrides the preview (the post page lists more);
 * `options.eager` loads the first image at once (the first cards of a page).
 */
export function postCard(post, { eager = false } = {}) {
  // `liked` is what the viewer wants (shown at once); `server` what the API last said.
  const state = { liked: post.viewerHasLiked, likes: post.likeCount, comments: post.commentCount };
  const server = { liked: post.viewerHasLiked, likes: post.likeCount };
  let syncing = false;
  const profile = `#/u/${encodeURIComponent(post.author.username)}`;

  const likeCount = t("span", "like-count", {}, String(state.likes));
  const likeWord = h("span", {}, state.likes === 1 ? " like" : " likes");
  const commentCount = t("span", "comment-count", {}, String(state.comments));
  const commentWord = h("span", {}, state.comments === 1 ? " comment" : " comments");
  const likeButton = t("button", "like-button", { class: "icon-button like", type: "button" });
  const heartBurst = h("div", { class: "heart-burst", "aria-hidden": "true" }, icon("heart", { size: 96, filled: true }));

  function render() {
    likeButton.setAttribute("aria-pressed", String(state.liked));
    likeButton.setAttribute("aria-label", state.liked ? "Unlike" : "Like");
    likeButton.replaceChildren(icon("heart", { filled: state.liked }));
    likeCount.textContent = String(state.likes);
    likeWord.textContent = state.likes === 1 ? " like" : " likes";
    commentCount.textContent = String(state.comments);
    commentWord.textContent = state.comments === 1 ? " comment" : " comments";
  }

  function setLiked(liked) {
    if (state.liked === liked) return;
    state.liked = liked; // optimistic
    state.likes += liked ? 1 : -1;
    render();
    sync();
  }

  /**
   * One request at a time; clicks while one is in flight only change what is wanted,
   * and the loop sends whatever is still needed once the request comes back.
   */
  async function sync() {
    if (syncing) return;
    syncing = true;
    try {
      while (state.liked !== server.liked) {
        const want = state.liked;
        const data = await gql(want ? "LikePost" : "UnlikePost", { postId: post.id });
        const result = payload(want ? data.likePost : data.unlikePost);
        server.liked = result.post ? result.post.viewerHasLiked : want;
        if (result.post) server.likes = result.post.likeCount;
      }
      state.likes = server.likes; // settled: the API's count
    } catch (error) {
      Object.assign(state, { liked: server.liked, likes: server.likes }); // roll back
      showError(error, state.liked ? "Could not unlike" : "Could not like");
    } finally {
      syncing = false;
      render();
    }
  }

  likeButton.addEventListener("click", () => setLiked(!state.liked));

  const media = carousel(post, eager);
  media.append(heartBurst);
  // A double tap on a video likes it too. What keeps Chromium's controls from also
  // toggling fullscreen is `controlslist="nofullscreen"` (media.js): preventDefault here
  // does not stop them (checked in Chromium). Other browsers ignore controlslist.
  media.addEventListener(
    "dblclick",
    (event) => {
      // Quick clicks on the carousel's arrows or dots are not a double tap on the photo.
      if (event.target.closest(".carousel-nav, .dots")) return;
      event.preventDefault();
      heartBurst.classList.remove("show");
      void heartBurst.offsetWidth; // restart the animation
      heartBurst.classList.add("show");
      setLiked(true);
    },
    { capture: true },
  );

  const commentsList = t("ul", "comments", { class: "comments" });
  for (const edge of post.comments ? post.comments.edges : []) commentsList.append(commentItem(edge.node));

  const input = t("input", "comment-input", {
    type: "text",
    placeholder: "Add a comment…",
    "aria-label": "Add a comment",
    maxlength: 2200,
    autocomplete: "off",
  });
  const submit = t("button", "comment-submit", { type: "submit", class: "link-button", disabled: true }, "Post");
  input.addEventListener("input", () => {
    submit.disabled = !input.value.trim();
  });
  const form = h("form", { class: "comment-form" }, input, submit);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const text = input.value.trim();
    if (!text) return;
    submit.disabled = true;
    input.disabled = true;
    try {
      const data = await gql("AddComment", { postId: post.id, text });
      const { comment } = payload(data.addComment);
      commentsList.append(commentItem(comment));
      state.comments += 1;
      input.value = "";
      render();
    } catch (error) {
      showError(error, "Could not comment");
    } finally {
      input.disabled = false;
      submit.disabled = !input.value.trim();
      input.focus();
    }
  });

  const statusBadge =
    post.status && post.status !== "READY"
      ? h("span", { class: `status-badge status-${post.status.toLowerCase()}` }, post.status.toLowerCase())
      : null;

  const article = t(
    "article",
    "post",
    { class: "card post", "data-post-id": post.id, "data-status": post.status || "READY" },
    h(
      "header",
      { class: "post-header" },
      h("a", { href: profile, class: "avatar-link", tabindex: "-1", "aria-hidden": "true" }, avatar(post.author, 32)),
      t("a", "post-author", { href: profile, class: "username" }, post.author.username),
      h("span", { class: "dot-sep" }, "•"),
      h("a", { href: `#/p/${encodeURIComponent(post.id)}`, class: "time" }, h("time", { datetime: post.createdAt }, timeAgo(post.createdAt))),
      statusBadge,
    ),
    media,
    h(
      "section",
      { class: "post-body" },
      h(
        "div",
        { class: "actions" },
        likeButton,
        h("button", { class: "icon-button", type: "button", "aria-label": "Comment", onclick: () => input.focus() }, icon("comment")),
      ),
      h("div", { class: "likes" }, likeCount, likeWord),
      post.caption
        ? h("p", { class: "caption" }, h("a", { href: profile, class: "username" }, post.author.username), " ", t("span", "post-caption", {}, richText(post.caption)))
        : t("span", "post-caption", { class: "caption empty" }),
      h("a", { class: "comment-summary", href: `#/p/${encodeURIComponent(post.id)}` }, commentCount, commentWord),
      commentsList,
    ),
    form,
  );
  render();
  article.commentsList = commentsList;
  article.appendComment = (c) => commentsList.append(commentItem(c));
  return article;
}

export { commentItem };
