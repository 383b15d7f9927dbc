// Hash routes: "#/u/ada" -> the view registered for "/u/:username" with { username: "ada" }.

const routes = [];

export function route(pattern, view) {
  const names = [];
  const source = pattern.replace(/:(\w+)/g, (_, name) => {
    names.push(name);
    return "([^/]+)";
  });
  routes.push({ regex: new RegExp(`^${source}/?$`), names, view });
}

export function currentPath() {
  const hash = window.location.hash.replace(/^#/, "");
  return hash.startsWith("/") ? hash : `/${hash}`;
}

export function navigate(path) {
  if (currentPath() === path) window.dispatchEvent(new HashChangeEvent("hashchange"));
  else window.location.hash = `#${path}`;
}

/** The view and params for a path, or null. */
export function match(path) {
  const [pathname] = path.split("?");
  for (const { regex, names, view } of routes) {
    const m = regex.exec(pathname);
    if (m) {
      const params = {};
      try {
        names.forEach((name, i) => {
          params[name] = decodeURIComponent(m[i + 1]);
        });
      } catch (error) {
        // A broken percent-escape (`#/u/%E0%A4%A`): no such page, not a crash.
        if (error instanceof URIError) return null;
        throw error;
      }
      return { view, params };
    }
  }
  return null;
}
