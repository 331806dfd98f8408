/*
 * missive: Missive from the shell. One account per directory under
 * $XDG_DATA_HOME/missive/<handle> (or --data-dir); the passphrase that seals
 * the device keys comes from MISSIVE_PASSPHRASE, the account password from
 * MISSIVE_PASSWORD (or the --*-file options), so neither is on a command line.
 *
 * This file only chooses where a command runs: the commands themselves are in
 * commands.c, the account's owners (daemon, listen, chat) in owner.c,
 * daemon.c and chat.c.
 */
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include "commands.h"
#include "missive/util.h"
#include "owner.h"

int main(int argc, char **argv)
{
    struct msv_client *c = NULL;
    const char *command = NULL;
    char handle[300], dir[1100], pid[32];
    struct cli o;
    int rc;

    cli_out = stdout;
    cli_err = stderr;
    rc = cli_parse_args(argc, argv, &o, &command);
    if (rc != 0)
        return rc;
    if (command == NULL) {
        cli_usage_all(o.help ? stdout : stderr);
        return o.help ? 0 : EXIT_USAGE;
    }
    if (o.help)
        return cli_usage(command, stdout) == 0 ? 0 : (cli_usage_all(stderr), EXIT_USAGE);
    if (msv_init() != MSV_OK) {
        fprintf(stderr, "missive: no usable random source\n");
        return EXIT_ERR;
    }
    /* a server that goes away mid-write is an error to report and retry, not our end */
    signal(SIGPIPE, SIG_IGN);
    setvbuf(stdout, NULL, _IOLBF, 0);
    rc = cli_run_unopened(&o, command);
    if (rc >= 0)
        return rc;
    if (strcmp(command, "daemon") != 0 && strcmp(command, "chat") != 0 &&
        strcmp(command, "web") != 0 && !cli_account_command(command)) {
        fprintf(stderr, "missive: unknown command '%s'\n", command);
        cli_usage_all(stderr);
        return EXIT_USAGE;
    }
    rc = cli_account(&o, handle, sizeof(handle), dir, sizeof(dir));
    if (rc != 0)
        return rc;
    /* a daemon or a chat owns the account: the command runs there */
    if (cli_account_command(command) && daemon_forward(&o, dir, command, &rc))
        return rc;
    /* web --url: a login URL from the web client that owns the account */
    if (strcmp(command, "web") == 0 && o.url) {
        if (daemon_forward(&o, dir, "web-login", &rc))
            return rc;
        fprintf(stderr, "missive: no missive web owns %s\n", handle);
        return EXIT_ERR;
    }
    if (cli_account_command(command) && owner_running(dir, pid, sizeof(pid))) {
        /* its socket does not answer here (or this is listen): a receive beside the owner
         * would push the owner's connection off the server, and two processes would share
         * the account's database and sessions */
        fprintf(stderr,
                "missive: %s is owned by a missive daemon or chat%s%s%s whose socket does not "
                "take this command; run it there, or stop the owner\n",
                handle, pid[0] ? " (pid " : "", pid, pid[0] ? ")" : "");
        return EXIT_ERR;
    }
    rc = cli_open(&o, dir, &c);
    if (rc != 0)
        return rc;
    if (strcmp(command, "daemon") == 0)
        rc = daemon_main(&o, c);
    else if (strcmp(command, "chat") == 0)
        rc = chat_main(&o, c);
    else if (strcmp(command, "web") == 0)
        rc = web_main(&o, c);
    else if (strcmp(command, "listen") == 0)
        rc = listen_main(&o, c);
    else
        rc = cli_run(&o, command, c);
    msv_client_close(c);
    return rc;
}
