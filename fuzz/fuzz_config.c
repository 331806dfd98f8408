/*
 * The configuration parser (libinih and the option table) on any file
 * content: it must accept or refuse with a message, never crash, and what it
 * accepts must print and parse back to the same settings.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "server/config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static char path[64], again[64];
    struct msv_config c, d;
    char err[1024];
    FILE *f;

    if (path[0] == '\0') {
        snprintf(path, sizeof(path), "/tmp/msv-fuzz-config-%d.ini", (int)getpid());
        snprintf(again, sizeof(again), "/tmp/msv-fuzz-config-%d.out", (int)getpid());
    }
    f = fopen(path, "wb");
    if (f == NULL || fwrite(data, 1, size, f) != size || fclose(f) != 0)
        abort();
    msv_config_defaults(&c);
    if (msv_config_load(&c, path, err, sizeof(err)) != MSV_OK) {
        if (err[0] == '\0')
            abort(); /* every refusal says why */
        return 0;
    }
    f = fopen(again, "w");
    if (f == NULL)
        abort();
    msv_config_print(&c, f);
    if (fclose(f) != 0)
        abort();
    msv_config_defaults(&d);
    if (msv_config_load(&d, again, err, sizeof(err)) != MSV_OK)
        abort();
    if (strcmp(c.data_dir, d.data_dir) != 0 || c.listen_port != d.listen_port ||
        c.payload_limit != d.payload_limit || c.workers != d.workers)
        abort();
    return 0;
}
