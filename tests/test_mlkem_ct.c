/*
 * Constant time under valgrind's memcheck (the "ctgrind" technique): the
 * secret inputs are marked undefined, so any branch or memory index that
 * depends on them is a memcheck error ("conditional jump or move depends on
 * uninitialised value", "use of uninitialised value" in an address), and
 * valgrind --error-exitcode fails the test. Outputs that are public by
 * design (the encapsulation key, the ciphertext, the shared key once it is
 * to be compared) are marked defined before they are looked at.
 *
 * Secret: the seed d || z of key generation, the randomness m of
 * encapsulation, the decapsulation key's ByteEncode12(s^) and z (its ek and
 * H(ek) are public), and the X25519 secret key; for the post-quantum
 * ratchet's KEM step (docs/crypto.md, "The post-quantum ratchet"), the
 * decapsulated secret, the X25519 output and the root key it is mixed into.
 * Without valgrind the marks do nothing and the test checks the results alone.
 */
#include <stdio.h>
#include <string.h>

#include <sodium.h>
#include <valgrind/memcheck.h>

#include "crypto/internal.h"
#include "missive/mlkem.h"
#include "missive/util.h"

#define EK_LEN MSV_MLKEM768_EK_LEN
#define DK_LEN MSV_MLKEM768_DK_LEN
#define CT_LEN MSV_MLKEM768_CT_LEN
#define SS_LEN MSV_MLKEM768_SS_LEN
#define PKE_DK_LEN 1152 /* ByteEncode12(s^), the secret part before ek */

static int failures;

static void check(int ok, const char *what)
{
    if (!ok) {
        fprintf(stderr, "test_mlkem_ct: %s\n", what);
        failures++;
    }
}

static void secret(const void *p, size_t n)
{
    (void)VALGRIND_MAKE_MEM_UNDEFINED(p, n);
}

static void public(const void *p, size_t n)
{
    (void)VALGRIND_MAKE_MEM_DEFINED(p, n);
}

static void mark_dk_secret(uint8_t dk[DK_LEN])
{
    secret(dk, PKE_DK_LEN);
    secret(dk + DK_LEN - 32, 32); /* z */
}

static void mark_dk_public(uint8_t dk[DK_LEN])
{
    public(dk, DK_LEN);
}

/* Keygen from an undefined seed; ek and the dk's copy of ek and H(ek) are public. */
static void keygen(const uint8_t seed[64], uint8_t ek[EK_LEN], uint8_t dk[DK_LEN])
{
    uint8_t s[64], again_ek[EK_LEN], again_dk[DK_LEN];

    memcpy(s, seed, sizeof(s));
    secret(s, sizeof(s));
    check(msv_mlkem768_keygen_seed(s, sizeof(s), ek, dk) == MSV_OK, "keygen");
    public(ek, EK_LEN);
    public(dk + PKE_DK_LEN, EK_LEN + 32);
    /* the same keys with nothing marked */
    check(msv_mlkem768_keygen_seed(seed, 64, again_ek, again_dk) == MSV_OK, "keygen again");
    check(memcmp(ek, again_ek, EK_LEN) == 0, "keygen gives the same ek");
    mark_dk_public(dk);
    check(memcmp(dk, again_dk, DK_LEN) == 0, "keygen gives the same dk");
    sodium_memzero(again_dk, sizeof(again_dk));
}

static void encaps(const uint8_t ek[EK_LEN], const uint8_t coins[32], uint8_t ct[CT_LEN],
                   uint8_t ss[SS_LEN])
{
    uint8_t m[32];

    memcpy(m, coins, sizeof(m));
    secret(m, sizeof(m));
    check(msv_mlkem768_encaps_coins(ek, EK_LEN, m, ct, ss) == MSV_OK, "encaps");
    public(ct, CT_LEN);
    public(ss, SS_LEN);
}

static void decaps(uint8_t dk[DK_LEN], const uint8_t *ct, uint8_t ss[SS_LEN])
{
    mark_dk_secret(dk);
    check(msv_mlkem768_decaps(dk, DK_LEN, ct, CT_LEN, ss) == MSV_OK, "decaps");
    mark_dk_public(dk);
    public(ss, SS_LEN);
}

static void test_mlkem(void)
{
    uint8_t seed[64], coins[32], ek[EK_LEN], dk[DK_LEN], ct[CT_LEN];
    uint8_t ss[SS_LEN], got[SS_LEN], rejected[SS_LEN];

    for (int round = 0; round < 3; round++) {
        randombytes_buf(seed, sizeof(seed));
        randombytes_buf(coins, sizeof(coins));
        keygen(seed, ek, dk);
        encaps(ek, coins, ct, ss);
        decaps(dk, ct, got);
        check(memcmp(ss, got, SS_LEN) == 0, "decaps gives the sender's key");
        ct[round * 100] ^= 0x04; /* the implicit-rejection path, same code */
        decaps(dk, ct, rejected);
        check(memcmp(ss, rejected, SS_LEN) != 0, "a changed ciphertext is rejected");
    }
    sodium_memzero(dk, sizeof(dk));
    sodium_memzero(seed, sizeof(seed));
}

static void test_x25519(void)
{
    uint8_t a[32], b[32], pa[32], pb[32], ab[32], ba[32];
    int rc[4];

    randombytes_buf(a, sizeof(a));
    randombytes_buf(b, sizeof(b));
    secret(a, sizeof(a));
    secret(b, sizeof(b));
    rc[0] = crypto_scalarmult_base(pa, a);
    rc[1] = crypto_scalarmult_base(pb, b);
    public(pa, sizeof(pa));
    public(pb, sizeof(pb));
    rc[2] = crypto_scalarmult(ab, a, pb);
    rc[3] = crypto_scalarmult(ba, b, pa);
    /* the results say whether the output is all zero: public once the keys are */
    public(rc, sizeof(rc));
    check(rc[0] == 0 && rc[1] == 0 && rc[2] == 0 && rc[3] == 0, "x25519");
    public(ab, sizeof(ab));
    public(ba, sizeof(ba));
    check(memcmp(ab, ba, sizeof(ab)) == 0, "x25519 agrees");
    sodium_memzero(a, sizeof(a));
    sodium_memzero(b, sizeof(b));
}

/*
 * One KEM step of the ratchet, its secret parts: decapsulation with the
 * offered key, then the root step HKDF(ikm DH output || SS, salt RK, info
 * "MSV-pqratchet-v1" || u32be id) as src/crypto/ratchet.c takes it.
 */
static void test_ratchet_kem_step(void)
{
    static const uint8_t info[] = "MSV-pqratchet-v1\0\0\0\1";
    uint8_t seed[64], coins[32], ek[EK_LEN], dk[DK_LEN], ct[CT_LEN], ss[SS_LEN];
    uint8_t dh_out[32], ikm[64], rk[32], okm[2][64];

    randombytes_buf(seed, sizeof(seed));
    randombytes_buf(coins, sizeof(coins));
    randombytes_buf(dh_out, sizeof(dh_out));
    keygen(seed, ek, dk);
    encaps(ek, coins, ct, ss);
    /* the answering side mixes the SS it encapsulated, the offering side the one it decapsulates */
    for (int side = 0; side < 2; side++) {
        memcpy(ikm, dh_out, 32);
        if (side == 0)
            memcpy(ikm + 32, ss, SS_LEN);
        else
            decaps(dk, ct, ikm + 32);
        memset(rk, 0x5a, sizeof(rk));
        secret(ikm, sizeof(ikm));
        secret(rk, sizeof(rk));
        check(msv_hkdf_sha256(ikm, sizeof(ikm), rk, sizeof(rk), info, sizeof(info) - 1, okm[side],
                              64) == MSV_OK,
              "the KEM step's root derivation");
        public(okm[side], 64);
    }
    check(memcmp(okm[0], okm[1], 64) == 0, "both sides take the same root step");
    sodium_memzero(dk, sizeof(dk));
    sodium_memzero(ikm, sizeof(ikm));
    sodium_memzero(ss, sizeof(ss));
}

int main(void)
{
    if (msv_init() != MSV_OK)
        return 1;
    test_mlkem();
    test_x25519();
    test_ratchet_kem_step();
    printf("# constant time: ML-KEM-768 keygen, encaps, decaps; X25519; the ratchet's KEM step%s\n",
           RUNNING_ON_VALGRIND ? " (under valgrind)" : " (not under valgrind: results only)");
    return failures == 0 ? 0 : 1;
}
