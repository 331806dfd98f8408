#!/usr/bin/env bash
# Invite links against a real missived on loopback: an admin's link lets
# whoever holds it ask to join; with approval off an admin's device adds them
# (two admins adding at once end with the same group), with approval on the
# request waits until an admin approves or denies it; a reset or switched-off
# link, a wrong secret and a blocked handle change nothing and name nobody; a
# member who is no admin makes no link. Then the daemon (schema-2
# 'join_request' events, none for schema 1) and the chat under tmux.
set -u
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"
M=$(realpath "${1:?usage: test_invites.sh MISSIVE MISSIVED}")
D=$(realpath "${2:?usage: test_invites.sh MISSIVE MISSIVED}")
if ! command -v tmux >/dev/null; then
    echo "tmux is not installed (scripts/deps.sh installs it)" >&2
    exit 1
fi
export MISSIVED_ACCOUNTS_REGISTER_BURST=20 # nine people from one address
in_scratch

start_missived || bad "missived started"
register_people alice bob carol dave erin frank gina harry ivan
A=alice@example.org B=bob@example.org C=carol@example.org E=dave@example.org
R=erin@example.org F=frank@example.org G=gina@example.org H=harry@example.org I=ivan@example.org

# refused: how many join requests alice's device refused so far
refused() { as alice -o json groups requests club >out.txt && field 'r["refused"]'; }
# members WHO: WHO's members of club
members() { as "$1" groups | grep "^club	" | cut -f2; }

expect 0 "alice creates club" -- as alice groups create club $B $C
club=$(as alice groups | grep "^club	" | cut -f3)
for who in bob carol; do
    expect 0 "$who learns of club" -- as $who receive
    expect 0 "$who accepts" -- as $who groups accept "$club"
done

# a member who is no admin makes no link
expect 3 "bob, no admin, makes no link" -- as bob groups invite club
grep -q "you are not an admin of club" err.txt && ok || bad "bob's refusal: $(cat err.txt)"
expect 1 "no link for a group one is not in" -- as dave groups invite club

# approval off, two admins: both devices add dave at once; every member ends with him
expect 0 "alice promotes bob" -- as alice groups promote club $B
expect 0 "bob hears of it" -- as bob receive
expect 0 "alice makes the link" -- as alice groups invite club
link=$(cat out.txt)
echo "$link" | grep -Eq "^missive:join\?g=${club#group:}&s=[A-Za-z0-9_-]{43}&a=alice@example.org,bob@example.org$" &&
    ok || bad "the link: $link"
expect 0 "the link as JSON, the same" -- as alice -o json groups invite club
[ "$(field 'r["uri"]')" = "$link" ] && ok || bad "JSON link: $(cat out.txt)"
expect 0 "bob's device learns the link" -- as bob receive
expect 0 "dave asks to join" -- as dave groups join "$link"
grep -q "^request sent" out.txt && ok || bad "dave is told: $(cat out.txt)"
expect 0 "alice's device adds dave" -- as alice receive
grep -q "notice: dave@example.org joined the group club by its link" out.txt && ok || bad "alice: $(cat out.txt)"
expect 0 "bob's device adds him too" -- as bob receive
expect 0 "alice settles" -- as alice receive
expect 0 "bob settles" -- as bob receive
for who in carol dave; do expect 0 "$who hears" -- as $who receive; done
for who in alice bob carol dave; do
    [ "$(members $who)" = "$A,$B,$C,$E" ] && ok || bad "$who's members: $(as $who groups)"
done
as dave groups | grep -q "^club	.*invited" && bad "dave's club still an invitation" || ok
expect 0 "dave posts" -- as dave send --group club --text "hello from dave"
for who in alice bob carol; do
    expect 0 "$who gets dave's post" -- as $who receive
    grep -q "hello from dave" out.txt && ok || bad "$who: dave's post: $(cat out.txt)"
done
expect 1 "dave asks again, in already" -- as dave groups join "$link"

# approval on: the request waits; approved, erin joins; denied, frank does not
expect 0 "approval on" -- as alice groups invite club --approval on
[ "$(cat out.txt)" = "$link" ] && ok || bad "the same link: $(cat out.txt)"
expect 0 "bob's device learns it" -- as bob receive
expect 0 "erin asks" -- as erin groups join "$link"
expect 0 "frank asks" -- as frank groups join "$link"
expect 0 "alice sees the requests" -- as alice receive
grep -q "notice: erin@example.org asks to join the group club" out.txt && ok || bad "erin's request: $(cat out.txt)"
grep -q "notice: frank@example.org asks to join the group club" out.txt && ok || bad "frank's request: $(cat out.txt)"
expect 0 "bob's device keeps them too" -- as bob receive
expect 0 "alice lists them" -- as alice groups requests club
grep -qx "$R" out.txt && grep -qx "$F" out.txt && ok || bad "requests: $(cat out.txt)"
expect 0 "as JSON" -- as alice -o json groups requests club
grep -q "\"pending\": *\[\"$R\", *\"$F\"\]" out.txt && ok || bad "JSON requests: $(cat out.txt)"
[ "$(members alice)" = "$A,$B,$C,$E" ] && ok || bad "nobody added yet: $(members alice)"
expect 3 "carol, no admin, approves nobody" -- as carol groups approve club $R
expect 1 "no approval of one who did not ask" -- as alice groups approve club $G
grep -q "no request of $G" err.txt && ok || bad "not asked: $(cat err.txt)"
expect 0 "alice approves erin" -- as alice groups approve club $R
expect 0 "alice denies frank" -- as alice groups deny club $F
expect 1 "denied once only" -- as alice groups deny club $F
expect 0 "erin hears" -- as erin receive
[ "$(members erin)" = "$A,$B,$C,$E,$R" ] && ok || bad "erin joined: $(as erin groups)"
expect 0 "frank hears nothing" -- as frank receive
[ -z "$(cat out.txt)" ] && [ -z "$(as frank groups)" ] && ok || bad "frank got something: $(cat out.txt)"
expect 0 "bob hears of erin" -- as bob receive
# erin, added, waits no longer on bob's device; a denial is alice's device's alone
expect 0 "bob's list" -- as bob groups requests club
grep -q "$R" out.txt && bad "bob's stale request: $(cat out.txt)" || ok
grep -qx "$F" out.txt && ok || bad "frank still waits at bob's: $(cat out.txt)"
[ "$(members alice)" = "$A,$B,$C,$E,$R" ] && ok || bad "alice's members: $(members alice)"

# a reset: the old link is refused and changes nothing; the new one works
expect 0 "approval off again, a new secret" -- as alice groups invite club --approval off --reset
new=$(cat out.txt)
[ "$new" != "$link" ] && ok || bad "a new link: $new"
expect 0 "bob's device learns it" -- as bob receive
before=$(refused)
expect 0 "gina asks with the old link" -- as gina groups join "$link"
expect 0 "alice refuses" -- as alice receive
grep -q "gina" out.txt && bad "the refusal names gina: $(cat out.txt)" || ok
[ "$(refused)" = $((before + 1)) ] && ok || bad "refused counted: $(refused) after $before"
[ "$(members alice)" = "$A,$B,$C,$E,$R" ] && ok || bad "gina not added: $(members alice)"
# a wrong secret: the link with another secret
wrong=$(echo "$new" | sed -E 's/&s=[A-Za-z0-9_-]{43}/\&s=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA/')
expect 0 "gina asks with a wrong secret" -- as gina groups join "$wrong"
expect 0 "alice refuses" -- as alice receive
[ "$(refused)" = $((before + 2)) ] && ok || bad "refused counted: $(refused)"
[ "$(members alice)" = "$A,$B,$C,$E,$R" ] && ok || bad "gina not added: $(members alice)"
expect 0 "bob's device refuses too" -- as bob receive
expect 0 "gina hears nothing" -- as gina receive
[ -z "$(as gina groups)" ] && ok || bad "gina's groups: $(as gina groups)"
# a blocked handle with the right link: dropped, as blocked
expect 0 "alice blocks harry" -- as alice block $H
expect 0 "bob blocks harry" -- as bob block $H
expect 0 "harry asks" -- as harry groups join "$new"
for who in alice bob; do expect 0 "$who drops it" -- as $who receive; done
[ "$(members alice)" = "$A,$B,$C,$E,$R" ] && ok || bad "harry not added: $(members alice)"
# the new link: gina joins
expect 0 "gina asks with the new link" -- as gina groups join "$new"
expect 0 "alice adds her" -- as alice receive
expect 0 "bob too" -- as bob receive
expect 0 "alice settles" -- as alice receive
expect 0 "gina hears" -- as gina receive
[ "$(members gina)" = "$A,$B,$C,$E,$R,$G" ] && ok || bad "gina joined: $(as gina groups)"

# links off: even the latest is refused
expect 0 "links off" -- as alice groups invite club --off
grep -q "invite links of club are off" out.txt && ok || bad "off: $(cat out.txt)"
expect 0 "bob's device learns it" -- as bob receive
expect 0 "harry, unblocked, asks" -- as alice unblock $H
expect 0 "harry asks" -- as harry groups join "$new"
expect 0 "alice refuses" -- as alice receive
[ "$(members alice)" = "$A,$B,$C,$E,$R,$G" ] && ok || bad "links off: $(members alice)"

# what is no link
for bad_link in "missive:join?g=${club#group:}" "https://example.org/join" \
    "missive:join?g=${club#group:}&s=short&a=$A" "$new&x=1" "$new&g=${club#group:}" \
    "missive:join?s=${new#*&s=}" "${new%%&a=*}&a=no-at-sign" "${new%%&a=*}&a=a%4@x" \
    "${new%%&a=*}&a=a%00b@x" "${new%%&a=*}&a=" "${new%%&a=*}&a=$(printf 'a@x,%.0s' $(seq 9))b@x"; do
    expect 1 "no link: $bad_link" -- as harry groups join "$bad_link"
    grep -q "not an invite link" err.txt && ok || bad "says so: $(cat err.txt)"
done
expect 2 "--approval takes on or off" -- as alice groups invite club --approval maybe
expect 2 "--reset and --off together" -- as alice groups invite club --reset --off


# the daemon: the link by a method; a request waits ('join_request' pending), an old link is
# refused naming nobody; schema 1 subscribers hear of neither
sock=$work/dev-alice/$A/daemon.sock
(exec "$M" --data-dir dev-alice daemon >daemon.out 2>daemon.err) &
daemon=$!
for _ in $(seq 100); do [ -S "$sock" ] && break; sleep 0.1; done
daemon_rpc "$sock" --schema 2 \
    '{"jsonrpc":"2.0","id":2,"method":"groups","params":{"args":["invite","club"],"approval":"off","reset":true,"output":"json"}}' >rpc.txt
daemon_schema_ok 2 rpc.txt && ok || bad "schema 2 answers: $(cat rpc.txt)"
link_rpc=$(python3 -c 'import json,sys
for l in open("rpc.txt"):
    r = json.loads(l)
    for it in r.get("result", {}).get("items", []):
        if isinstance(it, dict) and it.get("uri"): print(it["uri"])')
echo "$link_rpc" | grep -q "^missive:join?g=" && [ "$link_rpc" != "$new" ] && ok || bad "the daemon's link: $(cat rpc.txt)"
# the command line, through the running daemon, keeps its options
expect 0 "a reset with approval, through the daemon" -- as alice -o json groups invite club --approval on --reset
link3=$(field 'r["uri"]')
echo "$link3" | grep -q "^missive:join?g=" && [ "$link3" != "$link_rpc" ] && ok || bad "reset through the daemon: $(cat out.txt)"
asks() {
    expect 0 "harry asks" -- as harry groups join "$link3"
    expect 0 "frank asks with an old link" -- as frank groups join "$new"
}
events_both "$sock" asks
grep -q '"type": *"join_request".*"status": *"pending"' ev2.txt && grep -q '"from": *"harry@example.org"' ev2.txt &&
    ok || bad "a pending join_request: $(cat ev2.txt)"
grep -q '"type": *"join_request".*"status": *"refused"' ev2.txt && ok || bad "a refused join_request: $(cat ev2.txt)"
grep -q "frank" ev2.txt && bad "the refusal names frank: $(cat ev2.txt)" || ok
grep -q 'join_request' ev1.txt && bad "schema 1 got a join_request: $(cat ev1.txt)" || ok
daemon_schema_ok 2 ev2.txt && ok || bad "schema 2 events"
daemon_schema_ok 1 ev1.txt && ok || bad "schema 1 events"
daemon_rpc "$sock" --schema 2 \
    '{"jsonrpc":"2.0","id":3,"method":"groups","params":{"args":["requests","club"],"output":"json"}}' \
    '{"jsonrpc":"2.0","id":4,"method":"groups","params":{"args":["approve","club","harry@example.org"],"output":"json"}}' \
    '{"jsonrpc":"2.0","id":5,"method":"groups","params":{"args":["deny","club","nobody@example.org"]}}' >rpc.txt
grep -q '"pending": *\["harry@example.org"\]' rpc.txt && ok || bad "requests by the daemon: $(cat rpc.txt)"
grep -q '"status": *"approved"' rpc.txt && ok || bad "approved by the daemon: $(cat rpc.txt)"
grep -q '"id": *5, *"error"\|"error".*"id": *5' rpc.txt && ok || bad "deny nobody: $(cat rpc.txt)"
daemon_schema_ok 2 rpc.txt && ok || bad "schema 2 answers: $(cat rpc.txt)"
kill -TERM "$daemon" && wait "$daemon"
daemon=
expect 0 "harry hears" -- as harry receive
[ "$(members harry)" = "$A,$B,$C,$E,$R,$G,$H" ] && ok || bad "harry joined: $(as harry groups)"

# the chat: ivan asks with /join in his; alice sees the request in hers and approves it
# (lines joined where the window wraps them, and 8 s for each wait)
screen() { tm capture-pane -p -J -t "$1"; }
waitfor() {
    for _ in $(seq 80); do screen "$1" | grep -qF -- "$2" && return 0; sleep 0.1; done
    return 1
}
CHAT_ROWS=40 chat_in alice dev-alice 200 "'$club'"
CHAT_ROWS=40 chat_in ivan dev-ivan 200
waitfor alice "online" && ok || bad "alice's chat starts: $(screen alice)"
waitfor ivan "online" && ok || bad "ivan's chat starts: $(screen ivan)"
tm send-keys -t alice "/invite sideways" Enter
waitfor alice "/invite, or /invite reset|off|approval on|off" && ok || bad "/invite's usage: $(screen alice)"
tm send-keys -t alice "/invite" Enter
waitfor alice "invite link: $link3" && ok || bad "/invite shows the link: $(screen alice)"
tm send-keys -t ivan "/join $link3" Enter
waitfor ivan "request sent" && ok || bad "/join: $(screen ivan)"
waitfor alice "ivan@example.org asks to join the group club" && ok || bad "the request in the chat: $(screen alice)"
tm send-keys -t alice "/requests" Enter
waitfor alice "waiting to join: $I" && ok || bad "/requests: $(screen alice)"
tm send-keys -t alice "/approve $I" Enter
waitfor alice "approved $I" && ok || bad "/approve: $(screen alice)"
tm send-keys -t ivan "/join missive:join?g=zz" Enter
waitfor ivan "not an invite link" && ok || bad "/join refuses a bad link: $(screen ivan)"
tm send-keys -t alice "/quit" Enter
tm send-keys -t ivan "/quit" Enter
sleep 1
expect 0 "ivan is in" -- as ivan groups
grep -q "^club	$A,$B,$C,$E,$R,$G,$H,$I	$club	" out.txt && ok || bad "ivan joined: $(cat out.txt)"

finish
