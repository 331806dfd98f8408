#!/usr/bin/env bash
# missived's command line and configuration: help, checks, clear errors, environment overrides.
set -u
. "$(cd "$(dirname "$0")" && pwd)/lib.sh"
D=$(realpath "${1:?usage: test_missived_cli.sh PATH_TO_MISSIVED}")
src=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
system_python
trap 'rm -rf "$work"' EXIT
cd "$work" || exit 1

expect 0 "--help" -- "$D" --help
grep -q '^usage: missived' out.txt && ok || bad "help text"
expect 2 "unknown option" -- "$D" --frobnicate
expect 2 "stray argument" -- "$D" extra
expect 0 "defaults check" -- "$D" --check-config
grep -q '^payload_limit = 16384$' out.txt && grep -q '^queue_ttl_days = 30$' out.txt && ok || bad "defaults printed"

# the documented sample configuration is valid and shows every default
expect 0 "sample config" -- "$D" --config "$src/docs/missived.conf.example" --check-config
"$D" --check-config > defaults.txt 2>/dev/null
cmp -s out.txt defaults.txt && ok || bad "docs/missived.conf.example differs from the defaults"

printf '[server]\nlisten_port = 8443\nworkers = 3\n[relay]\npayload_limit = 32768\n' > good.ini
expect 0 "good file" -- "$D" --config good.ini --check-config
grep -q '^listen_port = 8443$' out.txt && grep -q '^payload_limit = 32768$' out.txt && ok || bad "file values"
MISSIVED_SERVER_WORKERS=5 "$D" --config good.ini --check-config > out.txt 2>&1
grep -q '^workers = 5$' out.txt && ok || bad "environment overrides the file"

printf '[relay]\npayload_limit = lots\n' > bad1.ini
expect 2 "bad number" -- "$D" --config bad1.ini --check-config
grep -q 'bad1.ini:2: \[relay\] payload_limit: expected a whole number' err.txt && ok || bad "bad number message: $(cat err.txt)"
printf '[server]\nlisten_port = 70000\n' > bad2.ini
expect 2 "port out of range" -- "$D" --config bad2.ini --check-config
# attachments no larger than clients download (256 MiB)
printf '[blobs]\nmax_size = 268435457\n' > bad6.ini
expect 2 "max_size over what clients download" -- "$D" --config bad6.ini --check-config
grep -q 'bad6.ini:2: \[blobs\] max_size' err.txt && ok || bad "max_size message: $(cat err.txt)"
# a PostgreSQL pool smaller than 2 x workers is warned about at start (each worker's event loop
# and its committer thread take a connection at once); no database is there: the start fails
printf '[server]\nlisten_port = 0\ndata_dir = %s/pgdata\nworkers = 3\n[http]\nlisten_port = 0\n[store]\nbackend = postgres\npostgres = host=127.0.0.1 port=1 connect_timeout=2\nconnections = 5\n' "$work" > small_pool.ini
expect 1 "start on an unreachable PostgreSQL" -- "$D" --config small_pool.ini
grep -q 'event=store_pool_small connections=5 workers=3' err.txt && ok || bad "no warning of a small pool: $(cat err.txt)"
sed -i 's/^connections = 5$/connections = 6/' small_pool.ini
expect 1 "start on an unreachable PostgreSQL, pool big enough" -- "$D" --config small_pool.ini
grep -q 'store_pool_small' err.txt && bad "a warning of a pool of 2 x workers: $(cat err.txt)" || ok
# a lookup bucket too small for an owner's history checks (66 lookups a handle, 10 handles) is
# warned about at start; the default (2,048) is not
grep -q 'lookup_burst_small' err.txt && bad "a warning of the default lookup_burst: $(cat err.txt)" || ok
printf '[directory]\nlookup_burst = 100\n' >> small_pool.ini
expect 1 "start with a small lookup_burst" -- "$D" --config small_pool.ini
grep -q 'event=lookup_burst_small lookup_burst=100 ' err.txt && ok || bad "no warning of a small lookup_burst: $(cat err.txt)"

# a data directory, or its attachments' directory, that other users may write: refused at
# start, before anything is made in it
mkdir -p open priv/blobs && chmod 777 open priv/blobs && chmod 700 priv
printf '[server]\nlisten_port = 0\ndata_dir = %s/open\n[http]\nlisten_port = 0\n' "$work" > open.ini
expect 1 "a data directory others may write" -- "$D" --config open.ini
grep -q "open is not private (mode 0777" err.txt && ok || bad "open data_dir message: $(cat err.txt)"
[ -z "$(ls -A open)" ] && ok || bad "something was made in it: $(ls open)"
printf '[server]\nlisten_port = 0\ndata_dir = %s/priv\n[http]\nlisten_port = 0\n' "$work" > priv.ini
expect 1 "an attachments' directory others may write" -- "$D" --config priv.ini
grep -q "blobs is not private (mode 0777" err.txt && ok || bad "open blobs message: $(cat err.txt)"
[ "$(ls -A priv)" = blobs ] && ok || bad "something was made beside it: $(ls priv)"

printf '[srever]\nlisten_port = 1\n' > bad3.ini
expect 2 "unknown section" -- "$D" --config bad3.ini --check-config
grep -q 'unknown option \[srever\] listen_port' err.txt && ok || bad "unknown option message"
# a line the INI parser would cut short is refused, not taken in part
printf '[server]\ndata_dir = /srv/%s\n' "$(printf 'x%.0s' $(seq 250))" > bad5.ini
expect 2 "a line too long" -- "$D" --config bad5.ini --check-config
grep -q 'bad5.ini:2: line longer than 198 bytes' err.txt && ok || bad "long line message: $(cat err.txt)"
printf '[server]\ndata_dir=%s\n' "$(printf 'x%.0s' $(seq 188))" > bad6.ini
expect 2 "a value that would not print back on one line" -- "$D" --config bad6.ini --check-config
grep -q 'data_dir: value too long' err.txt && ok || bad "value too long: $(cat err.txt)"
printf 'this is not ini\n' > bad4.ini
expect 2 "syntax" -- "$D" --config bad4.ini --check-config
expect 2 "missing file" -- "$D" --config nope.ini --check-config
grep -q 'nope.ini: cannot read' err.txt && ok || bad "missing file message"
printf '[server]\ndata_dir =;x\n' > bad6.ini
expect 2 "value that reads as a comment" -- "$D" --config bad6.ini --check-config
grep -q "cannot start with ';'" err.txt && ok || bad "comment-like value message"
printf '[server]\nlisten_host = 127.0.0.1\025\n' > bad7.ini
expect 2 "control character" -- "$D" --config bad7.ini --check-config
printf '[accounts]\nverification = hook\n' > bad5.ini
expect 2 "hook without a path" -- "$D" --config bad5.ini --check-config
# the store and the cluster: a backend by name, PostgreSQL with its connection, Redis on it
printf '[store]\nbackend = mysql\n' > bad8.ini
expect 2 "unknown store backend" -- "$D" --config bad8.ini --check-config
grep -q 'expected sqlite or postgres' err.txt && ok || bad "backend message: $(cat err.txt)"
printf '[store]\nbackend = postgres\n' > bad8.ini
expect 2 "postgres without a connection string" -- "$D" --config bad8.ini --check-config
printf '[cluster]\nredis = 127.0.0.1:6379\n' > bad8.ini
expect 2 "a cluster on SQLite" -- "$D" --config bad8.ini --check-config
grep -q 'share a PostgreSQL store' err.txt && ok || bad "cluster message: $(cat err.txt)"
printf '[store]\nbackend = postgres\npostgres = host=127.0.0.1 port=1 connect_timeout=2\n' > bad8.ini
expect 1 "an unreachable PostgreSQL" -- "$D" --config bad8.ini --data-dir pg-none
grep -q 'cannot use the PostgreSQL store: ' err.txt && ok || bad "PostgreSQL message: $(cat err.txt)"
printf '[store]\nbackend = postgres\npostgres = x\n[cluster]\nredis = no-port\n' > bad8.ini
expect 2 "redis without a port" -- "$D" --config bad8.ini --check-config
MISSIVED_RELAY_PAYLOAD_LIMIT=-1 "$D" --check-config >out.txt 2>err.txt
[ $? -eq 2 ] && grep -q MISSIVED_RELAY_PAYLOAD_LIMIT err.txt && ok || bad "bad environment value"

# a data directory that cannot be created is a clear runtime error, not a crash
expect 1 "unusable data dir" -- "$D" --data-dir /proc/missive-cannot-be-here
grep -q 'cannot create' err.txt && ok || bad "data dir message: $(cat err.txt)"
# a port in use is a clear error
MISSIVED_SERVER_LISTEN_PORT=0 MISSIVED_HTTP_LISTEN_PORT=0 "$D" --data-dir d1 2>log1.txt &
pid=$!
for _ in $(seq 50); do [ -s d1/missived.ports ] && break; sleep 0.1; done
port=$(awk '/^http/{print $2}' d1/missived.ports)
MISSIVED_SERVER_LISTEN_PORT=0 MISSIVED_HTTP_LISTEN_PORT="$port" "$D" --data-dir d2 >out.txt 2>err.txt
[ $? -eq 1 ] && ok || bad "http port in use should fail"
kill -TERM "$pid"
wait "$pid" && ok || bad "clean stop on SIGTERM"
[ "$(stat -c %a d1/missive.db)" = 600 ] && [ "$(stat -c %a d1/server.key)" = 600 ] && ok || bad "data files are private"

# under a service manager: READY when serving, RELOADING then READY on SIGHUP, STOPPING on
# SIGTERM (systemd's notify protocol, a socket in $NOTIFY_SOCKET); a log file that logrotate
# renamed is let go on SIGHUP
printf '[log]\nfile = %s/missived.log\n' "$work" > logfile.ini
python3 - "$D" "$work" <<'PY' && ok || bad "service notifications and log reopening"
import os, signal, socket, subprocess, sys, time
missived, work = sys.argv[1], sys.argv[2]
path = os.path.join(work, "notify.sock")
sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
sock.bind(path)
sock.settimeout(30)
env = dict(os.environ, NOTIFY_SOCKET=path, MISSIVED_SERVER_LISTEN_PORT="0", MISSIVED_HTTP_LISTEN_PORT="0")
p = subprocess.Popen([missived, "--config", os.path.join(work, "logfile.ini"), "--data-dir", os.path.join(work, "d3")], env=env)
def expect(word):
    msg = sock.recv(4096).decode()
    if word not in msg.split("\n"):
        sys.exit(f"wanted {word}, got {msg!r}")
    return msg
ready = expect("READY=1")
assert f"MAINPID={p.pid}" in ready, ready
log = os.path.join(work, "missived.log")
assert "event=listening" in open(log).read()
os.rename(log, log + ".1")
p.send_signal(signal.SIGHUP)
reloading = expect("RELOADING=1")
assert "MONOTONIC_USEC=" in reloading, reloading
expect("READY=1")
time.sleep(0.2)
assert "event=reloaded" in open(log).read(), "the new log file"
assert "event=reloaded" not in open(log + ".1").read(), "the rotated file was let go"
p.send_signal(signal.SIGTERM)
expect("STOPPING=1")
assert p.wait(30) == 0
assert "event=stopped" in open(log).read()
PY
[ "$(stat -c %a missived.log)" = 600 ] && ok || bad "log file mode"
# the systemd unit is valid (with this build's missived and manual pages), where
# systemd-analyze is there to say so; and how exposed it leaves the system
if command -v systemd-analyze >/dev/null 2>&1; then
    mkdir -p unit/man/man8 unit/man/man5
    sed "s|/usr/local/bin/missived|$D|g" "$src/dist/missived.service" >unit/missived.service
    # the Documentation= pages are looked up with man(1), where there is one
    command -v man >/dev/null 2>&1 || sed -i '/^Documentation=/d' unit/missived.service
    cp "$src/man/missived.8" unit/man/man8/
    cp "$src/man/missived.conf.5" unit/man/man5/
    MANPATH=$work/unit/man expect 0 "systemd-analyze verify" -- systemd-analyze verify unit/missived.service
    systemd-analyze security --offline=true unit/missived.service >security.txt 2>&1
    exposure=$(sed -n 's/.*Overall exposure level for missived.service: \([0-9.]*\).*/\1/p' security.txt)
    echo "systemd exposure level: ${exposure:-unknown}"
    python3 -c "import sys; sys.exit(not (float(sys.argv[1]) <= 2.0))" "${exposure:-99}" && ok ||
        bad "the unit exposes too much: $(tail -3 security.txt)"
else
    echo "skip: systemd-analyze (not installed)"
fi
finish
