#!/usr/bin/env bash
# The manual pages and the bash completion against the programs: every page
# renders without a warning, names every command, option and configuration key
# the program itself lists, and the completion offers the same commands.
set -u
. "$(cd "$(dirname "$0")" && pwd)/lib.sh"
bin=$(realpath "${1:?usage: test_docs.sh BUILD_DIR}")
src=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work" || exit 1

# page text with roff's escaped hyphens as plain ones and without font changes
page() { sed -e 's/\\-/-/g' -e 's/\\f[BIRP]//g' "$src/man/$1"; }
# every --option a help text names
options() { grep -o -- '--[a-z][a-z0-9-]*' | sort -u; }
# each word of stdin must be in page $1 (fed by redirection, so that the count is kept)
all_in() {
    local pg=$1 what=$2 missing=""
    while read -r w; do
        [ -n "$w" ] && ! page "$pg" | grep -qwF -- "$w" && missing="$missing $w"
    done
    [ -z "$missing" ] && ok || bad "$pg lacks $what:$missing"
}

for f in "$src"/man/*.[158]; do
    if command -v groff >/dev/null 2>&1; then
        out=$(groff -man -Tutf8 -ww -z "$f" 2>&1)
        [ -z "$out" ] && ok || bad "$(basename "$f") renders with warnings: $out"
    fi
done
for p in missive missived missive-admin missive-audit missive-crypto missive-bench; do
    ls "$src"/man/"$p".[18] >/dev/null 2>&1 && ok || bad "no manual page for $p"
done

commands=$("$bin/missive" --help | sed -n 's/^  \([a-z][a-z-]*\)  .*/\1/p')
[ "$(echo "$commands" | wc -l)" -ge 15 ] && ok || bad "missive --help lists too few commands"
all_in missive.1 "commands" <<<"$commands"
all_in missive.1 "options" < <(for c in $commands; do "$bin/missive" "$c" --help; done 2>&1 | options)
all_in missive.1 "global options" < <("$bin/missive" --help | options)
all_in missived.8 "options" < <("$bin/missived" --help | options)
all_in missived.conf.5 "keys" < <("$bin/missived" --check-config | sed -n 's/^\([a-z_0-9]*\) = .*/\1/p')
all_in missived.conf.5 "sections" < <("$bin/missived" --check-config | sed -n 's/^\[\([a-z]*\)\]$/[\1]/p')
all_in missive-audit.1 "options" < <("$bin/missive-audit" --help | options)
all_in missive-admin.8 "options" < <("$bin/missive-admin" --help | options)
all_in missive-admin.8 "commands" < <("$bin/missive-admin" --help | sed -n 's/^  \([a-z][a-z-]*\) .*/\1/p')
all_in missive-bench.1 "options" < <("$bin/missive-bench" --help | options)
all_in missive-crypto.1 "commands" < <("$bin/missive-crypto" --help | sed -n 's/^  \([a-z][a-z-]*\)  .*/\1/p')

# completion: what it offers, as bash would ask it
. "$src/completions/missive.bash"
complete_line() { # the candidates for the words given (the last one being typed)
    COMP_WORDS=("$@")
    COMP_CWORD=$(($# - 1))
    COMPREPLY=()
    local f
    f=$(complete -p "$1" | sed 's/.*-F \([^ ]*\) .*/\1/')
    "$f"
    printf '%s\n' "${COMPREPLY[@]}" | sort
}
[ "$(complete_line missive '' | tr '\n' ' ')" = "$(echo "$commands" | sort | tr '\n' ' ')" ] && ok ||
    bad "completion commands differ from missive --help: $(complete_line missive '' | tr '\n' ' ')"
[ "$(complete_line missive re | tr '
' ' ')" = "react read receive register report requests restore " ] && ok || bad "completion of 're'"
[ "$(complete_line missive send --t | tr '\n' ' ')" = "--text " ] && ok || bad "completion of send --t"
[ "$(complete_line missive register x --suite '' | tr '\n' ' ')" = "classic ecies modern " ] && ok || bad "completion of --suite"
mkdir -p data/alice@example.org data/bob@example.org data/not-an-account
touch data/alice@example.org/state.db data/bob@example.org/state.db
[ "$(complete_line missive --data-dir data --account '' | tr '\n' ' ')" = "alice@example.org bob@example.org " ] && ok ||
    bad "completion of accounts: $(complete_line missive --data-dir data --account '')"
[ "$(complete_line missived --c | tr '\n' ' ')" = "--check-config --config " ] && ok || bad "missived completion"
[ "$(complete_line missive-admin s | tr '\n' ' ')" = "stats suspend " ] && ok || bad "missive-admin completion"
for c in $commands; do
    for o in $("$bin/missive" "$c" --help 2>&1 | sed -n '1,/^$/p' | options); do
        complete_line missive "$c" "$o" | grep -qx -- "$o" && ok || bad "completion of missive $c lacks $o"
    done
done
finish
