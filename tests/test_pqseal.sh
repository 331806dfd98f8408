#!/usr/bin/env bash
# Hybrid sealed sender end to end (docs/crypto.md, "Hybrid sealed sender"):
# sealed envelopes between two post-quantum devices are 0x09 (X25519 and
# ML-KEM-768 to the recipient's signed last-resort KEM prekey) and read; a
# server that strips the KEM part (a classical 0x07 to a device with [8]) gets
# it refused, counted and dropped, naming nobody; a server that withholds the
# sealing key, serves it unsigned or passes a one-time key off as last-resort
# gets nothing sent (a clear error, the pq_refused warning on the command
# line, in the daemon's schema 2 and in the chat), never a classical layer.
set -u
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"
M=$(realpath "${1:?usage: test_pqseal.sh MISSIVE MISSIVED}")
D=$(realpath "${2:?usage: test_pqseal.sh MISSIVE MISSIVED}")
in_scratch
export MISSIVED_ACCOUNTS_REGISTER_BURST=100
# claims are not throttled: a fetch of sealing keys that took a one-time prekey would show
export MISSIVED_DIRECTORY_PREKEY_CLAIM_INTERVAL_S=0

start_missived || bad "missived started"
db=srv/missived.db
[ -f "$db" ] || db=$(ls srv/*.db | head -1)
q() { sqlite3 "$db" "$1"; }
dev() { q "SELECT d.id FROM devices d JOIN accounts a ON a.id = d.account_id WHERE a.handle = '$1@example.org'"; }
# makes NAME's cached sealing keys look fetched in 1970: older than their refresh period
stale() { sqlite3 "dev-$1/$1@example.org/state.db" "UPDATE settings SET value = zeroblob(8) || substr(value, 9) WHERE key GLOB 'seal-kem:*'"; }
cached_keys() { sqlite3 "dev-$1/$1@example.org/state.db" "SELECT COUNT(*) FROM settings WHERE key GLOB 'seal-kem:*'"; }
refused() { sqlite3 "dev-$1/$1@example.org/state.db" "SELECT hex(value) FROM settings WHERE key = 'sealed-downgrades-refused'"; }
register_people alice bob carol dave erin
alice_dev=$(dev alice)
bob_dev=$(dev bob)
dave_dev=$(dev dave)
erin_dev=$(dev erin)
# the first layer's version, the queue's suite and sender device of what waits for a device
outer() { q "SELECT hex(substr(ciphertext, 1, 1)) || ' ' || suite || ' ' || sender_device FROM queue WHERE device_id = $1 ORDER BY id DESC LIMIT 1"; }

# ---- two post-quantum devices, sealed both ways ----
expect 0 "alice writes to bob" -- as alice send bob@example.org --text "hello bob"
expect 0 "bob receives" -- as bob receive
grep -q "hello bob" out.txt && ok || bad "bob read it: $(cat out.txt err.txt)"
expect 0 "bob answers, sealed" -- as bob send alice@example.org --text "sealed to alice"
[ "$(outer "$alice_dev")" = "09 4 0" ] && ok || bad "a hybrid sealed envelope for alice: $(outer "$alice_dev")"
expect 0 "alice receives" -- as alice receive
grep -q "sealed to alice" out.txt && ok || bad "alice read it: $(cat out.txt err.txt)"
expect 0 "alice writes, sealed" -- as alice send bob@example.org --text "sealed to bob"
[ "$(outer "$bob_dev")" = "09 4 0" ] && ok || bad "a hybrid sealed envelope for bob: $(outer "$bob_dev")"
# 1 + 32 + 4 + 1088 + 280 before the inner envelope
newest="SELECT * FROM queue WHERE device_id = $bob_dev ORDER BY id DESC LIMIT 1"
[ "$(q "SELECT length(ciphertext) > 1405 FROM ($newest)")" = 1 ] && ok ||
    bad "the KEM part travels: $(q "SELECT length(ciphertext) FROM ($newest)")"
q "CREATE TABLE sealed_copy AS $newest"
expect 0 "bob receives" -- as bob receive
grep -q "sealed to bob" out.txt && ok || bad "bob read it: $(cat out.txt err.txt)"
[ -z "$(refused bob)" ] && ok || bad "nothing counted as a downgrade yet: $(refused bob)"

# ---- a server strips the KEM part: 0x07 || E || the same two layers ----
q "INSERT INTO queue (device_id, sender_device, sender_handle, suite, ciphertext, enqueued_ms, expires_ms) SELECT device_id, sender_device, sender_handle, suite, X'07' || substr(ciphertext, 2, 32) || substr(ciphertext, 1126), enqueued_ms, expires_ms FROM sealed_copy"
expect 0 "bob receives the stripped envelope" -- as bob receive
grep -q "sealed to bob" out.txt && bad "a stripped envelope was read: $(cat out.txt)" || ok
grep -q "alice" out.txt err.txt && bad "the refusal names someone: $(cat out.txt err.txt)" || ok
grep -q "WARNING: 1 sealed envelope(s) came that this device cannot open, naming nobody: 1 made classically" err.txt && ok ||
    bad "bob is told, naming nobody: $(cat err.txt)"
[ "$(refused bob)" = 0000000000000001 ] && ok || bad "the downgrade was counted: $(refused bob)"
[ "$(q "SELECT COUNT(*) FROM queue WHERE device_id = $bob_dev")" = 0 ] && ok || bad "dropped, not left queued"
# the KEM ciphertext changed: nothing opens, nothing is counted as a downgrade
q "INSERT INTO queue (device_id, sender_device, sender_handle, suite, ciphertext, enqueued_ms, expires_ms) SELECT device_id, sender_device, sender_handle, suite, substr(ciphertext, 1, 599) || CASE WHEN substr(ciphertext, 600, 1) = X'00' THEN X'01' ELSE X'00' END || substr(ciphertext, 601), enqueued_ms, expires_ms FROM sealed_copy"
expect 0 "bob receives a changed KEM ciphertext" -- as bob receive
grep -q "sealed to bob" out.txt && bad "a changed KEM ciphertext was read: $(cat out.txt)" || ok
[ "$(refused bob)" = 0000000000000001 ] && ok || bad "not a downgrade: $(refused bob)"

# ---- a server that withholds or forges bob's sealing key (carol has not cached one) ----
acquaint() {
    expect 0 "$1 writes to $2" -- as "$1" send "$2@example.org" --text "hello $2"
    expect 0 "$2 receives" -- as "$2" receive
    grep -q "hello $2" out.txt && ok || bad "$2 read it: $(cat out.txt err.txt)"
    expect 0 "$2 answers" -- as "$2" send "$1@example.org" --text "hello $1"
    expect 0 "$1 receives" -- as "$1" receive
    grep -q "hello $1" out.txt && ok || bad "$1 read it: $(cat out.txt err.txt)"
}
acquaint carol bob
q "CREATE TABLE saved AS SELECT * FROM kem_prekeys WHERE device_id = $bob_dev AND last_resort = 1"
queued() { q "SELECT COUNT(*) FROM queue WHERE device_id = $bob_dev"; }
was=$(queued)
[ "$(cached_keys carol)" -ge 1 ] && ok || bad "carol keeps bob's sealing key: $(cached_keys carol)"
stale carol
# a fetch of sealing keys hands nothing out once: bob's one-time prekeys of both kinds stay
one_time() { q "SELECT (SELECT COUNT(*) FROM one_time_prekeys WHERE device_id = $bob_dev) || ' ' || (SELECT COUNT(*) FROM kem_prekeys WHERE device_id = $bob_dev AND last_resort = 0)"; }
one_time_before=$(one_time)
q "DELETE FROM kem_prekeys WHERE device_id = $bob_dev AND last_resort = 1"
expect 3 "no sealing key for bob: refused" -- as carol send bob@example.org --text "withheld"
grep -q "post-quantum sealing key" err.txt && grep -q "WARNING" err.txt && ok ||
    bad "the refusal says why: $(cat err.txt)"
[ "$(queued)" = "$was" ] && ok || bad "nothing queued for bob: $was -> $(queued)"
expect 3 "carol as JSON: refused" -- as carol -o json send bob@example.org --text "withheld json"
grep -q "post-quantum sealing key" out.txt err.txt && ok || bad "the JSON refusal: $(cat out.txt err.txt)"
q "INSERT INTO kem_prekeys SELECT device_id, key_id, last_resort, pk, zeroblob(64) FROM saved"
expect 3 "an unsigned sealing key: refused" -- as carol send bob@example.org --text "unsigned"
grep -q "post-quantum sealing key" err.txt && ok || bad "the refusal says why: $(cat err.txt)"
# what was refused before waits in the outbox, said at each command; it is not failed
grep -q "is still queued: the server gave no post-quantum sealing key" err.txt && ok ||
    bad "the earlier refused ones are said to wait: $(cat err.txt)"
[ "$(one_time)" = "$one_time_before" ] && ok || bad "one-time prekeys handed out: $one_time_before -> $(one_time)"
q "DELETE FROM kem_prekeys WHERE device_id = $bob_dev AND last_resort = 1"
q "UPDATE kem_prekeys SET last_resort = 1 WHERE rowid = (SELECT rowid FROM kem_prekeys WHERE device_id = $bob_dev AND last_resort = 0 LIMIT 1)"
expect 3 "a one-time KEM prekey passed off as the sealing key: refused" -- as carol send bob@example.org --text "one-time"
grep -q "post-quantum sealing key" err.txt && ok || bad "the refusal says why: $(cat err.txt)"
[ "$(queued)" = "$was" ] && ok || bad "still nothing queued for bob: $was -> $(queued)"
[ "$(q "SELECT COUNT(*) FROM queue WHERE sender_handle = 'carol@example.org' AND device_id = $bob_dev")" = 0 ] &&
    ok || bad "and nothing unsealed either"
q "DELETE FROM kem_prekeys WHERE device_id = $bob_dev AND last_resort = 1"
q "INSERT INTO kem_prekeys SELECT * FROM saved"
expect 0 "bob's own sealing key again" -- as carol send bob@example.org --text "honest"
[ "$(outer "$bob_dev")" = "09 4 0" ] && ok || bad "hybrid sealed: $(outer "$bob_dev")"
# what waited in carol's outbox goes now too, and all of it hybrid
[ "$(q "SELECT COUNT(*) FROM queue WHERE device_id = $bob_dev AND (substr(ciphertext, 1, 1) != X'09' OR sender_device != 0)")" = 0 ] &&
    ok || bad "only hybrid sealed envelopes for bob"
expect 0 "bob receives" -- as bob receive
grep -q "honest" out.txt && ok || bad "bob read it: $(cat out.txt err.txt)"
# what was refused for want of a checked key waited in carol's outbox, and went with it
for text in withheld "withheld json" unsigned one-time; do
    grep -q "$text" out.txt && ok || bad "bob read the refused \"$text\": $(cat out.txt err.txt)"
done
# ---- an older sealing key than carol verified before (ids only grow): refused ----
key_id=$(q "SELECT key_id FROM kem_prekeys WHERE device_id = $bob_dev AND last_resort = 1")
newer=$(printf '%08X' $((key_id + 1)))
sqlite3 "dev-carol/carol@example.org/state.db" "UPDATE settings SET value = zeroblob(8) || X'$newer' || substr(value, 13) WHERE key GLOB 'seal-kem:*'"
was=$(queued)
expect 3 "an older sealing key: refused" -- as carol send bob@example.org --text "older key"
grep -q "an older post-quantum sealing key" err.txt && grep -q "WARNING" err.txt && ok ||
    bad "the refusal says why: $(cat err.txt)"
[ "$(queued)" = "$was" ] && ok || bad "nothing queued for bob: $was -> $(queued)"
sqlite3 "dev-carol/carol@example.org/state.db" "DELETE FROM settings WHERE key GLOB 'seal-kem:*'"

# ---- a device's own counts: one-time prekey secrets of lost uploads reclaimed, sealed envelopes
# it could not open (missive devices, text and -o json; the daemon's status below) ----
sqlite3 "dev-alice/alice@example.org/state.db" \
    "INSERT OR REPLACE INTO settings (key, value) VALUES ('prekeys-reclaimed', X'0000000000000007')"
# and what its limits gave up or held back: owed messages, foundings again, waits on MLS,
# commits by reference not fetched, members' asks to join a group on MLS again not kept, group
# invitations dropped
sqlite3 "dev-alice/alice@example.org/state.db" \
    "INSERT OR REPLACE INTO settings (key, value) VALUES ('owed-given-up', X'0000000000000002'),
     ('refoundings-held', X'0000000000000003'), ('waits-given-up', X'0000000000000001'),
     ('mls-by-ref-held', X'0000000000000004'), ('mls-rejoins-held', X'0000000000000005'),
     ('invitations-dropped', X'0000000000000006'), ('early-changes-dropped', X'0000000000000008')"
expect 0 "alice's devices" -- as alice -o json devices
[ "$(field '[d for d in r if d["this_device"]][0]["prekeys_reclaimed"]')" = 7 ] && ok ||
    bad "devices -o json counts reclaimed prekeys: $(cat out.txt)"
[ "$(field '[[d["owed_given_up"], d["mls_refoundings_held"], d["mls_waits_given_up"], d["mls_by_ref_held"], d["mls_rejoins_held"], d["invitations_dropped"], d["early_changes_dropped"]] for d in r if d["this_device"]][0]')" = "[2, 3, 1, 4, 5, 6, 8]" ] &&
    ok || bad "devices -o json counts what the limits gave up: $(cat out.txt)"
[ "$(field '[d for d in r if not d["this_device"]] == [] or "prekeys_reclaimed" not in [d for d in r if not d["this_device"]][0]')" = True ] && ok ||
    bad "only this device's row has its counts: $(cat out.txt)"
expect 0 "alice's devices, text" -- as alice devices
grep -q "this device: 7 prekeys of lost uploads reclaimed" out.txt && ok ||
    bad "devices says it: $(cat out.txt)"
grep -q "this device's limits: 2 owed messages given up, 3 foundings again of groups on MLS held back (at most hourly), 1 waits of groups on MLS given up, 4 commits by reference not fetched (64 MiB a device an hour), 5 asks to join a group on MLS again not kept (256 at once), 6 group invitations dropped (20 waiting from one handle, 1,000 in all), 8 edits and unsends of messages not here yet dropped (32 waiting from one handle, 256 in all)" out.txt &&
    ok || bad "devices says what the limits gave up: $(cat out.txt)"

# ---- the daemon (schema 2): the refusal is a pq_refused event, not in schema 1 ----
acquaint alice dave
acquaint alice erin
q "DELETE FROM kem_prekeys WHERE device_id IN ($dave_dev, $erin_dev) AND last_resort = 1"
stale alice
held() { q "SELECT COUNT(*) FROM queue WHERE device_id IN ($dave_dev, $erin_dev)"; }
held_before=$(held)
sock=$work/dev-alice/alice@example.org/daemon.sock
(exec "$M" --data-dir dev-alice daemon >daemon.out 2>daemon.err) &
daemon=$!
for _ in $(seq 50); do [ -S "$sock" ] && break; sleep 0.1; done
to_dave() {
    daemon_rpc "$sock" --schema 2 '{"jsonrpc":"2.0","id":1,"method":"send","params":{"args":["dave@example.org"],"text":"to dave"}}' >rpc.txt
}
events_both "$sock" to_dave
grep -q '"pq_refused"' ev2.txt && grep -Eq "\"device_id\": ?$dave_dev" ev2.txt && ok ||
    bad "a pq_refused event in schema 2: $(cat ev2.txt rpc.txt)"
grep -q '"pq_refused"' ev1.txt && bad "schema 1 got pq_refused: $(cat ev1.txt)" || ok
grep -q "post-quantum sealing key" rpc.txt && ok || bad "the send's answer says why: $(cat rpc.txt)"
cat ev2.txt rpc.txt >wire2.jsonl
daemon_schema_ok 2 wire2.jsonl && ok || bad "schema 2"
# the device's own counts in the daemon's status (schema 2): 7 reclaimed prekey secrets
daemon_rpc "$sock" --schema 2 '{"jsonrpc":"2.0","id":2,"method":"status"}' >status.txt
grep -Eq '"prekeys_reclaimed": ?7' status.txt && grep -q '"sealed_unopenable"' status.txt && ok ||
    bad "status counts reclaimed prekeys: $(cat status.txt)"
grep -Eq '"owed_given_up": ?2' status.txt && grep -Eq '"mls_refoundings_held": ?3' status.txt &&
    grep -Eq '"mls_waits_given_up": ?1' status.txt && grep -Eq '"mls_rejoins_held": ?5' status.txt &&
    grep -Eq '"invitations_dropped": ?6' status.txt && grep -Eq '"early_changes_dropped": ?8' status.txt && ok || bad "status counts what the limits gave up: $(cat status.txt)"
daemon_schema_ok 2 status.txt && ok || bad "status in schema 2"
daemon_schema_ok 1 ev1.txt && ok || bad "schema 1"
kill -TERM "$daemon"
wait "$daemon"

# ---- the chat: the refusal is said in the conversation ----
chat alice
waitfor alice "alice@example.org" || bad "chat started: $(cat chat-alice.err)"
tm send-keys -t alice "/to erin@example.org" Enter
sleep 0.5
tm send-keys -t alice "hello erin" Enter
waitfor alice "not sent" 100 && ok || bad "the chat says not sent: $(screen alice)"
screen alice | grep -q "post-quantum" && ok || bad "the chat says why: $(screen alice)"
tm send-keys -t alice "/quit" Enter
for _ in $(seq 50); do [ -s chat-alice.rc ] && break; sleep 0.1; done
[ "$(held)" = "$held_before" ] && ok || bad "nothing queued for dave or erin: $held_before -> $(held)"

finish
