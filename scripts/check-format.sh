#!/usr/bin/env bash
# Fails if any C file differs from what clang-format (.clang-format) would write.
set -euo pipefail
cd "$(dirname "$0")/.."
mapfile -t files < <(git ls-files '*.c' '*.h' 2>/dev/null || find src apps tests fuzz include -name '*.[ch]')
clang-format --dry-run --Werror "${files[@]}"
echo "format: ${#files[@]} files clean"
