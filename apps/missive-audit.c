/*
 * missive-audit: an independent auditor of a Missive server's transparency
 * log (docs/transparency.md). It follows the log from where it stopped,
 * checks every entry's proof and that every tree head extends the one before,
 * recomputes the tree from all the leaves, and compares the head with heads
 * others saw (other auditors, or clients' `missive log-head`): two heads of
 * one log that do not fit into one history are a fork, the proof that the
 * server shows different people different directories.
 *
 * The server gives it, having no account, each device set as its leaf hash only
 * (no handle); a leaf given anyway is checked as a device set.
 *
 * State (a text file, written atomically): the pinned TLS fingerprint and
 * log key, the last head, every leaf hash, and every device id of the leaves
 * it was given with the SHA-256 of the key it was first listed with (a device
 * id has one key forever), and the key directory's root at the
 * head's size: every epoch after it must only add to it (each entry's step of
 * the append-only proof, docs/transparency.md).
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <sodium.h>

#include "client/conn.h"
#include "client/requests.h"
#include "client/transparency.h"
#include "missive/kt.h"
#include "missive/ptree.h"
#include "missive/util.h"
#include "term.h"

#define EXIT_FORK 1
#define EXIT_USAGE 2
#define EXIT_NET 4
#define TIMEOUT_MS 15000
#define MAX_COMPARE 16
#define MAX_SKEW_MS (10LL * 60 * 1000) /* as the client allows (MSV_KT_HEAD_MAX_SKEW_MS) */

static const char *prog = "missive-audit";

/* Device id -> SHA-256 of the handle the log first listed it under (open addressing). */
struct owners {
    uint64_t *ids;
    uint8_t (*handles)[MSV_KT_HASH_LEN];
    uint8_t *used;
    size_t cap, count;
};

struct audit {
    struct owners owners;
    char host[256];
    uint16_t port;
    int have_fingerprint, have_key, have_head;
    uint8_t fingerprint[32], log_key[MSV_KT_KEY_LEN];
    struct msv_kt_head head;
    struct msv_merkle *tree; /* the hashes of the leaves from index `from` on */
    uint64_t from;           /* --start: the first entry read (0: the whole log) */
    /* the key directory: its root after kd_size entries, checked from every step since the
     * epoch the auditor started at (have_kd 0: a state from before, whose root the first step
     * read gives) */
    int have_kd;
    uint64_t kd_size;
    uint8_t kd_root[MSV_PT_HASH_LEN];
    /* the log's cut-over entry (-1: none read): after it every entry but a rotation is a
     * version-4 leaf, given whole, whose step must add exactly its label and value */
    int64_t cutover;
    int quiet;
};

static void usage(FILE *f)
{
    fprintf(f,
            "usage: %s --state FILE [--server HOST:PORT] [--fingerprint HEX] [--log-key HEX]\n"
            "                     [--compare HEAD_FILE]... [--print-head] [--start INDEX]\n"
            "                     [--quiet]\n"
            "\n"
            "Follows a Missive server's transparency log and checks it: every entry proven,\n"
            "every tree head signed by the log key and extending the one before, the tree\n"
            "recomputed from all the leaves, and the key directory only growing (every\n"
            "entry's append-only step from the root checked last to the head's signed\n"
            "root). --compare checks heads that others saw (a line\n"
            "'missive-head 1 SIZE TIME ROOT SIGNATURE', as 'missive log-head' and\n"
            "'missive-audit --print-head' write) against this log: a head that does not fit\n"
            "is a fork.\n"
            "\n"
            "  --state FILE        what the auditor knows (made on the first run)\n"
            "  --server HOST:PORT  the server (needed on the first run; kept in the state)\n"
            "  --fingerprint HEX   the server's TLS certificate fingerprint (default: the\n"
            "                      one it shows on the first run)\n"
            "  --log-key HEX       the log's Ed25519 public key (DATA_DIR/log.pub; default:\n"
            "                      the one it shows on the first run)\n"
            "  --compare FILE      a head to compare (may be given up to 16 times)\n"
            "  --print-head        print the checked head in the --compare format\n"
            "  --start INDEX       on the first run: read the log from entry INDEX on, not\n"
            "                      from its start (its earlier entries and key directory\n"
            "                      taken as the server shows them)\n"
            "  --quiet             print only problems\n"
            "\n"
            "exit status: 0 the log checks out, 1 the server misbehaved (a fork, a rewritten\n"
            "or unproven log, a key directory changed behind the log's back), 2 usage or\n"
            "state file, 4 server unreachable or refusing\n",
            prog);
}

static int bad_log(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Reports what the server did wrong; returns EXIT_FORK. */
static int bad_log(const char *fmt, ...)
{
    va_list ap;

    fprintf(stderr, "%s: THE LOG DOES NOT CHECK OUT: ", prog);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    return EXIT_FORK;
}

static int hex_field(const char *hex, uint8_t *out, size_t len)
{
    size_t n = 0;

    return msv_hex_decode(hex, out, len, &n) == MSV_OK && n == len;
}

/* "missive-head 1 SIZE TIME ROOT SIGNATURE" */
static int parse_head(const char *line, struct msv_kt_head *h)
{
    char root[80], sig[140];
    unsigned long long size, t;

    if (sscanf(line, "missive-head 1 %llu %llu %79s %139s", &size, &t, root, sig) != 4 ||
        t > INT64_MAX || !hex_field(root, h->root, MSV_KT_HASH_LEN) ||
        !hex_field(sig, h->signature, MSV_KT_SIG_LEN))
        return 0;
    h->size = size;
    h->time_ms = (int64_t)t;
    return 1;
}

static void format_head(const struct msv_kt_head *h, char *out, size_t len)
{
    char root[2 * MSV_KT_HASH_LEN + 1] = "", sig[2 * MSV_KT_SIG_LEN + 1] = "";

    if (msv_hex_encode(h->root, MSV_KT_HASH_LEN, root, sizeof(root)) != MSV_OK ||
        msv_hex_encode(h->signature, MSV_KT_SIG_LEN, sig, sizeof(sig)) != MSV_OK)
        root[0] = sig[0] = '\0';
    snprintf(out, len, "missive-head 1 %" PRIu64 " %" PRId64 " %s %s", h->size, h->time_ms, root,
             sig);
}

/* ---- device ids and their handles ------------------------------------------------------- */

static size_t owners_slot(const struct owners *o, uint64_t id)
{
    size_t i = (size_t)((id * 0x9e3779b97f4a7c15ULL) >> 17) & (o->cap - 1);

    while (o->used[i] && o->ids[i] != id)
        i = (i + 1) & (o->cap - 1);
    return i;
}

/* Doubles the table (kept at most half full); 0 if out of memory. */
static int owners_grow(struct owners *o)
{
    struct owners n = {0};

    n.cap = o->cap ? o->cap * 2 : 1024;
    n.ids = calloc(n.cap, sizeof(*n.ids));
    n.handles = calloc(n.cap, sizeof(*n.handles));
    n.used = calloc(n.cap, 1);
    if (n.ids == NULL || n.handles == NULL || n.used == NULL) {
        free(n.ids);
        free(n.handles);
        free(n.used);
        return 0;
    }
    for (size_t i = 0; i < o->cap; i++) {
        size_t at;

        if (!o->used[i])
            continue;
        at = owners_slot(&n, o->ids[i]);
        n.used[at] = 1;
        n.ids[at] = o->ids[i];
        memcpy(n.handles[at], o->handles[i], MSV_KT_HASH_LEN);
    }
    n.count = o->count;
    free(o->ids);
    free(o->handles);
    free(o->used);
    *o = n;
    return 1;
}

static void owners_free(struct owners *o)
{
    free(o->ids);
    free(o->handles);
    free(o->used);
    memset(o, 0, sizeof(*o));
}

/* Gives id to handle (a SHA-256) if it has no handle yet: 1; 0 if it is another handle's. */
static int owners_claim(struct owners *o, uint64_t id, const uint8_t handle[MSV_KT_HASH_LEN])
{
    size_t at;

    if ((o->count + 1) * 2 > o->cap && !owners_grow(o)) {
        fprintf(stderr, "%s: out of memory\n", prog);
        exit(EXIT_FAILURE);
    }
    at = owners_slot(o, id);
    if (o->used[at])
        return sodium_memcmp(o->handles[at], handle, MSV_KT_HASH_LEN) == 0;
    o->used[at] = 1;
    o->ids[at] = id;
    memcpy(o->handles[at], handle, MSV_KT_HASH_LEN);
    o->count++;
    return 1;
}

/*
 * Claims the devices of entry e (at index) for their keys: a device id is listed with one key
 * forever, under whichever handles of its account (docs/transparency.md); 0 or EXIT_FORK.
 */
static int claim_devices(struct audit *a, const struct msv_kt_entry *e, uint64_t index)
{
    uint8_t key[MSV_KT_HASH_LEN];

    for (size_t i = 0; i < e->n_devices; i++) {
        crypto_hash_sha256(key, e->devices[i].identity, e->devices[i].identity_len);
        if (!owners_claim(&a->owners, e->devices[i].device_id, key))
            return bad_log("entry %" PRIu64 " lists device %" PRIu64 " under %s with another "
                           "key than an earlier entry gave that device",
                           index, e->devices[i].device_id, e->handle);
    }
    return 0;
}

/* ---- state ------------------------------------------------------------------------------ */

/* Reads the "devices N" section: N lines "ID KEY_SHA256"; 0 if malformed. */
static int load_owners(struct audit *a, FILE *f)
{
    char line[512], hex[200];
    unsigned long long n = 0, id = 0;

    if (fgets(line, sizeof(line), f) == NULL || sscanf(line, "devices %llu", &n) != 1)
        return 0;
    for (unsigned long long i = 0; i < n; i++) {
        uint8_t h[MSV_KT_HASH_LEN];

        if (fgets(line, sizeof(line), f) == NULL || sscanf(line, "%llu %199s", &id, hex) != 2 ||
            !hex_field(hex, h, sizeof(h)) || !owners_claim(&a->owners, id, h))
            return 0;
    }
    return 1;
}

static int load_state(struct audit *a, const char *path)
{
    char line[512], hex[200];
    FILE *f = fopen(path, "r");
    unsigned long long n = 0;
    unsigned port = 0;
    int version;

    if (f == NULL)
        return errno == ENOENT ? 0 : -1;
    if (fgets(line, sizeof(line), f) == NULL || strncmp(line, "missive-audit-state ", 20) != 0 ||
        line[20] < '1' || line[20] > '4' || strcmp(line + 21, "\n") != 0)
        goto bad;
    version = line[20] - '0';
    if (fgets(line, sizeof(line), f) == NULL ||
        sscanf(line, "server %255s %u", a->host, &port) != 2 || port == 0 || port > 65535)
        goto bad;
    a->port = (uint16_t)port;
    if (fgets(line, sizeof(line), f) == NULL || sscanf(line, "fingerprint %199s", hex) != 1 ||
        !hex_field(hex, a->fingerprint, 32))
        goto bad;
    if (fgets(line, sizeof(line), f) == NULL || sscanf(line, "log_key %199s", hex) != 1 ||
        !hex_field(hex, a->log_key, MSV_KT_KEY_LEN))
        goto bad;
    a->have_fingerprint = a->have_key = 1;
    if (fgets(line, sizeof(line), f) == NULL || !parse_head(line, &a->head) ||
        msv_kt_head_verify(&a->head, a->log_key) != MSV_OK)
        goto bad;
    a->have_head = 1;
    {
        /* "leaves N", or (4) "leaves N from F": an auditor that started at entry F */
        unsigned long long from = 0;
        int got = fgets(line, sizeof(line), f) == NULL
                      ? 0
                      : sscanf(line, "leaves %llu from %llu", &n, &from);

        if (got < 1 || (got == 2 && (version < 4 || from == 0)) || from > a->head.size ||
            n != a->head.size - from)
            goto bad;
        a->from = from;
    }
    for (unsigned long long i = 0; i < n; i++) {
        uint8_t h[MSV_KT_HASH_LEN];

        if (fgets(line, sizeof(line), f) == NULL)
            goto bad;
        line[strcspn(line, "\n")] = '\0';
        if (!hex_field(line, h, sizeof(h)) || msv_merkle_append(a->tree, h) != MSV_OK)
            goto bad;
    }
    if (version >= 3 && !load_owners(a, f))
        goto bad;
    /* 4: "keydir SIZE ROOT", the key directory's root at the head's size; 3 has none, and the
     * key directory is checked from the next epoch read on */
    a->kd_size = a->head.size;
    if (version == 4) {
        unsigned long long size = 0;

        unsigned long long cut = 0;
        int got = fgets(line, sizeof(line), f) == NULL
                      ? 0
                      : sscanf(line, "keydir %llu %199s cutover %llu", &size, hex, &cut);

        /* "keydir SIZE ROOT", then " cutover INDEX" once the log has cut over */
        if (got < 2 || size != a->head.size || !hex_field(hex, a->kd_root, MSV_PT_HASH_LEN) ||
            (got == 3 && cut >= a->head.size))
            goto bad;
        a->have_kd = 1;
        a->cutover = got == 3 ? (int64_t)cut : -1;
    }
    fclose(f);
    {
        uint8_t root[MSV_KT_HASH_LEN];

        /* the state file is checked like the server: its leaves must make its head (all of
         * them: an auditor that started later has part of them only) */
        if (a->from == 0 && (msv_merkle_root(a->tree, a->head.size, root) != MSV_OK ||
                             sodium_memcmp(root, a->head.root, MSV_KT_HASH_LEN) != 0))
            return -1;
    }
    /* a state from before device ids were kept (1), or kept by handle rather than key (2):
     * the log is read again from its start (each leaf proven in a head that extends this one)
     * to learn them */
    if (version < 3) {
        a->have_kd = 1; /* from the empty tree */
        a->kd_size = 0;
        memset(a->kd_root, 0, sizeof(a->kd_root));
        msv_merkle_free(a->tree);
        a->tree = NULL;
        if (msv_merkle_new(&a->tree) != MSV_OK)
            return -1;
    }
    return 1;
bad:
    fclose(f);
    return -1;
}

static int save_state(const struct audit *a, const char *path)
{
    char tmp[1100], line[512], hex[2 * MSV_KT_SIG_LEN + 1];
    FILE *f;
    int ok = 1;

    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    f = fopen(tmp, "w");
    if (f == NULL)
        return 0;
    fprintf(f, "missive-audit-state 4\nserver %s %u\n", a->host, (unsigned)a->port);
    ok &= msv_hex_encode(a->fingerprint, 32, hex, sizeof(hex)) == MSV_OK;
    fprintf(f, "fingerprint %s\n", hex);
    ok &= msv_hex_encode(a->log_key, MSV_KT_KEY_LEN, hex, sizeof(hex)) == MSV_OK;
    fprintf(f, "log_key %s\n", hex);
    format_head(&a->head, line, sizeof(line));
    if (a->from == 0)
        fprintf(f, "%s\nleaves %" PRIu64 "\n", line, a->head.size);
    else
        fprintf(f, "%s\nleaves %" PRIu64 " from %" PRIu64 "\n", line, a->head.size - a->from,
                a->from);
    for (uint64_t i = 0; i < a->head.size - a->from; i++) {
        uint8_t h[MSV_KT_HASH_LEN];

        ok &= msv_merkle_leaf(a->tree, i, h) == MSV_OK;
        ok &= msv_hex_encode(h, sizeof(h), hex, sizeof(hex)) == MSV_OK;
        fprintf(f, "%s\n", hex);
    }
    fprintf(f, "devices %zu\n", a->owners.count);
    for (size_t i = 0; i < a->owners.cap; i++) {
        if (!a->owners.used[i])
            continue;
        ok &= msv_hex_encode(a->owners.handles[i], MSV_KT_HASH_LEN, hex, sizeof(hex)) == MSV_OK;
        fprintf(f, "%" PRIu64 " %s\n", a->owners.ids[i], hex);
    }
    ok &= a->have_kd && a->kd_size == a->head.size &&
          msv_hex_encode(a->kd_root, MSV_PT_HASH_LEN, hex, sizeof(hex)) == MSV_OK;
    if (a->cutover >= 0)
        fprintf(f, "keydir %" PRIu64 " %s cutover %" PRId64 "\n", a->kd_size, hex, a->cutover);
    else
        fprintf(f, "keydir %" PRIu64 " %s\n", a->kd_size, hex);
    ok &= fflush(f) == 0 && fsync(fileno(f)) == 0;
    ok &= fclose(f) == 0;
    if (!ok || rename(tmp, path) != 0) {
        unlink(tmp);
        return 0;
    }
    return 1;
}

/* ---- following the log ------------------------------------------------------------------ */

/*
 * Each version-4 leaf read (want[i]: its label and value, when has[i]) is the entry its step
 * adds (steps of n entries, checked well-formed before); 0 or EXIT_FORK.
 */
static int steps_add_leaves(const uint8_t *proof, size_t len, uint64_t start, size_t n,
                            const uint8_t (*want)[64], const uint8_t *has)
{
    size_t bad = 0;
    msv_err err = msv_pt_steps_match(proof, len, n, want, has, &bad);

    if (err == MSV_ERR_PARSE)
        return bad_log("%s", "the key directory's append-only proof is malformed");
    if (err != MSV_OK)
        return bad_log("log entry %" PRIu64 "'s leaf is not the entry the key directory "
                       "adds for it: the tree holds another label or value than the log "
                       "(an entry put in the tree behind the log's back)",
                       start + bad);
    return 0;
}

/*
 * Checks the key directory's steps of the n entries read from start (adds[i]: entry i is a
 * handle's version; want[i], when has[i]: the label and value of entry i's version-4 leaf) from
 * the root the auditor holds, then the head's signed root when the entries reach it; 0 or
 * EXIT_FORK.
 */
static int take_steps(struct audit *a, const Msv__Wire__LogEntries *r,
                      const struct msv_kt_head *head, uint64_t start, const uint8_t *adds, size_t n,
                      const uint8_t (*want)[64], const uint8_t *has)
{
    const Msv__Wire__TreeHead *w = r->head;
    enum msv_pt_step_fault fault = MSV_PT_STEP_OK;
    char root[2 * MSV_PT_HASH_LEN + 1] = "";
    size_t bad = 0;
    uint64_t at;
    msv_err err;

    if (w->epoch_root.len != MSV_PT_HASH_LEN || w->epoch_signature.len != MSV_PT_SIG_LEN ||
        msv_pt_epoch_verify(a->log_key, head->size, w->epoch_root.data, w->epoch_signature.data) !=
            MSV_OK)
        return bad_log("the head of %" PRIu64 " entries carries no key directory root signed "
                       "by the log key",
                       head->size);
    if (r->append_proof.len == 0)
        return bad_log("%s", "an answer without the key directory's append-only proof");
    if (msv_hex_encode(a->kd_root, MSV_PT_HASH_LEN, root, sizeof(root)) != MSV_OK)
        root[0] = '\0';
    err = msv_pt_verify_steps(r->append_proof.data, r->append_proof.len, adds, n, &a->have_kd,
                              a->kd_root, &bad, &fault);
    at = start + bad;
    if (err == MSV_ERR_PARSE)
        return bad_log("the key directory's append-only proof of entries %" PRIu64 " to %" PRIu64
                       " is malformed",
                       start, start + n);
    if (err != MSV_OK && fault == MSV_PT_STEP_ADDS_NOTHING)
        return bad_log("log entry %" PRIu64 " is not in the key directory: its append-only "
                       "proof adds nothing for it (an entry left out or removed)",
                       at);
    if (err != MSV_OK && fault == MSV_PT_STEP_ADDS)
        return bad_log("log entry %" PRIu64 " is a log key rotation, yet the key directory "
                       "adds an entry for it",
                       at);
    if (err != MSV_OK && fault == MSV_PT_STEP_OTHER_TREE)
        return bad_log("the key directory changed behind the log's back: log entry %" PRIu64
                       "'s append-only proof starts from another tree than the one of %" PRIu64
                       " entries this auditor checked (root %.16s...): an entry was changed or "
                       "removed, or the directory forked",
                       at, at, root);
    if (err != MSV_OK)
        return bad_log("log entry %" PRIu64 "'s version is not proven new to the key "
                       "directory: the tree already holds its label (an entry changed in place)",
                       at);
    if (steps_add_leaves(r->append_proof.data, r->append_proof.len, start, n, want, has) != 0)
        return EXIT_FORK;
    a->kd_size = start + n;
    if (a->kd_size != head->size)
        return 0; /* the next read goes on */
    if (!a->have_kd) {
        /* a state from before the key directory was checked: its epochs from this one on */
        memcpy(a->kd_root, w->epoch_root.data, MSV_PT_HASH_LEN);
        a->have_kd = 1;
    } else if (sodium_memcmp(a->kd_root, w->epoch_root.data, MSV_PT_HASH_LEN) != 0) {
        return bad_log("the key directory's signed root for %" PRIu64 " entries is not the "
                       "tree its append-only proof builds from the one this auditor checked: "
                       "an entry was changed or removed behind the log's back, or the "
                       "directory forked",
                       head->size);
    }
    return 0;
}

/*
 * The log's cut-over the answer names (LogEntries.cutover), against the entries this auditor read
 * and the cut-over it knows: an auditor that starts after it (--start) learns where it is, and a
 * server cannot give it as a leaf hash, name another entry, or leave it out once known; 0 or
 * EXIT_FORK.
 */
static int check_cutover(struct audit *a, const Msv__Wire__LogEntries *r,
                         const struct msv_kt_head *head)
{
    char why[300];

    if (msv_kt_check_cutover(r, head, a->from, a->from + msv_merkle_size(a->tree), &a->cutover, why,
                             sizeof(why)) != MSV_OK)
        return bad_log("%s", why);
    return 0;
}

/* Checks one LogEntries answer to a read from start and takes its leaves; 0 or EXIT_FORK. */
static int take_entries(struct audit *a, const Msv__Wire__LogEntries *r, uint64_t start,
                        size_t *taken)
{
    static uint8_t proof[MSV_KT_PROOF_MAX][MSV_KT_HASH_LEN];
    static uint8_t adds[MSV_KT_READ_MAX], has[MSV_KT_READ_MAX], want[MSV_KT_READ_MAX][64];
    const Msv__Wire__TreeHead *w = r->head;
    struct msv_kt_head head;
    uint8_t last_new_key[MSV_KT_KEY_LEN];
    size_t rotated = 0;
    char detail[160];

    *taken = 0;
    if (w == NULL || r->log_key.len != MSV_KT_KEY_LEN || w->root.len != MSV_KT_HASH_LEN ||
        w->signature.len != MSV_KT_SIG_LEN || w->time_ms > INT64_MAX)
        return bad_log("%s", "an answer without a well-formed tree head");
    head.size = w->size;
    head.time_ms = (int64_t)w->time_ms;
    memcpy(head.root, w->root.data, MSV_KT_HASH_LEN);
    memcpy(head.signature, w->signature.data, MSV_KT_SIG_LEN);
    if (!a->have_key) {
        memcpy(a->log_key, r->log_key.data, MSV_KT_KEY_LEN);
        a->have_key = 1;
    } else if (sodium_memcmp(a->log_key, r->log_key.data, MSV_KT_KEY_LEN) != 0) {
        /* another key only along the log's rotation entries from the pinned one */
        if (msv_kt_follow_rotations(a->log_key, r->rotations, r->n_rotations, &head,
                                    r->log_key.data) != MSV_OK)
            return bad_log("%s", "the log is signed with another key than the pinned one");
        memcpy(a->log_key, r->log_key.data, MSV_KT_KEY_LEN);
        if (!a->quiet)
            printf("%s: the log key moved, along the log's rotation entries, to the one "
                   "this state now pins\n",
                   prog);
    }
    if (msv_kt_head_verify(&head, a->log_key) != MSV_OK)
        return bad_log("%s", "a tree head is not signed by the log key");
    /* a head from the future would pass for fresh later; clocks differ by a little only */
    if (head.time_ms > msv_wall_ms() + MAX_SKEW_MS) {
        snprintf(detail, sizeof(detail), "%" PRId64 " minutes",
                 (head.time_ms - msv_wall_ms()) / 60000);
        return bad_log("a tree head is dated %s in the future", detail);
    }
    if (a->from > head.size) {
        fprintf(stderr, "%s: --start %" PRIu64 ": the log has %" PRIu64 " entries\n", prog, a->from,
                head.size);
        return EXIT_USAGE;
    }
    if (a->have_head) {
        if (head.size < a->head.size) {
            snprintf(detail, sizeof(detail), "%" PRIu64 " entries after %" PRIu64, head.size,
                     a->head.size);
            return bad_log("the log shrank: %s", detail);
        }
        if (r->n_consistency > MSV_KT_PROOF_MAX)
            return bad_log("%s", "a consistency proof too long");
        for (size_t i = 0; i < r->n_consistency; i++) {
            if (r->consistency[i].len != MSV_KT_HASH_LEN)
                return bad_log("%s", "a malformed consistency proof");
            memcpy(proof[i], r->consistency[i].data, MSV_KT_HASH_LEN);
        }
        if (msv_merkle_verify_consistency(a->head.size, head.size, a->head.root, head.root, proof,
                                          r->n_consistency) != MSV_OK) {
            snprintf(detail, sizeof(detail),
                     "its head of %" PRIu64 " entries does not extend %" PRIu64, head.size,
                     a->head.size);
            return bad_log("the log was rewritten: %s", detail);
        }
    }
    if (check_cutover(a, r, &head) != 0)
        return EXIT_FORK;
    if (r->n_entries > MSV_KT_READ_MAX || a->kd_size > head.size ||
        r->n_entries > head.size - a->kd_size)
        return bad_log("%s", "an answer with more entries than asked for");
    for (size_t i = 0; i < r->n_entries; i++) {
        const Msv__Wire__LogProof *p = r->entries[i];
        struct msv_kt_entry e;
        struct msv_kt_rotation rot;
        struct msv_kt_v4_leaf v4;
        uint8_t h[MSV_KT_HASH_LEN];

        snprintf(detail, sizeof(detail), "%" PRIu64, start + i);
        if (p->index != start + i || p->index != a->from + msv_merkle_size(a->tree))
            return bad_log("entry %s came out of order", detail);
        if (p->n_path > MSV_KT_PROOF_MAX)
            return bad_log("entry %s has a proof too long", detail);
        for (size_t k = 0; k < p->n_path; k++) {
            if (p->path[k].len != MSV_KT_HASH_LEN)
                return bad_log("entry %s has a malformed proof", detail);
            memcpy(proof[k], p->path[k].data, MSV_KT_HASH_LEN);
        }
        /* a device set or tombstone names its handle: an auditor, which has no account, gets
         * its hash only (docs/transparency.md, "What a reader without an account sees") */
        if (p->leaf_hash.len != 0 && (p->leaf_hash.len != MSV_KT_HASH_LEN || p->leaf.len != 0))
            return bad_log("entry %s has a malformed leaf hash", detail);
        if (p->leaf_hash.len != 0)
            memcpy(h, p->leaf_hash.data, MSV_KT_HASH_LEN);
        else
            msv_kt_leaf_hash(p->leaf.data, p->leaf.len, h);
        if (msv_merkle_verify_inclusion(h, p->index, head.size, proof, p->n_path, head.root) !=
            MSV_OK)
            return bad_log("entry %s is not in the tree its head signs", detail);
        has[i] = 0;
        if (msv_kt_cutover_leaf_parse(p->leaf.data, p->leaf.len) != MSV_OK &&
            !msv_kt_fits_cutover(p, a->cutover))
            return bad_log("entry %s, after the log's cut-over (entry %" PRId64 "), is not a "
                           "version-4 leaf given whole: it hides what the key directory holds, "
                           "or names a handle",
                           detail, a->cutover);
        if (p->leaf_hash.len != 0) {
            /* a rotation is always given whole: one the answer names may not hide as a hash */
            for (size_t k = 0; k < r->n_rotations; k++)
                if (r->rotations[k]->index == p->index)
                    return bad_log("entry %s is a log key rotation given as a hash only", detail);
            adds[i] = 1; /* a version of some handle: its step must add it */
        } else if (msv_kt_rotation_leaf_parse(p->leaf.data, p->leaf.len, &rot) == MSV_OK) {
            /* a rotation entry: the statement holds and sits where its size says */
            if (rot.size != p->index + 1 ||
                msv_kt_rotation_verify(rot.old_key, rot.new_key, rot.size, rot.signature) != MSV_OK)
                return bad_log("entry %s is a log key rotation its old key did not sign", detail);
            /* each rotation goes on from the one before it, and the key it retires signs no head
             * after it: the head of this answer is at least as large as the rotation's size */
            if (rotated > 0 && sodium_memcmp(rot.old_key, last_new_key, MSV_KT_KEY_LEN) != 0)
                return bad_log("entry %s rotates from a key the log had not rotated to", detail);
            if (sodium_memcmp(rot.old_key, r->log_key.data, MSV_KT_KEY_LEN) == 0)
                return bad_log("entry %s retires the log key that still signs its head: "
                               "a rotation this auditor is kept behind",
                               detail);
            memcpy(last_new_key, rot.new_key, MSV_KT_KEY_LEN);
            rotated++;
            adds[i] = 0;
        } else if (msv_kt_cutover_leaf_parse(p->leaf.data, p->leaf.len) == MSV_OK) {
            if (a->cutover >= 0 && a->cutover != (int64_t)p->index)
                return bad_log("entry %s is a second cut-over of the log", detail);
            a->cutover = (int64_t)p->index;
            adds[i] = 0;
        } else if (msv_kt_v4_leaf_parse(p->leaf.data, p->leaf.len, &v4) == MSV_OK) {
            /* names no handle: its step must add exactly its label and value */
            memcpy(want[i], v4.label, 32);
            memcpy(want[i] + 32, v4.value, 32);
            has[i] = 1;
            adds[i] = 1;
        } else if (msv_kt_leaf_parse(p->leaf.data, p->leaf.len, &e) != MSV_OK) {
            return bad_log("entry %s is not a device set", detail);
        } else if (claim_devices(a, &e, p->index) != 0) {
            return EXIT_FORK;
        } else {
            adds[i] = 1;
        }
        if (msv_merkle_append(a->tree, h) != MSV_OK) {
            fprintf(stderr, "%s: out of memory\n", prog);
            exit(EXIT_FAILURE);
        }
        (*taken)++;
    }
    if (take_steps(a, r, &head, start, adds, r->n_entries, (const uint8_t(*)[64])want, has) != 0)
        return EXIT_FORK;
    a->head = head;
    a->have_head = 1;
    return 0;
}

/* Reads the log from where the state ends up to the server's head. */
static int follow(struct audit *a, uint64_t *added)
{
    struct msv_conn *c = NULL;
    struct msv_refusal why = {0};
    uint8_t root[MSV_KT_HASH_LEN];
    msv_err err = msv_conn_open(a->host, a->port, a->have_fingerprint ? a->fingerprint : NULL,
                                TIMEOUT_MS, &c);
    int rc = 0;

    *added = 0;
    if (err != MSV_OK) {
        fprintf(stderr, "%s: cannot reach %s:%u: %s\n", prog, a->host, (unsigned)a->port,
                err == MSV_ERR_AUTH ? "its certificate is not the pinned one" : msv_strerror(err));
        return EXIT_NET;
    }
    if (!a->have_fingerprint) {
        msv_conn_fingerprint(c, a->fingerprint);
        a->have_fingerprint = 1;
    }
    for (;;) {
        msv_frame *r = NULL;
        uint64_t start = a->from + msv_merkle_size(a->tree);
        size_t taken = 0;

        err = msv_request_log_read(c, start, MSV_KT_READ_MAX, a->have_head ? a->head.size : 0, 1,
                                   TIMEOUT_MS, &r, &why);
        if (err != MSV_OK && why.code == MSV__WIRE__ERROR_CODE__ERROR_PROOF_GONE) {
            /* the server keeps the newest entries' steps only: this state is older */
            fprintf(stderr,
                    "%s: the server no longer keeps the key directory's proof this audit "
                    "needs: ",
                    prog);
            term_put(stderr, why.message, TERM_LINES);
            fputc('\n', stderr);
            msv_conn_close(c);
            return EXIT_NET;
        }
        if (err != MSV_OK) {
            fprintf(stderr, "%s: reading the log: %s%s", prog, msv_strerror(err),
                    why.message[0] ? ": " : "");
            term_put(stderr, why.message, TERM_LINES); /* the server's words */
            fputc('\n', stderr);
            msv_conn_close(c);
            return EXIT_NET;
        }
        rc = take_entries(a, r->log_entries, start, &taken);
        msv_frame_free(r);
        *added += taken;
        if (rc != 0 || taken == 0 || a->from + msv_merkle_size(a->tree) >= a->head.size)
            break;
        if (!a->quiet)
            fprintf(stderr, "%s: %" PRIu64 " of %" PRIu64 " entries\r", prog,
                    a->from + msv_merkle_size(a->tree), a->head.size);
    }
    msv_conn_close(c);
    if (rc != 0)
        return rc;
    /* every leaf is here: the tree they make must be the one the head signs (an auditor that
     * started later has each of its leaves proven in a head, and the heads consistent) */
    if (a->from + msv_merkle_size(a->tree) != a->head.size ||
        (a->from == 0 && (msv_merkle_root(a->tree, a->head.size, root) != MSV_OK ||
                          sodium_memcmp(root, a->head.root, MSV_KT_HASH_LEN) != 0)))
        return bad_log("%s", "the leaves do not make the tree the head signs");
    return 0;
}

/* A head someone else saw: it must be a head of this log's history. */
static int compare(const struct audit *a, const char *path)
{
    char line[512], detail[1200];
    struct msv_kt_head other;
    uint8_t root[MSV_KT_HASH_LEN];
    FILE *f = fopen(path, "r");

    if (f == NULL || fgets(line, sizeof(line), f) == NULL || !parse_head(line, &other)) {
        if (f != NULL)
            fclose(f);
        fprintf(stderr, "%s: %s: not a head ('missive-head 1 SIZE TIME ROOT SIGNATURE')\n", prog,
                path);
        return EXIT_USAGE;
    }
    fclose(f);
    if (msv_kt_head_verify(&other, a->log_key) != MSV_OK) {
        fprintf(stderr,
                "%s: %s: not signed by the log key this auditor pins, so it cannot be compared: "
                "a head from before a log key rotation, or one under a second key this log "
                "never rotated to (a split view: ask whoever saw it which key it pins)\n",
                prog, path);
        return EXIT_USAGE;
    }
    snprintf(detail, sizeof(detail), "%s (%" PRIu64 " entries)", path, other.size);
    if (other.size > a->head.size)
        return bad_log("the server showed %s more than it shows this auditor: a split view",
                       detail);
    if (a->from > 0 && other.size != a->head.size) {
        fprintf(stderr,
                "%s: %s: only a head of %" PRIu64 " entries can be compared by an "
                "auditor that started at entry %" PRIu64 "\n",
                prog, path, a->head.size, a->from);
        return EXIT_USAGE;
    }
    if (a->from > 0 ? sodium_memcmp(a->head.root, other.root, MSV_KT_HASH_LEN) != 0
                    : (msv_merkle_root(a->tree, other.size, root) != MSV_OK ||
                       sodium_memcmp(root, other.root, MSV_KT_HASH_LEN) != 0))
        return bad_log("the head in %s is not one of this log's: a fork", detail);
    if (!a->quiet)
        printf("%s: the head in %s is this log's\n", prog, detail);
    return 0;
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {{"state", required_argument, NULL, 's'},
                                         {"server", required_argument, NULL, 'S'},
                                         {"fingerprint", required_argument, NULL, 'f'},
                                         {"log-key", required_argument, NULL, 'k'},
                                         {"compare", required_argument, NULL, 'c'},
                                         {"print-head", no_argument, NULL, 'p'},
                                         {"quiet", no_argument, NULL, 'q'},
                                         {"start", required_argument, NULL, 'b'},
                                         {"help", no_argument, NULL, 'h'},
                                         {NULL, 0, NULL, 0}};
    struct audit a = {0};
    const char *state = NULL, *server = NULL, *fingerprint = NULL, *log_key = NULL;
    const char *start_at = NULL;
    const char *compares[MAX_COMPARE];
    size_t n_compare = 0;
    uint64_t before, added = 0;
    int print_head = 0, opt, rc, loaded;

    a.cutover = -1;
    while ((opt = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (opt) {
        case 's':
            state = optarg;
            break;
        case 'S':
            server = optarg;
            break;
        case 'f':
            fingerprint = optarg;
            break;
        case 'k':
            log_key = optarg;
            break;
        case 'c':
            if (n_compare == MAX_COMPARE) {
                fprintf(stderr, "%s: at most %d --compare\n", prog, MAX_COMPARE);
                return EXIT_USAGE;
            }
            compares[n_compare++] = optarg;
            break;
        case 'p':
            print_head = 1;
            break;
        case 'q':
            a.quiet = 1;
            break;
        case 'b':
            start_at = optarg;
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return EXIT_USAGE;
        }
    }
    if (optind != argc || state == NULL) {
        usage(stderr);
        return EXIT_USAGE;
    }
    if (msv_init() != MSV_OK || msv_merkle_new(&a.tree) != MSV_OK) {
        fprintf(stderr, "%s: cannot initialise\n", prog);
        return EXIT_FAILURE;
    }
    loaded = load_state(&a, state);
    if (loaded < 0) {
        fprintf(stderr, "%s: %s is not an audit state this program wrote (or it was changed)\n",
                prog, state);
        rc = EXIT_USAGE;
        goto out;
    }
    if (loaded == 0)
        a.have_kd = 1; /* a first run checks the key directory from the empty tree */
    if (start_at != NULL) {
        char *end = NULL;
        unsigned long long v = strtoull(start_at, &end, 10);

        if (loaded != 0 || end == start_at || *end != '\0' || start_at[0] == '-') {
            fprintf(stderr, "%s: --start: a log index, on the first run only\n", prog);
            rc = EXIT_USAGE;
            goto out;
        }
        /* the key directory from the tree the first step read starts from */
        a.from = a.kd_size = v;
        a.have_kd = v == 0;
    }
    if (server != NULL) {
        const char *colon = strrchr(server, ':');
        char *end = NULL;
        unsigned long port = colon ? strtoul(colon + 1, &end, 10) : 0;

        if (colon == NULL || colon == server || (size_t)(colon - server) >= sizeof(a.host) ||
            end == NULL || *end != '\0' || port == 0 || port > 65535) {
            fprintf(stderr, "%s: --server: HOST:PORT\n", prog);
            rc = EXIT_USAGE;
            goto out;
        }
        snprintf(a.host, sizeof(a.host), "%.*s", (int)(colon - server), server);
        a.port = (uint16_t)port;
    } else if (loaded == 0) {
        fprintf(stderr, "%s: the first run needs --server\n", prog);
        rc = EXIT_USAGE;
        goto out;
    }
    if (fingerprint != NULL) {
        uint8_t fp[32];

        if (!hex_field(fingerprint, fp, sizeof(fp)) ||
            (a.have_fingerprint && memcmp(fp, a.fingerprint, 32) != 0)) {
            fprintf(stderr, "%s: --fingerprint: 64 hex digits (and the pinned one, if any)\n",
                    prog);
            rc = EXIT_USAGE;
            goto out;
        }
        memcpy(a.fingerprint, fp, 32);
        a.have_fingerprint = 1;
    }
    if (log_key != NULL) {
        uint8_t key[MSV_KT_KEY_LEN];

        if (!hex_field(log_key, key, sizeof(key)) ||
            (a.have_key && memcmp(key, a.log_key, sizeof(key)) != 0)) {
            fprintf(stderr, "%s: --log-key: 64 hex digits (and the pinned one, if any)\n", prog);
            rc = EXIT_USAGE;
            goto out;
        }
        memcpy(a.log_key, key, sizeof(key));
        a.have_key = 1;
    }
    before = a.have_head ? a.head.size : 0;
    rc = follow(&a, &added);
    if (rc == 0 && !save_state(&a, state)) {
        fprintf(stderr, "%s: cannot write %s: %s\n", prog, state, strerror(errno));
        rc = EXIT_FAILURE;
    }
    for (size_t i = 0; rc == 0 && i < n_compare; i++)
        rc = compare(&a, compares[i]);
    if (rc == 0 && !a.quiet)
        printf("%s: the log checks out: %" PRIu64 " entries (%" PRIu64 " new), every one proven; "
               "the head extends the one of %" PRIu64 " entries seen before\n",
               prog, a.head.size, added, before);
    if (rc == 0 && print_head) {
        char line[512];

        format_head(&a.head, line, sizeof(line));
        printf("%s\n", line);
    }
out:
    msv_merkle_free(a.tree);
    owners_free(&a.owners);
    return rc;
}
