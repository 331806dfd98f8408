#!/usr/bin/env bash
# missive-audit against a real missived: it follows the log as it grows,
# agrees with the heads clients saw, and catches the server rewriting its
# log (a fork between what a client saw and what the log says now),
# changing its log key (a device id listed under two accounts is a client's to
# catch: the auditor reads leaf hashes, which name no one); it
# follows a log key rotation and refuses a rollback or a self-signed one; its own
# errors are clear.
set -u
. "$(cd "$(dirname "$0")" && pwd)/lib.sh"
M=$(realpath "${1:?usage: test_audit.sh MISSIVE MISSIVED MISSIVE_AUDIT}")
D=$(realpath "${2:?usage: test_audit.sh MISSIVE MISSIVED MISSIVE_AUDIT}")
A=$(realpath "${3:?usage: test_audit.sh MISSIVE MISSIVED MISSIVE_AUDIT}")
in_scratch
# version-3 leaves (not the default): the leaf hashes an auditor reads, the leaves rewritten below
export MISSIVED_DIRECTORY_LEAF_VERSION=3

start() { start_missived || bad "missived started"; }
stop() { kill -TERM "$pid"; wait "$pid"; pid=; }
start
server=127.0.0.1:$port
fp=$(cat srv/server.fingerprint)
key=$(cat srv/log.pub)
export MISSIVE_PASSWORD="correct horse battery"
code() { grep "handle=$1 code=" srv.log | tail -1 | sed 's/.*code=//'; }
for who in alice bob; do
    "$M" --data-dir "dev-$who" register "$who@example.org" --server "$server" >/dev/null 2>&1 &&
        "$M" --data-dir "dev-$who" register "$who@example.org" --code "$(code "$who@example.org")" >/dev/null &&
        ok || bad "register $who"
done

expect 0 "first audit" -- "$A" --state st --server "$server" --fingerprint "$fp" --log-key "$key" --print-head
grep -q "the log checks out: 2 entries (2 new)" out.txt && ok || bad "first audit: $(cat out.txt)"
grep '^missive-head 1 2 ' out.txt >auditor.head && ok || bad "printed head"
expect 0 "alice's head" -- "$M" --data-dir dev-alice log-head
cp out.txt alice.head
grep -q '^missive-head 1 2 [0-9]* [0-9a-f]\{64\} [0-9a-f]\{128\}$' alice.head && ok || bad "log-head line: $(cat alice.head)"
expect 0 "alice's head is the log's" -- "$A" --state st --compare alice.head
grep -q "is this log's" out.txt && ok || bad "compare: $(cat out.txt)"

# the log grows: bob links a laptop and approves it
"$M" --data-dir dev-bob-laptop link bob@example.org --server "$server" >out.txt 2>&1 || bad "link"
laptop=$(sed -n 's/.*this is device \([0-9]*\).*/\1/p' out.txt)
expect 0 "approve" -- "$M" --data-dir dev-bob devices approve "$laptop"
expect 0 "the audit follows" -- "$A" --state st
grep -q "3 entries (1 new).*seen before" out.txt && ok || bad "second audit: $(cat out.txt)"
expect 0 "a second auditor from nothing" -- "$A" --state st2 --server "$server" --fingerprint "$fp" --compare auditor.head --compare alice.head
grep -q "3 entries (3 new)" out.txt && ok || bad "second auditor: $(cat out.txt)"
# an auditor has no account: it reads leaf hashes, which name no handle and no device
grep -q "^devices 0$" st2 && ok || bad "device ids kept: $(grep devices st2)"
! grep -q "example.org" st2 && ok || bad "the auditor's state names a handle"
# a state written before device ids were kept: the log is read again from its start
sed -e '1s/ 4$/ 1/' -e '/^devices /,$d' st2 >st-v1
expect 0 "a state of version 1" -- "$A" --state st-v1
grep -q "3 entries (3 new)" out.txt && grep -q "^devices 0$" st-v1 && ok || bad "v1 state: $(cat out.txt)"
# one that kept device ids by handle (version 2), not by key: read again too, kept by key now
sed -e '1s/ 4$/ 2/' -e '/^keydir /d' st2 >st-v2
expect 0 "a state of version 2" -- "$A" --state st-v2
grep -q "3 entries (3 new)" out.txt && head -1 st-v2 | grep -q "state 4$" && ok || bad "v2 state: $(cat out.txt)"
# a state of version 3 (no key directory root): the key directory is checked from its epoch on
sed -e '1s/ 4$/ 3/' -e '/^keydir /d' st2 >st-v3
expect 0 "a state of version 3" -- "$A" --state st-v3
grep -q "3 entries (0 new)" out.txt && head -1 st-v3 | grep -q "state 4$" &&
    grep -q "^keydir 3 $(grep '^keydir ' st2 | cut -d' ' -f3)$" st-v3 && ok ||
    bad "v3 state: $(cat out.txt) $(tail -1 st-v3)"

# its errors
expect 2 "no state" -- "$A" --server "$server"
expect 2 "first run without a server" -- "$A" --state nothing
echo "not a state" >garbage
expect 2 "a state it did not write" -- "$A" --state garbage
echo "missive-head 1 2 1 $(printf '%064d' 0) $(printf '%0128d' 0)" >forged.head
expect 2 "a head not signed by the log" -- "$A" --state st --compare forged.head
grep -q "not signed by the log key this auditor pins" err.txt && ok || bad "unsigned head: $(cat err.txt)"
expect 2 "another log key than pinned" -- "$A" --state st --log-key "$(printf '%064d' 0)"
expect 4 "server unreachable" -- "$A" --state st3 --server 127.0.0.1:1

# a server that gives a leaf hash of another length, or one beside the leaf: refused (V1, V2)
stop
MISSIVED_TESTING_LOG_READ_HASH_FAULT=1 start
expect 1 "a leaf hash of 31 bytes" -- "$A" --state st-short --server "$server" --fingerprint "$fp"
grep -q "THE LOG DOES NOT CHECK OUT: entry 0 has a malformed leaf hash" err.txt && ok || bad "short hash: $(cat err.txt)"
stop
MISSIVED_TESTING_LOG_READ_HASH_FAULT=2 start
expect 1 "a leaf hash beside the leaf" -- "$A" --state st-both --server "$server" --fingerprint "$fp"
grep -q "THE LOG DOES NOT CHECK OUT: entry 0 has a malformed leaf hash" err.txt && ok || bad "hash and leaf: $(cat err.txt)"
expect 0 "the audit goes on" -- "$A" --state st

# the server rewrites history: alice's first device key changes in place
stop
python3 - srv/missive.db <<'PY'
import sqlite3, sys
db = sqlite3.connect(sys.argv[1])
leaf = bytearray(db.execute("SELECT leaf FROM kt_log WHERE idx = 0").fetchone()[0])
at = 1 + 8 + 1 + leaf[9] + 1  # the first device: version, time, handle, count
leaf[at + 11 + int.from_bytes(leaf[at + 9:at + 11], "big") - 1] ^= 1  # its key's last byte
db.execute("UPDATE kt_log SET leaf = ? WHERE idx = 0", (bytes(leaf),))
db.commit()
PY
start
expect 1 "the rewrite is caught" -- "$A" --state st
grep -q "THE LOG DOES NOT CHECK OUT: the log was rewritten" err.txt && ok || bad "rewrite: $(cat err.txt)"
expect 0 "a new auditor sees a consistent log" -- "$A" --state st4 --server "$server" --fingerprint "$fp"
expect 1 "but alice's head shows the fork" -- "$A" --state st4 --compare alice.head
grep -q "is not one of this log's: a fork" err.txt && ok || bad "fork: $(cat err.txt)"
expect 3 "and alice's client refuses the log" -- "$M" --data-dir dev-alice log-head
grep -q "rewritten" err.txt && ok || bad "client on rewrite: $(cat err.txt)"

# a new log key
stop
rm srv/log.key
start
expect 1 "a new log key is caught" -- "$A" --state st4
grep -q "another key than the pinned one" err.txt && ok || bad "new key: $(cat err.txt)"

# heads dated two days ahead
stop
echo $(( ($(date +%s) + 2 * 86400) * 1000 )) >clock
MISSIVED_TESTING_CLOCK_FILE=$PWD/clock start
expect 1 "a head from the future is caught" -- "$A" --state st5 --server "$server" --fingerprint "$fp"
grep -q "dated 28[0-9][0-9] minutes in the future" err.txt && ok || bad "future head: $(cat err.txt)"
rm clock

# carol joins (a client that never saw the log before it was rewritten)
stop
start
"$M" --data-dir dev-carol register carol@example.org --server "$server" >/dev/null 2>&1 &&
    "$M" --data-dir dev-carol register carol@example.org --code "$(code carol@example.org)" >/dev/null &&
    ok || bad "register carol"
# the operator logs, under bob's handle, an entry that lists alice's device id with bob's key
stop
python3 - srv/missive.db <<'PY'
import sqlite3, sys
db = sqlite3.connect(sys.argv[1])
def latest(handle):
    return bytearray(db.execute("SELECT leaf FROM kt_log WHERE handle = ? ORDER BY idx DESC LIMIT 1",
                                (handle,)).fetchone()[0])
def first_device(leaf):
    return 1 + 8 + 1 + leaf[9] + 1  # version, time, handle, count
alice, bob = latest("alice@example.org"), latest("bob@example.org")
bob[0] = 1  # a set without approvals (version 1)
bob[9 + 1 + bob[9]] = 1  # one device: bob's first, under alice's id
at = first_device(bob)
n = 8 + 1 + 2 + int.from_bytes(bob[at + 9:at + 11], "big")
bob = bob[:at] + alice[first_device(alice):first_device(alice) + 8] + bob[at + 8:at + n]
db.execute("INSERT INTO kt_log (idx, handle, leaf) VALUES ((SELECT max(idx) + 1 FROM kt_log), ?, ?)",
           ("bob@example.org", bytes(bob)))
db.commit()
PY
MISSIVED_SERVER_LISTEN_PORT=0 MISSIVED_HTTP_LISTEN_PORT=0 timeout 60 "$D" --data-dir srv >out.txt 2>err.txt
rc=$?
[ "$rc" -ne 0 ] && [ "$rc" -ne 124 ] && ok || bad "missived serves a log with a device id under two handles"
grep -q "lists a device id with another key than an earlier entry gave it" err.txt && ok || bad "missived's refusal: $(cat err.txt)"
# a dishonest server serves it anyway: an auditor reads leaf hashes only and cannot tell, a client
# that looks both handles up refuses the second (and alice's monitor raises the alarm:
# test_client's test_device_id_reused)
MISSIVED_TESTING_TRUST_STORE_LOG=true start
expect 0 "an auditor sees leaf hashes" -- "$A" --state st6 --server "$server" --fingerprint "$fp"
expect 0 "carol looks bob up" -- "$M" --data-dir dev-carol verify bob@example.org
expect 3 "a device id under two accounts is caught" -- "$M" --data-dir dev-carol verify alice@example.org
grep -q "with another key than its log gave that device before" err.txt && ok || bad "device id reused: $(cat err.txt)"

# in place of that entry, a log key rotation the old key did not sign
stop
python3 - srv/missive.db srv/log.pub <<'PY'
import os, sqlite3, struct, sys, time
db = sqlite3.connect(sys.argv[1])
old = bytes.fromhex(open(sys.argv[2]).read().strip())
db.execute("DELETE FROM kt_log WHERE idx = (SELECT max(idx) FROM kt_log)")
n = db.execute("SELECT count(*) FROM kt_log").fetchone()[0]
leaf = (b"\x02" + struct.pack(">Q", int(time.time() * 1000)) + old + os.urandom(32) +
        struct.pack(">Q", n + 1) + os.urandom(64))
db.execute("INSERT INTO kt_log (idx, handle, leaf) VALUES (?, '', ?)", (n, leaf))
db.commit()
PY
MISSIVED_SERVER_LISTEN_PORT=0 MISSIVED_HTTP_LISTEN_PORT=0 timeout 60 "$D" --data-dir srv >out.txt 2>err.txt
rc=$?
[ "$rc" -ne 0 ] && [ "$rc" -ne 124 ] && ok || bad "missived serves a log key rotation not signed"
grep -q "is a log key rotation not signed by the key in force" err.txt && ok || bad "missived's refusal: $(cat err.txt)"

# the operator rotates the log key: a rotation entry signed by the old key, the new key in log.key
sqlite3_rm_last() {
    python3 -c 'import sqlite3, sys; db = sqlite3.connect(sys.argv[1]); db.execute("DELETE FROM kt_log WHERE idx = (SELECT max(idx) FROM kt_log)"); db.commit()' srv/missive.db
}
rotate() { # rotate SIGNER(old|new): appends the entry, writes the new key to log.key
    python3 - srv/missive.db srv/log.key "$1" <<'PY'
import os, sqlite3, struct, sys, time
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat, PublicFormat
raw = lambda k: k.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
db = sqlite3.connect(sys.argv[1])
old_sk = open(sys.argv[2], "rb").read()
old = Ed25519PrivateKey.from_private_bytes(old_sk[:32])
new = Ed25519PrivateKey.from_private_bytes(os.urandom(32))
n = db.execute("SELECT count(*) FROM kt_log").fetchone()[0]
size = struct.pack(">Q", n + 1)
signer = old if sys.argv[3] == "old" else new
sig = signer.sign(b"MSV-kt-key-v1" + raw(old) + raw(new) + size)
leaf = b"\x02" + struct.pack(">Q", int(time.time() * 1000)) + raw(old) + raw(new) + size + sig
db.execute("INSERT INTO kt_log (idx, handle, leaf) VALUES (?, '', ?)", (n, leaf))
db.commit()
new_sk = new.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption()) + raw(new)
fd = os.open(sys.argv[2], os.O_WRONLY | os.O_TRUNC)
os.write(fd, new_sk)
os.close(fd)
PY
}
sqlite3_rm_last
start
expect 0 "an auditor before the rotation" -- "$A" --state st7 --server "$server" --fingerprint "$fp"
stop
cp st7 st8
cp srv/log.key old.key
rotate old
start
expect 0 "the audit follows the rotation" -- "$A" --state st7
grep -q "the log key moved" out.txt && ok || bad "rotation: $(cat out.txt) $(cat err.txt)"
grep -q "^log_key $(cat srv/log.pub)$" st7 && ok || bad "the new key pinned: $(grep log_key st7)"
expect 0 "and goes on" -- "$A" --state st7
# the old key again after the rotation (a dishonest server: missived itself refuses)
stop
cp srv/log.key new.key
cp old.key srv/log.key
MISSIVED_TESTING_TRUST_STORE_LOG=true start
expect 1 "the old key after the rotation is caught" -- "$A" --state st7
grep -q "another key than the pinned one" err.txt && ok || bad "rollback: $(cat err.txt)"
# an auditor from before the rotation, shown the rotation entry under heads the old key still signs
cp st8 st9
expect 1 "an auditor is not kept on the old key" -- "$A" --state st9
grep -q "retires the log key that still signs its head" err.txt && ok || bad "kept behind: $(cat err.txt)"
# a new key that signed its own rotation
stop
sqlite3_rm_last
rotate new
MISSIVED_TESTING_TRUST_STORE_LOG=true start
expect 1 "a rotation not signed by the old key is caught" -- "$A" --state st8
grep -q "another key than the pinned one" err.txt && ok || bad "forged rotation: $(cat err.txt)"
finish
