#!/usr/bin/python3
"""missive web's banner for a contact's device list (headless chromium): the directory logs a
device for alice with no approval (tests/devlist_forge.py); bob writes to her from his page,
which shows the `devlist` alarm banner naming the device, and nothing is sealed to it
(docs/transparency.md, "Signed device lists").

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
    for who in ("alice", "bob"):
        register(who, "127.0.0.1:" + port)
        missive(who, "contacts", "add", handle("bob" if who == "alice" else "alice"),
                handle("bob" if who == "alice" else "alice"))
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
    banner = until(lambda: b.find_element(By.CSS_SELECTOR, ".banner.alarm[data-key='devlist-"
                                                             "alice@example.org-%s']" % forged), 30)
    ok(banner is not None and "device %s of alice@example.org has no valid approval" % forged
       in banner.text, "bob's page shows the devlist banner: %s" % (banner.text if banner else None))
    shot(b, "devlist")
    db = sqlite3.connect("srv/missive.db")
    n = db.execute("SELECT count(*) FROM queue WHERE device_id = ?", (int(forged),)).fetchone()[0]
    db.close()
    ok(n == 0, "nothing sealed to the forged device: %d" % n)
    stop_webs()


if __name__ == "__main__":
    rig.run(main)
