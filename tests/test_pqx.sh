#!/usr/bin/env bash
# Post-quantum sessions end to end (docs/crypto.md, "Post-quantum sessions"):
# new devices say post-quantum in their identities and publish signed ML-KEM
# prekeys; a first message is hybrid (0x08); the devices and fingerprint
# output, the daemon and the chat say which sessions are post-quantum. A
# dishonest server that withholds KEM prekeys, serves an unsigned one or
# another device's gets nothing sent (a clear error and a warning), never a
# classical session; a one-time KEM prekey served again opens nothing.
set -u
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"
M=$(realpath "${1:?usage: test_pqx.sh MISSIVE MISSIVED}")
D=$(realpath "${2:?usage: test_pqx.sh MISSIVE MISSIVED}")
in_scratch
export MISSIVED_ACCOUNTS_REGISTER_BURST=100

start_missived || bad "missived started"
db=srv/missived.db
[ -f "$db" ] || db=$(ls srv/*.db | head -1)
q() { sqlite3 "$db" "$1"; }
register_people alice bob carol dave erin frank

# every device published a last-resort KEM prekey and one-time ones, each signed
[ "$(q 'SELECT COUNT(*) FROM kem_prekeys WHERE last_resort = 1')" = 6 ] && ok ||
    bad "last-resort KEM prekeys: $(q 'SELECT device_id, last_resort FROM kem_prekeys')"
[ "$(q 'SELECT COUNT(*) FROM kem_prekeys WHERE last_resort = 0')" -ge 40 ] && ok ||
    bad "one-time KEM prekeys: $(q 'SELECT COUNT(*) FROM kem_prekeys')"
bob_dev=$(q "SELECT d.id FROM devices d JOIN accounts a ON a.id = d.account_id WHERE a.handle = 'bob@example.org'")
before=$(q "SELECT COUNT(*) FROM kem_prekeys WHERE device_id = $bob_dev AND last_resort = 0")

# ---- a hybrid session ----
expect 0 "alice writes to bob" -- as alice send bob@example.org --text "hello quantum"
after=$(q "SELECT COUNT(*) FROM kem_prekeys WHERE device_id = $bob_dev AND last_resort = 0")
[ "$after" -eq $((before - 1)) ] && ok || bad "one one-time KEM prekey claimed: $before -> $after"
q "CREATE TABLE first_copy AS SELECT * FROM queue WHERE device_id = $bob_dev"
expect 0 "bob receives" -- as bob receive
grep -q "hello quantum" out.txt && ok || bad "bob read it: $(cat out.txt err.txt)"
# the hybrid first message delivered again (a replay): read once only, no second session
q "INSERT INTO queue (device_id, sender_device, sender_handle, suite, ciphertext, enqueued_ms, expires_ms) SELECT device_id, sender_device, sender_handle, suite, ciphertext, enqueued_ms, expires_ms FROM first_copy"
expect 0 "bob receives the replay" -- as bob receive
grep -q "hello quantum" out.txt && bad "the replay was shown again: $(cat out.txt)" || ok
[ "$(q "SELECT COUNT(*) FROM queue WHERE device_id = $bob_dev")" = 0 ] && ok || bad "the replay was acknowledged"
expect 0 "bob answers" -- as bob send alice@example.org --text "hello back"
expect 0 "alice receives" -- as alice receive
grep -q "hello back" out.txt && ok || bad "alice read it: $(cat out.txt err.txt)"
expect 0 "alice: bob's devices" -- as alice fingerprint bob@example.org
grep -q "post-quantum  (post-quantum session)" out.txt && ok || bad "fingerprint says post-quantum: $(cat out.txt)"
expect 0 "alice: bob's devices as JSON" -- as alice -o json fingerprint bob@example.org
[ "$(field 'r[0]["session"]')" = post-quantum ] && [ "$(field 'r[0]["post_quantum"]')" = True ] && ok ||
    bad "JSON session kind: $(cat out.txt)"
expect 0 "bob: alice's devices" -- as bob -o json fingerprint alice@example.org
[ "$(field 'r[0]["session"]')" = post-quantum ] && ok || bad "bob's side: $(cat out.txt)"

# ---- a dishonest server ----
carol_dev=$(q "SELECT d.id FROM devices d JOIN accounts a ON a.id = d.account_id WHERE a.handle = 'carol@example.org'")
dave_dev=$(q "SELECT d.id FROM devices d JOIN accounts a ON a.id = d.account_id WHERE a.handle = 'dave@example.org'")
q "CREATE TABLE saved AS SELECT * FROM kem_prekeys WHERE device_id = $carol_dev"
# withholds carol's KEM prekeys: alice's first message to carol goes nowhere, classically or not
q "DELETE FROM kem_prekeys WHERE device_id = $carol_dev"
queued() { q "SELECT COUNT(*) FROM queue WHERE device_id = $carol_dev"; }
expect 3 "no KEM prekey for carol: refused" -- as alice send carol@example.org --text "withheld"
grep -q "post-quantum" err.txt && grep -q "WARNING" err.txt && ok || bad "the refusal says why: $(cat err.txt)"
[ "$(queued)" = 0 ] && ok || bad "nothing queued for carol: $(queued)"
expect 0 "alice: carol's devices" -- as alice -o json fingerprint carol@example.org
[ "$(field 'r[0]["session"]')" = none ] && ok || bad "no session with carol: $(cat out.txt)"
# an unsigned one (its signature zeroed), then another device's (dave's, rightly signed by dave)
q "INSERT INTO kem_prekeys SELECT device_id, key_id, last_resort, pk, zeroblob(64) FROM saved"
expect 3 "an unsigned KEM prekey for carol: refused" -- as alice send carol@example.org --text "unsigned"
grep -q "post-quantum" err.txt && ok || bad "the refusal says why: $(cat err.txt)"
q "DELETE FROM kem_prekeys WHERE device_id = $carol_dev"
q "INSERT INTO kem_prekeys SELECT $carol_dev, key_id, last_resort, pk, sig FROM kem_prekeys WHERE device_id = $dave_dev"
expect 3 "dave's KEM prekey served as carol's: refused" -- as alice send carol@example.org --text "dave's"
grep -q "post-quantum" err.txt && ok || bad "the refusal says why: $(cat err.txt)"
[ "$(queued)" = 0 ] && ok || bad "still nothing queued for carol: $(queued)"
expect 0 "carol receives" -- as carol receive
grep -q "withheld\|unsigned\|dave's" out.txt && bad "carol got a refused message: $(cat out.txt)" || ok
# the honest keys back: the message that waited goes, in a hybrid session
q "DELETE FROM kem_prekeys WHERE device_id = $carol_dev"
q "INSERT INTO kem_prekeys SELECT * FROM saved"
expect 0 "carol's own KEM prekeys again" -- as alice send carol@example.org --text "honest"
expect 0 "carol receives" -- as carol receive
grep -q "honest" out.txt && ok || bad "carol read it: $(cat out.txt err.txt)"
expect 0 "carol: alice's devices" -- as carol -o json fingerprint alice@example.org
[ "$(field 'r[0]["session"]')" = post-quantum ] && ok || bad "carol's session: $(cat out.txt)"

# a one-time KEM prekey served again (the one dave's first message used): dave's device deleted
# its secret, so a second first message made with it opens nothing and says so
q "CREATE TABLE before_dave AS SELECT * FROM kem_prekeys WHERE device_id = $dave_dev AND last_resort = 0"
expect 0 "alice writes to dave" -- as alice send dave@example.org --text "first to dave"
q "INSERT INTO kem_prekeys SELECT * FROM before_dave WHERE key_id NOT IN (SELECT key_id FROM kem_prekeys WHERE device_id = $dave_dev)"
expect 0 "dave receives" -- as dave receive
grep -q "first to dave" out.txt && ok || bad "dave read it: $(cat out.txt err.txt)"
expect 0 "bob writes to dave with the used KEM prekey" -- as bob send dave@example.org --text "replayed key"
expect 0 "dave receives" -- as dave receive
grep -q "replayed key" out.txt && bad "a used KEM prekey opened a session: $(cat out.txt)" || ok
grep -q "could not be" out.txt err.txt && ok || bad "dave is told: $(cat out.txt err.txt)"

# a network attacker (here: the server) changes a byte of the KEM ciphertext in carol's first
# message to bob: no session starts, nothing is shown as if read, never a classical session
expect 0 "carol writes to bob" -- as carol send bob@example.org --text "changed on the way"
q "UPDATE queue SET ciphertext = substr(ciphertext, 1, 599) || CASE WHEN substr(ciphertext, 600, 1) = X'00' THEN X'01' ELSE X'00' END || substr(ciphertext, 601) WHERE device_id = $bob_dev"
expect 0 "bob receives the changed message" -- as bob receive
grep -q "changed on the way" out.txt && bad "a changed KEM ciphertext was read: $(cat out.txt)" || ok
grep -q "carol@example.org (device [0-9]*) could not be" out.txt err.txt && ok || bad "bob is told: $(cat out.txt err.txt)"
[ "$(q "SELECT COUNT(*) FROM queue WHERE device_id = $bob_dev")" = 0 ] && ok || bad "handled, not left queued"
expect 0 "bob: carol's devices" -- as bob -o json fingerprint carol@example.org
[ "$(field 'r[0]["session"]')" != classical ] && ok || bad "a classical session came of it: $(cat out.txt)"
cp err.txt changed.err

# ---- the daemon (schema 2): the refusal is an event; the devices say which sessions are ----
erin_dev=$(q "SELECT d.id FROM devices d JOIN accounts a ON a.id = d.account_id WHERE a.handle = 'erin@example.org'")
frank_dev=$(q "SELECT d.id FROM devices d JOIN accounts a ON a.id = d.account_id WHERE a.handle = 'frank@example.org'")
q "DELETE FROM kem_prekeys WHERE device_id IN ($erin_dev, $frank_dev)"
sock=$work/dev-alice/alice@example.org/daemon.sock
(exec "$M" --data-dir dev-alice daemon >daemon.out 2>daemon.err) &
daemon=$!
for _ in $(seq 50); do [ -S "$sock" ] && break; sleep 0.1; done
to_erin() {
    daemon_rpc "$sock" --schema 2 '{"jsonrpc":"2.0","id":1,"method":"send","params":{"args":["erin@example.org"],"text":"to erin"}}' >rpc.txt
}
events_both "$sock" to_erin
grep -q '"pq_refused"' ev2.txt && grep -Eq "\"device_id\": ?$erin_dev" ev2.txt && ok ||
    bad "a pq_refused event in schema 2: $(cat ev2.txt rpc.txt)"
grep -q '"pq_refused"' ev1.txt && bad "schema 1 got pq_refused: $(cat ev1.txt)" || ok
grep -q "post-quantum" rpc.txt && ok || bad "the send's answer says why: $(cat rpc.txt)"
daemon_rpc "$sock" --schema 2 '{"jsonrpc":"2.0","id":2,"method":"fingerprint","params":{"args":["bob@example.org"]}}' >fp.txt
grep -Eq '"session": ?"post-quantum"' fp.txt && grep -Eq '"post_quantum": ?true' fp.txt && ok ||
    bad "the daemon's devices say post-quantum: $(cat fp.txt)"
cat ev2.txt rpc.txt fp.txt >wire2.jsonl
daemon_schema_ok 2 wire2.jsonl && ok || bad "schema 2"
daemon_schema_ok 1 ev1.txt && ok || bad "schema 1"
kill -TERM "$daemon"
wait "$daemon"
daemon=

# ---- the chat: the refusal is said in the conversation; /sessions says which are post-quantum ----
chat alice
waitfor alice "alice@example.org" || bad "chat started: $(cat chat-alice.err)"
tm send-keys -t alice "/to frank@example.org" Enter
sleep 0.5
tm send-keys -t alice "hello frank" Enter
waitfor alice "not sent" 100 && ok || bad "the chat says not sent: $(screen alice)"
screen alice | grep -q "post-quantum" && ok || bad "the chat says why: $(screen alice)"
tm send-keys -t alice "/to bob@example.org" Enter
sleep 0.5
tm send-keys -t alice "/sessions" Enter
waitfor alice "post-quantum session" 100 && ok || bad "/sessions: $(screen alice)"
tm send-keys -t alice "/quit" Enter
for _ in $(seq 50); do [ -s chat-alice.rc ] && break; sleep 0.1; done
[ "$(q "SELECT COUNT(*) FROM queue WHERE device_id IN ($erin_dev, $frank_dev)")" = 0 ] && ok ||
    bad "nothing queued for erin or frank"

finish
