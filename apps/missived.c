/*
 * missived: Missive's identity directory, push relay and attachment store on
 * one TLS 1.3 port, with /health and /metrics on a local HTTP port.
 */
#include <errno.h>
#include <getopt.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "missive/util.h"
#include "server/config.h"
#include "server/log.h"
#include "server/server.h"
#include "store/store.h"

static void usage(FILE *f)
{
    fprintf(f, "usage: missived [--config FILE] [--data-dir DIR] [--check-config]\n"
               "\n"
               "Runs the Missive server: identity directory, push relay with offline queue, and\n"
               "attachment store on one TLS 1.3 port (default 127.0.0.1:7443), with /health and\n"
               "/metrics on a local HTTP port (default 127.0.0.1:7480). Data, the database and a\n"
               "self-signed certificate (created on first start; clients pin its fingerprint)\n"
               "live in the data directory (default ./missive-data).\n"
               "\n"
               "options:\n"
               "  --config FILE    read settings from an INI file (docs/missived.conf.example)\n"
               "  --data-dir DIR   the data directory (overrides the file)\n"
               "  --check-config   check the configuration, print it in full, and exit\n"
               "  --help           this text\n"
               "\n"
               "Every setting can also come from the environment as MISSIVED_<SECTION>_<KEY>,\n"
               "e.g. MISSIVED_SERVER_LISTEN_PORT=8443.\n"
               "signals: SIGTERM/SIGINT stop after committing accepted messages; SIGHUP reloads\n"
               "limits and the log level, and reopens the log file ([log] file) after rotation.\n"
               "Under systemd (Type=notify) it reports READY, RELOADING and STOPPING.\n"
               "exit status: 0 clean stop, 1 runtime error, 2 usage or configuration error\n");
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'},
        {"data-dir", required_argument, NULL, 'd'},
        {"check-config", no_argument, NULL, 'k'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *config_path = NULL, *data_dir = NULL;
    struct msv_server *server = NULL;
    struct msv_config cfg;
    char err[1024];
    int c, check_only = 0;
    msv_err e;

    /*
     * TLS buffers of idle connections are given back (SSL_MODE_RELEASE_BUFFERS)
     * and taken again for every message: 16 MiB kept at the heap's top spares
     * the kernel a trim and the page faults that refill it each time.
     */
    (void)mallopt(M_TRIM_THRESHOLD, 16 << 20);
    (void)mallopt(M_TOP_PAD, 1 << 20);
    msv_store_sqlite_tune();
    opterr = 0;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 'c':
            config_path = optarg;
            break;
        case 'd':
            data_dir = optarg;
            break;
        case 'k':
            check_only = 1;
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            fprintf(stderr, "missived: unknown option or missing argument\n");
            usage(stderr);
            return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "missived: unexpected argument '%s'\n", argv[optind]);
        return 2;
    }
    msv_config_defaults(&cfg);
    if (msv_config_load(&cfg, config_path, err, sizeof(err)) != MSV_OK) {
        fprintf(stderr, "missived: %s\n", err);
        return 2;
    }
    if (data_dir != NULL) {
        if (strlen(data_dir) >= sizeof(cfg.data_dir)) {
            fprintf(stderr, "missived: --data-dir is too long\n");
            return 2;
        }
        snprintf(cfg.data_dir, sizeof(cfg.data_dir), "%s", data_dir);
    }
    if (check_only) {
        msv_config_print(&cfg, stdout);
        return 0;
    }
    umask(077); /* the database, keys and attachments are for this user only */
    if (cfg.log_file[0] != '\0' && msv_log_open(cfg.log_file) != 0) {
        fprintf(stderr, "missived: cannot open the log file %s: %s\n", cfg.log_file,
                strerror(errno));
        return 1;
    }
    if (msv_init_many_connections() != MSV_OK) {
        fprintf(stderr, "missived: no usable random source\n");
        return 1;
    }
    e = msv_server_new(&cfg, config_path, &server, err, sizeof(err));
    if (e != MSV_OK) {
        fprintf(stderr, "missived: %s\n", err[0] ? err : msv_strerror(e));
        return 1;
    }
    e = msv_server_run(server);
    msv_server_free(server);
    if (e != MSV_OK) {
        fprintf(stderr, "missived: %s\n", msv_strerror(e));
        return 1;
    }
    return 0;
}
