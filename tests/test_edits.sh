#!/usr/bin/env bash
# Edits and unsends end to end, against a real missived on loopback: the
# author's devices count edits together (a laptop's edit after the phone's is
# edit 2 everywhere), every device keeps the versions ('missive edits', the
# history's JSON), an unsend takes the text and its versions, the edit and
# unsend windows ('missive windows') are kept by the sender; the same through
# the daemon (schema 2, checked) and in the chat (under tmux).
set -u
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"
M=$(realpath "${1:?usage: test_edits.sh MISSIVE MISSIVED}")
D=$(realpath "${2:?usage: test_edits.sh MISSIVE MISSIVED}")
in_scratch

# on WHO COMMAND...: missive as bob, alice (her phone) or laptop (alice's second device)
on() {
    case $1 in
    laptop) shift; "$M" --data-dir dev-alice-laptop --account alice@example.org "$@" ;;
    *) as "$@" ;;
    esac
}

start_missived || bad "missived started"
register_people alice bob carol
# alice's laptop, a second device of hers
expect 0 "link alice's laptop" -- "$M" --data-dir dev-alice-laptop link alice@example.org --server "$server"
laptop=$(sed -n 's/.*this is device \([0-9]*\).*/\1/p' out.txt)
expect 0 "alice's phone hears of it" -- as alice receive
expect 0 "approve the laptop" -- as alice devices approve "$laptop"
expect 0 "the laptop connects" -- on laptop receive

expect 0 "alice writes" -- as alice send bob@example.org --text "lunch at noon?"
id=$(sed -n 's/^sent \([0-9a-f]*\)$/\1/p' out.txt)
expect 0 "bob receives" -- as bob receive
expect 0 "the laptop gets alice's copy" -- on laptop receive
expect 0 "edit 1, from the phone" -- as alice edit "$id" --text "lunch at one?"
expect 0 "the laptop takes the phone's edit" -- on laptop receive
expect 0 "edit 2, from the laptop" -- on laptop edit "$id" --text "lunch at two?"
expect 0 "the phone takes the laptop's edit" -- as alice receive
expect 0 "edit 3, from the phone" -- as alice edit "$id" --text "lunch at half past two?"
expect 0 "bob gets all three" -- as bob receive
grep -q "alice@example.org edited a message: lunch at half past two?" out.txt && ok || bad "edit notices: $(cat out.txt)"
for who in bob alice laptop; do
    [ "$who" = laptop ] && expect 0 "the laptop catches up" -- on laptop receive
    expect 0 "$who's versions" -- on "$who" -o json edits "$id"
    [ "$(field 'r["edit_number"], [(e["edit_number"], e["text"]) for e in r["edits"]]')" = \
        "(3, [(0, 'lunch at noon?'), (1, 'lunch at one?'), (2, 'lunch at two?'), (3, 'lunch at half past two?')])" ] &&
        ok || bad "$who's versions: $(cat out.txt)"
done
expect 0 "bob's history, JSON" -- as bob -o json history alice@example.org
[ "$(field 'r["text"], r["status"], r["edit_number"], len(r["edits"])')" = "('lunch at half past two?', 'edited', 3, 4)" ] &&
    ok || bad "history's edit fields: $(cat out.txt)"
expect 0 "bob's versions, as text" -- as bob edits "$id"
grep -q "#0 (original): lunch at noon?" out.txt && grep -q "#3: lunch at half past two?" out.txt &&
    ok || bad "versions as text: $(cat out.txt)"
expect 1 "bob cannot edit alice's message" -- as bob edit "$id" --text "forged"
expect 2 "edits needs a message id" -- as bob edits nothex
expect 1 "edits of a message that is not here" -- as bob edits 00000000000000000000000000000000

# windows: 24 h unless set; alice shortens hers and her own device refuses
expect 0 "the windows" -- as alice windows
grep -q "^edit *1d$" out.txt && grep -q "^unsend *1d$" out.txt && ok || bad "default windows: $(cat out.txt)"
expect 0 "alice's edit window: 0 s" -- as alice windows edit 0
expect 0 "the edit window, JSON" -- as alice -o json windows edit
[ "$(field 'r["window"], r["seconds"]')" = "('edit', 0)" ] && ok || bad "window JSON: $(cat out.txt)"
expect 1 "an edit after the window" -- as alice edit "$id" --text "too late now"
grep -q "edit refused: too late" err.txt && ok || bad "too late: $(cat err.txt)"
expect 0 "alice's edit window: 2h" -- as alice windows edit 2h
expect 0 "the window is 2h" -- as alice windows edit
grep -q "^edit *2h$" out.txt && ok || bad "2h window: $(cat out.txt)"
expect 2 "a window that is not a duration" -- as alice windows edit soon
expect 2 "a window too long" -- as alice windows unsend 99999d
expect 2 "a window of something else" -- as alice windows reply 1h

# an unsend wins: text and versions go on every device; a later edit is refused
expect 0 "alice unsends" -- as alice unsend "$id"
expect 0 "bob gets the unsend" -- as bob receive
expect 0 "the laptop gets the unsend" -- on laptop receive
for who in bob laptop; do
    expect 0 "$who's versions after the unsend" -- on "$who" -o json edits "$id"
    [ "$(field 'r["status"], r["text"], "edits" in r')" = "('unsent', '', False)" ] && ok ||
        bad "$who after the unsend: $(cat out.txt)"
    expect 0 "$who searches the old words" -- on "$who" history --search "half"
    [ ! -s out.txt ] && ok || bad "$who's search still finds unsent words: $(cat out.txt)"
done
expect 1 "an edit after the unsend" -- on laptop edit "$id" --text "back again"
grep -q "unsent already" err.txt && ok || bad "edit after unsend: $(cat err.txt)"

# conversations: pinned first, archived left out, muted marked; a new message brings an
# archived conversation back unless it is muted
expect 0 "carol writes to bob" -- as carol send bob@example.org --text "hi bob"
expect 0 "bob receives" -- as bob receive
expect 0 "bob's conversations" -- as bob -o json conversations
[ "$(field 'r["conversation"], r["pinned"], r["archived"], r["muted"]' | tr '\n' ' ')" = \
    "('carol@example.org', False, False, False) ('alice@example.org', False, False, False) " ] &&
    ok || bad "conversations, newest first: $(cat out.txt)"
expect 0 "bob pins alice" -- as bob conversations pin alice@example.org
expect 0 "bob archives carol" -- as bob conversations archive carol@example.org
expect 0 "the list" -- as bob conversations
[ "$(cut -d' ' -f1 out.txt | tr '\n' ' ')" = "alice@example.org " ] && grep -q "pinned" out.txt &&
    ok || bad "pinned first, archived left out: $(cat out.txt)"
expect 0 "the list with archived ones" -- as bob -o json conversations list --archived
[ "$(field 'r["conversation"], r["pinned"], r["archived"]' | tr '\n' ' ')" = \
    "('alice@example.org', True, False) ('carol@example.org', False, True) " ] &&
    ok || bad "--archived: $(cat out.txt)"
expect 0 "carol writes again" -- as carol send bob@example.org --text "still there?"
expect 0 "bob receives" -- as bob receive
grep -q "notice: carol@example.org is no longer archived" out.txt && ok || bad "unarchived notice: $(cat out.txt)"
expect 0 "the list" -- as bob -o json conversations
[ "$(field 'r["conversation"], r["archived"]' | tr '\n' ' ')" = \
    "('alice@example.org', False) ('carol@example.org', False) " ] && ok || bad "carol is back: $(cat out.txt)"
expect 0 "bob mutes carol for an hour" -- as bob conversations mute carol@example.org 1h
expect 0 "and archives her" -- as bob conversations archive carol@example.org
expect 0 "carol writes a third time" -- as carol send bob@example.org --text "hello?"
expect 0 "bob receives, muted" -- as bob receive
grep -q "carol@example.org: hello?" out.txt && ! grep -q "no longer archived" out.txt && ok ||
    bad "a muted, archived conversation's message: $(cat out.txt)"
expect 0 "the list" -- as bob -o json conversations list --archived
[ "$(field 'r["conversation"], r["archived"], r["muted"], 3500000 < r.get("muted_until_ms", 0) - __import__("time").time() * 1000 < 3700000' | tail -1)" = \
    "('carol@example.org', True, True, True)" ] && ok || bad "muted for an hour, still archived: $(cat out.txt)"
expect 0 "bob names alice" -- as bob contacts add ally alice@example.org
expect 0 "mute by a contact's name, for good" -- as bob conversations mute ally
expect 0 "the list" -- as bob -o json conversations
[ "$(field 'r["muted_until_ms"]' | head -1)" = 9223372036854775807 ] && ok || bad "muted for good: $(cat out.txt)"
expect 0 "unmute and unpin ally" -- as bob conversations unmute ally
expect 0 "unpin" -- as bob conversations unpin ally
expect 0 "the list" -- as bob -o json conversations
[ "$(field 'r["pinned"], r["muted"]' | tr '\n' ' ')" = "(False, False) " ] && ok || bad "unpinned and unmuted: $(cat out.txt)"
expect 2 "mute for a time that is not one" -- as bob conversations mute ally soon
expect 2 "an unknown change" -- as bob conversations frob ally
expect 2 "pin without a conversation" -- as bob conversations pin
expect 1 "a name that is nobody's" -- as bob conversations pin nobody

# the daemon: the same commands as methods, in schema 2
sock=$work/dev-bob/bob@example.org/daemon.sock
(exec "$M" --data-dir dev-bob daemon >daemon.out 2>daemon.err) &
daemon=$!
for _ in $(seq 50); do [ -S "$sock" ] && break; sleep 0.1; done
expect 0 "alice writes again" -- as alice send bob@example.org --text "coffee?"
id2=$(sed -n 's/^sent \([0-9a-f]*\)$/\1/p' out.txt)
rm -f sub
daemon_rpc "$sock" --schema 2 --wait 4 --ready sub '{"jsonrpc":"2.0","id":1,"method":"subscribe"}' >ev2.txt &
s2=$!
daemon_rpc "$sock" --wait 4 --ready sub1 '{"jsonrpc":"2.0","id":1,"method":"subscribe"}' >ev1.txt &
s1=$!
for _ in $(seq 100); do [ -e sub ] && [ -e sub1 ] && break; sleep 0.1; done
expect 0 "alice edits it" -- as alice edit "$id2" --text "tea?"
expect 0 "bob unmutes carol, through his daemon" -- as bob conversations unmute carol@example.org
expect 0 "carol writes to bob's archived conversation" -- as carol send bob@example.org --text "back?"
wait "$s2" "$s1"
grep -q '"type":"edit".*"status":"edited"' ev2.txt && ok || bad "edit event: $(cat ev2.txt)"
grep -q '"type":"conversation".*"status":"unmuted"' ev2.txt && grep -q '"type":"conversation".*"status":"unarchived"' ev2.txt &&
    ok || bad "conversation events: $(cat ev2.txt)"
grep -q '"conversation","conversation"\|"type":"conversation"' ev1.txt && bad "a schema-1 subscriber got conversation events: $(cat ev1.txt)" || ok
daemon_rpc "$sock" --schema 2 \
    '{"jsonrpc":"2.0","id":6,"method":"conversations","params":{"args":["list"],"archived":true}}' \
    "{\"jsonrpc\":\"2.0\",\"id\":2,\"method\":\"edits\",\"params\":{\"args\":[\"$id2\"]}}" \
    '{"jsonrpc":"2.0","id":3,"method":"windows","params":{"args":["unsend","30m"]}}' \
    '{"jsonrpc":"2.0","id":4,"method":"windows"}' \
    "{\"jsonrpc\":\"2.0\",\"id\":5,\"method\":\"history\",\"params\":{\"args\":[\"alice@example.org\"]}}" >out.txt
cat ev2.txt out.txt >wire2.jsonl
python3 - out.txt <<'EOF' && ok || bad "daemon edits and windows: $(cat out.txt)"
import json, sys
r = {}
for l in open(sys.argv[1]):
    j = json.loads(l)
    if "id" in j: r[j["id"]] = j
e = r[2]["result"]["items"][0]
assert e["edit_number"] == 1 and [v["text"] for v in e["edits"]] == ["coffee?", "tea?"], e
w = {i["window"]: i["seconds"] for i in r[4]["result"]["items"]}
assert w == {"edit": 86400, "unsend": 1800}, w
h = [m for m in r[5]["result"]["items"] if m["text"] == "tea?"]
assert h and h[0]["edit_number"] == 1, r[5]
c = [(i["conversation"], i["archived"]) for i in r[6]["result"]["items"]]
assert c == [("carol@example.org", False), ("alice@example.org", False)], c
EOF
daemon_schema_ok 2 wire2.jsonl && ok || bad "schema 2"
daemon_schema_ok 1 ev1.txt && ok || bad "schema 1 events"
kill -TERM "$daemon"
wait "$daemon"
daemon=

# the chat: "(edited)" on the message, /edits lists its versions, a refused edit says why
command -v tmux >/dev/null || { bad "tmux is not installed (scripts/deps.sh installs it)"; finish; exit; }
expect 0 "bob's chat shows handles" -- as bob contacts remove ally
chat_in alice dev-alice 110 bob@example.org
chat_in bob dev-bob 110 alice@example.org
waitfor alice "online" && waitfor bob "online" && ok || bad "both chats start: $(screen alice)"
tm send-keys -t alice "dinner at eight" Enter
waitfor bob "alice@example.org: dinner at eight" && ok || bad "the message in bob's chat: $(screen bob)"
tm send-keys -t alice "/edit dinner at nine" Enter
waitfor bob "alice@example.org: dinner at nine  (edited)" && ok || bad "edited in bob's chat: $(screen bob)"
tm send-keys -t bob "/edits" Enter
waitfor bob "version 0 (original)" && waitfor bob "dinner at eight" && waitfor bob "version 1, " &&
    ok || bad "/edits in bob's chat: $(screen bob)"
tm send-keys -t alice "/edits" Enter
waitfor alice "version 1, " && ok || bad "/edits in alice's chat: $(screen alice)"
expect 0 "alice's edit window, through her chat" -- as alice windows edit 0
tm send-keys -t alice "/edit dinner at ten" Enter
waitfor alice "not changed: too late" && ok || bad "a refused edit in the chat: $(screen alice)"
screen bob | grep -q "dinner at ten" && bad "a refused edit reached bob: $(screen bob)" || ok
# bob's list: carol pinned and muted first; once archived she is left out, and her message
# (muted) neither brings her back nor is announced
expect 0 "bob pins carol, through his chat" -- as bob conversations pin carol@example.org
expect 0 "and mutes her" -- as bob conversations mute carol@example.org
# the list's first row (the narrow list cuts "~muted" short)
waitfor bob "~mu" && screen bob | sed -n 2p | grep -q "^\^ carol@example.org (4) ~mu" && ok ||
    bad "pinned first, muted: $(screen bob)"
expect 0 "bob archives carol" -- as bob conversations archive carol@example.org
for _ in $(seq 50); do screen bob | grep -q "carol@example.org" || break; sleep 0.1; done
screen bob | grep -q "carol@example.org" && bad "archived, still listed: $(screen bob)" || ok
expect 0 "carol writes" -- as carol send bob@example.org --text "are you muting me?"
sleep 2
screen bob | grep -q "carol" && bad "a muted, archived conversation alerted: $(screen bob)" || ok
tm send-keys -t alice "/quit" Enter
tm send-keys -t bob "/quit" Enter

finish
