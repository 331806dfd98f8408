#!/usr/bin/env bash
# A handle whose account was deleted and registered again is a new account to
# everyone who knew the old one, against a real missived on loopback: the CLI
# (send and receive), the daemon's schema-2 event and the chat each say so once;
# the old sessions and the verified mark go and the safety number changes.
set -u
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"
M=$(realpath "${1:?usage: test_life2.sh MISSIVE MISSIVED}")
D=$(realpath "${2:?usage: test_life2.sh MISSIVE MISSIVED}")
in_scratch
trap 'tm kill-server 2>/dev/null; for p in $daemon $pid; do kill -TERM "$p" 2>/dev/null && wait "$p"; done; rm -rf "$work"' EXIT

MISSIVED_ACCOUNTS_REGISTER_BURST=40 start_missived || bad "missived started"
register_people alice bob carol dave erin
for who in bob carol dave erin; do
    expect 0 "$who writes to alice" -- as "$who" send alice@example.org --text "hello from $who"
done
expect 0 "alice receives" -- as alice receive --wait 1
number=$(as bob -o json verify alice@example.org | python3 -c 'import json,sys; print(json.load(sys.stdin)["safety_number"])')
expect 0 "bob verifies alice" -- as bob verify alice@example.org "$number"
expect 0 "bob's mark" -- as bob -o json verify alice@example.org
grep -q '"state": *"verified"' out.txt && ok || bad "bob verified alice: $(cat out.txt err.txt)"

# alice deletes her account and registers her handle again, as a new account
expect 0 "alice deletes her account" -- as alice account delete --yes
expect 0 "the handle registers again" -- "$M" --data-dir dev-alice register alice@example.org --server "$server"
code=$(grep "handle=alice@example.org code=" srv.log | tail -1 | sed 's/.*code=//')
expect 0 "with its code" -- "$M" --data-dir dev-alice register alice@example.org --code "$code"

# the CLI: bob's send says so once, his verified mark is gone, the safety number changed
expect 0 "bob writes to the new account" -- as bob send alice@example.org --text "is that you?"
grep -q "alice@example.org is a new account: the account you knew was deleted" err.txt && ok ||
    bad "bob's send says alice is a new account: $(cat out.txt err.txt)"
expect 0 "bob writes again" -- as bob send alice@example.org --text "again"
grep -q "is a new account" err.txt && bad "said twice: $(cat err.txt)" || ok
expect 0 "bob's mark after" -- as bob -o json verify alice@example.org
grep -q '"state": *"not verified"' out.txt && ok || bad "the verified mark is cleared: $(cat out.txt err.txt)"
grep -q "$number" out.txt && bad "the safety number did not change: $(cat out.txt)" || ok
expect 0 "the new alice reads bob" -- as alice receive --wait 1
grep -q "is that you?" out.txt && ok || bad "the new account gets bob's message: $(cat out.txt err.txt)"

# receive: dave hears from the new account first
expect 0 "the new alice writes to dave" -- as alice send dave@example.org --text "new me"
expect 0 "dave receives" -- as dave receive --wait 1
grep -q "new me" out.txt && ok || bad "dave gets the message: $(cat out.txt err.txt)"
grep -q "alice@example.org is a new account" err.txt && ok || bad "dave's receive says so: $(cat err.txt)"

# the daemon: carol's; the schema-2 subscriber gets account_new, the schema-1 one does not
sock=$work/dev-carol/carol@example.org/daemon.sock
(exec "$M" --data-dir dev-carol daemon >daemon.out 2>daemon.err) &
daemon=$!
for _ in $(seq 50); do [ -S "$sock" ] && break; sleep 0.1; done
send_through() {
    daemon_rpc "$sock" --schema 2 '{"jsonrpc":"2.0","id":1,"method":"send","params":{"args":["alice@example.org"],"text":"through the daemon"}}' >rpc.txt
}
events_both "$sock" send_through
grep -q '"type": *"account_new".*"handle": *"alice@example.org"' ev2.txt && grep -q "is a new account" ev2.txt &&
    ok || bad "schema-2 account_new: $(cat ev2.txt rpc.txt)"
grep -q '"account_new"' ev1.txt && bad "a schema-1 subscriber got account_new: $(cat ev1.txt)" || ok
grep -q '"error"' rpc.txt && bad "the daemon's send: $(cat rpc.txt)" || ok
cat ev2.txt rpc.txt >wire2.jsonl
daemon_schema_ok 2 wire2.jsonl && ok || bad "schema 2"
daemon_schema_ok 1 ev1.txt && ok || bad "schema 1 events"
kill -TERM "$daemon" && wait "$daemon"
daemon=

# the chat: erin writes to alice in the chat, and is told there
command -v tmux >/dev/null || { bad "tmux is not installed (scripts/deps.sh installs it)"; finish; exit; }
chat_in erin dev-erin 160 alice@example.org
waitfor erin "online" && ok || bad "erin's chat starts: $(screen erin)"
tm send-keys -t erin "are you new?" Enter
waitfor erin "alice@example.org is a new account" 100 && ok || bad "the chat says so: $(screen erin)"
tm send-keys -t erin "/quit" Enter
finish
