#!/usr/bin/env bash
# The whole test suite, as CI runs it on a fresh Debian bookworm machine:
# dependencies, static checks, unit and integration tests in a normal build
# and in an ASan+UBSan build, then every fuzz target for a short time.
set -uo pipefail
cd "$(dirname "$0")/.."
jobs=$(nproc)
# tests at once under ctest: in the release build most of a test's time is spent waiting on
# other processes (twice as many tests as processors: about 620 s against 940 s on two cores);
# under the sanitizers the processors are busier, so one more than processors (three at once
# on two cores took 909 s against 1,059 s with two, which left them idle a fifth of the time;
# four took 984 s against 945 s with three)
ctest_jobs=${MSV_CTEST_JOBS:-$((jobs * 2))}
sanitized_jobs=${MSV_CTEST_JOBS:-$((jobs + 1))}
passed=0
failed=0
stage() {
    local name=$1
    shift
    echo "==> $name"
    if "$@"; then passed=$((passed + 1)); else failed=$((failed + 1)); echo "==> $name: FAILED"; fi
}
# The tests run with fsync and its kin made no-ops (eatmydata, a preloaded library): every
# commit of missived's and the clients' SQLite databases (synchronous=FULL) otherwise waits for
# the disk. What that gives up is a power failure's, which no test can cause: a process that a
# test kills still leaves its writes to the kernel, and the tests that fail or count writes and
# syncs preload their own shim in its place (tests/faulty_io.c).
build() { # build DIR CMAKE_ARGS...
    local dir=$1
    shift
    cmake -S . -B "$dir" "$@" >/dev/null && cmake --build "$dir" -j"$jobs" >/dev/null
}
# build_behind DIR CMAKE_ARGS...: builds DIR at the lowest priority while the tests of the
# stage before run, which leave the processors idle about a fifth of the time; its errors in
# DIR/build.log, its process in $behind
build_behind() {
    local dir=$1
    shift
    mkdir -p "$dir"
    (renice -n 19 -p "$BASHPID" >/dev/null && build "$dir" "$@") >"$dir/build.log" 2>&1 &
    behind=$!
}
# built DIR PID: the build that build_behind started, waited for; its log shown if it failed
built() {
    if wait "$2"; then return 0; fi
    echo "building $1 failed:"
    tail -40 "$1/build.log"
    return 1
}
run_tests() { # run_tests DIR CTEST_JOBS
    (cd "$1" && "${nosync[@]}" ctest --output-on-failure -j"$2")
}

bash scripts/deps.sh || exit 1
nosync=()
if command -v eatmydata >/dev/null; then
    nosync=(eatmydata)
else
    echo "eatmydata is not installed: the tests wait for every fsync"
fi
stage "banned calls" bash scripts/check-banned.sh
stage "format" bash scripts/check-format.sh
release_tests() {
    build build -DCMAKE_BUILD_TYPE=RelWithDebInfo || return 1
    build_behind build-asan -DCMAKE_BUILD_TYPE=Debug -DMSV_SANITIZE=ON
    asan_build=$behind
    run_tests build "$ctest_jobs"
}
stage "build and test (release)" release_tests
# (the sanitizers' runtime then comes after eatmydata's library: allowed, as it intercepts
# nothing of theirs)
sanitized_tests() {
    [ -n "${asan_build:-}" ] || build_behind build-asan -DCMAKE_BUILD_TYPE=Debug -DMSV_SANITIZE=ON
    built build-asan "${asan_build:-$behind}" || return 1
    CC=clang build_behind build-fuzz -DMSV_FUZZ=ON -DMSV_TESTS=OFF -DCMAKE_BUILD_TYPE=RelWithDebInfo
    fuzz_build=$behind
    ASAN_OPTIONS="verify_asan_link_order=0${ASAN_OPTIONS:+:$ASAN_OPTIONS}" run_tests build-asan "$sanitized_jobs"
}
stage "build and test (ASan+UBSan)" sanitized_tests
# scripts/fuzz.sh builds the tree again, which is then up to date
fuzz() {
    if [ -n "${fuzz_build:-}" ]; then built build-fuzz "$fuzz_build" || return 1; fi
    bash scripts/fuzz.sh "${MSV_FUZZ_SECONDS:-10}"
}
stage "fuzz (${MSV_FUZZ_SECONDS:-10}s per target)" fuzz
echo "stages: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
