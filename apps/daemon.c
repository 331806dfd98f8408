/*
 * The two owners of an account that print rather than draw: missive daemon
 * (JSON-RPC on the account's socket, and on standard input and output with
 * --stdio; docs/daemon.md) and missive listen (what arrives, printed as
 * receive prints it). Both are the loop in owner.c with a different hook.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

#include "commands.h"
#include "owner.h"

int daemon_main(const struct cli *o, struct msv_client *c)
{
    struct owner *ow = NULL;
    int rc;

    if (o->argc != 0)
        return cli_usage("daemon", cli_err);
    rc = owner_start(o, c, o->stdio, &ow);
    if (rc != 0)
        return rc;
    fprintf(cli_err, "missive: daemon for %s (device %llu) on %s\n", c->handle,
            (unsigned long long)c->device_id, owner_socket(ow));
    while (!owner_stopping() && (!o->stdio || owner_stdio_open(ow)))
        owner_step(ow, -1, 60000);
    owner_stop(ow);
    fprintf(cli_err, "missive: daemon stopped\n");
    return 0;
}

struct listener {
    const struct cli *o;
    int said_offline;
};

/* What the owner's loop reports, printed as receive prints it. */
static void on_listen_event(void *ctx, json_t *event, const struct msv_incoming *in)
{
    struct listener *l = ctx;
    const char *type = json_string_value(json_object_get(event, "type"));
    const char *state = json_string_value(json_object_get(event, "state"));

    if (in != NULL) {
        /* the lock goes with the process, and the socket goes with the next owner */
        cli_show_or_stop((void *)l->o, in);
    } else if (type != NULL && strcmp(type, "alarm") == 0) {
        cli_print_alarm((void *)l->o, json_string_value(json_object_get(event, "warning")));
    } else if (type != NULL && strcmp(type, "connection") == 0 && state != NULL) {
        if (strcmp(state, "offline") == 0)
            fprintf(cli_err, "missive: not connected (%s); trying again\n",
                    json_string_value(json_object_get(event, "error")));
        else if (l->said_offline)
            fprintf(cli_err, "missive: connected again\n");
        l->said_offline = strcmp(state, "offline") == 0;
    }
}

/*
 * listen owns the account as the daemon does (its lock and socket): the
 * account's other commands run through it rather than connecting as the
 * same device, which would take the listener's connection from it. A lost
 * connection wakes it at once; it reconnects, backing off to a minute.
 */
int listen_main(const struct cli *o, struct msv_client *c)
{
    struct listener l = {.o = o};
    struct owner *ow = NULL;
    int rc;

    if (o->argc != 0)
        return cli_usage("receive", cli_err);
    rc = owner_start(o, c, 0, &ow);
    if (rc != 0)
        return rc;
    owner_set_hook(ow, on_listen_event, &l);
    while (!owner_stopping())
        owner_step(ow, -1, 60000);
    owner_stop(ow);
    return 0;
}
