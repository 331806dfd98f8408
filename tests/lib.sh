# Shared by the shell tests: counters and an expect-exit-status helper.
# Sourced, not run. Each test ends with `finish`.
passed=0
failed=0
# system_python: python3 is the system's own from here on, where there is one (through a link in
# $work/.bin): a version manager's shim in front of it runs a shell and a dozen processes at
# every call, about a second each in a loaded test run, and the tests call it often; what they
# import comes with scripts/deps.sh's Debian packages
system_python() {
    if [ -x /usr/bin/python3 ] && [ "$(command -v python3)" != /usr/bin/python3 ]; then
        mkdir -p "$work/.bin" && ln -sf /usr/bin/python3 "$work/.bin/python3" && PATH="$work/.bin:$PATH"
    fi
}
ok() { passed=$((passed + 1)); }
bad() { failed=$((failed + 1)); echo "FAIL: $*" >&2; }
# flip_byte FILE OFFSET: the byte at OFFSET changed for certain (each bit inverted; writing a
# given byte there leaves the file as it was whenever that byte was there already)
flip_byte() {
    python3 -c 'import sys
with open(sys.argv[1], "r+b") as f:
    f.seek(int(sys.argv[2])); b = f.read(1)
    if len(b) != 1: sys.exit("flip_byte: no byte at " + sys.argv[2])
    f.seek(int(sys.argv[2])); f.write(bytes([b[0] ^ 0xff]))' "$1" "$2"
}
# expect STATUS DESCRIPTION -- COMMAND...: runs COMMAND with output in out.txt and err.txt
# (both also appended to the file TRANSCRIPT names, if set)
expect() {
    local want=$1 what=$2
    shift 3
    "$@" >out.txt 2>err.txt
    local got=$?
    if [ -n "${TRANSCRIPT:-}" ]; then cat out.txt err.txt >>"$TRANSCRIPT"; fi
    if [ "$got" -eq "$want" ]; then ok; else bad "$what: exit $got, wanted $want ($(head -c 300 err.txt))"; fi
}
# bench_gone DIR: waits up to 30 s for every process of the servers missive-bench started
# with TMPDIR=DIR (their command lines name its scratch directory) and for that directory to
# be gone: a process killed under a sanitizer can take a while to unmap. 1 if something is
# still there; bench_left DIR says what.
bench_gone() {
    for _ in $(seq 300); do
        if ! pgrep -f "$1/missive-bench-" >/dev/null && ! ls -d "$1"/missive-bench-* >/dev/null 2>&1; then
            return 0
        fi
        sleep 0.1
    done
    return 1
}
bench_left() { pgrep -af "$1/missive-bench-" | head -3; ls -d "$1"/missive-bench-* 2>/dev/null; }
finish() {
    echo "$passed passed, $failed failed"
    [ "$failed" -eq 0 ]
}

# kill_left DIR: every process but this shell still working in DIR killed outright (a chat
# whose terminal closed but that has not exited: under the sanitizers, one stuck in the leak
# check at exit was seen spinning for an hour after its test, slowing every test after it)
kill_left() {
    local p
    for p in /proc/[0-9]*; do
        [ "${p#/proc/}" = "$$" ] && continue
        [ "$(readlink "$p/cwd" 2>/dev/null)" = "$1" ] && kill -KILL "${p#/proc/}" 2>/dev/null
    done
}

# in_scratch: works in a fresh directory ($work), removed at exit after the
# test's chats (tm) are closed and the missived that start_missived started
# and the owner in $daemon (if still running) are stopped; whatever is left in
# it is killed.
in_scratch() {
    work=$(mktemp -d)
    pid=
    daemon=
    trap 'tm kill-server 2>/dev/null; for p in $daemon $pid; do kill -TERM "$p" 2>/dev/null && wait "$p"; done; kill_left "$work"; rm -rf "$work"' EXIT
    # A test killed outright (SIGKILL: ctest's timeout) runs no EXIT trap, and its tmux server
    # is outside its process tree: a watcher, outside it too, closes the chats and removes
    # the directory once the test is gone.
    (setsid bash -c "while kill -0 $$ 2>/dev/null; do sleep 1; done
        tmux -L '$(tm_socket)' kill-server 2>/dev/null; rm -rf '$work'" </dev/null >/dev/null 2>&1 &)
    system_python
    cd "$work" || exit 1
}

# ---- the chat under tmux -------------------------------------------------------------------
# tm: this test's own tmux server.
tm_socket() { echo "missive-$(basename "$0" .sh)-$$"; }
tm() { tmux -u -L "$(tm_socket)" -f /dev/null "$@"; }

# chat_in SESSION DATA-DIR WIDTH ARGS...: `missive chat ARGS` of the account in
# DATA-DIR in a tmux window of its own, WIDTH x $CHAT_ROWS (30), in the C locale (the chat
# must take UTF-8 by itself; tmux -u draws UTF-8 whatever the environment
# says); its error stream in chat-SESSION.err, its exit status in
# chat-SESSION.rc. ARGS are words of a shell command: quote what has spaces.
chat_in() {
    local session=$1 dir=$2 width=$3
    shift 3
    tm new-session -d -s "$session" -x "$width" -y "${CHAT_ROWS:-30}" \
        "cd '$work' && LANG=C LC_ALL= '$M' --data-dir $dir chat $* 2>chat-$session.err; echo \$? >chat-$session.rc; sleep 30"
}

# chat WHO ARGS...: WHO's chat (dev-WHO), 100 columns wide.
chat() {
    local who=$1
    shift
    chat_in "$who" "dev-$who" 100 "$@"
}

screen() { tm capture-pane -p -t "$1"; }

# waitfor SESSION TEXT [TENTHS]: until TEXT shows in the window (5 s unless told).
waitfor() {
    for _ in $(seq "${3:-50}"); do screen "$1" | grep -qF -- "$2" && return 0; sleep 0.1; done
    return 1
}

# reserve_port VAR: sets VAR to a free loopback port of this test's own, for a server that
# restarts on the same port. A port the kernel hands out (listen_port 0) lies in the ephemeral
# range, where an outgoing connection of a test running beside this one can take it while the
# server is stopped; these come from just below it, each held (for as long as the test's
# shell lives) by a lock on a file named after it, so that two tests never take the same one.
reserve_port() {
    local _low _high _dir _p _fd  # named apart from any VAR a caller passes
    read -r _low _high </proc/sys/net/ipv4/ip_local_port_range
    _dir=/tmp/msv-test-ports-$(id -u)
    mkdir -p -m 700 "$_dir"
    for _ in $(seq 500); do
        _p=$((_low - 1 - (RANDOM * 32768 + RANDOM) % 8192))
        [ "$_p" -gt 1024 ] || continue
        exec {_fd}>>"$_dir/$_p"
        if flock -n "$_fd" && python3 -c 'import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1])))' "$_p" 2>/dev/null; then
            printf -v "$1" '%s' "$_p"
            return 0
        fi
        exec {_fd}>&-
    done
    printf -v "$1" 0
}

# start_missived [WRAPPER...]: starts $D (through WRAPPER, e.g. valgrind) on
# loopback with its data in srv/ and its log appended to srv.log; $port is
# the TLS port to take (0 or unset: any free one) and afterwards the one it
# listens on, so a restart keeps the address. Returns 1 if it did not start.
# missived gets SIGTERM when the test's shell dies, even by SIGKILL (ctest's timeout),
# which runs no EXIT trap.
start_missived() {
    rm -f srv/missived.ports
    [ "${port:-0}" != 0 ] || reserve_port port
    MISSIVED_SERVER_LISTEN_PORT=${port:-0} MISSIVED_HTTP_LISTEN_PORT=0 MISSIVED_ACCOUNTS_ARGON2_MEMLIMIT_KIB=8 \
        setpriv --pdeathsig TERM "$@" "$D" --data-dir srv 2>>srv.log &
    pid=$!
    for _ in $(seq 600); do [ -s srv/missived.ports ] && break; sleep 0.1; done
    [ -s srv/missived.ports ] || return 1
    port=$(awk '/^tls/{print $2}' srv/missived.ports)
}

# metric NAME: the value of missived_NAME on the /metrics page of the missived start_missived
# started
metric() {
    python3 -c 'import sys, urllib.request; print(urllib.request.urlopen(sys.argv[1]).read().decode())' \
        "http://127.0.0.1:$(awk '/^http/{print $2}' srv/missived.ports)/metrics" |
        awk -v m="missived_$1" '$1 == m {print $2}'
}

# register_people NAME...: with $M against the missived start_missived started,
# registers NAME@example.org for each NAME, its device's data in dev-NAME;
# sets $server and MISSIVE_PASSWORD; each is a contact (named by the handle)
# of every other. Then `as NAME COMMAND...` runs missive as that person.
register_people() {
    server=127.0.0.1:$port
    export MISSIVE_PASSWORD="correct horse battery"
    local who code
    for who in "$@"; do
        "$M" --data-dir "dev-$who" register "$who@example.org" --server "$server" >/dev/null 2>&1
        code=$(grep "handle=$who@example.org code=" srv.log | tail -1 | sed 's/.*code=//')
        "$M" --data-dir "dev-$who" register "$who@example.org" --code "$code" >/dev/null && ok ||
            bad "register $who"
    done
    # each the others' contact: a first message between them is no message request
    local other
    for who in "$@"; do
        for other in "$@"; do
            [ "$who" = "$other" ] ||
                as "$who" contacts add "$other@example.org" "$other@example.org" >/dev/null ||
                bad "$who's contact $other"
        done
    done
}
as() {
    local who=$1
    shift
    "$M" --data-dir "dev-$who" --account "$who@example.org" "$@"
}
# device_of WHO: the id of WHO's device (dev-WHO)
device_of() { as "$1" -o json fingerprint 2>/dev/null | python3 -c 'import json,sys; print(json.load(sys.stdin)["device_id"])' 2>/dev/null; }
# presence_of DEVICE: the node a cluster's Redis (MSV_TEST_REDIS) names for the device
presence_of() { redis-cli -h "${MSV_TEST_REDIS%:*}" -p "${MSV_TEST_REDIS##*:}" GET "msv:presence:$1"; }

# link_laptop NAME: links a second device of NAME@example.org (data in dev-NAME2), approved by
# the first; sets $laptop and $phone (their device ids). Then `laptop_m COMMAND...` runs missive
# as the laptop.
link_laptop() {
    local who=$1
    eval "laptop_m() { \"\$M\" --data-dir dev-${who}2 \"\$@\"; }"
    expect 0 "$who links a laptop" -- laptop_m link "$who@example.org" --server "$server"
    laptop=$(sed -n 's/.*this is device \([0-9]*\) .*/\1/p' out.txt)
    expect 0 "$who approves it" -- as "$who" devices approve "$laptop"
    expect 0 "the laptop takes its notices" -- laptop_m receive
    phone=$(as "$who" -o json devices | python3 -c 'import json,sys
print([d["device_id"] for d in json.load(sys.stdin) if d["this_device"]][0])')
}

# cluster_node NAME [PORT [INI-LINES]]: starts (or restarts, on the same port) a
# missived node on $MSV_TEST_POSTGRES and $MSV_TEST_REDIS with its data in
# $work/node-NAME and the shared directory $work/shared, its log appended to
# node-NAME.log; INI-LINES are added to its config. Sets pids[NAME] and
# ports[NAME] (associative arrays of the caller) and returns once both of its
# Redis connections are up, or 1.
cluster_node() {
    local n=$1 p=${2:-0}
    rm -f "node-$n/missived.ports"
    [ "$p" != 0 ] || reserve_port p
    cat >"node-$n.ini" <<EOF
[server]
data_dir = $work/node-$n
shared_dir = $work/shared
listen_port = $p
[store]
backend = postgres
postgres = $MSV_TEST_POSTGRES
connections = 4
[cluster]
redis = $MSV_TEST_REDIS
node = $n
[http]
listen_port = 0
[accounts]
argon2_memlimit_kib = 8
${3:-}
EOF
    setpriv --pdeathsig TERM "$D" --config "node-$n.ini" 2>>"node-$n.log" &
    pids[$n]=$!
    for _ in $(seq 300); do [ -s "node-$n/missived.ports" ] && break; sleep 0.1; done
    [ -s "node-$n/missived.ports" ] || return 1
    ports[$n]=$(awk '/^tls/{print $2}' "node-$n/missived.ports")
    for _ in $(seq 100); do grep -q "event=redis_connected" "node-$n.log" && return 0; sleep 0.1; done
    return 1
}

# gated_node NAME: starts cluster node NAME again on its port, holding its new subscriptions to
# devices' channels back while $work/gate exists ([testing] subscribe_gate)
gated_node() {
    kill -TERM "${pids[$1]}" && wait "${pids[$1]}"
    cluster_node "$1" "${ports[$1]}" "$(printf '[testing]\nsubscribe_gate = %s/gate' "$work")"
}

# link_approved WHO DIR NODE: a new device of WHO in DIR, linked through cluster node NODE and
# approved by WHO's device in dev-WHO; its id in $linked
link_approved() {
    expect 0 "$1 links a device in $2" -- "$M" --data-dir "$2" link "$1@example.org" --server "127.0.0.1:${ports[$3]}"
    linked=$(sed -n 's/.*this is device \([0-9]*\).*/\1/p' out.txt)
    expect 0 "$1 approves it" -- "$M" --data-dir "dev-$1" --account "$1@example.org" devices approve "$linked"
}

# link_wait NAME DIR [ARGS...]: `missive link NAME@example.org --qr` in the background,
# its output in DIR.out/DIR.err; waits until its code is shown, in $code (its pid in
# $waiter; link_done waits for it and returns its exit status)
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

# wait_for FILE TEXT [TENTHS]: 0 as soon as FILE holds TEXT, else 1 after TENTHS
# tenths of a second (60)
wait_for() {
    for _ in $(seq "${3:-60}"); do
        grep -q "$2" "$1" 2>/dev/null && return 0
        sleep 0.1
    done
    return 1
}

# receive_until TEXT COMMAND...: runs COMMAND (a `receive` without --wait, which stops once the
# server has pushed everything queued) again until what it printed holds TEXT (grep pattern), at
# most for 10 s: for what another process sends in its own time. Prints what every run printed
# (standard output, then error); its status is the first failed run's, or 1 if TEXT never came.
receive_until() {
    local text=$1 rc=0 end=$((SECONDS + 10))
    shift
    : >ru.out
    : >ru.err
    while :; do
        "$@" >>ru.out 2>>ru.err || { rc=$?; break; }
        grep -q -- "$text" ru.out ru.err && break
        [ "$SECONDS" -lt "$end" ] || { rc=1; break; }
        sleep 0.1
    done
    cat ru.out
    cat ru.err >&2
    return $rc
}

# receive_crashing_at K WHO: WHO's `missive receive` with $F (tests/faulty_io.c) preloaded,
# killed at its write or sync number K in dev-WHO/ (status 137, as if killed; 0 if it finished
# first), what it printed in crash.out
receive_crashing_at() {
    ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}verify_asan_link_order=0" \
        MSV_FAULTY_IO_MATCH="$work/dev-$2/" MSV_FAULTY_IO_CRASH_AFTER=$1 LD_PRELOAD="$F" \
        "$M" --data-dir "dev-$2" --account "$2@example.org" receive >crash.out 2>&1
}

# on_mls WHO GROUP: WHO's device holds the group named GROUP on MLS (`groups` in groups.txt)
on_mls() {
    as "$1" -o json groups >groups.txt &&
        python3 -c 'import json, sys
assert any(r["name"] == sys.argv[2] and r["mls"] for r in map(json.loads, open(sys.argv[1])))' \
            groups.txt "$2" 2>/dev/null
}

# rejoined NODE: 0 once node NODE has connected to Redis a second time (within 10 s)
rejoined() {
    for _ in $(seq 100); do
        [ "$(grep -c "event=redis_connected" "node-$1.log")" -ge 2 ] && return 0
        sleep 0.1
    done
    return 1
}

# field JSONPATH: reads one value from each JSON line of out.txt (python expression on r)
field() { python3 -c 'import json,sys
for l in open("out.txt"):
    l = l.strip()
    if l:
        r = json.loads(l)
        try: print(eval(sys.argv[1]))
        except Exception as e: print("<%s>" % e)' "$1"; }
# daemon_rpc SOCKET [--schema N] [--wait S] [--ready FILE] REQUEST...: JSON-RPC with a daemon
# (tests/daemon_rpc.py); what it writes goes to standard output
daemon_rpc() { python3 "$(dirname "${BASH_SOURCE[0]}")/daemon_rpc.py" "$@"; }
# daemon_schema_ok VERSION FILE: every line of FILE follows docs/daemon-schema-VERSION.json;
# prints the errors otherwise
daemon_schema_ok() {
    local py=python3 lib
    lib=$(dirname "${BASH_SOURCE[0]}")
    $py -c 'import jsonschema' 2>/dev/null || py=/usr/bin/python3
    $py "$lib/check_schema.py" "$lib/../docs/daemon-schema-$1.json" "$2" >schema.out 2>&1 &&
        grep -q "^checked [1-9]" schema.out || { cat schema.out; return 1; }
}
# events_both SOCKET COMMAND...: subscribes to the daemon at SOCKET in schema 1 and in
# schema 2, runs COMMAND, and leaves what each subscriber got in ev1.txt and ev2.txt
# (each ends once COMMAND is over and 3 s passed without a line)
events_both() {
    local sock=$1 s1 s2
    shift
    rm -f sub1 sub2 acted
    daemon_rpc "$sock" --wait 3 --ready sub1 --until acted '{"jsonrpc":"2.0","id":1,"method":"subscribe"}' >ev1.txt &
    s1=$!
    daemon_rpc "$sock" --schema 2 --wait 3 --ready sub2 --until acted '{"jsonrpc":"2.0","id":1,"method":"subscribe"}' >ev2.txt &
    s2=$!
    for _ in $(seq 100); do [ -e sub1 ] && [ -e sub2 ] && break; sleep 0.1; done
    "$@"
    : >acted
    wait "$s1" "$s2"
}
