// Where the API is and who is signed in there: both kept in localStorage.
//
// The API origin comes from `?api=<origin>` (remembered, then removed from the address
// bar), else the one remembered, else the page's own origin, so the same static files
// work from `make run` (/app/) and from another origin. Only http: and https: origins
// are accepted.
//
// A token belongs to the API that issued it: it is kept under
// `instagraph.token@<API origin>` (one key per API origin, nothing else) and only ever
// sent to that origin, so a link with `?api=` naming another server never receives it.

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

function readApiOrigin() {
  const url = new URL(window.location.href);
  if (url.searchParams.has("api")) {
    const requested = url.searchParams.get("api");
    const origin = httpOrigin(requested);
    if (origin) localStorage.setItem(API_KEY, origin);
    else console.warn("ignoring ?api=: not an http(s) URL", requested);
    // Read once: a bookmark or a shared link of this page does not carry it on.
    url.searchParams.delete("api");
    try {
      window.history.replaceState(window.history.state, "", url.href);
    } catch (error) {
      console.warn("could not tidy the address bar", error);
    }
  }
  return httpOrigin(localStorage.getItem(API_KEY)) || window.location.origin;
}

export const pageOrigin = window.location.origin;
export const apiOrigin = readApiOrigin();
export const httpUrl = `${apiOrigin}/graphql`;
export const wsUrl = httpUrl.replace(/^http/, "ws");

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

