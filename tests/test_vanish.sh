#!/usr/bin/env bash
# Disappearing messages end to end, against a real missived on loopback: a
# timer set by one side is shown to the other (history notice, schema-2
# 'timer' event), out-of-range values are refused, a message sent under it
# is deleted on both sides on time (the sender's after sending, the
# receiver's after reading it, while its daemon runs, or while both sides
# sit in the chat), backups leave it out, and then no file of either account
# (the database, its -wal and -shm, attachments/) holds any trace of its
# text or of the file it brought.
set -u
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"
M=$(realpath "${1:?usage: test_vanish.sh MISSIVE MISSIVED}")
D=$(realpath "${2:?usage: test_vanish.sh MISSIVE MISSIVED}")
in_scratch

start_missived || bad "missived started"
register_people alice bob
sock=$work/dev-bob/bob@example.org/daemon.sock
# unique words (lower case: the search index keeps words folded)
marker="vanishmark$(head -c 8 /dev/urandom | od -An -tx1 | tr -d ' \n')"
filemark="filemark$(head -c 8 /dev/urandom | od -An -tx1 | tr -d ' \n')"
chatmark="chatmark$(head -c 8 /dev/urandom | od -An -tx1 | tr -d ' \n')"
keepmark="keepmark$(head -c 8 /dev/urandom | od -An -tx1 | tr -d ' \n')"
# scan NAME: no file of NAME's account holds either marker
scan() {
    local hits
    hits=$(grep -rla -e "$marker" -e "$filemark" -e "$chatmark" "dev-$1" 2>/dev/null)
    [ -z "$hits" ] && ok || bad "$1's files still hold the message: $hits"
}
# json_field EXPR: EXPR (python, on r) for each JSON line of out.txt
json_field() { python3 -c 'import json,sys
for l in open("out.txt"):
    if l.strip():
        r = json.loads(l)
        print(eval(sys.argv[1]))' "$1"; }

# a message before any timer: it stays (and goes into backups)
expect 0 "a message without a timer" -- as alice send bob@example.org --text "lasting $keepmark"
# out of range, or not a duration: refused, and nothing changes
for v in 29s 10 5w 2419201 1x abc -1m 99999999999999999999h ""; do
    expect 2 "timer $v is refused" -- as alice timer bob@example.org "$v"
done
grep -q "from 30s to 4w" err.txt && ok || bad "the refusal says why: $(cat err.txt)"
expect 0 "the timer is still off" -- as alice timer bob@example.org
grep -qx "disappearing messages: off" out.txt && ok || bad "timer after refusals: $(cat out.txt)"

# bob's daemon owns his account; schema 1 and schema 2 subscribers watch
(exec "$M" --data-dir dev-bob daemon >daemon.out 2>daemon.err) &
daemon=$!
for _ in $(seq 50); do [ -S "$sock" ] && break; sleep 0.1; done
# subscribe VERSION READY: the event stream of that schema, each line as it comes, until
# the file 'stop' exists (at most 3 minutes); READY is made once subscribed
subscribe() { python3 - "$sock" "$1" "$2" <<'PY'
import json, os, socket, sys, time
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
s.sendall((json.dumps({"jsonrpc": "2.0", "id": 0, "method": "schema",
                       "params": {"version": int(sys.argv[2])}}) + "\n").encode())
s.sendall(b'{"jsonrpc":"2.0","id":1,"method":"subscribe"}\n')
s.settimeout(0.2)
buf, end, ready = b"", time.monotonic() + 180, sys.argv[3]
while not os.path.exists("stop") and time.monotonic() < end:
    try:
        d = s.recv(65536)
    except socket.timeout:
        continue
    if not d:
        break
    buf += d
    while b"\n" in buf:
        line, buf = buf.split(b"\n", 1)
        sys.stdout.write(line.decode() + "\n")
        sys.stdout.flush()
        if ready and b'"subscribed"' in line:
            open(ready, "w").close()
            ready = None
PY
}
subscribe 1 sub1 >ev1.txt &
s1=$!
subscribe 2 sub2 >ev2.txt &
s2=$!
for _ in $(seq 100); do [ -e sub1 ] && [ -e sub2 ] && break; sleep 0.1; done
[ -e sub1 ] && [ -e sub2 ] && ok || bad "subscribed: $(cat ev1.txt ev2.txt)"

expect 0 "alice sets 30 seconds" -- as alice -o json timer bob@example.org 30s
[ "$(json_field 'r["timer_s"], r["timer"]')" = "(30, '30s')" ] && ok || bad "timer -o json: $(cat out.txt)"
wait_for ev2.txt '"type":"timer"' 100 && ok || bad "bob's daemon: no timer event: $(cat ev2.txt)"
grep -q '"notice":"alice@example.org set disappearing messages to 30s"' ev2.txt && ok || bad "timer notice: $(cat ev2.txt)"
daemon_rpc "$sock" --schema 2 '{"jsonrpc":"2.0","id":2,"method":"timer","params":{"args":["alice@example.org"]}}' >out.txt
cat out.txt >>wire2.jsonl
grep -q '"timer_s":30' out.txt && ok || bad "bob's timer, through the daemon: $(cat out.txt)"

# a message (and a file) under the timer
printf 'the file says %s\n' "$filemark" >note.txt
expect 0 "alice sends under the timer" -- as alice send bob@example.org --text "secret $marker" --file note.txt
expect 0 "alice's history" -- as alice -o json history bob@example.org
json_field 'r["text"].startswith("secret") and (r["timer_s"], r["expires_at_ms"] is not None)' | grep -q "(30, True)" &&
    ok || bad "the sender's copy counts down from sending: $(cat out.txt)"
wait_for ev2.txt "secret $marker" 100 && ok || bad "bob's daemon: no message: $(cat ev2.txt)"
expect 0 "bob's history through the daemon" -- as bob -o json history alice@example.org
json_field 'r["text"].startswith("secret") and (r["timer_s"], r["expires_at_ms"])' | grep -q "(30, None)" &&
    ok || bad "unread: not counting down yet: $(cat out.txt)"
ls dev-bob/bob@example.org/attachments/ | grep -q note.txt && ok || bad "bob has the file"
# one edited before it is read counts down from the reading too
edmark=otter$RANDOM$RANDOM
expect 0 "alice sends another under the timer" -- as alice send bob@example.org --text "draft $edmark"
edid=$(sed -n 's/^sent \([0-9a-f]*\)$/\1/p' out.txt)
wait_for ev2.txt "draft $edmark" 100 && ok || bad "bob's daemon: no second message: $(cat ev2.txt)"
expect 0 "and edits it before bob reads it" -- as alice edit "$edid" --text "final $edmark"
wait_for ev2.txt '"type":"edit"' 100 && ok || bad "bob's daemon: no edit: $(cat ev2.txt)"
expect 0 "bob reads it" -- as bob read alice@example.org
expect 0 "bob's history" -- as bob -o json history alice@example.org
json_field 'r["text"].startswith("secret") and r["expires_at_ms"] is not None' | grep -q True &&
    ok || bad "read: counting down: $(cat out.txt)"
id=$(json_field 'r["message_id"] if r["text"].startswith("secret") else ""' | grep . | head -1)
# the scan below sees the marker while the message is there (else it proves nothing)
[ -n "$(grep -rla "$marker" dev-bob)" ] && [ -n "$(grep -rla "$filemark" dev-bob)" ] && ok ||
    bad "the markers are not found in bob's files before expiry"

# a backup now holds the message without a timer, not the one with
export MISSIVE_BACKUP_PASSPHRASE="a long enough backup passphrase"
expect 0 "alice's backup" -- as alice backup "$work/alice.backup" --kdf-memory 64 --kdf-passes 1
expect 0 "restored elsewhere" -- "$M" --data-dir restored restore "$work/alice.backup"
[ -n "$(grep -rla "$keepmark" restored)" ] && ok || bad "the backup lacks the lasting message"
[ -z "$(grep -rla -e "$marker" -e "$filemark" restored)" ] && ok || bad "the backup holds the disappearing message"
rm -rf restored

# gone on time, while the daemon runs, with nothing asked of it
wait_for ev2.txt '"type":"expired"' 450 && ok || bad "no expired event: $(cat ev2.txt)"
grep -q "\"type\":\"expired\".*\"message_id\":\"$id\"\|\"message_id\":\"$id\".*\"type\":\"expired\"" ev2.txt &&
    ok || bad "the expired event names the message: $(grep expired ev2.txt)"
expect 0 "bob's history after" -- as bob history alice@example.org
grep -q "$marker" out.txt && bad "bob still shows it: $(cat out.txt)" || ok
for _ in $(seq 100); do as bob history alice@example.org | grep -q "$edmark" || break; sleep 0.1; done
as bob history alice@example.org | grep -q "$edmark" && bad "the message edited before it was read stays" || ok
grep -q "alice@example.org set disappearing messages to 30s" out.txt && ok || bad "the notice stays: $(cat out.txt)"
expect 0 "bob's search after" -- as bob history --search "$marker"
[ ! -s out.txt ] && ok || bad "the search still finds it: $(cat out.txt)"
ls dev-bob/bob@example.org/attachments/ | grep -q note.txt && bad "bob's file stays" || ok
expect 0 "alice's history after (deleted when the command opens the account)" -- as alice history bob@example.org
grep -q "$marker" out.txt && bad "alice still shows it: $(cat out.txt)" || ok

touch stop
wait "$s1" "$s2"
cat ev2.txt >>wire2.jsonl
daemon_schema_ok 2 wire2.jsonl && ok || bad "schema 2"
grep -q '"type":"timer"\|"type":"expired"\|timer_s\|expires_at_ms' ev1.txt && bad "schema 1 got new events or fields: $(cat ev1.txt)" || ok
grep -q "secret $marker" ev1.txt && ok || bad "schema 1 still gets the message: $(cat ev1.txt)"
kill -TERM "$daemon"
wait "$daemon"
daemon=

# the chat: alice sets the timer from hers, bob sees the notice, a message
# vanishes from both windows on time
chat alice bob@example.org
chat bob alice@example.org
waitfor alice "online" && waitfor bob "online" && ok || bad "both chats start: $(screen alice)"
tm send-keys -t alice "/timer 10s" Enter
waitfor alice "from 30s to 4w" && ok || bad "the chat refuses 10s: $(screen alice | tail -3)"
tm send-keys -t alice "/timer 31s" Enter
waitfor alice "disappearing messages: 31s" && ok || bad "alice's chat sets the timer: $(screen alice | tail -3)"
# the window wraps long lines: compared without spaces, line ends and the list's border
joined() { screen "$1" | tr -d '\n│ '; }
for _ in $(seq 50); do joined bob | grep -q "alice@example.orgsetdisappearingmessagesto31s" && break; sleep 0.1; done
joined bob | grep -q "alice@example.orgsetdisappearingmessagesto31s" && ok || bad "bob's chat shows the change: $(screen bob)"
tm send-keys -t alice "in the chat $chatmark" Enter
waitfor bob "in the chat $chatmark" && ok || bad "bob's chat shows the message: $(screen bob)"
waitfor alice "in the chat $chatmark" && ok || bad "alice's chat shows it: $(screen alice)"
# gone from both windows in 31 s (alice's from sending, bob's from reading it in his window)
for _ in $(seq 600); do
    screen alice | grep -qF "$chatmark" || screen bob | grep -qF "$chatmark" || break
    sleep 0.1
done
screen alice | grep -qF "$chatmark" && bad "still in alice's chat: $(screen alice)" || ok
screen bob | grep -qF "$chatmark" && bad "still in bob's chat: $(screen bob)" || ok
joined bob | grep -q "alice@example.orgsetdisappearingmessagesto31s" && ok || bad "the notice stays: $(screen bob)"
tm send-keys -t alice "/quit" Enter
tm send-keys -t bob "/quit" Enter
for _ in $(seq 50); do [ -s chat-bob.rc ] && [ -s chat-alice.rc ] && break; sleep 0.1; done
[ "$(cat chat-bob.rc chat-alice.rc 2>/dev/null | tr -d '\n')" = 00 ] && ok || bad "the chats stop: $(cat chat-*.err)"

# nothing of it in any file, on either side
scan alice
scan bob
finish
