#!/usr/bin/env bash
# What others write reaches the terminal only as characters that print: a
# hostile contact sends texts, a group name and a file name holding escape
# sequences, C0 and C1 controls and direction overrides; every command that
# prints them (receive, listen, history, groups, contacts) and the daemon's
# text output show them as visible escapes, and nothing in the output acts
# on a terminal. A dishonest server's reasons reach the CLI and missive-audit
# the same way.
set -u
. "$(cd "$(dirname "$0")" && pwd)/lib.sh"
M=$(realpath "${1:?usage: test_terminal.sh MISSIVE MISSIVED MISSIVE_AUDIT}")
D=$(realpath "${2:?usage: test_terminal.sh MISSIVE MISSIVED MISSIVE_AUDIT}")
A=$(realpath "${3:?usage: test_terminal.sh MISSIVE MISSIVED MISSIVE_AUDIT}")
in_scratch
daemon=
fake=
trap 'for p in $daemon $pid $fake; do kill -TERM "$p" 2>/dev/null && wait "$p"; done; rm -rf "$work"' EXIT

start_missived || bad "missived started"
register_people alice bob

# clean WHAT FILE...: nothing in the files that a terminal acts on: no C0 control but
# tab and line feed, no DEL, no C1 control, no bidirectional control, nothing but UTF-8
clean() {
    local what=$1
    shift
    /usr/bin/python3 - "$@" <<'PY' && ok || bad "$what: $(cat "$@" | od -c | head -20)"
import re, sys
for name in sys.argv[1:]:
    data = open(name, "rb").read()
    text = data.decode("utf-8")  # raises on bytes that are not UTF-8
    bad = re.findall(r"[\x00-\x08\x0b-\x1f\x7f\x80-\x9f\u200e\u200f\u061c\u202a-\u202e\u2066-\u2069]", text)
    assert not bad, (name, bad)
PY
}

esc=$'\e'
# clears the screen, retitles the window, moves up a line and rewrites it, a C1 CSI
# (U+009B) that clears too, and a line that poses as another sender's message
hostile="hi${esc}[2J${esc}]0;pwned"$'\a'"${esc}[1A${esc}[2K"$'\r'"fake"$'\xc2\x9b'"2J"$'\n'"[2026-01-01 00:00] carol@example.org: send me the code"
# a file name whose ending is reversed on screen: "photo<U+202E>gpj.exe" reads photoexe.jpg
trick=$'photo\xe2\x80\xaegpj.exe'
head -c 3000 /dev/urandom >"$trick"

expect 0 "bob sends the hostile text" -- as bob send alice@example.org --text "$hostile"
expect 0 "bob names a group with an escape sequence" -- as bob groups create "trip${esc}]0;x"$'\a\xe2\x80\xae' alice@example.org
expect 0 "bob sends a file whose name reverses" -- as bob send alice@example.org --text "see" --file "$trick"
blob=$(ls -t srv/blobs | head -1)
/usr/bin/python3 -c "import sys; p=sys.argv[1]; b=bytearray(open(p,'rb').read()); b[50]^=1; open(p,'wb').write(b)" "srv/blobs/$blob"

expect 0 "receive" -- as alice receive
clean "receive prints nothing that acts" out.txt err.txt
grep -qF 'hi\x1b[2J\x1b]0;pwned\x07\x1b[1A\x1b[2K\x0dfake\u009b2J' out.txt && ok || bad "the escapes shown: $(cat out.txt)"
grep -q '^    \[2026-01-01 00:00\] carol@example.org: send me the code$' out.txt && ok || bad "the posing line indented: $(cat out.txt)"
grep -q '^\[2026-01-01 00:00\] carol' out.txt && bad "a line posed as carol's" || ok
grep -qF 'photo\u202egpj.exe not available: it failed its integrity check' out.txt && ok || bad "the file name shown: $(cat out.txt)"
expect 0 "history" -- as alice history
clean "history prints nothing that acts" out.txt err.txt
grep -qF 'hi\x1b[2J' out.txt && grep -qF 'photo\u202egpj.exe' out.txt && ok || bad "history: $(cat out.txt)"
expect 0 "history of a search" -- as alice history --search pwned
clean "a search prints nothing that acts" out.txt err.txt
expect 0 "groups" -- as alice groups
clean "groups prints nothing that acts" out.txt err.txt
grep -qF 'trip\x1b]0;x\x07\u202e' out.txt && ok || bad "the group name shown: $(cat out.txt)"
expect 0 "a contact named by a paste" -- as alice contacts add "bob${esc}[8m" bob@example.org
expect 0 "contacts" -- as alice contacts
clean "contacts prints nothing that acts" out.txt err.txt
# -o json escapes what others wrote too: nothing but ASCII in the output
for what in contacts history groups; do
    expect 0 "$what as JSON" -- as alice -o json $what
    clean "$what as JSON prints nothing that acts" out.txt err.txt
done
grep -qiF '"trip\u001b]0;x\u0007\u202e"' out.txt && ok || bad "the group name in JSON: $(cat out.txt)"

# listen prints as it goes
as bob send alice@example.org --text "again${esc}[2J"$'\xe2\x80\xae' >/dev/null 2>&1 && ok || bad "bob sends again"
timeout 8 "$M" --data-dir dev-alice --account alice@example.org listen >out.txt 2>err.txt
clean "listen prints nothing that acts" out.txt err.txt
grep -qF 'again\x1b[2J\u202e' out.txt && ok || bad "listen: $(cat out.txt)"

# through the daemon: the text output of receive, history and groups
(exec "$M" --data-dir dev-alice daemon >daemon.out 2>daemon.err) &
daemon=$!
for _ in $(seq 150); do [ -S dev-alice/alice@example.org/daemon.sock ] && break; sleep 0.1; done
as bob send alice@example.org --text "daemon${esc}]0;t"$'\a' >/dev/null 2>&1 && ok || bad "bob sends to the daemon"
as bob groups create "p${esc}[2J" alice@example.org >/dev/null 2>&1 && ok || bad "another group"
# what the daemon took in, as receive prints it through the daemon (a loaded machine may be slow)
: >got.txt
for _ in $(seq 10); do
    as alice receive >out.txt 2>err.txt
    cat out.txt err.txt >>got.txt
    grep -qF 'p\x1b[2J' got.txt && break
done
clean "the daemon's text output" got.txt
grep -qF 'daemon\x1b]0;t\x07' got.txt && ok || bad "the daemon's receive: $(cat got.txt)"
expect 0 "history through the daemon" -- as alice history
clean "history through the daemon" out.txt err.txt
expect 0 "groups through the daemon" -- as alice groups
clean "groups through the daemon" out.txt err.txt
grep -qF 'p\x1b[2J' out.txt && ok || bad "the daemon's groups: $(cat out.txt)"
as bob send alice@example.org --text "json"$'\xc2\x9b\xe2\x80\xae' >/dev/null 2>&1 && ok || bad "bob sends for JSON"
: >got.txt
for _ in $(seq 10); do
    as alice -o json receive >out.txt 2>err.txt
    cat out.txt err.txt >>got.txt
    grep -qiF 'json\u009b\u202e' got.txt && break
done
clean "JSON through the daemon" got.txt
grep -qiF 'json\u009b\u202e' got.txt && ok || bad "the daemon's JSON: $(cat got.txt)"
expect 0 "groups as JSON through the daemon" -- as alice -o json groups
clean "JSON groups through the daemon" out.txt err.txt

# a dishonest server on the same address, with the same certificate: it answers Hello
# with a challenge and every other request with a refusal whose words hold escapes, a
# C1 CSI, a direction override and a line posing as missive's own
kill -TERM "$daemon" && wait "$daemon"
daemon=
kill -TERM "$pid" && wait "$pid"
pid=
cat >fake.py <<'PY'
import socket, ssl, sys
cert, key, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
words = b"no\x1b[2J\x1b]0;pwned\x07\xc2\x9b1A\xe2\x80\xaegpj.exe\nmissive: all is well"
def varint(n):
    out = b""
    while True:
        out += bytes([(n & 0x7F) | (0x80 if n > 0x7F else 0)])
        n >>= 7
        if not n:
            return out
def field(num, data):  # a length-delimited field
    return varint(num << 3 | 2) + varint(len(data)) + data
def exact(conn, n):
    data = b""
    while len(data) < n:
        got = conn.recv(n - len(data))
        if not got:
            raise EOFError
        data += got
    return data
def serve(conn):
    while True:
        head = exact(conn, 4)
        body = exact(conn, int.from_bytes(head[1:], "big"))
        request_id, i = 0, 1  # field 1, a varint, comes first
        shift = 0
        while True:
            request_id |= (body[i] & 0x7F) << shift
            shift += 7
            i += 1
            if body[i - 1] < 0x80:
                break
        kind = body[i] >> 3
        if kind == 3:  # Hello: a Challenge of 32 bytes
            answer = field(4, field(1, bytes(32)))
        else:  # an Error: code 4 (ERROR_AUTH) and the words
            answer = field(2, b"\x08\x04" + field(2, words))
        answer = b"\x08" + varint(request_id) + answer
        conn.sendall(b"\x01" + len(answer).to_bytes(3, "big") + answer)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.minimum_version = ssl.TLSVersion.TLSv1_3
ctx.load_cert_chain(cert, key)
srv = socket.socket()
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("127.0.0.1", port))
srv.listen(8)
open("fake.up", "w").close()
srv.settimeout(60)
while True:
    raw, _ = srv.accept()
    try:
        with ctx.wrap_socket(raw, server_side=True) as conn:
            serve(conn)
    except (EOFError, OSError, IndexError):
        pass
PY
/usr/bin/python3 fake.py srv/server.crt srv/server.key "$port" 2>fake.err &
fake=$!
for _ in $(seq 100); do [ -e fake.up ] && break; sleep 0.1; done
expect 3 "the CLI refused by a dishonest server" -- as alice receive
clean "the server's words to the CLI" out.txt err.txt
grep -qF 'no\x1b[2J\x1b]0;pwned\x07\u009b1A\u202egpj.exe' err.txt && ok || bad "the CLI shows the server's words: $(cat err.txt)"
grep -q '^missive: all is well' err.txt && bad "a line posed as missive's own: $(cat err.txt)" || ok
"$A" --state audit.st --server "127.0.0.1:$port" --fingerprint "$(cat srv/server.fingerprint)" >out.txt 2>err.txt
[ $? -ne 0 ] && ok || bad "missive-audit refused"
clean "the server's words to missive-audit" out.txt err.txt
grep -qF 'no\x1b[2J\x1b]0;pwned\x07\u009b1A\u202egpj.exe' err.txt && ok || bad "missive-audit shows the server's words: $(cat err.txt)"
grep -q '^missive: all is well' err.txt && bad "a line posed as missive's own: $(cat err.txt)" || ok
finish
