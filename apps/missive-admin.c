/*
 * missive-admin: what an operator of missived needs beside the server itself:
 * the accounts, suspending one, queue and storage statistics, and sweeping
 * what has expired. It works on the server's data directory, also while
 * missived runs (SQLite takes care of two processes at once).
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <sodium.h>

#include "missive/kt.h"
#include "missive/util.h"
#include "server/admin_api.h"
#include "server/blob_backend.h"
#include "server/cluster.h"
#include "server/codes.h"
#include "server/control.h"
#include "server/config.h"
#include "server/invites.h"
#include "store/store.h"
#include "admin_backup.h"
#include "admin_http.h"
#include "term.h"

enum { EXIT_ERR = 1, EXIT_USAGE = 2 };

/* How many words the reports command takes after a first word: 1 for list, 2 with an id. */
static int is_report_action(const char *word)
{
    if (strcmp(word, "list") == 0)
        return 1;
    return strcmp(word, "show") == 0 || strcmp(word, "suspend") == 0 || strcmp(word, "dismiss") == 0
               ? 2
               : -1;
}

/* How many words the invites command takes after a first word: 1 for list or create, 2 to revoke.
 */
static int is_invite_action(const char *word)
{
    if (strcmp(word, "list") == 0 || strcmp(word, "create") == 0)
        return 1;
    return strcmp(word, "revoke") == 0 ? 2 : -1;
}

static void usage(FILE *f)
{
    fprintf(f,
            "usage: missive-admin [--config FILE] [--data-dir DIR] [-o json] COMMAND\n"
            "\n"
            "Looks after a missived data directory, also while missived runs.\n"
            "\n"
            "commands:\n"
            "  accounts          every account: handle, created, devices (and waiting ones),\n"
            "                    envelopes (and bytes) queued for them and sent by them\n"
            "                    and not yet delivered, attachment bytes, suspended or not\n"
            "  suspend HANDLE    the account's devices cannot connect or add devices; devices\n"
            "                    connected now are cut off at once (every node of a\n"
            "                    cluster is told through its Redis); nothing is deleted\n"
            "  unsuspend HANDLE  lifts that\n"
            "  reset-password HANDLE  sends the handle a code (the verification hook; no\n"
            "                    hook: printed) to set a new password with\n"
            "  delete HANDLE --yes  deletes the account for good: its devices, what waits\n"
            "                    for them, its attachments and reports; a tombstone goes\n"
            "                    into the transparency log; its devices are cut off\n"
            "  reports [list]    abuse reports (missive report), newest first: id, when,\n"
            "                    reporter, reported account, state, reason\n"
            "  reports show ID   one report, with the messages' text if the reporter sent it\n"
            "  reports suspend ID  suspends the reported account (as suspend does) and\n"
            "                    marks the report suspended\n"
            "  reports dismiss ID  marks the report dismissed\n"
            "  invites [list]    registration invites: id, created, uses left and made,\n"
            "                    expiry, state, note (the codes themselves are not kept)\n"
            "  invites create [--uses N] [--days N] [--note TEXT]\n"
            "                    a new invite code for [accounts] registration = invite,\n"
            "                    good for N accounts (1) for N days (7; 0: no expiry);\n"
            "                    printed once\n"
            "  invites revoke ID  the invite's code registers nobody any more\n"
            "  stats             accounts, devices, the queue (envelopes, bytes, oldest),\n"
            "                    attachments, the transparency log, prekeys, the database size\n"
            "  expire            deletes expired envelopes and attachments now\n"
            "  log-rotate-key    replaces the transparency log key: appends a rotation\n"
            "                    entry signed by the old key, writes the new one to\n"
            "                    log.key; restart missived (or it reads the key itself)\n"
            "  backup DIR        copies the data directory into DIR, a new directory, while\n"
            "                    missived runs: the database (SQLite's online backup), the\n"
            "                    log key, the certificate and the attachments\n"
            "  restore DIR       checks the backup in DIR and copies it into --data-dir,\n"
            "                    which must be empty or not exist (missived stopped)\n"
            "  reload            (with --url) the node re-reads its configuration, as on SIGHUP\n"
            "  disconnect HANDLE  (with --url) the account's connections close now, on every\n"
            "                    node; its devices may connect again\n"
            "  migrate --to-postgres CONNINFO\n"
            "                    copies the SQLite store (missived stopped) into an empty\n"
            "                    PostgreSQL database in one transaction; prints each\n"
            "                    table's rows on both sides\n"
            "\n"
            "options:\n"
            "  --config FILE   missived's configuration (for data_dir and the clock)\n"
            "  --data-dir DIR  the data directory (overrides the file)\n"
            "  --to-postgres CONNINFO  for migrate: the target's libpq connection string\n"
            "  --url http://HOST:PORT  reload, disconnect HANDLE and stats through the\n"
            "                  node's admin API on its HTTP port, instead of the data directory\n"
            "  --token-file FILE  the admin token for --url ([http] admin_token_file)\n"
            "  --yes           for delete: do delete\n"
            "  -o json         one JSON object per line\n"
            "  --help          this text\n"
            "\n"
            "exit status: 0 success, 1 error (an unknown handle, storage), 2 usage\n");
}

struct admin {
    struct msv_config cfg;
    struct msv_store *store;
    int json;
    /* invites create */
    unsigned long uses, days;
    const char *note;
    int invite_options; /* one of them was given */
    int yes;            /* delete: do it */
};

#define OPS(a) ((a)->store->ops)
#define IMPL(a) ((a)->store->impl)

static void emit(json_t *j)
{
    json_dumpf(j, stdout, JSON_COMPACT | JSON_ENSURE_ASCII); /* handles as ASCII */
    putchar('\n');
    json_decref(j);
}

static void iso_time(int64_t ms, char out[32])
{
    time_t t = (time_t)(ms / 1000);
    struct tm tm;

    if (ms <= 0 || gmtime_r(&t, &tm) == NULL) {
        snprintf(out, 32, "-");
        return;
    }
    strftime(out, 32, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

static int fail(const char *what, msv_err err)
{
    fprintf(stderr, "missive-admin: %s: %s\n", what, msv_strerror(err));
    return EXIT_ERR;
}

/* One row of the accounts command (or one JSON object). */
static void print_account(const struct admin *a, const struct msv_account_summary *x)
{
    char created[32], *handle = NULL;

    iso_time(x->created_ms, created);
    if (a->json)
        emit(msv_admin_account_json(x));
    /* a handle is what its owner chose: C1 and direction controls are shown, not acted on */
    else if ((handle = term_safe(x->handle, TERM_ONE_LINE)) != NULL)
        printf("%-32s %-20s %7llu %7llu %7llu %11llu %7llu %11llu %13llu %s\n", handle, created,
               (unsigned long long)x->devices, (unsigned long long)x->pending,
               (unsigned long long)x->queued, (unsigned long long)x->queued_bytes,
               (unsigned long long)x->sending, (unsigned long long)x->sending_bytes,
               (unsigned long long)x->attachment_bytes, x->suspended ? "suspended" : "active");
    free(handle);
}

static int cmd_accounts(struct admin *a)
{
    struct msv_account_summary *list = NULL;
    size_t n = 0;
    msv_err err = OPS(a)->account_list(IMPL(a), &list, &n);

    if (err != MSV_OK)
        return fail("reading the accounts", err);
    if (!a->json)
        printf("%-32s %-20s %7s %7s %7s %11s %7s %11s %13s %s\n", "handle", "created", "devices",
               "waiting", "queued", "bytes", "sending", "bytes", "attachments", "state");
    for (size_t i = 0; i < n; i++)
        print_account(a, &list[i]);
    msv_account_summaries_free(list, n);
    return 0;
}

/*
 * The nodes running now close the suspended account's connections: every
 * node of a cluster through its Redis, else the node on this data directory
 * through its control socket. Says whether any was told.
 */
static int tell_nodes(struct admin *a, uint64_t account_id)
{
    int nodes = 0;

    if (a->cfg.redis[0] != '\0') {
        if (msv_cluster_publish_suspended(a->cfg.redis, account_id, &nodes) != MSV_OK)
            fprintf(stderr, "missive-admin: the cluster's Redis (%s) cannot be reached\n",
                    a->cfg.redis);
        if (nodes > 0)
            return 1;
    }
    return msv_control_send_suspended(a->cfg.data_dir, account_id) == MSV_OK;
}

static int tell_suspended(struct admin *a, const char *handle)
{
    uint64_t account_id = 0;
    char *hash = NULL;
    msv_err err = OPS(a)->account_get(IMPL(a), handle, &account_id, &hash);

    free(hash);
    return err == MSV_OK && tell_nodes(a, account_id);
}

/*
 * reset-password HANDLE: a fresh code for the handle, kept (hashed) in the store as a
 * registration code is, sent through the verification hook by missive-admin itself (printed
 * when the server runs without one, as missived logs registration codes); the person sets a
 * new password with it (missive password reset).
 */
static int cmd_reset_password(struct admin *a, const char *handle)
{
    int64_t now = msv_config_now_ms(&a->cfg);
    int hook = strcmp(a->cfg.verification, "hook") == 0;
    uint64_t account = 0;
    uint8_t hash[32];
    char code[8];
    msv_err err = OPS(a)->account_get(IMPL(a), handle, &account, NULL);

    if (err == MSV_ERR_NOT_FOUND) {
        fprintf(stderr, "missive-admin: no account %s\n", handle);
        return EXIT_ERR;
    }
    if (err != MSV_OK)
        return fail("reading the account", err);
    snprintf(code, sizeof(code), "%06u", (unsigned)randombytes_uniform(1000000));
    msv_server_reset_code_hash(handle, code, hash);
    err = OPS(a)->code_put(IMPL(a), handle, hash, now, now + 10 * 60 * 1000);
    sodium_memzero(hash, sizeof(hash));
    if (err == MSV_ERR_EXISTS) {
        fprintf(stderr,
                "missive-admin: a code for %s is still valid; wait until it expires (10 "
                "minutes after it was sent)\n",
                handle);
        return EXIT_ERR;
    }
    if (err != MSV_OK)
        return fail("storing the code", err);
    if (hook && msv_server_run_hook(a->cfg.verification_hook, handle, code) != 0)
        return fail("running the verification hook", MSV_ERR_IO);
    if (a->json)
        emit(hook ? json_pack("{s:s, s:s}", "handle", handle, "sent", "hook")
                  : json_pack("{s:s, s:s, s:s}", "handle", handle, "sent", "none", "code", code));
    else if (hook)
        printf("a code went to %s through the verification hook; with it, run there:\n  missive "
               "password reset %s --server HOST:PORT --code CODE\n",
               handle, handle);
    else
        printf("no verification hook: give %s this code (valid 10 minutes): %s\n  missive "
               "password reset %s --server HOST:PORT --code %s\n",
               handle, code, handle, code);
    sodium_memzero(code, sizeof(code));
    return 0;
}

/*
 * delete HANDLE --yes: what the account's own 'missive account delete' does (docs/missived.md,
 * "Deleting an account"), from the operator's side; the nodes are told as for a suspension,
 * and, finding the account gone, cut its devices off and forget what they cached of it.
 */
static int cmd_delete(struct admin *a, const char *handle)
{
    struct msv_account_deleted del = {0};
    struct msv_blob_backend *blobs = NULL;
    char dir[1100];
    msv_err err;
    int told;

    if (!a->yes) {
        fprintf(stderr,
                "missive-admin: this deletes the account %s for good: its devices, what "
                "waits for them, its attachments, its reports; run again with --yes\n",
                handle);
        return EXIT_USAGE;
    }
    err = OPS(a)->account_delete(IMPL(a), handle, msv_config_now_ms(&a->cfg), &del);
    if (err == MSV_ERR_NOT_FOUND) {
        fprintf(stderr, "missive-admin: no account %s\n", handle);
        return EXIT_ERR;
    }
    if (err != MSV_OK)
        return fail("deleting the account", err);
    snprintf(dir, sizeof(dir), "%s/blobs", a->cfg.data_dir);
    if (del.n_blobs > 0 && msv_blob_backend_open_dir(dir, &blobs) == MSV_OK) {
        for (size_t i = 0; i < del.n_blobs; i++)
            blobs->ops->remove(blobs->impl, del.blobs[i]);
    }
    msv_blob_backend_close(blobs);
    told = tell_nodes(a, del.account_id);
    if (a->json)
        emit(json_pack("{s:s, s:b, s:I, s:I, s:b}", "handle", handle, "deleted", 1, "devices",
                       (json_int_t)del.n_devices, "attachments", (json_int_t)del.n_blobs, "cut_off",
                       told));
    else
        printf("deleted %s: %zu devices, %zu attachments; %s\n", handle, del.n_devices, del.n_blobs,
               told ? "its connected devices are cut off now"
                    : "no running missived could be told: restart it to cut off devices "
                      "connected now");
    msv_account_deleted_clear(&del);
    return 0;
}

#define REPORTS_LISTED 1000

/* One report as a line (show: with its text below) or a JSON object. */
static void print_report(const struct admin *a, const struct msv_report *r, int show)
{
    char created[32];

    iso_time(r->created_ms, created);
    if (a->json) {
        json_t *o =
            json_pack("{s:I, s:s, s:s, s:s, s:s, s:s, s:b}", "id", (json_int_t)r->id, "created",
                      created, "reporter", r->reporter, "reported", r->reported, "state", r->state,
                      "reason", r->reason, "has_text", r->text[0] != '\0');

        if (o != NULL && show)
            json_object_set_new(o, "text", json_string(r->text));
        emit(o);
        return;
    }
    /* every field but the id, the time and the state is what an account wrote */
    printf("%llu\t%s\t", (unsigned long long)r->id, created);
    term_put(stdout, r->reporter, TERM_ONE_LINE);
    putchar('\t');
    term_put(stdout, r->reported, TERM_ONE_LINE);
    printf("\t%s\t", r->state);
    term_put(stdout, r->reason, TERM_ONE_LINE);
    putchar('\n');
    if (show && r->text[0] != '\0') {
        term_put(stdout, r->text, TERM_LINES);
        putchar('\n');
    } else if (show) {
        puts("(the reporter sent no message text)");
    }
}

static int cmd_suspend(struct admin *a, const char *handle, int suspended);

/* An id of a report or invite (what) from the command line; 0 (and says why) if it is none. */
static int parse_id(const char *s, const char *what, unsigned long long *id)
{
    char *end = NULL;

    errno = 0;
    if (s[0] >= '0' && s[0] <= '9')
        *id = strtoull(s, &end, 10);
    if (end == NULL || *end != '\0' || errno != 0 || *id == 0) {
        fprintf(stderr, "missive-admin: %s is not %s id\n", s, what);
        return 0;
    }
    return 1;
}

static int cmd_reports(struct admin *a, int argc, char **argv)
{
    struct msv_report *list = NULL;
    unsigned long long id = 0;
    size_t n = 0;
    msv_err err;
    int rc = 0;

    if (argc == 0 || strcmp(argv[0], "list") == 0) {
        err = OPS(a)->report_list(IMPL(a), REPORTS_LISTED, &list, &n);
        if (err != MSV_OK)
            return fail("reading the reports", err);
        for (size_t i = 0; i < n; i++)
            print_report(a, &list[i], 0);
        msv_reports_free(list, n);
        return 0;
    }
    if (!parse_id(argv[1], "a report", &id))
        return EXIT_USAGE;
    err = OPS(a)->report_get(IMPL(a), id, &list);
    if (err == MSV_ERR_NOT_FOUND) {
        fprintf(stderr, "missive-admin: no report %llu\n", id);
        return EXIT_ERR;
    }
    if (err != MSV_OK)
        return fail("reading the report", err);
    if (strcmp(argv[0], "show") == 0) {
        print_report(a, list, 1);
    } else {
        int suspend = strcmp(argv[0], "suspend") == 0;

        rc = suspend ? cmd_suspend(a, list->reported, 1) : 0;
        err = rc == 0 ? OPS(a)->report_set_state(IMPL(a), id, suspend ? "suspended" : "dismissed")
                      : MSV_OK;
        if (err != MSV_OK)
            rc = fail("recording the decision", err);
        else if (rc == 0 && !suspend && !a->json)
            printf("report %llu dismissed\n", id);
        else if (rc == 0 && !suspend)
            emit(json_pack("{s:I, s:s}", "id", (json_int_t)id, "state", "dismissed"));
    }
    msv_reports_free(list, 1);
    return rc;
}

/* ---- invites -------------------------------------------------------------------------- */

#define INVITE_USES_MAX 100000u
#define INVITE_DAYS_MAX 3650u
#define INVITE_NOTE_MAX 200

static const char *invite_state(const struct msv_invite *v, int64_t now)
{
    if (v->revoked)
        return "revoked";
    if (v->uses_left == 0)
        return "used up";
    return v->expires_ms != 0 && v->expires_ms <= now ? "expired" : "usable";
}

static int invites_create(struct admin *a)
{
    char code[MSV_INVITE_TEXT_LEN], expires[32];
    uint8_t hash[32];
    int64_t now = msv_config_now_ms(&a->cfg);
    int64_t until = a->days == 0 ? 0 : now + (int64_t)a->days * 86400000;
    uint64_t id = 0;
    msv_err err;

    msv_invite_new(code);
    err = msv_invite_hash((const uint8_t *)code, strlen(code), hash);
    if (err == MSV_OK)
        err = OPS(a)->invite_add(IMPL(a), hash, a->note ? a->note : "", (uint32_t)a->uses, now,
                                 until, &id);
    if (err != MSV_OK)
        return fail("storing the invite", err);
    iso_time(until, expires);
    if (a->json)
        emit(json_pack("{s:I, s:s, s:I, s:s}", "id", (json_int_t)id, "code", code, "uses",
                       (json_int_t)a->uses, "expires", until ? expires : "never"));
    else
        printf("invite %llu: %s\n  good for %lu account%s, %s%s; register with\n"
               "  missive register HANDLE --server HOST:PORT --invite %s\n",
               (unsigned long long)id, code, a->uses, a->uses == 1 ? "" : "s",
               until ? "until " : "no expiry", until ? expires : "", code);
    return 0;
}

static int cmd_invites(struct admin *a, int argc, char **argv)
{
    struct msv_invite *list = NULL;
    unsigned long long id = 0;
    int64_t now = msv_config_now_ms(&a->cfg);
    size_t n = 0;
    msv_err err;

    if (a->invite_options && (argc == 0 || strcmp(argv[0], "create") != 0)) {
        fprintf(stderr, "missive-admin: --uses, --days and --note go with invites create\n");
        return EXIT_USAGE;
    }
    if (argc > 0 && strcmp(argv[0], "create") == 0)
        return invites_create(a);
    if (argc == 0 || strcmp(argv[0], "list") == 0) {
        err = OPS(a)->invite_list(IMPL(a), &list, &n);
        if (err != MSV_OK)
            return fail("reading the invites", err);
        if (!a->json && n > 0)
            printf("%-6s %-20s %9s %6s %-20s %-8s %s\n", "id", "created", "uses left", "used",
                   "expires", "state", "note");
        for (size_t i = 0; i < n; i++) {
            char created[32], expires[32], *note = NULL;

            iso_time(list[i].created_ms, created);
            iso_time(list[i].expires_ms, expires);
            if (a->json)
                emit(json_pack("{s:I, s:s, s:I, s:I, s:s, s:s, s:s}", "id", (json_int_t)list[i].id,
                               "created", created, "uses_left", (json_int_t)list[i].uses_left,
                               "used", (json_int_t)list[i].used, "expires",
                               list[i].expires_ms ? expires : "never", "state",
                               invite_state(&list[i], now), "note", list[i].note));
            else if ((note = term_safe(list[i].note, TERM_ONE_LINE)) != NULL)
                printf("%-6llu %-20s %9lu %6lu %-20s %-8s %s\n", (unsigned long long)list[i].id,
                       created, (unsigned long)list[i].uses_left, (unsigned long)list[i].used,
                       list[i].expires_ms ? expires : "never", invite_state(&list[i], now), note);
            free(note);
        }
        msv_invites_free(list, n);
        return 0;
    }
    if (!parse_id(argv[1], "an invite", &id))
        return EXIT_USAGE;
    err = OPS(a)->invite_revoke(IMPL(a), id);
    if (err == MSV_ERR_NOT_FOUND) {
        fprintf(stderr, "missive-admin: no invite %llu\n", id);
        return EXIT_ERR;
    }
    if (err != MSV_OK)
        return fail("revoking the invite", err);
    if (a->json)
        emit(json_pack("{s:I, s:s}", "id", (json_int_t)id, "state", "revoked"));
    else
        printf("invite %llu revoked\n", id);
    return 0;
}

/* A number of --uses or --days within [min, max]; 0 (and says why) if it is none. */
static int count_option(const char *name, const char *s, unsigned long min, unsigned long max,
                        unsigned long *out)
{
    char *end = NULL;

    errno = 0;
    if (s[0] >= '0' && s[0] <= '9')
        *out = strtoul(s, &end, 10);
    if (end == NULL || *end != '\0' || errno != 0 || *out < min || *out > max) {
        fprintf(stderr, "missive-admin: --%s takes a number from %lu to %lu\n", name, min, max);
        return 0;
    }
    return 1;
}

static int cmd_suspend(struct admin *a, const char *handle, int suspended)
{
    msv_err err = OPS(a)->account_set_suspended(IMPL(a), handle, suspended);
    int told = 0;

    if (err == MSV_ERR_NOT_FOUND) {
        fprintf(stderr, "missive-admin: no account %s\n", handle);
        return EXIT_ERR;
    }
    if (err != MSV_OK)
        return fail("changing the account", err);
    if (suspended)
        told = tell_suspended(a, handle);
    if (a->json)
        emit(json_pack("{s:s, s:b, s:b}", "handle", handle, "suspended", suspended, "cut_off",
                       told));
    else if (suspended && told)
        printf("%s is suspended; its connected devices are cut off now\n", handle);
    else if (suspended)
        printf("%s is suspended; no running missived could be told: devices connected now are "
               "cut off at its next reload (systemctl reload missived)\n",
               handle);
    else
        printf("%s is active again\n", handle);
    return 0;
}

/* missive-admin stats as msv_admin_stats_json() has it (taken): the object, or lines of text. */
static int print_stats(const struct admin *a, json_t *j)
{
    json_int_t n[12] = {0};
    const char *oldest = "-";

    if (a->json) {
        emit(j);
        return 0;
    }
    if (json_unpack(j, "{s:I, s:I, s:I, s:I, s:I, s:I, s:s, s:I, s:I, s:I, s:I, s:I}", "accounts",
                    &n[0], "suspended", &n[1], "devices", &n[2], "waiting_devices", &n[3], "queued",
                    &n[4], "queued_bytes", &n[5], "oldest_queued", &oldest, "attachments", &n[6],
                    "attachment_bytes", &n[7], "log_leaves", &n[8], "one_time_prekeys", &n[9],
                    "database_bytes", &n[10]) != 0) {
        json_decref(j);
        fprintf(stderr, "missive-admin: the statistics are not what was expected\n");
        return EXIT_ERR;
    }
    printf("accounts          %lld (%lld suspended)\n", (long long)n[0], (long long)n[1]);
    printf("devices           %lld (%lld waiting for approval)\n", (long long)n[2],
           (long long)n[3]);
    printf("queued envelopes  %lld, %lld bytes, oldest %s\n", (long long)n[4], (long long)n[5],
           oldest);
    printf("attachments       %lld, %lld bytes\n", (long long)n[6], (long long)n[7]);
    printf("log leaves        %lld\n", (long long)n[8]);
    printf("one-time prekeys  %lld\n", (long long)n[9]);
    printf("database          %lld bytes\n", (long long)n[10]);
    json_decref(j);
    return 0;
}

static int cmd_stats(struct admin *a)
{
    struct msv_store_stats st = {0};
    json_t *j;
    msv_err err = OPS(a)->stats(IMPL(a), &st);

    if (err != MSV_OK)
        return fail("reading the statistics", err);
    j = msv_admin_stats_json(&st);
    return j != NULL ? print_stats(a, j) : fail("reading the statistics", MSV_ERR_NOMEM);
}

/* The "error" of an admin API answer, or the status line's sense. */
static int remote_failed(int status, json_t *j)
{
    const char *error = json_string_value(json_object_get(j, "error"));

    if (status == 401)
        fprintf(stderr, "missive-admin: the node refused the token (401)\n");
    else
        fprintf(stderr, "missive-admin: the node answered %d: %s\n", status,
                error != NULL ? error : "(no reason given)");
    json_decref(j);
    return EXIT_ERR;
}

/* reload, disconnect HANDLE or stats through a node's admin API (--url, --token-file). */
static int cmd_remote(struct admin *a, const char *url, const char *token_file, const char *cmd,
                      const char *handle)
{
    int post = strcmp(cmd, "stats") != 0, status = 0;
    char path[32], *body = NULL, *answer = NULL;
    json_t *j;

    if (url == NULL || token_file == NULL ||
        (strcmp(cmd, "stats") != 0 && strcmp(cmd, "reload") != 0 &&
         strcmp(cmd, "disconnect") != 0)) {
        fprintf(stderr, "missive-admin: reload, disconnect HANDLE and stats through a node's "
                        "admin API take --url and --token-file, and other commands neither\n");
        return EXIT_USAGE;
    }
    snprintf(path, sizeof(path), "/admin/%s", cmd);
    if (handle != NULL && (j = json_pack("{s:s}", "handle", handle)) != NULL) {
        body = json_dumps(j, JSON_COMPACT);
        json_decref(j);
    }
    if (!admin_http(url, token_file, post, path, body, &status, &answer)) {
        free(body);
        return EXIT_ERR;
    }
    free(body);
    j = json_loads(answer, 0, NULL);
    free(answer);
    if (status < 200 || status > 299 || j == NULL)
        return remote_failed(status, j);
    if (strcmp(cmd, "stats") == 0)
        return print_stats(a, j);
    if (a->json)
        emit(j);
    else if (handle != NULL)
        printf("%s's connections are closed now (%lld node%s told)\n", handle,
               (long long)json_integer_value(json_object_get(j, "nodes")),
               json_integer_value(json_object_get(j, "nodes")) == 1 ? "" : "s");
    else
        printf("missived reloads its configuration (as on SIGHUP)\n");
    if (!a->json)
        json_decref(j);
    return 0;
}

/* Writes the 64-byte secret key to path (mode 0600, synced). */
static msv_err write_key(const char *path, const uint8_t *sk)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    msv_err err = fd >= 0 && write(fd, sk, 64) == 64 && fsync(fd) == 0 ? MSV_OK : MSV_ERR_IO;

    if (fd >= 0 && close(fd) != 0)
        err = MSV_ERR_IO;
    return err;
}

/*
 * The rotation entry from the key in sk_path to a new one, appended where the
 * log ends; the new key goes to sk_path.new first, then over sk_path. The old
 * key is not kept: the entry it signed is all a client needs.
 */
static int rotate_key(struct admin *a, const char *sk_path, uint8_t *old_sk, uint8_t *new_sk)
{
    struct msv_kt_rotation r = {.time_ms = msv_wall_ms()};
    struct msv_store_stats st = {0};
    char tmp[1300], hex[2 * MSV_KT_KEY_LEN + 1];
    uint8_t *leaf = NULL;
    size_t len = 0;
    msv_err err = OPS(a)->stats(IMPL(a), &st);

    if (err != MSV_OK)
        return fail("reading the log", err);
    crypto_sign_ed25519_sk_to_pk(r.old_key, old_sk);
    crypto_sign_keypair(r.new_key, new_sk);
    r.size = st.log_leaves + 1;
    err = msv_kt_rotation_sign(old_sk, r.new_key, r.size, r.signature);
    if (err == MSV_OK)
        err = msv_kt_rotation_leaf_encode(&r, &leaf, &len);
    snprintf(tmp, sizeof(tmp), "%s.new", sk_path);
    if (err == MSV_OK && write_key(tmp, new_sk) != MSV_OK) {
        fprintf(stderr, "missive-admin: cannot write %s: %s\n", tmp, strerror(errno));
        free(leaf);
        return EXIT_ERR;
    }
    if (err == MSV_OK)
        err = OPS(a)->kt_append(IMPL(a), st.log_leaves, leaf, len);
    free(leaf);
    if (err != MSV_OK) {
        unlink(tmp);
        return fail(err == MSV_ERR_EXISTS ? "appending the rotation (the log grew; run again)"
                                          : "appending the rotation",
                    err);
    }
    if (rename(tmp, sk_path) != 0) {
        fprintf(stderr,
                "missive-admin: the rotation is logged but %s cannot replace %s (%s): move it "
                "there by hand, missived signs no head until then\n",
                tmp, sk_path, strerror(errno));
        return EXIT_ERR;
    }
    if (msv_hex_encode(r.new_key, MSV_KT_KEY_LEN, hex, sizeof(hex)) != MSV_OK)
        return EXIT_ERR;
    if (a->json)
        emit(json_pack("{s:I, s:s}", "entry", (json_int_t)st.log_leaves, "log_key", hex));
    else
        printf("log key rotated at entry %llu; the new key: %s\n",
               (unsigned long long)st.log_leaves, hex);
    return 0;
}

static int cmd_log_rotate_key(struct admin *a)
{
    char path[1200];
    uint8_t *old_sk = sodium_malloc(64), *new_sk = sodium_malloc(64);
    int fd, rc = EXIT_ERR;

    snprintf(path, sizeof(path), "%s/log.key", msv_config_shared_dir(&a->cfg));
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (old_sk == NULL || new_sk == NULL)
        fprintf(stderr, "missive-admin: out of memory\n");
    else if (fd < 0 || read(fd, old_sk, 64) != 64)
        fprintf(stderr, "missive-admin: %s is not a log key (64 bytes)\n", path);
    else
        rc = rotate_key(a, path, old_sk, new_sk);
    if (fd >= 0)
        close(fd);
    sodium_free(old_sk);
    sodium_free(new_sk);
    return rc;
}

#define ADMIN_EXPIRE_BATCH 10000

static int cmd_expire(struct admin *a)
{
    int64_t now = msv_config_now_ms(&a->cfg);
    uint8_t(*ids)[MSV_BLOB_ID_LEN] = NULL;
    struct msv_blob_backend *blobs = NULL;
    size_t envelopes = 0, n = 0;
    char dir[1100];
    msv_err err = OPS(a)->queue_expire(IMPL(a), now, &envelopes);

    if (err != MSV_OK)
        return fail("expiring envelopes", err);
    snprintf(dir, sizeof(dir), "%s/blobs", a->cfg.data_dir);
    err = msv_blob_backend_open_dir(dir, &blobs);
    /* in batches, each committed before its files go, until one is not full */
    for (size_t got = ADMIN_EXPIRE_BATCH; err == MSV_OK && got == ADMIN_EXPIRE_BATCH;) {
        err = OPS(a)->blob_expire(IMPL(a), now, ADMIN_EXPIRE_BATCH, &ids, &got);
        for (size_t i = 0; err == MSV_OK && i < got; i++)
            blobs->ops->remove(blobs->impl, ids[i]);
        n += err == MSV_OK ? got : 0;
        free(ids);
        ids = NULL;
    }
    msv_blob_backend_close(blobs);
    if (err != MSV_OK)
        return fail("expiring attachments", err);
    if (a->json)
        emit(json_pack("{s:I, s:I}", "envelopes", (json_int_t)envelopes, "attachments",
                       (json_int_t)n));
    else
        printf("expired %zu envelopes and %zu attachments\n", envelopes, n);
    return 0;
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'}, {"data-dir", required_argument, NULL, 'd'},
        {"output", required_argument, NULL, 'o'}, {"help", no_argument, NULL, 'h'},
        {"uses", required_argument, NULL, 'u'},   {"days", required_argument, NULL, 'D'},
        {"note", required_argument, NULL, 'n'},   {"to-postgres", required_argument, NULL, 'P'},
        {"url", required_argument, NULL, 'U'},    {"token-file", required_argument, NULL, 'T'},
        {"yes", no_argument, NULL, 'y'},          {NULL, 0, NULL, 0},
    };
    const char *config = NULL, *data_dir = NULL, *cmd, *to_postgres = NULL, *url = NULL,
               *token_file = NULL;
    struct admin a = {.uses = 1, .days = 7};
    char err[1024], db[1100], why[1400];
    int ch, rc, want, known;
    struct stat sb;

    opterr = 0;
    while ((ch = getopt_long(argc, argv, "o:h", opts, NULL)) != -1) {
        switch (ch) {
        case 'c':
            config = optarg;
            break;
        case 'd':
            data_dir = optarg;
            break;
        case 'o':
            if (strcmp(optarg, "json") != 0 && strcmp(optarg, "text") != 0) {
                fprintf(stderr, "missive-admin: -o takes json or text\n");
                return EXIT_USAGE;
            }
            a.json = strcmp(optarg, "json") == 0;
            break;
        case 'h':
            usage(stdout);
            return 0;
        case 'P':
            to_postgres = optarg;
            break;
        case 'U':
            url = optarg;
            break;
        case 'T':
            token_file = optarg;
            break;
        case 'y':
            a.yes = 1;
            break;
        case 'u':
            if (!count_option("uses", optarg, 1, INVITE_USES_MAX, &a.uses))
                return EXIT_USAGE;
            a.invite_options = 1;
            break;
        case 'D':
            if (!count_option("days", optarg, 0, INVITE_DAYS_MAX, &a.days))
                return EXIT_USAGE;
            a.invite_options = 1;
            break;
        case 'n':
            if (strlen(optarg) > INVITE_NOTE_MAX ||
                !msv_utf8_is_valid((const uint8_t *)optarg, strlen(optarg))) {
                fprintf(stderr, "missive-admin: --note takes up to %d bytes of UTF-8\n",
                        INVITE_NOTE_MAX);
                return EXIT_USAGE;
            }
            a.note = optarg;
            a.invite_options = 1;
            break;
        default:
            fprintf(stderr, "missive-admin: unknown option or missing argument: %s\n",
                    argv[optind - 1]);
            usage(stderr);
            return EXIT_USAGE;
        }
    }
    if (optind >= argc) {
        usage(stderr);
        return EXIT_USAGE;
    }
    cmd = argv[optind];
    want = strcmp(cmd, "suspend") == 0 || strcmp(cmd, "unsuspend") == 0 ||
                   strcmp(cmd, "backup") == 0 || strcmp(cmd, "restore") == 0 ||
                   strcmp(cmd, "delete") == 0 || strcmp(cmd, "reset-password") == 0
               ? 1
               : 0;
    if (strcmp(cmd, "reports") == 0) /* none or list; show, suspend or dismiss with an id */
        want = argc - optind - 1 == 0 ? 0 : is_report_action(argv[optind + 1]);
    if (strcmp(cmd, "invites") == 0) /* none, list or create; revoke with an id */
        want = argc - optind - 1 == 0 ? 0 : is_invite_action(argv[optind + 1]);
    known = want || strcmp(cmd, "accounts") == 0 || strcmp(cmd, "stats") == 0 ||
            strcmp(cmd, "expire") == 0 || strcmp(cmd, "log-rotate-key") == 0 ||
            strcmp(cmd, "reports") == 0 || strcmp(cmd, "invites") == 0 ||
            strcmp(cmd, "migrate") == 0 || strcmp(cmd, "reload") == 0 ||
            strcmp(cmd, "disconnect") == 0;
    if (strcmp(cmd, "disconnect") == 0)
        want = 1;
    if (!known || argc - optind - 1 != want) {
        fprintf(stderr, "missive-admin: %s\n",
                known ? "wrong number of arguments" : "unknown command");
        usage(stderr);
        return EXIT_USAGE;
    }
    msv_config_defaults(&a.cfg);
    if (msv_config_load(&a.cfg, config, err, sizeof(err)) != MSV_OK) {
        fprintf(stderr, "missive-admin: %s\n", err);
        return EXIT_USAGE;
    }
    if (data_dir != NULL)
        snprintf(a.cfg.data_dir, sizeof(a.cfg.data_dir), "%s", data_dir);
    if (url != NULL || token_file != NULL || strcmp(cmd, "reload") == 0 ||
        strcmp(cmd, "disconnect") == 0)
        return cmd_remote(&a, url, token_file, cmd, want ? argv[optind + 1] : NULL);
    if ((strcmp(cmd, "migrate") == 0) != (to_postgres != NULL)) {
        fprintf(stderr, "missive-admin: migrate takes --to-postgres CONNINFO, and only it\n");
        return EXIT_USAGE;
    }
    if (to_postgres != NULL)
        return msv_init() != MSV_OK ? EXIT_ERR : admin_migrate(&a.cfg, to_postgres, a.json);
    if (strcmp(cmd, "restore") == 0 || strcmp(cmd, "backup") == 0)
        return msv_init() != MSV_OK ? EXIT_ERR
               : cmd[0] == 'r'      ? admin_restore(&a.cfg, argv[optind + 1], a.json)
                                    : admin_backup(&a.cfg, argv[optind + 1], a.json);
    /* an existing server's directory only: a typing error must not make a new one */
    snprintf(db, sizeof(db), "%s/missive.db", a.cfg.data_dir);
    if (strcmp(a.cfg.store_backend, "sqlite") == 0 && stat(db, &sb) != 0) {
        fprintf(stderr, "missive-admin: no missived database in %s (%s)\n", a.cfg.data_dir,
                strerror(errno));
        return EXIT_ERR;
    }
    if (msv_init() != MSV_OK) {
        fprintf(stderr, "missive-admin: cannot initialise the crypto library\n");
        return EXIT_ERR;
    }
    if (msv_config_open_store(&a.cfg, &a.store, why, sizeof(why)) != MSV_OK) {
        fprintf(stderr, "missive-admin: %s\n", why);
        return EXIT_ERR;
    }
    if (strcmp(cmd, "accounts") == 0)
        rc = cmd_accounts(&a);
    else if (strcmp(cmd, "stats") == 0)
        rc = cmd_stats(&a);
    else if (strcmp(cmd, "expire") == 0)
        rc = cmd_expire(&a);
    else if (strcmp(cmd, "log-rotate-key") == 0)
        rc = cmd_log_rotate_key(&a);
    else if (strcmp(cmd, "reports") == 0)
        rc = cmd_reports(&a, argc - optind - 1, argv + optind + 1);
    else if (strcmp(cmd, "invites") == 0)
        rc = cmd_invites(&a, argc - optind - 1, argv + optind + 1);
    else if (strcmp(cmd, "delete") == 0)
        rc = cmd_delete(&a, argv[optind + 1]);
    else if (strcmp(cmd, "reset-password") == 0)
        rc = cmd_reset_password(&a, argv[optind + 1]);
    else
        rc = cmd_suspend(&a, argv[optind + 1], strcmp(cmd, "suspend") == 0);
    msv_store_close(a.store);
    return rc;
}
