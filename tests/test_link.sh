#!/usr/bin/env bash
# Linking a device by QR code, without the password, against a real missived on
# loopback: the new device shows its code (text and PNG), a device of the account
# reads it (the PNG through libzbar), adds and approves it and sends it the
# account; the new device is a full device at once. Then what is refused: a
# code from another account, a PNG that is no QR code, a damaged image, a code
# used twice, a flood of provisioning addresses from one address; the daemon.
set -u
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"
M=$(realpath "${1:?usage: test_link.sh MISSIVE MISSIVED}")
D=$(realpath "${2:?usage: test_link.sh MISSIVE MISSIVED}")
in_scratch
waiter=
trap 'tm kill-server 2>/dev/null; for p in $waiter $daemon $pid; do kill -TERM "$p" 2>/dev/null && wait "$p"; done; kill_left "$work"; rm -rf "$work"' EXIT

# room for the provisioning addresses this test opens beside its registrations
export MISSIVED_ACCOUNTS_REGISTER_BURST=100
# connections authenticate within 5 s; a device waiting to be linked waits longer (below)
export MISSIVED_SERVER_AUTH_TIMEOUT_S=5
start_missived || bad "missived started"
metric() { python3 -c 'import sys, urllib.request; print(urllib.request.urlopen(sys.argv[1]).read().decode())' "http://127.0.0.1:$(awk '/^http/{print $2}' srv/missived.ports)/metrics" | awk -v m="missived_$1" '$1 == m {print $2}'; }
register_people alice bob
unset MISSIVE_PASSWORD # linking by code needs none


# ---- history to bring along: messages both ways, a file, a group and its message
expect 0 "alice writes first" -- as alice send bob@example.org --text "before the laptop"
expect 0 "bob answers" -- as bob send alice@example.org --text "an answer"
printf 'the file\001\002\003' >doc.bin
expect 0 "bob sends a file" -- as bob send alice@example.org --file doc.bin --text "a file"
expect 0 "alice makes a group" -- as alice groups create family bob@example.org
expect 0 "alice writes to it" -- as alice send --group family --text "to the family"
expect 0 "alice receives" -- receive_until "a file" as alice receive
[ -n "$(ls dev-alice/alice@example.org/attachments/)" ] && ok || bad "alice has bob's file"

# ---- the new laptop shows its code as text, a QR code and a PNG; alice's phone reads the PNG
link_wait alice laptop --png code.png && ok || bad "the code is shown: $(cat laptop.out laptop.err)"
[ "${#code}" -eq 177 ] && ok || bad "the code's length: $code"
grep -q '▀\|▄\|█' laptop.out && ok || bad "a QR code drawn in the terminal"
[ -s code.png ] && [ "$(stat -c %a code.png)" = 600 ] && ok || bad "the PNG is written, readable by its owner only"
# a person takes a while to scan it: the waiting device outlasts the server's auth_timeout_s
sleep 7
expect 0 "alice adds the laptop from the PNG" -- as alice devices add --image code.png --yes
grep -q "^added device" out.txt && ok || bad "added: $(cat out.txt err.txt)"
fp_new=$(grep '^new device:' out.txt | sed 's/^new device: *//')
fp_alice=$(grep '^this device' out.txt | sed 's/^this device ([0-9]*): //')
link_done && ok || bad "the laptop is linked: $(cat laptop.out laptop.err)"
grep -q "linked: this is device [0-9]* of alice@example.org, approved by device 1 (fingerprint $fp_alice)" laptop.out &&
    ok || bad "the laptop shows the approver's fingerprint: $(cat laptop.out)"
lap() { "$M" --data-dir laptop --account alice@example.org "$@"; }
grep -q "history sent to device" out.txt && ok || bad "the phone sent the history after the link: $(cat out.txt err.txt)"
grep -q "history: device 1 sends it in the background" laptop.out && ok || bad "the laptop awaits its history: $(cat laptop.out laptop.err)"
expect 0 "the laptop receives its history" -- receive_until "history imported" lap receive
grep -q "history imported from device 1" out.txt && ok || bad "the history came: $(cat out.txt err.txt)"
# both devices' histories, groups and files are equal
# (a file's line names it in each device's own directory)
as alice history -o json | sed 's#dev-alice/alice@example.org/attachments/#ATTACHMENTS/#g' >phone.history &&
    lap history -o json | sed 's#laptop/alice@example.org/attachments/#ATTACHMENTS/#g' >laptop.history && ok || bad "histories"
grep -q 'ATTACHMENTS/' laptop.history && ok || bad "the file's line names the laptop's own copy"
[ "$(grep -c . phone.history)" -ge 4 ] && cmp -s phone.history laptop.history && ok ||
    bad "the laptop's history is the phone's: $(diff phone.history laptop.history | head -20)"
grep -q '"text":"to the family"' laptop.history && grep -q '"text":"a file' laptop.history && ok || bad "group and file messages in the history: $(cat laptop.history)"
# the phone, which approved the laptop, adds it to the family's MLS group at its next receive;
# the laptop joins from its Welcome, and both hold the group on MLS
expect 0 "the phone adds the laptop to its groups on MLS" -- as alice receive
expect 0 "the laptop joins" -- lap receive
as alice groups -o json >phone.groups && lap groups -o json >laptop.groups && cmp -s phone.groups laptop.groups &&
    grep -q '"name":"family".*"mls":true' laptop.groups && ok || bad "the laptop's groups: $(cat phone.groups laptop.groups)"
expect 0 "bob receives the group" -- as bob receive
family=$(as bob -o json groups | python3 -c 'import json, sys; print([r["id"] for r in map(json.loads, sys.stdin) if r["name"] == "family"][0])')
expect 0 "bob accepts it" -- as bob groups accept "$family"
expect 0 "bob writes to the family" -- as bob send --group family --text "to both of alice's devices"
expect 0 "the laptop reads it" -- receive_until "to both of alice's devices" lap receive
(cd dev-alice/alice@example.org/attachments && sha256sum -- *) >phone.files
(cd laptop/alice@example.org/attachments && sha256sum -- *) >laptop.files
[ -s phone.files ] && cmp -s phone.files laptop.files && ok || bad "the files' bytes: $(cat phone.files laptop.files)"
[ ! -e laptop/alice@example.org/link-history ] && [ ! -e dev-alice/alice@example.org/link-history.msvb ] && ok ||
    bad "no archive is left behind"
expect 0 "the laptop's own fingerprint" -- lap fingerprint
grep -qF "$fp_new" out.txt && ok || bad "the fingerprint alice confirmed is the laptop's: $fp_new / $(cat out.txt)"

# a full device at once: it sends, it receives
expect 0 "bob writes to alice" -- as bob send alice@example.org --text "hello both"
expect 0 "the laptop receives" -- receive_until "hello both" lap receive
grep -q "bob@example.org: hello both" out.txt && ok || bad "the laptop got bob's message: $(cat out.txt err.txt)"
expect 0 "the laptop sends" -- lap send bob@example.org --text "from the laptop"
expect 0 "bob receives from the laptop" -- receive_until "from the laptop" as bob receive
grep -q "alice@example.org: from the laptop" out.txt && ok || bad "bob got the laptop's message: $(cat out.txt err.txt)"
grep -q "device [0-9]* was added to this account\|changed" out.txt err.txt || true
expect 0 "alice's phone receives" -- receive_until "hello both" as alice receive
grep -q "bob@example.org: hello both" out.txt && ok || bad "alice's phone got bob's message too: $(cat out.txt)"
# the contacts came by sync
expect 0 "the laptop's contacts" -- lap contacts
grep -q "bob@example.org" out.txt && ok || bad "alice's contacts reached the laptop: $(cat out.txt)"

# ---- a code used twice: the address is gone once the laptop took its message
expect 1 "the laptop's code again" -- as alice devices add "$code" --yes
grep -q "no device waits at that address\|linked already" err.txt && ok || bad "a used code: $(cat err.txt)"

# ---- a code from another account: bob reads the tablet's code, which waits for alice's
link_wait alice tablet || bad "the tablet's code: $(cat tablet.out tablet.err)"
expect 0 "bob adds the device (his choice: he confirmed its fingerprint)" -- as bob devices add "$code" --yes
link_done
[ $? -eq 3 ] && ok || bad "the tablet refuses what bob's device sent: $(cat tablet.out tablet.err)"
grep -q "did not come from a device of alice@example.org" tablet.err && ok || bad "why the tablet refused: $(cat tablet.err)"
# nothing half-linked is kept: the tablet starts again with the same keys, and alice adds it
expect 1 "the tablet is no device yet" -- "$M" --data-dir tablet --account alice@example.org receive --wait 0
grep -q "not found" err.txt && ok || bad "the tablet has no device id: $(cat err.txt)"
link_wait alice tablet || bad "the tablet shows a new code: $(cat tablet.out tablet.err)"
expect 0 "alice adds the tablet, without the history" -- as alice devices add "$code" --yes --no-history
link_done && ok || bad "the tablet is linked at its second try: $(cat tablet.out tablet.err)"
! grep -q "history imported" tablet.out && ok || bad "--no-history sends none"
expect 0 "the tablet's history" -- "$M" --data-dir tablet --account alice@example.org history
! grep -q "before the laptop" out.txt && ok || bad "the tablet has no history: $(cat out.txt)"

# ---- a new device stopped while it waits starts again; its address goes with its connection
link_wait alice desk || bad "the desk's code: $(cat desk.out desk.err)"
old=$code
kill -KILL "$waiter"; wait "$waiter" 2>/dev/null; waiter=
expect 1 "the code of a device that went away" -- as alice devices add "$old" --yes
grep -q "no device waits at that address" err.txt && ok || bad "a gone address: $(cat err.txt)"
link_wait alice desk || bad "the desk shows a new code: $(cat desk.out desk.err)"
[ "$code" != "$old" ] && ok || bad "a new code each time"
expect 0 "alice adds the desk" -- as alice devices add "$code" --yes
link_done && ok || bad "the desk is linked after its restart: $(cat desk.out desk.err)"

# ---- what devices add refuses before it asks the server anything
expect 2 "not a code" -- as alice devices add "missive:join?g=00" --yes
grep -q "not a link code" err.txt && ok || bad "not a code: $(cat err.txt)"
expect 2 "a later version's code" -- as alice devices add "missive-link:2:00" --yes
grep -q "newer version" err.txt && ok || bad "a later version: $(cat err.txt)"
echo "hello" >not.png
expect 1 "a file that is no PNG" -- as alice devices add --image not.png --yes
grep -q "not a PNG image" err.txt && ok || bad "no PNG: $(cat err.txt)"
head -c 300 code.png >cut.png
expect 1 "a damaged PNG" -- as alice devices add --image cut.png --yes
grep -q "damaged\|not a PNG" err.txt && ok || bad "a damaged PNG: $(cat err.txt)"
# PNGs drawn here: one with no QR code, one claiming 100000 x 100000 pixels
python3 - <<'PY'
import struct, zlib
def png(w, h, rows):
    def chunk(t, d): return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)) +
            chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))
open("blank.png", "wb").write(png(64, 64, b"".join(b"\0" + b"\xff" * 64 for _ in range(64))))
open("huge.png", "wb").write(png(100000, 100000, b"\0" * 100))
PY
expect 1 "a PNG with no QR code" -- as alice devices add --image blank.png --yes
grep -q "no QR code found" err.txt && ok || bad "no QR code: $(cat err.txt)"
expect 1 "a huge PNG" -- as alice devices add --image huge.png --yes
grep -q "larger than 4096" err.txt && ok || bad "a huge PNG: $(cat err.txt)"
expect 1 "not confirmed" -- sh -c "echo n | '$M' --data-dir dev-alice --account alice@example.org devices add '$old'"
grep -q "not added" err.txt && ok || bad "not confirmed: $(cat err.txt)"

# ---- a flood of provisioning addresses from one address is bounded, refused clearly, counted
refused_before=$(metric provision_refused_total)
waiters=
for i in 1 2 3 4; do link_wait alice "flood$i" && waiters="$waiters $waiter" || bad "waiting device $i: $(cat "flood$i.err")"; done
waiter=
expect 1 "a fifth device waiting from one address" -- "$M" --data-dir flood5 link alice@example.org --server "$server" --qr
grep -q "too many devices wait to be linked from this address" err.txt && ok || bad "the fifth: $(cat err.txt)"
[ "$(metric provision_refused_total)" -gt "${refused_before:-0}" ] && ok || bad "the refusal is counted"
[ "$(metric provision_opened_total)" -ge 8 ] && ok || bad "opened addresses are counted: $(metric provision_opened_total)"
for w in $waiters; do kill -TERM "$w"; wait "$w" 2>/dev/null; done

# ---- the password path, for an account with no device left: who is told
register_people carol
export MISSIVE_PASSWORD="correct horse battery"
expect 0 "bob writes to carol" -- as bob send carol@example.org --text "hi carol"
expect 0 "carol answers" -- sh -c "'$M' --data-dir dev-carol --account carol@example.org receive >/dev/null && '$M' --data-dir dev-carol --account carol@example.org send bob@example.org --text 'hi bob'"
expect 0 "bob hears carol" -- receive_until "hi bob" as bob receive
# with a device left, a device linked with the password waits, and the device is told how it came
expect 0 "a device linked with the password" -- "$M" --data-dir carol-spare link carol@example.org --server "$server"
spare=$(sed -n 's/.*this is device \([0-9]*\) of carol.*/\1/p' out.txt)
expect 0 "carol's device receives" -- receive_until "asks to join" "$M" --data-dir dev-carol --account carol@example.org receive
grep -q "device $spare asks to join this account with the account password" out.txt && ok ||
    bad "carol's device is told the password was used: $(cat out.txt)"
expect 0 "carol removes it" -- "$M" --data-dir dev-carol --account carol@example.org devices remove "$spare"
# no device left: the password adds one at once; bob is told carol's devices changed
expect 0 "carol's devices" -- "$M" --data-dir dev-carol --account carol@example.org devices
last=$(awk '/this device/ {print $1}' out.txt)
expect 0 "carol's last device goes" -- "$M" --data-dir dev-carol --account carol@example.org devices remove "$last" --yes
expect 0 "carol links a new one with the password" -- "$M" --data-dir carol-new link carol@example.org --server "$server"
grep -q "linked: this is device" out.txt && ok || bad "linked at once: $(cat out.txt err.txt)"
expect 0 "the new device writes to bob" -- "$M" --data-dir carol-new --account carol@example.org send bob@example.org --text "carol again"
expect 0 "bob receives" -- receive_until "carol again" as bob receive
grep -q "the devices of carol@example.org changed" err.txt && grep -q "carol again" out.txt && ok ||
    bad "bob is told carol's devices changed: $(cat out.txt err.txt)"
unset MISSIVE_PASSWORD

# ---- the daemon: devices add is a method; without --yes it asks for it; alice's laptop hears
sock=$work/dev-alice/alice@example.org/daemon.sock
(exec "$M" --data-dir dev-alice daemon >daemon.out 2>daemon.err) &
daemon=$!
for _ in $(seq 100); do [ -S "$sock" ] && break; sleep 0.1; done
link_wait alice watch || bad "the watch's code: $(cat watch.out watch.err)"
daemon_rpc "$sock" --schema 2 \
    "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"devices\",\"params\":{\"args\":[\"add\",\"$code\"]}}" >rpc.txt
grep -q '"id": *1, *"error"\|"error".*"id": *1' rpc.txt && grep -q -- "--yes" rpc.txt && ok ||
    bad "the daemon does not add without --yes: $(cat rpc.txt)"
# the answer, then the history in the background: done once its event is out (within 30 s)
add_by_daemon() {
    daemon_rpc "$sock" --schema 2 \
        "{\"jsonrpc\":\"2.0\",\"id\":2,\"method\":\"devices\",\"params\":{\"args\":[\"add\",\"$code\"],\"yes\":true,\"output\":\"json\"}}" >rpc.txt
    wait_for ev2.txt '"type": *"link_history_done"' 300
}
events_both "$sock" add_by_daemon
grep -q '"type": *"device_added"' rpc.txt && ok || bad "added by the daemon: $(cat rpc.txt)"
daemon_schema_ok 2 rpc.txt && ok || bad "schema 2 answers: $(cat rpc.txt)"
daemon_schema_ok 2 ev2.txt && ok || bad "schema 2 events: $(cat ev2.txt)"
daemon_schema_ok 1 ev1.txt && ok || bad "schema 1 events: $(cat ev1.txt)"
link_done && ok || bad "the watch is linked through the daemon: $(cat watch.out watch.err)"
grep -q '"type": *"link_history_done"' ev2.txt && ok || bad "the daemon tells the history was sent: $(cat ev2.txt)"
! grep -q 'link_history' ev1.txt && ok || bad "schema 1 has no history events: $(cat ev1.txt)"
expect 0 "the watch receives its history" -- receive_until "history imported" "$M" --data-dir watch --account alice@example.org receive
grep -q "history imported" out.txt && ok || bad "with the history: $(cat out.txt err.txt)"
kill -TERM "$daemon" && wait "$daemon"
daemon=
expect 0 "the laptop hears of the watch" -- receive_until "was added to this account" lap receive
grep -q "device [0-9]* was added to this account" out.txt && ok || bad "the laptop is told: $(cat out.txt err.txt)"

# ---- the chat: /link CODE shows both fingerprints, /link CODE yes adds the device
screen() { tm capture-pane -p -J -t "$1"; }
waitfor() {
    for _ in $(seq 150); do screen "$1" | grep -qF -- "$2" && return 0; sleep 0.1; done
    return 1
}
link_wait alice pad || bad "the pad's code: $(cat pad.out pad.err)"
CHAT_ROWS=40 chat_in alice dev-alice 300
waitfor alice "online" && ok || bad "alice's chat starts: $(screen alice)"
tm send-keys -t alice "/link missive-link:1:00" Enter
waitfor alice "/link takes the code" && ok || bad "/link's usage: $(screen alice)"
tm send-keys -t alice "/link $code" Enter
fp_pad=$(python3 -c 'import sys; print(" ".join(sys.argv[1][-64:][i:i+4] for i in range(0, 64, 4)))' "$code")
waitfor alice "new device: $fp_pad" && ok || bad "/link shows the new device's fingerprint ($fp_pad): $(screen alice)"
tm send-keys -t alice "/link $code yes" Enter
waitfor alice "added device" && ok || bad "/link yes adds it: $(screen alice)"
link_done && ok || bad "the pad is linked from the chat: $(cat pad.out pad.err)"
tm kill-session -t alice

finish
