#!/usr/bin/env python3
"""ML-KEM-768 (FIPS 203) in plain Python, written from the standard for the
reference tests: no speed, no constant time, only the algorithms as the
standard states them (Algorithms 3-20), on hashlib's SHA3 and SHAKE.

  mlkem_reference.py check VECTOR_DIR   runs the Wycheproof ML-KEM-768 files
                                        in VECTOR_DIR against it

tests/ratchet_reference.py imports it for the post-quantum session start and
the ratchet's KEM steps.
"""
import hashlib
import json
import os
import sys

N, Q, K = 256, 3329, 3
ETA1 = ETA2 = 2
DU, DV = 10, 4
EK_LEN = 384 * K + 32  # 1184
DK_LEN = 768 * K + 96  # 2400
CT_LEN = 32 * (DU * K + DV)  # 1088


def bitrev7(i):
    return int("{:07b}".format(i)[::-1], 2)


ZETAS = [pow(17, bitrev7(i), Q) for i in range(128)]
GAMMAS = [pow(17, 2 * bitrev7(i) + 1, Q) for i in range(128)]


def G(b):
    h = hashlib.sha3_512(b).digest()
    return h[:32], h[32:]


def H(b):
    return hashlib.sha3_256(b).digest()


def J(b):
    return hashlib.shake_256(b).digest(32)


def prf(eta, s, b):
    return hashlib.shake_256(s + bytes([b])).digest(64 * eta)


def bytes_to_bits(b):
    return [(byte >> i) & 1 for byte in b for i in range(8)]


def byte_encode(f, d):
    """Algorithm 5: 256 integers of d bits each, little-endian bit order."""
    out, acc, nbits = bytearray(), 0, 0
    for a in f:
        acc |= (a % (1 << d) if d < 12 else a) << nbits
        nbits += d
        while nbits >= 8:
            out.append(acc & 0xFF)
            acc >>= 8
            nbits -= 8
    return bytes(out)


def byte_decode(b, d):
    """Algorithm 6; for d = 12 the integers are taken mod q."""
    bits = bytes_to_bits(b)
    m = Q if d == 12 else 1 << d
    return [sum(bits[i * d + j] << j for j in range(d)) % m for i in range(N)]


def compress(x, d):
    return ((x << d) + Q // 2) // Q % (1 << d)


def decompress(y, d):
    return (y * Q + (1 << (d - 1))) >> d


def sample_ntt(seed):
    """Algorithm 7: rejection sampling from SHAKE128(rho || j || i)."""
    xof = hashlib.shake_128(seed).digest(840 * 3)
    a, pos = [], 0
    while len(a) < N:
        if pos + 3 > len(xof):
            xof = hashlib.shake_128(seed).digest(len(xof) * 2)
        c0, c1, c2 = xof[pos], xof[pos + 1], xof[pos + 2]
        pos += 3
        d1 = c0 + 256 * (c1 % 16)
        d2 = c1 // 16 + 16 * c2
        if d1 < Q:
            a.append(d1)
        if d2 < Q and len(a) < N:
            a.append(d2)
    return a


def sample_cbd(b, eta):
    """Algorithm 8."""
    bits = bytes_to_bits(b)
    f = []
    for i in range(N):
        x = sum(bits[2 * i * eta + j] for j in range(eta))
        y = sum(bits[2 * i * eta + eta + j] for j in range(eta))
        f.append((x - y) % Q)
    return f


def ntt(f):
    """Algorithm 9."""
    f, i, length = list(f), 1, 128
    while length >= 2:
        for start in range(0, N, 2 * length):
            zeta = ZETAS[i]
            i += 1
            for j in range(start, start + length):
                t = zeta * f[j + length] % Q
                f[j + length] = (f[j] - t) % Q
                f[j] = (f[j] + t) % Q
        length //= 2
    return f


def ntt_inv(f):
    """Algorithm 10."""
    f, i, length = list(f), 127, 2
    while length <= 128:
        for start in range(0, N, 2 * length):
            zeta = ZETAS[i]
            i -= 1
            for j in range(start, start + length):
                t = f[j]
                f[j] = (t + f[j + length]) % Q
                f[j + length] = zeta * (f[j + length] - t) % Q
        length *= 2
    return [x * 3303 % Q for x in f]


def multiply_ntts(f, g):
    """Algorithms 11 and 12."""
    h = [0] * N
    for i in range(128):
        a0, a1, b0, b1 = f[2 * i], f[2 * i + 1], g[2 * i], g[2 * i + 1]
        h[2 * i] = (a0 * b0 + a1 * b1 * GAMMAS[i]) % Q
        h[2 * i + 1] = (a0 * b1 + a1 * b0) % Q
    return h


def add(f, g):
    return [(a + b) % Q for a, b in zip(f, g)]


def sub(f, g):
    return [(a - b) % Q for a, b in zip(f, g)]


def matrix(rho, transpose):
    return [[sample_ntt(rho + bytes([j, i]) if not transpose else rho + bytes([i, j]))
             for j in range(K)] for i in range(K)]


def dot(row, v):
    acc = [0] * N
    for a, b in zip(row, v):
        acc = add(acc, multiply_ntts(a, b))
    return acc


def pke_keygen(d):
    """Algorithm 13 (K-PKE.KeyGen)."""
    rho, sigma = G(d + bytes([K]))
    a = matrix(rho, False)
    s = [ntt(sample_cbd(prf(ETA1, sigma, i), ETA1)) for i in range(K)]
    e = [ntt(sample_cbd(prf(ETA1, sigma, K + i), ETA1)) for i in range(K)]
    t = [add(dot(a[i], s), e[i]) for i in range(K)]
    ek = b"".join(byte_encode(x, 12) for x in t) + rho
    dk = b"".join(byte_encode(x, 12) for x in s)
    return ek, dk


def pke_encrypt(ek, m, r):
    """Algorithm 14 (K-PKE.Encrypt)."""
    t = [byte_decode(ek[384 * i:384 * (i + 1)], 12) for i in range(K)]
    rho = ek[384 * K:]
    at = matrix(rho, True)
    y = [ntt(sample_cbd(prf(ETA1, r, i), ETA1)) for i in range(K)]
    e1 = [sample_cbd(prf(ETA2, r, K + i), ETA2) for i in range(K)]
    e2 = sample_cbd(prf(ETA2, r, 2 * K), ETA2)
    u = [add(ntt_inv(dot(at[i], y)), e1[i]) for i in range(K)]
    mu = [decompress(x, 1) for x in byte_decode(m, 1)]
    v = add(add(ntt_inv(dot(t, y)), e2), mu)
    c1 = b"".join(byte_encode([compress(x, DU) for x in p], DU) for p in u)
    return c1 + byte_encode([compress(x, DV) for x in v], DV)


def pke_decrypt(dk, c):
    """Algorithm 15 (K-PKE.Decrypt)."""
    u = [[decompress(x, DU) for x in byte_decode(c[320 * i:320 * (i + 1)], DU)]
         for i in range(K)]
    v = [decompress(x, DV) for x in byte_decode(c[320 * K:], DV)]
    s = [byte_decode(dk[384 * i:384 * (i + 1)], 12) for i in range(K)]
    w = sub(v, ntt_inv(dot(s, [ntt(x) for x in u])))
    return byte_encode([compress(x, 1) for x in w], 1)


def keygen(d, z):
    """Algorithm 16 (ML-KEM.KeyGen_internal): (ek, dk)."""
    ek, dk_pke = pke_keygen(d)
    return ek, dk_pke + ek + H(ek) + z


def ek_ok(ek):
    """The encapsulation key check of section 7.2: its length, and every coefficient below q."""
    if len(ek) != EK_LEN:
        return False
    return all(byte_encode(byte_decode(ek[384 * i:384 * (i + 1)], 12), 12) ==
               ek[384 * i:384 * (i + 1)] for i in range(K))


def dk_ok(dk):
    """The decapsulation key check of section 7.3: its length and the hash of ek in it."""
    return len(dk) == DK_LEN and H(dk[384 * K:768 * K + 32]) == dk[768 * K + 32:768 * K + 64]


def encaps(ek, m):
    """Algorithm 17 (ML-KEM.Encaps_internal) after the input check: (K, c)."""
    if not ek_ok(ek):
        raise ValueError("not an ML-KEM-768 encapsulation key")
    key, r = G(m + H(ek))
    return key, pke_encrypt(ek, m, r)


def decaps(dk, c):
    """Algorithm 18 (ML-KEM.Decaps_internal) after the input checks: K, or the implicit
    rejection key."""
    if len(c) != CT_LEN or not dk_ok(dk):
        raise ValueError("not an ML-KEM-768 ciphertext or decapsulation key")
    dk_pke, ek = dk[:384 * K], dk[384 * K:768 * K + 32]
    h, z = dk[768 * K + 32:768 * K + 64], dk[768 * K + 64:]
    m = pke_decrypt(dk_pke, c)
    key, r = G(m + h)
    rejected = J(z + c)
    return key if pke_encrypt(ek, m, r) == c else rejected


def check(vector_dir):
    """Every case of the vendored Wycheproof ML-KEM-768 files; returns the failures."""
    def load(name):
        with open(os.path.join(vector_dir, name)) as f:
            return [t for g in json.load(f)["testGroups"] for t in g["tests"]]

    failures, count = [], 0

    def expect(name, t, ok):
        nonlocal count
        count += 1
        if not ok:
            failures.append("%s case %s" % (name, t["tcId"]))

    for t in load("mlkem_768_keygen_seed_test.json"):
        seed = bytes.fromhex(t["seed"])
        ek, dk = keygen(seed[:32], seed[32:])
        expect("keygen", t, (ek.hex(), dk.hex()) == (t["ek"], t["dk"]))
    for t in load("mlkem_768_encaps_test.json"):
        try:
            key, c = encaps(bytes.fromhex(t["ek"]), bytes.fromhex(t["m"]))
            ok = t["result"] != "invalid" and (key.hex(), c.hex()) == (t["K"], t["c"])
        except ValueError:
            ok = t["result"] == "invalid"
        expect("encaps", t, ok)
    for t in load("mlkem_768_test.json"):
        seed = bytes.fromhex(t["seed"])
        try:
            if len(seed) != 64:
                raise ValueError("seed")
            ek, dk = keygen(seed[:32], seed[32:])
            if ek.hex() != t["ek"]:
                raise ValueError("ek")
            key = decaps(dk, bytes.fromhex(t["c"]))
            ok = t["result"] != "invalid" and key.hex() == t["K"]
        except ValueError:
            ok = t["result"] == "invalid"
        expect("decaps", t, ok)
    for t in load("mlkem_768_semi_expanded_decaps_test.json"):
        try:
            key = decaps(bytes.fromhex(t["dk"]), bytes.fromhex(t["c"]))
            ok = t["result"] != "invalid" and key.hex() == t["K"]
        except ValueError:
            ok = t["result"] == "invalid"
        expect("semi-expanded decaps", t, ok)
    return count, failures


def main():
    if len(sys.argv) != 3 or sys.argv[1] != "check":
        print(__doc__.strip(), file=sys.stderr)
        return 2
    count, failures = check(sys.argv[2])
    for f in failures:
        print("ML-KEM-768 reference: %s fails" % f, file=sys.stderr)
    if failures or count == 0:
        return 1
    print("ML-KEM-768 reference: %d Wycheproof cases pass" % count)
    return 0


if __name__ == "__main__":
    sys.exit(main())
