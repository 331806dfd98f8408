// The JSON-RPC 2.0 client of the account's owner, over the WebSocket /ws.
// Requests get ids and promises; events go to listeners. On every (re)connect
// it asks for schema 2 and subscribes; after a loss it reconnects with a
// backoff from 0.5 s to 30 s.
//
// The owner tells every connection of every command that succeeded (event
// "changed", sent before the command's answer); those this page caused
// itself are dropped here, so that reloading on "changed" never feeds itself.

export class RpcError extends Error {
  constructor(error) {
    super(error && error.message ? error.message : "request failed");
    this.code = error ? error.code : 0;
    this.data = error ? error.data : null;
  }
}

const NOT_COMMANDS = new Set(["schema", "subscribe", "unsubscribe", "status", "receive"]);

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
    this.own = new Map(); // method → commands of this page not yet seen as "changed"
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

  // schema 2, subscribe and what waited go at once: the owner answers them in order
  opened(ws) {
    this.backoff = 500;
    Promise.all([this.raw(ws, "schema", { version: 2 }), this.raw(ws, "subscribe", {})]).catch(() => ws.close());
    this.open = true;
    const queued = this.queue;
    this.queue = [];
    for (const [id, text] of queued) {
      const p = this.waiting.get(id);
      if (p) p.sent = true;
      if (p && p.method) this.own.set(p.method, (this.own.get(p.method) || 0) + 1);
      ws.send(text);
    }
    this.emit("open", null);
  }

  closed(ws) {
    if (ws !== this.ws) return;
    this.open = false;
    this.own.clear();
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
        if (one.params.type === "changed" && this.settle(one.params.method)) continue;
        this.emit("event", one.params);
        this.emit(one.params.type, one.params);
      } else if (one.id !== undefined && this.waiting.has(one.id)) {
        const p = this.waiting.get(one.id);
        this.waiting.delete(one.id);
        if (one.error && p.method) this.settle(p.method);
        if (one.error) p.reject(new RpcError(one.error));
        else p.resolve(one.result);
      }
    }
  }

  // one command of this page's is done (or failed): 1 if it was waiting
  settle(method) {
    const n = this.own.get(method) || 0;
    if (n > 0) this.own.set(method, n - 1);
    return n > 0;
  }

  raw(ws, method, params) {
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.waiting.set(id, { resolve, reject, sent: true });
      ws.send(JSON.stringify({ jsonrpc: "2.0", id, method, params }));
    });
  }

  // call("history", {args: [...], limit: 50}) → the result (for commands: {items, stderr})
  call(method, params = {}) {
    const id = this.nextId++;
    const text = JSON.stringify({ jsonrpc: "2.0", id, method, params });
    return new Promise((resolve, reject) => {
      const command = NOT_COMMANDS.has(method) ? null : method;
      this.waiting.set(id, { resolve, reject, sent: this.open, method: command });
      if (command && this.open) this.own.set(command, (this.own.get(command) || 0) + 1);
      if (this.open) this.ws.send(text);
      else this.queue.push([id, text]);
    });
  }

  // a command's JSON items
  async items(method, params = {}) {
    const r = await this.call(method, Object.assign({ output: "json" }, params));
    return r && Array.isArray(r.items) ? r.items : [];
  }
}
