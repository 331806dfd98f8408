#!/usr/bin/python3
"""missive web's banners for a contact's device list (headless chromium): the directory logs a
device for alice with no approval (tests/devlist_forge.py); bob writes to her from his page,
which shows the `devlist` alarm banner naming the device, and nothing is sealed to it
(docs/transparency.md, "Signed device lists"). Then alice's list does not check out as a whole:
bob's message to his group with alice and carol goes to carol, and the page shows the
`not_sent` banner ("A send to handles that do not check out").

usage: test_web_devlist.py MISSIVE MISSIVED [SCREENSHOT-DIR]
Exit status 77 (skipped) only when chromium, chromedriver or selenium is missing.
"""
import os
import sqlite3
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import rig  # noqa: E402

rig.setup(sys.argv[1], sys.argv[2], sys.argv[3] if len(sys.argv) > 3 else os.getcwd())
from rig import *  # noqa: E402,F401,F403

FORGE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                     "devlist_forge.py")


def main():
    rig.env["MISSIVED_DIRECTORY_LEAF_VERSION"] = "3"  # leaves the forge appends to
    port = start_missived()
    for who in ("alice", "bob", "carol"):
        register(who, "127.0.0.1:" + port)
    missive("alice", "contacts", "add", handle("bob"), handle("bob"))
    missive("bob", "contacts", "add", handle("alice"), handle("alice"))
    stop_missived()
    forged = subprocess.run([sys.executable, FORGE, "srv/missive.db", "unapproved"],
                            capture_output=True, text=True)
    ok(forged.returncode == 0, "the forged entry: %s" % forged.stderr)
    forged = forged.stdout.strip()
    start_missived(port)
    url = start_web("bob")
    if not url:
        return
    b = browser("bob")
    b.get(url)
    ok(ready(b), "bob's page loads and connects")
    ok(open_conv(b, "alice@example.org"), "bob opens alice's conversation")
    box = b.find_element(By.ID, "text")
    box.send_keys("hello alice", Keys.ENTER)
    want = "device %s of alice@example.org has no valid approval" % forged
    text = text_at(b, ".banner.alarm[data-key='devlist-alice@example.org-%s']" % forged, 30, want)
    ok(text is not None and want in text, "bob's page shows the devlist banner: %s" % text)
    shot(b, "devlist")
    db = sqlite3.connect("srv/missive.db")
    n = db.execute("SELECT count(*) FROM queue WHERE device_id = ?", (int(forged),)).fetchone()[0]
    db.close()
    ok(n == 0, "nothing sealed to the forged device: %d" % n)

    # alice's list does not check out as a whole; bob's group (per-device copies) with her and carol
    stop_missived()
    whole = subprocess.run([sys.executable, FORGE, "srv/missive.db", "whole", forged],
                           capture_output=True, text=True)
    ok(whole.returncode == 0, "the set that does not check out: %s" % whole.stderr)
    start_missived(port)
    gid = "00112233445566778899aabbccddeeff"
    db = sqlite3.connect(os.path.join("dev-bob", handle("bob"), "state.db"))
    db.execute("INSERT INTO groups (group_id, name, members, updated_ms, accepted) "
               "VALUES (?, 'club', ?, 0, 1)", (bytes.fromhex(gid),
                                               "".join(handle(w) + "\n" for w in ("alice", "bob", "carol"))))
    # a day later: bob looks alice up again before he writes to her (not the set he knew)
    db.execute("UPDATE settings SET value = substr(value, 1, 8) || zeroblob(8) "
               "WHERE key = 'kt_index:alice@example.org'")
    # a notice in its history, so that the page lists it
    db.execute("INSERT INTO messages (message_id, conversation, outgoing, sender, sender_device, "
               "kind, text, sent_at_ms, stored_at_ms, status) VALUES (?, ?, 1, ?, 0, 1, "
               "'the club', 1, 1, 'notice')", (os.urandom(16), "group:" + gid, handle("bob")))
    db.commit()
    db.close()
    b.refresh()
    ok(ready(b), "bob's page loads again")
    ok(open_conv(b, "group:" + gid), "bob opens the group")
    b.find_element(By.ID, "text").send_keys("to the club", Keys.ENTER)
    want = "not sent to alice@example.org"
    text = text_at(b, ".banner[data-key='notsent-group:%s-alice@example.org']" % gid, 30, want)
    ok(text is not None and want in text, "bob's page shows the not_sent banner: %s" % text)
    shot(b, "not-sent")
    got = missive("carol", "receive")
    ok("to the club" in got.stdout, "carol got it: %s %s" % (got.stdout, got.stderr))
    stop_webs()


if __name__ == "__main__":
    rig.run(main)
