/*
 * B9: the key directory's prefix tree (include/missive/ptree.h), built directly in this
 * process at 10^3, 10^5 and 10^6 entries: its memory, the size and verification time of a
 * lookup proof and of the owner's history proof, the time to publish an epoch of 1,000
 * changes (with its append-only proof), and the time to audit that proof.
 *
 * The handles looked up (at versions 1, 7, 255 and 4095) have real VRF labels; the other
 * entries have random labels and values, which is what VRF outputs and commitments look like to the
 * tree (making 10^6 VRF proofs would take minutes and measure the VRF, which B1 does).
 */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <sodium.h>

#include "bench/bench.h"
#include "missive/ptree.h"

#define HANDLE "alice@example.org" /* at version 7 */
#define HANDLE_V1 "bob@example.org"
#define HANDLE_V255 "carol@example.org"
#define HANDLE_V4095 "dave@example.org"
#define VERSIONS 7
/* the largest lookup below 256: 0xff, 0xf0 present; 0x100 absent */
#define V255 255
/*
 * the largest below 4,096: 0xfff, 0xff0, 0xf00 present; 0x1000 absent. Its handle holds those
 * three versions only (the tree of 10^3 entries could not hold 4,095 of one handle); the others
 * would change no byte of the proof's layout, only which random paths the other entries take.
 */
#define V4095 4095
#define V4095_HELD 3
#define EPOCH 1000

struct keydir {
    struct msv_ptree *t;
    uint8_t sk[MSV_VRF_SECRET_KEY_LEN], pk[MSV_VRF_PUBLIC_KEY_LEN], root[MSV_PT_HASH_LEN];
    uint8_t opening[VERSIONS + 1][MSV_PT_OPENING_LEN], opening_v1[2][MSV_PT_OPENING_LEN];
    uint8_t opening_v255[V255 + 1][MSV_PT_OPENING_LEN],
        opening_v4095[V4095 + 1][MSV_PT_OPENING_LEN];
    uint8_t data[64]; /* stands for a device set */
};

/* This thread's CPU time, in seconds: the machine is shared, and waiting for a core is not the
 * tree's cost. */
static double cpu_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Resident memory of this process, in KiB (0 if unknown). */
static long rss_kib(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long kib = 0;

    while (f != NULL && fgets(line, sizeof(line), f) != NULL) {
        if (strncmp(line, "VmRSS:", 6) == 0)
            kib = strtol(line + 6, NULL, 10);
    }
    if (f != NULL)
        fclose(f);
    return kib;
}

/* Versions 1..n of handle, as the directory adds them (or, when sparse, only those a lookup of
 * n proves present); opening[v] is version v's. */
static int add_versions(struct keydir *k, const char *handle, uint32_t n,
                        uint8_t (*opening)[MSV_PT_OPENING_LEN], int sparse)
{
    uint8_t alpha[300], pi[MSV_VRF_PROOF_LEN], beta[MSV_VRF_OUTPUT_LEN];
    uint32_t present[MSV_PT_PRESENT_MAX];
    size_t count = sparse ? msv_pt_versions_present(n, present) : n;
    struct msv_pt_entry e;
    size_t len = 0;

    for (size_t i = 0; i < count; i++) {
        uint32_t v = sparse ? present[i] : (uint32_t)i + 1;

        randombytes_buf(opening[v], MSV_PT_OPENING_LEN);
        if (msv_pt_vrf_input(handle, v, alpha, sizeof(alpha), &len) != MSV_OK ||
            msv_vrf_prove(MSV_PT_VRF_SUITE, k->sk, alpha, len, pi) != MSV_OK ||
            msv_vrf_proof_to_hash(MSV_PT_VRF_SUITE, pi, beta) != MSV_OK ||
            msv_pt_commit(opening[v], handle, v, k->data, sizeof(k->data), e.value) != MSV_OK)
            return 1;
        msv_pt_label(beta, e.label);
        if (msv_ptree_insert(k->t, &e) != MSV_OK)
            return 1;
    }
    return 0;
}

/* A tree of n entries (VERSIONS + 1 + V255 + V4095_HELD of them the four handles'); *build_s,
 * *mem_kib: its cost. */
static int keydir_build(struct keydir *k, size_t n, double *build_s, long *mem_kib)
{
    size_t others = n - VERSIONS - 1 - V255 - V4095_HELD;
    struct msv_pt_entry *e = malloc(others * sizeof(*e));
    long before = rss_kib();
    double start;
    int rc = 1;

    if (e == NULL || msv_vrf_keygen(MSV_PT_VRF_SUITE, k->sk, k->pk) != MSV_OK ||
        msv_ptree_new(&k->t) != MSV_OK)
        goto out;
    randombytes_buf(k->data, sizeof(k->data));
    randombytes_buf(e, others * sizeof(*e));
    start = cpu_s();
    for (size_t i = 0; i < others; i++) {
        if (msv_ptree_insert(k->t, &e[i]) != MSV_OK)
            goto out;
    }
    if (msv_ptree_root(k->t, k->root) != MSV_OK)
        goto out;
    *build_s = cpu_s() - start;
    if (add_versions(k, HANDLE, VERSIONS, k->opening, 0) != 0 ||
        add_versions(k, HANDLE_V1, 1, k->opening_v1, 0) != 0 ||
        add_versions(k, HANDLE_V255, V255, k->opening_v255, 0) != 0 ||
        add_versions(k, HANDLE_V4095, V4095, k->opening_v4095, 1) != 0 ||
        msv_ptree_root(k->t, k->root) != MSV_OK)
        goto out;
    free(e);
    e = NULL;
    *mem_kib = rss_kib() - before;
    rc = 0;
out:
    free(e);
    return rc;
}

/* A version proof of kind for handle at v: its size and the median time to verify it. */
static int measure_versions(const struct opts *o, struct keydir *k, enum msv_pt_proof_kind kind,
                            const char *handle, uint32_t v, size_t *size, double *verify_s)
{
    const uint8_t *opening = strcmp(handle, HANDLE_V1) == 0      ? k->opening_v1[v]
                             : strcmp(handle, HANDLE_V255) == 0  ? k->opening_v255[v]
                             : strcmp(handle, HANDLE_V4095) == 0 ? k->opening_v4095[v]
                                                                 : k->opening[v];
    double t[32];
    int runs = o->runs < 32 ? o->runs : 32;
    uint8_t *proof = NULL;
    uint32_t got = 0;

    if (msv_ptree_prove_versions(k->t, kind, k->sk, handle, v, opening, &proof, size) != MSV_OK)
        return 1;
    for (int r = 0; r < runs; r++) {
        double start = cpu_s(), elapsed;
        long calls = 0;

        do {
            if (msv_pt_verify_versions(k->root, k->pk, kind, handle, k->data, sizeof(k->data),
                                       proof, *size, &got) != MSV_OK ||
                got != v) {
                free(proof);
                return 1;
            }
            calls++;
            elapsed = cpu_s() - start;
        } while (elapsed < o->slice);
        t[r] = elapsed / (double)calls;
    }
    free(proof);
    *verify_s = median(t, runs);
    return 0;
}

/*
 * The median times of the two parts of a lookup proof: one VRF verification, and one path
 * proof (the handle's version 1, present).
 */
static int measure_parts(const struct opts *o, const struct keydir *k, double *vrf_s,
                         double *path_s)
{
    uint8_t alpha[300], pi[MSV_VRF_PROOF_LEN], beta[MSV_VRF_OUTPUT_LEN], label[MSV_PT_LABEL_LEN];
    uint8_t *path = NULL;
    size_t len = 0, path_len = 0;
    double t[2][32];
    int runs = o->runs < 32 ? o->runs : 32, found = 0, rc = 1;

    if (msv_pt_vrf_input(HANDLE, 1, alpha, sizeof(alpha), &len) != MSV_OK ||
        msv_vrf_prove(MSV_PT_VRF_SUITE, k->sk, alpha, len, pi) != MSV_OK ||
        msv_vrf_proof_to_hash(MSV_PT_VRF_SUITE, pi, beta) != MSV_OK)
        return 1;
    msv_pt_label(beta, label);
    if (msv_ptree_prove(k->t, label, &path, &path_len, &found) != MSV_OK || !found)
        goto out;
    for (int r = 0; r < runs; r++) {
        for (int part = 0; part < 2; part++) {
            double start = cpu_s(), elapsed;
            long calls = 0;

            do {
                if ((part == 0 ? msv_vrf_verify(MSV_PT_VRF_SUITE, k->pk, alpha, len, pi, beta)
                               : msv_pt_verify_path(k->root, label, path, path_len, &found,
                                                    NULL)) != MSV_OK)
                    goto out;
                calls++;
                elapsed = cpu_s() - start;
            } while (elapsed < o->slice);
            t[part][r] = elapsed / (double)calls;
        }
    }
    *vrf_s = median(t[0], runs);
    *path_s = median(t[1], runs);
    rc = 0;
out:
    free(path);
    return rc;
}

/*
 * An epoch of EPOCH new entries, as missived makes its append-only proof (each entry's step, in
 * log order: docs/transparency.md, "Append-only proofs between epochs"): time to add them and make
 * the proof; time for an auditor to check it from the old root and reach the new one.
 */
static int measure_epoch(struct keydir *k, double *publish_s, size_t *proof_len, double *audit_s)
{
    struct msv_pt_entry *e = malloc(EPOCH * sizeof(*e));
    uint8_t root[MSV_PT_HASH_LEN], *proof = malloc(4 + (size_t)EPOCH * MSV_PT_STEP_MAX);
    uint8_t *adds = malloc(EPOCH);
    enum msv_pt_step_fault fault;
    size_t bad = 0, len = 4;
    int have = 1, rc = 1;
    double start;

    if (e == NULL || proof == NULL || adds == NULL)
        goto out;
    randombytes_buf(e, EPOCH * sizeof(*e));
    memset(adds, 1, EPOCH);
    memcpy(root, k->root, sizeof(root));
    start = cpu_s();
    proof[0] = (uint8_t)(EPOCH >> 24);
    proof[1] = (uint8_t)(EPOCH >> 16);
    proof[2] = (uint8_t)(EPOCH >> 8);
    proof[3] = (uint8_t)EPOCH;
    for (size_t i = 0; i < EPOCH; i++) {
        uint8_t *step = NULL;
        size_t step_len = 0;

        if (msv_ptree_insert_step(k->t, &e[i], &step, &step_len) != MSV_OK)
            goto out;
        memcpy(proof + len, step, step_len);
        len += step_len;
        free(step);
    }
    if (msv_ptree_root(k->t, k->root) != MSV_OK)
        goto out;
    *publish_s = cpu_s() - start;
    *proof_len = len;
    start = cpu_s();
    if (msv_pt_verify_steps(proof, len, adds, EPOCH, &have, root, &bad, &fault) != MSV_OK ||
        memcmp(root, k->root, sizeof(root)) != 0)
        goto out;
    *audit_s = cpu_s() - start;
    rc = 0;
out:
    free(adds);
    free(proof);
    free(e);
    return rc;
}

int bench_keydir(const struct opts *o, FILE *out)
{
    static const size_t full[] = {1000, 100000, 1000000}, quick[] = {1000, 5000};
    const size_t *sizes = o->quick ? quick : full;
    size_t n_sizes = o->quick ? 2 : 3;

    fprintf(out, "### B9: key directory prefix tree\n\n"
                 "| entries | build s | memory MiB | lookup v1 B | lookup v1 verify µs | "
                 "lookup v7 B | lookup v7 verify µs | lookup v255 B | lookup v255 verify µs | "
                 "lookup v4095 B | lookup v4095 verify µs | "
                 "history v7 B | history v7 verify µs | "
                 "of which one VRF µs | one path µs | epoch of 1,000: publish ms | its proof KiB | "
                 "audit ms |\n"
                 "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n");
    for (size_t i = 0; i < n_sizes; i++) {
        struct keydir k;
        size_t l1 = 0, l7 = 0, l255 = 0, l4095 = 0, h7 = 0, epoch_len = 0;
        double build = 0, v1 = 0, v7 = 0, v255 = 0, v4095 = 0, hv = 0, publish = 0, audit = 0,
               vrf = 0, path = 0;
        long mem = 0;
        int rc;

        memset(&k, 0, sizeof(k));
        rc = keydir_build(&k, sizes[i], &build, &mem) ||
             measure_versions(o, &k, MSV_PT_LOOKUP, HANDLE_V1, 1, &l1, &v1) ||
             measure_versions(o, &k, MSV_PT_LOOKUP, HANDLE, VERSIONS, &l7, &v7) ||
             measure_versions(o, &k, MSV_PT_LOOKUP, HANDLE_V255, V255, &l255, &v255) ||
             measure_versions(o, &k, MSV_PT_LOOKUP, HANDLE_V4095, V4095, &l4095, &v4095) ||
             measure_versions(o, &k, MSV_PT_HISTORY, HANDLE, VERSIONS, &h7, &hv) ||
             measure_parts(o, &k, &vrf, &path) || measure_epoch(&k, &publish, &epoch_len, &audit);
        msv_ptree_free(k.t);
        sodium_memzero(k.sk, sizeof(k.sk));
        if (rc != 0) {
            fprintf(stderr, "missive-bench: the prefix tree of %zu entries failed\n", sizes[i]);
            return 1;
        }
        fprintf(out,
                "| %zu | %.2f | %.1f | %zu | %.1f | %zu | %.1f | %zu | %.1f | %zu | %.1f | %zu | "
                "%.1f | %.1f | %.1f | %.1f | %.1f | %.1f |\n",
                sizes[i], build, (double)mem / 1024.0, l1, v1 * 1e6, l7, v7 * 1e6, l255, v255 * 1e6,
                l4095, v4095 * 1e6, h7, hv * 1e6, vrf * 1e6, path * 1e6, publish * 1e3,
                (double)epoch_len / 1024.0, audit * 1e3);
    }
    fprintf(
        out,
        "\nGoals at 10^6 entries: a lookup proof of at most 3 KiB, verified in at most "
        "1 ms. Lookup v1: a handle at version 1 (VRF proofs and paths of versions 1 and "
        "2); v7: at version 7 (present 7; absent 8); v255: at version 255 (present 0xff, 0xf0; "
        "absent 0x100), the largest lookup below 256; v4095: at version 4,095 (present 0xfff, "
        "0xff0, 0xf00; absent 0x1000), the largest below 4,096; history v7: its owner's proof "
        "(present 7; absent 8 to 15, 16 to 240, 256 to 3,840, then 2^12, 2^13, ..., 2^31). A "
        "lookup at version v verifies one VRF proof (ECVRF-EDWARDS25519-SHA512-ELL2) per nonzero "
        "digit of v (three of four bits, then one per bit from bit 12) and one for v + 1: they, "
        "not the tree, are most of its time. Build: the entries other than the four handles', "
        "inserted one by one, "
        "and the root; memory: resident memory that the tree added. Times are CPU time of the "
        "measuring thread.\n\n");
    return 0;
}
