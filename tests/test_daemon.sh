#!/usr/bin/env bash
# missive daemon end to end, against a real missived on loopback: one owner
# per account, the plain commands running through it, every kind of JSON-RPC
# request and error, the event stream, 'receive' waiting, --stdio, and a
# clean stop; a daemon killed outright leaves nothing that blocks the next.
set -u
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"
M=$(realpath "${1:?usage: test_daemon.sh MISSIVE MISSIVED}")
D=$(realpath "${2:?usage: test_daemon.sh MISSIVE MISSIVED}")
in_scratch

start_missived || bad "missived started"
register_people alice bob carol
sock=$work/dev-bob/bob@example.org/daemon.sock

# rpc REQUEST...: sends each line to bob's daemon, prints what comes back (tests/daemon_rpc.py:
# until each is answered; RPC_WAIT=S: then until S seconds pass without a line); with
# RPC_READY=FILE, makes FILE once the first answer is in
# everything the daemon writes is kept in wire.jsonl, checked against the schema at the end
rpc() { daemon_rpc "$sock" ${RPC_WAIT:+--wait "$RPC_WAIT"} ${RPC_READY:+--ready "$RPC_READY"} "$@" | tee -a wire.jsonl; }

(exec "$M" --data-dir dev-bob daemon >daemon.out 2>daemon.err) &
daemon=$!
for _ in $(seq 50); do [ -S "$sock" ] && break; sleep 0.1; done
[ -S "$sock" ] && [ "$(stat -c %a "$sock")" = 700 ] && ok || bad "the daemon's socket, owner-only: $(cat daemon.err)"

# one owner at a time
expect 1 "a second daemon for bob" -- "$M" --data-dir dev-bob daemon
grep -q "already owned by a missive daemon or chat (pid $daemon)" err.txt && ok || bad "second owner: $(cat err.txt)"

# the plain commands go through the daemon
expect 0 "alice writes to bob" -- as alice send bob@example.org --text "hello bob"
sleep 0.5
expect 0 "bob's receive runs in the daemon" -- as bob receive
grep -q "alice@example.org: hello bob" out.txt && ok || bad "receive through the daemon: $(cat out.txt)"
expect 0 "and a second receive finds nothing new" -- as bob receive
[ ! -s out.txt ] && ok || bad "received twice: $(cat out.txt)"
expect 0 "contacts add, through the daemon" -- as bob contacts add al alice@example.org
expect 0 "contacts, as JSON" -- as bob -o json contacts
grep -qx '{"name":"al","handle":"alice@example.org"}' out.txt && ok || bad "contacts: $(cat out.txt)"
expect 1 "an error keeps its exit status and words" -- as bob contacts add al alice@example.org
grep -q "adding the contact: already exists" err.txt && ok || bad "error through the daemon: $(cat err.txt)"
expect 2 "a usage error too" -- as bob devices approve nonsense
grep -q "usage: missive devices" err.txt && ok || bad "usage through the daemon: $(cat err.txt)"
echo "text from standard input" | as bob send al >out.txt 2>err.txt && ok || bad "send with the text on standard input: $(cat err.txt)"
expect 0 "alice gets it" -- as alice receive
grep -q "bob@example.org: text from standard input" out.txt && ok || bad "alice: $(cat out.txt)"
head -c 5000 /dev/urandom >pic.bin
mkdir -p elsewhere
(cd elsewhere && "$M" --data-dir ../dev-bob send al --file ../pic.bin >../out.txt 2>../err.txt) && ok || bad "a relative --file from another directory: $(cat err.txt)"
expect 0 "alice gets the file" -- as alice receive
saved=$(sed -n 's/.*\[file: \(.*\) (5000 bytes)\].*/\1/p' out.txt)
[ -n "$saved" ] && cmp -s pic.bin "$saved" && ok || bad "the file: $(cat out.txt)"
expect 0 "history through the daemon" -- as bob -o json history alice@example.org
[ "$(field 'r["status"]' | tail -1)" != "" ] && [ "$(wc -l <out.txt)" -eq 3 ] && ok || bad "history: $(cat out.txt)"
MISSIVE_BACKUP_PASSPHRASE="backup secret 123" as bob backup bob.backup --kdf-memory 64 --kdf-passes 1 >out.txt 2>err.txt &&
    [ -s bob.backup ] && ok || bad "a backup through the daemon lands where it was asked: $(cat err.txt)"

expect 1 "listen does not run beside the daemon" -- as bob listen
grep -q "owned by a missive daemon or chat (pid $daemon) whose socket does not take this command" err.txt && ok || bad "listen beside the daemon: $(cat err.txt)"
expect 1 "nor a command given another socket" -- as bob --socket "$work/elsewhere.sock" contacts
grep -q "whose socket does not take this command" err.txt && ok || bad "wrong socket: $(cat err.txt)"

expect 2 "an argument that is not UTF-8" -- as bob send al --text "$(printf 'caf\xe9')"
grep -q "not UTF-8" err.txt && ok || bad "not UTF-8: $(cat err.txt)"
expect 2 "so is a path" -- as bob send al --file "$(printf '/nowhere/caf\xe9')"
printf 'caf\xe9\n' | as bob send al >out.txt 2>err.txt
[ $? = 2 ] && grep -q "the message is not UTF-8" err.txt && ok || bad "a message on standard input that is not UTF-8: $(cat err.txt)"

# JSON-RPC itself
rpc '{"jsonrpc":"2.0","id":1,"method":"status"}' >out.txt
[ "$(field 'r["result"]["schema"], r["result"]["account"], r["result"]["online"], r["result"]["unsealed_sends"]')" = "(1, 'bob@example.org', True, 0)" ] && ok || bad "status: $(cat out.txt)"
RPC_WAIT=3 rpc 'not json' '{"jsonrpc":"2.0","id":2}' '{"jsonrpc":"1.0","id":3,"method":"status"}' \
    '{"jsonrpc":"2.0","id":4,"method":"nothing"}' '{"jsonrpc":"2.0","id":5,"method":"contacts","params":["list"]}' \
    '{"jsonrpc":"2.0","id":6,"method":"send","params":{"args":["al"],"colour":"red"}}' \
    '{"jsonrpc":"2.0","id":7,"method":"send","params":{"args":["al"],"text":7,"qr":"yes"}}' \
    '{"jsonrpc":"2.0","id":8,"method":"listen"}' '{"jsonrpc":"2.0","id":9,"method":"devices","params":{"args":["approve","77"]}}' \
    '[]' >out.txt
[ "$(field 'r["error"]["code"]' | tr '\n' ' ')" = "-32700 -32600 -32600 -32601 -32602 -32602 -32602 -32601 -32001 -32600 " ] && ok || bad "error codes: $(cat out.txt)"
[ "$(sed -n 9p out.txt | python3 -c 'import json,sys; d=json.load(sys.stdin)["error"]; print(d["data"]["exit_status"], d["message"])')" = "1 approving the device (is it waiting?): not found: this device has not received device 77's request to join" ] && ok || bad "a command's error: $(sed -n 9p out.txt)"
# a batch answers as one array; a notification (no id) gets no answer
rpc '[{"jsonrpc":"2.0","id":"a","method":"contacts"},{"jsonrpc":"2.0","method":"status"},{"jsonrpc":"2.0","id":"b","method":"fingerprint"}]' \
    '{"jsonrpc":"2.0","method":"contacts","params":{"args":["add","nb","nb@example.org"]}}' >out.txt
[ "$(wc -l <out.txt)" = 1 ] && [ "$(field '[x["id"] for x in r]')" = "['a', 'b']" ] && ok || bad "batch: $(cat out.txt)"
expect 0 "the notification did its work" -- as bob contacts
grep -q "^nb" out.txt && ok || bad "notification: $(cat out.txt)"
rpc '{"jsonrpc":"2.0","id":1,"method":"contacts","params":{"output":"text"}}' >out.txt
[ "$(field 'r["result"]["text"]')" = "$(printf 'al\talice@example.org\nalice@example.org\talice@example.org\ncarol@example.org\tcarol@example.org\nnb\tnb@example.org\n')" ] && ok || bad "text output: $(cat out.txt)"
# the account's password comes from the request, never from the daemon's environment (which
# holds MISSIVE_PASSWORD here): without one, nothing changes (before, the daemon's was used)
rpc '{"jsonrpc":"2.0","id":"pw","method":"password","params":{"args":["change"],"new-password":"taken over 1234"}}' \
    '{"jsonrpc":"2.0","id":"del","method":"account","params":{"args":["delete"],"yes":true}}' >out.txt
[ "$(field '(r["id"], r["error"]["code"])' | tr '\n' ' ')" = "('pw', -32002) ('del', -32002) " ] &&
    grep -q 'give the account password' out.txt && ok ||
    bad "a password change or deletion without the request's password: $(cat out.txt)"
expect 0 "the account still answers with its password" -- as bob contacts
# a line over 1 MiB is refused and skipped; the connection and the daemon go on
python3 -c 'print("{\"x\":\"" + "a" * 1100000 + "\"}")' >big.txt
cat >big.py <<'EOF'
import socket, sys
s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1])
s.sendall(sys.stdin.buffer.read() + b'{"jsonrpc":"2.0","id":"after","method":"status"}\n')
s.settimeout(2)
got = b""
try:
    while got.count(b"\n") < 2:
        got += s.recv(65536)
except OSError:
    pass
sys.stdout.write(got.decode())
EOF
python3 big.py "$sock" <big.txt >out.txt
cat out.txt >>wire.jsonl
[ "$(field 'r.get("error", {}).get("code", r.get("id"))' | tr '\n' ' ')" = "-32600 after " ] && ok || bad "oversized line: $(cat out.txt)"
rpc '{"jsonrpc":"2.0","id":1,"method":"status"}' | grep -q '"schema":1' && ok || bad "the daemon still answers"

# events: a subscriber sees typing, the message, and the receipts of what bob sent
RPC_READY=subscribed RPC_WAIT=4 rpc '{"jsonrpc":"2.0","id":1,"method":"subscribe"}' >events.txt &
sub=$!
# what follows is sent once the subscription stands (python's start can take a while)
for _ in $(seq 100); do [ -e subscribed ] && break; sleep 0.1; done
RPC_WAIT=4 rpc '{"jsonrpc":"2.0","id":2,"method":"receive","params":{"wait":1.5}}' >waited.txt &
recv=$!
sleep 0.5
as alice typing bob@example.org >/dev/null 2>&1
as alice send bob@example.org --text 'a "quoted" é message' >/dev/null 2>&1
as bob send al --text "will you read this" >/dev/null 2>&1
as alice receive >/dev/null 2>&1
as alice read bob@example.org >/dev/null 2>&1
wait "$sub" "$recv"
grep -v '"id":1' events.txt >out.txt
types=$(field 'r["params"]["type"]' | tr '\n' ' ')
case "$types" in *typing*message*) ok ;; *) bad "events: $types" ;; esac
case "$types" in *receipt*receipt*) ok ;; *) bad "receipt events: $types" ;; esac
[ "$(field 'r["params"]["message"]["text"] if r["params"]["type"] == "message" else ""' | grep -c 'a "quoted" é message')" = 1 ] && ok || bad "the message event: $(cat out.txt)"
[ "$(field 'r["params"]["status"] if r["params"]["type"] == "receipt" else "-"' | sort -u | tr '\n' ' ')" = "- delivered read " ] && ok || bad "receipt statuses: $(cat out.txt)"
cp waited.txt out.txt
[ "$(field '[i.get("text", i.get("notice")) for i in r["result"]["items"]]')" = "['alice@example.org is typing', 'a \"quoted\" é message']" ] && ok || bad "a waiting receive: $(cat waited.txt)"
expect 0 "history shows the read mark" -- as bob history alice@example.org --limit 1
grep -q "will you read this  (read)" out.txt && ok || bad "read mark: $(cat out.txt)"

# a command's answer comes before what the server pushed while the command ran: a page that
# merges an answer (a history read before an unsend came) after the event that told it the
# change would put the old state back. A backup (some 5 s of key stretching) runs while alice
# writes to bob: alone, its answer comes before the message's event; in a batch with a
# 'receive' after it, which reads the message, the batch's answer comes before the event too.
cat >order.py <<'EOF'
import json, socket, subprocess, sys, time
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
s.settimeout(60)
buf, lines = b"", []
batch = sys.argv[2] == "batch"
TEXT = "while the backup ran " + sys.argv[2]


def read_until(done):
    global buf
    while not done():
        d = s.recv(65536)
        if not d:
            return
        buf += d
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            lines.append(json.loads(line))


def answer():
    return next((k for k, r in enumerate(lines)
                 if any(x.get("id") == "slow" for x in (r if isinstance(r, list) else [r]))), None)


def event():
    return next((k for k, r in enumerate(lines) if isinstance(r, dict)
                 and r.get("params", {}).get("message", {}).get("text") == TEXT), None)


s.sendall(b'{"jsonrpc":"2.0","id":"sub","method":"subscribe"}\n')
read_until(lambda: any(isinstance(r, dict) and r.get("id") == "sub" for r in lines))
slow = {"jsonrpc": "2.0", "id": "slow", "method": "backup",
        "params": {"args": ["slow-%s.backup" % sys.argv[2]], "kdf-memory": 512, "kdf-passes": 20,
                   "backup-passphrase": "backup secret 123"}}
then = {"jsonrpc": "2.0", "id": "then", "method": "receive", "params": {"wait": 0}}
s.sendall(json.dumps([slow, then] if batch else slow).encode() + b"\n")
time.sleep(0.2)
subprocess.run(sys.argv[3:] + ["--text", TEXT], stdout=subprocess.DEVNULL, check=True)
s.setblocking(False)
try:
    read_until(lambda: False)
except BlockingIOError:
    pass
s.settimeout(60)
# the backup must still run once alice's message is on its way, or this shows nothing
print(json.dumps({"over_first": answer() is not None}))
read_until(lambda: answer() is not None and event() is not None)
print(json.dumps({"answer": answer(), "event": event()}))
EOF
for mode in one batch; do
    python3 order.py "$sock" "$mode" "$M" --data-dir dev-alice --account alice@example.org send bob@example.org >out.txt 2>err.txt
    [ "$(head -1 out.txt)" = '{"over_first": false}' ] &&
        python3 -c 'import json,sys; sys.stdin.readline(); a=json.loads(sys.stdin.readline()); sys.exit(not (a["answer"] is not None and a["event"] is not None and a["answer"] < a["event"]))' <out.txt &&
        ok || bad "the answer to a command ($mode), then what came while it ran: $(cat out.txt err.txt)"
done

# a history answer holds at most 8 MiB, counted as its JSON could take (every byte of a text
# escaped, 6 of them): of 14 texts of 100,000 bytes the newest 13 fit, the oldest is left out,
# said so, and --before reaches it
head -c 100000 /dev/zero | tr '\0' 'x' >long.txt
sent=0
for _ in $(seq 14); do as alice send bob@example.org <long.txt >/dev/null 2>&1 && sent=$((sent + 1)); done
[ "$sent" = 14 ] && ok || bad "14 long messages to bob: $sent sent"
longs() { python3 -c 'import json,sys; print(sum(len(json.loads(l).get("text", "")) == 100000 for l in sys.stdin))' <out.txt; }
for _ in $(seq 50); do
    as bob -o json history alice@example.org --limit 14 >out.txt 2>err.txt
    [ "$(longs)" = 13 ] && grep -q "left out" err.txt && break
    sleep 0.2
done
oldest=$(python3 -c 'import json,sys; print(json.loads(sys.stdin.readline())["message_id"])' <out.txt 2>/dev/null)
[ "$(wc -l <out.txt)" = 13 ] && [ "$(longs)" = 13 ] && grep -q "the 1 oldest of the messages asked for are left out" err.txt && ok ||
    bad "history of 14 long messages: $(wc -l <out.txt) lines, $(cat err.txt)"
as bob -o json history alice@example.org --limit 1 --before "$oldest" >out.txt 2>err.txt
[ "$(longs)" = 1 ] && [ ! -s err.txt ] && ok || bad "--before reaches the one left out: $(head -c 200 out.txt) $(cat err.txt)"

# bad input at the edges of a request line, each answered (each fails before its fix)
# answers(s, n): the next n answer lines on socket s (fewer if it ends or times out)
cat >rpc_lines.py <<'EOF'
import json

def answers(s, n):
    got, out = b"", []
    try:
        while len(out) < n:
            d = s.recv(1 << 20)
            if not d:
                break
            got += d
            while b"\n" in got:
                line, got = got.split(b"\n", 1)
                out.append(json.loads(line))
    except OSError:
        pass
    return out
EOF
cat >edges.py <<'EOF'
import json, socket, sys, time
from rpc_lines import answers
path = sys.argv[1]

def conn():
    s = socket.socket(socket.AF_UNIX)
    s.connect(path)
    s.settimeout(10)
    return s

# an unknown key whose name the error message cuts inside a character (one of the two: each
# character is two bytes): still an answer
codes = []
for lead in ("a", "ab"):
    s = conn()
    s.sendall((json.dumps({"jsonrpc": "2.0", "id": "cut", "method": "history",
                           "params": {lead + "\u00e9" * 200: 1}}) + "\n").encode())
    a = answers(s, 1)
    codes.append(a[0]["error"]["code"] if a else None)
print("cut", codes)
# a request, then the end of the input (half-closed): answered before the daemon lets it go
s = conn()
s.sendall(b'{"jsonrpc":"2.0","id":"half","method":"receive","params":{"wait":1}}\n')
s.shutdown(socket.SHUT_WR)
a = answers(s, 1)
print("half", a[0].get("id") if a else None, "result" in a[0] if a else None)
# a last line without its newline
s = conn()
s.sendall(b'{"jsonrpc":"2.0","id":"last","method":"status"}')
s.shutdown(socket.SHUT_WR)
a = answers(s, 1)
print("last", a[0].get("id") if a else None)
# a line just over 1 MiB whose end comes with it: refused, and the next line answered
s = conn()
head = b'{"jsonrpc":"2.0","id":"big","method":"status","params":{"x":"'
tail = b'"}}'
line = head + b"a" * ((1 << 20) + 10 - len(head) - len(tail)) + tail
s.sendall(line + b'\n{"jsonrpc":"2.0","id":"next","method":"status"}\n')
a = answers(s, 2)
print("big", [r.get("error", {}).get("code", r.get("id")) for r in a])
# a receive refused as a second one changes nothing of the first
s = conn()
s.sendall(b'{"jsonrpc":"2.0","id":"w1","method":"receive","params":{"wait":2}}\n'
          b'{"jsonrpc":"2.0","id":"w2","method":"receive","params":{"wait":2,"output":"text"}}\n')
a = answers(s, 2)
print("second", [(r.get("id"), r.get("error", {}).get("code"), sorted(r.get("result", {})))
                 for r in a])
# a password where no method reads one: an unknown parameter, as any other (before, taken)
s = conn()
s.sendall(b'{"jsonrpc":"2.0","id":"pw","method":"contacts","params":{"password":"12345678"}}\n'
          b'{"jsonrpc":"2.0","id":"bp","method":"send","params":{"args":["x@example.org"],'
          b'"text":"t","backup-passphrase":"p"}}\n')
a = answers(s, 2)
print("secrets", [(r.get("id"), r.get("error", {}).get("code")) for r in a])
# a file named by a number (it would be a file of the daemon's working directory), and a
# notification whose params are refused: the first -32602, the second no answer at all
s = conn()
s.sendall(b'{"jsonrpc":"2.0","id":"num","method":"send","params":{"args":["x@example.org"],'
          b'"text":"t","file":[42]}}\n'
          b'{"jsonrpc":"2.0","method":"status","params":[1]}\n'
          b'{"jsonrpc":"2.0","id":"after","method":"status"}\n')
a = answers(s, 2)
print("types", [(r.get("id"), r.get("error", {}).get("code")) for r in a])
EOF
python3 edges.py "$sock" >out.txt 2>&1
grep -qx 'cut \[-32602, -32602\]' out.txt && ok || bad "an error message cut inside a character: $(tr "\n" "|" <out.txt)"
grep -qx 'half half True' out.txt && ok || bad "a half-closed connection's receive: $(tr "\n" "|" <out.txt)"
grep -qx 'last last' out.txt && ok || bad "a last line without its newline: $(tr "\n" "|" <out.txt)"
grep -qx "big \[-32600, 'next'\]" out.txt && ok || bad "a line over 1 MiB that ends in the read: $(tr "\n" "|" <out.txt)"
grep -qx "second \[('w2', -32600, \[\]), ('w1', None, \['items', 'stderr'\])\]" out.txt && ok ||
    bad "a refused second receive: $(tr "\n" "|" <out.txt)"
grep -qx "secrets \[('pw', -32602), ('bp', -32602)\]" out.txt && ok ||
    bad "a password or passphrase given to a method that reads none: $(tr "\n" "|" <out.txt)"
grep -qx "types \[('num', -32602), ('after', None)\]" out.txt && ok ||
    bad "a file named by a number; a notification's params refused unanswered: $(tr "\n" "|" <out.txt)"

# what arrived and takes more than one answer (30 texts of 100,000 control characters, each
# about 600 KB in JSON, 18 MB in all): 'receive' gives it over several answers, all of it, none
# lost (before, the one answer passed 16 MiB: the client was let go, the items already taken)
python3 -c 'import sys; sys.stdout.write("\x01" * 100000)' >ctl.txt
# ctl_sent LAST [N]: alice sends N texts (30) and then LAST; bob's daemon has them all once LAST
# is in his history (one sender's messages come in order)
ctl_sent() {
    for i in $(seq "${2:-30}"); do as alice send bob@example.org <ctl.txt >/dev/null 2>&1 || bad "control text $i not sent"; done
    as alice send bob@example.org --text "$1" >/dev/null 2>&1 || bad "the text after them not sent"
    for _ in $(seq 100); do
        as bob history alice@example.org --limit 1 2>/dev/null | grep -q "$1" && break
        sleep 0.2
    done
}
ctl() { python3 -c 'import json,sys; print(sum(len(json.loads(l).get("text", "")) == 100000 for l in sys.stdin if l.startswith("{")))' <out.txt; }
ctl_sent "ctl done"
# a receive sent as a notification takes nothing (it has no answer to carry it), and the
# receives of one batch share the 8 MiB (their answers are one line)
cat >batch_recv.py <<'EOF'
import json, socket, sys
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
s.settimeout(20)
r = lambda i: {"jsonrpc": "2.0", "id": i, "method": "receive", "params": {"wait": 0}}
s.sendall(b'{"jsonrpc":"2.0","method":"receive","params":{"wait":0}}\n' +
          json.dumps([r(1), r(2), r(3)]).encode() + b"\n")
got = b""
while not got.endswith(b"\n"):
    d = s.recv(1 << 20)
    if not d:
        break
    got += d
a = json.loads(got) if got.endswith(b"\n") else []
n = sum(len(i.get("text", "")) == 100000 for x in a for i in x.get("result", {}).get("items", []))
print(len(a), n, len(got) <= (8 << 20) + 4096, any(x.get("result", {}).get("more") for x in a))
EOF
python3 batch_recv.py "$sock" >out.txt 2>&1
read -r answers first fits more <out.txt
[ "$answers" = 3 ] && [ "$fits" = True ] && [ "$more" = True ] && ok ||
    bad "a batch of three receives of 18 MB: one answer within 8 MiB, more said: $(cat out.txt)"
expect 0 "receive of the rest" -- as bob -o json receive --wait 0
[ "$(( ${first:-0} + $(ctl) ))" = 30 ] && ok ||
    bad "all 30 control texts received, none lost: ${first:-?} in the batch, $(ctl) after, $(head -c 300 err.txt)"

# the server goes away: the daemon says so, keeps answering, and sends what waited once it is back
cat >follow.py <<'EOF'
import json, socket, sys
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
s.sendall(b'{"jsonrpc":"2.0","id":1,"method":"subscribe"}\n')
s.settimeout(30)
states, buf = [], b""
while states[-2:] != ["offline", "online"]:
    d = s.recv(65536)
    if not d:
        break
    buf += d
    while b"\n" in buf:
        line, buf = buf.split(b"\n", 1)
        r = json.loads(line)
        if r.get("params", {}).get("type") == "connection":
            states.append(r["params"]["state"])
        print(line.decode(), flush=True)
EOF
python3 follow.py "$sock" >conn.txt &
sub=$!
for _ in $(seq 100); do grep -q '"id":1' conn.txt 2>/dev/null && break; sleep 0.1; done
kill -KILL "$pid"
wait "$pid" 2>/dev/null
pid=
expect 4 "a send while the server is down" -- as bob send al --text "while the server was down"
grep -q "stays queued" err.txt && ok || bad "send while down: $(cat err.txt)"
rpc '{"jsonrpc":"2.0","id":1,"method":"status"}' >out.txt
[ "$(field 'r["result"]["online"]')" = False ] && [ -n "$(field 'r["result"]["last_error"]')" ] && ok || bad "status while down: $(cat out.txt)"
start_missived || bad "missived restarted"
wait "$sub"
expect 0 "alice gets what waited in bob's outbox" -- as alice receive
grep -q "bob@example.org: while the server was down" out.txt && ok || bad "outbox after reconnecting: $(cat out.txt)"
tee -a wire.jsonl <conn.txt | grep -v '"id":1' >out.txt
[ "$(field 'r["params"].get("state")' | grep -v None | tr '\n' ' ')" = "offline online " ] && ok || bad "connection events: $(cat out.txt)"

# the other commands as methods, each answered with what the command prints
result() { python3 -c 'import json,sys; r=json.loads(sys.stdin.readline()); print(json.dumps(r.get("result", r.get("error"))))'; }
rpc '{"jsonrpc":"2.0","id":1,"method":"groups","params":{"args":["create","dinner","alice@example.org","carol@example.org"]}}' | result >out.txt
rpc '{"jsonrpc":"2.0","id":2,"method":"groups"}' | result >>out.txt
grep -q '"name": "dinner"' out.txt && grep -q 'carol@example.org' out.txt && ok || bad "groups: $(cat out.txt)"
rpc '{"jsonrpc":"2.0","id":3,"method":"send","params":{"group":"dinner","text":"table for three"}}' | result >out.txt
id=$(python3 -c 'import json,sys; print(json.load(open("out.txt"))["items"][0]["message_id"])')
rpc "{\"jsonrpc\":\"2.0\",\"id\":4,\"method\":\"edit\",\"params\":{\"args\":[\"$id\"],\"text\":\"table for four\"}}" | result >out.txt
grep -q '"stderr": ""' out.txt && ok || bad "edit: $(cat out.txt)"
expect 0 "carol gets the group message and its edit" -- as carol receive
grep -q "table for three" out.txt && grep -q "bob@example.org edited a message: table for four" out.txt && ok || bad "group and edit: $(cat out.txt)"
rpc '{"jsonrpc":"2.0","id":4,"method":"typing","params":{"group":"dinner"}}' | result >out.txt
expect 0 "carol sees bob typing in the group" -- as carol -o json receive
grep -q '"notice":"bob@example.org is typing in dinner"' out.txt && ok || bad "group typing: $(cat out.txt)"
rpc "{\"jsonrpc\":\"2.0\",\"id\":5,\"method\":\"unsend\",\"params\":{\"args\":[\"$id\"]}}" | result >out.txt
rpc '{"jsonrpc":"2.0","id":6,"method":"history","params":{"group":"dinner"}}' | result >out.txt
grep -q '"status": "unsent"' out.txt && ok || bad "unsend: $(cat out.txt)"
rpc '{"jsonrpc":"2.0","id":7,"method":"verify","params":{"args":["alice@example.org"]}}' | result >out.txt
grep -Eq '"safety_number": "[0-9]{60}"' out.txt && ok || bad "verify: $(cat out.txt)"
rpc '{"jsonrpc":"2.0","id":8,"method":"verify","params":{"args":["alice@example.org"],"qr":true,"output":"text"}}' | result >out.txt
grep -q 'u2588' out.txt && ok || bad "verify --qr as text: $(head -c 300 out.txt)"
rpc '{"jsonrpc":"2.0","id":9,"method":"log-head","params":{"output":"text"}}' | result >out.txt
grep -q '"text": "missive-head 1 ' out.txt && ok || bad "log-head: $(cat out.txt)"
rpc '{"jsonrpc":"2.0","id":10,"method":"read","params":{"args":["alice@example.org"]}}' \
    '{"jsonrpc":"2.0","id":11,"method":"typing","params":{"args":["alice@example.org"]}}' \
    '{"jsonrpc":"2.0","id":12,"method":"fingerprint","params":{"args":["alice@example.org"]}}' \
    '{"jsonrpc":"2.0","id":13,"method":"devices","params":{"args":["list"]}}' \
    '{"jsonrpc":"2.0","id":14,"method":"subscribe"}' '{"jsonrpc":"2.0","id":15,"method":"unsubscribe"}' >out.txt
[ "$(field '"result" in r' | sort -u)" = True ] && [ "$(wc -l <out.txt)" = 6 ] && ok || bad "the rest: $(cat out.txt)"
[ "$(field 'r["result"].get("subscribed")' | tail -1)" = False ] && ok || bad "unsubscribe: $(tail -1 out.txt)"

# schema 2 for those who ask; schema 1 still for the rest, at once
rpc "[$(python3 -c 'print(",".join("{\"jsonrpc\":\"2.0\",\"id\":%d,\"method\":\"status\"}" % i for i in range(33)))')]" >/dev/null
daemon_rpc "$sock" --schema 2 '{"jsonrpc":"2.0","id":1,"method":"status"}' | tee -a wire2.jsonl >out.txt
[ "$(field 'r["id"], r["result"]["schema"], r["result"]["schemas"]' | tr '\n' ' ')" = "('schema', 2, [1, 2]) (1, 2, [1, 2]) " ] && ok || bad "schema 2: $(cat out.txt)"
# what the daemon's bounds turned away so far, counted: the two lines over 1 MiB, the batch of 33
# just above, the answers of receives cut at 8 MiB; no connection refused, no reader let go
# (the batch of receives: its first answer cut, the two after it carrying nothing; then the
# command's receive: one answer cut, the next one the rest)
[ "$(field 'sorted(r["result"]["daemon_limits"].items()) if r["id"] == 1 else None' | tail -1)" = \
    "[('answers_cut', 2), ('batches_refused', 1), ('connections_refused', 0), ('inbox_dropped', 0), ('lines_refused', 2), ('readers_let_go', 0)]" ] &&
    ok || bad "the daemon's limits in status: $(tail -1 out.txt)"
daemon_rpc "$sock" '{"jsonrpc":"2.0","id":1,"method":"schema","params":{"version":3}}' \
    '{"jsonrpc":"2.0","id":2,"method":"schema","params":{"version":"2"}}' \
    '{"jsonrpc":"2.0","id":3,"method":"schema","params":{"version":2,"x":1}}' | tee -a wire.jsonl >out.txt
[ "$(field 'r["error"]["code"]' | tr '\n' ' ')" = "-32602 -32602 -32602 " ] && ok || bad "schema refusals: $(cat out.txt)"
daemon_rpc "$sock" --schema 1 '{"jsonrpc":"2.0","id":1,"method":"status"}' | tee -a wire.jsonl >out.txt
[ "$(field 'r["result"]["schema"]' | tr '\n' ' ')" = "1 1 " ] && ok || bad "back to schema 1: $(cat out.txt)"
to_both() { as alice send bob@example.org --text "to both schemas" >/dev/null 2>&1; }
events_both "$sock" to_both
cat ev1.txt >>wire.jsonl
cat ev2.txt >>wire2.jsonl
grep -q '"to both schemas"' ev1.txt && grep -q '"to both schemas"' ev2.txt && ok || bad "an event in both schemas: $(cat ev1.txt ev2.txt)"

# a reader that asks and does not read: each answer of 'receive' fits what its connection has
# room for (16 MiB waiting), so it is never let go with items taken; what it was not given
# waits for the next receive (before: its third answer passed the bound, the reader was let
# go, and the items that answer had taken were gone)
ctl_sent "ctl again"
cat >slow_recv.py <<'EOF'
import json, socket, sys, time
from rpc_lines import answers
s = socket.socket(socket.AF_UNIX)
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
s.connect(sys.argv[1])
for i in range(1, 6):
    s.sendall(json.dumps({"jsonrpc": "2.0", "id": i, "method": "receive",
                          "params": {"wait": 0}}).encode() + b"\n")
    time.sleep(0.5)
s.settimeout(20)
got = answers(s, 5)
n = sum(len(i.get("text", "")) == 100000 for a in got for i in a.get("result", {}).get("items", []))
print(len(got), n)
EOF
python3 slow_recv.py "$sock" >out.txt 2>&1
read -r slow_answers slow_items <out.txt
[ "$slow_answers" = 5 ] && ok || bad "a reader that does not read at once gets all its answers: $(cat out.txt)"
expect 0 "receive of what the slow reader was not given" -- as bob -o json receive --wait 0
[ "$(( ${slow_items:-0} + $(ctl) ))" = 30 ] && ok ||
    bad "all 30 control texts given once, none lost: ${slow_items:-?} to the slow reader, $(ctl) after"
daemon_rpc "$sock" --schema 2 '{"jsonrpc":"2.0","id":1,"method":"status"}' | tee -a wire2.jsonl >out.txt
[ "$(field 'r["result"]["daemon_limits"]["readers_let_go"] if r["id"] == 1 else None' | tail -1)" = 0 ] && ok ||
    bad "no reader let go: $(cat out.txt)"

# a subscriber whose answer to 'receive' waits unread when the events after it pass its 16 MiB:
# it is let go, and the items that answer carried go back to the inbox for the next receive
# (before: they were taken as the answer was queued, and went with the connection)
ctl_sent "ctl third"
cat >sub_recv.py <<'EOF'
import json, socket, sys, time
s = socket.socket(socket.AF_UNIX)
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
s.connect(sys.argv[1])
s.sendall(b'{"jsonrpc":"2.0","id":1,"method":"subscribe"}\n'
          b'{"jsonrpc":"2.0","id":2,"method":"receive","params":{"wait":0}}\n')
time.sleep(float(sys.argv[2]))
EOF
python3 sub_recv.py "$sock" 120 &
subr=$!
sleep 1
ctl_sent "ctl fourth" 20
daemon_rpc "$sock" --schema 2 '{"jsonrpc":"2.0","id":1,"method":"status"}' | tee -a wire2.jsonl >out.txt
[ "$(field 'r["result"]["daemon_limits"]["readers_let_go"] if r["id"] == 1 else None' | tail -1)" = 1 ] && ok ||
    bad "the subscriber that does not read is let go: $(cat out.txt)"
kill "$subr" 2>/dev/null
wait "$subr" 2>/dev/null
expect 0 "receive after the subscriber went" -- as bob -o json receive --wait 0
[ "$(ctl)" = 50 ] && ok || bad "all 50 control texts there for receive, none lost with the subscriber: $(ctl)"

# a clean stop removes the socket; commands then run here again
kill -TERM "$daemon"
wait "$daemon"
[ $? -eq 0 ] && ok || bad "the daemon's exit status"
daemon=
[ ! -e "$sock" ] && ok || bad "socket left behind"
grep -q "daemon stopped" daemon.err && ok || bad "stop message: $(cat daemon.err)"
expect 0 "commands run without the daemon" -- as bob contacts
# killed outright: the socket stays, refuses, and blocks nothing
(exec "$M" --data-dir dev-bob daemon >daemon.out 2>daemon.err) &
daemon=$!
for _ in $(seq 50); do [ -S "$sock" ] && break; sleep 0.1; done
kill -KILL "$daemon"
wait "$daemon" 2>/dev/null
daemon=
expect 0 "a dead daemon's socket is passed by" -- as bob contacts
(exec "$M" --data-dir dev-bob daemon >daemon.out 2>daemon.err) &
daemon=$!
for _ in $(seq 50); do rpc '{"jsonrpc":"2.0","id":1,"method":"status"}' 2>/dev/null | grep -q schema && break; sleep 0.1; done
rpc '{"jsonrpc":"2.0","id":1,"method":"status"}' 2>/dev/null | grep -q '"schema":1' && ok || bad "a new daemon after a killed one: $(cat daemon.err)"
kill -TERM "$daemon"
wait "$daemon"
daemon=

# --stdio: requests on standard input, answers on standard output, ends with the input
printf '%s\n' '{"jsonrpc":"2.0","id":1,"method":"status"}' \
    '{"jsonrpc":"2.0","id":2,"method":"send","params":{"args":["bob@example.org"],"text":"over stdio"}}' |
    timeout 20 "$M" --data-dir dev-carol daemon --stdio >out.txt 2>err.txt
[ $? -eq 0 ] && ok || bad "stdio daemon's exit: $(cat err.txt)"
cat out.txt >>wire.jsonl
[ "$(field 'r["id"]' | tr '\n' ' ')" = "1 2 " ] && [ "$(sed -n 2p out.txt | python3 -c 'import json,sys; print(json.load(sys.stdin)["result"]["items"][0]["message_id"] != "")')" = True ] && ok || bad "stdio answers: $(cat out.txt)"
expect 0 "bob gets what carol sent over stdio" -- as bob receive
grep -q "carol@example.org: over stdio" out.txt && ok || bad "stdio send: $(cat out.txt)"
expect 2 "daemon takes no operands" -- as bob daemon extra

# every line written above follows the published schema of its connection
daemon_schema_ok 1 wire.jsonl && grep -q "^checked [0-9]\{2,\}" schema.out && ok || bad "schema 1"
daemon_schema_ok 2 wire2.jsonl && ok || bad "schema 2"
finish
