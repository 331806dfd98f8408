// A conversation's messages, oldest first, of which only a window of at most
// MAX is in the document: scrolling up shows older ones (from memory, or
// fetched with loadOlder(before_id)), scrolling down shows newer ones again,
// and what leaves the window leaves the document. Thousands of messages stay
// cheap to scroll.

const MAX = 240;
const STEP = 60;
const EDGE = 400; // pixels from an end that bring more

export class MessageList {
  constructor(el, render, loadOlder) {
    this.el = el;
    this.render = render;
    this.loadOlder = loadOlder;
    this.messages = [];
    this.byId = new Map();
    this.nodes = new Map(); // id → element shown
    this.lo = 0; // messages[lo, hi) are in the document
    this.hi = 0;
    this.more = false;
    this.loading = false;
    this.generation = 0;
    el.addEventListener("scroll", () => this.scrolled(), { passive: true });
  }

  reset(items, more) {
    this.generation++;
    this.messages = items.slice();
    this.byId = new Map(items.map((m) => [m.message_id, m]));
    this.more = more;
    this.loading = false;
    this.nodes.clear();
    while (this.el.firstChild) this.el.removeChild(this.el.firstChild);
    this.hi = this.messages.length;
    this.lo = Math.max(0, this.hi - STEP * 2);
    const frag = document.createDocumentFragment();
    for (let i = this.lo; i < this.hi; i++) frag.append(this.node(this.messages[i]));
    this.el.append(frag);
  }

  node(m) {
    const el = this.render(m);
    this.nodes.set(m.message_id, el);
    return el;
  }

  get(id) {
    return this.byId.get(id);
  }

  atEnd() {
    return this.el.scrollHeight - this.el.scrollTop - this.el.clientHeight < 80;
  }

  // whether the newest message is in the document and scrolled into view
  newestInView() {
    return this.hi === this.messages.length && this.atEnd();
  }

  scrollToEnd() {
    this.el.scrollTop = this.el.scrollHeight;
  }

  // a new message (an event): shown at once if the window reaches the newest
  add(m) {
    if (this.byId.has(m.message_id)) {
      Object.assign(this.byId.get(m.message_id), m);
      this.update(this.byId.get(m.message_id));
      return;
    }
    const follow = this.atEnd();
    const showing = this.hi === this.messages.length;
    this.messages.push(m);
    this.byId.set(m.message_id, m);
    if (!showing || (!follow && this.hi - this.lo >= MAX)) {
      if (this.onUnseen) this.onUnseen();
      return;
    }
    this.el.append(this.node(m));
    this.hi = this.messages.length;
    if (follow) {
      this.trimTop();
      this.scrollToEnd();
    }
  }

  // the newest window, scrolled to its end
  jumpToEnd() {
    if (this.hi < this.messages.length) {
      const items = this.messages, more = this.more || this.lo > 0;
      this.reset(items, more);
    }
    this.scrollToEnd();
  }

  // the newest messages as stored: changed ones updated, new ones added
  merge(items) {
    for (const m of items) {
      const old = this.byId.get(m.message_id);
      if (!old) this.add(m);
      // an unsend is final: an answer read before it came does not bring the message back
      else if (old.status === "unsent" && m.status !== "unsent") continue;
      else if (JSON.stringify(old) !== JSON.stringify(m)) {
        for (const k of Object.keys(old)) delete old[k];
        Object.assign(old, m);
        this.update(old);
      }
    }
  }

  update(m) {
    const el = this.nodes.get(m.message_id);
    if (!el) return;
    const fresh = this.render(m);
    el.replaceWith(fresh);
    this.nodes.set(m.message_id, fresh);
  }

  remove(id) {
    const i = this.messages.findIndex((m) => m.message_id === id);
    if (i < 0) return;
    this.messages.splice(i, 1);
    this.byId.delete(id);
    const el = this.nodes.get(id);
    if (el) {
      el.remove();
      this.nodes.delete(id);
    }
    if (i < this.lo) this.lo--;
    if (i < this.hi) this.hi--;
  }

  scrolled() {
    if (this.onScroll) this.onScroll(this.newestInView());
    if (this.el.scrollTop < EDGE) this.up();
    else if (this.el.scrollHeight - this.el.scrollTop - this.el.clientHeight < EDGE) this.down();
  }

  // older messages at the top, the view kept where it was
  async up() {
    if (this.loading) return;
    if (this.lo === 0 && this.more && this.messages.length) {
      this.loading = true;
      const gen = this.generation;
      let got = null;
      try {
        got = await this.loadOlder(this.messages[0].message_id);
      } catch (e) {
        got = null;
      }
      this.loading = false;
      if (gen !== this.generation || !got) return;
      const fresh = got.items.filter((m) => !this.byId.has(m.message_id));
      for (const m of fresh) this.byId.set(m.message_id, m);
      this.messages.unshift(...fresh);
      this.lo += fresh.length;
      this.hi += fresh.length;
      this.more = got.more && fresh.length > 0;
    }
    if (this.lo === 0) return;
    const from = Math.max(0, this.lo - STEP);
    const frag = document.createDocumentFragment();
    for (let i = from; i < this.lo; i++) frag.append(this.node(this.messages[i]));
    const before = this.el.scrollHeight;
    this.el.prepend(frag);
    this.el.scrollTop += this.el.scrollHeight - before;
    this.lo = from;
    this.trimBottom();
  }

  // newer messages (from memory) at the bottom
  down() {
    if (this.hi >= this.messages.length) return;
    const to = Math.min(this.messages.length, this.hi + STEP);
    const frag = document.createDocumentFragment();
    for (let i = this.hi; i < to; i++) frag.append(this.node(this.messages[i]));
    this.el.append(frag);
    this.hi = to;
    this.trimTop();
  }

  trimTop() {
    if (this.hi - this.lo <= MAX) return;
    const before = this.el.scrollHeight, top = this.el.scrollTop;
    while (this.hi - this.lo > MAX) this.drop(this.messages[this.lo++]);
    this.el.scrollTop = top - (before - this.el.scrollHeight);
  }

  trimBottom() {
    while (this.hi - this.lo > MAX) this.drop(this.messages[--this.hi]);
  }

  drop(m) {
    const el = this.nodes.get(m.message_id);
    if (el) el.remove();
    this.nodes.delete(m.message_id);
  }
}
