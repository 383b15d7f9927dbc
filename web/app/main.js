// Entry point: the top bar, the routes, and mounting one view at a time.
import { isTransient, onUnauthenticated } from "./api.js";
import { apiOrigin, chooseApi, getToken, onTokenChangeElsewhere, proposedApi } from "./config.js";
import { h, t } from "./dom.js";
import { icon } from "./icons.js";
import { currentPath, match, navigate, route } from "./router.js";
import { forget, loadViewer, onUnreadChange, session, signOut, tokenChanged } from "./session.js";
import { showError, toast } from "./toast.js";
import { feedView } from "./views/feed.js";
import { hashtagView } from "./views/hashtag.js";
import { loginView } from "./views/login.js";
import { newPostView } from "./views/new-post.js";
import { notificationsView } from "./views/notifications.js";
import { postView } from "./views/post.js";
import { profileView } from "./views/profile.js";
import { searchView } from "./views/search.js";
import { storyViewerView } from "./views/stories.js";

route("/login", loginView);
route("/", feedView);
route("/u/:username", profileView);
route("/p/:id", postView);
route("/tags/:name", hashtagView);
route("/search", searchView);
route("/notifications", notificationsView);
route("/new", newPostView);
route("/stories/:userId", storyViewerView);

const header = document.getElementById("topbar");
const main = document.getElementById("view");

/**
 * A link's `?api=` named another API than the one in use (config.js): ask. Until the
 * person clicks "Use …", the page keeps talking to the current API only (the login
 * form included); "Stay on …" remembers the current one.
 */
function showApiProposal() {
  if (!proposedApi) return;
  const use = t("button", "api-proposal-use", { type: "button", class: "button", onclick: () => chooseApi(proposedApi) }, `Use ${proposedApi}`);
  const stay = t("button", "api-proposal-stay", { type: "button", class: "button primary" }, `Stay on ${apiOrigin}`);
  stay.addEventListener("click", () => {
    chooseApi(apiOrigin); // remembered: the same link asks again, a plain visit does not
    proposal.remove();
  });
  const proposal = t(
    "section",
    "api-proposal",
    { class: "api-proposal", role: "alertdialog", "aria-labelledby": "api-proposal-title", "aria-describedby": "api-proposal-text" },
    h("h2", { id: "api-proposal-title" }, "Switch to another server?"),
    h(
      "div",
      { id: "api-proposal-text" },
      h("p", {}, "This link points the app at the API at ", h("strong", { "data-testid": "api-proposal-origin" }, proposedApi), "."),
      h("p", { class: "small" }, "You are using ", h("strong", {}, apiOrigin), ". Only switch to a server you trust: it would receive your password when you log in there."),
    ),
    h("div", { class: "api-proposal-actions" }, use, stay),
  );
  header.after(proposal);
}
showApiProposal();

let cleanup = null;
let ready = false;

function navLink(testid, href, name, label) {
  return t("a", testid, { href, class: "nav-link", title: label, "aria-label": label }, icon(name));
}

let stopBadge = () => {};

function renderHeader() {
  stopBadge();
  stopBadge = () => {};
  if (!session.viewer) {
    header.replaceChildren(h("div", { class: "topbar-inner" }, h("a", { href: "#/", class: "logo" }, "Instagraph")));
    return;
  }
  const badge = t("span", "notification-badge", { class: "badge", hidden: true });
  stopBadge = onUnreadChange((n) => {
    badge.textContent = String(n);
    badge.hidden = n === 0;
  });
  const profileHref = `#/u/${encodeURIComponent(session.viewer.username)}`;
  const logout = t("button", "logout", { type: "button", class: "nav-link", title: "Log out", "aria-label": "Log out" }, icon("logout"));
  logout.addEventListener("click", () => {
    signOut();
    navigate("/login");
  });
  header.replaceChildren(
    h(
      "div",
      { class: "topbar-inner" },
      h("a", { href: "#/", class: "logo" }, "Instagraph"),
      h(
        "form",
        { class: "topbar-search", role: "search", onsubmit: (e) => { e.preventDefault(); const q = e.target.elements.q.value.trim(); navigate(`/search?q=${encodeURIComponent(q)}`); } },
        h("input", { name: "q", type: "search", placeholder: "Search", "aria-label": "Search users or hashtags", autocomplete: "off" }),
      ),
      h(
        "nav",
        { class: "nav", "aria-label": "Main" },
        navLink("nav-feed", "#/", "home", "Home"),
        navLink("nav-search", "#/search", "search", "Search"),
        navLink("nav-new-post", "#/new", "plus", "New post"),
        h("span", { class: "nav-badge-wrap" }, navLink("nav-notifications", "#/notifications", "bell", "Notifications"), badge),
        t("a", "nav-profile", { href: profileHref, class: "nav-link", title: session.viewer.username, "aria-label": "Profile" }, h("span", { class: "nav-avatar" }, session.viewer.username[0].toUpperCase())),
        logout,
      ),
    ),
  );
}

function mount() {
  if (!ready) return;
  const path = currentPath();
  const [pathname, search = ""] = path.split("?");
  if (!session.viewer && pathname !== "/login") {
    navigate("/login");
    return;
  }
  if (session.viewer && pathname === "/login") {
    navigate("/");
    return;
  }
  if (cleanup) {
    try {
      cleanup();
    } catch (error) {
      console.error(error);
    }
  }
  cleanup = null;
  main.replaceChildren();
  document.body.dataset.route = pathname.split("/")[1] || "feed";
  renderHeaderOnce();
  const found = match(path);
  if (!found) {
    main.append(h("div", { class: "card empty-state" }, h("h2", {}, "Page not found"), h("a", { href: "#/", class: "button" }, "Back to the feed")));
    return;
  }
  try {
    cleanup = found.view(main, found.params, new URLSearchParams(search)) || null;
  } catch (error) {
    showError(error, "Something went wrong");
    main.append(h("div", { class: "card empty-state" }, h("h2", {}, "Something went wrong"), h("p", { class: "muted" }, String(error.message || error))));
  }
  if (!pathname.startsWith("/stories")) window.scrollTo(0, 0);
}

let headerFor = undefined;
function renderHeaderOnce() {
  const who = session.viewer ? session.viewer.id : null;
  if (headerFor === who) return;
  headerFor = who;
  renderHeader();
}

onUnauthenticated(() => {
  if (!session.viewer) return;
  signOut();
  toast("Your session has ended: please log in again.", { kind: "error" });
  navigate("/login");
});

window.addEventListener("hashchange", mount);
window.addEventListener("unhandledrejection", (event) => showError(event.reason));
window.addEventListener("offline", () => toast("You are offline: live updates resume when you reconnect.", { kind: "error" }));

// Another tab signed in as someone else, or out: this tab follows, so its header,
// live connection and requests all speak for the same account.
let following = Promise.resolve();
onTokenChangeElsewhere(() => {
  following = following.then(async () => {
    if (!ready || !tokenChanged()) return;
    const was = session.viewer;
    forget();
    if (getToken()) {
      try {
        await loadViewer();
      } catch (error) {
        if (error.code !== "UNAUTHENTICATED") showError(error, "Could not load the new session");
      }
    }
    if (was && !session.viewer) toast("You logged out in another tab.");
    else if (session.viewer && (!was || was.id !== session.viewer.id)) {
      toast(`Signed in as ${session.viewer.username} (from another tab).`);
    }
    headerFor = undefined;
    renderHeaderOnce();
    if (session.viewer && currentPath().split("?")[0] !== "/login") mount();
    else navigate(session.viewer ? "/" : "/login");
  }).catch((error) => showError(error));
});

async function start() {
  main.replaceChildren(h("div", { class: "spinner boot", role: "status", "aria-label": "Loading" }));
  try {
    if (getToken()) await loadViewer();
  } catch (error) {
    if (error.code === "UNAUTHENTICATED") signOut(); // an expired token: just log in again
    else if (isTransient(error)) {
      // The API is down or unreachable: say so, and keep the session for a retry.
      showError(error, "Could not restore your session");
      main.replaceChildren(
        h(
          "div",
          { class: "card empty-state", role: "alert" },
          h("h2", {}, "Cannot reach Instagraph"),
          h("p", { class: "muted" }, error.message),
          h("button", { class: "button primary", type: "button", onclick: start }, "Try again"),
        ),
      );
      return;
    } else showError(error, "Could not restore your session");
  }
  ready = true;
  document.documentElement.dataset.ready = "true";
  mount();
}

start();
