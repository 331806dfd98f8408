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
trap 'tm kill-server 2>/dev/null; for p in $waiter $daemon $pid; do kill -CONT "$p" 2>/dev/null; kill -TERM "$p" 2>/dev/null && wait "$p"; done; kill_left "$work"; rm -rf "$work"' EXIT
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
finish
