#!/usr/bin/env bash
# Several handles of one account, against a real missived on loopback: one is
# added with a code sent to it (never with another account's code), a message
# to any of them reaches every device of the account, a reply goes as the
# handle the other person wrote to (or --from), never naming a handle they
# were not given; a removed handle's log entry says it is gone and messages to
# it are refused; the limit of handles; the account's other devices are told
# (receive, the daemon's schema-2 events, the chat).
set -u
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"
M=$(realpath "${1:?usage: test_handles.sh MISSIVE MISSIVED}")
D=$(realpath "${2:?usage: test_handles.sh MISSIVE MISSIVED}")
in_scratch

MISSIVED_ACCOUNTS_REGISTER_BURST=200 start_missived || bad "missived started"
register_people alice bob
register_people dave # knows nobody of them: he only ever writes to alice's phone
code_of() { grep "handle=$1 code=" srv.log | tail -1 | sed 's/.*code=//'; }
wrong_code() { printf '%06d' $(((10#$1 + 1) % 1000000)); }

link_laptop alice

# ---- listing and adding ---------------------------------------------------------------------
expect 0 "alice's handles" -- as alice handles
grep -q "^alice@example.org.*(first)" out.txt && ok || bad "handles: $(cat out.txt err.txt)"
expect 0 "the phone adds a phone number" -- as alice -o json handles add +15550001
grep -q '"status": *"code_sent"' out.txt && ok || bad "handles add -o json: $(cat out.txt err.txt)"
code=$(code_of +15550001)
expect 3 "a wrong code" -- as alice handles verify +15550001 --code "$(wrong_code "$code")"
expect 0 "the code the number got" -- as alice -o json handles verify +15550001 --code "$code"
grep -q '"status": *"added"' out.txt && ok || bad "handles verify -o json: $(cat out.txt err.txt)"
expect 0 "alice's handles -o json" -- as alice -o json handles
python3 -c 'import json,sys
assert json.load(open("out.txt")) == [
    {"handle": "alice@example.org", "first": True, "username": False},
    {"handle": "+15550001", "first": False, "username": False}]' && ok ||
    bad "the list: $(cat out.txt)"
expect 0 "the laptop is told" -- laptop_m receive
grep -q "notice: the handle +15550001 was added to this account by device $phone" out.txt && ok ||
    bad "the laptop's notice: $(cat out.txt err.txt)"
# the new handle's log entries list the account's own devices: the owners' monitors see no stranger
grep -q "WARNING" err.txt && bad "the laptop's monitor alarmed: $(cat err.txt)" || ok
expect 0 "the phone's monitor" -- as alice receive
grep -q "WARNING" err.txt && bad "the phone's monitor alarmed: $(cat err.txt)" || ok

# another account's handle, or a code sent for another account, adds nothing
expect 1 "bob asks for alice's number" -- as bob handles add +15550001
grep -q "that handle is registered" err.txt && ok || bad "bob's refusal: $(cat err.txt)"
expect 1 "alice asks for her own again" -- as alice handles add alice@example.org
grep -q "this account's already" err.txt && ok || bad "alice's refusal: $(cat err.txt)"
expect 0 "bob asks for a new number" -- as bob handles add +15550002
bob_code=$(code_of +15550002)
expect 3 "dave cannot use the code bob's number got" -- as dave handles verify +15550002 --code "$bob_code"
expect 0 "bob can" -- as bob handles verify +15550002 --code "$bob_code"
expect 1 "not a handle" -- as alice handles add "not a handle"
expect 2 "verify needs its code" -- as alice handles verify +15550009

# ---- a message to either handle reaches every device; the reply names only that one ----------
expect 0 "dave writes to alice's number" -- as dave send +15550001 --text "hello number"
expect 0 "alice's phone gets it" -- as alice -o json receive
grep -q '"text": *"hello number"' out.txt && ok || bad "the phone: $(cat out.txt err.txt)"
expect 0 "alice's laptop gets it" -- laptop_m -o json receive
grep -q '"text": *"hello number"' out.txt && ok || bad "the laptop: $(cat out.txt err.txt)"
expect 0 "alice answers, naming no handle of hers" -- as alice send dave@example.org --text "hi dave"
# the laptop learns from the phone's copy which handle dave knows (the copy names the two people)
expect 0 "the laptop takes the phone's answer" -- laptop_m receive
expect 0 "and again from the laptop" -- laptop_m send dave@example.org --text "laptop too"
expect 0 "alice reads dave's message (a receipt goes back)" -- as alice read dave@example.org
expect 0 "dave receives" -- as dave -o json receive --wait 1.5
python3 - <<'PY' && ok || bad "what dave got: $(cat out.txt err.txt)"
import json
msgs = [json.loads(l) for l in open("out.txt") if l.strip()]
texts = {m.get("text"): m for m in msgs if "text" in m}
assert texts["hi dave"]["from"] == "+15550001", texts
assert texts["laptop too"]["from"] == "+15550001", texts
assert not any("notice" in m for m in msgs), msgs
PY
expect 0 "dave's history of the conversation" -- as dave history +15550001
grep -q "hi dave" out.txt && ok || bad "dave's history: $(cat out.txt err.txt)"
grep -rqa "alice@example.org" dev-dave && bad "dave's device learnt alice@example.org: $(grep -rla alice@example.org dev-dave)" || ok

# --from chooses, and it stays for that person; never a handle of another account
expect 0 "alice writes to bob from her number" -- as alice send bob@example.org --from +15550001 --text "from the number"
expect 0 "and again without --from" -- as alice send bob@example.org --text "still the number"
expect 0 "bob receives" -- as bob -o json receive
[ "$(field 'r.get("from")' | sort -u)" = "+15550001" ] && ok || bad "bob's senders: $(cat out.txt err.txt)"
expect 0 "back to her address" -- as alice send bob@example.org --from alice@example.org --text "the address"
expect 0 "bob receives it" -- as bob -o json receive
[ "$(field 'r.get("from")')" = "alice@example.org" ] && ok || bad "bob after the change: $(cat out.txt err.txt)"
expect 1 "another account's handle" -- as alice send bob@example.org --from bob@example.org --text x
grep -q "one of this account's" err.txt && ok || bad "--from bob: $(cat err.txt)"
expect 2 "--from goes to one person" -- as alice send bob@example.org dave@example.org --from +15550001 --text x

# ---- removing -------------------------------------------------------------------------------
expect 2 "remove without --yes" -- as alice handles remove alice@example.org
grep -q -- "--yes" err.txt && ok || bad "remove without --yes: $(cat err.txt)"
expect 1 "not alice's" -- as alice handles remove bob@example.org --yes
grep -q "not this account's" err.txt && ok || bad "removing bob's: $(cat err.txt)"
expect 0 "alice removes her first handle" -- as alice -o json handles remove alice@example.org --yes
grep -q '"status": *"removed"' out.txt && ok || bad "remove -o json: $(cat out.txt err.txt)"
expect 0 "her handles" -- as alice handles
[ "$(cat out.txt)" = "+15550001	(first)" ] && ok || bad "after the removal: $(cat out.txt)"
expect 1 "never the last" -- as alice handles remove +15550001 --yes
grep -q "last handle" err.txt && ok || bad "the last: $(cat err.txt)"
expect 0 "the laptop (which went by the removed one) is told, and goes on" -- laptop_m receive
grep -q "the handle alice@example.org was removed from this account" out.txt && ok ||
    bad "the laptop's notice: $(cat out.txt err.txt)"
# no alarm of the monitor (the copies of alice's messages written under the removed handle
# before the laptop read them name a device that handle no longer lists: they are said, naming
# nobody, as messages that could not be checked)
grep -v "could not check, naming nobody" err.txt | grep -q "WARNING" &&
    bad "the laptop's monitor after the removal: $(cat err.txt)" || ok
expect 0 "the laptop lists the handles" -- laptop_m handles
grep -q "^+15550001" out.txt && ok || bad "the laptop after the removal: $(cat out.txt err.txt)"
expect 1 "a message to the removed handle is refused" -- as bob send alice@example.org --text "are you there"
grep -q "alice@example.org deleted their account (its transparency log entry says so)" err.txt && ok ||
    bad "to the removed handle: $(cat err.txt)"
expect 0 "bob writes to the number" -- as bob send +15550001 --text "to the number"
expect 0 "alice's laptop gets it" -- laptop_m -o json receive
grep -q '"text": *"to the number"' out.txt && ok || bad "the laptop after the removal: $(cat out.txt err.txt)"

# ---- at most 10 handles ---------------------------------------------------------------------
for i in 3 4 5 6 7 8 9 10 11; do
    n=+155500$((10 + i))
    as alice handles add "$n" >/dev/null 2>&1 && as alice handles verify "$n" --code "$(code_of "$n")" >/dev/null 2>&1 ||
        bad "handle $n"
done
expect 0 "ten handles" -- as alice -o json handles
[ "$(python3 -c 'import json; print(len(json.load(open("out.txt"))))')" = 10 ] && ok || bad "ten: $(cat out.txt)"
expect 1 "an eleventh is refused" -- as alice handles add +15550099
grep -q "at most 10 handles" err.txt && ok || bad "the limit: $(cat err.txt)"
grep -q "handle=+15550099 code=" srv.log && bad "a code went out past the limit" || ok
for i in 4 5 6 7 8 9 10 11; do as alice handles remove "+155500$((10 + i))" --yes >/dev/null 2>&1 || bad "remove $i"; done
expect 0 "the laptop takes the notices" -- laptop_m receive

# ---- the daemon: the method, and the events (schema 2 only) -----------------------------------
sock=$work/dev-alice2/alice@example.org/daemon.sock
(exec "$M" --data-dir dev-alice2 daemon >daemon.out 2>daemon.err) &
daemon=$!
for _ in $(seq 50); do [ -S "$sock" ] && break; sleep 0.1; done
add_on_phone() {
    as alice handles add +15550050 >/dev/null 2>&1
    as alice handles verify +15550050 --code "$(code_of +15550050)" >/dev/null 2>&1 || bad "the phone adds +15550050"
    as alice handles remove +15550013 --yes >/dev/null 2>&1 || bad "the phone removes +15550013"
    sleep 1
}
events_both "$sock" add_on_phone
grep -q '"type": *"handle_added".*"handle": *"+15550050"\|"handle": *"+15550050".*"type": *"handle_added"' ev2.txt && ok ||
    bad "schema-2 handle_added: $(cat ev2.txt)"
grep -q '"handle_removed"' ev2.txt && ok || bad "schema-2 handle_removed: $(cat ev2.txt)"
grep -q '"handle_' ev1.txt && bad "a schema-1 subscriber got a handle event: $(cat ev1.txt)" || ok
daemon_rpc "$sock" --schema 2 '{"jsonrpc":"2.0","id":1,"method":"handles","params":{"args":["list"]}}' >rpc.txt
grep -q '+15550050' rpc.txt && ok || bad "the daemon's handles method: $(cat rpc.txt)"
cat ev2.txt rpc.txt >wire2.jsonl
daemon_schema_ok 2 wire2.jsonl && ok || bad "schema 2"
daemon_schema_ok 1 ev1.txt && ok || bad "schema 1 events"
kill -TERM "$daemon" && wait "$daemon"
daemon=

# ---- the chat shows what another device did ----------------------------------------------------
chat_in laptop dev-alice2 120 bob@example.org
waitfor laptop "online" && ok || bad "the laptop's chat starts: $(screen laptop)"
as alice handles remove +15550050 --yes >/dev/null 2>&1 || bad "the phone removes +15550050"
waitfor laptop "the handle +15550050 was removed from this account" 100 && ok ||
    bad "the notice in the chat: $(screen laptop)"

finish
