#!/usr/bin/env bash
# Blocking, privacy settings and abuse reports against a real missived on
# loopback, through the command line, the daemon (schema 2 events,
# validated), the chat under tmux and missive-admin: what a blocked handle
# sends is dropped unanswered and counted, nothing goes to it; privacy
# settings off send and show no read receipts or typing notices; a report
# reaches the operator, with message text only when chosen, bounded, and
# can suspend the reported account.
set -u
. "$(cd "$(dirname "$0")" && pwd)/lib.sh"
M=$(realpath "${1:?usage: test_safety.sh MISSIVE MISSIVED MISSIVE-ADMIN}")
D=$(realpath "${2:?usage: test_safety.sh MISSIVE MISSIVED MISSIVE-ADMIN}")
A=$(realpath "${3:?usage: test_safety.sh MISSIVE MISSIVED MISSIVE-ADMIN}")
export MISSIVED_REPORTS_PER_DAY=3
in_scratch

start_missived || bad "missived started"
register_people alice bob carol dave
# status MESSAGE-ID of WHO's message: its status in WHO's history
status_of() { as "$1" -o json history "$2" | python3 -c "import json,sys; print([m['status'] for m in map(json.loads, sys.stdin) if m['message_id']=='$3'][0])"; }
sent_id() { sed -n 's/^sent \([0-9a-f]*\)$/\1/p' out.txt; }

# ---- blocking, on the command line ------------------------------------------------------
expect 0 "a first message, before any block" -- as alice send bob@example.org --text "hello bob"
expect 0 "bob receives it" -- as bob receive
grep -q "alice@example.org: hello bob" out.txt && ok || bad "before the block: $(cat out.txt)"
expect 0 "bob blocks alice" -- as bob block alice@example.org
grep -q "alice@example.org blocked" out.txt && ok || bad "block output: $(cat out.txt)"
expect 0 "blocking again changes nothing" -- as bob block alice@example.org
expect 0 "alice writes to bob" -- as alice send bob@example.org --text "are you there"
id=$(sent_id)
expect 0 "alice sends a typing notice" -- as alice typing bob@example.org
expect 0 "bob receives" -- as bob -o json receive
grep -q "are you there\|typing" out.txt && bad "a blocked sender's message or notice was shown: $(cat out.txt)" || ok
expect 0 "bob's history" -- as bob history alice@example.org
grep -q "are you there" out.txt && bad "a blocked sender's message was stored" || ok
expect 0 "alice receives what came back" -- as alice receive
[ "$(status_of alice bob@example.org "$id")" = sent ] && ok || bad "alice sees her message delivered: $(status_of alice bob@example.org "$id")"
expect 0 "bob lists who he blocked" -- as bob -o json blocked
python3 -c 'import json,sys; r=[json.loads(l) for l in open("out.txt")]; assert r==[{"handle":"alice@example.org","dropped":2}], r' && ok || bad "blocked listing: $(cat out.txt)"
expect 0 "a redelivery is not counted twice" -- as bob receive
expect 0 "bob lists who he blocked, as text" -- as bob blocked
grep -q "^alice@example.org	2 dropped$" out.txt && ok || bad "blocked text: $(cat out.txt)"
expect 1 "bob cannot write to alice" -- as bob send alice@example.org --text "nope"
grep -q "alice@example.org is blocked" err.txt && ok || bad "send refusal: $(cat err.txt)"
grep -q "queued" err.txt && bad "a refused send says it is queued: $(cat err.txt)" || ok
as bob history alice@example.org | grep -q nope && bad "the refused send is in history" || ok
expect 1 "nor send a typing notice" -- as bob typing alice@example.org
expect 0 "bob marks read: no receipt goes to a blocked handle" -- as bob read alice@example.org
# a group invitation and a group message from a blocked member are dropped too
expect 0 "alice makes a group with bob" -- as alice groups create club bob@example.org carol@example.org
expect 0 "alice writes to it" -- as alice send --group club --text "club news"
expect 0 "carol writes to it" -- as carol receive
expect 0 "bob receives" -- as bob -o json receive
grep -q "club" out.txt && bad "a blocked member's invitation reached bob: $(cat out.txt)" || ok
as bob groups | grep -q club && bad "the invitation was kept" || ok
# in a group bob shares with alice (made by carol, accepted), alice's messages are dropped, carol's kept
expect 0 "carol makes a group" -- as carol groups create trio alice@example.org bob@example.org
expect 0 "bob gets the invitation" -- as bob receive
trio=$(as bob groups | grep "^trio	" | cut -f3)
expect 0 "bob accepts it" -- as bob groups accept "$trio"
expect 0 "alice receives it" -- as alice receive
expect 0 "alice accepts it" -- as alice groups accept "$(as alice groups | grep "^trio	" | cut -f3)"
expect 0 "alice writes in the group" -- as alice send --group trio --text "alice in trio"
expect 0 "carol writes in the group" -- as carol send --group trio --text "carol in trio"
expect 0 "bob receives" -- as bob receive
grep -q "carol in trio" out.txt && ok || bad "carol's group message: $(cat out.txt)"
grep -q "alice in trio" out.txt && bad "a blocked member's group message reached bob: $(cat out.txt)" || ok
# and nothing of bob's goes to alice, not even through the group (nor his profile key with it)
expect 0 "bob writes in the group" -- as bob send --group trio --text "bob in trio"
expect 0 "carol receives" -- as carol receive
grep -q "bob in trio" out.txt && ok || bad "bob's group message to carol: $(cat out.txt)"
expect 0 "alice receives" -- as alice receive
grep -q "bob in trio" out.txt && bad "bob's group message reached the handle he blocked: $(cat out.txt)" || ok
# bad input
expect 1 "blocking an unknown handle" -- as bob block nobody@example.org
grep -q "nobody@example.org has no account" err.txt && ok || bad "unknown handle: $(cat err.txt)"
expect 1 "blocking oneself" -- as bob block bob@example.org
expect 1 "blocking a malformed handle" -- as bob block "not a handle"
expect 1 "unblocking one not blocked" -- as bob unblock carol@example.org
grep -q "carol@example.org is not blocked" err.txt && ok || bad "unblock refusal: $(cat err.txt)"
expect 2 "block takes one handle" -- as bob block
expect 0 "bob's list is unchanged" -- as bob -o json blocked
[ "$(wc -l <out.txt)" = 1 ] && ok || bad "the list after bad input: $(cat out.txt)"
# unblock restores everything
expect 0 "bob unblocks alice" -- as bob unblock alice@example.org
expect 0 "alice writes again" -- as alice send bob@example.org --text "second try"
id=$(sent_id)
expect 0 "bob receives it" -- as bob receive
grep -q "alice@example.org: second try" out.txt && ok || bad "after unblocking: $(cat out.txt)"
expect 0 "alice gets the receipt" -- as alice receive
[ "$(status_of alice bob@example.org "$id")" = delivered ] && ok || bad "delivered after unblocking: $(status_of alice bob@example.org "$id")"
expect 0 "bob writes to alice again" -- as bob send alice@example.org --text "welcome back"
expect 0 "bob's list is empty" -- as bob blocked
[ ! -s out.txt ] && ok || bad "empty list: $(cat out.txt)"

# a block that comes from another device of the account (a setting written there) holds what
# the outbox had queued for that handle until it is unblocked
kill -TERM "$pid"
wait "$pid"
pid=
expect 4 "bob writes to carol while the server is away" -- as bob send carol@example.org --text "held back"
sqlite3 dev-bob/bob@example.org/state.db "INSERT INTO settings (key, value) VALUES ('sync:block:carol@example.org', CAST('1' AS BLOB));" && ok || bad "the block written"
start_missived || bad "missived back"
expect 0 "bob connects (the outbox is flushed)" -- as bob receive
expect 0 "carol receives" -- as carol receive
grep -q "held back" out.txt && bad "a queued message went to a blocked handle" || ok
as bob history carol@example.org | grep -q "held back  (queued)" && ok || bad "it stays queued: $(as bob history carol@example.org)"
expect 0 "bob unblocks carol" -- as bob unblock carol@example.org
expect 0 "bob connects again" -- as bob receive
expect 0 "carol receives it now" -- as carol receive
grep -q "held back" out.txt && ok || bad "after the unblock: $(cat out.txt)"

# ---- privacy settings ---------------------------------------------------------------------
expect 0 "settings list" -- as bob -o json settings
[ "$(tr -d ' ' <out.txt | tr '\n' ' ')" = '{"name":"read-receipts","value":"on"} {"name":"typing","value":"on"} ' ] && ok || bad "defaults: $(cat out.txt)"
expect 0 "bob turns read receipts off" -- as bob settings set read-receipts off
expect 0 "bob turns typing notices off" -- as bob settings set typing off
expect 0 "get one" -- as bob settings get typing
[ "$(cat out.txt)" = "typing	off" ] && ok || bad "get: $(cat out.txt)"
expect 1 "an unknown setting" -- as bob settings set colour on
grep -q "no setting colour" err.txt && ok || bad "unknown setting: $(cat err.txt)"
expect 1 "a value neither on nor off" -- as bob settings set typing maybe
expect 2 "settings usage" -- as bob settings set typing
expect 0 "alice writes" -- as alice send bob@example.org --text "read this"
id=$(sent_id)
expect 0 "alice types" -- as alice typing bob@example.org
expect 0 "bob receives" -- as bob receive
grep -q "read this" out.txt && ok || bad "bob gets the message: $(cat out.txt)"
grep -q "typing" out.txt && bad "typing shown with typing off: $(cat out.txt)" || ok
expect 0 "bob reads" -- as bob read alice@example.org
expect 1 "bob's typing notice is refused" -- as bob typing alice@example.org
grep -q "typing notices are off" err.txt && ok || bad "typing refusal: $(cat err.txt)"
expect 0 "alice receives" -- as alice receive
grep -q "bob@example.org is typing" out.txt && bad "a typing notice went with typing off" || ok
[ "$(status_of alice bob@example.org "$id")" = delivered ] && ok || bad "no read receipt with read receipts off: $(status_of alice bob@example.org "$id")"
# bob does not see alice's read receipts either
expect 0 "bob writes" -- as bob send alice@example.org --text "read mine"
bid=$(sent_id)
expect 0 "alice receives and reads" -- as alice receive
expect 0 "alice reads" -- as alice read bob@example.org
expect 0 "bob receives the receipts" -- as bob receive
[ "$(status_of bob alice@example.org "$bid")" = delivered ] && ok || bad "read receipt shown with read receipts off: $(status_of bob alice@example.org "$bid")"
expect 0 "bob turns read receipts on" -- as bob settings set read-receipts on
expect 0 "alice writes" -- as alice send bob@example.org --text "and now"
id=$(sent_id)
expect 0 "bob receives" -- as bob receive
expect 0 "bob reads" -- as bob read alice@example.org
expect 0 "alice receives the receipts" -- as alice receive
[ "$(status_of alice bob@example.org "$id")" = read ] && ok || bad "read receipt with read receipts on: $(status_of alice bob@example.org "$id")"
expect 0 "bob turns typing notices on" -- as bob settings set typing on

# ---- reporting abuse -------------------------------------------------------------------------
metric() { python3 -c 'import sys, urllib.request; print(urllib.request.urlopen(sys.argv[1]).read().decode())' "http://127.0.0.1:$(awk '/^http/{print $2}' srv/missived.ports)/metrics" | awk -v m="missived_$1" '$1 == m {print $2}'; }
expect 0 "dave writes to bob" -- as dave send bob@example.org --text "buy cheap pills now"
expect 0 "bob receives it" -- as bob receive
spam=$(as bob -o json history dave@example.org | python3 -c 'import json,sys; print([m["message_id"] for m in map(json.loads, sys.stdin)][-1])')
alices=$(as bob -o json history alice@example.org | python3 -c 'import json,sys; print([m["message_id"] for m in map(json.loads, sys.stdin) if not m["outgoing"]][-1])')
expect 0 "bob reports dave, without the text" -- as bob report dave@example.org "$spam" --reason "spam"
grep -q "reported dave@example.org to the operator (1 message, no text)" out.txt && ok || bad "report output: $(cat out.txt)"
expect 0 "the operator lists it" -- "$A" --data-dir srv -o json reports
python3 -c 'import json; r=[json.loads(l) for l in open("out.txt")]; assert len(r)==1 and r[0]["reporter"]=="bob@example.org" and r[0]["reported"]=="dave@example.org" and r[0]["reason"]=="spam" and r[0]["state"]=="open" and r[0]["has_text"] is False, r' && ok || bad "reports list: $(cat out.txt)"
first=$(python3 -c 'import json; print(json.loads(open("out.txt").readline())["id"])')
expect 0 "the operator shows it" -- "$A" --data-dir srv reports show "$first"
grep -q "(the reporter sent no message text)" out.txt && ok || bad "no text: $(cat out.txt)"
grep -q "buy cheap" srv/missive.db* && bad "the text reached the server without --include-text" || ok
expect 0 "bob reports dave with the text" -- as bob -o json report dave@example.org "$spam" --include-text --reason "still spam"
grep -q '"text_included": *true' out.txt && ok || bad "report json: $(cat out.txt)"
grep -q "buy cheap" srv/missive.db* && ok || bad "the chosen text is not with the operator"
expect 0 "the operator lists both" -- "$A" --data-dir srv -o json reports
second=$(python3 -c 'import json; print(json.loads(open("out.txt").readline())["id"])')
expect 0 "the operator reads the text" -- "$A" --data-dir srv -o json reports show "$second"
python3 -c 'import json; r=json.load(open("out.txt")); assert "buy cheap pills now" in r["text"] and r["reason"]=="still spam", r' && ok || bad "report text: $(cat out.txt)"
# bad input: nothing is stored
expect 1 "a report of a handle without an account" -- as bob report nobody@example.org
grep -q "no account has that handle" err.txt && ok || bad "unknown handle: $(cat err.txt)"
expect 2 "a message id that is not one" -- as bob report dave@example.org xyz
expect 1 "someone else's message" -- as bob report dave@example.org "$alices" --include-text
grep -q "is not one this handle sent" err.txt && ok || bad "another's message: $(cat err.txt)"
expect 1 "an oversized reason" -- as bob report dave@example.org --reason "$(head -c 1001 /dev/zero | tr '\0' x)"
grep -q "a reason is at most 1000 bytes" err.txt && ok || bad "oversized reason: $(cat err.txt)"
expect 1 "reporting oneself" -- as bob report bob@example.org
expect 2 "report needs a handle" -- as bob report
expect 0 "the operator still has two" -- "$A" --data-dir srv -o json reports
[ "$(wc -l <out.txt)" = 2 ] && ok || bad "after bad input: $(cat out.txt)"
# a flood: [reports] per_day (3 here) from one account a day
expect 0 "a third report" -- as bob report dave@example.org
expect 1 "a fourth is refused" -- as bob report dave@example.org
grep -q "too many reports today" err.txt && ok || bad "flood: $(cat err.txt)"
[ "$(metric reports_total)" = 3 ] && ok || bad "reports_total: $(metric reports_total)"
[ "$(metric reports_refused_total)" = 2 ] && ok || bad "reports_refused_total: $(metric reports_refused_total)"
# the operator decides: suspend from the report, dismiss another
expect 0 "the operator suspends dave from the report" -- "$A" --data-dir srv reports suspend "$second"
grep -q "dave@example.org is suspended" out.txt && ok || bad "suspend from the report: $(cat out.txt)"
expect 3 "dave cannot connect" -- as dave receive
expect 0 "the operator dismisses the first" -- "$A" --data-dir srv reports dismiss "$first"
expect 0 "states recorded" -- "$A" --data-dir srv -o json reports
python3 -c 'import json; r={x["id"]: x["state"] for x in map(json.loads, open("out.txt"))}; assert r['"$second"']=="suspended" and r['"$first"']=="dismissed", r' && ok || bad "states: $(cat out.txt)"
expect 1 "an unknown report" -- "$A" --data-dir srv reports show 999
expect 2 "a report id that is not a number" -- "$A" --data-dir srv reports show x
expect 2 "an unknown reports action" -- "$A" --data-dir srv reports frobnicate 1

# ---- the daemon: methods and schema-2 events ---------------------------------------------
sock=$work/dev-carol/carol@example.org/daemon.sock
(exec "$M" --data-dir dev-carol daemon >daemon.out 2>daemon.err) &
daemon=$!
for _ in $(seq 100); do [ -S "$sock" ] && break; sleep 0.1; done
daemon_rpc "$sock" --schema 2 '{"jsonrpc":"2.0","id":1,"method":"block","params":{"args":["alice@example.org"]}}' \
    '{"jsonrpc":"2.0","id":2,"method":"block","params":{"args":["nobody@example.org"]}}' \
    '{"jsonrpc":"2.0","id":3,"method":"settings","params":{"args":["set","typing","off"]}}' \
    '{"jsonrpc":"2.0","id":4,"method":"settings","params":{"args":["get","colour"]}}' \
    '{"jsonrpc":"2.0","id":5,"method":"report","params":{"args":["dave@example.org"],"reason":"through the daemon"}}' \
    '{"jsonrpc":"2.0","id":6,"method":"report","params":{"args":["nobody@example.org"],"include-text":true}}' | tee -a wire2.jsonl >out.txt
python3 - <<'EOF' && ok || bad "daemon block/settings: $(cat out.txt)"
import json
r = {x["id"]: x for x in map(json.loads, open("out.txt"))}
assert r[1]["result"]["items"] == [{"handle": "alice@example.org", "blocked": True}], r[1]
assert "has no account" in r[2]["error"]["message"], r[2]
assert r[3]["result"]["items"] == [{"name": "typing", "value": "off"}], r[3]
assert "no setting colour" in r[4]["error"]["message"], r[4]
assert r[5]["result"]["items"] == [{"reported": "dave@example.org", "messages": 0, "text_included": False}], r[5]
assert "no account has that handle" in r[6]["error"]["message"], r[6]
EOF
"$A" --data-dir srv reports | grep -q "carol@example.org	dave@example.org	open	through the daemon" && ok || bad "the daemon's report: $("$A" --data-dir srv reports)"
daemon_rpc "$sock" --schema 2 '{"jsonrpc":"2.0","id":1,"method":"settings","params":{"args":["set","typing","on"]}}' >>wire2.jsonl
alice_writes_carol() {
    as alice send carol@example.org --text "carol, blocked" >/dev/null 2>&1
    as alice typing carol@example.org >/dev/null 2>&1
}
events_both "$sock" alice_writes_carol
cat ev1.txt >>wire.jsonl
cat ev2.txt >>wire2.jsonl
python3 - <<'EOF' && ok || bad "the blocked events (schema 2): $(cat ev2.txt)"
import json
ev = [x["params"] for x in map(json.loads, open("ev2.txt")) if x.get("method") == "event"]
got = [(e["from"], e["status"]) for e in ev if e["type"] == "blocked"]
assert got == [("alice@example.org", "message"), ("alice@example.org", "typing")], ev
EOF
grep -q '"blocked"' ev1.txt && bad "a schema-1 subscriber got a blocked event: $(cat ev1.txt)" || ok
grep -q "carol, blocked" ev1.txt ev2.txt && bad "the blocked message was shown" || ok
daemon_rpc "$sock" --schema 2 '{"jsonrpc":"2.0","id":1,"method":"blocked"}' | tee -a wire2.jsonl >out.txt
grep -q '"dropped": *2' out.txt && ok || bad "blocked through the daemon: $(cat out.txt)"
daemon_schema_ok 2 wire2.jsonl && ok || bad "schema 2"
daemon_schema_ok 1 wire.jsonl && ok || bad "schema 1"
kill -TERM "$daemon"
wait "$daemon"
daemon=

# ---- the chat: /block, /unblock, /settings ------------------------------------------------
if command -v tmux >/dev/null; then
    chat_in carol dev-carol 120 alice@example.org
    waitfor carol "online" && ok || bad "carol's chat: $(screen carol)"
    tm send-keys -t carol "/help" Enter
    waitfor carol "Safety: /block and /unblock [HANDLE], /report [REASON]" && ok || bad "/help: $(screen carol)"
    tm send-keys -t carol "/unblock" Enter
    waitfor carol "alice@example.org is unblocked" && ok || bad "/unblock: $(screen carol)"
    as alice send carol@example.org --text "visible again" >/dev/null 2>&1
    waitfor carol "alice@example.org: visible again" && ok || bad "after /unblock: $(screen carol)"
    tm send-keys -t carol "/block alice@example.org" Enter
    waitfor carol "alice@example.org is blocked" && ok || bad "/block: $(screen carol)"
    as alice send carol@example.org --text "hidden now" >/dev/null 2>&1
    tm send-keys -t carol "i cannot write" Enter
    waitfor carol "alice@example.org is blocked; nothing is sent" && ok || bad "send to blocked in chat: $(screen carol)"
    sleep 1
    screen carol | grep -q "hidden now" && bad "a blocked message in the chat" || ok
    tm send-keys -t carol "/block nobody@example.org" Enter
    waitfor carol "nobody@example.org has no account" && ok || bad "/block unknown: $(screen carol)"
    tm send-keys -t carol "/to bob@example.org" Enter
    tm send-keys -t carol "/report rude to me" Enter
    waitfor carol "bob@example.org was reported to the operator (no message text)" && ok || bad "/report: $(screen carol)"
    "$A" --data-dir srv reports | grep -q "carol@example.org	bob@example.org	open	rude to me" && ok || bad "the chat's report: $("$A" --data-dir srv reports)"
    tm send-keys -t carol "/settings read-receipts off" Enter
    waitfor carol "settings: read-receipts off, typing on" && ok || bad "/settings: $(screen carol)"
    tm send-keys -t carol "/settings typing sometimes" Enter
    waitfor carol "sometimes is neither on nor off" && ok || bad "/settings bad value: $(screen carol)"
    tm send-keys -t carol "/quit" Enter
    sleep 0.5
    expect 0 "carol's setting is kept" -- as carol settings get read-receipts
    [ "$(cat out.txt)" = "read-receipts	off" ] && ok || bad "after the chat: $(cat out.txt)"
else
    bad "tmux is not installed (scripts/deps.sh installs it)"
fi

finish
