/*
 * MLS (src/mls) against the MLS working group's interoperability test
 * vectors (tests/vectors/mls/README.md): every case of cipher suites 1 and 3
 * of each file, with the count per file. Fails if any case fails.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <sodium.h>

#include "missive/util.h"
#include "mls/member.h"
#include "mls/mls.h"

struct bytes {
    uint8_t *p;
    size_t n;
};

static int failures;

static void complain(const char *file, size_t i, const char *what)
{
    fprintf(stderr, "%s case %zu: %s\n", file, i, what);
}

/* The hex string v as bytes (p never NULL); exits on a malformed vector file. */
static struct bytes hex_of(json_t *v, const char *key)
{
    const char *s = json_string_value(v);
    struct bytes b = {NULL, 0};

    if (s != NULL)
        b.p = malloc(strlen(s) / 2 + 1);
    if (s == NULL || b.p == NULL || msv_hex_decode(s, b.p, strlen(s) / 2 + 1, &b.n) != MSV_OK) {
        fprintf(stderr, "vector field %s missing or not hex\n", key);
        exit(2);
    }
    return b;
}

static struct bytes hex(json_t *obj, const char *key)
{
    return hex_of(json_object_get(obj, key), key);
}

static int same(const struct bytes *want, const uint8_t *got, size_t got_len)
{
    return want->n == got_len && (got_len == 0 || memcmp(want->p, got, got_len) == 0);
}

/* 1 if obj[key] (hex) equals got. */
static int matches(json_t *obj, const char *key, const uint8_t *got, size_t got_len)
{
    struct bytes want = hex(obj, key);
    int ok = same(&want, got, got_len);

    free(want.p);
    return ok;
}

/* 1 if the hex string v equals got. */
static int string_matches(json_t *v, const uint8_t *got, size_t got_len)
{
    struct bytes want = hex_of(v, "(array element)");
    int ok = same(&want, got, got_len);

    free(want.p);
    return ok;
}

static uint64_t num(json_t *obj, const char *key)
{
    json_t *v = json_object_get(obj, key);

    if (!json_is_integer(v)) {
        fprintf(stderr, "vector field %s missing\n", key);
        exit(2);
    }
    return (uint64_t)json_integer_value(v);
}

static const char *str(json_t *obj, const char *key)
{
    const char *s = json_string_value(json_object_get(obj, key));

    if (s == NULL) {
        fprintf(stderr, "vector field %s missing\n", key);
        exit(2);
    }
    return s;
}

/* ---- tree-math ---- */

static int node_list_is(json_t *list, uint32_t i, uint32_t got)
{
    json_t *v = json_array_get(list, i);

    if (json_is_null(v))
        return got == MSV_MLS_NONE;
    return json_is_integer(v) && (uint64_t)json_integer_value(v) == got;
}

static int tree_math_case(const char *file, size_t idx, json_t *tc)
{
    uint32_t n = (uint32_t)num(tc, "n_leaves"), w = msv_mls_tree_width(n);
    json_t *left = json_object_get(tc, "left"), *right = json_object_get(tc, "right");
    json_t *parent = json_object_get(tc, "parent"), *sibling = json_object_get(tc, "sibling");

    if (num(tc, "n_nodes") != w || num(tc, "root") != msv_mls_tree_root(n) ||
        json_array_size(left) != w) {
        complain(file, idx, "width or root");
        return 0;
    }
    for (uint32_t i = 0; i < w; i++) {
        if (!node_list_is(left, i, msv_mls_tree_left(i)) ||
            !node_list_is(right, i, msv_mls_tree_right(i)) ||
            !node_list_is(parent, i, msv_mls_tree_parent(i, n)) ||
            !node_list_is(sibling, i, msv_mls_tree_sibling(i, n))) {
            complain(file, idx, "node relations");
            return 0;
        }
    }
    return 1;
}

/* ---- crypto-basics ---- */

static int ref_hash_case(json_t *v)
{
    const char *label = str(v, "label");
    struct bytes value = hex(v, "value");
    uint8_t out[MSV_MLS_NH];
    int ok =
        msv_mls_ref_hash((const uint8_t *)label, strlen(label), value.p, value.n, out) == MSV_OK &&
        matches(v, "out", out, sizeof(out));

    free(value.p);
    return ok;
}

static int expand_label_case(json_t *v)
{
    const char *label = str(v, "label");
    struct bytes secret = hex(v, "secret"), context = hex(v, "context");
    size_t len = (size_t)num(v, "length");
    uint8_t *out = malloc(len + 1);
    int ok = out != NULL &&
             msv_mls_expand_label(secret.p, secret.n, (const uint8_t *)label, strlen(label),
                                  context.p, context.n, out, len) == MSV_OK &&
             matches(v, "out", out, len);

    free(out);
    free(secret.p);
    free(context.p);
    return ok;
}

static int derive_secret_case(json_t *v)
{
    struct bytes secret = hex(v, "secret");
    uint8_t out[MSV_MLS_NH];
    int ok = msv_mls_derive_secret(secret.p, secret.n, str(v, "label"), out) == MSV_OK &&
             matches(v, "out", out, sizeof(out));

    free(secret.p);
    return ok;
}

static int derive_tree_secret_case(json_t *v)
{
    struct bytes secret = hex(v, "secret");
    size_t len = (size_t)num(v, "length");
    uint8_t *out = malloc(len + 1);
    int ok = out != NULL &&
             msv_mls_derive_tree_secret(secret.p, secret.n, str(v, "label"),
                                        (uint32_t)num(v, "generation"), out, len) == MSV_OK &&
             matches(v, "out", out, len);

    free(out);
    free(secret.p);
    return ok;
}

static int sign_label_case(json_t *v)
{
    struct bytes priv = hex(v, "priv"), pub = hex(v, "pub"), content = hex(v, "content");
    struct bytes sig = hex(v, "signature");
    const char *label = str(v, "label");
    uint8_t mine[MSV_MLS_SIG_LEN];
    int ok =
        priv.n == 32 &&
        msv_mls_verify_label(pub.p, pub.n, label, content.p, content.n, sig.p, sig.n) == MSV_OK &&
        msv_mls_sign_label(priv.p, label, content.p, content.n, mine) == MSV_OK &&
        msv_mls_verify_label(pub.p, pub.n, label, content.p, content.n, mine, sizeof(mine)) ==
            MSV_OK;

    /* a signature under another label must not verify */
    if (ok && msv_mls_verify_label(pub.p, pub.n, "other", content.p, content.n, sig.p, sig.n) !=
                  MSV_ERR_AUTH)
        ok = 0;
    free(priv.p);
    free(pub.p);
    free(content.p);
    free(sig.p);
    return ok;
}

static int decrypts_to(enum msv_mls_suite suite, const struct bytes *priv, const char *label,
                       const struct bytes *context, const uint8_t *kem, size_t kem_len,
                       const uint8_t *ct, size_t ct_len, const struct bytes *pt)
{
    uint8_t *out = NULL;
    size_t out_len = 0;
    int ok = msv_mls_decrypt_label(suite, priv->p, label, context->p, context->n, kem, kem_len, ct,
                                   ct_len, &out, &out_len) == MSV_OK &&
             same(pt, out, out_len);

    msv_secret_free(out, out_len);
    return ok;
}

static int encrypt_label_case(enum msv_mls_suite suite, json_t *v)
{
    struct bytes priv = hex(v, "priv"), pub = hex(v, "pub"), context = hex(v, "context");
    struct bytes pt = hex(v, "plaintext"), kem = hex(v, "kem_output"), ct = hex(v, "ciphertext");
    const char *label = str(v, "label");
    uint8_t kem2[32], *ct2 = NULL;
    int ok = priv.n == 32 && pub.n == 32 &&
             decrypts_to(suite, &priv, label, &context, kem.p, kem.n, ct.p, ct.n, &pt) &&
             msv_mls_encrypt_label(suite, pub.p, label, context.p, context.n, pt.p, pt.n, kem2,
                                   &ct2) == MSV_OK &&
             decrypts_to(suite, &priv, label, &context, kem2, sizeof(kem2), ct2,
                         pt.n + MSV_MLS_TAG_LEN, &pt);

    /* a flipped ciphertext bit must not decrypt */
    if (ok) {
        uint8_t *out = NULL;
        size_t out_len = 0;

        ct.p[0] ^= 1;
        if (msv_mls_decrypt_label(suite, priv.p, label, context.p, context.n, kem.p, kem.n, ct.p,
                                  ct.n, &out, &out_len) != MSV_ERR_AUTH)
            ok = 0;
    }
    free(ct2);
    free(priv.p);
    free(pub.p);
    free(context.p);
    free(pt.p);
    free(kem.p);
    free(ct.p);
    return ok;
}

static int crypto_basics_case(const char *file, size_t idx, json_t *tc)
{
    enum msv_mls_suite suite = (enum msv_mls_suite)num(tc, "cipher_suite");
    const struct {
        const char *name;
        int ok;
    } parts[] = {
        {"ref_hash", ref_hash_case(json_object_get(tc, "ref_hash"))},
        {"expand_with_label", expand_label_case(json_object_get(tc, "expand_with_label"))},
        {"derive_secret", derive_secret_case(json_object_get(tc, "derive_secret"))},
        {"derive_tree_secret", derive_tree_secret_case(json_object_get(tc, "derive_tree_secret"))},
        {"sign_with_label", sign_label_case(json_object_get(tc, "sign_with_label"))},
        {"encrypt_with_label",
         encrypt_label_case(suite, json_object_get(tc, "encrypt_with_label"))},
    };
    int ok = 1;

    for (size_t i = 0; i < sizeof(parts) / sizeof(parts[0]); i++) {
        if (!parts[i].ok) {
            complain(file, idx, parts[i].name);
            ok = 0;
        }
    }
    return ok;
}

/* ---- secret-tree ---- */

static int sender_data_case(enum msv_mls_suite suite, json_t *v)
{
    struct bytes secret = hex(v, "sender_data_secret"), ct = hex(v, "ciphertext");
    uint8_t key[MSV_MLS_KEY_MAX], nonce[MSV_MLS_NN];
    int ok = secret.n == MSV_MLS_NH &&
             msv_mls_sender_data_key(suite, secret.p, ct.p, ct.n, key, nonce) == MSV_OK &&
             matches(v, "key", key, msv_mls_suite_nk(suite)) &&
             matches(v, "nonce", nonce, sizeof(nonce));

    free(secret.p);
    free(ct.p);
    return ok;
}

static int ratchet_matches(enum msv_mls_suite suite, const uint8_t leaf[MSV_MLS_NH], json_t *g,
                           enum msv_mls_ratchet which, const char *key_name, const char *nonce_name)
{
    uint8_t key[MSV_MLS_KEY_MAX], nonce[MSV_MLS_NN];

    return msv_mls_ratchet_key(suite, leaf, which, (uint32_t)num(g, "generation"), key, nonce) ==
               MSV_OK &&
           matches(g, key_name, key, msv_mls_suite_nk(suite)) &&
           matches(g, nonce_name, nonce, sizeof(nonce));
}

static int secret_tree_case(const char *file, size_t idx, json_t *tc)
{
    enum msv_mls_suite suite = (enum msv_mls_suite)num(tc, "cipher_suite");
    json_t *leaves = json_object_get(tc, "leaves");
    struct bytes enc = hex(tc, "encryption_secret");
    uint32_t n = (uint32_t)json_array_size(leaves);
    int ok = enc.n == MSV_MLS_NH;

    if (!sender_data_case(suite, json_object_get(tc, "sender_data"))) {
        complain(file, idx, "sender data key");
        ok = 0;
    }
    for (uint32_t i = 0; ok && i < n; i++) {
        json_t *gens = json_array_get(leaves, i);
        uint8_t leaf[MSV_MLS_NH];

        if (msv_mls_secret_tree_leaf(enc.p, n, i, leaf) != MSV_OK) {
            ok = 0;
            break;
        }
        for (size_t j = 0; ok && j < json_array_size(gens); j++) {
            json_t *g = json_array_get(gens, j);

            ok = ratchet_matches(suite, leaf, g, MSV_MLS_RATCHET_HANDSHAKE, "handshake_key",
                                 "handshake_nonce") &&
                 ratchet_matches(suite, leaf, g, MSV_MLS_RATCHET_APPLICATION, "application_key",
                                 "application_nonce");
        }
        sodium_memzero(leaf, sizeof(leaf));
        if (!ok)
            complain(file, idx, "leaf ratchets");
    }
    free(enc.p);
    return ok;
}

/* ---- key-schedule ---- */

static int epoch_secrets_match(json_t *e, const struct msv_mls_epoch_secrets *s)
{
    const struct {
        const char *name;
        const uint8_t *v;
    } f[] = {
        {"joiner_secret", s->joiner},
        {"welcome_secret", s->welcome},
        {"init_secret", s->init},
        {"sender_data_secret", s->sender_data},
        {"encryption_secret", s->encryption},
        {"exporter_secret", s->exporter},
        {"epoch_authenticator", s->epoch_authenticator},
        {"external_secret", s->external},
        {"confirmation_key", s->confirmation_key},
        {"membership_key", s->membership_key},
        {"resumption_psk", s->resumption_psk},
    };

    for (size_t i = 0; i < sizeof(f) / sizeof(f[0]); i++) {
        if (!matches(e, f[i].name, f[i].v, MSV_MLS_NH)) {
            fprintf(stderr, "  %s differs\n", f[i].name);
            return 0;
        }
    }
    return 1;
}

static int exporter_matches(json_t *x, const uint8_t exporter_secret[MSV_MLS_NH])
{
    /* the generators used the label's hex text itself as the label's bytes */
    const char *label = str(x, "label");
    struct bytes context = hex(x, "context");
    size_t len = (size_t)num(x, "length");
    uint8_t *out = malloc(len + 1);
    int ok = out != NULL &&
             msv_mls_exporter(exporter_secret, (const uint8_t *)label, strlen(label), context.p,
                              context.n, out, len) == MSV_OK &&
             matches(x, "secret", out, len);

    free(out);
    free(context.p);
    return ok;
}

static int key_schedule_epoch(enum msv_mls_suite suite, const struct bytes *group_id,
                              uint64_t epoch, json_t *e, uint8_t init[MSV_MLS_NH])
{
    struct bytes tree_hash = hex(e, "tree_hash"), cth = hex(e, "confirmed_transcript_hash");
    struct bytes commit = hex(e, "commit_secret"), psk = hex(e, "psk_secret");
    struct msv_mls_group_context gc = {suite,       group_id->p, group_id->n, epoch, tree_hash.p,
                                       tree_hash.n, cth.p,       cth.n,       NULL,  0};
    struct msv_mls_epoch_secrets s;
    uint8_t *gce = NULL, sk[32], pk[32];
    size_t gce_len = 0;
    int ok = commit.n == MSV_MLS_NH && psk.n == MSV_MLS_NH &&
             msv_mls_group_context_encode(&gc, &gce, &gce_len) == MSV_OK &&
             matches(e, "group_context", gce, gce_len) &&
             msv_mls_key_schedule(init, commit.p, psk.p, gce, gce_len, &s) == MSV_OK &&
             epoch_secrets_match(e, &s);

    if (ok && !exporter_matches(json_object_get(e, "exporter"), s.exporter)) {
        fprintf(stderr, "  exporter differs\n");
        ok = 0;
    }
    if (ok && (msv_mls_hpke_derive_keypair(s.external, MSV_MLS_NH, sk, pk) != MSV_OK ||
               !matches(e, "external_pub", pk, sizeof(pk)))) {
        fprintf(stderr, "  external_pub differs\n");
        ok = 0;
    }

    if (ok)
        memcpy(init, s.init, MSV_MLS_NH);
    sodium_memzero(&s, sizeof(s));
    sodium_memzero(sk, sizeof(sk));
    free(gce);
    free(tree_hash.p);
    free(cth.p);
    free(commit.p);
    free(psk.p);
    return ok;
}

static int key_schedule_case(const char *file, size_t idx, json_t *tc)
{
    enum msv_mls_suite suite = (enum msv_mls_suite)num(tc, "cipher_suite");
    struct bytes group_id = hex(tc, "group_id"), init0 = hex(tc, "initial_init_secret");
    json_t *epochs = json_object_get(tc, "epochs");
    uint8_t init[MSV_MLS_NH];
    int ok = init0.n == MSV_MLS_NH && json_array_size(epochs) > 0;

    if (ok)
        memcpy(init, init0.p, MSV_MLS_NH);
    for (size_t i = 0; ok && i < json_array_size(epochs); i++) {
        ok = key_schedule_epoch(suite, &group_id, i, json_array_get(epochs, i), init);
        if (!ok)
            complain(file, idx, "epoch");
    }
    sodium_memzero(init, sizeof(init));
    free(group_id.p);
    free(init0.p);
    return ok;
}

/* ---- psk_secret ---- */

static int psk_secret_case(const char *file, size_t idx, json_t *tc)
{
    json_t *list = json_object_get(tc, "psks");
    size_t n = json_array_size(list);
    struct msv_mls_psk *psks = calloc(n + 1, sizeof(*psks));
    struct bytes *keys = calloc(n + 1, sizeof(*keys));
    uint8_t out[MSV_MLS_NH];
    int ok = psks != NULL && keys != NULL;

    for (size_t i = 0; ok && i < n; i++) {
        json_t *p = json_array_get(list, i);
        struct bytes id = hex(p, "psk_id"), nonce = hex(p, "psk_nonce");
        uint8_t *enc = NULL;
        size_t enc_len = 0;

        keys[i] = hex(p, "psk");
        ok = msv_mls_psk_id_external(id.p, id.n, nonce.p, nonce.n, &enc, &enc_len) == MSV_OK;
        psks[i].id = enc;
        psks[i].id_len = enc_len;
        psks[i].psk = keys[i].p;
        psks[i].psk_len = keys[i].n;
        free(id.p);
        free(nonce.p);
    }
    ok = ok && msv_mls_psk_secret(psks, n, out) == MSV_OK &&
         matches(tc, "psk_secret", out, sizeof(out));
    if (!ok)
        complain(file, idx, "psk_secret");
    for (size_t i = 0; psks != NULL && keys != NULL && i < n; i++) {
        free((void *)psks[i].id);
        free(keys[i].p);
    }
    free(psks);
    free(keys);
    return ok;
}

/* ---- transcript-hashes ---- */

static int transcript_case(const char *file, size_t idx, json_t *tc)
{
    struct bytes key = hex(tc, "confirmation_key"), ac = hex(tc, "authenticated_content");
    struct bytes before = hex(tc, "interim_transcript_hash_before");
    uint8_t confirmed[MSV_MLS_NH], interim[MSV_MLS_NH];
    int ok = key.n == MSV_MLS_NH && before.n == MSV_MLS_NH &&
             msv_mls_transcript_update(before.p, ac.p, ac.n, key.p, confirmed, interim) == MSV_OK &&
             matches(tc, "confirmed_transcript_hash_after", confirmed, sizeof(confirmed)) &&
             matches(tc, "interim_transcript_hash_after", interim, sizeof(interim));

    /* another confirmation key: the tag must not verify */
    if (ok) {
        key.p[0] ^= 1;
        ok = msv_mls_transcript_update(before.p, ac.p, ac.n, key.p, confirmed, interim) ==
             MSV_ERR_AUTH;
    }
    if (!ok)
        complain(file, idx, "transcript hashes");
    free(key.p);
    free(ac.p);
    free(before.p);
    return ok;
}

/* ---- message-protection ---- */

struct mp {
    struct msv_mls_epoch ep;
    struct bytes group_id, tree_hash, cth, sd, enc, mk, sig_priv, sig_pub;
};

/*
 * The vectors' group: leaf 1 signs with signature_pub; leaf 0 stands for
 * another member, whose key (here the tree hash's 32 bytes) is not leaf 1's.
 */
static msv_err mp_sig_key(void *ctx, uint32_t leaf, const uint8_t **pk, size_t *pk_len)
{
    const struct mp *m = ctx;

    if (leaf > 1)
        return MSV_ERR_NOT_FOUND;
    *pk = leaf == 1 ? m->sig_pub.p : m->tree_hash.p;
    *pk_len = leaf == 1 ? m->sig_pub.n : m->tree_hash.n;
    return MSV_OK;
}

static void mp_load(json_t *tc, struct mp *m)
{
    m->group_id = hex(tc, "group_id");
    m->tree_hash = hex(tc, "tree_hash");
    m->cth = hex(tc, "confirmed_transcript_hash");
    m->sd = hex(tc, "sender_data_secret");
    m->enc = hex(tc, "encryption_secret");
    m->mk = hex(tc, "membership_key");
    m->sig_priv = hex(tc, "signature_priv");
    m->sig_pub = hex(tc, "signature_pub");
    memset(&m->ep, 0, sizeof(m->ep));
    m->ep.gc.suite = (enum msv_mls_suite)num(tc, "cipher_suite");
    m->ep.gc.group_id = m->group_id.p;
    m->ep.gc.group_id_len = m->group_id.n;
    m->ep.gc.epoch = num(tc, "epoch");
    m->ep.gc.tree_hash = m->tree_hash.p;
    m->ep.gc.tree_hash_len = m->tree_hash.n;
    m->ep.gc.confirmed_transcript_hash = m->cth.p;
    m->ep.gc.confirmed_transcript_hash_len = m->cth.n;
    m->ep.n_leaves = 2; /* the vectors' group has two members; leaf 1 sends */
    m->ep.sender_data_secret = m->sd.p;
    m->ep.encryption_secret = m->enc.p;
    m->ep.membership_key = m->mk.p;
    m->ep.sig_key = mp_sig_key;
    m->ep.sig_key_ctx = m;
}

static void mp_free(struct mp *m)
{
    struct bytes *all[] = {&m->group_id, &m->tree_hash, &m->cth,      &m->sd,
                           &m->enc,      &m->mk,        &m->sig_priv, &m->sig_pub};

    for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++)
        free(all[i]->p);
}

/* Unprotects msg and checks that it carries want from leaf 1. */
static int private_carries(const struct mp *m, const uint8_t *msg, size_t len,
                           const struct bytes *want, uint8_t content_type)
{
    struct msv_mls_content c;
    uint8_t *plain = NULL;
    size_t plain_len = 0;
    uint32_t gen = 0;
    int ok = msv_mls_private_unprotect(&m->ep, msg, len, &c, &plain, &plain_len, &gen) == MSV_OK &&
             c.leaf_index == 1 && c.content_type == content_type && same(want, c.body, c.body_len);

    msv_secret_free(plain, plain_len);
    return ok;
}

static int private_case(const struct mp *m, json_t *tc, const char *name, const char *priv_name,
                        uint8_t content_type)
{
    struct bytes want = hex(tc, name), msg = hex(tc, priv_name);
    static const uint8_t tag[MSV_MLS_NH] = {7};
    struct msv_mls_content c = {1, NULL, 0, content_type, want.p, want.n, NULL, 0, NULL, 0, 0};
    uint8_t guard[4] = {1, 2, 3, 4}, *mine = NULL;
    size_t mine_len = 0;
    int ok = private_carries(m, msg.p, msg.n, &want, content_type);

    if (content_type == MSV_MLS_CONTENT_COMMIT) {
        c.confirmation_tag = tag;
        c.confirmation_tag_len = sizeof(tag);
    }
    ok = ok &&
         msv_mls_private_protect(&m->ep, &c, m->sig_priv.p, 5, guard, 9, &mine, &mine_len) ==
             MSV_OK &&
         private_carries(m, mine, mine_len, &want, content_type);
    /* any flipped byte after the header: refused */
    for (size_t i = 4; ok && i < msg.n; i += 7) {
        msg.p[i] ^= 0x20;
        ok = !private_carries(m, msg.p, msg.n, &want, content_type);
        msg.p[i] ^= 0x20;
    }
    free(mine);
    free(want.p);
    free(msg.p);
    return ok;
}

static int public_case(const struct mp *m, json_t *tc, const char *name, const char *pub_name,
                       uint8_t content_type)
{
    struct bytes want = hex(tc, name), msg = hex(tc, pub_name);
    struct msv_mls_content c;
    uint8_t *mine = NULL;
    size_t mine_len = 0;
    int ok = msv_mls_public_unprotect(&m->ep, msg.p, msg.n, &c) == MSV_OK && c.leaf_index == 1 &&
             c.content_type == content_type && same(&want, c.body, c.body_len);

    /* Ed25519 and the membership MAC are deterministic: the same bytes again */
    ok = ok && msv_mls_public_protect(&m->ep, &c, m->sig_priv.p, &mine, &mine_len) == MSV_OK &&
         same(&msg, mine, mine_len);
    for (size_t i = 4; ok && i < msg.n; i += 5) {
        msg.p[i] ^= 0x01;
        ok = msv_mls_public_unprotect(&m->ep, msg.p, msg.n, &c) != MSV_OK;
        msg.p[i] ^= 0x01;
    }
    free(mine);
    free(want.p);
    free(msg.p);
    return ok;
}

static int message_protection_case(const char *file, size_t idx, json_t *tc)
{
    struct mp m;
    int ok = 1;

    mp_load(tc, &m);
    if (!public_case(&m, tc, "proposal", "proposal_pub", MSV_MLS_CONTENT_PROPOSAL) ||
        !public_case(&m, tc, "commit", "commit_pub", MSV_MLS_CONTENT_COMMIT)) {
        complain(file, idx, "PublicMessage");
        ok = 0;
    }
    if (!private_case(&m, tc, "proposal", "proposal_priv", MSV_MLS_CONTENT_PROPOSAL) ||
        !private_case(&m, tc, "commit", "commit_priv", MSV_MLS_CONTENT_COMMIT) ||
        !private_case(&m, tc, "application", "application_priv", MSV_MLS_CONTENT_APPLICATION)) {
        complain(file, idx, "PrivateMessage");
        ok = 0;
    }
    mp_free(&m);
    return ok;
}

/* ---- deserialization: variable-size length headers ---- */

static int deserialization_case(const char *file, size_t idx, json_t *tc)
{
    struct bytes header = hex(tc, "vlbytes_header");
    struct msv_reader r;
    struct msv_buf w;
    uint8_t *mine = NULL;
    size_t mine_len = 0;
    uint32_t len = 0;
    int ok;

    msv_reader_init(&r, header.p, header.n);
    ok = msv_mls_get_varint(&r, &len) == MSV_OK && msv_mls_reader_is_done(&r) &&
         len == num(tc, "length");
    msv_buf_init(&w, 16);
    msv_mls_put_varint(&w, num(tc, "length"));
    ok = ok && msv_buf_finish(&w, &mine, &mine_len) == MSV_OK && same(&header, mine, mine_len);
    if (!ok)
        complain(file, idx, "length header");
    free(mine);
    free(header.p);
    return ok;
}

/* ---- our own cases: the codec's refusals (docs/bad-input.md M1-M4) ---- */

static int reads_varint(const char *hexstr, uint32_t want)
{
    uint8_t b[8];
    size_t n = 0;
    uint32_t v = 0;
    struct msv_reader r;

    if (msv_hex_decode(hexstr, b, sizeof(b), &n) != MSV_OK)
        return 0;
    msv_reader_init(&r, b, n);
    return msv_mls_get_varint(&r, &v) == MSV_OK && v == want && msv_mls_reader_is_done(&r);
}

/* 1 if the bytes are refused as a vector and the reader has not moved. */
static int vec_refused(const char *hexstr)
{
    uint8_t b[16];
    size_t n = 0, len;
    const uint8_t *p;
    struct msv_reader r;

    if (msv_hex_decode(hexstr, b, sizeof(b), &n) != MSV_OK)
        return 0;
    msv_reader_init(&r, b, n);
    return msv_mls_get_vec(&r, &p, &len) == MSV_ERR_PARSE && r.off == 0;
}

static int codec_nesting(void)
{
    struct msv_buf w;
    uint8_t filler[100] = {0}, *out = NULL;
    size_t out_len = 0, outer, inner;
    struct msv_reader r, sub;
    const uint8_t *p;
    size_t n;
    int ok;

    msv_buf_init(&w, 1000);
    outer = msv_mls_vec_begin(&w);
    inner = msv_mls_vec_begin(&w);
    (void)msv_buf_put(&w, filler, sizeof(filler));
    msv_mls_vec_end(&w, inner);
    msv_mls_vec_end(&w, outer);
    if (msv_buf_finish(&w, &out, &out_len) != MSV_OK)
        return 0;
    /* 100 bytes take a 2-byte length, 102 too: 0x4066 0x4064 then the filler */
    msv_reader_init(&r, out, out_len);
    ok = out_len == 104 && out[0] == 0x40 && out[1] == 0x66 &&
         msv_mls_get_sub(&r, &sub) == MSV_OK && msv_mls_reader_is_done(&r) &&
         msv_mls_get_vec(&sub, &p, &n) == MSV_OK && n == 100 && msv_mls_reader_is_done(&sub);
    free(out);
    /* a length over 2^30-1 cannot be written, and nothing else after it */
    msv_buf_init(&w, 64);
    msv_mls_put_varint(&w, MSV_MLS_VEC_MAX + 1ull);
    (void)msv_buf_put_u8(&w, 1);
    ok = ok && msv_buf_finish(&w, &out, &out_len) == MSV_ERR_TOO_BIG;
    return ok;
}

static int optional_refused(void)
{
    static const uint8_t two[1] = {2}, one[1] = {1};
    struct msv_reader r;
    int present = -1;

    msv_reader_init(&r, two, 1);
    if (msv_mls_get_optional(&r, &present) != MSV_ERR_PARSE || r.off != 0)
        return 0;
    msv_reader_init(&r, one, 1);
    return msv_mls_get_optional(&r, &present) == MSV_OK && present == 1;
}

static int unknown_proposal_refused(void)
{
    static const uint8_t remove[] = {0x00, 0x03, 0, 0, 0, 2}, unknown[] = {0x00, 0x08, 0, 0, 0, 2};
    struct msv_reader r;

    msv_reader_init(&r, remove, sizeof(remove));
    if (msv_mls_skip_proposal(&r) != MSV_OK || !msv_mls_reader_is_done(&r))
        return 0;
    msv_reader_init(&r, unknown, sizeof(unknown));
    return msv_mls_skip_proposal(&r) == MSV_ERR_UNSUPPORTED;
}

static void run_own(const char *name, const int *results, size_t n)
{
    size_t passed = 0;

    for (size_t i = 0; i < n; i++) {
        if (results[i])
            passed++;
        else
            fprintf(stderr, "%s case %zu failed\n", name, i);
    }
    printf("%s: %zu/%zu\n", name, passed, n);
    if (passed != n)
        failures++;
}

static void run_codec(void)
{
    const int results[] = {
        reads_varint("00", 0),
        reads_varint("3f", 63),
        reads_varint("4040", 64),
        reads_varint("7fff", 16383),
        reads_varint("80004000", 16384),
        reads_varint("bfffffff", MSV_MLS_VEC_MAX),
        vec_refused("4001ff"),         /* M1: 1 in two bytes */
        vec_refused("8000003fff"),     /* M1: 63 in four bytes */
        vec_refused("80003fff"),       /* M1: 16383 in four bytes */
        vec_refused("c0000000000000"), /* M2: the prefix 0b11 */
        vec_refused("40"),             /* M3: a length cut short */
        vec_refused("05aabbcc"),       /* M3: fewer bytes than the length */
        optional_refused(),            /* M4 */
        unknown_proposal_refused(),    /* M8 */
        codec_nesting(),
    };

    run_own("codec", results, sizeof(results) / sizeof(results[0]));
}

/* A PublicMessage proposal from leaf 1 made to say it is from leaf 0: refused. */
static int impersonation_refused(const struct mp *m, json_t *tc)
{
    struct bytes proposal = hex(tc, "proposal");
    struct msv_mls_content c = {
        0, NULL, 0, MSV_MLS_CONTENT_PROPOSAL, proposal.p, proposal.n, NULL, 0, NULL, 0, 0};
    uint8_t *msg = NULL;
    size_t len = 0;
    int ok = msv_mls_public_protect(&m->ep, &c, m->sig_priv.p, &msg, &len) == MSV_OK &&
             msv_mls_public_unprotect(&m->ep, msg, len, &c) == MSV_ERR_AUTH;

    free(msg);
    free(proposal.p);
    return ok;
}

/* M5-M7, M9: messages of another epoch, group or member, with trailing bytes */
static int framing_refusals(json_t *tc)
{
    struct mp m;
    struct bytes app = hex(tc, "application"), pub = hex(tc, "proposal_pub");
    struct msv_mls_content c = {1,    NULL, 0, MSV_MLS_CONTENT_APPLICATION, app.p, app.n, NULL, 0,
                                NULL, 0,    0};
    uint8_t guard[4] = {9, 9, 9, 9}, *msg = NULL, *plain = NULL, *longer = NULL;
    size_t len = 0, plain_len = 0;
    uint32_t gen = 0;
    int ok;

    mp_load(tc, &m);
    ok = msv_mls_private_protect(&m.ep, &c, m.sig_priv.p, 3, guard, 0, &msg, &len) == MSV_OK;
    /* M6: the next epoch's keys */
    m.ep.gc.epoch++;
    ok = ok &&
         msv_mls_private_unprotect(&m.ep, msg, len, &c, &plain, &plain_len, &gen) == MSV_ERR_AUTH;
    ok = ok && msv_mls_public_unprotect(&m.ep, pub.p, pub.n, &c) == MSV_ERR_AUTH;
    m.ep.gc.epoch--;
    /* M7: a sender outside the tree (a group of one) */
    m.ep.n_leaves = 1;
    ok = ok &&
         msv_mls_private_unprotect(&m.ep, msg, len, &c, &plain, &plain_len, &gen) == MSV_ERR_AUTH;
    m.ep.n_leaves = 2;
    /* M7: signed by someone else */
    m.sig_pub.p[0] ^= 1;
    ok = ok &&
         msv_mls_private_unprotect(&m.ep, msg, len, &c, &plain, &plain_len, &gen) == MSV_ERR_AUTH;
    m.sig_pub.p[0] ^= 1;
    /* M7: leaf 1 signing as leaf 0, in private and in public */
    c.leaf_index = 0;
    free(msg);
    msg = NULL;
    ok = ok &&
         msv_mls_private_protect(&m.ep, &c, m.sig_priv.p, 3, guard, 0, &msg, &len) == MSV_OK &&
         msv_mls_private_unprotect(&m.ep, msg, len, &c, &plain, &plain_len, &gen) == MSV_ERR_AUTH;
    ok = ok && impersonation_refused(&m, tc);
    c.leaf_index = 1;
    free(msg);
    msg = NULL;
    ok = ok && msv_mls_private_protect(&m.ep, &c, m.sig_priv.p, 3, guard, 0, &msg, &len) == MSV_OK;
    /* M9: a byte more after the message */
    longer = malloc(pub.n + 1);
    if (longer != NULL) {
        memcpy(longer, pub.p, pub.n);
        longer[pub.n] = 0;
    }
    ok = ok && longer != NULL &&
         msv_mls_public_unprotect(&m.ep, longer, pub.n + 1, &c) == MSV_ERR_PARSE;
    /* and the unchanged message still goes through */
    ok = ok && msv_mls_private_unprotect(&m.ep, msg, len, &c, &plain, &plain_len, &gen) == MSV_OK &&
         gen == 3;
    msv_secret_free(plain, plain_len);
    free(longer);
    free(msg);
    free(app.p);
    free(pub.p);
    mp_free(&m);
    return ok;
}

static int framing_refusals_case(const char *file, size_t idx, json_t *tc)
{
    int ok = framing_refusals(tc);

    if (!ok)
        complain(file, idx, "refusals");
    return ok;
}

/* ---- HPKE: RFC 9180 A.1.1 and A.2.1 (tests/vectors/hpke) ---- */

static int hpke_keypair_matches(json_t *tc, const char *ikm_name, const char *sk_name,
                                const char *pk_name)
{
    struct bytes ikm = hex(tc, ikm_name);
    uint8_t sk[32], pk[32];
    int ok = msv_mls_hpke_derive_keypair(ikm.p, ikm.n, sk, pk) == MSV_OK &&
             matches(tc, sk_name, sk, sizeof(sk)) && matches(tc, pk_name, pk, sizeof(pk));

    sodium_memzero(sk, sizeof(sk));
    free(ikm.p);
    return ok;
}

static int hpke_context_matches(json_t *tc, struct msv_mls_hpke_ctx *ctx)
{
    return matches(tc, "key", ctx->key, msv_mls_suite_nk(ctx->suite)) &&
           matches(tc, "base_nonce", ctx->base_nonce, MSV_MLS_NN) &&
           matches(tc, "exporter_secret", ctx->exporter_secret, MSV_MLS_NH);
}

/* Seals each encryption in turn with s and opens it with r. */
static int hpke_encryptions_match(json_t *tc, struct msv_mls_hpke_ctx *s,
                                  struct msv_mls_hpke_ctx *r)
{
    json_t *list = json_object_get(tc, "encryptions");
    int ok = json_array_size(list) > 0;

    for (size_t i = 0; ok && i < json_array_size(list); i++) {
        json_t *e = json_array_get(list, i);
        struct bytes aad = hex(e, "aad"), pt = hex(e, "pt"), ct = hex(e, "ct");
        uint8_t *mine = malloc(pt.n + MSV_MLS_TAG_LEN), *back = malloc(pt.n + 1);

        ok = mine != NULL && back != NULL &&
             msv_mls_hpke_seal(s, aad.p, aad.n, pt.p, pt.n, mine) == MSV_OK &&
             same(&ct, mine, pt.n + MSV_MLS_TAG_LEN) &&
             msv_mls_hpke_open(r, aad.p, aad.n, ct.p, ct.n, back) == MSV_OK &&
             same(&pt, back, pt.n);
        free(mine);
        free(back);
        free(aad.p);
        free(pt.p);
        free(ct.p);
    }
    return ok;
}

static int hpke_exports_match(json_t *tc, const struct msv_mls_hpke_ctx *ctx)
{
    json_t *list = json_object_get(tc, "exports");
    int ok = json_array_size(list) > 0;

    for (size_t i = 0; ok && i < json_array_size(list); i++) {
        json_t *e = json_array_get(list, i);
        struct bytes context = hex(e, "context");
        size_t len = (size_t)num(e, "L");
        uint8_t *out = malloc(len + 1);

        ok = out != NULL && msv_mls_hpke_export(ctx, context.p, context.n, out, len) == MSV_OK &&
             matches(e, "value", out, len);
        free(out);
        free(context.p);
    }
    return ok;
}

static int hpke_case(const char *file, size_t idx, json_t *tc)
{
    enum msv_mls_suite suite = num(tc, "aead_id") == 1 ? MSV_MLS_SUITE_X25519_AES128GCM
                                                       : MSV_MLS_SUITE_X25519_CHACHA20POLY1305;
    struct bytes info = hex(tc, "info"), sk_e = hex(tc, "skEm"), pk_r = hex(tc, "pkRm");
    struct bytes sk_r = hex(tc, "skRm");
    struct msv_mls_hpke_ctx s, r;
    uint8_t enc[32];
    int ok = hpke_keypair_matches(tc, "ikmE", "skEm", "pkEm") &&
             hpke_keypair_matches(tc, "ikmR", "skRm", "pkRm");

    memset(&s, 0, sizeof(s));
    memset(&r, 0, sizeof(r));
    ok = ok && msv_mls_hpke_setup_s(suite, pk_r.p, info.p, info.n, sk_e.p, enc, &s) == MSV_OK &&
         matches(tc, "enc", enc, sizeof(enc)) && hpke_context_matches(tc, &s) &&
         msv_mls_hpke_setup_r(suite, enc, sk_r.p, info.p, info.n, &r) == MSV_OK &&
         hpke_context_matches(tc, &r) && hpke_encryptions_match(tc, &s, &r) &&
         hpke_exports_match(tc, &r);
    if (!ok)
        complain(file, idx, "HPKE");
    msv_mls_hpke_ctx_wipe(&s);
    msv_mls_hpke_ctx_wipe(&r);
    free(info.p);
    free(sk_e.p);
    free(pk_r.p);
    free(sk_r.p);
    return ok;
}

/* ---- messages: every structure is read whole by its structure check ---- */

enum check_kind { MESSAGE, RATCHET_TREE, GROUP_SECRETS, COMMIT, PROPOSAL_BODY };

static msv_err check_structure(enum check_kind kind, uint16_t proposal_type, struct msv_reader *r)
{
    switch (kind) {
    case MESSAGE:
        return msv_mls_skip_message(r);
    case RATCHET_TREE:
        return msv_mls_skip_ratchet_tree(r);
    case GROUP_SECRETS:
        return msv_mls_skip_group_secrets(r);
    case COMMIT:
        return msv_mls_skip_commit(r);
    default:
        return msv_mls_skip_proposal_body(r, proposal_type);
    }
}

/* 1 if the check reads all of b, and refuses b one byte short. */
static int reads_whole(enum check_kind kind, uint16_t proposal_type, const struct bytes *b)
{
    struct msv_reader r;
    int whole, short_refused;

    msv_reader_init(&r, b->p, b->n);
    whole = check_structure(kind, proposal_type, &r) == MSV_OK && msv_mls_reader_is_done(&r);
    msv_reader_init(&r, b->p, b->n - 1);
    short_refused = b->n == 0 || check_structure(kind, proposal_type, &r) != MSV_OK ||
                    !msv_mls_reader_is_done(&r);
    return whole && short_refused;
}

static int messages_case(const char *file, size_t idx, json_t *tc)
{
    static const struct {
        const char *name;
        enum check_kind kind;
        uint16_t proposal_type;
    } fields[] = {
        {"mls_welcome", MESSAGE, 0},
        {"mls_group_info", MESSAGE, 0},
        {"mls_key_package", MESSAGE, 0},
        {"ratchet_tree", RATCHET_TREE, 0},
        {"group_secrets", GROUP_SECRETS, 0},
        {"add_proposal", PROPOSAL_BODY, 1},
        {"update_proposal", PROPOSAL_BODY, 2},
        {"remove_proposal", PROPOSAL_BODY, 3},
        {"pre_shared_key_proposal", PROPOSAL_BODY, 4},
        {"re_init_proposal", PROPOSAL_BODY, 5},
        {"external_init_proposal", PROPOSAL_BODY, 6},
        {"group_context_extensions_proposal", PROPOSAL_BODY, 7},
        {"commit", COMMIT, 0},
        {"public_message_application", MESSAGE, 0},
        {"public_message_proposal", MESSAGE, 0},
        {"public_message_commit", MESSAGE, 0},
        {"private_message", MESSAGE, 0},
    };
    int ok = 1;

    for (size_t i = 0; i < sizeof(fields) / sizeof(fields[0]); i++) {
        struct bytes b = hex(tc, fields[i].name);

        if (!reads_whole(fields[i].kind, fields[i].proposal_type, &b)) {
            complain(file, idx, fields[i].name);
            ok = 0;
        }
        free(b.p);
    }
    return ok;
}

/* ---- welcome ---- */

static int welcome_opens(enum msv_mls_suite suite, const struct bytes *w, const struct bytes *kp,
                         const struct bytes *init, const struct bytes *signer)
{
    struct msv_mls_epoch_secrets s;
    uint8_t *gi = NULL;
    size_t gi_len = 0;
    msv_err err = msv_mls_welcome_open(suite, w->p, w->n, kp->p, kp->n, init->p, signer->p,
                                       signer->n, &s, &gi, &gi_len);

    sodium_memzero(&s, sizeof(s));
    free(gi);
    return err == MSV_OK;
}

static int welcome_case(const char *file, size_t idx, json_t *tc)
{
    enum msv_mls_suite suite = (enum msv_mls_suite)num(tc, "cipher_suite");
    struct bytes w = hex(tc, "welcome"), kp = hex(tc, "key_package");
    struct bytes init = hex(tc, "init_priv"), signer = hex(tc, "signer_pub");
    int ok = init.n == 32 && welcome_opens(suite, &w, &kp, &init, &signer);

    /* any changed byte of the Welcome, another init key or signer: refused */
    for (size_t i = 0; ok && i < w.n; i += 11) {
        w.p[i] ^= 0x04;
        ok = !welcome_opens(suite, &w, &kp, &init, &signer);
        w.p[i] ^= 0x04;
    }
    init.p[5] ^= 1;
    ok = ok && !welcome_opens(suite, &w, &kp, &init, &signer);
    init.p[5] ^= 1;
    signer.p[5] ^= 1;
    ok = ok && !welcome_opens(suite, &w, &kp, &init, &signer);
    signer.p[5] ^= 1;
    if (!ok)
        complain(file, idx, "Welcome");
    free(w.p);
    free(kp.p);
    free(init.p);
    free(signer.p);
    return ok;
}

/* ---- tree-validation ---- */

static int resolution_is(const struct msv_mls_tree *t, uint32_t x, json_t *want, uint32_t *buf)
{
    size_t n = 0;

    if (msv_mls_tree_resolution(t, x, buf, t->width, &n) != MSV_OK || n != json_array_size(want))
        return 0;
    for (size_t i = 0; i < n; i++) {
        if ((uint64_t)json_integer_value(json_array_get(want, i)) != buf[i])
            return 0;
    }
    return 1;
}

static int has_member_leaf(const struct msv_mls_tree *t)
{
    for (uint32_t x = 0; x < t->width; x += 2) {
        if (t->nodes[x].type == 1 && t->nodes[x].leaf.source != 1)
            return 1;
    }
    return 0;
}

/*
 * Bytes of the tree changed in turn (about 60 spread over it): it does not
 * read, does not verify, or has another root hash (what the GroupContext pins).
 */
static int tampering_shows(const struct msv_mls_tree *t, struct bytes *tree,
                           const struct bytes *group_id)
{
    uint8_t root[MSV_MLS_NH];
    int ok = msv_mls_tree_hash(t, msv_mls_tree_root(t->n_leaves), root) == MSV_OK;

    size_t step = tree->n / 60 > 7 ? tree->n / 60 : 7;

    for (size_t i = 0; ok && i < tree->n; i += step) {
        struct msv_mls_tree u = {0, 0, NULL};
        uint8_t h[MSV_MLS_NH];

        tree->p[i] ^= 0x10;
        if (msv_mls_tree_read(tree->p, tree->n, &u) == MSV_OK &&
            msv_mls_tree_verify(&u, group_id->p, group_id->n) == MSV_OK)
            ok = msv_mls_tree_hash(&u, msv_mls_tree_root(u.n_leaves), h) == MSV_OK &&
                 memcmp(h, root, sizeof(h)) != 0;
        msv_mls_tree_free(&u);
        tree->p[i] ^= 0x10;
    }
    return ok;
}

static int tree_validation_case(const char *file, size_t idx, json_t *tc)
{
    struct bytes tree = hex(tc, "tree"), group_id = hex(tc, "group_id");
    json_t *hashes = json_object_get(tc, "tree_hashes"), *res = json_object_get(tc, "resolutions");
    struct msv_mls_tree t = {0, 0, NULL};
    uint32_t *buf = NULL;
    int ok = msv_mls_tree_read(tree.p, tree.n, &t) == MSV_OK &&
             json_array_size(hashes) == t.width && json_array_size(res) == t.width &&
             (buf = calloc(t.width, sizeof(uint32_t))) != NULL;

    for (uint32_t x = 0; ok && x < t.width; x++) {
        uint8_t h[MSV_MLS_NH];
        const char *want = json_string_value(json_array_get(hashes, x));
        char got[2 * MSV_MLS_NH + 1];

        ok = msv_mls_tree_hash(&t, x, h) == MSV_OK &&
             msv_hex_encode(h, sizeof(h), got, sizeof(got)) == MSV_OK && want != NULL &&
             strcmp(want, got) == 0;
        if (!ok)
            complain(file, idx, "tree hash");
        else if (!(ok = resolution_is(&t, x, json_array_get(res, x), buf)))
            complain(file, idx, "resolution");
    }
    if (ok && !(ok = msv_mls_tree_verify(&t, group_id.p, group_id.n) == MSV_OK))
        complain(file, idx, "parent hashes or leaf signatures");
    /* under another group id, update and commit leaves no longer verify */
    if (ok && has_member_leaf(&t)) {
        group_id.p[0] ^= 1;
        ok = msv_mls_tree_verify(&t, group_id.p, group_id.n) == MSV_ERR_AUTH;
        group_id.p[0] ^= 1;
        if (!ok)
            complain(file, idx, "another group id");
    }
    if (ok && !(ok = tampering_shows(&t, &tree, &group_id)))
        complain(file, idx, "a changed byte went unnoticed");
    free(buf);
    msv_mls_tree_free(&t);
    free(tree.p);
    free(group_id.p);
    return ok;
}

/* ---- tree-operations ---- */

/* Applies the Proposal (add, update from sender, remove) to t. */
static msv_err apply_proposal(struct msv_mls_tree *t, const struct bytes *proposal, uint32_t sender)
{
    struct msv_reader r;
    struct msv_mls_leaf leaf;
    uint16_t type;
    uint32_t index;

    msv_reader_init(&r, proposal->p, proposal->n);
    if (msv_reader_u16be(&r, &type) != MSV_OK)
        return MSV_ERR_PARSE;
    if (type == 1 && msv_mls_read_key_package(&r, &leaf) == MSV_OK && msv_mls_reader_is_done(&r))
        return msv_mls_tree_add(t, &leaf, &index);
    if (type == 2 && msv_mls_read_leaf_node(&r, &leaf) == MSV_OK && msv_mls_reader_is_done(&r))
        return msv_mls_tree_update(t, sender, &leaf);
    if (type == 3 && msv_reader_u32be(&r, &index) == MSV_OK && msv_mls_reader_is_done(&r))
        return msv_mls_tree_remove(t, index);
    return MSV_ERR_PARSE;
}

static int root_hash_is(const struct msv_mls_tree *t, json_t *tc, const char *name)
{
    uint8_t h[MSV_MLS_NH];

    return msv_mls_tree_hash(t, msv_mls_tree_root(t->n_leaves), h) == MSV_OK &&
           matches(tc, name, h, sizeof(h));
}

static int tree_operations_case(const char *file, size_t idx, json_t *tc)
{
    struct bytes before = hex(tc, "tree_before"), proposal = hex(tc, "proposal");
    struct msv_mls_tree t = {0, 0, NULL};
    uint8_t *after = NULL;
    size_t after_len = 0;
    int ok = msv_mls_tree_read(before.p, before.n, &t) == MSV_OK &&
             root_hash_is(&t, tc, "tree_hash_before");

    /* the tree as read writes back to the same bytes */
    ok = ok && msv_mls_tree_write(&t, &after, &after_len) == MSV_OK &&
         same(&before, after, after_len);
    free(after);
    after = NULL;
    ok = ok && apply_proposal(&t, &proposal, (uint32_t)num(tc, "proposal_sender")) == MSV_OK &&
         msv_mls_tree_write(&t, &after, &after_len) == MSV_OK &&
         matches(tc, "tree_after", after, after_len) && root_hash_is(&t, tc, "tree_hash_after");
    if (!ok)
        complain(file, idx, "tree after the proposal");
    free(after);
    msv_mls_tree_free(&t);
    free(before.p);
    free(proposal.p);
    return ok;
}

/* ---- treekem ---- */

/* The keys leaves_private gives receiver: its leaf's, and those of its path secrets' nodes. */
static size_t receiver_keys(json_t *priv, struct msv_mls_node_key *keys, size_t max)
{
    struct bytes leaf = hex(priv, "encryption_priv");
    json_t *list = json_object_get(priv, "path_secrets");
    size_t n = 0;

    keys[n].node = 2 * (uint32_t)num(priv, "index");
    memcpy(keys[n++].sk, leaf.p, 32);
    for (size_t i = 0; i < json_array_size(list) && n < max; i++) {
        json_t *e = json_array_get(list, i);
        struct bytes ps = hex(e, "path_secret");
        uint8_t pk[32];

        keys[n].node = (uint32_t)num(e, "node");
        if (msv_mls_node_keypair(ps.p, keys[n].sk, pk) == MSV_OK)
            n++;
        free(ps.p);
    }
    sodium_memzero(leaf.p, leaf.n);
    free(leaf.p);
    return n;
}

/* Merges update path u into a fresh copy of the tree and opens it for every receiver. */
static int treekem_path(json_t *tc, json_t *u, const struct bytes *tree_bytes,
                        const struct bytes *up_in)
{
    struct bytes up_bytes = *up_in, group_id = hex(tc, "group_id");
    struct bytes cth = hex(tc, "confirmed_transcript_hash");
    json_t *privs = json_object_get(tc, "leaves_private"),
           *secrets = json_object_get(u, "path_secrets");
    enum msv_mls_suite suite = (enum msv_mls_suite)num(tc, "cipher_suite");
    uint32_t sender = (uint32_t)num(u, "sender"), path[MSV_MLS_PATH_MAX];
    struct msv_mls_tree t = {0, 0, NULL};
    struct msv_mls_update_path up;
    uint8_t root[MSV_MLS_NH], *gc = NULL;
    size_t path_len = 0, gc_len = 0;
    int ok = msv_mls_tree_read(tree_bytes->p, tree_bytes->n, &t) == MSV_OK &&
             msv_mls_update_path_read(up_bytes.p, up_bytes.n, &up) == MSV_OK &&
             msv_mls_tree_filtered_path(&t, sender, path, &path_len) == MSV_OK &&
             msv_mls_tree_merge_path(&t, sender, &up) == MSV_OK &&
             msv_mls_tree_hash(&t, msv_mls_tree_root(t.n_leaves), root) == MSV_OK &&
             matches(u, "tree_hash_after", root, sizeof(root)) &&
             msv_mls_tree_verify(&t, group_id.p, group_id.n) == MSV_OK;
    struct msv_mls_group_context ctx = {
        suite, group_id.p, group_id.n, num(tc, "epoch"), root, sizeof(root), cth.p, cth.n, NULL, 0};

    ok = ok && msv_mls_group_context_encode(&ctx, &gc, &gc_len) == MSV_OK;
    for (size_t i = 0; ok && i < json_array_size(privs); i++) {
        json_t *priv = json_array_get(privs, i);
        uint32_t receiver = (uint32_t)num(priv, "index");
        struct msv_mls_node_key keys[MSV_MLS_PATH_MAX + 1];
        size_t n_keys = receiver_keys(priv, keys, MSV_MLS_PATH_MAX + 1);
        uint8_t ps[MSV_MLS_NH], commit[MSV_MLS_NH];

        if (receiver == sender)
            continue;
        ok = msv_mls_path_open(suite, &t, path, path_len, &up, receiver, keys, n_keys, NULL, 0, gc,
                               gc_len, ps, commit) == MSV_OK &&
             string_matches(json_array_get(secrets, receiver), ps, sizeof(ps)) &&
             matches(u, "commit_secret", commit, sizeof(commit));
        sodium_memzero(keys, sizeof(keys));
    }
    free(gc);
    msv_mls_tree_free(&t);
    free(group_id.p);
    free(cth.p);
    return ok;
}

/*
 * Bytes of the path's LeafNode (about 40 in turn) and of each node's public
 * key changed: the path is refused (leaf signature, parent hash, or a derived
 * key that is not the one sent).
 */
static int treekem_tampering_fails(json_t *tc, json_t *u, const struct bytes *tree,
                                   struct bytes *up_bytes)
{
    struct msv_mls_update_path up;
    size_t offsets[MSV_MLS_PATH_MAX];
    size_t step, n;
    int ok = msv_mls_update_path_read(up_bytes->p, up_bytes->n, &up) == MSV_OK;

    if (!ok)
        return 0;
    n = up.n_nodes;
    for (size_t i = 0; i < n; i++)
        offsets[i] = (size_t)(up.nodes[i].encryption_key - up_bytes->p);
    step = up.leaf.raw_len / 40 > 3 ? up.leaf.raw_len / 40 : 3;
    for (size_t i = 0; ok && i < up.leaf.raw_len; i += step) {
        up_bytes->p[i] ^= 0x01;
        ok = !treekem_path(tc, u, tree, up_bytes);
        up_bytes->p[i] ^= 0x01;
    }
    for (size_t i = 0; ok && i < n; i++) {
        up_bytes->p[offsets[i]] ^= 0x01;
        ok = !treekem_path(tc, u, tree, up_bytes);
        up_bytes->p[offsets[i]] ^= 0x01;
    }
    return ok;
}

static int treekem_case(const char *file, size_t idx, json_t *tc)
{
    struct bytes tree = hex(tc, "ratchet_tree");
    json_t *paths = json_object_get(tc, "update_paths");
    int ok = json_array_size(paths) > 0;

    for (size_t i = 0; ok && i < json_array_size(paths); i++) {
        json_t *u = json_array_get(paths, i);
        struct bytes up = hex(u, "update_path");

        ok = treekem_path(tc, u, &tree, &up);
        if (!ok)
            complain(file, idx, "update path");
        /* a few cases suffice for the refusals, which replay the whole path */
        if (ok && idx % 5 == 0 && !(ok = treekem_tampering_fails(tc, u, &tree, &up)))
            complain(file, idx, "a changed update path was taken");
        free(up.p);
    }
    free(tree.p);
    return ok;
}

/* ---- passive-client-welcome ---- */

/* The tree a joiner uses: the one given beside the Welcome, or the GroupInfo's extension. */
static int joiner_tree(json_t *tc, const struct msv_mls_group_info *info, struct bytes *given,
                       struct msv_mls_tree *t)
{
    json_t *v = json_object_get(tc, "ratchet_tree");

    given->p = NULL;
    if (json_is_string(v)) {
        *given = hex(tc, "ratchet_tree");
        return msv_mls_tree_read(given->p, given->n, t) == MSV_OK;
    }
    return info->ratchet_tree != NULL &&
           msv_mls_tree_read(info->ratchet_tree, info->ratchet_tree_len, t) == MSV_OK;
}

/* Checks the GroupInfo gi against its tree and gives the epoch authenticator. */
static int join_checks(json_t *tc, enum msv_mls_suite suite, const uint8_t *gi, size_t gi_len,
                       const uint8_t joiner[MSV_MLS_NH], const uint8_t psk_secret[MSV_MLS_NH])
{
    struct msv_mls_group_info info;
    struct msv_mls_tree t = {0, 0, NULL};
    struct msv_mls_epoch_secrets s;
    struct bytes given = {NULL, 0};
    uint8_t root[MSV_MLS_NH];
    const struct msv_mls_node *signer;
    int ok = msv_mls_group_info_read(gi, gi_len, &info) == MSV_OK &&
             joiner_tree(tc, &info, &given, &t) &&
             msv_mls_tree_hash(&t, msv_mls_tree_root(t.n_leaves), root) == MSV_OK &&
             info.tree_hash_len == sizeof(root) &&
             memcmp(root, info.tree_hash, sizeof(root)) == 0 &&
             msv_mls_tree_verify(&t, info.group_id, info.group_id_len) == MSV_OK &&
             info.signer < t.n_leaves;

    signer = ok ? &t.nodes[2 * info.signer] : NULL;
    ok = ok && signer->type == 1 &&
         msv_mls_group_info_check(suite, gi, gi_len, signer->leaf.signature_key,
                                  signer->leaf.signature_key_len, joiner, psk_secret,
                                  &s) == MSV_OK &&
         matches(tc, "initial_epoch_authenticator", s.epoch_authenticator, MSV_MLS_NH);
    sodium_memzero(&s, sizeof(s));
    msv_mls_tree_free(&t);
    free(given.p);
    return ok;
}

static int passive_welcome_case(const char *file, size_t idx, json_t *tc)
{
    enum msv_mls_suite suite = (enum msv_mls_suite)num(tc, "cipher_suite");
    struct bytes w = hex(tc, "welcome"), kp = hex(tc, "key_package"), init = hex(tc, "init_priv");
    json_t *list = json_object_get(tc, "external_psks");
    size_t n = json_array_size(list);
    struct msv_mls_external_psk *psks = calloc(n + 1, sizeof(*psks));
    struct bytes *held = calloc(2 * n + 1, sizeof(*held));
    uint8_t joiner[MSV_MLS_NH], psk_secret[MSV_MLS_NH], path[MSV_MLS_NH], *gi = NULL;
    size_t gi_len = 0;
    int has_path = 0;
    int ok = psks != NULL && held != NULL && init.n == 32;

    for (size_t i = 0; ok && i < n; i++) {
        held[2 * i] = hex(json_array_get(list, i), "psk_id");
        held[2 * i + 1] = hex(json_array_get(list, i), "psk");
        psks[i] = (struct msv_mls_external_psk){held[2 * i].p, held[2 * i].n, held[2 * i + 1].p,
                                                held[2 * i + 1].n};
    }
    ok = ok &&
         msv_mls_welcome_decrypt(suite, w.p, w.n, kp.p, kp.n, init.p, psks, n, joiner, psk_secret,
                                 path, &has_path, &gi, &gi_len) == MSV_OK &&
         join_checks(tc, suite, gi, gi_len, joiner, psk_secret);
    /* without the PSKs it names, the Welcome does not open */
    if (ok && n > 0) {
        uint8_t *gi2 = NULL;
        size_t gi2_len = 0;

        ok = msv_mls_welcome_decrypt(suite, w.p, w.n, kp.p, kp.n, init.p, psks, n - 1, joiner,
                                     psk_secret, path, &has_path, &gi2, &gi2_len) != MSV_OK;
        free(gi2);
    }
    if (!ok)
        complain(file, idx, "join");
    sodium_memzero(joiner, sizeof(joiner));
    sodium_memzero(psk_secret, sizeof(psk_secret));
    for (size_t i = 0; held != NULL && i < 2 * n; i++)
        free(held[i].p);
    free(held);
    free(psks);
    free(gi);
    free(w.p);
    free(kp.p);
    free(init.p);
    return ok;
}

/* ---- passive-client-handling-commit, passive-client-random ---- */

static int follow_epoch(struct msv_mls_member *m, json_t *e)
{
    json_t *props = json_object_get(e, "proposals");
    size_t n = json_array_size(props);
    struct bytes *p = calloc(n + 1, sizeof(*p)), commit = hex(e, "commit");
    const uint8_t **msgs = calloc(n + 1, sizeof(*msgs));
    size_t *lens = calloc(n + 1, sizeof(*lens));
    int ok = p != NULL && msgs != NULL && lens != NULL;

    for (size_t i = 0; ok && i < n; i++) {
        p[i] = hex_of(json_array_get(props, i), "proposals");
        msgs[i] = p[i].p;
        lens[i] = p[i].n;
    }
    /* our keys spoiled, the commit fails once its path is merged (when it has one for us);
     * that changes nothing, so with the keys back it goes through */
    if (ok) {
        struct msv_mls_node_key keys[MSV_MLS_MEMBER_KEYS];
        msv_err err;

        memcpy(keys, m->keys, sizeof(keys));
        for (size_t i = 0; i < m->n_keys; i++)
            m->keys[i].sk[1] ^= 1; /* X25519 clamps the low bits of byte 0: not those */
        err = msv_mls_member_commit(m, msgs, lens, n, commit.p, commit.n);
        if (err != MSV_OK) {
            memcpy(m->keys, keys, sizeof(keys));
            err = msv_mls_member_commit(m, msgs, lens, n, commit.p, commit.n);
        }
        sodium_memzero(keys, sizeof(keys));
        if (err != MSV_OK)
            fprintf(stderr, "  commit refused: %s\n", msv_strerror(err));
        ok = err == MSV_OK;
    }
    ok = ok && matches(e, "epoch_authenticator", m->s.epoch_authenticator, MSV_MLS_NH);
    for (size_t i = 0; p != NULL && i < n; i++)
        free(p[i].p);
    free(p);
    free(msgs);
    free(lens);
    free(commit.p);
    return ok;
}

/* The external PSKs of a case (held: their bytes, freed by the caller). */
static struct msv_mls_external_psk *case_psks(json_t *tc, struct bytes **held, size_t *n)
{
    json_t *list = json_object_get(tc, "external_psks");
    struct msv_mls_external_psk *psks;

    *n = json_array_size(list);
    psks = calloc(*n + 1, sizeof(*psks));
    *held = calloc(2 * *n + 1, sizeof(**held));
    if (psks == NULL || *held == NULL)
        exit(2);
    for (size_t i = 0; i < *n; i++) {
        (*held)[2 * i] = hex(json_array_get(list, i), "psk_id");
        (*held)[2 * i + 1] = hex(json_array_get(list, i), "psk");
        psks[i] = (struct msv_mls_external_psk){(*held)[2 * i].p, (*held)[2 * i].n,
                                                (*held)[2 * i + 1].p, (*held)[2 * i + 1].n};
    }
    return psks;
}

static struct msv_mls_member *case_join(json_t *tc, const struct msv_mls_external_psk *psks,
                                        size_t n)
{
    enum msv_mls_suite suite = (enum msv_mls_suite)num(tc, "cipher_suite");
    struct bytes w = hex(tc, "welcome"), kp = hex(tc, "key_package"), init = hex(tc, "init_priv");
    struct bytes leaf = hex(tc, "encryption_priv"), tree = {NULL, 0};
    struct msv_mls_member *m = NULL;

    if (json_is_string(json_object_get(tc, "ratchet_tree")))
        tree = hex(tc, "ratchet_tree");
    if (init.n != 32 || leaf.n != 32 ||
        msv_mls_member_join(suite, w.p, w.n, kp.p, kp.n, init.p, leaf.p, psks, n, tree.p, tree.n,
                            &m) != MSV_OK)
        m = NULL;
    free(w.p);
    free(kp.p);
    free(init.p);
    free(leaf.p);
    free(tree.p);
    return m;
}

/*
 * The first commit refused to a fresh member: without the proposals it names
 * by reference when it names some, with a byte of its confirmation tag changed
 * otherwise.
 */
static int commit_refused(json_t *tc, const struct msv_mls_external_psk *psks, size_t n)
{
    json_t *e = json_array_get(json_object_get(tc, "epochs"), 0);
    struct msv_mls_member *m = case_join(tc, psks, n);
    struct bytes commit = hex(e, "commit");
    int ok = m != NULL && commit.n > 40;

    size_t held = m != NULL ? m->n_held : 0;

    if (ok && json_array_size(json_object_get(e, "proposals")) > 0) {
        ok = msv_mls_member_commit(m, NULL, NULL, 0, commit.p, commit.n) == MSV_ERR_NOT_FOUND;
    } else if (ok) {
        commit.p[commit.n - 40] ^= 1; /* in the confirmation tag, under the membership tag */
        ok = msv_mls_member_commit(m, NULL, NULL, 0, commit.p, commit.n) == MSV_ERR_AUTH;
    }
    /* and it keeps no copy of what it refused (a flood of them costs nothing lasting) */
    ok = ok && m->n_held == held;
    msv_mls_member_free(m);
    free(commit.p);
    return ok;
}

static int passive_follow_case(const char *file, size_t idx, json_t *tc)
{
    json_t *epochs = json_object_get(tc, "epochs");
    struct bytes *held = NULL;
    size_t n = 0;
    struct msv_mls_external_psk *psks = case_psks(tc, &held, &n);
    struct msv_mls_member *m = case_join(tc, psks, n);
    int ok = m != NULL &&
             matches(tc, "initial_epoch_authenticator", m->s.epoch_authenticator, MSV_MLS_NH);

    if (!ok)
        complain(file, idx, "join");
    for (size_t i = 0; ok && i < json_array_size(epochs); i++) {
        ok = follow_epoch(m, json_array_get(epochs, i));
        if (!ok) {
            char what[64];

            snprintf(what, sizeof(what), "epoch %zu", i);
            complain(file, idx, what);
        }
    }
    /* after its commits the member holds one copy of its tree, however many it followed */
    if (ok && json_array_size(epochs) > 0 && !(ok = m->n_held == 1))
        complain(file, idx, "copies kept");
    if (ok && json_array_size(epochs) > 0 && !(ok = commit_refused(tc, psks, n)))
        complain(file, idx, "a bad commit was taken");
    msv_mls_member_free(m);
    for (size_t i = 0; i < 2 * n; i++)
        free(held[i].p);
    free(held);
    free(psks);
    return ok;
}

/* ---- the files ---- */

typedef int (*case_fn)(const char *file, size_t idx, json_t *tc);

/* Runs fn on every case of suites 1 and 3 (or every case, for files without suites). */
static void run_file(const char *name, const char *title, case_fn fn)
{
    char path[512];
    json_error_t error;
    json_t *root;
    size_t passed = 0, total = 0;

    snprintf(path, sizeof(path), "%s/%s.json", MSV_VECTOR_DIR, name);
    root = json_load_file(path, 0, &error);
    if (!json_is_array(root)) {
        fprintf(stderr, "cannot load %s: %s\n", path, error.text);
        failures++;
        json_decref(root);
        return;
    }
    for (size_t i = 0; i < json_array_size(root); i++) {
        json_t *tc = json_array_get(root, i), *suite = json_object_get(tc, "cipher_suite");

        if (suite != NULL && !msv_mls_suite_is_supported((uint16_t)json_integer_value(suite)))
            continue;
        total++;
        if (fn(name, i, tc))
            passed++;
    }
    printf("%s: %zu/%zu\n", title, passed, total);
    if (passed != total || total == 0)
        failures++;
    json_decref(root);
}

int main(void)
{
    if (msv_init() != MSV_OK)
        return 2;
    run_file("mls/tree-math", "tree-math", tree_math_case);
    run_file("mls/crypto-basics", "crypto-basics", crypto_basics_case);
    run_file("mls/secret-tree", "secret-tree", secret_tree_case);
    run_file("mls/key-schedule", "key-schedule", key_schedule_case);
    run_file("mls/psk_secret", "psk_secret", psk_secret_case);
    run_file("mls/transcript-hashes", "transcript-hashes", transcript_case);
    run_file("mls/message-protection", "message-protection", message_protection_case);
    run_file("mls/deserialization", "deserialization", deserialization_case);
    run_file("mls/tree-validation", "tree-validation", tree_validation_case);
    run_file("mls/tree-operations", "tree-operations", tree_operations_case);
    run_file("mls/treekem", "treekem", treekem_case);
    run_file("mls/welcome", "welcome", welcome_case);
    run_file("mls/passive-client-welcome", "passive-client-welcome", passive_welcome_case);
    run_file("mls/passive-client-handling-commit", "passive-client-handling-commit",
             passive_follow_case);
    run_file("mls/passive-client-random", "passive-client-random", passive_follow_case);
    run_file("mls/messages", "messages (structure)", messages_case);
    run_codec();
    run_file("hpke/rfc9180_base", "hpke (RFC 9180 A.1.1, A.2.1)", hpke_case);
    run_file("mls/message-protection", "message-protection (refusals)", framing_refusals_case);
    return failures == 0 ? 0 : 1;
}
