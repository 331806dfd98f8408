#!/usr/bin/env bash
# The history of a linked device in the background, against a real missived on
# loopback: the new device is linked and usable at once while messages keep
# flowing; the approving device (through its daemon) uploads the archive with
# progress events; it is killed outright in the middle of the upload and sends
# it again with `devices add --resume-history`; the new device (through its
# daemon) imports it with progress events; afterwards both devices' histories
# are equal. Then a history archive changed on the server is refused with a
# clear error (and again by `link --resume-history`), and an archive over the
# attachment store's limit is told to both ends.
set -u
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"
M=$(realpath "${1:?usage: test_bghistory.sh MISSIVE MISSIVED}")
D=$(realpath "${2:?usage: test_bghistory.sh MISSIVE MISSIVED}")
in_scratch
waiter= flow= adder= ldaemon= sub=
trap 'tm kill-server 2>/dev/null; for p in $sub $flow $adder $waiter $ldaemon $daemon; do kill -TERM "$p" 2>/dev/null; done
      kill -CONT "$pid" 2>/dev/null; for p in $pid; do kill -TERM "$p" 2>/dev/null && wait "$p"; done; kill_left "$work"; rm -rf "$work"' EXIT

export MISSIVED_ACCOUNTS_REGISTER_BURST=100
start_missived || bad "missived started"
register_people alice bob
unset MISSIVE_PASSWORD
lap() { "$M" --data-dir laptop --account alice@example.org "$@"; }

# ---- a history: messages both ways and a file
expect 0 "alice writes" -- as alice send bob@example.org --text "before the laptop"
expect 0 "bob answers" -- as bob send alice@example.org --text "an answer"
printf 'the file\001\002\003' >doc.bin
expect 0 "bob sends a file" -- as bob send alice@example.org --file doc.bin --text "a file"
# and a bigger one, so that the archive takes a while to go up
head -c 24000000 /dev/urandom >big.bin
expect 0 "bob sends a big file" -- as bob send alice@example.org --file big.bin --text "a big file"
expect 0 "alice receives" -- receive_until "a big file" as alice receive

# ---- messages keep flowing from bob to alice while the laptop is linked
(for i in $(seq 12); do "$M" --data-dir dev-bob --account bob@example.org send alice@example.org \
    --text "flowing $i" >/dev/null 2>>flow.err; sleep 0.3; done) &
flow=$!

# ---- the laptop is linked; the phone's CLI is killed outright in the middle of the upload
link_wait alice laptop && ok || bad "the laptop's code: $(cat laptop.out laptop.err)"
("$M" --data-dir dev-alice --account alice@example.org devices add "$code" --yes >add.out 2>add.err) &
adder=$!
# the device is added and its message sent; then the server stops answering, so the upload
# that follows is cut in the middle, and the process is killed there
for _ in $(seq 2000); do grep -q "^added device" add.out 2>/dev/null && break; sleep 0.01; done
kill -STOP "$pid"
grep -q "^added device" add.out && ok || bad "the laptop is added: $(cat add.out add.err)"
wait_for add.err "uploading the history" 100 && ok || bad "the upload starts: $(cat add.err)"
sleep 0.3
kill -KILL "$adder"
wait "$adder" 2>/dev/null
adder=
kill -CONT "$pid"
! grep -q "history sent" add.out add.err && ok || bad "the upload did not end: $(cat add.out add.err)"
laptop_id=$(sed -n 's/^added device \([0-9]*\).*/\1/p' add.out)
link_done && ok || bad "the laptop is linked at once: $(cat laptop.out laptop.err)"
grep -q "history: device 1 sends it in the background" laptop.out && ok ||
    bad "the laptop awaits the history: $(cat laptop.out)"

# usable at once: it sends and receives while its history is still to come
expect 0 "the laptop sends" -- lap send bob@example.org --text "from the laptop"
expect 1 "the history is not there yet" -- lap link alice@example.org --resume-history
grep -q "has not come yet.*devices add --resume-history $laptop_id" err.txt && ok ||
    bad "the laptop says where the history is: $(cat err.txt)"
wait "$flow"
flow=

# alice's phone runs its daemon now, which receives as things come and runs her commands
sock=$work/dev-alice/alice@example.org/daemon.sock
(exec "$M" --data-dir dev-alice daemon >daemon.out 2>daemon.err) &
daemon=$!
for _ in $(seq 100); do [ -S "$sock" ] && break; sleep 0.1; done
[ -S "$sock" ] && ok || bad "alice's daemon runs: $(cat daemon.err)"

# the laptop's daemon receives what flowed to it, then waits for the history
lsock=$work/laptop/alice@example.org/daemon.sock
(exec "$M" --data-dir laptop daemon >ldaemon.out 2>ldaemon.err) &
ldaemon=$!
for _ in $(seq 100); do [ -S "$lsock" ] && break; sleep 0.1; done
[ -S "$lsock" ] && ok || bad "the laptop's daemon runs: $(cat ldaemon.err)"
sleep 2
daemon_rpc "$lsock" --schema 2 --ready lsub --until lacted \
    '{"jsonrpc":"2.0","id":1,"method":"subscribe"}' >lev.txt &
sub=$!
for _ in $(seq 100); do [ -e lsub ] && break; sleep 0.1; done

# ---- the phone sends it again, through its daemon: progress events there and on the laptop
# the answer, then the upload in the background: done once its event is out (within 60 s)
resume_by_daemon() {
    daemon_rpc "$sock" --schema 2 \
        "{\"jsonrpc\":\"2.0\",\"id\":2,\"method\":\"devices\",\"params\":{\"args\":[\"add\",\"$laptop_id\"],\"resume-history\":true,\"output\":\"json\"}}" >rpc.txt
    wait_for ev2.txt '"type": *"link_history_done"' 600
}
events_both "$sock" resume_by_daemon
grep -q '"error"' rpc.txt && bad "the resume through the daemon: $(cat rpc.txt)" || ok
grep -q '"type": *"link_history_progress"' ev2.txt && ok || bad "the phone's progress events: $(cat ev2.txt)"
grep -q '"type": *"link_history_done"' ev2.txt && ok || bad "the phone's done event: $(cat ev2.txt)"
daemon_schema_ok 2 ev2.txt && ok || bad "schema 2 events: $(cat ev2.txt)"
! grep -q link_history ev1.txt && ok || bad "schema 1 has no such events: $(cat ev1.txt)"
wait_for lev.txt "link_history_done" 200 && ok || bad "the laptop imports it: $(cat lev.txt ldaemon.err)"
: >lacted
wait "$sub"
sub=
grep -q '"type": *"link_history_progress"' lev.txt && ok || bad "the laptop's progress events: $(cat lev.txt)"
daemon_schema_ok 2 lev.txt && ok || bad "the laptop's events in schema 2: $(cat lev.txt)"
expect 1 "nothing owed any more" -- as alice devices add --resume-history "$laptop_id"
grep -q "owes device $laptop_id no history" err.txt && ok || bad "owed no more: $(cat err.txt)"
expect 1 "nothing awaited any more" -- lap link alice@example.org --resume-history
grep -q "no history waits" err.txt && ok || bad "awaited no more: $(cat err.txt)"
for p in $ldaemon $daemon; do kill -TERM "$p"; wait "$p" 2>/dev/null; done
ldaemon= daemon=

# ---- afterwards both histories are equal: what came before, what flowed, what the laptop sent
# (as sets: what reached the laptop before its history stays where it came, before the imported)
expect 0 "the phone receives the rest" -- as alice receive
expect 0 "the laptop receives the rest" -- lap receive
as alice history -o json | sed 's#dev-alice/alice@example.org/attachments/#ATTACHMENTS/#g' >phone.history &&
    lap history -o json | sed 's#laptop/alice@example.org/attachments/#ATTACHMENTS/#g' >laptop.history && ok || bad "histories"
sort phone.history >phone.sorted && sort laptop.history >laptop.sorted
grep -q '"text":"flowing 12"' laptop.history && grep -q '"text":"before the laptop"' laptop.history &&
    grep -q '"text":"from the laptop"' laptop.history && ok || bad "the laptop's history: $(cat laptop.history)"
[ "$(grep -c . phone.sorted)" -ge 16 ] && cmp -s phone.sorted laptop.sorted && ok ||
    bad "the laptop's history is the phone's: $(diff phone.sorted laptop.sorted | head -20)"
(cd dev-alice/alice@example.org/attachments && sha256sum -- *) >phone.files
(cd laptop/alice@example.org/attachments && sha256sum -- *) >laptop.files
cmp -s phone.files laptop.files && ok || bad "the files' bytes: $(cat phone.files laptop.files)"
[ "$(grep -c '"flowing' laptop.history)" -eq 12 ] && ok || bad "each message once: $(grep -c '"flowing' laptop.history)"

# ---- an import killed outright in the middle: imported again, each message once
link_wait alice pad || bad "the pad's code: $(cat pad.out pad.err)"
expect 0 "alice adds the pad" -- as alice devices add "$code" --yes
link_done && ok || bad "the pad is linked: $(cat pad.out pad.err)"
pad() { "$M" --data-dir pad --account alice@example.org "$@"; }
# exec: the kill below reaches the receive itself, not only a subshell around it
(exec "$M" --data-dir pad --account alice@example.org receive --wait 5 >padrecv.out 2>padrecv.err) &
adder=$!
# the download begins; the server stops answering in its middle, and the import is killed
for _ in $(seq 3000); do grep -q "importing the history from device 1" padrecv.out 2>/dev/null && break; sleep 0.01; done
kill -STOP "$pid"
grep -q "importing the history from device 1" padrecv.out && ok || bad "the import starts: $(cat padrecv.out padrecv.err)"
sleep 0.3
kill -KILL "$adder"
wait "$adder" 2>/dev/null
adder=
kill -CONT "$pid"
! grep -q "history imported" padrecv.out && ok || bad "the import was cut: $(cat padrecv.out)"
# imported again when the message that named it comes again, or by --resume-history
expect 0 "the pad receives again" -- pad receive --wait 2
if ! grep -q "history imported from device 1" out.txt; then
    pad link alice@example.org --resume-history >resume.out 2>resume.err
    rc=$?
    if [ $rc -eq 0 ]; then
        grep -q "history imported" resume.out && ok || bad "imported again: $(cat resume.out resume.err)"
    elif [ $rc -eq 1 ] && grep -q "no history waits" resume.err; then
        # the import had ended (stored, its last line not yet written) when it was killed, on a
        # loaded machine: nothing to resume; the pad's history is compared with the phone's below
        ok
    else
        bad "the pad's import is resumed: exit $rc ($(cat resume.out resume.err))"
    fi
fi
expect 1 "nothing waits on the pad any more" -- pad link alice@example.org --resume-history
grep -q "no history waits" err.txt && ok || bad "nothing waits: $(cat err.txt)"
expect 0 "the phone's history" -- as alice history -o json
sed 's#dev-alice/alice@example.org/attachments/#ATTACHMENTS/#g' out.txt | sort >phone.sorted
# (the message killed in the middle of its handling, its session step kept, comes again
# unreadable, and is listed so: at most that one line more)
pad history -o json | sed 's#pad/alice@example.org/attachments/#ATTACHMENTS/#g' | sort >pad.all
grep -v '"status":"unreadable"' pad.all >pad.sorted
[ "$(grep -c '"status":"unreadable"' pad.all)" -le 1 ] && ok || bad "unreadable lines: $(grep unreadable pad.all)"
cmp -s phone.sorted pad.sorted && ok || bad "the pad's history is the phone's: $(diff phone.sorted pad.sorted | head)"

# ---- a hostile server changes the archive: refused, clearly, and again on a resume
link_wait alice tablet || bad "the tablet's code: $(cat tablet.out tablet.err)"
expect 0 "alice adds the tablet" -- as alice devices add "$code" --yes
grep -q "history sent to device" out.txt && ok || bad "the tablet's history is sent: $(cat out.txt err.txt)"
link_done && ok || bad "the tablet is linked: $(cat tablet.out tablet.err)"
blob=$(ls -t srv/blobs | head -1)
/usr/bin/python3 -c "import sys; p=sys.argv[1]; b=bytearray(open(p,'rb').read()); b[100]^=1; open(p,'wb').write(b)" "srv/blobs/$blob"
tab() { "$M" --data-dir tablet --account alice@example.org "$@"; }
expect 0 "the tablet receives" -- receive_until "was not imported" tab receive
grep -q "was not imported: the archive is not the one device 1 sent (changed on the server?)" out.txt && ok ||
    bad "a changed archive is refused: $(cat out.txt err.txt)"
expect 0 "the tablet's history" -- tab history
! grep -q "before the laptop" out.txt && ok || bad "nothing of it is imported: $(cat out.txt)"
expect 3 "a resume refuses it too" -- tab link alice@example.org --resume-history
grep -q "not the one device 1 sent (changed on the server?)" err.txt && ok || bad "the resume says why: $(cat err.txt)"

# ---- what is refused before anything is asked: an id that is none; a fifth history owed
expect 2 "an id that is no number" -- as alice devices add --resume-history laptop
expect 2 "--resume-history with a code" -- as alice devices add --resume-history "$code" --no-history
db=dev-alice/alice@example.org/state.db
for i in 91 92 93 94; do sqlite3 "$db" "INSERT INTO settings VALUES ('link:history-out:$i', x'00')"; done
as alice devices -o json >devices.before
link_wait alice fifth || bad "the fifth's code: $(cat fifth.out fifth.err)"
expect 1 "a fifth history owed" -- as alice devices add "$code" --yes
grep -q "4 histories wait to be sent to linked devices" err.txt && ok || bad "the bound: $(cat err.txt)"
as alice devices -o json >devices.after
[ -s devices.before ] && cmp -s devices.before devices.after && ok || bad "no device was added: $(cat devices.after)"
kill -TERM "$waiter"; wait "$waiter" 2>/dev/null; waiter=
sqlite3 "$db" "DELETE FROM settings WHERE key LIKE 'link:history-out:9_'"

# ---- an archive over the attachment store's limit: both ends are told
kill -TERM "$pid" && wait "$pid"
MISSIVED_BLOBS_MAX_SIZE=4096 start_missived || bad "missived starts again with a small limit"
link_wait alice desk || bad "the desk's code: $(cat desk.out desk.err)"
expect 1 "alice adds the desk" -- as alice devices add "$code" --yes
grep -q "^added device" out.txt && ok || bad "the desk is added: $(cat out.txt err.txt)"
grep -q "sending the history" err.txt && grep -q "resume-history" err.txt && ok ||
    bad "the phone says the history was not sent: $(cat err.txt)"
link_done && ok || bad "the desk is linked: $(cat desk.out desk.err)"
# the desk's chat is told, on its status line and in its notes
chat_in desk desk 200
for _ in $(seq 150); do tm capture-pane -p -J -t desk | grep -q "sends no history" && break; sleep 0.1; done
tm capture-pane -p -J -t desk | grep -q "device 1 sends no history: the history ([0-9]* bytes) is over the attachment store" && ok ||
    bad "the desk's chat tells: $(tm capture-pane -p -J -t desk)"
tm kill-session -t desk

finish
