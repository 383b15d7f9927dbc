// Subscriptions over graphql-transport-ws with the reference graphql-ws client
// (vendored ESM build). One lazy connection per signed-in session; it reconnects
// forever with graphql-ws's randomised back-off, and tells listeners when it does.
import { createClient } from "../vendor/graphql-ws/client.js";
import { signalUnauthenticated } from "./api.js";
import { getToken, wsUrl } from "./config.js";
import { documents } from "./documents.js";

let client = null;
const reconnectListeners = new Set();
let state = "idle";
// graphql-transport-ws close codes for a token the server refused (expired, forged).
const REFUSED = new Set([4401, 4403]);

function setState(next) {
  state = next;
  document.documentElement.dataset.live = next;
}

function getClient() {
  if (client) return client;
  let connectedBefore = false;
  client = createClient({
    url: wsUrl,
    connectionParams: () => {
      const token = getToken();
      return token ? { authorization: `Bearer ${token}` } : {};
    },
    lazy: true,
    keepAlive: 15_000,
    retryAttempts: Infinity,
    // Retry every close (server restart, network change, laptop asleep): the
    // subscriptions are best effort, and what they missed is re-read on reconnect
    // (`onReconnect`: the unread badge, the feed's new-posts banner). Except a
    // refused token: retrying cannot help, the viewer has to log in again.
    shouldRetry: (event) => !(event && REFUSED.has(event.code)),
    on: {
      connecting: () => setState("connecting"),
      connected: () => {
        setState("connected");
        if (connectedBefore) reconnectListeners.forEach((fn) => fn());
        connectedBefore = true;
      },
      closed: (event) => {
        setState("closed");
        // As over HTTP: the session has ended (main.js signs out to the login page).
        // After the client has finished with this close (signing out disposes it).
        if (event && REFUSED.has(event.code)) setTimeout(signalUnauthenticated, 0);
      },
    },
  });
  return client;
}

/**
 * subscribe("FeedItemAdded", {}, (data) => ...) -> unsubscribe function.
 * Errors are passed to onError (the connection itself keeps retrying).
 */
export function subscribe(name, variables, onData, onError = console.error) {
  const doc = documents[name];
  return getClient().subscribe(
    { query: doc.text, operationName: name, variables },
    {
      next: (result) => {
        if (result.errors && result.errors.length) onError(result.errors[0]);
        else if (result.data) onData(result.data);
      },
      // A refused token ends the session (see `closed` above), no error to report.
      error: (error) => (error && REFUSED.has(error.code) ? undefined : onError(error)),
      complete: () => {},
    },
  );
}

/** Run fn after every reconnect (e.g. re-read what may have been missed). */
export function onReconnect(fn) {
  reconnectListeners.add(fn);
  return () => reconnectListeners.delete(fn);
}

/** Close the connection (log out, token change); the next subscribe opens a new one. */
export function resetLive() {
  if (client) client.dispose();
  client = null;
  setState("idle");
}

export function liveState() {
  return state;
}
