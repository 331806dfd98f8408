#!/usr/bin/env bash
# State synced between an account's own devices, against a real missived on
# loopback: contacts and 'sync:' settings (blocks, privacy...) changed on one
# device appear on the others, deletions too; a newly linked device receives
# everything once approved; the daemon reports a 'sync' event in schema 2
# only; the chat shows the synced change and the synced contact name.
set -u
. "$(cd "$(dirname "$0")" && pwd)/lib.sh"
M=$(realpath "${1:?usage: test_profile.sh MISSIVE MISSIVED}")
D=$(realpath "${2:?usage: test_profile.sh MISSIVE MISSIVED}")
in_scratch

start_missived || bad "missived started"
register_people alice bob carol
# alice's second device: dev-alice2, the same account
as2() { "$M" --data-dir dev-alice2 --account alice@example.org "$@"; }
synced() { as2 sync list; }

# state alice has before she links a second device
expect 0 "a contact" -- as alice contacts add Bobby bob@example.org
expect 0 "a synced setting" -- as alice sync set sync:privacy:typing off
expect 0 "a setting that is not synced" -- as alice sync list
grep -q "^sync:privacy:typing	off$" out.txt && ok || bad "sync list: $(cat out.txt)"
expect 2 "only sync: keys are set this way" -- as alice sync set profile-key x

# the new device gets everything once approved
expect 0 "alice links a laptop" -- "$M" --data-dir dev-alice2 link alice@example.org --server "$server"
laptop=$(sed -n 's/.*this is device \([0-9]*\).*/\1/p' out.txt)
expect 0 "alice's phone hears of it" -- as alice receive
expect 0 "and approves it" -- as alice devices approve "$laptop"
expect 0 "the laptop receives" -- as2 -o json receive
# the contacts (Bobby and the two register_people adds), the setting and the account's profile key
grep -q '"notice":"5 changes synced from device [0-9]* of this account"' out.txt && ok || bad "the snapshot's notice: $(cat out.txt)"
expect 0 "the laptop's contacts" -- as2 contacts
grep -q "^Bobby	bob@example.org$" out.txt && ok || bad "the contact on the laptop: $(cat out.txt)"
expect 0 "the laptop's synced settings" -- as2 -o json sync list
grep -q '"key":"sync:privacy:typing","value":"off","deleted":false' out.txt && ok || bad "the setting on the laptop: $(cat out.txt)"

expect 0 "bob writes to alice" -- as bob send alice@example.org --text "hello alice"
expect 0 "her laptop receives it" -- as2 receive

# changes on the laptop reach the phone, deletions too; nothing echoes back
expect 0 "the laptop blocks someone" -- as2 sync set sync:block:carol@example.org 1
expect 0 "and renames bob" -- as2 contacts remove Bobby
expect 0 "and names him again" -- as2 contacts add Robert bob@example.org
expect 0 "the phone receives" -- as alice receive
# one sync per command; the block also rotated the profile key (below), which came with it
grep -q "2 changes synced from device $laptop of this account" out.txt &&
    [ "$(grep -c "1 change synced from device $laptop of this account" out.txt)" = 2 ] && ok || bad "the phone's notices: $(cat out.txt)"
expect 0 "the phone's contacts" -- as alice contacts
[ "$(grep -v '^\(bob\|carol\)@example.org	' out.txt)" = "Robert	bob@example.org" ] && ok || bad "contacts on the phone: $(cat out.txt)"
expect 0 "the phone's settings" -- as alice sync list
grep -q "^sync:block:carol@example.org	1$" out.txt && grep -q "^contact:Bobby\\\\nbob@example.org	deleted$" out.txt && ok || bad "the phone's synced state: $(cat out.txt)"
expect 0 "an unblock on the phone" -- as alice sync unset sync:block:carol@example.org
expect 0 "the laptop receives it" -- as2 receive
grep -q "1 change synced" out.txt && ok || bad "the unblock's notice: $(cat out.txt)"
expect 0 "the laptop's settings" -- as2 sync list
grep -q "^sync:block:carol@example.org	deleted$" out.txt && ok || bad "the unblock on the laptop: $(cat out.txt)"
expect 0 "nothing comes back to the phone" -- as alice receive
! grep -q "synced" out.txt && ok || bad "an applied change was sent back: $(cat out.txt)"

# whoever writes a synced setting (here SQLite itself) needs do nothing more; a large change
# goes in as many payloads as the relay's envelope limit needs
sqlite3 dev-alice/alice@example.org/state.db "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 40) INSERT INTO settings SELECT 'sync:conv:group' || i || ':mute', replace(hex(zeroblob(450)), '0', 'm') FROM n;" && ok || bad "settings written by sqlite3"
expect 0 "the phone's next command sends them" -- as alice contacts
expect 0 "the laptop receives them" -- as2 sync list
[ "$(grep -c '^sync:conv:group[0-9]*:mute	m\{900\}$' out.txt)" = 0 ] && ok || bad "synced before the laptop received"
expect 0 "the laptop receives them" -- as2 receive
expect 0 "..." -- as2 sync list
[ "$(grep -c '^sync:conv:group[0-9]*:mute	m\{900\}$' out.txt)" = 40 ] && ok || bad "40 large settings on the laptop: $(grep -c mute out.txt)"

# the daemon: a 'sync' event for schema 2 subscribers, none for schema 1
(exec "$M" --data-dir dev-alice2 daemon >daemon.out 2>daemon.err) &
daemon=$!
sock=$work/dev-alice2/alice@example.org/daemon.sock
for _ in $(seq 100); do [ -S "$sock" ] && break; sleep 0.1; done
events_both "$sock" expect 0 "the phone turns read receipts off" -- as alice sync set sync:privacy:read-receipts off
grep -q '"type": *"sync", *"from": *"alice@example.org", *"notice": *"1 change synced' ev2.txt && ok || bad "schema 2 sync event: $(cat ev2.txt)"
! grep -q '"sync"' ev1.txt && grep -q '"subscribed"' ev1.txt && ok || bad "a schema 1 subscriber got a sync event: $(cat ev1.txt)"
daemon_rpc "$sock" --schema 2 '{"jsonrpc":"2.0","id":2,"method":"sync","params":{"args":["list"]}}' \
    '{"jsonrpc":"2.0","id":3,"method":"sync","params":{"args":["set","sync:conv:bob@example.org:pin","on"]}}' \
    '{"jsonrpc":"2.0","id":4,"method":"sync","params":{"args":["set","nosync","x"]}}' >rpc.txt
cat ev2.txt rpc.txt >wire2.jsonl
daemon_schema_ok 2 wire2.jsonl && ok || bad "schema 2: $(cat schema.out)"
grep -q '"key": *"sync:privacy:read-receipts", *"value": *"off"' rpc.txt && ok || bad "sync list through the daemon: $(cat rpc.txt)"
grep -q '"id": *4.*"exit_status": *2\|"exit_status": *2.*"id": *4' rpc.txt && ok || bad "a key that is not synced, through the daemon: $(cat rpc.txt)"
kill -TERM "$daemon"
wait "$daemon"
daemon=
expect 0 "the setting the daemon made reaches the phone" -- as alice receive
expect 0 "the phone's settings" -- as alice sync list
grep -q "^sync:conv:bob@example.org:pin	on$" out.txt && ok || bad "the pin from the daemon: $(cat out.txt)"

# the chat on the laptop: the synced change is shown, and so is the synced name
if command -v tmux >/dev/null; then
    chat_in laptop dev-alice2 100 bob@example.org
    waitfor laptop "online" && ok || bad "the laptop's chat starts: $(screen laptop)"
    waitfor laptop "Robert: hello alice" && ok || bad "the chat names bob as the synced contact: $(screen laptop)"
    expect 0 "the phone renames bob" -- as alice contacts add Bob bob@example.org
    expect 0 "..." -- as alice contacts remove Robert
    waitfor laptop "change synced from device" && ok || bad "the chat shows the sync: $(screen laptop)"
    waitfor laptop "Bob: hello alice" && ok || bad "the chat shows the new name: $(screen laptop)"
    tm kill-server
else
    bad "tmux is not installed (scripts/deps.sh installs it)"
fi

# a block rotates the account's profile key: the blocked person's delivery token stops working
# (the relay refuses the sealed send, which goes unsealed with a notice), the others' works
unsealed="without sealed sender"
expect 0 "alice writes to bob" -- as alice send bob@example.org --text "hi bob"
expect 0 "and to carol" -- as alice send carol@example.org --text "hi carol"
expect 0 "bob learns her key" -- as bob receive
expect 0 "carol too" -- as carol receive
expect 0 "the laptop takes the copies" -- as2 receive
expect 0 "bob writes sealed" -- as bob send alice@example.org --text "sealed from bob"
! grep -q "$unsealed" err.txt && ok || bad "bob's send before the block: $(cat err.txt)"
expect 0 "alice blocks bob" -- as alice sync set sync:block:bob@example.org 1
expect 0 "the laptop takes the new key" -- as2 receive
grep -q "change.* synced from device" out.txt && ok || bad "the laptop's sync: $(cat out.txt)"
expect 0 "both devices hold one key" -- as alice sync list
phone_key=$(sqlite3 dev-alice/alice@example.org/state.db "SELECT hex(value) FROM settings WHERE key = 'sync:secret:profile-key'")
laptop_key=$(sqlite3 dev-alice2/alice@example.org/state.db "SELECT hex(value) FROM settings WHERE key = 'sync:secret:profile-key'")
[ -n "$phone_key" ] && [ "$phone_key" = "$laptop_key" ] && ok || bad "one profile key: $phone_key / $laptop_key"
grep -q "^sync:secret:profile-key	(secret)$" out.txt && ok || bad "the key is never shown: $(cat out.txt)"
expect 0 "bob writes again" -- as bob send alice@example.org --text "after the block"
grep -q "$unsealed" err.txt && ok || bad "bob's sealed send still works after the block: $(cat err.txt)"
expect 0 "carol receives the new key" -- as carol receive
expect 0 "carol writes" -- as carol send alice@example.org --text "sealed from carol"
! grep -q "$unsealed" err.txt && ok || bad "carol's sealed send after the rotation: $(cat err.txt)"
expect 0 "alice gets carol's; bob's is dropped, he is blocked" -- as alice receive
! grep -q "after the block" out.txt && grep -q "sealed from carol" out.txt && ok || bad "alice's messages: $(cat out.txt)"
finish
