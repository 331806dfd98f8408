/*
 * The key directory's lineage as the owner's monitor sees it (docs/transparency.md, "The
 * monitor's lineage"): the monitor pins the key directory's root at a log size and, at each run,
 * checks the append-only steps of every log entry since (RFC 9162's consistency proof does the
 * same for the log): each starts from the tree the one before it made, each version-4 leaf is
 * what its step adds, and the last makes the root signed for the newest head. A directory that
 * grew another tree (a lineage shown to others, or an entry changed behind the log's back) cannot
 * show this device a step from the tree it pinned.
 *
 * Setting "kt_monitor_epoch": u64be log size, the key directory's root (32) for it.
 * Setting "kt_cutover": u64be the index of the log's cut-over entry (docs/transparency.md, "Leaves
 * that name no handle"), once an answer named it: checked in every answer as missive-audit does.
 * Setting "kt_seen_roots": the roots lookups showed this device that the pinned lineage has not
 * reached yet, checked when its steps reach their size: u32be count of roots not kept (the list
 * was full), then up to SEEN_MAX of (u64be log size, root (32), u64be ms since the epoch when
 * kept or last told), by size.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "client/internal.h"
#include "client/requests.h"
#include "client/lineage.h"
#include "client/transparency.h"
#include "missive/ptree.h"
#include "missive/util.h"
#include "util/endian.h"

#define LINEAGE "kt_monitor_epoch"
#define LINEAGE_LEN (8 + MSV_PT_HASH_LEN)
/* LogRead answers a run reads (256 entries each at most): the rest waits for the next run */
#define PAGES_MAX 16
#define CUTOVER "kt_cutover" /* u64be the log's cut-over entry, once an answer named it */
#define SEEN "kt_seen_roots"
/* roots kept for checking; when full the smallest sizes stay, the rest are counted and told */
#define SEEN_ENTRY (8 + MSV_PT_HASH_LEN + 8)
/* a root a lookup showed that stays unchecked this long is told (again a day later) */
#define SEEN_STALL_MS (24LL * 3600 * 1000)

struct lineage {
    uint64_t size;
    uint8_t root[MSV_PT_HASH_LEN];
};

static msv_err lineage_put(struct msv_client *c, const struct lineage *l)
{
    uint8_t v[LINEAGE_LEN];

    msv_put_u64be(v, l->size);
    memcpy(v + 8, l->root, MSV_PT_HASH_LEN);
    return msv_client_db_set(c->db, LINEAGE, v, sizeof(v));
}

/* The root this device's last accepted lookup showed, with that root's own log size. */
static msv_err lineage_newest(struct msv_client *c, struct lineage *l)
{
    uint8_t epoch[MSV_LOG_EPOCH_LEN];
    uint64_t size = 0;
    /* the kept root with its own size: the known size may be a newer head's without one */
    msv_err err = msv_kt_kept_epoch(c->db, &size, epoch);

    if (err == MSV_OK) {
        l->size = size;
        memcpy(l->root, epoch, MSV_PT_HASH_LEN);
    }
    return err;
}

/* The log's cut-over this device's lineage read (setting CUTOVER); -1 before it knows one. */
static int64_t cutover_get(struct msv_client_db *db)
{
    uint8_t *v = NULL;
    size_t len = 0;
    int64_t at = -1;

    if (msv_client_db_get(db, CUTOVER, &v, &len) == MSV_OK && len == 8 &&
        msv_get_u64be(v) <= INT64_MAX)
        at = (int64_t)msv_get_u64be(v);
    free(v);
    return at;
}

static msv_err cutover_put(struct msv_client_db *db, int64_t at)
{
    uint8_t v[8];

    msv_put_u64be(v, (uint64_t)at);
    return msv_client_db_set(db, CUTOVER, v, sizeof(v));
}

static msv_err lineage_get(struct msv_client *c, struct lineage *l)
{
    uint8_t *v = NULL;
    size_t len = 0;
    msv_err err = msv_client_db_get(c->db, LINEAGE, &v, &len);

    if (err == MSV_OK && len != LINEAGE_LEN)
        err = MSV_ERR_PARSE;
    if (err == MSV_OK) {
        l->size = msv_get_u64be(v);
        memcpy(l->root, v + 8, MSV_PT_HASH_LEN);
    }
    free(v);
    return err;
}

/* What one page read from l->size holds: per entry whether its step adds a version, and a
 * version-4 leaf's label and value; its inclusion in the answer's head checked. */
struct page {
    uint8_t adds[MSV_KT_READ_MAX], has[MSV_KT_READ_MAX];
    uint8_t want[MSV_KT_READ_MAX][MSV_PT_LABEL_LEN + MSV_PT_VALUE_LEN];
};

static msv_err classify(const Msv__Wire__LogEntries *r, const struct msv_kt_head *head,
                        uint64_t start, struct page *pg)
{
    static _Thread_local uint8_t path[MSV_KT_PROOF_MAX][MSV_KT_HASH_LEN];
    struct msv_kt_rotation rot;
    struct msv_kt_v4_leaf v4;

    if (r->n_entries > MSV_KT_READ_MAX)
        return MSV_ERR_AUTH;
    for (size_t i = 0; i < r->n_entries; i++) {
        const Msv__Wire__LogProof *p = r->entries[i];
        uint8_t h[MSV_KT_HASH_LEN];

        if (p->index != start + i || p->n_path > MSV_KT_PROOF_MAX ||
            (p->leaf_hash.len != 0 && (p->leaf_hash.len != MSV_KT_HASH_LEN || p->leaf.len != 0)))
            return MSV_ERR_AUTH;
        for (size_t k = 0; k < p->n_path; k++) {
            if (p->path[k].len != MSV_KT_HASH_LEN)
                return MSV_ERR_AUTH;
            memcpy(path[k], p->path[k].data, MSV_KT_HASH_LEN);
        }
        if (p->leaf_hash.len != 0)
            memcpy(h, p->leaf_hash.data, MSV_KT_HASH_LEN);
        else
            msv_kt_leaf_hash(p->leaf.data, p->leaf.len, h);
        if (msv_merkle_verify_inclusion(h, p->index, head->size, path, p->n_path, head->root) !=
            MSV_OK)
            return MSV_ERR_AUTH;
        pg->has[i] = 0;
        /* a rotation or the cut-over adds nothing; any other entry is a handle's version */
        pg->adds[i] = p->leaf_hash.len != 0 ||
                      (msv_kt_rotation_leaf_parse(p->leaf.data, p->leaf.len, &rot) != MSV_OK &&
                       msv_kt_cutover_leaf_parse(p->leaf.data, p->leaf.len) != MSV_OK);
        if (p->leaf_hash.len == 0 &&
            msv_kt_v4_leaf_parse(p->leaf.data, p->leaf.len, &v4) == MSV_OK) {
            memcpy(pg->want[i], v4.label, MSV_PT_LABEL_LEN);
            memcpy(pg->want[i] + MSV_PT_LABEL_LEN, v4.value, MSV_PT_VALUE_LEN);
            pg->has[i] = 1;
        }
    }
    return MSV_OK;
}

/* A setting that does not parse counts as roots not kept (told, never silently lost). */
static void seen_get(struct msv_client_db *db, struct msv_kt_seen_roots *s)
{
    uint8_t *v = NULL;
    size_t len = 0;
    msv_err err = msv_client_db_get(db, SEEN, &v, &len);

    memset(s, 0, sizeof(*s));
    if (err == MSV_OK &&
        (len < 4 || (len - 4) % SEEN_ENTRY != 0 || (len - 4) / SEEN_ENTRY > SEEN_MAX)) {
        s->dropped = 1;
    } else if (err == MSV_OK) {
        s->dropped = msv_get_u32be(v);
        s->n = (len - 4) / SEEN_ENTRY;
        for (size_t i = 0; i < s->n; i++) {
            const uint8_t *p = v + 4 + i * SEEN_ENTRY;

            s->e[i].size = msv_get_u64be(p);
            memcpy(s->e[i].root, p + 8, MSV_PT_HASH_LEN);
            s->e[i].at = (int64_t)msv_get_u64be(p + 8 + MSV_PT_HASH_LEN);
        }
    }
    free(v);
}

static msv_err seen_put(struct msv_client_db *db, const struct msv_kt_seen_roots *s)
{
    uint8_t v[4 + SEEN_MAX * SEEN_ENTRY];

    msv_put_u32be(v, s->dropped);
    for (size_t i = 0; i < s->n; i++) {
        uint8_t *p = v + 4 + i * SEEN_ENTRY;

        msv_put_u64be(p, s->e[i].size);
        memcpy(p + 8, s->e[i].root, MSV_PT_HASH_LEN);
        msv_put_u64be(p + 8 + MSV_PT_HASH_LEN, (uint64_t)s->e[i].at);
    }
    return msv_client_db_set(db, SEEN, v, 4 + s->n * SEEN_ENTRY);
}

msv_err msv_kt_seen_add(struct msv_client_db *db, uint64_t size,
                        const uint8_t root[MSV_PT_HASH_LEN])
{
    static _Thread_local struct msv_kt_seen_roots s;
    size_t at = 0;

    seen_get(db, &s);
    while (at < s.n && s.e[at].size < size)
        at++;
    for (size_t i = at; i < s.n && s.e[i].size == size; i++)
        if (sodium_memcmp(s.e[i].root, root, MSV_PT_HASH_LEN) == 0)
            return MSV_OK; /* kept already */
    if (s.n == SEEN_MAX && at == s.n) {
        s.dropped += s.dropped < UINT32_MAX;
        return seen_put(db, &s);
    }
    if (s.n == SEEN_MAX) { /* the largest size makes room and is counted */
        s.dropped += s.dropped < UINT32_MAX;
        s.n--;
    }
    memmove(&s.e[at + 1], &s.e[at], (s.n - at) * sizeof(s.e[0]));
    s.e[at].size = size;
    memcpy(s.e[at].root, root, MSV_PT_HASH_LEN);
    s.e[at].at = msv_wall_ms();
    s.n++;
    return seen_put(db, &s);
}

/* Forgets the roots at sizes up to the pinned one (checked, or passed by an alarm). */
static void seen_drop_upto(struct msv_kt_seen_roots *s, uint64_t size)
{
    size_t k = 0;

    while (k < s->n && s->e[k].size <= size)
        k++;
    memmove(&s->e[0], &s->e[k], (s->n - k) * sizeof(s->e[0]));
    s->n -= k;
}

/*
 * The root the first k of a page's n steps build from root (the tree at the size a lookup showed
 * this device), or MSV_ERR_AUTH / MSV_ERR_PARSE. The steps are re-counted as a run of k.
 */
static msv_err root_after(const uint8_t *proof, size_t len, const uint8_t *adds, size_t k,
                          uint8_t root[MSV_PT_HASH_LEN])
{
    enum msv_pt_step_fault fault;
    size_t off = 4, bad = 0;
    int have = 1;
    uint8_t *run;
    msv_err err;

    for (size_t i = 0; i < k; i++) {
        size_t path;

        if (off >= len)
            return MSV_ERR_PARSE;
        if (proof[off] == 0) {
            off++;
            continue;
        }
        if (len - off < 65 || (path = msv_pt_path_len(proof + off + 65, len - off - 65)) == 0)
            return MSV_ERR_PARSE;
        off += 65 + path;
    }
    if ((run = malloc(off)) == NULL)
        return MSV_ERR_NOMEM;
    memcpy(run, proof, off);
    msv_put_u32be(run, (uint32_t)k);
    err = msv_pt_verify_steps(run, off, adds, k, &have, root, &bad, &fault);
    free(run);
    return err;
}

static void lineage_alarm(const char *warning, void (*on_alarm)(void *, const char *), void *ctx,
                          size_t *alarms)
{
    (*alarms)++;
    if (on_alarm != NULL)
        on_alarm(ctx, warning);
}

/* The steps of page r (held from start) build, at every size it reaches that a lookup showed this
 * device, the root that lookup showed; *size says which one does not. */
static int seen_fit(const Msv__Wire__LogEntries *r, uint64_t from,
                    const struct msv_kt_seen_roots *s, const struct page *pg,
                    const uint8_t start[MSV_PT_HASH_LEN], uint64_t *size)
{
    uint8_t root[MSV_PT_HASH_LEN];

    for (size_t i = 0; s != NULL && i < s->n; i++) {
        if (s->e[i].size <= from || s->e[i].size > from + r->n_entries)
            continue;
        memcpy(root, start, MSV_PT_HASH_LEN);
        *size = s->e[i].size;
        if (root_after(r->append_proof.data, r->append_proof.len, pg->adds,
                       (size_t)(s->e[i].size - from), root) != MSV_OK ||
            sodium_memcmp(root, s->e[i].root, MSV_PT_HASH_LEN) != 0)
            return 0;
    }
    return 1;
}

/* The answer's head carries a key directory root signed by its log key for size entries. */
static int epoch_signed(const Msv__Wire__LogEntries *r, uint64_t size)
{
    const Msv__Wire__TreeHead *w = r->head;

    return w != NULL && w->epoch_root.len == MSV_PT_HASH_LEN &&
           w->epoch_signature.len == MSV_PT_SIG_LEN && r->log_key.len == MSV_KT_KEY_LEN &&
           msv_pt_epoch_verify(r->log_key.data, size, w->epoch_root.data,
                               w->epoch_signature.data) == MSV_OK;
}

/* The first entry of r that may not stand where it is given the cut-over (msv_kt_fits_cutover);
 * r->n_entries if none. */
static size_t misplaced(const Msv__Wire__LogEntries *r, int64_t cutover)
{
    size_t i = 0;

    while (i < r->n_entries && msv_kt_fits_cutover(r->entries[i], cutover))
        i++;
    return i;
}

int msv_kt_lineage_page(const Msv__Wire__LogEntries *r, const struct msv_kt_head *head,
                        uint64_t from, uint8_t root[MSV_PT_HASH_LEN], int64_t cutover,
                        const struct msv_kt_seen_roots *seen, char *why, size_t why_len)
{
    static _Thread_local struct page pg;
    uint8_t start_root[MSV_PT_HASH_LEN], end_root[MSV_PT_HASH_LEN];
    const Msv__Wire__TreeHead *w = r->head;
    enum msv_pt_step_fault fault = MSV_PT_STEP_OK;
    uint64_t seen_size = 0;
    size_t bad = 0;
    int have = 1;

    memcpy(start_root, root, MSV_PT_HASH_LEN);
    memcpy(end_root, root, MSV_PT_HASH_LEN);
    if (!epoch_signed(r, head->size))
        snprintf(why, why_len,
                 "its head of %" PRIu64 " entries carries no key directory root "
                 "signed by the log key",
                 head->size);
    else if (r->n_entries == 0 || head->size <= from || r->n_entries > head->size - from ||
             classify(r, head, from, &pg) != MSV_OK)
        snprintf(why, why_len, "its entries from %" PRIu64 " are not proven in its log", from);
    else if ((bad = misplaced(r, cutover)) < r->n_entries)
        snprintf(why, why_len,
                 "entry %" PRIu64 ", after the log's cut-over (entry %" PRId64 "), is not a "
                 "version-4 leaf given whole: it hides what the key directory holds, or names a "
                 "handle",
                 from + bad, cutover);
    else if (msv_pt_verify_steps(r->append_proof.data, r->append_proof.len, pg.adds, r->n_entries,
                                 &have, end_root, &bad, &fault) != MSV_OK ||
             msv_pt_steps_match(r->append_proof.data, r->append_proof.len, r->n_entries,
                                (const uint8_t(*)[MSV_PT_LABEL_LEN + MSV_PT_VALUE_LEN]) pg.want,
                                pg.has, &bad) != MSV_OK)
        snprintf(why, why_len,
                 "log entry %" PRIu64 "'s append-only step does not grow the tree "
                 "this device checked",
                 from + bad);
    else if (from + r->n_entries == head->size &&
             sodium_memcmp(end_root, w->epoch_root.data, MSV_PT_HASH_LEN) != 0)
        snprintf(why, why_len, "the steps do not end at the root signed for %" PRIu64 " entries",
                 head->size);
    else if (!seen_fit(r, from, seen, &pg, start_root, &seen_size))
        snprintf(why, why_len,
                 "the root a lookup showed this device for %" PRIu64 " entries is not the tree "
                 "the steps build there",
                 seen_size);
    else {
        memcpy(root, end_root, MSV_PT_HASH_LEN);
        return 1;
    }
    return 0;
}

/*
 * One answer read from l->size: its head checked as every answer (and adopted), its entries and
 * steps from the pinned tree; l moves to where they end. *fork: the steps do not hold (why says
 * why); *done: the pinned size reached the head's.
 */
static msv_err take_page(struct msv_client *c, const Msv__Wire__LogEntries *r, struct lineage *l,
                         const struct msv_kt_seen_roots *seen, int64_t *cutover, int *fork,
                         int *done, char *why, size_t why_len)
{
    Msv__Wire__LogEntries head_only = *r;
    struct msv_kt_head head;
    msv_err err;

    head_only.n_entries = 0; /* the entries are checked below: some are leaf hashes */
    err = msv_kt_check_entries(c->db, &head_only, l->size, &head, why, why_len);
    if (err != MSV_OK)
        return err;
    *done = head.size <= l->size + r->n_entries;
    if (head.size <= l->size) {
        *done = 1;
        return MSV_OK;
    }
    /* the log's cut-over, as missive-audit checks it: where leaves stop naming handles */
    *fork = msv_kt_check_cutover(r, &head, l->size, l->size, cutover, why, why_len) != MSV_OK ||
            !msv_kt_lineage_page(r, &head, l->size, l->root, *cutover, seen, why, why_len);
    if (*fork && epoch_signed(r, head.size)) {
        /* the alarm once; the watch goes on from the directory's newest root */
        l->size = head.size;
        memcpy(l->root, r->head->epoch_root.data, MSV_PT_HASH_LEN);
        *done = 1;
    } else if (*fork) {
        /* no signed root in the head (none, or not 32 bytes, which was copied as 32): the one
         * this device's last lookup accepted, as when the steps are gone */
        err = lineage_newest(c, l);
        *done = 1;
        return err == MSV_ERR_NOT_FOUND ? MSV_OK : err;
    } else {
        l->size += r->n_entries;
    }
    return MSV_OK;
}

/*
 * Tells of the roots a lookup showed that no run could check: the ones the full list did not keep,
 * and those the lineage has not reached for SEEN_STALL_MS (its LogRead limited, or the log far
 * ahead); said again a day later.
 */
static void seen_tell(struct msv_kt_seen_roots *s, void (*on_alarm)(void *, const char *),
                      void *ctx, size_t *alarms)
{
    int64_t now = msv_wall_ms(), oldest = s->n != 0 ? s->e[0].at : now;
    char warning[500];

    if (s->dropped != 0) {
        snprintf(warning, sizeof(warning),
                 "%" PRIu32 " key directory roots that lookups showed this device were not kept "
                 "to be checked against the directory's lineage (more than %d waited): the "
                 "directory may have shown this device a directory it does not show others",
                 s->dropped, SEEN_MAX);
        lineage_alarm(warning, on_alarm, ctx, alarms);
        s->dropped = 0;
    }
    if (s->n == 0)
        return;
    for (size_t i = 1; i < s->n; i++)
        if (s->e[i].at < oldest)
            oldest = s->e[i].at;
    if (now - oldest < SEEN_STALL_MS)
        return;
    snprintf(warning, sizeof(warning),
             "the directory has not let this device check, for %lld hours, that the key directory "
             "root a lookup showed it for %" PRIu64 " log entries grows from the one it checked "
             "(%zu such roots wait): it may show this device a directory it does not show others",
             (long long)((now - oldest) / 3600000), s->e[0].size, s->n);
    lineage_alarm(warning, on_alarm, ctx, alarms);
    for (size_t i = 0; i < s->n; i++)
        s->e[i].at = now;
}

msv_err client_lineage_check(struct msv_client *c, void (*on_alarm)(void *, const char *),
                             void *ctx, size_t *alarms)
{
    static _Thread_local struct msv_kt_seen_roots seen;
    struct lineage l;
    msv_err err = lineage_get(c, &l);
    int done = 0, known = err == MSV_OK; /* l holds a size */

    seen_get(c->db, &seen);
    if (err == MSV_ERR_NOT_FOUND || err == MSV_ERR_PARSE) {
        /* where the lineage starts: the root this device's last lookup accepted */
        err = lineage_newest(c, &l);
        if (err == MSV_OK)
            err = lineage_put(c, &l);
        err = err == MSV_ERR_NOT_FOUND ? MSV_OK : err;
        known = err == MSV_OK;
        done = 1;
    }
    for (int page = 0; err == MSV_OK && !done && page < PAGES_MAX; page++) {
        char why[400] = "", warning[700];
        msv_frame *r = NULL;
        uint64_t from = l.size;
        int fork = 0;

        err = msv_request_log_read(c->conn, l.size, MSV_KT_READ_MAX, msv_kt_known_size(c->db), 1,
                                   15000, &r, &c->why);
        if (err == MSV_ERR_INVALID && c->why.code == MSV__WIRE__ERROR_CODE__ERROR_PROOF_GONE) {
            /* an auditor that kept up can check them; this device goes on from its newest */
            snprintf(why, sizeof(why), "%s", "it no longer keeps the steps from there");
            fork = 1;
            err = lineage_newest(c, &l);
            err = err == MSV_ERR_NOT_FOUND ? MSV_OK : err;
        } else if (err == MSV_ERR_INVALID) {
            err = MSV_OK; /* limited: the next run reads on (seen_tell if it never does) */
            break;
        } else if (err == MSV_OK) {
            int64_t cutover = cutover_get(c->db), was = cutover;

            err = take_page(c, r->log_entries, &l, &seen, &cutover, &fork, &done, why, sizeof(why));
            if (err == MSV_OK && cutover != was)
                err = cutover_put(c->db, cutover);
        }
        msv_frame_free(r);
        if (err == MSV_ERR_AUTH) { /* a head the checks refuse */
            snprintf(why, sizeof(why), "%s", c->why.message);
            fork = 1;
            err = MSV_OK;
        }
        if (fork) {
            snprintf(warning, sizeof(warning),
                     "the directory's key directory does not grow from the one this device "
                     "checked at %" PRIu64 " log entries: %s; it may show others a directory "
                     "(another lineage of it) that it does not show this device",
                     from, why);
            lineage_alarm(warning, on_alarm, ctx, alarms);
            done = 1;
        }
        if (err == MSV_OK)
            err = lineage_put(c, &l);
    }
    if (known) { /* told even when the read failed: a directory that hangs up is not silent */
        msv_err put;

        seen_drop_upto(&seen, l.size);
        seen_tell(&seen, on_alarm, ctx, alarms);
        put = seen_put(c->db, &seen);
        err = err == MSV_OK ? put : err;
    }
    return err;
}
