// Inline SVG icons, built with the DOM (constant path data only).
const NS = "http://www.w3.org/2000/svg";

const PATHS = {
  heart:
    "M16.8 3.5c-2 0-3.6 1.1-4.8 2.8-1.2-1.7-2.8-2.8-4.8-2.8C4.1 3.5 2 6 2 9c0 5.3 7.6 10.2 10 11.5 2.4-1.3 10-6.2 10-11.5 0-3-2.1-5.5-5.2-5.5z",
  comment:
    "M20.7 16.4A9 9 0 1 0 17.5 20l3.5 1-0.3-4.6zM12 3a9 9 0 0 1 8.7 13.4",
  home: "M3 10.5 12 3l9 7.5V21h-6v-6H9v6H3z",
  plus: "M12 3v18M3 12h18M5 2h14a3 3 0 0 1 3 3v14a3 3 0 0 1-3 3H5a3 3 0 0 1-3-3V5a3 3 0 0 1 3-3z",
  search: "M10.5 3a7.5 7.5 0 1 0 0 15 7.5 7.5 0 0 0 0-15zM16 16l5.5 5.5",
  bell: "M18 16V11a6 6 0 0 0-12 0v5l-2 2h16zM10 20a2 2 0 0 0 4 0",
  logout: "M15 4h4a1 1 0 0 1 1 1v14a1 1 0 0 1-1 1h-4M10 17l5-5-5-5M15 12H3",
  close: "M5 5l14 14M19 5 5 19",
  chevronLeft: "M15 5l-7 7 7 7",
  chevronRight: "M9 5l7 7-7 7",
};

export function icon(name, { size = 24, filled = false, label = null } = {}) {
  const svg = document.createElementNS(NS, "svg");
  svg.setAttribute("viewBox", "0 0 24 24");
  svg.setAttribute("width", String(size));
  svg.setAttribute("height", String(size));
  svg.setAttribute("class", `icon icon-${name}${filled ? " filled" : ""}`);
  if (label) {
    svg.setAttribute("role", "img");
    svg.setAttribute("aria-label", label);
  } else svg.setAttribute("aria-hidden", "true");
  const path = document.createElementNS(NS, "path");
  path.setAttribute("d", PATHS[name]);
  svg.append(path);
  return svg;
}
