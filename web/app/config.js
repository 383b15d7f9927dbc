// Where the API is and who is signed in there: both kept in localStorage.
//
// The API origin is the one remembered in `localStorage["instagraph.api"]`, else the
// page's own origin, so the same static files work from `make run` (/app/) and from
// another origin. Only http: and https: origins are accepted.
//
// A link's `?api=<origin>` only PROPOSES another API (read once, then removed from the
// address bar): when it names the API already in use, nothing changes; otherwise the
// page keeps the current API and asks (main.js shows the proposal), and switches only
// when the person clicks "Use …" (`chooseApi`). So a link cannot quietly point the
// login form of this page at a server that would collect passwords.
//
// A token belongs to the API that issued it: it is kept under
// `instagraph.token@<API origin>` (one key per API origin, nothing else) and only ever
// sent to that origin, so switching to another API never hands it a token.

const API_KEY = "instagraph.api";
const TOKEN_KEY = "instagraph.token";

/** The origin of an http(s) URL, or null (other schemes, relative or broken URLs). */
export function httpOrigin(value) {
  if (!value) return null;
  try {
    const url = new URL(value);
    if (url.protocol !== "http:" && url.protocol !== "https:") return null;
    return url.origin;
  } catch {
    return null;
  }
}

function readApi() {
  const stored = httpOrigin(localStorage.getItem(API_KEY));
  const active = stored || window.location.origin;
  let proposed = null;
  const url = new URL(window.location.href);
  if (url.searchParams.has("api")) {
    const requested = url.searchParams.get("api");
    const origin = httpOrigin(requested);
    if (!origin) console.warn("ignoring ?api=: not an http(s) URL", requested);
    else if (origin === active) localStorage.setItem(API_KEY, origin); // nothing to confirm
    else proposed = origin; // asked, not taken: see chooseApi
    // Read once: a bookmark or a shared link of this page does not carry it on.
    url.searchParams.delete("api");
    try {
      window.history.replaceState(window.history.state, "", url.href);
    } catch (error) {
      console.warn("could not tidy the address bar", error);
    }
  }
  return { active, proposed };
}

export const pageOrigin = window.location.origin;
const api = readApi();
/** The API this page talks to (for as long as the page lives). */
export const apiOrigin = api.active;
/** Another API a link's `?api=` proposed, not in use unless the person accepts it; or null. */
export const proposedApi = api.proposed;
export const httpUrl = `${apiOrigin}/graphql`;
export const wsUrl = httpUrl.replace(/^http/, "ws");

/**
 * The person's choice of API (a click on this page, never a link by itself): remembered,
 * and when it is not the one in use, the page reloads to talk to it.
 */
export function chooseApi(origin) {
  const chosen = httpOrigin(origin);
  if (!chosen) return;
  localStorage.setItem(API_KEY, chosen);
  if (chosen !== apiOrigin) window.location.reload();
}

/** True for an API on this machine (localhost, 127.0.0.1, [::1]): a developer's. */
export function isLocalApi(origin = apiOrigin) {
  try {
    return ["localhost", "127.0.0.1", "[::1]"].includes(new URL(origin).hostname);
  } catch {
    return false;
  }
}

/** The localStorage key of the token for one API origin. */
export const tokenKey = (origin = apiOrigin) => `${TOKEN_KEY}@${origin}`;

/** An absolute URL for one the API returned (media and upload URLs may be relative). */
export function apiUrl(url) {
  return url ? new URL(url, apiOrigin).href : url;
}

/** The token for this page's API, or null: never one another API issued. */
export function getToken() {
  return localStorage.getItem(tokenKey());
}

export function setToken(token) {
  if (token) localStorage.setItem(tokenKey(), token);
  else localStorage.removeItem(tokenKey());
}

/**
 * Call fn when another tab changes this API's token (signs in as someone else, or
 * out). `storage` events only fire in the other tabs, never in the one that wrote.
 */
export function onTokenChangeElsewhere(fn) {
  window.addEventListener("storage", (event) => {
    if (event.storageArea !== localStorage) return;
    if (event.key === null || event.key === tokenKey()) fn();
  });
}

