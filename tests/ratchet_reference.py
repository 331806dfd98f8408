#!/usr/bin/env python3
"""An independent implementation of Missive's sessions (X3DH and the Double
Ratchet, docs/crypto.md "Sessions"), written from the documentation with the
Python 'cryptography' package; XChaCha20 is built here from its definition
(HChaCha20, then ChaCha20-Poly1305 with the nonce's last 8 bytes).

  ratchet_reference.py generate FILE [PQFILE]   writes the known-answer vectors
  ratchet_reference.py check FILE [PQFILE]      recomputes them and compares, byte for byte

FILE holds the classical sessions (0x06 and 0x05 messages); PQFILE the
post-quantum ones (docs/crypto.md, "Post-quantum sessions" and "The
post-quantum ratchet"): the hybrid start (0x08, ML-KEM-768 from
tests/mlkem_reference.py) and the ratchet's KEM steps (0x0A: an offer, its
ciphertext, the step mixed into the root key on both sides).

tests/test_ratchet.c replays the same scripts with the C library and must
produce every byte of the vectors; together the two show that both follow the
documented format and not merely each other.
"""
import hashlib
import hmac
import json
import os
import struct
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mlkem_reference as mlkem  # noqa: E402

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

RAW = serialization.Encoding.Raw, serialization.PublicFormat.Raw


class Stream:
    """The deterministic random source of the vectors: SHA-256(label || u32be i)."""

    def __init__(self, label):
        self.label, self.counter, self.pool = label.encode(), 0, b""

    def take(self, n):
        while len(self.pool) < n:
            self.pool += hashlib.sha256(self.label + struct.pack(">I", self.counter)).digest()
            self.counter += 1
        out, self.pool = self.pool[:n], self.pool[n:]
        return out


def rotl(v, c):
    return ((v << c) & 0xFFFFFFFF) | (v >> (32 - c))


def hchacha20(key, nonce16):
    s = [0x61707865, 0x3320646E, 0x79622D32, 0x6B206574]
    s += list(struct.unpack("<8I", key)) + list(struct.unpack("<4I", nonce16))

    def qr(a, b, c, d):
        s[a] = (s[a] + s[b]) & 0xFFFFFFFF; s[d] = rotl(s[d] ^ s[a], 16)
        s[c] = (s[c] + s[d]) & 0xFFFFFFFF; s[b] = rotl(s[b] ^ s[c], 12)
        s[a] = (s[a] + s[b]) & 0xFFFFFFFF; s[d] = rotl(s[d] ^ s[a], 8)
        s[c] = (s[c] + s[d]) & 0xFFFFFFFF; s[b] = rotl(s[b] ^ s[c], 7)

    for _ in range(10):
        qr(0, 4, 8, 12); qr(1, 5, 9, 13); qr(2, 6, 10, 14); qr(3, 7, 11, 15)
        qr(0, 5, 10, 15); qr(1, 6, 11, 12); qr(2, 7, 8, 13); qr(3, 4, 9, 14)
    return struct.pack("<8I", *(s[0:4] + s[12:16]))


def xchacha_seal(key, nonce, ad, pt):
    return ChaCha20Poly1305(hchacha20(key, nonce[:16])).encrypt(bytes(4) + nonce[16:], pt, ad)


def xchacha_open(key, nonce, ad, ct):
    return ChaCha20Poly1305(hchacha20(key, nonce[:16])).decrypt(bytes(4) + nonce[16:], ct, ad)


def hkdf(ikm, salt, info, n):
    return HKDF(algorithm=hashes.SHA256(), length=n, salt=salt, info=info).derive(ikm)


def x_pub(sk):
    return X25519PrivateKey.from_private_bytes(sk).public_key().public_bytes(*RAW)


def dh(sk, pk):
    return X25519PrivateKey.from_private_bytes(sk).exchange(X25519PublicKey.from_public_bytes(pk))


class Identity:
    """A modern device identity as docs/crypto.md encodes it."""

    def __init__(self, label, pq=False):
        rng = Stream(label)
        seed, self.x_sk = rng.take(32), rng.take(32)
        self.ed = Ed25519PrivateKey.from_private_bytes(seed)
        self.ed_pk = self.ed.public_key().public_bytes(*RAW)
        self.x_pk = x_pub(self.x_sk)
        sig = self.ed.sign(b"MSV-modern-idkey-v1" + self.x_pk)
        elems = [(5, self.ed_pk), (6, self.x_pk), (7, sig)] + ([(8, b"\x01")] if pq else [])
        contents = [struct.pack(">H", len(v)) + v for _, v in elems]
        body = b"".join(bytes([0x80 | t, len(c)]) + c for (t, _), c in zip(elems, contents))
        self.public = b"\x30\x81" + bytes([len(body)]) + body
        self.hash = hashlib.sha256(b"".join(contents)).digest()


def prekey(ident, key_id, rng, signed):
    sk = rng.take(32)
    pk = x_pub(sk)
    sig = ident.ed.sign(b"MSV-spk-v1" + struct.pack(">I", key_id) + pk) if signed else b""
    return {"id": key_id, "sk": sk, "pk": pk, "sig": sig}


def kdf_rk(rk, dh_out):
    okm = hkdf(dh_out, rk, b"MSV-ratchet-v1", 64)
    return okm[:32], okm[32:]


def kdf_ck(ck):
    return hmac.new(ck, b"\x02", "sha256").digest(), hmac.new(ck, b"\x01", "sha256").digest()


def message_key(mk):
    kn = hkdf(mk, bytes(32), b"MSV-ratchet-msg-v1", 56)
    return kn[:32], kn[32:]


def x3dh(parts):
    return hkdf(b"\xff" * 32 + b"".join(parts), bytes(32), b"MSV-x3dh-v1", 32)


class Session:
    def __init__(self, ad, rng):
        self.ad, self.rng = ad, rng
        self.dhr = self.cks = self.ckr = None
        self.ns = self.nr = self.pn = 0
        self.prefix = b""
        self.skipped = {}

    def new_pair(self):
        self.dhs_sk = self.rng.take(32)
        self.dhs_pk = x_pub(self.dhs_sk)

    def encrypt(self, pt):
        header = b"\x05" + self.dhs_pk + struct.pack(">II", self.pn, self.ns)
        self.cks, mk = kdf_ck(self.cks)
        self.ns += 1
        key, nonce = message_key(mk)
        return self.prefix + header + xchacha_seal(key, nonce, self.ad + header, pt)

    def skip(self, until):
        while self.ckr is not None and self.nr < until:
            self.ckr, mk = kdf_ck(self.ckr)
            self.skipped[(self.dhr, self.nr)] = mk
            self.nr += 1

    def decrypt(self, wire):
        if wire[0] == 6:
            wire = wire[41:]
        header, ct = wire[:41], wire[41:]
        dh_pk = header[1:33]
        pn, n = struct.unpack(">II", header[33:41])
        if (dh_pk, n) in self.skipped:
            key, nonce = message_key(self.skipped.pop((dh_pk, n)))
            return xchacha_open(key, nonce, self.ad + header, ct)
        if dh_pk != self.dhr:
            self.skip(pn)
            self.pn, self.ns, self.nr, self.dhr = self.ns, 0, 0, dh_pk
            self.rk, self.ckr = kdf_rk(self.rk, dh(self.dhs_sk, self.dhr))
            self.new_pair()
            self.rk, self.cks = kdf_rk(self.rk, dh(self.dhs_sk, self.dhr))
        self.skip(n)
        self.ckr, mk = kdf_ck(self.ckr)
        self.nr += 1
        self.prefix = b""
        key, nonce = message_key(mk)
        return xchacha_open(key, nonce, self.ad + header, ct)


def initiate(me, peer, spk, opk, rng):
    ek_sk = rng.take(32)
    ek_pk = x_pub(ek_sk)
    parts = [dh(me.x_sk, spk["pk"]), dh(ek_sk, peer.x_pk), dh(ek_sk, spk["pk"])]
    if opk:
        parts.append(dh(ek_sk, opk["pk"]))
    s = Session(me.hash + peer.hash, rng)
    s.rk = x3dh(parts)
    s.new_pair()
    s.dhr = spk["pk"]
    s.rk, s.cks = kdf_rk(s.rk, dh(s.dhs_sk, s.dhr))
    s.prefix = b"\x06" + ek_pk + struct.pack(">II", spk["id"], opk["id"] if opk else 0)
    return s


def respond(me, peer, spk, opk, wire, rng):
    ek_pk = wire[1:33]
    parts = [dh(spk["sk"], peer.x_pk), dh(me.x_sk, ek_pk), dh(spk["sk"], ek_pk)]
    if opk:
        parts.append(dh(opk["sk"], ek_pk))
    s = Session(peer.hash + me.hash, rng)
    s.rk = x3dh(parts)
    s.dhs_sk, s.dhs_pk = spk["sk"], spk["pk"]
    return s, s.decrypt(wire)


# ---- post-quantum sessions -------------------------------------------------------------

PQ_REKEY_MESSAGES, PQ_REKEY_MS, PQ_REPEAT = 50, 24 * 3600 * 1000, 32
FLAG_EK, FLAG_CT = 1, 2


def kem_prekey(key_id, rng):
    """A KEM prekey: ML-KEM-768 key generation from 64 drawn bytes (d, then z)."""
    seed = rng.take(64)
    ek, dk = mlkem.keygen(seed[:32], seed[32:])
    return {"id": key_id, "ek": ek, "dk": dk}


def kdf_rk_pq(rk, dh_out, ss, key_id):
    okm = hkdf(dh_out + ss, rk, b"MSV-pqratchet-v1" + struct.pack(">I", key_id), 64)
    return okm[:32], okm[32:]


def pqxdh(parts, kem_id, ek, ct, ss):
    info = (b"MSV-pqxdh-v1" + struct.pack(">I", kem_id) + hashlib.sha256(ek).digest() +
            hashlib.sha256(ct).digest())
    return hkdf(b"\xff" * 32 + b"".join(parts) + ss, bytes(32), info, 32)


class PQSession(Session):
    """The Double Ratchet with ML-KEM-768 steps (0x0A), as docs/crypto.md states them."""

    def __init__(self, ad, rng):
        super().__init__(ad, rng)
        self.cks_step = self.steps = self.sent_since_step = self.step_ms = 0
        self.offering = self.my_kem_id = self.offer_age = 0
        self.mix = None  # (key id, secret) decapsulated, for our next sending chain
        self.enc = None  # (key id, ciphertext, secret) to the peer's offer
        self.enc_age = self.peer_kem_done = 0

    def maybe_offer(self, now_ms):
        if self.step_ms == 0:
            self.step_ms = now_ms
        if (self.offering or self.mix is not None or
                (self.sent_since_step < PQ_REKEY_MESSAGES and now_ms - self.step_ms < PQ_REKEY_MS)):
            return
        seed = self.rng.take(64)
        self.my_ek, self.my_dk = mlkem.keygen(seed[:32], seed[32:])
        self.offering, self.offer_age = 1, PQ_REPEAT
        self.my_kem_id += 1

    def encrypt_at(self, pt, now_ms):
        self.maybe_offer(now_ms)
        with_ct = self.enc is not None and self.enc_age >= PQ_REPEAT
        with_ek = self.offering and self.offer_age >= PQ_REPEAT and not with_ct
        header = (b"\x0a" + self.dhs_pk + struct.pack(">III", self.pn, self.ns, self.cks_step) +
                  bytes([(FLAG_EK if with_ek else 0) | (FLAG_CT if with_ct else 0)]))
        if with_ek:
            header += struct.pack(">I", self.my_kem_id) + self.my_ek
        if with_ct:
            header += struct.pack(">I", self.enc[0]) + self.enc[1]
        self.cks, mk = kdf_ck(self.cks)
        self.ns += 1
        self.sent_since_step += 1
        self.offer_age = 1 if with_ek else self.offer_age + 1
        self.enc_age = 1 if with_ct else self.enc_age + 1
        key, nonce = message_key(mk)
        return self.prefix + header + xchacha_seal(key, nonce, self.ad + header, pt)

    @staticmethod
    def parse(wire):
        dh_pk = wire[1:33]
        pn, n, step = struct.unpack(">III", wire[33:45])
        flags, at, ek, ct = wire[45], 46, None, None
        if flags & ~(FLAG_EK | FLAG_CT):
            raise ValueError("unknown flags")
        if flags & FLAG_EK:
            ek = (struct.unpack(">I", wire[at:at + 4])[0], wire[at + 4:at + 4 + mlkem.EK_LEN])
            at += 4 + mlkem.EK_LEN
        if flags & FLAG_CT:
            ct = (struct.unpack(">I", wire[at:at + 4])[0], wire[at + 4:at + 4 + mlkem.CT_LEN])
            at += 4 + mlkem.CT_LEN
        return wire[:at], wire[at:], dh_pk, pn, n, step, ek, ct

    def take_ciphertext(self, ct):
        if ct is None or not self.offering or ct[0] != self.my_kem_id:
            return
        self.mix = (ct[0], mlkem.decaps(self.my_dk, ct[1]))
        self.offering, self.my_dk = 0, None

    def take_offer(self, ek):
        if ek is None or ek[0] <= self.peer_kem_done or self.enc is not None:
            return
        ss, ct = mlkem.encaps(ek[1], self.rng.take(32))
        self.enc, self.peer_kem_done, self.enc_age = (ek[0], ct, ss), ek[0], PQ_REPEAT

    def receiving_root_step(self, dh_out, step):
        if step == 0:
            return kdf_rk(self.rk, dh_out)
        if self.enc is None or self.enc[0] != step:
            raise ValueError("a step this side holds no secret for")
        rk_ck = kdf_rk_pq(self.rk, dh_out, self.enc[2], step)
        self.enc = None
        self.steps += 1
        return rk_ck

    def sending_root_step(self, dh_out):
        self.cks_step = 0
        if self.mix is None:
            return kdf_rk(self.rk, dh_out)
        rk_ck = kdf_rk_pq(self.rk, dh_out, self.mix[1], self.mix[0])
        self.cks_step = self.mix[0]
        self.mix = None
        self.steps += 1
        self.sent_since_step = self.step_ms = 0
        return rk_ck

    def decrypt(self, wire):
        if wire[0] == 8:
            wire = wire[41 + 4 + mlkem.CT_LEN:]
        header, ct, dh_pk, pn, n, step, ek, kem_ct = self.parse(wire)
        if (dh_pk, n) in self.skipped:
            key, nonce = message_key(self.skipped.pop((dh_pk, n)))
            pt = xchacha_open(key, nonce, self.ad + header, ct)
        else:
            self.take_ciphertext(kem_ct)
            if dh_pk != self.dhr or self.ckr is None:
                self.skip(pn)
                self.pn, self.ns, self.nr, self.dhr = self.ns, 0, 0, dh_pk
                self.rk, self.ckr = self.receiving_root_step(dh(self.dhs_sk, self.dhr), step)
                self.new_pair()
                self.rk, self.cks = self.sending_root_step(dh(self.dhs_sk, self.dhr))
            self.skip(n)
            self.ckr, mk = kdf_ck(self.ckr)
            self.nr += 1
            key, nonce = message_key(mk)
            pt = xchacha_open(key, nonce, self.ad + header, ct)
        self.take_ciphertext(kem_ct)
        self.take_offer(ek)
        self.prefix = b""
        return pt


def pq_initiate(me, peer, spk, kem, rng):
    """The hybrid start: the encapsulation first (32 bytes m), then the base key, then the
    first ratchet key."""
    ss, ct = mlkem.encaps(kem["ek"], rng.take(32))
    ek_sk = rng.take(32)
    ek_pk = x_pub(ek_sk)
    parts = [dh(me.x_sk, spk["pk"]), dh(ek_sk, peer.x_pk), dh(ek_sk, spk["pk"])]
    s = PQSession(me.hash + peer.hash, rng)
    s.rk = pqxdh(parts, kem["id"], kem["ek"], ct, ss)
    s.new_pair()
    s.dhr = spk["pk"]
    s.rk, s.cks = kdf_rk(s.rk, dh(s.dhs_sk, s.dhr))
    s.prefix = (b"\x08" + ek_pk + struct.pack(">III", spk["id"], 0, kem["id"]) + ct)
    return s


def pq_respond(me, peer, spk, kem, wire, rng):
    ek_pk = wire[1:33]
    kem_id = struct.unpack(">I", wire[41:45])[0]
    ct = wire[45:45 + mlkem.CT_LEN]
    if kem_id != kem["id"]:
        raise ValueError("another KEM prekey")
    parts = [dh(spk["sk"], peer.x_pk), dh(me.x_sk, ek_pk), dh(spk["sk"], ek_pk)]
    s = PQSession(peer.hash + me.hash, rng)
    s.rk = pqxdh(parts, kem_id, kem["ek"], ct, mlkem.decaps(kem["dk"], ct))
    s.dhs_sk, s.dhs_pk = spk["sk"], spk["pk"]
    return s, s.decrypt(wire)


# The script of test_ratchet's test_pq_ratchet_known_answer: alice starts (a hybrid start to
# bob's signed prekey 1 and last-resort KEM prekey 2), bob answers, a day later alice's message
# offers a KEM key, bob's next carries the ciphertext, and alice's next chain names the step.
PQ_T0 = 1000000
PQ_SCRIPT = [("a", PQ_T0), ("b", PQ_T0), ("a", PQ_T0 + PQ_REKEY_MS), ("b", PQ_T0), ("a", PQ_T0)]


def run_pq():
    alice = Identity("pq-kat alice", pq=True)
    bob = Identity("pq-kat bob", pq=True)
    keys = Stream("pq-kat prekeys")
    spk = prekey(bob, 1, keys, True)
    kem = kem_prekey(2, keys)
    rngs = {"a": Stream("pq-kat a"), "b": Stream("pq-kat b")}
    sessions = {"a": pq_initiate(alice, bob, spk, kem, rngs["a"]), "b": None}
    steps = []
    for i, (side, now_ms) in enumerate(PQ_SCRIPT):
        other = "b" if side == "a" else "a"
        text = "kat %d" % i
        wire = sessions[side].encrypt_at(text.encode(), now_ms)
        if sessions[other] is None:
            sessions[other], pt = pq_respond(bob, alice, spk, kem, wire, rngs[other])
        else:
            pt = sessions[other].decrypt(wire)
        if pt != text.encode():
            raise ValueError("message %d does not read back" % i)
        steps.append({"side": side, "now_ms": now_ms, "text": text, "wire": wire.hex()})
    return {
        "about": "Missive post-quantum session known-answer vectors from "
                 "tests/ratchet_reference.py (docs/crypto.md, \"Post-quantum sessions\", \"The "
                 "post-quantum ratchet\"). Random bytes come from the stream SHA-256(label || "
                 "u32be counter): identities (with [8]) as in missive_kat.json; the prekey "
                 "stream gives the signed prekey (32 bytes), then the KEM prekey's seed (d || z, "
                 "64); the initiator's session stream gives the encapsulation's m (32), the base "
                 "key (32), its first ratchet key (32); each side then draws 32 bytes per new "
                 "X25519 key, 64 per KEM key offered and 32 per encapsulation to the peer's "
                 "offer, in the order the session needs them. Each message is read by the other "
                 "side before the next is sent; now_ms is the sender's clock.",
        "alice_rng": "pq-kat alice", "bob_rng": "pq-kat bob", "prekey_rng": "pq-kat prekeys",
        "session_rng": {"a": "pq-kat a", "b": "pq-kat b"},
        "signed_prekey_id": spk["id"], "kem_prekey_id": kem["id"],
        "kem_prekey": kem["ek"].hex(),
        "kem_steps": {"a": sessions["a"].steps, "b": sessions["b"].steps},
        "messages": steps,
    }


# Each script: who sends what, and in which order the other side receives it.
# ("send", side, text) makes the next message; ("recv", side, index) delivers
# message index (in sending order) to side.
SCRIPTS = [
    {
        "name": "in-order, one-time prekey",
        "one_time": True,
        "steps": [("send", "a", "hello bob"), ("recv", "b", 0),
                  ("send", "b", "hello alice"), ("recv", "a", 1),
                  ("send", "a", "how are you?"), ("recv", "b", 2)],
    },
    {
        "name": "reordered and skipped, no one-time prekey left",
        "one_time": False,
        "steps": [("send", "a", "one"), ("send", "a", "two"), ("send", "a", "three"),
                  ("recv", "b", 2), ("recv", "b", 0),
                  ("send", "b", "four"), ("send", "b", "five"), ("recv", "a", 4),
                  ("send", "a", "six"), ("recv", "a", 3), ("recv", "b", 5), ("recv", "b", 1),
                  ("send", "b", ""), ("recv", "a", 6)],
    },
]


def run(script, n):
    alice, bob = Identity("missive-ratchet-alice"), Identity("missive-ratchet-bob")
    keys = Stream("missive-ratchet-prekeys-%d" % n)
    spk = prekey(bob, 1, keys, True)
    opk = prekey(bob, 7, keys, False) if script["one_time"] else None
    rngs = {"a": Stream("missive-ratchet-alice-%d" % n), "b": Stream("missive-ratchet-bob-%d" % n)}
    sessions = {"a": initiate(alice, bob, spk, opk, rngs["a"]), "b": None}
    messages, steps = [], []
    for op, side, arg in script["steps"]:
        if op == "send":
            wire = sessions[side].encrypt(arg.encode())
            messages.append(wire)
            steps.append({"op": "send", "side": side, "text": arg, "wire": wire.hex()})
        else:
            wire = messages[arg]
            if sessions[side] is None:
                sessions[side], pt = respond(bob, alice, spk, opk, wire, rngs[side])
            else:
                pt = sessions[side].decrypt(wire)
            steps.append({"op": "recv", "side": side, "message": arg, "text": pt.decode()})
    return {
        "name": script["name"],
        "alice_rng": "missive-ratchet-alice", "bob_rng": "missive-ratchet-bob",
        "alice_public": alice.public.hex(), "bob_public": bob.public.hex(),
        "prekey_rng": "missive-ratchet-prekeys-%d" % n,
        "signed_prekey": {"id": spk["id"], "public": spk["pk"].hex(), "signature": spk["sig"].hex()},
        "one_time_prekey": {"id": opk["id"], "public": opk["pk"].hex()} if opk else None,
        "session_rng": {"a": "missive-ratchet-alice-%d" % n, "b": "missive-ratchet-bob-%d" % n},
        "steps": steps,
    }


def vectors():
    return {
        "about": "Missive session known-answer vectors from tests/ratchet_reference.py. Random "
                 "bytes come from the stream SHA-256(label || u32be counter): identities as in "
                 "missive_kat.json; prekeys draw 32 bytes each (signed, then one-time); each "
                 "side's session draws 32 bytes per new X25519 key (the initiator: base key, "
                 "then its first ratchet key; then one per DH ratchet step).",
        "cases": [run(s, i) for i, s in enumerate(SCRIPTS)],
    }


def main():
    if len(sys.argv) not in (3, 4) or sys.argv[1] not in ("generate", "check"):
        print(__doc__.strip(), file=sys.stderr)
        return 2
    files = [(sys.argv[2], vectors)] + ([(sys.argv[3], run_pq)] if len(sys.argv) == 4 else [])
    for path, make in files:
        got = json.dumps(make(), indent=1) + "\n"
        if sys.argv[1] == "generate":
            with open(path, "w") as f:
                f.write(got)
            continue
        with open(path) as f:
            want = f.read()
        if got != want:
            print("%s differs from what the reference implementation computes" % path,
                  file=sys.stderr)
            return 1
        print("%s agrees with the reference" % os.path.basename(path))
    return 0


if __name__ == "__main__":
    sys.exit(main())
