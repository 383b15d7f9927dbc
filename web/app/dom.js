// Building DOM safely: every string from the API goes in as a text node or an
// attribute value, never as HTML.
import { splitText } from "./text.js";

/**
 * h("a", { href: "#/", class: "x", dataset: { testid: "nav-feed" }, onclick }, "Feed", child)
 * Attributes: `class`, `dataset`, `style` (object), `on<event>` (listener), booleans
 * (true sets the attribute, false/null/undefined leaves it out), anything else as a string.
 */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === false || value === null || value === undefined) continue;
    if (name === "dataset") Object.assign(el.dataset, value);
    else if (name === "style") Object.assign(el.style, value);
    else if (name.startsWith("on") && typeof value === "function") {
      el.addEventListener(name.slice(2).toLowerCase(), value);
    } else if (name === "value" || name === "checked") el[name] = value;
    else el.setAttribute(name, value === true ? "" : String(value));
  }
  append(el, children);
  return el;
}

/** An element with a data-testid. */
export function t(tag, testid, attrs = {}, ...children) {
  return h(tag, { ...attrs, "data-testid": testid }, ...children);
}

export function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

/** Replace an element's children. */
export function replace(el, ...children) {
  el.replaceChildren();
  return append(el, children);
}

/**
 * A caption or comment as text nodes, with #hashtags linked to #/tags/<tag> and
 * @mentions to #/u/<username>, found by the server's rules (text.js). Only the link
 * targets are built from the text, and they are URL-encoded; the text stays text.
 */
export function richText(text) {
  return splitText(text).map((part) => {
    if (part.kind === "tag") return h("a", { href: `#/tags/${encodeURIComponent(part.name)}`, class: "tag" }, part.text);
    if (part.kind === "mention") return h("a", { href: `#/u/${encodeURIComponent(part.name)}`, class: "mention" }, part.text);
    return part.text;
  });
}

/** "3m", "5h", "2d", or a date. */
export function timeAgo(iso) {
  const then = new Date(iso);
  const seconds = Math.max(0, (Date.now() - then.getTime()) / 1000);
  if (seconds < 60) return "now";
  if (seconds < 3600) return `${Math.floor(seconds / 60)}m`;
  if (seconds < 86400) return `${Math.floor(seconds / 3600)}h`;
  if (seconds < 7 * 86400) return `${Math.floor(seconds / 86400)}d`;
  return then.toLocaleDateString();
}

/** A round avatar with the user's initial (the API has no avatar images). */
export function avatar(user, size = 32) {
  const name = (user && (user.displayName || user.username)) || "?";
  let hue = 0;
  for (const ch of (user && user.username) || name) hue = (hue * 31 + ch.codePointAt(0)) % 360;
  return h(
    "span",
    {
      class: "avatar",
      "aria-hidden": "true",
      style: {
        width: `${size}px`,
        height: `${size}px`,
        fontSize: `${Math.round(size * 0.45)}px`,
        background: `hsl(${hue} 55% 55%)`,
      },
    },
    [...name][0].toUpperCase(),
  );
}

export function plural(n, one, many = `${one}s`) {
  return `${n} ${n === 1 ? one : many}`;
}
