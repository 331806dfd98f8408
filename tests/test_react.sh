#!/usr/bin/env bash
# Reactions end to end, against a real missived on loopback: through the
# command line (text and -o json), the daemon (schema 2 events, checked
# against the schema; schema 1 subscribers do not get them) and the chat under
# tmux; and what a dishonest relay or a contact outside the conversation can
# try: an older reaction delivered after a newer one, a reaction to a message
# of a conversation the reactor is not in.
set -u
. "$(cd "$(dirname "$0")" && pwd)/lib.sh"
M=$(realpath "${1:?usage: test_react.sh MISSIVE MISSIVED}")
D=$(realpath "${2:?usage: test_react.sh MISSIVE MISSIVED}")
in_scratch

start_missived || bad "missived started"
register_people alice bob carol dave
A=alice@example.org B=bob@example.org C=carol@example.org
# py EXPR: EXPR over the JSON lines of out.txt (as r), one result a line
py() { python3 -c 'import json,sys
for l in open("out.txt"):
    l = l.strip()
    if l:
        r = json.loads(l)
        print(eval(sys.argv[1]))' "$1"; }
# last_id WHO CONVERSATION: the id of the newest message of the conversation
last_id() { as "$1" -o json history "$2" >out.txt && py 'r["message_id"]' | tail -1; }
# reactions WHO CONVERSATION: the reactions of the newest message, as JSON
reactions() { as "$1" -o json history "$2" >out.txt && py 'json.dumps(r["reactions"], ensure_ascii=False)' | tail -1; }

expect 0 "alice writes" -- as alice send $B --text "hello bob"
as bob receive >/dev/null
id=$(last_id bob $A)
[ "$id" = "$(last_id alice $B)" ] && [ ${#id} = 32 ] && ok || bad "one id on both sides: $id"

# --- the command line ---------------------------------------------------------------------
expect 0 "bob reacts" -- as bob react "$id" "👍"
grep -q "reacted 👍 to $id" out.txt && ok || bad "react output: $(cat out.txt)"
expect 0 "alice receives it" -- as alice receive
grep -q "notice: bob@example.org reacted 👍 to: hello bob" out.txt && ok || bad "the notice: $(cat out.txt)"
expect 0 "alice reacts the same" -- as alice -o json react "$id" "👍"
[ "$(py 'r["message_id"], r["reaction"]')" = "('$id', '👍')" ] && ok || bad "react -o json: $(cat out.txt)"
[ "$(reactions alice $B)" = '[{"emoji": "👍", "count": 2, "from": ["bob@example.org", "alice@example.org"]}]' ] &&
    ok || bad "alice's history: $(cat out.txt)"
as bob receive >/dev/null
[ "$(reactions bob $A)" = '[{"emoji": "👍", "count": 2, "from": ["bob@example.org", "alice@example.org"]}]' ] &&
    ok || bad "bob's history: $(cat out.txt)"
# bob changes his: one per person, the newest
expect 0 "bob changes his reaction" -- as bob react "$id" "❤"
as alice receive >/dev/null
expect 0 "history as text" -- as alice history $B
grep -qx "    👍 1  ❤ 1" out.txt && ok || bad "counts under the message: $(cat out.txt)"
expect 0 "bob takes his back" -- as bob react "$id" --remove
grep -q "reaction to $id taken away" out.txt && ok || bad "remove output: $(cat out.txt)"
expect 0 "alice hears of it" -- as alice receive
grep -q "bob@example.org took back a reaction to: hello bob" out.txt && ok || bad "removal notice: $(cat out.txt)"
[ "$(reactions alice $B)" = '[{"emoji": "👍", "count": 1, "from": ["alice@example.org"]}]' ] && ok || bad "after removal: $(cat out.txt)"
# bad input: refused before anything is sent
for bad_emoji in "two words" "123456789012345678901234567890123" "$(printf 'x\033[2J')" ""; do
    expect 2 "a reaction that is not one emoji: '$bad_emoji'" -- as bob react "$id" "$bad_emoji"
    grep -q "a reaction is one emoji" err.txt && ok || bad "its error: $(cat err.txt)"
done
expect 2 "react without an emoji" -- as bob react "$id"
expect 1 "a message bob does not have" -- as bob react 00112233445566778899aabbccddeeff "👍"
grep -q "is not a message you can react to here" err.txt && ok || bad "unknown id: $(cat err.txt)"
[ "$(reactions alice $B)" = '[{"emoji": "👍", "count": 1, "from": ["alice@example.org"]}]' ] && ok || bad "nothing changed: $(cat out.txt)"

# --- a relay that delivers an older reaction after a newer one ---------------------------
expect 0 "bob reacts 🎉" -- as bob react "$id" "🎉"
sleep 0.05
expect 0 "then 🔥" -- as bob react "$id" "🔥"
kill -TERM "$pid"
wait "$pid"
pid=
sqlite3 srv/missive.db "CREATE TABLE saved AS SELECT * FROM queue; DELETE FROM queue;
INSERT INTO queue (device_id, sender_device, sender_handle, suite, ciphertext, enqueued_ms, expires_ms)
  SELECT device_id, sender_device, sender_handle, suite, ciphertext, enqueued_ms, expires_ms FROM saved ORDER BY id DESC;" &&
    [ "$(sqlite3 srv/missive.db 'SELECT count(*) FROM saved')" = 2 ] && ok || bad "the relay's queue reversed: $(ls srv)"
start_missived || bad "missived back"
as alice receive >/dev/null
[ "$(reactions alice $B)" = '[{"emoji": "👍", "count": 1, "from": ["alice@example.org"]}, {"emoji": "🔥", "count": 1, "from": ["bob@example.org"]}]' ] &&
    ok || bad "the newer reaction stays: $(cat out.txt)"

# --- someone outside the conversation ------------------------------------------------------
# carol learns the id of alice's message to bob and forges a copy of it in a conversation of
# hers with bob, so that her client sends bob a reaction to it
sqlite3 "dev-carol/$C/state.db" "INSERT INTO messages (message_id, conversation, outgoing, sender,
  sender_device, kind, text, sent_at_ms, stored_at_ms, status) VALUES (X'$id', '$B', 0, '$B', 1, 1,
  'copy', 0, 0, 'received');" && ok || bad "carol's forged copy"
expect 0 "carol reacts to it" -- as carol react "$id" "💩"
expect 0 "bob receives" -- as bob receive
grep -q "carol" out.txt && bad "bob was told of carol's reaction: $(cat out.txt)" || ok
[ "$(reactions bob $A)" = '[{"emoji": "👍", "count": 1, "from": ["alice@example.org"]}, {"emoji": "🔥", "count": 1, "from": ["bob@example.org"]}]' ] &&
    ok || bad "carol's reaction is not kept: $(cat out.txt)"

# --- replies ----------------------------------------------------------------------------------
expect 0 "bob answers alice's message" -- as bob send $A --reply-to "$id" --text "answer"
as alice receive >/dev/null
expect 0 "alice's history" -- as alice history $B
grep -A1 -x "  ↪ alice@example.org: hello bob" out.txt | grep -q "bob@example.org: answer" && ok || bad "the quote above the answer: $(cat out.txt)"
as alice -o json history $B >out.txt
[ "$(py 'r["text"], r["reply_to"] == "'"$id"'", r["quote"]' | tail -1)" = "('answer', True, {'from': 'alice@example.org', 'text': 'hello bob'})" ] &&
    ok || bad "reply_to and quote as JSON: $(tail -1 out.txt)"
[ "$(py 'r["reply_to"], r["quote"]' | head -1)" = "(None, None)" ] && ok || bad "a message that answers none: $(head -1 out.txt)"
expect 1 "an answer sent to a conversation the message is not in" -- as bob send $C --reply-to "$id" --text "leak"
grep -q "$id is not a message of this conversation" err.txt && ok || bad "its error: $(cat err.txt)"
expect 1 "an answer to a message bob does not have" -- as bob send $A --reply-to 00112233445566778899aabbccddeeff --text "x"
expect 1 "a --reply-to that is not an id" -- as bob send $A --reply-to "zz" --text "x"
as carol receive >/dev/null
as carol history $B >out.txt
grep -q leak out.txt && bad "a refused answer was sent: $(cat out.txt)" || ok
# carol, with her forged copy of the id, asks bob about it: bob shows nothing of alice's message
expect 0 "carol answers the id of alice's message" -- as carol send $B --reply-to "$id" --text "what did alice say?"
expect 0 "bob receives it" -- as bob receive
as bob history $C >out.txt
grep -q "↪ original not found" out.txt && ! grep -q "hello bob" out.txt && ok || bad "another conversation's message leaked: $(cat out.txt)"
as bob -o json history $C >out.txt
[ "$(py 'r["text"], r["quote"]' | tail -1)" = "('what did alice say?', None)" ] && ok || bad "quote null: $(tail -1 out.txt)"

# --- the daemon: a 'reaction' event in schema 2 only; react and history as methods ---------
sock=$work/dev-bob/$B/daemon.sock
(exec "$M" --data-dir dev-bob daemon >daemon.out 2>daemon.err) &
daemon=$!
for _ in $(seq 100); do [ -S "$sock" ] && break; sleep 0.1; done
write_and_react() {
    expect 0 "alice writes while bob's daemon listens" -- as alice send $B --text "and a message"
    expect 0 "and reacts (her 👍 becomes 😀)" -- as alice react "$id" "😀"
}
events_both "$sock" write_and_react
cp ev2.txt out.txt
[ "$(py 'r.get("params", {}).get("type"), r.get("params", {}).get("from"), r.get("params", {}).get("emoji"), r.get("params", {}).get("message_id") == "'"$id"'"' | grep reaction)" = "('reaction', '$A', '😀', True)" ] &&
    ok || bad "the schema 2 event: $(cat ev2.txt)"
grep -q reaction ev1.txt && bad "a schema 1 subscriber got the reaction: $(cat ev1.txt)" || ok
grep -q '"method":"event"' ev1.txt && ok || bad "the schema 1 subscriber heard nothing at all: $(cat ev1.txt)"
daemon_rpc "$sock" --schema 2 '{"jsonrpc":"2.0","id":1,"method":"react","params":{"args":["'"$id"'","🙂"]}}' \
    '{"jsonrpc":"2.0","id":2,"method":"react","params":{"args":["'"$id"'","no way"]}}' \
    '{"jsonrpc":"2.0","id":3,"method":"history","params":{"args":["'"$A"'"]}}' >out.txt
cat out.txt ev2.txt >wire2.jsonl
[ "$(py 'r.get("id"), r.get("error", {}).get("code")' | tr '\n' ' ')" = "('schema', None) (1, None) (2, -32002) (3, None) " ] &&
    ok || bad "react through the daemon: $(cat out.txt)"
py 'json.dumps(r, ensure_ascii=False)' | grep -qF '"reactions": [{"emoji": "😀", "count": 1, "from": ["alice@example.org"]}, {"emoji": "🙂", "count": 1, "from": ["bob@example.org"]}]' &&
    ok || bad "history through the daemon: $(cat out.txt)"
daemon_schema_ok 2 wire2.jsonl && ok || bad "schema 2"
daemon_schema_ok 1 ev1.txt && ok || bad "schema 1"
kill -TERM "$daemon"
wait "$daemon"
daemon=

# --- the chat: counts under the message, /react on the newest message from the other --------
if command -v tmux >/dev/null; then
    chat bob $A
    waitfor bob "😀 1  🙂 1" && ok || bad "bob's chat shows the counts: $(screen bob)"
    expect 0 "alice reacts with bob's chat open" -- as alice react "$id" "🔥"
    waitfor bob "🙂 1  🔥 1" && ok || bad "the chat follows a reaction: $(screen bob)"
    # on the newest message alice sent
    tm send-keys -t bob "/react 🍕" Enter
    waitfor bob "🍕 1" && ok || bad "/react in the chat: $(screen bob)"
    as alice receive >/dev/null
    [ "$(reactions alice $B)" = '[{"emoji": "🍕", "count": 1, "from": ["bob@example.org"]}]' ] &&
        ok || bad "bob's /react reached alice: $(cat out.txt)"
    tm send-keys -t bob "/unreact" Enter
    for _ in $(seq 30); do screen bob | grep -qF "🍕" || break; sleep 0.1; done
    screen bob | grep -qF "🍕" && bad "/unreact: $(screen bob)" || ok
    screen bob | grep -A1 "↪ alice@example.org: hello bob" | grep -q "me: answer" && ok || bad "the quote in the chat: $(screen bob)"
    tm send-keys -t bob "/reply through the chat" Enter
    waitfor bob "↪ alice@example.org: and a message" && ok || bad "/reply in the chat: $(screen bob)"
    as alice receive >/dev/null
    as alice -o json history $B >out.txt
    [ "$(py 'r["text"], r["quote"]' | tail -1)" = "('through the chat', {'from': 'alice@example.org', 'text': 'and a message'})" ] &&
        ok || bad "bob's /reply reached alice: $(tail -1 out.txt)"
    tm send-keys -t bob "/quit" Enter
else
    bad "tmux is not installed (scripts/deps.sh installs it)"
fi

# --- mentions in a group -----------------------------------------------------------------------
as alice contacts add bobby $B
expect 0 "alice makes a group" -- as alice groups create team $B $C
as bob receive >/dev/null
as carol receive >/dev/null
for who in bob carol; do
    gid=$(as $who groups | grep "^team	" | cut -f3)
    expect 0 "$who accepts the group" -- as $who groups accept "$gid"
done
expect 0 "alice names two members and two others" -- as alice send --group team --text "hi @bobby and @carol@example.org, not @dave or @zed"
mentions='[{"start": 3, "length": 6, "handle": "bob@example.org"}, {"start": 14, "length": 18, "handle": "carol@example.org"}]'
last_of() { as "$1" -o json history --group team >out.txt && py "$2" | tail -1; }
[ "$(last_of alice 'json.dumps(r["mentions"])')" = "$mentions" ] && [ "$(last_of alice 'r["mentioned"]')" = False ] &&
    ok || bad "alice's mentions: $(tail -1 out.txt)"
as bob receive >/dev/null
[ "$(last_of bob 'json.dumps(r["mentions"])')" = "$mentions" ] && [ "$(last_of bob 'r["mentioned"]')" = True ] && ok || bad "bob's mentions: $(tail -1 out.txt)"
# carol's own record of the group, changed on her disk, counts dave in: her client names him,
# and the others, for whom he is no member, ignore that range
sqlite3 "dev-carol/$C/state.db" "UPDATE groups SET members = members || char(10) || '$A' || char(10) || 'dave@example.org' WHERE name = 'team';"
expect 0 "carol names dave, no member" -- as carol send --group team --text "@dave@example.org come in, @bobby"
[ "$(last_of carol 'json.dumps(r["mentions"])')" = '[{"start": 0, "length": 17, "handle": "dave@example.org"}]' ] && ok || bad "carol's client named dave: $(tail -1 out.txt)"
as bob receive >/dev/null
[ "$(last_of bob 'r["text"], r["mentions"], r["mentioned"]')" = "('@dave@example.org come in, @bobby', [], False)" ] && ok || bad "bob ignores the range naming dave: $(tail -1 out.txt)"
# the chat: the list marks the group where carol is named, until she reads it
if command -v tmux >/dev/null; then
    chat carol $B
    for _ in $(seq 100); do screen carol | grep -qF " @)" && break; sleep 0.1; done
    screen carol | grep -qF " @)" && ok || bad "the @ mark: $(screen carol)"
    tm send-keys -t carol "/group team" Enter
    waitfor carol "hi @bobby and @carol@example.org" && ok || bad "the group in carol's chat: $(screen carol)"
    tm capture-pane -e -p -t carol | grep "hi @bobby" | grep -q $'\e\[7m' && ok || bad "the message naming carol is highlighted: $(tm capture-pane -e -p -t carol | grep -a "hi @bobby" | od -c | head)"
    tm send-keys -t carol "/to $B" Enter
    for _ in $(seq 30); do screen carol | grep -qF "#team (" || break; sleep 0.1; done
    screen carol | grep -qF "@)" && bad "the mark stays once read: $(screen carol)" || ok
    tm send-keys -t carol "/quit" Enter
fi

finish
