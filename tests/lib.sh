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
