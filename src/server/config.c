/*
 * Every option has one row in the table below: its section, key, type,
 * limits and where it lives in struct msv_config. The same table drives the
 * INI parser, the environment overrides and --check-config's output.
 */
#include "server/config.h"

#include "missive/kt.h"
#include "missive/wire.h"
#include "missive/crypto.h"
#include "missive/util.h"
#include "store/store.h"

#include <errno.h>
#include <ini.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

enum opt_type {
    OPT_STR,
    OPT_U64,
    OPT_U32,
    OPT_PORT,
    OPT_BOOL,
    OPT_DOUBLE,
    OPT_LEVEL,
    OPT_MS_DAYS,
    OPT_MS_HOURS
};

struct option_def {
    const char *section, *key;
    enum opt_type type;
    size_t offset, size;
    double min, max;
};

#define F(field) offsetof(struct msv_config, field), sizeof(((struct msv_config *)0)->field)

static const struct option_def options[] = {
    {"server", "listen_host", OPT_STR, F(listen_host), 0, 0},
    {"server", "listen_port", OPT_PORT, F(listen_port), 0, 65535},
    {"server", "data_dir", OPT_STR, F(data_dir), 0, 0},
    {"server", "shared_dir", OPT_STR, F(shared_dir), 0, 0},
    {"server", "workers", OPT_U32, F(workers), 1, 64},
    {"server", "idle_timeout_s", OPT_U32, F(idle_timeout_s), 5, 86400},
    {"server", "max_connections_per_address", OPT_U32, F(max_conns_per_address), 1, 10000000},
    {"server", "max_request_connections", OPT_U32, F(max_request_conns), 1, 10000},
    {"server", "frame_max", OPT_U64, F(frame_max), 4096, 16777215},
    {"server", "auth_timeout_s", OPT_U32, F(auth_timeout_s), 1, 3600},
    {"server", "accept_pause_ms", OPT_U32, F(accept_pause_ms), 1, 60000},
    {"store", "backend", OPT_STR, F(store_backend), 0, 0},
    {"store", "postgres", OPT_STR, F(postgres), 0, 0},
    {"store", "connections", OPT_U32, F(store_connections), 1, 256},
    {"store", "timeout_ms", OPT_U32, F(store_timeout_ms), 100, 3600000},
    {"store", "pool_wait_ms", OPT_U32, F(store_pool_wait_ms), 10, 3600000},
    {"store", "commit_backlog", OPT_U32, F(commit_backlog), 1, 10000000},
    {"store", "commit_backlog_kib", OPT_U32, F(commit_backlog_kib), 1, 4194304},
    {"cluster", "redis", OPT_STR, F(redis), 0, 0},
    {"cluster", "node", OPT_STR, F(node), 0, 0},
    {"cluster", "redis_timeout_ms", OPT_U32, F(redis_timeout_ms), 20, 60000},
    {"tls", "cert_file", OPT_STR, F(cert_file), 0, 0},
    {"tls", "key_file", OPT_STR, F(key_file), 0, 0},
    {"relay", "payload_limit", OPT_U64, F(payload_limit), 256, 1048576},
    {"relay", "queue_ttl_days", OPT_MS_DAYS, F(queue_ttl_ms), 1, 365},
    {"relay", "delivery_window", OPT_U32, F(delivery_window), 1, 10000},
    {"relay", "expiry_interval_ms", OPT_U64, F(expiry_interval_ms), 100, 86400000},
    {"relay", "min_expire_after_s", OPT_U32, F(min_expire_after_s), 1, 86400},
    {"relay", "sealed_rate", OPT_DOUBLE, F(sealed_rate), 0.01, 1e6},
    {"relay", "sealed_burst", OPT_DOUBLE, F(sealed_burst), 1, 1e6},
    {"relay", "send_rate", OPT_DOUBLE, F(send_rate), 0.01, 1e6},
    {"relay", "send_burst", OPT_DOUBLE, F(send_burst), 1, 1e7},
    {"relay", "queue_max_envelopes", OPT_U64, F(queue_max_envelopes), 1, 1e9},
    {"relay", "queue_max_bytes", OPT_U64, F(queue_max_bytes), 1024, 1099511627776.0},
    /* no larger than clients download (MSV_ATTACHMENT_MAX): what is stored can be fetched */
    {"blobs", "max_size", OPT_U64, F(blob_max), 1, (double)MSV_ATTACHMENT_MAX},
    {"blobs", "ttl_days", OPT_MS_DAYS, F(blob_ttl_ms), 1, 365},
    {"blobs", "open_uploads_per_device", OPT_U32, F(blob_open_max), 1, 100000},
    {"blobs", "bytes_per_device", OPT_U64, F(blob_device_bytes), 1, 1125899906842624.0},
    {"blobs", "bytes_per_account", OPT_U64, F(blob_account_bytes), 1, 1125899906842624.0},
    {"blobs", "attachments_per_account", OPT_U32, F(blob_account_count), 1, 100000000},
    {"blobs", "unfinished_ttl_hours", OPT_MS_HOURS, F(blob_unfinished_ttl_ms), 1, 720},
    {"blobs", "finish_checks", OPT_U32, F(blob_finish_checks), 1, 256},
    {"blobs", "finish_fail_rate", OPT_DOUBLE, F(blob_finish_fail_rate), 0.0001, 1e6},
    {"blobs", "finish_fail_burst", OPT_DOUBLE, F(blob_finish_fail_burst), 1, 1e6},
    {"directory", "lookup_rate", OPT_DOUBLE, F(lookup_rate), 0.01, 1e6},
    {"directory", "lookup_burst", OPT_DOUBLE, F(lookup_burst), 1, 1e6},
    {"directory", "log_read_rate", OPT_DOUBLE, F(log_read_rate), 0.01, 1e6},
    {"directory", "log_read_burst", OPT_DOUBLE, F(log_read_burst), 1, 1e7},
    {"directory", "append_proof_kib", OPT_U64, F(append_proof_kib), 1, 16777216},
    {"directory", "leaf_version", OPT_U32, F(leaf_version), 3, 4},
    {"accounts", "register_rate", OPT_DOUBLE, F(register_rate), 0.001, 1e6},
    {"accounts", "register_burst", OPT_DOUBLE, F(register_burst), 1, 1e6},
    {"accounts", "identity_max", OPT_U32, F(identity_max), 256, 16384},
    {"directory", "unknown_lookup_rate", OPT_DOUBLE, F(unknown_lookup_rate), 0.0001, 1e6},
    {"directory", "unknown_lookup_burst", OPT_DOUBLE, F(unknown_lookup_burst), 1, 1e6},
    {"directory", "username_interval_s", OPT_U32, F(username_interval_s), 1, 31536000},
    {"directory", "username_hold_s", OPT_U32, F(username_hold_s), 1, 315360000},
    {"directory", "prekey_claim_interval_s", OPT_U32, F(prekey_claim_interval_s), 0, 86400},
    {"accounts", "codes_per_handle_per_day", OPT_U32, F(codes_per_handle_per_day), 1, 1000},
    {"reports", "per_day", OPT_U32, F(reports_per_day), 1, 100000},
    {"reports", "text_max", OPT_U64, F(report_text_max), 0, 1048576},
    {"accounts", "code_guesses_per_address", OPT_U32, F(code_guesses_per_address), 1, 100},
    {"accounts", "code_guesses_per_handle", OPT_U32, F(code_guesses_per_handle), 1, 100},
    {"accounts", "verification", OPT_STR, F(verification), 0, 0},
    {"accounts", "registration", OPT_STR, F(registration), 0, 0},
    {"accounts", "verification_hook", OPT_STR, F(verification_hook), 0, 0},
    {"accounts", "argon2_memlimit_kib", OPT_U64, F(argon2_memlimit), 8, 4194304},
    {"accounts", "argon2_opslimit", OPT_U64, F(argon2_opslimit), 1, 64},
    {"http", "enabled", OPT_BOOL, F(http_enabled), 0, 1},
    {"http", "listen_host", OPT_STR, F(http_host), 0, 0},
    {"http", "listen_port", OPT_PORT, F(http_port), 0, 65535},
    {"http", "max_header_bytes", OPT_U32, F(http_max_header_bytes), 256, 1048576},
    {"http", "request_timeout_s", OPT_U32, F(http_request_timeout_s), 1, 3600},
    {"http", "admin_token_file", OPT_STR, F(http_admin_token_file), 0, 0},
    {"log", "level", OPT_LEVEL, F(log_level), 0, 0},
    {"log", "file", OPT_STR, F(log_file), 0, 0},
    {"testing", "clock_file", OPT_STR, F(clock_file), 0, 0},
    {"testing", "trust_store_log", OPT_BOOL, F(trust_store_log), 0, 1},
    {"testing", "keydir_forge", OPT_STR, F(keydir_forge), 0, 0},
    {"testing", "keydir_skip", OPT_STR, F(keydir_skip), 0, 0},
    {"testing", "refuse_prekey_claims", OPT_BOOL, F(refuse_prekey_claims), 0, 1},
    {"testing", "mls_commit_pause_ms", OPT_U32, F(mls_commit_pause_ms), 0, 10000},
    {"testing", "subscribe_gate", OPT_STR, F(subscribe_gate), 0, 0},
    {"testing", "commit_delay_ms", OPT_U32, F(commit_delay_ms), 0, 60000},
    {"testing", "drop_prekey_answers", OPT_BOOL, F(drop_prekey_answers), 0, 1},
    {"testing", "limit_prekey_uploads", OPT_BOOL, F(limit_prekey_uploads), 0, 1},
    {"testing", "limit_key_package_uploads", OPT_BOOL, F(limit_key_package_uploads), 0, 1},
    {"testing", "mls_stale_devices", OPT_BOOL, F(mls_stale_devices), 0, 1},
    {"testing", "owner_versions_stall", OPT_BOOL, F(owner_versions_stall), 0, 1},
    {"testing", "owner_versions_max", OPT_U32, F(owner_versions_max), 0, 1000},
    {"testing", "lookup_substitute", OPT_STR, F(lookup_substitute), 0, 0},
    {"testing", "keydir_rewrite", OPT_STR, F(keydir_rewrite), 0, 0},
    {"testing", "log_read_hash_fault", OPT_U32, F(log_read_hash_fault), 0, 4},
    {"testing", "kt_v4_leaf_fault", OPT_BOOL, F(kt_v4_leaf_fault), 0, 1},
    {"testing", "log_cutover_fault", OPT_BOOL, F(log_cutover_fault), 0, 1},
    {"testing", "log_read_epoch_fault", OPT_BOOL, F(log_read_epoch_fault), 0, 1},
    {"testing", "log_read_gate", OPT_STR, F(log_read_gate), 0, 0},
    {"testing", "lookup_gate", OPT_STR, F(lookup_gate), 0, 0},
    {"testing", "keydir_v4_mismatch", OPT_U64, F(keydir_v4_mismatch), 0, 1e15},
};

static const char *const level_names[] = {"debug", "info", "warn", "error"};

int64_t msv_config_now_ms(const struct msv_config *c)
{
    if (c->clock_file[0] != '\0') {
        /* tests move time forward by writing this file */
        FILE *f = fopen(c->clock_file, "r");
        long long ms = 0;

        if (f != NULL) {
            if (fscanf(f, "%lld", &ms) != 1)
                ms = 0;
            fclose(f);
            if (ms > 0)
                return ms;
        }
    }
    return msv_wall_ms();
}

void msv_config_defaults(struct msv_config *c)
{
    memset(c, 0, sizeof(*c));
    snprintf(c->listen_host, sizeof(c->listen_host), "127.0.0.1");
    c->listen_port = 7443;
    snprintf(c->data_dir, sizeof(c->data_dir), "missive-data");
    c->workers = 2;
    snprintf(c->store_backend, sizeof(c->store_backend), "sqlite");
    c->store_connections = 8;
    c->store_timeout_ms = 5000;
    c->store_pool_wait_ms = 1000;
    c->commit_backlog = 10000;
    c->commit_backlog_kib = 16384;
    c->redis_timeout_ms = 1000;
    c->idle_timeout_s = 600;
    c->max_conns_per_address = 256;
    c->max_request_conns = 16;
    c->frame_max = 1u << 20;
    c->auth_timeout_s = 15;
    c->accept_pause_ms = 200;
    c->payload_limit = 16 * 1024;
    c->queue_ttl_ms = 30ull * 86400 * 1000;
    c->delivery_window = 64;
    c->expiry_interval_ms = 60 * 1000;
    c->min_expire_after_s = 60;
    c->blob_max = 100ull << 20;
    c->blob_ttl_ms = 30ull * 86400 * 1000;
    c->lookup_rate = 10;
    c->lookup_burst = 2048; /* a big group's first message looks up its members */
    c->log_read_rate = 50;
    c->log_read_burst = 5000;
    c->append_proof_kib = 65536;
    c->leaf_version = 4;
    c->register_rate = 0.2;
    c->register_burst = 10;
    c->identity_max = 2048;
    c->sealed_rate = 50;
    c->sealed_burst = 1000;
    c->send_rate = 200;
    c->send_burst = 10000;
    c->queue_max_envelopes = 50000;
    c->queue_max_bytes = 256ull << 20;
    c->prekey_claim_interval_s = 300;
    c->unknown_lookup_rate = 0.01; /* 36 an hour */
    c->unknown_lookup_burst = 20;
    c->username_interval_s = 86400;
    c->username_hold_s = 14 * 86400;
    c->codes_per_handle_per_day = 5;
    c->reports_per_day = 20;
    c->report_text_max = 65536;
    c->code_guesses_per_address = 5;
    c->code_guesses_per_handle = 20;
    c->blob_open_max = 8;
    c->blob_device_bytes = 2ull << 30;
    c->blob_account_bytes = 4ull << 30;
    c->blob_account_count = 100000;
    c->blob_unfinished_ttl_ms = 6ull * 3600 * 1000;
    c->blob_finish_checks = 8;
    c->blob_finish_fail_rate = 0.01;
    c->blob_finish_fail_burst = 5;
    snprintf(c->verification, sizeof(c->verification), "dev");
    snprintf(c->registration, sizeof(c->registration), "open");
    c->argon2_memlimit = 64 * 1024; /* KiB: libsodium's interactive level */
    c->argon2_opslimit = 2;
    c->http_enabled = 1;
    snprintf(c->http_host, sizeof(c->http_host), "127.0.0.1");
    c->http_port = 7480;
    c->http_max_header_bytes = 8192;
    c->http_request_timeout_s = 10;
    c->log_level = MSV_LOG_INFO;
}

static int parse_number(const char *v, double *out)
{
    char *end;

    errno = 0;
    *out = strtod(v, &end);
    return errno == 0 && end != v && *end == '\0';
}

/*
 * The longest line the INI parser reads whole (its buffer less the newline
 * and NUL); it silently drops the rest of a longer one, so longer lines are
 * refused before it sees them.
 */
#define LINE_MAX_LEN (INI_MAX_LINE - 2)

/* The number of the first line of path longer than LINE_MAX_LEN bytes; 0 if none or unreadable. */
static int long_line(const char *path)
{
    FILE *f = fopen(path, "rb");
    size_t len = 0;
    int line = 1, ch, found = 0;

    if (f == NULL)
        return 0;
    while (!found && (ch = getc(f)) != EOF) {
        if (ch == '\n') {
            line++;
            len = 0;
        } else if (++len > LINE_MAX_LEN) {
            found = line;
        }
    }
    fclose(f);
    return found;
}

/* Sets one option from text; returns 0 or writes why to err. */
static int set_option(struct msv_config *c, const struct option_def *o, const char *v, char *err,
                      size_t err_len)
{
    char *field = (char *)c + o->offset;
    double d = 0;

    switch (o->type) {
    case OPT_STR:
        /* and printed as "key = value" it must fit the parser's line */
        if (strlen(v) >= o->size || strlen(o->key) + 3 + strlen(v) > LINE_MAX_LEN) {
            snprintf(err, err_len, "value too long");
            return -1;
        }
        /* what --check-config prints must read back the same: no control characters,
         * and no leading ';' or '#', which would read as a comment */
        for (const char *q = v; *q; q++) {
            if ((unsigned char)*q < 0x20 || *q == 0x7f) {
                snprintf(err, err_len, "control characters are not allowed");
                return -1;
            }
        }
        if (v[0] == ';' || v[0] == '#') {
            snprintf(err, err_len, "a value cannot start with ';' or '#'");
            return -1;
        }
        snprintf(field, o->size, "%s", v);
        return 0;
    case OPT_BOOL:
        if (!strcasecmp(v, "true") || !strcasecmp(v, "yes") || !strcmp(v, "1"))
            *(int *)field = 1;
        else if (!strcasecmp(v, "false") || !strcasecmp(v, "no") || !strcmp(v, "0"))
            *(int *)field = 0;
        else {
            snprintf(err, err_len, "expected true or false");
            return -1;
        }
        return 0;
    case OPT_LEVEL:
        for (int i = 0; i < 4; i++) {
            if (strcasecmp(v, level_names[i]) == 0) {
                *(enum msv_log_level *)field = (enum msv_log_level)i;
                return 0;
            }
        }
        snprintf(err, err_len, "expected debug, info, warn or error");
        return -1;
    default:
        break;
    }
    if (!parse_number(v, &d) || d < o->min || d > o->max ||
        (o->type != OPT_DOUBLE && d != (double)(uint64_t)d)) {
        snprintf(err, err_len, "expected a %s from %g to %g",
                 o->type == OPT_DOUBLE ? "number" : "whole number", o->min, o->max);
        return -1;
    }
    switch (o->type) {
    case OPT_DOUBLE:
        *(double *)field = d;
        break;
    case OPT_PORT:
        *(uint16_t *)field = (uint16_t)d;
        break;
    case OPT_U32:
        *(unsigned *)field = (unsigned)d;
        break;
    case OPT_MS_DAYS:
        *(uint64_t *)field = (uint64_t)d * 86400ull * 1000ull;
        break;
    case OPT_MS_HOURS:
        *(uint64_t *)field = (uint64_t)d * 3600ull * 1000ull;
        break;
    default:
        *(uint64_t *)field = (uint64_t)d;
        break;
    }
    return 0;
}

static const struct option_def *find_option(const char *section, const char *key)
{
    for (size_t i = 0; i < sizeof(options) / sizeof(options[0]); i++) {
        if (!strcmp(options[i].section, section) && !strcmp(options[i].key, key))
            return &options[i];
    }
    return NULL;
}

struct parse_ctx {
    struct msv_config *c;
    char *err;
    size_t err_len;
};

static int on_entry(void *user, const char *section, const char *key, const char *value)
{
    struct parse_ctx *p = user;
    const struct option_def *o = find_option(section, key);
    char why[160];

    if (o == NULL) {
        snprintf(p->err, p->err_len, "unknown option [%s] %s", section, key);
        return 0;
    }
    if (set_option(p->c, o, value, why, sizeof(why)) != 0) {
        snprintf(p->err, p->err_len, "[%s] %s: %s", section, key, why);
        return 0;
    }
    return 1;
}

static int check(const struct msv_config *c, char *err, size_t err_len)
{
    if (strcmp(c->registration, "open") != 0 && strcmp(c->registration, "invite") != 0 &&
        strcmp(c->registration, "closed") != 0) {
        snprintf(err, err_len, "[accounts] registration: expected open, invite or closed");
        return -1;
    }
    if (strcmp(c->verification, "dev") != 0 && strcmp(c->verification, "hook") != 0) {
        snprintf(err, err_len, "[accounts] verification: expected dev or hook");
        return -1;
    }
    if (!strcmp(c->verification, "hook") && c->verification_hook[0] != '/') {
        snprintf(err, err_len, "[accounts] verification_hook: an absolute path is required");
        return -1;
    }
    if ((c->cert_file[0] == '\0') != (c->key_file[0] == '\0')) {
        snprintf(err, err_len, "[tls] cert_file and key_file go together");
        return -1;
    }
    if (c->payload_limit + 1024 > c->frame_max) {
        snprintf(err, err_len, "[relay] payload_limit must be at least 1 KiB below frame_max");
        return -1;
    }
    /* a lookup of one handle carries its devices twice (listed, and in the leaf) */
    if (2ull * MSV_KT_DEVICES_MAX * (c->identity_max + 64ull) + 16384 >
        (c->frame_max < MSV_FRAME_MAX_DEFAULT ? c->frame_max : MSV_FRAME_MAX_DEFAULT)) {
        snprintf(err, err_len,
                 "[accounts] identity_max: an answer about an account of %d devices, 2 x %d x "
                 "(identity_max + 64) + 16 KiB bytes, must fit in frame_max and in 1 MiB",
                 MSV_KT_DEVICES_MAX, MSV_KT_DEVICES_MAX);
        return -1;
    }
    if (c->data_dir[0] == '\0') {
        snprintf(err, err_len, "[server] data_dir is required");
        return -1;
    }
    if (strcmp(c->store_backend, "sqlite") != 0 && strcmp(c->store_backend, "postgres") != 0) {
        snprintf(err, err_len, "[store] backend: expected sqlite or postgres");
        return -1;
    }
    if (strcmp(c->store_backend, "postgres") == 0 && c->postgres[0] == '\0') {
        snprintf(err, err_len, "[store] postgres: the connection string is required");
        return -1;
    }
    if (c->redis[0] != '\0') {
        char host[sizeof(c->redis)];
        uint16_t port;

        if (msv_host_port(c->redis, strlen(c->redis), host, sizeof(host), &port) != MSV_OK) {
            snprintf(err, err_len, "[cluster] redis: expected HOST:PORT");
            return -1;
        }
    }
    if (c->redis[0] != '\0' && strcmp(c->store_backend, "postgres") != 0) {
        snprintf(err, err_len,
                 "[cluster] redis: nodes of a cluster share a PostgreSQL store ([store] backend)");
        return -1;
    }
    return 0;
}

const char *msv_config_shared_dir(const struct msv_config *c)
{
    return c->shared_dir[0] != '\0' ? c->shared_dir : c->data_dir;
}

msv_err msv_config_open_store(const struct msv_config *c, struct msv_store **out, char *err,
                              size_t err_len)
{
    char path[1100], why[256];
    msv_err e;

    if (strcmp(c->store_backend, "postgres") == 0) {
        e = msv_store_open_postgres(c->postgres, c->store_connections, c->store_timeout_ms,
                                    c->store_pool_wait_ms, why, sizeof(why), out);
        if (e != MSV_OK)
            snprintf(err, err_len, "cannot use the PostgreSQL store: %s",
                     why[0] ? why : msv_strerror(e));
        return e;
    }
    snprintf(path, sizeof(path), "%s/missive.db", c->data_dir);
    e = msv_store_open_sqlite(path, out);
    if (e != MSV_OK)
        snprintf(err, err_len, "cannot open %s: %s", path, msv_strerror(e));
    return e;
}

msv_err msv_config_load(struct msv_config *c, const char *path, char *err, size_t err_len)
{
    struct parse_ctx p = {c, err, err_len};

    err[0] = '\0';
    if (path != NULL) {
        int rc = long_line(path);

        if (rc > 0) {
            snprintf(err, err_len, "%s:%d: line longer than %d bytes", path, rc, LINE_MAX_LEN);
            return MSV_ERR_PARSE;
        }
        rc = ini_parse(path, on_entry, &p);

        if (rc < 0) {
            snprintf(err, err_len, "%s: cannot read: %s", path, strerror(errno));
            return MSV_ERR_IO;
        }
        if (rc > 0) {
            char what[512];

            snprintf(what, sizeof(what), "%s", err[0] ? err : "syntax error");
            snprintf(err, err_len, "%s:%d: %s", path, rc, what);
            return MSV_ERR_PARSE;
        }
    }
    for (size_t i = 0; i < sizeof(options) / sizeof(options[0]); i++) {
        char name[96], why[160];
        const char *v;

        snprintf(name, sizeof(name), "MISSIVED_%s_%s", options[i].section, options[i].key);
        for (char *q = name; *q; q++)
            *q = (char)(*q >= 'a' && *q <= 'z' ? *q - 32 : *q);
        v = getenv(name);
        if (v != NULL && set_option(c, &options[i], v, why, sizeof(why)) != 0) {
            snprintf(err, err_len, "%s: %s", name, why);
            return MSV_ERR_PARSE;
        }
    }
    return check(c, err, err_len) == 0 ? MSV_OK : MSV_ERR_PARSE;
}

void msv_config_print(const struct msv_config *c, FILE *out)
{
    const char *section = "";

    for (size_t i = 0; i < sizeof(options) / sizeof(options[0]); i++) {
        const struct option_def *o = &options[i];
        const char *field = (const char *)c + o->offset;

        if (strcmp(section, o->section) != 0) {
            fprintf(out, "%s[%s]\n", i ? "\n" : "", o->section);
            section = o->section;
        }
        fprintf(out, "%s = ", o->key);
        switch (o->type) {
        case OPT_STR:
            fprintf(out, "%s\n", field);
            break;
        case OPT_BOOL:
            fprintf(out, "%s\n", *(const int *)field ? "true" : "false");
            break;
        case OPT_LEVEL:
            fprintf(out, "%s\n", level_names[*(const enum msv_log_level *)field]);
            break;
        case OPT_DOUBLE:
            fprintf(out, "%g\n", *(const double *)field);
            break;
        case OPT_PORT:
            fprintf(out, "%u\n", *(const uint16_t *)field);
            break;
        case OPT_U32:
            fprintf(out, "%u\n", *(const unsigned *)field);
            break;
        case OPT_MS_DAYS:
            fprintf(out, "%llu\n",
                    (unsigned long long)(*(const uint64_t *)field / (86400ull * 1000ull)));
            break;
        case OPT_MS_HOURS:
            fprintf(out, "%llu\n",
                    (unsigned long long)(*(const uint64_t *)field / (3600ull * 1000ull)));
            break;
        default:
            fprintf(out, "%llu\n", (unsigned long long)*(const uint64_t *)field);
            break;
        }
    }
}
