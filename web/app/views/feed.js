// Home feed: stories tray, live "new posts" banner, cards paged by cursor as you scroll.
import { gql } from "../api.js";
import { h, plural, t } from "../dom.js";
import { onReconnect, subscribe } from "../live.js";
import { postCard } from "../post-card.js";
import { session } from "../session.js";
import { showError } from "../toast.js";
import { storiesTray } from "./stories.js";

const PAGE_SIZE = 10;

export function feedView(root) {
  const feed = t("div", "feed", { class: "feed" });
  const sentinel = t("div", "feed-sentinel", { class: "sentinel", "aria-hidden": "true" });
  const loading = h("div", { class: "spinner", hidden: true, "aria-label": "Loading" });
  const end = t("p", "feed-end", { class: "feed-end muted", hidden: true }, "You're all caught up.");
  const empty = h(
    "div",
    { class: "card empty-state", hidden: true },
    h("h2", {}, "Your feed is empty"),
    h("p", { class: "muted" }, "Follow people (try the search) or share your first post."),
    h("p", {}, h("a", { href: "#/search", class: "button" }, "Find people"), " ", h("a", { href: "#/new", class: "button primary" }, "New post")),
  );
  const banner = t("button", "new-posts-banner", { class: "new-posts-banner", type: "button", hidden: true });

  const seen = new Set();
  let pending = []; // posts from feedItemAdded not shown yet, newest first
  let cursor = null;
  let hasNext = true;
  let busy = false;
  let failed = false;
  let firstPageShown = false;

  function add(posts, { atTop = false } = {}) {
    const cards = [];
    for (const post of posts) {
      if (seen.has(post.id)) continue;
      seen.add(post.id);
      cards.push(postCard(post, { eager: seen.size <= 2 }));
    }
    if (atTop) feed.prepend(...cards);
    else feed.append(...cards);
    // A post delivered live before its page loaded is on screen now: not "new" any more.
    const before = pending.length;
    pending = pending.filter((p) => !seen.has(p.id));
    if (pending.length !== before) showBanner();
  }

  async function loadMore() {
    if (busy || !hasNext || failed) return;
    busy = true;
    loading.hidden = false;
    try {
      const data = await gql("HomeFeed", { first: PAGE_SIZE, after: cursor });
      add(data.feed.edges.map((e) => e.node));
      cursor = data.feed.pageInfo.endCursor;
      firstPageShown = true;
      hasNext = data.feed.pageInfo.hasNextPage;
      end.hidden = hasNext || seen.size === 0;
      empty.hidden = seen.size > 0 || hasNext;
    } catch (error) {
      failed = true;
      showError(error, "Could not load the feed");
      root.querySelector(".feed-retry")?.remove();
      const retry = h("button", { class: "button feed-retry", onclick: () => { failed = false; retry.remove(); loadMore(); } }, "Retry");
      sentinel.before(retry);
    } finally {
      busy = false;
      loading.hidden = true;
    }
    // Still in view (a tall screen, or a short page): keep going.
    if (hasNext && !failed && isVisible(sentinel)) loadMore();
  }

  function isVisible(el) {
    const rect = el.getBoundingClientRect();
    return rect.top < window.innerHeight + 600 && rect.bottom > 0;
  }

  function showBanner() {
    banner.hidden = pending.length === 0;
    banner.replaceChildren("↑ ", plural(pending.length, "new post"));
  }

  banner.addEventListener("click", () => {
    const posts = pending;
    pending = [];
    showBanner();
    add(posts, { atTop: true });
    empty.hidden = seen.size > 0;
    window.scrollTo({ top: 0, behavior: "smooth" });
  });

  const observer = new IntersectionObserver(
    (entries) => {
      if (entries.some((e) => e.isIntersecting)) loadMore();
    },
    { rootMargin: "600px 0px" },
  );
  observer.observe(sentinel);

  /** A post newer than those shown: on top if the viewer's own, else behind the banner. */
  function arrived(post) {
    if (seen.has(post.id) || pending.some((p) => p.id === post.id)) return;
    if (session.viewer && post.author && post.author.id === session.viewer.id) {
      // The viewer's own post: no news to them, it just goes on top.
      add([post], { atTop: true });
      empty.hidden = true;
      end.hidden = hasNext;
      return;
    }
    pending.unshift(post);
    showBanner();
  }

  const unsubscribe = subscribe(
    "FeedItemAdded",
    {},
    (data) => arrived(data.feedItemAdded),
    (error) => console.warn("feedItemAdded", error),
  );

  // Live events sent while the connection was down are lost: after a reconnect, read
  // the first page again and treat what is above the newest post shown as arrived.
  const stopReconnect = onReconnect(async () => {
    if (!session.viewer) return;
    // No page shown yet (still loading, or it failed): that first page, when it comes,
    // has whatever arrived; a re-read now would announce the whole page as new.
    if (!firstPageShown) return;
    try {
      const data = await gql("HomeFeed", { first: PAGE_SIZE, after: null });
      const known = (post) => seen.has(post.id) || pending.some((p) => p.id === post.id);
      const posts = data.feed.edges.map((e) => e.node);
      const firstKnown = posts.findIndex(known);
      // Newest first: everything before the first post already here is new (all of
      // the page when none is: an empty feed, or a page's worth arrived meanwhile).
      const fresh = firstKnown === -1 ? posts : posts.slice(0, firstKnown);
      fresh.reverse().forEach(arrived); // oldest first, so the newest ends up first
    } catch (error) {
      console.warn("feed re-read after reconnect", error);
    }
  });

  root.append(
    h(
      "div",
      { class: "feed-page" },
      storiesTray(),
      banner,
      empty,
      feed,
      loading,
      sentinel,
      end,
    ),
  );
  loadMore();

  return () => {
    observer.disconnect();
    unsubscribe();
    stopReconnect();
  };
}
