#!/usr/bin/env bash
# The main job for this stage of Missive: what a sending device and its
# recipients' devices do with every message, shown with missive-crypto.
# The relay daemon (missived) and the client (missive) are not part of this
# release yet; when they are, this script starts them instead.
set -euo pipefail
build=${1:-build}
M="$(cd "$build" && pwd)/missive-crypto"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"

say() { printf '\n\033[1m%s\033[0m\n' "$*"; }

say "Missive: per-device end-to-end encryption, step by step (scratch dir $work)"
echo "Alice has a phone; Bob has a phone and a laptop. Each device has its own keys."
for dev in alice-phone bob-phone bob-laptop; do
    printf '%-12s ' "$dev"
    "$M" keygen --suite modern --out "$dev.key" --public "$dev.pub" | tr '\n' ' '
    echo
done

say "Alice writes one message; her phone encrypts and signs it separately for each of Bob's devices."
"$M" payload-encode --text "Dinner at 8? 🍝" --participant alice@example.org \
    --participant bob@example.org --out message.pb
for dev in bob-phone bob-laptop; do
    "$M" seal --key alice-phone.key --to "$dev.pub" --in message.pb --out "to-$dev.env"
    printf '  envelope for %-10s %5d bytes\n' "$dev" "$(stat -c %s "to-$dev.env")"
done

say "Each of Bob's devices verifies and decrypts only its own envelope."
for dev in bob-phone bob-laptop; do
    "$M" open --key "$dev.key" --from alice-phone.pub --in "to-$dev.env" --out "$dev.pb"
    printf '  %-10s reads: ' "$dev"
    "$M" payload-decode --in "$dev.pb" | /usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)["text"])'
done
if "$M" open --key bob-laptop.key --from alice-phone.pub --in to-bob-phone.env --out x.pb 2>/dev/null; then
    echo "  unexpected: the laptop opened the phone's envelope" >&2
    exit 1
fi
echo "  (the laptop cannot open the phone's envelope: each is for one device only)"

say "A photo goes through the attachment store: encrypted with a fresh key; the message carries key and hash."
head -c 200000 /dev/urandom > photo.jpg
"$M" attach-encrypt --in photo.jpg --out photo.enc > photo.json
key=$(/usr/bin/python3 -c 'import json; print(json.load(open("photo.json"))["key"])')
sha=$(/usr/bin/python3 -c 'import json; print(json.load(open("photo.json"))["sha256"])')
"$M" attach-decrypt --key "$key" --sha256 "$sha" --in photo.enc --out photo-received.jpg
cmp photo.jpg photo-received.jpg && echo "  200 kB photo: hash checked before decryption, received intact"

say "The classic suite speaks Apple's iMessage 'pair' format byte for byte."
"$M" keygen --suite classic --out old-mac.key --public old-mac.pub >/dev/null
"$M" keygen --suite classic --out old-phone.key --public old-phone.pub >/dev/null
echo "hello from 2014" | "$M" seal --key old-mac.key --to old-phone.pub --out classic.env
"$M" verify --from old-mac.pub --in classic.env
"$M" open --key old-phone.key --from old-mac.pub --in classic.env

say "Done. 'missive-crypto --help' lists every command; docs/crypto.md gives the formats."
