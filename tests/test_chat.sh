#!/usr/bin/env bash
# missive chat under tmux, against a real missived on loopback: alice and bob
# each in a full-screen chat; what one types arrives in the other's window,
# with typing notices, delivery and read marks, unread counts, a file with
# its bytes intact, a warning when a contact's devices change, the QR code,
# a resize, and plain commands running through a chat that owns the account.
set -u
. "$(cd "$(dirname "$0")" && pwd)/lib.sh"
M=$(realpath "${1:?usage: test_chat.sh MISSIVE MISSIVED}")
D=$(realpath "${2:?usage: test_chat.sh MISSIVE MISSIVED}")
if ! command -v tmux >/dev/null; then
    echo "tmux is not installed (scripts/deps.sh installs it)" >&2
    exit 1
fi
in_scratch

start_missived || bad "missived started"
register_people alice bob carol
as alice send bob@example.org --text "first contact" >/dev/null && as bob receive >/dev/null && ok || bad "a first message"
as alice contacts remove bob@example.org >/dev/null # named by his handle until now
as alice contacts add bobby bob@example.org && ok || bad "alice's contact"

sock() { echo "$work/dev-$1/$1@example.org/daemon.sock"; }

chat alice bobby
chat bob
waitfor alice "online" && waitfor bob "online" && ok || bad "both chats start online: $(screen alice)"
screen alice | grep -q "Missive  alice@example.org  online  —  bobby" && ok || bad "the title names the contact: $(screen alice | head -2)"
waitfor bob "alice@example.org: first contact" && ok || bad "bob's history: $(screen bob)"

# alice types: bob sees the notice, then the message; alice sees it delivered and read
tm send-keys -t alice "héllo bob, ünïcode ✓"
waitfor bob "alice@example.org is typing" && ok || bad "typing notice: $(screen bob | tail -3)"
tm send-keys -t alice Enter
waitfor bob "alice@example.org: héllo bob, ünïcode ✓" && ok || bad "message in bob's chat: $(screen bob)"
waitfor alice "me: héllo bob, ünïcode ✓  ✓✓ read" && ok || bad "read mark in alice's chat: $(screen alice)"
[ "$(screen alice | tail -1)" = ">" ] && ok || bad "the compose line is empty after sending: $(screen alice | tail -1)"

# editing keys: the line sent is the line as edited
tm send-keys -t bob "helo world"
tm send-keys -t bob Home Right Right Right l End BSpace BSpace BSpace BSpace BSpace "there" Enter
waitfor alice "bobby: hello there" && ok || bad "edited line: $(screen alice)"
tm send-keys -t bob "throw this away" C-u "//slash first" Enter
waitfor alice "bobby: /slash first" && ok || bad "Ctrl-U and //: $(screen alice)"

# a message in another conversation: counted unread in the list, read when opened
as carol send bob@example.org --text "carol here" >/dev/null 2>&1 && ok || bad "carol sends"
waitfor bob "carol@example.org (1)" && ok || bad "unread count: $(screen bob)"
tm send-keys -t bob Tab
waitfor bob "carol@example.org: carol here" && ok || bad "Tab opens carol's conversation: $(screen bob)"
screen bob | grep -q "carol@example.org (1)" && bad "still unread after opening" || ok
tm send-keys -t bob Tab

# a file, with its bytes intact
head -c 300000 /dev/urandom >photo.bin
tm send-keys -t alice "/file $work/photo.bin" Enter
waitfor bob "(300000 bytes)]" && ok || bad "the file in bob's chat: $(screen bob)"
saved=$(ls dev-bob/bob@example.org/attachments/* 2>/dev/null | head -1)
[ -n "$saved" ] && cmp -s photo.bin "$saved" && ok || bad "the received file: $saved"
tm send-keys -t alice "/file $work/nothing-here" Enter
waitfor alice "nothing-here: No such file or directory" && ok || bad "a missing file: $(screen alice | tail -2)"

# plain commands run through the chat that owns the account
[ -S "$(sock bob)" ] && ok || bad "the chat's socket"
expect 0 "bob sends from the shell while his chat runs" -- as bob send alice@example.org --text "from bob's shell"
waitfor alice "bobby: from bob's shell" && ok || bad "alice's chat: $(screen alice)"
waitfor bob "me: from bob's shell" && ok || bad "bob's chat shows what his shell sent: $(screen bob)"
# what others write only prints: a direction override, an escape sequence and a C1 CSI are
# shown as escapes, and a second line that poses as another message is indented
expect 0 "bob sends controls" -- as bob send alice@example.org --text "see photo"$'\xe2\x80\xae'"gpj.exe now"$'\e[2J\xc2\x9b'"1A"$'\n'"00:00 carol: hi"
waitfor alice 'bobby: see photo\u202egpj.exe now\x1b[2J\u009b1A' && ok || bad "controls in alice's chat: $(screen alice)"
screen alice | grep -q $'\xe2\x80\xae' && bad "the override reached alice's screen" || ok
screen alice | grep -q '│    00:00 carol: hi' && ok || bad "the second line indented: $(screen alice)"
expect 1 "a daemon cannot take an account a chat owns" -- as bob daemon

# bob links a new device; alice's next message warns her in the conversation
expect 0 "bob links a laptop" -- "$M" --data-dir dev-bob2 link bob@example.org --server "$server"
laptop=$(sed -n 's/.*this is device \([0-9]*\).*/\1/p' out.txt)
expect 0 "bob approves it from the shell, through his chat" -- as bob devices approve "$laptop"
waitfor bob "device $laptop asks to join this account" && waitfor bob "device $laptop was added to this account" && ok || bad "device notices in bob's chat: $(screen bob)"
# it publishes its prekeys when it first connects (a post-quantum device gets nothing before)
expect 0 "the laptop connects" -- "$M" --data-dir dev-bob2 --account bob@example.org receive
tm send-keys -t alice "to both of your devices" Enter
waitfor alice "the devices of bob@example.org changed" && ok || bad "key-change warning: $(screen alice)"
expect 0 "the laptop gets it" -- "$M" --data-dir dev-bob2 --account bob@example.org receive
grep -q "to both of your devices" out.txt && ok || bad "laptop: $(cat out.txt)"

# the safety number as a QR code, closed by a key
tm send-keys -t alice "/qr" Enter
waitfor alice "any key closes this" && ok || bad "QR code: $(screen alice)"
[ "$(screen alice | grep -c '█')" -ge 10 ] && ok || bad "QR modules"
tm send-keys -t alice x
sleep 0.3
screen alice | grep -q "any key closes this" && bad "the QR code stays" || ok
screen alice | grep -q "safety number with bob@example.org: [0-9 ]\{20\}" && ok || bad "the number in the conversation: $(screen alice)"

# /verify: a wrong number warns, the right one marks bob verified
number=$(as alice -o json verify bob@example.org | python3 -c 'import json,sys; print(json.load(sys.stdin)["safety_number"])')
[ ${#number} = 60 ] && ok || bad "alice's safety number through her chat: $number"
tm send-keys -t alice "/verify $(printf '1%.0s' $(seq 60))" Enter
waitfor alice "that is not the safety number of this conversation" && ok || bad "/verify, wrong: $(screen alice)"
tm send-keys -t alice "/verify $number" Enter
waitfor alice "bob@example.org is verified: the safety numbers match" && ok || bad "/verify: $(screen alice)"
expect 0 "the verification is recorded" -- as alice -o json verify bob@example.org
grep -q '"state":"verified"' out.txt && ok || bad "verified state: $(cat out.txt)"

# /edit and /unsend change alice's newest message for bob too
tm send-keys -t alice "/edit to both of your devices, edited" Enter
waitfor bob "to both of your devices, edited  (edited)" && ok || bad "/edit in bob's chat: $(screen bob)"
tm send-keys -t alice "/unsend" Enter
waitfor bob "alice@example.org:   (unsent)" && ok || bad "/unsend in bob's chat: $(screen bob)"

# a group: made from alice's shell through her chat, written to from the chat
expect 0 "alice makes a group" -- as alice groups create trio bob@example.org carol@example.org
tm send-keys -t alice "/group trio" Enter
waitfor alice "—  #trio" && ok || bad "/group opens it: $(screen alice | head -2)"
tm send-keys -t alice "hello trio" Enter
waitfor alice "me: hello trio  ✓" && ok || bad "the group message in alice's chat: $(screen alice)"
waitfor bob "#trio (" && ok || bad "the group in bob's list: $(screen bob)"
# for bob it is an invitation: written to once he accepts it
trio=$(as bob groups | grep "^trio	" | cut -f3)
tm send-keys -t bob "/group $trio" Enter
tm send-keys -t bob "too soon" Enter
waitfor bob "not sent: accept the group first" && ok || bad "an invitation in bob's chat: $(screen bob | tail -2)"
expect 0 "bob accepts the group" -- as bob groups accept "$trio"
tm send-keys -t bob "hello from bob" Enter
waitfor bob "me: hello from bob  ✓" && ok || bad "bob writes to the group: $(screen bob)"
tm send-keys -t bob "/to alice@example.org" Enter
expect 0 "carol gets it" -- as carol receive
grep -q "hello trio" out.txt && ok || bad "carol: $(cat out.txt)"
# carol makes a group of the same name with bob: his list tells the two apart
expect 0 "carol makes another trio" -- as carol groups create trio bob@example.org
other=$(as carol groups | grep "^trio	" | cut -f3 | grep -v "$trio")
waitfor bob "#trio ${other:6:6} (invited)" && ok || bad "two groups named trio in bob's list ($other): $(screen bob | head -3)"
waitfor bob "#trio ${trio:6:6}" && ok || bad "bob's own trio in his list: $(screen bob)"

# a message longer than the window: its end shows, PgUp reaches its start, PgDn comes back
tm send-keys -t bob Escape
as alice send bob@example.org --text "$(for i in $(seq 60); do echo "line $i of a long one"; done)" >/dev/null 2>&1 && ok || bad "the long message"
waitfor bob "line 60 of a long one" && ok || bad "the end of the long message: $(screen bob)"
screen bob | grep -q "line 1 of a long one" && bad "its start shows too" || ok
tm send-keys -t bob PPage PPage PPage PPage
waitfor bob "line 1 of a long one" && waitfor bob "scrolled up" && ok || bad "PgUp: $(screen bob)"
tm send-keys -t bob NPage NPage NPage NPage
waitfor bob "line 60 of a long one" && ok || bad "PgDn: $(screen bob)"

# a smaller terminal: no list, the newest lines still shown
tm resize-window -t bob -x 50 -y 12
sleep 0.5
[ "$(screen bob | head -1 | cut -c1-9)" = " Missive " ] && ok || bad "title after resize"
screen bob | grep -q "│" && bad "the list is hidden when narrow: $(screen bob)" || ok
waitfor bob "line 60 of a long one" && ok || bad "newest line after resize: $(screen bob)"
tm send-keys -t bob "/help" Enter
waitfor bob "Enter sends" && ok || bad "/help: $(screen bob)"

# leaving: Ctrl-C and /quit exit 0, and the socket goes with them
tm send-keys -t bob C-c
tm send-keys -t alice "/quit" Enter
for _ in $(seq 50); do [ -s chat-bob.rc ] && [ -s chat-alice.rc ] && break; sleep 0.1; done
[ "$(cat chat-bob.rc 2>/dev/null)" = 0 ] && [ "$(cat chat-alice.rc 2>/dev/null)" = 0 ] && ok || bad "exit statuses: $(cat chat-*.rc chat-*.err 2>/dev/null)"
[ ! -e "$(sock bob)" ] && [ ! -e "$(sock alice)" ] && ok || bad "sockets left behind"
[ ! -s chat-alice.err ] && [ ! -s chat-bob.err ] && ok || bad "the chats wrote on their terminals' error stream: $(cat chat-*.err)"
expect 2 "chat needs a terminal" -- as bob chat </dev/null
grep -q "chat needs a terminal" err.txt && ok || bad "no terminal: $(cat err.txt)"
finish
