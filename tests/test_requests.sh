#!/usr/bin/env bash
# Message requests against a real missived on loopback, through the command
# line, the daemon (schema 2 events, validated) and the chat under tmux: a
# stranger's first message is held as a request and nothing goes back (no
# delivery or read receipt, no typing notice) until it is accepted; delete
# and block; contacts, group members and people written to first are no
# strangers.
set -u
. "$(cd "$(dirname "$0")" && pwd)/lib.sh"
M=$(realpath "${1:?usage: test_requests.sh MISSIVE MISSIVED}")
D=$(realpath "${2:?usage: test_requests.sh MISSIVE MISSIVED}")
export MISSIVED_ACCOUNTS_REGISTER_BURST=20 # eight people from one address
in_scratch

start_missived || bad "missived started"
register_people alice bob carol dave erin frank gina hana
B=bob@example.org
# strangers to one another: each but dave is no contact of bob's, nor bob theirs
for who in alice carol erin frank gina hana; do
    as bob contacts remove "$who@example.org" >/dev/null || bad "bob forgets $who"
    as "$who" contacts remove "$B" >/dev/null || bad "$who forgets bob"
done
status_of() { as "$1" -o json history "$2" | python3 -c "import json,sys; print([m['status'] for m in map(json.loads, sys.stdin) if m['message_id']=='$3'][0])"; }
sent_id() { sed -n 's/^sent \([0-9a-f]*\)$/\1/p' out.txt; }

# ---- a stranger's first message: a request, answered in no way ---------------------------
expect 0 "alice, a stranger, writes to bob" -- as alice send $B --text "hi bob"
id=$(sent_id)
expect 0 "alice sends a typing notice" -- as alice typing $B
expect 0 "bob receives it" -- as bob receive
grep -q "\[request\] alice@example.org: hi bob" out.txt && ok || bad "shown as a request: $(cat out.txt)"
expect 0 "bob's history, as JSON" -- as bob -o json history alice@example.org
python3 -c 'import json; r=[json.loads(l) for l in open("out.txt")]; assert [m["request"] for m in r]==[True], r' && ok || bad "request in history: $(cat out.txt)"
expect 0 "bob reads it" -- as bob read alice@example.org
expect 1 "bob cannot send a typing notice to a request" -- as bob typing alice@example.org
grep -q "not accepted" err.txt && ok || bad "typing refusal: $(cat err.txt)"
expect 0 "alice receives what came back" -- as alice receive
[ "$(status_of alice $B "$id")" = sent ] && ok || bad "no receipt went back: $(status_of alice $B "$id")"
expect 0 "a second message" -- as alice send $B --text "still there?"
expect 0 "bob receives it" -- as bob receive
grep -q "\[request\] alice@example.org: still there?" out.txt && ok || bad "still a request: $(cat out.txt)"
expect 0 "bob lists requests" -- as bob -o json requests
python3 -c 'import json; r=[json.loads(l) for l in open("out.txt")]; assert [(x["handle"],x["count"],x["first_text"],x["last_text"]) for x in r]==[("alice@example.org",2,"hi bob","still there?")], r' && ok || bad "requests: $(cat out.txt)"
expect 0 "as text" -- as bob requests
grep -q "^alice@example.org	2 messages	hi bob … still there?$" out.txt && ok || bad "requests text: $(cat out.txt)"
expect 0 "alice receives what came back" -- as alice receive
[ "$(status_of alice $B "$id")" = sent ] && ok || bad "no receipt before accepting: $(status_of alice $B "$id")"
expect 1 "no request from dave" -- as bob requests accept dave@example.org
grep -q "dave@example.org has sent no message request" err.txt && ok || bad "accept refusal: $(cat err.txt)"

# ---- accepting: the receipts held back go ------------------------------------------------
expect 0 "bob accepts" -- as bob requests accept alice@example.org
grep -q "alice@example.org: request accepted" out.txt && ok || bad "accept output: $(cat out.txt)"
expect 0 "alice receives the receipts" -- as alice receive
[ "$(status_of alice $B "$id")" = read ] && ok || bad "read after accepting: $(status_of alice $B "$id")"
expect 0 "bob's history" -- as bob -o json history alice@example.org
python3 -c 'import json; r=[json.loads(l) for l in open("out.txt")]; assert [m["request"] for m in r]==[False,False], r' && ok || bad "no request after accepting: $(cat out.txt)"
expect 0 "no request left" -- as bob requests
[ -s out.txt ] && bad "requests after accepting: $(cat out.txt)" || ok
expect 0 "a normal conversation now" -- as alice send $B --text "thanks"
id=$(sent_id)
expect 0 "bob receives" -- as bob receive
grep -q "request" out.txt && bad "a request after accepting: $(cat out.txt)" || ok
expect 0 "bob can type to her" -- as bob typing alice@example.org
expect 0 "alice sees it delivered" -- as alice receive
[ "$(status_of alice $B "$id")" = delivered ] && ok || bad "delivered: $(status_of alice $B "$id")"

# ---- delete, then block -------------------------------------------------------------------
printf 'catalogue of watches\n' > catalogue.txt
expect 0 "carol, a stranger, writes" -- as carol send $B --text "buy cheap watches" --file "$PWD/catalogue.txt"
expect 0 "bob receives" -- as bob receive
[ -n "$(grep -l "catalogue of watches" dev-bob/bob@example.org/attachments/* 2>/dev/null)" ] && ok || bad "the request's file was not saved"
expect 0 "bob deletes the request" -- as bob requests delete carol@example.org
[ -z "$(grep -l "catalogue of watches" dev-bob/bob@example.org/attachments/* 2>/dev/null)" ] && ok || bad "the request's file stays after its deletion"
expect 0 "her messages are gone" -- as bob history carol@example.org
[ -s out.txt ] && bad "history after delete: $(cat out.txt)" || ok
expect 0 "and from the search index" -- as bob history --search watches
[ -s out.txt ] && bad "search after delete: $(cat out.txt)" || ok
expect 0 "carol writes again" -- as carol send $B --text "watches again"
expect 0 "bob receives" -- as bob receive
grep -q "\[request\] carol@example.org: watches again" out.txt && ok || bad "a request again: $(cat out.txt)"
expect 0 "bob blocks from the request" -- as bob -o json requests block carol@example.org
expect 0 "carol is blocked" -- as bob blocked
grep -q "^carol@example.org	" out.txt && ok || bad "blocked: $(cat out.txt)"
expect 0 "her messages are gone" -- as bob history carol@example.org
[ -s out.txt ] && bad "history after block: $(cat out.txt)" || ok
expect 0 "no request left" -- as bob requests
[ -s out.txt ] && bad "requests after block: $(cat out.txt)" || ok

# ---- no strangers: a contact, a group member, someone written to first ---------------------
expect 0 "dave, a contact, writes first" -- as dave send $B --text "hello from dave"
id=$(sent_id)
expect 0 "bob receives" -- as bob receive
grep -q "request" out.txt && bad "a contact's message is a request: $(cat out.txt)" || ok
expect 0 "dave sees it delivered" -- as dave receive
[ "$(status_of dave $B "$id")" = delivered ] && ok || bad "contact delivered: $(status_of dave $B "$id")"
expect 0 "bob makes a group with erin" -- as bob groups create club erin@example.org
expect 0 "erin receives it" -- as erin receive
expect 0 "erin writes to bob alone" -- as erin send $B --text "from the club"
id=$(sent_id)
expect 0 "bob receives" -- as bob receive
grep -q "request" out.txt && bad "a group member's message is a request: $(cat out.txt)" || ok
expect 0 "erin sees it delivered" -- as erin receive
[ "$(status_of erin $B "$id")" = delivered ] && ok || bad "member delivered: $(status_of erin $B "$id")"
expect 0 "bob writes to frank first" -- as bob send frank@example.org --text "hello frank"
expect 0 "frank receives" -- as frank receive
expect 0 "frank answers" -- as frank send $B --text "hello bob"
id=$(sent_id)
expect 0 "bob receives" -- as bob receive
grep -q "request" out.txt && bad "an answer is a request: $(cat out.txt)" || ok
expect 0 "frank sees it delivered" -- as frank receive
[ "$(status_of frank $B "$id")" = delivered ] && ok || bad "answer delivered: $(status_of frank $B "$id")"
# writing to a stranger, or adding them as a contact, accepts their request
expect 0 "gina, a stranger, writes" -- as gina send $B --text "it is gina"
id=$(sent_id)
expect 0 "bob receives" -- as bob receive
grep -q "\[request\] gina@example.org" out.txt && ok || bad "gina's request: $(cat out.txt)"
expect 0 "bob adds gina as a contact" -- as bob contacts add gina gina@example.org
expect 0 "gina receives" -- as gina receive
[ "$(status_of gina $B "$id")" = delivered ] && ok || bad "contact add accepts: $(status_of gina $B "$id")"
as bob contacts remove gina >/dev/null
as bob sync unset sync:request:gina@example.org >/dev/null 2>&1 || true
expect 0 "gina writes again, a stranger again" -- as gina send $B --text "gina again"
id=$(sent_id)
expect 0 "bob receives" -- as bob receive
grep -q "\[request\] gina@example.org: gina again" out.txt && ok || bad "gina's second request: $(cat out.txt)"
expect 0 "bob answers her" -- as bob send gina@example.org --text "hi gina"
expect 0 "gina receives" -- as gina receive
[ "$(status_of gina $B "$id")" = delivered ] && ok || bad "writing accepts: $(status_of gina $B "$id")"
as bob requests | grep -q gina && bad "gina still a request" || ok

# ---- the daemon: the requests method, the schema-2 'request' event ---------------------------
# dave is no contact of bob's any more, and bob never wrote to him: a stranger now
as bob contacts remove dave@example.org >/dev/null || bad "bob forgets dave"
sock=$work/dev-bob/bob@example.org/daemon.sock
(exec "$M" --data-dir dev-bob daemon >daemon.out 2>daemon.err) &
daemon=$!
for _ in $(seq 100); do [ -S "$sock" ] && break; sleep 0.1; done
dave_writes() { as dave send $B --text "dave, a stranger" >/dev/null 2>&1; }
events_both "$sock" dave_writes
python3 - <<'PY' && ok || bad "the request event (schema 2): $(cat ev2.txt)"
import json
ev = [x["params"] for x in map(json.loads, open("ev2.txt")) if x.get("method") == "event"]
msgs = [e["message"] for e in ev if e["type"] == "message"]
assert [(m["from"], m["text"], m["request"]) for m in msgs] == [("dave@example.org", "dave, a stranger", True)], ev
req = [e for e in ev if e["type"] == "request"]
assert [(e["from"], e["conversation"], e["message_id"]) for e in req] == [("dave@example.org", "dave@example.org", msgs[0]["message_id"])], ev
PY
grep -q '"request"' ev1.txt && bad "a schema-1 subscriber got a request event or field: $(cat ev1.txt)" || ok
grep -q "dave, a stranger" ev1.txt && ok || bad "schema 1 gets the message: $(cat ev1.txt)"
daemon_rpc "$sock" --schema 2 '{"jsonrpc":"2.0","id":1,"method":"requests"}' \
    '{"jsonrpc":"2.0","id":2,"method":"requests","params":{"args":["accept","nobody@example.org"]}}' \
    '{"jsonrpc":"2.0","id":3,"method":"requests","params":{"args":["accept","dave@example.org"]}}' \
    '{"jsonrpc":"2.0","id":4,"method":"requests"}' >out.txt
python3 - <<'PY' && ok || bad "requests through the daemon: $(cat out.txt)"
import json
r = {x["id"]: x for x in map(json.loads, open("out.txt"))}
assert [(i["handle"], i["count"]) for i in r[1]["result"]["items"]] == [("dave@example.org", 1)], r[1]
assert "has sent no message request" in r[2]["error"]["message"], r[2]
assert r[3]["result"]["items"] == [{"handle": "dave@example.org", "request": "accept"}], r[3]
assert r[4]["result"]["items"] == [], r[4]
PY
cat ev2.txt out.txt >wire2.jsonl
daemon_schema_ok 2 wire2.jsonl && ok || bad "schema 2"
daemon_schema_ok 1 ev1.txt && ok || bad "schema 1"
kill -TERM "$daemon"
wait "$daemon"
daemon=
expect 0 "dave sees his message delivered once accepted" -- as dave receive
id=$(python3 -c 'import json; print([x["params"]["message"]["message_id"] for x in map(json.loads, open("ev2.txt")) if x.get("method") == "event" and x["params"]["type"] == "message"][0])')
[ "$(status_of dave $B "$id")" = delivered ] && ok || bad "dave delivered: $(status_of dave $B "$id")"


# ---- the chat: the requests section, /accept --------------------------------------------------
if command -v tmux >/dev/null; then
    expect 0 "hana, a stranger, writes" -- as hana send $B --text "hana here"
    id=$(sent_id)
    expect 0 "bob receives" -- as bob receive
    chat bob alice@example.org
    waitfor bob "online" && ok || bad "bob's chat: $(screen bob)"
    # the section's title, then hana under it, after the accepted conversations
    screen bob | cut -c1-28 | grep -A1 "^requests" | grep -q "hana@example.org" && ok || bad "the requests section: $(screen bob)"
    screen bob | cut -c1-28 | grep -n "alice@example.org\|requests" | head -1 | grep -q alice && ok || bad "requests after the others: $(screen bob)"
    tm send-keys -t bob "/to hana@example.org" Enter
    waitfor bob "(request: /accept or /delete)" && ok || bad "the request's title: $(screen bob | head -2)"
    tm send-keys -t bob "/accept" Enter
    waitfor bob "hana@example.org: request accepted" && ok || bad "/accept: $(screen bob)"
    screen bob | grep -q "^requests" && bad "the section stays: $(screen bob)" || ok
    tm send-keys -t bob "/quit" Enter
    sleep 1
    expect 0 "hana receives" -- as hana receive
    [ "$(status_of hana $B "$id")" = read ] && ok || bad "hana's message read once accepted in the chat: $(status_of hana $B "$id")"
else
    bad "tmux is not installed (scripts/deps.sh installs it)"
fi

finish
