#!/usr/bin/env bash
# JSON-RPC batches on the account owner's socket (docs/daemon.md, "Batches"), the
# protocol missive web's page speaks over its WebSocket: answered as one array in
# order, bounded at 32 requests, empty or oversized ones refused whole, invalid
# elements answered each with its own error while the others run.
set -u
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"
M=$(realpath "${1:?usage: test_web.sh MISSIVE MISSIVED}")
D=$(realpath "${2:?usage: test_web.sh MISSIVE MISSIVED}")
in_scratch
daemon=
trap 'tm kill-server 2>/dev/null; for p in $daemon $pid; do kill -TERM "$p" 2>/dev/null && wait "$p"; done; kill_left "$work"; rm -rf "$work"' EXIT

start_missived || bad "missived started"
register_people alice bob
sock=dev-bob/bob@example.org/daemon.sock
(exec "$M" --data-dir dev-bob daemon >daemon.out 2>daemon.err) &
daemon=$!
for _ in $(seq 50); do [ -S "$sock" ] && break; sleep 0.1; done
[ -S "$sock" ] && ok || bad "the daemon's socket: $(cat daemon.err)"
rpc() { daemon_rpc "$sock" --schema 2 "$@" | tee -a wire.jsonl | grep -v '"id": *"schema"' | grep -v '"id":"schema"'; }
# req ID METHOD [PARAMS]: one request's JSON
req() { printf '{"jsonrpc":"2.0","id":%s,"method":"%s","params":%s}' "$1" "$2" "${3:-{\}}"; }
# batch N: N requests adding contacts bN-1 ... bN-N, as one array
batch() {
    local i out="["
    for i in $(seq "$1"); do
        out+=$(req "$i" contacts "{\"args\":[\"add\",\"b$1-$i\",\"alice@example.org\"]}")
        [ "$i" -lt "$1" ] && out+=","
    done
    printf '%s]' "$out"
}

# 32 requests: one line, an array of 32 responses in their order, each one run
rpc "$(batch 32)" >out.txt
[ "$(wc -l <out.txt)" = 1 ] && [ "$(field '[x["id"] for x in r]')" = "$(python3 -c 'print(list(range(1, 33)))')" ] &&
    [ "$(field 'sum(1 for x in r if "result" in x)')" = 32 ] && ok || bad "a batch of 32: $(cut -c1-300 out.txt)"
expect 0 "contacts after the batch of 32" -- as bob contacts
[ "$(grep -c '^b32-' out.txt)" = 32 ] && ok || bad "the 32 ran: $(cat out.txt)"

# 33: one error (not an array), and nothing of it runs
rpc "$(batch 33)" >out.txt
[ "$(wc -l <out.txt)" = 1 ] && [ "$(field 'r["error"]["code"], r["id"]')" = "(-32600, None)" ] &&
    grep -q "more than 32" out.txt && ok || bad "a batch of 33: $(cut -c1-300 out.txt)"
expect 0 "contacts after the batch of 33" -- as bob contacts
! grep -q '^b33-' out.txt && ok || bad "none of the 33 ran: $(cat out.txt)"

# empty: one error
rpc '[]' >out.txt
[ "$(field 'r["error"]["code"], r["id"]')" = "(-32600, None)" ] && ok || bad "an empty batch: $(cat out.txt)"

# mixed: each bad element its own error, in place; the good ones run
rpc "[$(req '"a"' contacts '{"args":["add","mixed","alice@example.org"]}'),1,{\"jsonrpc\":\"2.0\"},\"x\",$(req '"n"' nothing),{\"jsonrpc\":\"2.0\",\"method\":\"status\"},$(req '"p"' contacts '{"colour":"red"}'),$(req '"s"' status)]" >out.txt
[ "$(field '[(x["id"], x["error"]["code"] if "error" in x else "ok") for x in r]')" = \
    "[('a', 'ok'), (None, -32600), (None, -32600), (None, -32600), ('n', -32601), ('p', -32602), ('s', 'ok')]" ] &&
    ok || bad "a mixed batch: $(cat out.txt)"
[ "$(field 'r[-1]["result"]["account"]')" = bob@example.org ] && ok || bad "status in the batch: $(cat out.txt)"
expect 0 "contacts after the mixed batch" -- as bob contacts
grep -q '^mixed' out.txt && ok || bad "the good element of the mixed batch ran: $(cat out.txt)"

# notifications only: no answer at all; a batch that is not JSON: one -32700
rpc '[{"jsonrpc":"2.0","method":"status"}]' >out.txt
[ ! -s out.txt ] && ok || bad "a batch of notifications is not answered: $(cat out.txt)"
rpc '[{"jsonrpc":"2.0","id":1,"method":"status"' >out.txt
[ "$(field 'r["error"]["code"]')" = -32700 ] && ok || bad "a broken batch: $(cat out.txt)"

# schema in a batch holds for what follows it; everything written follows schema 2
daemon_rpc "$sock" "[$(req 1 status),$(req 2 schema '{"version":2}'),$(req 3 status)]" >out.txt
[ "$(field '[x["result"]["schema"] for x in r]')" = "[1, 2, 2]" ] && ok || bad "schema within a batch: $(cat out.txt)"
daemon_schema_ok 2 wire.jsonl && ok || bad "the batches' answers follow schema 2"

# ---- the sending device keeps its own copy of each file it sends ----
head -c 5000 /dev/urandom >f.bin
printf '\x89PNG\r\n\x1a\nnot really' >dot.png
adir=dev-alice/alice@example.org/attachments
bdir=dev-bob/bob@example.org/attachments
last_id() { as alice -o json history bob@example.org | tail -1 | python3 -c 'import json,sys; print(json.load(sys.stdin)["message_id"])'; }
expect 0 "alice sends two files" -- as alice send bob@example.org --text "two files" --file "$work/f.bin" --file "$work/dot.png"
id=$(last_id)
expect 0 "alice's history" -- as alice -o json history bob@example.org
[ "$(tail -1 out.txt | python3 -c 'import json,sys; m=json.load(sys.stdin); print(m["text"].split(chr(10))[0], [(a["index"], a["name"], a["size"], a["mime"]) for a in m["attachments"]])')" = \
    "two files [(0, 'f.bin', 5000, 'application/octet-stream'), (1, 'dot.png', 18, 'image/png')]" ] &&
    ok || bad "the sender's history lists its files: $(tail -1 out.txt)"
cmp -s f.bin "$adir/$id-f.bin" && cmp -s dot.png "$adir/$id-dot.png" && [ "$(stat -c %a "$adir/$id-f.bin")" = 600 ] &&
    ok || bad "the sender's copies: $(ls -l "$adir")"
expect 0 "bob receives them" -- as bob receive --wait 3
cmp -s f.bin "$bdir/$id-f.bin" && ok || bad "bob's copy: $(ls "$bdir" 2>&1)"
# an edit changes the words; the files stay listed, on both sides
expect 0 "alice edits it" -- as alice edit "$id" --text "two files, edited"
files_of() { python3 -c 'import json,sys
for l in sys.stdin:
    m = json.loads(l)
    if m["message_id"] == sys.argv[1]: print(m["text"].split(chr(10))[0], [a["name"] for a in m["attachments"]])' "$id"; }
[ "$(as alice -o json history bob@example.org | files_of)" = "two files, edited ['f.bin', 'dot.png']" ] &&
    ok || bad "the sender's files after an edit: $(as alice -o json history bob@example.org | tail -1)"
expect 0 "bob receives the edit" -- as bob receive --wait 3
[ "$(as bob -o json history alice@example.org | files_of)" = "two files, edited ['f.bin', 'dot.png']" ] &&
    ok || bad "the receiver's files after an edit: $(as bob -o json history alice@example.org | tail -1)"
# an unsend takes the copies away, the sender's and the receiver's
expect 0 "alice unsends it" -- as alice unsend "$id"
[ -z "$(ls "$adir" | grep "^$id-")" ] && ok || bad "the sender's copies after the unsend: $(ls "$adir")"
expect 0 "alice's history after the unsend" -- as alice -o json history bob@example.org
[ "$(tail -1 out.txt | python3 -c 'import json,sys; m=json.load(sys.stdin); print(m["status"], m.get("attachments"))')" = "unsent []" ] &&
    ok || bad "an unsent message lists no files: $(tail -1 out.txt)"
expect 0 "bob receives the unsend" -- as bob receive --wait 3
[ -z "$(ls "$bdir" | grep "^$id-")" ] && ok || bad "the receiver's copies after the unsend: $(ls "$bdir")"
# the disappearing timer takes them too
expect 0 "a 30 s timer" -- as alice timer bob@example.org 30s
expect 0 "a file that disappears" -- as alice send bob@example.org --text "soon gone" --file "$work/f.bin"
id=$(last_id)
[ -f "$adir/$id-f.bin" ] && ok || bad "the copy is there: $(ls "$adir")"
sleep 31
expect 0 "alice's history after the timer" -- as alice -o json history bob@example.org
! grep -q "$id" out.txt && [ ! -e "$adir/$id-f.bin" ] && ok || bad "the timer deleted the message and its copy: $(ls "$adir")"
expect 0 "the timer off" -- as alice timer bob@example.org off

# the chat shows the sender's own copy as the receiver's shows theirs
chat alice bob@example.org
waitfor alice "online" && ok || bad "alice's chat starts: $(screen alice)"
tm send-keys -t alice "/file $work/dot.png" Enter
waitfor alice "(18 bytes)]" 100 && screen alice | grep -q "dev-alice/alice@example.org/attachments/" &&
    ok || bad "the sender's chat shows its copy: $(screen alice)"
id=$(last_id)
cmp -s dot.png "$adir/$id-dot.png" && ok || bad "the chat's send kept a copy: $(ls "$adir")"
tm send-keys -t alice "/quit" Enter
finish
