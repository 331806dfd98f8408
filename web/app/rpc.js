// The JSON-RPC 2.0 client of the account's owner, over the WebSocket /ws.
// Requests get ids and promises; events go to listeners. On every (re)connect
// it asks for schema 2 and subscribes; after a loss it reconnects with a
// backoff from 0.5 s to 30 s.
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
  constructor(url) {
    this.url = url;
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
    const ws = new WebSocket(this.url);
    this.ws = ws;
    ws.onopen = () => this.opened(ws);
    ws.onmessage = (ev) => this.received(ev.data);
    ws.onclose = () => this.closed(ws);
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
