/*
 * missive-crypto mls: an MLS (RFC 9420) member on files, so that another
 * implementation can be made a member of a group run here and the other way
 * round (docs/crypto.md, "MLS", "On files").
 *
 * Messages are RFC 9420's MLSMessage (KeyPackage, Welcome, PublicMessage and
 * PrivateMessage); the member's state is a file of its own format
 * (src/mls/state.c), as is a KeyPackage's private part:
 *
 *   KeyPackagePrivate = opaque magic[6] ("MSVMKP") || uint16 version (1) ||
 *     uint16 cipher_suite || opaque signature_seed[32] ||
 *     opaque init_priv[32] || opaque encryption_priv[32]
 *
 * A command that changes a state holds an exclusive lock on its file from the
 * load to its end (the new file locked before it takes the name), and changes
 * nothing when it fails: the new state is written only once everything else
 * succeeded. Its outputs are staged before the state is saved and published
 * after (see STATE.pending below): a state never runs ahead of a commit nobody
 * has, nor a commit ahead of its committer, and a key is never used twice.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <sodium.h>

#include "missive/util.h"
#include "mls/member.h"

#include "crypto_mls.h"
#include "term.h"

#define EXIT_USAGE 2
#define EXIT_AUTH 3
#define LIST_MAX 64
#define FILE_MAX MSV_MLS_MESSAGE_MAX
#define PRIVATE_LEN 106

static const char *prog = "missive-crypto mls";
static const uint8_t private_magic[6] = {'M', 'S', 'V', 'M', 'K', 'P'};

enum {
    O_SUITE = 1,
    O_IDENTITY,
    O_OUT,
    O_PRIVATE,
    O_STATE,
    O_GROUP_ID,
    O_KEY_PACKAGE,
    O_COMMIT,
    O_WELCOME,
    O_PROPOSAL,
    O_LEAF,
    O_TREE,
    O_PSK,
    O_IN,
    O_TEXT,
    O_DAYS,
    O_RESUME,
    O_PRIVATE_MESSAGE,
    O_NO_PATH,
    O_FORCE,
    O_HELP,
};

#define BIT(o) (1u << (o))

struct mls_opts {
    const char *cmd;
    uint16_t suite;
    const char *identity, *out, *private_part, *state, *group_id, *commit, *welcome, *tree, *in,
        *text;
    const char *key_packages[LIST_MAX], *proposals[LIST_MAX], *psks[LIST_MAX], *resume[LIST_MAX];
    size_t n_key_packages, n_proposals, n_psks, n_resume, n_leaves;
    uint32_t leaves[LIST_MAX];
    unsigned days;
    int private_message, no_path, force, help;
    unsigned given; /* BIT(option) of each option given */
};

static int usage_error(const char *cmd, const char *msg)
{
    fprintf(stderr, "%s %s: %s\nTry '%s %s --help'.\n", prog, cmd, msg, prog, cmd);
    return EXIT_USAGE;
}

/* An error of a command; MSV_ERR_AUTH gives exit status 3. */
static int fail(const char *cmd, const char *what, msv_err err)
{
    fprintf(stderr, "%s %s: %s: %s\n", prog, cmd, what, msv_strerror(err));
    return err == MSV_ERR_AUTH ? EXIT_AUTH : EXIT_FAILURE;
}

static int fail_why(const char *cmd, const char *what, const char *why)
{
    fprintf(stderr, "%s %s: %s: %s\n", prog, cmd, what, why);
    return EXIT_FAILURE;
}

/* ---- files ---- */

struct file {
    uint8_t *p;
    size_t n;
};

static void file_free(struct file *f)
{
    if (f->p != NULL)
        msv_secret_free(f->p, f->n + 1);
    f->p = NULL;
    f->n = 0;
}

static msv_err read_path(const char *cmd, const char *path, struct file *f)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK); /* a FIFO is refused, not waited on */
    msv_err err = fd < 0 ? MSV_ERR_IO : msv_mls_state_read_fd(fd, FILE_MAX, &f->p, &f->n);

    if (fd >= 0)
        close(fd);
    if (err == MSV_ERR_TOO_BIG)
        fprintf(stderr, "%s %s: %s: larger than %u bytes\n", prog, cmd, path, FILE_MAX);
    else if (err != MSV_OK)
        fprintf(stderr, "%s %s: %s: %s\n", prog, cmd, path,
                fd < 0 ? strerror(errno) : "not a readable regular file");
    return err;
}

/* 0, or the exit status if path exists and --force was not given. */
static int check_new(const struct mls_opts *o, const char *path)
{
    struct stat st;

    if (path == NULL || o->force || lstat(path, &st) != 0)
        return 0;
    fprintf(stderr, "%s %s: %s exists; not overwriting it (--force)\n", prog, o->cmd, path);
    return EXIT_FAILURE;
}

/* path with its directory made absolute (the directory must exist); -1 on failure. */
static int abs_name(const char *path, char out[PATH_MAX])
{
    char dir[PATH_MAX], real[PATH_MAX];
    const char *slash = strrchr(path, '/'), *base = slash == NULL ? path : slash + 1;
    size_t n = slash == NULL ? 0 : (size_t)(slash - path);

    if (strchr(path, '\n') != NULL || n >= sizeof(dir) || base[0] == '\0')
        return -1;
    if (slash == path)
        n = 1; /* the root */
    memcpy(dir, slash == NULL ? "." : path, slash == NULL ? 1 : n);
    dir[slash == NULL ? 1 : n] = '\0';
    if (realpath(dir, real) == NULL ||
        (size_t)snprintf(out, PATH_MAX, "%s/%s", strcmp(real, "/") == 0 ? "" : real, base) >=
            PATH_MAX)
        return -1;
    return strchr(out, '\n') == NULL ? 0 : -1; /* STATE.pending keeps a name a line */
}

/* Whether a and b name one file: the same absolute name, or one device and inode. */
static int same_file(const char *a, const char *b)
{
    char x[PATH_MAX], y[PATH_MAX];
    struct stat sa, sb;

    if (a == NULL || b == NULL)
        return 0;
    if (stat(a, &sa) == 0 && stat(b, &sb) == 0 && sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino)
        return 1;
    return abs_name(a, x) == 0 && abs_name(b, y) == 0 && strcmp(x, y) == 0;
}

/*
 * 0, or the exit status if one of the n outputs names another or one of the
 * files the command reads or changes (its state, its inputs): --force does not
 * allow that either.
 */
static int check_distinct(const struct mls_opts *o, const char *const *outs, size_t n,
                          const char *const *others, size_t n_others)
{
    for (size_t i = 0; i < n; i++) {
        for (size_t j = 0; j < n + n_others; j++) {
            const char *b = j < n ? outs[j] : others[j - n];

            if (j == i || !same_file(outs[i], b))
                continue;
            fprintf(stderr, "%s %s: %s and %s name one file; an output must be a file of its own\n",
                    prog, o->cmd, outs[i], b);
            return EXIT_FAILURE;
        }
    }
    return 0;
}

/* An output written beside its name first, published once the state is saved. */
struct output {
    const char *path;
    const uint8_t *p;
    size_t n;
    char name[PATH_MAX], tmp[PATH_MAX]; /* absolute */
    int staged;                         /* tmp written by us */
};

/* Where the output goes and where it is staged, chosen (STATE.pending names both first). */
static msv_err name_output(const char *cmd, struct output *out)
{
    out->staged = 0;
    errno = 0;
    if (abs_name(out->path, out->name) != 0 ||
        msv_mls_file_staged_name(out->name, out->tmp, sizeof(out->tmp)) != MSV_OK) {
        fprintf(stderr, "%s %s: %s: %s\n", prog, cmd, out->path,
                errno == 0 ? "a file name with a newline, or too long" : strerror(errno));
        return MSV_ERR_IO;
    }
    return MSV_OK;
}

static msv_err stage_output(const char *cmd, struct output *out)
{
    if (msv_mls_file_stage(out->tmp, out->p, out->n) != MSV_OK) {
        fprintf(stderr, "%s %s: %s: %s\n", prog, cmd, out->path, strerror(errno));
        return MSV_ERR_IO;
    }
    out->staged = 1;
    return MSV_OK;
}

static void unstage(struct output *outs, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (outs[i].staged)
            msv_mls_file_wipe(outs[i].tmp);
        outs[i].staged = 0;
    }
}

/*
 * A staged output at its name (over a file there only if replace). If not, the
 * staged file is named when kept (the state that goes with it is saved).
 */
static msv_err publish_one(const char *cmd, const char *tmp, const char *name, int replace,
                           int kept)
{
    msv_err err = msv_mls_file_publish(tmp, name, replace);

    if (err != MSV_OK)
        fprintf(stderr, "%s %s: %s: %s%s%s\n", prog, cmd, name,
                err == MSV_ERR_EXISTS ? "exists now; not overwriting it (--force)"
                                      : strerror(errno),
                kept ? "; what belongs there is in " : "", kept ? tmp : "");
    return err;
}

/* Bytes written to a new file (never over one, unless replace), or nothing. */
static msv_err write_new(const char *cmd, const char *path, const uint8_t *p, size_t n, int replace)
{
    struct output out = {path, p, n, "", "", 0};

    if (name_output(cmd, &out) != MSV_OK || stage_output(cmd, &out) != MSV_OK)
        return MSV_ERR_IO;
    if (publish_one(cmd, out.tmp, out.name, replace, 0) != MSV_OK) {
        unstage(&out, 1);
        return MSV_ERR_IO;
    }
    return MSV_OK;
}

/* The state file open and locked (flock, exclusive), its bytes read; -1 on failure. A file
 * renamed over while we waited for its lock is opened again. */
static int lock_state(const char *cmd, const char *path, struct file *f)
{
    for (int tries = 0; tries < 100; tries++) {
        struct stat a, b;
        int fd =
            open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK); /* a FIFO is refused, not waited on */

        if (fd < 0 || flock(fd, LOCK_EX) != 0) {
            fprintf(stderr, "%s %s: %s: %s\n", prog, cmd, path, strerror(errno));
            if (fd >= 0)
                close(fd);
            return -1;
        }
        if (fstat(fd, &a) == 0 && stat(path, &b) == 0 && a.st_ino == b.st_ino &&
            a.st_dev == b.st_dev) {
            if (msv_mls_state_read_fd(fd, MSV_MLS_STATE_MAX, &f->p, &f->n) == MSV_OK)
                return fd;
            fprintf(stderr, "%s %s: %s: not readable\n", prog, cmd, path);
            close(fd);
            return -1;
        }
        close(fd);
    }
    fprintf(stderr, "%s %s: %s keeps changing\n", prog, cmd, path);
    return -1;
}

/*
 * ---- outputs staged while the state is saved: STATE.pending ----
 *
 * Before a command saves a state whose change its outputs carry (a commit, a
 * message, a text), it writes STATE.pending: "MSVMLS-PENDING 1", the SHA-256
 * in hex of the state about to be saved, then for each output a line
 * "N STAGED" or "R STAGED" (R: over a file there, --force) and a line with its
 * name, all absolute; then it stages them (written and fsync'd beside their
 * names). The outputs are published once the state is saved, and the file
 * removed. A command interrupted between the two leaves it: the next command
 * on the state (under its lock) publishes the outputs if the state is the one
 * it names, and removes them if not.
 */
#define PENDING_MAX (8 * PATH_MAX)

static int pending_name(const char *state, char out[PATH_MAX])
{
    return (size_t)snprintf(out, PATH_MAX, "%s.pending", state) < PATH_MAX ? 0 : -1;
}

static void state_hash_hex(const uint8_t *p, size_t n, char hex[65])
{
    uint8_t h[crypto_hash_sha256_BYTES];

    crypto_hash_sha256(h, p, n);
    if (msv_hex_encode(h, sizeof(h), hex, 65) != MSV_OK)
        hex[0] = '\0'; /* cannot happen: 65 bytes hold it */
}

static msv_err pending_write(const struct mls_opts *o, const uint8_t *state, size_t state_len,
                             const struct output *outs, size_t n)
{
    char name[PATH_MAX], hex[65], *text = malloc(PENDING_MAX);
    size_t len;
    msv_err err = MSV_ERR_INVALID;

    if (text == NULL || pending_name(o->state, name) != 0) {
        free(text);
        return MSV_ERR_NOMEM;
    }
    state_hash_hex(state, state_len, hex);
    len = (size_t)snprintf(text, PENDING_MAX, "%s\n%s\n", MSV_MLS_PENDING_MAGIC, hex);
    for (size_t i = 0; i < n && len < PENDING_MAX; i++)
        len += (size_t)snprintf(text + len, PENDING_MAX - len, "%c %s\n%s\n", o->force ? 'R' : 'N',
                                outs[i].tmp, outs[i].name);
    if (len < PENDING_MAX)
        err = msv_mls_state_write_file(name, (const uint8_t *)text, len);
    if (err != MSV_OK)
        fprintf(stderr, "%s %s: %s: %s\n", prog, o->cmd, name, strerror(errno));
    free(text);
    return err;
}

/*
 * What an interrupted command left (STATE.pending, STATE.tmp) settled, the
 * lock held and the state's bytes given; 0 or the exit status.
 */
static int pending_settle(const char *cmd, const char *state, const uint8_t *p, size_t n)
{
    char name[PATH_MAX], hex[65];
    struct msv_mls_pending pending;
    uint8_t *text = NULL;
    size_t len = 0;
    int fd, saved, rc = 0;

    for (int i = 0; i < 2; i++) { /* what a crash left half-written: a state holds old keys */
        if ((size_t)snprintf(name, sizeof(name), i == 0 ? "%s.tmp" : "%s.pending.tmp", state) >=
            sizeof(name))
            return EXIT_FAILURE;
        if (access(name, F_OK) == 0)
            msv_mls_file_wipe(name);
    }
    if (pending_name(state, name) != 0)
        return EXIT_FAILURE;
    fd = open(name, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOFOLLOW);
    if (fd < 0)
        return errno == ENOENT ? 0 : fail_why(cmd, name, strerror(errno));
    if (msv_mls_state_read_fd(fd, PENDING_MAX, &text, &len) != MSV_OK) {
        close(fd);
        return fail_why(cmd, name, "not readable");
    }
    close(fd);
    text[len] = '\0';
    /* all of it read before anything is done: a file that does not read changes nothing */
    if (msv_mls_pending_parse((char *)text, len, &pending) != 0) {
        rc = fail_why(cmd, name, "not a file of outputs pending; look at it, then remove it");
        goto out;
    }
    state_hash_hex(p, n, hex);
    saved = strncmp(pending.state_hash, hex, 64) == 0;
    for (size_t i = 0; i < pending.n; i++) {
        const char *tmp = pending.tmp[i], *out = pending.name[i];

        if (access(tmp, F_OK) != 0)
            continue; /* published before the interruption */
        if (!saved) {
            msv_mls_file_wipe(tmp);
            fprintf(stderr,
                    "%s %s: %s not written: the command that made it was interrupted before "
                    "it saved the state\n",
                    prog, cmd, out);
        } else if (same_file(tmp, out)) {
            (void)unlink(tmp);
        } else if (publish_one(cmd, tmp, out, pending.replace[i], 1) == MSV_OK) {
            fprintf(stderr,
                    "%s %s: %s written: the command that made it was interrupted after it "
                    "saved the state\n",
                    prog, cmd, out);
        }
    }
    if (unlink(name) != 0 && errno != ENOENT)
        rc = fail_why(cmd, name, strerror(errno));
out:
    msv_secret_free(text, len + 1);
    return rc;
}

/* ---- the external PSKs of --psk ID_HEX:PSK_HEX ---- */

struct psks {
    struct msv_mls_external_psk list[LIST_MAX];
    uint8_t *bytes[2 * LIST_MAX];
    size_t n;
};

#define PSK_MAX 1024

static void psks_free(struct psks *s)
{
    for (size_t i = 0; i < 2 * s->n; i++)
        msv_secret_free(s->bytes[i], PSK_MAX);
    memset(s, 0, sizeof(*s));
}

/* len hex digits at hex into a fresh buffer of PSK_MAX bytes. */
static int hex_field(const char *hex, size_t len, uint8_t **out, size_t *out_len)
{
    char text[2 * PSK_MAX + 1];
    int rc = 0;

    if (len == 0 || len >= sizeof(text))
        return -1;
    memcpy(text, hex, len);
    text[len] = '\0';
    *out = calloc(1, PSK_MAX);
    if (*out == NULL || msv_hex_decode(text, *out, PSK_MAX, out_len) != MSV_OK)
        rc = -1;
    msv_wipe(text, sizeof(text));
    return rc;
}

static int psks_parse(const struct mls_opts *o, struct psks *s)
{
    memset(s, 0, sizeof(*s));
    for (size_t i = 0; i < o->n_psks; i++) {
        const char *arg = o->psks[i], *colon = strchr(arg, ':');
        struct msv_mls_external_psk *p = &s->list[i];

        s->n = i + 1;
        if (colon == NULL ||
            hex_field(arg, (size_t)(colon - arg), &s->bytes[2 * i], &p->id_len) != 0 ||
            hex_field(colon + 1, strlen(colon + 1), &s->bytes[2 * i + 1], &p->psk_len) != 0)
            return usage_error(o->cmd, "--psk takes ID_HEX:PSK_HEX (at most 1024 bytes each)");
        p->id = s->bytes[2 * i];
        p->psk = s->bytes[2 * i + 1];
    }
    return 0;
}

/* ---- options ---- */

static const struct option long_opts[] = {
    {"suite", required_argument, NULL, O_SUITE},
    {"identity", required_argument, NULL, O_IDENTITY},
    {"out", required_argument, NULL, O_OUT},
    {"private", required_argument, NULL, O_PRIVATE},
    {"state", required_argument, NULL, O_STATE},
    {"group-id", required_argument, NULL, O_GROUP_ID},
    {"key-package", required_argument, NULL, O_KEY_PACKAGE},
    {"commit", required_argument, NULL, O_COMMIT},
    {"welcome", required_argument, NULL, O_WELCOME},
    {"proposal", required_argument, NULL, O_PROPOSAL},
    {"leaf", required_argument, NULL, O_LEAF},
    {"tree", required_argument, NULL, O_TREE},
    {"psk", required_argument, NULL, O_PSK},
    {"in", required_argument, NULL, O_IN},
    {"text", required_argument, NULL, O_TEXT},
    {"days", required_argument, NULL, O_DAYS},
    {"resume", required_argument, NULL, O_RESUME},
    {"private-message", no_argument, NULL, O_PRIVATE_MESSAGE},
    {"no-path", no_argument, NULL, O_NO_PATH},
    {"force", no_argument, NULL, O_FORCE},
    {"help", no_argument, NULL, O_HELP},
    {NULL, 0, NULL, 0},
};

static int number(const char *s, unsigned long max, unsigned long *out)
{
    char *end;

    errno = 0;
    *out = strtoul(s, &end, 10);
    return errno == 0 && end != s && *end == '\0' && s[0] != '-' && *out <= max ? 0 : -1;
}

static int add_to(const char *cmd, const char **list, size_t *n, const char *v)
{
    if (*n == LIST_MAX)
        return usage_error(cmd, "too many of one option (64 at most)");
    list[(*n)++] = v;
    return 0;
}

/* One option into o; 0 or the exit status of a usage error. */
static int take(struct mls_opts *o, int c, const char *arg)
{
    unsigned long v;

    switch (c) {
    case O_SUITE:
        if (number(arg, 65535, &v) != 0 || !msv_mls_suite_is_supported((uint16_t)v))
            return usage_error(o->cmd, "--suite must be 1 or 3");
        o->suite = (uint16_t)v;
        return 0;
    case O_DAYS:
        if (number(arg, 84, &v) != 0 || v == 0)
            return usage_error(o->cmd, "--days takes 1 to 84 (RFC 9420 7.2: a longest lifetime)");
        o->days = (unsigned)v;
        return 0;
    case O_LEAF:
        if (number(arg, MSV_MLS_TREE_MAX_LEAVES - 1, &v) != 0 || o->n_leaves == LIST_MAX)
            return usage_error(o->cmd, "--leaf takes a leaf index (64 of them at most)");
        o->leaves[o->n_leaves++] = (uint32_t)v;
        return 0;
    case O_KEY_PACKAGE:
        return add_to(o->cmd, o->key_packages, &o->n_key_packages, arg);
    case O_PROPOSAL:
        return add_to(o->cmd, o->proposals, &o->n_proposals, arg);
    case O_PSK:
        return add_to(o->cmd, o->psks, &o->n_psks, arg);
    case O_RESUME:
        return add_to(o->cmd, o->resume, &o->n_resume, arg);
    case O_PRIVATE_MESSAGE:
        o->private_message = 1;
        return 0;
    case O_NO_PATH:
        o->no_path = 1;
        return 0;
    case O_FORCE:
        o->force = 1;
        return 0;
    case O_HELP:
        o->help = 1;
        return 0;
    default:
        break;
    }
    {
        const char **slot[] = {[O_IDENTITY] = &o->identity,
                               [O_OUT] = &o->out,
                               [O_PRIVATE] = &o->private_part,
                               [O_STATE] = &o->state,
                               [O_GROUP_ID] = &o->group_id,
                               [O_COMMIT] = &o->commit,
                               [O_WELCOME] = &o->welcome,
                               [O_TREE] = &o->tree,
                               [O_IN] = &o->in,
                               [O_TEXT] = &o->text};

        if (c <= 0 || (size_t)c >= sizeof(slot) / sizeof(slot[0]) || slot[c] == NULL)
            return usage_error(o->cmd, "unknown option or missing argument");
        *slot[c] = arg;
    }
    return 0;
}

static int parse(struct mls_opts *o, int argc, char **argv, unsigned allowed)
{
    int c;

    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "", long_opts, NULL)) != -1) {
        int rc;

        if (c == '?' || c == ':')
            return usage_error(o->cmd, "unknown option or missing argument");
        if (c != O_HELP && (allowed & BIT(c)) == 0) {
            char msg[80];

            snprintf(msg, sizeof(msg), "--%s does not go with %s", long_opts[c - 1].name, o->cmd);
            return usage_error(o->cmd, msg);
        }
        if ((rc = take(o, c, optarg)) != 0)
            return rc;
        o->given |= BIT(c);
    }
    if (optind < argc)
        return usage_error(o->cmd, "takes no arguments, only options");
    return 0;
}

/* 0, or the exit status naming the first of the required options not given. */
static int require(const struct mls_opts *o, unsigned required)
{
    for (int c = 1; c < O_HELP; c++) {
        char msg[80];

        if ((required & BIT(c)) == 0 || (o->given & BIT(c)) != 0)
            continue;
        snprintf(msg, sizeof(msg), "--%s is required", long_opts[c - 1].name);
        return usage_error(o->cmd, msg);
    }
    return 0;
}

/* ---- what the commands share ---- */

static void print_hex(const char *label, const uint8_t *p, size_t n)
{
    char text[2 * MSV_MLS_GROUP_ID_MAX + 1];

    if (msv_hex_encode(p, n, text, sizeof(text)) == MSV_OK)
        printf("%s: %s\n", label, text);
}

/* A loaded, locked member and what it came from. */
struct session {
    struct mls_opts *o;
    int fd;
    struct psks psks;
    struct msv_mls_member *m;
};

static int session_open(struct session *s, struct mls_opts *o)
{
    struct file f = {NULL, 0};
    const char *why = "";
    msv_err err;
    int rc;

    memset(s, 0, sizeof(*s));
    s->o = o;
    s->fd = -1;
    if ((rc = psks_parse(o, &s->psks)) != 0)
        return rc;
    s->fd = lock_state(o->cmd, o->state, &f);
    if (s->fd < 0)
        return EXIT_FAILURE;
    if ((rc = pending_settle(o->cmd, o->state, f.p, f.n)) != 0) {
        file_free(&f);
        return rc;
    }
    err = msv_mls_member_load(f.p, f.n, s->psks.list, s->psks.n, &s->m, &why);
    file_free(&f);
    if (err != MSV_OK) {
        fprintf(stderr, "%s %s: %s is not a usable MLS state: %s\n", prog, o->cmd, o->state, why);
        return EXIT_FAILURE;
    }
    return 0;
}

static void session_close(struct session *s)
{
    msv_mls_member_free(s->m);
    s->m = NULL;
    if (s->fd >= 0)
        close(s->fd); /* releases the lock */
    s->fd = -1;
    psks_free(&s->psks);
}

/*
 * The member's state written over its file (the lock still held) with the
 * outputs that carry its change: each refused if it exists now (unless
 * --force), STATE.pending written, staged, the state saved, the outputs
 * published. Nothing changed if it fails before the state is saved.
 */
static int session_save(struct session *s, struct output *outs, size_t n)
{
    const struct mls_opts *o = s->o;
    uint8_t *bytes = NULL;
    size_t len = 0;
    const char *why = "";
    char pending[PATH_MAX];
    int rc = 0, new_fd = -1;

    for (size_t i = 0; i < n; i++) {
        if ((rc = check_new(o, outs[i].path)) != 0)
            return rc;
    }
    for (size_t i = 0; i < n; i++) {
        if (name_output(o->cmd, &outs[i]) != MSV_OK)
            return EXIT_FAILURE;
    }
    /* STATE.pending names the staged files before they exist: a crash leaves none unnamed */
    if (msv_mls_member_save(s->m, &bytes, &len, &why) != MSV_OK)
        rc = fail_why(o->cmd, o->state, why);
    else if (n > 0 && pending_write(o, bytes, len, outs, n) != MSV_OK)
        rc = EXIT_FAILURE;
    for (size_t i = 0; rc == 0 && i < n; i++) {
        if (stage_output(o->cmd, &outs[i]) != MSV_OK)
            rc = EXIT_FAILURE;
    }
    if (rc == 0 && msv_mls_state_write_locked(o->state, bytes, len, &new_fd) != MSV_OK)
        rc = fail_why(o->cmd, o->state, strerror(errno));
    if (rc == 0) { /* the lock goes on with the new file, through the outputs' publishing */
        close(s->fd);
        s->fd = new_fd;
    }
    msv_secret_free(bytes, len);
    if (pending_name(o->state, pending) != 0)
        pending[0] = '\0';
    if (rc != 0) {
        unstage(outs, n);
        if (n > 0 && pending[0] != '\0')
            (void)unlink(pending);
        return rc;
    }
    for (size_t i = 0; i < n; i++) {
        if (publish_one(o->cmd, outs[i].tmp, outs[i].name, o->force, 1) != MSV_OK)
            rc = EXIT_FAILURE; /* the state is saved: the output stays staged, named */
    }
    if (n > 0 && pending[0] != '\0')
        (void)unlink(pending);
    return rc;
}

/*
 * Why a message is not for this member, if the header says: another group, or
 * another epoch. NULL when it might be.
 */
static const char *not_ours(const struct msv_mls_member *m, const uint8_t *msg, size_t len,
                            char *buf, size_t buf_len)
{
    struct msv_reader r;
    const uint8_t *gid;
    size_t gid_len;
    uint16_t version, wire;
    uint64_t epoch;

    msv_reader_init(&r, msg, len);
    if (msv_reader_u16be(&r, &version) != MSV_OK || msv_reader_u16be(&r, &wire) != MSV_OK ||
        (wire != MSV_MLS_WIRE_PUBLIC && wire != MSV_MLS_WIRE_PRIVATE))
        return "not a PublicMessage or PrivateMessage";
    if (msv_mls_get_vec(&r, &gid, &gid_len) != MSV_OK || msv_mls_get_u64(&r, &epoch) != MSV_OK)
        return NULL;
    if (gid_len != m->group_id_len || memcmp(gid, m->group_id, gid_len) != 0)
        return "the message is for another group";
    if (epoch == m->epoch)
        return NULL;
    snprintf(buf, buf_len, "the message is of epoch %llu; the state is at epoch %llu",
             (unsigned long long)epoch, (unsigned long long)m->epoch);
    return buf;
}

/* ---- key-package ---- */

/* A state file read only (a group we branch from, resume, or take our leaf's keys from). */
static int load_read_only(const struct mls_opts *o, const char *path, struct msv_mls_member **m)
{
    const char *why = "";

    if (msv_mls_member_load_file(path, NULL, 0, m, &why) == MSV_OK)
        return 0;
    fprintf(stderr, "%s %s: %s is not a usable MLS state: %s\n", prog, o->cmd, path, why);
    return EXIT_FAILURE;
}

/*
 * --state: the identity and signature seed of our leaf in that group (read only), so that the
 * KeyPackage's member is the group's for a branch or a reinitialization (RFC 9420 11.2, 11.3).
 */
static int identity_of_state(const struct mls_opts *o, uint8_t seed[32], uint8_t *identity,
                             size_t *identity_len)
{
    struct msv_mls_member *m = NULL;
    int rc = load_read_only(o, o->state, &m);

    if (rc != 0)
        return rc;
    if (!m->can_send)
        rc = fail_why(o->cmd, o->state, "it holds no signature key");
    else if (o->identity != NULL && (strlen(o->identity) != m->identity_len ||
                                     memcmp(o->identity, m->identity, m->identity_len) != 0))
        rc = usage_error(o->cmd, "--identity is not the identity of our leaf in --state");
    if (rc == 0) {
        memcpy(seed, m->sig_seed, 32);
        memcpy(identity, m->identity, m->identity_len);
        *identity_len = m->identity_len;
    }
    msv_mls_member_free(m);
    return rc;
}

static int cmd_key_package(struct mls_opts *o)
{
    uint8_t priv[PRIVATE_LEN], *kp = NULL, identity[MSV_MLS_IDENTITY_MAX];
    size_t kp_len = 0, identity_len = 0;
    uint64_t now = (uint64_t)time(NULL);
    msv_err err;
    int rc;

    const char *outs[2] = {o->out, o->private_part};
    struct output staged[2] = {{o->private_part, priv, sizeof(priv), "", "", 0},
                               {o->out, NULL, 0, "", "", 0}};

    if ((rc = check_distinct(o, outs, 2, &o->state, o->state != NULL)) != 0 ||
        (rc = check_new(o, o->out)) != 0 || (rc = check_new(o, o->private_part)) != 0)
        return rc;
    if (o->identity == NULL && o->state == NULL)
        return usage_error(o->cmd, "--identity or --state is required");
    if (o->identity != NULL && strlen(o->identity) > MSV_MLS_IDENTITY_MAX)
        return usage_error(o->cmd, "--identity is longer than 1024 bytes");
    memcpy(priv, private_magic, 6);
    priv[6] = 0;
    priv[7] = 1;
    priv[8] = (uint8_t)(o->suite >> 8);
    priv[9] = (uint8_t)o->suite;
    if (o->state != NULL) {
        if ((rc = identity_of_state(o, priv + 10, identity, &identity_len)) != 0) {
            msv_wipe(priv, sizeof(priv));
            return rc;
        }
    } else {
        msv_random_bytes(priv + 10, 32);
        identity_len = strlen(o->identity);
        memcpy(identity, o->identity, identity_len);
    }
    err = msv_mls_key_package_make((enum msv_mls_suite)o->suite, priv + 10, identity, identity_len,
                                   now - 3600, now + 86400ull * o->days, priv + 42, priv + 74, &kp,
                                   &kp_len);
    staged[1].p = kp;
    staged[1].n = kp_len;
    /* both staged before either is published: a failure leaves what was there */
    for (size_t i = 0; i < 2 && err == MSV_OK; i++) {
        if ((err = name_output(o->cmd, &staged[i])) == MSV_OK)
            err = stage_output(o->cmd, &staged[i]);
    }
    if (err != MSV_OK)
        unstage(staged, 2);
    if (err == MSV_OK &&
        (err = publish_one(o->cmd, staged[0].tmp, staged[0].name, o->force, 0)) != MSV_OK)
        unstage(staged, 2);
    if (err == MSV_OK &&
        (err = publish_one(o->cmd, staged[1].tmp, staged[1].name, o->force, 0)) != MSV_OK) {
        unstage(&staged[1], 1);
        if (!o->force)
            msv_mls_file_wipe(staged[0].name); /* ours alone, made a moment ago */
    }
    msv_wipe(priv, sizeof(priv));
    free(kp);
    return err == MSV_OK ? 0 : EXIT_FAILURE;
}

/* ---- create ---- */

/* A new member's state written to a new file: never over one (two creates at once), unless --force.
 */
static int save_new_at(const struct mls_opts *o, const char *path, const struct msv_mls_member *m)
{
    uint8_t *bytes = NULL;
    size_t len = 0;
    const char *why = "";
    msv_err err = msv_mls_member_save(m, &bytes, &len, &why);

    if (err != MSV_OK)
        return fail_why(o->cmd, path, why);
    err = write_new(o->cmd, path, bytes, len, o->force);
    msv_secret_free(bytes, len);
    return err == MSV_OK ? 0 : EXIT_FAILURE;
}

static int save_new(const struct mls_opts *o, const struct msv_mls_member *m)
{
    return save_new_at(o, o->state, m);
}

/* --group-id HEX into gid (random if not given). */
static int group_id_of(const struct mls_opts *o, uint8_t gid[MSV_MLS_GROUP_ID_MAX], size_t *len)
{
    *len = 16;
    if (o->group_id != NULL &&
        (msv_hex_decode(o->group_id, gid, MSV_MLS_GROUP_ID_MAX, len) != MSV_OK || *len == 0))
        return usage_error(o->cmd, "--group-id takes 1 to 255 bytes in hex");
    if (o->group_id == NULL)
        msv_random_bytes(gid, *len);
    return 0;
}

static int cmd_create(struct mls_opts *o)
{
    uint8_t seed[32], gid[MSV_MLS_GROUP_ID_MAX];
    size_t gid_len = 0;
    uint64_t now = (uint64_t)time(NULL);
    struct msv_mls_member *m = NULL;
    msv_err err;
    int rc;

    if ((rc = check_new(o, o->state)) != 0)
        return rc;
    if (strlen(o->identity) > MSV_MLS_IDENTITY_MAX)
        return usage_error(o->cmd, "--identity is longer than 1024 bytes");
    if ((rc = group_id_of(o, gid, &gid_len)) != 0)
        return rc;
    msv_random_bytes(seed, sizeof(seed));
    err = msv_mls_member_create((enum msv_mls_suite)o->suite, gid, gid_len, seed,
                                (const uint8_t *)o->identity, strlen(o->identity), now - 3600,
                                now + 86400ull * o->days, &m);
    msv_wipe(seed, sizeof(seed));
    if (err != MSV_OK)
        return fail(o->cmd, "creating the group", err);
    if ((rc = save_new(o, m)) == 0)
        print_hex("group", m->group_id, m->group_id_len);
    msv_mls_member_free(m);
    return rc;
}

/* ---- commits: add, remove, update ---- */

/* The commit made and merged, the state saved with its files: all, or nothing changed. */
static int commit_and_save(struct session *s, const struct msv_mls_commit_spec *spec)
{
    struct mls_opts *o = s->o;
    uint8_t *commit = NULL, *welcome = NULL;
    size_t commit_len = 0, welcome_len = 0;
    const char *why = "";
    msv_err err =
        msv_mls_member_commit_make(s->m, spec, &commit, &commit_len, &welcome, &welcome_len, &why);
    struct output outs[2] = {{o->commit, commit, commit_len, "", "", 0},
                             {o->welcome, welcome, welcome_len, "", "", 0}};
    int rc = 0;

    if (err != MSV_OK)
        return why[0] ? fail_why(o->cmd, "no commit", why) : fail(o->cmd, "no commit", err);
    if (welcome != NULL && o->welcome == NULL) {
        rc = usage_error(o->cmd, "the commit adds members: --welcome is required");
    } else if (msv_mls_member_commit_merge(s->m) != MSV_OK) {
        rc = EXIT_FAILURE;
    } else if ((rc = session_save(s, outs, welcome != NULL ? 2 : 1)) == 0) {
        printf("epoch: %llu\n", (unsigned long long)s->m->epoch);
    }
    free(commit);
    free(welcome);
    return rc;
}

static int cmd_add(struct mls_opts *o)
{
    struct msv_mls_commit_spec spec;
    struct session s;
    struct file kps[LIST_MAX];
    const uint8_t *kp_ptrs[LIST_MAX];
    size_t kp_lens[LIST_MAX];
    int rc = 0;

    memset(kps, 0, sizeof(kps));
    memset(&s, 0, sizeof(s));
    s.fd = -1;
    const char *outs[2] = {o->commit, o->welcome};

    if ((rc = check_distinct(o, outs, 2, o->key_packages, o->n_key_packages)) != 0 ||
        (rc = check_distinct(o, outs, 2, &o->state, 1)) != 0 ||
        (rc = check_new(o, o->commit)) != 0 || (rc = check_new(o, o->welcome)) != 0)
        return rc;
    for (size_t i = 0; i < o->n_key_packages && rc == 0; i++) {
        if (read_path(o->cmd, o->key_packages[i], &kps[i]) != MSV_OK)
            rc = EXIT_FAILURE;
        kp_ptrs[i] = kps[i].p;
        kp_lens[i] = kps[i].n;
    }
    if (rc == 0 && (rc = session_open(&s, o)) == 0) {
        memset(&spec, 0, sizeof(spec));
        spec.key_packages = kp_ptrs;
        spec.key_package_lens = kp_lens;
        spec.n_adds = o->n_key_packages;
        spec.now = (uint64_t)time(NULL);
        spec.private_message = o->private_message;
        spec.no_path = o->no_path;
        rc = commit_and_save(&s, &spec);
    }
    session_close(&s);
    for (size_t i = 0; i < o->n_key_packages; i++)
        file_free(&kps[i]);
    return rc;
}

static int cmd_remove_update(struct mls_opts *o)
{
    struct msv_mls_commit_spec spec;
    struct session s;
    int rc;

    if ((rc = check_distinct(o, &o->commit, 1, &o->state, 1)) != 0 ||
        (rc = check_new(o, o->commit)) != 0)
        return rc;
    if ((rc = session_open(&s, o)) == 0) {
        memset(&spec, 0, sizeof(spec));
        spec.removes = o->leaves;
        spec.n_removes = o->n_leaves;
        spec.now = (uint64_t)time(NULL);
        spec.private_message = o->private_message;
        rc = commit_and_save(&s, &spec);
    }
    session_close(&s);
    return rc;
}

/* ---- reinit, branch, reinit-group: groups that resume another (RFC 9420 11.2, 11.3) ---- */

static int cmd_reinit(struct mls_opts *o)
{
    struct msv_mls_commit_spec spec;
    struct session s;
    uint8_t gid[MSV_MLS_GROUP_ID_MAX];
    size_t gid_len = 0;
    int rc;

    if ((rc = group_id_of(o, gid, &gid_len)) != 0 ||
        (rc = check_distinct(o, &o->commit, 1, &o->state, 1)) != 0 ||
        (rc = check_new(o, o->commit)) != 0)
        return rc;
    if ((rc = session_open(&s, o)) == 0) {
        memset(&spec, 0, sizeof(spec));
        spec.now = (uint64_t)time(NULL);
        spec.private_message = o->private_message;
        spec.reinit = 1;
        spec.reinit_group_id = gid;
        spec.reinit_group_id_len = gid_len;
        /* the group's own suite unless --suite names another */
        spec.reinit_suite = (o->given & BIT(O_SUITE)) ? (enum msv_mls_suite)o->suite : s.m->suite;
        spec.reinit_extensions = s.m->ext;
        spec.reinit_extensions_len = s.m->ext_len;
        rc = commit_and_save(&s, &spec);
        if (rc == 0)
            print_hex("new group", gid, gid_len);
    }
    session_close(&s);
    return rc;
}

/* branch or reinit-group: the new group from STATE (not changed) written to --out, its
 * Welcome to --welcome. */
static int new_group(struct mls_opts *o, int reinit)
{
    struct session s;
    struct file kps[LIST_MAX];
    struct msv_mls_member *g = NULL;
    const uint8_t *kp_ptrs[LIST_MAX];
    size_t kp_lens[LIST_MAX], gid_len = 0, welcome_len = 0;
    uint8_t gid[MSV_MLS_GROUP_ID_MAX], *welcome = NULL;
    uint64_t now = (uint64_t)time(NULL);
    const char *outs[2] = {o->out, o->welcome}, *why = "";
    msv_err err = MSV_OK;
    int rc = 0;

    memset(kps, 0, sizeof(kps));
    memset(&s, 0, sizeof(s));
    s.fd = -1;
    if ((rc = check_distinct(o, outs, 2, o->key_packages, o->n_key_packages)) != 0 ||
        (rc = check_distinct(o, outs, 2, &o->state, 1)) != 0 || (rc = check_new(o, o->out)) != 0 ||
        (rc = check_new(o, o->welcome)) != 0 ||
        (!reinit && (rc = group_id_of(o, gid, &gid_len)) != 0))
        return rc;
    for (size_t i = 0; i < o->n_key_packages && rc == 0; i++) {
        if (read_path(o->cmd, o->key_packages[i], &kps[i]) != MSV_OK)
            rc = EXIT_FAILURE;
        kp_ptrs[i] = kps[i].p;
        kp_lens[i] = kps[i].n;
    }
    if (rc == 0 && (rc = session_open(&s, o)) == 0) {
        if (reinit)
            err = msv_mls_member_reinit(s.m, kp_ptrs, kp_lens, o->n_key_packages, now,
                                        now + 86400ull * o->days, &g, &welcome, &welcome_len, &why);
        else
            err = msv_mls_member_branch(s.m, gid, gid_len, kp_ptrs, kp_lens, o->n_key_packages, now,
                                        now + 86400ull * o->days, &g, &welcome, &welcome_len, &why);
        if (err != MSV_OK)
            rc = why[0] ? fail_why(o->cmd, "no new group", why) : fail(o->cmd, "no new group", err);
    }
    /* the Welcome first: a new state nobody else can join is of no use */
    if (rc == 0 && write_new(o->cmd, o->welcome, welcome, welcome_len, o->force) != MSV_OK)
        rc = EXIT_FAILURE;
    if (rc == 0 && (rc = save_new_at(o, o->out, g)) != 0)
        (void)unlink(o->welcome);
    if (rc == 0) {
        print_hex("group", g->group_id, g->group_id_len);
        printf("cipher suite: %u\nepoch: %llu\n", (unsigned)g->suite, (unsigned long long)g->epoch);
    }
    session_close(&s);
    msv_mls_member_free(g);
    free(welcome);
    for (size_t i = 0; i < o->n_key_packages; i++)
        file_free(&kps[i]);
    return rc;
}

static int cmd_branch(struct mls_opts *o)
{
    return new_group(o, 0);
}

static int cmd_reinit_group(struct mls_opts *o)
{
    return new_group(o, 1);
}

/* ---- join ---- */

/* The old groups of --resume, read (each file's lock is not needed: it is replaced whole). */
static int resume_load(const struct mls_opts *o, struct msv_mls_member **from)
{
    for (size_t i = 0; i < o->n_resume; i++) {
        if (load_read_only(o, o->resume[i], &from[i]) != 0)
            return EXIT_FAILURE;
    }
    return 0;
}

/* The private part: its suite, and its keys those of the KeyPackage. */
static int check_private(const struct mls_opts *o, const struct file *priv, const struct file *kp,
                         uint16_t *suite)
{
    struct msv_mls_leaf leaf;
    struct msv_reader r;
    const uint8_t *init;
    size_t init_len;
    uint8_t pk[32];
    uint16_t v[4];

    if (priv->n != PRIVATE_LEN || memcmp(priv->p, private_magic, 6) != 0 || priv->p[6] != 0 ||
        priv->p[7] != 1)
        return fail_why(o->cmd, o->private_part, "not a KeyPackage private part");
    *suite = (uint16_t)(priv->p[8] << 8 | priv->p[9]);
    if (!msv_mls_suite_is_supported(*suite))
        return fail_why(o->cmd, o->private_part, "cipher suite not supported");
    msv_reader_init(&r, kp->p, kp->n);
    for (int i = 0; i < 4; i++) {
        if (msv_reader_u16be(&r, &v[i]) != MSV_OK)
            return fail_why(o->cmd, o->key_packages[0], "not a KeyPackage");
    }
    if (v[1] != 5 || v[3] != *suite || msv_mls_get_vec(&r, &init, &init_len) != MSV_OK ||
        init_len != 32 || msv_mls_key_package_check(*suite, kp->p, kp->n, 0, &leaf, NULL) != MSV_OK)
        return fail_why(o->cmd, o->key_packages[0],
                        "not a valid KeyPackage of the private "
                        "part's cipher suite");
    if (crypto_scalarmult_base(pk, priv->p + 42) != 0 || memcmp(pk, init, 32) != 0 ||
        crypto_scalarmult_base(pk, priv->p + 74) != 0 || leaf.encryption_key_len != 32 ||
        memcmp(pk, leaf.encryption_key, 32) != 0)
        return fail_why(o->cmd, o->private_part, "its keys are not the KeyPackage's");
    return 0;
}

static int join_files(struct mls_opts *o, struct file f[4])
{
    if (read_path(o->cmd, o->welcome, &f[0]) != MSV_OK ||
        read_path(o->cmd, o->key_packages[0], &f[1]) != MSV_OK ||
        read_path(o->cmd, o->private_part, &f[2]) != MSV_OK ||
        (o->tree != NULL && read_path(o->cmd, o->tree, &f[3]) != MSV_OK))
        return EXIT_FAILURE;
    return 0;
}

static int cmd_join(struct mls_opts *o)
{
    struct file f[4];
    struct psks psks;
    struct msv_mls_member *m = NULL, *from[LIST_MAX];
    uint16_t suite = 0;
    msv_err err;
    int rc;

    memset(f, 0, sizeof(f));
    memset(&psks, 0, sizeof(psks));
    memset(from, 0, sizeof(from));
    if (o->n_key_packages != 1)
        return usage_error(o->cmd, "takes one --key-package");
    const char *inputs[4] = {o->welcome, o->key_packages[0], o->private_part, o->tree};

    if ((rc = check_distinct(o, &o->state, 1, inputs, o->tree != NULL ? 4 : 3)) == 0 &&
        (rc = check_distinct(o, &o->state, 1, o->resume, o->n_resume)) == 0 &&
        (rc = check_new(o, o->state)) == 0 && (rc = psks_parse(o, &psks)) == 0 &&
        (rc = join_files(o, f)) == 0 && (rc = resume_load(o, from)) == 0)
        rc = check_private(o, &f[2], &f[1], &suite);
    if (rc == 0) {
        err = msv_mls_member_join_resuming((enum msv_mls_suite)suite, f[0].p, f[0].n, f[1].p,
                                           f[1].n, f[2].p + 42, f[2].p + 74, psks.list, psks.n,
                                           (const struct msv_mls_member *const *)from, o->n_resume,
                                           f[3].p, f[3].n, &m);
        if (err == MSV_ERR_NOT_FOUND)
            rc = fail_why(o->cmd, "no join",
                          "the Welcome is not for this KeyPackage, names a PSK not given "
                          "(--psk, or an old group's epoch by --resume) or carries no ratchet "
                          "tree (--tree)");
        else if (err == MSV_ERR_INVALID)
            rc = fail_why(o->cmd, "no join",
                          "the Welcome resumes a group (RFC 9420 11.2, 11.3) it does not match: "
                          "its epoch, suite, id or extensions, or a member not in the old group");
        else if (err != MSV_OK)
            rc = fail(o->cmd, "the Welcome does not open or check", err);
    }
    if (rc == 0 && msv_mls_member_set_signer(m, f[2].p + 10) != MSV_OK)
        rc = fail_why(o->cmd, o->private_part, "its signature key is not our leaf's");
    if (rc == 0)
        rc = save_new(o, m);
    if (rc == 0) { /* its init key opens the Welcome no more: forward secrecy from here */
        char real[PATH_MAX];

        if (realpath(o->private_part, real) != NULL && strcmp(real, o->private_part) != 0)
            msv_mls_file_wipe(real); /* the file a symbolic link names, too */
        msv_mls_file_wipe(o->private_part);
    }
    if (rc == 0) {
        print_hex("group", m->group_id, m->group_id_len);
        printf("epoch: %llu\nleaf: %u\n", (unsigned long long)m->epoch, (unsigned)m->me);
    }
    msv_mls_member_free(m);
    for (size_t i = 0; i < o->n_resume; i++)
        msv_mls_member_free(from[i]);
    psks_free(&psks);
    for (int i = 0; i < 4; i++)
        file_free(&f[i]);
    return rc;
}

/* ---- process ---- */

static int process_commit(struct session *s, const struct file *commit, const struct file *props)
{
    const uint8_t *ptrs[LIST_MAX];
    size_t lens[LIST_MAX];
    char buf[128];
    const char *why = not_ours(s->m, commit->p, commit->n, buf, sizeof(buf));
    msv_err err;

    if (why != NULL)
        return fail_why(s->o->cmd, "commit refused", why);
    for (size_t i = 0; i < s->o->n_proposals; i++) {
        ptrs[i] = props[i].p;
        lens[i] = props[i].n;
    }
    err = msv_mls_member_commit(s->m, ptrs, lens, s->o->n_proposals, commit->p, commit->n);
    if (err == MSV_ERR_NOT_FOUND)
        return fail_why(s->o->cmd, "commit refused",
                        "it names a proposal not given (--proposal) or a PSK not given (--psk)");
    if (err == MSV_ERR_INVALID)
        return fail_why(s->o->cmd, "commit refused", "it removes us, or applies what it may not");
    if (err != MSV_OK)
        return fail(s->o->cmd, "commit refused", err);
    if (session_save(s, NULL, 0) != 0)
        return EXIT_FAILURE;
    printf("epoch: %llu\n", (unsigned long long)s->m->epoch);
    if (s->m->reinit) {
        print_hex("reinitialized as", s->m->reinit_group_id, s->m->reinit_group_id_len);
        printf("the group is closed: 'reinit-group' makes the new one\n");
    }
    return 0;
}

static int cmd_process(struct mls_opts *o)
{
    struct file commit = {NULL, 0}, props[LIST_MAX];
    struct session s;
    int rc = 0;

    memset(props, 0, sizeof(props));
    memset(&s, 0, sizeof(s));
    s.fd = -1;
    if (read_path(o->cmd, o->commit, &commit) != MSV_OK)
        rc = EXIT_FAILURE;
    for (size_t i = 0; rc == 0 && i < o->n_proposals; i++) {
        if (read_path(o->cmd, o->proposals[i], &props[i]) != MSV_OK)
            rc = EXIT_FAILURE;
    }
    if (rc == 0 && (rc = session_open(&s, o)) == 0)
        rc = process_commit(&s, &commit, props);
    session_close(&s);
    file_free(&commit);
    for (size_t i = 0; i < o->n_proposals; i++)
        file_free(&props[i]);
    return rc;
}

/* ---- application messages ---- */

static int cmd_protect(struct mls_opts *o)
{
    struct file in = {NULL, 0};
    struct session s;
    uint8_t *msg = NULL;
    size_t msg_len = 0;
    msv_err err;
    int rc;

    memset(&s, 0, sizeof(s));
    s.fd = -1;
    if ((o->in == NULL) == (o->text == NULL))
        return usage_error(o->cmd, "takes --in FILE or --text TEXT");
    if ((rc = check_distinct(o, &o->out, 1, &o->state, 1)) != 0 || (rc = check_new(o, o->out)) != 0)
        return rc;
    if (o->in != NULL && read_path(o->cmd, o->in, &in) != MSV_OK)
        return EXIT_FAILURE;
    if ((rc = session_open(&s, o)) == 0) {
        err = o->in != NULL ? msv_mls_member_protect(s.m, in.p, in.n, &msg, &msg_len)
                            : msv_mls_member_protect(s.m, (const uint8_t *)o->text, strlen(o->text),
                                                     &msg, &msg_len);
        struct output out = {o->out, msg, msg_len, "", "", 0};

        /* the message staged, the state without its key saved, the message published */
        if (err != MSV_OK)
            rc = fail(o->cmd, "not protected", err);
        else
            rc = session_save(&s, &out, 1);
    }
    session_close(&s);
    file_free(&in);
    free(msg);
    return rc;
}

/*
 * A text to standard output (after the state is saved: lost to a crash or a
 * failed write, which --out FILE is not); on a terminal, with its controls
 * shown as visible escapes rather than acting (as every text of another person).
 */
static int put_text(const char *cmd, const uint8_t *p, size_t n)
{
    if (!isatty(STDOUT_FILENO)) {
        if (fwrite(p, 1, n, stdout) == n && fflush(stdout) == 0)
            return 0;
    } else {
        size_t i = 0;

        while (i < n) {
            size_t len = strnlen((const char *)p + i, n - i);
            char *part = malloc(len + 1);

            if (part == NULL)
                break;
            memcpy(part, p + i, len);
            part[len] = '\0';
            term_put(stdout, part, TERM_LINES);
            msv_secret_free(part, len + 1);
            i += len;
            if (i < n) {
                fputs("\\x00", stdout);
                i++;
            }
        }
        if (i == n && fflush(stdout) == 0 && !ferror(stdout))
            return 0;
    }
    return fail_why(cmd, "standard output", "the text was not written whole; it is read no more");
}

static int cmd_unprotect(struct mls_opts *o)
{
    struct file in = {NULL, 0};
    struct session s;
    uint8_t *data = NULL;
    size_t data_len = 0;
    uint32_t sender = 0;
    char buf[128];
    const char *why;
    msv_err err;
    int rc;

    memset(&s, 0, sizeof(s));
    s.fd = -1;
    if ((rc = check_distinct(o, &o->out, 1, &o->state, 1)) != 0 ||
        (rc = check_distinct(o, &o->out, 1, &o->in, 1)) != 0 || (rc = check_new(o, o->out)) != 0)
        return rc;
    if (o->out == NULL &&
        ((rc = fcntl(STDOUT_FILENO, F_GETFL)) < 0 || (rc & O_ACCMODE) == O_RDONLY))
        return fail_why(o->cmd, "standard output", "not open for writing (--out FILE)");
    if (read_path(o->cmd, o->in, &in) != MSV_OK)
        return EXIT_FAILURE;
    if ((rc = session_open(&s, o)) == 0) {
        why = not_ours(s.m, in.p, in.n, buf, sizeof(buf));
        err = why != NULL ? MSV_ERR_PARSE
                          : msv_mls_member_unprotect(s.m, in.p, in.n, &data, &data_len, &sender);
        if (why != NULL)
            rc = fail_why(o->cmd, "not read", why);
        else if (err == MSV_ERR_AUTH)
            rc = fail(
                o->cmd,
                "not read (used already, its key dropped among the 64 kept, not ours, or changed)",
                err);
        else if (err != MSV_OK)
            rc = fail(o->cmd, "not read", err);
        else if (o->out != NULL) /* staged, the state without the key saved, published */
            rc = session_save(&s, &(struct output){o->out, data, data_len, "", "", 0}, 1);
        else if ((rc = session_save(&s, NULL, 0)) == 0)
            rc = put_text(o->cmd, data, data_len);
        if (rc == 0)
            fprintf(o->out != NULL ? stdout : stderr, "sender: leaf %u\n", (unsigned)sender);
    }
    session_close(&s);
    file_free(&in);
    if (data != NULL)
        msv_secret_free(data, data_len);
    return rc;
}

/* ---- epoch ---- */

static int cmd_epoch(struct mls_opts *o)
{
    struct session s;
    uint32_t members = 0;
    int rc = session_open(&s, o);

    if (rc == 0) {
        for (uint32_t i = 0; i < s.m->tree.n_leaves; i++)
            members += s.m->tree.nodes[2 * i].type == 1;
        print_hex("group", s.m->group_id, s.m->group_id_len);
        printf("cipher suite: %u\nepoch: %llu\nleaf: %u\nmembers: %u\n", (unsigned)s.m->suite,
               (unsigned long long)s.m->epoch, (unsigned)s.m->me, (unsigned)members);
        print_hex("epoch authenticator", s.m->s.epoch_authenticator, MSV_MLS_NH);
        if (s.m->reinit) {
            print_hex("reinitialized as", s.m->reinit_group_id, s.m->reinit_group_id_len);
            printf("new cipher suite: %u\n", (unsigned)s.m->reinit_suite);
        }
    }
    session_close(&s);
    return rc;
}

/* ---- the subcommands ---- */

static const struct {
    const char *name;
    int (*run)(struct mls_opts *o);
    unsigned allowed, required;
    const char *usage;
} commands[] = {
    {"key-package", cmd_key_package,
     BIT(O_IDENTITY) | BIT(O_STATE) | BIT(O_OUT) | BIT(O_PRIVATE) | BIT(O_SUITE) | BIT(O_DAYS) |
         BIT(O_FORCE),
     BIT(O_OUT) | BIT(O_PRIVATE),
     "key-package (--identity ID | --state STATE) --out KP_FILE --private PRIV_FILE\n"
     "         [--suite 1|3] [--days N] [--force]\n\n"
     "Writes a KeyPackage (an MLSMessage) for a basic credential holding ID, valid from\n"
     "an hour ago for N days (84, the most a group takes: RFC 9420 7.2), with fresh\n"
     "keys, and its private part (mode 0600): the signature seed and the init and leaf\n"
     "HPKE private keys. With --state (read only), the identity and signature key are\n"
     "those of our leaf in that group, as a branch or a reinitialization of it needs.\n"},
    {"create", cmd_create,
     BIT(O_IDENTITY) | BIT(O_STATE) | BIT(O_SUITE) | BIT(O_GROUP_ID) | BIT(O_DAYS) | BIT(O_FORCE),
     BIT(O_IDENTITY) | BIT(O_STATE),
     "create --identity ID --state STATE [--suite 1|3] [--group-id HEX] [--days N]\n"
     "         [--force]\n\n"
     "Creates a group of one at epoch 0 (RFC 9420 11) with a fresh signature key and\n"
     "leaf for ID, and writes its state (mode 0600). The group id is random unless given.\n"},
    {"add", cmd_add,
     BIT(O_STATE) | BIT(O_KEY_PACKAGE) | BIT(O_COMMIT) | BIT(O_WELCOME) | BIT(O_PRIVATE_MESSAGE) |
         BIT(O_NO_PATH) | BIT(O_FORCE),
     BIT(O_STATE) | BIT(O_KEY_PACKAGE) | BIT(O_COMMIT) | BIT(O_WELCOME),
     "add --state STATE --key-package KP_FILE... --commit COMMIT_FILE\n"
     "         --welcome WELCOME_FILE [--private-message] [--no-path] [--force]\n\n"
     "Commits the addition of each KeyPackage (validated first) with an UpdatePath\n"
     "(none with --no-path: a smaller commit that renews no key of the tree),\n"
     "writes the Commit (a PublicMessage, or a PrivateMessage) and the Welcome, and\n"
     "moves STATE to the new epoch.\n"},
    {"remove", cmd_remove_update,
     BIT(O_STATE) | BIT(O_LEAF) | BIT(O_COMMIT) | BIT(O_PRIVATE_MESSAGE) | BIT(O_FORCE),
     BIT(O_STATE) | BIT(O_LEAF) | BIT(O_COMMIT),
     "remove --state STATE --leaf INDEX... --commit COMMIT_FILE [--private-message]\n"
     "         [--force]\n\n"
     "Commits the removal of the members at the leaves given, with an UpdatePath, writes\n"
     "the Commit and moves STATE to the new epoch: the removed cannot read what follows.\n"},
    {"update", cmd_remove_update,
     BIT(O_STATE) | BIT(O_COMMIT) | BIT(O_PRIVATE_MESSAGE) | BIT(O_FORCE),
     BIT(O_STATE) | BIT(O_COMMIT),
     "update --state STATE --commit COMMIT_FILE [--private-message] [--force]\n\n"
     "Commits nothing but an UpdatePath: our leaf and path get fresh keys (post-compromise\n"
     "security) and STATE moves to the new epoch.\n"},
    {"reinit", cmd_reinit,
     BIT(O_STATE) | BIT(O_COMMIT) | BIT(O_GROUP_ID) | BIT(O_SUITE) | BIT(O_PRIVATE_MESSAGE) |
         BIT(O_FORCE),
     BIT(O_STATE) | BIT(O_COMMIT),
     "reinit --state STATE --commit COMMIT_FILE [--group-id HEX] [--suite 1|3]\n"
     "         [--private-message] [--force]\n\n"
     "Commits a ReInit (RFC 9420 11.2) alone: the group is to go on as a new group of\n"
     "the same members, with the id given (random if not), the suite given (the group's\n"
     "if not) and the group's extensions. Once the commit is taken, the group is closed\n"
     "for every member: nothing more is sent or committed in it, and any member makes\n"
     "the new group with 'reinit-group'.\n"},
    {"reinit-group", cmd_reinit_group,
     BIT(O_STATE) | BIT(O_KEY_PACKAGE) | BIT(O_OUT) | BIT(O_WELCOME) | BIT(O_DAYS) | BIT(O_FORCE),
     BIT(O_STATE) | BIT(O_KEY_PACKAGE) | BIT(O_OUT) | BIT(O_WELCOME),
     "reinit-group --state STATE --key-package KP_FILE... --out NEW_STATE\n"
     "         --welcome WELCOME_FILE [--days N] [--force]\n\n"
     "Makes the group a committed ReInit asks for, from STATE (which does not change):\n"
     "our leaf with the same identity and signature key, the members of the\n"
     "KeyPackages (one of every other member, in the new suite, each with the identity\n"
     "and signature key of its leaf: key-package's state option makes them) added with\n"
     "the old group's resumption PSK (usage reinit); writes the Welcome, then NEW_STATE\n"
     "at epoch 1. The others join with their closed states.\n"},
    {"branch", cmd_branch,
     BIT(O_STATE) | BIT(O_KEY_PACKAGE) | BIT(O_OUT) | BIT(O_WELCOME) | BIT(O_GROUP_ID) |
         BIT(O_DAYS) | BIT(O_FORCE),
     BIT(O_STATE) | BIT(O_KEY_PACKAGE) | BIT(O_OUT) | BIT(O_WELCOME),
     "branch --state STATE --key-package KP_FILE... --out NEW_STATE --welcome WELCOME_FILE\n"
     "         [--group-id HEX] [--days N] [--force]\n\n"
     "Makes a subgroup (RFC 9420 11.3) of some of the group's members, from STATE (which\n"
     "does not change): a new group of the id given (random if not) in the same suite,\n"
     "our leaf as in the group, the members of the KeyPackages (each a member of the\n"
     "group: the identity and signature key of its leaf) added with the current epoch's\n"
     "resumption PSK (usage branch); writes the Welcome, then NEW_STATE at epoch 1. The\n"
     "others join with their states of the group.\n"},
    {"join", cmd_join,
     BIT(O_STATE) | BIT(O_WELCOME) | BIT(O_KEY_PACKAGE) | BIT(O_PRIVATE) | BIT(O_TREE) |
         BIT(O_PSK) | BIT(O_RESUME) | BIT(O_FORCE),
     BIT(O_STATE) | BIT(O_WELCOME) | BIT(O_KEY_PACKAGE) | BIT(O_PRIVATE),
     "join --welcome WELCOME_FILE --key-package KP_FILE --private PRIV_FILE\n"
     "         --state STATE [--tree TREE_FILE] [--psk ID_HEX:PSK_HEX]...\n"
     "         [--resume OLD_STATE]... [--force]\n\n"
     "Joins from a Welcome made for the KeyPackage: its secrets opened with the private\n"
     "part, the tree (the GroupInfo's, or TREE_FILE: a ratchet_tree extension's\n"
     "content) and the GroupInfo checked; writes STATE, then overwrites PRIV_FILE with\n"
     "zeros and removes it (its init key would open the Welcome again). A Welcome\n"
     "naming a resumption PSK (a branch, a reinitialization) needs our state of that\n"
     "group (--resume, read only), and is checked against it (RFC 9420 11.2, 11.3).\n"},
    {"process", cmd_process, BIT(O_STATE) | BIT(O_COMMIT) | BIT(O_PROPOSAL) | BIT(O_PSK),
     BIT(O_STATE) | BIT(O_COMMIT),
     "process --state STATE --commit COMMIT_FILE [--proposal PROPOSAL_FILE]...\n"
     "         [--psk ID_HEX:PSK_HEX]...\n\n"
     "Applies another member's Commit (PublicMessage or PrivateMessage) with the\n"
     "proposals it names by reference, and moves STATE to its epoch; a commit of\n"
     "another epoch or group, or one that does not check, changes nothing.\n"},
    {"protect", cmd_protect, BIT(O_STATE) | BIT(O_IN) | BIT(O_TEXT) | BIT(O_OUT) | BIT(O_FORCE),
     BIT(O_STATE) | BIT(O_OUT),
     "protect --state STATE (--in FILE | --text TEXT) --out MESSAGE_FILE [--force]\n\n"
     "Writes an application message as a PrivateMessage of the current epoch; its key\n"
     "is erased from STATE.\n"},
    {"unprotect", cmd_unprotect, BIT(O_STATE) | BIT(O_IN) | BIT(O_OUT) | BIT(O_FORCE),
     BIT(O_STATE) | BIT(O_IN),
     "unprotect --state STATE --in MESSAGE_FILE [--out FILE] [--force]\n\n"
     "Reads another member's application PrivateMessage of the current epoch: the text\n"
     "to FILE (or standard output), the sender's leaf printed. Its key is erased from\n"
     "STATE, so a message is read once (exit status 3 after). Standard output gets the\n"
     "text once STATE is saved, so a crash or a failed write there loses it (FILE does\n"
     "not); on a terminal its control characters are shown as escapes.\n"},
    {"epoch", cmd_epoch, BIT(O_STATE), BIT(O_STATE),
     "epoch --state STATE\n\n"
     "Prints the group id, cipher suite, epoch, our leaf, the number of members and\n"
     "the epoch authenticator, which every member of the epoch shares.\n"},
};

static void usage(FILE *f)
{
    fprintf(f, "usage: %s COMMAND [OPTIONS]\n\nMLS (RFC 9420) groups on files:\n", prog);
    for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
        fprintf(f, "  %s\n", commands[i].name);
    fprintf(f,
            "\n'%s COMMAND --help' describes each. Cipher suites 1 and 3.\n"
            "An output is never the state or another output, even with --force. Outputs\n"
            "are written beside their names first and take their names once STATE is\n"
            "saved; what an interrupted command left (STATE.pending) is settled by the\n"
            "next command on STATE.\n"
            "exit status: 0 success, 1 error, 2 usage, 3 authentication failed\n",
            prog);
}

int msv_crypto_mls_main(int argc, char **argv)
{
    struct mls_opts o;
    int rc;

    if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? EXIT_USAGE : 0;
    }
    for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++) {
        if (strcmp(argv[1], commands[i].name) != 0)
            continue;
        memset(&o, 0, sizeof(o));
        o.cmd = commands[i].name;
        o.suite = MSV_MLS_SUITE_X25519_AES128GCM;
        o.days = 84; /* with the hour before: MSV_MLS_KEY_PACKAGE_LIFETIME_MAX */
        if ((rc = parse(&o, argc - 1, argv + 1, commands[i].allowed)) != 0)
            return rc;
        if (o.help) {
            printf("usage: %s %s", prog, commands[i].usage);
            return 0;
        }
        if ((rc = require(&o, commands[i].required)) != 0)
            return rc;
        return commands[i].run(&o);
    }
    fprintf(stderr, "%s: unknown command '%s'\n", prog, argv[1]);
    usage(stderr);
    return EXIT_USAGE;
}
