"""devlist_forge.py DB WHAT: a dishonest directory's edits of a stopped missived's store
(missive.db, leaves that name their handle: [directory] leaf_version = 3) about the device list
of alice@example.org (docs/transparency.md, "Signed device lists"). WHAT:

  unapproved  adds a device to alice's account (her key, another id, approved in the store) and
              logs her set with it, unsigned; prints its id; her honest set is kept (table honest)
  whole ID    takes device ID out of the store and logs her honest set with a chain record no
              approval needs (ID, her key): a set that does not check out as a whole
  honest      logs her honest set again
"""
import sqlite3
import sys

db = sqlite3.connect(sys.argv[1])
what = sys.argv[2]


def log(leaf):
    db.execute("INSERT INTO kt_log (idx, handle, leaf) VALUES ((SELECT max(idx) + 1 FROM kt_log), "
               "'alice@example.org', ?)", (bytes(leaf),))


def record(device, ident):
    """a device record of a signed set, unsigned (approval kind 0)"""
    return device.to_bytes(8, "big") + bytes([3]) + len(ident).to_bytes(2, "big") + ident + b"\0"


acc, ident = db.execute("SELECT account_id, identity FROM devices WHERE account_id = (SELECT "
                        "account_id FROM account_handles WHERE handle = 'alice@example.org') "
                        "ORDER BY id LIMIT 1").fetchone()
if what == "unapproved":
    db.execute("INSERT INTO devices (account_id, suite, identity, push_token, created_ms, approved) "
               "VALUES (?, 3, ?, x'', 0, 1)", (acc, ident))
    new = db.execute("SELECT max(id) FROM devices").fetchone()[0]
    leaf = bytearray(db.execute("SELECT leaf FROM kt_log WHERE handle = 'alice@example.org' "
                                "ORDER BY idx DESC LIMIT 1").fetchone()[0])
    assert leaf[0] == 6 and leaf[-1] == 0  # a signed set, no chain records
    db.execute("CREATE TABLE honest (leaf BLOB)")
    db.execute("INSERT INTO honest VALUES (?)", (bytes(leaf),))
    count_at = 1 + 8 + 1 + leaf[9]
    leaf[count_at] += 1
    log(leaf[:-1] + record(new, ident) + b"\0")  # the highest id: last, unsigned
    print(new)
elif what == "whole":
    forged = int(sys.argv[3])
    db.execute("DELETE FROM devices WHERE id = ?", (forged,))
    leaf = db.execute("SELECT leaf FROM honest").fetchone()[0]
    log(leaf[:-1] + b"\1" + record(forged, ident))
elif what == "honest":
    log(db.execute("SELECT leaf FROM honest").fetchone()[0])
else:
    sys.exit("devlist_forge.py DB unapproved | whole ID | honest")
db.commit()
