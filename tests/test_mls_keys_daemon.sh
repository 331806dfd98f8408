#!/usr/bin/env bash
# A group on MLS that stays quiet while a device's daemon runs: the commit the device owes it
# (keying its path, docs/crypto.md "Keying the tree") falls due with nothing pushed to the
# device, and the daemon makes it on time by itself, once; the others follow, the group goes
# on, and the device's counts say so. Idle, the daemon sleeps between its timers.
set -u
. "$(cd "$(dirname "$0")" && pwd)/lib.sh"
M=$(realpath "${1:?usage: test_mls_keys_daemon.sh MISSIVE MISSIVED}")
D=$(realpath "${2:?usage: test_mls_keys_daemon.sh MISSIVE MISSIVED}")
in_scratch

start_missived || bad "missived started"
register_people alice bob carol dave
expect 0 "alice makes a group with bob, carol and dave" -- \
    as alice groups create quiet bob@example.org carol@example.org dave@example.org
gid=$(as alice groups | grep "^quiet	" | cut -f3)
for who in bob carol dave; do
    expect 0 "$who takes the Welcome" -- as "$who" receive
    expect 0 "$who accepts" -- as "$who" groups accept "$gid"
done
on_mls dave quiet && ok || bad "the group is on MLS for dave: $(cat groups.txt)"

# alice's founding commit keyed her own path; the node above the last two leaves is blank, and
# each of those two devices owes a keying commit, minutes off. The first one's is brought to 10 s
# from now, and its daemon starts before it falls due.
key="mls-key-by:${gid#group:}"
who=
for w in bob carol dave; do
    [ -n "$(sqlite3 "dev-$w/$w@example.org/state.db" "SELECT 1 FROM settings WHERE key = '$key'")" ] &&
        { who=$w; break; }
done
[ -n "$who" ] && ok || bad "a keying commit owed by a member"
db=dev-$who/$who@example.org/state.db
value=$(sqlite3 "$db" "SELECT hex(value) FROM settings WHERE key = '$key'")
[ "${#value}" = 20 ] && ok || bad "its record: '$value'"
due_ms=$(($(date +%s%3N) + 10000))
sqlite3 "$db" "UPDATE settings SET value = X'$(printf '%016X' "$due_ms")${value:16:4}' WHERE key = '$key'"
owner=$(device_of "$who")
srv_db=srv/missive.db
commits_of_owner() {
    sqlite3 -cmd ".timeout 5000" "$srv_db" \
        "SELECT count(*) FROM mls_commit_log WHERE sender_device = $owner"
}
[ "$(commits_of_owner)" = 0 ] && ok || bad "no commit of $who's yet"

# (its transparency log read each second: MISSIVE_TEST_MONITOR_MS)
(MISSIVE_TEST_MONITOR_MS=1000 exec "$M" --data-dir "dev-$who" daemon >daemon.out 2>daemon.err) &
daemon=$!
sock=dev-$who/$who@example.org/daemon.sock
for _ in $(seq 50); do [ -S "$sock" ] && break; sleep 0.1; done
[ -S "$sock" ] && ok || bad "$who's daemon runs: $(cat daemon.err)"
# online (its first receive made) before the commit is due, and no commit yet
for _ in $(seq 50); do
    daemon_rpc "$sock" '{"jsonrpc":"2.0","id":1,"method":"status"}' >out.txt
    [ "$(field 'r["result"]["online"]')" = True ] && break
    sleep 0.1
done
[ "$(field 'r["result"]["online"]')" = True ] && [ "$(date +%s%3N)" -lt $((due_ms - 2000)) ] && ok ||
    bad "online two seconds before the commit is due: $(cat out.txt)"
[ "$(commits_of_owner)" = 0 ] && ok || bad "not before it is due"

# nothing is sent to the device meanwhile: the daemon's own timer makes the commit
for _ in $(seq 300); do [ "$(commits_of_owner)" = 1 ] && break; sleep 0.1; done
[ "$(commits_of_owner)" = 1 ] && ok || bad "$who's daemon made the keying commit: $(cat daemon.err)"
[ "$(sqlite3 -cmd ".timeout 5000" "$db" "SELECT count(*) FROM settings WHERE key = '$key'")" = 0 ] &&
    ok || bad "the record of it is gone"
expect 0 "its counts, through the daemon" -- as "$who" -o json devices
[ "$(field '[[d["mls_keyings_made"], d["mls_keyings_put_off"]] for d in r if d["this_device"]][0]')" = "[1, 0]" ] &&
    ok || bad "one keying made: $(cat out.txt)"
# idle: the transparency log's read each second wakes it once a second, not in a loop
cpu() { awk '{print $14 + $15}' "/proc/$daemon/stat"; }
before=$(cpu)
sleep 4
spent=$(($(cpu) - before))
[ "$spent" -lt "$(getconf CLK_TCK)" ] && ok ||
    bad "an idle daemon spent $spent ticks of CPU in 4 s"
[ "$(commits_of_owner)" = 1 ] && ok || bad "and once"

# the others follow it and the group goes on, both ways
for w in alice bob carol dave; do
    [ "$w" = "$who" ] || expect 0 "$w takes the commit" -- as "$w" receive
done
expect 0 "alice writes" -- as alice send --group quiet --text "after the tree was keyed"
expect 0 "the daemon has it" -- as "$who" receive
grep -q "after the tree was keyed" out.txt && ok || bad "$who reads it: $(cat out.txt)"
expect 0 "$who answers" -- as "$who" send --group "$gid" --text "$who here"
for w in alice bob carol dave; do
    [ "$w" = "$who" ] && continue
    expect 0 "$w receives" -- as "$w" receive
    grep -q "$who here" out.txt && ok || bad "$w reads $who's: $(cat out.txt)"
    grep -q "could not be read" out.txt && bad "$w: unreadable: $(cat out.txt)" || ok
done
on_mls "$who" quiet && ok || bad "still on MLS: $(cat groups.txt)"
finish
