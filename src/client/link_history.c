/*
 * The history that comes with a linked device, in the background
 * (docs/missive.md, "Linking a device by QR code"; docs/crypto.md, "Linking").
 *
 * The approving device names an archive in the provisioning message (16
 * random bytes) and gives its key; the new device is linked and usable at
 * once. Then the approving device writes its history as a backup under a key
 * derived from that one, uploads it to the attachment store and sends the new
 * device a LINK_HISTORY payload naming the archive and where it lies (or why
 * none comes). Each side keeps what it owes or awaits in its database until
 * done, so that a process stopped at any point resumes: the approver's
 * "link:history-out:ID" (sent again by msv_client_link_resume_send), the new
 * device's "link:history-pending" (imported by msv_client_link_resume_history).
 */
#define _GNU_SOURCE /* fmemopen */
#include "client/link.h"
#include "client/backup.h"
#include "client/internal.h"

#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sodium.h>

#include "crypto/internal.h"
#include "missive/payload.h"
#include "missive/util.h"

#define HISTORY_FILE "link-history.msvb"
#define HISTORY_DIR "link-history"
#define HISTORY_PENDING "link:history-pending"
#define HISTORY_OUT "link:history-out:"
#define ARCHIVE_ID_LEN 16

/* The archive's key and the attachment store's key, both from the one the message carries. */
static msv_err history_keys(const uint8_t key[32], uint8_t archive[32], uint8_t blob[32])
{
    msv_err err = msv_hkdf_sha256(key, 32, NULL, 0, (const uint8_t *)"MSV-link-history-archive", 24,
                                  archive, 32);

    if (err == MSV_OK)
        err = msv_hkdf_sha256(key, 32, NULL, 0, (const uint8_t *)"MSV-link-history-blob", 21, blob,
                              32);
    return err;
}

/* The whole file at path, if it has at most max bytes (*out: caller frees). */
static msv_err read_all(const char *path, size_t max, uint8_t **out, size_t *len)
{
    FILE *f = fopen(path, "rb");
    struct stat sb;
    msv_err err = MSV_OK;

    if (f == NULL)
        return MSV_ERR_IO;
    if (fstat(fileno(f), &sb) != 0 || sb.st_size <= 0)
        err = MSV_ERR_IO;
    else if ((uint64_t)sb.st_size > max)
        err = MSV_ERR_TOO_BIG;
    else if ((*out = malloc((size_t)sb.st_size)) == NULL)
        err = MSV_ERR_NOMEM;
    else if (fread(*out, 1, (size_t)sb.st_size, f) != (size_t)sb.st_size) {
        free(*out);
        *out = NULL;
        err = MSV_ERR_IO;
    }
    if (err == MSV_OK)
        *len = (size_t)sb.st_size;
    fclose(f);
    return err;
}

/* The files of the history into this device's attachments/, none over one it has. */
static msv_err take_files(struct msv_client *c, const char *from_dir)
{
    char from[1600], to[1600], dir[1300];
    struct dirent *e;
    DIR *d;

    snprintf(dir, sizeof(dir), "%s/attachments", from_dir);
    if ((d = opendir(dir)) == NULL)
        return errno == ENOENT ? MSV_OK : MSV_ERR_IO;
    snprintf(to, sizeof(to), "%s/attachments", c->dir);
    if (mkdir(to, 0700) != 0 && errno != EEXIST) {
        closedir(d);
        return MSV_ERR_IO;
    }
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        snprintf(from, sizeof(from), "%s/%s", dir, e->d_name);
        snprintf(to, sizeof(to), "%s/attachments/%s", c->dir, e->d_name);
        if (link(from, to) != 0 && errno != EEXIST) { /* never over a file, or through a link */
            closedir(d);
            return MSV_ERR_IO;
        }
    }
    closedir(d);
    return MSV_OK;
}

/* Downloads, checks, unpacks and imports the history p names. */
static msv_err history_import(struct msv_client *c, const Msv__Wire__Provision *p)
{
    struct msv_attachment_ref ref = {0};
    char uri[81], dir[1200], db[1300];
    uint8_t archive_key[32], *data = NULL;
    size_t len = 0;
    FILE *in = NULL;
    msv_err err = p->history_blob.len < sizeof(uri) ? MSV_OK : MSV_ERR_PARSE;

    if (err == MSV_OK) {
        memcpy(uri, p->history_blob.data, p->history_blob.len);
        uri[p->history_blob.len] = '\0';
        ref.uri = uri;
        memcpy(ref.sha256, p->history_sha256.data, 32);
        ref.size = p->history_size;
        err = history_keys(p->history_key.data, archive_key, ref.key);
    }
    if (err == MSV_OK && p->history_size > MSV_ATTACHMENT_MAX)
        err = MSV_ERR_TOO_BIG;
    if (err == MSV_OK &&
        (err = client_fetch_blob(c, &ref, (size_t)p->history_size, &data, &len)) == MSV_ERR_AUTH)
        snprintf(c->why.message, sizeof(c->why.message),
                 "the archive is not the one device %" PRIu64 " sent (changed on the server?)",
                 p->approver_id);
    snprintf(dir, sizeof(dir), "%s/" HISTORY_DIR, c->dir);
    msv_backup_discard(dir); /* left by a try that was stopped */
    if (err == MSV_OK && mkdir(dir, 0700) != 0)
        err = MSV_ERR_IO;
    if (err == MSV_OK && (in = fmemopen(data, len, "rb")) == NULL)
        err = MSV_ERR_NOMEM;
    if (err == MSV_OK)
        err = msv_backup_unpack(in, NULL, archive_key, dir, NULL, c->why.message,
                                sizeof(c->why.message));
    if (in != NULL)
        fclose(in);
    snprintf(db, sizeof(db), "%s/state.db", dir);
    if (err == MSV_OK)
        err = msv_client_db_import_history(c->db, db, c->dir);
    if (err == MSV_OK)
        err = take_files(c, dir);
    msv_backup_discard(dir);
    sodium_memzero(archive_key, sizeof(archive_key));
    sodium_memzero(ref.key, sizeof(ref.key));
    free(data);
    return err;
}

/* ---- the new device: what it awaits --------------------------------------------------- */

/* p packed under key (a record of what is owed or awaited); *out secret, freed here. */
static msv_err record_put(struct msv_client *c, const char *key, const Msv__Wire__Provision *p)
{
    size_t len = msv__wire__provision__get_packed_size(p);
    uint8_t *packed = malloc(len ? len : 1);
    msv_err err;

    if (packed == NULL)
        return MSV_ERR_NOMEM;
    msv__wire__provision__pack(p, packed);
    err = msv_client_db_set(c->db, key, packed, len);
    msv_secret_free(packed, len);
    return err;
}

/* The record under key (caller frees with msv__wire__provision__free_unpacked); NOT_FOUND. */
static msv_err record_get(struct msv_client *c, const char *key, Msv__Wire__Provision **out)
{
    uint8_t *v = NULL;
    size_t len = 0;
    msv_err err = msv_client_db_get(c->db, key, &v, &len);

    if (err != MSV_OK)
        return err;
    *out = msv__wire__provision__unpack(NULL, len, v);
    msv_secret_free(v, len);
    if (*out == NULL)
        return MSV_ERR_PARSE;
    if ((*out)->history_key.len != 32 ||
        ((*out)->history_archive.len != 0 && (*out)->history_archive.len != ARCHIVE_ID_LEN)) {
        msv__wire__provision__free_unpacked(*out, NULL);
        *out = NULL;
        return MSV_ERR_PARSE;
    }
    return MSV_OK;
}

msv_err msv_link_history_pending_save(struct msv_client *c, const Msv__Wire__Provision *p)
{
    Msv__Wire__Provision ref = MSV__WIRE__PROVISION__INIT;

    ref.history_blob = p->history_blob;
    ref.history_key = p->history_key;
    ref.history_size = p->history_size;
    ref.history_sha256 = p->history_sha256;
    ref.history_archive = p->history_archive;
    ref.approver_id = p->approver_id;
    return record_put(c, HISTORY_PENDING, &ref);
}

msv_err msv_link_history_take(struct msv_client *c, const Msv__Wire__Provision *p)
{
    msv_err err = history_import(c, p);

    if (err == MSV_OK)
        err = msv_client_db_unset(c->db, HISTORY_PENDING);
    return err;
}

msv_err msv_client_link_resume_history(struct msv_client *c, uint64_t *size)
{
    Msv__Wire__Provision *p = NULL;
    msv_err err;

    memset(&c->why, 0, sizeof(c->why));
    err = record_get(c, HISTORY_PENDING, &p);
    if (err == MSV_OK && p->history_blob.len == 0) { /* announced, not sent yet */
        snprintf(c->why.message, sizeof(c->why.message),
                 "the history has not come yet: it is imported when it comes (missive receive); "
                 "device %" PRIu64
                 " sends it again with: missive devices add --resume-history %" PRIu64,
                 p->approver_id, c->device_id);
        err = MSV_ERR_AGAIN;
    }
    if (err == MSV_OK)
        err = p->history_sha256.len == 32 && p->history_size > 0 ? MSV_OK : MSV_ERR_PARSE;
    if (err == MSV_OK)
        err = msv_client_connect(c);
    if (err == MSV_OK)
        err = msv_link_history_take(c, p);
    if (err == MSV_OK)
        *size = p->history_size;
    if (p != NULL)
        msv__wire__provision__free_unpacked(p, NULL);
    return err;
}

/* ---- the new device: the archive comes ---------------------------------------------- */

struct import_watch {
    void (*on_message)(void *, const struct msv_incoming *);
    void *ctx;
    void (*prev)(void *, uint64_t, uint64_t);
    void *prev_ctx;
    uint64_t device;
    uint64_t last; /* tenths told */
};

static void tell(void (*on_message)(void *, const struct msv_incoming *), void *ctx,
                 const char *status, uint64_t device, uint64_t done, uint64_t total,
                 const char *notice)
{
    struct msv_incoming in = {.kind = MSV_INCOMING_LINK_HISTORY,
                              .status = status,
                              .notice = notice,
                              .device_id = device,
                              .done = done,
                              .total = total};

    if (on_message != NULL)
        on_message(ctx, &in);
}

/* The download's progress, told in tenths besides what the device showed already. */
static void import_progress(void *ctx, uint64_t done, uint64_t total)
{
    struct import_watch *w = ctx;
    uint64_t tenth = total > 0 ? done * 10 / total : 0;
    char notice[160];

    if (w->prev != NULL)
        w->prev(w->prev_ctx, done, total);
    if (tenth == w->last)
        return;
    w->last = tenth;
    snprintf(notice, sizeof(notice), "importing the history: %" PRIu64 " of %" PRIu64 " KiB",
             done / 1024, total / 1024);
    tell(w->on_message, w->ctx, "progress", w->device, done, total, notice);
}

/* Whether a (one attachment) is the archive p awaits: made under p's key, within the limit. */
static int archive_is_ours(const Msv__Wire__Provision *p, const struct msv_attachment_ref *a)
{
    uint8_t archive_key[32], blob_key[32];
    int ok = history_keys(p->history_key.data, archive_key, blob_key) == MSV_OK &&
             sodium_memcmp(blob_key, a->key, 32) == 0;

    sodium_memzero(archive_key, sizeof(archive_key));
    sodium_memzero(blob_key, sizeof(blob_key));
    return ok && a->size > 0 && a->size <= MSV_ATTACHMENT_MAX && strlen(a->uri) <= 80;
}

/* Downloads and imports the archive p now names, telling on_message how it goes. */
static void import_now(struct msv_client *c, const Msv__Wire__Provision *p,
                       void (*on_message)(void *, const struct msv_incoming *), void *ctx)
{
    struct import_watch w = {on_message, ctx, c->on_download, c->ctx, p->approver_id, 0};
    char notice[600];
    msv_err err;

    memset(&c->why, 0, sizeof(c->why));
    snprintf(notice, sizeof(notice),
             "importing the history from device %" PRIu64 " (%" PRIu64 " KiB)", p->approver_id,
             p->history_size / 1024);
    tell(on_message, ctx, "progress", p->approver_id, 0, p->history_size, notice);
    c->on_download = import_progress;
    c->ctx = &w;
    err = msv_link_history_take(c, p);
    c->on_download = w.prev;
    c->ctx = w.prev_ctx;
    if (err == MSV_OK) {
        snprintf(notice, sizeof(notice),
                 "history imported from device %" PRIu64 " (%" PRIu64 " bytes)", p->approver_id,
                 p->history_size);
        tell(on_message, ctx, "done", p->approver_id, p->history_size, p->history_size, notice);
        return;
    }
    snprintf(notice, sizeof(notice),
             "the history from device %" PRIu64 " was not imported: %.300s; try again with: "
             "missive link %.200s --resume-history",
             p->approver_id, c->why.message[0] != '\0' ? c->why.message : msv_strerror(err),
             c->handle);
    tell(on_message, ctx, "failed", p->approver_id, 0, p->history_size, notice);
}

msv_err client_take_link_history(struct msv_client *c, const char *sender, uint64_t device,
                                 const struct msv_payload *in,
                                 void (*on_message)(void *, const struct msv_incoming *), void *ctx)
{
    Msv__Wire__Provision *p = NULL;
    char notice[600];
    msv_err err;

    /* only this account's device that linked this one, for the archive it announced: one
     * send reaches all of the account's devices, and the others await nothing */
    if (!client_is_own_handle(c, sender))
        return MSV_OK;
    err = record_get(c, HISTORY_PENDING, &p);
    if (err == MSV_ERR_NOT_FOUND || err == MSV_ERR_PARSE)
        return MSV_OK;
    if (err != MSV_OK)
        return err;
    /* not the archive awaited, or one imported already (forgotten then): a replay. While it
     * is awaited, a reference from the approver (delivered again after an import that was
     * stopped, sent again after an upload that was) is imported, only what is not held */
    if (p->history_archive.len != ARCHIVE_ID_LEN || p->approver_id != device ||
        sodium_memcmp(p->history_archive.data, in->target_id, ARCHIVE_ID_LEN) != 0) {
        msv__wire__provision__free_unpacked(p, NULL);
        return MSV_OK;
    }
    if (in->attachment_count == 0) { /* none comes, and why */
        snprintf(notice, sizeof(notice), "device %" PRIu64 " sends no history: %.400s", device,
                 in->text);
        err = msv_client_db_unset(c->db, HISTORY_PENDING);
        if (err == MSV_OK)
            tell(on_message, ctx, "failed", device, 0, 0, notice);
    } else if (!archive_is_ours(p, &in->attachments[0])) {
        snprintf(notice, sizeof(notice),
                 "a history archive from device %" PRIu64 " was refused: it is not made "
                 "under this link's key, or too big",
                 device);
        tell(on_message, ctx, "failed", device, 0, 0, notice);
    } else {
        const struct msv_attachment_ref *a = &in->attachments[0];
        ProtobufCBinaryData blob = p->history_blob, sha256 = p->history_sha256;

        p->history_blob = (ProtobufCBinaryData){strlen(a->uri), (uint8_t *)a->uri};
        p->history_size = a->size;
        p->history_sha256 = (ProtobufCBinaryData){32, (uint8_t *)a->sha256};
        err = msv_link_history_pending_save(c, p);
        if (err == MSV_OK)
            import_now(c, p, on_message, ctx);
        /* the unpacked record frees its own fields, not these */
        p->history_blob = blob;
        p->history_sha256 = sha256;
    }
    msv__wire__provision__free_unpacked(p, NULL);
    return err;
}

/* ---- the approving device ------------------------------------------------------------ */

static void out_key(uint64_t device, char key[48])
{
    snprintf(key, 48, HISTORY_OUT "%" PRIu64, device);
}

msv_err msv_link_history_room(struct msv_client *c)
{
    struct msv_setting *s = NULL;
    size_t n = 0;
    msv_err err = msv_client_db_settings(c->db, HISTORY_OUT, MSV_LINK_HISTORY_OWED_MAX, &s, &n);

    msv_settings_free(s, n);
    if (err == MSV_OK && n >= MSV_LINK_HISTORY_OWED_MAX) {
        snprintf(c->why.message, sizeof(c->why.message),
                 "%zu histories wait to be sent to linked devices: send them first (missive "
                 "devices add --resume-history ID), or add this device with --no-history",
                 n);
        err = MSV_ERR_TOO_BIG;
    }
    return err;
}

msv_err msv_link_history_owe(struct msv_client *c, uint64_t device, uint8_t key[32],
                             uint8_t archive[16])
{
    Msv__Wire__Provision rec = MSV__WIRE__PROVISION__INIT;
    char k[48];

    msv_random_bytes(key, 32);
    msv_random_bytes(archive, ARCHIVE_ID_LEN);
    rec.device_id = device;
    rec.history_key = (ProtobufCBinaryData){32, key};
    rec.history_archive = (ProtobufCBinaryData){ARCHIVE_ID_LEN, archive};
    out_key(device, k);
    return record_put(c, k, &rec);
}

msv_err msv_link_history_forget(struct msv_client *c, uint64_t device)
{
    char k[48];

    out_key(device, k);
    return msv_client_db_unset(c->db, k);
}

/*
 * This device's history and files as a backup under key's archive key,
 * without its keys, uploaded to the attachment store: a's reference.
 */
static msv_err archive_upload(struct msv_client *c, const uint8_t key[32],
                              const struct msv_link_add *how, struct msv_attachment_ref *a,
                              char uri[81])
{
    struct msv_attachment_digest d;
    char path[1200];
    uint8_t archive_key[32], *data = NULL;
    size_t len = 0;
    msv_err err = history_keys(key, archive_key, a->key);

    snprintf(path, sizeof(path), "%s/" HISTORY_FILE, c->dir);
    unlink(path); /* left by a try that was stopped */
    if (err == MSV_OK)
        err = msv_backup_write_for_link(c->dir, c->db, path, archive_key, NULL, c->why.message,
                                        sizeof(c->why.message));
    if (err == MSV_OK && (err = read_all(path, MSV_ATTACHMENT_MAX, &data, &len)) == MSV_ERR_TOO_BIG)
        snprintf(c->why.message, sizeof(c->why.message),
                 "the history is over the attachment store's limit (%u MiB): add the device with "
                 "--no-history",
                 (unsigned)(MSV_ATTACHMENT_MAX >> 20));
    unlink(path);
    if (err == MSV_OK)
        tell(how->on_event, how->ctx, "progress", 0, 0, len, "uploading the history");
    if (err == MSV_OK && (err = client_upload_blob(c, a->key, data, len, how->upload_progress, &d,
                                                   uri, 81)) == MSV_ERR_TOO_BIG) {
        char server[200];

        snprintf(server, sizeof(server), "%.190s", c->why.message);
        snprintf(c->why.message, sizeof(c->why.message),
                 "the history (%zu bytes) is over the attachment store's limit%s%.190s", len,
                 server[0] != '\0' ? ": " : "", server);
    }
    if (err == MSV_OK) {
        a->uri = uri;
        a->size = len; /* CTR: the ciphertext is as long */
        memcpy(a->sha256, d.sha256, 32);
        memcpy(a->sha1, d.sha1, 20);
        a->name = "history";
        tell(how->on_event, how->ctx, "progress", 0, len, len, "history uploaded");
    }
    sodium_memzero(archive_key, sizeof(archive_key));
    free(data);
    return err;
}

/* The LINK_HISTORY payload to this account's devices: a (or why none comes, a NULL). */
static msv_err send_archive(struct msv_client *c, const uint8_t archive[16],
                            struct msv_attachment_ref *a, const char *why)
{
    struct msv_payload p = {.kind = MSV_KIND_LINK_HISTORY, .has_target = true};
    const char *self = c->handle;
    uint8_t id[MSV_ID_LEN];

    memcpy(p.target_id, archive, ARCHIVE_ID_LEN);
    if (a != NULL) {
        p.attachments = a;
        p.attachment_count = 1;
    } else {
        p.text = (char *)why;
    }
    return client_send_payload(c, &self, 1, &p, NULL, NULL, NULL, 0, NULL, id);
}

msv_err msv_client_link_resume_send(struct msv_client *c, uint64_t device,
                                    const struct msv_link_add *how)
{
    Msv__Wire__Provision *rec = NULL;
    struct msv_attachment_ref a = {0};
    char k[48], uri[81], notice[700];
    msv_err err;

    memset(&c->why, 0, sizeof(c->why));
    out_key(device, k);
    err = record_get(c, k, &rec);
    if (err == MSV_OK && rec->history_archive.len != ARCHIVE_ID_LEN)
        err = MSV_ERR_PARSE;
    if (err == MSV_OK)
        err = msv_client_connect(c);
    if (err == MSV_OK)
        err = archive_upload(c, rec->history_key.data, how, &a, uri);
    if (err == MSV_ERR_TOO_BIG) { /* it never fits: the new device is told, and nothing owed */
        (void)send_archive(c, rec->history_archive.data, NULL, c->why.message);
        if (msv_link_history_forget(c, device) != MSV_OK)
            err = MSV_ERR_IO;
    } else if (err == MSV_OK) {
        err = send_archive(c, rec->history_archive.data, &a, NULL);
        /* a relay out of reach leaves it in the outbox, which sends it later */
        if (err == MSV_OK || err == MSV_ERR_IO)
            err = msv_link_history_forget(c, device);
    }
    if (err == MSV_OK) {
        snprintf(notice, sizeof(notice), "history sent to device %" PRIu64 " (%" PRIu64 " bytes)",
                 device, a.size);
        tell(how->on_event, how->ctx, "done", device, a.size, a.size, notice);
    } else if (err != MSV_ERR_NOT_FOUND) {
        snprintf(notice, sizeof(notice), "the history for device %" PRIu64 " was not sent: %.400s",
                 device, c->why.message[0] != '\0' ? c->why.message : msv_strerror(err));
        tell(how->on_event, how->ctx, "failed", device, 0, 0, notice);
    }
    sodium_memzero(a.key, sizeof(a.key));
    if (rec != NULL)
        msv__wire__provision__free_unpacked(rec, NULL);
    return err;
}
