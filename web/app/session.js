// The signed-in viewer and the unread notifications badge, shared by every view.
import { gql } from "./api.js";
import { getToken, setToken } from "./config.js";
import { onReconnect, resetLive, subscribe } from "./live.js";

export const session = {
  viewer: null, // { id, username, displayName }
  token: null, // the token the viewer was loaded with
  unread: 0,
};

const badgeListeners = new Set();
const notificationListeners = new Set();
let stopNotifications = null;
let stopReconnect = null;

export function onUnreadChange(fn) {
  badgeListeners.add(fn);
  fn(session.unread);
  return () => badgeListeners.delete(fn);
}

/** Views (the notifications page) that want each live notification as it comes. */
export function onNotification(fn) {
  notificationListeners.add(fn);
  return () => notificationListeners.delete(fn);
}

export function setUnread(n) {
  session.unread = Math.max(0, n);
  badgeListeners.forEach((fn) => fn(session.unread));
}

async function refreshUnread() {
  const data = await gql("Viewer");
  session.viewer = data.viewer;
  setUnread(data.notifications.unreadCount);
}

/** Load the viewer for the stored token; false when there is none or it expired. */
export async function loadViewer() {
  const token = getToken();
  if (!token) return false;
  const data = await gql("Viewer");
  if (!data.viewer) {
    setToken(null);
    return false;
  }
  session.viewer = data.viewer;
  session.token = token;
  setUnread(data.notifications.unreadCount);
  startLive();
  return true;
}

function startLive() {
  if (stopNotifications) return;
  stopNotifications = subscribe("NotificationAdded", {}, (data) => {
    const n = data.notificationAdded;
    setUnread(session.unread + 1);
    notificationListeners.forEach((fn) => fn(n));
  });
  // Live notifications are best effort: after a reconnect, re-read the count.
  stopReconnect = onReconnect(() => refreshUnread().catch(console.error));
}

export function signIn(token, user) {
  forget();
  setToken(token);
  session.viewer = user;
  session.token = token;
}

/** Drop this tab's session (live connection, viewer, badge), not the stored token. */
export function forget() {
  if (stopNotifications) stopNotifications();
  if (stopReconnect) stopReconnect();
  stopNotifications = null;
  stopReconnect = null;
  resetLive();
  session.viewer = null;
  session.token = null;
  setUnread(0);
}

export function signOut() {
  forget();
  setToken(null);
}

/** True when the stored token is no longer the one this tab's session runs on. */
export function tokenChanged() {
  return getToken() !== session.token;
}
