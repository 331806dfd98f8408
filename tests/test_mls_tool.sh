#!/usr/bin/env bash
# missive-crypto mls from the outside: three parties through key-package, create, add, join,
# process, protect, unprotect, remove and update in both cipher suites, every member printing
# the same epoch authenticator, then a branch and a reinitialization into the other suite; bad input refused with the state files byte-identical after;
# outputs that name one file refused, outputs of commands at once never over one another, an
# output that cannot be written changing nothing, a crash at any write, rename or link leaving
# the state and its outputs in step; and the working group's passive-client vectors: another implementation's Welcomes joined
# and its commits followed by the tool, reaching the epoch authenticators they expect.
set -u
. "$(cd "$(dirname "$0")" && pwd)/lib.sh"
M=$(realpath "${1:?usage: test_mls_tool.sh PATH_TO_MISSIVE_CRYPTO FAULTY_IO}")
F=$(realpath "${2:?usage: test_mls_tool.sh PATH_TO_MISSIVE_CRYPTO FAULTY_IO}")
src=$(cd "$(dirname "$0")/.." && pwd)
V=$src/tests/vectors/mls
work=$(mktemp -d)
system_python
trap 'rm -rf "$work"' EXIT
cd "$work" || exit 1

mls() { "$M" mls "$@"; }
auth() { mls epoch --state "$1" | sed -n 's/^epoch authenticator: //p'; }
same_auth() { # same_auth WHAT STATE...: every state prints one authenticator
    local what=$1 first
    shift
    first=$(auth "$1")
    [ -n "$first" ] || { bad "$what: no authenticator"; return; }
    for s in "$@"; do [ "$(auth "$s")" = "$first" ] || { bad "$what: $s differs"; return; }; done
    ok
}
keep() { for f in "$@"; do cp "$f" "$f.before"; done; }
unchanged() { # unchanged WHAT FILE...: each file as keep() saw it
    local what=$1
    shift
    for f in "$@"; do cmp -s "$f" "$f.before" || { bad "$what: $f changed"; return; }; done
    ok
}
leftover() { ls -d ./*.tmp* ./*.staged* ./*.pending 2>/dev/null; } # what a command should not leave
flip() { python3 -c "import sys; b=bytearray(open(sys.argv[1],'rb').read()); b[int(sys.argv[3]) % len(b)]^=1; open(sys.argv[2],'wb').write(b)" "$@"; }

# ---- help, usage errors, and the manual page and completion naming every option ----
subs="key-package create add remove update reinit reinit-group branch join process protect unprotect epoch"
expect 0 "mls --help" -- "$M" mls --help
expect 2 "mls alone" -- "$M" mls
expect 2 "unknown subcommand" -- "$M" mls frobnicate
. "$src/completions/missive.bash"
COMP_WORDS=(missive-crypto mls '')
COMP_CWORD=2
_missive_crypto
offered=" ${COMPREPLY[*]} "
for c in $subs; do
    expect 0 "mls $c --help" -- "$M" mls "$c" --help
    grep -q "^usage: missive-crypto mls $c" out.txt && ok || bad "$c --help text"
    [[ $offered == *" $c "* ]] && ok || bad "completion lacks mls $c"
    sed -e 's/\\-/-/g' -e 's/\\f[BIRP]//g' "$src/man/missive-crypto.1" | grep -qw -- "mls $c" && ok ||
        bad "the manual page lacks mls $c"
    for opt in $(grep -o -- '--[a-z][a-z-]*' out.txt | sort -u); do
        sed -e 's/\\-/-/g' -e 's/\\f[BIRP]//g' "$src/man/missive-crypto.1" | grep -qw -- "$opt" && ok ||
            bad "the manual page lacks $opt of mls $c"
        COMP_WORDS=(missive-crypto mls "$c" "${opt:0:4}")
        COMP_CWORD=3
        _missive_crypto
        [[ " ${COMPREPLY[*]} " == *" $opt "* ]] && ok || bad "completion of mls $c lacks $opt"
    done
done
expect 2 "missing required option" -- "$M" mls create --identity x
expect 2 "an option of another command" -- "$M" mls create --identity x --state s --commit c
grep -q -- "--commit does not go with create" err.txt && ok || bad "says which option does not go"
expect 2 "suite 2" -- "$M" mls key-package --identity x --out k --private p --suite 2
expect 2 "--days past 84 (RFC 9420 7.2)" -- "$M" mls key-package --identity x --out k --private p --days 85
expect 2 "bad group id" -- "$M" mls create --identity x --state s --group-id zz
expect 2 "a positional argument" -- "$M" mls epoch --state s extra
[ ! -e s ] && [ ! -e k ] && ok || bad "a refused command left a file"

# ---- three parties, both suites ----
for suite in 1 3; do
    d=suite$suite
    mkdir "$d" && cd "$d" || exit 1
    expect 0 "$suite create" -- mls create --identity alice --state a.st --suite "$suite" --group-id 0102
    [ "$(stat -c %a a.st)" = 600 ] && ok || bad "$suite state file mode"
    expect 1 "$suite create refuses to overwrite" -- mls create --identity alice --state a.st
    for who in b c d; do
        expect 0 "$suite key-package $who" -- mls key-package --identity "$who" --suite "$suite" --out "$who.kp" --private "$who.priv"
    done
    [ "$(stat -c %a b.priv)" = 600 ] && ok || bad "$suite private part mode"
    # alice adds bob; bob joins; bob adds carol by a PrivateMessage commit
    expect 0 "$suite add bob" -- mls add --state a.st --key-package b.kp --commit c1 --welcome w1
    expect 0 "$suite bob joins" -- mls join --welcome w1 --key-package b.kp --private b.priv --state b.st
    grep -q "^leaf: 1$" out.txt && ok || bad "$suite bob at leaf 1"
    same_auth "$suite after adding bob" a.st b.st
    keep a.st
    expect 1 "$suite replayed commit" -- mls process --state a.st --commit c1
    unchanged "$suite replayed commit" a.st
    expect 0 "$suite bob adds carol" -- mls add --state b.st --key-package c.kp --commit c2 --welcome w2 --private-message
    expect 0 "$suite alice follows" -- mls process --state a.st --commit c2
    expect 0 "$suite carol joins" -- mls join --welcome w2 --key-package c.kp --private c.priv --state c.st
    same_auth "$suite three members" a.st b.st c.st
    # application messages, each read once
    expect 0 "$suite alice protects" -- mls protect --state a.st --text "lunch at noon" --out m1
    for who in b c; do
        expect 0 "$suite $who reads" -- mls unprotect --state "$who.st" --in m1 --out "m1.$who"
        [ "$(cat "m1.$who")" = "lunch at noon" ] && grep -q "^sender: leaf 0$" out.txt && ok || bad "$suite $who reads what was sent"
    done
    keep b.st
    expect 3 "$suite a message reads once" -- mls unprotect --state b.st --in m1
    unchanged "$suite a second read" b.st
    expect 3 "$suite own message" -- mls unprotect --state a.st --in m1
    head -c 3000 /dev/urandom >blob
    expect 0 "$suite carol protects a file" -- mls protect --state c.st --in blob --out m2
    expect 0 "$suite bob reads it" -- mls unprotect --state b.st --in m2 --out m2.b
    cmp -s blob m2.b && ok || bad "$suite the file as sent"
    # bad input: each refused, the states byte-identical
    keep a.st b.st c.st
    flip m2 m2.bad 40
    expect 3 "$suite changed message" -- mls unprotect --state a.st --in m2.bad
    flip c2 c2.bad 100
    expect 1 "$suite stale commit" -- mls process --state a.st --commit c2
    grep -q "of epoch 1; the state is at epoch 2" err.txt && ok || bad "$suite stale commit says why"
    head -c 200 a.st >trunc.st
    expect 1 "$suite truncated state" -- mls epoch --state trunc.st
    grep -q "not a usable MLS state" err.txt && ok || bad "$suite truncated state says why"
    flip a.st bad.st 300
    cp bad.st bad.st.before
    expect 1 "$suite changed state" -- mls protect --state bad.st --text x --out never
    unchanged "$suite a changed state is left as it was" bad.st
    [ ! -e never ] && ok || bad "$suite a refused protect wrote a message"
    expect 1 "$suite not a message" -- mls unprotect --state a.st --in b.kp
    expect 1 "$suite a KeyPackage as a commit" -- mls process --state a.st --commit b.kp
    expect 1 "$suite join with the wrong private part" -- mls join --welcome w2 --key-package c.kp --private b.priv --state x.st
    [ ! -e x.st ] && ok || bad "$suite a refused join wrote a state"
    expect 1 "$suite join a Welcome for another" -- mls join --welcome w2 --key-package d.kp --private d.priv --state x.st
    [ ! -e x.st ] && ok || bad "$suite a refused join wrote a state"
    expect 1 "$suite add a changed KeyPackage" -- mls add --state a.st --key-package c2.bad --commit cx --welcome wx
    [ ! -e cx ] && [ ! -e wx ] && ok || bad "$suite a refused add wrote files"
    expect 1 "$suite a KeyPackage twice" -- mls add --state a.st --key-package d.kp --key-package d.kp --commit cx --welcome wx
    grep -q "KeyPackage given twice" err.txt && ok || bad "$suite says a KeyPackage is given twice: $(cat err.txt)"
    expect 1 "$suite output exists" -- mls add --state a.st --key-package d.kp --commit c1 --welcome wx
    unchanged "$suite bad input changes no state" a.st b.st c.st
    # wrong state file: a group of its own reads nothing of this one
    expect 0 "$suite another group" -- mls create --identity eve --state e.st --suite "$suite"
    keep e.st
    expect 1 "$suite another group's message" -- mls unprotect --state e.st --in m2
    grep -q "another group" err.txt && ok || bad "$suite says another group"
    expect 1 "$suite another group's commit" -- mls process --state e.st --commit c2
    unchanged "$suite the wrong state is unchanged" e.st
    # alice removes bob; carol follows; bob cannot follow nor read what follows
    expect 0 "$suite remove bob" -- mls remove --state a.st --leaf 1 --commit c3
    expect 0 "$suite carol follows the removal" -- mls process --state c.st --commit c3
    keep b.st
    expect 1 "$suite bob refuses his removal" -- mls process --state b.st --commit c3
    expect 0 "$suite alice protects after" -- mls protect --state a.st --text "without bob" --out m3
    expect 0 "$suite carol reads it" -- mls unprotect --state c.st --in m3 --out m3.c
    expect 1 "$suite bob cannot" -- mls unprotect --state b.st --in m3
    unchanged "$suite removed bob's state" b.st
    grep -q "without bob" m3.c && ok || bad "$suite carol's text"
    expect 1 "$suite remove an empty leaf" -- mls remove --state a.st --leaf 1 --commit cy
    expect 1 "$suite remove ourselves" -- mls remove --state a.st --leaf 0 --commit cy
    [ ! -e cy ] && ok || bad "$suite a refused remove wrote a commit"
    # carol updates; dave is added by alice into bob's old leaf
    expect 0 "$suite carol updates" -- mls update --state c.st --commit c4 --private-message
    expect 0 "$suite alice follows the update" -- mls process --state a.st --commit c4
    # in suite 3 without a path: carol follows and dave joins from a Welcome without a path secret
    nopath=
    [ "$suite" = 3 ] && nopath=--no-path
    expect 0 "$suite add dave $nopath" -- mls add --state a.st --key-package d.kp --commit c5 --welcome w5 $nopath
    expect 0 "$suite carol follows" -- mls process --state c.st --commit c5
    expect 0 "$suite dave joins" -- mls join --welcome w5 --key-package d.kp --private d.priv --state d.st
    same_auth "$suite after removal, update and add" a.st c.st d.st
    mls epoch --state d.st >ep.txt
    grep -q "^epoch: 5$" ep.txt && grep -q "^members: 3$" ep.txt && grep -q "^cipher suite: $suite$" ep.txt && ok ||
        bad "$suite epoch output: $(cat ep.txt)"
    # a subgroup of alice and dave (RFC 9420 11.3): dave joins it with his state of the group
    other=$((suite == 1 ? 3 : 1))
    expect 0 "$suite key-package of dave's leaf" -- mls key-package --state d.st --suite "$suite" --out d2.kp --private d2.priv
    expect 0 "$suite key-package of eve" -- mls key-package --identity eve --suite "$suite" --out e.kp --private e.priv
    expect 0 "$suite key-package of dave's name with another key" -- mls key-package --identity d --suite "$suite" --out dx.kp --private dx.priv
    expect 2 "$suite key-package of another name than the state's" -- mls key-package --identity x --state d.st --out x.kp --private x.priv
    keep a.st d.st
    expect 1 "$suite a branch with someone not in the group" -- mls branch --state a.st --key-package e.kp --out x.st --welcome wx
    grep -q "not one of the old group" err.txt && [ ! -e x.st ] && [ ! -e wx ] && ok || bad "$suite a refused branch: $(cat err.txt)"
    expect 1 "$suite a branch with a member's name and another key" -- mls branch --state a.st --key-package dx.kp --out x.st --welcome wx
    grep -q "signature key" err.txt && [ ! -e x.st ] && [ ! -e wx ] && ok || bad "$suite a branch with another key: $(cat err.txt)"
    expect 0 "$suite alice branches with dave" -- mls branch --state a.st --key-package d2.kp --out ab.st --welcome wb --group-id 0c0d
    grep -q "^epoch: 1$" out.txt && grep -q "^group: 0c0d$" out.txt && ok || bad "$suite branch output: $(cat out.txt)"
    expect 1 "$suite dave cannot join the branch without the group" -- mls join --welcome wb --key-package d2.kp --private d2.priv --state db.st
    grep -q -- "--resume" err.txt && [ ! -e db.st ] && ok || bad "$suite a join without --resume: $(cat err.txt)"
    expect 1 "$suite nor with another group" -- mls join --welcome wb --key-package d2.kp --private d2.priv --state db.st --resume e.st
    expect 1 "$suite nor over the group's own state" -- mls join --welcome wb --key-package d2.kp --private d2.priv --state d.st --resume d.st --force
    expect 0 "$suite dave joins the branch" -- mls join --welcome wb --key-package d2.kp --private d2.priv --state db.st --resume d.st
    unchanged "$suite branching and joining leave the group" a.st d.st
    same_auth "$suite the branch" ab.st db.st
    expect 0 "$suite alice writes in the branch" -- mls protect --state ab.st --text "just us" --out mb
    expect 0 "$suite dave reads it" -- mls unprotect --state db.st --in mb --out mb.d
    expect 1 "$suite carol cannot" -- mls unprotect --state c.st --in mb
    grep -q "just us" mb.d && ok || bad "$suite the branch's text"
    # the group reinitialized in the other suite (11.2): carol commits the ReInit, dave makes
    # the new group, alice and carol join it with their closed states (copies of the states:
    # the tests below go on in the group)
    for who in a c d; do cp "$who.st" "$who.o.st"; done
    expect 0 "$suite carol commits a ReInit" -- mls reinit --state c.o.st --commit cr --suite "$other" --group-id 0a0b
    expect 0 "$suite alice follows the ReInit" -- mls process --state a.o.st --commit cr
    grep -q "the group is closed" out.txt && ok || bad "$suite process says the group is closed: $(cat out.txt)"
    expect 0 "$suite dave follows the ReInit" -- mls process --state d.o.st --commit cr
    mls epoch --state d.o.st >ep.txt
    grep -q "^reinitialized as: 0a0b$" ep.txt && grep -q "^new cipher suite: $other$" ep.txt && ok || bad "$suite epoch of a closed group: $(cat ep.txt)"
    keep a.o.st
    expect 1 "$suite nothing is sent in a closed group" -- mls protect --state a.o.st --text late --out mx
    expect 1 "$suite nor committed" -- mls update --state a.o.st --commit cx
    grep -q "reinitialized" err.txt && ok || bad "$suite says the group was reinitialized: $(cat err.txt)"
    expect 1 "$suite a branch of a closed group" -- mls branch --state a.o.st --key-package d2.kp --out x.st --welcome wx
    unchanged "$suite a closed group's refusals" a.o.st
    expect 1 "$suite reinit-group of an open group" -- mls reinit-group --state ab.st --key-package d2.kp --out x.st --welcome wx
    grep -q "no ReInit" err.txt && [ ! -e x.st ] && [ ! -e wx ] && ok || bad "$suite reinit-group of an open group: $(cat err.txt)"
    for who in a c; do
        expect 0 "$suite key-package $who in suite $other" -- mls key-package --state "$who.o.st" --suite "$other" --out "$who.r.kp" --private "$who.r.priv"
    done
    expect 1 "$suite the new group leaves out no member" -- mls reinit-group --state d.o.st --key-package a.r.kp --out dr.st --welcome wr
    grep -q "old group's members" err.txt && [ ! -e dr.st ] && [ ! -e wr ] && ok || bad "$suite a reinit leaving out carol: $(cat err.txt)"
    expect 0 "$suite dave makes the new group" -- mls reinit-group --state d.o.st --key-package a.r.kp --key-package c.r.kp --out dr.st --welcome wr
    expect 1 "$suite the new group needs the closed group" -- mls join --welcome wr --key-package c.r.kp --private c.r.priv --state cr.st --resume ab.st
    [ ! -e cr.st ] && ok || bad "$suite a refused join wrote a state"
    expect 0 "$suite alice joins the new group" -- mls join --welcome wr --key-package a.r.kp --private a.r.priv --state ar.st --resume a.o.st
    expect 0 "$suite carol joins the new group" -- mls join --welcome wr --key-package c.r.kp --private c.r.priv --state cr.st --resume c.o.st --resume ab.st
    same_auth "$suite the new group" ar.st cr.st dr.st
    mls epoch --state cr.st >ep.txt
    grep -q "^group: 0a0b$" ep.txt && grep -q "^cipher suite: $other$" ep.txt && grep -q "^epoch: 1$" ep.txt && grep -q "^members: 3$" ep.txt &&
        ok || bad "$suite the new group's epoch: $(cat ep.txt)"
    expect 0 "$suite carol writes in the new group" -- mls protect --state cr.st --text "again" --out mr
    expect 0 "$suite alice reads it" -- mls unprotect --state ar.st --in mr --out mr.a
    grep -q "again" mr.a && ok || bad "$suite the new group's text"
    [ -z "$(leftover)" ] && ok || bad "$suite temporary files left: $(leftover)"
    cd .. || exit 1
done

# ---- two processes on one state at once: each change is kept (the file is locked) ----
cd suite1 || exit 1
# (four rounds: a process that saved the state must keep the lock while it publishes its message)
n=0
for r in 1 2 3 4; do
    for i in 1 2 3 4 5 6; do mls protect --state a.st --text "m$r.$i" --out "p$r.$i" >/dev/null 2>&1 & done
    wait
    for i in 1 2 3 4 5 6; do
        mls unprotect --state c.st --in "p$r.$i" --out "p$r.$i.txt" >/dev/null 2>&1 &&
            [ "$(cat "p$r.$i.txt")" = "m$r.$i" ] && n=$((n + 1))
    done
done
[ "$n" = 24 ] && ok || bad "concurrent protects: $n of 24 read"
cd .. || exit 1

# ---- the files of one command: each its own, never over another's, none lost ----
epoch_of() { mls epoch --state "$1" 2>/dev/null | sed -n 's/^epoch: //p'; }
# group DIR: alice made a group and added bob (epoch 1), carol and dave with KeyPackages
group() {
    mkdir "$1" && cd "$1" || exit 1
    mls create --identity alice --state alice.st >/dev/null
    for who in bob carol dave; do
        mls key-package --identity "$who" --out "$who.kp" --private "$who.priv" >/dev/null
    done
    mls add --state alice.st --key-package bob.kp --commit c1 --welcome w1 >/dev/null
    cp bob.priv bob.priv.kept
    mls join --welcome w1 --key-package bob.kp --private bob.priv --state bob.st >/dev/null
}
group files
# two outputs, or an output and the state, naming one file: refused even with --force
keep alice.st bob.st
expect 1 "add --commit X --welcome X" -- mls add --state alice.st --key-package carol.kp --commit same --welcome same
grep -q "name one file" err.txt && ok || bad "says the outputs name one file"
expect 1 "add --commit X --welcome X --force" -- mls add --state alice.st --key-package carol.kp --commit same --welcome ./same --force
expect 1 "protect --out STATE --force" -- mls protect --state alice.st --text x --out alice.st --force
ln alice.st alias.st
expect 1 "protect --out (a hard link of STATE) --force" -- mls protect --state alice.st --text x --out alias.st --force
rm alias.st
expect 1 "update --commit STATE --force" -- mls update --state alice.st --commit ../files/alice.st --force
mls protect --state alice.st --text hello --out m1 >/dev/null
keep alice.st
expect 1 "unprotect --out STATE --force" -- mls unprotect --state bob.st --in m1 --out bob.st --force
expect 1 "unprotect --out its input --force" -- mls unprotect --state bob.st --in m1 --out m1 --force
expect 1 "key-package --out P --private P" -- mls key-package --identity x --out kp --private kp
expect 1 "join --state (its Welcome) --force" -- mls join --welcome w1 --key-package bob.kp --private bob.priv.kept --state w1 --force
[ ! -e same ] && [ ! -e kp ] && cmp -s w1 w1 && ok || bad "a refused command wrote a file"
unchanged "outputs naming one file change no state" alice.st bob.st
# an output that cannot be written: nothing changes, the message is read after
expect 1 "unprotect to a directory that does not exist" -- mls unprotect --state bob.st --in m1 --out nodir/plain
expect 1 "unprotect to a closed standard output" -- sh -c '"$0" mls unprotect --state bob.st --in m1 >&-' "$M"
expect 1 "protect to a directory that does not exist" -- mls protect --state alice.st --text x --out nodir/m2
expect 1 "add with a Welcome that cannot be written" -- mls add --state alice.st --key-package carol.kp --commit c2 --welcome nodir/w2
[ ! -e c2 ] && ok || bad "a refused add left its commit"
unchanged "an output that cannot be written changes no state" alice.st bob.st
[ "$(mls unprotect --state bob.st --in m1 2>/dev/null)" = hello ] && ok || bad "the message is read after"
# a text to a terminal: its controls shown as escapes, not acting; to a pipe, as sent
mls protect --state alice.st --text $'\e[2Jcleared' --out esc1 >/dev/null
mls protect --state alice.st --text $'\e[2Jcleared' --out esc2 >/dev/null
script -qc "'$M' mls unprotect --state bob.st --in esc1" /dev/null </dev/null >tty.txt 2>&1
grep -qF '\x1b[2Jcleared' tty.txt && ! grep -q $'\e' tty.txt && ok || bad "a text's escape acted on the terminal: $(od -c tty.txt | head -3)"
[ "$(mls unprotect --state bob.st --in esc2 2>/dev/null)" = $'\e[2Jcleared' ] && ok || bad "a text to a pipe as sent"
# a failed key-package --force leaves the private part it was given
cp carol.priv carol.priv.before
expect 1 "key-package --force with an output that cannot be written" -- mls key-package --identity y --out nodir/y.kp --private carol.priv --force
cmp -s carol.priv carol.priv.before && ok || bad "a failed key-package --force lost the private part"
# join: the KeyPackage's private part is gone once the state is saved (forward secrecy), the
# file a symbolic link names too
[ ! -e bob.priv ] && ok || bad "bob's private part outlives his join"
(
    group symlinked
    mls add --state alice.st --key-package carol.kp --commit c2 --welcome w2 >/dev/null
    mkdir keys && mv carol.priv keys/carol.priv && ln -s keys/carol.priv carol.priv
    expect 0 "carol joins with her private part behind a symbolic link" -- mls join --welcome w2 --key-package carol.kp --private carol.priv --state carol.st
    [ ! -e carol.priv ] && [ ! -e keys/carol.priv ] && ok || bad "carol's private part outlives her join"
    [ "$failed" = 0 ]
) || bad "a private part behind a symbolic link"
# commands on one state at once with one output: one writes it, the other is refused
# at_once WHAT ARGS1 -- ARGS2: two commands on alice.st, both waiting on its lock; exactly one succeeds
at_once() {
    local what=$1 a=() r1 r2 p1
    shift
    while [ "$1" != -- ]; do a+=("$1"); shift; done
    shift
    (flock -x alice.st -c 'sleep 1') &
    sleep 0.3
    mls "${a[@]}" >/dev/null 2>&1 &
    p1=$!
    mls "$@" >/dev/null 2>&1
    r2=$?
    wait $p1
    r1=$?
    wait
    [ $((r1 + r2)) = 1 ] && ok || bad "$what at once: exit $r1 and $r2"
}
at_once "two adds to one --commit" add --state alice.st --key-package carol.kp --commit cc --welcome ww -- \
    add --state alice.st --key-package dave.kp --commit cc --welcome ww
[ "$(epoch_of alice.st)" = 2 ] && ok || bad "alice at epoch 2 after one add"
expect 0 "bob follows the one commit written" -- mls process --state bob.st --commit cc
at_once "two protects to one --out" protect --state alice.st --text first --out one.msg -- \
    protect --state alice.st --text second --out one.msg
pids=
for i in 1 2 3 4 5 6; do
    mls create --identity "x$i" --state new.st >/dev/null 2>&1 &
    pids="$pids $!"
done
n=0
for p in $pids; do wait "$p" && n=$((n + 1)); done
[ "$n" = 1 ] && ok || bad "six creates of one new state at once: $n succeeded"
[ -z "$(leftover)" ] && ok || bad "staged files left: $(leftover)"
# a STATE.pending not written by the tool: refused, nothing it names touched
echo junk >alice.st.pending
expect 1 "a pending file that is junk" -- mls epoch --state alice.st
grep -q "not a file of outputs pending" err.txt && ok || bad "says what the pending file is not"
echo secret >victim
printf 'MSVMLS-PENDING 1\n%064d\nN %s/victim\n%s/out\n' 0 "$PWD" "$PWD" >alice.st.pending
expect 1 "a pending file naming another file as staged" -- mls epoch --state alice.st
[ -e victim ] && [ ! -e out ] && ok || bad "a pending file removed or published what it named"
echo staged >out2.stagedABCDEF
printf 'MSVMLS-PENDING 1\n%064d\nN %s/out2.stagedABCDEF\n%s/out2\njunk\n' 0 "$PWD" "$PWD" >alice.st.pending
expect 1 "a pending file good at first, then not" -- mls epoch --state alice.st
[ -e out2.stagedABCDEF ] && ok || bad "a pending file that does not read removed what it named first"
rm alice.st.pending out2.stagedABCDEF
cd .. || exit 1

# the keys kept for skipped generations: a member jumping far ahead drops its own, not another's
group skipped
mls add --state alice.st --key-package carol.kp --commit c2 --welcome w2 >/dev/null
mls process --state bob.st --commit c2 >/dev/null
mls join --welcome w2 --key-package carol.kp --private carol.priv --state carol.st >/dev/null
mls protect --state alice.st --text "alice 0" --out a0 >/dev/null
mls protect --state alice.st --text "alice 1" --out a1 >/dev/null
mls unprotect --state bob.st --in a1 >/dev/null 2>&1 # a0 late: its key kept
for i in $(seq 0 75); do mls protect --state carol.st --text "c$i" --out "cm$i" >/dev/null; done
expect 0 "carol's message 76 generations on" -- mls unprotect --state bob.st --in cm75
expect 0 "alice's late message still read" -- mls unprotect --state bob.st --in a0 --out a0.txt
[ "$(cat a0.txt 2>/dev/null)" = "alice 0" ] && ok || bad "alice's late message as sent"
expect 0 "carol's latest kept key" -- mls unprotect --state bob.st --in cm74
cd .. || exit 1

# a crash at each write, sync, rename and link of an add: after the next command on the state
# (which settles what the crash left), the commit exists if and only if the state merged it, and
# the committer goes on; no staged file, half-saved state or note left behind
group crash
cp alice.st alice.base
cp bob.st bob.base
k=0
while :; do
    cp alice.base alice.st
    rm -f c2 w2
    ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}verify_asan_link_order=0" \
        MSV_FAULTY_IO_MATCH="$PWD/" MSV_FAULTY_IO_CRASH_AFTER=$k MSV_FAULTY_IO_CRASH_RENAMES=1 LD_PRELOAD="$F" \
        "$M" mls add --state alice.st --key-package carol.kp --commit c2 --welcome w2 >/dev/null 2>&1
    rc=$?
    mls epoch --state alice.st >/dev/null 2>&1 || bad "crash $k: alice's state does not load"
    e=$(epoch_of alice.st)
    if [ -e c2 ]; then
        cp bob.base bob.st
        [ "$e" = 2 ] && [ -e w2 ] && mls process --state bob.st --commit c2 >/dev/null 2>&1 &&
            [ "$(auth alice.st)" = "$(auth bob.st)" ] && ok ||
            bad "crash $k: the commit is out, alice at epoch $e, bob does not follow her"
    else
        [ "$e" = 1 ] && [ ! -e w2 ] && ok || bad "crash $k: no commit out, alice at epoch $e"
    fi
    [ -z "$(leftover)" ] && ok || bad "crash $k: files left: $(leftover)"
    mls update --state alice.st --commit "u$k" >/dev/null 2>&1 && ok || bad "crash $k: alice cannot commit after"
    [ $rc -eq 137 ] || break
    k=$((k + 1))
    [ $k -lt 40 ] || { bad "the add never finished"; break; }
done
[ $k -ge 6 ] && ok || bad "only $k crash points"
cd .. || exit 1
# the same for unprotect --out: the text exists if and only if its key is gone from the state
group crash2
mls protect --state alice.st --text hello --out m1 >/dev/null
cp bob.st bob.base
k=0
while :; do
    cp bob.base bob.st
    rm -f plain
    ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}verify_asan_link_order=0" \
        MSV_FAULTY_IO_MATCH="$PWD/" MSV_FAULTY_IO_CRASH_AFTER=$k MSV_FAULTY_IO_CRASH_RENAMES=1 LD_PRELOAD="$F" \
        "$M" mls unprotect --state bob.st --in m1 --out plain >/dev/null 2>&1
    rc=$?
    mls epoch --state bob.st >/dev/null 2>&1 || bad "unprotect crash $k: bob's state does not load"
    if [ -e plain ]; then
        [ "$(cat plain)" = hello ] && ok || bad "unprotect crash $k: the text"
        expect 3 "unprotect crash $k: the text out, the key gone" -- mls unprotect --state bob.st --in m1
    else
        [ "$(mls unprotect --state bob.st --in m1 2>/dev/null)" = hello ] && ok ||
            bad "unprotect crash $k: no text out, and the message is no longer read"
    fi
    [ -z "$(leftover)" ] && ok || bad "unprotect crash $k: files left: $(leftover)"
    [ $rc -eq 137 ] || break
    k=$((k + 1))
    [ $k -lt 40 ] || { bad "the unprotect never finished"; break; }
done
[ $k -ge 4 ] && ok || bad "only $k unprotect crash points"
cd .. || exit 1

# ---- the passive-client vectors: another implementation's Welcomes and commits ----
python3 - "$M" "$V" <<'PY' >interop.txt 2>&1 && ok || { bad "passive-client vectors"; cat interop.txt >&2; }
import json, os, subprocess, sys
tool, vdir = sys.argv[1], sys.argv[2]
# at most this many commits followed per case (the sanitizer build: each process start and its
# leak check at exit are dear there, and test_mls_vectors follows every commit in-process)
most = int(os.environ.get("MSV_MLS_TOOL_EPOCHS") or 0) or None

def write(path, hexstr):
    with open(path, "wb") as f:
        f.write(bytes.fromhex(hexstr))

def run(*args):
    r = subprocess.run([tool, "mls", *args], capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit("%s: exit %d: %s" % (" ".join(args[:1]), r.returncode, r.stderr.strip()))
    return r.stdout

def authenticator(state):
    for line in run("epoch", "--state", state).splitlines():
        if line.startswith("epoch authenticator: "):
            return line.split(": ")[1]

counts = {}
for name in ("passive-client-welcome", "passive-client-handling-commit", "passive-client-random"):
    cases = json.load(open(os.path.join(vdir, name + ".json")))
    done = epochs = 0
    for i, tc in enumerate(cases):
        if tc["cipher_suite"] not in (1, 3):
            continue
        d = "%s-%d" % (name, i)
        os.mkdir(d)
        p = lambda f: os.path.join(d, f)
        write(p("welcome"), tc["welcome"])
        write(p("kp"), tc["key_package"])
        priv = b"MSVMKP" + (1).to_bytes(2, "big") + tc["cipher_suite"].to_bytes(2, "big")
        priv += bytes.fromhex(tc["signature_priv"] + tc["init_priv"] + tc["encryption_priv"])
        open(p("priv"), "wb").write(priv)
        args = ["join", "--welcome", p("welcome"), "--key-package", p("kp"), "--private", p("priv"), "--state", p("st")]
        if tc.get("ratchet_tree"):
            write(p("tree"), tc["ratchet_tree"])
            args += ["--tree", p("tree")]
        psk_args = [a for k in tc["external_psks"] for a in ("--psk", "%s:%s" % (k["psk_id"], k["psk"]))]
        run(*args, *psk_args)
        if authenticator(p("st")) != tc["initial_epoch_authenticator"]:
            raise SystemExit("%s case %d: the initial epoch authenticator differs" % (name, i))
        for e, ep in enumerate(tc["epochs"][:most]):
            write(p("commit%d" % e), ep["commit"])
            pargs = []
            for k, prop in enumerate(ep["proposals"]):
                write(p("prop%d.%d" % (e, k)), prop)
                pargs += ["--proposal", p("prop%d.%d" % (e, k))]
            run("process", "--state", p("st"), "--commit", p("commit%d" % e), *pargs, *psk_args)
            if authenticator(p("st")) != ep["epoch_authenticator"]:
                raise SystemExit("%s case %d epoch %d: the authenticator differs" % (name, i, e))
            epochs += 1
        done += 1
    counts[name] = (done, epochs)
for name, (n, e) in counts.items():
    print("%s: %d cases joined, %d commits followed, every authenticator as expected" % (name, n, e))
if most is not None:
    print("(at most %d commits followed per case)" % most)
if counts["passive-client-welcome"][0] != 16:
    raise SystemExit("expected 16 welcome cases")
PY
cat interop.txt
finish
