#!/usr/bin/env bash
# Group admins and signed group changes against a real missived on loopback:
# the creator is admin, admins promote and demote, members leave; a member's
# client patched to think itself admin sends a removal that every member
# refuses and shows as refused, in the CLI, through the daemon (schema 2
# 'group' events, none for schema 1) and in the chat under tmux, which marks
# the admins in a group's title.
set -u
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"
M=$(realpath "${1:?usage: test_groups.sh MISSIVE MISSIVED}")
D=$(realpath "${2:?usage: test_groups.sh MISSIVE MISSIVED}")
if ! command -v tmux >/dev/null; then
    echo "tmux is not installed (scripts/deps.sh installs it)" >&2
    exit 1
fi
in_scratch

start_missived || bad "missived started"
register_people alice bob carol dave
A=alice@example.org B=bob@example.org C=carol@example.org E=dave@example.org

# forget_state WHO GROUP-HEX: WHO's client loses its signed state of the group, so it
# takes itself for the group's admin (a patched client, as a dishonest member runs)
forget_state() {
    /usr/bin/python3 - "dev-$1/$1@example.org/state.db" "$2" <<'PY'
import sqlite3, sys
db = sqlite3.connect(sys.argv[1])
n = db.execute("delete from settings where key in (?, ?)",
               ("group-state:" + sys.argv[2], "group-prev:" + sys.argv[2])).rowcount
db.commit()
assert n >= 1, n
PY
}

# the creator is the admin
expect 0 "alice creates club" -- as alice groups create club $B $C
club=$(as alice groups | grep "^club	" | cut -f3)
hex=${club#group:}
[ ${#hex} -eq 32 ] && ok || bad "club's id: $club"
expect 0 "alice's groups as JSON" -- as alice -o json groups
grep -q '"name":"club",.*"admins":"alice@example.org"' out.txt && ok || bad "admins in JSON: $(cat out.txt)"
for who in bob carol; do
    expect 0 "$who learns of club" -- as $who receive
    grep -q "alice@example.org created the group; group \"club\"" out.txt && ok || bad "$who's creation text: $(cat out.txt)"
    expect 0 "$who accepts" -- as $who groups accept "$club"
done
expect 0 "bob's list" -- as bob groups
grep -q "^club	$A,$B,$C	$club	admins: $A$" out.txt && ok || bad "bob's list: $(cat out.txt)"

# the group's code (on MLS): the same on each member's device at one epoch
expect 0 "alice's code of club" -- as alice groups code club
code=$(head -1 out.txt)
echo "$code" | grep -Eq '^[0-9]{5}( [0-9]{5}){11}$' && ok || bad "alice's code: $(cat out.txt)"
grep -q "generation 0, epoch 1:" out.txt && ok || bad "its epoch: $(cat out.txt)"
expect 0 "bob's code of club" -- as bob -o json groups code "$club"
grep -q "\"code\":\"$code\"" out.txt && grep -q '"epoch":1' out.txt && ok || bad "bob's code: $(cat out.txt), alice's $code"
expect 1 "the code of no group" -- as bob groups code nothere
grep -q "no group nothere" err.txt && ok || bad "no group: $(cat err.txt)"

# a member who is no admin changes nothing; promoted, he may
expect 3 "bob may not remove carol" -- as bob groups remove club $C
grep -q "you are not an admin of club" err.txt && ok || bad "not an admin: $(cat err.txt)"
expect 3 "nor promote himself" -- as bob groups promote club $B
expect 0 "alice promotes bob" -- as alice groups promote club $B
expect 0 "bob is told" -- as bob receive
grep -q "alice@example.org changed the group: promoted bob@example.org" out.txt && ok || bad "promotion text: $(cat out.txt)"
expect 0 "bob, admin, adds dave" -- as bob groups add club $E
for who in alice carol; do
    expect 0 "$who hears of dave" -- as $who receive
    grep -q "bob@example.org changed the group: added dave@example.org" out.txt && ok || bad "$who: dave added: $(cat out.txt)"
done
# dave held nothing of club before: he learns it whole, on an admin's word
expect 0 "dave hears of club" -- as dave receive
grep -q "bob@example.org changed the group; group \"club\": members $A, $B, $C, $E$" out.txt && ok || bad "dave: club: $(cat out.txt)"
grep -q "^notice:" out.txt && bad "the change told twice: $(cat out.txt)" || ok
expect 0 "dave accepts" -- as dave groups accept "$club"
expect 0 "dave's list" -- as dave groups
grep -q "^club	$A,$B,$C,$E	$club	admins: $A,$B$" out.txt && ok || bad "dave's list: $(cat out.txt)"
expect 0 "alice demotes bob" -- as alice groups demote club $B
for who in bob carol dave; do expect 0 "$who hears of the demotion" -- as $who receive; done
expect 3 "bob, demoted, may not remove dave" -- as bob groups remove club $E
expect 1 "promote someone who is no member" -- as alice groups promote club nobody@example.org

# carol leaves: anyone may
expect 0 "carol leaves" -- as carol groups leave club
for who in alice bob dave; do
    expect 0 "$who hears carol left" -- as $who receive
    grep -q "carol@example.org left; group \"club\": members $A, $B, $E$" out.txt && ok || bad "$who: carol left: $(cat out.txt)"
done
expect 0 "alice's list without carol" -- as alice groups
grep -q "^club	$A,$B,$E	$club	admins: $A$" out.txt && ok || bad "without carol: $(cat out.txt)"

# bob's patched client removes dave: alice's daemon (schema 2 and schema 1 subscribers) and
# dave refuse it and say so
sock=$work/dev-alice/$A/daemon.sock
(exec "$M" --data-dir dev-alice daemon >daemon.out 2>daemon.err) &
daemon=$!
for _ in $(seq 100); do [ -S "$sock" ] && break; sleep 0.1; done
forged_removal() {
    forget_state bob "$hex" && ok || bad "bob's client patched"
    expect 0 "bob's patched client removes dave" -- as bob groups remove club $E
}
events_both "$sock" forged_removal
grep -q '"type": *"group".*"status": *"refused"' ev2.txt && ok || bad "a refused group event: $(cat ev2.txt)"
grep -q 'bob@example.org tried to change the group: removed dave@example.org.*refused, not an admin' ev2.txt && ok || bad "the event says why: $(cat ev2.txt)"
grep -q '"type": *"group"' ev1.txt && bad "schema 1 got a group event: $(cat ev1.txt)" || ok
grep -q 'tried to change the group' ev1.txt && ok || bad "schema 1 still gets the message: $(cat ev1.txt)"
daemon_schema_ok 2 ev2.txt && ok || bad "schema 2 events"
daemon_schema_ok 1 ev1.txt && ok || bad "schema 1 events"
# the daemon's methods: the list as JSON, and a promotion
daemon_rpc "$sock" --schema 2 '{"jsonrpc":"2.0","id":2,"method":"groups","params":{"output":"json"}}' \
    '{"jsonrpc":"2.0","id":3,"method":"groups","params":{"args":["promote","club","dave@example.org"]}}' \
    '{"jsonrpc":"2.0","id":4,"method":"groups","params":{"args":["leave","nothing-here"]}}' >rpc.txt
grep -q '\\"members\\": *\\"alice@example.org,bob@example.org,dave@example.org\\"\|"members": *"alice@example.org,bob@example.org,dave@example.org"' rpc.txt && ok || bad "dave still a member, by the daemon: $(cat rpc.txt)"
grep -q '"id": *4, *"error"\|"error".*"id": *4' rpc.txt && ok || bad "leave an unknown group: $(cat rpc.txt)"
daemon_schema_ok 2 rpc.txt && ok || bad "schema 2 answers"
kill -TERM "$daemon" && wait "$daemon"
daemon=
expect 0 "dave is told" -- as dave receive
grep -q "bob@example.org tried to change the group: removed dave@example.org.*: refused, not an admin" out.txt && ok || bad "dave's refusal: $(cat out.txt)"
grep -q "alice@example.org changed the group: promoted dave@example.org" out.txt && ok || bad "dave promoted: $(cat out.txt)"
expect 0 "dave's list" -- as dave groups
grep -q "^club	$A,$B,$E	$club	admins: $A,$E$" out.txt && ok || bad "dave kept: $(cat out.txt)"
expect 0 "bob's own history says he sent it" -- as bob history --group "$club"
expect 0 "alice writes to the club" -- as alice send --group club --text "still four of us? three"
expect 0 "dave gets it" -- as dave receive
grep -q "still four of us" out.txt && ok || bad "dave still receives: $(cat out.txt)"

# dave links a laptop with the password: his phone's approval copies club to it, so the
# laptop holds the group (and takes the Welcome that adds it to club's MLS group) and reads it
link_laptop dave
expect 0 "the laptop's list" -- laptop_m groups
grep -q "^club	$A,$B,$E	$club	admins: $A,$E$" out.txt && ok || bad "club copied: $(cat out.txt)"
expect 0 "dave's phone adds the laptop" -- as dave receive
expect 0 "the laptop joins" -- laptop_m receive
grep -q "never told of" out.txt err.txt && bad "a Welcome refused: $(cat out.txt err.txt)" || ok
expect 0 "alice writes again" -- as alice send --group club --text "hello dave's laptop"
expect 0 "the laptop reads it" -- laptop_m receive
grep -q "hello dave's laptop" out.txt && ok || bad "the laptop reads club: $(cat out.txt)"

# the chat: admins starred in the title; a refused change shown as a warning
chat_in alice dev-alice 160 "'$club'"
waitfor alice "online" && ok || bad "alice's chat starts: $(screen alice)"
waitfor alice "members: ★$A $B ★$E" && ok || bad "admins starred: $(screen alice | head -2)"
expect 0 "bob's patched client demotes alice" -- as bob groups demote club $A
waitfor alice "* ⚠ bob@example.org tried to change the group" && ok || bad "refused in the chat: $(screen alice)"
screen alice | grep -q "refused, not an admin" && ok || bad "the chat says why: $(screen alice)"
waitfor alice "members: ★$A $B ★$E" && ok || bad "still alice's admin mark: $(screen alice | head -2)"
tm send-keys -t alice "/quit" Enter

finish
