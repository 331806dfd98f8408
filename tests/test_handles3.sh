#!/usr/bin/env bash
# Usernames against a real missived on loopback: one is set without a code, a message to it
# reaches every device of the account, which is told; a change takes it at most once per
# interval, and the old one no longer reaches the account and is held from everyone until the
# hold ends; lookups of usernames that nobody has run out; names out of the grammar are refused
# and change nothing; the daemon's method and events and the chat's command.
set -u
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"
M=$(realpath "${1:?usage: test_handles3.sh MISSIVE MISSIVED}")
D=$(realpath "${2:?usage: test_handles3.sh MISSIVE MISSIVED}")
in_scratch

MISSIVED_ACCOUNTS_REGISTER_BURST=200 MISSIVED_DIRECTORY_USERNAME_INTERVAL_S=4 \
    MISSIVED_DIRECTORY_USERNAME_HOLD_S=8 MISSIVED_DIRECTORY_UNKNOWN_LOOKUP_RATE=0.0001 \
    MISSIVED_DIRECTORY_UNKNOWN_LOOKUP_BURST=4 start_missived || bad "missived started"
register_people alice bob carol dave
metric() { python3 -c 'import sys, urllib.request; print(urllib.request.urlopen(sys.argv[1]).read().decode())' "http://127.0.0.1:$(awk '/^http/{print $2}' srv/missived.ports)/metrics" | awk -v m="missived_$1" '$1 == m {print $2}'; }

link_laptop alice

# ---- names out of the grammar: refused before anything is asked -------------------------------
for name in al.42 1alice.42 alice.4 alice.1234567890 alice42 alice.4x al_ice.42 alice..42 \
    alice@example.org +15550001 "alice .42" abcdefghijklmnopqrstuvwxy.42 ""; do
    expect 2 "not a username: '$name'" -- as alice username set "$name"
done
grep -q "2 to 9 digits, as alice.42" err.txt && ok || bad "the grammar's words: $(cat err.txt)"
expect 2 "set needs a name" -- as alice username set
expect 2 "no such verb" -- as alice username take alice.42
expect 0 "no username yet" -- as alice -o json username
python3 -c 'import json; assert json.load(open("out.txt")) == {"username": None}' && ok ||
    bad "username -o json: $(cat out.txt)"
expect 1 "nothing to release" -- as alice username remove
grep -q "has no username" err.txt && ok || bad "the refusal: $(cat err.txt)"
expect 1 "a username is no handle to verify" -- as alice handles add alice.42
grep -q "needs no code" err.txt && ok || bad "handles add alice.42: $(cat err.txt)"

# ---- set: no code; found by whoever knows it; every device reaches it and is told --------------
expect 0 "alice takes Alice.42" -- as alice -o json username set Alice.42
python3 -c 'import json; assert json.load(open("out.txt")) == {"status": "set", "handle": "alice.42"}' &&
    ok || bad "username set -o json: $(cat out.txt)"
set_at=$(date +%s)
expect 1 "a change at once is refused" -- as alice username set alice.43
grep -q "at most once every 4 s" err.txt && ok || bad "the interval's refusal: $(cat err.txt)"
expect 0 "alice's username" -- as alice username
[ "$(cat out.txt)" = alice.42 ] && ok || bad "still alice.42 after the refusal: $(cat out.txt)"
expect 0 "listed among the handles" -- as alice -o json handles
python3 -c 'import json
assert json.load(open("out.txt")) == [
    {"handle": "alice@example.org", "first": True, "username": False},
    {"handle": "alice.42", "first": False, "username": True}]' && ok || bad "handles: $(cat out.txt)"
expect 0 "the laptop is told" -- laptop_m receive --wait 1
grep -q "notice: the username alice.42 was added to this account by device $phone" out.txt && ok ||
    bad "the laptop's notice: $(cat out.txt err.txt)"
grep -q "WARNING" err.txt && bad "the laptop's monitor alarmed: $(cat err.txt)" || ok
expect 0 "the laptop lists it" -- laptop_m username
[ "$(cat out.txt)" = alice.42 ] && ok || bad "the laptop's username: $(cat out.txt)"
expect 1 "bob cannot take it" -- as bob username set alice.42
grep -q "another account's" err.txt && ok || bad "bob's refusal: $(cat err.txt)"
expect 0 "bob writes to alice.42" -- as bob send alice.42 --text "hello username"
expect 0 "alice's phone gets it" -- as alice -o json receive --wait 1
grep -q '"text": *"hello username"' out.txt && ok || bad "the phone: $(cat out.txt err.txt)"
grep -q "WARNING" err.txt && bad "the phone's monitor alarmed: $(cat err.txt)" || ok
expect 0 "alice's laptop gets it" -- laptop_m -o json receive --wait 1
grep -q '"text": *"hello username"' out.txt && ok || bad "the laptop: $(cat out.txt err.txt)"
expect 0 "alice answers bob" -- as alice send bob@example.org --text "hi bob"
expect 0 "bob gets it from alice.42, not from her address" -- as bob -o json receive --wait 1.5
grep -q '"from": *"alice.42"' out.txt && ok || bad "what bob got: $(cat out.txt err.txt)"
grep -q 'alice@example.org' out.txt && bad "bob learnt alice's address: $(cat out.txt)" || ok

# ---- a change within the interval is refused; after it, the old one is released and held -------
while [ $(($(date +%s) - set_at)) -le 4 ]; do sleep 1; done
expect 0 "alice changes to alice.43" -- as alice username set alice.43
released=$(date +%s)
expect 0 "the laptop is told of both" -- laptop_m receive --wait 1
grep -q "the username alice.43 was added" out.txt && grep -q "the username alice.42 was removed" out.txt &&
    ok || bad "the laptop's notices: $(cat out.txt err.txt)"
expect 1 "a message to alice.42 reaches nobody" -- as bob send alice.42 --text "to the old one"
expect 0 "bob writes to alice.43" -- as bob send alice.43 --text "to the new one"
expect 0 "alice gets that one only" -- as alice -o json receive --wait 1
grep -q '"text": *"to the new one"' out.txt && ok || bad "the new one: $(cat out.txt err.txt)"
grep -q '"text": *"to the old one"' out.txt && bad "the old one reached alice" || ok
expect 1 "carol cannot take alice.42 while it is held" -- as carol username set alice.42
grep -q "released recently and is held" err.txt && ok || bad "the hold: $(cat err.txt)"
while [ $(($(date +%s) - released)) -le 8 ]; do sleep 1; done
expect 0 "after the hold, carol can" -- as carol username set alice.42
[ "$(metric usernames_set_total)" = 3 ] && ok || bad "usernames_set_total $(metric usernames_set_total)"
[ "$(metric usernames_released_total)" = 1 ] && ok || bad "usernames_released_total"

# ---- guessing names runs dry; people one knows are still found ---------------------------------
for i in 1 2 3 4; do
    expect 1 "dave guesses zed.1$i" -- as dave send "zed.1$i" --text "anyone?"
done
expect 1 "the fifth guess is refused" -- as dave send zed.15 --text "anyone?"
grep -q "too many lookups of usernames that no account has" err.txt && ok ||
    bad "the guessing limit: $(cat err.txt)"
[ "$(metric unknown_lookups_refused_total)" -ge 1 ] && ok || bad "unknown_lookups_refused_total"
expect 0 "dave still reaches alice.43" -- as dave send alice.43 --text "from dave"

# ---- the daemon: the method and the events (schema 2) ------------------------------------------
expect 0 "the laptop takes the notices" -- laptop_m receive --wait 0.5
sock=$work/dev-alice2/alice@example.org/daemon.sock
(exec "$M" --data-dir dev-alice2 daemon >daemon.out 2>daemon.err) &
daemon=$!
for _ in $(seq 50); do [ -S "$sock" ] && break; sleep 0.1; done
change_on_phone() {
    sleep 4 # the interval since the last change
    as alice username set alice.44 >/dev/null 2>&1 || bad "the phone changes to alice.44"
    sleep 1
}
events_both "$sock" change_on_phone
grep -q '"type": *"handle_added".*"handle": *"alice.44"\|"handle": *"alice.44".*"type": *"handle_added"' ev2.txt &&
    ok || bad "schema-2 handle_added: $(cat ev2.txt)"
grep -q '"handle_removed"' ev2.txt && ok || bad "schema-2 handle_removed: $(cat ev2.txt)"
daemon_rpc "$sock" --schema 2 '{"jsonrpc":"2.0","id":1,"method":"username","params":{"output":"json"}}' >rpc.txt
grep -q '"username": *"alice.44"' rpc.txt && ok || bad "the daemon's username method: $(cat rpc.txt)"
cat ev2.txt rpc.txt >wire2.jsonl
daemon_schema_ok 2 wire2.jsonl && ok || bad "schema 2"
kill -TERM "$daemon" && wait "$daemon"
daemon=

# ---- the chat ----------------------------------------------------------------------------------
chat_in laptop dev-alice2 120 bob@example.org
waitfor laptop "online" && ok || bad "the laptop's chat starts: $(screen laptop)"
tm send-keys -t laptop "/username" Enter
waitfor laptop "username: alice.44" && ok || bad "/username: $(screen laptop)"
tm send-keys -t laptop "/username set no" Enter
waitfor laptop "did not change" && ok || bad "/username set no: $(screen laptop)"

# ---- release ------------------------------------------------------------------------------------
expect 0 "alice releases hers" -- as alice -o json username remove
python3 -c 'import json; assert json.load(open("out.txt")) == {"status": "removed"}' && ok ||
    bad "username remove -o json: $(cat out.txt)"
expect 0 "no username now" -- as alice username
[ "$(cat out.txt)" = "(no username)" ] && ok || bad "after remove: $(cat out.txt)"
waitfor laptop "the username alice.44 was removed from this account" 100 && ok ||
    bad "the notice in the chat: $(screen laptop)"

finish
