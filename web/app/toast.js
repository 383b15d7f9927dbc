// Errors and notices shown to the user: a small stack of toasts.
import { h } from "./dom.js";

function stack() {
  let el = document.getElementById("toasts");
  if (!el) {
    el = h("div", { id: "toasts", class: "toasts", role: "status", "aria-live": "polite" });
    document.body.append(el);
  }
  return el;
}

export function toast(message, { kind = "info", code = null, timeout = 5000 } = {}) {
  const el = h(
    "div",
    { class: `toast toast-${kind}`, "data-testid": "toast", "data-kind": kind },
    h("span", {}, message),
    code ? h("code", { class: "toast-code" }, code) : null,
    h("button", { class: "toast-close", "aria-label": "Dismiss", onclick: () => el.remove() }, "×"),
  );
  stack().append(el);
  if (timeout) setTimeout(() => el.remove(), timeout);
  return el;
}

/** Show an error (an ApiError or anything thrown). */
export function showError(error, context = "") {
  console.error(context, error);
  const message = (error && error.message) || String(error);
  toast(context ? `${context}: ${message}` : message, {
    kind: "error",
    code: error && error.code,
    timeout: 8000,
  });
}
