/*
 * MLS (RFC 9420) foundations: the presentation-language codec, tree math,
 * the cipher suites' primitives with HPKE (RFC 9180) base mode, the key
 * schedule, pre-shared keys, the secret tree, transcript hashes and the
 * framing of PublicMessage and PrivateMessage.
 *
 * Cipher suites 1 (MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519) and 3
 * (MLS_128_DHKEMX25519_CHACHA20POLY1305_SHA256_Ed25519) only: both hash with
 * SHA-256 (Nh = 32), agree with X25519 and sign with Ed25519; they differ in
 * the AEAD. The ratchet tree, TreeKEM, KeyPackages and joining are here too;
 * a member that follows and sends is in member.h (docs/crypto.md, "MLS").
 *
 * Pointers are borrowed unless a comment says otherwise; out-parameters are
 * set only on success. Every failure to authenticate is MSV_ERR_AUTH.
 */
#ifndef MSV_MLS_H
#define MSV_MLS_H

#include <stddef.h>
#include <stdint.h>

#include "missive/error.h"
#include "util/buf.h"

#define MSV_MLS_NH 32                    /* hash and secret size of both suites */
#define MSV_MLS_NN 12                    /* AEAD nonce size */
#define MSV_MLS_KEY_MAX 32               /* largest AEAD key (ChaCha20-Poly1305) */
#define MSV_MLS_TAG_LEN 16               /* AEAD tag size */
#define MSV_MLS_SIG_LEN 64               /* Ed25519 */
#define MSV_MLS_VEC_MAX ((1u << 30) - 1) /* largest length a variable-size vector can state */

enum msv_mls_suite {
    MSV_MLS_SUITE_X25519_AES128GCM = 1,
    MSV_MLS_SUITE_X25519_CHACHA20POLY1305 = 3,
};

/* 1 if the suite number is one this module implements. */
int msv_mls_suite_is_supported(uint16_t suite);
/* The AEAD key size Nk of a supported suite: 16 or 32. */
size_t msv_mls_suite_nk(enum msv_mls_suite suite);

/* ---- the presentation language (RFC 9420 2.1, codec.c) ---- */

/*
 * The writer and reader are util/buf.h's: a writer grows up to its maximum
 * and its first failure sticks, so callers chain puts and check the result of
 * msv_buf_finish(); a failed read reads nothing and returns MSV_ERR_PARSE.
 * Added here: 64-bit integers, variable-size vectors and optionals.
 */
void msv_mls_put_u64(struct msv_buf *w, uint64_t v);
/* The minimal variable-size length of RFC 9420 2.1.2; MSV_ERR_TOO_BIG above 2^30-1. */
void msv_mls_put_varint(struct msv_buf *w, uint64_t v);
/* opaque x<V>: the length, then the bytes. */
void msv_mls_put_vec(struct msv_buf *w, const uint8_t *p, size_t n);
/*
 * A vector whose contents the caller writes next: msv_mls_vec_begin()
 * returns a mark, msv_mls_vec_end() puts the length in front of what was
 * written since.
 */
size_t msv_mls_vec_begin(const struct msv_buf *w);
void msv_mls_vec_end(struct msv_buf *w, size_t mark);

int msv_mls_reader_is_done(const struct msv_reader *r);
MSV_MUST_CHECK msv_err msv_mls_get_u64(struct msv_reader *r, uint64_t *v);
/* Refuses the prefix 0b11 and lengths not in their shortest form. */
MSV_MUST_CHECK msv_err msv_mls_get_varint(struct msv_reader *r, uint32_t *v);
/* opaque x<V>: *p points into the reader's data. */
MSV_MUST_CHECK msv_err msv_mls_get_vec(struct msv_reader *r, const uint8_t **p, size_t *n);
/* A vector as a reader of its own contents. */
MSV_MUST_CHECK msv_err msv_mls_get_sub(struct msv_reader *r, struct msv_reader *sub);
/* optional<T>: reads the presence byte, which must be 0 or 1. */
MSV_MUST_CHECK msv_err msv_mls_get_optional(struct msv_reader *r, int *present);

/* ---- tree math (RFC 9420 Appendix C, tree.c) ---- */

#define MSV_MLS_NONE UINT32_MAX

/* Nodes of a tree of n_leaves leaves (a power of two in RFC 9420; 0 for 0). */
uint32_t msv_mls_tree_width(uint32_t n_leaves);
uint32_t msv_mls_tree_root(uint32_t n_leaves);
uint32_t msv_mls_tree_level(uint32_t x);
/* Children of an intermediate node; MSV_MLS_NONE for a leaf. */
uint32_t msv_mls_tree_left(uint32_t x);
uint32_t msv_mls_tree_right(uint32_t x);
/* MSV_MLS_NONE for the root of the tree of n_leaves leaves. */
uint32_t msv_mls_tree_parent(uint32_t x, uint32_t n_leaves);
uint32_t msv_mls_tree_sibling(uint32_t x, uint32_t n_leaves);

/* ---- primitives (RFC 9420 5.1-5.2, suite.c) ---- */

MSV_MUST_CHECK msv_err msv_mls_hash(const uint8_t *in, size_t len, uint8_t out[MSV_MLS_NH]);
MSV_MUST_CHECK msv_err msv_mls_mac(const uint8_t *key, size_t key_len, const uint8_t *in,
                                   size_t len, uint8_t out[MSV_MLS_NH]);
/* HKDF-Extract(salt, ikm) with HMAC-SHA256; an empty salt means Nh zero bytes. */
MSV_MUST_CHECK msv_err msv_mls_extract(const uint8_t *salt, size_t salt_len, const uint8_t *ikm,
                                       size_t ikm_len, uint8_t out[MSV_MLS_NH]);
/* HKDF-Expand; out_len at most 255 * Nh. */
MSV_MUST_CHECK msv_err msv_mls_expand(const uint8_t *prk, size_t prk_len, const uint8_t *info,
                                      size_t info_len, uint8_t *out, size_t out_len);
/* ExpandWithLabel(secret, label, context, length) with the label "MLS 1.0 " || label. */
MSV_MUST_CHECK msv_err msv_mls_expand_label(const uint8_t *secret, size_t secret_len,
                                            const uint8_t *label, size_t label_len,
                                            const uint8_t *context, size_t context_len,
                                            uint8_t *out, size_t out_len);
/* DeriveSecret(secret, label): Nh bytes. */
MSV_MUST_CHECK msv_err msv_mls_derive_secret(const uint8_t *secret, size_t secret_len,
                                             const char *label, uint8_t out[MSV_MLS_NH]);
MSV_MUST_CHECK msv_err msv_mls_derive_tree_secret(const uint8_t *secret, size_t secret_len,
                                                  const char *label, uint32_t generation,
                                                  uint8_t *out, size_t out_len);
/* RefHash(label, value): Hash of label<V> || value<V>, the label as given. */
MSV_MUST_CHECK msv_err msv_mls_ref_hash(const uint8_t *label, size_t label_len,
                                        const uint8_t *value, size_t value_len,
                                        uint8_t out[MSV_MLS_NH]);

/* SignWithLabel with an Ed25519 private key given as its 32-byte seed. */
MSV_MUST_CHECK msv_err msv_mls_sign_label(const uint8_t seed[32], const char *label,
                                          const uint8_t *content, size_t content_len,
                                          uint8_t sig[MSV_MLS_SIG_LEN]);
/* VerifyWithLabel: MSV_OK or MSV_ERR_AUTH (also for a key or signature of the wrong size). */
MSV_MUST_CHECK msv_err msv_mls_verify_label(const uint8_t *pk, size_t pk_len, const char *label,
                                            const uint8_t *content, size_t content_len,
                                            const uint8_t *sig, size_t sig_len);

/* AEAD of the suite; ct holds pt_len + MSV_MLS_TAG_LEN bytes. */
MSV_MUST_CHECK msv_err msv_mls_aead_seal(enum msv_mls_suite suite, const uint8_t *key,
                                         const uint8_t nonce[MSV_MLS_NN], const uint8_t *aad,
                                         size_t aad_len, const uint8_t *pt, size_t pt_len,
                                         uint8_t *ct);
/* pt holds ct_len - MSV_MLS_TAG_LEN bytes; MSV_ERR_AUTH for any failure. */
MSV_MUST_CHECK msv_err msv_mls_aead_open(enum msv_mls_suite suite, const uint8_t *key,
                                         const uint8_t nonce[MSV_MLS_NN], const uint8_t *aad,
                                         size_t aad_len, const uint8_t *ct, size_t ct_len,
                                         uint8_t *pt);

/* ---- HPKE base mode, DHKEM(X25519, HKDF-SHA256) (RFC 9180, hpke.c) ---- */

struct msv_mls_hpke_ctx {
    enum msv_mls_suite suite;
    uint8_t key[MSV_MLS_KEY_MAX];
    uint8_t base_nonce[MSV_MLS_NN];
    uint8_t exporter_secret[MSV_MLS_NH];
    uint64_t seq;
};

/* DeriveKeyPair(ikm) of RFC 9180 7.1.3: the X25519 private and public keys. */
MSV_MUST_CHECK msv_err msv_mls_hpke_derive_keypair(const uint8_t *ikm, size_t ikm_len,
                                                   uint8_t sk[32], uint8_t pk[32]);
/*
 * SetupBaseS: encapsulates to pk_r with the ephemeral private key eph_sk
 * (32 random bytes; NULL draws them), writing enc. Wipe ctx with
 * msv_mls_hpke_ctx_wipe().
 */
MSV_MUST_CHECK msv_err msv_mls_hpke_setup_s(enum msv_mls_suite suite, const uint8_t pk_r[32],
                                            const uint8_t *info, size_t info_len,
                                            const uint8_t *eph_sk, uint8_t enc[32],
                                            struct msv_mls_hpke_ctx *ctx);
MSV_MUST_CHECK msv_err msv_mls_hpke_setup_r(enum msv_mls_suite suite, const uint8_t enc[32],
                                            const uint8_t sk_r[32], const uint8_t *info,
                                            size_t info_len, struct msv_mls_hpke_ctx *ctx);
/* ct holds pt_len + MSV_MLS_TAG_LEN bytes. */
MSV_MUST_CHECK msv_err msv_mls_hpke_seal(struct msv_mls_hpke_ctx *ctx, const uint8_t *aad,
                                         size_t aad_len, const uint8_t *pt, size_t pt_len,
                                         uint8_t *ct);
MSV_MUST_CHECK msv_err msv_mls_hpke_open(struct msv_mls_hpke_ctx *ctx, const uint8_t *aad,
                                         size_t aad_len, const uint8_t *ct, size_t ct_len,
                                         uint8_t *pt);
MSV_MUST_CHECK msv_err msv_mls_hpke_export(const struct msv_mls_hpke_ctx *ctx,
                                           const uint8_t *context, size_t context_len, uint8_t *out,
                                           size_t out_len);
void msv_mls_hpke_ctx_wipe(struct msv_mls_hpke_ctx *ctx);

/*
 * EncryptWithLabel (RFC 9420 5.1.3): SealBase to pk with info EncryptContext
 * and empty aad. *ct (pt_len + 16 bytes) is the caller's to free.
 */
MSV_MUST_CHECK msv_err msv_mls_encrypt_label(enum msv_mls_suite suite, const uint8_t pk[32],
                                             const char *label, const uint8_t *context,
                                             size_t context_len, const uint8_t *pt, size_t pt_len,
                                             uint8_t kem_output[32], uint8_t **ct);
/* DecryptWithLabel; *pt (ct_len - 16 bytes) is the caller's to free with msv_secret_free(). */
MSV_MUST_CHECK msv_err msv_mls_decrypt_label(enum msv_mls_suite suite, const uint8_t sk[32],
                                             const char *label, const uint8_t *context,
                                             size_t context_len, const uint8_t *kem_output,
                                             size_t kem_output_len, const uint8_t *ct,
                                             size_t ct_len, uint8_t **pt, size_t *pt_len);

/* ---- the key schedule (RFC 9420 8, schedule.c) ---- */

struct msv_mls_group_context {
    enum msv_mls_suite suite;
    const uint8_t *group_id;
    size_t group_id_len;
    uint64_t epoch;
    const uint8_t *tree_hash;
    size_t tree_hash_len;
    const uint8_t *confirmed_transcript_hash;
    size_t confirmed_transcript_hash_len;
    const uint8_t *extensions; /* the encoded Extension list, without its length */
    size_t extensions_len;
};

/* The GroupContext structure; caller frees *out with free(). */
MSV_MUST_CHECK msv_err msv_mls_group_context_encode(const struct msv_mls_group_context *gc,
                                                    uint8_t **out, size_t *out_len);

struct msv_mls_epoch_secrets {
    uint8_t joiner[MSV_MLS_NH];
    uint8_t welcome[MSV_MLS_NH];
    uint8_t sender_data[MSV_MLS_NH];
    uint8_t encryption[MSV_MLS_NH];
    uint8_t exporter[MSV_MLS_NH];
    uint8_t external[MSV_MLS_NH];
    uint8_t confirmation_key[MSV_MLS_NH];
    uint8_t membership_key[MSV_MLS_NH];
    uint8_t resumption_psk[MSV_MLS_NH];
    uint8_t epoch_authenticator[MSV_MLS_NH];
    uint8_t init[MSV_MLS_NH]; /* the next epoch's init_secret */
};

/*
 * One step of the key schedule from the previous epoch's init_secret, the
 * commit_secret and psk_secret (Nh zero bytes when there is none) and the
 * new epoch's encoded GroupContext. Wipe out with msv_wipe() when done.
 */
MSV_MUST_CHECK msv_err msv_mls_key_schedule(const uint8_t init_prev[MSV_MLS_NH],
                                            const uint8_t commit_secret[MSV_MLS_NH],
                                            const uint8_t psk_secret[MSV_MLS_NH],
                                            const uint8_t *group_context, size_t gc_len,
                                            struct msv_mls_epoch_secrets *out);
/* The same from the joiner_secret on, as a new member starts (12.4.3.1). */
MSV_MUST_CHECK msv_err msv_mls_key_schedule_joiner(const uint8_t joiner[MSV_MLS_NH],
                                                   const uint8_t psk_secret[MSV_MLS_NH],
                                                   const uint8_t *group_context, size_t gc_len,
                                                   struct msv_mls_epoch_secrets *out);
/* MLS-Exporter(label, context, length) from an epoch's exporter_secret. */
MSV_MUST_CHECK msv_err msv_mls_exporter(const uint8_t exporter_secret[MSV_MLS_NH],
                                        const uint8_t *label, size_t label_len,
                                        const uint8_t *context, size_t context_len, uint8_t *out,
                                        size_t out_len);

/* One pre-shared key with its encoded PreSharedKeyID (RFC 9420 8.4). */
struct msv_mls_psk {
    const uint8_t *id; /* PreSharedKeyID, psk_nonce included */
    size_t id_len;
    const uint8_t *psk;
    size_t psk_len;
};

/* The encoded PreSharedKeyID of an external PSK; caller frees with free(). */
MSV_MUST_CHECK msv_err msv_mls_psk_id_external(const uint8_t *psk_id, size_t psk_id_len,
                                               const uint8_t *nonce, size_t nonce_len,
                                               uint8_t **out, size_t *out_len);
/* A PreSharedKeyID read (8.4), pointing into the bytes it was read from. */
struct msv_mls_psk_id {
    uint8_t type;      /* 1 external, 2 resumption */
    uint8_t usage;     /* resumption: ResumptionPSKUsage */
    const uint8_t *id; /* external: psk_id; resumption: psk_group_id */
    size_t id_len;
    uint64_t epoch; /* resumption: psk_epoch */
    const uint8_t *nonce;
    size_t nonce_len;
};

/* Reads a PreSharedKeyID at r: MSV_ERR_PARSE if it does not read, MSV_ERR_UNSUPPORTED for a
 * type other than external and resumption. Nothing of it is checked further. */
MSV_MUST_CHECK msv_err msv_mls_psk_id_read(struct msv_reader *r, struct msv_mls_psk_id *out);
/* psk_secret of n keys (Nh zero bytes for none); n at most 65535. */
MSV_MUST_CHECK msv_err msv_mls_psk_secret(const struct msv_mls_psk *psks, size_t n,
                                          uint8_t out[MSV_MLS_NH]);

/* ---- the secret tree (RFC 9420 9) ---- */

enum msv_mls_ratchet {
    MSV_MLS_RATCHET_HANDSHAKE,
    MSV_MLS_RATCHET_APPLICATION,
};

/* Largest generation a ratchet is advanced to on request of a message. */
#define MSV_MLS_GENERATION_MAX 100000u

/* The secret of leaf's node in the secret tree of n_leaves leaves rooted at encryption_secret. */
MSV_MUST_CHECK msv_err msv_mls_secret_tree_leaf(const uint8_t encryption_secret[MSV_MLS_NH],
                                                uint32_t n_leaves, uint32_t leaf,
                                                uint8_t out[MSV_MLS_NH]);
/*
 * The key and nonce of one ratchet of a leaf secret at a generation (at most
 * MSV_MLS_GENERATION_MAX; MSV_ERR_TOO_BIG otherwise).
 */
MSV_MUST_CHECK msv_err msv_mls_ratchet_key(enum msv_mls_suite suite,
                                           const uint8_t leaf_secret[MSV_MLS_NH],
                                           enum msv_mls_ratchet which, uint32_t generation,
                                           uint8_t *key, uint8_t nonce[MSV_MLS_NN]);
/* The same from a ratchet's secret at generation from (<= generation). */
MSV_MUST_CHECK msv_err msv_mls_ratchet_key_from(enum msv_mls_suite suite,
                                                const uint8_t secret[MSV_MLS_NH], uint32_t from,
                                                uint32_t generation, uint8_t *key,
                                                uint8_t nonce[MSV_MLS_NN]);
/* The sender data key and nonce for a PrivateMessage whose ciphertext is ct. */
MSV_MUST_CHECK msv_err msv_mls_sender_data_key(enum msv_mls_suite suite,
                                               const uint8_t sender_data_secret[MSV_MLS_NH],
                                               const uint8_t *ct, size_t ct_len, uint8_t *key,
                                               uint8_t nonce[MSV_MLS_NN]);

/* ---- transcript hashes (RFC 9420 8.2) ---- */

/*
 * From the interim transcript hash before a commit and the commit's encoded
 * AuthenticatedContent: the confirmed transcript hash it makes, the
 * confirmation tag it carries, checked against confirmation_key, and the
 * interim transcript hash after it. MSV_ERR_AUTH if the tag is wrong.
 */
MSV_MUST_CHECK msv_err msv_mls_transcript_update(const uint8_t interim_before[MSV_MLS_NH],
                                                 const uint8_t *auth_content, size_t len,
                                                 const uint8_t confirmation_key[MSV_MLS_NH],
                                                 uint8_t confirmed[MSV_MLS_NH],
                                                 uint8_t interim_after[MSV_MLS_NH]);

/* ---- framing (RFC 9420 6, framing.c) ---- */

enum {
    MSV_MLS_WIRE_PUBLIC = 1,
    MSV_MLS_WIRE_PRIVATE = 2,
    MSV_MLS_CONTENT_APPLICATION = 1,
    MSV_MLS_CONTENT_PROPOSAL = 2,
    MSV_MLS_CONTENT_COMMIT = 3,
    MSV_MLS_SENDER_MEMBER = 1,
    MSV_MLS_SENDER_NEW_MEMBER_COMMIT = 4,
};

/* Largest MLSMessage the framing functions make or read. */
#define MSV_MLS_MESSAGE_MAX (1u << 24)

/*
 * A FramedContent from a member, with its signature and, for a commit, its
 * confirmation tag. body is the content: the application data for
 * application messages, the encoded Proposal or Commit otherwise.
 */
struct msv_mls_content {
    uint32_t leaf_index;
    const uint8_t *authenticated_data;
    size_t authenticated_data_len;
    uint8_t content_type;
    const uint8_t *body;
    size_t body_len;
    const uint8_t *confirmation_tag; /* commits only */
    size_t confirmation_tag_len;
    const uint8_t *signature; /* set by unprotecting; not read by protecting */
    size_t signature_len;
    /* 0 or MSV_MLS_SENDER_MEMBER: a member, at leaf_index; MSV_MLS_SENDER_NEW_MEMBER_COMMIT:
     * an external commit (12.4.3.2), in a PublicMessage without a membership tag */
    uint8_t sender_type;
};

/*
 * The signature key of the member at leaf (its leaf node's, from the tree):
 * MSV_ERR_NOT_FOUND for a blank or absent leaf. *pk is borrowed.
 */
typedef msv_err (*msv_mls_sig_key_fn)(void *ctx, uint32_t leaf, const uint8_t **pk, size_t *pk_len);

/* The key and nonce of leaf's ratchet at a generation, before the reuse guard. */
typedef msv_err (*msv_mls_content_key_fn)(void *ctx, uint32_t leaf, enum msv_mls_ratchet which,
                                          uint32_t generation, uint8_t *key,
                                          uint8_t nonce[MSV_MLS_NN]);

/* What a member knows of its group's current epoch. */
struct msv_mls_epoch {
    struct msv_mls_group_context gc;
    uint32_t n_leaves;
    const uint8_t *sender_data_secret;
    const uint8_t *encryption_secret;
    const uint8_t *membership_key;
    msv_mls_sig_key_fn sig_key; /* the sender's key is looked up by the leaf it claims */
    void *sig_key_ctx;
    /* the key of an external commit's new member (its UpdatePath's leaf), with sig_key_ctx;
     * NULL refuses external commits */
    msv_err (*new_member_key)(void *ctx, const struct msv_mls_content *c, const uint8_t **pk,
                              size_t *pk_len);
    /* if set, PrivateMessage keys come from here (a member's secret tree) and
     * encryption_secret is not used */
    msv_mls_content_key_fn content_key;
    void *content_key_ctx;
};

/* The signature of c's FramedContentTBS under wire_format (6.1), by seed. */
MSV_MUST_CHECK msv_err msv_mls_content_sign(const struct msv_mls_epoch *ep, uint16_t wire_format,
                                            const struct msv_mls_content *c, const uint8_t seed[32],
                                            uint8_t sig[MSV_MLS_SIG_LEN]);
/*
 * AuthenticatedContent (6): wire_format, the FramedContent of a member, the
 * signature and, for a commit, the confirmation tag: what transcript hashes
 * and ProposalRefs cover. Caller frees *out with free().
 */
MSV_MUST_CHECK msv_err msv_mls_authenticated_content(const struct msv_mls_epoch *ep,
                                                     uint16_t wire_format,
                                                     const struct msv_mls_content *c,
                                                     const uint8_t *sig, size_t sig_len,
                                                     uint8_t **out, size_t *out_len);
/* Encodes a PublicMessage MLSMessage signed with seed; caller frees *out with free(). */
MSV_MUST_CHECK msv_err msv_mls_public_protect(const struct msv_mls_epoch *ep,
                                              const struct msv_mls_content *c,
                                              const uint8_t seed[32], uint8_t **out,
                                              size_t *out_len);
/*
 * Reads a PublicMessage MLSMessage of this epoch from a member, checking its
 * membership tag and its signature by the key of the leaf it names
 * (ep->sig_key). *c points into msg.
 */
MSV_MUST_CHECK msv_err msv_mls_public_unprotect(const struct msv_mls_epoch *ep, const uint8_t *msg,
                                                size_t len, struct msv_mls_content *c);
/*
 * Encodes a PrivateMessage MLSMessage signed with seed, encrypted with the
 * sender's key at generation and reuse_guard, padded with padding zero bytes.
 */
MSV_MUST_CHECK msv_err msv_mls_private_protect(const struct msv_mls_epoch *ep,
                                               const struct msv_mls_content *c,
                                               const uint8_t seed[32], uint32_t generation,
                                               const uint8_t reuse_guard[4], size_t padding,
                                               uint8_t **out, size_t *out_len);
/*
 * Decrypts and checks a PrivateMessage MLSMessage of this epoch, its
 * signature by the key of the leaf its sender data names (ep->sig_key). *c
 * points into *plain, which the caller frees with msv_secret_free(*plain,
 * *plain_len); *generation is the sender's.
 */
MSV_MUST_CHECK msv_err msv_mls_private_unprotect(const struct msv_mls_epoch *ep, const uint8_t *msg,
                                                 size_t len, struct msv_mls_content *c,
                                                 uint8_t **plain, size_t *plain_len,
                                                 uint32_t *generation);
/*
 * The sender's leaf and the content type of a PrivateMessage MLSMessage of this epoch, from its
 * SenderData alone (which every member can open, and so could have written): the content is
 * not opened nor its signature checked.
 */
MSV_MUST_CHECK msv_err msv_mls_private_sender(const struct msv_mls_epoch *ep, const uint8_t *msg,
                                              size_t len, uint32_t *leaf, uint8_t *content_type);

/* ---- the ratchet tree (RFC 9420 4, 7.8, 7.9, 12.4.3.3; tree.c, ratchet_tree.c) ---- */

/* A LeafNode as read (7.2): its fields point into the reader's data. */
struct msv_mls_leaf {
    const uint8_t *raw; /* the whole LeafNode */
    size_t raw_len;
    size_t tbs_len; /* the bytes of raw before the signature */
    const uint8_t *encryption_key, *signature_key, *parent_hash, *signature;
    size_t encryption_key_len, signature_key_len, parent_hash_len, signature_len;
    uint8_t source; /* 1 key_package, 2 update, 3 commit */
};
MSV_MUST_CHECK msv_err msv_mls_read_leaf_node(struct msv_reader *r, struct msv_mls_leaf *leaf);
/* A KeyPackage (10), its LeafNode into *leaf; nothing of it is checked but its structure. */
MSV_MUST_CHECK msv_err msv_mls_read_key_package(struct msv_reader *r, struct msv_mls_leaf *leaf);

/* Largest tree read: leaves (a power of two). */
#define MSV_MLS_TREE_MAX_LEAVES (1u << 16)

struct msv_mls_node {
    uint8_t type; /* 0 blank, 1 leaf, 2 parent */
    struct msv_mls_leaf leaf;
    /* parent: its HPKE key, parent hash and unmerged leaves (leaf indices) */
    const uint8_t *encryption_key, *parent_hash;
    size_t encryption_key_len, parent_hash_len;
    uint32_t *unmerged;
    size_t n_unmerged;
    /* a parent hash computed here (merging an UpdatePath) rather than read */
    uint8_t own_parent_hash[MSV_MLS_NH];
    int has_own_parent_hash;
};

struct msv_mls_tree {
    uint32_t n_leaves;
    uint32_t width;
    struct msv_mls_node *nodes; /* width of them; pointers into the bytes read */
};

/*
 * Reads the ratchet_tree extension's optional<Node> nodes<V>, padded with
 * blanks to a full tree; the last node must not be blank, leaves must be at
 * even and parents at odd indices. The tree borrows from data, which must
 * outlive it; free it with msv_mls_tree_free().
 */
MSV_MUST_CHECK msv_err msv_mls_tree_read(const uint8_t *data, size_t len, struct msv_mls_tree *t);
void msv_mls_tree_free(struct msv_mls_tree *t);
/* A copy of t that borrows the same bytes; free it with msv_mls_tree_free(). */
MSV_MUST_CHECK msv_err msv_mls_tree_copy(const struct msv_mls_tree *t, struct msv_mls_tree *out);
/* The tree hash of node x (7.8). */
MSV_MUST_CHECK msv_err msv_mls_tree_hash(const struct msv_mls_tree *t, uint32_t x,
                                         uint8_t out[MSV_MLS_NH]);
/*
 * The resolution of node x (4.1.1) into out, which holds max node indices;
 * *n is how many. MSV_ERR_TOO_BIG if they do not fit.
 */
MSV_MUST_CHECK msv_err msv_mls_tree_resolution(const struct msv_mls_tree *t, uint32_t x,
                                               uint32_t *out, size_t max, size_t *n);
/*
 * Whether a node of the direct path of leaf resolves to more than one node
 * (blank above more than one member, or listing unmerged leaves): every commit
 * then encrypts to each of them, and a commit of that leaf's keys them all.
 */
int msv_mls_tree_path_unkeyed(const struct msv_mls_tree *t, uint32_t leaf);
/*
 * Whether a node of the direct path of leaf is blank and resolves to more than
 * one node, with leaf the first leaf beneath it that is not blank: the one
 * device named to key it, once a removal blanked it.
 */
int msv_mls_tree_path_blank_first(const struct msv_mls_tree *t, uint32_t leaf);
/*
 * The place of leaf in the order that keys a tree of n_leaves from the top: its index with the
 * bits reversed (over log2 of n_leaves rounded up). The leaves at places 0 .. 2^k - 1 are the
 * first leaves of the 2^k subtrees k levels below the root, so that once each of them
 * committed, the roots of those subtrees and every node above them hold keys (and a commit's
 * path secrets then go to one node a level there). For n_leaves a power of two (as every tree's),
 * the place over n_leaves is the same in every tree wide enough to hold the leaf; otherwise the
 * place may reach past n_leaves.
 */
uint32_t msv_mls_tree_key_order(uint32_t leaf, uint32_t n_leaves);
/*
 * Checks a tree as a new member must (7.9.2, 7.3): every non-blank parent
 * parent-hash valid with respect to one of its children, and every leaf's
 * signature (LeafNodeTBS, with group_id and the leaf index for update and
 * commit leaves). MSV_ERR_AUTH otherwise.
 */
MSV_MUST_CHECK msv_err msv_mls_tree_verify(const struct msv_mls_tree *t, const uint8_t *group_id,
                                           size_t group_id_len);

/*
 * Changing the tree (7.7, 12.1.1-12.1.3), for leaves the caller has checked
 * (KeyPackage and LeafNode validation are not here); each leaf borrows its
 * bytes, which must outlive the tree.
 *   add: the leftmost blank leaf, or a new right half when there is none; the
 *        new leaf becomes unmerged at each non-blank parent above it;
 *   update: the leaf replaced, the parents above it blanked;
 *   remove: the leaf and the parents above it blanked, then the tree cut
 *        down while its right half is blank.
 */
MSV_MUST_CHECK msv_err msv_mls_tree_add(struct msv_mls_tree *t, const struct msv_mls_leaf *leaf,
                                        uint32_t *index);
MSV_MUST_CHECK msv_err msv_mls_tree_update(struct msv_mls_tree *t, uint32_t index,
                                           const struct msv_mls_leaf *leaf);
MSV_MUST_CHECK msv_err msv_mls_tree_remove(struct msv_mls_tree *t, uint32_t index);
/* The ratchet_tree extension's encoding, without trailing blanks; caller frees *out with free(). */
MSV_MUST_CHECK msv_err msv_mls_tree_write(const struct msv_mls_tree *t, uint8_t **out,
                                          size_t *out_len);

/* The parent hash of parent p with co-path child s (7.9): over p's key, p's parent hash and
 * s's tree hash without p's unmerged leaves. */
MSV_MUST_CHECK msv_err msv_mls_tree_parent_hash(const struct msv_mls_tree *t, uint32_t p,
                                                uint32_t s, uint8_t out[MSV_MLS_NH]);

/* ---- TreeKEM: receiving an UpdatePath (RFC 9420 7.4-7.6, 7.9; treekem.c) ---- */

#define MSV_MLS_PATH_MAX 17 /* direct path length of the largest tree, plus one */

/* UpdatePath = leaf_node || UpdatePathNode nodes<V>; each node a key and HPKECiphertexts. */
struct msv_mls_update_path {
    struct msv_mls_leaf leaf;
    size_t n_nodes;
    struct {
        const uint8_t *encryption_key, *secrets; /* secrets: HPKECiphertext list, no length */
        size_t encryption_key_len, secrets_len;
    } nodes[MSV_MLS_PATH_MAX];
};

MSV_MUST_CHECK msv_err msv_mls_update_path_read(const uint8_t *data, size_t len,
                                                struct msv_mls_update_path *up);
/* The sender's filtered direct path (4.1.2): parents whose co-path child has a non-empty
 * resolution. */
MSV_MUST_CHECK msv_err msv_mls_tree_filtered_path(const struct msv_mls_tree *t, uint32_t leaf,
                                                  uint32_t path[MSV_MLS_PATH_MAX], size_t *n);
/*
 * The tree side of an UpdatePath of sender (7.5, 7.9): its direct path
 * blanked, the filtered path's nodes given up's keys (only the keys of up's
 * nodes are read), their parent hashes chained from the top; the parent
 * hash its leaf must carry goes to leaf_ph (*leaf_ph_len 0 when the path is
 * empty). MSV_ERR_AUTH if up has not one node per filtered path node.
 */
MSV_MUST_CHECK msv_err msv_mls_tree_set_path(struct msv_mls_tree *t, uint32_t sender,
                                             const struct msv_mls_update_path *up,
                                             uint8_t leaf_ph[MSV_MLS_NH], size_t *leaf_ph_len);
/*
 * Merges the UpdatePath of sender into t (12.4.2): the direct path blanked,
 * the filtered path's keys set with the parent hashes they chain to (7.9),
 * the sender's leaf replaced. MSV_ERR_AUTH if the number of nodes is not the
 * filtered path's or the leaf's parent hash is not the chain's; t may then be
 * half changed: merge into a copy.
 */
MSV_MUST_CHECK msv_err msv_mls_tree_merge_path(struct msv_mls_tree *t, uint32_t sender,
                                               const struct msv_mls_update_path *up);

/* An HPKE private key the receiver holds for a node of the tree. */
struct msv_mls_node_key {
    uint32_t node;
    uint8_t sk[32];
};

/*
 * Decrypts the path secret meant for receiver (7.6): at the lowest node of
 * the sender's filtered path above receiver, with the first key of keys whose
 * node is in the resolution of that node's co-path child, less the leaves
 * joiners the commit added; the HPKE context is
 * the provisional GroupContext gc. Then derives the path up to the root,
 * checking that every node's derived public key is the one t holds, and
 * gives the path secret decrypted and the commit secret. Call on the merged
 * tree, with the path as read from the tree before the merge.
 */
MSV_MUST_CHECK msv_err msv_mls_path_open(
    enum msv_mls_suite suite, const struct msv_mls_tree *t, const uint32_t *path, size_t path_len,
    const struct msv_mls_update_path *up, uint32_t receiver, const struct msv_mls_node_key *keys,
    size_t n_keys, const uint32_t *joiners, size_t n_joiners, const uint8_t *gc, size_t gc_len,
    uint8_t path_secret[MSV_MLS_NH], uint8_t commit_secret[MSV_MLS_NH]);
/* The HPKE key pair of a node from its path secret: DeriveKeyPair(DeriveSecret(ps, "node")). */
MSV_MUST_CHECK msv_err msv_mls_node_keypair(const uint8_t path_secret[MSV_MLS_NH], uint8_t sk[32],
                                            uint8_t pk[32]);

/* ---- joining from a Welcome (RFC 9420 12.4.3.1, welcome.c) ---- */

/*
 * Opens a Welcome MLSMessage for the KeyPackage MLSMessage key_package whose
 * HPKE init private key is init_sk: finds its EncryptedGroupSecrets by
 * KeyPackageRef, decrypts the GroupSecrets ("Welcome"), then the GroupInfo
 * with the welcome key, checks the GroupInfo's signature by signer_pk (the
 * caller finds it in the ratchet tree) and its confirmation tag against the
 * epoch's secrets, which go to *out (wipe them when done). *group_info, the
 * decrypted GroupInfo, is the caller's to free with free(). Welcomes that
 * carry PSKs are MSV_ERR_UNSUPPORTED; everything that does not open or check
 * is MSV_ERR_AUTH.
 */
MSV_MUST_CHECK msv_err msv_mls_welcome_open(enum msv_mls_suite suite, const uint8_t *welcome,
                                            size_t welcome_len, const uint8_t *key_package,
                                            size_t key_package_len, const uint8_t init_sk[32],
                                            const uint8_t *signer_pk, size_t signer_pk_len,
                                            struct msv_mls_epoch_secrets *out, uint8_t **group_info,
                                            size_t *group_info_len);

/* An external PSK a member holds: its id and value. */
struct msv_mls_external_psk {
    const uint8_t *id;
    size_t id_len;
    const uint8_t *psk;
    size_t psk_len;
};

#define MSV_MLS_WELCOME_PSKS_MAX 64

/* The external PSK of id among the n of list; NULL if none. */
const struct msv_mls_external_psk *
msv_mls_external_psk_find(const struct msv_mls_external_psk *list, size_t n, const uint8_t *id,
                          size_t id_len);

/* ResumptionPSKUsage (8.6) */
enum msv_mls_psk_usage {
    MSV_MLS_USAGE_APPLICATION = 1,
    MSV_MLS_USAGE_REINIT = 2,
    MSV_MLS_USAGE_BRANCH = 3,
};

/* A resumption PSK a joiner holds: the resumption_psk of an epoch of a group it is in. */
struct msv_mls_resumption_psk {
    const uint8_t *group_id;
    size_t group_id_len;
    uint64_t epoch;
    const uint8_t *psk; /* MSV_MLS_NH bytes */
};

/* The resumption PSK of usage reinit or branch a Welcome named: which of those given, if any. */
struct msv_mls_welcome_resumption {
    int usage; /* 0: none */
    size_t index;
};

/*
 * msv_mls_welcome_decrypt() with resumption PSKs as well: those the GroupSecrets name are
 * looked up in res (MSV_ERR_NOT_FOUND for one not there); at most one of usage reinit or branch
 * (else MSV_ERR_INVALID), told in *named for the caller's checks (8.6, 11.2, 11.3).
 */
MSV_MUST_CHECK msv_err msv_mls_welcome_decrypt_resuming(
    enum msv_mls_suite suite, const uint8_t *welcome, size_t welcome_len,
    const uint8_t *key_package, size_t key_package_len, const uint8_t init_sk[32],
    const struct msv_mls_external_psk *psks, size_t n_psks,
    const struct msv_mls_resumption_psk *res, size_t n_res,
    struct msv_mls_welcome_resumption *named, uint8_t joiner[MSV_MLS_NH],
    uint8_t psk_secret[MSV_MLS_NH], uint8_t path_secret[MSV_MLS_NH], int *has_path_secret,
    uint8_t **group_info, size_t *group_info_len);

/*
 * The first half of msv_mls_welcome_open(): the GroupSecrets and GroupInfo
 * decrypted, with the external PSKs the GroupSecrets name looked up in psks
 * (MSV_ERR_NOT_FOUND for one we do not hold, as is every resumption PSK: see
 * msv_mls_welcome_decrypt_resuming()); the path secret the GroupSecrets may carry (for the
 * lowest node of the committer's filtered path above us) goes to path_secret
 * with *has_path_secret 1. Nothing of the GroupInfo is checked yet: read it with
 * msv_mls_group_info_read() to find the tree and the signer, then check it
 * with msv_mls_group_info_check(). Wipe joiner and psk_secret when done.
 */
MSV_MUST_CHECK msv_err msv_mls_welcome_decrypt(
    enum msv_mls_suite suite, const uint8_t *welcome, size_t welcome_len,
    const uint8_t *key_package, size_t key_package_len, const uint8_t init_sk[32],
    const struct msv_mls_external_psk *psks, size_t n_psks, uint8_t joiner[MSV_MLS_NH],
    uint8_t psk_secret[MSV_MLS_NH], uint8_t path_secret[MSV_MLS_NH], int *has_path_secret,
    uint8_t **group_info, size_t *group_info_len);

/* What a GroupInfo says that a joiner needs before checking it; pointers into it. */
struct msv_mls_group_info {
    const uint8_t *group_id, *tree_hash, *ratchet_tree; /* ratchet_tree NULL if no extension */
    size_t group_id_len, tree_hash_len, ratchet_tree_len;
    uint64_t epoch;
    uint32_t signer;
};

MSV_MUST_CHECK msv_err msv_mls_group_info_read(const uint8_t *gi, size_t len,
                                               struct msv_mls_group_info *info);
/* The signature and confirmation tag of a GroupInfo, and the epoch's secrets (MSV_ERR_AUTH). */
MSV_MUST_CHECK msv_err msv_mls_group_info_check(enum msv_mls_suite suite, const uint8_t *gi,
                                                size_t len, const uint8_t *signer_pk,
                                                size_t signer_pk_len,
                                                const uint8_t joiner[MSV_MLS_NH],
                                                const uint8_t psk_secret[MSV_MLS_NH],
                                                struct msv_mls_epoch_secrets *out);

/* ---- KeyPackages and LeafNodes, made and validated (RFC 9420 7.2, 7.3, 10, 10.1; keypackage.c)
 * ---- */

/*
 * The GroupContext extension of a private-use type (RFC 9420 17.3) that a Missive group carries:
 * what its admins signed of it (docs/crypto.md, "The group context"). Our leaves list it in
 * their capabilities, as a GroupContext extension beyond the defaults must be (7.2, 12.1.7).
 */
#define MSV_MLS_EXT_GROUP 0xF0A1u

/* A LeafNode to make: a basic credential holding identity, our capabilities, no extensions. */
struct msv_mls_leaf_spec {
    const uint8_t *sig_seed;       /* the Ed25519 seed that signs; its public key goes in */
    const uint8_t *encryption_key; /* 32 bytes */
    const uint8_t *identity;
    size_t identity_len;
    uint8_t source;                 /* 1 key_package, 2 update, 3 commit */
    uint64_t not_before, not_after; /* key_package: the lifetime, in seconds */
    const uint8_t *parent_hash;     /* commit */
    size_t parent_hash_len;
    const uint8_t *group_id; /* update and commit: what LeafNodeTBS binds it to */
    size_t group_id_len;
    uint32_t index;
    /* 1: capabilities of the defaults alone, without MSV_MLS_EXT_GROUP (as an implementation
     * that does not know it makes them, and our devices did before it) */
    int plain_capabilities;
};

/* The encoded, signed LeafNode; caller frees *out with free(). */
MSV_MUST_CHECK msv_err msv_mls_leaf_make(const struct msv_mls_leaf_spec *spec, uint8_t **out,
                                         size_t *out_len);
/*
 * Validates a LeafNode as 7.3 says, without what needs the tree: its
 * signature (bound to group_id and index unless its source is key_package),
 * keys of 32 bytes, a basic credential, capabilities naming MLS 1.0, suite and
 * its own credential type, every extension it carries listed in its
 * capabilities, and for a key_package leaf a lifetime containing now (seconds;
 * 0 checks only that the lifetime is a range). MSV_ERR_AUTH for the signature,
 * MSV_ERR_INVALID or MSV_ERR_PARSE otherwise; *why (may be NULL) names the
 * reason, a static string.
 */
MSV_MUST_CHECK msv_err msv_mls_leaf_check(enum msv_mls_suite suite, const struct msv_mls_leaf *leaf,
                                          const uint8_t *group_id, size_t group_id_len,
                                          uint32_t index, uint64_t now, const char **why);
/* Whether a LeafNode's capabilities list the extension type (0 if it does not parse). */
int msv_mls_leaf_lists_extension(const struct msv_mls_leaf *leaf, uint16_t type);
/*
 * The longest lifetime (not_after - not_before) a KeyPackage may have (RFC 9420
 * 7.2: an application's maximum): 84 days and an hour, in seconds.
 */
#define MSV_MLS_KEY_PACKAGE_LIFETIME_MAX (84u * 86400u + 3600u)
/*
 * Validates a KeyPackage MLSMessage (10.1): version 1, the suite, its leaf
 * (msv_mls_leaf_check(), source key_package), an init key of 32 bytes other
 * than the leaf's encryption key, its signature (KeyPackageTBS) and, when now
 * is not 0 (the lifetime checked against it), a lifetime no longer than
 * MSV_MLS_KEY_PACKAGE_LIFETIME_MAX. The leaf
 * goes to *leaf (may be NULL), pointing into msg. Errors and *why as
 * msv_mls_leaf_check().
 */
MSV_MUST_CHECK msv_err msv_mls_key_package_check(enum msv_mls_suite suite, const uint8_t *msg,
                                                 size_t len, uint64_t now,
                                                 struct msv_mls_leaf *leaf, const char **why);
/* The same for a KeyPackage without its MLSMessage header (as an Add proposal carries it). */
MSV_MUST_CHECK msv_err msv_mls_key_package_body_check(enum msv_mls_suite suite, const uint8_t *kp,
                                                      size_t len, uint64_t now,
                                                      struct msv_mls_leaf *leaf, const char **why);
/*
 * Makes a KeyPackage MLSMessage for the device whose Ed25519 seed is sig_seed
 * and whose identity (the basic credential) is identity, valid from not_before
 * to not_after (seconds), with fresh init and leaf HPKE keys, whose private
 * halves go to init_sk and leaf_sk. Caller frees *out with free().
 */
MSV_MUST_CHECK msv_err msv_mls_key_package_make(enum msv_mls_suite suite,
                                                const uint8_t sig_seed[32], const uint8_t *identity,
                                                size_t identity_len, uint64_t not_before,
                                                uint64_t not_after, uint8_t init_sk[32],
                                                uint8_t leaf_sk[32], uint8_t **out,
                                                size_t *out_len);
/* The same with plain capabilities (struct msv_mls_leaf_spec): a KeyPackage whose leaf cannot
 * carry the group context's extension. */
MSV_MUST_CHECK msv_err msv_mls_key_package_make_plain(enum msv_mls_suite suite,
                                                      const uint8_t sig_seed[32],
                                                      const uint8_t *identity, size_t identity_len,
                                                      uint64_t not_before, uint64_t not_after,
                                                      uint8_t init_sk[32], uint8_t leaf_sk[32],
                                                      uint8_t **out, size_t *out_len);

/*
 * Structure checks of message bodies (message.c): each reads one structure
 * from r and fails with MSV_ERR_PARSE on malformed input, MSV_ERR_UNSUPPORTED
 * on a proposal or credential type RFC 9420 does not define.
 */
MSV_MUST_CHECK msv_err msv_mls_skip_proposal(struct msv_reader *r);
/* The body of a proposal of the given type (Add, Update, Remove, ...), without the type. */
MSV_MUST_CHECK msv_err msv_mls_skip_proposal_body(struct msv_reader *r, uint16_t type);
MSV_MUST_CHECK msv_err msv_mls_skip_commit(struct msv_reader *r);
MSV_MUST_CHECK msv_err msv_mls_skip_key_package(struct msv_reader *r);
MSV_MUST_CHECK msv_err msv_mls_skip_leaf_node(struct msv_reader *r);

MSV_MUST_CHECK msv_err msv_mls_skip_group_context(struct msv_reader *r);
MSV_MUST_CHECK msv_err msv_mls_skip_group_info(struct msv_reader *r);
MSV_MUST_CHECK msv_err msv_mls_skip_welcome(struct msv_reader *r);
MSV_MUST_CHECK msv_err msv_mls_skip_group_secrets(struct msv_reader *r);
MSV_MUST_CHECK msv_err msv_mls_skip_ratchet_tree(struct msv_reader *r);
/*
 * An MLSMessage (6): version 1, then a PublicMessage, PrivateMessage,
 * Welcome, GroupInfo or KeyPackage as its wire format says (framing.c).
 */
MSV_MUST_CHECK msv_err msv_mls_skip_message(struct msv_reader *r);

#endif
