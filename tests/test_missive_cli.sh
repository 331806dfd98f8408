#!/usr/bin/env bash
# The missive command line end to end, against a real missived on loopback:
# two people with two devices each, offline delivery, own-device copies,
# no double delivery, history and search, contacts, device removal, the
# key-change warning, sealed keys, and clear errors.
set -u
. "$(cd "$(dirname "$0")" && pwd)/lib.sh"
M=$(realpath "${1:?usage: test_missive_cli.sh MISSIVE MISSIVED}")
D=$(realpath "${2:?usage: test_missive_cli.sh MISSIVE MISSIVED}")
in_scratch
TRANSCRIPT=$work/transcript.txt # everything the client printed, checked for secret keys at the end

start_missived || bad "missived started"
server=127.0.0.1:$port
export MISSIVE_PASSWORD="correct horse battery"
code() { grep "handle=$1 code=" srv.log | tail -1 | sed 's/.*code=//'; }
# as DEVICE: run missive with that device's data directory and account
as() {
    local dev=$1
    shift
    "$M" --data-dir "dev-$dev" --account "${dev%%-*}@example.org" "$@"
}
register() {
    "$M" --data-dir "dev-$1" register "${1%%-*}@example.org" --server "$server" >/dev/null 2>&1 &&
        "$M" --data-dir "dev-$1" register "${1%%-*}@example.org" --code "$(code "${1%%-*}@example.org")" >/dev/null
}

register alice-phone && ok || bad "register alice"
register bob-phone && ok || bad "register bob"
# the account is --account, or the only one in the data directory
expect 0 "the only account" -- "$M" --data-dir dev-alice-phone fingerprint
grep -q "^alice@example.org" out.txt || grep -q "[0-9a-f]\{16\}" out.txt && ok || bad "only account: $(cat out.txt)"
mkdir -p two empty
cp -r dev-alice-phone/alice@example.org dev-bob-phone/bob@example.org two/
expect 2 "two accounts, none named" -- "$M" --data-dir two fingerprint
grep -q "2 accounts here" err.txt && ok || bad "two accounts: $(cat err.txt)"
expect 1 "no account" -- "$M" --data-dir empty fingerprint
grep -q "no account here" err.txt && ok || bad "no account: $(cat err.txt)"
rm -rf two empty
# a linked device waits for approval from a device the account has
new_id() { sed -n 's/.*this is device \([0-9]*\).*/\1/p' out.txt; }
expect 0 "link alice's laptop" -- "$M" --data-dir dev-alice-laptop link alice@example.org --server "$server"
grep -q "waiting for approval" out.txt && ok || bad "link output: $(cat out.txt)"
laptop=$(new_id)
expect 3 "a pending device cannot connect" -- as alice-laptop receive
expect 0 "the phone is asked" -- as alice-phone receive
grep -q "device $laptop asks to join this account with the account password (fingerprint [0-9a-f ]*); if it is yours, approve it with: missive devices approve $laptop" out.txt && ok || bad "approval notice: $(cat out.txt)"
expect 1 "bob cannot approve alice's device" -- as bob-phone devices approve "$laptop"
expect 0 "approve" -- as alice-phone devices approve "$laptop"
expect 0 "the approved laptop connects" -- as alice-laptop receive
expect 0 "link bob's laptop" -- "$M" --data-dir dev-bob-laptop link bob@example.org --server "$server"
expect 0 "approve bob's laptop" -- as bob-phone devices approve "$(new_id)"
# an approved device publishes its prekeys when it first connects: a device that says
# post-quantum gets nothing before (docs/crypto.md, "Post-quantum sessions")
expect 0 "the approved laptop connects" -- "$M" --data-dir dev-bob-laptop --account bob@example.org receive
expect 0 "devices" -- as bob-phone devices
[ "$(grep -c modern out.txt)" -eq 2 ] && grep -q "(this device)" out.txt && ok || bad "bob has two devices"

# alice writes while bob's devices are offline; both get it, and so does her laptop
expect 0 "send" -- as alice-phone send bob@example.org --text "dinner at eight?"
grep -q '^sent [0-9a-f]\{32\}$' out.txt && ok || bad "send output"
for dev in bob-phone bob-laptop; do
    expect 0 "$dev receives" -- as "$dev" -o json receive
    grep -q '"text":"dinner at eight?"' out.txt && grep -q '"from":"alice@example.org"' out.txt && ok || bad "$dev got the message"
    expect 0 "$dev receives again" -- as "$dev" receive
    grep -q "dinner" out.txt && bad "$dev saw it twice" || ok
done
expect 0 "alice's laptop gets her own copy" -- as alice-laptop -o json receive
grep -q '"outgoing":true' out.txt && grep -q '"conversation":"bob@example.org"' out.txt && ok || bad "own-device copy"

# replies, from standard input, to a contact name
expect 0 "contact" -- as bob-laptop contacts add alice alice@example.org
echo "yes, see you there" | as bob-laptop send alice >out.txt 2>err.txt && ok || bad "send from stdin"
expect 0 "alice receives" -- as alice-phone receive
grep -q "bob@example.org: yes, see you there" out.txt && ok || bad "reply text"
expect 0 "history" -- as alice-phone history bob@example.org
[ "$(wc -l < out.txt)" -eq 2 ] && head -1 out.txt | grep -q "me → bob@example.org: dinner" && ok || bad "history order: $(cat out.txt)"
expect 0 "search" -- as alice-phone history --search "see"
[ "$(wc -l < out.txt)" -eq 1 ] && ok || bad "search result"
expect 2 "bad search" -- as alice-phone history --search '"unbalanced'

# receipts, typing, edits and unsends
expect 0 "clear bob's queue" -- as bob-phone receive
expect 0 "alice catches up" -- as alice-phone receive
# what a receive cannot write (its output full, or a closed pipe) is not recorded as shown:
# the receive stops, and the next one shows it
expect 0 "a message bob cannot see at first" -- as alice-phone send bob@example.org --text "written nowhere"
as bob-phone receive >/dev/full 2>err.txt
rc=$?
[ "$rc" = 1 ] && grep -q "cannot write what arrived" err.txt && ok ||
    bad "a receive whose output is full: exit $rc ($(cat err.txt))"
expect 0 "bob receives it after all" -- as bob-phone receive
grep -q "written nowhere" out.txt && ok || bad "shown by the next receive: $(cat out.txt err.txt)"
expect 0 "alice catches up again" -- as alice-phone receive
expect 0 "send for receipts" -- as alice-phone send bob@example.org --text "did you get this?"
id=$(sed -n 's/^sent \([0-9a-f]*\)$/\1/p' out.txt)
expect 0 "bob receives (a delivery receipt goes back)" -- as bob-phone receive
expect 0 "alice gets the delivery receipt" -- as alice-phone receive
expect 0 "history shows delivered" -- as alice-phone history bob@example.org
grep -q "did you get this?  (delivered)" out.txt && ok || bad "delivered status: $(cat out.txt)"
expect 0 "bob reads" -- as bob-phone read alice@example.org
grep -q "marked read" out.txt && ok || bad "read output"
expect 0 "alice gets the read receipt" -- as alice-phone receive
expect 0 "history shows read" -- as alice-phone history bob@example.org
grep -q "did you get this?  (read)" out.txt && ok || bad "read status: $(cat out.txt)"
expect 0 "typing" -- as alice-phone typing bob@example.org
expect 0 "bob sees typing" -- as bob-phone receive
grep -q "notice: alice@example.org is typing" out.txt && ok || bad "typing notice: $(cat out.txt)"
expect 0 "edit" -- as alice-phone edit "$id" --text "did you get this one?"
expect 0 "bob sees the edit" -- as bob-phone receive
grep -q "alice@example.org edited a message: did you get this one?" out.txt && ok || bad "edit notice"
expect 0 "bob's history has the new text" -- as bob-phone history alice@example.org
grep -q "did you get this one?  (edited)" out.txt && ok || bad "edited in history: $(cat out.txt)"
expect 1 "bob cannot edit alice's message" -- as bob-phone edit "$id" --text "forged"
expect 0 "unsend" -- as alice-phone unsend "$id"
expect 0 "bob sees the unsend" -- as bob-phone receive
expect 0 "bob's history shows it unsent" -- as bob-phone history alice@example.org
grep -q "alice (alice@example.org): (unsent)" out.txt && ! grep -q "did you get this one" out.txt && ok || bad "unsent in history: $(cat out.txt)"
expect 2 "edit needs an id" -- as alice-phone edit nothex --text x

# files and long text go through the attachment store
head -c 300000 /dev/urandom > photo.jpg
expect 0 "send a file" -- as alice-phone send bob@example.org --text "our photo" --file photo.jpg
expect 0 "receive a file" -- as bob-phone receive
saved=$(sed -n 's/.*\[file: \(.*\) (300000 bytes)\].*/\1/p' out.txt)
[ -n "$saved" ] && cmp -s photo.jpg "$saved" && ok || bad "file round trip: $(cat out.txt)"
[ "$(stat -c %a "$saved" 2>/dev/null)" = 600 ] && ok || bad "saved file is private"
/usr/bin/python3 -c "print('a long letter, ' * 1500, end='')" > long.txt
as alice-phone send bob@example.org < long.txt >out.txt 2>err.txt && ok || bad "send long text"
expect 0 "receive long text" -- as bob-phone -o json receive
/usr/bin/python3 - out.txt long.txt <<'PY' && ok || bad "long text restored whole"
import json, sys
msgs = [json.loads(l) for l in open(sys.argv[1])]
assert any(m["text"] == open(sys.argv[2]).read() for m in msgs), [len(m["text"]) for m in msgs]
PY
# a blob changed on the server's disk fails the recipient's hash check, and only the file is dropped
expect 0 "send another file" -- as alice-phone send bob@example.org --text "check this" --file photo.jpg
blob=$(ls -t srv/blobs | head -1)
/usr/bin/python3 -c "import sys; p=sys.argv[1]; b=bytearray(open(p,'rb').read()); b[100]^=1; open(p,'wb').write(b)" "srv/blobs/$blob"
expect 0 "receive a tampered file" -- as bob-phone receive
grep -q "check this" out.txt && grep -q "failed its integrity check" out.txt && ok || bad "tampered file: $(cat out.txt)"

# fingerprints compared out of band
expect 0 "bob's fingerprint" -- as bob-phone fingerprint
fp=$(sed 's/.*: //' out.txt)
expect 0 "alice verifies bob's phone" -- as alice-phone verify bob@example.org "$fp"
grep -q "matches device" out.txt && ok || bad "verify match"
expect 3 "a wrong fingerprint" -- as alice-phone verify bob@example.org "$(echo "$fp" | tr '0123456789abcdef' '123456789abcdef0')"
expect 2 "not a fingerprint" -- as alice-phone verify bob@example.org 1234

# bob replaces his laptop: alice is warned when she next writes
laptop_id=$(as bob-laptop -o json fingerprint | sed 's/.*"device_id":\([0-9]*\).*/\1/')
expect 0 "remove a device" -- as bob-phone devices remove "$laptop_id"
expect 0 "link a new laptop" -- "$M" --data-dir dev-bob-new link bob@example.org --server "$server"
expect 0 "approve the new laptop" -- as bob-phone devices approve "$(new_id)"
expect 0 "the new laptop connects" -- "$M" --data-dir dev-bob-new --account bob@example.org receive
expect 0 "send after the change" -- as alice-phone send bob@example.org --text "new laptop?"
grep -q "warning: the devices of bob@example.org changed" err.txt && ok || bad "key-change warning: $(cat err.txt)"
expect 0 "the new laptop receives" -- "$M" --data-dir dev-bob-new --account bob@example.org receive
grep -q "new laptop?" out.txt && ok || bad "new device got it"

# safety numbers: the same 60 digits on both sides; once bob is verified, a change of his
# devices holds alice's messages until she accepts it
expect 0 "alice's safety number for bob" -- as alice-phone verify bob@example.org
number=$(sed -n '2,3p' out.txt | tr -d ' \n')
grep -q "^not verified" out.txt && ok || bad "not verified yet: $(cat out.txt)"
grep -qx "device list: signed" out.txt && ok || bad "bob's signed device list: $(cat out.txt)"
expect 0 "bob's for alice" -- as bob-phone verify alice@example.org
[ "${#number}" -eq 60 ] && [ "$(sed -n '2,3p' out.txt | tr -d ' \n')" = "$number" ] && ok || bad "the same number on both sides: $number / $(cat out.txt)"
expect 0 "as a QR code" -- as alice-phone verify bob@example.org --qr
[ "$(grep -c '█' out.txt)" -ge 10 ] && ok || bad "QR code: $(cat out.txt)"
expect 3 "a wrong number" -- as alice-phone verify bob@example.org "$(echo "$number" | tr 0123456789 1234567890)"
# the number made again from the devices' fingerprints (docs/missive.md): version 2 is what
# both sides show; version 1's number is refused as a number of another version
as alice-phone -o json fingerprint alice@example.org >fp-alice.json 2>/dev/null
as alice-phone -o json fingerprint bob@example.org >fp-bob.json 2>/dev/null
cat >safety.py <<'PY'
import hashlib, json, sys
def digest(path):
    h = hashlib.sha256()
    for d in sorted(json.load(open(path)), key=lambda d: d["device_id"]):
        h.update(d["device_id"].to_bytes(8, "big") + bytes.fromhex(d["fingerprint"].replace(" ", "")))
    return h.digest()
def digits(h):
    return "".join("%05d" % (int.from_bytes(h[5 * g:5 * g + 5], "big") % 100000) for g in range(6))
def side(version, handle, d):
    n = bytes([len(handle)]) + handle.encode()
    if version == 1:
        return digits(hashlib.sha256(b"MSV-safety-v1" + n + d).digest())
    h = hashlib.sha512(b"\x00\x02MSV-safety" + n + d).digest()
    for _ in range(5200):
        h = hashlib.sha512(h + d).digest()
    return digits(h)
v = int(sys.argv[1])
print(side(v, "alice@example.org", digest("fp-alice.json")) + side(v, "bob@example.org", digest("fp-bob.json")))
PY
[ "$(python3 safety.py 2)" = "$number" ] && ok || bad "version 2 made again: $(python3 safety.py 2) / $number"
expect 3 "a version 1 number" -- as alice-phone verify bob@example.org "$(python3 safety.py 1)"
grep -q "made under safety-number version 1" err.txt && ok || bad "version 1: $(cat err.txt)"
expect 0 "the right number" -- as alice-phone verify bob@example.org "$number"
grep -q "verified: the safety numbers match" out.txt && ok || bad "verified: $(cat out.txt)"
expect 2 "not oneself" -- as alice-phone verify alice@example.org
expect 0 "a verified contact is written to" -- as alice-phone send bob@example.org --text "verified now"
new_laptop=$("$M" --data-dir dev-bob-new --account bob@example.org -o json fingerprint | sed 's/.*"device_id":\([0-9]*\).*/\1/')
expect 0 "bob removes the new laptop" -- as bob-phone devices remove "$new_laptop"
expect 3 "sending is held" -- as alice-phone send bob@example.org --text "still there?"
grep -q "changed since you verified them" err.txt && ok || bad "held: $(cat err.txt)"
expect 0 "the held message waits as queued" -- as alice-phone -o json history bob@example.org
grep -q '"text":"still there?".*"status":"queued"' out.txt && ok || bad "queued: $(cat out.txt)"
expect 0 "another command does not send it" -- as alice-phone receive
expect 0 "shown as changed" -- as alice-phone verify bob@example.org
grep -q "^CHANGED since you verified" out.txt && ok || bad "changed: $(cat out.txt)"
expect 0 "alice accepts the change" -- as alice-phone verify bob@example.org --accept
expect 0 "the held message goes" -- as alice-phone receive
expect 0 "bob gets it" -- as bob-phone receive
grep -q "still there?" out.txt && ok || bad "held message delivered: $(cat out.txt)"

# keys sealed under a passphrase
export MISSIVE_PASSPHRASE="a long passphrase"
expect 0 "register with a passphrase" -- "$M" --data-dir dev-carol-phone register carol@example.org --server "$server"
grep -q "unsealed" err.txt && bad "warned about unsealed keys" || ok
"$M" --data-dir dev-carol-phone register carol@example.org --code "$(code carol@example.org)" >/dev/null 2>&1 && ok || bad "finish with a passphrase"
MISSIVE_PASSPHRASE="wrong" "$M" --data-dir dev-carol-phone --account carol@example.org fingerprint >out.txt 2>err.txt
[ $? -eq 3 ] && grep -q "passphrase" err.txt && ok || bad "wrong passphrase refused"
expect 0 "right passphrase" -- "$M" --data-dir dev-carol-phone --account carol@example.org fingerprint
/usr/bin/python3 - dev-carol-phone/carol@example.org/state.db <<'PY' && ok || bad "keys sealed at rest"
import sqlite3, sys
v = sqlite3.connect(sys.argv[1]).execute("select value from settings where key='identity'").fetchone()[0]
assert v[:4] == b"MSVS", v[:4]
PY
[ "$(stat -c %a dev-carol-phone/carol@example.org/state.db)" = 600 ] && ok || bad "state file mode"

# a group of three: made by alice, spoken in by bob, then without carol
expect 0 "create a group" -- as alice-phone groups create trip bob@example.org carol@example.org
expect 0 "bob learns the group" -- as bob-phone receive
grep -q 'group "trip": members alice@example.org, bob@example.org, carol@example.org' out.txt && ok || bad "group change text: $(cat out.txt)"
expect 0 "carol learns the group" -- "$M" --data-dir dev-carol-phone --account carol@example.org receive
# a group someone else made is an invitation: listed, not written to until accepted by its id
expect 1 "bob cannot write before accepting" -- as bob-phone send --group trip --text "too soon"
grep -q "no group trip (an invitation is accepted first" err.txt && ok || bad "invitation send: $(cat err.txt)"
expect 0 "bob's invitation" -- as bob-phone groups
trip=$(grep "^trip	" out.txt | cut -f3)
grep -q "^trip	alice@example.org,bob@example.org,carol@example.org	group:[0-9a-f]\{32\}	invited	admins: alice@example.org$" out.txt && ok || bad "invited list: $(cat out.txt)"
expect 1 "an invitation is accepted by its id only" -- as bob-phone groups accept trip
expect 0 "bob accepts" -- as bob-phone groups accept "$trip"
# carol makes a group of the same name: it arrives as an invitation and takes no name over
expect 0 "carol's own trip" -- "$M" --data-dir dev-carol-phone --account carol@example.org groups create trip bob@example.org
expect 0 "carol accepts" -- "$M" --data-dir dev-carol-phone --account carol@example.org groups accept "$trip"
expect 1 "carol's name is taken on her side" -- "$M" --data-dir dev-carol-phone --account carol@example.org groups create trip alice@example.org
grep -q "you have a group named trip already" err.txt && ok || bad "name taken: $(cat err.txt)"
expect 0 "bob gets carol's invitation" -- as bob-phone receive
expect 0 "bob writes to the group" -- as bob-phone send --group trip --text "train at nine"
expect 0 "carol reads the group" -- "$M" --data-dir dev-carol-phone --account carol@example.org -o json receive
grep -q '"conversation":"group:[0-9a-f]\{32\}".*"text":"train at nine"' out.txt && ok || bad "group message for carol: $(cat out.txt)"
expect 0 "alice reads the group" -- as alice-phone receive
grep -q "train at nine" out.txt && ok || bad "group message for alice"
# bob accepts carol's group too: the name is now ambiguous, and a send by it is refused
shadow=$(as bob-phone groups | grep "	invited	" | cut -f3)
[ -n "$shadow" ] && [ "$shadow" != "$trip" ] && ok || bad "carol's group listed apart: $shadow"
expect 0 "bob accepts carol's group" -- as bob-phone groups accept "$shadow"
expect 1 "an ambiguous name" -- as bob-phone send --group trip --text "which one"
grep -q "more than one group is named trip" err.txt && ok || bad "ambiguous: $(cat err.txt)"
expect 0 "carol sees nothing of it" -- "$M" --data-dir dev-carol-phone --account carol@example.org receive
grep -q "which one" out.txt && bad "an ambiguous send went out" || ok
expect 3 "bob is no admin of carol's group" -- as bob-phone groups rename "$shadow" "carol's trip"
grep -q "you are not an admin of $shadow" err.txt && ok || bad "not an admin: $(cat err.txt)"
expect 0 "carol renames her group" -- "$M" --data-dir dev-carol-phone --account carol@example.org groups rename "$shadow" "carol's trip"
expect 0 "bob hears of the rename" -- as bob-phone receive
expect 0 "remove carol" -- as alice-phone groups remove trip carol@example.org
expect 0 "carol is told" -- "$M" --data-dir dev-carol-phone --account carol@example.org receive
grep -q 'members alice@example.org, bob@example.org$' out.txt && ok || bad "carol told of her removal: $(cat out.txt)"
expect 0 "bob is told" -- as bob-phone receive
expect 0 "alice writes without carol" -- as alice-phone send --group trip --text "just us now"
expect 0 "carol gets nothing" -- "$M" --data-dir dev-carol-phone --account carol@example.org receive
grep -q "just us" out.txt && bad "removed member still receives" || ok
expect 0 "bob gets it" -- as bob-phone receive
grep -q "just us now" out.txt && ok || bad "bob misses the group message"
expect 0 "group history" -- as bob-phone history --group trip
grep -q "train at nine" out.txt && grep -q "just us now" out.txt && ok || bad "group history: $(cat out.txt)"
expect 0 "groups list" -- as bob-phone groups
grep -q "^trip	alice@example.org,bob@example.org	$trip	admins: alice@example.org$" out.txt && ok || bad "groups list: $(cat out.txt)"
expect 0 "groups as JSON" -- as bob-phone -o json groups
grep -q '^{"name":"trip","members":"alice@example.org,bob@example.org","id":"'"$trip"'","invited":false,"mls":true,"admins":"alice@example.org"}$' out.txt && ok || bad "groups JSON: $(cat out.txt)"
expect 1 "unknown group" -- as bob-phone send --group nope --text x
unset MISSIVE_PASSPHRASE

# errors
expect 2 "no command" -- "$M"
expect 0 "help" -- "$M" --help
expect 0 "command help" -- "$M" send --help
grep -q "^usage: missive send" out.txt && ok || bad "send help text"
expect 2 "unknown command" -- as alice-phone frobnicate
expect 2 "unknown option" -- as alice-phone send --frob x
expect 0 "history of the only account" -- "$M" --data-dir dev-alice-phone history
expect 1 "account that does not exist" -- "$M" --data-dir nowhere --account zed@example.org history
expect 1 "unknown recipient" -- as alice-phone send nobody@example.org --text "hello?"
expect 2 "nothing to send" -- as alice-phone send bob@example.org --text ""
expect 2 "register without a server" -- "$M" --data-dir dev-x register x@example.org
expect 0 "ask for a code" -- "$M" --data-dir dev-dave register dave@example.org --server "$server"
"$M" --data-dir dev-dave register dave@example.org --code 000000 >out.txt 2>err.txt
rc=$?
[ $rc -eq 3 ] || [ "$(code dave@example.org)" = 000000 ] && ok || bad "wrong code exit $rc"
kill -TERM "$pid"
wait "$pid"
pid=
rm -f srv/missived.ports
expect 4 "server down" -- as alice-phone send bob@example.org --text "anyone?"
# a server that takes the connection but never answers is unreachable too, and says so
python3 -c 'import socket, sys, time
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1]))); s.listen(8); open("silent.up", "w").close(); time.sleep(30)' "$port" &
silent=$!
for _ in $(seq 100); do [ -e silent.up ] && break; sleep 0.1; done
expect 4 "a server that never answers" -- as alice-phone receive
grep -q "receiving: input/output error: the server at $server did not answer in time" err.txt && ok ||
    bad "silent server: $(cat err.txt)"
kill "$silent"
wait "$silent" 2>/dev/null
expect 0 "the failed send stays in history as queued" -- as alice-phone -o json history
grep -q '"text":"anyone?".*"status":"queued"' out.txt && ok || bad "queued message kept"
# the server comes back on its port: the next command that connects sends the queued message
start_missived && [ "127.0.0.1:$port" = "$server" ] && ok || bad "missived back on its port"
expect 0 "a later command flushes the outbox" -- as alice-phone receive
expect 0 "now sent" -- as alice-phone -o json history
grep -q '"text":"anyone?".*"status":"sent"' out.txt && ok || bad "outbox flushed"
expect 0 "bob gets the late message" -- as bob-phone receive
grep -q "anyone?" out.txt && ok || bad "late message delivered"

# secrets stay out of the server's log: the account password, the passphrase,
# the server's TLS private key, and the message texts (only codes in dev mode)
grep -qF "$MISSIVE_PASSWORD" srv.log && bad "password in the log" || ok
grep -qF "a long passphrase" srv.log && bad "passphrase in the log" || ok
key_line=$(grep -v -- '-----' srv/server.key | head -1)
[ -n "$key_line" ] && ! grep -qF "$key_line" srv.log && ok || bad "TLS key in the log"
grep -qF "anyone?" srv.log && bad "message text in the log" || ok
[ "$(stat -c %a srv/server.key)" = 600 ] && ok || bad "server key file private"
[ "$(stat -c %a srv/log.key)" = 600 ] && [ "$(stat -c %s srv/log.key)" = 64 ] && ok || bad "log key file private"
for db in dev-*/*/state.db; do
    [ "$(stat -c %a "$db" 2>/dev/null)" = 600 ] && ok || bad "$db is not private"
done
# the transparency monitor ran on every receive above, every device was the accounts' own, and
# every log head a message carried fitted the receiver's log
grep -Eq "transparency log lists device|does not fit the log" "$TRANSCRIPT" && bad "a false transparency alarm: $(grep -Em1 'transparency log lists|does not fit' "$TRANSCRIPT")" || ok

# suites are negotiated per device: dave's old device speaks classic only, his new one
# modern with classic too; erin speaks modern and classic, alice modern only
dave() { "$M" --data-dir "dev-dave-$1" --account dave@example.org "${@:2}"; }
queued_suites() { # the suite of the newest envelope (not a notice) the relay holds for device $1
    python3 -c "import sqlite3,sys; print(' '.join(str(r[0]) for r in sqlite3.connect(sys.argv[1]).execute('SELECT suite FROM queue WHERE device_id = ? AND suite != 0 ORDER BY id DESC LIMIT 1', (int(sys.argv[2]),))))" srv/missive.db "$1"
}
# dave's code from before is still pending: asking again sends none, and that code registers
expect 1 "dave's old device asks" -- "$M" --data-dir dev-dave-old register dave@example.org --server "$server" --suite classic
grep -q "a code was sent to that handle" err.txt && ok || bad "pending code kept: $(cat err.txt)"
[ "$(grep -c 'verification_code handle=dave@example.org' srv.log)" = 1 ] && ok || bad "a second code for dave"
expect 0 "dave's old device registers" -- "$M" --data-dir dev-dave-old register dave@example.org --code "$(code dave@example.org)"
expect 2 "an unknown compat suite" -- "$M" --data-dir dev-dave-new link dave@example.org --server "$server" --compat classic,rot13
expect 0 "dave links a new device" -- "$M" --data-dir dev-dave-new link dave@example.org --server "$server" --compat classic
dave_new=$(new_id)
expect 0 "the old device approves it" -- dave old devices approve "$dave_new"
expect 0 "dave's devices" -- dave new devices
grep -q "classic  .*(this device)" out.txt || grep -q "^ *[0-9]*  classic " out.txt && grep -q "modern .*(this device) +classic" out.txt && ok || bad "devices with suites: $(cat out.txt)"
dave_old=$(sed -n 's/^ *\([0-9]*\)  classic .*/\1/p' out.txt)
expect 0 "erin asks" -- "$M" --data-dir dev-erin register erin@example.org --server "$server" --compat classic
expect 0 "erin registers" -- "$M" --data-dir dev-erin register erin@example.org --code "$(code erin@example.org)"
erin() { "$M" --data-dir dev-erin --account erin@example.org "$@"; }
# alice reaches the device that speaks modern and is told about the other
expect 0 "alice writes to dave" -- as alice-phone send dave@example.org --text "modern only here"
grep -q "warning: device $dave_old of dave@example.org speaks classic only, which this device does not" err.txt && ok || bad "unreachable warning: $(cat err.txt)"
[ -z "$(queued_suites "$dave_old")" ] && [ "$(queued_suites "$dave_new")" = 3 ] && ok || bad "alice's envelopes: old '$(queued_suites "$dave_old")' new '$(queued_suites "$dave_new")'"
expect 0 "dave's new device reads it" -- dave new receive
grep -q "modern only here" out.txt && ok || bad "dave new: $(cat out.txt)"
# erin writes to both, each in the best suite it shares with her
expect 0 "erin writes to dave" -- erin send dave@example.org --text "to both of you"
[ "$(queued_suites "$dave_old")" = 1 ] && [ "$(queued_suites "$dave_new")" = 3 ] && ok || bad "erin's envelopes: old '$(queued_suites "$dave_old")' new '$(queued_suites "$dave_new")'"
expect 0 "the old device reads it" -- dave old receive
grep -q "to both of you" out.txt && ok || bad "dave old: $(cat out.txt)"
expect 0 "the old device answers in classic" -- dave old send erin@example.org --text "from the old phone"
expect 0 "erin reads the answer" -- erin receive
grep -q "from the old phone" out.txt && ok || bad "erin: $(cat out.txt)"
expect 1 "the old device cannot reach alice" -- dave old send alice@example.org --text "hello?"
grep -q "no device of alice@example.org speaks a suite this device speaks" err.txt && ok || bad "no common suite: $(cat err.txt)"

# encrypted backups: bob's phone is backed up, then restored on a "new machine"
export MISSIVE_BACKUP_PASSPHRASE="a backup passphrase"
MISSIVE_BACKUP_PASSPHRASE=short expect 2 "a short backup passphrase" -- as bob-phone backup b.msvb
grep -q "12 characters or more" err.txt && [ ! -e b.msvb ] && ok || bad "short passphrase: $(cat err.txt)"
expect 2 "kdf memory out of range" -- as bob-phone backup b.msvb --kdf-memory 0
expect 2 "under 64 MiB of Argon2id memory" -- as bob-phone backup b.msvb --kdf-memory 63
MISSIVE_BACKUP_PASSPHRASE="eleven char" expect 2 "an 11-character backup passphrase" -- as bob-phone backup b.msvb
expect 0 "backup" -- as bob-phone backup bob.msvb --kdf-memory 64 --kdf-passes 1
grep -q "^wrote bob.msvb (account bob@example.org; Argon2id 64 MiB, 1 passes)" out.txt && ok || bad "backup: $(cat out.txt)"
[ "$(stat -c %a bob.msvb)" = 600 ] && ok || bad "the backup is private"
# the Argon2id parameters are in the header; nothing of the history or the photo is readable
[ "$(head -c 16 bob.msvb | od -An -tx1 | tr -d ' \n')" = "4d53564241434b310000000100010000" ] && ok || bad "backup header: $(head -c 16 bob.msvb | od -An -tx1)"
grep -q "dinner at eight" bob.msvb || grep -q "our photo" bob.msvb && bad "plaintext in the backup" || ok
python3 -c "import sys; d=open('bob.msvb','rb').read(); p=open('photo.jpg','rb').read(); sys.exit(p[1000:1064] in d)" && ok || bad "the photo is in the backup in clear"
expect 1 "an existing file is not overwritten" -- as bob-phone backup bob.msvb
grep -q "exists" err.txt && ok || bad "backup over a file: $(cat err.txt)"
mkdir newmachine
MISSIVE_BACKUP_PASSPHRASE="not the passphrase" expect 3 "restore with a wrong passphrase" -- "$M" --data-dir newmachine restore bob.msvb
grep -q "wrong passphrase" err.txt && [ -z "$(ls -A newmachine)" ] && ok || bad "wrong passphrase: $(cat err.txt) $(ls -A newmachine)"
# a backup made when 8 characters were enough is still restored: a short passphrase is tried
MISSIVE_BACKUP_PASSPHRASE="8 chars!" expect 3 "restore tries a passphrase under 12 characters" -- "$M" --data-dir newmachine restore bob.msvb
grep -q "wrong passphrase" err.txt && ok || bad "a short passphrase at restore: $(cat err.txt)"
MISSIVE_BACKUP_PASSPHRASE="éééééé" expect 2 "6 characters in 12 bytes are too few to write a backup" -- as bob-phone backup b.msvb
cp bob.msvb damaged.msvb
flip_byte damaged.msvb $(($(stat -c %s bob.msvb) / 2))
expect 1 "a damaged backup" -- "$M" --data-dir newmachine restore damaged.msvb
grep -q "damaged" err.txt && [ -z "$(ls -A newmachine)" ] && ok || bad "damaged: $(cat err.txt)"
head -c $(($(stat -c %s bob.msvb) - 100)) bob.msvb >short.msvb
expect 1 "a truncated backup" -- "$M" --data-dir newmachine restore short.msvb
[ -z "$(ls -A newmachine)" ] && ok || bad "truncated backup left files"
expect 1 "restore never replaces an account" -- "$M" --data-dir dev-bob-phone restore bob.msvb
grep -q "restore never replaces" err.txt && ok || bad "restore over an account: $(cat err.txt)"
expect 0 "restore on a new machine" -- "$M" --data-dir newmachine restore bob.msvb
grep -q "restored bob@example.org" out.txt && ok || bad "restore: $(cat out.txt)"
# no prekey secret came back; the restored device's ids start 2^24 past the phone's next one
cat >prekeys.py <<'PY'
import sqlite3, sys
db = sqlite3.connect(sys.argv[1])
rows = dict(db.execute("SELECT key, value FROM settings WHERE key LIKE 'prekey%' OR key LIKE 'signed-prekey%'"))
print(sorted(k for k in rows if k.startswith("prekey:") or k.startswith("signed-prekey")),
      int.from_bytes(rows.get("prekey-next", b"\0\0\0\1"), "big"))
PY
phone_next=$(python3 prekeys.py "dev-bob-phone/bob@example.org/state.db" | sed 's/.* //')
[ "$(python3 prekeys.py "newmachine/bob@example.org/state.db")" = "[] $((phone_next + 16777216))" ] && ok || bad "prekeys restored: $(python3 prekeys.py "newmachine/bob@example.org/state.db") (phone: $phone_next)"
# the last-resort KEM secrets came back (senders seal to them for days), no one-time one
/usr/bin/python3 - "newmachine/bob@example.org/state.db" <<'PY' && ok || bad "the KEM secrets restored"
import sqlite3, sys
rows = dict(sqlite3.connect(sys.argv[1]).execute("SELECT key, value FROM settings WHERE key LIKE 'kem-%'"))
kems = {k: v for k, v in rows.items() if k.startswith("kem-prekey:")}
current = "kem-prekey:%d" % int.from_bytes(rows["kem-last-resort"], "big")
assert current in kems and all(v[0] == 1 for v in kems.values()) and len(kems) <= 2, sorted(kems)
PY
rm -rf dev-bob-phone # the old phone is gone
expect 0 "restored history" -- "$M" --data-dir newmachine history alice@example.org
grep -q "dinner at eight?" out.txt && ok || bad "restored history: $(cat out.txt)"
cmp -s photo.jpg "newmachine/bob@example.org/attachments/$(basename "$saved")" && ok || bad "restored attachment"
# sessions are not in backups: alice's next message starts a reset, the one after arrives
expect 0 "alice writes to the restored device" -- as alice-phone send bob@example.org --text "lost in the old session"
expect 0 "the restored device receives" -- "$M" --data-dir newmachine receive
grep -q "could not be decrypted; the session with that device was reset" out.txt && ok || bad "reset notice: $(cat out.txt)"
# connected, it replaced the phone's prekeys at the server: a new signed prekey, 100 new one-time ones
restored_id=$("$M" --data-dir newmachine -o json fingerprint | sed 's/.*"device_id":\([0-9]*\).*/\1/')
/usr/bin/python3 - srv/missive.db "$restored_id" <<'PY' && ok || bad "the server's prekeys after the restore"
import sqlite3, sys
db, dev = sqlite3.connect(sys.argv[1]), int(sys.argv[2])
ids = [r[0] for r in db.execute("SELECT key_id FROM one_time_prekeys WHERE device_id = ?", (dev,))]
signed = db.execute("SELECT key_id FROM signed_prekeys WHERE device_id = ?", (dev,)).fetchone()[0]
assert len(ids) == 100 and min(ids) > 1 << 24 and signed > 1 << 24, (len(ids), min(ids), signed)
PY
expect 0 "alice is told" -- as alice-phone receive
grep -q "could not read a message from this device" out.txt && ok || bad "alice's reset notice: $(cat out.txt)"
expect 0 "alice writes again" -- as alice-phone send bob@example.org --text "welcome back"
expect 0 "the restored device reads it" -- "$M" --data-dir newmachine receive
grep -q "welcome back" out.txt && ok || bad "after restore: $(cat out.txt)"
# the trip, on MLS: a backup holds no MLS state, so the restored device writes as per-device
# copies, which ask alice's device (the admin's) to add it again; it then reads the group on MLS
expect 0 "the restored device's groups" -- "$M" --data-dir newmachine -o json groups
grep -q '"id":"'"$trip"'","invited":false,"mls":false' out.txt && ok || bad "restored groups: $(cat out.txt)"
expect 0 "the restored device writes to the trip" -- "$M" --data-dir newmachine send --group "$trip" --text "back on the trip"
expect 0 "alice reads it, and adds the device again" -- as alice-phone receive
grep -q "back on the trip" out.txt && ok || bad "alice reads the restored device: $(cat out.txt)"
expect 0 "the restored device joins the trip's MLS group" -- "$M" --data-dir newmachine receive
expect 0 "the restored device's groups, joined" -- "$M" --data-dir newmachine -o json groups
grep -q '"id":"'"$trip"'","invited":false,"mls":true' out.txt && ok || bad "rejoined groups: $(cat out.txt)"
expect 0 "alice writes to the trip" -- as alice-phone send --group trip --text "read on MLS"
expect 0 "the restored device reads it" -- "$M" --data-dir newmachine receive
grep -q "read on MLS" out.txt && ok || bad "the restored device reads the trip: $(cat out.txt)"
unset MISSIVE_BACKUP_PASSPHRASE

# two receives of one device at once: the server keeps one connection that takes a device's
# deliveries, so the second waits for the first and says so; both end well, each message
# shown once. Before, the second's connection closed the first's: "input/output error".
for i in 1 2 3 4 5 6; do as alice-phone send bob@example.org --text "twice $i" >/dev/null || bad "send $i"; done
("$M" --data-dir newmachine receive --wait 4 >r1.txt 2>r1.err; echo $? >r1.rc) &
r1=$!
sleep 0.3
"$M" --data-dir newmachine receive --wait 1 >r2.txt 2>r2.err
echo $? >r2.rc
wait "$r1"
[ "$(cat r1.rc) $(cat r2.rc)" = "0 0" ] && ok || bad "two receives: $(cat r1.rc r2.rc r1.err r2.err)"
[ "$(cat r1.txt r2.txt | grep -c 'alice@example.org)\{0,1\}: twice [1-6]$')" -eq 6 ] && ok ||
    bad "each message once: $(cat r1.txt r2.txt)"
cat r1.err r2.err | grep -q "another program of this device (pid [0-9]*) takes its deliveries from the server (a receive, say); waiting for it to end" &&
    ok || bad "the second says it waits: $(cat r1.err r2.err)"
# one that goes past the lock (a program from before it) closes the first's connection, and
# the first is told why
auths=$(metric auth_ok_total)
("$M" --data-dir newmachine receive --wait 30 >r1.txt 2>r1.err; echo $? >r1.rc) &
r1=$!
# once the first has authenticated, its connection is the device's
for _ in $(seq 100); do [ "$(metric auth_ok_total)" -gt "$auths" ] && break; sleep 0.1; done
rm newmachine/bob@example.org/deliveries.lock
"$M" --data-dir newmachine receive >/dev/null 2>&1 && ok || bad "the receive past the lock"
wait "$r1"
[ "$(cat r1.rc)" = 4 ] && grep -q "this device connected again, and the newer connection takes its deliveries" r1.err &&
    ok || bad "the closed receive says why: $(cat r1.rc r1.err)"

# no device's secret key bytes in anything the client printed or the server logged: any
# 16 bytes of the exported secret keys, raw or in hex, found there is a leak
cat srv.log >>"$TRANSCRIPT"
leaks=$(python3 - "$TRANSCRIPT" dev-*/*/state.db <<'PY'
import sqlite3, struct, sys
text = open(sys.argv[1], "rb").read()
checked = 0
for db in sys.argv[2:]:
    row = sqlite3.connect(db).execute("SELECT value FROM settings WHERE key = 'identity'").fetchone()
    if row is None or row[0][:4] == b"MSVS":
        continue  # sealed under a passphrase: no plain secret to look for
    blob = row[0][4:] if row[0][:4] == b"MSVP" else row[0]  # plain: "MSVP" and the export
    if blob[:4] != b"MSVK":
        print(f"{db}: unknown key format")
        continue
    pub_len = struct.unpack(">I", blob[6:10])[0]
    secret = blob[10 + pub_len:]
    checked += 1
    for i in range(len(secret) - 15):
        w = secret[i:i + 16]
        if w in text or w.hex().encode() in text.lower():
            print(f"{db}: secret key bytes at offset {i}")
            break
print(f"checked {checked}")
PY
)
echo "$leaks" | grep -q '^checked [1-9]' && ok || bad "no unsealed keys to check: $leaks"
echo "$leaks" | grep -v '^checked' | grep -q . && bad "secret keys printed: $leaks" || ok
/usr/bin/python3 - "$TRANSCRIPT" srv/log.key <<'PY' && ok || bad "the log key is in the output or the log"
import sys
# the secret is the first 32 bytes (the seed); the rest is the public key, which is logged
text, seed = open(sys.argv[1], "rb").read(), open(sys.argv[2], "rb").read()[:32]
sys.exit(any(seed[i:i + 16] in text or seed[i:i + 16].hex().encode() in text.lower()
             for i in range(len(seed) - 15)))
PY

finish
