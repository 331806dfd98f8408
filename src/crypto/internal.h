/*
 * Internals of the crypto module, shared by its files and its tests. Nothing
 * here is part of the public API.
 */
#ifndef MSV_CRYPTO_INTERNAL_H
#define MSV_CRYPTO_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include <openssl/evp.h>

#include "missive/crypto.h"
#include "missive/vrf.h"

/* Wire version bytes: the first byte of an envelope names its suite. */
#define MSV_WIRE_CLASSIC 0x02
#define MSV_WIRE_ECIES 0x03
#define MSV_WIRE_MODERN 0x04

#define MSV_P256_POINT_LEN 65 /* 0x04 || X || Y */
#define MSV_P256_SCALAR_LEN 32

/*
 * A source of random bytes. Production code uses msv_rng_system; the
 * known-answer tests substitute a deterministic one so that every byte an
 * encryption produces can be compared. fill must not fail.
 */
struct msv_rng {
    void (*fill)(void *ctx, uint8_t *out, size_t n);
    void *ctx;
};
extern const struct msv_rng msv_rng_system;

/* Element tags of identity encodings: context-specific [n], primitive. */
enum {
    MSV_TAG_SIGN_P256 = 1,  /* u16 65 || 0x04 X Y */
    MSV_TAG_RSA_PUB = 2,    /* u16 len || PKCS#1 RSAPublicKey */
    MSV_TAG_PREKEY = 3,     /* u16 65 || prekey point */
    MSV_TAG_PREKEY_SIG = 4, /* u16 len || ECDSA-P256-SHA256 DER */
    MSV_TAG_ED25519 = 5,    /* u16 32 || Ed25519 public key */
    MSV_TAG_X25519 = 6,     /* u16 32 || X25519 public key */
    MSV_TAG_X25519_SIG = 7, /* u16 64 || Ed25519 signature */
    MSV_TAG_MODERN_PQ = 8,  /* u16 1 || 0x01: the device speaks post-quantum sessions */
    MSV_TAG_MAX_PUBLIC = 15,
    MSV_TAG_SEC_P256 = 16,    /* signing scalar */
    MSV_TAG_SEC_RSA = 17,     /* PKCS#1 RSAPrivateKey */
    MSV_TAG_SEC_PREKEY = 18,  /* prekey scalar */
    MSV_TAG_SEC_ED25519 = 19, /* Ed25519 seed */
    MSV_TAG_SEC_X25519 = 20,  /* X25519 secret key */
};

struct msv_public_identity {
    enum msv_suite suite; /* its own; it may speak others (suites) */
    unsigned suites;      /* MSV_SUITE_BIT of each suite whose keys it has */
    uint8_t *enc;         /* canonical encoding */
    size_t enc_len;
    uint8_t hash[MSV_IDENTITY_HASH_LEN];
    EVP_PKEY *sign_pk;   /* classic, ecies */
    EVP_PKEY *rsa_pk;    /* classic */
    EVP_PKEY *prekey_pk; /* ecies */
    uint8_t sign_point[MSV_P256_POINT_LEN];
    uint8_t prekey_point[MSV_P256_POINT_LEN];
    uint8_t ed_pk[32]; /* modern */
    uint8_t x_pk[32];
    int pq; /* modern with [8]: post-quantum sessions only (docs/crypto.md) */
};

/* Secrets of the modern suite live in guarded memory (sodium_malloc). */
struct msv_modern_secret {
    uint8_t ed_sk[64]; /* libsodium's seed || public key form */
    uint8_t x_sk[32];
};

struct msv_identity {
    struct msv_public_identity *pub;
    EVP_PKEY *sign_sk;   /* classic, ecies */
    EVP_PKEY *rsa_sk;    /* classic */
    EVP_PKEY *prekey_sk; /* ecies */
    struct msv_modern_secret *modern;
};

/* ---- the element encoding (der.c) ---- */

struct msv_elem {
    unsigned tag;
    const uint8_t *contents; /* u16be length || value, as hashed */
    size_t contents_len;
    const uint8_t *value;
    size_t value_len;
};

#define MSV_ELEM_MAX 16

/*
 * Parses a DER SEQUENCE of context-specific primitive elements whose contents
 * are a u16be length and that many bytes. Tags must be strictly ascending
 * and lengths minimal; nothing may follow the SEQUENCE. Borrowed pointers
 * into in.
 */
MSV_MUST_CHECK msv_err msv_elems_parse(const uint8_t *in, size_t len, struct msv_elem *elems,
                                       size_t max, size_t *count);
/* Finds tag among elems; NULL if absent. */
const struct msv_elem *msv_elems_find(const struct msv_elem *elems, size_t count, unsigned tag);

struct msv_buf;
/* Encodes elements (ascending tags) as msv_elems_parse() reads them. */
MSV_MUST_CHECK msv_err msv_elems_encode(const struct msv_elem *elems, size_t count, uint8_t **out,
                                        size_t *out_len);

/* ---- primitives over OpenSSL (prim.c) ---- */

/*
 * Hashes the pieces parts[i] of lens[i] bytes with md. An extendable-output
 * function (SHAKE) writes out_len bytes, in one squeeze; other digests write
 * their own size and ignore out_len.
 */
MSV_MUST_CHECK msv_err msv_digest_parts(const EVP_MD *md, const uint8_t *const *parts,
                                        const size_t *lens, size_t n, uint8_t *out, size_t out_len);
MSV_MUST_CHECK msv_err msv_sha256(const uint8_t *in, size_t len, uint8_t out[32]);
MSV_MUST_CHECK msv_err msv_sha1(const uint8_t *in, size_t len, uint8_t out[20]);
/* SHA-256 over several pieces: parts[i] of lens[i] bytes. */
MSV_MUST_CHECK msv_err msv_sha256_parts(const uint8_t *const *parts, const size_t *lens, size_t n,
                                        uint8_t out[32]);
MSV_MUST_CHECK msv_err msv_hkdf_sha256(const uint8_t *ikm, size_t ikm_len, const uint8_t *salt,
                                       size_t salt_len, const uint8_t *info, size_t info_len,
                                       uint8_t *out, size_t out_len);
/*
 * The key material of an ephemeral-static X25519 agreement (modern envelopes,
 * sealed sender): HKDF-SHA256(ikm shared, salt, info E || R, out_len bytes).
 */
MSV_MUST_CHECK msv_err msv_x25519_hkdf(const uint8_t shared[32], const uint8_t eph[32],
                                       const uint8_t recipient[32], const char *salt, uint8_t *out,
                                       size_t out_len);
/* HMAC-SHA256 over several pieces. */
MSV_MUST_CHECK msv_err msv_hmac_sha256_parts(const uint8_t *key, size_t key_len,
                                             const uint8_t *const *parts, const size_t *lens,
                                             size_t n, uint8_t out[32]);
/* AES-CTR with a 16- or 32-byte key and a 16-byte initial counter block. */
MSV_MUST_CHECK msv_err msv_aes_ctr(const uint8_t *key, size_t key_len, const uint8_t iv[16],
                                   const uint8_t *in, size_t len, uint8_t *out);

/*
 * RSAES-OAEP with SHA-1, MGF1-SHA-1 and an empty label (RFC 8017 7.1). The
 * encoder draws its seed from rng; out holds the modulus size. Decryption
 * fails with MSV_ERR_AUTH; *out_len holds the room in out on entry.
 */
MSV_MUST_CHECK msv_err msv_rsa_oaep_sha1_encrypt(EVP_PKEY *pk, const uint8_t *m, size_t m_len,
                                                 const struct msv_rng *rng, uint8_t *out);
MSV_MUST_CHECK msv_err msv_rsa_oaep_sha1_decrypt(EVP_PKEY *sk, const uint8_t *in, size_t in_len,
                                                 uint8_t *out, size_t *out_len);

/* Draws a uniform P-256 scalar in [1, n-1] by rejection sampling from rng. */
MSV_MUST_CHECK msv_err msv_p256_random_scalar(const struct msv_rng *rng,
                                              uint8_t scalar[MSV_P256_SCALAR_LEN]);
/* Builds a private key from a scalar; writes its uncompressed point if point is not NULL. */
MSV_MUST_CHECK msv_err msv_p256_from_scalar(const uint8_t scalar[MSV_P256_SCALAR_LEN],
                                            EVP_PKEY **out, uint8_t point[MSV_P256_POINT_LEN]);
/* Extracts the scalar of a P-256 private key. */
MSV_MUST_CHECK msv_err msv_p256_scalar(const EVP_PKEY *sk, uint8_t scalar[MSV_P256_SCALAR_LEN]);
/* Parses an uncompressed point, rejecting points not on the curve. */
MSV_MUST_CHECK msv_err msv_p256_from_point(const uint8_t *point, size_t len, EVP_PKEY **out);
/* ECDH: the 32-byte x coordinate of sk * peer. */
MSV_MUST_CHECK msv_err msv_p256_ecdh(EVP_PKEY *sk, EVP_PKEY *peer, uint8_t out[32]);

/* ECDSA over the digest md of the message pieces; DER signature of at most 72 bytes. */
MSV_MUST_CHECK msv_err msv_ecdsa_sign(EVP_PKEY *sk, const EVP_MD *md, const uint8_t *const *parts,
                                      const size_t *lens, size_t n, uint8_t sig[72],
                                      size_t *sig_len);
/* MSV_OK if sig is a valid DER signature by pk; MSV_ERR_AUTH otherwise. */
MSV_MUST_CHECK msv_err msv_ecdsa_verify(EVP_PKEY *pk, const EVP_MD *md, const uint8_t *const *parts,
                                        const size_t *lens, size_t n, const uint8_t *sig,
                                        size_t sig_len);

/* ---- ML-KEM-768 (mlkem.c) ---- */

/*
 * SampleNTT (FIPS 203 Algorithm 7) on the 34-byte XOF input rho || j || i:
 * squeezes first_len bytes of SHAKE128 and starts over with twice as many
 * while they hold fewer than 256 accepted values (exposed so that the tests
 * can force the restarts with a small first_len).
 */
MSV_MUST_CHECK msv_err msv_mlkem_sample_ntt(const uint8_t seed[34], size_t first_len,
                                            uint16_t out[256]);

/* ---- identities (identity.c) ---- */

MSV_MUST_CHECK msv_err msv_identity_generate_suites_rng(enum msv_suite primary, unsigned also,
                                                        unsigned rsa_bits,
                                                        const struct msv_rng *rng,
                                                        struct msv_identity **out);
MSV_MUST_CHECK msv_err msv_identity_generate_rng(enum msv_suite suite, unsigned rsa_bits,
                                                 const struct msv_rng *rng,
                                                 struct msv_identity **out);

/* ---- suites (classic.c, ecies.c, modern.c) ---- */

MSV_MUST_CHECK msv_err msv_classic_seal(const struct msv_identity *sender,
                                        const struct msv_public_identity *recipient,
                                        const uint8_t *pt, size_t pt_len, const struct msv_rng *rng,
                                        uint8_t **out, size_t *out_len);
/* On success *replay_id identifies the envelope for the replay cache. */
MSV_MUST_CHECK msv_err msv_classic_open(const struct msv_identity *recipient,
                                        const struct msv_public_identity *sender,
                                        const uint8_t *wire, size_t wire_len, uint8_t **out,
                                        size_t *out_len, uint8_t replay_id[32]);
MSV_MUST_CHECK msv_err msv_classic_verify(const struct msv_public_identity *sender,
                                          const uint8_t *wire, size_t wire_len);
size_t msv_classic_plaintext_max(const struct msv_public_identity *recipient);

MSV_MUST_CHECK msv_err msv_ecies_seal(const struct msv_identity *sender,
                                      const struct msv_public_identity *recipient,
                                      const uint8_t *pt, size_t pt_len, const struct msv_rng *rng,
                                      uint8_t **out, size_t *out_len);
MSV_MUST_CHECK msv_err msv_ecies_open(const struct msv_identity *recipient,
                                      const struct msv_public_identity *sender, const uint8_t *wire,
                                      size_t wire_len, uint8_t **out, size_t *out_len,
                                      uint8_t replay_id[32]);

MSV_MUST_CHECK msv_err msv_modern_seal(const struct msv_identity *sender,
                                       const struct msv_public_identity *recipient,
                                       const uint8_t *pt, size_t pt_len, const struct msv_rng *rng,
                                       uint8_t **out, size_t *out_len);
MSV_MUST_CHECK msv_err msv_modern_open(const struct msv_identity *recipient,
                                       const struct msv_public_identity *sender,
                                       const uint8_t *wire, size_t wire_len, uint8_t **out,
                                       size_t *out_len, uint8_t replay_id[32]);

/*
 * The replay-cache identity of an authentic envelope: SHA-256 of its suite
 * byte and its per-message randomness (docs/crypto.md, "Replays").
 */
MSV_MUST_CHECK msv_err msv_replay_id(uint8_t suite_byte, const uint8_t *unique, size_t len,
                                     uint8_t out[32]);

/*
 * Reads the trailer that classic and ecies envelopes share, u8 len || DER
 * signature, which must end the envelope. MSV_ERR_AUTH otherwise.
 */
struct msv_reader;
MSV_MUST_CHECK msv_err msv_read_signature_trailer(struct msv_reader *r, const uint8_t **sig,
                                                  size_t *sig_len);

/* Dispatches to the suite of sender; what msv_seal() does with msv_rng_system. */
MSV_MUST_CHECK msv_err msv_seal_suite_rng(const struct msv_identity *sender,
                                          const struct msv_public_identity *recipient,
                                          enum msv_suite suite, const uint8_t *pt, size_t pt_len,
                                          const struct msv_rng *rng, uint8_t **out,
                                          size_t *out_len);
MSV_MUST_CHECK msv_err msv_seal_rng(const struct msv_identity *sender,
                                    const struct msv_public_identity *recipient, const uint8_t *pt,
                                    size_t pt_len, const struct msv_rng *rng, uint8_t **out,
                                    size_t *out_len);

/* ---- sessions (ratchet.c): the public functions with a chosen random source ---- */

struct msv_prekey;
struct msv_kem_prekey;
struct msv_prekey_bundle;
struct msv_session;
MSV_MUST_CHECK msv_err msv_prekey_generate_rng(const struct msv_identity *id, uint32_t key_id,
                                               const struct msv_rng *rng, struct msv_prekey *out,
                                               uint8_t sig[64]);
MSV_MUST_CHECK msv_err msv_session_initiate_rng(const struct msv_identity *me,
                                                const struct msv_public_identity *peer,
                                                const struct msv_prekey_bundle *b,
                                                const struct msv_rng *rng,
                                                struct msv_session **out);
/* msv_session_encrypt with a chosen random source and clock (KEM keys and encapsulations) */
MSV_MUST_CHECK msv_err msv_session_encrypt_at(struct msv_session *s, const uint8_t *pt, size_t len,
                                              const struct msv_rng *rng, int64_t now_ms,
                                              uint8_t **out, size_t *out_len);
MSV_MUST_CHECK msv_err msv_session_decrypt_rng(struct msv_session *s, const uint8_t *wire,
                                               size_t len, const struct msv_rng *rng, uint8_t **pt,
                                               size_t *pt_len);
MSV_MUST_CHECK msv_err msv_session_respond_rng(
    const struct msv_identity *me, const struct msv_public_identity *peer,
    const struct msv_prekey *spk, const struct msv_prekey *opk, const struct msv_kem_prekey *kem,
    const uint8_t *wire, size_t len, const struct msv_rng *rng, struct msv_session **out,
    uint8_t **pt, size_t *pt_len);
MSV_MUST_CHECK msv_err msv_kem_prekey_generate_rng(const struct msv_identity *id, uint32_t key_id,
                                                   int last_resort, const struct msv_rng *rng,
                                                   struct msv_kem_prekey *out, uint8_t sig[64]);

/* ---- hashing to edwards25519 (h2c.c) ---- */

/*
 * RFC 9380's encode_to_curve for edwards25519_XMD:SHA-512_ELL2_NU_ without
 * its last step: the point Q that map_to_curve gives for the message
 * parts[0] || ... || parts[n-1] under the domain separation tag dst (1 to 255
 * bytes), encoded. The caller clears the cofactor (P = 8*Q). Not constant time.
 */
MSV_MUST_CHECK msv_err msv_h2c_edwards25519_nu_map(const uint8_t *const *parts, const size_t *lens,
                                                   size_t n, const uint8_t *dst, size_t dst_len,
                                                   uint8_t q[32]);

/* ---- edwards25519 on public values, variable time (ed25519_vt.c) ---- */

/* A field element mod 2^255 - 19: five 51-bit limbs. */
struct msv_fe {
    uint64_t v[5];
};
/* A point ready to be added: Y + X, Y - X, 2Z, 2dT. */
struct msv_ge_cached {
    struct msv_fe ypx, ymx, z2, t2d;
};
/* The odd multiples P, 3P, ..., 15P of a public point. */
struct msv_ed25519_table {
    struct msv_ge_cached m[8];
};
/* The table of the strictly decoded point p; MSV_ERR_AUTH when p is not a point. */
MSV_MUST_CHECK msv_err msv_ed25519_table_of(struct msv_ed25519_table *t, const uint8_t p[32]);

/*
 * out = a*P - b*Q for the strictly decoded points p and q (RFC 8032 5.1.3;
 * any point of the curve, small or mixed order too) and the 256-bit
 * little-endian integers a and b, not reduced: exactly the integers' multiples.
 * MSV_ERR_AUTH when p or q is not a point. Not constant time: public inputs only.
 */
MSV_MUST_CHECK msv_err msv_ed25519_mul_sub_vartime(uint8_t out[32], const uint8_t a[32],
                                                   const uint8_t p[32], const uint8_t b[32],
                                                   const uint8_t q[32]);
/*
 * What ECVRF verification (RFC 9381 5.3) computes from public values, with one decoding of each
 * point and one inversion for all four encodings: H = 8*Q (clear) or Q (not clear) for the
 * decoded q, U = s*B - c*Y for Y the table y, V = s*H - c*Gamma, and 8*Gamma. s and c are
 * 256-bit little-endian integers. MSV_ERR_AUTH when q or gamma is not a point.
 */
MSV_MUST_CHECK msv_err msv_ed25519_vrf_points(const struct msv_ed25519_table *y,
                                              const uint8_t q[32], int clear,
                                              const uint8_t gamma[32], const uint8_t s[32],
                                              const uint8_t c[32], uint8_t h[32], uint8_t u[32],
                                              uint8_t v[32], uint8_t gamma8[32]);
/* out = 8*P for the strictly decoded point p; MSV_ERR_AUTH when p is not a point. */
MSV_MUST_CHECK msv_err msv_ed25519_times8_vartime(uint8_t out[32], const uint8_t p[32]);
/*
 * RFC 9380's map_to_curve for edwards25519 (Elligator 2 on curve25519, 6.7.1, and the
 * rational map of 6.8.2 / Appendix D) of the 48-byte big-endian uniform string, encoded.
 */
MSV_MUST_CHECK msv_err msv_ed25519_elligator2_vartime(uint8_t q[32], const uint8_t uniform[48]);

/* ---- the VRF (vrf.c) ---- */

/* What RFC 9381 Appendix B lists on the way to a proof: x, H, k, U = k*B, V = k*H. */
struct msv_vrf_trace {
    uint8_t x[32], h[32], k[32], u[32], v[32];
};
/*
 * ECVRF_encode_to_curve of suite (RFC 9381 5.4.1) with salt pk (any 32
 * bytes). TAI: a point of order L, MSV_ERR_AUTH when no counter gives one.
 */
MSV_MUST_CHECK msv_err msv_vrf_encode_to_curve(enum msv_vrf_suite suite, const uint8_t pk[32],
                                               const uint8_t *alpha, size_t alpha_len,
                                               uint8_t h[32]);
/* A public key checked once (RFC 9381 5.4.5) for several verifications. */
struct msv_vrf_key {
    uint8_t pk[32];
    struct msv_ed25519_table y;
};
/* MSV_ERR_AUTH when pk is not a point or is of small order. */
MSV_MUST_CHECK msv_err msv_vrf_key_prepare(struct msv_vrf_key *key, const uint8_t pk[32]);
/* msv_vrf_verify with a prepared key. */
MSV_MUST_CHECK msv_err msv_vrf_verify_prepared(enum msv_vrf_suite suite,
                                               const struct msv_vrf_key *key, const uint8_t *alpha,
                                               size_t alpha_len, const uint8_t pi[80],
                                               uint8_t beta[64]);
/* msv_vrf_prove, also filling trace (secrets: the caller wipes it) when not NULL. */
MSV_MUST_CHECK msv_err msv_vrf_prove_trace(enum msv_vrf_suite suite, const uint8_t sk[32],
                                           const uint8_t *alpha, size_t alpha_len, uint8_t pi[80],
                                           struct msv_vrf_trace *trace);

#endif
