# Shared by the shell tests: counters and an expect-exit-status helper.
# Sourced, not run. Each test ends with `finish`.
passed=0
failed=0
ok() { passed=$((passed + 1)); }
bad() { failed=$((failed + 1)); echo "FAIL: $*" >&2; }
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
finish() {
    echo "$passed passed, $failed failed"
    [ "$failed" -eq 0 ]
}

# in_scratch: works in a fresh directory ($work), removed at exit after the
# missived that start_missived started (if still running) is stopped.
in_scratch() {
    work=$(mktemp -d)
    pid=
    trap 'if [ -n "$pid" ]; then kill -TERM "$pid" 2>/dev/null && wait "$pid"; fi; rm -rf "$work"' EXIT
    cd "$work" || exit 1
}

# start_missived [WRAPPER...]: starts $D (through WRAPPER, e.g. valgrind) on
# loopback with its data in srv/ and its log appended to srv.log; $port is
# the TLS port to take (0 or unset: any free one) and afterwards the one it
# listens on, so a restart keeps the address. Returns 1 if it did not start.
start_missived() {
    rm -f srv/missived.ports
    MISSIVED_SERVER_LISTEN_PORT=${port:-0} MISSIVED_HTTP_LISTEN_PORT=0 MISSIVED_ACCOUNTS_ARGON2_MEMLIMIT_KIB=8 \
        "$@" "$D" --data-dir srv 2>>srv.log &
    pid=$!
    for _ in $(seq 600); do [ -s srv/missived.ports ] && break; sleep 0.1; done
    [ -s srv/missived.ports ] || return 1
    port=$(awk '/^tls/{print $2}' srv/missived.ports)
}

# register_people NAME...: with $M against the missived start_missived started,
# registers NAME@example.org for each NAME, its device's data in dev-NAME;
# sets $server and MISSIVE_PASSWORD. Then `as NAME COMMAND...` runs missive
# as that person.
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
}
as() {
    local who=$1
    shift
    "$M" --data-dir "dev-$who" --account "$who@example.org" "$@"
}
