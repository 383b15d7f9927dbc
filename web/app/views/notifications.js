// The viewer's notifications; opening the page marks them read.
import { gql } from "../api.js";
import { apiUrl } from "../config.js";
import { avatar, h, t, timeAgo } from "../dom.js";
import { onNotification, setUnread } from "../session.js";
import { showError } from "../toast.js";

const PAGE = 30;

const TEXT = {
  LIKE: "liked your post.",
  COMMENT: "commented:",
  FOLLOW: "started following you.",
  MENTION: "mentioned you:",
  FOLLOW_REQUEST: "asked to follow you.",
};

function item(n) {
  const profile = `#/u/${encodeURIComponent(n.actor.username)}`;
  const thumb = n.post && n.post.media[0];
  return t(
    "li",
    "notification",
    { class: n.read ? "notification" : "notification unread", "data-kind": n.kind, "data-notification-id": n.id },
    h("a", { href: profile, class: "avatar-link" }, avatar(n.actor, 44)),
    h(
      "p",
      { class: "notification-text" },
      h("a", { href: profile, class: "username" }, n.actor.username),
      ` ${TEXT[n.kind] || n.kind.toLowerCase()}`,
      n.comment ? h("span", { class: "quote" }, ` ${n.comment.text}`) : null,
      " ",
      h("time", { class: "muted", datetime: n.createdAt }, timeAgo(n.createdAt)),
    ),
    n.post
      ? h("a", { href: `#/p/${encodeURIComponent(n.post.id)}`, class: "notification-thumb" }, thumb && thumb.thumbJpeg ? h("img", { src: apiUrl(thumb.thumbJpeg), alt: "", loading: "lazy" }) : null)
      : null,
  );
}

export function notificationsView(root) {
  const list = t("ul", "notifications", { class: "card notifications" });
  const more = h("button", { class: "button more", hidden: true, type: "button" }, "Older");
  let cursor = null;
  let markTimer = null;
  let loaded = false; // only what the viewer has been shown is marked read

  function markRead() {
    clearTimeout(markTimer);
    markTimer = setTimeout(async () => {
      try {
        const { markNotificationsRead } = await gql("MarkNotificationsRead");
        setUnread(markNotificationsRead.unreadCount);
      } catch (error) {
        showError(error, "Could not mark notifications read");
      }
    }, 300);
  }

  async function load() {
    more.disabled = true;
    try {
      const { notifications } = await gql("Notifications", { first: PAGE, after: cursor });
      const empty = cursor === null && notifications.edges.length === 0;
      list.append(...notifications.edges.map((e) => item(e.node)));
      if (empty) list.append(h("li", { class: "muted empty" }, "No notifications yet."));
      cursor = notifications.pageInfo.endCursor;
      more.hidden = !notifications.pageInfo.hasNextPage;
      loaded = true;
      return true;
    } catch (error) {
      showError(error, "Could not load notifications");
      if (!loaded) {
        list.querySelector(".retry")?.remove();
        const retry = h("li", { class: "retry" }, h("button", { class: "button", type: "button", onclick: () => { retry.remove(); load().then((ok) => ok && markRead()); } }, "Try again"));
        list.append(retry);
      }
      return false;
    } finally {
      more.disabled = false;
    }
  }
  more.addEventListener("click", load);

  const stop = onNotification((n) => {
    list.querySelector(".empty")?.remove();
    list.prepend(item(n));
    if (loaded) markRead();
  });

  root.append(h("section", { class: "notifications-page" }, h("h1", {}, "Notifications"), list, more));
  load().then((ok) => ok && markRead());
  return () => {
    stop();
    clearTimeout(markTimer);
  };
}
