/*
 * For the cluster tests: connects as the device of account directory DIR the
 * way the plain commands do (for requests alone, docs/wire.md), prints
 * "connected", then waits up to SECONDS for the server to close the
 * connection: "closed" and exit status 0 if it did, "open" and 1 if not.
 * With PORT, to that port of the device's server (another node of its cluster); with
 * "deliveries" after it, a connection that takes deliveries (as a receive's; what is
 * pushed on it is read and left unacknowledged, so it comes again), which does not wait for
 * the device's other such connections.
 * Usage: hold_conn DIR SECONDS [PORT [deliveries]] (the keys' passphrase in
 * MISSIVE_PASSPHRASE, if any)
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "client/client.h"
#include "client/conn.h"
#include "missive/util.h"

int main(int argc, char **argv)
{
    struct msv_client *c = NULL;
    msv_frame *f = NULL;
    char *end = NULL;
    long seconds = argc >= 3 ? strtol(argv[2], &end, 10) : 0, port = 0;
    int deliveries = argc == 5 && strcmp(argv[4], "deliveries") == 0;
    int64_t until;
    msv_err err;

    if (argc < 3 || argc > 5 || (argc == 5 && !deliveries) || end == NULL || *end != '\0' ||
        seconds <= 0 ||
        (argc >= 4 && ((port = strtol(argv[3], &end, 10)) <= 0 || port > 65535 || *end != '\0'))) {
        fprintf(stderr, "usage: hold_conn DIR SECONDS [PORT [deliveries]]\n");
        return 2;
    }
    if (msv_init() != MSV_OK)
        return 2;
    if (msv_client_open(argv[1], getenv("MISSIVE_PASSPHRASE"), &c) == MSV_OK && argc >= 4) {
        c->port = (uint16_t)port;
        c->others[0] = '\0';
        c->preferred = 0;
    }
    if (c != NULL)
        c->takes_deliveries = deliveries;
    /* several of these hold one device's connections on several nodes at once, as connections
     * that died unseen would: each goes past the deliveries lock the others hold, its file made
     * again (docs/wire.md, "Connections for requests") */
    if (c != NULL && deliveries) {
        char path[sizeof(c->dir) + 32];

        snprintf(path, sizeof(path), "%s/deliveries.lock", c->dir);
        (void)unlink(path);
    }
    if (c == NULL || msv_client_connect(c) != MSV_OK || c->conn_requests_only == deliveries) {
        fprintf(stderr, "hold_conn: cannot connect as %s\n", argv[1]);
        msv_client_close(c);
        return 2;
    }
    printf("connected\n");
    fflush(stdout);
    until = msv_mono_ms() + 1000LL * seconds;
    do {
        err = msv_conn_recv(c->conn, 200, &f);
        if (err == MSV_OK)
            msv_frame_free(f); /* an answer the connect left, say: nothing is pushed */
    } while ((err == MSV_OK || err == MSV_ERR_AGAIN) && msv_mono_ms() < until);
    printf(err == MSV_OK || err == MSV_ERR_AGAIN ? "open\n" : "closed\n");
    msv_client_close(c);
    return err == MSV_OK || err == MSV_ERR_AGAIN;
}
