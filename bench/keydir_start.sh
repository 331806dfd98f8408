#!/usr/bin/env bash
# The start of missived with a transparency log of N entries (default 10,000; one
# device set per handle): seconds from exec until it serves (its ports file), for
# the first start after the store began keeping the key directory's labels (it
# computes and keeps them all: the upgrade), and for the starts after it (it reads
# them). With OTHER_MISSIVED (a build from before kt_labels), that build's start
# on the same log too. Usage: bench/keydir_start.sh MISSIVED [N] [RUNS]
set -eu
D=$(realpath "${1:?usage: keydir_start.sh MISSIVED [N] [RUNS]}")
N=${2:-10000}
RUNS=${3:-3}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# a data directory whose store is the schema missived $1 writes, with N log entries
seed() {
    local bin=$1 dir=$2
    mkdir -p "$dir"
    MISSIVED_SERVER_LISTEN_PORT=0 MISSIVED_HTTP_LISTEN_PORT=0 "$bin" --data-dir "$dir" 2>/dev/null &
    local pid=$!
    for _ in $(seq 300); do [ -s "$dir/missived.ports" ] && break; sleep 0.1; done
    kill -TERM "$pid"; wait "$pid" || true
    python3 - "$dir/missive.db" "$N" <<'PY'
import sqlite3, struct, sys
db = sqlite3.connect(sys.argv[1])
rows = []
for i in range(int(sys.argv[2])):
    h = ("u%d@bench" % i).encode()
    ident = bytes([i & 0xff]) * 32
    leaf = bytes([1]) + struct.pack(">Q", 1) + bytes([len(h)]) + h + bytes([1]) + \
        struct.pack(">Q", i + 1) + bytes([1]) + struct.pack(">H", len(ident)) + ident
    rows.append((i, h.decode(), leaf))
db.executemany("INSERT INTO kt_log (idx, handle, leaf) VALUES (?, ?, ?)", rows)
db.commit()
PY
}

# seconds from exec until dir's missived serves
start() {
    local bin=$1 dir=$2 t0 t1
    rm -f "$dir/missived.ports"
    t0=$(date +%s.%N)
    MISSIVED_SERVER_LISTEN_PORT=0 MISSIVED_HTTP_LISTEN_PORT=0 "$bin" --data-dir "$dir" 2>>"$work/log" &
    local pid=$!
    for _ in $(seq 6000); do [ -s "$dir/missived.ports" ] && break; sleep 0.02; done
    t1=$(date +%s.%N)
    kill -TERM "$pid"; wait "$pid" || true
    echo "$t1 - $t0" | bc
}

for r in $(seq "$RUNS"); do
    rm -rf "$work/d"
    seed "$D" "$work/d"
    sqlite3 "$work/d/missive.db" 'DELETE FROM kt_labels;'
    first=$(start "$D" "$work/d")
    then=$(start "$D" "$work/d")
    line="run $r: $N entries: first start (computes and keeps the labels) ${first} s; next start (reads them) ${then} s"
    if [ -n "${OTHER_MISSIVED:-}" ]; then
        rm -rf "$work/o"
        seed "$(realpath "$OTHER_MISSIVED")" "$work/o"
        line="$line; $OTHER_MISSIVED: $(start "$(realpath "$OTHER_MISSIVED")" "$work/o") s"
    fi
    echo "$line"
done
grep "kt_tree_built" "$work/log" | tail -1
