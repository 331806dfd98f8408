/*
 * Restoring backups (client/backup.h) with a fixed key. The first input byte
 * picks what the rest is: odd, a whole backup file; even, the archive inside
 * one, which this target encrypts as a backup writer would, so that the
 * record reader sees arbitrary archives. Whatever it is, restoring writes
 * only where it may (the scratch directory) and refuses with a reason.
 */
#define _GNU_SOURCE /* fmemopen */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "client/backup.h"
#include "common.h"

static const uint8_t key[32] = {1,  2,  3,  4,  5,  6,  7,  8,  9,  10, 11, 12, 13, 14, 15, 16,
                                17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static char scratch[64];
    char dir[96], why[256] = "";
    uint8_t *file = NULL;
    size_t file_len = 0;
    FILE *in;
    msv_err err;

    if (scratch[0] == '\0') {
        snprintf(scratch, sizeof(scratch), "/tmp/msv-fuzz-backup-%d", (int)getpid());
        if ((mkdir(scratch, 0700) != 0 && access(scratch, F_OK) != 0) || msv_init() != MSV_OK)
            abort();
    }
    if (size < 1)
        return 0;
    if (data[0] & 1) {
        file = malloc(size);
        if (file == NULL)
            abort();
        memcpy(file, data + 1, size - 1);
        file_len = size - 1;
    } else if (msv_backup_seal(key, data + 1, size - 1, &file, &file_len) != MSV_OK) {
        abort();
    }
    snprintf(dir, sizeof(dir), "%s/d", scratch);
    if (mkdir(dir, 0700) != 0)
        abort();
    in = file_len > 0 ? fmemopen(file, file_len, "rb") : fopen("/dev/null", "rb");
    if (in == NULL)
        abort();
    err = msv_backup_unpack(in, NULL, key, dir, NULL, why, sizeof(why));
    fclose(in);
    if (err != MSV_OK && why[0] == '\0')
        abort(); /* every refusal says why */
    if (err == MSV_OK) {
        char db[128];

        snprintf(db, sizeof(db), "%s/state.db", dir);
        if (access(db, F_OK) != 0)
            abort();
    }
    msv_backup_discard(dir);
    if (access(dir, F_OK) == 0)
        abort(); /* only the scratch directory was written */
    free(file);
    return 0;
}
