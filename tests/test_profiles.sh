#!/usr/bin/env bash
# Profiles against a real missived on loopback, through the command line: a
# display name and an avatar set by bob reach alice with bob's next message
# (the avatar's bytes intact), are shown beside bob's handle, give way to
# alice's own contact name, and are fetched again when bob changes them;
# the daemon's methods and schema-2 events (validated; none for schema 1);
# the chat under tmux shows the name beside the handle.
set -u
. "$(cd "$(dirname "$0")" && pwd)/lib.sh"
M=$(realpath "${1:?usage: test_profiles.sh MISSIVE MISSIVED}")
D=$(realpath "${2:?usage: test_profiles.sh MISSIVE MISSIVED}")
in_scratch

# the avatar's file in the -o json output of 'profile show' in out.txt
avatar_file() { python3 -c "import json; print(json.load(open('out.txt')).get('avatar', ''))"; }

start_missived || bad "missived started"
register_people alice bob carol

expect 1 "no profile before one is set" -- as bob profile
head -c 300000 /dev/urandom >avatar.bin
expect 2 "a name with a control character is refused" -- as bob profile set --name $'Bob\x1b[31m'
expect 2 "a name over 64 bytes is refused" -- as bob profile set --name "$(printf 'b%.0s' $(seq 65))"
head -c 1048577 /dev/urandom >big.bin
expect 1 "an avatar over 1 MiB is refused" -- as bob profile set --name Bob --avatar big.bin
expect 1 "nothing was set by the refusals" -- as bob profile
expect 0 "bob sets a name and an avatar" -- as bob profile set --name "Bob Builder" --avatar avatar.bin
expect 0 "bob's profile" -- as bob -o json profile
python3 -c "import json,sys; p=json.load(open('out.txt')); sys.exit(0 if p['name']=='Bob Builder' and p['avatar_bytes']==300000 else 1)" && ok || bad "own profile: $(cat out.txt)"

expect 0 "bob writes to alice" -- as bob send alice@example.org --text "hello alice"
expect 0 "alice receives it" -- as alice receive
grep -q "Bob Builder (bob@example.org): hello alice" out.txt && ok || bad "receive text: $(cat out.txt)"
grep -q "notice: bob@example.org's profile changed: Bob Builder" out.txt && ok || bad "profile notice: $(cat out.txt)"
expect 0 "alice's history as json" -- as alice -o json history bob@example.org
python3 -c "import json,sys; m=[json.loads(l) for l in open('out.txt')]; sys.exit(0 if m[-1].get('from_name')=='Bob Builder' else 1)" && ok || bad "from_name: $(cat out.txt)"
expect 0 "bob's profile as alice has it" -- as alice -o json profile show bob@example.org
path=$(avatar_file)
cmp -s "$path" avatar.bin && ok || bad "the avatar's bytes differ"

expect 0 "alice names bob herself" -- as alice contacts add Builder bob@example.org
expect 0 "alice's history" -- as alice history bob@example.org
grep -q "Builder (bob@example.org): hello alice" out.txt && ! grep -q "Bob Builder" out.txt && ok || bad "contact name should win: $(cat out.txt)"
expect 0 "alice forgets the contact" -- as alice contacts remove Builder

expect 0 "bob changes his name, keeping his avatar" -- as bob profile set --name "Robert"
expect 0 "bob writes again" -- as bob send alice@example.org --text "new name"
expect 0 "alice receives it" -- as alice receive
grep -q "Robert (bob@example.org): new name" out.txt && ok || bad "refreshed name: $(cat out.txt)"
expect 0 "bob's profile as alice has it now" -- as alice -o json profile show bob@example.org
path=$(avatar_file)
cmp -s "$path" avatar.bin && ok || bad "the avatar should be kept"
expect 0 "bob clears his avatar" -- as bob profile clear-avatar
expect 0 "bob writes again" -- as bob send alice@example.org --text "no picture"
expect 0 "alice receives it" -- as alice receive
expect 0 "bob's profile as alice has it now" -- as alice -o json profile show bob@example.org
python3 -c "import json,sys; p=json.load(open('out.txt')); sys.exit(0 if p['name']=='Robert' and p.get('avatar') is None else 1)" && ok || bad "cleared avatar: $(cat out.txt)"
expect 0 "a second message does not fetch the same profile again" -- as bob send alice@example.org --text "again"
expect 0 "alice receives it" -- as alice receive
grep -q "profile changed" out.txt && bad "the same profile was reported again" || ok

# ---- the daemon: methods and schema-2 events ---------------------------------------------
sock=$work/dev-carol/carol@example.org/daemon.sock
(exec "$M" --data-dir dev-carol daemon >daemon.out 2>daemon.err) &
daemon=$!
for _ in $(seq 100); do [ -S "$sock" ] && break; sleep 0.1; done
daemon_rpc "$sock" --schema 2 '{"jsonrpc":"2.0","id":1,"method":"profile","params":{"args":["set"],"name":"Carol C"}}' \
    '{"jsonrpc":"2.0","id":2,"method":"profile"}' \
    '{"jsonrpc":"2.0","id":3,"method":"profile","params":{"args":["set"],"name":"bad\u0007name"}}' | tee -a wire2.jsonl >out.txt
python3 - <<'PY' && ok || bad "daemon profile methods: $(cat out.txt)"
import json
r = {x["id"]: x for x in map(json.loads, open("out.txt"))}
assert "error" not in r[1], r[1]
assert r[2]["result"]["items"] == [{"handle": "carol@example.org", "name": "Carol C", "avatar_bytes": 0}], r[2]
assert "display name" in r[3]["error"]["message"], r[3]
PY
expect 0 "carol sets an avatar through the running daemon (a relative path)" -- as carol profile set --name "Carol C" --avatar avatar.bin
bob_writes_carol() { as bob send carol@example.org --text "hi carol" >/dev/null 2>&1; }
events_both "$sock" bob_writes_carol
cat ev1.txt >>wire.jsonl
cat ev2.txt >>wire2.jsonl
python3 - <<'PY' && ok || bad "the profile events (schema 2): $(cat ev2.txt)"
import json
ev = [x["params"] for x in map(json.loads, open("ev2.txt")) if x.get("method") == "event"]
got = [(e["from"], e["notice"]) for e in ev if e["type"] == "profile"]
assert got == [("bob@example.org", "bob@example.org's profile changed: Robert")], ev
msg = [e["message"] for e in ev if e["type"] == "message"]
assert [m.get("from_name") for m in msg] == ["Robert"], msg
PY
grep -q '"profile"\|from_name' ev1.txt && bad "a schema-1 subscriber got a profile event or from_name: $(cat ev1.txt)" || ok
grep -q "hi carol" ev1.txt && ok || bad "the schema-1 subscriber got the message: $(cat ev1.txt)"
daemon_schema_ok 2 wire2.jsonl && ok || bad "schema 2"
daemon_schema_ok 1 wire.jsonl && ok || bad "schema 1"
kill -TERM "$daemon"
wait "$daemon"
daemon=
expect 0 "bob receives carol's message after her profile" -- as carol send bob@example.org --text "from carol"
expect 0 "bob receives it" -- as bob receive
grep -q "Carol C (carol@example.org): from carol" out.txt && ok || bad "carol's name: $(cat out.txt)"
expect 0 "carol's profile as bob has it" -- as bob -o json profile show carol@example.org
path=$(avatar_file)
cmp -s "$path" avatar.bin && ok || bad "carol's avatar differs"

# ---- the chat: names in the list and the history, and their change ------------------------
if command -v tmux >/dev/null; then
    chat_in alice dev-alice 120 bob@example.org
    waitfor alice "online" && ok || bad "alice's chat: $(screen alice)"
    waitfor alice "Robert (bob@example.org): no picture" && ok || bad "the name in the chat's history: $(screen alice)"
    screen alice | grep -q "^Robert (bob@example.org)[ (0-9)]*│" && ok || bad "the name in the chat's list: $(screen alice)"
    as bob profile set --name "Bobby T" >/dev/null 2>&1
    as bob send alice@example.org --text "renamed once more" >/dev/null 2>&1
    waitfor alice "Bobby T (bob@example.org): renamed once more" && ok || bad "the new name in the chat: $(screen alice)"
    waitfor alice "bob@example.org's profile changed: Bobby T" && ok || bad "the chat's profile note: $(screen alice)"
    tm send-keys -t alice "/quit" Enter
    sleep 0.5
else
    bad "tmux is not installed (scripts/deps.sh installs it)"
fi

# ---- a block rotates the profile key: the profile goes again under the new key ------------
expect 0 "bob's pointer before" -- as bob -o json sync
before=$(grep '"sync:profile"' out.txt)
expect 0 "bob blocks carol" -- as bob block carol@example.org
expect 0 "bob's profile, read under the new key" -- as bob profile
grep -q "^name	Bobby T$" out.txt && ok || bad "own profile after the rotation: $(cat out.txt) $(cat err.txt)"
expect 0 "bob's pointer after" -- as bob -o json sync
[ -n "$before" ] && [ "$before" != "$(grep '"sync:profile"' out.txt)" ] && ok || bad "the pointer did not change: $before"
expect 0 "alice receives the new key" -- as alice receive
grep -q "bob@example.org's profile changed: Bobby T" out.txt && ok || bad "the profile under the new key: $(cat out.txt)"
grep -q "could not be used" out.txt && bad "the profile under the new key was refused: $(cat out.txt)" || ok

finish
