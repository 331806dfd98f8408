#!/usr/bin/env bash
# A device killed at each write and sync while it takes a message of a group on MLS
# (tests/faulty_io.c preloaded into `missive receive`, its data directory matched): the next
# receive shows the message, once, and never a message "that could not be read"; the group
# goes on after. The message's key leaves the group's state only once the message is stored.
set -u
. "$(cd "$(dirname "$0")" && pwd)/lib.sh"
M=$(realpath "${1:?usage: test_mls_crash.sh MISSIVE MISSIVED FAULTY_IO}")
D=$(realpath "${2:?usage: test_mls_crash.sh MISSIVE MISSIVED FAULTY_IO}")
F=$(realpath "${3:?usage: test_mls_crash.sh MISSIVE MISSIVED FAULTY_IO}")
in_scratch

start_missived || bad "missived started"
register_people alice bob
expect 0 "alice makes a group with bob" -- as alice groups create crash bob@example.org
gid=$(as alice groups | grep "^crash	" | cut -f3)
expect 0 "bob takes its Welcome" -- as bob receive
expect 0 "bob accepts" -- as bob groups accept "$gid"
on_mls bob crash && ok || bad "the group is on MLS for bob: $(cat groups.txt)"
expect 0 "alice writes to the group" -- as alice send --group crash --text "through the crashes"

# bob's receive killed at its write or sync number k, for k = 0, 1, 2 ... until one finishes;
# some crashes fall after the key left the state, what it gave kept for the next receive
crashes=0 kept=0
db=$(echo dev-bob/bob@example.org/state.db)
for k in $(seq 0 200); do
    receive_crashing_at "$k" bob
    rc=$?
    [ "$rc" = 0 ] && break
    [ "$rc" = 137 ] || { bad "a receive exited $rc: $(cat crash.out)"; break; }
    crashes=$((crashes + 1))
    [ "$(sqlite3 -cmd ".timeout 5000" "$db" "SELECT count(*) FROM settings WHERE key LIKE 'mls-in:%'")" = 1 ] ||
        continue
    kept=$((kept + 1))
    # a backup made now holds the message once it is stored, never what was kept of it
    if [ "$kept" = 1 ]; then
        MISSIVE_BACKUP_PASSPHRASE="a long enough backup passphrase" expect 0 "bob's backup" -- \
            as bob backup "$work/bob.backup" --kdf-memory 64 --kdf-passes 1
        MISSIVE_BACKUP_PASSPHRASE="a long enough backup passphrase" expect 0 "restored" -- \
            "$M" --data-dir restored restore "$work/bob.backup"
        [ "$(sqlite3 restored/bob@example.org/state.db "SELECT count(*) FROM settings WHERE key LIKE 'mls-in:%'")" = 0 ] &&
            ok || bad "the backup holds what was kept of the message"
        rm -rf restored
    fi
done
[ "$crashes" -ge 5 ] && ok || bad "the receive was crashed at $crashes points only"
[ "$kept" -ge 1 ] && ok || bad "no crash fell between the key's going and the message's storing"
expect 0 "bob's history of the group" -- as bob history --group "$gid"
[ "$(grep -c "through the crashes" out.txt)" = 1 ] && ok || bad "the message, once: $(cat out.txt)"
grep -q "could not be read" out.txt && bad "a message left unreadable: $(cat out.txt)" || ok
[ "$(sqlite3 "$db" "SELECT count(*) FROM settings WHERE key LIKE 'mls-in:%'")" = 0 ] && ok ||
    bad "what the message gave is still kept"

# the group goes on: a message each way, on MLS
expect 0 "alice writes again" -- as alice send --group crash --text "after the crashes"
expect 0 "bob receives it" -- as bob receive
grep -q "after the crashes" out.txt && ok || bad "bob reads the next message: $(cat out.txt)"
expect 0 "bob answers" -- as bob send --group "$gid" --text "bob was here"
expect 0 "alice receives it" -- as alice receive
grep -q "bob was here" out.txt && ok || bad "alice reads bob's: $(cat out.txt)"
grep -q "could not be read" out.txt && bad "alice: unreadable: $(cat out.txt)" || ok
on_mls bob crash && ok || bad "still on MLS: $(cat groups.txt)"
finish
