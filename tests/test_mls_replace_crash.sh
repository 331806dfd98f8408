#!/usr/bin/env bash
# The replacement of a member device's MLS leaf (docs/crypto.md, "Joining again"), crashed and
# raced. bob's device, restored from a backup (which holds no MLS state), writes to the group;
# his message asks the group's admin to add the device again. alice's device (the admin) is
# killed at each write and sync of the receive that takes the ask and replaces the leaf
# (tests/faulty_io.c preloaded into `missive receive`, her data directory matched): the ask is
# recorded, the KeyPackage claimed, the commit taken by the delivery service, the state and
# its Welcome stored, the Welcome sent, each a step a crash can fall between. Whatever the
# crash left, her next receive goes on: bob's message is shown once, bob joins from a Welcome,
# and the three talk on MLS after. Then bob loses his state again and alice's device runs two
# receives at once over his second ask: the leaf is replaced once, and nobody is told of a
# refused commit or Welcome.
set -u
. "$(cd "$(dirname "$0")" && pwd)/lib.sh"
M=$(realpath "${1:?usage: test_mls_replace_crash.sh MISSIVE MISSIVED FAULTY_IO}")
D=$(realpath "${2:?usage: test_mls_replace_crash.sh MISSIVE MISSIVED FAULTY_IO}")
F=$(realpath "${3:?usage: test_mls_replace_crash.sh MISSIVE MISSIVED FAULTY_IO}")
in_scratch

export MISSIVE_BACKUP_PASSPHRASE="a long enough backup passphrase"
start_missived || bad "missived started"
register_people alice bob carol
expect 0 "alice makes a group with bob and carol" -- \
    as alice groups create swap bob@example.org carol@example.org
gid=$(as alice groups | grep "^swap	" | cut -f3)
for who in bob carol; do
    expect 0 "$who takes the Welcome" -- as "$who" receive
    expect 0 "$who accepts" -- as "$who" groups accept "$gid"
done
on_mls bob swap && ok || bad "the group is on MLS for bob: $(cat groups.txt)"
expect 0 "bob's backup" -- as bob backup "$work/bob.backup" --kdf-memory 64 --kdf-passes 1

# lost: bob's device restored from its backup, with no MLS state
lose_state() {
    rm -rf dev-bob
    expect 0 "bob's device restored" -- "$M" --data-dir dev-bob restore "$work/bob.backup"
    on_mls bob swap && bad "a restored device holds MLS state: $(cat groups.txt)" || ok
}
lose_state
expect 0 "bob writes, restored" -- as bob send --group "$gid" --text "bob restored"

# own_commits: how many of alice's commits are kept, their answers not yet in
own_commits() {
    sqlite3 -cmd ".timeout 5000" dev-alice/alice@example.org/state.db \
        "SELECT count(*) FROM settings WHERE key LIKE 'mls-own-commit:%'"
}
# alice's receive killed at its write or sync number k, for k = 0, 1, 2 ... until one finishes
crashes=0 out=0
for k in $(seq 0 400); do
    receive_crashing_at "$k" alice
    rc=$?
    [ "$rc" = 0 ] && break
    [ "$rc" = 137 ] || { bad "a receive exited $rc: $(cat crash.out)"; break; }
    crashes=$((crashes + 1))
    # a crash while her commit was out, its answer not yet in: the commit kept with its state
    [ "$(own_commits)" = 1 ] && out=$((out + 1))
done
[ "$crashes" -ge 20 ] && ok || bad "alice's receive was crashed at $crashes points only"
[ "$out" -ge 1 ] && ok || bad "no crash fell while alice's commit was out"
# what the last crash left undone (a Welcome stored and not sent) goes at the next receive
expect 0 "alice receives again" -- as alice receive
expect 0 "alice's history of the group" -- as alice history --group "$gid"
[ "$(grep -c "bob restored" out.txt)" = 1 ] && ok || bad "bob's message, once: $(cat out.txt)"
[ "$(own_commits)" = 0 ] && ok || bad "a commit of alice's is still kept"

expect 0 "bob receives" -- as bob receive
on_mls bob swap && ok || bad "bob joined again: $(cat groups.txt)"
expect 0 "carol receives" -- as carol receive
expect 0 "alice writes after the crashes" -- as alice send --group "$gid" --text "after the crashes"
for who in bob carol; do
    expect 0 "$who receives alice's" -- as "$who" receive
    grep -q "after the crashes" out.txt && ok || bad "$who reads alice's message: $(cat out.txt)"
done
expect 0 "bob writes on MLS" -- as bob send --group "$gid" --text "bob is back"
for who in alice carol; do
    expect 0 "$who receives bob's" -- as "$who" receive
    grep -q "bob is back" out.txt && ok || bad "$who reads bob's message: $(cat out.txt)"
done
for who in alice bob carol; do
    expect 0 "$who's history" -- as "$who" history --group "$gid"
    grep -q "could not be read" out.txt && bad "$who: a message left unreadable: $(cat out.txt)" || ok
done

# two receives of alice's device at once over bob's second ask (an hour on, as the ask of one
# device is taken at most hourly): one replacement, nothing refused
lose_state
expect 0 "bob writes, restored again" -- as bob send --group "$gid" --text "bob restored twice"
sqlite3 -cmd ".timeout 5000" dev-alice/alice@example.org/state.db \
    "UPDATE settings SET value = substr(value, 1, 8) || zeroblob(8) || substr(value, 17)
     WHERE key LIKE 'mls-rejoin:%' AND length(value) = 49" ||
    bad "alice's record of the first replacement moved back"
# a device takes deliveries on one connection at a time: a receive whose connection the other's
# replaced ends with an input/output error, having taken what it could, and the next takes the
# rest. The second goes past the deliveries lock the first may hold by then (as a program from
# before the lock would): its file is made again, so that the two take the same deliveries at once
as alice receive >r1.out 2>&1 &
r1=$!
sleep 0.2
rm -f dev-alice/alice@example.org/deliveries.lock
as alice receive >r2.out 2>&1 &
r2=$!
ends=0
for r in "$r1:r1.out" "$r2:r2.out"; do
    if wait "${r%%:*}"; then
        ends=$((ends + 1))
    else
        grep -q "input/output error" "${r#*:}" && ok || bad "a receive failed: $(cat "${r#*:}")"
    fi
done
[ "$ends" -ge 1 ] && ok || bad "neither receive ended well: $(cat r1.out r2.out)"
expect 0 "alice receives once more" -- as alice receive
cat out.txt >>r2.out
[ "$(cat r1.out r2.out | grep -c "bob restored twice")" = 1 ] && ok ||
    bad "bob's second message, shown once: $(cat r1.out r2.out)"
grep -q -i "refused" r1.out r2.out && bad "a receive told of a refusal: $(cat r1.out r2.out)" || ok
welcomes=$(sqlite3 -cmd ".timeout 5000" srv/missive.db "SELECT count(*) FROM queue WHERE
    device_id = $(device_of bob) AND suite = 160")
[ "$welcomes" = 2 ] && ok || bad "bob's queue holds $welcomes MLS deliveries, not one commit and one Welcome"
expect 0 "bob receives the new Welcome" -- as bob receive
on_mls bob swap && ok || bad "bob joined once more: $(cat groups.txt)"
grep -q -i "refused\|could not" out.txt && bad "bob told of a refusal: $(cat out.txt)" || ok
expect 0 "bob writes again" -- as bob send --group "$gid" --text "bob once more"
for who in alice carol; do
    expect 0 "$who receives" -- as "$who" receive
    grep -q "bob once more" out.txt && ok || bad "$who reads bob's last: $(cat out.txt)"
    grep -q -i "refused\|could not be read" out.txt && bad "$who told of a refusal: $(cat out.txt)" ||
        ok
done
finish
