/*
 * missive-bench: Missive's performance, measured against peers and limits in
 * the same run (bench/README.md). Each figure is a median of several runs, and
 * the systems compared alternate within every run.
 *
 *   crypto   B1: sealing per recipient device, for each suite, 256 B and 16 KiB,
 *            1/2/5/10 devices, as a ratio to the sum of the suite's primitives
 *            measured one by one in the same run (goal: at most 1.2);
 *            ML-KEM-768 key generation, encapsulation and decapsulation beside
 *            X25519's key generation and agreement; and VRF prove and verify
 *            beside Ed25519 sign and verify.
 *   relay    B2: one-to-one messages over 1,000 and 10,000 connections, against
 *            Mosquitto at QoS 1 (apps/bench/net.c, as are the rest).
 *   fanout   B3: server cost per device copy, 1..10 devices and a group; and an MLS
 *            message copied by the delivery service to groups of 10..5,000 devices.
 *   mls      B3's MLS side: commits and messages in a group of 2..10,000 devices
 *            (apps/bench/mls.c).
 *   idle     B4: memory per idle TLS connection.
 *   queue    B5: offline queues filled, then drained.
 *   storage  B6: directory lookups; attachment transfers against nginx.
 *   keydir   B9: the key directory's prefix tree at 10^3, 10^5 and 10^6 entries
 *            (apps/bench/keydir.c).
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <ftw.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <sodium.h>

#include "bench/bench.h"
#include "crypto/internal.h"
#include "missive/crypto.h"
#include "missive/mlkem.h"
#include "missive/ratchet.h"
#include "missive/sealed.h"
#include "missive/vrf.h"
#include "missive/util.h"

#define DEVICES_MAX 10

double now_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;

    return (x > y) - (x < y);
}

/* A timed operation: runs it once, returns 0 on success. */
typedef int (*op_fn)(void *ctx);

/* Time per call over one run of about slice seconds. */
static double measure_once(const struct opts *o, op_fn op, void *ctx)
{
    double start = now_s(), elapsed;
    long n = 0;

    do {
        if (op(ctx) != 0) {
            fprintf(stderr, "missive-bench: an operation failed\n");
            exit(1);
        }
        n++;
        elapsed = now_s() - start;
    } while (elapsed < o->slice);
    return elapsed / (double)n;
}

void sort_doubles(double *v, size_t n)
{
    qsort(v, n, sizeof(v[0]), cmp_double);
}

double median(double *v, int n)
{
    sort_doubles(v, (size_t)n);
    return v[n / 2];
}

double quantile_sorted(const double *v, size_t n, double q)
{
    size_t i;

    if (n == 0)
        return 0;
    i = (size_t)(q * (double)(n - 1) + 0.5);
    return v[i < n ? i : n - 1];
}

/* ---- B1: per-device sealing against its primitives ------------------------------------- */

struct seal_ctx {
    struct msv_identity *sender;
    struct msv_identity *devices[DEVICES_MAX];
    size_t n;
    uint8_t *pt;
    size_t len;
};

static int op_seal(void *arg)
{
    struct seal_ctx *c = arg;

    for (size_t i = 0; i < c->n; i++) {
        uint8_t *wire = NULL;
        size_t wire_len = 0;

        if (msv_seal(c->sender, msv_identity_public(c->devices[i]), c->pt, c->len, &wire,
                     &wire_len) != MSV_OK)
            return 1;
        free(wire);
    }
    return 0;
}

/* The primitives of one envelope, each alone. */
struct prim_ctx {
    struct seal_ctx *s;
    uint8_t buf[16384 + 512];
    uint8_t key[32];
};

static int op_ecdsa_sha1(void *arg)
{
    struct prim_ctx *p = arg;
    const uint8_t *parts[1] = {p->buf};
    size_t lens[1] = {p->s->len + 160 - (p->s->len < 100 ? p->s->len : 100)}, sig_len = 0;
    uint8_t sig[72];

    return msv_ecdsa_sign(p->s->sender->sign_sk, EVP_sha1(), parts, lens, 1, sig, &sig_len) !=
           MSV_OK;
}

static int op_ecdsa_sha256(void *arg)
{
    struct prim_ctx *p = arg;
    const uint8_t *parts[1] = {p->buf};
    size_t lens[1] = {32 + 65 + 65 + 32 + p->s->len}, sig_len = 0;
    uint8_t sig[72];

    return msv_ecdsa_sign(p->s->sender->sign_sk, EVP_sha256(), parts, lens, 1, sig, &sig_len) !=
           MSV_OK;
}

static int op_rsa_oaep(void *arg)
{
    struct prim_ctx *p = arg;
    uint8_t out[512];

    /* the RSA block carries the 16-byte key and the first 100 ciphertext bytes */
    return msv_rsa_oaep_sha1_encrypt(p->s->devices[0]->pub->rsa_pk, p->buf, 116, &msv_rng_system,
                                     out) != MSV_OK;
}

static int op_aes128_ctr(void *arg)
{
    struct prim_ctx *p = arg;
    static const uint8_t iv[16];

    return msv_aes_ctr(p->key, 16, iv, p->s->pt, p->s->len, p->buf) != MSV_OK;
}

static int op_aes256_ctr(void *arg)
{
    struct prim_ctx *p = arg;
    static const uint8_t iv[16];

    return msv_aes_ctr(p->key, 32, iv, p->s->pt, p->s->len, p->buf) != MSV_OK;
}

static int op_hmac(void *arg)
{
    struct prim_ctx *p = arg;
    const uint8_t *parts[1] = {p->s->pt};
    size_t lens[1] = {p->s->len + 65};
    uint8_t mac[32];

    return msv_hmac_sha256_parts(p->key, 11, parts, lens, 1, mac) != MSV_OK;
}

static int op_p256_keygen(void *arg)
{
    struct prim_ctx *p = arg;
    uint8_t scalar[32], point[65];
    EVP_PKEY *k = NULL;
    int bad;

    (void)p;
    bad = msv_p256_random_scalar(&msv_rng_system, scalar) != MSV_OK ||
          msv_p256_from_scalar(scalar, &k, point) != MSV_OK;
    EVP_PKEY_free(k);
    return bad;
}

static int op_p256_ecdh(void *arg)
{
    struct prim_ctx *p = arg;
    uint8_t z[32];

    return msv_p256_ecdh(p->s->sender->sign_sk, p->s->devices[0]->pub->prekey_pk, z) != MSV_OK;
}

static int op_hkdf(void *arg)
{
    struct prim_ctx *p = arg;
    uint8_t okm[48];

    return msv_hkdf_sha256(p->key, 32, (const uint8_t *)"salt", 4, p->buf, 64, okm, 48) != MSV_OK;
}

static int op_x25519_pair(void *arg)
{
    struct prim_ctx *p = arg;
    uint8_t pk[32], shared[32];

    /* one fixed-base and one variable-base multiplication, as an envelope does */
    return crypto_scalarmult_base(pk, p->key) != 0 ||
           crypto_scalarmult(shared, p->key, p->s->devices[0]->pub->x_pk) != 0;
}

static int op_ed25519(void *arg)
{
    struct prim_ctx *p = arg;
    uint8_t sig[64];

    return crypto_sign_detached(sig, NULL, p->buf, 17 + 32 + 32 + p->s->len,
                                p->s->sender->modern->ed_sk) != 0;
}

static int op_xchacha(void *arg)
{
    struct prim_ctx *p = arg;
    static uint8_t out[16384 + 64 + 16 + 64], nonce[24];
    unsigned long long out_len = 0;

    return crypto_aead_xchacha20poly1305_ietf_encrypt(out, &out_len, p->buf, 64 + p->s->len, p->buf,
                                                      33, NULL, nonce, p->key) != 0;
}

/* The primitives each suite's envelope consists of. */
static const struct {
    enum msv_suite suite;
    op_fn ops[6];
    const char *names;
} recipes[] = {
    {MSV_SUITE_CLASSIC,
     {op_hmac, op_aes128_ctr, op_rsa_oaep, op_ecdsa_sha1},
     "HMAC-SHA256 + AES-128-CTR + RSA-OAEP + ECDSA(SHA-1)"},
    {MSV_SUITE_ECIES,
     {op_p256_keygen, op_p256_ecdh, op_hkdf, op_aes256_ctr, op_ecdsa_sha256},
     "P-256 keygen + ECDH + HKDF + AES-256-CTR + ECDSA(SHA-256)"},
    {MSV_SUITE_MODERN,
     {op_x25519_pair, op_hkdf, op_ed25519, op_xchacha},
     "2 x X25519 + HKDF + Ed25519 + XChaCha20-Poly1305"},
};

/* ML-KEM-768 beside X25519: the keys and ciphertext of one operation feed the next. */
struct kem_ctx {
    uint8_t ek[MSV_MLKEM768_EK_LEN], dk[MSV_MLKEM768_DK_LEN], ct[MSV_MLKEM768_CT_LEN];
    uint8_t ss[MSV_MLKEM768_SS_LEN], x_sk[32], x_pk[32], x_peer[32];
};

static int op_mlkem_keygen(void *arg)
{
    struct kem_ctx *k = arg;

    return msv_mlkem768_keygen(k->ek, k->dk) != MSV_OK;
}

static int op_mlkem_encaps(void *arg)
{
    struct kem_ctx *k = arg;

    return msv_mlkem768_encaps(k->ek, sizeof(k->ek), k->ct, k->ss) != MSV_OK;
}

static int op_mlkem_decaps(void *arg)
{
    struct kem_ctx *k = arg;

    return msv_mlkem768_decaps(k->dk, sizeof(k->dk), k->ct, sizeof(k->ct), k->ss) != MSV_OK;
}

static int op_x25519_keygen(void *arg)
{
    struct kem_ctx *k = arg;

    msv_random_bytes(k->x_sk, sizeof(k->x_sk));
    return crypto_scalarmult_base(k->x_pk, k->x_sk) != 0;
}

static int op_x25519_agree(void *arg)
{
    struct kem_ctx *k = arg;

    return crypto_scalarmult(k->ss, k->x_sk, k->x_peer) != 0;
}

static int bench_kem(const struct opts *o, FILE *out)
{
    static const struct {
        const char *name;
        op_fn op;
    } ops[] = {
        {"ML-KEM-768 key generation", op_mlkem_keygen},
        {"ML-KEM-768 encapsulation", op_mlkem_encaps},
        {"ML-KEM-768 decapsulation", op_mlkem_decaps},
        {"X25519 key generation (fixed base)", op_x25519_keygen},
        {"X25519 agreement (variable base)", op_x25519_agree},
    };
    enum { N_OPS = sizeof(ops) / sizeof(ops[0]) };
    double t[N_OPS][32];
    int runs = o->runs < 32 ? o->runs : 32;
    struct kem_ctx *k = sodium_malloc(sizeof(*k));

    if (k == NULL || op_mlkem_keygen(k) != 0 || op_mlkem_encaps(k) != 0 || op_x25519_keygen(k) != 0)
        return 1;
    memcpy(k->x_peer, k->x_pk, sizeof(k->x_peer));
    /* the operations alternate within every run, as the suites and their primitives do */
    for (int r = 0; r < runs; r++) {
        for (size_t i = 0; i < N_OPS; i++)
            t[i][r] = measure_once(o, ops[i].op, k);
    }
    fprintf(out, "### B1: ML-KEM-768 beside X25519, per operation\n\n"
                 "| operation | µs (median) |\n|---|---|\n");
    for (size_t i = 0; i < N_OPS; i++) {
        t[i][0] = median(t[i], runs);
        fprintf(out, "| %s | %.1f |\n", ops[i].name, t[i][0] * 1e6);
    }
    /* the reference figures are cycles on another CPU: compare the shape, not the time */
    fprintf(out,
            "\nPublished figures for the reference implementation (PQClean's \"clean\" C code of "
            "ML-KEM-768, from the standard's reference implementation): 988,722 cycles for key "
            "generation, 1,138,225 for encapsulation, 1,387,984 for decapsulation, on an ARM "
            "Cortex-M4 (NUCLEO-L4R5ZI at 24 MHz; mupq/pqm4, benchmarks.md of 2025-05-22). "
            "Encapsulation and decapsulation take %.2f and %.2f times key generation there, "
            "%.2f and %.2f here.\n\n",
            1138225.0 / 988722.0, 1387984.0 / 988722.0, t[1][0] / t[0][0], t[2][0] / t[0][0]);
    sodium_free(k);
    return 0;
}

/* Session starts: both ends of X3DH, classical and hybrid (docs/crypto.md). */
struct start_ctx {
    struct msv_identity *a, *b;
    struct msv_prekey spk, opk;
    struct msv_kem_prekey *kem;
    struct msv_prekey_bundle *bundle;
    size_t first_len;
};

static int start_session(struct start_ctx *x, struct msv_session **sa, struct msv_session **sb)
{
    uint8_t *wire = NULL, *pt = NULL;
    size_t len = 0, pt_len = 0;
    int bad = msv_session_initiate(x->a, msv_identity_public(x->b), x->bundle, sa) != MSV_OK ||
              msv_session_encrypt(*sa, (const uint8_t *)"hello", 5, &wire, &len) != MSV_OK ||
              msv_session_respond(x->b, msv_identity_public(x->a), &x->spk, &x->opk, x->kem, wire,
                                  len, sb, &pt, &pt_len) != MSV_OK;

    x->first_len = len;
    free(wire);
    msv_secret_free(pt, pt_len);
    return bad;
}

static int op_session_start(void *arg)
{
    struct msv_session *sa = NULL, *sb = NULL;
    int bad = start_session(arg, &sa, &sb);

    msv_session_free(sa);
    msv_session_free(sb);
    return bad;
}

/* Two devices (post-quantum ones if pq) and b's prekeys in x. */
static int start_setup(struct start_ctx *x, int pq)
{
    unsigned also = pq ? MSV_IDENTITY_PQ : 0;

    x->bundle = calloc(1, sizeof(*x->bundle));
    x->kem = pq ? sodium_malloc(sizeof(*x->kem)) : NULL;
    if (x->bundle == NULL || (pq && x->kem == NULL) ||
        msv_identity_generate_suites(MSV_SUITE_MODERN, also, 0, &x->a) != MSV_OK ||
        msv_identity_generate_suites(MSV_SUITE_MODERN, also, 0, &x->b) != MSV_OK ||
        msv_prekey_generate(x->b, 1, &x->spk, x->bundle->signed_sig) != MSV_OK ||
        msv_prekey_generate(x->b, 2, &x->opk, NULL) != MSV_OK)
        return 1;
    x->bundle->signed_id = 1;
    memcpy(x->bundle->signed_pk, x->spk.pk, 32);
    x->bundle->one_time_id = 2;
    memcpy(x->bundle->one_time_pk, x->opk.pk, 32);
    if (!pq)
        return 0;
    x->bundle->has_kem = 1;
    x->bundle->kem_id = 3;
    if (msv_kem_prekey_generate(x->b, 3, 0, x->kem, x->bundle->kem_sig) != MSV_OK)
        return 1;
    memcpy(x->bundle->kem_pk, x->kem->ek, sizeof(x->bundle->kem_pk));
    return 0;
}

static void start_free(struct start_ctx *x)
{
    msv_identity_free(x->a);
    msv_identity_free(x->b);
    if (x->kem != NULL)
        sodium_free(x->kem);
    free(x->bundle);
}

/*
 * Bytes on the wire per message over 1,000 messages of 100 bytes, the two
 * devices taking turns in bursts of 1 to 9 (a fixed sequence): the session's
 * first messages carry the prefix until the other side answers.
 */
static int wire_bytes(struct start_ctx *x, double *avg)
{
    struct msv_session *sa = NULL, *sb = NULL;
    uint8_t msg[100] = {0};
    uint64_t total = 0;
    int bad = start_session(x, &sa, &sb), from_a = 0;
    size_t sent = 1;

    total = x->first_len + sizeof(msg) - 5;
    for (uint32_t burst = 1; !bad && sent < 1000; burst = burst * 7 % 10 + 1) {
        for (uint32_t i = 0; i < burst && sent < 1000 && !bad; i++, sent++) {
            uint8_t *wire = NULL, *pt = NULL;
            size_t len = 0, pt_len = 0;

            bad = msv_session_encrypt(from_a ? sa : sb, msg, sizeof(msg), &wire, &len) != MSV_OK ||
                  msv_session_decrypt(from_a ? sb : sa, wire, len, &pt, &pt_len) != MSV_OK;
            total += len;
            free(wire);
            msv_secret_free(pt, pt_len);
        }
        from_a = !from_a;
    }
    *avg = (double)total / 1000.0;
    msv_session_free(sa);
    msv_session_free(sb);
    return bad;
}

/* An established session's two ends; one round trip (a DH step each way) per operation. */
struct round_ctx {
    struct msv_session *sa, *sb;
};

static int one_way(struct msv_session *from, struct msv_session *to)
{
    uint8_t msg[100] = {0}, *wire = NULL, *pt = NULL;
    size_t len = 0, pt_len = 0;
    int bad = msv_session_encrypt(from, msg, sizeof(msg), &wire, &len) != MSV_OK ||
              msv_session_decrypt(to, wire, len, &pt, &pt_len) != MSV_OK;

    free(wire);
    msv_secret_free(pt, pt_len);
    return bad;
}

/* For the post-quantum ratchet this includes its KEM steps, one each way per 50 round trips. */
static int op_round_trip(void *arg)
{
    struct round_ctx *r = arg;

    return one_way(r->sa, r->sb) || one_way(r->sb, r->sa);
}

/*
 * A ratchet round trip, classical and post-quantum (docs/crypto.md, "The
 * post-quantum ratchet"): the post-quantum one averaged over its KEM steps,
 * and one round trip that carries a whole step (key, ciphertext, mix) on its own.
 */
static int bench_ratchet_step(const struct opts *o, FILE *out, struct start_ctx x[2])
{
    struct round_ctx r[2] = {0};
    double t[2][32], kem_step[32];
    int runs = o->runs < 32 ? o->runs : 32, bad = 0;

    for (int k = 0; k < 2 && !bad; k++)
        bad = start_session(&x[k], &r[k].sa, &r[k].sb) || one_way(r[k].sb, r[k].sa);
    for (int i = 0; i < runs && !bad; i++) {
        for (int k = 0; k < 2; k++)
            t[k][i] = measure_once(o, op_round_trip, &r[k]);
        /* a fresh pair's 50th round trip brings a's offer, the next two its ciphertext and mix */
        {
            struct round_ctx p = {0};
            double start;

            bad = start_session(&x[1], &p.sa, &p.sb) || one_way(p.sb, p.sa);
            for (int j = 0; j < 49 && !bad; j++)
                bad = op_round_trip(&p);
            start = now_s();
            for (int j = 0; j < 3 && !bad; j++)
                bad = op_round_trip(&p);
            kem_step[i] = now_s() - start;
            if (!bad && msv_session_pq_steps(p.sa) < 1)
                bad = 1;
            msv_session_free(p.sa);
            msv_session_free(p.sb);
        }
    }
    if (!bad) {
        t[0][0] = median(t[0], runs);
        t[1][0] = median(t[1], runs);
        kem_step[0] = median(kem_step, runs);
        fprintf(out,
                "### B1: a ratchet round trip, classical and post-quantum\n\n"
                "One 100 B message each way on an established session (a DH step each way); "
                "the post-quantum ratchet averaged over its KEM steps (one each way per 50 "
                "messages a party sends).\n\n"
                "| ratchet | µs per round trip (median) |\n|---|---|\n"
                "| classical | %.1f |\n| post-quantum, averaged | %.1f |\n"
                "| post-quantum, the 3 round trips that carry one KEM step | %.1f |\n\n"
                "Post-quantum/classical round trip, averaged: %.2f\n\n",
                t[0][0] * 1e6, t[1][0] * 1e6, kem_step[0] * 1e6, t[1][0] / t[0][0]);
    }
    for (int k = 0; k < 2; k++) {
        msv_session_free(r[k].sa);
        msv_session_free(r[k].sb);
    }
    return bad;
}

static int bench_session_start(const struct opts *o, FILE *out)
{
    struct start_ctx x[2];
    double t[2][32], bytes[2];
    int runs = o->runs < 32 ? o->runs : 32, bad = 0;

    memset(x, 0, sizeof(x));
    for (int k = 0; k < 2 && !bad; k++)
        bad = start_setup(&x[k], k) || op_session_start(&x[k]) || wire_bytes(&x[k], &bytes[k]);
    for (int r = 0; r < runs && !bad; r++) {
        for (int k = 0; k < 2; k++)
            t[k][r] = measure_once(o, op_session_start, &x[k]);
    }
    if (!bad) {
        t[0][0] = median(t[0], runs);
        t[1][0] = median(t[1], runs);
        fprintf(out,
                "### B1: session start, classical (X3DH) and hybrid (X3DH + ML-KEM-768)\n\n"
                "Both ends: the initiator's X3DH (and encapsulation, after checking the KEM "
                "prekey's signature), its first message, the responder's answer.\n\n"
                "| session | µs (median) | first message, bytes | bytes per message, 1,000 "
                "messages of 100 B |\n|---|---|---|---|\n"
                "| classical | %.1f | %zu | %.1f |\n| hybrid | %.1f | %zu | %.1f |\n\n"
                "Hybrid/classical session start: %.2f\n"
                "Hybrid minus classical, bytes per message: %.1f\n\n",
                t[0][0] * 1e6, x[0].first_len, bytes[0], t[1][0] * 1e6, x[1].first_len, bytes[1],
                t[1][0] / t[0][0], bytes[1] - bytes[0]);
    }
    if (!bad)
        bad = bench_ratchet_step(o, out, x);
    start_free(&x[0]);
    start_free(&x[1]);
    return bad;
}

/* Sealed sender's outer layer to one device, classical (0x07) and hybrid (0x09). */
struct sealed_bench {
    struct msv_identity *sender, *recipient;
    struct msv_kem_prekey *kem; /* the recipient's last-resort one (hybrid) */
    struct msv_sealing_key key;
    uint8_t inner[200], *wire;
    size_t wire_len;
};

static int op_sealed_wrap(void *arg)
{
    struct sealed_bench *b = arg;
    const struct msv_public_identity *r = msv_identity_public(b->recipient);
    msv_err err;

    free(b->wire);
    b->wire = NULL;
    err = b->kem != NULL ? msv_sealed_wrap_pq(b->sender, r, &b->key, "alice@example.org", 7,
                                              b->inner, sizeof(b->inner), &b->wire, &b->wire_len)
                         : msv_sealed_wrap(b->sender, r, "alice@example.org", 7, b->inner,
                                           sizeof(b->inner), &b->wire, &b->wire_len);
    return err != MSV_OK;
}

/* Both layers, as a recipient reads them. */
static int op_sealed_open(void *arg)
{
    struct sealed_bench *b = arg;
    const struct msv_public_identity *s = msv_identity_public(b->sender);
    char handle[256];
    uint64_t device = 0;
    uint8_t *env = NULL, ss[32];
    size_t len = 0;
    msv_err err;

    if (b->kem != NULL)
        err = msv_sealed_sender_pq(b->recipient, b->kem->dk, b->wire, b->wire_len, handle, &device,
                                   ss);
    else
        err = msv_sealed_sender(b->recipient, b->wire, b->wire_len, handle, &device);
    if (err == MSV_OK && b->kem != NULL)
        err =
            msv_sealed_unwrap_pq(b->recipient, b->kem->dk, ss, s, b->wire, b->wire_len, &env, &len);
    else if (err == MSV_OK)
        err = msv_sealed_unwrap(b->recipient, s, b->wire, b->wire_len, &env, &len);
    free(env);
    sodium_memzero(ss, sizeof(ss));
    return err != MSV_OK;
}

static int sealed_setup(struct sealed_bench *b, int pq)
{
    unsigned also = pq ? MSV_IDENTITY_PQ : 0;
    uint8_t sig[64];

    memset(b, 0, sizeof(*b));
    if (msv_identity_generate_suites(MSV_SUITE_MODERN, also, 0, &b->sender) != MSV_OK ||
        msv_identity_generate_suites(MSV_SUITE_MODERN, also, 0, &b->recipient) != MSV_OK)
        return 1;
    msv_random_bytes(b->inner, sizeof(b->inner));
    if (pq) {
        b->kem = sodium_malloc(sizeof(*b->kem));
        if (b->kem == NULL || msv_kem_prekey_generate(b->recipient, 1, 1, b->kem, sig) != MSV_OK)
            return 1;
        b->key.id = 1;
        memcpy(b->key.ek, b->kem->ek, sizeof(b->key.ek));
    }
    return op_sealed_wrap(b);
}

static void sealed_free(struct sealed_bench *b)
{
    msv_identity_free(b->sender);
    msv_identity_free(b->recipient);
    if (b->kem != NULL)
        sodium_free(b->kem);
    free(b->wire);
}

static int bench_sealed(const struct opts *o, FILE *out)
{
    struct sealed_bench b[2];
    double t[4][32];
    int runs = o->runs < 32 ? o->runs : 32, bad = 0;

    if (sealed_setup(&b[0], 0) != 0 || sealed_setup(&b[1], 1) != 0)
        bad = 1;
    /* classical and hybrid alternate within every run */
    for (int k = 0; k < runs && !bad; k++) {
        for (int v = 0; v < 2; v++) {
            t[2 * v][k] = measure_once(o, op_sealed_wrap, &b[v]);
            t[2 * v + 1][k] = measure_once(o, op_sealed_open, &b[v]);
        }
    }
    if (!bad) {
        for (int i = 0; i < 4; i++)
            t[i][0] = median(t[i], runs);
        fprintf(out,
                "### B1: sealed sender's outer layer, classical (0x07) and hybrid (0x09)\n\n"
                "One device, an inner envelope of %zu B; open: both layers.\n\n"
                "| outer layer | seal µs (median) | open µs (median) | bytes added |\n"
                "|---|---|---|---|\n| classical | %.1f | %.1f | %zu |\n"
                "| hybrid | %.1f | %.1f | %zu |\n\n"
                "Hybrid/classical sealed outer layer: seal %.2f, open %.2f\n"
                "Hybrid minus classical, bytes per sealed envelope: %zu\n\n",
                sizeof(b[0].inner), t[0][0] * 1e6, t[1][0] * 1e6,
                b[0].wire_len - sizeof(b[0].inner), t[2][0] * 1e6, t[3][0] * 1e6,
                b[1].wire_len - sizeof(b[1].inner), t[2][0] / t[0][0], t[3][0] / t[1][0],
                b[1].wire_len - b[0].wire_len);
    }
    sealed_free(&b[0]);
    sealed_free(&b[1]);
    return bad;
}

/* The VRF beside Ed25519 on the same input: what a private label in the directory costs. */
struct vrf_ctx {
    enum msv_vrf_suite suite;
    uint8_t sk[MSV_VRF_SECRET_KEY_LEN], pk[MSV_VRF_PUBLIC_KEY_LEN], pi[MSV_VRF_PROOF_LEN];
    uint8_t beta[MSV_VRF_OUTPUT_LEN], ed_sk[64], ed_pk[32], sig[64];
};

static const uint8_t vrf_alpha[] = "alice@example.org";

static int op_ed_sign(void *arg)
{
    struct vrf_ctx *c = arg;

    return crypto_sign_detached(c->sig, NULL, vrf_alpha, sizeof(vrf_alpha) - 1, c->ed_sk) != 0;
}

static int op_ed_verify(void *arg)
{
    struct vrf_ctx *c = arg;

    return crypto_sign_verify_detached(c->sig, vrf_alpha, sizeof(vrf_alpha) - 1, c->ed_pk) != 0;
}

static int op_vrf_prove(void *arg)
{
    struct vrf_ctx *c = arg;

    return msv_vrf_prove(c->suite, c->sk, vrf_alpha, sizeof(vrf_alpha) - 1, c->pi) != MSV_OK;
}

static int op_vrf_verify(void *arg)
{
    struct vrf_ctx *c = arg;

    return msv_vrf_verify(c->suite, c->pk, vrf_alpha, sizeof(vrf_alpha) - 1, c->pi, c->beta) !=
           MSV_OK;
}

/* One key pair, used as Ed25519, VRF-TAI and VRF-ELL2 key alike. */
static int vrf_setup(struct vrf_ctx c[2])
{
    c[0].suite = MSV_VRF_EDWARDS25519_SHA512_TAI;
    if (msv_vrf_keygen(c[0].suite, c[0].sk, c[0].pk) != MSV_OK ||
        crypto_sign_seed_keypair(c[0].ed_pk, c[0].ed_sk, c[0].sk) != 0 || op_ed_sign(&c[0]) != 0)
        return 1;
    c[1] = c[0];
    c[1].suite = MSV_VRF_EDWARDS25519_SHA512_ELL2;
    return op_vrf_prove(&c[0]) != 0 || op_vrf_prove(&c[1]) != 0;
}

static int bench_vrf(const struct opts *o, FILE *out)
{
    static const struct {
        const char *name;
        op_fn op;
        size_t ctx;
    } ops[] = {{"Ed25519 sign", op_ed_sign, 0},       {"Ed25519 verify", op_ed_verify, 0},
               {"VRF prove (TAI)", op_vrf_prove, 0},  {"VRF verify (TAI)", op_vrf_verify, 0},
               {"VRF prove (ELL2)", op_vrf_prove, 1}, {"VRF verify (ELL2)", op_vrf_verify, 1}};
    enum { N_OPS = sizeof(ops) / sizeof(ops[0]) };
    double t[N_OPS][32];
    int runs = o->runs < 32 ? o->runs : 32;
    struct vrf_ctx c[2];

    if (vrf_setup(c) != 0)
        return 1;
    for (int k = 0; k < runs; k++) {
        for (size_t i = 0; i < N_OPS; i++)
            t[i][k] = measure_once(o, ops[i].op, &c[ops[i].ctx]);
    }
    fprintf(out,
            "VRF (RFC 9381, ECVRF-EDWARDS25519-SHA512-TAI and -ELL2) beside Ed25519, on a "
            "%zu-byte input:\n\n| operation | µs (median) |\n|---|---|\n",
            sizeof(vrf_alpha) - 1);
    for (size_t i = 0; i < N_OPS; i++)
        fprintf(out, "| %s | %.1f |\n", ops[i].name, median(t[i], runs) * 1e6);
    fprintf(out, "\n");
    sodium_memzero(c, sizeof(c));
    return 0;
}

int bench_crypto(const struct opts *o, FILE *out)
{
    static const size_t sizes[] = {256, 16384};
    static const size_t counts[] = {1, 2, 5, 10};
    double worst = 0;

    fprintf(out, "### B1: sealing per recipient device vs. its primitives\n\n"
                 "| suite | payload | devices | µs per device | primitives µs | ratio (median) |\n"
                 "|---|---|---|---|---|---|\n");
    for (size_t r = 0; r < sizeof(recipes) / sizeof(recipes[0]); r++) {
        struct seal_ctx s = {0};
        struct prim_ctx p;

        if (msv_identity_generate(recipes[r].suite, 0, &s.sender) != MSV_OK)
            return 1;
        for (size_t i = 0; i < DEVICES_MAX; i++) {
            if (msv_identity_generate(recipes[r].suite, 0, &s.devices[i]) != MSV_OK)
                return 1;
        }
        memset(&p, 0, sizeof(p));
        p.s = &s;
        msv_random_bytes(p.buf, sizeof(p.buf));
        msv_random_bytes(p.key, sizeof(p.key));
        s.pt = p.buf;
        for (size_t z = 0; z < 2; z++) {
            s.len = sizes[z];
            for (size_t c = 0; c < 4; c++) {
                double seal[32], prim[32], ratio[32];
                int runs = o->runs < 32 ? o->runs : 32;

                s.n = counts[c];
                /* the primitives and the envelopes alternate within every run, so that a
                 * change of machine speed during the benchmark moves both alike */
                for (int k = 0; k < runs; k++) {
                    prim[k] = 0;
                    for (size_t i = 0; i < 6 && recipes[r].ops[i] != NULL; i++)
                        prim[k] += measure_once(o, recipes[r].ops[i], &p);
                    seal[k] = measure_once(o, op_seal, &s) / (double)s.n;
                    ratio[k] = seal[k] / prim[k];
                }
                ratio[0] = median(ratio, runs);
                if (ratio[0] > worst)
                    worst = ratio[0];
                fprintf(out, "| %s | %zu B | %zu | %.1f | %.1f | %.2f |\n",
                        msv_suite_name(recipes[r].suite), sizes[z], s.n, median(seal, runs) * 1e6,
                        median(prim, runs) * 1e6, ratio[0]);
            }
        }
        msv_identity_free(s.sender);
        for (size_t i = 0; i < DEVICES_MAX; i++)
            msv_identity_free(s.devices[i]);
    }
    fprintf(out, "\nPrimitives per suite: ");
    for (size_t r = 0; r < sizeof(recipes) / sizeof(recipes[0]); r++)
        fprintf(out, "%s%s: %s", r ? "; " : "", msv_suite_name(recipes[r].suite), recipes[r].names);
    fprintf(out, ".\nWorst ratio: %.2f (goal: at most 1.2).\n\n", worst);
    if (bench_session_start(o, out) != 0)
        return 1;
    if (bench_sealed(o, out) != 0)
        return 1;
    if (bench_kem(o, out) != 0)
        return 1;
    return bench_vrf(o, out);
}

static const struct command {
    const char *name;
    int (*run)(const struct opts *o, FILE *out);
} commands[] = {
    {"crypto", bench_crypto},   {"relay", bench_relay},     {"fanout", bench_fanout},
    {"mls", bench_mls},         {"idle", bench_idle},       {"queue", bench_queue},
    {"storage", bench_storage}, {"cluster", bench_cluster}, {"xmpp", bench_xmpp},
    {"keydir", bench_keydir},
};

static void usage(FILE *f)
{
    fprintf(f, "usage: missive-bench [options] all|crypto|relay|fanout|mls|idle|queue|storage|"
               "cluster|xmpp|keydir...\n\n"
               "Measures Missive against peers and limits in the same run and prints Markdown\n"
               "tables (bench/README.md says what each benchmark measures; bench/run.sh runs\n"
               "them all and writes bench/RESULTS.md).\n\n"
               "  crypto   B1: sealing per recipient device vs. the sum of its primitives;\n"
               "           hybrid and classical session starts, ratchet round trips\n"
               "           and sealed outer layers;\n"
               "           ML-KEM-768 beside X25519\n"
               "  relay    B2: one-to-one relay at 1,000 and 10,000 connections vs. Mosquitto\n"
               "  fanout   B3: server cost per device copy (1..10 devices, a group of 32 x 3),\n"
               "           and per copy of an MLS message to groups of 10..5,000 devices\n"
               "  mls      B3's MLS side: commit sizes and times, message cost, in a group\n"
               "           of 2, 10, 100, 1,000, 5,000 and 10,000 devices (in this process)\n"
               "  idle     B4: memory per idle TLS connection (10,000 and 50,000)\n"
               "  queue    B5: 1,000 offline devices x 100 envelopes, then all reconnect\n"
               "  storage  B6: directory lookups/s; attachment MB/s vs. nginx\n"
               "  cluster  B7: 1, 2 and 3 relay nodes on PostgreSQL and Redis (run it under\n"
               "           scripts/services.sh --durable, which starts both)\n"
               "  xmpp     B8: B2's load against ejabberd and Prosody beside missived and\n"
               "           Mosquitto: CPU per message, memory per idle connection, latency\n"
               "  keydir   B9: the key directory's prefix tree: proof sizes, verification,\n"
               "           epochs and audits at 10^3, 10^5 and 10^6 entries\n"
               "  all      every one of them, in that order\n\n"
               "options:\n"
               "  --quick          tiny sizes and short windows: a smoke test, not a result\n"
               "  --runs N         medians over N runs (default 7 for crypto; servers: 3)\n"
               "  --window SEC     length of each server measurement (default 5)\n"
               "  --connections N  relay and xmpp: N connections only (even; default:\n"
               "                   1,000 then 10,000)\n"
               "  --bin DIR        where missived is (default: next to missive-bench)\n"
               "  --server-cpu N   core for the servers (default 1; -1: not pinned)\n"
               "  --loader-cpu N   core for this process (default 0; -1: not pinned)\n"
               "  -h, --help       this text\n\n"
               "Mosquitto, nginx, ejabberd and Prosody are used when installed\n"
               "(scripts/deps.sh --bench);\n"
               "without them their columns say so. Servers bind to 127.0.0.1 only and are\n"
               "stopped before missive-bench exits, also when it is interrupted.\n");
}

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

/*
 * A helper process removes the scratch directory once missive-bench is gone,
 * however it ends (done, error, signal, SIGKILL): it waits for the end of a
 * pipe that only missive-bench holds open. The servers die with missive-bench
 * too (PR_SET_PDEATHSIG), so an interrupted run leaves nothing behind.
 */
static int remove_when_gone(const char *dir)
{
    int p[2];
    pid_t pid;

    if (pipe2(p, O_CLOEXEC) != 0) /* the servers started later do not hold it */
        return -1;
    pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        char c;

        signal(SIGINT, SIG_IGN); /* a Ctrl-C reaches the whole process group */
        signal(SIGTERM, SIG_IGN);
        close(p[1]);
        while (read(p[0], &c, 1) != 0) {
        }
        nftw(dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
        _exit(0);
    }
    close(p[0]);
    return 0; /* p[1] stays open, unused, until this process ends */
}

static void on_signal(int sig)
{
    (void)sig;
    kill_servers();
    _exit(130); /* async-signal-safe; the helper sees us go */
}

static int parse_int(const char *s, long lo, long hi, long *out)
{
    char *end;

    *out = strtol(s, &end, 10);
    return *s != '\0' && *end == '\0' && *out >= lo && *out <= hi;
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"quick", no_argument, NULL, 'q'},
        {"runs", required_argument, NULL, 'r'},
        {"window", required_argument, NULL, 'w'},
        {"bin", required_argument, NULL, 'b'},
        {"server-cpu", required_argument, NULL, 's'},
        {"loader-cpu", required_argument, NULL, 'l'},
        {"connections", required_argument, NULL, 'c'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    struct opts o = {.runs = 7, .slice = 0.05, .window = 5, .server_cpu = 1, .loader_cpu = 0};
    static char bin[1024];
    int ch, runs_set = 0, rc = 0;
    unsigned selected = 0;
    long v;
    char *end;

    opterr = 0;
    while ((ch = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        if (ch == 'q') {
            o.quick = 1;
            o.slice = 0.005;
            o.window = 0.5;
        } else if (ch == 'r' && parse_int(optarg, 1, 31, &v)) {
            o.runs = (int)v;
            runs_set = 1;
        } else if (ch == 'w' && (o.window = strtod(optarg, &end)) > 0 && *end == '\0' &&
                   o.window <= 600) {
            continue;
        } else if (ch == 'c' && parse_int(optarg, 2, 1000000, &v) && v % 2 == 0) {
            o.connections = (size_t)v;
        } else if (ch == 'b') {
            o.bin = optarg;
        } else if ((ch == 's' || ch == 'l') && parse_int(optarg, -1, 1023, &v)) {
            *(ch == 's' ? &o.server_cpu : &o.loader_cpu) = (int)v;
        } else if (ch == 'h') {
            usage(stdout);
            return 0;
        } else {
            fprintf(stderr, "missive-bench: %s%s\n",
                    ch == '?' ? "unknown option " : "bad value for ", argv[optind - 1]);
            usage(stderr);
            return 2;
        }
    }
    for (int i = optind; i < argc; i++) {
        size_t k = 0;

        if (strcmp(argv[i], "all") == 0) {
            selected = (1u << (sizeof(commands) / sizeof(commands[0]))) - 1;
            continue;
        }
        while (k < sizeof(commands) / sizeof(commands[0]) && strcmp(commands[k].name, argv[i]))
            k++;
        if (k == sizeof(commands) / sizeof(commands[0])) {
            fprintf(stderr, "missive-bench: unknown benchmark '%s'\n", argv[i]);
            usage(stderr);
            return 2;
        }
        selected |= 1u << k;
    }
    if (selected == 0) {
        usage(stderr);
        return 2;
    }
    if (o.quick && !runs_set)
        o.runs = 3;
    if (o.server_cpu >= 0 && sysconf(_SC_NPROCESSORS_ONLN) < 2)
        o.server_cpu = o.loader_cpu = -1; /* one core: nothing to separate */
    if (o.bin == NULL) {
        ssize_t n = readlink("/proc/self/exe", bin, sizeof(bin) - 1);

        if (n <= 0)
            return 1;
        bin[n] = '\0';
        *strrchr(bin, '/') = '\0';
        o.bin = bin;
    }
    if (msv_init_many_connections() != MSV_OK)
        return 1;
    signal(SIGPIPE, SIG_IGN);
    atexit(kill_servers); /* a benchmark that dies stops what it started */
    servers_without_leak_check();
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    {
        const char *tmp = getenv("TMPDIR");

        snprintf(o.tmp, sizeof(o.tmp), "%s/missive-bench-XXXXXX",
                 tmp != NULL && tmp[0] != '\0' ? tmp : "/tmp");
        if (mkdtemp(o.tmp) == NULL || remove_when_gone(o.tmp) != 0) {
            fprintf(stderr, "missive-bench: cannot create %s\n", o.tmp);
            return 1;
        }
    }
    /* the loader on its own core; servers on theirs */
    pin_to_cpu(o.loader_cpu);
    for (size_t k = 0; k < sizeof(commands) / sizeof(commands[0]) && rc == 0; k++) {
        if (selected & (1u << k)) {
            rc = commands[k].run(&o, stdout);
            fflush(stdout);
        }
    }
    return rc;
}
