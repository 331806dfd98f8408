/*
 * Encrypted backups of an account directory (docs/missive.md, "Backups").
 *
 * The key comes from the user's passphrase through Argon2id with the
 * parameters and salt written in the file's header; nothing the server holds
 * can open a backup. The archive holds a snapshot of the account's state
 * database (device keys as they are stored, contacts, history, groups,
 * prekeys) without its sessions, and the attachments/ directory.
 *
 *   file   = "MSVBACK1" || u32be opslimit || u32be memlimit (KiB) || salt[16]
 *            || secretstream header[24] || chunk...
 *   chunk  = u32be length || XChaCha20-Poly1305 secretstream message of at
 *            most 64 KiB of archive, additional data: the 56 bytes before the
 *            first chunk; the last one is tagged FINAL
 *   archive = record... || 0x00
 *   record = 0x01 || u16be name length || name || u64be size || bytes
 *
 * Names are "state.db" or "attachments/NAME" (NAME without '/', not "." or
 * ".."). A truncated, reordered, altered or extended file is refused.
 */
#ifndef MSV_CLIENT_BACKUP_H
#define MSV_CLIENT_BACKUP_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "missive/error.h"
#include "store/client_db.h"

#define MSV_BACKUP_OPS_DEFAULT 3
#define MSV_BACKUP_MEM_DEFAULT_KIB (256u * 1024)
/* What a backup may ask of the machine restoring it. */
#define MSV_BACKUP_OPS_MAX 32
#define MSV_BACKUP_MEM_MIN_KIB 8u
#define MSV_BACKUP_MEM_MAX_KIB (4u * 1024 * 1024)
/* What a new backup must ask at the least: guessing its passphrase stays dear. */
#define MSV_BACKUP_MEM_WRITE_MIN_KIB (64u * 1024)
#define MSV_BACKUP_PASSPHRASE_MIN 12

/*
 * 1 if passphrase has MSV_BACKUP_PASSPHRASE_MIN characters (UTF-8 code
 * points, not bytes) or more: what a new backup needs. A restore takes any
 * passphrase, since older backups were made under a lower minimum.
 */
int msv_backup_passphrase_is_long_enough(const char *passphrase);

struct msv_backup_kdf {
    uint32_t opslimit;
    uint32_t memlimit_kib;
};

struct msv_backup_progress {
    void (*fn)(void *ctx, uint64_t done, uint64_t total);
    void *ctx;
};

/*
 * Writes the account in account_dir (whose state database db is open) to
 * path, which must not exist yet: the file appears whole or not at all.
 * why (may be NULL) says what failed.
 */
MSV_MUST_CHECK msv_err msv_backup_write(const char *account_dir, struct msv_client_db *db,
                                        const char *path, const char *passphrase,
                                        const struct msv_backup_kdf *kdf,
                                        const struct msv_backup_progress *progress, char *why,
                                        size_t why_len);

/*
 * The same, under key (32 random bytes, which only the linked device gets)
 * rather than a passphrase's, and without this device's keys: the history a
 * device linked by QR code imports (docs/missive.md, "Linking a device by
 * QR code"). msv_backup_unpack() reads it with key.
 */
MSV_MUST_CHECK msv_err msv_backup_write_for_link(const char *account_dir, struct msv_client_db *db,
                                                 const char *path, const uint8_t key[32],
                                                 const struct msv_backup_progress *progress,
                                                 char *why, size_t why_len);

/*
 * Reads a backup from in into dir (an empty directory), telling progress
 * (may be NULL) how much of the file was read. key (32 bytes, may be NULL)
 * replaces the passphrase's key (for tests and fuzzing). A wrong
 * passphrase is MSV_ERR_AUTH before anything is written; on any failure
 * dir may hold part of the archive, for the caller to remove with
 * msv_backup_discard().
 */
MSV_MUST_CHECK msv_err msv_backup_unpack(FILE *in, const char *passphrase, const uint8_t *key,
                                         const char *dir,
                                         const struct msv_backup_progress *progress, char *why,
                                         size_t why_len);

/*
 * archive (records as above, with its end record or not) as a backup file
 * under key, the way msv_backup_write() streams it; for tests and fuzzing,
 * which forge archives. *out: caller frees.
 */
MSV_MUST_CHECK msv_err msv_backup_seal(const uint8_t key[32], const uint8_t *archive, size_t len,
                                       uint8_t **out, size_t *out_len);

/* Removes a directory msv_backup_unpack() wrote into (and dir itself). */
void msv_backup_discard(const char *dir);

#endif
