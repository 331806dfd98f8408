// DOM building without markup: every string given becomes text, never HTML.

// h("div", {class: "x", onclick: fn, "aria-label": "y"}, child, "text", ...)
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on") && typeof v === "function") el.addEventListener(k.slice(2), v);
    else if (k === "class") el.className = v;
    else if (k === "text") el.textContent = v;
    else if (k === "hidden") el.hidden = !!v;
    else if (k === "value") el.value = v;
    else if (k === "checked") el.checked = !!v;
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  add(el, children);
  return el;
}

function add(el, children) {
  for (const c of children) {
    if (c === undefined || c === null || c === false) continue;
    if (Array.isArray(c)) add(el, c);
    else if (c instanceof Node) el.appendChild(c);
    else el.appendChild(document.createTextNode(String(c)));
  }
}

export function clear(el) {
  while (el.firstChild) el.removeChild(el.firstChild);
  return el;
}

export const $ = (id) => document.getElementById(id);

// A modal dialog (role dialog, Escape closes it); body(dlg) builds its content.
export function dialog(title, body) {
  const dlg = h("dialog", { "aria-label": title, class: "dlg" });
  const close = h("button", { type: "button", class: "icon close", "aria-label": "Close", onclick: () => dlg.close() }, "\u00d7");
  dlg.append(h("div", { class: "dlg-head" }, h("h3", {}, title), close));
  const content = h("div", { class: "dlg-body" });
  dlg.append(content);
  dlg.addEventListener("close", () => dlg.remove());
  document.body.append(dlg);
  body(content, dlg);
  dlg.showModal();
  return dlg;
}

// "12 KiB" for n bytes
export function size(n) {
  if (n < 1024) return n + " B";
  const units = ["KiB", "MiB", "GiB"];
  let v = n / 1024, i = 0;
  while (v >= 1024 && i < units.length - 1) { v /= 1024; i++; }
  return (v < 10 ? v.toFixed(1) : Math.round(v)) + " " + units[i];
}

export function when(ms) {
  const d = new Date(ms), now = new Date();
  if (d.toDateString() === now.toDateString())
    return d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  return d.toLocaleDateString([], { month: "short", day: "numeric" }) + " " +
    d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
}
