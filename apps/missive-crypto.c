/*
 * missive-crypto: Missive's message formats from the shell, so that they can
 * be inspected and checked against other implementations.
 *
 * Every command writes its output file atomically (a temporary file renamed
 * into place), so a failed command leaves nothing behind and changes nothing.
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

#include "missive/crypto.h"
#include "missive/mlkem.h"
#include "missive/payload.h"
#include "missive/util.h"
#include "missive/vrf.h"

#include "crypto_mls.h"

#define EXIT_USAGE 2
#define EXIT_AUTH 3
#define INPUT_MAX (64u * 1024u * 1024u)
#define CHUNK (64u * 1024u)

static const char *prog = "missive-crypto";

static void usage_main(FILE *f)
{
    fprintf(f,
            "usage: %s COMMAND [OPTIONS]\n"
            "\n"
            "Missive's message formats from the shell (see docs/crypto.md).\n"
            "\n"
            "commands:\n"
            "  keygen          create a device identity (secret key file and public identity)\n"
            "  public          write the public identity of a secret key file\n"
            "  fingerprint     print the suite and fingerprint of an identity\n"
            "  seal            encrypt and sign a payload for one recipient device\n"
            "  open            verify and decrypt an envelope\n"
            "  verify          check a classic envelope's signature without decrypting\n"
            "  payload-encode  build a message payload\n"
            "  payload-decode  print a payload as JSON\n"
            "  attach-encrypt  encrypt a file for the attachment store\n"
            "  attach-decrypt  check and decrypt an attachment\n"
            "  mlkem768 keygen|encaps|decaps\n"
            "                  ML-KEM-768 (FIPS 203) on files in the standard's byte formats\n"
            "  vrf             VRF keys, proofs and their verification (RFC 9381)\n"
            "  mls             MLS (RFC 9420) groups on files: KeyPackages, commits,\n"
            "                  Welcomes, application messages, the member's state\n"
            "\n"
            "'%s COMMAND --help' describes each command.\n"
            "exit status: 0 success, 1 error, 2 usage, 3 authentication failed\n",
            prog, prog);
}

static int fail(const char *what, msv_err err)
{
    fprintf(stderr, "%s: %s: %s\n", prog, what, msv_strerror(err));
    return err == MSV_ERR_AUTH ? EXIT_AUTH : EXIT_FAILURE;
}

static int usage_error(const char *cmd, const char *msg)
{
    fprintf(stderr, "%s %s: %s\nTry '%s %s --help'.\n", prog, cmd, msg, prog, cmd);
    return EXIT_USAGE;
}

/* ---- files ---------------------------------------------------------------------------- */

/* Reads a whole file ("-" is standard input) of at most max bytes. */
static msv_err read_all(const char *path, size_t max, uint8_t **out, size_t *out_len)
{
    FILE *f = strcmp(path, "-") == 0 ? stdin : fopen(path, "rb");
    size_t len = 0, cap = 4096;
    uint8_t *buf;
    msv_err err = MSV_OK;

    if (f == NULL) {
        fprintf(stderr, "%s: %s: %s\n", prog, path, strerror(errno));
        return MSV_ERR_IO;
    }
    buf = malloc(cap);
    while (buf != NULL) {
        size_t n;

        if (len == cap) {
            uint8_t *bigger = cap * 2 > max + 1 ? NULL : malloc(cap * 2);

            if (bigger == NULL) {
                err = cap * 2 > max + 1 ? MSV_ERR_TOO_BIG : MSV_ERR_NOMEM;
                break;
            }
            memcpy(bigger, buf, len);
            msv_secret_free(buf, cap);
            buf = bigger;
            cap *= 2;
        }
        n = fread(buf + len, 1, cap - len, f);
        len += n;
        if (len > max) {
            err = MSV_ERR_TOO_BIG;
            break;
        }
        if (n == 0) {
            if (ferror(f))
                err = MSV_ERR_IO;
            break;
        }
    }
    if (buf == NULL)
        err = MSV_ERR_NOMEM;
    if (f != stdin)
        fclose(f);
    if (err != MSV_OK) {
        if (err == MSV_ERR_TOO_BIG)
            fprintf(stderr, "%s: %s: larger than %zu bytes\n", prog, path, max);
        msv_secret_free(buf, cap);
        return err;
    }
    *out = buf;
    *out_len = len;
    return MSV_OK;
}

struct out_file {
    const char *path; /* NULL or "-" for standard output */
    char tmp[4096];
    FILE *f;
};

/* Opens a temporary file beside path with the given mode; path NULL or "-" is stdout. */
static msv_err out_open(struct out_file *o, const char *path, mode_t mode, int overwrite)
{
    int fd;

    o->path = path;
    o->f = NULL;
    if (path == NULL || strcmp(path, "-") == 0) {
        o->f = stdout;
        return MSV_OK;
    }
    if (!overwrite && access(path, F_OK) == 0) {
        fprintf(stderr, "%s: %s exists; not overwriting it\n", prog, path);
        return MSV_ERR_EXISTS;
    }
    if ((size_t)snprintf(o->tmp, sizeof(o->tmp), "%s.tmpXXXXXX", path) >= sizeof(o->tmp))
        return MSV_ERR_INVALID;
    fd = mkstemp(o->tmp);
    if (fd < 0 || fchmod(fd, mode) != 0 || (o->f = fdopen(fd, "wb")) == NULL) {
        fprintf(stderr, "%s: %s: %s\n", prog, path, strerror(errno));
        if (fd >= 0) {
            close(fd);
            unlink(o->tmp);
        }
        return MSV_ERR_IO;
    }
    return MSV_OK;
}

/* Commits (ok) or discards the output. */
static msv_err out_close(struct out_file *o, int ok)
{
    int failed = 0;

    if (o->f == NULL)
        return MSV_OK;
    if (o->f == stdout) {
        o->f = NULL;
        return fflush(stdout) == 0 ? MSV_OK : MSV_ERR_IO;
    }
    failed = fflush(o->f) != 0 || fsync(fileno(o->f)) != 0;
    failed |= fclose(o->f) != 0;
    o->f = NULL;
    if (!ok || failed || rename(o->tmp, o->path) != 0) {
        unlink(o->tmp);
        if (ok)
            fprintf(stderr, "%s: %s: %s\n", prog, o->path, strerror(errno));
        return ok ? MSV_ERR_IO : MSV_OK;
    }
    return MSV_OK;
}

static msv_err write_file(const char *path, const uint8_t *data, size_t len, mode_t mode,
                          int overwrite)
{
    struct out_file o;
    msv_err err = out_open(&o, path, mode, overwrite);

    if (err != MSV_OK)
        return err;
    if (len > 0 && fwrite(data, 1, len, o.f) != len)
        err = MSV_ERR_IO;
    if (out_close(&o, err == MSV_OK) != MSV_OK)
        err = MSV_ERR_IO;
    return err;
}

static void warn_if_readable(const char *path)
{
    struct stat st;

    if (stat(path, &st) == 0 && (st.st_mode & 077) != 0)
        fprintf(stderr, "%s: warning: %s is readable by others (chmod 600 it)\n", prog, path);
}

static msv_err load_identity(const char *path, struct msv_identity **out)
{
    uint8_t *bytes = NULL;
    size_t len = 0;
    msv_err err;

    warn_if_readable(path);
    err = read_all(path, 1u << 20, &bytes, &len);
    if (err != MSV_OK)
        return err;
    err = msv_identity_import(bytes, len, out);
    msv_secret_free(bytes, len);
    if (err != MSV_OK)
        fprintf(stderr, "%s: %s is not a Missive secret key file\n", prog, path);
    return err;
}

static msv_err load_public(const char *path, struct msv_public_identity **out)
{
    uint8_t *bytes = NULL;
    size_t len = 0;
    msv_err err = read_all(path, 1u << 20, &bytes, &len);

    if (err != MSV_OK)
        return err;
    err = msv_public_identity_parse(MSV_SUITE_ANY, bytes, len, out);
    free(bytes);
    if (err != MSV_OK)
        fprintf(stderr, "%s: %s is not a valid public identity\n", prog, path);
    return err;
}

/* ---- option parsing ------------------------------------------------------------------- */

struct opts {
    const char *suite, *out, *public_out, *key, *from, *to, *in, *text, *sha256, *kind;
    const char *group_name, *target, *seed, *random;
    const char *args[3]; /* positional arguments, for commands that take them */
    size_t arg_count;
    const char *participants[MSV_PARTICIPANTS_MAX];
    size_t participant_count;
    unsigned rsa_bits;
    int force, help;
};

enum {
    OPT_SUITE = 1000,
    OPT_RSA,
    OPT_OUT,
    OPT_PUBLIC,
    OPT_KEY,
    OPT_FROM,
    OPT_TO,
    OPT_IN,
    OPT_TEXT,
    OPT_SHA,
    OPT_KIND,
    OPT_PART,
    OPT_GROUP,
    OPT_TARGET,
    OPT_FORCE,
    OPT_SEED,
    OPT_RANDOM,
    OPT_HEX,
    OPT_HELP
};

static const struct option long_opts[] = {
    {"suite", required_argument, NULL, OPT_SUITE},
    {"rsa-bits", required_argument, NULL, OPT_RSA},
    {"out", required_argument, NULL, OPT_OUT},
    {"public", required_argument, NULL, OPT_PUBLIC},
    {"key", required_argument, NULL, OPT_KEY},
    {"from", required_argument, NULL, OPT_FROM},
    {"to", required_argument, NULL, OPT_TO},
    {"in", required_argument, NULL, OPT_IN},
    {"text", required_argument, NULL, OPT_TEXT},
    {"sha256", required_argument, NULL, OPT_SHA},
    {"kind", required_argument, NULL, OPT_KIND},
    {"participant", required_argument, NULL, OPT_PART},
    {"group-name", required_argument, NULL, OPT_GROUP},
    {"target", required_argument, NULL, OPT_TARGET},
    {"force", no_argument, NULL, OPT_FORCE},
    {"seed", required_argument, NULL, OPT_SEED},
    {"random", required_argument, NULL, OPT_RANDOM},
    {"help", no_argument, NULL, OPT_HELP},
    {NULL, 0, NULL, 0},
};

static int parse_uint(const char *s, unsigned *out)
{
    char *end;
    unsigned long v;

    errno = 0;
    v = strtoul(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0' || v > 65536)
        return -1;
    *out = (unsigned)v;
    return 0;
}

/* Returns 0, or the exit status for a usage error; up to max_args positional arguments. */
static int parse_opts(const char *cmd, int argc, char **argv, struct opts *o, size_t max_args)
{
    int c;

    memset(o, 0, sizeof(*o));
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "", long_opts, NULL)) != -1) {
        switch (c) {
        case OPT_SUITE:
            o->suite = optarg;
            break;
        case OPT_RSA:
            if (parse_uint(optarg, &o->rsa_bits) != 0)
                return usage_error(cmd, "--rsa-bits takes a number");
            break;
        case OPT_OUT:
            o->out = optarg;
            break;
        case OPT_PUBLIC:
            o->public_out = optarg;
            break;
        case OPT_KEY:
            o->key = optarg;
            break;
        case OPT_FROM:
            o->from = optarg;
            break;
        case OPT_TO:
            o->to = optarg;
            break;
        case OPT_IN:
            o->in = optarg;
            break;
        case OPT_TEXT:
            o->text = optarg;
            break;
        case OPT_SHA:
            o->sha256 = optarg;
            break;
        case OPT_KIND:
            o->kind = optarg;
            break;
        case OPT_GROUP:
            o->group_name = optarg;
            break;
        case OPT_TARGET:
            o->target = optarg;
            break;
        case OPT_PART:
            if (o->participant_count == MSV_PARTICIPANTS_MAX)
                return usage_error(cmd, "too many --participant options");
            o->participants[o->participant_count++] = optarg;
            break;
        case OPT_FORCE:
            o->force = 1;
            break;
        case OPT_SEED:
            o->seed = optarg;
            break;
        case OPT_RANDOM:
            o->random = optarg;
            break;
        case OPT_HELP:
            o->help = 1;
            break;
        default:
            return usage_error(cmd, "unknown option or missing argument");
        }
    }
    for (; optind < argc; optind++) {
        if (o->arg_count == max_args || o->arg_count == sizeof(o->args) / sizeof(o->args[0]))
            return usage_error(cmd, "unexpected argument");
        o->args[o->arg_count++] = argv[optind];
    }
    return 0;
}

static int need(const char *cmd, const char *value, const char *name)
{
    if (value != NULL)
        return 0;
    fprintf(stderr, "%s %s: %s is required\nTry '%s %s --help'.\n", prog, cmd, name, prog, cmd);
    return EXIT_USAGE;
}

/* ---- commands ------------------------------------------------------------------------- */

static void print_fingerprint(const struct msv_public_identity *pub)
{
    uint8_t hash[MSV_IDENTITY_HASH_LEN];
    char fp[MSV_FINGERPRINT_TEXT_LEN];

    msv_public_identity_hash(pub, hash);
    msv_fingerprint_text(hash, fp);
    printf("suite: %s\nfingerprint: %s\n", msv_suite_name(msv_public_identity_suite(pub)), fp);
}

static int cmd_keygen(const struct opts *o)
{
    enum msv_suite suite = MSV_SUITE_MODERN;
    struct msv_identity *id = NULL;
    uint8_t *secret = NULL;
    size_t secret_len = 0, pub_len;
    const uint8_t *pub;
    msv_err err;
    int rc;

    if (o->help) {
        printf("usage: %s keygen --out KEYFILE [--public PUBFILE] [--suite modern|ecies|classic]\n"
               "                     [--rsa-bits 1280|2048|3072] [--force]\n\n"
               "Creates a device identity. KEYFILE (mode 0600) holds the secret keys;\n"
               "PUBFILE the public identity the directory publishes. The default suite is\n"
               "modern; --rsa-bits applies to classic (default 1280). Existing files are\n"
               "kept unless --force is given.\n",
               prog);
        return 0;
    }
    if ((rc = need("keygen", o->out, "--out")) != 0)
        return rc;
    if (o->suite != NULL && msv_suite_from_name(o->suite, &suite) != MSV_OK)
        return usage_error("keygen", "--suite must be modern, ecies or classic");
    err = msv_identity_generate(suite, o->rsa_bits, &id);
    if (err == MSV_ERR_INVALID)
        return usage_error("keygen", "--rsa-bits must be 1280, 2048 or 3072, with classic only");
    if (err == MSV_OK)
        err = msv_identity_export(id, &secret, &secret_len);
    if (err == MSV_OK)
        err = write_file(o->out, secret, secret_len, 0600, o->force);
    if (err == MSV_OK && o->public_out != NULL) {
        pub = msv_public_identity_bytes(msv_identity_public(id), &pub_len);
        err = write_file(o->public_out, pub, pub_len, 0644, o->force);
        if (err != MSV_OK)
            unlink(o->out); /* all or nothing: do not leave half a key pair */
    }
    if (err == MSV_OK)
        print_fingerprint(msv_identity_public(id));
    msv_secret_free(secret, secret_len);
    msv_identity_free(id);
    return err == MSV_OK ? 0 : fail("keygen", err);
}

static int cmd_public(const struct opts *o)
{
    struct msv_identity *id = NULL;
    const uint8_t *pub;
    size_t len;
    msv_err err;
    int rc;

    if (o->help) {
        printf("usage: %s public --key KEYFILE [--out PUBFILE] [--force]\n\n"
               "Writes the public identity of a secret key file (standard output by default).\n",
               prog);
        return 0;
    }
    if ((rc = need("public", o->key, "--key")) != 0)
        return rc;
    err = load_identity(o->key, &id);
    if (err == MSV_OK) {
        pub = msv_public_identity_bytes(msv_identity_public(id), &len);
        err = write_file(o->out, pub, len, 0644, o->force);
    }
    msv_identity_free(id);
    return err == MSV_OK ? 0 : fail("public", err);
}

static int cmd_fingerprint(const struct opts *o)
{
    struct msv_public_identity *pub = NULL;
    struct msv_identity *id = NULL;
    uint8_t *bytes = NULL;
    size_t len = 0;
    msv_err err;
    int rc;

    if (o->help) {
        printf("usage: %s fingerprint --in FILE\n\n"
               "Prints the suite and the fingerprint (SHA-256 identity hash) of a public\n"
               "identity or a secret key file.\n",
               prog);
        return 0;
    }
    if ((rc = need("fingerprint", o->in, "--in")) != 0)
        return rc;
    err = read_all(o->in, 1u << 20, &bytes, &len);
    if (err != MSV_OK)
        return fail("fingerprint", err);
    if (msv_public_identity_parse(MSV_SUITE_ANY, bytes, len, &pub) == MSV_OK) {
        print_fingerprint(pub);
    } else if (msv_identity_import(bytes, len, &id) == MSV_OK) {
        print_fingerprint(msv_identity_public(id));
    } else {
        fprintf(stderr, "%s: %s is neither a public identity nor a secret key file\n", prog, o->in);
        err = MSV_ERR_PARSE;
    }
    msv_public_identity_free(pub);
    msv_identity_free(id);
    msv_secret_free(bytes, len);
    return err == MSV_OK ? 0 : EXIT_FAILURE;
}

static int cmd_seal(const struct opts *o)
{
    struct msv_identity *sender = NULL;
    struct msv_public_identity *recipient = NULL;
    uint8_t *pt = NULL, *wire = NULL;
    size_t pt_len = 0, wire_len = 0;
    msv_err err;
    int rc;

    if (o->help) {
        printf("usage: %s seal --key SENDER_KEYFILE --to RECIPIENT_PUBFILE [--in FILE]\n"
               "                   [--out FILE] [--force]\n\n"
               "Encrypts the payload in FILE (standard input by default) for the recipient\n"
               "device and signs it with the sender's key, in the recipient's suite.\n",
               prog);
        return 0;
    }
    if ((rc = need("seal", o->key, "--key")) != 0 || (rc = need("seal", o->to, "--to")) != 0)
        return rc;
    err = load_identity(o->key, &sender);
    if (err == MSV_OK)
        err = load_public(o->to, &recipient);
    if (err == MSV_OK)
        err = read_all(o->in ? o->in : "-", MSV_PLAINTEXT_MAX, &pt, &pt_len);
    if (err == MSV_OK && msv_identity_suite(sender) != msv_public_identity_suite(recipient)) {
        fprintf(stderr, "%s: sender is %s but recipient is %s\n", prog,
                msv_suite_name(msv_identity_suite(sender)),
                msv_suite_name(msv_public_identity_suite(recipient)));
        err = MSV_ERR_INVALID;
    }
    if (err == MSV_OK)
        err = msv_seal(sender, recipient, pt, pt_len, &wire, &wire_len);
    if (err == MSV_OK)
        err = write_file(o->out, wire, wire_len, 0644, o->force);
    msv_secret_free(pt, pt_len);
    free(wire);
    msv_identity_free(sender);
    msv_public_identity_free(recipient);
    return err == MSV_OK ? 0 : fail("seal", err);
}

static int cmd_open(const struct opts *o)
{
    struct msv_identity *recipient = NULL;
    struct msv_public_identity *sender = NULL;
    uint8_t *wire = NULL, *pt = NULL;
    size_t wire_len = 0, pt_len = 0;
    msv_err err;
    int rc;

    if (o->help) {
        printf("usage: %s open --key RECIPIENT_KEYFILE --from SENDER_PUBFILE [--in FILE]\n"
               "                   [--out FILE] [--force]\n\n"
               "Verifies and decrypts an envelope (standard input by default). Any failure\n"
               "of authenticity is reported the same way, with exit status 3, and no\n"
               "output is written.\n",
               prog);
        return 0;
    }
    if ((rc = need("open", o->key, "--key")) != 0 || (rc = need("open", o->from, "--from")) != 0)
        return rc;
    err = load_identity(o->key, &recipient);
    if (err == MSV_OK)
        err = load_public(o->from, &sender);
    if (err == MSV_OK)
        err = read_all(o->in ? o->in : "-", 2 * MSV_PLAINTEXT_MAX, &wire, &wire_len);
    if (err == MSV_OK && msv_identity_suite(recipient) != msv_public_identity_suite(sender))
        err = MSV_ERR_INVALID;
    if (err == MSV_OK)
        err = msv_open(recipient, sender, wire, wire_len, NULL, &pt, &pt_len);
    if (err == MSV_OK)
        err = write_file(o->out, pt, pt_len, 0600, o->force);
    msv_secret_free(pt, pt_len);
    free(wire);
    msv_identity_free(recipient);
    msv_public_identity_free(sender);
    return err == MSV_OK ? 0 : fail("open", err);
}

static int cmd_verify(const struct opts *o)
{
    struct msv_public_identity *sender = NULL;
    uint8_t *wire = NULL;
    size_t wire_len = 0;
    msv_err err;
    int rc;

    if (o->help) {
        printf("usage: %s verify --from SENDER_PUBFILE [--in FILE]\n\n"
               "Checks the signature of a classic envelope without decrypting it. The\n"
               "ecies and modern suites sign inside the encryption: use 'open' for them.\n",
               prog);
        return 0;
    }
    if ((rc = need("verify", o->from, "--from")) != 0)
        return rc;
    err = load_public(o->from, &sender);
    if (err == MSV_OK)
        err = read_all(o->in ? o->in : "-", 2 * MSV_PLAINTEXT_MAX, &wire, &wire_len);
    if (err == MSV_OK)
        err = msv_verify_outer(sender, wire, wire_len);
    if (err == MSV_OK)
        printf("signature: valid\n");
    free(wire);
    msv_public_identity_free(sender);
    return err == MSV_OK ? 0 : fail("verify", err);
}

static const struct {
    const char *name;
    enum msv_payload_kind kind;
} kinds[] = {
    {"message", MSV_KIND_MESSAGE},
    {"receipt-delivered", MSV_KIND_RECEIPT_DELIVERED},
    {"receipt-read", MSV_KIND_RECEIPT_READ},
    {"typing", MSV_KIND_TYPING},
    {"edit", MSV_KIND_EDIT},
    {"unsend", MSV_KIND_UNSEND},
    {"group-change", MSV_KIND_GROUP_CHANGE},
};

static int cmd_payload_encode(const struct opts *o)
{
    struct msv_payload p;
    uint8_t *enc = NULL;
    size_t enc_len = 0, n = 0;
    msv_err err;

    if (o->help) {
        printf("usage: %s payload-encode [--kind KIND] [--text TEXT] [--participant HANDLE]...\n"
               "                             [--group-name NAME] [--target MESSAGE_ID_HEX]\n"
               "                             [--out FILE] [--force]\n\n"
               "Builds a payload with a fresh random message id and the current time.\n"
               "KIND is message (default), receipt-delivered, receipt-read, typing, edit,\n"
               "unsend or group-change. --group-name starts a new group (random group id).\n",
               prog);
        return 0;
    }
    memset(&p, 0, sizeof(p));
    p.kind = MSV_KIND_MESSAGE;
    if (o->kind != NULL) {
        size_t i;

        for (i = 0; i < sizeof(kinds) / sizeof(kinds[0]) && strcmp(kinds[i].name, o->kind); i++)
            ;
        if (i == sizeof(kinds) / sizeof(kinds[0]))
            return usage_error("payload-encode", "unknown --kind");
        p.kind = kinds[i].kind;
    }
    msv_random_bytes(p.message_id, MSV_ID_LEN);
    msv_random_bytes(p.group_id, MSV_ID_LEN);
    p.sent_at_ms = (uint64_t)time(NULL) * 1000u;
    p.text = (char *)o->text;
    p.participants = (char **)o->participants;
    p.participant_count = o->participant_count;
    p.group_name = (char *)o->group_name;
    p.has_group = o->group_name != NULL || p.kind == MSV_KIND_GROUP_CHANGE;
    if (o->target != NULL) {
        if (msv_hex_decode(o->target, p.target_id, MSV_ID_LEN, &n) != MSV_OK || n != MSV_ID_LEN)
            return usage_error("payload-encode", "--target takes 32 hex digits");
        p.has_target = true;
    }
    if (p.kind == MSV_KIND_EDIT)
        p.edit_number = 1; /* a first edit */
    err = msv_payload_encode(&p, &enc, &enc_len);
    if (err == MSV_ERR_INVALID) {
        fprintf(stderr,
                "%s: payload-encode: that payload breaks the rules of its kind or a limit\n"
                "(messages need text; receipts, edits and unsends a --target; text at most\n"
                "%u bytes of UTF-8)\n",
                prog, MSV_TEXT_MAX);
        return EXIT_USAGE;
    }
    if (err == MSV_OK)
        err = write_file(o->out, enc, enc_len, 0600, o->force);
    free(enc);
    return err == MSV_OK ? 0 : fail("payload-encode", err);
}

static json_t *hex_json(const uint8_t *p, size_t n)
{
    char buf[2 * 64 + 1];

    if (msv_hex_encode(p, n, buf, sizeof(buf)) != MSV_OK)
        return json_null();
    return json_string(buf);
}

static json_t *payload_json(const struct msv_payload *p)
{
    json_t *j = json_object(), *people = json_array(), *atts = json_array();

    json_object_set_new(j, "kind", json_string(msv_payload_kind_name(p->kind)));
    json_object_set_new(j, "message_id", hex_json(p->message_id, MSV_ID_LEN));
    json_object_set_new(j, "sent_at_ms", json_integer((json_int_t)p->sent_at_ms));
    if (p->text != NULL)
        json_object_set_new(j, "text", json_string(p->text));
    for (size_t i = 0; i < p->participant_count; i++)
        json_array_append_new(people, json_string(p->participants[i]));
    json_object_set_new(j, "participants", people);
    if (p->has_group)
        json_object_set_new(j, "group_id", hex_json(p->group_id, MSV_ID_LEN));
    if (p->group_name != NULL)
        json_object_set_new(j, "group_name", json_string(p->group_name));
    if (p->has_reply_to)
        json_object_set_new(j, "reply_to", hex_json(p->reply_to, MSV_ID_LEN));
    if (p->has_target)
        json_object_set_new(j, "target_id", hex_json(p->target_id, MSV_ID_LEN));
    if (p->edit_number != 0)
        json_object_set_new(j, "edit_number", json_integer((json_int_t)p->edit_number));
    for (size_t i = 0; i < p->attachment_count; i++) {
        const struct msv_attachment_ref *a = &p->attachments[i];
        json_t *aj = json_object();

        /* the attachment key is left out: it is a secret, and JSON output gets logged */
        json_object_set_new(aj, "uri", json_string(a->uri));
        json_object_set_new(aj, "size", json_integer((json_int_t)a->size));
        json_object_set_new(aj, "sha256", hex_json(a->sha256, 32));
        if (a->name != NULL)
            json_object_set_new(aj, "name", json_string(a->name));
        if (a->mime != NULL)
            json_object_set_new(aj, "mime", json_string(a->mime));
        json_array_append_new(atts, aj);
    }
    json_object_set_new(j, "attachments", atts);
    return j;
}

static int cmd_payload_decode(const struct opts *o)
{
    struct msv_payload *p = NULL;
    uint8_t *bytes = NULL;
    size_t len = 0;
    msv_err err;
    json_t *j;

    if (o->help) {
        printf("usage: %s payload-decode [--in FILE]\n\n"
               "Checks a payload (standard input by default) and prints it as JSON.\n"
               "Attachment keys are not printed.\n",
               prog);
        return 0;
    }
    err = read_all(o->in ? o->in : "-", MSV_PLAINTEXT_MAX, &bytes, &len);
    if (err == MSV_OK)
        err = msv_payload_parse(bytes, len, &p);
    msv_secret_free(bytes, len);
    if (err != MSV_OK)
        return fail("payload-decode", err);
    j = payload_json(p);
    json_dumpf(j, stdout, JSON_INDENT(2) | JSON_ENSURE_ASCII);
    putchar('\n');
    json_decref(j);
    msv_payload_free(p);
    return 0;
}

/* ---- attachments ---------------------------------------------------------------------- */

static void progress(const char *what, uint64_t done, uint64_t total)
{
    /* only for people watching, and only for files worth waiting on */
    if (total < (16u << 20) || !isatty(STDERR_FILENO))
        return;
    fprintf(stderr, "\r%s: %3u%%", what, (unsigned)(done * 100 / total));
    if (done == total)
        fputc('\n', stderr);
}

/*
 * Streams in through the cipher (if any) and the hasher, to out (if any).
 * When check is set, nothing is written: the caller compares digests first.
 */
static msv_err stream_file(FILE *in, uint64_t total, struct msv_attachment_cipher *c,
                           struct msv_attachment_hasher *h, int hash_output, FILE *out,
                           const char *what)
{
    uint8_t *buf = malloc(CHUNK), *res = malloc(CHUNK);
    uint64_t done = 0;
    msv_err err = MSV_OK;
    size_t n;

    if (buf == NULL || res == NULL)
        err = MSV_ERR_NOMEM;
    while (err == MSV_OK && (n = fread(buf, 1, CHUNK, in)) > 0) {
        const uint8_t *data = buf;

        if (c != NULL) {
            err = msv_attachment_cipher_update(c, buf, n, res);
            data = res;
        }
        if (err == MSV_OK && h != NULL)
            err = msv_attachment_hasher_update(h, hash_output ? data : buf, n);
        if (err == MSV_OK && out != NULL && fwrite(data, 1, n, out) != n)
            err = MSV_ERR_IO;
        done += n;
        progress(what, done, total);
    }
    if (err == MSV_OK && ferror(in))
        err = MSV_ERR_IO;
    msv_secret_free(buf, CHUNK);
    msv_secret_free(res, CHUNK);
    return err;
}

static FILE *open_input(const char *path, uint64_t *size)
{
    FILE *f = fopen(path, "rb");
    struct stat st;

    if (f == NULL) {
        fprintf(stderr, "%s: %s: %s\n", prog, path, strerror(errno));
        return NULL;
    }
    *size = fstat(fileno(f), &st) == 0 ? (uint64_t)st.st_size : 0;
    return f;
}

static int cmd_attach_encrypt(const struct opts *o)
{
    uint8_t key[MSV_ATTACHMENT_KEY_LEN];
    struct msv_attachment_cipher *c = NULL;
    struct msv_attachment_hasher *h = NULL;
    struct msv_attachment_digest d;
    struct out_file out;
    uint64_t size = 0;
    FILE *in = NULL;
    msv_err err;
    int rc;

    if (o->help) {
        printf("usage: %s attach-encrypt --in FILE --out CIPHERTEXT [--force]\n\n"
               "Encrypts FILE with a fresh random AES-256-CTR key and prints, as JSON, the\n"
               "key and the SHA-256 and SHA-1 of the ciphertext that a message carries.\n",
               prog);
        return 0;
    }
    if ((rc = need("attach-encrypt", o->in, "--in")) != 0 ||
        (rc = need("attach-encrypt", o->out, "--out")) != 0)
        return rc;
    in = open_input(o->in, &size);
    if (in == NULL)
        return EXIT_FAILURE;
    msv_attachment_key_generate(key);
    err = out_open(&out, o->out, 0600, o->force);
    if (err == MSV_OK)
        err = msv_attachment_cipher_new(key, &c);
    if (err == MSV_OK)
        err = msv_attachment_hasher_new(&h);
    if (err == MSV_OK)
        err = stream_file(in, size, c, h, 1, out.f, "encrypting");
    if (err == MSV_OK)
        err = msv_attachment_hasher_final(h, &d);
    if (out_close(&out, err == MSV_OK) != MSV_OK && err == MSV_OK)
        err = MSV_ERR_IO;
    if (err == MSV_OK) {
        json_t *j = json_object();

        json_object_set_new(j, "key", hex_json(key, sizeof(key)));
        json_object_set_new(j, "sha256", hex_json(d.sha256, 32));
        json_object_set_new(j, "sha1", hex_json(d.sha1, 20));
        json_object_set_new(j, "size", json_integer((json_int_t)size));
        json_dumpf(j, stdout, JSON_INDENT(2));
        putchar('\n');
        json_decref(j);
    }
    msv_wipe(key, sizeof(key));
    fclose(in);
    msv_attachment_cipher_free(c);
    msv_attachment_hasher_free(h);
    return err == MSV_OK ? 0 : fail("attach-encrypt", err);
}

static int cmd_attach_decrypt(const struct opts *o)
{
    uint8_t key[MSV_ATTACHMENT_KEY_LEN], want[32];
    struct msv_attachment_cipher *c = NULL;
    struct msv_attachment_hasher *h = NULL;
    struct msv_attachment_digest d;
    struct out_file out = {0};
    uint64_t size = 0;
    size_t n1 = 0, n2 = 0;
    FILE *in = NULL;
    msv_err err;
    int rc;

    if (o->help) {
        printf("usage: %s attach-decrypt --key KEY_HEX --sha256 HEX --in CIPHERTEXT\n"
               "                              --out FILE [--force]\n\n"
               "Checks the ciphertext's SHA-256 first and decrypts only if it matches.\n",
               prog);
        return 0;
    }
    if ((rc = need("attach-decrypt", o->key, "--key")) != 0 ||
        (rc = need("attach-decrypt", o->sha256, "--sha256")) != 0 ||
        (rc = need("attach-decrypt", o->in, "--in")) != 0 ||
        (rc = need("attach-decrypt", o->out, "--out")) != 0)
        return rc;
    if (msv_hex_decode(o->key, key, sizeof(key), &n1) != MSV_OK || n1 != sizeof(key) ||
        msv_hex_decode(o->sha256, want, sizeof(want), &n2) != MSV_OK || n2 != sizeof(want))
        return usage_error("attach-decrypt", "--key and --sha256 take 64 hex digits");
    in = open_input(o->in, &size);
    if (in == NULL)
        return EXIT_FAILURE;
    /* pass 1: hash only; nothing is decrypted unless the ciphertext is the one announced */
    err = msv_attachment_hasher_new(&h);
    if (err == MSV_OK)
        err = stream_file(in, size, NULL, h, 0, NULL, "checking");
    if (err == MSV_OK)
        err = msv_attachment_hasher_final(h, &d);
    if (err == MSV_OK && !msv_equal_ct(d.sha256, want, 32))
        err = MSV_ERR_AUTH;
    /* pass 2: decrypt */
    if (err == MSV_OK && fseek(in, 0, SEEK_SET) != 0)
        err = MSV_ERR_IO;
    if (err == MSV_OK)
        err = out_open(&out, o->out, 0600, o->force);
    if (err == MSV_OK)
        err = msv_attachment_cipher_new(key, &c);
    if (err == MSV_OK)
        err = stream_file(in, size, c, NULL, 0, out.f, "decrypting");
    if (out_close(&out, err == MSV_OK) != MSV_OK && err == MSV_OK)
        err = MSV_ERR_IO;
    msv_wipe(key, sizeof(key));
    fclose(in);
    msv_attachment_cipher_free(c);
    msv_attachment_hasher_free(h);
    return err == MSV_OK ? 0 : fail("attach-decrypt", err);
}

/* ---- ML-KEM-768 ------------------------------------------------------------------------ */

static int mlkem_usage(void)
{
    printf("usage: %s mlkem768 keygen --out DK_FILE --public EK_FILE [--seed HEX] [--force]\n"
           "       %s mlkem768 encaps EK_FILE --out CT_FILE [--random HEX] [--force]\n"
           "       %s mlkem768 decaps DK_FILE CT_FILE\n\n"
           "ML-KEM-768 (FIPS 203) in the standard's byte formats: the decapsulation\n"
           "key (2400 bytes, mode 0600), the encapsulation key (1184 bytes), the\n"
           "ciphertext (1088 bytes). keygen takes the 64-byte seed d||z from --seed\n"
           "(128 hex digits) or makes a random one. encaps refuses a key that fails\n"
           "the encapsulation-key check and takes its 32 bytes of randomness from\n"
           "--random (64 hex digits; for tests: never reuse them) or makes them.\n"
           "decaps checks the key's hash; a ciphertext that does not decrypt gives\n"
           "the implicit-rejection key. encaps and decaps print the shared key in hex.\n",
           prog, prog, prog);
    return 0;
}

/* Decodes --seed or --random: exactly len bytes of hex. */
static int hex_option(const char *hex, uint8_t *out, size_t len)
{
    size_t n;

    return msv_hex_decode(hex, out, len, &n) == MSV_OK && n == len ? 0 : -1;
}

static int print_shared_key(const uint8_t ss[MSV_MLKEM768_SS_LEN])
{
    char hex[2 * MSV_MLKEM768_SS_LEN + 1];

    if (msv_hex_encode(ss, MSV_MLKEM768_SS_LEN, hex, sizeof(hex)) != MSV_OK)
        return EXIT_FAILURE;
    printf("%s\n", hex);
    msv_wipe(hex, sizeof(hex));
    return 0;
}

static int mlkem_keygen(const struct opts *o)
{
    uint8_t seed[MSV_MLKEM768_SEED_LEN], ek[MSV_MLKEM768_EK_LEN], dk[MSV_MLKEM768_DK_LEN];
    msv_err err;
    int rc;

    if ((rc = need("mlkem768 keygen", o->out, "--out")) != 0 ||
        (rc = need("mlkem768 keygen", o->public_out, "--public")) != 0)
        return rc;
    if (o->arg_count != 0 || o->random != NULL)
        return usage_error("mlkem768 keygen", "takes no file argument and no --random");
    if (o->seed != NULL && hex_option(o->seed, seed, sizeof(seed)) != 0)
        return usage_error("mlkem768 keygen", "--seed takes 128 hex digits (64 bytes)");
    if (o->seed != NULL)
        err = msv_mlkem768_keygen_seed(seed, sizeof(seed), ek, dk);
    else
        err = msv_mlkem768_keygen(ek, dk);
    if (err == MSV_OK)
        err = write_file(o->out, dk, sizeof(dk), 0600, o->force);
    if (err == MSV_OK) {
        err = write_file(o->public_out, ek, sizeof(ek), 0644, o->force);
        if (err != MSV_OK)
            unlink(o->out); /* all or nothing: do not leave half a key pair */
    }
    msv_wipe(seed, sizeof(seed));
    msv_wipe(dk, sizeof(dk));
    return err == MSV_OK ? 0 : fail("mlkem768 keygen", err);
}

static int mlkem_encaps(const struct opts *o)
{
    uint8_t coins[MSV_MLKEM768_COINS_LEN], ct[MSV_MLKEM768_CT_LEN], ss[MSV_MLKEM768_SS_LEN];
    uint8_t *ek = NULL;
    size_t ek_len = 0;
    msv_err err;
    int rc;

    if ((rc = need("mlkem768 encaps", o->out, "--out")) != 0)
        return rc;
    if (o->arg_count != 1 || o->seed != NULL || o->public_out != NULL)
        return usage_error("mlkem768 encaps", "takes one file, EK_FILE, and --out");
    if (o->random != NULL && hex_option(o->random, coins, sizeof(coins)) != 0)
        return usage_error("mlkem768 encaps", "--random takes 64 hex digits (32 bytes)");
    err = read_all(o->args[0], INPUT_MAX, &ek, &ek_len);
    if (err != MSV_OK)
        return fail("mlkem768 encaps", err);
    if (msv_mlkem768_check_ek(ek, ek_len) != MSV_OK) {
        fprintf(stderr,
                "%s: %s is not an ML-KEM-768 encapsulation key (%zu bytes, 1184 needed, "
                "every coefficient below 3329)\n",
                prog, o->args[0], ek_len);
        free(ek);
        return EXIT_FAILURE;
    }
    if (o->random != NULL)
        err = msv_mlkem768_encaps_coins(ek, ek_len, coins, ct, ss);
    else
        err = msv_mlkem768_encaps(ek, ek_len, ct, ss);
    if (err == MSV_OK)
        err = write_file(o->out, ct, sizeof(ct), 0644, o->force);
    rc = err == MSV_OK ? print_shared_key(ss) : fail("mlkem768 encaps", err);
    msv_wipe(coins, sizeof(coins));
    msv_wipe(ss, sizeof(ss));
    free(ek);
    return rc;
}

static int mlkem_decaps(const struct opts *o)
{
    uint8_t *dk = NULL, *ct = NULL, ss[MSV_MLKEM768_SS_LEN];
    size_t dk_len = 0, ct_len = 0;
    msv_err err;
    int rc;

    if (o->arg_count != 2 || o->out != NULL || o->public_out != NULL || o->seed != NULL ||
        o->random != NULL)
        return usage_error("mlkem768 decaps", "takes two files, DK_FILE and CT_FILE");
    err = read_all(o->args[0], INPUT_MAX, &dk, &dk_len);
    if (err == MSV_OK)
        err = read_all(o->args[1], INPUT_MAX, &ct, &ct_len);
    if (err == MSV_OK && msv_mlkem768_check_dk(dk, dk_len) != MSV_OK) {
        fprintf(stderr,
                "%s: %s is not an ML-KEM-768 decapsulation key (%zu bytes, 2400 needed, "
                "with the hash of its encapsulation key)\n",
                prog, o->args[0], dk_len);
        err = MSV_ERR_PARSE;
    } else if (err == MSV_OK) {
        err = msv_mlkem768_decaps(dk, dk_len, ct, ct_len, ss);
        if (err == MSV_ERR_AUTH)
            fprintf(stderr, "%s: %s is not an ML-KEM-768 ciphertext (%zu bytes, 1088 needed)\n",
                    prog, o->args[1], ct_len);
    }
    rc = err == MSV_OK ? print_shared_key(ss) : err == MSV_ERR_AUTH ? EXIT_AUTH : EXIT_FAILURE;
    msv_wipe(ss, sizeof(ss));
    msv_secret_free(dk, dk_len);
    free(ct);
    return rc;
}

static const struct {
    const char *name;
    int (*run)(const struct opts *o);
    size_t max_args;
} mlkem_commands[] = {
    {"keygen", mlkem_keygen, 0},
    {"encaps", mlkem_encaps, 1},
    {"decaps", mlkem_decaps, 2},
};

static int cmd_mlkem768(int argc, char **argv)
{
    struct opts o;
    int rc;

    if (argc < 2 || strcmp(argv[1], "--help") == 0) {
        mlkem_usage();
        return argc < 2 ? EXIT_USAGE : 0;
    }
    for (size_t i = 0; i < sizeof(mlkem_commands) / sizeof(mlkem_commands[0]); i++) {
        if (strcmp(argv[1], mlkem_commands[i].name) != 0)
            continue;
        rc = parse_opts("mlkem768", argc - 1, argv + 1, &o, mlkem_commands[i].max_args);
        if (rc == 0 && o.help)
            return mlkem_usage();
        return rc != 0 ? rc : mlkem_commands[i].run(&o);
    }
    return usage_error("mlkem768", "the subcommands are keygen, encaps and decaps");
}

/* ---- the VRF ------------------------------------------------------------------------- */

#define VRF_ALPHA_MAX 65536u

static void vrf_usage(FILE *f)
{
    fprintf(f,
            "usage: %s vrf keygen --out SK_FILE [--public PK_FILE] [--force]\n"
            "       %s vrf prove SK_FILE ALPHA [--hex] [--suite tai|ell2]\n"
            "       %s vrf verify PK_FILE ALPHA PI_HEX [--hex] [--suite tai|ell2]\n\n"
            "ECVRF-EDWARDS25519-SHA512-TAI (the default) or -ELL2 (RFC 9381). keygen\n"
            "writes a fresh secret key to SK_FILE (mode 0600) and its public key to\n"
            "PK_FILE, each as 64 hex digits, and prints the public key; a key serves both\n"
            "suites. prove prints the proof pi of ALPHA and the output beta; verify checks\n"
            "pi against ALPHA and the public key and prints beta, or fails with exit\n"
            "status 3. ALPHA is taken as bytes, or as hex with --hex.\n",
            prog, prog, prog);
}

/* Reads a key file: 64 hex digits, optionally followed by a newline. */
static msv_err vrf_read_key(const char *path, uint8_t key[32])
{
    uint8_t *bytes = NULL;
    size_t len = 0, n = 0;
    char text[65];
    msv_err err = read_all(path, 66, &bytes, &len);

    if (err != MSV_OK)
        return err;
    err = MSV_ERR_PARSE;
    if (len == 64 || (len == 65 && bytes[64] == '\n')) {
        memcpy(text, bytes, 64);
        text[64] = '\0';
        if (msv_hex_decode(text, key, 32, &n) == MSV_OK && n == 32)
            err = MSV_OK;
    }
    msv_wipe(text, sizeof(text));
    msv_secret_free(bytes, len);
    if (err != MSV_OK)
        fprintf(stderr, "%s: %s does not hold a VRF key (64 hex digits)\n", prog, path);
    return err;
}

static msv_err vrf_write_key(const char *path, const uint8_t key[32], mode_t mode, int force)
{
    char text[66];
    msv_err err = msv_hex_encode(key, 32, text, sizeof(text));

    if (err == MSV_OK) {
        text[64] = '\n';
        err = write_file(path, (const uint8_t *)text, 65, mode, force);
    }
    msv_wipe(text, sizeof(text));
    return err;
}

static void vrf_print(const char *label, const uint8_t *p, size_t n)
{
    char text[2 * MSV_VRF_PROOF_LEN + 1]; /* the longest: pi */

    if (msv_hex_encode(p, n, text, sizeof(text)) == MSV_OK)
        printf("%s: %s\n", label, text);
}

/* ALPHA as given, or decoded from hex; *alpha is a fresh buffer the caller frees. */
static int vrf_alpha(const char *cmd, const char *arg, int hex, uint8_t **alpha, size_t *len)
{
    size_t arg_len = strlen(arg);

    if (arg_len > (hex ? 2 * VRF_ALPHA_MAX : VRF_ALPHA_MAX))
        return usage_error(cmd, "ALPHA is longer than 65536 bytes");
    *alpha = malloc(arg_len + 1);
    if (*alpha == NULL)
        return fail(cmd, MSV_ERR_NOMEM);
    if (!hex) {
        memcpy(*alpha, arg, arg_len);
        *len = arg_len;
        return 0;
    }
    if (msv_hex_decode(arg, *alpha, arg_len + 1, len) != MSV_OK) {
        free(*alpha);
        *alpha = NULL;
        return usage_error(cmd, "--hex: ALPHA is not hex");
    }
    return 0;
}

struct vrf_opts {
    enum msv_vrf_suite suite;
    const char *out, *public_out;
    const char *args[3];
    int n_args, force, hex, help;
};

/* Returns 0, or the exit status for a usage error. */
static int vrf_parse(const char *cmd, int argc, char **argv, struct vrf_opts *o)
{
    static const struct option opts[] = {
        {"out", required_argument, NULL, OPT_OUT},
        {"public", required_argument, NULL, OPT_PUBLIC},
        {"force", no_argument, NULL, OPT_FORCE},
        {"hex", no_argument, NULL, OPT_HEX},
        {"suite", required_argument, NULL, OPT_SUITE},
        {"help", no_argument, NULL, OPT_HELP},
        {NULL, 0, NULL, 0},
    };
    int c;

    memset(o, 0, sizeof(*o));
    o->suite = MSV_VRF_EDWARDS25519_SHA512_TAI;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        if (c == OPT_SUITE && strcmp(optarg, "tai") == 0)
            o->suite = MSV_VRF_EDWARDS25519_SHA512_TAI;
        else if (c == OPT_SUITE && strcmp(optarg, "ell2") == 0)
            o->suite = MSV_VRF_EDWARDS25519_SHA512_ELL2;
        else if (c == OPT_SUITE)
            return usage_error(cmd, "--suite must be tai or ell2");
        else if (c == OPT_OUT)
            o->out = optarg;
        else if (c == OPT_PUBLIC)
            o->public_out = optarg;
        else if (c == OPT_FORCE)
            o->force = 1;
        else if (c == OPT_HEX)
            o->hex = 1;
        else if (c == OPT_HELP)
            o->help = 1;
        else
            return usage_error(cmd, "unknown option or missing argument");
    }
    for (; optind < argc; optind++) {
        if (o->n_args == 3)
            return usage_error(cmd, "unexpected argument");
        o->args[o->n_args++] = argv[optind];
    }
    return 0;
}

static int vrf_keygen(const struct vrf_opts *o)
{
    uint8_t sk[MSV_VRF_SECRET_KEY_LEN], pk[MSV_VRF_PUBLIC_KEY_LEN];
    msv_err err;
    int rc;

    if (o->n_args != 0 || o->hex)
        return usage_error("vrf keygen", "keygen takes --out, --public and --force only");
    if ((rc = need("vrf keygen", o->out, "--out")) != 0)
        return rc;
    err = msv_vrf_keygen(o->suite, sk, pk);
    if (err == MSV_OK)
        err = vrf_write_key(o->out, sk, 0600, o->force);
    if (err == MSV_OK && o->public_out != NULL) {
        err = vrf_write_key(o->public_out, pk, 0644, o->force);
        if (err != MSV_OK)
            unlink(o->out); /* all or nothing, as keygen does */
    }
    if (err == MSV_OK)
        vrf_print("public key", pk, sizeof(pk));
    msv_wipe(sk, sizeof(sk));
    return err == MSV_OK ? 0 : fail("vrf keygen", err);
}

static int vrf_prove(const struct vrf_opts *o)
{
    uint8_t sk[MSV_VRF_SECRET_KEY_LEN], pi[MSV_VRF_PROOF_LEN], beta[MSV_VRF_OUTPUT_LEN];
    uint8_t *alpha = NULL;
    size_t alpha_len = 0;
    msv_err err;
    int rc;

    if (o->n_args != 2 || o->out != NULL || o->public_out != NULL || o->force)
        return usage_error("vrf prove", "prove takes SK_FILE ALPHA [--hex] [--suite tai|ell2]");
    if ((rc = vrf_alpha("vrf prove", o->args[1], o->hex, &alpha, &alpha_len)) != 0)
        return rc;
    warn_if_readable(o->args[0]);
    err = vrf_read_key(o->args[0], sk);
    if (err == MSV_OK)
        err = msv_vrf_prove(o->suite, sk, alpha, alpha_len, pi);
    if (err == MSV_OK)
        err = msv_vrf_proof_to_hash(o->suite, pi, beta);
    if (err == MSV_OK) {
        vrf_print("pi", pi, sizeof(pi));
        vrf_print("beta", beta, sizeof(beta));
    }
    msv_wipe(sk, sizeof(sk));
    free(alpha);
    return err == MSV_OK ? 0 : fail("vrf prove", err);
}

static int vrf_verify(const struct vrf_opts *o)
{
    uint8_t pk[MSV_VRF_PUBLIC_KEY_LEN], pi[MSV_VRF_PROOF_LEN], beta[MSV_VRF_OUTPUT_LEN];
    uint8_t *alpha = NULL;
    size_t alpha_len = 0, n = 0;
    msv_err err;
    int rc;

    if (o->n_args != 3 || o->out != NULL || o->public_out != NULL || o->force)
        return usage_error("vrf verify",
                           "verify takes PK_FILE ALPHA PI_HEX [--hex] [--suite tai|ell2]");
    if (msv_hex_decode(o->args[2], pi, sizeof(pi), &n) != MSV_OK || n != sizeof(pi))
        return usage_error("vrf verify", "PI_HEX takes 160 hex digits");
    if ((rc = vrf_alpha("vrf verify", o->args[1], o->hex, &alpha, &alpha_len)) != 0)
        return rc;
    err = vrf_read_key(o->args[0], pk);
    if (err == MSV_OK)
        err = msv_vrf_verify(o->suite, pk, alpha, alpha_len, pi, beta);
    if (err == MSV_OK) {
        printf("proof: valid\n");
        vrf_print("beta", beta, sizeof(beta));
    } else if (err == MSV_ERR_AUTH) {
        fprintf(stderr, "%s: vrf verify: the proof is not valid for this key and ALPHA\n", prog);
    }
    free(alpha);
    if (err == MSV_ERR_AUTH)
        return EXIT_AUTH;
    return err == MSV_OK ? 0 : fail("vrf verify", err);
}

/* argv[0] is "vrf", argv[1] the subcommand. */
static int cmd_vrf(int argc, char **argv)
{
    static const struct {
        const char *name, *full;
        int (*run)(const struct vrf_opts *o);
    } subs[] = {
        {"keygen", "vrf keygen", vrf_keygen},
        {"prove", "vrf prove", vrf_prove},
        {"verify", "vrf verify", vrf_verify},
    };
    struct vrf_opts o;
    int rc;

    if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
        vrf_usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? EXIT_USAGE : 0;
    }
    for (size_t i = 0; i < sizeof(subs) / sizeof(subs[0]); i++) {
        if (strcmp(argv[1], subs[i].name) != 0)
            continue;
        if ((rc = vrf_parse(subs[i].full, argc - 1, argv + 1, &o)) != 0)
            return rc;
        if (o.help) {
            vrf_usage(stdout);
            return 0;
        }
        return subs[i].run(&o);
    }
    return usage_error("vrf", "the subcommands are keygen, prove and verify");
}

/* ---- main ----------------------------------------------------------------------------- */

static const struct {
    const char *name;
    int (*run)(const struct opts *o);
} commands[] = {
    {"keygen", cmd_keygen},
    {"public", cmd_public},
    {"fingerprint", cmd_fingerprint},
    {"seal", cmd_seal},
    {"open", cmd_open},
    {"verify", cmd_verify},
    {"payload-encode", cmd_payload_encode},
    {"payload-decode", cmd_payload_decode},
    {"attach-encrypt", cmd_attach_encrypt},
    {"attach-decrypt", cmd_attach_decrypt},
};

int main(int argc, char **argv)
{
    struct opts o;
    int rc;

    if (argc < 2) {
        usage_main(stderr);
        return EXIT_USAGE;
    }
    if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 ||
        strcmp(argv[1], "help") == 0) {
        usage_main(stdout);
        return 0;
    }
    if (msv_init() != MSV_OK) {
        fprintf(stderr, "%s: the system's random source is not usable\n", prog);
        return EXIT_FAILURE;
    }
    if (strcmp(argv[1], "mlkem768") == 0)
        return cmd_mlkem768(argc - 1, argv + 1);
    if (strcmp(argv[1], "vrf") == 0)
        return cmd_vrf(argc - 1, argv + 1);
    if (strcmp(argv[1], "mls") == 0)
        return msv_crypto_mls_main(argc - 1, argv + 1);
    for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++) {
        if (strcmp(argv[1], commands[i].name) != 0)
            continue;
        rc = parse_opts(commands[i].name, argc - 1, argv + 1, &o, 0);
        return rc != 0 ? rc : commands[i].run(&o);
    }
    fprintf(stderr, "%s: unknown command '%s'\n", prog, argv[1]);
    usage_main(stderr);
    return EXIT_USAGE;
}
