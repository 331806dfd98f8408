#!/usr/bin/env bash
# Signed device lists on the command line (docs/transparency.md, "Signed device lists"): the
# directory logs a device for alice with no approval; bob's send leaves it out, says so on
# stderr, and seals nothing to it; `missive verify` says alice's device list is signed; the same
# through bob's daemon (the schema-2 event `devlist`, none in schema 1) and in his chat (a note
# in alice's conversation). Then alice's list does not check out as a whole: carol's message to
# alice and bob goes to bob, and carol is told of alice (WARNING, the daemon's `not_sent`, her
# history, her chat's note for a group's message); it goes to alice once her list checks out
# again.
set -u
. "$(cd "$(dirname "$0")" && pwd)/lib.sh"
M=$(realpath "${1:?usage: test_devlist.sh MISSIVE MISSIVED}")
D=$(realpath "${2:?usage: test_devlist.sh MISSIVE MISSIVED}")
forge="$(cd "$(dirname "$0")" && pwd)/devlist_forge.py"
in_scratch
# version-3 leaves (not the default): a leaf appended to the store below
export MISSIVED_DIRECTORY_LEAF_VERSION=3

start() { start_missived || bad "missived started"; }
# daemon_of WHO: WHO's daemon, its socket in $sock; daemon_stop stops it
daemon_of() {
    sock=$work/dev-$1/$1@example.org/daemon.sock
    (exec "$M" --data-dir "dev-$1" daemon >daemon.out 2>daemon.err) &
    daemon=$!
    for _ in $(seq 50); do [ -S "$sock" ] && break; sleep 0.1; done
}
daemon_stop() {
    kill -TERM "$daemon"
    wait "$daemon"
    daemon=
}
# chat_note WHO OPEN TEXT NOTE: in WHO's chat, OPEN (/to, /group) a conversation, send TEXT there,
# and see NOTE shown; then quit
chat_note() {
    chat "$1"
    waitfor "$1" "$1@example.org" || bad "chat started: $(cat "chat-$1.err")"
    tm send-keys -t "$1" "$2" Enter
    sleep 0.5
    tm send-keys -t "$1" "$3" Enter
    waitfor "$1" "$4" 100 && ok || bad "the chat's note: $(screen "$1")"
    tm send-keys -t "$1" "/quit" Enter
    for _ in $(seq 50); do [ -s "chat-$1.rc" ] && break; sleep 0.1; done
}
stop() { kill -TERM "$pid"; wait "$pid"; pid=; }
start
server=127.0.0.1:$port
export MISSIVE_PASSWORD="correct horse battery"
code() { grep "handle=$1 code=" srv.log | tail -1 | sed 's/.*code=//'; }
for who in alice bob; do
    "$M" --data-dir "dev-$who" register "$who@example.org" --server "$server" >/dev/null 2>&1 &&
        "$M" --data-dir "dev-$who" register "$who@example.org" --code "$(code "$who@example.org")" >/dev/null &&
        ok || bad "register $who"
done
expect 0 "bob writes to alice" -- "$M" --data-dir dev-bob send alice@example.org --text "hello"
expect 0 "bob's view of alice" -- "$M" --data-dir dev-bob verify alice@example.org
grep -qx "device list: signed" out.txt && ok || bad "alice's list: $(cat out.txt)"

# the operator adds a device to alice's account (alice's key, another id) and logs it unapproved
stop
forged=$(python3 "$forge" srv/missive.db unapproved) && ok ||
    bad "the forged entry"
start
# the relay asks for the forged device; bob's lookups leave it out: the send fails, told
expect 1 "bob writes to alice again" -- "$M" --data-dir dev-bob send alice@example.org --text "again"
grep -q "device $forged of alice@example.org has no valid approval from its account's devices" err.txt &&
    ok || bad "the warning: $(cat out.txt err.txt)"
grep -q "or that their account did not approve" err.txt && ok || bad "the refusal: $(cat err.txt)"
n=$(sqlite3 srv/missive.db "SELECT count(*) FROM queue WHERE device_id = $forged;")
[ "$n" = 0 ] && ok || bad "sealed to the forged device: $n"

# ---- bob's daemon: the device left out is a `devlist` event in schema 2, none in schema 1 ----
daemon_of bob
to_alice() {
    daemon_rpc "$sock" --schema 2 '{"jsonrpc":"2.0","id":1,"method":"send","params":{"args":["alice@example.org"],"text":"through the daemon"}}' >rpc.txt
}
events_both "$sock" to_alice
grep '"devlist"' ev2.txt | grep -Eq "\"device_id\": ?$forged\b" &&
    grep -q "device $forged of alice@example.org has no valid approval" ev2.txt && ok ||
    bad "a devlist event in schema 2: $(cat ev2.txt rpc.txt)"
grep -q '"devlist"' ev1.txt && bad "schema 1 got devlist: $(cat ev1.txt)" || ok
cat ev2.txt rpc.txt >wire2.jsonl
daemon_schema_ok 2 wire2.jsonl && ok || bad "schema 2"
daemon_schema_ok 1 ev1.txt && ok || bad "schema 1"
daemon_stop

# ---- bob's chat: a note in alice's conversation ----
chat_note bob "/to alice@example.org" "through the chat" "has no valid approval"
n=$(sqlite3 srv/missive.db "SELECT count(*) FROM queue WHERE device_id = $forged;")
[ "$n" = 0 ] && ok || bad "sealed to the forged device: $n"

# ---- alice's list does not check out as a whole (a chain record no approval needs) ----
"$M" --data-dir dev-carol register carol@example.org --server "$server" >/dev/null 2>&1 &&
    "$M" --data-dir dev-carol register carol@example.org --code "$(code carol@example.org)" >/dev/null &&
    ok || bad "register carol"
stop
python3 "$forge" srv/missive.db whole "$forged" && ok ||
    bad "the set that does not check out"
start
expect 0 "carol writes to alice and bob" -- "$M" --data-dir dev-carol send alice@example.org bob@example.org --text "to you both"
grep -q "WARNING: not sent to alice@example.org: no device of alice@example.org has a valid approval" err.txt &&
    ok || bad "carol is told: $(cat err.txt)"
expect 0 "bob receives" -- "$M" --data-dir dev-bob receive
grep -q "to you both" out.txt && ok || bad "bob got it: $(cat out.txt err.txt)"
expect 0 "carol's history with alice" -- "$M" --data-dir dev-carol history alice@example.org
grep -q "not sent to alice@example.org" out.txt && ok || bad "the notice in history: $(cat out.txt)"

# through carol's daemon: the `not_sent` event in schema 2, none in schema 1
daemon_of carol
to_both() {
    daemon_rpc "$sock" --schema 2 '{"jsonrpc":"2.0","id":1,"method":"send","params":{"args":["alice@example.org","bob@example.org"],"text":"again to you both"}}' >rpc.txt
}
events_both "$sock" to_both
grep '"not_sent"' ev2.txt | grep -q '"handle": *"alice@example.org"' && ok ||
    bad "a not_sent event in schema 2: $(cat ev2.txt rpc.txt)"
grep -q '"not_sent"' ev1.txt && bad "schema 1 got not_sent: $(cat ev1.txt)" || ok
cat ev2.txt rpc.txt >wire2.jsonl
daemon_schema_ok 2 wire2.jsonl && ok || bad "schema 2"
daemon_stop
expect 0 "bob receives" -- "$M" --data-dir dev-bob receive
grep -q "again to you both" out.txt && ok || bad "bob got it: $(cat out.txt err.txt)"

# carol's chat: her group with alice and bob (per-device copies): the note in the group
sqlite3 "dev-carol/carol@example.org/state.db" "INSERT INTO groups (group_id, name, members, updated_ms, accepted) VALUES (X'00112233445566778899aabbccddeeff', 'club', 'alice@example.org' || char(10) || 'bob@example.org' || char(10) || 'carol@example.org' || char(10), 0, 1);" &&
    ok || bad "carol's group"
chat_note carol "/group club" "to the club" "not sent to alice@example.org"
expect 0 "bob receives" -- "$M" --data-dir dev-bob receive
grep -q "to the club" out.txt && ok || bad "bob got the group's message: $(cat out.txt err.txt)"

# her honest set again: carol's next command sends both to alice alone
stop
python3 "$forge" srv/missive.db honest && ok || bad "the honest set again"
start
expect 0 "carol's next command" -- "$M" --data-dir dev-carol receive
grep -q "not sent" err.txt && bad "told again: $(cat err.txt)" || ok
expect 0 "alice receives" -- "$M" --data-dir dev-alice receive
[ "$(grep -c "to you both" out.txt)" = 2 ] && ok || bad "alice got both: $(cat out.txt err.txt)"
expect 0 "bob receives" -- "$M" --data-dir dev-bob receive
grep -q "to you both" out.txt && bad "bob got one again: $(cat out.txt)" || ok
expect 0 "carol's history with alice" -- "$M" --data-dir dev-carol history alice@example.org
grep -q "sent to alice@example.org now" out.txt && ok || bad "the notice it went: $(cat out.txt)"
finish
