// The JSON-RPC 2.0 client of the account's owner, over the WebSocket /ws.
// Requests get ids and promises; events go to listeners. On every (re)connect
// it asks for schema 2 and subscribes; after a loss it reconnects with a
// backoff from 0.5 s to 30 s.
//
// With the session's proof key (main.js), each connection names a fresh nonce (n=) and sends
// nothing until its first message, "web-hello", proves the server holds that key (HMAC-SHA256
// of "missive web hello" and the nonce); anything else, and the page stops ("impostor").
//
// The owner tells every connection of every command that changed something
// (event "changed", carrying the number of the connection that ran it, which
// the subscribe answer gives each connection); those this page caused itself
// are dropped here, so that reloading on "changed" never feeds itself, and
// another page's are never taken for this one's.

export class RpcError extends Error {
  constructor(error) {
    super(error && error.message ? error.message : "request failed");
    this.code = error ? error.code : 0;
    this.data = error ? error.data : null;
  }
}

export class Rpc {
  constructor(url, proofKey = "") {
    this.url = url;
    this.proofKey = proofKey;
    this.nextId = 1;
    this.waiting = new Map();
    this.listeners = new Map();
    this.backoff = 500;
    this.ws = null;
    this.queue = [];
    this.open = false;
    this.connection = 0; // this connection's number, from its subscribe answer
    this.connect();
  }

  on(type, fn) {
    if (!this.listeners.has(type)) this.listeners.set(type, []);
    this.listeners.get(type).push(fn);
  }

  emit(type, value) {
    for (const fn of this.listeners.get(type) || []) {
      try {
        fn(value);
      } catch (e) {
        console.error(e);
      }
    }
  }

  connect() {
    // without the means to check a proof (no key, or no WebCrypto), as before
    const proving = this.proofKey && globalThis.crypto && crypto.subtle;
    const nonce = proving ? hex(crypto.getRandomValues(new Uint8Array(32))) : "";
    const ws = new WebSocket(proving ? this.url + (this.url.includes("?") ? "&" : "?") + "n=" + nonce : this.url);
    let proved = !proving;
    this.ws = ws;
    this.open = false; // nothing goes before this connection is open (and proven)
    ws.onopen = () => { if (proved) this.opened(ws); };
    ws.onmessage = async (ev) => {
      if (proved) return this.received(ev.data);
      // one first message only: what comes after it waits for the proof's check
      const held = [];
      ws.onmessage = (e) => held.push(e.data);
      if (!(await this.proves(ev.data, nonce))) {
        this.stopped = true;
        this.emit("impostor", null);
        ws.close();
        return;
      }
      // closed (or replaced) while the proof was checked: nothing goes on it
      if (ws !== this.ws || ws.readyState !== WebSocket.OPEN) return;
      proved = true;
      ws.onmessage = (e) => this.received(e.data);
      this.opened(ws);
      for (const d of held) this.received(d);
    };
    ws.onclose = () => this.closed(ws);
  }

  // whether text is the hello that proves this connection's nonce with the proof key
  async proves(text, nonce) {
    try {
      const m = JSON.parse(text);
      if (!m || m.method !== "web-hello" || !m.params || typeof m.params.proof !== "string") return false;
      const key = await crypto.subtle.importKey("raw", unhex(this.proofKey), { name: "HMAC", hash: "SHA-256" }, false, ["sign"]);
      const label = new TextEncoder().encode("missive web hello");
      const data = new Uint8Array(label.length + 32);
      data.set(label);
      data.set(unhex(nonce), label.length);
      const mac = hex(new Uint8Array(await crypto.subtle.sign("HMAC", key, data)));
      return mac === m.params.proof;
    } catch (e) {
      return false;
    }
  }

  // One batch first: schema 2, subscribe, and the calls this.first() gives (the page's first
  // view), whose promises go to the "open" listeners; then what waited, in order.
  opened(ws) {
    this.backoff = 500;
    this.open = true;
    this.connection = 0;
    const ps = this.batch([["schema", { version: 2 }], ["subscribe", {}], ...(this.first ? this.first() : [])]);
    Promise.all(ps.slice(0, 2)).then(([, sub]) => {
      if (ws === this.ws) this.connection = (sub && sub.connection) || 0;
    }).catch(() => ws.close());
    const queued = this.queue;
    this.queue = [];
    for (const [ids, text] of queued) {
      for (const id of ids) {
        const p = this.waiting.get(id);
        if (p) p.sent = true;
      }
      ws.send(text);
    }
    this.emit("open", ps.slice(2));
  }

  closed(ws) {
    if (ws !== this.ws) return;
    this.open = false;
    this.connection = 0;
    // what went out is lost with the connection; what is still queued goes on the next one
    for (const [id, p] of this.waiting) {
      if (!p.sent) continue;
      this.waiting.delete(id);
      p.reject(new RpcError({ code: -1, message: "connection lost" }));
    }
    this.emit("close", null);
    if (this.stopped) return;
    setTimeout(() => { if (!this.stopped) this.connect(); }, this.backoff);
    this.backoff = Math.min(this.backoff * 2, 30000);
  }

  // no more connections (the session ended): what waits fails
  stop() {
    this.stopped = true;
    if (this.ws) this.ws.close();
  }

  received(text) {
    let msg;
    try {
      msg = JSON.parse(text);
    } catch (e) {
      return;
    }
    for (const one of Array.isArray(msg) ? msg : [msg]) {
      if (one.method === "event" && one.params) {
        if (one.params.type === "changed" && this.connection && one.params.connection === this.connection) continue;
        this.emit("event", one.params);
        this.emit(one.params.type, one.params);
      } else if (one.id !== undefined && this.waiting.has(one.id)) {
        const p = this.waiting.get(one.id);
        this.waiting.delete(one.id);
        if (one.error) p.reject(new RpcError(one.error));
        else p.resolve(one.result);
      }
    }
  }

  // call("history", {args: [...], limit: 50}) → the result (for commands: {items, stderr})
  call(method, params = {}) {
    return this.batch([[method, params]])[0];
  }

  // batch([[method, params], ...]) → a promise per call: one JSON-RPC batch, one message,
  // answered by the owner as one array (at most 32 calls: docs/daemon.md)
  batch(calls) {
    const reqs = [], promises = [];
    for (const [method, params] of calls) {
      const id = this.nextId++;
      reqs.push({ jsonrpc: "2.0", id, method, params: params || {} });
      promises.push(new Promise((resolve, reject) => {
        this.waiting.set(id, { resolve, reject, sent: this.open });
      }));
    }
    const text = JSON.stringify(reqs.length === 1 ? reqs[0] : reqs);
    if (this.open) this.ws.send(text);
    else this.queue.push([reqs.map((r) => r.id), text]);
    return promises;
  }

  // a command's JSON items
  async items(method, params = {}) {
    const r = await this.call(method, Object.assign({ output: "json" }, params));
    return r && Array.isArray(r.items) ? r.items : [];
  }
}

function hex(bytes) {
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

function unhex(text) {
  const out = new Uint8Array(text.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(text.substr(2 * i, 2), 16);
  return out;
}
