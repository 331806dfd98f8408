#!/usr/bin/env bash
# The post-quantum ratchet end to end (docs/crypto.md, "The post-quantum
# ratchet"): two post-quantum accounts exchange a few hundred messages both
# ways, in bursts, every one read once and in full; both sides show the
# session as post-quantum. Then alice's device is made to write classical
# headers in that session (its stored session turned into a classical one,
# as a modified or downgraded client would): bob refuses the message, records
# it as unreadable, counts it, and fingerprint says so.
set -u
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"
M=$(realpath "${1:?usage: test_pqratchet.sh MISSIVE MISSIVED}")
D=$(realpath "${2:?usage: test_pqratchet.sh MISSIVE MISSIVED}")
in_scratch
export MISSIVED_ACCOUNTS_REGISTER_BURST=100

start_missived || bad "missived started"
register_people alice bob
: >alice.got
: >bob.got
rounds=${PQR_ROUNDS:-60}
sent_a=0
sent_b=0
for r in $(seq "$rounds"); do
    # alice 1 to 3 messages, bob 1 or 2; each side reads every other round
    for k in $(seq $((r % 3 + 1))); do
        sent_a=$((sent_a + 1))
        as alice send bob@example.org --text "from alice $sent_a" >/dev/null 2>>err.log ||
            bad "alice's message $sent_a: $(tail -2 err.log)"
    done
    if [ $((r % 2)) = 0 ] || [ "$r" = "$rounds" ]; then
        as bob receive >>bob.got 2>>err.log || bad "bob receives (round $r): $(tail -2 err.log)"
    fi
    [ "$r" = 1 ] && as bob receive >>bob.got 2>>err.log # bob sends once he has read alice's start
    for k in $(seq $((r % 2 + 1))); do
        sent_b=$((sent_b + 1))
        as bob send alice@example.org --text "from bob $sent_b" >/dev/null 2>>err.log ||
            bad "bob's message $sent_b: $(tail -2 err.log)"
    done
    if [ $((r % 2)) = 1 ] || [ "$r" = "$rounds" ]; then
        as alice receive >>alice.got 2>>err.log || bad "alice receives (round $r): $(tail -2 err.log)"
    fi
done
as bob receive >>bob.got 2>>err.log
as alice receive >>alice.got 2>>err.log
[ $((sent_a + sent_b)) -ge 200 ] && ok || bad "a few hundred messages: $sent_a + $sent_b"
missing=0
for i in $(seq "$sent_a"); do grep -q "from alice $i\$" bob.got || missing=$((missing + 1)); done
for i in $(seq "$sent_b"); do grep -q "from bob $i\$" alice.got || missing=$((missing + 1)); done
[ "$missing" = 0 ] && ok || bad "$missing messages not read"
[ "$(grep -c "from alice" bob.got)" = "$sent_a" ] && [ "$(grep -c "from bob" alice.got)" = "$sent_b" ] &&
    ok || bad "each read once: $(grep -c "from alice" bob.got)/$sent_a, $(grep -c "from bob" alice.got)/$sent_b"
grep -q "could not be" alice.got bob.got && bad "unreadable messages: $(grep "could not be" alice.got bob.got)" || ok
expect 0 "alice: bob's devices" -- as alice -o json fingerprint bob@example.org
[ "$(field 'r[0]["session"]')" = post-quantum ] && [ "$(field 'r[0]["downgrades_refused"]')" = 0 ] && ok ||
    bad "alice's session with bob: $(cat out.txt)"
# each sent over 50 messages: each offered a key at least once, and both saw the steps
[ "$(field 'r[0]["kem_steps"]')" -ge 2 ] && ok || bad "KEM steps in alice's session: $(cat out.txt)"
expect 0 "bob: alice's devices" -- as bob fingerprint alice@example.org
grep -q "(post-quantum session)" out.txt && ok || bad "bob's session with alice: $(cat out.txt)"

# ---- a downgrade: alice's session turned classical writes 0x05 headers ----
python3 - "$(find dev-alice -name state.db | head -1)" <<'PY' || bad "alice's session turned classical"
import sqlite3, sys
db = sqlite3.connect(sys.argv[1])
n = 0
for key, value in db.execute("SELECT key, value FROM settings WHERE key LIKE 'session:%:0'").fetchall():
    v = bytearray(value)
    # state version 3: magic, version, flags, AD, five keys, three counters, base key, two ids,
    # their base key, then the hybrid byte
    at = 4 + 1 + 1 + 64 + 5 * 32 + 12 + 32 + 8 + 32
    assert v[:4] == b"MSVR" and v[4] == 3 and v[at] == 1, (v[:5], v[at])
    v[at] = 0
    db.execute("UPDATE settings SET value = ? WHERE key = ?", (bytes(v), key))
    n += 1
db.commit()
assert n == 1, n
PY
expect 0 "alice sends with a classical header" -- as alice send bob@example.org --text "downgraded"
expect 0 "bob receives" -- as bob receive
grep -q "downgraded" out.txt && bad "the classical message was read: $(cat out.txt)" || ok
grep -q "could not be" out.txt && ok || bad "bob is told: $(cat out.txt err.txt)"
expect 0 "bob: alice's devices" -- as bob -o json fingerprint alice@example.org
[ "$(field 'r[0]["downgrades_refused"]')" = 1 ] && ok || bad "counted: $(cat out.txt)"
expect 0 "bob: alice's devices (text)" -- as bob fingerprint alice@example.org
grep -q "(1 classical messages refused)" out.txt && ok || bad "shown: $(cat out.txt)"
finish
