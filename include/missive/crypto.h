/*
 * Device identities, per-device message encryption and attachment encryption.
 *
 * Three suites (see docs/crypto.md for the byte layouts):
 *   classic - the iMessage "pair" format: RSA-OAEP + AES-128-CTR + ECDSA P-256/SHA-1
 *   ecies   - P-256 ECDH to a signed prekey, HKDF-SHA256, AES-256-CTR, ECDSA P-256/SHA-256
 *   modern  - X25519 + XChaCha20-Poly1305, Ed25519 signature sealed inside the envelope
 *
 * Every function here may be called from any thread once msv_init() succeeded;
 * objects are not shared between threads without the caller's locking.
 */
#ifndef MISSIVE_CRYPTO_H
#define MISSIVE_CRYPTO_H

#include <stddef.h>
#include <stdint.h>

#include "missive/error.h"

enum msv_suite {
    MSV_SUITE_ANY = 0, /* only where a function says it detects the suite */
    MSV_SUITE_CLASSIC = 1,
    MSV_SUITE_ECIES = 2,
    MSV_SUITE_MODERN = 3,
};

/* Sets of suites: a bit per suite. */
#define MSV_SUITE_BIT(s) (1u << (unsigned)(s))

/*
 * The suite two devices use: the best both speak (modern, then ecies, then
 * classic); MSV_SUITE_ANY when they have none in common.
 */
enum msv_suite msv_suite_common(unsigned a, unsigned b);

#define MSV_IDENTITY_HASH_LEN 32
#define MSV_CLASSIC_RSA_BITS_DEFAULT 1280
/* Largest plaintext any suite seals; classic is further limited by its u16 body length. */
#define MSV_PLAINTEXT_MAX (256u * 1024u)

/* Returns "classic", "ecies" or "modern"; "unknown" for anything else. */
const char *msv_suite_name(enum msv_suite suite);
/* Parses a suite name as msv_suite_name() prints it. */
MSV_MUST_CHECK msv_err msv_suite_from_name(const char *name, enum msv_suite *out);

/* The largest plaintext sealable for a recipient in any suite it speaks; 0 for an invalid identity.
 */
struct msv_public_identity;
size_t msv_plaintext_max(const struct msv_public_identity *recipient);

/* ---- identities ---------------------------------------------------------------------- */

/* A device's secret keys together with their public identity. */
struct msv_identity;
/* The public identity a device publishes in the directory. */
struct msv_public_identity;

/*
 * Generates a fresh device identity for suite. rsa_bits applies to classic
 * only (0 means MSV_CLASSIC_RSA_BITS_DEFAULT; 1280, 2048 and 3072 are
 * allowed) and must be 0 for the other suites. *out must be NULL; caller
 * frees with msv_identity_free().
 */
MSV_MUST_CHECK msv_err msv_identity_generate(enum msv_suite suite, unsigned rsa_bits,
                                             struct msv_identity **out);
/*
 * The same, with keys for the suites in also (MSV_SUITE_BIT each) as well,
 * for devices of other suites: the identity is then the union of each
 * suite's elements (classic and ecies share the signing key), and the
 * device speaks all of them, primary first.
 */
#define MSV_IDENTITY_PQ (1u << 8) /* in also: the modern keys say "post-quantum sessions" */
MSV_MUST_CHECK msv_err msv_identity_generate_suites(enum msv_suite primary, unsigned also,
                                                    unsigned rsa_bits, struct msv_identity **out);
void msv_identity_free(struct msv_identity *id);

/*
 * Serialises the secret identity for the local keychain. *out: caller frees
 * with msv_secret_free(*out, *out_len). The bytes are secret.
 */
MSV_MUST_CHECK msv_err msv_identity_export(const struct msv_identity *id, uint8_t **out,
                                           size_t *out_len);
/* Parses what msv_identity_export() wrote; caller frees *out with msv_identity_free(). */
MSV_MUST_CHECK msv_err msv_identity_import(const uint8_t *in, size_t len,
                                           struct msv_identity **out);

/* The identity's public part; borrowed, valid while id lives. */
const struct msv_public_identity *msv_identity_public(const struct msv_identity *id);
enum msv_suite msv_identity_suite(const struct msv_identity *id);
/* Every suite the identity has keys for (MSV_SUITE_BIT each), its own included. */
unsigned msv_identity_suites(const struct msv_identity *id);

/*
 * Parses a published identity: the elements of one or more whole suites.
 * suite is the device's own; the identity must have its keys (else
 * MSV_ERR_PARSE). MSV_SUITE_ANY takes the best suite it has. Keys that are
 * not valid points or acceptable RSA moduli are MSV_ERR_PARSE. Caller frees
 * *out with msv_public_identity_free().
 */
MSV_MUST_CHECK msv_err msv_public_identity_parse(enum msv_suite suite, const uint8_t *in,
                                                 size_t len, struct msv_public_identity **out);
/* Copies pub; caller frees *out with msv_public_identity_free(). */
MSV_MUST_CHECK msv_err msv_public_identity_dup(const struct msv_public_identity *pub,
                                               struct msv_public_identity **out);
void msv_public_identity_free(struct msv_public_identity *pub);

enum msv_suite msv_public_identity_suite(const struct msv_public_identity *pub);
unsigned msv_public_identity_suites(const struct msv_public_identity *pub);
/*
 * 1 if the identity says its device speaks post-quantum sessions (element
 * [8], covered by the identity hash): such a device gets a hybrid session
 * or nothing (docs/crypto.md, "Post-quantum sessions").
 */
int msv_public_identity_is_pq(const struct msv_public_identity *pub);
/*
 * The suites an encoding has keys for, from its element tags alone (no key is
 * checked: for identities parsed before); 0 if it is not a public identity.
 */
unsigned msv_identity_suites_of(const uint8_t *in, size_t len);
/* The canonical encoding; borrowed, valid while pub lives. */
const uint8_t *msv_public_identity_bytes(const struct msv_public_identity *pub, size_t *len);
/*
 * The identity hash: SHA-256 over the contents of the encoding's elements in
 * order (for classic: [1] then [2], as the iMessage format defines it).
 */
void msv_public_identity_hash(const struct msv_public_identity *pub,
                              uint8_t out[MSV_IDENTITY_HASH_LEN]);

/*
 * Formats a fingerprint for people to compare: the identity hash as 16
 * groups of 4 hex digits separated by spaces (80 bytes with the NUL).
 */
#define MSV_FINGERPRINT_TEXT_LEN 80
void msv_fingerprint_text(const uint8_t hash[MSV_IDENTITY_HASH_LEN],
                          char out[MSV_FINGERPRINT_TEXT_LEN]);

/*
 * Signs msg with the device's signing key: ECDSA P-256 over SHA-256 (DER) for
 * classic and ecies, Ed25519 for modern. The caller adds its own context
 * prefix to msg. sig holds MSV_SIGNATURE_MAX bytes; *sig_len is set.
 */
#define MSV_SIGNATURE_MAX 72
MSV_MUST_CHECK msv_err msv_identity_sign(const struct msv_identity *id, const uint8_t *msg,
                                         size_t len, uint8_t sig[MSV_SIGNATURE_MAX],
                                         size_t *sig_len);
/* Checks a signature made by msv_identity_sign(); MSV_OK or MSV_ERR_AUTH. */
MSV_MUST_CHECK msv_err msv_public_identity_verify(const struct msv_public_identity *pub,
                                                  const uint8_t *msg, size_t len,
                                                  const uint8_t *sig, size_t sig_len);

/* ---- per-device envelopes ------------------------------------------------------------- */

/*
 * Encrypts pt for one recipient device and signs it with the sender device's
 * key, in the best suite both speak (msv_suite_common(); MSV_ERR_INVALID if
 * none).
 * pt longer than msv_plaintext_max(recipient) is MSV_ERR_TOO_BIG. *out:
 * caller frees with free().
 */
MSV_MUST_CHECK msv_err msv_seal(const struct msv_identity *sender,
                                const struct msv_public_identity *recipient, const uint8_t *pt,
                                size_t pt_len, uint8_t **out, size_t *out_len);

/* The same in a given suite, which both must speak (MSV_ERR_INVALID otherwise). */
MSV_MUST_CHECK msv_err msv_seal_suite(const struct msv_identity *sender,
                                      const struct msv_public_identity *recipient,
                                      enum msv_suite suite, const uint8_t *pt, size_t pt_len,
                                      uint8_t **out, size_t *out_len);
/* The suite an envelope's version byte names; MSV_SUITE_ANY for none. */
enum msv_suite msv_envelope_suite(const uint8_t *wire, size_t len);

struct msv_replay_cache;

/*
 * Authenticates and decrypts an envelope sealed by sender to recipient, in
 * the suite its version byte names, which both must speak. Any failure of
 * authenticity or format is MSV_ERR_AUTH, whatever its cause.
 * If replay is not NULL, an authentic envelope seen before is MSV_ERR_REPLAY
 * and a new one is remembered. *out: caller frees with
 * msv_secret_free(*out, *out_len).
 */
MSV_MUST_CHECK msv_err msv_open(const struct msv_identity *recipient,
                                const struct msv_public_identity *sender, const uint8_t *wire,
                                size_t wire_len, struct msv_replay_cache *replay, uint8_t **out,
                                size_t *out_len);

/*
 * Checks the sender's signature of a classic envelope without decrypting it
 * (classic signs the outside of the envelope; the other suites sign inside
 * the encryption: a sender without classic keys, or an envelope of another
 * suite the sender speaks, is MSV_ERR_UNSUPPORTED). MSV_OK or MSV_ERR_AUTH.
 */
MSV_MUST_CHECK msv_err msv_verify_outer(const struct msv_public_identity *sender,
                                        const uint8_t *wire, size_t wire_len);

/* ---- replay cache --------------------------------------------------------------------- */

/*
 * Remembers the last `capacity` authentic envelopes by a digest of their
 * per-message randomness (classic: the RSA block; ecies and modern: the
 * ephemeral key), which a forger cannot change without failing
 * authentication. Caller frees with msv_replay_cache_free().
 */
MSV_MUST_CHECK msv_err msv_replay_cache_new(size_t capacity, struct msv_replay_cache **out);
void msv_replay_cache_free(struct msv_replay_cache *cache);
/*
 * Adds a 32-byte digest; MSV_ERR_REPLAY if it is present already (and then
 * nothing changes). When full, the oldest digest is forgotten.
 */
MSV_MUST_CHECK msv_err msv_replay_cache_add(struct msv_replay_cache *cache, const uint8_t id[32]);

/* ---- attachments ---------------------------------------------------------------------- */

#define MSV_ATTACHMENT_KEY_LEN 32
/* The largest attachment: clients send and download no more, and missived's
 * [blobs] max_size may not be set higher, so what one client sends every
 * other can fetch. */
#define MSV_ATTACHMENT_MAX ((size_t)256 << 20)

struct msv_attachment_digest {
    uint8_t sha256[32];
    uint8_t sha1[20];
};

/* Fills key with fresh random bytes. */
void msv_attachment_key_generate(uint8_t key[MSV_ATTACHMENT_KEY_LEN]);

/*
 * AES-256-CTR under a single-use key (IV zero). Streaming: feed the file in
 * pieces of any size; encryption and decryption are the same operation.
 * Caller frees with msv_attachment_cipher_free().
 */
struct msv_attachment_cipher;
MSV_MUST_CHECK msv_err msv_attachment_cipher_new(const uint8_t key[MSV_ATTACHMENT_KEY_LEN],
                                                 struct msv_attachment_cipher **out);
/* Transforms len bytes from in to out (which may be equal). */
MSV_MUST_CHECK msv_err msv_attachment_cipher_update(struct msv_attachment_cipher *c,
                                                    const uint8_t *in, size_t len, uint8_t *out);
void msv_attachment_cipher_free(struct msv_attachment_cipher *c);

/* SHA-256 and SHA-1 of a ciphertext, computed in one pass. */
struct msv_attachment_hasher;
MSV_MUST_CHECK msv_err msv_attachment_hasher_new(struct msv_attachment_hasher **out);
MSV_MUST_CHECK msv_err msv_attachment_hasher_update(struct msv_attachment_hasher *h,
                                                    const uint8_t *in, size_t len);
/* Writes the digests; the hasher cannot be updated afterwards. */
MSV_MUST_CHECK msv_err msv_attachment_hasher_final(struct msv_attachment_hasher *h,
                                                   struct msv_attachment_digest *digest);
void msv_attachment_hasher_free(struct msv_attachment_hasher *h);

/* One-shot encryption of len bytes into ct (len bytes), with the ciphertext's digests. */
MSV_MUST_CHECK msv_err msv_attachment_encrypt(const uint8_t key[MSV_ATTACHMENT_KEY_LEN],
                                              const uint8_t *pt, size_t len, uint8_t *ct,
                                              struct msv_attachment_digest *digest);
/*
 * Checks that SHA-256 of ct equals sha256 before decrypting anything, then
 * decrypts into pt (len bytes). A mismatch is MSV_ERR_AUTH and pt is untouched.
 */
MSV_MUST_CHECK msv_err msv_attachment_decrypt(const uint8_t key[MSV_ATTACHMENT_KEY_LEN],
                                              const uint8_t sha256[32], const uint8_t *ct,
                                              size_t len, uint8_t *pt);

#endif
