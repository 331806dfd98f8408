#!/usr/bin/env bash
# Run under scripts/services.sh: a populated SQLite server migrated into PostgreSQL with
# missive-admin migrate and started there (queued messages, attachments and the log intact);
# then the PostgreSQL backup recipe of docs/missived.md: pg_dump while it runs, the database
# dropped and restored with pg_restore, the shared directory's files put back.
# Last, the admin API of one node of a cluster cuts an account off on another.
set -u
. "$(cd "$(dirname "$0")" && pwd)/lib.sh"
usage="usage: services.sh test_ops_pg.sh MISSIVE_ADMIN MISSIVE MISSIVED"
A=$(realpath "${1:?$usage}")
M=$(realpath "${2:?$usage}")
D=$(realpath "${3:?$usage}")
: "${MSV_TEST_POSTGRES:?run under scripts/services.sh}"
pgbin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
in_scratch
pg_rows() { "$pgbin/psql" -X -A -t -d "$MSV_TEST_POSTGRES" -c "$1"; }

# ---- a SQLite server with queued messages and an attachment ---------------------------------
start_missived || bad "missived started"
register_people alice bob carol
expect 0 "alice pins the log" -- as alice log-head
head -c 150000 /dev/urandom >photo.jpg
for i in 1 2 3; do
    expect 0 "bob writes to alice ($i)" -- as bob send alice@example.org --text "queued on sqlite $i"
done
expect 0 "bob sends a file" -- as bob send alice@example.org --text "the photo" --file photo.jpg
expect 1 "migrate while missived runs" -- "$A" --data-dir srv migrate --to-postgres "$MSV_TEST_POSTGRES"
grep -q "missived runs on srv: stop it first" err.txt && ok || bad "running: $(cat err.txt)"
[ "$(pg_rows "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = current_schema()")" = 0 ] &&
    ok || bad "a refused migration touched PostgreSQL"
kill -TERM "$pid"; wait "$pid"; pid=

# devices up to id 50 were given out once (their devices removed since): no id below 51 again
python3 -c 'import sqlite3; d = sqlite3.connect("srv/missive.db"); d.execute("update sqlite_sequence set seq = 50 where name = ?", ("devices",)); d.commit()' &&
    ok || bad "the devices' sequence"
# and accounts up to id 40 (a deleted account's id is never given out again)
python3 -c 'import sqlite3; d = sqlite3.connect("srv/missive.db"); d.execute("update account_seq set last = 40"); d.commit()' &&
    ok || bad "the accounts' record of ids given out"
# a group's two copies of one message for a device no longer there, sharing one stored body
python3 -c 'import sqlite3
d = sqlite3.connect("srv/missive.db")
b = d.execute("insert into queue_bodies (body, refs) values (?, 2)", (b"B" * 300,)).lastrowid
for _ in range(2):
    d.execute("insert into queue (device_id, sender_device, sender_handle, suite, ciphertext, enqueued_ms, expires_ms, body_id, body_len) values (999999, 1, ?, 160, ?, 0, 9223372036854775807, ?, 300)", ("a", b"", b))
d.commit()' && ok || bad "a shared body queued"
expect 2 "migrate without a target" -- "$A" --data-dir srv migrate
expect 2 "--to-postgres with another command" -- "$A" --data-dir srv --to-postgres "$MSV_TEST_POSTGRES" stats
expect 1 "migrate to an unreachable PostgreSQL" -- "$A" --data-dir srv migrate --to-postgres "host=127.0.0.1 port=1 dbname=x connect_timeout=2"
grep -q "nothing was migrated" err.txt && ok || bad "unreachable: $(cat err.txt)"
expect 0 "migrate" -- "$A" --data-dir srv migrate --to-postgres "$MSV_TEST_POSTGRES"
grep -Eq '^accounts +3 +3$' out.txt && grep -Eq '^devices +3 +3$' out.txt && grep -Eq '^queue +([4-9]|[1-9][0-9]+) +\1$' out.txt &&
    grep -Eq '^blobs +1 +1$' out.txt && grep -Eq '^kt_log +([1-9][0-9]*) +\1$' out.txt && grep -q '^migrated [0-9]* tables in one transaction' out.txt &&
    ok || bad "migrate: $(cat out.txt)"
# every table's two counts are equal
awk 'NR > 1 && NF == 3 && $2 != $3 { exit 1 }' out.txt && ok || bad "counts differ: $(cat out.txt)"
[ "$(pg_rows "SELECT COUNT(*) FROM accounts")" = 3 ] && ok || bad "accounts in PostgreSQL"
[ "$(pg_rows "SELECT COUNT(*), SUM(octet_length(b.body)), MIN(b.refs) FROM queue q JOIN queue_bodies b ON b.id = q.body_id WHERE q.device_id = 999999")" = "2|600|2" ] &&
    ok || bad "the shared body: $(pg_rows "SELECT * FROM queue_bodies")"
[ "$(pg_rows "SELECT bytes FROM queue_usage WHERE device_id = 999999")" = 600 ] && ok || bad "its copies' usage"
[ "$(pg_rows "SELECT nextval(pg_get_serial_sequence('queue_bodies', 'id')) > MAX(id) FROM queue_bodies")" = t ] &&
    ok || bad "the bodies' sequence goes on past SQLite's"
pg_rows "DELETE FROM queue WHERE device_id = 999999" >/dev/null
[ "$(pg_rows "SELECT COUNT(*) FROM queue_bodies")" = 0 ] && ok || bad "the body went with its copies"
[ "$(pg_rows "SELECT envelopes FROM queue_usage ORDER BY envelopes DESC LIMIT 1")" = "$(python3 -c 'import sqlite3; print(sqlite3.connect("srv/missive.db").execute("select max(envelopes) from queue_usage").fetchone()[0])')" ] &&
    ok || bad "the queue counters were counted twice"
expect 1 "migrate into a database that is not empty" -- "$A" --data-dir srv -o json migrate --to-postgres "$MSV_TEST_POSTGRES"
grep -q "the target is not empty" err.txt && [ "$(pg_rows "SELECT COUNT(*) FROM accounts")" = 3 ] && ok || bad "not empty: $(cat err.txt)"

# ---- the same server on PostgreSQL ------------------------------------------------------------
export MISSIVED_STORE_BACKEND=postgres MISSIVED_STORE_POSTGRES=$MSV_TEST_POSTGRES
start_missived || bad "missived started on PostgreSQL"
expect 0 "alice receives what SQLite queued" -- as alice receive --wait 2
for i in 1 2 3; do grep -q "queued on sqlite $i" out.txt && ok || bad "message $i: $(cat out.txt)"; done
saved=$(sed -n 's/.*\[file: \(.*\) (150000 bytes)\].*/\1/p' out.txt)
[ -n "$saved" ] && cmp -s photo.jpg "$saved" && ok || bad "the attachment on PostgreSQL: $(cat out.txt)"
expect 0 "alice's client verifies the log on PostgreSQL" -- as alice log-head
register_people dave
old_max=$(python3 -c 'import sqlite3; print(sqlite3.connect("srv/missive.db").execute("select seq from sqlite_sequence where name = ?", ("devices",)).fetchone()[0])')
[ "$(pg_rows "SELECT MIN(id) FROM devices WHERE account_id = (SELECT id FROM accounts WHERE handle = 'dave@example.org')")" -gt "$old_max" ] &&
    ok || bad "a device id was given out again"
[ "$(pg_rows "SELECT id FROM accounts WHERE handle = 'dave@example.org'")" -gt 40 ] &&
    ok || bad "an account id was given out again"
expect 0 "alice answers bob" -- as alice send bob@example.org --text "from postgres"
expect 0 "bob reads it" -- as bob receive --wait 2
grep -q "from postgres" out.txt && ok || bad "bob on PostgreSQL: $(cat out.txt)"

# ---- the PostgreSQL backup recipe: pg_dump while it runs, drop, pg_restore ------------------
expect 0 "bob writes to carol" -- as bob send carol@example.org --text "kept by the dump"
expect 0 "pg_dump while missived runs" -- "$pgbin/pg_dump" --format=custom --file=missive.dump "$MSV_TEST_POSTGRES"
mkdir files && cp -a srv/log.key srv/log.pub srv/vrf.key srv/vrf.pub srv/server.crt srv/server.key srv/server.fingerprint srv/blobs files/ && ok || bad "the shared files"
kill -TERM "$pid"; wait "$pid"; pid=
expect 0 "drop the database" -- "$pgbin/psql" -q -X -d "$MSV_TEST_PG_ADMIN" -c 'DROP DATABASE missive;' -c 'CREATE DATABASE missive;'
rm -rf srv && mkdir -m 700 srv && cp -a files/. srv/
expect 0 "pg_restore" -- "$pgbin/pg_restore" --no-owner --dbname="$MSV_TEST_POSTGRES" missive.dump
start_missived || bad "missived started on the restored database"
expect 0 "carol receives what the dump kept" -- as carol receive --wait 2
grep -q "kept by the dump" out.txt && ok || bad "carol after the restore: $(cat out.txt)"
expect 0 "carol answers bob" -- as carol send bob@example.org --text "after pg_restore"
expect 0 "bob reads carol" -- as bob receive --wait 2
grep -q "after pg_restore" out.txt && ok || bad "bob after pg_restore: $(cat out.txt)"
expect 0 "alice's client verifies the restored log" -- as alice log-head
kill -TERM "$pid"; wait "$pid"; pid=

# ---- the admin API's disconnect reaches every node of a cluster -----------------------------
# node A serves the clients' address, node B only its admin API: bob on A is cut off by B
declare -A pids ports
mkdir -m 700 shared && cp -a srv/log.key srv/log.pub srv/vrf.key srv/vrf.pub srv/server.crt srv/server.key srv/server.fingerprint srv/blobs shared/
tr -dc 'A-Za-z0-9' </dev/urandom | head -c 40 >token && chmod 600 token
cluster_node A "$port" || bad "node A started"
cluster_node B 0 "$(printf '[http]\nadmin_token_file = %s/token' "$work")" || bad "node B started"
as bob receive --wait 20 >bob.out 2>bob.err &
bob=$!
sleep 2
expect 0 "disconnect bob through node B's admin API" -- "$A" --url "http://127.0.0.1:$(awk '/^http/{print $2}' node-B/missived.ports)" --token-file token -o json disconnect bob@example.org
python3 -c "import json; r=json.load(open('out.txt')); assert r['disconnected'] is True and r['nodes']==2, r" && ok || bad "disconnect answer: $(cat out.txt)"
for _ in $(seq 50); do grep -q "event=disconnected_closed" node-A.log && break; sleep 0.1; done
grep -q "event=disconnected_closed" node-A.log && ok || bad "node A did not cut bob off: $(tail -3 node-A.log)"
wait "$bob"
[ $? -ne 0 ] && ok || bad "bob's receive ended normally"
expect 0 "bob connects again" -- as bob receive
for n in A B; do
    kill -TERM "${pids[$n]}" && wait "${pids[$n]}" && ok || bad "node $n did not stop cleanly"
done

finish
