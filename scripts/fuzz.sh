#!/usr/bin/env bash
# Builds the libFuzzer targets with clang (ASan + UBSan) and runs each for SECONDS
# (default 20) from its seed corpus. New inputs go to a scratch copy, so the
# committed corpus is not changed; a crash leaves its input in build-fuzz/artifacts/.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-20}
case "$seconds" in ''|*[!0-9]*) echo "usage: scripts/fuzz.sh [SECONDS]" >&2; exit 2 ;; esac
CC=clang cmake -S . -B build-fuzz -DMSV_FUZZ=ON -DMSV_TESTS=OFF -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build-fuzz -j"$(nproc)" >/dev/null
mkdir -p build-fuzz/artifacts
# fuzz_one TARGET: runs it for SECONDS and writes its verdict to build-fuzz/TARGET.result
fuzz_one() {
    local target=$1 scratch runs
    scratch=$(mktemp -d)
    cp fuzz/corpus/"$target"/* "$scratch"/
    if build-fuzz/fuzz/fuzz_"$target" -max_total_time="$seconds" -print_final_stats=1 \
        -artifact_prefix=build-fuzz/artifacts/"$target"- "$scratch" >build-fuzz/"$target".log 2>&1; then
        runs=$(grep -m1 -oE 'stat::number_of_executed_units: *[0-9]+' build-fuzz/"$target".log | grep -oE '[0-9]+$' || echo '?')
        echo "fuzz_$target: ok, $runs inputs in ${seconds}s" >build-fuzz/"$target".result
    else
        { echo "fuzz_$target: FAILED (see build-fuzz/$target.log)"; tail -30 build-fuzz/"$target".log; } \
            >build-fuzz/"$target".result
    fi
    rm -rf "$scratch"
}
# Each target is one process on one core: as many run at once as there are cores, each
# still for SECONDS, so every target gets the same fuzzing in a fraction of the wall time.
targets="classic envelope identity payload frame kt devlist session backup mlkem vrf ptree ptree_steps lineage link sealed config invite rpc term web pqratchet qrimage username mls mls_group mls_state mls_credential mls_pending xmpp"
slots=$(nproc)
running=0
status=0
for target in $targets; do
    rm -f build-fuzz/"$target".result
    if [ "$running" -ge "$slots" ]; then
        wait -n || true
        running=$((running - 1))
    fi
    fuzz_one "$target" &
    running=$((running + 1))
done
wait || true
for target in $targets; do
    cat build-fuzz/"$target".result 2>/dev/null || echo "fuzz_$target: FAILED (no verdict)"
    grep -q "^fuzz_$target: ok" build-fuzz/"$target".result 2>/dev/null || status=1
done
rm -f /tmp/msv-fuzz-config-*
rm -rf /tmp/msv-fuzz-backup-*
rm -f /tmp/msv-fuzz-qrimage-*
exit $status
