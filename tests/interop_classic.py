#!/usr/bin/env python3
"""An independent implementation of the classic suite, written from docs/crypto.md
with the Python 'cryptography' package, checked against missive-crypto in both
directions: envelopes sealed by Missive open here, and envelopes sealed here open
in Missive. Any disagreement about a byte of the format fails this test.
"""
import hashlib
import hmac
import os
import struct
import subprocess
import sys
import tempfile

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.exceptions import InvalidSignature

MISSIVE = os.path.realpath(sys.argv[1])
IV = bytes(15) + b"\x01"
passed = failed = 0


def check(cond, what):
    global passed, failed
    if cond:
        passed += 1
    else:
        failed += 1
        print("FAIL:", what, file=sys.stderr)


def der_len(buf, i):
    """Reads a DER length at buf[i]; returns (length, next index)."""
    first = buf[i]
    if first < 0x80:
        return first, i + 1
    n = first & 0x7F
    return int.from_bytes(buf[i + 1:i + 1 + n], "big"), i + 1 + n


def elements(seq):
    """The [n] elements of an identity SEQUENCE: {n: (contents, value)}."""
    assert seq[0] == 0x30
    length, i = der_len(seq, 1)
    end = i + length
    out = {}
    while i < end:
        tag = seq[i] & 0x1F
        clen, j = der_len(seq, i + 1)
        contents = seq[j:j + clen]
        (vlen,) = struct.unpack(">H", contents[:2])
        assert vlen == clen - 2
        out[tag] = (contents, contents[2:])
        i = j + clen
    return out, end


def rsa_public_from_pkcs1(der):
    """PKCS#1 RSAPublicKey: SEQUENCE { INTEGER n, INTEGER e }."""
    assert der[0] == 0x30
    _, i = der_len(der, 1)
    ints = []
    for _ in range(2):
        assert der[i] == 0x02
        n, i = der_len(der, i + 1)
        ints.append(int.from_bytes(der[i:i + n], "big"))
        i += n
    return rsa.RSAPublicNumbers(ints[1], ints[0]).public_key()


class Identity:
    def __init__(self, public_bytes, secret_elems=None):
        elems, end = elements(public_bytes)
        assert end == len(public_bytes) and sorted(elems) == [1, 2]
        self.hash = hashlib.sha256(elems[1][0] + elems[2][0]).digest()
        self.sign_pk = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), elems[1][1])
        self.rsa_pk = rsa_public_from_pkcs1(elems[2][1])
        self.sign_sk = self.rsa_sk = None
        if secret_elems:
            scalar = int.from_bytes(secret_elems[16][1], "big")
            self.sign_sk = ec.derive_private_key(scalar, ec.SECP256R1())
            self.rsa_sk = serialization.load_der_private_key(secret_elems[17][1], None)

    @staticmethod
    def load(path):
        data = open(path, "rb").read()
        if data[:4] == b"MSVK":
            assert data[4] == 1 and data[5] == 1  # version 1, suite classic
            (plen,) = struct.unpack(">I", data[6:10])
            secrets, _ = elements(data[10 + plen:])
            return Identity(data[10:10 + plen], secrets)
        return Identity(data)


def aes_ctr(key, data):
    c = Cipher(algorithms.AES(key), modes.CTR(IV)).encryptor()
    return c.update(data) + c.finalize()


def tag_of(seed, pt, sender, recipient):
    return hmac.new(seed, pt + b"\x02" + sender.hash + recipient.hash, hashlib.sha256).digest()[:5]


OAEP = padding.OAEP(mgf=padding.MGF1(hashes.SHA1()), algorithm=hashes.SHA1(), label=None)


def seal(sender, recipient, pt):
    seed = os.urandom(11)
    key = seed + tag_of(seed, pt, sender, recipient)
    ct = aes_ctr(key, pt)
    r = recipient.rsa_pk.encrypt(key + ct[:100], OAEP)
    body = r + ct[100:]
    sig = sender.sign_sk.sign(body, ec.ECDSA(hashes.SHA1()))
    return b"\x02" + struct.pack(">H", len(body)) + body + bytes([len(sig)]) + sig


def open_(recipient, sender, wire):
    """Returns the plaintext or None; the order is the one the format requires."""
    if wire[0] != 2:
        return None
    (blen,) = struct.unpack(">H", wire[1:3])
    body = wire[3:3 + blen]
    slen = wire[3 + blen]
    sig = wire[4 + blen:4 + blen + slen]
    if len(wire) != 4 + blen + slen:
        return None
    try:
        sender.sign_pk.verify(sig, body, ec.ECDSA(hashes.SHA1()))
    except InvalidSignature:
        return None
    k = recipient.rsa_pk.key_size // 8
    block = recipient.rsa_sk.decrypt(body[:k], OAEP)
    key, ct = block[:16], block[16:] + body[k:]
    pt = aes_ctr(key, ct)
    if not hmac.compare_digest(tag_of(key[:11], pt, sender, recipient), key[11:]):
        return None
    return pt


def missive(*args, stdin=None):
    return subprocess.run([MISSIVE, *args], input=stdin, capture_output=True)


def main():
    with tempfile.TemporaryDirectory() as d:
        p = lambda name: os.path.join(d, name)
        for bits in ("1280", "2048"):
            for who in ("alice", "bob"):
                r = missive("keygen", "--suite", "classic", "--rsa-bits", bits,
                            "--out", p(who + ".key"), "--public", p(who + ".pub"), "--force")
                check(r.returncode == 0, "keygen " + who)
            alice_pub, bob_pub = Identity.load(p("alice.pub")), Identity.load(p("bob.pub"))
            alice, bob = Identity.load(p("alice.key")), Identity.load(p("bob.key"))
            check(alice.hash == alice_pub.hash, "identity hash of key and public file agree")
            fp = missive("fingerprint", "--in", p("alice.pub")).stdout.decode()
            check(alice.hash.hex() == fp.split("fingerprint: ")[1].replace(" ", "").strip(),
                  "fingerprint is the identity hash")
            for size in (0, 1, 99, 100, 101, 1000, 16384):
                pt = os.urandom(size)
                # Missive seals, this implementation opens
                r = missive("seal", "--key", p("alice.key"), "--to", p("bob.pub"), stdin=pt)
                check(r.returncode == 0, "missive seal %d" % size)
                check(open_(bob, alice_pub, r.stdout) == pt, "python opens missive's %d B" % size)
                check(open_(bob, bob_pub, r.stdout) is None, "python rejects wrong sender")
                # this implementation seals, Missive opens
                wire = seal(alice, bob_pub, pt)
                r = missive("open", "--key", p("bob.key"), "--from", p("alice.pub"), stdin=wire)
                check(r.returncode == 0 and r.stdout == pt, "missive opens python's %d B" % size)
                # and Missive's tag check catches a body re-signed by another key
                body_end = 3 + struct.unpack(">H", wire[1:3])[0]
                resig = bob.sign_sk.sign(wire[3:body_end], ec.ECDSA(hashes.SHA1()))
                forged = wire[:body_end] + bytes([len(resig)]) + resig
                r = missive("open", "--key", p("bob.key"), "--from", p("bob.pub"), stdin=forged)
                check(r.returncode == 3, "missive rejects a re-signed envelope (%d B)" % size)
    print("%d passed, %d failed" % (passed, failed))
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
