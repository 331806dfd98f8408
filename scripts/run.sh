#!/usr/bin/env bash
# The main job: a local missived on its embedded SQLite default, and the missive
# client used by two people with two devices each: registration, a linked
# device, messages to every device, the offline queue, a group of three, an
# attachment, receipts. Everything runs on loopback in a scratch directory and
# is stopped at the end. Last, alice's phone serves the web client: its login
# URL is printed and it runs until Ctrl-C (MISSIVE_RUN_NO_WAIT=1: it stops at
# once, as when the demo runs as a test).
set -euo pipefail
build=$(cd "${1:-build}" && pwd)
work=$(mktemp -d)
pid=
web=
cleanup() {
    for p in $web $pid; do
        if kill -0 "$p" 2>/dev/null; then
            kill -TERM "$p"
            wait "$p" || true
        fi
    done
    rm -rf "$work"
}
trap cleanup EXIT
cd "$work"

step() { printf '\n\033[1m%s\033[0m\n' "$*"; }
show() { printf '   $ missive %s\n' "$*"; }
# as NAME-DEVICE ARGS...: run missive as that device (its own data directory)
as() {
    local dev=$1 person=${1%%-*}
    shift
    show "$*   # on $dev"
    "$build/missive" --data-dir "$work/$dev" --account "$person@example.org" "$@" 2>&1 | sed 's/^/     /'
}

step "Starting missived (SQLite in $work/server, log in $work/missived.log)"
MISSIVED_SERVER_LISTEN_PORT=0 MISSIVED_HTTP_LISTEN_PORT=0 \
    "$build/missived" --data-dir "$work/server" 2>"$work/missived.log" &
pid=$!
for _ in $(seq 100); do
    [ -s "$work/server/missived.ports" ] && break
    kill -0 "$pid" 2>/dev/null || { cat "$work/missived.log"; exit 1; }
    sleep 0.1
done
server=127.0.0.1:$(awk '/^tls/{print $2}' "$work/server/missived.ports")
export MISSIVE_PASSWORD="a demo password"
export MISSIVE_PASSPHRASE="keys at rest stay sealed"
code() { grep "handle=$1 code=" "$work/missived.log" | tail -1 | sed 's/.*code=//'; }
register() {
    local dev=$1 handle=${1%%-*}@example.org
    show "register $handle --server $server   # on $dev"
    "$build/missive" --data-dir "$work/$dev" register "$handle" --server "$server" 2>&1 | sed 's/^/     /'
    show "register $handle --code $(code "$handle")   # the code from the server log (dev mode)"
    "$build/missive" --data-dir "$work/$dev" register "$handle" --code "$(code "$handle")" 2>&1 | sed 's/^/     /'
}
# link NEW-DEVICE APPROVING-DEVICE: the new device asks, the existing one approves
link() {
    local out id
    show "link ${1%%-*}@example.org --server $server   # on $1"
    out=$("$build/missive" --data-dir "$work/$1" link "${1%%-*}@example.org" --server "$server" 2>&1)
    echo "$out" | sed 's/^/     /'
    id=$(echo "$out" | sed -n 's/.*this is device \([0-9]*\).*/\1/p' | head -1)
    as "$2" receive --wait 0.5
    as "$2" devices approve "$id"
}

step "alice and bob each register a phone, then link a laptop that the phone approves; carol registers too"
register alice-phone
link alice-laptop alice-phone
register bob-phone
link bob-laptop bob-phone
register carol-phone
as bob-phone devices

step "alice writes to bob: one envelope per device (bob's two, and her own laptop)"
as alice-phone contacts add bob bob@example.org
as alice-phone send bob --text "Dinner at 8? 🍝"

step "bob's phone and laptop each receive it; alice's laptop gets her copy"
as bob-phone receive --wait 1
as bob-laptop receive --wait 1
as alice-laptop receive --wait 1

step "bob's phone answers; alice sees the delivery and read receipts"
as bob-phone send alice@example.org --text "Yes! I'll bring dessert."
as bob-phone read alice@example.org
as alice-phone receive --wait 1
as alice-phone history bob@example.org

step "a group of three: alice creates it, bob and carol accept her invitation, bob writes to it from his laptop"
as alice-phone groups create dinner bob@example.org carol@example.org
as bob-laptop receive --wait 1
as carol-phone receive --wait 1
as bob-laptop groups
gid=$("$build/missive" --data-dir "$work/bob-laptop" --account bob@example.org groups | awk -F'\t' '$1 == "dinner" {print $3}')
as bob-laptop groups accept "$gid"
as carol-phone groups accept "$gid"
as bob-laptop send --group dinner --text "Carol, bring the wine?"
as carol-phone receive --wait 1

step "carol sends a photo: encrypted under a fresh key, uploaded, hash-checked on arrival"
head -c 200000 /dev/urandom > "$work/table.jpg"
as carol-phone send --group dinner --text "the table" --file "$work/table.jpg"
as alice-phone receive --wait 1
saved=$(ls "$work"/alice-phone/alice@example.org/attachments/*table.jpg)
cmp "$work/table.jpg" "$saved" && echo "     the received file is identical to the one sent"

step "everyone's history is searchable, and stays on their own devices"
as alice-phone history --search wine

http=$(awk '/^http/{print $2}' "$work/server/missived.ports")
step "the server afterwards: GET /health on its local HTTP port"
/usr/bin/python3 -c "import urllib.request; print('   ', urllib.request.urlopen('http://127.0.0.1:$http/health').read().decode().strip())"

step "the web client: alice's phone in the browser (missive web, docs/web.md)"
show "web   # on alice-phone"
"$build/missive" --data-dir "$work/alice-phone" --account alice@example.org web \
    >"$work/web.out" 2>"$work/web.err" &
web=$!
for _ in $(seq 100); do
    [ -s "$work/web.out" ] && break
    kill -0 "$web" 2>/dev/null || { cat "$work/web.err"; exit 1; }
    sleep 0.1
done
url=$(sed -n 's/^web: //p' "$work/web.out")
[ -n "$url" ] || { cat "$work/web.err"; exit 1; }
/usr/bin/python3 -c "import urllib.request, urllib.error
try: urllib.request.urlopen('${url%%/login*}/')
except urllib.error.HTTPError as e: print('     without logging in: HTTP', e.code)"
printf '\n   Open this in a browser on this machine (it works once, for ten minutes):\n\n   %s\n\n' "$url"
if [ -z "${MISSIVE_RUN_NO_WAIT:-}" ]; then
    echo "   'missive --data-dir $work/alice-phone --account alice@example.org web --url' gives another."
    echo "   Ctrl-C stops it, and everything the demo started."
    wait "$web" || true
fi
