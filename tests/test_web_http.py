#!/usr/bin/python3
"""missive web over plain HTTP and a hand-made WebSocket, against a real missived:
every rule of docs/web.md ("Security", "HTTP endpoints") that a browser would
not let a test break on purpose. Usage: test_web_http.py MISSIVE MISSIVED"""
import base64
import hashlib
import hmac
import http.client
import json
import os
import re
import resource
import shutil
import signal
import socket
import ssl
import struct
import subprocess
import sys
import tempfile
import time

from tied import tied

M, D = os.path.realpath(sys.argv[1]), os.path.realpath(sys.argv[2])
HERE = os.path.dirname(os.path.realpath(__file__))
work = tempfile.mkdtemp()
os.chdir(work)
procs = []
failures = []
passes = 0


def check(cond, what):
    global passes
    if cond:
        passes += 1
    else:
        failures.append(what)
        print("FAIL:", what, file=sys.stderr)


def stop(p):
    if p.poll() is None:
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(20)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def cleanup():
    for p in reversed(procs):
        stop(p)
    # what the servers said on the way (a sanitizer's report, say)
    for name in sorted(os.listdir(work)):
        if name.endswith(".web.err"):
            text = open(os.path.join(work, name), errors="replace").read()
            check(not re.search(r"Sanitizer|runtime error", text), "%s: %s" % (name, text[-3000:]))
    for p in procs:
        check(p.returncode == 0, "%s exited with %s" % (p.args[-1], p.returncode))
    shutil.rmtree(work, ignore_errors=True)


ENV = dict(os.environ, MISSIVE_PASSWORD="correct horse battery")


def missive(who, *args, check_rc=True):
    r = subprocess.run([M, "--data-dir", "dev-" + who, "--account", who + "@example.org", *args],
                       env=ENV, capture_output=True, text=True, timeout=120)
    if check_rc and r.returncode != 0:
        raise RuntimeError("missive %s %s: %s" % (who, args, r.stderr))
    return r


def start_missived():
    env = dict(os.environ, MISSIVED_SERVER_LISTEN_PORT="0", MISSIVED_HTTP_LISTEN_PORT="0",
               MISSIVED_ACCOUNTS_ARGON2_MEMLIMIT_KIB="8")
    log = open("srv.log", "ab")
    p = subprocess.Popen([D, "--data-dir", "srv"], env=env, stderr=log, preexec_fn=tied())
    procs.append(p)
    for _ in range(600):
        if os.path.exists("srv/missived.ports") and os.path.getsize("srv/missived.ports") > 0:
            break
        time.sleep(0.1)
    for line in open("srv/missived.ports"):
        if line.startswith("tls"):
            return int(line.split()[1])
    raise RuntimeError("missived did not start")


def register(port, who):
    server = "127.0.0.1:%d" % port
    subprocess.run([M, "--data-dir", "dev-" + who, "register", who + "@example.org", "--server",
                    server], env=ENV, capture_output=True, timeout=120)
    code = re.findall(r"handle=%s@example.org code=(\S+)" % who, open("srv.log").read())[-1]
    r = subprocess.run([M, "--data-dir", "dev-" + who, "register", who + "@example.org", "--code",
                        code], env=ENV, capture_output=True, text=True, timeout=120)
    if r.returncode != 0:
        raise RuntimeError("register %s: %s" % (who, r.stderr))


def start_web(who, *extra):
    p = subprocess.Popen([M, "--data-dir", "dev-" + who, "--account", who + "@example.org", "web",
                          *extra], env=ENV, stdout=subprocess.PIPE, stderr=open(who + ".web.err",
                                                                                "ab"), text=True,
                         preexec_fn=tied())
    procs.append(p)
    line = p.stdout.readline()
    m = re.match(r"web: (https?)://([^/]+)/login\?token=([0-9a-f]{64})$", line.strip())
    if m is None:
        raise RuntimeError("missive web printed %r" % line)
    host = m.group(2)
    return p, line.strip()[5:], host, int(host.rsplit(":", 1)[1])


# ---- HTTP by hand -----------------------------------------------------------------------------

CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; "
       "media-src 'self' blob:; connect-src 'self'; font-src 'self'; base-uri 'none'; "
       "form-action 'none'; frame-ancestors 'none'")
answers = []  # (what, status, headers) of every answer, for the header rules


def raw(port, request, tls=False):
    """Sends REQUEST as it is; returns (status, headers {lowercase: value}, body)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=20)
    if tls:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        s = ctx.wrap_socket(s, server_hostname="localhost")
    data = b""
    try:
        s.sendall(request)
        while b"\r\n\r\n" not in data:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    except ConnectionError:
        data = b""
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    if not lines[0].startswith("HTTP/1.1 "):
        s.close()
        return 0, {}, b""
    status = int(lines[0].split()[1])
    headers = {}
    for l in lines[1:]:
        k, _, v = l.partition(":")
        headers.setdefault(k.strip().lower(), []).append(v.strip())
    n = int(headers.get("content-length", ["0"])[0])
    while len(body) < n:
        chunk = s.recv(65536)
        if not chunk:
            break
        body += chunk
    s.close()
    h = {k: v[0] if len(v) == 1 else v for k, v in headers.items()}
    answers.append((request.split(b"\r\n")[0].decode(), status, h))
    return status, h, body


# the page key each session's login gave (cookie -> key), sent as k= where the page sends it;
# and its proof key, which the page never sends
PAGE_KEYS = {}
PROOF_KEYS = {}


def keyed(path, cookie, key):
    """path with the session's page key (key None: the one its login gave; "": none)."""
    if key is None:
        key = PAGE_KEYS.get(cookie, "")
    return path + ("&" if "?" in path else "?") + "k=" + key if key else path


def get(port, path, cookie=None, host=None, extra="", tls=False, key=None):
    if path.startswith(("/files/", "/qr.svg")):
        path = keyed(path, cookie, key)
    req = "GET %s HTTP/1.1\r\nHost: %s\r\n%s%sConnection: close\r\n\r\n" % (
        path, host or "127.0.0.1:%d" % port, "Cookie: %s\r\n" % cookie if cookie else "", extra)
    return raw(port, req.encode(), tls)


def post(port, path, body, cookie=None, origin=None, flag=True, length=None, key=None):
    path = keyed(path, cookie, key)
    req = ("POST %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n%s%s%sContent-Length: %d\r\n"
           "Connection: close\r\n\r\n" % (
               path, port, "Cookie: %s\r\n" % cookie if cookie else "",
               "Origin: %s\r\n" % origin if origin else "", "X-Missive-Upload: 1\r\n" if flag else "",
               len(body) if length is None else length))
    return raw(port, req.encode() + body)


def login(url, port):
    status, h, _ = get(port, url.split(port_part(url), 1)[1])
    cookie = h.get("set-cookie", "").split(";")[0]
    m = re.match(r"/#k=([0-9a-f]{64})&p=([0-9a-f]{64})$", h.get("location", ""))
    if m:
        PAGE_KEYS[cookie] = m.group(1)
        PROOF_KEYS[cookie] = m.group(2)
    return status, h, cookie


def port_part(url):
    return re.match(r"https?://[^/]+", url).group(0)


# ---- a WebSocket by hand ----------------------------------------------------------------------

class WS:
    def __init__(self, port, cookie=None, origin=None, host=None, page_key=None, extra="", nonce=None):
        self.s = socket.create_connection(("127.0.0.1", port), timeout=30)
        key = base64.b64encode(os.urandom(16)).decode()
        host = host or "127.0.0.1:%d" % port
        req = ("GET %s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
               "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n" % (
                   keyed("/ws" + ("?n=" + nonce if nonce else ""), cookie, page_key), host, key))
        if origin:
            req += "Origin: %s\r\n" % origin
        if cookie:
            req += "Cookie: %s\r\n" % cookie
        self.s.sendall((req + extra + "\r\n").encode())
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = self.s.recv(4096)
            if not chunk:
                break
            data += chunk
        head, _, self.buf = data.partition(b"\r\n\r\n")
        first = head.split(b"\r\n")[0].decode("latin-1")
        self.status = int(first.split()[1]) if first.startswith("HTTP/1.1 ") else 0
        self.headers = head.decode("latin-1").lower()
        self.next_id = 1
        self.events = []
        self.record = None  # every message received, once set to a list

    def send_text(self, text):
        data = text.encode()
        mask = os.urandom(4)
        n = len(data)
        head = bytes([0x81])
        if n < 126:
            head += bytes([0x80 | n])
        elif n < 65536:
            head += bytes([0x80 | 126]) + struct.pack("!H", n)
        else:
            head += bytes([0x80 | 127]) + struct.pack("!Q", n)
        self.s.sendall(head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(data)))

    def _need(self, n):
        while len(self.buf) < n:
            chunk = self.s.recv(65536)
            if not chunk:
                raise EOFError
            self.buf += chunk
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def recv(self):
        """One whole text message (None when the server closes)."""
        msg = b""
        try:
            while True:
                b0, b1 = self._need(2)
                n = b1 & 0x7F
                if n == 126:
                    n = struct.unpack("!H", self._need(2))[0]
                elif n == 127:
                    n = struct.unpack("!Q", self._need(8))[0]
                payload = self._need(n)
                if (b0 & 0x0F) == 8:  # a close frame
                    return None
                msg += payload
                if b0 & 0x80:
                    if self.record is not None:
                        self.record.append(msg.decode())
                    return msg.decode()
        except (EOFError, ConnectionError, socket.timeout):
            return None

    def call(self, method, params=None, timeout=60):
        """A request; its response (events before it are kept in self.events)."""
        rid = self.next_id
        self.next_id += 1
        req = {"jsonrpc": "2.0", "id": rid, "method": method}
        if params is not None:
            req["params"] = params
        self.send_text(json.dumps(req))
        end = time.time() + timeout
        while time.time() < end:
            m = self.recv()
            if m is None:
                return None
            j = json.loads(m)
            if isinstance(j, dict) and j.get("id") == rid:
                return j
            self.events.append(j)
        return None


    def wait_event(self, pred, timeout=30):
        end = time.time() + timeout
        for e in self.events:
            if pred(e):
                return e
        self.s.settimeout(1)
        while time.time() < end:
            m = self.recv()
            if m is None:
                if self.s.fileno() < 0:
                    return None
                continue
            j = json.loads(m)
            self.events.append(j)
            if pred(j):
                return j
        return None


def main():
    port = start_missived()
    for who in ("alice", "bob"):
        register(port, who)
    missive("alice", "contacts", "add", "bob@example.org", "bob@example.org")
    missive("bob", "contacts", "add", "alice@example.org", "alice@example.org")

    alice, url, ahost, aport = start_web("alice")
    check(ahost.startswith("127.0.0.1:"), "the default address is 127.0.0.1")
    token = url.rsplit("=", 1)[1]

    # ---- login ----
    st, _, _ = get(aport, "/login")
    check(st == 403, "no token: 403 (%d)" % st)
    st, _, _ = get(aport, "/login?token=" + "0" * 64)
    check(st == 403, "a wrong token: 403 (%d)" % st)
    st, _, _ = get(aport, "/login?token=" + token[:-1])
    check(st == 403, "a short token: 403 (%d)" % st)
    st, h, cookie = login(url, aport)
    check(st == 303 and re.match(r"/#k=[0-9a-f]{64}&p=[0-9a-f]{64}$", h.get("location", "")) is not None,
          "a valid token: 303 to / with the page key and the proof key in the fragment (%d %s)" % (st, h))
    sc = h.get("set-cookie", "")
    check(re.match(r"missive_session_%d=[0-9a-f]{64}; HttpOnly; SameSite=Strict; Path=/; "
                   r"Max-Age=43200$" % aport, sc)
          is not None, "the session cookie's name (its port's) and attributes: %r" % sc)
    st, _, _ = get(aport, "/login?token=" + token)
    check(st == 403, "a used token: 403 (%d)" % st)

    # ---- without a session ----
    for path in ("/", "/index.html", "/app/main.js", "/files/" + "0" * 32 + "/0", "/qr.svg?data=x",
                 "/nothing"):
        st, _, _ = get(aport, path)
        check(st == 401, "%s without a cookie: 401 (%d)" % (path, st))
        st, _, _ = get(aport, path, cookie="missive_session_%d=" % aport + "1" * 64)
        check(st == 401, "%s with a wrong cookie: 401 (%d)" % (path, st))

    # ---- with it ----
    st, h, body = get(aport, "/", cookie=cookie)
    check(st == 200 and h.get("content-type", "").startswith("text/html") and b"<script" in body,
          "/ is index.html (%d %s)" % (st, h.get("content-type")))
    scripts = re.findall(rb'src="(/app/[^"]+)"', body)
    check(len(scripts) > 0, "index.html loads its script from /app/")
    for src in scripts:
        st, h, _ = get(aport, src.decode(), cookie=cookie)
        check(st == 200 and h.get("content-type", "").startswith("text/javascript"),
              "%s is text/javascript (%d %s)" % (src, st, h.get("content-type")))
    # the browser's other cookies of this host around it (before, one after it broke the login)
    # and other local sites' cookies, 3 and 10 KiB of them (before: 401 past 2 KiB, no answer
    # past 4 KiB)
    for jar in (cookie + "; theme=dark", "theme=dark; " + cookie, "a=1;" + cookie + ";b=2",
                "pad=" + "x" * 3000 + "; " + cookie, "pad=" + "x" * 10000 + "; " + cookie):
        st, _, _ = get(aport, "/qr.svg?data=x", cookie=jar, key=PAGE_KEYS[cookie])
        check(st == 200, "the session cookie among others (%r): 200 (%d)" % (jar[:80], st))
    st, _, _ = get(aport, "/app/none.js", cookie=cookie)
    check(st == 404, "an asset that is not there: 404 (%d)" % st)
    for path in ("/qr.svg?data=x", "/files/" + "0" * 32 + "/0"):
        st, _, _ = get(aport, path, cookie=cookie, key="")
        check(st == 403, "%s with the cookie but not the page key: 403 (%d)" % (path, st))
        st, _, _ = get(aport, path, cookie=cookie, key="4" * 64)
        check(st == 403, "%s with a wrong page key: 403 (%d)" % (path, st))
    st, h, body = get(aport, "/qr.svg?data=hello%20world", cookie=cookie)
    check(st == 200 and h.get("content-type") == "image/svg+xml" and body.startswith(b"<svg") and
          b"<script" not in body and b"<path" in body, "/qr.svg draws a QR code (%d)" % st)

    # ---- the Host ----
    for host in ("evil.example:%d" % aport, "127.0.0.1:%d" % (aport + 1), "127.0.0.1"):
        st, _, _ = get(aport, "/", cookie=cookie, host=host)
        check(st in (421, 403), "Host %s refused (%d)" % (host, st))
        st, _, _ = get(aport, "/login?token=" + "0" * 64, host=host)
        check(st in (421, 403), "Host %s refused for /login (%d)" % (host, st))
    # only the name the URL gave: localhost is another name (and another origin) for 127.0.0.1
    st, _, _ = get(aport, "/", cookie=cookie, host="localhost:%d" % aport)
    check(st == 421, "Host localhost:PORT refused when the URL says 127.0.0.1 (%d)" % st)
    st, _, _ = get(aport, "/", cookie=cookie, host="127.0.0.1:%d" % aport)
    check(st == 200, "Host 127.0.0.1:PORT, as in the URL (%d)" % st)

    # ---- WebSocket upgrades ----
    origin = "http://127.0.0.1:%d" % aport
    for what, kw in (("a foreign Origin", dict(cookie=cookie, origin="http://evil.example")),
                     ("another port's Origin", dict(cookie=cookie, origin="http://127.0.0.1:%d" %
                                                    (aport + 1))),
                     ("no Origin", dict(cookie=cookie)),
                     ("no cookie", dict(origin=origin)),
                     ("a wrong cookie", dict(origin=origin, cookie="missive_session_%d=" % aport +
                                             "2" * 64)),
                     ("a foreign Host", dict(cookie=cookie, origin="http://evil.example:%d" %
                                             aport, host="evil.example:%d" % aport)),
                     # the cookie alone: another local user's server on another port of the
                     # host gets it from the browser, but not the page key
                     ("the cookie without the page key", dict(cookie=cookie, origin=origin,
                                                              page_key="")),
                     ("a wrong page key", dict(cookie=cookie, origin=origin, page_key="3" * 64))):
        ws = WS(aport, **kw)
        check(ws.status != 101, "WebSocket with %s refused (%d)" % (what, ws.status))
        check("content-security-policy" in ws.headers or ws.status == 0,
              "the refusal carries the headers")
        ws.s.close()
    # a WebSocket that names a nonce: its first message proves the server holds the session's
    # proof key, which the page never sends (what listens on the port once this server stopped
    # cannot make it); a second connection's nonce gets its own proof
    for _ in range(2):
        nonce = os.urandom(32).hex()
        ws = WS(aport, cookie=cookie, origin=origin, nonce=nonce)
        hello = json.loads(ws.recv() or "{}")
        want = hmac.new(bytes.fromhex(PROOF_KEYS.get(cookie, "00")), b"missive web hello" +
                        bytes.fromhex(nonce), hashlib.sha256).hexdigest()
        check(ws.status == 101 and hello.get("method") == "web-hello" and
              hello.get("params", {}).get("proof") == want, "the hello proves the nonce: %r" % hello)
        r = ws.call("schema", {"version": 2})
        check(r is not None and r.get("result", {}).get("schema") == 2, "then the owner: %r" % r)
        ws.s.close()
    ws = WS(aport, cookie=cookie, origin=origin, nonce="zz")
    r = ws.call("schema", {"version": 2})
    check(ws.status == 101 and r is not None and r.get("result", {}).get("schema") == 2 and
          not any("web-hello" in e for e in map(json.dumps, ws.events)),
          "a nonce that is no nonce: no hello, the owner as before: %r" % r)
    ws.s.close()
    ws = WS(aport, cookie=cookie, origin=origin)
    check(ws.status == 101, "WebSocket with the session and the page's Origin (%d)" % ws.status)
    r = ws.call("schema", {"version": 2})
    check(r is not None and r.get("result", {}).get("schema") == 2, "schema 2: %r" % r)
    ws.record = []
    r = ws.call("subscribe")
    check(r is not None and r.get("result", {}).get("subscribed") is True, "subscribe: %r" % r)
    r = ws.call("status")
    check(r is not None and r["result"]["account"] == "alice@example.org", "status: %r" % r)
    r = ws.call("send", {"args": ["bob@example.org"], "text": "hello from the web"})
    check(r is not None and "result" in r, "send: %r" % r)
    r = ws.call("history", {"args": ["bob@example.org"], "output": "json"})
    items = r.get("result", {}).get("items", []) if r else []
    check(any(i.get("text") == "hello from the web" for i in items), "history: %r" % r)
    # the page names no file of this machine but those it uploaded, and makes no backup: a
    # page that ran someone's script could otherwise send the user's files
    for method, params in (("send", {"args": ["bob@example.org"], "file": ["/etc/hostname"]}),
                           ("send", {"args": ["bob@example.org"], "file": [
                               os.path.join(work, "dev-alice", "uploads", "0" * 32, "..", "x")]}),
                           ("send", {"args": ["bob@example.org"], "file": 42}),
                           ("profile", {"args": ["set"], "name": "a", "avatar": "/etc/hostname"}),
                           ("backup", {"args": [os.path.join(work, "page.backup")]})):
        r = ws.call(method, params)
        check(r is not None and r.get("error", {}).get("code") == -32602,
              "the page's %s %r refused: %r" % (method, params, r))
    check(not os.path.exists(os.path.join(work, "page.backup")), "no backup made for the page")
    ws.send_text(json.dumps([{"jsonrpc": "2.0", "id": "ok", "method": "status"},
                             {"jsonrpc": "2.0", "id": "no", "method": "send",
                              "params": {"args": ["bob@example.org"], "file": ["/etc/hostname"]}}]))
    m = ws.recv()
    got = json.loads(m) if m else None
    check(isinstance(got, list) and [x.get("error", {}).get("code") for x in got] == [-32602, -32602],
          "a batch with one such request: none of it runs: %r" % m)
    # a raw line break inside a string: not JSON here, so answered here, never passed on (the
    # owner, given it with the break made a space, read it and sent the file: before, it went)
    ws.send_text('{"jsonrpc":"2.0","id":77,"method":"send","params":{"args":["bob@example.org"],'
                 '"text":"hi\n","file":["/etc/hostname"]}}')
    m = ws.recv()
    check(m is not None and json.loads(m).get("error", {}).get("code") == -32700,
          "a request with a raw line break in a string: not JSON, not run: %r" % m)
    # nor may the page make login links: a session would outlive its hours and its logout
    r = ws.call("web-login")
    check(r is not None and r.get("error", {}).get("code") == -32602,
          "the page's web-login refused: %r" % r)
    r = ws.call("history", {"args": ["bob@example.org"], "output": "json"})
    check(r is not None and not any(i.get("attachments") for i in r["result"]["items"]),
          "nothing of the refused sends went: %r" % r)
    # an operand that looks like an option stays an operand: this reaction is "--remove"
    mine = [i for i in items if i.get("text") == "hello from the web"]
    if mine:
        r = ws.call("react", {"args": [mine[0]["message_id"], "--remove"]})
        check(r is not None and "result" in r, "react with --remove as the emoji: %r" % r)
        r = ws.call("history", {"args": ["bob@example.org"], "output": "json"})
        got = [i.get("reactions") for i in r["result"]["items"]
               if i.get("message_id") == mine[0]["message_id"]] if r else []
        check(got and [x.get("emoji") for x in got[0] or []] == ["--remove"],
              "an argument starting with '-' is an operand, not an option: %r" % got)
    r = ws.call("no-such-method")
    check(r is not None and r.get("error", {}).get("code") == -32601, "no such method: %r" % r)
    ws.send_text("not json\n{}")
    m = ws.recv()
    check(m is not None and json.loads(m).get("error", {}).get("code") == -32700,
          "not JSON (with a line break) is one error: %r" % m)

    # ---- batches: one message, one array in order; at most 32 ----
    ws.send_text(json.dumps([{"jsonrpc": "2.0", "id": "b%d" % i, "method": m} for i, m in
                             enumerate(("status", "no-such", "fingerprint"))]))
    m = ws.recv()
    got = json.loads(m) if m else None
    check(isinstance(got, list) and [x["id"] for x in got] == ["b0", "b1", "b2"] and
          got[1]["error"]["code"] == -32601 and got[0]["result"]["account"] == "alice@example.org",
          "a batch over the WebSocket: one array in order: %r" % m)
    ws.send_text(json.dumps([{"jsonrpc": "2.0", "id": i, "method": "status"} for i in range(33)]))
    m = ws.recv()
    got = json.loads(m) if m else None
    check(isinstance(got, dict) and got["error"]["code"] == -32600,
          "a batch of 33 over the WebSocket: one error: %r" % m)

    # ---- an event: bob writes ----
    missive("bob", "send", "alice@example.org", "--text", "hi alice")
    e = ws.wait_event(lambda j: j.get("method") == "event" and
                      j["params"].get("type") == "message" and
                      j["params"].get("message", {}).get("text") == "hi alice", timeout=30)
    check(e is not None, "an event arrives over the WebSocket")

    # ---- the rest comes with the contract's other parts ----
    globals()["ctx"] = dict(aport=aport, cookie=cookie, ws=ws, url=url, alice=alice, port=port)
    more()

    # ---- every answer carries the security headers ----
    for what, st, h in answers:
        if st == 0:
            continue
        ok = (h.get("content-security-policy") == CSP and h.get("x-content-type-options") ==
              "nosniff" and h.get("referrer-policy") == "no-referrer" and
              h.get("x-frame-options") == "DENY" and
              h.get("cross-origin-resource-policy") == "same-origin")
        check(ok, "security headers on %s (%d): %r" % (what, st, h))
        if not what.startswith("GET /app/") and not (what.startswith("GET / ") and st == 200):
            check(h.get("cache-control") == "no-store", "no-store on %s: %r" % (what, h))


def upload(port, cookie, name, data, **kw):
    st, h, body = post(port, "/upload?name=" + name, data, cookie=cookie,
                       origin=kw.pop("origin", "http://127.0.0.1:%d" % port), **kw)
    return st, h, (json.loads(body) if st == 200 else body)


def more():
    aport, cookie, ws, url = ctx["aport"], ctx["cookie"], ctx["ws"], ctx["url"]
    origin = "http://127.0.0.1:%d" % aport

    # ---- uploads: who may, and how much ----
    st, _, _ = upload(aport, None, "a.txt", b"x")
    check(st == 401, "an upload without a session: 401 (%d)" % st)
    st, _, _ = upload(aport, cookie, "a.txt", b"x", flag=False)
    check(st == 403, "an upload without X-Missive-Upload: 403 (%d)" % st)
    st, _, _ = upload(aport, cookie, "a.txt", b"x", key="")
    check(st == 403, "an upload without the page key: 403 (%d)" % st)
    st, _, _ = upload(aport, cookie, "a.txt", b"x", origin="http://evil.example")
    check(st == 403, "an upload from another Origin: 403 (%d)" % st)
    st, _, _ = upload(aport, cookie, "a.txt", b"x" * 10, length=256 * 1024 * 1024 + 1)
    check(st == 413, "an upload over 256 MiB: 413 (%d)" % st)
    for bad in ("..", ".", "a%2Fb", "%2e%2e", "", "a%0Ab", "x" * 256):
        st, _, _ = upload(aport, cookie, bad, b"x")
        check(st in (0, 400), "an upload named %r: 400 (%d)" % (bad[:20], st))
    check(not os.path.exists("dev-alice/alice@example.org/uploads") or
          os.listdir("dev-alice/alice@example.org/uploads") == [], "refused uploads leave nothing")

    st, _, _ = raw(aport, ("POST %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nCookie: %s\r\n"
                           "Origin: %s\r\nX-Missive-Upload: 1\r\nTransfer-Encoding: chunked\r\n"
                           "Connection: close\r\n\r\n1\r\nx\r\n0\r\n\r\n" % (
                               keyed("/upload?name=a.txt", cookie, None), aport, cookie,
                               origin)).encode())
    check(st in (400, 411), "an upload without Content-Length: 411 (%d)" % st)

    # ---- WebSocket messages the owner never sees ----
    for what, frame in (("binary", lambda w: w.s.sendall(bytes([0x82, 0x80 | 2]) + b"\0\0\0\0ab")),
                        ("over 1 MiB", lambda w: w.send_text('"' + "x" * (1 << 20) + '"'))):
        w = WS(aport, cookie=cookie, origin=origin)
        frame(w)
        w.s.settimeout(10)
        check(w.recv() is None, "a %s message closes the WebSocket" % what)
        w.s.close()
    r = ws.call("status")
    check(r is not None and "result" in r, "the page's own connection goes on")
    # a message under 1 MiB that is over it as written again for the daemon (its numbers written
    # out in full: 1e300 is 22 characters then): refused here with its id, not by the daemon
    w = WS(aport, cookie=cookie, origin=origin)
    w.call("schema", {"version": 2})
    r = w.call("status")
    before = (r or {}).get("result", {})
    w.send_text('{"jsonrpc":"2.0","id":7,"method":"status","params":{"junk":[%s]}}'
                % ",".join(["1e300"] * 160000))
    m = w.recv()
    got = json.loads(m) if m else {}
    check(got.get("id") == 7 and got.get("error", {}).get("code") == -32600 and
          "written" in got["error"].get("message", ""),
          "a request over 1 MiB as written for the daemon: -32600 with its id: %r" % (m or "")[:300])
    # what the web client's bounds turned away so far, in status (schema 2): the two messages
    # just above, the upload over 256 MiB, the page's requests refused here (not JSON, the batch
    # of 33, the refused methods before, and the one over 1 MiB as written)
    r = w.call("status")
    lim = (r or {}).get("result", {}).get("web_limits", {})
    dlim = (r or {}).get("result", {}).get("daemon_limits", {})
    check(lim.get("messages_refused") == 2 and lim.get("bodies_too_big") == 1 and
          lim.get("requests_refused", 0) >= 3 and lim.get("connections_refused") == 0 and
          lim.get("pages_at_bound") == 0 and lim.get("images_refused") == 0 and
          lim.get("backlogs_closed") == 0 and
          lim.get("requests_refused") == before.get("web_limits", {}).get("requests_refused", -9) + 1
          and dlim.get("lines_refused") == before.get("daemon_limits", {}).get("lines_refused"),
          "the web client's limits in status: %r" % (r,))
    w.s.close()

    # ---- upload -> send -> the other side's /files ----
    # uploads an hour old are deleted (at start, then every minute); newer ones stay
    bup = "dev-bob/bob@example.org/uploads"
    for d, age in (("a" * 32, 3700), ("b" * 32, 60)):
        os.makedirs(os.path.join(bup, d), mode=0o700)
        open(os.path.join(bup, d, "f.txt"), "w").write("x")
        os.utime(os.path.join(bup, d), (time.time() - age, time.time() - age))
    bob, burl, bhost, bport = start_web("bob")
    check(not os.path.exists(os.path.join(bup, "a" * 32)) and
          os.path.exists(os.path.join(bup, "b" * 32, "f.txt")),
          "an upload over an hour old is deleted, a newer one kept: %r" % os.listdir(bup))
    _, _, bcookie = login(burl, bport)
    # one browser, two servers on one host: it sends both cookies to each port, and each server
    # takes its own (before, both were "missive_session", and bob's login replaced alice's)
    check(cookie.split("=")[0] != bcookie.split("=")[0], "each server names its cookie apart: %r %r"
          % (cookie, bcookie))
    for both, p, own in (("%s; %s" % (cookie, bcookie), aport, cookie),
                         ("%s; %s" % (bcookie, cookie), bport, bcookie)):
        st, _, _ = get(p, "/qr.svg?data=x", cookie=both, key=PAGE_KEYS.get(own))
        check(st == 200, "a jar holding both servers' cookies opens port %d's page (%d)" % (p, st))
    bws = WS(bport, cookie=bcookie, origin="http://127.0.0.1:%d" % bport)
    bws.call("schema", {"version": 2})
    bws.record = []
    bws.call("subscribe")
    old = WS(bport, cookie=bcookie, origin="http://127.0.0.1:%d" % bport)  # stays at schema 1
    old.record = []
    old.call("subscribe")
    html = b"<html><script>alert(1)</script></html>\n" + os.urandom(3000)
    png = b"\x89PNG\r\n\x1a\n" + os.urandom(5000)
    st, h, r1 = upload(aport, cookie, "page.html", html)
    check(st == 200 and r1["file"].endswith("/page.html") and
          r1["file"].startswith(os.path.realpath("dev-alice") + "/alice@example.org/uploads/"),
          "an upload is stored in the account's uploads/ (%d %r)" % (st, r1))
    st, h, r2 = upload(aport, cookie, "pic%20%C3%A9.png", png)
    check(st == 200 and r2["file"].endswith("/pic \u00e9.png"), "an upload's name is decoded: %r"
          % r2)
    check(open(r1["file"], "rb").read() == html, "the upload holds the bytes sent")
    r = ws.call("send", {"args": ["bob@example.org"], "text": "two files",
                         "file": [r1["file"], r2["file"]]})
    check(r is not None and "result" in r, "send with the uploads: %r" % r)
    check(not os.path.exists(os.path.dirname(r1["file"])) and
          not os.path.exists(os.path.dirname(r2["file"])), "the uploads are deleted after the send")
    # a send naming a path that climbs out of uploads/: refused, nothing deleted
    adir = os.path.realpath("dev-alice/alice@example.org")
    open(adir + "/keep.txt", "w").write("kept")
    r = ws.call("send", {"args": ["bob@example.org"], "text": "climbing",
                         "file": [adir + "/uploads/../keep.txt"]})
    check(r is not None and r.get("error", {}).get("code") == -32602 and
          os.path.exists(adir + "/keep.txt") and os.path.exists(adir + "/state.db"),
          "a path that climbs out of uploads/ is refused, and nothing is deleted: %r" % r)
    e = bws.wait_event(lambda j: j.get("method") == "event" and
                       j["params"].get("type") == "message" and
                       j["params"]["message"].get("text", "").startswith("two files"))
    check(e is not None, "bob's page hears of the message")
    mid = e["params"]["message"]["message_id"] if e else "0" * 32
    check(e is not None and len(e["params"]["message"].get("attachments", [])) == 2,
          "schema 2's message event lists the attachments")
    e1 = old.wait_event(lambda j: j.get("method") == "event" and
                        j["params"].get("type") == "message" and
                        j["params"]["message"].get("message_id") == mid)
    check(e1 is not None and "attachments" not in e1["params"]["message"],
          "a schema-1 page's message event has no attachments: %r" % e1)
    r = bws.call("history", {"args": ["alice@example.org"], "output": "json"})
    items = [i for i in r["result"]["items"] if i.get("message_id") == mid] if r else []
    att = items[0].get("attachments") if items else None
    check(att is not None and [(a["index"], a["name"], a["size"], a["mime"]) for a in att] ==
          [(0, "page.html", len(html), "application/octet-stream"),
           (1, "pic___.png", len(png), "image/png")],
          "history -o json lists the attachments: %r" % att)
    st, h, body = get(bport, "/files/%s/0" % mid, cookie=bcookie)
    check(st == 200 and body == html, "/files returns the identical bytes (%d)" % st)
    check(h.get("content-type") == "application/octet-stream" and
          h.get("content-disposition", "").startswith("attachment; filename*=UTF-8''page.html") and
          h.get("cache-control") == "no-store" and h.get("content-length") == str(len(html)),
          "an HTML file is a download, never inline: %r" % h)
    st, h, body = get(bport, "/files/%s/1" % mid, cookie=bcookie)
    check(st == 200 and body == png and h.get("content-type") == "image/png" and
          "content-disposition" not in h, "a PNG is shown as an image: %d %r" % (st, h))
    st, h, body = get(aport, "/files/%s/0" % mid, cookie=cookie)
    check(st == 200 and body == html and h.get("content-type") == "application/octet-stream",
          "the sender's page serves its own copy, a download as for the receiver (%d %r)" % (st, h))
    st, _, body = get(aport, "/files/%s/1" % mid, cookie=cookie)
    check(st == 200 and body == png, "and its own copy of the image (%d)" % st)
    st, _, _ = get(bport, "/files/%s/0" % mid, cookie=cookie)
    check(st == 401, "alice's cookie is not a session of bob's server (%d)" % st)
    for path in ("/files/%s/2" % mid, "/files/%s/00" % mid, "/files/%s/-1" % mid,
                 "/files/%s/0/x" % mid, "/files/%s" % mid, "/files/" + "f" * 32 + "/0",
                 "/files/zz/0", "/files/../../state.db", "/files/%2e%2e/%2e%2e/state.db",
                 "/files/%s/..%%2f..%%2fstate.db" % mid,
                 "/files/" + mid[:31] + "/0"):
        st, _, body = get(bport, path, cookie=bcookie)
        check(st == 404 or (st in (400, 403) and body != html),
              "%s: 404, nothing served (%d)" % (path, st))
        check(b"SQLite" not in body, "%s serves no database" % path)

    # a text line that names a file is not a file: a sender cannot point /files anywhere
    secret = os.path.realpath("dev-bob/bob@example.org/secret.txt")
    open(secret, "w").write("not to be served")
    missive("alice", "send", "bob@example.org", "--text",
            "look\n[file: %s (16 bytes)]\n[file: %s/attachments/%s-page.html (9 bytes)]" % (
                secret, os.path.realpath("dev-bob/bob@example.org"), mid))
    e = bws.wait_event(lambda j: j.get("method") == "event" and
                       j["params"].get("type") == "message" and
                       j["params"]["message"].get("text", "").startswith("look"))
    fid = e["params"]["message"]["message_id"] if e else "0" * 32
    check(e is not None and e["params"]["message"].get("attachments") == [],
          "forged file lines list no attachment: %r" % (e and e["params"]["message"]))
    for i in (0, 1):
        st, _, body = get(bport, "/files/%s/%d" % (fid, i), cookie=bcookie)
        check(st == 404 and b"not to be served" not in body and body != html,
              "a forged file line serves nothing (%d)" % st)

    # ---- history --before, through the WebSocket and the command line ----
    for n in range(5):
        missive("alice", "send", "bob@example.org", "--text", "page %d" % n)
    r = ws.call("history", {"args": ["bob@example.org"], "output": "json"})
    allm = r["result"]["items"]
    last = allm[-1]["message_id"]
    r = ws.call("history", {"args": ["bob@example.org"], "output": "json", "before": last,
                            "limit": 2})
    got = [i["text"] for i in r["result"]["items"]] if r and "result" in r else r
    check(got == ["page 2", "page 3"], "history --before --limit: the page before, oldest first "
          "(%r)" % got)
    r = ws.call("history", {"args": ["bob@example.org"], "output": "json",
                            "before": allm[0]["message_id"]})
    check(r is not None and r["result"]["items"] == [], "nothing before the first message")
    r = ws.call("history", {"args": ["bob@example.org"], "before": "nothex"})
    check(r is not None and "error" in r and "--before" in r["error"]["message"],
          "--before with a bad id: %r" % r)
    r = ws.call("history", {"args": ["bob@example.org"], "before": "0" * 32})
    check(r is not None and "error" in r and "no message" in r["error"]["message"],
          "--before with an unknown id: %r" % r)
    # the command line goes through the owner, and alone
    out = missive("alice", "-o", "json", "history", "bob@example.org", "--before", last,
                  "--limit", "1").stdout
    check([json.loads(l)["text"] for l in out.splitlines()] == ["page 3"],
          "missive history --before through missive web: %r" % out)

    # ---- missive web --url: another login for a second browser ----
    r = missive("alice", "web", "--url")
    url2 = r.stdout.strip()
    check(re.match(r"http://127\.0\.0\.1:%d/login\?token=[0-9a-f]{64}$" % aport, url2) is not None
          and url2 != url, "web --url: a fresh login URL (%r)" % r.stdout)
    st, _, cookie2 = login(url2, aport)
    check(st == 303 and cookie2 != cookie, "the second login works (%d)" % st)
    st, _, _ = get(aport, "/", cookie=cookie)
    check(st == 200, "the first session still works")
    # the daemon method web-login, on the owner's socket (the page may not: "the page's
    # web-login refused")
    r = missive("alice", "-o", "json", "web", "--url")
    check(json.loads(r.stdout)["url"].startswith("http://"), "web --url -o json: %r" % r.stdout)

    # ---- everything the pages got follows the daemon's schema 2 ----
    with open("ws.jsonl", "w") as f:
        for m in ws.record + bws.record:
            f.write(m + "\n")
    with open("ws1.jsonl", "w") as f:
        for m in old.record:
            f.write(m + "\n")
    for version, lines in ((2, "ws.jsonl"), (1, "ws1.jsonl")):
        r = subprocess.run(["/usr/bin/python3", os.path.join(HERE, "check_schema.py"),
                            os.path.join(HERE, "..", "docs", "daemon-schema-%d.json" % version),
                            lines], capture_output=True, text=True)
        check(r.returncode == 0 and re.search(r"checked [1-9]", r.stdout),
              "the WebSocket messages follow schema %d: %s" % (version, r.stdout[-2000:]))

    # ---- the address: loopback only without TLS; TLS ----
    r = missive("bob", "web", "--listen", "0.0.0.0:0", check_rc=False)
    check(r.returncode == 2 and "TLS" in r.stderr, "0.0.0.0 without TLS refused: %r" % r.stderr)
    r = missive("bob", "web", "--listen", "nonsense", check_rc=False)
    check(r.returncode == 2 and "--listen" in r.stderr, "a malformed --listen: %r" % r.stderr)
    r = missive("bob", "web", "--tls-cert", "x.pem", check_rc=False)
    check(r.returncode == 2, "--tls-cert without --tls-key: %r" % r.stderr)
    stop(bob)
    r = missive("bob", "web", "--listen", "127.0.0.1:%d" % aport, check_rc=False)
    check(r.returncode == 1 and "cannot listen on 127.0.0.1:%d" % aport in r.stderr and
          not os.path.exists("dev-bob/bob@example.org/daemon.sock"),
          "a port taken: exit 1, nothing left: %r" % r.stderr)
    # without TLS, --listen localhost names 127.0.0.1 in the URL: a browser may try ::1 for
    # localhost first, where another user of the machine could listen on the same port
    lbob, lurl, lhost, lport = start_web("bob", "--listen", "localhost:0")
    st, _, _ = get(lport, "/login?token=" + "0" * 64, host="localhost:%d" % lport)
    check(st == 421, "--listen localhost without TLS: Host localhost:PORT refused (%d)" % st)
    st, _, _ = get(lport, "/login?token=" + lurl.rsplit("=", 1)[1], host="127.0.0.1:%d" % lport)
    check(lhost.startswith("127.0.0.1:") and st == 303,
          "--listen localhost:0 without TLS: the URL says 127.0.0.1 (%s, %d)" % (lhost, st))
    stop(lbob)
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout",
                    "key.pem", "-out", "cert.pem", "-days", "1", "-subj", "/CN=localhost"],
                   capture_output=True, check=True)
    lbob, lurl, lhost, lport = start_web("bob", "--listen", "localhost:0", "--tls-cert", "cert.pem",
                                         "--tls-key", "key.pem")
    check(lurl.startswith("https://localhost:"), "--listen localhost with TLS: the URL says "
          "localhost, which its certificate names: %r" % lurl)
    stop(lbob)
    tbob, turl, thost, tport = start_web("bob", "--tls-cert", "cert.pem", "--tls-key", "key.pem")
    check(turl.startswith("https://127.0.0.1:"), "with TLS the URL is https: %r" % turl)
    st, h, _ = raw(tport, ("GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n" % (
        turl.split(thost, 1)[1], thost)).encode(), tls=True)
    check(st == 303 and h.get("set-cookie", "").endswith("; Secure"),
          "over TLS the cookie is Secure: %r" % h.get("set-cookie"))
    tcookie = h.get("set-cookie", "").split(";")[0]
    st, h, body = raw(tport, ("GET / HTTP/1.1\r\nHost: %s\r\nCookie: %s\r\nConnection: "
                              "close\r\n\r\n" % (thost, tcookie)).encode(), tls=True)
    check(st == 200 and b"<script" in body, "the page over HTTPS (%d)" % st)
    st, _, _ = get(tport, "/")
    check(st == 0, "plain HTTP on the TLS port gets no page (%d)" % st)
    stop(tbob)
    sessions()
    fetch_metadata()
    connections()
    open_page()
    upload_disk_full()


def web_login(who):
    """A fresh login URL from the running missive web of WHO (missive web --url)."""
    return missive(who, "web", "--url").stdout.strip()


def sessions():
    # ---- a login URL runs out of time (--token-minutes) ----
    b, url, host, port = start_web("bob", "--token-minutes", "0.04", "--session-hours", "0.002",
                                   "--idle-minutes", "60")
    time.sleep(3)
    st, _, _ = login(url, port)
    check(st == 403, "a login URL older than --token-minutes: 403 (%d)" % st)
    url = web_login("bob")
    st, h, cookie = login(url, port)
    check(st == 303 and h.get("set-cookie", "").endswith("; Max-Age=7"),
          "a fresh URL logs in; the cookie lasts --session-hours (%d %r)" % (st, h))
    st, _, _ = get(port, "/", cookie=cookie)
    check(st == 200, "the session works (%d)" % st)
    ws = WS(port, cookie=cookie, origin="http://" + host)
    check(ws.status == 101, "a WebSocket of the session (%d)" % ws.status)
    # ---- and a session after --session-hours, used or not; its WebSocket closes ----
    for _ in range(4):
        time.sleep(2)
        r = ws.call("status", timeout=5)
        if r is None:
            break
    check(r is None, "the session's WebSocket closes when its time is up")
    st, _, _ = get(port, "/", cookie=cookie)
    check(st == 401, "a session past --session-hours: 401 (%d)" % st)
    stop(b)

    # ---- a session unused for --idle-minutes ends; one in use goes on ----
    b, url, host, port = start_web("bob", "--idle-minutes", "0.05")
    st, _, cookie = login(url, port)
    for i in range(3):
        time.sleep(2)
        st, _, _ = get(port, "/app/dom.js", cookie=cookie)
        check(st == 200, "a session in use does not go idle (%d: %d)" % (i, st))
    time.sleep(4)
    st, _, _ = get(port, "/", cookie=cookie)
    check(st == 401, "a session unused for --idle-minutes: 401 (%d)" % st)

    # ---- Logout ends the session on the server ----
    st, _, cookie = login(web_login("bob"), port)
    origin = "http://" + host
    ws = WS(port, cookie=cookie, origin=origin)
    check(ws.status == 101, "a WebSocket before the logout (%d)" % ws.status)
    for what, kw in (("without the page's Origin", dict()),
                     ("from another Origin", dict(origin="http://evil.example")),
                     ("without the page key", dict(origin=origin, key=""))):
        st, _, _ = post(port, "/logout", b"", cookie=cookie, flag=False, **kw)
        check(st == 403, "a logout %s: 403 (%d)" % (what, st))
    st, _, _ = get(port, "/", cookie=cookie)
    check(st == 200, "the refused logouts changed nothing (%d)" % st)
    st, h, _ = post(port, "/logout", b"", cookie=cookie, origin=origin, flag=False)
    check(st == 204 and h.get("set-cookie", "").startswith("missive_session_%d=;" % port) and
          "Max-Age=0" in h.get("set-cookie", ""), "logout: 204, the cookie taken back (%d %r)" % (
              st, h))
    for path in ("/", "/app/main.js", "/qr.svg?data=x"):
        st, _, _ = get(port, path, cookie=cookie)
        check(st == 401, "%s after the logout: 401 (%d)" % (path, st))
    ws.s.settimeout(5)
    t = time.time()
    check(ws.recv() is None and time.time() - t < 4, "the WebSocket of a session logged out closes")
    ws = WS(port, cookie=cookie, origin=origin)
    check(ws.status != 101, "no WebSocket after the logout (%d)" % ws.status)
    st, _, _ = post(port, "/logout", b"", cookie=cookie, origin=origin, flag=False)
    check(st == 401, "a second logout: 401 (%d)" % st)
    r = missive("bob", "web", "--token-minutes", "0", check_rc=False)
    check(r.returncode == 2 and "--token-minutes" in r.stderr, "--token-minutes 0: %r" % r.stderr)
    r = missive("bob", "web", "--session-hours", "200", check_rc=False)
    check(r.returncode == 2 and "--session-hours" in r.stderr, "--session-hours 200: %r" % r.stderr)
    stop(b)


def fetch_metadata():
    b, url, host, port = start_web("bob")
    origin = "http://" + host
    nav = "Sec-Fetch-Mode: navigate\r\nSec-Fetch-Dest: document\r\n"
    token_path = url.split(host, 1)[1]
    # another site's page cannot spend a login link either, but a link followed can
    for site in ("cross-site", "same-site"):
        st, _, _ = get(port, token_path, extra="Sec-Fetch-Site: %s\r\nSec-Fetch-Mode: no-cors\r\n"
                       "Sec-Fetch-Dest: image\r\n" % site)
        check(st == 403, "a %s subresource request for /login: 403 (%d)" % (site, st))
    st, h, cookie = get(port, token_path, extra="Sec-Fetch-Site: cross-site\r\n" + nav)
    cookie = h.get("set-cookie", "").split(";")[0]
    PAGE_KEYS[cookie] = h.get("location", "")[4:]
    check(st == 303, "a top-level navigation from elsewhere to /login logs in (%d)" % st)
    for site in ("cross-site", "same-site"):
        extra = "Sec-Fetch-Site: %s\r\n" % site
        st, _, _ = get(port, "/", cookie=cookie, extra=extra + nav)
        check(st == 200, "a %s top-level navigation to /: 200 (%d)" % (site, st))
        st, _, _ = get(port, "/", cookie=cookie, extra=extra + "Sec-Fetch-Mode: navigate\r\n"
                       "Sec-Fetch-Dest: iframe\r\n")
        check(st == 403, "/ %s in a frame: 403 (%d)" % (site, st))
        for path in ("/app/main.js", "/qr.svg?data=x", "/files/" + "0" * 32 + "/0",
                     "/index.html"):
            st, _, _ = get(port, path, cookie=cookie, extra=extra + "Sec-Fetch-Mode: no-cors\r\n"
                           "Sec-Fetch-Dest: script\r\n")
            check(st == 403, "%s %s: 403 (%d)" % (path, site, st))
        st, _, _ = get(port, "/app/main.js", cookie=cookie, extra=extra + nav)
        check(st == 403, "a %s navigation to /app/main.js: 403 (%d)" % (site, st))
        st, _, _ = raw(port, ("POST %s HTTP/1.1\r\nHost: %s\r\nCookie: %s\r\nOrigin: %s\r\n"
                              "X-Missive-Upload: 1\r\n%sContent-Length: 1\r\nConnection: close"
                              "\r\n\r\nx" % (keyed("/upload?name=x.txt", cookie, None), host,
                                                cookie, origin, extra)).encode())
        check(st == 403, "an upload %s: 403 (%d)" % (site, st))
        ws = WS(port, cookie=cookie, origin=origin, extra=extra + "Sec-Fetch-Mode: websocket\r\n"
                "Sec-Fetch-Dest: empty\r\n")
        check(ws.status != 101, "a WebSocket %s refused (%d)" % (site, ws.status))
        ws.s.close()
    for site in ("same-origin", "none"):
        st, _, _ = get(port, "/app/main.js", cookie=cookie, extra="Sec-Fetch-Site: %s\r\n" % site)
        check(st == 200, "/app/main.js %s: 200 (%d)" % (site, st))
    ws = WS(port, cookie=cookie, origin=origin, extra="Sec-Fetch-Site: same-origin\r\n"
            "Sec-Fetch-Mode: websocket\r\n")
    check(ws.status == 101, "a WebSocket from the page itself (%d)" % ws.status)
    ws.s.close()
    stop(b)


def connections():
    b, url, host, port = start_web("bob")
    # idle sockets that never log in: the oldest go as others come
    idle = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(40)]
    half = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(10)]
    for s in half:
        s.sendall(b"GET / HTTP/1.1\r\nHost: " + host.encode() + b"\r\n")  # never ends
    time.sleep(0.5)
    st, h, cookie = login(url, port)
    check(st == 303, "a login while 50 idle sockets are open (%d)" % st)
    st, _, _ = get(port, "/", cookie=cookie)
    check(st == 200, "and the page (%d)" % st)
    idle[0].settimeout(5)
    try:
        gone = idle[0].recv(100) == b""
    except (ConnectionError, socket.timeout):
        gone = False
    check(gone, "the oldest idle socket was closed to make room")
    for s in idle + half:
        s.close()

    def held(path):
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        s.sendall(("GET %s HTTP/1.1\r\nHost: %s\r\nCookie: %s\r\n\r\n" % (
            path, host, cookie)).encode())
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
        return s

    # the cookie alone (which every port of the host gets, another local user's too) holds no
    # slot: such connections go as the unauthenticated ones do, and the page still loads
    cookie_only = [held("/app/dom.js") for _ in range(64)]
    time.sleep(0.5)
    st, _, _ = get(port, "/", cookie=cookie)
    check(st == 200, "the page while 64 connections with the cookie alone came (%d)" % st)
    cookie_only[0].settimeout(5)
    gone = False
    try:
        while True:  # what is left of its answer first (a slow server sends it late), then EOF
            if cookie_only[0].recv(65536) == b"":
                gone = True
                break
    except ConnectionResetError:
        gone = True
    except (ConnectionError, socket.timeout):
        pass
    check(gone, "the oldest connection with the cookie alone was closed to make room")
    for s in cookie_only:
        s.close()
    time.sleep(1)
    # every connection at once, each with the page key: the one more is told so
    keep = [held(keyed("/qr.svg?data=x", cookie, None)) for _ in range(64)]
    st, _, body = get(port, "/", cookie=cookie)
    check(st == 503 and body == b"too many connections\n",
          "a connection over 64: 503 too many connections (%d %r)" % (st, body))
    for s in keep:
        s.close()
    time.sleep(1)
    st, _, _ = get(port, "/", cookie=cookie)
    check(st == 200, "room again once they closed (%d)" % st)
    # idle ones that never log in time out by themselves
    s = socket.create_connection(("127.0.0.1", port), timeout=20)
    t = time.time()
    try:
        gone = s.recv(100) == b""
    except (ConnectionError, socket.timeout):
        gone = False
    check(gone and time.time() - t < 15, "an idle socket is closed after 10 s (%.1f)" % (
        time.time() - t))
    s.close()
    stop(b)
    err = open("bob.web.err", errors="replace").read()
    check(re.search(r"web: [1-9]\d* connections refused \(all 64 in use\), [1-9]\d* closed before a "
                    r"login", err) is not None, "the refusals are logged: %r" % err[-500:])


def open_page():
    # --open: the login URL reaches the browser in a file of the account's, not on a command line
    os.makedirs("fakebin", exist_ok=True)
    with open("fakebin/xdg-open", "w") as f:
        f.write("#!/bin/sh\n"
                "printf '%s\\n' \"$0\" \"$@\" > \"$PWD/xdg.argv\"\n"
                "stat -c %a \"$1\" > \"$PWD/xdg.mode\"\n"
                "cat \"$1\" > \"$PWD/xdg.page\"\n")
    os.chmod("fakebin/xdg-open", 0o755)
    env = dict(ENV, PATH=os.path.abspath("fakebin") + ":" + os.environ["PATH"])
    p = subprocess.Popen([M, "--data-dir", "dev-bob", "--account", "bob@example.org", "web",
                          "--open"], env=env, stdout=subprocess.PIPE,
                         stderr=open("bob.web.err", "ab"), text=True,
                         preexec_fn=tied())
    procs.append(p)
    url = p.stdout.readline().strip()[5:]
    port = int(re.match(r"http://127\.0\.0\.1:(\d+)/", url).group(1))
    for _ in range(100):
        if os.path.exists("xdg.page") and os.path.getsize("xdg.page") > 0:
            break
        time.sleep(0.1)
    argv = open("xdg.argv").read().split("\n") if os.path.exists("xdg.argv") else []
    token = url.rsplit("=", 1)[1]
    check(len(argv) >= 2 and token not in "".join(argv) and
          argv[1].startswith(os.path.realpath("dev-bob/bob@example.org") + "/") and
          argv[1].endswith(".html"), "xdg-open is given a file, not the URL: %r" % argv)
    check(open("xdg.mode").read().strip() == "600", "the file is 0600: %r" % open(
        "xdg.mode").read())
    page = open("xdg.page").read()
    check('<meta http-equiv="refresh" content="0; url=%s">' % url in page and "<script" not in page,
          "the file forwards to the URL with a meta refresh: %r" % page)
    check(os.path.exists(argv[1]) if len(argv) >= 2 else False, "the file is there until a login")
    st, _, _ = login(url, port)
    check(st == 303, "the URL in the file logs in (%d)" % st)
    time.sleep(1.5)
    check(len(argv) >= 2 and not os.path.exists(argv[1]), "the file is gone after the login")
    # xdg-open has exited by now: missive reaped it (no zombie child left)
    zombies = []
    for d in os.listdir("/proc"):
        try:
            with open("/proc/%s/stat" % d) as f:
                fields = f.read().rsplit(")", 1)[1].split()
            if fields[0] == "Z" and int(fields[1]) == p.pid:
                zombies.append(d)
        except (OSError, ValueError, IndexError):
            pass
    check(zombies == [], "xdg-open was reaped: %r" % zombies)
    stop(p)


def upload_disk_full():
    # an upload that cannot be written whole (the disk full: here a file size limit, its
    # signal ignored): refused, its directory gone, and its descriptor closed, so the blocks
    # written are given back at once (before, the descriptor stayed open: the disk stayed full)
    tie = tied()

    def limited():
        tie()
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (8 << 20, 8 << 20))

    p = subprocess.Popen([M, "--data-dir", "dev-bob", "--account", "bob@example.org", "web"],
                         env=ENV, stdout=subprocess.PIPE, stderr=open("bob.web.err", "ab"),
                         text=True, preexec_fn=limited)
    procs.append(p)
    url = p.stdout.readline().strip()[5:]
    port = int(re.match(r"http://127\.0\.0\.1:(\d+)/", url).group(1))
    _, _, cookie = login(url, port)
    st, _, _ = upload(port, cookie, "big.bin", os.urandom(10 << 20))
    check(st == 400, "an upload past what can be written: 400 (%d)" % st)
    held = []
    for fd in os.listdir("/proc/%d/fd" % p.pid):
        try:
            target = os.readlink("/proc/%d/fd/%s" % (p.pid, fd))
        except OSError:
            continue
        if "/uploads/" in target:
            held.append(target)
    check(held == [], "no descriptor of the failed upload stays open: %r" % held)
    up = "dev-bob/bob@example.org/uploads"
    check(not any(os.path.exists(os.path.join(up, d, "big.bin")) for d in os.listdir(up)),
          "the failed upload's file is gone")
    st, _, _ = upload(port, cookie, "small.txt", b"fits")
    check(st == 200, "an upload that fits still goes (%d)" % st)
    stop(p)


try:
    main()
finally:
    cleanup()
print("%d passed, %d failed" % (passes, len(failures)))
sys.exit(1 if failures else 0)
