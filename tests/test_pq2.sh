#!/usr/bin/env bash
# Post-quantum devices are never listed without a bundle, and a server that
# hides one gets nothing sent (docs/crypto.md, "Post-quantum sessions"): a
# device registered or linked (with the password or by QR code) brings its
# signed prekey and last-resort KEM prekey in its request, so the server holds
# them before anyone can look the device up; a server that then leaves the
# device's whole bundle out of a claim answer gets the send to it refused
# (exit 3, a warning, the daemon's `pq_refused`), never a classical envelope.
set -u
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"
M=$(realpath "${1:?usage: test_pq2.sh MISSIVE MISSIVED}")
D=$(realpath "${2:?usage: test_pq2.sh MISSIVE MISSIVED}")
in_scratch
waiter=
daemon=
trap 'tm kill-server 2>/dev/null; for p in $waiter $daemon $pid; do kill -CONT "$p" 2>/dev/null; kill -TERM "$p" 2>/dev/null && wait "$p"; done; rm -rf "$work"' EXIT
export MISSIVED_ACCOUNTS_REGISTER_BURST=100

start_missived || bad "missived started"
db=srv/missived.db
[ -f "$db" ] || db=$(ls srv/*.db | head -1)
q() { sqlite3 "$db" "$1"; }
dev_of() { q "SELECT d.id FROM devices d JOIN accounts a ON a.id = d.account_id WHERE a.handle = '$1@example.org' ORDER BY d.id DESC LIMIT 1"; }
# first_prekeys DEVICE: "signed last-resort one-time kem-one-time" counts the server holds
first_prekeys() {
    echo "$(q "SELECT COUNT(*) FROM signed_prekeys WHERE device_id = $1") $(q "SELECT COUNT(*) FROM kem_prekeys WHERE device_id = $1 AND last_resort = 1") $(q "SELECT COUNT(*) FROM one_time_prekeys WHERE device_id = $1") $(q "SELECT COUNT(*) FROM kem_prekeys WHERE device_id = $1 AND last_resort = 0")"
}
register_people alice bob carol

# ---- linking by QR code: the new device's first prekeys are at the server once it is added,
# before it has connected (it is stopped while its code is used)
unset MISSIVE_PASSWORD
(exec "$M" --data-dir laptop link alice@example.org --server "$server" --qr >laptop.out 2>laptop.err) &
waiter=$!
code=
for _ in $(seq 100); do
    code=$(grep -o 'missive-link:1:[0-9a-f:]*' laptop.out 2>/dev/null | head -1)
    [ -n "$code" ] && break
    sleep 0.1
done
[ -n "$code" ] && ok || bad "the laptop shows its code: $(cat laptop.out laptop.err)"
kill -STOP "$waiter"
expect 0 "alice adds the laptop" -- as alice devices add "$code" --yes
laptop=$(dev_of alice)
[ "$(first_prekeys "$laptop")" = "1 1 0 0" ] && ok ||
    bad "the laptop's signed and last-resort KEM prekeys came with it: $(first_prekeys "$laptop")"
kill -CONT "$waiter"
wait "$waiter" && ok || bad "the laptop is linked: $(cat laptop.out laptop.err)"
waiter=
expect 0 "the laptop receives" -- "$M" --data-dir laptop --account alice@example.org receive
[ "$(q "SELECT COUNT(*) FROM kem_prekeys WHERE device_id = $laptop AND last_resort = 0")" -ge 10 ] && ok ||
    bad "the laptop's one-time KEM prekeys follow at its first connection: $(first_prekeys "$laptop")"
expect 0 "bob writes to alice's devices" -- as bob send alice@example.org --text "to both"
expect 0 "the laptop receives" -- "$M" --data-dir laptop --account alice@example.org receive
grep -q "to both" out.txt && ok || bad "the laptop read it: $(cat out.txt err.txt)"

# ---- linking with the password: the device waits for approval (it cannot connect), and its
# first prekeys are already held
export MISSIVE_PASSWORD="correct horse battery"
expect 0 "carol links a device with the password" -- "$M" --data-dir carol-spare link carol@example.org --server "$server"
spare=$(dev_of carol)
[ "$(q "SELECT approved FROM devices WHERE id = $spare")" = 0 ] && ok || bad "the device waits for approval"
[ "$(first_prekeys "$spare")" = "1 1 0 0" ] && ok ||
    bad "the waiting device's first prekeys came with it: $(first_prekeys "$spare")"
expect 0 "carol removes it" -- as carol devices remove "$spare"

# ---- a server that leaves bob's whole bundle out: refused, never the modern envelope
bob_dev=$(dev_of bob)
q "DELETE FROM signed_prekeys WHERE device_id = $bob_dev; DELETE FROM one_time_prekeys WHERE device_id = $bob_dev; DELETE FROM kem_prekeys WHERE device_id = $bob_dev"
queued() { q "SELECT COUNT(*) FROM queue WHERE device_id = $1"; }
before=$(queued "$bob_dev")
expect 3 "no bundle for bob: refused" -- as carol send bob@example.org --text "hidden bundle"
grep -q "post-quantum" err.txt && grep -q "WARNING" err.txt && ok || bad "the refusal says why: $(cat err.txt)"
grep -q "modern envelope" err.txt && bad "a classical envelope was announced: $(cat err.txt)" || ok
[ "$(queued "$bob_dev")" = "$before" ] && ok || bad "nothing queued for bob: $before -> $(queued "$bob_dev")"
expect 0 "carol: bob's devices" -- as carol -o json fingerprint bob@example.org
[ "$(field 'r[0]["session"]')" = none ] && ok || bad "no session with bob: $(cat out.txt)"

# ---- one refused device fails only itself: alice's laptop loses its bundle; carol's messages
# go to alice's phone, the laptop is named as left out, in every front end
phone=$(q "SELECT d.id FROM devices d JOIN accounts a ON a.id = d.account_id WHERE a.handle = 'alice@example.org' ORDER BY d.id LIMIT 1")
q "DELETE FROM signed_prekeys WHERE device_id = $laptop; DELETE FROM one_time_prekeys WHERE device_id = $laptop; DELETE FROM kem_prekeys WHERE device_id = $laptop"
from_carol() { q "SELECT COUNT(*) FROM queue WHERE device_id = $1 AND sender_handle = 'carol@example.org'"; }
at_laptop=$(from_carol "$laptop")
at_phone=$(queued "$phone")
expect 6 "carol writes to alice: not to the laptop" -- as carol send alice@example.org --text "to the phone only"
grep -q "but not to 1 device" out.txt && ok || bad "the output says who was left out: $(cat out.txt)"
grep -q "WARNING: .*device $laptop" err.txt && ok || bad "the laptop is named: $(cat err.txt)"
[ "$(from_carol "$laptop")" = "$at_laptop" ] && ok || bad "nothing for the laptop: $at_laptop -> $(from_carol "$laptop")"
[ "$(queued "$phone")" -gt "$at_phone" ] && ok || bad "the phone's copy is queued: $at_phone -> $(queued "$phone")"
expect 6 "the same as JSON" -- as carol -o json send alice@example.org --text "json partly"
[ "$(field 'r["status"]')" = partly_sent ] && [ "$(field 'r["refused_devices"]')" = 1 ] && ok ||
    bad "JSON says partly sent: $(cat out.txt)"
expect 0 "alice's phone receives" -- as alice receive
grep -q "to the phone only" out.txt && grep -q "json partly" out.txt && ok || bad "the phone read both: $(cat out.txt err.txt)"

# the daemon (schema 2): a pq_refused event for the laptop, the answer says partly sent
sock=$work/dev-carol/carol@example.org/daemon.sock
(exec "$M" --data-dir dev-carol daemon >daemon.out 2>daemon.err) &
daemon=$!
for _ in $(seq 50); do [ -S "$sock" ] && break; sleep 0.1; done
to_alice() {
    daemon_rpc "$sock" --schema 2 '{"jsonrpc":"2.0","id":1,"method":"send","params":{"args":["alice@example.org"],"text":"by the daemon"}}' >rpc.txt
}
events_both "$sock" to_alice
grep -q '"pq_refused"' ev2.txt && grep -Eq "\"device_id\": ?$laptop" ev2.txt && ok ||
    bad "a pq_refused event for the laptop: $(cat ev2.txt rpc.txt)"
grep -q '"pq_refused"' ev1.txt && bad "schema 1 got pq_refused: $(cat ev1.txt)" || ok
grep -q '"partly_sent"' rpc.txt && grep -q '"result"' rpc.txt && ok || bad "the answer says partly sent: $(cat rpc.txt)"
cat ev2.txt rpc.txt >wire2.jsonl
daemon_schema_ok 2 wire2.jsonl && ok || bad "schema 2: $(cat schema.out wire2.jsonl)"
daemon_schema_ok 1 ev1.txt && ok || bad "schema 1"
kill -TERM "$daemon"
wait "$daemon"
daemon=
expect 0 "alice's phone receives" -- as alice receive
grep -q "by the daemon" out.txt && ok || bad "the phone read the daemon's: $(cat out.txt err.txt)"

# the chat: sent, and a note names what was not delivered
chat carol
waitfor carol "carol@example.org" || bad "chat started: $(cat chat-carol.err)"
tm send-keys -t carol "/to alice@example.org" Enter
sleep 0.5
tm send-keys -t carol "from the chat" Enter
waitfor carol "not delivered to 1 device" 100 && ok || bad "the chat says not delivered: $(screen carol)"
screen carol | grep -q "post-quantum" && ok || bad "the chat says why: $(screen carol)"
tm send-keys -t carol "/quit" Enter
for _ in $(seq 50); do [ -s chat-carol.rc ] && break; sleep 0.1; done
expect 0 "alice's phone receives" -- as alice receive
grep -q "from the chat" out.txt && ok || bad "the phone read the chat's: $(cat out.txt err.txt)"
[ "$(from_carol "$laptop")" = "$at_laptop" ] && ok || bad "still nothing for the laptop: $(from_carol "$laptop")"

finish
