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
# on two cores took 909 s against 1,059 s with two, which left them idle a fifth of the time)
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
build_and_test() { # build_and_test DIR CTEST_JOBS CMAKE_ARGS...
    local dir=$1 at_once=$2
    shift 2
    cmake -S . -B "$dir" "$@" >/dev/null && cmake --build "$dir" -j"$jobs" >/dev/null &&
        (cd "$dir" && ctest --output-on-failure -j"$at_once")
}

bash scripts/deps.sh || exit 1
stage "banned calls" bash scripts/check-banned.sh
stage "format" bash scripts/check-format.sh
stage "build and test (release)" build_and_test build "$ctest_jobs" -DCMAKE_BUILD_TYPE=RelWithDebInfo
stage "build and test (ASan+UBSan)" build_and_test build-asan "$sanitized_jobs" -DCMAKE_BUILD_TYPE=Debug -DMSV_SANITIZE=ON
stage "fuzz (${MSV_FUZZ_SECONDS:-10}s per target)" bash scripts/fuzz.sh "${MSV_FUZZ_SECONDS:-10}"
echo "stages: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
