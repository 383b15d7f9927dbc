// A profile: header with counts and the follow button, then the post grid.
import { gql, payload } from "../api.js";
import { avatar, h, t } from "../dom.js";
import { session } from "../session.js";
import { showError } from "../toast.js";
import { postGrid } from "./grid.js";

const PAGE = 24;
function count(testid, value, label) {
  return h("li", {}, t("span", testid, { class: "count" }, String(value)), ` ${label}`);
}

export function profileView(root, { username }) {
  let grid = null;
  let disposed = false; // left the page before the profile loaded: build nothing
  const container = t("section", "profile", { class: "profile", "data-username": username });
  container.append(h("div", { class: "spinner", "aria-label": "Loading" }));
  root.append(container);

  (async () => {
    let user;
    try {
      ({ user } = await gql("UserProfile", { username, first: PAGE, after: null }));
    } catch (error) {
      if (disposed) return;
      container.replaceChildren(h("div", { class: "card empty-state" }, h("h2", {}, "Could not load this profile"), h("p", { class: "muted" }, error.message)));
      showError(error, "Could not load the profile");
      return;
    }
    if (disposed) return;
    if (!user) {
      container.replaceChildren(h("div", { class: "card empty-state" }, h("h2", {}, "Sorry, this page isn't available."), h("p", { class: "muted" }, `No account named @${username}.`), h("a", { href: "#/", class: "button" }, "Back to the feed")));
      return;
    }
    container.dataset.username = user.username;
    container.dataset.userId = user.id;
    const isSelf = session.viewer && session.viewer.id === user.id;

    const followers = t("span", "follower-count", { class: "count" }, String(user.followerCount));
    const followersWord = h("span", {}, user.followerCount === 1 ? " follower" : " followers");
    let action = null;
    if (!isSelf) {
      const state = { following: user.viewerIsFollowing, requested: user.viewerHasRequestedFollow, busy: false };
      const button = t("button", "follow-button", { type: "button", class: "follow-button" });
      const render = () => {
        button.textContent = state.following ? "Following" : state.requested ? "Requested" : "Follow";
        button.setAttribute("aria-pressed", String(state.following || state.requested));
        button.classList.toggle("primary", !state.following && !state.requested);
      };
      button.addEventListener("click", async () => {
        if (state.busy) return;
        state.busy = true;
        button.disabled = true;
        const undo = state.following || state.requested;
        try {
          const data = await gql(undo ? "Unfollow" : "Follow", { userId: user.id });
          const result = payload(undo ? data.unfollow : data.follow).user;
          state.following = result.viewerIsFollowing;
          state.requested = result.viewerHasRequestedFollow;
          followers.textContent = String(result.followerCount);
          followersWord.textContent = result.followerCount === 1 ? " follower" : " followers";
        } catch (error) {
          showError(error, undo ? "Could not unfollow" : "Could not follow");
        } finally {
          state.busy = false;
          button.disabled = false;
          render();
        }
      });
      render();
      action = button;
    } else {
      action = h("a", { href: "#/new", class: "button" }, "New post");
    }

    const header = h(
      "header",
      { class: "profile-header" },
      h("div", { class: "profile-avatar" }, avatar(user, 150)),
      h(
        "div",
        { class: "profile-info" },
        h("div", { class: "profile-title" }, t("h1", "profile-username", { class: "profile-username" }, user.username), action),
        h("ul", { class: "profile-counts" }, count("post-count", user.postCount, user.postCount === 1 ? "post" : "posts"), h("li", {}, followers, followersWord), count("following-count", user.followingCount, "following")),
        user.displayName ? h("p", { class: "display-name" }, user.displayName) : null,
        user.bio ? h("p", { class: "bio" }, user.bio) : null,
        user.followsViewer && !isSelf ? h("p", { class: "muted small" }, "Follows you") : null,
      ),
    );

    const canSee = isSelf || !user.isPrivate || user.viewerIsFollowing;
    grid = postGrid(
      "profile-grid",
      async (after) => (await gql("UserProfile", { username: user.username, first: PAGE, after })).user.posts,
      user.posts,
    );
    const body =
      !canSee && user.posts.edges.length === 0
        ? h("div", { class: "private-note" }, h("h2", {}, "This account is private"), h("p", { class: "muted" }, "Follow this account to see their photos and videos."), t("div", "profile-grid", { class: "post-grid", hidden: true }))
        : user.posts.edges.length === 0
          ? h("div", {}, h("p", { class: "muted center" }, isSelf ? "Share your first photo." : "No posts yet."), grid.element)
          : grid.element;
    container.replaceChildren(header, h("div", { class: "profile-tabs" }, h("span", { class: "active" }, "POSTS")), body);
  })();

  return () => {
    disposed = true;
    if (grid) grid.dispose();
  };
}
