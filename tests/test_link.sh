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
trap 'tm kill-server 2>/dev/null; for p in $waiter $daemon $pid; do kill -TERM "$p" 2>/dev/null && wait "$p"; done; rm -rf "$work"' EXIT

start_missived || bad "missived started"
register_people alice bob
unset MISSIVE_PASSWORD # linking by code needs none

# link_wait NAME DIR [ARGS...]: `missive link NAME@example.org --qr` in the background,
# its output in DIR.out/DIR.err; waits until its code is shown, in $code
link_wait() {
    local who=$1 dir=$2
    shift 2
    (exec "$M" --data-dir "$dir" link "$who@example.org" --server "$server" --qr "$@" \
        >"$dir.out" 2>"$dir.err") &
    waiter=$!
    code=
    for _ in $(seq 100); do
        code=$(grep -o 'missive-link:1:[0-9a-f:]*' "$dir.out" 2>/dev/null | head -1)
        [ -n "$code" ] && return 0
        sleep 0.1
    done
    return 1
}
link_done() { wait "$waiter"; local rc=$?; waiter=; return $rc; }

# ---- the new laptop shows its code as text, a QR code and a PNG; alice's phone reads the PNG
link_wait alice laptop --png code.png && ok || bad "the code is shown: $(cat laptop.out laptop.err)"
[ "${#code}" -eq 177 ] && ok || bad "the code's length: $code"
grep -q '▀\|▄\|█' laptop.out && ok || bad "a QR code drawn in the terminal"
[ -s code.png ] && [ "$(stat -c %a code.png)" = 600 ] && ok || bad "the PNG is written, readable by its owner only"
expect 0 "alice adds the laptop from the PNG" -- as alice devices add --image code.png --yes
grep -q "^added device" out.txt && ok || bad "added: $(cat out.txt err.txt)"
fp_new=$(grep '^new device:' out.txt | sed 's/^new device: *//')
fp_alice=$(grep '^this device' out.txt | sed 's/^this device ([0-9]*): //')
link_done && ok || bad "the laptop is linked: $(cat laptop.out laptop.err)"
grep -q "linked: this is device [0-9]* of alice@example.org, approved by device 1 (fingerprint $fp_alice)" laptop.out &&
    ok || bad "the laptop shows the approver's fingerprint: $(cat laptop.out)"
lap() { "$M" --data-dir laptop --account alice@example.org "$@"; }
expect 0 "the laptop's own fingerprint" -- lap fingerprint
grep -qF "$fp_new" out.txt && ok || bad "the fingerprint alice confirmed is the laptop's: $fp_new / $(cat out.txt)"

# a full device at once: it sends, it receives
expect 0 "bob writes to alice" -- as bob send alice@example.org --text "hello both"
expect 0 "the laptop receives" -- lap receive --wait 2
grep -q "bob@example.org: hello both" out.txt && ok || bad "the laptop got bob's message: $(cat out.txt err.txt)"
expect 0 "the laptop sends" -- lap send bob@example.org --text "from the laptop"
expect 0 "bob receives from the laptop" -- as bob receive --wait 2
grep -q "alice@example.org: from the laptop" out.txt && ok || bad "bob got the laptop's message: $(cat out.txt err.txt)"
grep -q "device [0-9]* was added to this account\|changed" out.txt err.txt || true
expect 0 "alice's phone receives" -- as alice receive --wait 2
grep -q "bob@example.org: hello both" out.txt && ok || bad "alice's phone got bob's message too: $(cat out.txt)"
# the contacts came by sync
expect 0 "the laptop's contacts" -- lap contacts
grep -q "bob@example.org" out.txt && ok || bad "alice's contacts reached the laptop: $(cat out.txt)"

finish
