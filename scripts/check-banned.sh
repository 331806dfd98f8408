#!/usr/bin/env bash
# Fails if C sources call a banned function: unbounded copies and formatting
# (strcpy, strcat, sprintf, strncpy), unchecked or stateful parsing (atoi, strtok),
# weak randomness (rand) and unbounded stack allocation (alloca). docs/style.md.
set -euo pipefail
cd "$(dirname "$0")/.."
banned='strcpy|strcat|sprintf|vsprintf|strncpy|atoi|atol|strtok|rand|srand|alloca|gets'
hits=$(grep -rnE "\b($banned)\s*\(" --include='*.c' --include='*.h' src apps tests fuzz include \
    | grep -vE '^[^:]+:[0-9]+:\s*(/?\*|//)' || true)
if [ -n "$hits" ]; then
    echo "banned calls found:" >&2
    echo "$hits" >&2
    exit 1
fi
echo "banned calls: none"
