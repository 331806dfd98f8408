/*
 * Receiving: opening deliveries, storing and showing messages, fetching attachments, notices.
 */
#include "client/internal.h"
#include "client/sessions.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <sodium.h>

#include "client/safety.h"
#include "client/transparency.h"
#include "missive/payload.h"
#include "missive/sealed.h"
#include "missive/util.h"
#include "util/endian.h"
#include "util/buf.h"
#include "util/privdir.h"

msv_err client_sender_identity(struct msv_client *c, const char *handle, uint64_t device,
                               struct msv_public_identity **out)
{
    for (int fresh = 0; fresh < 2; fresh++) {
        struct msv_known_device *devs = NULL;
        size_t n = 0;
        msv_err err = msv_client_db_known_devices(c->db, handle, &devs, &n);

        for (size_t i = 0; err == MSV_OK && i < n; i++) {
            if (devs[i].device_id == device) {
                err = msv_public_identity_parse((enum msv_suite)devs[i].suite, devs[i].identity,
                                                devs[i].identity_len, out);
                msv_known_devices_free(devs, n);
                return err;
            }
        }
        msv_known_devices_free(devs, n);
        if (err != MSV_OK)
            return err;
        if (fresh == 0) {
            msv_frame *r = NULL;

            err = msv_client_devices(c, handle, &r);
            msv_frame_free(r);
            if (err != MSV_OK)
                return err;
        }
    }
    return MSV_ERR_NOT_FOUND;
}

/* The conversation a message belongs to: the other person, from this account's view. */
static const char *conversation_of(const struct msv_client *c, const char *sender,
                                   const struct msv_payload *p)
{
    if (strcmp(sender, c->handle) != 0)
        return sender;
    /* a copy of something this account sent from another device */
    for (size_t i = 0; i < p->participant_count; i++) {
        if (strcmp(p->participants[i], c->handle) != 0)
            return p->participants[i];
    }
    return c->handle;
}

#define LONG_TEXT_LIMIT (1u << 20)

/* A file name safe to put in a path: the last component, printable ASCII kept. */
static void safe_name(const char *name, char *out, size_t len)
{
    const char *base = name ? strrchr(name, '/') : NULL;
    size_t o = 0;

    base = base ? base + 1 : (name ? name : "");
    for (; *base && o + 1 < len; base++)
        out[o++] = (*base > ' ' && *base < 0x7f && *base != '/') ? *base : '_';
    if (o == 0 || out[0] == '.')
        o = (size_t)snprintf(out, len, "attachment");
    out[o < len ? o : len - 1] = '\0';
}

/* The account's attachments/ directory (made if missing), opened without following a link. */
static int open_attachments(const struct msv_client *c)
{
    char dir[1100];

    snprintf(dir, sizeof(dir), "%s/attachments", c->dir);
    return msv_privdir_open(AT_FDCWD, dir, 1);
}

/*
 * Creates a received file under attachments/ as <message id>-<name>, or
 * <message id>-<n>-<name> when that is taken (a message with two files of
 * one name): never over an existing file, never through a link. *dir
 * receives attachments/ (close it), file the name; -1 if no file is made.
 */
static int create_file(const struct msv_client *c, const uint8_t id[16], const char *name, int *dir,
                       char *file, size_t file_len)
{
    char hex[33], safe[128];
    int fd = -1;

    *dir = open_attachments(c);
    if (*dir < 0 || msv_hex_encode(id, 16, hex, sizeof(hex)) != MSV_OK)
        return -1;
    safe_name(name, safe, sizeof(safe));
    for (unsigned n = 1; fd < 0 && n <= 2 * MSV_ATTACHMENTS_MAX; n++) {
        if (n == 1)
            snprintf(file, file_len, "%s-%s", hex, safe);
        else
            snprintf(file, file_len, "%s-%u-%s", hex, n, safe);
        fd = openat(*dir, file, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
        if (fd < 0 && errno != EEXIST)
            break;
    }
    return fd;
}

/* A received file on its way to disk: the ciphertext, hashed as it is written. */
struct file_sink {
    int fd;
    struct msv_attachment_hasher *hash;
    size_t len;
};

static msv_err to_file(void *ctx, size_t size, const uint8_t *piece, size_t len)
{
    struct file_sink *f = ctx;
    msv_err err = msv_attachment_hasher_update(f->hash, piece, len);

    (void)size;
    if (err == MSV_OK)
        err = msv_write_all(f->fd, piece, len);
    if (err == MSV_OK)
        f->len += len;
    return err;
}

/* Decrypts the file's len bytes where they are, a piece at a time. */
static msv_err decrypt_in_place(int fd, const uint8_t key[MSV_ATTACHMENT_KEY_LEN], size_t len)
{
    struct msv_attachment_cipher *cipher = NULL;
    size_t piece = 1u << 20;
    uint8_t *buf = malloc(piece);
    msv_err err = buf ? msv_attachment_cipher_new(key, &cipher) : MSV_ERR_NOMEM;

    for (size_t off = 0; err == MSV_OK && off < len; off += piece) {
        size_t n = len - off < piece ? len - off : piece;

        if (pread(fd, buf, n, (off_t)off) != (ssize_t)n)
            err = MSV_ERR_IO;
        if (err == MSV_OK)
            err = msv_attachment_cipher_update(cipher, buf, n, buf);
        if (err == MSV_OK && pwrite(fd, buf, n, (off_t)off) != (ssize_t)n)
            err = MSV_ERR_IO;
    }
    msv_attachment_cipher_free(cipher);
    msv_secret_free(buf, piece);
    return err;
}

/* The blob a reference names; MSV_ERR_UNSUPPORTED for a location this client cannot fetch. */
static msv_err blob_of(const struct msv_attachment_ref *a, uint8_t blob[32])
{
    size_t n = 0;

    if (strncmp(a->uri, "blob:", 5) != 0 || msv_hex_decode(a->uri + 5, blob, 32, &n) != MSV_OK ||
        n != 32)
        return MSV_ERR_UNSUPPORTED;
    return MSV_OK;
}

/*
 * Fetches a file straight to disk (create_file()): the ciphertext is written
 * as it arrives, its hash (the one the sender signed) checked, then it is
 * decrypted where it lies; nothing is held whole in memory. On failure no
 * file is left. MSV_ERR_EXISTS if no file can be made in attachments/.
 */
static msv_err fetch_to_file(struct msv_client *c, const struct msv_attachment_ref *a,
                             const uint8_t id[16], const char *name, char *path, size_t path_len,
                             size_t *len)
{
    struct file_sink f = {.fd = -1};
    struct msv_attachment_digest d;
    uint8_t blob[32];
    char file[200];
    int dir = -1;
    msv_err err = blob_of(a, blob);

    if (err == MSV_OK && (f.fd = create_file(c, id, name, &dir, file, sizeof(file))) < 0)
        err = MSV_ERR_EXISTS;
    if (err == MSV_OK)
        err = msv_attachment_hasher_new(&f.hash);
    if (err == MSV_OK)
        err = msv_request_blob_stream(c->conn, blob, MSV_ATTACHMENT_MAX, TIMEOUT_MS, c->on_download,
                                      c->ctx, to_file, &f, &c->why);
    if (err == MSV_OK)
        err = msv_attachment_hasher_final(f.hash, &d);
    if (err == MSV_OK && !msv_equal_ct(d.sha256, a->sha256, 32))
        err = MSV_ERR_AUTH;
    if (err == MSV_OK)
        err = decrypt_in_place(f.fd, a->key, f.len);
    if (err == MSV_OK && fsync(f.fd) != 0)
        err = MSV_ERR_IO;
    if (f.fd >= 0 && close(f.fd) != 0 && err == MSV_OK)
        err = MSV_ERR_IO;
    if (err != MSV_OK && f.fd >= 0)
        unlinkat(dir, file, 0); /* no file that is not the whole of what was sent */
    if (dir >= 0)
        close(dir);
    msv_attachment_hasher_free(f.hash);
    snprintf(path, path_len, "%s/attachments/%s", c->dir, err == MSV_OK ? file : "");
    if (err == MSV_OK)
        *len = f.len;
    return err;
}

/* Writes a received file held in memory (a long text that was not one) as create_file() says. */
static msv_err save_file(struct msv_client *c, const uint8_t id[16], const char *name,
                         const uint8_t *data, size_t len, char *path, size_t path_len)
{
    char file[200];
    int dir = -1, fd = create_file(c, id, name, &dir, file, sizeof(file));
    msv_err err = fd >= 0 ? msv_write_all(fd, data, len) : MSV_ERR_EXISTS;

    if (fd >= 0 && close(fd) != 0 && err == MSV_OK)
        err = MSV_ERR_IO;
    if (err != MSV_OK && fd >= 0)
        unlinkat(dir, file, 0);
    if (dir >= 0)
        close(dir);
    snprintf(path, path_len, "%s/attachments/%s", c->dir, err == MSV_OK ? file : "");
    return err;
}

/* Fetches and decrypts one attachment in memory; MSV_ERR_AUTH if it fails its hash check. */
msv_err client_fetch_blob(struct msv_client *c, const struct msv_attachment_ref *a, size_t max,
                          uint8_t **pt, size_t *len)
{
    uint8_t blob[32], *ct = NULL;
    size_t ct_len = 0;
    msv_err err = blob_of(a, blob);

    if (err == MSV_OK)
        err = msv_request_blob_download(c->conn, blob, max, TIMEOUT_MS, c->on_download, c->ctx, &ct,
                                        &ct_len, &c->why);
    if (err == MSV_OK && (*pt = malloc(ct_len ? ct_len : 1)) == NULL)
        err = MSV_ERR_NOMEM;
    /* the hash the sender signed is checked before anything is decrypted */
    if (err == MSV_OK &&
        (err = msv_attachment_decrypt(a->key, a->sha256, ct, ct_len, *pt)) != MSV_OK) {
        free(*pt);
        *pt = NULL;
    }
    free(ct);
    if (err == MSV_OK)
        *len = ct_len;
    return err;
}

/* Why a file cannot be had, for history; NULL for what may work next time (network, memory). */
static const char *unavailable(msv_err err)
{
    switch (err) {
    case MSV_ERR_IO:
    case MSV_ERR_NOMEM:
        return NULL;
    case MSV_ERR_AUTH:
        return "it failed its integrity check";
    case MSV_ERR_TOO_BIG:
        return "larger than the 256 MiB a client takes";
    case MSV_ERR_NOT_FOUND:
        return "the server does not have it (any more)";
    case MSV_ERR_UNSUPPORTED:
        return "at a location this client cannot fetch";
    case MSV_ERR_EXISTS:
        return "it could not be saved in the account's attachments directory";
    default:
        return msv_strerror(err);
    }
}

/* A file's line in a message's text: where it lies, or why it is not there. */
static void file_line(msv_err err, const char *name, const char *path, size_t len, char *line,
                      size_t line_len)
{
    if (err == MSV_OK)
        snprintf(line, line_len, "\n[file: %s (%zu bytes)]", path, len);
    else
        snprintf(line, line_len, "\n[file %s not available: %s]", name,
                 unavailable(err) != NULL ? unavailable(err) : msv_strerror(err));
}

/* internal.h */
msv_err client_keep_sent_files(struct msv_client *c, const uint8_t id[16], const char *text,
                               const struct msv_file *files, size_t n, char **stored)
{
    struct msv_buf body;
    uint8_t *out = NULL;
    size_t out_len = 0;
    msv_err err;

    msv_buf_init(&body, SIZE_MAX);
    if (text != NULL)
        msv_buf_put(&body, text, strlen(text));
    for (size_t i = 0; i < n; i++) {
        const char *name = files[i].name ? files[i].name : "attachment";
        char line[1400], path[1300];

        err = save_file(c, id, name, files[i].data, files[i].len, path, sizeof(path));
        file_line(err, name, path, files[i].len, line, sizeof(line));
        msv_buf_put(&body, line, strlen(line));
    }
    msv_buf_put_u8(&body, 0);
    err = msv_buf_finish(&body, &out, &out_len);
    if (err == MSV_OK)
        *stored = (char *)out;
    return err;
}

static int is_long_text(const struct msv_attachment_ref *a, const uint8_t *pt, size_t len)
{
    return a->mime != NULL && strcmp(a->mime, LONG_TEXT_MIME) == 0 && len <= LONG_TEXT_LIMIT &&
           memchr(pt, 0, len) == NULL && msv_utf8_is_valid(pt, len);
}

/*
 * Fetches, checks and keeps the message's attachments. *text (caller frees)
 * receives what history shows: the text (the whole of a long one), then a
 * line per file. A network failure (or want of memory) is returned, so that
 * the message is not acknowledged and comes again; a file that cannot be had
 * for any other reason (too big, gone, tampered with, not to be saved) is a
 * "not available" line, and the message is kept and acknowledged: nothing
 * stays stuck in the queue behind it.
 */
static msv_err fetch_attachments(struct msv_client *c, const struct msv_payload *p, char **text)
{
    struct msv_buf body, notes;
    uint8_t *out = NULL;
    size_t out_len = 0;
    msv_err err = MSV_OK;
    int have_long = 0;

    msv_buf_init(&body, LONG_TEXT_LIMIT + 64 * 1024 + 1);
    msv_buf_init(&notes, 64 * 1024);
    for (size_t i = 0; err == MSV_OK && i < p->attachment_count; i++) {
        const struct msv_attachment_ref *a = &p->attachments[i];
        const char *name = a->name ? a->name : "attachment";
        uint8_t *pt = NULL;
        size_t len = 0;
        char line[1400], path[1300];
        int as_text = 0;

        line[0] = '\0';
        err = MSV_ERR_TOO_BIG;
        if (!have_long && a->mime != NULL && strcmp(a->mime, LONG_TEXT_MIME) == 0)
            err = client_fetch_blob(c, a, LONG_TEXT_LIMIT, &pt,
                                    &len); /* the message's text: in memory */
        if (err == MSV_OK && is_long_text(a, pt, len)) {
            have_long = as_text = 1;
            msv_buf_put(&body, pt, len);
        } else if (err == MSV_OK) {
            err = save_file(c, p->message_id, name, pt, len, path, sizeof(path));
        } else if (err == MSV_ERR_TOO_BIG) { /* a file (or a long text over the limit) */
            err = fetch_to_file(c, a, p->message_id, name, path, sizeof(path), &len);
        }
        if (err == MSV_OK && !as_text) {
            file_line(err, name, path, len, line, sizeof(line));
        } else if (err != MSV_OK && unavailable(err) != NULL) {
            /* the message itself is fine: keep it (and acknowledge it), say what is missing */
            file_line(err, name, path, len, line, sizeof(line));
            err = MSV_OK;
        }
        msv_buf_put(&notes, line, strlen(line));
        msv_secret_free(pt, pt ? len : 0);
    }
    if (!have_long && p->text != NULL)
        msv_buf_put(&body, p->text, strlen(p->text));
    msv_buf_put(&body, notes.data, notes.len);
    msv_buf_put_u8(&body, 0);
    msv_buf_clear(&notes);
    if (err != MSV_OK) {
        msv_buf_clear(&body);
        return err;
    }
    err = msv_buf_finish(&body, &out, &out_len);
    if (err == MSV_OK)
        *text = (char *)out;
    return err;
}

/*
 * Who may speak in a message's group: a member of a group this device knows
 * (g receives it), or, for a group it does not know (g->name stays NULL), one
 * of the members the message names. MSV_ERR_AUTH for anyone else: nobody
 * posts into a group they are not in, or makes one without being in it.
 */
static msv_err group_sender(struct msv_client *c, const char *sender, const struct msv_payload *p,
                            struct msv_group_rec *g)
{
    char **known = NULL;
    char *const *members = p->participants;
    size_t n = p->participant_count;
    msv_err err = msv_client_db_group_get(c->db, p->group_id, NULL, g);

    if (err == MSV_OK && (err = client_members_of(g->members, &known, &n)) == MSV_OK)
        members = known;
    /* a change that carries its whole state is checked against it (client_group_take()) */
    if (err == MSV_ERR_NOT_FOUND && p->kind == MSV_KIND_GROUP_CHANGE && p->has_group_state_hash)
        return MSV_OK;
    if (err != MSV_OK && err != MSV_ERR_NOT_FOUND)
        return err;
    err = MSV_ERR_AUTH;
    for (size_t i = 0; i < n && err != MSV_OK; i++)
        if (strcmp(members[i], sender) == 0)
            err = MSV_OK;
    free(known);
    /* one by an admin a link named, of a group this account asked to join by it and holds
     * unaccepted (another who held the link may have started one under its id first):
     * client_group_take() takes it whole, in that one's place */
    if (err == MSV_ERR_AUTH && g->name != NULL && !g->accepted &&
        p->kind == MSV_KIND_GROUP_CHANGE && p->has_group_state_hash &&
        client_join_invited_by(c, p->group_id, sender))
        err = MSV_OK;
    return err;
}

/*
 * A timer change applies to the conversation it names: a group this device
 * knows, set by one of its members, or the sender's conversation with this
 * account. Anything else changes nothing.
 */
static msv_err take_timer(struct msv_client *c, const char *sender, uint64_t device,
                          const struct msv_payload *p,
                          void (*on_message)(void *, const struct msv_incoming *), void *ctx)
{
    struct msv_group_rec g = {0};
    char conversation[40];
    msv_err err;

    if (!p->has_group)
        return client_take_timer(c, sender, device, p, conversation_of(c, sender, p), on_message,
                                 ctx);
    err = group_sender(c, sender, p, &g);
    if (err == MSV_OK && g.name != NULL) {
        msv_client_group_conversation(p->group_id, conversation);
        err = client_take_timer(c, sender, device, p, conversation, on_message, ctx);
    }
    msv_group_clear(&g);
    return err == MSV_ERR_AUTH || err == MSV_ERR_NOT_FOUND ? MSV_OK : err;
}

/*
 * Applies what a message from a member (group_sender()) says about its group
 * g: a change is checked against the signed state this device holds
 * (client_group_take(); *applied, and *text becomes what history shows); the
 * first message of a group this device does not know creates it, as an
 * invitation unless this account made it.
 */
static msv_err learn_group(struct msv_client *c, const char *sender, uint64_t device,
                           const struct msv_payload *p, const struct msv_group_rec *g, int *applied,
                           char **text)
{
    char *members = NULL, *said = NULL;
    msv_err err;

    if (p->kind == MSV_KIND_GROUP_CHANGE) {
        /* under the session lock, as a change of this account's is made (held already for a
         * per-device copy; not for one that came as a group's MLS message) */
        if ((err = client_sessions_hold(c)) != MSV_OK)
            return err;
        err = client_group_take(c, sender, device, p, applied, &said);
        client_sessions_release(c);
        if (err == MSV_OK) {
            free(*text);
            *text = said;
        }
        return err;
    }
    if (g->name != NULL)
        return MSV_OK; /* a message in a group this device knows: nothing to learn */
    err = client_join_members(p->participants, p->participant_count, &members);
    if (err == MSV_OK)
        err = msv_client_db_group_put(c->db, p->group_id, p->group_name ? p->group_name : "group",
                                      members, strcmp(sender, c->handle) == 0, msv_wall_ms());
    free(members);
    return err;
}

/* Who a copy of this account's own message went to: its participants, or its group's members. */
static msv_err own_copy_recipients(struct msv_client *c, const uint8_t id[16],
                                   const struct msv_payload *p)
{
    struct msv_group_rec g = {0};
    char **members = NULL;
    size_t n = 0;
    msv_err err = MSV_OK;

    if (p->participant_count > 0 || !p->has_group)
        return msv_client_db_recipients_put(c->db, id, (const char *const *)p->participants,
                                            p->participant_count);
    err = msv_client_db_group_get(c->db, p->group_id, NULL, &g);
    if (err == MSV_OK)
        err = client_members_of(g.members, &members, &n);
    if (err == MSV_OK)
        err = msv_client_db_recipients_put(c->db, id, (const char *const *)members, n);
    free(members);
    msv_group_clear(&g);
    return err == MSV_ERR_NOT_FOUND ? MSV_OK : err;
}

/* Opens and stores one delivered message; MSV_ERR_EXISTS for a redelivery. */
/* Keeps the log head a message carried, once per distinct head, for the monitor. */
static void keep_gossip(struct msv_client *c, const char *sender, const struct msv_payload *p)
{
    if (!p->has_log_head || strcmp(sender, c->handle) == 0)
        return;
    for (size_t i = 0; i < c->n_gossip; i++) {
        if (memcmp(c->gossip[i].head, p->log_head, MSV_LOG_HEAD_LEN) == 0 &&
            c->gossip[i].has_epoch == p->has_log_epoch &&
            (!p->has_log_epoch || memcmp(c->gossip[i].epoch, p->log_epoch, MSV_LOG_EPOCH_LEN) == 0))
            return;
    }
    if (c->n_gossip == sizeof(c->gossip) / sizeof(c->gossip[0]))
        return; /* enough to compare this time; later messages carry heads too */
    snprintf(c->gossip[c->n_gossip].from, sizeof(c->gossip[0].from), "%s", sender);
    c->gossip[c->n_gossip].has_epoch = p->has_log_epoch;
    memcpy(c->gossip[c->n_gossip].epoch, p->log_epoch, MSV_LOG_EPOCH_LEN);
    memcpy(c->gossip[c->n_gossip++].head, p->log_head, MSV_LOG_HEAD_LEN);
}

/* Who sent a delivery, as far as it was read, and what reading it changed in a session. */
struct incoming {
    char sender[257];
    uint64_t device;
    int session_message;
    int sender_proved; /* the sender's device key opened the sealed layer, or the relay named it */
    int sender_unlisted; /* the directory lists no such device for the handle named (or its
                          * answer did not check out): dropped, counted, naming nobody */
    int classical; /* a classical envelope from a device of an earlier version, to this [8] one */
    int has_digest;
    uint8_t digest[32]; /* of the envelope read: recorded once read, so a replay is refused */
    int held; /* the session lock, from asking whether it was read (client_sessions_hold) */
    struct msv_session_update update;
    int owes_receipt; /* a new message: its delivery receipt goes once the session is stored */
    uint8_t message_id[16]; /* the sender's, which the receipt names */
    uint8_t stored_id[16];  /* the history's: the same, or local_id after a reused id */
};

/*
 * Opens a delivery: a sealed one first yields its claimed sender, whose
 * device key (the directory's, transparency-checked) must open its second
 * layer; then that key authenticates the envelope, a session message or the
 * suite's own.
 */
static msv_err open_delivery(struct msv_client *c, const Msv__Wire__Deliver *d, struct incoming *in,
                             uint8_t **pt, size_t *pt_len)
{
    struct msv_public_identity *pub = NULL;
    struct client_sealed_keys *keys = NULL;
    uint8_t *inner = NULL;
    const uint8_t *env = d->ciphertext.data;
    size_t env_len = d->ciphertext.len;
    msv_err err = MSV_OK;

    if (d->sender_device == 0) { /* sealed: the sender is inside */
        char handle[256];

        err = client_sealed_sender(c, d->ciphertext.data, d->ciphertext.len, handle, &in->device,
                                   &keys);
        if (err == MSV_OK)
            snprintf(in->sender, sizeof(in->sender), "%s", handle);
    } else {
        snprintf(in->sender, sizeof(in->sender), "%.*s", (int)d->sender_handle.len,
                 (const char *)d->sender_handle.data);
        in->device = d->sender_device;
    }
    if (err == MSV_OK) {
        err = client_sender_identity(c, in->sender, in->device, &pub);
        /* not a failure to reach the directory, which leaves the delivery to be taken again */
        in->sender_unlisted = err == MSV_ERR_NOT_FOUND || err == MSV_ERR_AUTH ||
                              err == MSV_ERR_PARSE || err == MSV_ERR_UNSUPPORTED;
    }
    /* the sender's static key proves the claim before anything else reads the envelope */
    if (err == MSV_OK && d->sender_device == 0)
        err = client_sealed_unwrap(c, keys, pub, d->ciphertext.data, d->ciphertext.len, &inner,
                                   &env_len);
    if (keys != NULL)
        sodium_free(keys);
    if (err == MSV_OK && d->sender_device == 0)
        env = inner;
    in->sender_proved = err == MSV_OK;
    /* every kind of envelope, every suite: one read once is never read again, by any process
     * of the account (the lock, released once the delivery is taken, keeps a second one that
     * got it too from asking before the first has recorded it) */
    if (err == MSV_OK && (err = client_sessions_hold(c)) == MSV_OK)
        in->held = 1;
    if (err == MSV_OK) {
        crypto_generichash(in->digest, sizeof(in->digest), env, env_len, NULL, 0);
        in->has_digest = 1;
        err = msv_client_db_envelope_seen(c->db, in->digest);
        err = err == MSV_OK ? MSV_ERR_EXISTS : err == MSV_ERR_NOT_FOUND ? MSV_OK : err;
    }
    in->session_message = err == MSV_OK && msv_sessions_is_session_message(env, env_len);
    /* two post-quantum devices speak post-quantum or not at all: a sender never makes a
     * classical envelope for such a device (K34; a classical session's messages: sessions.c) */
    if (err == MSV_OK && !in->session_message && msv_public_identity_is_pq(pub) &&
        msv_public_identity_is_pq(msv_identity_public(c->id)))
        err = MSV_ERR_AUTH;
    /* from a device of an earlier version it is read, but never silently (classical_read) */
    in->classical = err == MSV_OK && !in->session_message &&
                    msv_public_identity_is_pq(msv_identity_public(c->id));
    if (err == MSV_OK && in->session_message)
        err = msv_sessions_open(c, in->sender, in->device, pub, env, env_len, pt, pt_len,
                                &in->update);
    else if (err == MSV_OK &&
             msv_envelope_suite(env, env_len) !=
                 msv_suite_common(msv_identity_suites(c->id), msv_public_identity_suites(pub)))
        err = MSV_ERR_AUTH; /* not the best suite both speak: a sender never does that */
    else if (err == MSV_OK)
        err = msv_open(c->id, pub, env, env_len, NULL, pt, pt_len);
    msv_public_identity_free(pub);
    free(inner);
    return err;
}

/* "classical-read:<device>": u64be count of classical envelopes read from that device */
#define CLASSICAL_READ "classical-read"

uint64_t msv_client_classical_read(struct msv_client *c, uint64_t device_id)
{
    char key[64];

    client_device_counter_name(CLASSICAL_READ, device_id, key);
    return client_counter(c, key);
}

/*
 * This post-quantum device stored a message that came in a classical envelope (modern, classic
 * or ecies) from a device whose identity does not say post-quantum: such a device can make no
 * other, so it is read (docs/crypto.md, "First-contact modern envelope"), but never silently:
 * counted per device and said (on_classical), naming the sender, whom the envelope proved.
 */
static void classical_read(struct msv_client *c, const struct incoming *in)
{
    char key[64], warning[400];

    client_device_counter_name(CLASSICAL_READ, in->device, key);
    if (client_counter_bump(c, key) != MSV_OK) {
        /* said all the same: the count is what the user may look up later */
    }
    snprintf(warning, sizeof(warning),
             "a message from %.64s (device %llu) came in a classical envelope, without "
             "post-quantum protection: that device's identity does not say post-quantum (an "
             "earlier version). It was read; a later version of it would be post-quantum",
             in->sender, (unsigned long long)in->device);
    if (c->on_classical != NULL)
        c->on_classical(c->ctx, in->sender, in->device, warning);
}

/*
 * After a received message is stored, two steps remain, each recorded when
 * done so that a process killed in between resumes them on its next receive
 * (the message's redelivery is recognised as stored and does nothing more):
 * showing it (on_message), then handing its delivery receipt to the outbox.
 * A step may so happen twice (after a crash), never not at all. Showing is
 * claimed by the message's id (SHOWN_CLAIMS, not waited for) and the step
 * looked for again under the claim: another process of the account resuming
 * it at once (its receive starting while this one shows it) leaves it to this
 * one, and one shown meanwhile is not shown again. A receive within a send
 * with nobody to tell leaves it to be shown. *shown: whether it was shown here.
 */
#define SHOWN_CLAIMS "shown.lock"

static msv_err show_message(struct msv_client *c, const struct msv_message_rec *m,
                            void (*on_message)(void *, const struct msv_incoming *), void *ctx,
                            int *shown)
{
    uint8_t key[32];
    struct msv_message_rec *now = NULL;
    int claim, changed = 0;
    msv_err err;

    *shown = 0;
    /* ids are the senders' choice: claimed by a digest of the id, which no sender aims (another
     * process holding it shows it, and applies what is below) */
    crypto_generichash(key, sizeof(key), m->message_id, 16, NULL, 0);
    claim = client_claim_try(c, SHOWN_CLAIMS, key, 0);
    if (claim == -2)
        return MSV_OK;
    /* its author's edits and unsends that came before it, applied first (again after a crash
     * between its storing and its showing, and before a showing left for later, then told to
     * nobody): it is shown, and kept, as it is after them */
    err = m->kind == MSV_KIND_MESSAGE
              ? client_changes_apply(c, m->message_id, m->sender, on_message, ctx, &changed)
              : MSV_OK;
    if (err != MSV_OK || (on_message == NULL && c->receiving_within > 0)) {
        client_claim_release(claim); /* nobody to tell: left to be shown by the next receive */
        return err;
    }
    /* a file that cannot be locked (-1) leaves the step as it was: shown, perhaps twice */
    err = msv_client_db_message_get(c->db, m->message_id, &now);
    if (err == MSV_OK && (now->pending & MSV_MESSAGE_TO_SHOW) == 0)
        err = MSV_ERR_EXISTS;
    /* as stored now: a change applied since m was read (here, or by another process) shows */
    changed = err == MSV_OK && (strcmp(now->status, m->status) != 0 ||
                                strcmp(now->text ? now->text : "", m->text ? m->text : "") != 0);
    if (err == MSV_OK && on_message != NULL) {
        struct msv_incoming in = {.kind = MSV_INCOMING_MESSAGE,
                                  .message = changed ? now : m,
                                  .from = m->sender,
                                  .conversation = m->conversation};

        on_message(ctx, &in);
    }
    if (now != NULL)
        msv_messages_free(now, 1);
    if (err == MSV_OK) {
        *shown = 1;
        err = msv_client_db_message_done(c->db, m->message_id, MSV_MESSAGE_TO_SHOW);
    }
    client_claim_release(claim);
    return err == MSV_ERR_EXISTS || err == MSV_ERR_NOT_FOUND ? MSV_OK : err;
}

/* The receipt for message_id goes to sender; stored_id is the history's row that owed it. */
static msv_err send_receipt(struct msv_client *c, const uint8_t message_id[16],
                            const uint8_t stored_id[16], const char *sender)
{
    msv_err err;

    /* queued in the outbox even when it cannot go now; one that could not be queued (no
     * memory, the database failing or busy) stays owed, for the next receive (resume_pending);
     * one refused for good (the sender blocked since) is owed no more */
    c->last_queued = 0;
    err = client_send_control(c, MSV_KIND_RECEIPT_DELIVERED, message_id, NULL, sender);
    if (err == MSV_ERR_NOMEM)
        return MSV_ERR_NOMEM;
    if (err != MSV_OK && !c->last_queued && (err == MSV_ERR_IO || err == MSV_ERR_BUSY)) {
        c->why.message[0] = '\0';
        return MSV_OK;
    }
    return msv_client_db_message_done(c->db, stored_id, MSV_MESSAGE_RECEIPT_OWED);
}

/* The steps that a process stopped before (see show_message), oldest message first. */
static msv_err resume_pending(struct msv_client *c,
                              void (*on_message)(void *, const struct msv_incoming *), void *ctx,
                              size_t *count)
{
    struct msv_message_rec *m = NULL;
    size_t n = 0;
    msv_err err = msv_client_db_messages_pending(c->db, &m, &n);

    for (size_t i = 0; err == MSV_OK && i < n; i++) {
        if (m[i].pending & MSV_MESSAGE_TO_SHOW) {
            int shown = 0;

            err = show_message(c, &m[i], on_message, ctx, &shown);
            *count += (size_t)shown;
        }
        if (err == MSV_OK && (m[i].pending & MSV_MESSAGE_RECEIPT_OWED))
            err = send_receipt(c, m[i].message_id, m[i].message_id, m[i].sender);
        if (err == MSV_OK)
            err = client_request_release(c, &m[i]);
    }
    msv_messages_free(m, n);
    return err;
}

/*
 * Message ids are the sender's choice: someone else who saw one (a member of
 * the same group) could send their own message under it first. So a stored id
 * is a redelivery (MSV_ERR_EXISTS) only if the stored message came from the
 * same sender and device. Otherwise the new message is kept, under a local id
 * (local_id) derived from the id, the sender and the device, so that its own
 * redelivery is recognised, with a note saying whose id it reused.
 */
static msv_err redelivery_or_conflict(struct msv_client *c, const struct incoming *from,
                                      const struct msv_payload *p, uint8_t local_id[16], char *note,
                                      size_t note_len)
{
    struct msv_message_rec *m = NULL;
    msv_err err = msv_client_db_message_get(c->db, p->message_id, &m);

    memcpy(local_id, p->message_id, 16);
    note[0] = '\0';
    if (err == MSV_ERR_NOT_FOUND)
        return MSV_OK;
    if (err != MSV_OK)
        return err;
    if (strcmp(m->sender, from->sender) == 0 &&
        (m->sender_device == from->device || m->sender_device == 0)) {
        msv_messages_free(m, 1);
        return MSV_ERR_EXISTS;
    }
    snprintf(note, note_len, "\n[sent under the id of an earlier message from %s (device %llu)]",
             m->sender, (unsigned long long)m->sender_device);
    msv_messages_free(m, 1);
    client_reused_id(p->message_id, from->sender, from->device, local_id);
    return msv_client_db_message_known(c->db, local_id) == MSV_OK ? MSV_ERR_EXISTS : MSV_OK;
}

/* Appends note to *text (both NUL-terminated; *text is replaced, the old one wiped). */
static msv_err append_note(char **text, const char *note)
{
    size_t n = strlen(*text), k = strlen(note);
    char *t = malloc(n + k + 1);

    if (t == NULL)
        return MSV_ERR_NOMEM;
    memcpy(t, *text, n);
    memcpy(t + n, note, k + 1);
    msv_secret_free(*text, n);
    *text = t;
    return MSV_OK;
}

/* Whether sender's message that a change from its device names by target_id is here (under that
 * id, or under one of its own: client_change_target); *err a storage failure. */
static int own_target(struct msv_client *c, const uint8_t target_id[16], const char *sender,
                      uint64_t device, msv_err *err)
{
    struct msv_message_rec *t = NULL;
    int own;

    *err = client_change_target(c, target_id, sender, device, &t);
    own = *err == MSV_OK && strcmp(t->sender, sender) == 0;
    if (*err == MSV_ERR_NOT_FOUND)
        *err = MSV_OK;
    msv_messages_free(t, t != NULL ? 1 : 0);
    return own;
}

/* Stores (and shows) one payload from->sender's device sent; MSV_ERR_EXISTS for a redelivery. */
static msv_err take_payload(struct msv_client *c, const uint8_t *pt, size_t pt_len,
                            void (*on_message)(void *, const struct msv_incoming *), void *ctx,
                            struct incoming *from)
{
    struct msv_payload *p = NULL;
    struct msv_message_rec rec = {.status = "received"};
    struct msv_group_rec group = {0};
    char *sender = from->sender, *text = NULL, group_conversation[40], note[600];
    int applied = 0, request = 0, shown = 0, invitation = 0, taken = 1, changed = 0;
    msv_err err = msv_payload_parse(pt, pt_len, &p);

    if (err == MSV_OK && p->sent_at_ms != 0 &&
        (int64_t)p->sent_at_ms < msv_wall_ms() - SEEN_KEEP_MS)
        err = MSV_ERR_REPLAY;
    if (err != MSV_OK) {
        msv_payload_free(p);
        return err;
    }
    /* the user's choice: read (so the session keeps up), answered in no way, counted */
    if (msv_client_is_blocked(c, sender)) {
        err = client_drop_blocked(c, sender, (int)p->kind, on_message, ctx);
        msv_payload_free(p);
        return err == MSV_OK ? MSV_ERR_EXISTS : err; /* acknowledged, not a new message */
    }
    /* the key to answer it sealed */
    if (p->has_profile_key && strcmp(sender, c->handle) != 0 &&
        (err = msv_sessions_learn_profile(c, sender, p->profile_key)) != MSV_OK) {
        msv_payload_free(p);
        return err;
    }
    keep_gossip(c, sender, p);
    /* replies go as the handle they wrote to (docs/missive.md, "Handles") */
    if ((!p->has_group && (err = client_note_addressed(c, sender, p->participants,
                                                       p->participant_count)) != MSV_OK) ||
        (err = client_take_profile(c, sender, p, on_message, ctx)) != MSV_OK) {
        msv_payload_free(p);
        return err;
    }
    if (p->kind == MSV_KIND_SYNC || p->kind == MSV_KIND_PROFILE_KEY) {
        /* a new profile key was learnt above: nothing else to do for it */
        if (p->kind == MSV_KIND_SYNC)
            err = client_take_sync(c, sender, from->device, p, on_message, ctx);
        msv_payload_free(p);
        return err == MSV_OK ? MSV_ERR_EXISTS : err; /* acknowledged, not a message */
    }
    if (p->kind == MSV_KIND_LINK_HISTORY) {
        err = client_take_link_history(c, sender, from->device, p, on_message, ctx);
        msv_payload_free(p);
        return err == MSV_OK ? MSV_ERR_EXISTS : err; /* acknowledged, not a message */
    }
    if (p->kind == MSV_KIND_GROUP_COPY) {
        err = client_take_group_copy(c, sender, from->device, p);
        msv_payload_free(p);
        return err == MSV_OK ? MSV_ERR_EXISTS : err; /* acknowledged, not a message */
    }
    if (p->kind == MSV_KIND_GROUP_JOIN) {
        err = client_take_join(c, sender, p, on_message, ctx);
        msv_payload_free(p);
        return err == MSV_OK ? MSV_ERR_EXISTS : err; /* acknowledged, not a message */
    }
    if (p->kind == MSV_KIND_TIMER) {
        err = take_timer(c, sender, from->device, p, on_message, ctx);
        msv_payload_free(p);
        return err == MSV_OK ? MSV_ERR_EXISTS : err; /* acknowledged, shown if it changed */
    }
    if (p->kind != MSV_KIND_MESSAGE && p->kind != MSV_KIND_GROUP_CHANGE) {
        /* an edit or unsend of a message of its sender's not here yet (held back, or sent again
         * after it; another's message under its id does not count): kept for it, and applied
         * when it comes */
        int early = (p->kind == MSV_KIND_EDIT || p->kind == MSV_KIND_UNSEND) && p->has_target &&
                    !own_target(c, p->target_id, sender, from->device, &err);

        /* (kept, then looked for again: another process may have stored it meanwhile, having
         * found nothing kept for it) */
        if (err == MSV_OK && early &&
            (err = client_change_keep(c, sender, from->device, p->target_id, pt, pt_len)) ==
                MSV_OK &&
            own_target(c, p->target_id, sender, from->device, &err))
            err = client_changes_apply(c, p->target_id, sender, on_message, ctx, &changed);
        else if (err == MSV_OK && !early)
            err = client_take_control(c, sender, from->device, p, on_message, ctx);
        msv_payload_free(p);
        return err == MSV_OK ? MSV_ERR_EXISTS : err; /* acknowledged, not a new message */
    }
    /* a redelivery: nothing to fetch or store again (its author's changes kept under its id,
     * if it is stored under one of its own, applied: a crash may have come between) */
    if ((err = redelivery_or_conflict(c, from, p, rec.message_id, note, sizeof(note))) != MSV_OK) {
        if (err == MSV_ERR_EXISTS && p->kind == MSV_KIND_MESSAGE &&
            memcmp(rec.message_id, p->message_id, 16) != 0)
            err = client_changes_apply(c, p->message_id, sender, on_message, ctx, &changed);
        msv_payload_free(p);
        return err == MSV_OK ? MSV_ERR_EXISTS : err;
    }
    /* refused before anything is fetched; acknowledged, so it does not come again */
    if (p->has_group && (err = group_sender(c, sender, p, &group)) != MSV_OK) {
        msv_group_clear(&group);
        msv_payload_free(p);
        return err == MSV_ERR_AUTH ? MSV_ERR_EXISTS : err;
    }
    /* a group this device does not know, from another: an invitation, unless too many of its
     * inviter's, or too many in all, wait to be accepted (then dropped, told, and
     * acknowledged) */
    invitation = p->has_group && group.name == NULL && strcmp(sender, c->handle) != 0 &&
                 !client_is_own_handle(c, sender);
    if (invitation &&
        ((err = client_invitation_check(c, p->group_id, sender, &taken)) != MSV_OK || !taken)) {
        msv_group_clear(&group);
        msv_payload_free(p);
        return err == MSV_OK ? MSV_ERR_EXISTS : err;
    }
    /* a member's device that cannot read the group's MLS group asks to be added again (an
     * admin's device replaces its leaf at the end of the receive; failing to record it, its
     * next message asks again) */
    if (p->has_group && p->mls_outside &&
        client_mls_rejoin_asked(c, p->group_id, sender, from->device, p->sent_at_ms) != MSV_OK)
        c->why.message[0] = '\0';
    err = fetch_attachments(c, p, &text);
    if (err == MSV_OK && note[0] != '\0' && (err = append_note(&text, note)) != MSV_OK)
        msv_secret_free(text, strlen(text));
    if (err != MSV_OK) {
        msv_group_clear(&group);
        msv_payload_free(p);
        return err;
    }
    rec.conversation = (char *)conversation_of(c, sender, p);
    if (p->has_group) {
        msv_client_group_conversation(p->group_id, group_conversation);
        rec.conversation = group_conversation;
        err = learn_group(c, sender, from->device, p, &group, &applied, &text);
        msv_group_clear(&group);
        if (err == MSV_OK && invitation)
            err = msv_client_db_group_invited(c->db, p->group_id, sender);
        if (err == MSV_OK && applied)
            err = client_join_arrived(c, p->group_id, sender);
        if (err != MSV_OK) {
            msv_secret_free(text, strlen(text));
            msv_payload_free(p);
            return err;
        }
    }
    rec.outgoing = strcmp(sender, c->handle) == 0;
    rec.status = rec.outgoing ? "sent" : "received"; /* a copy from this account's other device */
    rec.sender = sender;
    rec.sender_device = from->device;
    rec.kind = (int)p->kind;
    rec.text = text;
    rec.sent_at_ms = (int64_t)p->sent_at_ms;
    rec.stored_at_ms = msv_wall_ms();
    rec.has_reply_to = p->kind == MSV_KIND_MESSAGE && p->has_reply_to;
    memcpy(rec.reply_to, p->reply_to, 16);
    from->owes_receipt = !rec.outgoing && p->kind == MSV_KIND_MESSAGE;
    rec.timer_s = p->kind == MSV_KIND_MESSAGE ? p->timer_s : 0;
    /* this account's own message (from another device) counts down from when it was sent */
    if (rec.outgoing && rec.timer_s != 0)
        rec.expires_at_ms =
            (rec.sent_at_ms < rec.stored_at_ms ? rec.sent_at_ms : rec.stored_at_ms) +
            (int64_t)rec.timer_s * 1000;
    /* a request is answered in no way until accepted: its receipt is held back */
    if (from->owes_receipt && !p->has_group &&
        (err = client_request_check(c, sender, &request)) != MSV_OK) {
        msv_secret_free(text, strlen(text));
        msv_payload_free(p);
        return err;
    }
    from->owes_receipt = from->owes_receipt && !request;
    rec.pending = MSV_MESSAGE_TO_SHOW | (from->owes_receipt ? MSV_MESSAGE_RECEIPT_OWED : 0) |
                  (request ? MSV_MESSAGE_REQUEST : 0);
    memcpy(from->message_id, p->message_id, 16);
    memcpy(from->stored_id, rec.message_id, 16);
    /* an archived conversation comes back with it (unless muted) */
    err = rec.outgoing ? MSV_OK : client_conversation_arrived(c, rec.conversation, on_message, ctx);
    /* stored before it is acknowledged; the message id makes a redelivery a no-op */
    if (err == MSV_OK)
        err = msv_client_db_message_put(c->db, &rec);
    if (err == MSV_OK && p->has_group && p->mention_count > 0)
        err = client_keep_mentions(c, rec.message_id, rec.conversation, p);
    /* a copy of this account's own message: who it went to, for their receipts */
    if (err == MSV_OK && rec.outgoing)
        err = own_copy_recipients(c, rec.message_id, p);
    /* stored under an id of its own (another's message came first under its id): its author's
     * edits and unsends that came before it, kept under that id, applied now (those kept under
     * its own are applied as it is shown) */
    if (err == MSV_OK && p->kind == MSV_KIND_MESSAGE && memcmp(rec.message_id, p->message_id, 16))
        err = client_changes_apply(c, p->message_id, sender, on_message, ctx, &changed);
    if (err == MSV_OK)
        err = show_message(c, &rec, on_message, ctx, &shown);
    if (err == MSV_OK && p->kind == MSV_KIND_GROUP_CHANGE && on_message != NULL) {
        struct msv_incoming in = {.kind = MSV_INCOMING_GROUP,
                                  .notice = text,
                                  .from = sender,
                                  .conversation = group_conversation,
                                  .status = applied ? "applied" : "refused"};

        on_message(ctx, &in);
    }
    msv_secret_free(text, strlen(text));
    msv_payload_free(p);
    return err;
}

static msv_err take_message(struct msv_client *c, const Msv__Wire__Deliver *d,
                            void (*on_message)(void *, const struct msv_incoming *), void *ctx,
                            struct incoming *from)
{
    uint8_t *pt = NULL;
    size_t pt_len = 0;
    msv_err err = open_delivery(c, d, from, &pt, &pt_len);

    if (err == MSV_OK)
        err = take_payload(c, pt, pt_len, on_message, ctx, from);
    msv_secret_free(pt, pt_len);
    return err;
}

/*
 * What a device notice of this account means for the transparency monitor:
 * a request to join is kept (its key is what an approval signs); an approval
 * counts the device as the account's own only if one of the account's own
 * devices signed it — the server cannot. Should recording fail, the monitor
 * warns of the device: a false alarm, never a missed one. 1 if the approval
 * checked out and the device is new to this one (never counted before).
 */
static int note_device_change(struct msv_client *c, const Msv__Wire__DeviceChange *dc)
{
    const Msv__Wire__DeviceInfo *d = dc->device;
    struct msv_public_identity *approver = NULL;
    uint8_t hash[32], msg[14 + 1 + 255 + 8 + 32], *id = NULL;
    char signer[sizeof(c->handle)];
    size_t id_len = 0;
    uint32_t suite = 0;
    msv_err err;
    int fresh, alarmed = 0;

    snprintf(signer, sizeof(signer), "%s", c->handle);
    if (d->suite > 255 ||
        client_device_hash(d->suite, d->identity.data, d->identity.len, hash) != MSV_OK)
        return 0;
    if (dc->pending) {
        uint8_t *rec = malloc(d->identity.len + 1);
        char key[40];

        if (rec == NULL)
            return 0;
        rec[0] = (uint8_t)d->suite;
        memcpy(rec + 1, d->identity.data, d->identity.len);
        client_pending_key(d->device_id, key);
        err = msv_client_db_set(c->db, key, rec, d->identity.len + 1);
        free(rec);
        return 0;
    }
    /* one this device counted as the account's already (approved before, and perhaps removed
     * since: a removed device listed again is never new); one the monitor alarmed on alone was
     * never counted */
    fresh =
        msv_client_db_own_device_get(c->db, d->device_id, hash, &alarmed) == MSV_ERR_NOT_FOUND ||
        alarmed;
    err = msv_client_db_own_device_identity(c->db, dc->approver, &suite, &id, &id_len);
    if (err == MSV_OK)
        err = msv_public_identity_parse((enum msv_suite)suite, id, id_len, &approver);
    /* the approver signed the handle it goes by, one of this account's (it may be another
     * than this device's own) */
    if (err == MSV_OK && dc->handle.len < sizeof(signer) &&
        memchr(dc->handle.data, '\0', dc->handle.len) == NULL) {
        memcpy(signer, dc->handle.data, dc->handle.len);
        signer[dc->handle.len] = '\0';
    }
    if (err == MSV_OK)
        err = msv_public_identity_verify(approver, msg,
                                         client_approval_message(signer, d->device_id, hash, msg),
                                         dc->approval.data, dc->approval.len);
    if (err == MSV_OK)
        err = msv_client_db_own_device_put(c->db, d->device_id, hash, d->suite, d->identity.data,
                                           d->identity.len, 0);
    msv_public_identity_free(approver);
    free(id);
    return err == MSV_OK && fresh;
}

/* A notice about the account itself (docs/wire.md, "Account life"); unknown ones are ignored. */
static void account_notice(const struct msv_client *c, const Msv__Wire__DeviceChange *dc,
                           void (*on_message)(void *, const struct msv_incoming *), void *ctx)
{
    char notice[300];
    struct msv_incoming in = {.kind = MSV_INCOMING_ACCOUNT, .notice = notice};

    if (on_message == NULL)
        return;
    if (dc->account == MSV__WIRE__ACCOUNT_NOTICE__ACCOUNT_PASSWORD_CHANGED) {
        in.status = "password_changed";
        snprintf(notice, sizeof(notice),
                 "the account's password was changed from device %llu; if that was not you, "
                 "remove that device and change the password",
                 (unsigned long long)dc->by_device);
    } else if (dc->account == MSV__WIRE__ACCOUNT_NOTICE__ACCOUNT_PASSWORD_RESET) {
        in.status = "password_reset";
        snprintf(notice, sizeof(notice),
                 "the account's password was reset with a code the server's operator sent to "
                 "the handle; if that was not you, tell the operator");
    } else if (dc->account == MSV__WIRE__ACCOUNT_NOTICE__ACCOUNT_QUEUE_FULL) {
        in.kind = MSV_INCOMING_QUOTA;
        in.status = "queue_full";
        if (dc->full_device == c->device_id)
            snprintf(notice, sizeof(notice),
                     "a message to this account was refused: this device's queue on the server "
                     "is full; what waits in it comes now, and makes room");
        else
            snprintf(notice, sizeof(notice),
                     "a message to this account was refused: the queue of device %llu on the "
                     "server is full; receive on that device, or remove it if it is gone",
                     (unsigned long long)dc->full_device);
    } else {
        return;
    }
    on_message(ctx, &in);
}

/*
 * A handle of this account was added or removed by another of its devices: the list of its
 * handles is read again, and a device whose own handle went takes the account's first.
 */
static void handle_notice(struct msv_client *c, const Msv__Wire__DeviceChange *dc,
                          void (*on_message)(void *, const struct msv_incoming *), void *ctx)
{
    const ProtobufCBinaryData *h =
        dc->handle_added.len > 0 ? &dc->handle_added : &dc->handle_removed;
    char handle[MSV_HANDLE_MAX + 1], first[MSV_HANDLE_MAX + 1], notice[600];
    struct msv_incoming in = {.kind = MSV_INCOMING_HANDLE, .notice = notice, .handle = handle};

    if (h->len > MSV_HANDLE_MAX || dc->handle.len > MSV_HANDLE_MAX ||
        memchr(h->data, '\0', h->len) != NULL || memchr(dc->handle.data, '\0', dc->handle.len))
        return;
    memcpy(handle, h->data, h->len);
    handle[h->len] = '\0';
    memcpy(first, dc->handle.data, dc->handle.len);
    first[dc->handle.len] = '\0';
    in.status = dc->handle_added.len > 0 ? "added" : "removed";
    if (dc->handle_added.len > 0)
        (void)client_handle_watch(c, handle); /* watched until its tombstone is read */
    if (dc->handle_removed.len > 0) {
        (void)client_handle_removed(c, handle);
        (void)client_handle_gone(c, handle, first);
    } else
        (void)client_handle_gone(c, "", first); /* the list only */
    snprintf(notice, sizeof(notice), "the %s %s was %s this account by device %llu",
             strchr(handle, '@') == NULL && handle[0] != '+' ? "username" : "handle", handle,
             dc->handle_added.len > 0 ? "added to" : "removed from",
             (unsigned long long)dc->by_device);
    if (on_message != NULL)
        on_message(ctx, &in);
}

static void take_notice(struct msv_client *c, const Msv__Wire__Deliver *d,
                        void (*on_message)(void *, const struct msv_incoming *), void *ctx)
{
    Msv__Wire__DeviceChange *dc =
        msv__wire__device_change__unpack(NULL, d->ciphertext.len, d->ciphertext.data);
    int approved_now = 0;

    if (dc == NULL)
        return;
    if (dc->device == NULL && (dc->handle_added.len > 0 || dc->handle_removed.len > 0))
        handle_notice(c, dc, on_message, ctx);
    else if (dc->device == NULL)
        account_notice(c, dc, on_message, ctx);
    if (dc->device != NULL && dc->added)
        approved_now = note_device_change(c, dc);
    /* removed from the account: its leaves in the groups on MLS committed out (at the end of
     * the receive; the server's word is only the cue: the verified directory decides) */
    if (dc->device != NULL && !dc->added && !dc->pending && dc->device->device_id != c->device_id &&
        client_mls_out_due(c, 0) != MSV_OK)
        c->why.message[0] = '\0';
    /* approved now by one of its devices (the approval's signature checked, and the device new
     * to this one: never one approved before, removed since and listed again): added to this
     * device's groups on MLS at the end of the receive, as one it approved itself (the
     * directory decides again) */
    if (approved_now && !dc->by_password &&
        client_mls_join_noticed(c, dc->device->device_id) != MSV_OK)
        c->why.message[0] = '\0';
    if (on_message != NULL && dc->device != NULL) {
        struct msv_public_identity *pub = NULL;
        char notice[400], fp[MSV_FINGERPRINT_TEXT_LEN] = "(unreadable identity)";
        unsigned long long id = (unsigned long long)dc->device->device_id;
        struct msv_incoming in = {.kind = MSV_INCOMING_DEVICE, .notice = notice};
        uint8_t h[32];

        if (msv_public_identity_parse((enum msv_suite)dc->device->suite, dc->device->identity.data,
                                      dc->device->identity.len, &pub) == MSV_OK) {
            msv_public_identity_hash(pub, h);
            msv_fingerprint_text(h, fp);
        }
        msv_public_identity_free(pub);
        if (dc->pending)
            snprintf(notice, sizeof(notice),
                     "device %llu asks to join this account%s (fingerprint %s); if it is yours, "
                     "approve it with: missive devices approve %llu",
                     id, dc->by_password ? " with the account password" : "", fp, id);
        else if (dc->by_password) /* nobody approved it: the password alone let it in */
            snprintf(notice, sizeof(notice),
                     "device %llu was added to this account with the account password "
                     "(fingerprint %s); if that was not you, remove it (missive devices remove "
                     "%llu) and change the password",
                     id, fp, id);
        else
            snprintf(notice, sizeof(notice), "device %llu was %s this account (fingerprint %s)", id,
                     dc->added ? "added to" : "removed from", fp);
        on_message(ctx, &in);
    }
    msv__wire__device_change__free_unpacked(dc, NULL);
}

#define RESET_INTERVAL_MS 60000

/*
 * No session of this device reads a session message from in->device: the
 * sessions with it are dropped and a reset goes to its handle, which starts
 * a new session (X3DH) with it; both sides are told. At most one reset per
 * device a minute, so two devices that cannot read each other do not loop.
 */
static int session_broken(struct msv_client *c, const struct incoming *in,
                          void (*on_message)(void *, const struct msv_incoming *), void *ctx)
{
    char key[48], notice[600];
    uint8_t *v = NULL, when[8];
    size_t len = 0;
    int64_t now = msv_wall_ms(), last = 0;
    int due;

    /* read and written under the session lock: two processes that failed to read the same
     * delivery (the second's connection replaced the first's) reset once */
    if (client_sessions_hold(c) != MSV_OK)
        return 0;
    snprintf(key, sizeof(key), "reset:%llu", (unsigned long long)in->device);
    if (msv_client_db_get(c->db, key, &v, &len) == MSV_OK && len == 8)
        last = (int64_t)msv_get_u64be(v);
    free(v);
    msv_put_u64be(when, (uint64_t)now);
    due = now - last >= RESET_INTERVAL_MS &&
          msv_client_db_set(c->db, key, when, sizeof(when)) == MSV_OK &&
          msv_sessions_forget(c, in->device) == MSV_OK;
    client_sessions_release(c);
    if (!due)
        return 0;
    (void)client_send_control(c, MSV_KIND_SESSION_RESET, NULL, NULL, in->sender);
    if (on_message != NULL) {
        struct msv_incoming note = {
            .kind = MSV_INCOMING_SESSION, .notice = notice, .from = in->sender};

        snprintf(notice, sizeof(notice),
                 "a message from %s (device %llu) could not be decrypted; the session with that "
                 "device was reset. Ask them to send it again.",
                 in->sender, (unsigned long long)in->device);
        on_message(ctx, &note);
    }
    return on_message != NULL;
}

/*
 * A delivery from a proven sender that this device could not read (a
 * session message whose key was used already, one no session reads, an
 * envelope that does not open or a payload that does not parse): before it
 * is acknowledged it goes into history as "unreadable" (its id: the start of
 * the delivery's hash h, so a redelivery is recorded once) and is shown,
 * unless shown already. Anything but MSV_OK: not acknowledged.
 */
static msv_err record_unreadable_at(struct msv_client *c, const uint8_t h[32],
                                    const struct incoming *in, const char *conversation,
                                    const char *text, int shown,
                                    void (*on_message)(void *, const struct msv_incoming *),
                                    void *ctx)
{
    struct msv_message_rec rec = {.status = "unreadable", .kind = MSV_KIND_MESSAGE};
    msv_err err;

    memcpy(rec.message_id, h, sizeof(rec.message_id));
    rec.conversation = (char *)(conversation != NULL ? conversation : in->sender);
    rec.sender = (char *)in->sender;
    rec.sender_device = in->device;
    rec.text = (char *)text;
    /* dated when it was recorded: what could not be read says no time of its own */
    rec.sent_at_ms = rec.stored_at_ms = msv_wall_ms();
    err = msv_client_db_message_put(c->db, &rec);
    if (err == MSV_ERR_EXISTS)
        return MSV_OK; /* recorded and shown when it came before */
    if (err == MSV_OK && !shown && on_message != NULL) {
        struct msv_incoming note = {.kind = MSV_INCOMING_SESSION,
                                    .notice = text,
                                    .from = in->sender,
                                    .conversation = conversation};

        on_message(ctx, &note);
    }
    return err;
}

static msv_err record_unreadable_in(struct msv_client *c, const Msv__Wire__Deliver *d,
                                    const struct incoming *in, const char *conversation,
                                    const char *text, int shown,
                                    void (*on_message)(void *, const struct msv_incoming *),
                                    void *ctx)
{
    uint8_t h[32];

    crypto_generichash(h, sizeof(h), d->ciphertext.data, d->ciphertext.len, NULL, 0);
    return record_unreadable_at(c, h, in, conversation, text, shown, on_message, ctx);
}

static msv_err record_unreadable_as(struct msv_client *c, const Msv__Wire__Deliver *d,
                                    const struct incoming *in, const char *text, int shown,
                                    void (*on_message)(void *, const struct msv_incoming *),
                                    void *ctx)
{
    return record_unreadable_in(c, d, in, NULL, text, shown, on_message, ctx);
}

static const char *unreadable_text(const struct incoming *in, char text[400])
{
    snprintf(text, 400,
             "a message from %s (device %llu) could not be read; ask them to send it again",
             in->sender, (unsigned long long)in->device);
    return text;
}

static msv_err record_unreadable(struct msv_client *c, const Msv__Wire__Deliver *d,
                                 const struct incoming *in, int shown,
                                 void (*on_message)(void *, const struct msv_incoming *), void *ctx)
{
    char text[400];

    return record_unreadable_as(c, d, in, unreadable_text(in, text), shown, on_message, ctx);
}

#define MSV_MLS_DELIVERY_SUITE 160 /* Deliver.suite of an MlsDelivery (docs/wire.md) */

/*
 * A delivery of a group on MLS (Deliver.suite MSV_MLS_DELIVERY_SUITE, docs/wire.md "MLS
 * delivery"; mlsgroups.c): an application message is taken as any message, its sender named by
 * its leaf's verified credential; a Welcome or commit changes the group's state; anything that
 * cannot be taken is recorded and shown, never dropped unseen (its sender: the relay's word).
 */
/*
 * The payload an MLS application message gave (m, kept under digest: client_mls_take), taken
 * as any message's (one that does not read recorded as unreadable, once); then the delivery
 * recorded and what was kept for it forgotten; then its receipt (should that fail, the outbox
 * sends it later). All of it under a claim on the digest (MLS_IN_CLAIMS), waited for up to
 * wait_ms: what another process of the account (or another receive of this one) is taking is
 * left to it (kept until it is taken), unless it lets it go within wait_ms (it failed: its
 * connection was replaced by this one's, say); and what was taken meanwhile is not taken
 * again. Waited for, not blocked on: the other may wait for a lock this one holds.
 */
#define MLS_IN_CLAIMS "mls-in.lock"
#define MLS_IN_WAIT_MS 5000

static msv_err take_mls_gave(struct msv_client *c, const uint8_t digest[32],
                             const struct client_mls_in *m, int wait_ms,
                             void (*on_message)(void *, const struct msv_incoming *), void *ctx,
                             size_t *count)
{
    const struct client_in_flight taking = {digest, c->mls_taking};
    struct incoming in;
    char text[400];
    int claim;
    msv_err err;

    /* one this client is taking already (a receive within its telling): left to it */
    if (client_chain_holds(c->mls_taking, digest, 32))
        return MSV_OK;
    claim = client_claim_try(c, MLS_IN_CLAIMS, digest, wait_ms);
    if (claim == -2)
        return MSV_OK;
    /* a file that cannot be locked (-1) leaves the take as it was: perhaps twice, never not */
    /* recorded already (a crash before it was forgotten): only forgotten now */
    err = msv_client_db_envelope_seen(c->db, digest);
    if (err == MSV_OK)
        err = client_mls_forget(c, digest);
    if (err != MSV_ERR_NOT_FOUND) {
        client_claim_release(claim);
        return err;
    }
    err = client_mls_kept(c, digest);
    if (err != MSV_OK) {
        client_claim_release(claim);
        return err == MSV_ERR_NOT_FOUND ? MSV_OK : err;
    }
    c->mls_taking = &taking;
    memset(&in, 0, sizeof(in));
    snprintf(in.sender, sizeof(in.sender), "%s", m->sender);
    in.device = m->device;
    in.sender_proved = 1;
    err = take_payload(c, m->pt, m->pt_len, on_message, ctx, &in);
    if (err == MSV_OK)
        (*count)++;
    else
        in.owes_receipt = 0; /* owed for a message stored now only */
    if (err == MSV_ERR_AUTH || err == MSV_ERR_PARSE || err == MSV_ERR_UNSUPPORTED ||
        err == MSV_ERR_REPLAY)
        err = record_unreadable_at(c, digest, &in, NULL, unreadable_text(&in, text), 0, on_message,
                                   ctx);
    if (err == MSV_ERR_EXISTS || err == MSV_ERR_NOT_FOUND)
        err = MSV_OK;
    if (err == MSV_OK)
        err = msv_client_db_envelope_read(c->db, digest, msv_wall_ms());
    if (err == MSV_OK)
        err = client_mls_forget(c, digest);
    c->mls_taking = taking.up;
    client_claim_release(claim);
    if (err == MSV_OK && in.owes_receipt)
        err = send_receipt(c, in.message_id, in.stored_id, in.sender);
    return err;
}

static msv_err take_mls(struct msv_client *c, const Msv__Wire__Deliver *d,
                        void (*on_message)(void *, const struct msv_incoming *), void *ctx,
                        size_t *count)
{
    static const char domain[] = "missive: mls delivery";
    struct client_mls_in m;
    struct client_mls_refusal refusal;
    struct incoming in;
    char sender[257];
    uint8_t digest[32];
    msv_err err;

    /* one taken once is not taken again: a redelivery (its acknowledgement lost) changes
     * nothing and says nothing, as a per-device envelope's does */
    crypto_generichash(digest, sizeof(digest), d->ciphertext.data, d->ciphertext.len,
                       (const uint8_t *)domain, sizeof(domain) - 1);
    err = msv_client_db_envelope_seen(c->db, digest);
    if (err != MSV_ERR_NOT_FOUND)
        return err;
    snprintf(sender, sizeof(sender), "%.*s", (int)d->sender_handle.len,
             (const char *)d->sender_handle.data);
    err = client_mls_take(c, d->ciphertext.data, d->ciphertext.len, sender, d->sender_device,
                          digest, &m);
    client_mls_refusal_take(c, &refusal); /* before anything told can take another */
    if (err == MSV_OK && m.pt != NULL) {
        err =
            take_mls_gave(c, digest, &m, c->mls_in_wait_ms > 0 ? c->mls_in_wait_ms : MLS_IN_WAIT_MS,
                          on_message, ctx, count);
        msv_secret_free(m.pt, m.pt_len);
        return err;
    }
    /* a Welcome or commit taken, or a notice: recorded and shown (its sender: the relay's
     * word), then the delivery recorded; a commit's refusal told already is not told again */
    if (err == MSV_OK && m.notice[0] != '\0' && client_mls_refusal_repeat(c, &refusal))
        m.notice[0] = '\0';
    if (err == MSV_OK && m.notice[0] != '\0') {
        memset(&in, 0, sizeof(in));
        snprintf(in.sender, sizeof(in.sender), "%s", sender);
        in.device = d->sender_device;
        err = record_unreadable_in(c, d, &in, m.conversation[0] ? m.conversation : NULL, m.notice,
                                   0, on_message, ctx);
    }
    if (err == MSV_OK)
        err = client_mls_refusal_told(c, &refusal);
    if (err == MSV_OK)
        err = msv_client_db_envelope_read(c->db, digest, msv_wall_ms());
    return err;
}

/*
 * What MLS application messages gave that a process stopped before taking (client_mls_take
 * keeps it with the state that read it): taken now, whether or not the server delivers them
 * again.
 */
static msv_err resume_mls(struct msv_client *c,
                          void (*on_message)(void *, const struct msv_incoming *), void *ctx,
                          size_t *count)
{
    struct msv_setting *kept = NULL;
    size_t n = 0;
    msv_err err = msv_client_db_settings(c->db, MSV_MLS_GAVE_PREFIX, 64, &kept, &n);

    for (size_t i = 0; err == MSV_OK && i < n; i++) {
        struct client_mls_in m;
        uint8_t digest[32];
        size_t len = 0;
        const char *hex = kept[i].key + strlen(MSV_MLS_GAVE_PREFIX);
        msv_err parsed;

        if (c->conn == NULL) { /* a receipt's retries gave it up */
            err = MSV_ERR_IO;
            break;
        }
        parsed = MSV_ERR_PARSE;
        if (strlen(hex) == 64 && msv_hex_decode(hex, digest, sizeof(digest), &len) == MSV_OK &&
            len == 32)
            parsed = client_mls_gave_parse(kept[i].value, kept[i].len, &m);
        if (parsed == MSV_ERR_PARSE) /* not of this version's making */
            err = msv_client_db_unset(c->db, kept[i].key);
        else if (parsed != MSV_OK)
            err = parsed;
        else {
            err = take_mls_gave(c, digest, &m, 0, on_message, ctx, count);
            msv_secret_free(m.pt, m.pt_len);
        }
    }
    msv_settings_free(kept, n);
    return err;
}

/*
 * A receive that took all it could: pushes a request dropped (conn.h) are
 * held by the relay as delivered on this connection, so it is closed for the
 * next one to bring them.
 */
static msv_err receive_done(struct msv_client *c,
                            void (*on_message)(void *, const struct msv_incoming *), void *ctx)
{
    size_t expired = 0;

    msv_client_tell_unopened(c); /* what the once-a-minute rule held back */
    if (c->conn != NULL && msv_conn_has_dropped(c->conn)) {
        msv_conn_close(c->conn);
        c->conn = NULL;
    }
    client_mls_joins(c); /* devices this one approved, into its groups on MLS */
    /* what disappeared while it ran (this account's messages from other devices, say) */
    return msv_client_expire(c, on_message, ctx, &expired);
}

static msv_err receive_on(struct msv_client *c, int timeout_ms,
                          void (*on_message)(void *ctx, const struct msv_incoming *in), void *ctx,
                          size_t *count)
{
    msv_err err = msv_client_connect(c);
    /* a server that never stops sending must not keep the caller here for ever */
    int64_t deadline = msv_mono_ms() + timeout_ms +
                       (c->receive_max_ms > 0 ? c->receive_max_ms : MSV_CLIENT_RECEIVE_MAX_MS);

    uint64_t sync_id = 0, last_acked = 0;
    const struct msv_conn *sync_conn = NULL;

    *count = 0;
    if (err == MSV_OK) /* what a process stopped before: shown, and its receipt owed */
        err = resume_pending(c, on_message, ctx, count);
    if (err == MSV_OK)
        err = resume_mls(c, on_message, ctx, count);
    if (err == MSV_OK && c->conn == NULL) /* a receipt's retries gave it up */
        err = MSV_ERR_IO;
    if (err == MSV_OK && c->receive_until_synced) {
        Msv__Wire__Frame req = MSV__WIRE__FRAME__INIT;
        Msv__Wire__QueueSync sync = MSV__WIRE__QUEUE_SYNC__INIT;

        req.body_case = MSV__WIRE__FRAME__BODY_QUEUE_SYNC;
        req.queue_sync = &sync;
        err = msv_conn_send_request(c->conn, &req, &sync_id);
        sync_conn = c->conn;
    }
    while (err == MSV_OK) {
        msv_frame *f = NULL;
        uint64_t q;
        int64_t left;

        if (deadline - msv_mono_ms() <= 0)
            return receive_done(c, on_message,
                                ctx); /* the rest waits, unacknowledged, for the next call */
        /* an outbox a connection made under a lock held back goes as soon as no lock is held,
         * not after a receive that may wait long; not while the queue's sync is asked (a
         * receive within a send of it would take that answer for another's). What a receive
         * within it stored (a group's commit read first) and left to be shown is shown now */
        if (sync_id == 0 && c->conn != NULL && c->outbox_deferred) {
            struct msv_refusal why = c->why;

            client_outbox_later(c);
            c->why = why;
            if (!c->outbox_deferred && on_message != NULL && c->receiving_within == 0 &&
                (err = resume_pending(c, on_message, ctx, count)) != MSV_OK)
                break;
        }
        if (c->conn == NULL) /* a receipt's retries gave it up */
            return MSV_ERR_IO;
        left = deadline - msv_mono_ms();
        if (left <= 0) /* the flush took the rest */
            return receive_done(c, on_message, ctx);
        err = msv_conn_recv(c->conn, left < timeout_ms ? (int)left : timeout_ms, &f);
        if (err == MSV_ERR_AGAIN)
            return receive_done(c, on_message, ctx); /* quiet for timeout_ms: done */
        if (err != MSV_OK)
            break;
        if (c->conn != sync_conn)
            sync_id = 0; /* a receipt's retries replaced the connection: its answer is lost */
        if (sync_id != 0 && f->request_id == sync_id) {
            /* all that was queued came before this answer, and was taken; a server that does
             * not know the request leaves the quiet window to end the receive */
            int synced = f->body_case == MSV__WIRE__FRAME__BODY_OK;

            msv_frame_free(f);
            sync_id = 0;
            /* the acknowledgements went without answers: the last one again, answered once
             * the server has committed it (a failure only means redeliveries, recognised) */
            if (synced && last_acked != 0 &&
                msv_request_ack_committed(c->conn, &last_acked, TIMEOUT_MS) != MSV_OK)
                last_acked = 0; /* nothing more to do: the receive is done either way */
            if (synced)
                return receive_done(c, on_message, ctx);
            continue;
        }
        if (f->body_case != MSV__WIRE__FRAME__BODY_DELIVER) {
            /* the server's words as it closes the connection (a newer one of this device
             * took its deliveries, say), told with the failure that follows */
            if (f->request_id == 0 && f->body_case == MSV__WIRE__FRAME__BODY_ERROR &&
                f->error->message.len > 0) {
                c->why.code = 0; /* a connection lost, whatever an earlier answer said */
                snprintf(c->why.message, sizeof(c->why.message), "%.*s",
                         (int)(f->error->message.len < sizeof(c->why.message)
                                   ? f->error->message.len
                                   : sizeof(c->why.message) - 1),
                         (const char *)f->error->message.data);
                (void)client_deliveries_taken(c, msv_conn_ended_why(c->conn));
            }
            msv_frame_free(f);
            continue;
        }
        q = f->deliver->queue_id;
        if (f->deliver->sender_device == 0 && f->deliver->suite != MSV_ENVELOPE_SEALED) {
            take_notice(c, f->deliver, on_message, ctx);
        } else if (f->deliver->suite == MSV_MLS_DELIVERY_SUITE) {
            /* stored before it is acknowledged; a storage failure leaves it unacknowledged */
            err = take_mls(c, f->deliver, on_message, ctx, count);
        } else {
            struct incoming in;

            memset(&in, 0, sizeof(in));
            err = take_message(c, f->deliver, on_message, ctx, &in);
            if (err == MSV_OK)
                (*count)++;
            if (err == MSV_OK && in.classical) /* stored: counted and said */
                classical_read(c, &in);
            /* the message is stored: now that its envelope was read, and what reading it
             * changed in the session (in that order: a crash between the two leaves the
             * session behind, which later messages catch up on) */
            if ((err == MSV_OK || err == MSV_ERR_EXISTS) && in.has_digest &&
                msv_client_db_envelope_read(c->db, in.digest, msv_wall_ms()) != MSV_OK)
                err = MSV_ERR_IO;
            if (err == MSV_OK || err == MSV_ERR_EXISTS)
                err = msv_sessions_commit(c, &in.update) == MSV_OK ? err : MSV_ERR_IO;
            msv_sessions_discard(&in.update);
            /* taken and recorded read (or not taken, and so not read by the session either):
             * the lock, held from asking whether it was read, goes before the receipt's network
             * round, as it did before that question was asked under it */
            if (in.held)
                client_sessions_release(c);
            /* the sender learns it arrived (in the session just stored); should that fail,
             * the outbox sends it later */
            if (err == MSV_OK && in.owes_receipt)
                err = send_receipt(c, in.message_id, in.stored_id, in.sender);
            if (in.sender_proved && (err == MSV_ERR_AUTH || err == MSV_ERR_REPLAY ||
                                     err == MSV_ERR_PARSE || err == MSV_ERR_UNSUPPORTED)) {
                int blocked = msv_client_is_blocked(c, in.sender);
                /* a blocked handle gets no session reset, and nothing is recorded */
                int shown = !blocked && err == MSV_ERR_AUTH && in.session_message &&
                            session_broken(c, &in, on_message, ctx);

                if (blocked
                        ? client_drop_blocked(c, in.sender, 0, on_message, ctx) != MSV_OK
                        : record_unreadable(c, f->deliver, &in, shown, on_message, ctx) != MSV_OK)
                    err = MSV_ERR_IO;
            }
            /* whose named sender the directory does not list: counted (and said, naming
             * nobody, with the sealed envelopes that could not be opened) before it goes */
            if (in.sender_unlisted && !in.sender_proved &&
                client_counter_bump(c, CLIENT_SENDERS_UNCHECKED) != MSV_OK)
                err = MSV_ERR_IO;
            /* a redelivery, or a message that is not authentic or recorded as unreadable:
             * acknowledged and dropped, so that the relay does not offer it forever; storage
             * failures are not acknowledged */
            if (err == MSV_ERR_EXISTS || err == MSV_ERR_AUTH || err == MSV_ERR_PARSE ||
                err == MSV_ERR_NOT_FOUND || err == MSV_ERR_UNSUPPORTED || err == MSV_ERR_REPLAY)
                err = MSV_OK;
        }
        msv_frame_free(f);
        /* a receipt's retries may have given the connection up: the message stays
         * unacknowledged, and its redelivery is recognised */
        if (err == MSV_OK && c->conn == NULL)
            err = MSV_ERR_IO;
        if (err == MSV_OK)
            err = msv_request_ack(c->conn, &q, 1);
        if (err == MSV_OK)
            last_acked = q;
        /* another program took the connection as a receipt went (which went on one for
         * requests alone, where the acknowledgement went too): nothing more comes here */
        if (err == MSV_OK && c->deliveries_taken != NULL)
            return client_deliveries_gone(c);
    }
    return err;
}

msv_err msv_client_receive(struct msv_client *c, int timeout_ms,
                           void (*on_message)(void *ctx, const struct msv_incoming *in), void *ctx,
                           size_t *count)
{
    void (*outer)(void *, const struct msv_incoming *) = c->receive_tells;
    void *outer_ctx = c->receive_ctx;
    msv_err err;

    /* another program of the device took its deliveries from this one: not taken back */
    if (c->deliveries_taken != NULL) {
        *count = 0;
        return client_deliveries_gone(c);
    }
    /* its connections take deliveries (one for requests alone is replaced by one that does) */
    c->receiving++;
    c->receive_tells = on_message;
    c->receive_ctx = ctx;
    err = receive_on(c, timeout_ms, on_message, ctx, count);
    c->receive_tells = outer;
    c->receive_ctx = outer_ctx;
    c->receiving--;
    return err;
}
