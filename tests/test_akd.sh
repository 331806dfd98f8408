#!/usr/bin/env bash
# The key directory end to end, against a real missived on loopback: a server
# that shows a deleted account as alive (its tombstone hidden from lookups,
# the account's older entry served with a valid log proof) to a device that
# never looked the account up is refused by the command line (text and -o
# json), the daemon (schema 2) and the chat, and nothing is sent; the honest
# server's answer (the tombstone, proven the newest version) is accepted; a
# server whose VRF key changed is refused.
set -u
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"
M=$(realpath "${1:?usage: test_akd.sh MISSIVE MISSIVED}")
D=$(realpath "${2:?usage: test_akd.sh MISSIVE MISSIVED}")
in_scratch

start_missived || bad "missived started"
register_people alice bob carol dave
sock=$work/dev-bob/bob@example.org/daemon.sock
refusal="device set of carol@example.org it shows is the newest one in its key directory"

expect 0 "carol deletes her account" -- as carol account delete --yes
stop() { kill -TERM "$pid" && wait "$pid"; pid=; }
stop
# the dishonest server: carol's tombstone hidden from lookups (it stays in the log and the tree)
sqlite3 srv/missive.db "UPDATE kt_log SET handle = 'hidden' WHERE idx = (SELECT max(idx) FROM kt_log WHERE handle = 'carol@example.org');" &&
    ok || bad "tombstone hidden"
start_missived || bad "missived restarted"

# refused (exit 3, an answer that does not authenticate); the message stays in history, unsent
expect 3 "bob's send to carol, shown alive" -- as bob send carol@example.org --text "are you there"
grep -qF "$refusal" err.txt && ok || bad "refusal on the command line: $(cat err.txt)"
expect 3 "the same with -o json" -- as bob -o json send carol@example.org --text "are you there"
grep -qF "$refusal" out.txt err.txt && ok || bad "refusal in json: $(cat out.txt err.txt)"
expect 0 "nothing was sent" -- as bob -o json history carol@example.org
[ "$(grep -c '"text":"are you there"' out.txt)" = 2 ] && ! grep -Eq '"status":"(sent|delivered|read)"' out.txt &&
    ok || bad "a message was sent: $(cat out.txt)"
# nothing of carol's refused result is remembered (bob's own result, looked up with it, checks
# out and is taken: docs/transparency.md, "A send to handles that do not check out")
sqlite3 dev-bob/bob@example.org/state.db "SELECT key FROM settings WHERE key LIKE 'kt_%carol%';" >pins.txt 2>/dev/null
[ ! -s pins.txt ] && ok || bad "a refused answer was remembered: $(cat pins.txt)"

# the daemon: the same send over JSON-RPC (schema 2), refused with the same reason
(exec "$M" --data-dir dev-bob daemon >daemon.out 2>daemon.err) &
daemon=$!
for _ in $(seq 50); do [ -S "$sock" ] && break; sleep 0.1; done
daemon_rpc "$sock" --schema 2 '{"jsonrpc":"2.0","id":1,"method":"send","params":{"args":["carol@example.org"],"text":"still there?"}}' >rpc.txt
grep -qF "$refusal" rpc.txt && ok || bad "refusal through the daemon: $(cat rpc.txt)"
daemon_schema_ok 2 rpc.txt && ok || bad "the daemon's answers follow schema 2"
kill -TERM "$daemon" && wait "$daemon"
daemon=

# the chat: a line to carol is not sent, and the reason is shown
chat_in bob dev-bob 200 carol@example.org
waitfor bob "online" || bad "bob's chat: $(screen bob)"
tm send-keys -t bob "hello from the chat" Enter
waitfor bob "newest one in its key directory" && ok || bad "refusal in the chat: $(screen bob)"
tm send-keys -t bob C-c
sleep 0.5
tm kill-server 2>/dev/null

# the honest server: the tombstone is the newest version, proven, and bob is told
stop
sqlite3 srv/missive.db "UPDATE kt_log SET handle = 'carol@example.org' WHERE handle = 'hidden';" &&
    ok || bad "tombstone back"
start_missived || bad "missived restarted"
expect 1 "bob's send to carol, shown deleted" -- as bob send carol@example.org --text "are you there"
! grep -qF "key directory" err.txt && grep -qi "deleted" err.txt && ok ||
    bad "the honest answer: $(cat err.txt)"
sqlite3 dev-bob/bob@example.org/state.db "SELECT count(*) FROM settings WHERE key = 'kt_vrf_key';" >pins.txt 2>/dev/null
[ "$(cat pins.txt)" = 1 ] && ok || bad "the VRF key pinned: $(cat pins.txt)"
expect 0 "bob writes to dave" -- as bob send dave@example.org --text "hello dave"

# a new VRF key: its labels are not the pinned key's
stop
rm srv/vrf.key && ok || bad "vrf.key removed"
start_missived || bad "missived restarted"
expect 3 "bob's send to alice, under another VRF key" -- as bob send alice@example.org --text "hi"
grep -qF "VRF key is not the one this device pinned" err.txt && ok || bad "VRF key: $(cat err.txt)"
finish
