// The Missive web client: conversations, history, compose, files, groups,
// contacts, devices, safety numbers and alarms, all through the account's
// owner (JSON-RPC over /ws, docs/daemon.md). Everything another person or the
// network wrote is shown as text (dom.js never parses markup).

import { Rpc } from "./rpc.js";
import { h, clear, $, dialog, size, when } from "./dom.js";
import { MessageList } from "./list.js";

// The session's page key and proof key (docs/web.md, "Security"): the login's answer puts
// them in the fragment; this tab keeps them in sessionStorage, which is this origin's alone (a
// cookie reaches every port of the host). Every request that reaches the account carries the
// page key; the proof key never leaves the page: with it each connection's first message
// proves that the server is the one the page came from, not whatever listens on the port
// once that one stopped.
const [pageKey, proofKey] = (() => {
  const m = /^#k=([0-9a-f]{64})&p=([0-9a-f]{64})$/.exec(location.hash);
  if (m) {
    sessionStorage.setItem("missive-key", m[1]);
    sessionStorage.setItem("missive-proof", m[2]);
    history.replaceState(null, "", "/");
  }
  return [sessionStorage.getItem("missive-key") || "", sessionStorage.getItem("missive-proof") || ""];
})();
const withKey = (url) => url + (url.includes("?") ? "&" : "?") + "k=" + pageKey;

const rpc = new Rpc(withKey((location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/ws"), proofKey);

const state = {
  me: "",
  contacts: new Map(), // handle → contact name
  names: new Map(), // handle → display name from profiles (from_name)
  groups: new Map(), // "group:HEX" → {name, members, admins, invited}
  convs: [],
  requests: [],
  current: null,
  selected: 0,
  typingSent: 0,
  typers: new Map(), // conversation → Map(handle → timeout)
  replyTo: null,
  pendingDevices: new Map(), // device id → fingerprint
  timerS: 0,
  tailStale: false, // the connection was lost since the open conversation was loaded
};

const PAGE = 100;
const list = new MessageList($("log"), renderMessage, loadOlder);
window.missive = { rpc, state, list };

// "Newest messages" shows while the newest are out of view; End (in the list) goes there too
list.onUnseen = () => { $("newest").hidden = false; };
// the newest read once they are in view: not while the list is scrolled up to older ones
list.onScroll = (atEnd) => {
  $("newest").hidden = atEnd;
  if (atEnd) markRead();
};
function toNewest() {
  list.jumpToEnd();
  $("newest").hidden = true;
  markRead();
}
$("newest").addEventListener("click", toNewest);
$("log").addEventListener("keydown", (e) => {
  if (e.key === "End") {
    e.preventDefault();
    toNewest();
  } else if (e.key === "Home") {
    e.preventDefault();
    $("log").scrollTop = 0;
  }
});

// ---- names ----------------------------------------------------------------------------

function nameOf(handle) {
  if (handle === state.me && state.me) return "you";
  const c = state.contacts.get(handle);
  if (c && c !== handle) return c;
  return state.names.get(handle) || handle;
}

// a person named beside what they wrote or what is said of them: the contact name, else the
// display name they chose (chosen, or the one learnt) with the handle after it (anyone may call
// themselves "Alice"), else the handle
function whoOf(handle, chosen) {
  if (handle === state.me && state.me) return "you";
  const c = state.contacts.get(handle);
  if (c && c !== handle) return c;
  const name = chosen || state.names.get(handle);
  return name && name !== handle ? name + " (" + handle + ")" : handle;
}

function senderLabel(m) {
  return whoOf(m.from, m.from_name);
}

function convName(conv) {
  if (conv.startsWith("group:")) {
    const g = state.groups.get(conv);
    return g ? g.name : "group";
  }
  return nameOf(conv);
}

// the params naming a conversation for a command
function convParams(conv, extra) {
  const p = conv.startsWith("group:") ? { group: conv } : { args: [conv] };
  return Object.assign(p, extra || {});
}

// ---- errors and banners ---------------------------------------------------------------

function toast(text) {
  const t = h("div", { class: "toast", role: "status" }, text);
  document.body.append(t);
  setTimeout(() => t.remove(), 6000);
}

async function run(what, promise) {
  try {
    return await promise;
  } catch (e) {
    toast(what + ": " + e.message);
    throw e;
  }
}

function banner(kind, key, text, actions) {
  const old = key && document.querySelector('#banners [data-key="' + CSS.escape(key) + '"]');
  if (old) old.remove();
  const b = h("div", { class: "banner " + kind, "data-key": key || "" },
    h("span", { class: "banner-text" }, text),
    (actions || []).map(([label, fn]) => h("button", { type: "button", onclick: () => fn(b) }, label)),
    h("button", { type: "button", class: "icon", "aria-label": "Dismiss", onclick: () => b.remove() }, "\u00d7"));
  $("banners").append(b);
  return b;
}

// ---- loading --------------------------------------------------------------------------

function setContacts(items) {
  state.contacts = new Map(items.map((c) => [c.handle, c.name]));
}

async function loadContacts() {
  setContacts(await rpc.items("contacts", { args: ["list"] }));
}

async function loadGroups() {
  setGroups(await rpc.items("groups", { args: ["list"] }));
}

function setGroups(items) {
  state.groups = new Map(items.map((g) => [g.id, {
    name: g.name,
    id: g.id,
    members: (g.members || "").split(",").map((s) => s.trim()).filter(Boolean),
    admins: (g.admins || "").split(",").map((s) => s.trim()).filter(Boolean),
    invited: g.invited,
  }]));
}

let convTimer = null;
function reloadConvs() {
  clearTimeout(convTimer);
  convTimer = setTimeout(loadConvs, 150);
}

async function loadConvs(show = true) {
  const archived = $("show-archived").checked;
  const [convs, requests] = await Promise.all([
    rpc.items("conversations", archived ? { args: ["list"], archived: true } : { args: ["list"] }),
    rpc.items("requests", { args: ["list"] }),
  ]);
  state.convs = convs;
  state.requests = requests;
  if (!show) return;
  renderConvs();
  renderRequests();
  if (state.current) renderHead();
}

// ---- the conversation list ------------------------------------------------------------

function renderConvs() {
  const ul = clear($("convs"));
  const rows = state.convs.slice();
  if (state.current && !rows.some((r) => r.conversation === state.current))
    rows.unshift({ conversation: state.current, unread: 0, last_ms: 0 });
  const requests = new Set(state.requests.map((r) => r.handle));
  rows.forEach((r, i) => {
    const active = r.conversation === state.current;
    const li = h("li", {
      role: "option", id: "conv-" + i, class: "conv" + (active ? " active" : "") + (r.unread ? " unread" : ""),
      "aria-selected": active ? "true" : "false", "data-conv": r.conversation,
      onclick: () => openConv(r.conversation),
    },
      h("span", { class: "conv-name" }, convName(r.conversation)),
      r.pinned ? h("span", { class: "flag" }, "pinned") : null,
      r.muted ? h("span", { class: "flag" }, "muted") : null,
      requests.has(r.conversation) ? h("span", { class: "flag req" }, "request") : null,
      r.last_ms ? h("span", { class: "conv-time" }, when(r.last_ms)) : null,
      r.unread ? h("span", { class: "badge", "aria-label": r.unread + " unread" }, String(r.unread)) : null);
    ul.append(li);
    if (active) {
      state.selected = i;
      ul.setAttribute("aria-activedescendant", li.id);
    }
  });
  const total = state.convs.reduce((n, r) => n + (r.muted ? 0 : r.unread || 0), 0);
  document.title = total ? "(" + total + ") Missive" : "Missive";
}

function renderRequests() {
  const box = clear($("requests"));
  for (const r of state.requests) {
    box.append(h("div", { class: "request" },
      h("div", {}, h("strong", {}, r.handle), " wants to write to you (" + r.count + ")"),
      r.last ? h("div", { class: "req-text" }, r.last) : null,
      h("div", { class: "row" },
        h("button", { type: "button", onclick: () => openConv(r.handle) }, "Open"),
        h("button", { type: "button", onclick: () => requestDo("accept", r.handle) }, "Accept"),
        h("button", { type: "button", onclick: () => requestDo("delete", r.handle) }, "Delete"),
        h("button", { type: "button", onclick: () => requestDo("block", r.handle) }, "Block"))));
  }
  for (const g of state.groups.values()) {
    if (!g.invited) continue;
    box.append(h("div", { class: "request" },
      h("div", {}, "Invitation to the group ", h("strong", {}, g.name)),
      h("div", { class: "req-text" }, g.members.map(nameOf).join(", ")),
      h("div", { class: "row" },
        h("button", { type: "button", onclick: () => openConv(g.id) }, "Open"),
        h("button", {
          type: "button", onclick: async () => {
            await run("accepting", rpc.call("groups", { args: ["accept", g.id] }));
            await loadGroups();
            reloadConvs();
          },
        }, "Accept"))));
  }
}

async function requestDo(verb, handle) {
  await run(verb, rpc.call("requests", { args: [verb, handle] }));
  if (verb !== "accept" && state.current === handle) closeConv();
  reloadConvs();
}

$("convs").addEventListener("keydown", (e) => {
  const items = $("convs").children;
  if (!items.length) return;
  let i = state.selected;
  if (e.key === "ArrowDown") i = Math.min(i + 1, items.length - 1);
  else if (e.key === "ArrowUp") i = Math.max(i - 1, 0);
  else if (e.key === "Home") i = 0;
  else if (e.key === "End") i = items.length - 1;
  else if (e.key === "Enter" || e.key === " ") {
    e.preventDefault();
    openConv(items[i].dataset.conv).then(() => $("text").focus());
    return;
  } else return;
  e.preventDefault();
  state.selected = i;
  for (const li of items) li.classList.toggle("focus", li === items[i]);
  $("convs").setAttribute("aria-activedescendant", items[i].id);
  items[i].scrollIntoView({ block: "nearest" });
});

$("show-archived").addEventListener("change", loadConvs);

// ---- one conversation -----------------------------------------------------------------

function closeConv() {
  state.current = null;
  list.reset([], false);
  $("conv").classList.add("empty");
  document.body.classList.remove("in-conv");
  $("conv-title").textContent = "No conversation open";
  renderConvs();
}

async function openConv(conv) {
  if (!conv) return;
  hideSearch();
  state.current = conv;
  state.replyTo = null;
  $("reply-bar").hidden = true;
  $("conv").classList.remove("empty");
  document.body.classList.add("in-conv");
  renderConvs();
  renderHead();
  renderTyping();
  list.reset([], false);
  const items = await rpc.items("history", convParams(conv, { limit: PAGE }));
  if (state.current !== conv) return;
  items.forEach(learnName);
  // fewer than asked for may come back (an answer holds at most 8 MiB): more while any come
  list.reset(items, items.length > 0);
  state.tailStale = false;
  list.scrollToEnd();
  $("newest").hidden = true;
  markRead();
  rpc.items("timer", convParams(conv)).then((t) => {
    if (state.current !== conv || !t.length) return;
    state.timerS = t[0].timer_s || 0;
    showTimer();
  }).catch(() => {});
}

function learnName(m) {
  if (m.from_name && !m.outgoing) state.names.set(m.from, m.from_name);
}

async function loadOlder(before) {
  const conv = state.current;
  const items = await rpc.items("history", convParams(conv, { limit: PAGE, before }));
  if (state.current !== conv) return null;
  items.forEach(learnName);
  return { items, more: items.length > 0 };
}

// newest messages of the open conversation, merged (after a send, a change elsewhere, a
// reconnection); when none of them is one the list holds, more came than the tail holds (while
// the connection was lost, say): the newest page is loaded in its place, so that no gap stays
// between what was shown and what came (and nothing in one is marked read)
// After a lost connection (state.tailStale) the newest page is loaded in place of what was shown
// whatever came (what events brought meanwhile may stand after a gap), and nothing is marked
// read before that.
const TAIL = 30;
let tailTimer = null;
function refreshTail() {
  clearTimeout(tailTimer);
  tailTimer = setTimeout(async () => {
    const conv = state.current;
    if (!conv) return;
    const stale = state.tailStale;
    const items = stale ? [] : await rpc.items("history", convParams(conv, { limit: TAIL }));
    if (state.current !== conv) return;
    items.forEach(learnName);
    if (!stale && (items.length < TAIL || !list.messages.length || items.some((m) => list.get(m.message_id)))) {
      list.merge(items);
      return;
    }
    const page = await rpc.items("history", convParams(conv, { limit: PAGE }));
    if (state.current !== conv) return;
    page.forEach(learnName);
    const follow = list.newestInView();
    list.reset(page, page.length > 0);
    if (follow) list.scrollToEnd();
    else $("newest").hidden = false;
    if (stale) state.tailStale = false;
    markRead();
  }, 100);
}

function convRow(conv) {
  return state.convs.find((r) => r.conversation === conv) || {};
}

function renderHead() {
  const conv = state.current;
  if (!conv) return;
  const group = conv.startsWith("group:");
  $("conv-title").textContent = convName(conv);
  let sub = conv;
  if (group) {
    const g = state.groups.get(conv);
    if (g) sub = g.members.map(nameOf).join(", ") + (g.invited ? " — invitation not accepted" : "");
  }
  $("conv-sub").textContent = sub;
  $("btn-safety").hidden = group;
  $("btn-info").hidden = !group;
  const r = convRow(conv);
  $("btn-pin").textContent = r.pinned ? "Unpin" : "Pin";
  $("btn-mute").textContent = r.muted ? "Unmute" : "Mute";
  $("btn-archive").textContent = r.archived ? "Unarchive" : "Archive";
}

function showTimer() {
  const sel = $("timer");
  const map = { 0: "off", 30: "30s", 300: "5m", 3600: "1h", 86400: "1d", 604800: "1w" };
  let v = map[state.timerS];
  if (!v) {
    v = state.timerS + "s";
    if (![...sel.options].some((o) => o.value === v)) sel.append(h("option", { value: v }, state.timerS + " seconds"));
  }
  sel.value = v;
}

$("timer").addEventListener("change", async () => {
  if (!state.current) return;
  await run("setting the timer", rpc.call("timer", convParams(state.current, {
    args: state.current.startsWith("group:") ? [$("timer").value] : [state.current, $("timer").value],
  })));
});

async function convDo(on, off, flag) {
  const conv = state.current;
  const verb = convRow(conv)[flag] ? off : on;
  await run(verb, rpc.call("conversations", { args: [verb, conv] }));
  await loadConvs();
}
$("btn-pin").addEventListener("click", () => convDo("pin", "unpin", "pinned"));
$("btn-mute").addEventListener("click", () => convDo("mute", "unmute", "muted"));
$("btn-archive").addEventListener("click", () => convDo("archive", "unarchive", "archived"));
$("btn-safety").addEventListener("click", () => safetyDialog(state.current));
$("btn-info").addEventListener("click", () => groupDialog(state.current));
$("back").addEventListener("click", closeConv);

let readTimer = null;
function markRead() {
  clearTimeout(readTimer);
  readTimer = setTimeout(async () => {
    const conv = state.current;
    if (!conv || document.hidden || state.tailStale || !list.newestInView()) return;
    const r = convRow(conv);
    if (!r.unread && !list.messages.some((m) => !m.outgoing && m.status === "received")) return;
    await rpc.call("read", convParams(conv)).catch(() => {});
    reloadConvs();
  }, 300);
}
document.addEventListener("visibilitychange", () => { if (!document.hidden) markRead(); });

// ---- messages -------------------------------------------------------------------------

const MARKS = {
  queued: ["\u25CB", "waiting to be sent"],
  sent: ["\u2713", "sent"],
  delivered: ["\u2713\u2713", "delivered"],
  read: ["\u2713\u2713", "read"],
  failed: ["!", "not sent"],
};

// the "[file: PATH (N bytes)]" lines the owner adds for received files, shown as links instead
const FILE_LINE = /\n?\[file: [^\n]*\]$/;

// the text with its mentions (byte ranges of the UTF-8 text) highlighted
function textWithMentions(m) {
  let text = m.text || "";
  if (Array.isArray(m.attachments) && m.attachments.length && (!m.mentions || !m.mentions.length))
    for (let i = 0; i < m.attachments.length && FILE_LINE.test(text); i++) text = text.replace(FILE_LINE, "");
  if (!m.mentions || !m.mentions.length) return [text];
  const bytes = new TextEncoder().encode(text), dec = new TextDecoder();
  const parts = [];
  let at = 0;
  for (const r of m.mentions.slice().sort((a, b) => a.start - b.start)) {
    if (r.start < at || r.start + r.length > bytes.length) continue;
    parts.push(dec.decode(bytes.subarray(at, r.start)));
    parts.push(h("mark", { class: "mention", title: r.handle }, dec.decode(bytes.subarray(r.start, r.start + r.length))));
    at = r.start + r.length;
  }
  parts.push(dec.decode(bytes.subarray(at)));
  return parts;
}

// an image that loads below a list that was at its end keeps it there
function keepAtEnd(e) {
  const log = $("log"), img = e.currentTarget;
  if (log.scrollHeight - log.scrollTop - log.clientHeight - img.offsetHeight < 80) list.scrollToEnd();
}

// What goes over plain HTTP (files, uploads, pictures of QR codes) goes only while the
// WebSocket is open and proven (rpc.js): once missive web stops, what listens on its port next
// gets none of it, nor shows its files here.
const NOT_CONNECTED = "not connected to missive web: try again once it is";

function fileUrl(m, a) {
  if (!/^[0-9a-f]{32}$/.test(m.message_id) || !Number.isInteger(a.index) || !rpc.open) return null;
  return withKey("/files/" + m.message_id + "/" + a.index);
}

const IMAGES = new Set(["image/png", "image/jpeg", "image/gif", "image/webp"]);

function renderFiles(m) {
  if (!Array.isArray(m.attachments) || !m.attachments.length) return null;
  return h("div", { class: "files" }, m.attachments.map((a) => {
    const url = fileUrl(m, a);
    const name = String(a.name || "file");
    if (!url && !rpc.open) return h("span", { class: "fname" }, name + " (shown once connected)");
    if (!url) return null;
    if (IMAGES.has(a.mime))
      return h("a", { href: url, class: "img", onclick: (e) => { e.preventDefault(); download(url, name, e.currentTarget); } },
        h("img", { src: url, alt: name, onload: keepAtEnd }));
    return h("a", {
      href: url, class: "file-link", download: name,
      onclick: (e) => { e.preventDefault(); download(url, name, e.currentTarget); },
    }, h("span", { class: "fname" }, name), " ", h("span", { class: "fsize" }, size(a.size || 0)));
  }));
}

// fetches an attachment with its progress shown, then saves it
function download(url, name, link) {
  if (!rpc.open) {
    toast("download of " + name + ": " + NOT_CONNECTED);
    return;
  }
  const bar = h("progress", { max: 100, value: 0, class: "dl", "aria-label": "Downloading " + name });
  link.after(bar);
  const xhr = new XMLHttpRequest();
  xhr.open("GET", url);
  xhr.responseType = "blob";
  xhr.onprogress = (e) => { if (e.lengthComputable) bar.value = (100 * e.loaded) / e.total; };
  xhr.onload = () => {
    if (xhr.status !== 200) {
      bar.remove();
      toast("download of " + name + " failed: " + xhr.status);
      return;
    }
    bar.value = 100;
    bar.classList.add("done");
    const href = URL.createObjectURL(xhr.response);
    const a = h("a", { href, download: name, hidden: true });
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => { URL.revokeObjectURL(href); bar.remove(); }, 30000);
  };
  xhr.onerror = () => { bar.remove(); toast("download of " + name + " failed"); };
  xhr.send();
}

function isNotice(m) {
  return m.status === "notice";
}

function renderMessage(m) {
  if (isNotice(m)) return h("div", { class: "notice", "data-id": m.message_id }, m.text);
  const group = m.conversation && m.conversation.startsWith("group:");
  const unsent = m.status === "unsent";
  const el = h("div", {
    class: "msg " + (m.outgoing ? "out" : "in") + (m.mentioned ? " mentioned" : "") + (unsent ? " unsent" : ""),
    "data-id": m.message_id, role: "article", tabindex: "-1",
    "aria-label": (m.outgoing ? "you" : nameOf(m.from)) + ", " + when(m.sent_at_ms),
  });
  if (!m.outgoing && (group || m.request))
    el.append(h("div", { class: "from", title: m.from }, senderLabel(m)));
  if (m.quote)
    el.append(h("blockquote", { class: "quote" }, h("span", { class: "qfrom" }, whoOf(m.quote.from)), " ", m.quote.text || "(a file)"));
  else if (m.reply_to)
    el.append(h("blockquote", { class: "quote" }, "original not found"));
  const files = Array.isArray(m.attachments) && m.attachments.length;
  const shown = unsent ? "this message was unsent"
    : m.outgoing && !m.text && !files ? h("em", {}, "file sent") : textWithMentions(m);
  el.append(h("div", { class: "text" }, shown));
  if (!unsent) {
    const files = renderFiles(m);
    if (files) el.append(files);
  }
  if (Array.isArray(m.reactions) && m.reactions.length)
    el.append(h("div", { class: "reactions" }, m.reactions.map((r) =>
      h("button", {
        type: "button", class: "reaction" + ((r.from || []).includes(state.me) ? " mine" : ""),
        title: (r.from || []).map(nameOf).join(", "),
        onclick: () => react(m, r.emoji),
      }, r.emoji + " " + r.count))));
  const meta = h("div", { class: "meta" }, h("time", {}, when(m.sent_at_ms)));
  if (m.edit_number || m.status === "edited") meta.append(h("span", { class: "edited" }, "edited"));
  if (m.timer_s) meta.append(h("span", { class: "vanish", title: "disappears " + m.timer_s + " s after it is read" }, "\u23F1"));
  if (m.request) meta.append(h("span", { class: "flag req" }, "request"));
  if (m.outgoing) {
    const mark = MARKS[m.status] || MARKS.sent;
    meta.append(h("span", { class: "mark " + m.status, title: mark[1], "aria-label": mark[1] }, mark[0]));
  }
  el.append(meta);
  if (!unsent) {
    const acts = h("div", { class: "actions" },
      h("button", { type: "button", onclick: () => startReply(m) }, "Reply"),
      h("button", { type: "button", onclick: (e) => reactPicker(m, e.currentTarget) }, "React"));
    if (m.outgoing) {
      acts.append(h("button", { type: "button", onclick: () => editDialog(m) }, "Edit"));
      acts.append(h("button", { type: "button", onclick: () => unsendDialog(m) }, "Unsend"));
    }
    el.append(acts);
  }
  return el;
}

function startReply(m) {
  state.replyTo = m;
  $("reply-text").textContent = "\u21aa " + (m.outgoing ? "you" : whoOf(m.from, m.from_name)) + ": " + (m.text || "").split("\n")[0];
  $("reply-bar").hidden = false;
  $("text").focus();
}
$("reply-cancel").addEventListener("click", () => { state.replyTo = null; $("reply-bar").hidden = true; });

const EMOJI = ["\u{1F44D}", "\u2764\uFE0F", "\u{1F602}", "\u{1F62E}", "\u{1F622}", "\u{1F389}"];

function reactPicker(m, button) {
  const old = document.querySelector(".picker");
  if (old) old.remove();
  const p = h("div", { class: "picker", role: "menu" }, EMOJI.map((e) =>
    h("button", { type: "button", role: "menuitem", onclick: () => { p.remove(); react(m, e); } }, e)));
  p.addEventListener("keydown", (e) => { if (e.key === "Escape") { p.remove(); button.focus(); } });
  button.after(p);
  p.firstChild.focus();
}

async function react(m, emoji) {
  const mine = (m.reactions || []).find((r) => (r.from || []).includes(state.me));
  const params = mine && mine.emoji === emoji ? { args: [m.message_id], remove: true } : { args: [m.message_id, emoji] };
  await run("reacting", rpc.call("react", params));
  setReaction(m, state.me, params.remove ? "" : emoji);
}

function setReaction(m, from, emoji) {
  const rs = (m.reactions || []).map((r) => ({ emoji: r.emoji, count: r.count, from: (r.from || []).filter((x) => x !== from) }));
  if (emoji) {
    let r = rs.find((x) => x.emoji === emoji);
    if (!r) rs.push((r = { emoji, from: [] }));
    r.from.push(from);
  }
  m.reactions = rs.filter((r) => r.from.length).map((r) => ({ emoji: r.emoji, count: r.from.length, from: r.from }));
  list.update(m);
}

function editDialog(m) {
  dialog("Edit message", (body, dlg) => {
    const ta = h("textarea", { rows: 4, "aria-label": "New text" });
    ta.value = m.text || "";
    const save = async () => {
      await run("editing", rpc.call("edit", { args: [m.message_id], text: ta.value }));
      m.text = ta.value;
      m.status = m.status === "read" || m.status === "delivered" ? m.status : m.status;
      m.edit_number = (m.edit_number || 0) + 1;
      list.update(m);
      dlg.close();
    };
    ta.addEventListener("keydown", (e) => { if (e.key === "Enter" && !e.shiftKey) { e.preventDefault(); save(); } });
    body.append(ta, h("div", { class: "row" }, h("button", { type: "button", class: "primary", onclick: save }, "Save")));
    setTimeout(() => ta.focus(), 0);
  });
}

function unsendDialog(m) {
  dialog("Unsend message", (body, dlg) => {
    body.append(h("p", {}, "Take this message back from everyone who has it?"),
      h("blockquote", { class: "quote" }, m.text || ""),
      h("div", { class: "row" },
        h("button", {
          type: "button", class: "danger", onclick: async () => {
            await run("unsending", rpc.call("unsend", { args: [m.message_id] }));
            m.status = "unsent";
            list.update(m);
            dlg.close();
          },
        }, "Unsend"),
        h("button", { type: "button", onclick: () => dlg.close() }, "Cancel")));
  });
}

// ---- compose --------------------------------------------------------------------------

const text = $("text");

function grow() {
  text.style.height = "auto";
  text.style.height = Math.min(text.scrollHeight, 200) + "px";
}

text.addEventListener("keydown", (e) => {
  if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
    e.preventDefault();
    sendText();
  } else if (e.key === "Escape" && state.replyTo) {
    state.replyTo = null;
    $("reply-bar").hidden = true;
  } else if (e.key === "ArrowUp" && text.value === "") {
    const mine = list.messages.slice().reverse().find((m) => m.outgoing && m.status !== "unsent" && !isNotice(m));
    if (mine) {
      e.preventDefault();
      editDialog(mine);
    }
  }
});

text.addEventListener("input", () => {
  grow();
  const now = Date.now();
  if (state.current && text.value && now - state.typingSent > 4000) {
    state.typingSent = now;
    rpc.call("typing", convParams(state.current)).catch(() => {});
  }
});

$("compose").addEventListener("submit", (e) => {
  e.preventDefault();
  sendText();
});

async function sendText(files) {
  const conv = state.current;
  const body = text.value;
  if (!conv || (!body.trim() && !(files && files.length))) return;
  const params = convParams(conv);
  if (body.trim()) params.text = body;
  if (files && files.length) params.file = files;
  if (state.replyTo) params["reply-to"] = state.replyTo.message_id;
  text.value = "";
  grow();
  try {
    await rpc.call("send", params);
  } catch (err) {
    // a message that could not go stays queued in history (shown with its mark): not typed again
    toast("sending: " + err.message);
    refreshTail();
    return;
  }
  state.replyTo = null;
  $("reply-bar").hidden = true;
  state.typingSent = 0;
  if (state.current === conv) toNewest();
  refreshTail();
  reloadConvs();
}

// uploads the files (progress shown), then sends them with the text typed
async function sendFiles(files) {
  if (!state.current || !files.length) return;
  const paths = [];
  for (const f of files) {
    try {
      paths.push(await upload(f));
    } catch (e) {
      toast("upload of " + f.name + " failed: " + e.message);
      return;
    }
  }
  await sendText(paths);
}

function upload(file) {
  return new Promise((resolve, reject) => {
    if (!rpc.open) {
      reject(new Error(NOT_CONNECTED));
      return;
    }
    const bar = h("progress", { max: 100, value: 0, "aria-label": "Uploading " + file.name });
    const row = h("div", { class: "upload" }, h("span", { class: "fname" }, file.name), " ", bar, h("span", { class: "pct" }, "0%"));
    $("uploads").append(row);
    const xhr = new XMLHttpRequest();
    xhr.open("POST", withKey("/upload?name=" + encodeURIComponent(file.name || "file")));
    xhr.setRequestHeader("X-Missive-Upload", "1");
    xhr.upload.onprogress = (e) => {
      if (!e.lengthComputable) return;
      bar.value = (100 * e.loaded) / e.total;
      row.lastChild.textContent = Math.round(bar.value) + "%";
    };
    xhr.onload = () => {
      setTimeout(() => row.remove(), 1500);
      row.classList.add("done");
      let r = null;
      try { r = JSON.parse(xhr.responseText); } catch (e) { r = null; }
      if (xhr.status === 200 && r && typeof r.file === "string") {
        bar.value = 100;
        row.lastChild.textContent = "100%";
        resolve(r.file);
      } else reject(new Error(xhr.status === 413 ? "too large" : "status " + xhr.status));
    };
    xhr.onerror = () => { row.remove(); reject(new Error("connection lost")); };
    xhr.send(file);
  });
}

$("file").addEventListener("change", () => {
  const files = [...$("file").files];
  $("file").value = "";
  sendFiles(files);
});

text.addEventListener("paste", (e) => {
  const files = [...((e.clipboardData && e.clipboardData.files) || [])];
  if (files.length) {
    e.preventDefault();
    sendFiles(files);
  }
});

const pane = $("conv");
pane.addEventListener("dragover", (e) => {
  if (!state.current) return;
  e.preventDefault();
  pane.classList.add("drop");
});
pane.addEventListener("dragleave", () => pane.classList.remove("drop"));
pane.addEventListener("drop", (e) => {
  pane.classList.remove("drop");
  if (!state.current) return;
  e.preventDefault();
  sendFiles([...e.dataTransfer.files]);
});

// ---- typing ---------------------------------------------------------------------------

function renderTyping() {
  const who = state.typers.get(state.current);
  $("typing").textContent = who && who.size ? [...who.keys()].map(nameOf).join(", ") + (who.size > 1 ? " are" : " is") + " typing\u2026" : "";
}

rpc.on("typing", (ev) => {
  if (!state.typers.has(ev.conversation)) state.typers.set(ev.conversation, new Map());
  const who = state.typers.get(ev.conversation);
  clearTimeout(who.get(ev.from));
  who.set(ev.from, setTimeout(() => { who.delete(ev.from); renderTyping(); }, 6000));
  renderTyping();
});

// ---- search ---------------------------------------------------------------------------

function hideSearch() {
  $("search-results").hidden = true;
  $("log").hidden = false;
}

$("search").addEventListener("keydown", async (e) => {
  if (e.key === "Escape") {
    $("search").value = "";
    hideSearch();
    return;
  }
  if (e.key !== "Enter") return;
  const q = $("search").value.trim();
  if (!q) { hideSearch(); return; }
  const items = await run("searching", rpc.items("history", { search: q, limit: 100 }));
  const box = clear($("search-results"));
  $("conv").classList.remove("empty");
  document.body.classList.add("in-conv");
  $("conv-title").textContent = "Search: " + q;
  $("conv-sub").textContent = items.length + " found";
  box.append(h("div", { class: "hint" }, items.length ? "" : "Nothing found."));
  for (const m of items.slice().reverse()) {
    box.append(h("div", {
      class: "result", role: "option", tabindex: "0",
      onclick: () => openConv(m.conversation),
      onkeydown: (ev) => { if (ev.key === "Enter") openConv(m.conversation); },
    }, h("div", { class: "from" }, convName(m.conversation) + " \u00b7 " + (m.outgoing ? "you" : whoOf(m.from, m.from_name)) + " \u00b7 " + when(m.sent_at_ms)),
      h("div", { class: "text" }, m.text)));
  }
  $("log").hidden = true;
  box.hidden = false;
});

// ---- events ---------------------------------------------------------------------------

rpc.on("message", (ev) => {
  const m = ev.message;
  if (!m) return;
  learnName(m);
  if (ev.conversation === state.current) {
    list.add(m);
    if (!m.outgoing) markRead();
  }
  const who = state.typers.get(ev.conversation);
  if (who && who.has(m.from)) { clearTimeout(who.get(m.from)); who.delete(m.from); renderTyping(); }
  if (ev.conversation.startsWith("group:") && !state.groups.has(ev.conversation)) loadGroups().then(renderConvs);
  notify(ev.conversation, m);
  reloadConvs();
});

rpc.on("receipt", (ev) => {
  const m = list.get(ev.message_id);
  if (!m || m.status === "unsent") return; // an unsend is final
  if (ev.status === "read" || m.status !== "read") m.status = ev.status;
  list.update(m);
});

rpc.on("edit", async (ev) => {
  const m = list.get(ev.message_id);
  if (!m) return;
  if (ev.status === "unsent") {
    m.status = "unsent";
    list.update(m);
    return;
  }
  if (ev.status !== "edited") return;
  const v = await rpc.items("edits", { args: [ev.message_id] }).catch(() => []);
  if (m.status === "unsent") return; // unsent while its edits were asked for
  const last = v.length ? v[v.length - 1] : null;
  if (last && typeof last.text === "string") m.text = last.text;
  m.edit_number = last && last.edit_number ? last.edit_number : (m.edit_number || 0) + 1;
  list.update(m);
});

rpc.on("reaction", (ev) => {
  const m = list.get(ev.message_id);
  if (m) setReaction(m, ev.from, ev.emoji);
});

rpc.on("expired", (ev) => list.remove(ev.message_id));
rpc.on("timer", (ev) => {
  if (ev.conversation === state.current) {
    state.timerS = ev.timer_s || 0;
    showTimer();
    refreshTail();
  }
});
rpc.on("group", async (ev) => {
  await loadGroups();
  renderConvs();
  renderRequests();
  if (ev.status === "refused") banner("warn", "group-" + ev.conversation, ev.notice);
  if (ev.conversation === state.current) { renderHead(); refreshTail(); }
});
rpc.on("conversation", reloadConvs);
rpc.on("request", reloadConvs);
rpc.on("profile", () => loadContacts().then(renderConvs).catch(() => {}));
rpc.on("sync", () => Promise.all([loadContacts(), loadGroups()]).then(reloadConvs).catch(() => {}));
rpc.on("changed", (ev) => {
  if (["contacts", "profile"].includes(ev.method)) loadContacts().then(renderConvs).catch(() => {});
  if (ev.method === "groups") loadGroups().then(() => { renderConvs(); renderRequests(); renderHead(); }).catch(() => {});
  reloadConvs();
  if (state.current) refreshTail();
});
rpc.on("connection", (ev) => showConn(ev.state === "online", ev.error));

rpc.on("alarm", (ev) => banner("alarm", "alarm-" + ev.warning, "\u26A0 Transparency alarm: " + ev.warning,
  [["Devices", () => devicesDialog()]]));

rpc.on("unopened", (ev) => banner("alarm", "unopened", "\u26A0 " + ev.warning));
rpc.on("classical", (ev) => banner("alarm", "classical", "\u26A0 " + ev.warning));
rpc.on("keys_unpublished", (ev) => banner("alarm", "keys_unpublished", "\u26A0 " + ev.warning));
// A contact's device left out for want of a valid approval, or its device list re-rooted
// (docs/transparency.md, "Signed device lists").
rpc.on("devlist", (ev) => banner("alarm", "devlist-" + ev.handle + "-" + ev.device_id, "\u26A0 " + ev.warning));
rpc.on("not_sent", (ev) => banner("warn", "notsent-" + ev.conversation + "-" + ev.handle, "\u26A0 " + ev.warning));

// A queued message could not go when the outbox was sent: it stays queued, and the page says why.
rpc.on("outbox_held", (ev) => banner("warn", "held-" + ev.message_id,
  "A message is still queued: " + ev.warning + ". It is tried again with the next connection; the later messages of its conversation wait behind it."));

// One of this account's handles was taken away by the server (the owner's monitor found a
// tombstone none of its devices asked for): a note that stays, and the status says it too.
rpc.on("handle_taken", (ev) => {
  if (typeof ev.handle !== "string") return;
  banner("alarm handle-taken", "taken-" + ev.handle,
    "\u26A0 " + ev.handle + " is no longer this account's: the server took it away, and messages to it no longer reach you.",
    [["Devices", () => devicesDialog()]]);
  toast("WARNING: the server took " + ev.handle + " away from this account");
});

rpc.on("unreachable", (ev) => banner("alarm", "unreach-" + ev.handle + "-" + ev.device_id,
  "\u26A0 " + whoOf(ev.handle) + "'s device " + ev.device_id + " cannot be reached: it speaks no suite this device speaks (" +
  (ev.suites || []).join(", ") + ")."));

rpc.on("key_change", async (ev) => {
  let verified = false;
  try {
    const v = await rpc.items("verify", { args: [ev.handle] });
    verified = v.length && v[0].state === "changed since verified";
  } catch (e) { verified = false; }
  const text = verified
    ? "\u26A0 " + whoOf(ev.handle) + "'s safety number changed since you verified it. Nothing is sent to them until you compare it again."
    : ev.handle === state.me ? "This account's devices changed." : whoOf(ev.handle) + "'s devices changed.";
  banner(verified ? "alarm key-change" : "info key-change", "key-" + ev.handle, text,
    [["Compare safety number", (b) => { b.remove(); safetyDialog(ev.handle); }]]);
});

const JOIN = /device (\d+) asks to join this account( with the account password)? \(fingerprint ([0-9a-f ]+)\)/;
rpc.on("device", (ev) => {
  const j = JOIN.exec(ev.notice || "");
  if (j) {
    state.pendingDevices.set(j[1], j[3].trim());
    banner("alarm device-join", "dev-" + j[1], "A new device (" + j[1] + ") asks to join this account" + (j[2] || "") + ". Approve it only if it is yours: fingerprint " + j[3].trim(),
      [["Approve", (b) => approveDevice(j[1], b)], ["Devices", () => devicesDialog()]]);
  } else banner("info", "", ev.notice);
});

function notify(conv, m) {
  if (!document.hidden || m.outgoing || !("Notification" in window) || Notification.permission !== "granted") return;
  if (convRow(conv).muted) return;
  const n = new Notification(convName(conv), { body: (m.text || "").slice(0, 200), tag: conv });
  n.onclick = () => { window.focus(); openConv(conv); n.close(); };
}

$("btn-notify").addEventListener("click", async () => {
  if (!("Notification" in window)) { toast("This browser has no notifications."); return; }
  const p = await Notification.requestPermission();
  toast(p === "granted" ? "Notifications on: you are told of messages while this page is hidden." : "Notifications are " + p + ".");
});

function showConn(online, error) {
  const c = $("conn");
  c.textContent = online ? "online" : "offline" + (error ? ": " + error : "");
  c.className = "conn " + (online ? "on" : "off");
}
// The session is over (Logout, or --session-hours / --idle-minutes ran out): the page says so
// and stops reconnecting; a new login link starts another.
// Once only: a Logout's own answer and the closed WebSocket's check both end the session, and
// whichever comes second must not replace what the first said.
let ending = false;
function sessionEnded(why) {
  if (ending === "done") return;
  ending = "done";
  rpc.stop();
  document.body.replaceChildren(h("main", { id: "ended" },
    h("h1", {}, why),
    h("p", {}, "To come back, open a new login link: missive web --url")));
}
// what answers at the page's address did not prove it is the server the page came from
// (rpc.js stopped talking to it): nothing more goes there
rpc.on("impostor", () => {
  if (ending === "done") return;
  ending = "done";
  document.body.replaceChildren(h("main", { id: "ended" },
    h("h1", {}, "This page's web client has stopped."),
    h("p", {}, "Something else now answers at this address, and this page no longer talks to it. " +
      "Close this tab; to come back, start missive web and open its new login link.")));
});
rpc.on("close", async () => {
  state.tailStale = true; // what the open conversation shows is loaded again once back
  if (ending) return; // a Logout under way says what happened itself
  showConn(false, "connection to the page's owner lost; reconnecting");
  try {
    const r = await fetch("/", { cache: "no-store" });
    if (r.status === 401) sessionEnded("This session has ended.");
  } catch (e) {
    // the owner is not there: the WebSocket goes on trying
  }
});
$("btn-logout").addEventListener("click", async () => {
  if (ending) return;
  ending = "logout";
  const r = await fetch(withKey("/logout"), { method: "POST" }).catch(() => null);
  if (r && (r.status === 204 || r.status === 401)) {
    sessionStorage.removeItem("missive-key");
    sessionStorage.removeItem("missive-proof");
    sessionEnded("Logged out.");
  } else {
    ending = false;
    toast("Logout failed" + (r ? " (" + r.status + ")" : "") + ": try again");
  }
});

// ---- dialogs: new conversation, groups, contacts, profile, devices, safety ------------

function newConvDialog() {
  dialog("New conversation", (body, dlg) => {
    const input = h("input", { type: "text", list: "contact-list", placeholder: "handle or contact name", "aria-label": "Handle or contact name" });
    const dl = h("datalist", { id: "contact-list" }, [...state.contacts].map(([handle, name]) => h("option", { value: handle }, name)));
    const go = () => {
      let v = input.value.trim();
      for (const [handle, name] of state.contacts) if (name === v) v = handle;
      if (v) { dlg.close(); openConv(v).then(() => text.focus()); }
    };
    input.addEventListener("keydown", (e) => { if (e.key === "Enter") { e.preventDefault(); go(); } });
    body.append(input, dl, h("div", { class: "row" }, h("button", { type: "button", class: "primary", onclick: go }, "Open")));
    setTimeout(() => input.focus(), 0);
  });
}

function words(s) {
  return s.split(/[\s,]+/).filter(Boolean);
}

function newGroupDialog() {
  dialog("New group", (body, dlg) => {
    const name = h("input", { type: "text", placeholder: "group name", "aria-label": "Group name" });
    const members = h("input", { type: "text", placeholder: "members: handles or contact names", "aria-label": "Members" });
    const go = async () => {
      await run("creating the group", rpc.call("groups", { args: ["create", name.value.trim(), ...words(members.value)] }));
      await loadGroups();
      const g = [...state.groups.values()].find((x) => x.name === name.value.trim());
      dlg.close();
      reloadConvs();
      if (g) openConv(g.id);
    };
    const uri = h("input", { type: "text", placeholder: "missive:join?g=...", "aria-label": "Invite link to join" });
    const join = async () => {
      await run("asking to join", rpc.call("groups", { args: ["join", uri.value.trim()] }));
      toast("Request sent: the group appears once an admin adds you.");
      dlg.close();
    };
    body.append(name, members, h("div", { class: "row" }, h("button", { type: "button", class: "primary", onclick: go }, "Create")),
      h("h3", {}, "Or join one by its invite link"), h("div", { class: "row" }, uri, h("button", { type: "button", onclick: join }, "Join")));
    setTimeout(() => name.focus(), 0);
  });
}

function groupDialog(conv) {
  const g = state.groups.get(conv);
  if (!g) return;
  dialog("Group: " + g.name, (body, dlg) => {
    const admin = g.admins.includes(state.me);
    const act = async (what, args) => {
      await run(what, rpc.call("groups", { args }));
      await loadGroups();
      renderHead();
      renderConvs();
      dlg.close();
      if (what !== "leaving") groupDialog(conv);
    };
    const ul = h("ul", { class: "members", "aria-label": "Members" });
    for (const m of g.members) {
      const isAdmin = g.admins.includes(m);
      ul.append(h("li", {},
        h("span", {}, nameOf(m)), " ", h("span", { class: "handle" }, m),
        isAdmin ? h("span", { class: "flag" }, "admin") : null,
        admin && m !== state.me ? [
          h("button", { type: "button", onclick: () => act(isAdmin ? "demoting" : "promoting", [isAdmin ? "demote" : "promote", g.id, m]) }, isAdmin ? "Demote" : "Make admin"),
          h("button", { type: "button", onclick: () => act("removing", ["remove", g.id, m]) }, "Remove"),
        ] : null));
    }
    body.append(ul);
    if (g.invited) body.append(h("button", { type: "button", class: "primary", onclick: () => act("accepting", ["accept", g.id]) }, "Accept invitation"));
    if (admin) {
      const add = h("input", { type: "text", placeholder: "handles or contact names", "aria-label": "Members to add" });
      const rename = h("input", { type: "text", value: g.name, "aria-label": "New group name" });
      body.append(h("div", { class: "row" }, add, h("button", { type: "button", onclick: () => act("adding", ["add", g.id, ...words(add.value)]) }, "Add")),
        h("div", { class: "row" }, rename, h("button", { type: "button", onclick: () => act("renaming", ["rename", g.id, rename.value.trim()]) }, "Rename")));
    }
    if (admin) inviteSection(body, g);
    body.append(h("div", { class: "row" }, h("button", {
      type: "button", class: "danger", onclick: async () => { await act("leaving", ["leave", g.id]); },
    }, "Leave group")));
  });
}

/* An admin's invite link (docs/groups.md "Invite links") and the requests waiting for approval. */
function inviteSection(body, g) {
  const link = h("input", { type: "text", readonly: true, class: "invite-link", "aria-label": "Invite link", placeholder: "no link shown" });
  const approval = h("input", { type: "checkbox", "aria-label": "Admins approve who joins" });
  const waiting = h("ul", { class: "members", "aria-label": "Requests to join" });
  const invite = async (extra) => {
    const items = await run("the invite link", rpc.items("groups", Object.assign({ args: ["invite", g.id] }, extra)));
    link.value = items.length && items[0].uri ? items[0].uri : "";
    link.placeholder = link.value ? "" : "invite links are off";
  };
  const loadWaiting = async () => {
    const items = await run("the requests", rpc.items("groups", { args: ["requests", g.id] }));
    waiting.replaceChildren();
    for (const who of (items[0] && items[0].pending) || [])
      waiting.append(h("li", {}, h("span", {}, nameOf(who)), " ", h("span", { class: "handle" }, who),
        h("button", { type: "button", onclick: async () => { await run("approving", rpc.call("groups", { args: ["approve", g.id, who] })); loadWaiting(); } }, "Approve"),
        h("button", { type: "button", onclick: async () => { await run("denying", rpc.call("groups", { args: ["deny", g.id, who] })); loadWaiting(); } }, "Deny")));
  };
  body.append(h("h3", {}, "Invite link"),
    h("div", { class: "row" }, link,
      h("button", { type: "button", onclick: () => invite({}) }, "Show link"),
      h("button", { type: "button", onclick: () => invite({ reset: true }) }, "New link"),
      h("button", { type: "button", onclick: () => invite({ off: true }) }, "Turn off")),
    h("label", { class: "row" }, approval, " admins approve who joins"),
    waiting);
  approval.addEventListener("change", () => invite({ approval: approval.checked ? "on" : "off" }));
  loadWaiting().catch(() => {});
}

function contactsDialog() {
  dialog("Contacts", (body, dlg) => {
    const ul = h("ul", { class: "members" });
    for (const [handle, name] of state.contacts)
      ul.append(h("li", {}, h("span", {}, name), " ", h("span", { class: "handle" }, handle),
        h("button", { type: "button", onclick: () => { dlg.close(); openConv(handle); } }, "Write"),
        h("button", { type: "button", onclick: async () => { await run("removing", rpc.call("contacts", { args: ["remove", name] })); await loadContacts(); dlg.close(); contactsDialog(); } }, "Remove")));
    const name = h("input", { type: "text", placeholder: "name", "aria-label": "Contact name" });
    const handle = h("input", { type: "text", placeholder: "handle", "aria-label": "Contact handle" });
    body.append(ul, h("div", { class: "row" }, name, handle, h("button", {
      type: "button", onclick: async () => {
        await run("adding", rpc.call("contacts", { args: ["add", name.value.trim(), handle.value.trim()] }));
        await loadContacts();
        renderConvs();
        dlg.close();
        contactsDialog();
      },
    }, "Add")));
  });
}

function profileDialog() {
  dialog("Profile", async (body) => {
    const p = await rpc.items("profile", { args: ["show"] }).catch(() => []);
    const name = h("input", { type: "text", value: p.length && p[0].name ? p[0].name : "", placeholder: "display name", "aria-label": "Display name" });
    body.append(h("p", {}, "You are ", h("strong", {}, state.me), ". People you write to see your display name beside your handle."),
      h("div", { class: "row" }, name, h("button", {
        type: "button", class: "primary", onclick: async () => {
          await run("setting the name", rpc.call("profile", { args: ["set"], name: name.value.trim() }));
          toast("display name set");
        },
      }, "Save")));
  });
}

async function approveDevice(id, bannerEl) {
  await run("approving", rpc.call("devices", { args: ["approve", String(id)] }));
  state.pendingDevices.delete(String(id));
  if (bannerEl) bannerEl.remove();
  toast("device " + id + " approved");
}

function devicesDialog() {
  dialog("Devices", async (body, dlg) => {
    const items = await rpc.items("devices", { args: ["list"] }).catch((e) => { toast(e.message); return []; });
    const devices = items.flat();
    const ul = h("ul", { class: "members devices" });
    for (const d of devices)
      ul.append(h("li", {}, h("strong", {}, "device " + d.device_id), d.this_device ? " (this device)" : "", " ", d.suite,
        h("div", { class: "fp" }, d.fingerprint),
        d.this_device ? null : h("button", {
          type: "button", class: "danger", onclick: async () => {
            await run("removing", rpc.call("devices", { args: ["remove", String(d.device_id)] }));
            dlg.close();
            devicesDialog();
          },
        }, "Remove")));
    body.append(ul);
    for (const [id, fp] of state.pendingDevices)
      body.append(h("div", { class: "pending" }, "Device " + id + " asks to join. Fingerprint: ", h("div", { class: "fp" }, fp),
        h("p", {}, "Compare this fingerprint with what the new device shows (missive fingerprint on it)."),
        h("button", { type: "button", class: "primary", onclick: async () => { await approveDevice(id); dlg.close(); devicesDialog(); } }, "Approve device " + id)));
    const id = h("input", { type: "text", inputmode: "numeric", placeholder: "device id", "aria-label": "Device id to approve" });
    body.append(h("div", { class: "row" }, id, h("button", { type: "button", onclick: async () => { await approveDevice(id.value.trim()); dlg.close(); devicesDialog(); } }, "Approve")));
    const mine = devices.find((d) => d.this_device);
    body.append(addDeviceBox(dlg, mine ? mine.fingerprint : ""));
  });
}

// ---- adding a device by the code 'missive link --qr' shows: pasted, in a picture, or seen by
// the camera; missive web reads pictures and frames with libzbar, as 'devices add --image' does
const LINK_CODE = /^missive-link:1:[0-9a-f]{32}:[0-9a-f]{64}:([0-9a-f]{64})$/;

// The QR code's text in an image (a PNG): its text, null if none is found, or an error.
async function readQr(blob) {
  if (!rpc.open) throw new Error(NOT_CONNECTED);
  const r = await fetch(withKey("/qr"), { method: "POST", headers: { "X-Missive-Upload": "1" }, body: blob });
  let j = null;
  try { j = await r.json(); } catch (e) { j = null; }
  if (r.status === 200 && j && typeof j.code === "string") return j.code;
  if (r.status === 422) return null;
  throw new Error(r.status === 429 ? "too many images, slowing down" : r.status === 413 ? "the image is larger than 8 MiB" : "status " + r.status);
}

function addDeviceBox(dlg, mine) {
  const box = h("div", { class: "add-device" });
  const status = h("p", { class: "status", id: "add-status" });
  const video = h("video", { id: "camera", muted: "", playsinline: "", hidden: "" });
  let stop = null;
  const confirm = (code) => {
    if (stop) stop();
    const m = LINK_CODE.exec(code.trim());
    if (!m) { status.textContent = "not a link code (missive-link:1:...)"; return; }
    const theirs = m[1].match(/.{4}/g).join(" ");
    status.textContent = "";
    box.replaceChildren(h("h3", {}, "Add this device?"),
      h("p", {}, "This device:"), h("div", { class: "fp", id: "this-fp" }, mine),
      h("p", {}, "New device:"), h("div", { class: "fp", id: "new-fp" }, theirs),
      h("p", {}, "Compare both with what the new device shows; add it only if they are the same."),
      h("div", { class: "row" }, h("button", {
        type: "button", class: "primary", id: "add-confirm", onclick: async (e) => {
          e.target.disabled = true;
          status.textContent = "adding the device and sending it the history...";
          await run("adding the device", rpc.call("devices", { args: ["add", code.trim()], yes: true })).catch(() => null);
          dlg.close();
          devicesDialog();
        },
      }, "Add this device"), h("button", { type: "button", onclick: () => { dlg.close(); devicesDialog(); } }, "Cancel")), status);
  };
  const text = h("input", { type: "text", placeholder: "missive-link:1:...", "aria-label": "The new device's code" });
  const file = h("input", { type: "file", accept: "image/png", "aria-label": "A picture of the new device's QR code" });
  file.addEventListener("change", async () => {
    if (!file.files.length) return;
    status.textContent = "reading the picture...";
    const code = await readQr(file.files[0]).catch((e) => { status.textContent = e.message; return undefined; });
    if (code === null) status.textContent = "no QR code found in that picture";
    else if (code) confirm(code);
  });
  const scan = h("button", { type: "button", id: "add-camera" }, "Scan with the camera");
  scan.addEventListener("click", async () => {
    if (stop) { stop(); return; }
    stop = await scanCamera(video, status, confirm).catch((e) => { status.textContent = "no camera: " + e.message; return null; });
  });
  box.append(h("h3", {}, "Add a device"),
    h("p", {}, "On the new device run missive link HANDLE --qr, then show its QR code to the camera, pick a picture of it, or paste its code."),
    h("div", { class: "row" }, text, h("button", { type: "button", onclick: () => confirm(text.value) }, "Next")),
    h("div", { class: "row" }, file, scan), video, status);
  return box;
}

// Sends a frame of the camera to missive web about twice a second until one holds a QR code.
async function scanCamera(video, status, found) {
  const stream = await navigator.mediaDevices.getUserMedia({ video: true, audio: false });
  let on = true;
  const stop = () => { on = false; stream.getTracks().forEach((t) => t.stop()); video.hidden = true; };
  video.srcObject = stream;
  video.hidden = false;
  await video.play();
  status.textContent = "looking for a QR code...";
  const canvas = document.createElement("canvas");
  (async () => {
    while (on) {
      await new Promise((r) => setTimeout(r, 500));
      if (!on || !video.videoWidth) continue;
      const k = Math.min(1, 1280 / Math.max(video.videoWidth, video.videoHeight));
      canvas.width = Math.round(video.videoWidth * k);
      canvas.height = Math.round(video.videoHeight * k);
      canvas.getContext("2d").drawImage(video, 0, 0, canvas.width, canvas.height);
      const blob = await new Promise((r) => canvas.toBlob(r, "image/png"));
      if (!on || !blob) continue;
      try {
        const code = await readQr(blob);
        if (code && on) found(code);
      } catch (e) { status.textContent = e.message; }
    }
  })();
  return stop;
}

function groupDigits(n) {
  return (n.match(/.{1,5}/g) || []).join(" ");
}

function safetyDialog(handle) {
  if (!handle || handle.startsWith("group:")) return;
  dialog("Safety number with " + whoOf(handle), async (body, dlg) => {
    const v = await rpc.items("verify", { args: [handle] }).catch((e) => { toast(e.message); return []; });
    if (!v.length) return;
    const s = v[0];
    const stateText = s.state === "verified" ? "Verified" : s.state === "changed since verified" ? "CHANGED since you verified it" : "Not verified";
    body.append(h("p", { class: "state " + s.state.replace(/ /g, "-") }, stateText),
      h("div", { class: "digits", "aria-label": "Safety number" }, groupDigits(s.safety_number)),
      rpc.open ? h("img", { class: "qr", src: withKey("/qr.svg?data=" + encodeURIComponent(s.safety_number)), alt: "QR code of the safety number" }) : null,
      h("p", {}, "Compare these digits with " + whoOf(handle) + " in person or on a call (or scan each other's code). Mark them verified only if they match."),
      h("div", { class: "row" },
        h("button", {
          type: "button", class: "primary", id: "verify-match", onclick: async () => {
            await run("verifying", rpc.call("verify", { args: [handle, s.safety_number] }));
            document.querySelectorAll('#banners [data-key="key-' + CSS.escape(handle) + '"]').forEach((b) => b.remove());
            dlg.close();
            toast(whoOf(handle) + " verified");
          },
        }, "The numbers match: mark verified")));
    const fps = await rpc.items("fingerprint", { args: [handle] }).catch(() => []);
    const devs = fps.flat();
    if (devs.length)
      body.append(h("details", {}, h("summary", {}, "Device fingerprints"),
        h("ul", { class: "members" }, devs.map((d) => h("li", {}, "device " + d.device_id + " ", h("span", { class: "fp" }, d.fingerprint))))));
  });
}

$("btn-new").addEventListener("click", newConvDialog);
$("btn-group").addEventListener("click", newGroupDialog);
$("btn-contacts").addEventListener("click", contactsDialog);
$("btn-devices").addEventListener("click", devicesDialog);
$("btn-profile").addEventListener("click", profileDialog);

document.addEventListener("keydown", (e) => {
  if (!e.altKey) return;
  const k = e.key.toLowerCase();
  if (k === "n") newConvDialog();
  else if (k === "g") newGroupDialog();
  else if (k === "k") $("search").focus();
  else if (k === "l") $("convs").focus();
  else if (k === "m") $("text").focus();
  else if (e.key === "ArrowDown" || e.key === "ArrowUp") {
    const rows = [...$("convs").children];
    const i = rows.findIndex((li) => li.dataset.conv === state.current) + (e.key === "ArrowDown" ? 1 : -1);
    if (rows[i]) openConv(rows[i].dataset.conv);
  } else return;
  e.preventDefault();
});

// ---- start ----------------------------------------------------------------------------

// The first view comes in the connection's first batch, after schema 2 and subscribe
// (rpc.js), answered at once: this account, its contacts, groups, conversations and
// message requests.
rpc.first = () => {
  const list = { args: ["list"], output: "json" };
  return [
    ["status", {}],
    ["contacts", list],
    ["groups", list],
    ["conversations", $("show-archived").checked ? Object.assign({ archived: true }, list) : list],
    ["requests", list],
  ];
};
rpc.on("open", async (first) => {
  const [status, contacts, groups, convs, requests] = first;
  for (const p of first) p.catch(() => {}); // a lost connection fails them all: said once below
  try {
    const items = async (p) => { const r = await p; return r && Array.isArray(r.items) ? r.items : []; };
    const st = await status;
    state.me = st.account || "";
    $("me").textContent = state.me;
    showConn(!!st.online, st.last_error);
    setContacts(await items(contacts));
    setGroups(await items(groups));
    state.convs = await items(convs);
    state.requests = await items(requests);
    renderConvs();
    renderRequests();
    if (state.current) refreshTail();
    document.body.classList.add("ready");
    window.missiveReady = performance.now();
  } catch (e) {
    toast("loading: " + e.message);
  }
});
