#!/usr/bin/env bash
# Signed device lists on the command line (docs/transparency.md, "Signed device lists"): the
# directory logs a device for alice with no approval; bob's send leaves it out, says so on
# stderr, and seals nothing to it; `missive verify` says alice's device list is signed.
set -u
. "$(cd "$(dirname "$0")" && pwd)/lib.sh"
M=$(realpath "${1:?usage: test_devlist.sh MISSIVE MISSIVED}")
D=$(realpath "${2:?usage: test_devlist.sh MISSIVE MISSIVED}")
in_scratch
# version-3 leaves (not the default): a leaf appended to the store below
export MISSIVED_DIRECTORY_LEAF_VERSION=3

start() { start_missived || bad "missived started"; }
stop() { kill -TERM "$pid"; wait "$pid"; pid=; }
start
server=127.0.0.1:$port
export MISSIVE_PASSWORD="correct horse battery"
code() { grep "handle=$1 code=" srv.log | tail -1 | sed 's/.*code=//'; }
for who in alice bob; do
    "$M" --data-dir "dev-$who" register "$who@example.org" --server "$server" >/dev/null 2>&1 &&
        "$M" --data-dir "dev-$who" register "$who@example.org" --code "$(code "$who@example.org")" >/dev/null &&
        ok || bad "register $who"
done
expect 0 "bob writes to alice" -- "$M" --data-dir dev-bob send alice@example.org --text "hello"
expect 0 "bob's view of alice" -- "$M" --data-dir dev-bob verify alice@example.org
grep -qx "device list: signed" out.txt && ok || bad "alice's list: $(cat out.txt)"

# the operator adds a device to alice's account (alice's key, another id) and logs it unapproved
stop
python3 - srv/missive.db <<'PY'
import sqlite3, sys
db = sqlite3.connect(sys.argv[1])
acc, ident = db.execute("SELECT account_id, identity FROM devices ORDER BY id LIMIT 1").fetchone()
db.execute("INSERT INTO devices (account_id, suite, identity, push_token, created_ms, approved) "
           "VALUES (?, 3, ?, x'', 0, 1)", (acc, ident))
new = db.execute("SELECT max(id) FROM devices").fetchone()[0]
leaf = bytearray(db.execute("SELECT leaf FROM kt_log WHERE handle = 'alice@example.org' "
                            "ORDER BY idx DESC LIMIT 1").fetchone()[0])
assert leaf[0] == 6 and leaf[-1] == 0  # a signed set, no chain records
count_at = 1 + 8 + 1 + leaf[9]
leaf[count_at] += 1
record = new.to_bytes(8, "big") + bytes([3]) + len(ident).to_bytes(2, "big") + ident + b"\0"
leaf = leaf[:-1] + record + b"\0"  # the new device is the highest id: last, unsigned
db.execute("INSERT INTO kt_log (idx, handle, leaf) VALUES ((SELECT max(idx) + 1 FROM kt_log), "
           "'alice@example.org', ?)", (bytes(leaf),))
db.commit()
PY
[ $? -eq 0 ] && ok || bad "the forged entry"
forged=$(sqlite3 srv/missive.db "SELECT max(id) FROM devices;")
start
# the relay asks for the forged device; bob's lookups leave it out: the send fails, told
expect 1 "bob writes to alice again" -- "$M" --data-dir dev-bob send alice@example.org --text "again"
grep -q "device $forged of alice@example.org has no valid approval from its account's devices" err.txt &&
    ok || bad "the warning: $(cat out.txt err.txt)"
grep -q "or that their account did not approve" err.txt && ok || bad "the refusal: $(cat err.txt)"
n=$(sqlite3 srv/missive.db "SELECT count(*) FROM queue WHERE device_id = $forged;")
[ "$n" = 0 ] && ok || bad "sealed to the forged device: $n"
finish
