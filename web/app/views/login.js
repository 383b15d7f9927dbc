// Log in, or sign up with the same form (an extra email field).
import { gql, payload } from "../api.js";
import { apiOrigin, chooseApi, isLocalApi, pageOrigin } from "../config.js";
import { h, t } from "../dom.js";
import { navigate } from "../router.js";
import { loadViewer, signIn } from "../session.js";

/**
 * Where the password goes, said plainly when it is not this page's own server (the
 * person chose another API, config.js), with a way back to the page's own origin.
 */
function apiNotice() {
  if (apiOrigin === pageOrigin) return null;
  return h(
    "div",
    { class: "api-notice", role: "note", "data-testid": "api-notice" },
    h("p", {}, "Signing in to API at ", h("strong", { class: "api-notice-origin" }, apiOrigin)),
    h(
      "p",
      { class: "small" },
      "Not what you expected? ",
      t("button", "api-notice-reset", { type: "button", class: "link-button", onclick: () => chooseApi(pageOrigin) }, `Use this page's own server (${pageOrigin})`),
    ),
  );
}

/** The seeded demo account (`make seed`): only worth a hint on a developer's own API. */
function demoHint() {
  if (!isLocalApi()) return null;
  return h("p", { class: "hint", "data-testid": "demo-hint" }, "Demo: after ", h("code", {}, "make seed"), ", log in as ", h("code", {}, "demo"), " / ", h("code", {}, "demo-password"), ".");
}

export function loginView(root) {
  let signingUp = false;
  const username = t("input", "login-username", {
    name: "username", autocomplete: "username", placeholder: "Username", required: true,
    "aria-label": "Username", autocapitalize: "none", spellcheck: "false",
  });
  const email = t("input", "signup-email", {
    name: "email", type: "email", autocomplete: "email", placeholder: "Email", "aria-label": "Email",
  });
  const emailRow = h("div", { class: "field", hidden: true }, email);
  const password = t("input", "login-password", {
    name: "password", type: "password", autocomplete: "current-password", placeholder: "Password",
    required: true, "aria-label": "Password",
  });
  const submit = t("button", "login-submit", { type: "submit", class: "primary wide" }, "Log in");
  const error = t("p", "login-error", { class: "form-error", role: "alert", hidden: true });
  const toggle = t("button", "signup-toggle", { type: "button", class: "link-button" }, "Sign up");
  const togglePrompt = h("span", {}, "Don't have an account? ");

  function setMode(up) {
    signingUp = up;
    emailRow.hidden = !up;
    email.required = up;
    password.autocomplete = up ? "new-password" : "current-password";
    submit.textContent = up ? "Sign up" : "Log in";
    togglePrompt.textContent = up ? "Have an account? " : "Don't have an account? ";
    toggle.textContent = up ? "Log in" : "Sign up";
    error.hidden = true;
  }
  toggle.addEventListener("click", () => setMode(!signingUp));

  const form = t(
    "form",
    "login-form",
    { class: "login-form", novalidate: true },
    h("div", { class: "field" }, username),
    emailRow,
    h("div", { class: "field" }, password),
    submit,
    error,
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    error.hidden = true;
    submit.disabled = true;
    try {
      const vars = { username: username.value.trim(), password: password.value };
      const result = signingUp
        ? payload((await gql("SignUp", { ...vars, email: email.value.trim() })).signUp)
        : payload((await gql("LogIn", vars)).logIn);
      signIn(result.token, result.user);
      await loadViewer();
      navigate("/");
    } catch (e) {
      error.textContent = e.code ? `${e.message} (${e.code})` : e.message;
      error.hidden = false;
    } finally {
      submit.disabled = false;
    }
  });

  root.append(
    h(
      "section",
      { class: "login-page" },
      h(
        "div",
        { class: "card login-card" },
        h("h1", { class: "logo big" }, "Instagraph"),
        h("p", { class: "muted" }, "Share photos and videos with the people you follow."),
        apiNotice(),
        form,
        demoHint(),
      ),
      h("div", { class: "card login-switch" }, togglePrompt, toggle),
      apiOrigin === pageOrigin ? h("p", { class: "muted small api-origin" }, "API: ", apiOrigin) : null,
    ),
  );
  username.focus();
}
