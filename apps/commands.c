/*
 * The missive commands: their options, usage and output, and each account
 * command's work on an open account. The command line (missive.c), the
 * daemon, listen and the chat (through the account's owner, owner.c) all run
 * commands here; this module depends on none of them.
 */
#include <dirent.h>
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <qrencode.h>

#include "commands.h"
#include "qrimage.h"
#include "term.h"
#include "client/backup.h"
#include "client/client.h"
#include "client/files.h"
#include "client/link.h"
#include "client/safety.h"
#include "client/sessions.h"
#include "client/transparency.h"
#include "missive/payload.h"
#include "missive/util.h"

FILE *cli_out, *cli_err;

static const struct {
    const char *name, *usage, *about;
} commands[] = {
    {"register",
     "register HANDLE --server HOST:PORT[,HOST:PORT...] [--suite modern|ecies|classic]\n"
     "         [--compat SUITE,...] [--invite CODE]\n"
     "       missive register HANDLE --code CODE",
     "Creates this device's keys and asks the server for a verification code; run again "
     "with --code to create the account (password from MISSIVE_PASSWORD). The device speaks "
     "its --suite (modern unless given) and the --compat suites too, for devices that speak "
     "nothing else; each message goes in the best suite both devices speak. Addresses after "
     "commas are more nodes of the same service: a connection tries the one that answered "
     "last, then the others. A server that registers by invitation needs --invite, the code "
     "its operator gave you."},
    {"link",
     "link HANDLE --server HOST:PORT[,HOST:PORT...] [--suite SUITE] [--compat SUITE,...]\n"
     "       missive link HANDLE --server HOST:PORT --qr [--png FILE] [--wait S]\n"
     "       missive link HANDLE --resume-history",
     "Adds this machine as another device of an existing account. With --qr, no password: "
     "it shows a QR code and its text (--png also writes it as an image) for a device of the "
     "account to read with 'missive devices add', and waits (up to 10 minutes, or --wait "
     "seconds) until that device sends it the account. Without --qr the password comes from "
     "MISSIVE_PASSWORD (an account with no device left); it waits until one of the account's "
     "devices approves it with 'missive devices approve ID'. Every device is told. The history "
     "comes after the link, in the background: 'missive receive' (or the daemon, or the chat) "
     "imports it when it arrives. One that could not be imported (the import failed or was "
     "stopped) is imported with --resume-history: only what this device does not hold is "
     "added."},
    {"devices",
     "devices [list | approve DEVICE_ID | remove DEVICE_ID | add CODE [--yes] [--no-history] | "
     "add --image FILE.png [--yes] [--no-history] | add --resume-history DEVICE_ID]",
     "Lists the account's devices with their fingerprints, approves one waiting to join, "
     "removes one, or adds the new device whose code (the text, or the QR code in a PNG "
     "image) 'missive link --qr' shows: after both fingerprints are shown and confirmed "
     "(--yes: without asking), the device is added, approved and sent the account (its "
     "contacts, blocks, settings, profile, verified marks and groups) with this device's "
     "history and files (--history, the default; --no-history: without; groups too many for "
     "the provisioning message need the history). The new device is usable at once; the "
     "history follows in the background, as an archive uploaded to the attachment store, "
     "with its progress. An upload that failed or was stopped is made again with "
     "add --resume-history DEVICE_ID."},
    {"handles", "handles [list | add HANDLE | verify HANDLE --code CODE | remove HANDLE [--yes]]",
     "The account's handles: an e-mail address or phone number each, up to 10; any of them "
     "reaches every device of the account. add has the server send a code to the new handle "
     "(as at registration); verify makes it the account's with that code. remove takes one "
     "away (never the last; without --yes it only says what it would do): lookups of it then "
     "answer that it is gone. The first is the account's own, which it goes by unless "
     "'send --from' or the handle someone wrote to says otherwise. Every device is told."},
    {"username", "username [show | set NAME | remove]",
     "The account's username: a handle that is no e-mail address and no phone number, "
     "NAME.DIGITS (3 to 24 letters and digits beginning with a letter, a dot, 2 to 9 digits, "
     "as alice.42), so that people can write to you without learning either. It needs no code; "
     "whoever knows it exactly finds the account (no listing, no search). set takes it or "
     "changes it (at most once a day, as the server says), remove releases it; a released "
     "username is held from every account for a while (the server's username_hold_s). Every "
     "device is told, and 'handles' lists it among the others."},
    {"account", "account usage\n       missive account delete --yes",
     "usage shows what the server holds for this account against its limits: for each "
     "device, the envelopes and bytes waiting for it beside the queue caps (a device whose queue "
     "is full misses what is sent until it reads it), its attachment bytes and unfinished uploads "
     "beside the quotas, and the account's attachment bytes in all. delete deletes the "
     "account on the server for good (password from MISSIVE_PASSWORD): every "
     "device of it, the messages waiting for them, its attachments; its handle's entry in the "
     "transparency log says it was deleted, so contacts see it; then this device's state here. "
     "The account's other devices are refused from then on and told so. Without --yes it only "
     "says what it would delete."},
    {"leave", "leave [--yes]",
     "This device leaves the account: the server removes it (the account's other devices are "
     "told), then its state on this machine is deleted: its keys, its database (messages, "
     "contacts, groups, settings) and the files it received. Without --yes it only says what "
     "it would delete."},
    {"password",
     "password change\n"
     "       missive password reset HANDLE --server HOST:PORT --code CODE",
     "Changes the account's password: the current one from MISSIVE_PASSWORD (or "
     "--password-file), the new one from MISSIVE_NEW_PASSWORD, or asked twice on the "
     "terminal (8 characters or more). Wrong current passwords count against the same limit "
     "as other password attempts. The account's other devices are told. Without the password, "
     "ask the server's operator to send a code to the handle (missive-admin reset-password); "
     "reset sets the new password with it (valid 10 minutes), with no device of the account "
     "needed here."},
    {"profile", "profile [show [HANDLE] | set --name NAME [--avatar FILE] | clear-avatar]",
     "Shows this account's profile or a contact's as last received (its avatar's file), or "
     "sets this account's display name (1 to 64 bytes, no control characters) and avatar (a "
     "file up to 1 MiB). The profile is encrypted under the account's profile key; the people "
     "it writes to get it with its messages and show the name beside its handle."},
    {"contacts", "contacts [list | add NAME HANDLE | remove NAME]",
     "Names for handles, usable wherever a handle is."},
    {"groups",
     "groups [list | create NAME MEMBER... | add GROUP MEMBER... | remove GROUP "
     "MEMBER... | rename GROUP NEW_NAME | promote GROUP MEMBER | demote GROUP MEMBER | "
     "leave GROUP | accept ID | invite GROUP [--approval on|off] [--reset | --off] | "
     "join URI | requests GROUP | approve GROUP HANDLE | deny GROUP HANDLE | code GROUP]",
     "Group conversations. Members are handles or contact names; every change is sent to "
     "the members' devices, removed members included. A GROUP is its name or its id "
     "(group:HEX, as listed); no two of your groups share a name. A group someone else "
     "made is listed as invited: its messages arrive, but you write to it only once you "
     "accept it by its id. The creator is the first admin; only admins add, remove, "
     "rename, promote and demote (the list names them); anyone may leave. Every change "
     "is signed and checked by every member, who refuses and shows what an admin did "
     "not sign. An admin's invite link lets whoever holds it ask to join (join URI): an "
     "admin's device adds them, or, with --approval on, keeps the request until an admin "
     "approves or denies it; --reset makes old links stop working, --off turns links off. "
     "code GROUP prints, for a group on MLS, its epoch and a code of 60 digits that every "
     "member at that epoch sees alike: compare it with the others (the same epoch and a "
     "different code means the server split the group). "
     "A group holds up to 1,024 people; one command names up to 256."},
    {"send",
     "send TO... [--text TEXT] [--file PATH]... [--reply-to MESSAGE_ID] [--from HANDLE]\n"
     "       missive send --group NAME ...",
     "Sends a message (the text, or standard input unless files are given) to handles or "
     "contact names; with --reply-to, as an answer to a message of that conversation, shown "
     "below its sender and first line. It is encrypted for every device of every recipient and of "
     "this "
     "account. Files go through the attachment store under a fresh key each; so does text "
     "too long for one envelope. --from names which of the account's handles the one person "
     "written to sees it from, from then on (the one used with them before otherwise, or the "
     "account's own)."},
    {"receive", "receive [--wait SECONDS]",
     "Prints the messages waiting at the server and returns once the server says all of them "
     "came (or after 2 seconds without one, from a server that does not say). With --wait, "
     "goes on until none comes for SECONDS. Received files are checked against their hash and "
     "saved in the account's attachments/ directory."},
    {"history",
     "history [CONVERSATION | --group NAME] [--search WORDS] [--limit N] [--before MESSAGE_ID]",
     "Prints stored messages, oldest first; --search is a full-text query. With --before, "
     "only those stored before that message (with --limit N, the newest N of them: one page "
     "further back). -o json lists each message's received files under \"attachments\"."},
    {"read", "read [CONVERSATION | --group NAME]",
     "Sends read receipts for the unread messages of a conversation (or all)."},
    {"typing", "typing TO | --group NAME", "Tells a conversation that you are typing."},
    {"timer", "timer CONVERSATION|--group NAME [DURATION|off]",
     "Shows or sets the conversation's disappearing-message timer: a number of seconds, or "
     "with a unit s, m, h, d or w, from 30s to 4w, or off. Everyone in the conversation sees "
     "the change; messages sent while it is on are deleted on every device that long after "
     "they were read (your own: after they were sent), files included."},
    {"edit", "edit MESSAGE_ID --text TEXT",
     "Changes the text of one of your messages for everyone who has it."},
    {"unsend", "unsend MESSAGE_ID", "Takes one of your messages back from everyone who has it."},
    {"react", "react MESSAGE_ID EMOJI | react MESSAGE_ID --remove",
     "Reacts to a message with an emoji (up to 32 bytes, no spaces), or takes your reaction "
     "away: everyone in its conversation sees one reaction per person, the newest. history "
     "shows them under the message with their counts."},
    {"conversations",
     "conversations [list [--archived] | mute CONV [DURATION|forever] | unmute CONV |\n"
     "       archive CONV | unarchive CONV | pin CONV | unpin CONV]",
     "Lists the conversations, pinned first, then newest first, with their unread counts; "
     "archived ones only with --archived. A muted conversation (for DURATION: seconds or a "
     "number with s, m, h or d; forever unless given) still gets its messages, but the chat "
     "does not alert for them; a new message in an archived conversation that is not muted "
     "brings it back. CONV is a handle, a contact's name, a group's name or group:ID. "
     "Your other devices share these choices."},
    {"edits", "edits MESSAGE_ID",
     "Lists the versions of an edited message, oldest first, each with its edit number (0 for "
     "the original) and when its author made it; the last is its text now."},
    {"windows", "windows [edit|unsend] [DURATION]",
     "Prints, or sets, how long after sending you may edit or unsend a message: 24h unless "
     "set; DURATION is seconds, or a number followed by s, m, h or d. An edit or unsend from "
     "someone else that was made later after its message than your own window is refused, "
     "and you are told."},
    {"verify",
     "verify HANDLE [--qr] | verify HANDLE NUMBER | verify HANDLE --accept\n"
     "       missive verify HANDLE FINGERPRINT",
     "Prints the safety number of your conversation with HANDLE (the same 60 digits on both "
     "sides, made from both accounts' device keys; --qr also as a QR code). Compare it with "
     "the other person in person or on a call; if it matches, give it back (spaces "
     "optional) to mark HANDLE verified. Once verified, nothing is sent to HANDLE after its "
     "devices change until you compare the new number or --accept the change. With a "
     "device FINGERPRINT (64 hex digits), checks that one device. Exit status 3 on a "
     "mismatch."},
    {"fingerprint", "fingerprint [HANDLE]",
     "Prints this device's fingerprint, or those of the devices known for HANDLE, to "
     "compare with the other person over another channel."},
    {"backup", "backup FILE [--kdf-memory MIB] [--kdf-passes N]",
     "Writes the account (this device's keys, contacts, groups, history and received "
     "files) to FILE, encrypted with a key made from a backup passphrase "
     "(MISSIVE_BACKUP_PASSPHRASE or --backup-passphrase-file, 12 characters or more) by "
     "Argon2id: 256 MiB and 3 passes unless given; FILE records them. The server never "
     "holds this key. Sessions and prekey secrets are not kept: they start anew after a "
     "restore."},
    {"restore", "restore FILE",
     "Reads a backup (passphrase as for backup) into the data directory, on this or a new "
     "machine; the device's keys inside are still sealed with the MISSIVE_PASSPHRASE they "
     "had. This machine becomes that device: stop using the old copy. An account that "
     "exists here is never replaced."},
    {"daemon", "daemon [--stdio] [--socket PATH]",
     "Owns the account: keeps its connection to the server, receives as messages arrive, "
     "and answers JSON-RPC 2.0 requests (every command above, and a stream of events) on "
     "the Unix socket daemon.sock in the account's directory (or PATH), and with --stdio on "
     "standard input and output too. While it runs, the other commands go through it. "
     "Stops on SIGINT or SIGTERM (or the end of standard input with --stdio). docs/daemon.md "
     "describes the protocol."},
    {"web",
     "web [--listen HOST:PORT] [--open] [--tls-cert FILE --tls-key FILE]\n"
     "           [--session-hours H] [--idle-minutes M] [--token-minutes M]\n"
     "       missive web --url",
     "Owns the account as the daemon does (its socket, its commands) and serves the web "
     "client: a page in the browser with the conversations, history, sending, files, "
     "reactions and safety numbers. It listens on 127.0.0.1 and a free port unless told "
     "otherwise (another address only with TLS) and prints a one-time login URL; --url asks "
     "the running one for another (for a second browser), --open starts the browser. A "
     "session ends --session-hours after its login (12), or when unused for --idle-minutes "
     "(60), or on Logout; a login URL is good once, within --token-minutes (10). "
     "docs/web.md describes it and its security."},
    {"chat", "chat [CONVERSATION]",
     "A full-screen chat in the terminal: conversations with unread counts, history, a "
     "compose line, delivery and read marks, typing notices, warnings about changed "
     "devices, files with progress. Type /help in it for its commands. Like the daemon, it "
     "owns the account while it runs, and other commands go through it."},
    {"sync", "sync [list | set KEY VALUE | unset KEY]",
     "Contacts, and every setting whose key begins with 'sync:' (blocks, privacy, conversation "
     "states...), are the same on all of the account's devices: after each command, what it "
     "changed is sent to the account's other devices (never anyone else's), where the newest "
     "change of each key wins; a newly approved device receives all of it. Lists the synced "
     "state (KEY, VALUE, and 'deleted' for a deletion), or sets or removes one 'sync:' setting."},
    {"block", "block HANDLE",
     "Blocks a handle (or a contact name's handles): everything it sends (messages, group "
     "messages and invitations, receipts, typing notices, edits) is dropped without any "
     "answer, and counted; nothing is sent to it until it is unblocked."},
    {"unblock", "unblock HANDLE", "Unblocks a handle; its count of dropped deliveries goes."},
    {"blocked", "blocked",
     "Lists the blocked handles, each with how many of its deliveries were dropped."},
    {"requests", "requests [list | accept HANDLE | delete HANDLE | block HANDLE]",
     "Message requests: the first message from a handle that is not a contact, not in an "
     "accepted group of yours and never written to is held as a request, shown with "
     "'[request]', and nothing goes back to it (no delivery or read receipt, no typing "
     "notice) until it is accepted. Lists the pending requests (handle, count of messages, "
     "first and last text); accept sends the receipts held back (also done by writing to the "
     "handle or adding it as a contact); delete removes its messages (its next message is a "
     "request again); block deletes them and blocks the handle."},
    {"settings", "settings [list | get NAME | set NAME on|off]",
     "Privacy settings, on unless turned off: read-receipts (off: you send none and see "
     "nobody's) and typing (off: you send no typing notices and see nobody's). Delivery "
     "receipts always go."},
    {"report", "report HANDLE [MESSAGE_ID...] [--reason TEXT] [--include-text]",
     "Reports HANDLE to the server's operator, who may suspend the account: with a reason "
     "(at most 1000 bytes) and the messages named (at most 50, each one HANDLE sent you). "
     "Only with --include-text does their text go with the report (the server cannot read "
     "messages otherwise); without it no message text leaves this device. Consider "
     "blocking HANDLE too."},
    {"log-head", "log-head",
     "Asks the directory for this account's devices (checked against its transparency log) "
     "and prints the log's newest tree head this device accepted, as a line "
     "'missive-head 1 SIZE TIME ROOT SIGNATURE' for 'missive-audit --compare': heads that "
     "people compare show whether the server showed them one and the same log."},
};

void cli_usage_all(FILE *f)
{
    fprintf(f, "usage: missive [--account HANDLE] [--data-dir DIR] [-o json] COMMAND ...\n\n"
               "Missive, end-to-end encrypted messaging, from the shell.\n\ncommands:\n");
    for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
        fprintf(f, "  %-14s %s\n", commands[i].name, commands[i].usage);
    fprintf(f, "\n'missive COMMAND --help' describes each. The account is --account, or\n"
               "MISSIVE_ACCOUNT, or the only one in the data directory.\n"
               "environment: MISSIVE_PASSPHRASE (seals this device's keys), MISSIVE_PASSWORD\n"
               "(the account password, for register, link and password), MISSIVE_NEW_PASSWORD\n"
               "(password change), MISSIVE_BACKUP_PASSPHRASE (for backup and restore).\n"
               "exit status: 0 success, 1 error, 2 usage, 3 authentication, 4 server "
               "unreachable, 5 the server could not store it\n");
}

/* Prints a command's usage to f (NULL: only looks it up); 0 for a known command on cli_out. */
int cli_usage(const char *name, FILE *f)
{
    for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++) {
        if (strcmp(commands[i].name, name) == 0) {
            if (f != NULL)
                fprintf(f, "usage: missive %s\n\n%s\n", commands[i].usage, commands[i].about);
            return f == cli_err ? EXIT_USAGE : 0;
        }
    }
    return EXIT_USAGE;
}

static int fail(const struct msv_client *c, const char *what, msv_err err)
{
    const char *why = c != NULL && c->why.message[0] ? c->why.message : NULL;

    /* the server was reached and answered: its storage failed, not the network */
    if (err == MSV_ERR_IO && c != NULL && c->why.code == MSV__WIRE__ERROR_CODE__ERROR_IO) {
        fprintf(cli_err, "missive: %s: the server could not store it (", what);
        term_put(cli_err, why ? why : "storage failed", TERM_ONE_LINE);
        fputs("); try again later\n", cli_err);
        return EXIT_STORAGE;
    }
    fprintf(cli_err, "missive: %s: %s%s", what, msv_strerror(err), why ? ": " : "");
    term_put(cli_err, why, TERM_LINES); /* the server's words, or a peer's */
    fputc('\n', cli_err);
    if (c != NULL && msv_client_account_deleted(c)) {
        fprintf(cli_err,
                "missive: the account %s was deleted (from one of its devices, or by "
                "the server's operator); delete this device's state here with: missive "
                "leave --yes\n",
                c->handle);
        return EXIT_AUTH;
    }
    if (err == MSV_ERR_AUTH)
        return EXIT_AUTH;
    if (err == MSV_ERR_IO)
        return EXIT_NET;
    return EXIT_ERR;
}

/* Reads a secret from a file (first line) or the environment (env NULL: not); NULL if neither. */
static char *secret(const char *file, const char *env)
{
    char buf[1024];
    FILE *f;

    if (file == NULL) {
        const char *v = env != NULL ? getenv(env) : NULL;

        return v ? strdup(v) : NULL;
    }
    f = fopen(file, "r");
    if (f == NULL || fgets(buf, sizeof(buf), f) == NULL) {
        if (f != NULL)
            fclose(f);
        return NULL;
    }
    fclose(f);
    buf[strcspn(buf, "\r\n")] = '\0';
    return strdup(buf);
}

static void free_secret(char *s)
{
    if (s != NULL)
        msv_secret_free(s, strlen(s));
}

/* The data directory: --data-dir, or $XDG_DATA_HOME/missive, or ~/.local/share/missive. */
static int data_dir(const struct cli *o, char *out, size_t len)
{
    const char *xdg = getenv("XDG_DATA_HOME"), *home = getenv("HOME");
    int n;

    if (o->data_dir != NULL)
        n = snprintf(out, len, "%s", o->data_dir);
    else if (xdg != NULL && xdg[0] == '/')
        n = snprintf(out, len, "%s/missive", xdg);
    else if (home != NULL)
        n = snprintf(out, len, "%s/.local/share/missive", home);
    else
        return -1;
    return n >= 0 && (size_t)n < len ? 0 : -1;
}

/* The account directory: DATA_DIR/HANDLE. */
static int account_dir(const struct cli *o, const char *handle, char *out, size_t len)
{
    char base[900];

    if (data_dir(o, base, sizeof(base)) != 0)
        return -1;
    if (handle == NULL || handle[0] == '\0' || strchr(handle, '/') != NULL || handle[0] == '.')
        return -1;
    return (size_t)snprintf(out, len, "%s/%s", base, handle) < len ? 0 : -1;
}

/* How many accounts the data directory holds; the name of one of them goes to handle. */
static size_t count_accounts(const struct cli *o, char *handle, size_t len)
{
    char base[900], db[1400];
    struct dirent *e;
    size_t n = 0;
    DIR *d;

    if (data_dir(o, base, sizeof(base)) != 0 || (d = opendir(base)) == NULL)
        return 0;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.' || strlen(e->d_name) >= len)
            continue;
        snprintf(db, sizeof(db), "%s/%s/state.db", base, e->d_name);
        if (access(db, F_OK) == 0) {
            snprintf(handle, len, "%s", e->d_name);
            n++;
        }
    }
    closedir(d);
    return n;
}

void cli_key_change_warning(void *ctx, const char *handle)
{
    char *shown = term_safe(handle, TERM_ONE_LINE);

    (void)ctx;
    fprintf(cli_err,
            "missive: warning: the devices of %s changed since this device last saw them;\n"
            "  compare fingerprints with 'missive fingerprint %s' before trusting new ones\n",
            shown ? shown : "?", shown ? shown : "?");
    free(shown);
}

/* The words for a handle whose account was deleted and registered again. */
void cli_account_new_text(const char *handle, char *text, size_t len)
{
    snprintf(text, len,
             "%s is a new account: the account you knew was deleted and the handle registered "
             "again; its safety number changed: compare it ('missive verify %s') before trusting "
             "it",
             handle, handle);
}

void cli_account_new_notice(void *ctx, const char *handle)
{
    char text[800];

    (void)ctx;
    cli_account_new_text(handle, text, sizeof(text));
    fputs("missive: ", cli_err);
    term_put(cli_err, text, TERM_ONE_LINE);
    fputc('\n', cli_err);
}

void cli_devlist_warning(void *ctx, const char *handle, uint64_t device, const char *warning)
{
    (void)ctx;
    (void)handle;
    (void)device;
    fputs("missive: warning: ", cli_err);
    term_put(cli_err, warning, TERM_ONE_LINE);
    fputc('\n', cli_err);
}

void cli_not_sent_warning(void *ctx, const char *conversation, const char *handle,
                          const char *warning)
{
    (void)ctx;
    (void)conversation;
    (void)handle;
    fputs("missive: WARNING: ", cli_err);
    term_put(cli_err, warning, TERM_ONE_LINE);
    fputc('\n', cli_err);
}

void cli_unreachable_warning(void *ctx, const char *handle, uint64_t device, const char *suites)
{
    (void)ctx;
    fprintf(cli_err, "missive: warning: device %llu of ", (unsigned long long)device);
    term_put(cli_err, handle, TERM_ONE_LINE);
    fputs(" speaks ", cli_err);
    term_put(cli_err, suites, TERM_ONE_LINE);
    fputs(" only, which this device does not: it gets nothing from here\n", cli_err);
}

void cli_pq_refused_warning(void *ctx, const char *handle, uint64_t device, const char *warning)
{
    (void)ctx;
    (void)handle;
    (void)device;
    fputs("missive: WARNING: ", cli_err);
    term_put(cli_err, warning, TERM_ONE_LINE);
    fputc('\n', cli_err);
}

void cli_unopened_warning(void *ctx, const char *warning)
{
    (void)ctx;
    fputs("missive: WARNING: ", cli_err);
    term_put(cli_err, warning, TERM_ONE_LINE);
    fputc('\n', cli_err);
}

/* A send split in several (a big group's): how far it got, on stderr. */
static void cli_send_progress(void *ctx, uint64_t done, uint64_t total)
{
    (void)ctx;
    fprintf(cli_err, "missive: sent to %llu of %llu recipients\n", (unsigned long long)done,
            (unsigned long long)total);
}

void cli_outbox_held_notice(void *ctx, const uint8_t id[16], const char *reason)
{
    char hex[33];

    (void)ctx;
    if (msv_hex_encode(id, 16, hex, sizeof(hex)) != MSV_OK)
        return;
    fprintf(cli_err, "missive: message %s is still queued: ", hex);
    term_put(cli_err, reason, TERM_ONE_LINE);
    fputs(" (it is tried again with the next command; the rest of its conversation waits)\n",
          cli_err);
}

void cli_unsealed_notice(void *ctx, const char *handle)
{
    (void)ctx;
    fputs("missive: notice: this message went to ", cli_err);
    term_put(cli_err, handle, TERM_ONE_LINE);
    fputs(" without sealed sender: the relay refused the delivery token, so it learns who sent "
          "it (not what); the next message tries sealed again\n",
          cli_err);
}

static void cli_mls_notice(void *ctx, const char *conversation, const char *notice)
{
    (void)ctx;
    fputs("missive: notice: ", cli_err);
    term_put(cli_err, conversation, TERM_ONE_LINE);
    fputs(": ", cli_err);
    term_put(cli_err, notice, TERM_ONE_LINE);
    fputs("\n", cli_err);
}

int cli_account(const struct cli *o, char *handle, size_t handle_len, char *dir, size_t dir_len)
{
    const char *named = o->account ? o->account : getenv("MISSIVE_ACCOUNT");
    char only[256];

    if (named == NULL) {
        size_t n = count_accounts(o, only, sizeof(only));

        if (n == 0) {
            fprintf(cli_err, "missive: no account here yet; create one with 'missive register' "
                             "or 'missive link'\n");
            return EXIT_ERR;
        }
        if (n > 1) {
            fprintf(cli_err,
                    "missive: %zu accounts here; which one? give --account HANDLE or set "
                    "MISSIVE_ACCOUNT\n",
                    n);
            return EXIT_USAGE;
        }
        named = only;
    }
    if (account_dir(o, named, dir, dir_len) != 0 ||
        (size_t)snprintf(handle, handle_len, "%s", named) >= handle_len) {
        fprintf(cli_err, "missive: '%s' is not a usable account name\n", named);
        return EXIT_USAGE;
    }
    if (access(dir, F_OK) != 0) {
        fprintf(cli_err,
                "missive: no account %s here; create it with 'missive register' or "
                "'missive link'\n",
                named);
        return EXIT_ERR;
    }
    return 0;
}

/* Another program of the device takes its deliveries: this one waits for it, and says so. */
static void cli_deliveries_wait(void *ctx, const char *pid, int wait_ms)
{
    (void)ctx;
    fprintf(cli_err,
            "missive: another program of this device%s%s%s takes its deliveries from the server "
            "(a receive, say); waiting for it to end (at most %d s)\n",
            pid[0] ? " (pid " : "", pid, pid[0] ? ")" : "", wait_ms / 1000);
    fflush(cli_err);
}

/* Opens the account directory dir (its keys sealed by the passphrase o names). */
int cli_open(const struct cli *o, const char *dir, struct msv_client **c)
{
    char *pass = secret(o->passphrase_file, "MISSIVE_PASSPHRASE");
    msv_err err;

    err = msv_client_open(dir, pass, c);
    free_secret(pass);
    if (err == MSV_ERR_AUTH) {
        fprintf(cli_err, "missive: the passphrase does not open this device's keys\n");
        return EXIT_AUTH;
    }
    if (err == MSV_ERR_INVALID)
        fprintf(cli_err, "missive: %s must be your own directory, writable by you only\n", dir);
    if (err != MSV_OK)
        return fail(NULL, "opening the account", err);
    (*c)->on_key_change = cli_key_change_warning;
    (*c)->on_account_new = cli_account_new_notice;
    (*c)->on_unreachable = cli_unreachable_warning;
    (*c)->on_devlist = cli_devlist_warning;
    (*c)->on_not_sent = cli_not_sent_warning;
    (*c)->on_pq_refused = cli_pq_refused_warning;
    (*c)->on_unopened = cli_unopened_warning;
    (*c)->on_keys_unpublished = cli_unopened_warning; /* the same warning line */
    (*c)->on_classical = cli_pq_refused_warning;      /* the same warning line, naming the device */
    (*c)->on_unsealed = cli_unsealed_notice;
    (*c)->on_mls_notice = cli_mls_notice;
    (*c)->on_outbox_held = cli_outbox_held_notice;
    (*c)->on_send_progress = cli_send_progress;
    (*c)->on_deliveries_wait = cli_deliveries_wait;
    return 0;
}

/* Opens the account named by --account / MISSIVE_ACCOUNT. */
static int open_account(const struct cli *o, struct msv_client **c)
{
    char handle[300], dir[1100];
    int rc = cli_account(o, handle, sizeof(handle), dir, sizeof(dir));

    return rc != 0 ? rc : cli_open(o, dir, c);
}

/*
 * "HOST:PORT[,HOST:PORT...]": the first into host and port, *others at the
 * rest ("" if none); -1 if any of them is malformed.
 */
static int parse_servers(const char *s, char *host, size_t host_len, uint16_t *port,
                         const char **others)
{
    const char *p = s + strcspn(s, ",");
    char more_host[300];
    uint16_t more_port;

    if (msv_host_port(s, (size_t)(p - s), host, host_len, port) != MSV_OK)
        return -1;
    *others = *p == ',' ? p + 1 : p;
    while (*p == ',') {
        p++;
        if (msv_host_port(p, strcspn(p, ","), more_host, sizeof(more_host), &more_port) != MSV_OK)
            return -1;
        p += strcspn(p, ",");
    }
    return 0;
}

/* "classic,ecies" as a set of suites; -1 for anything else. */
static int parse_suites(const char *list, unsigned *out)
{
    char buf[64], *save = NULL;

    *out = 0;
    if (strlen(list) >= sizeof(buf))
        return -1;
    snprintf(buf, sizeof(buf), "%s", list);
    for (char *t = strtok_r(buf, ",", &save); t != NULL; t = strtok_r(NULL, ",", &save)) {
        enum msv_suite s;

        if (msv_suite_from_name(t, &s) != MSV_OK)
            return -1;
        *out |= MSV_SUITE_BIT(s);
    }
    return *out != 0 ? 0 : -1;
}

/* Creates the account directory and keys for HANDLE at --server. */
static int create_device(const struct cli *o, const char *handle, struct msv_client **c)
{
    enum msv_suite suite = MSV_SUITE_MODERN;
    unsigned also = 0;
    char dir[1100], host[256], *pass;
    const char *others = NULL;
    uint8_t fp[32];
    char fp_text[MSV_FINGERPRINT_TEXT_LEN];
    uint16_t port = 0;
    msv_err err;

    if (o->server == NULL || parse_servers(o->server, host, sizeof(host), &port, &others) != 0) {
        fprintf(cli_err, "missive: --server HOST:PORT[,HOST:PORT...] is required (the missived to "
                         "use; a cluster's nodes after a comma)\n");
        return EXIT_USAGE;
    }
    if (o->suite != NULL && msv_suite_from_name(o->suite, &suite) != MSV_OK) {
        fprintf(cli_err, "missive: --suite must be modern, ecies or classic\n");
        return EXIT_USAGE;
    }
    if (o->compat != NULL && parse_suites(o->compat, &also) != 0) {
        fprintf(cli_err, "missive: --compat takes suites separated by commas (modern, ecies, "
                         "classic)\n");
        return EXIT_USAGE;
    }
    if (account_dir(o, handle, dir, sizeof(dir)) != 0) {
        fprintf(cli_err, "missive: '%s' is not a usable account name\n", handle);
        return EXIT_USAGE;
    }
    pass = secret(o->passphrase_file, "MISSIVE_PASSPHRASE");
    if (pass == NULL || pass[0] == '\0')
        fprintf(cli_err, "missive: warning: no MISSIVE_PASSPHRASE: this device's keys are stored "
                         "unsealed (the file is readable by you only)\n");
    /* a new modern device speaks post-quantum sessions, and says so in its identity */
    if ((also | MSV_SUITE_BIT(suite)) & MSV_SUITE_BIT(MSV_SUITE_MODERN))
        also |= MSV_IDENTITY_PQ;
    err = msv_client_create(dir, handle, host, port, suite, also, pass, fp, c);
    free_secret(pass);
    if (err == MSV_ERR_EXISTS) {
        fprintf(cli_err, "missive: %s already has a device here (%s)\n", handle, dir);
        return EXIT_ERR;
    }
    if (err == MSV_ERR_INVALID)
        fprintf(cli_err, "missive: %s must be your own directory, writable by you only\n", dir);
    if (err == MSV_OK)
        err = msv_client_set_servers(*c, others);
    if (err != MSV_OK)
        return fail(NULL, "creating this device", err);
    msv_fingerprint_text(fp, fp_text);
    fprintf(cli_err, "server certificate pinned: %s\n", fp_text);
    return 0;
}

/* The environment variable a secret may come from: none for a request to the owner. */
static const char *secret_env(const struct cli *o, const char *env)
{
    return o->secrets_from_request ? NULL : env;
}

char *cli_password(const struct cli *o)
{
    char *pw = o->password != NULL ? strdup(o->password)
                                   : secret(o->password_file, secret_env(o, "MISSIVE_PASSWORD"));

    if (pw == NULL || strlen(pw) < 8) {
        fprintf(cli_err, o->secrets_from_request
                             ? "missive: give the account password (\"password\", 8 characters "
                               "or more)\n"
                             : "missive: set MISSIVE_PASSWORD (8 characters or more) to the "
                               "account password\n");
        free_secret(pw);
        return NULL;
    }
    return pw;
}

/* Asks for a secret on the terminal without echoing it; NULL without a terminal. */
char *cli_ask_secret(const char *prompt)
{
    struct termios saved, quiet;
    char buf[1100];
    FILE *tty = fopen("/dev/tty", "r+");
    char *got = NULL;

    if (tty == NULL)
        return NULL;
    if (tcgetattr(fileno(tty), &saved) == 0) {
        quiet = saved;
        quiet.c_lflag &= ~(tcflag_t)ECHO;
        fputs(prompt, tty);
        fflush(tty);
        if (tcsetattr(fileno(tty), TCSAFLUSH, &quiet) == 0 && fgets(buf, sizeof(buf), tty)) {
            buf[strcspn(buf, "\r\n")] = '\0';
            got = strdup(buf);
        }
        tcsetattr(fileno(tty), TCSAFLUSH, &saved);
        fputc('\n', tty);
        msv_wipe(buf, sizeof(buf));
    }
    fclose(tty);
    return got;
}

char *cli_new_password(const struct cli *o)
{
    char *pw = o->new_password != NULL ? strdup(o->new_password)
                                       : secret(NULL, secret_env(o, "MISSIVE_NEW_PASSWORD"));
    char *again = NULL;

    if (pw == NULL && !o->no_stdin && (pw = cli_ask_secret("new password: ")) != NULL &&
        ((again = cli_ask_secret("the same again: ")) == NULL || strcmp(pw, again) != 0)) {
        fprintf(cli_err, "missive: the two new passwords differ\n");
        free_secret(pw);
        free_secret(again);
        return NULL;
    }
    free_secret(again);
    if (pw == NULL || strlen(pw) < 8 || strlen(pw) > 1024) {
        fprintf(cli_err, o->secrets_from_request
                             ? "missive: give the new password (\"new-password\", 8 to 1024 "
                               "characters)\n"
                             : "missive: set MISSIVE_NEW_PASSWORD (8 to 1024 characters) to the "
                               "new password\n");
        free_secret(pw);
        return NULL;
    }
    return pw;
}

static int cmd_register(const struct cli *o)
{
    struct msv_client *c = NULL;
    char *pw;
    msv_err err;
    int rc;

    if (o->argc != 1)
        return cli_usage("register", cli_err);
    if (o->invite != NULL && o->code != NULL) {
        fprintf(cli_err, "missive: --invite goes with the first step of register (the code's "
                         "step uses the invite given there)\n");
        return EXIT_USAGE;
    }
    if (o->code == NULL) {
        rc = create_device(o, o->argv[0], &c);
        if (rc != 0)
            return rc;
        err = o->invite != NULL ? msv_client_set_invite(c, o->invite) : MSV_OK;
        if (err == MSV_ERR_INVALID) {
            fprintf(cli_err, "missive: an invite code has 1 to 64 characters\n");
            msv_client_close(c);
            return EXIT_USAGE;
        }
        if (err == MSV_OK)
            err = msv_client_register_start(c);
        if (err == MSV_OK)
            fprintf(cli_out,
                    "verification code sent to %s; finish with:\n  missive register %s --code "
                    "CODE\n",
                    o->argv[0], o->argv[0]);
        rc = err == MSV_OK ? 0 : fail(c, "asking for a verification code", err);
        msv_client_close(c);
        return rc;
    }
    if ((pw = cli_password(o)) == NULL)
        return EXIT_USAGE;
    {
        struct cli with_account = *o;

        with_account.account = o->argv[0];
        rc = open_account(&with_account, &c);
    }
    if (rc == 0) {
        err = msv_client_register_finish(c, o->code, pw);
        if (err == MSV_OK)
            fprintf(cli_out, "registered %s: this is device %llu\n", c->handle,
                    (unsigned long long)c->device_id);
        rc = err == MSV_OK ? 0 : fail(c, "registering", err);
    }
    free_secret(pw);
    msv_client_close(c);
    return rc;
}

/* Linking by QR code (below, beside the QR codes). */
static int cmd_link_qr(const struct cli *o);
static int link_resume_history(const struct cli *o);
static int devices_add(const struct cli *o, struct msv_client *c);

static int cmd_link(const struct cli *o)
{
    struct msv_client *c = NULL;
    char *pw;
    msv_err err;
    int rc;

    if (o->argc != 1)
        return cli_usage("link", cli_err);
    if (o->resume_history)
        return link_resume_history(o);
    if (o->qr)
        return cmd_link_qr(o);
    if ((pw = cli_password(o)) == NULL)
        return EXIT_USAGE;
    rc = create_device(o, o->argv[0], &c);
    if (rc == 0) {
        err = msv_client_link(c, pw);
        if (err == MSV_OK && msv_client_connect(c) == MSV_OK)
            fprintf(cli_out, "linked: this is device %llu of %s\n",
                    (unsigned long long)c->device_id, c->handle);
        else if (err == MSV_OK)
            fprintf(cli_out,
                    "this is device %llu of %s, waiting for approval: on one of the account's "
                    "devices, run\n  missive devices approve %llu\n",
                    (unsigned long long)c->device_id, c->handle, (unsigned long long)c->device_id);
        rc = err == MSV_OK ? 0 : fail(c, "linking", err);
    }
    free_secret(pw);
    msv_client_close(c);
    return rc;
}

/* -o json: one object per line; takes the reference. */
/* Every string as ASCII: names and texts from others may hold controls a terminal acts on. */
static void emit_json(json_t *j)
{
    json_dumpf(j, cli_out, JSON_COMPACT | JSON_ENSURE_ASCII);
    fputc('\n', cli_out);
    json_decref(j);
}

const char *cli_session_kind_name(int kind)
{
    return kind == MSV_SESSION_PQ          ? "post-quantum"
           : kind == MSV_SESSION_CLASSICAL ? "classical"
                                           : "none";
}

void cli_own_counts_json(struct msv_client *c, json_t *j)
{
    json_object_set_new(j, "prekeys_reclaimed",
                        json_integer((json_int_t)msv_client_prekeys_reclaimed(c)));
    json_object_set_new(j, "sealed_unopenable",
                        json_integer((json_int_t)msv_client_sealed_unopenable(c)));
    json_object_set_new(j, "sealed_downgrades_refused",
                        json_integer((json_int_t)msv_client_sealed_downgrades(c)));
    json_object_set_new(j, "keys_unpublished",
                        json_integer((json_int_t)msv_client_keys_unpublished(c)));
    json_object_set_new(j, "owed_given_up", json_integer((json_int_t)msv_client_owed_given_up(c)));
    json_object_set_new(j, "mls_refoundings_held",
                        json_integer((json_int_t)msv_client_mls_refoundings_held(c)));
    json_object_set_new(j, "mls_waits_given_up",
                        json_integer((json_int_t)msv_client_mls_waits_given_up(c)));
    json_object_set_new(j, "mls_by_ref_held",
                        json_integer((json_int_t)msv_client_mls_by_ref_held(c)));
    json_object_set_new(j, "mls_rejoins_held",
                        json_integer((json_int_t)msv_client_mls_rejoins_held(c)));
    json_object_set_new(j, "invitations_dropped",
                        json_integer((json_int_t)msv_client_invitations_dropped(c)));
    json_object_set_new(j, "early_changes_dropped",
                        json_integer((json_int_t)msv_client_early_changes_dropped(c)));
    json_object_set_new(j, "mls_keyings_made",
                        json_integer((json_int_t)msv_client_mls_keyings_made(c)));
    json_object_set_new(j, "mls_keyings_put_off",
                        json_integer((json_int_t)msv_client_mls_keyings_put_off(c)));
}

/*
 * This device's own counts, with its row (j) or on a line under it (text, when one is not 0):
 * one-time prekey secrets of lost uploads deleted once their bound passed, and sealed envelopes
 * it could not open (sealed to a key it does not hold, or made classically to it), and the
 * connections whose publishing of its keys failed; then what its limits held back or gave up:
 * owed messages, foundings again of groups on MLS, waits of groups on MLS, commits by
 * reference not fetched, members' asks to join a group on MLS again not kept, group
 * invitations dropped, edits and unsends of messages not here yet dropped; then the commits to
 * groups on MLS its receives made (keying a path, renewing a leaf) and their tries put off.
 */
static void own_counts(struct msv_client *c, json_t *j)
{
    uint64_t reclaimed, unopenable, downgrades, unpublished, owed, held, waits, by_ref, rejoins,
        invitations, early, keyings, put_off;

    if (j != NULL) {
        cli_own_counts_json(c, j);
        return;
    }
    reclaimed = msv_client_prekeys_reclaimed(c);
    unopenable = msv_client_sealed_unopenable(c);
    downgrades = msv_client_sealed_downgrades(c);
    unpublished = msv_client_keys_unpublished(c);
    owed = msv_client_owed_given_up(c);
    held = msv_client_mls_refoundings_held(c);
    waits = msv_client_mls_waits_given_up(c);
    by_ref = msv_client_mls_by_ref_held(c);
    rejoins = msv_client_mls_rejoins_held(c);
    invitations = msv_client_invitations_dropped(c);
    early = msv_client_early_changes_dropped(c);
    keyings = msv_client_mls_keyings_made(c);
    put_off = msv_client_mls_keyings_put_off(c);
    if (reclaimed + unopenable + downgrades + unpublished > 0)
        fprintf(cli_out,
                "        this device: %llu prekeys of lost uploads reclaimed, %llu sealed "
                "envelopes it could not open, %llu made classically to it refused, %llu "
                "publishings of its keys failed\n",
                (unsigned long long)reclaimed, (unsigned long long)unopenable,
                (unsigned long long)downgrades, (unsigned long long)unpublished);
    if (owed + held + waits + by_ref + rejoins + invitations + early > 0)
        fprintf(cli_out,
                "        this device's limits: %llu owed messages given up, %llu foundings "
                "again of groups on MLS held back (at most hourly), %llu waits of groups on MLS "
                "given up, %llu commits by reference not fetched (64 MiB a device an hour), "
                "%llu asks to join a group on MLS again not kept (256 at once), %llu group "
                "invitations dropped (20 waiting from one handle, 1,000 in all), %llu edits "
                "and unsends of messages not here yet dropped (32 waiting from one handle, 256 "
                "in all)\n",
                (unsigned long long)owed, (unsigned long long)held, (unsigned long long)waits,
                (unsigned long long)by_ref, (unsigned long long)rejoins,
                (unsigned long long)invitations, (unsigned long long)early);
    if (keyings + put_off > 0)
        fprintf(cli_out,
                "        this device's commits to groups on MLS from its receives: %llu made "
                "(keying a path, renewing a leaf), %llu tries put off\n",
                (unsigned long long)keyings, (unsigned long long)put_off);
}

static void print_device(const struct cli *o, struct msv_client *c, const char *handle,
                         json_t *list, const Msv__Wire__DeviceInfo *d, uint64_t self)
{
    struct msv_public_identity *pub = NULL;
    char fp[MSV_FINGERPRINT_TEXT_LEN] = "(unreadable identity)", also[40] = "";
    json_t *compat = json_array();
    unsigned suites = 0;
    uint8_t h[32];
    int pq = 0, session = d->device_id == self ? MSV_SESSION_NONE : msv_sessions_kind(c, handle, d);
    uint64_t downgrades = msv_sessions_downgrades(c, d->device_id),
             classical = msv_client_classical_read(c, d->device_id);
    char refused[64] = "", read[64] = "";

    if (msv_public_identity_parse((enum msv_suite)d->suite, d->identity.data, d->identity.len,
                                  &pub) == MSV_OK) {
        msv_public_identity_hash(pub, h);
        msv_fingerprint_text(h, fp);
        suites = msv_public_identity_suites(pub);
        pq = msv_public_identity_is_pq(pub);
    }
    msv_public_identity_free(pub);
    /* the other suites it speaks, for devices that speak nothing else */
    for (int s = MSV_SUITE_MODERN; s >= MSV_SUITE_CLASSIC; s--) {
        if ((uint32_t)s == d->suite || !(suites & MSV_SUITE_BIT(s)))
            continue;
        json_array_append_new(compat, json_string(msv_suite_name((enum msv_suite)s)));
        snprintf(also + strlen(also), sizeof(also) - strlen(also), "%s%s", also[0] ? "," : " +",
                 msv_suite_name((enum msv_suite)s));
    }
    if (o->json) {
        json_t *j = json_object();

        json_object_set_new(j, "device_id", json_integer((json_int_t)d->device_id));
        json_object_set_new(j, "suite", json_string(msv_suite_name(d->suite)));
        json_object_set_new(j, "compat", compat);
        json_object_set_new(j, "fingerprint", json_string(fp));
        json_object_set_new(j, "this_device", json_boolean(d->device_id == self));
        json_object_set_new(j, "post_quantum", json_boolean(pq));
        json_object_set_new(j, "session", json_string(cli_session_kind_name(session)));
        json_object_set_new(j, "downgrades_refused", json_integer((json_int_t)downgrades));
        json_object_set_new(j, "classical_read", json_integer((json_int_t)classical));
        json_object_set_new(j, "kem_steps",
                            json_integer(d->device_id == self
                                             ? 0
                                             : (json_int_t)msv_sessions_kem_steps(c, handle, d)));
        if (d->device_id == self)
            own_counts(c, j);
        json_array_append_new(list, j);
    } else {
        json_decref(compat);
        if (downgrades > 0)
            snprintf(refused, sizeof(refused), "  (%llu classical messages refused)",
                     (unsigned long long)downgrades);
        if (classical > 0)
            snprintf(read, sizeof(read), "  (%llu classical envelopes read)",
                     (unsigned long long)classical);
        fprintf(cli_out, "%6llu  %-7s  %s%s%s%s%s%s%s\n", (unsigned long long)d->device_id,
                msv_suite_name(d->suite), fp, d->device_id == self ? "  (this device)" : "", also,
                pq ? "  post-quantum" : "",
                session == MSV_SESSION_PQ          ? "  (post-quantum session)"
                : session == MSV_SESSION_CLASSICAL ? "  (classical session)"
                                                   : "",
                refused, read);
        if (d->device_id == self)
            own_counts(c, NULL);
    }
}

static int show_devices(const struct cli *o, struct msv_client *c, const char *handle)
{
    msv_frame *r = NULL;
    msv_err err = msv_client_devices(c, handle, &r);
    json_t *list = json_array();

    if (err != MSV_OK) {
        json_decref(list);
        return fail(c, "looking up devices", err);
    }
    for (size_t i = 0; i < r->lookup_result->results[0]->n_devices; i++)
        print_device(o, c, handle == NULL ? c->handle : handle, list,
                     r->lookup_result->results[0]->devices[i], handle == NULL ? c->device_id : 0);
    if (o->json)
        emit_json(list);
    else
        json_decref(list);
    msv_frame_free(r);
    return 0;
}

/* account delete --yes: the account, on the server and here. */
static int account_delete(const struct cli *o, struct msv_client *c)
{
    char *pw;
    msv_err err;

    if (!o->yes) {
        fprintf(cli_err,
                "missive: this deletes the account %s on the server for good: every device of "
                "it, the messages waiting for them and its attachments; contacts who look it up "
                "see it was deleted. Then it deletes %s on this machine (keys, messages, "
                "contacts, groups, settings, received files). Run again with --yes to do it.\n",
                c->handle, c->dir);
        return EXIT_USAGE;
    }
    if ((pw = cli_password(o)) == NULL)
        return EXIT_USAGE;
    err = msv_client_delete_account(c, pw);
    free_secret(pw);
    if (err == MSV_OK && o->json)
        emit_json(json_pack("{s:s, s:s, s:s}", "status", "deleted", "handle", c->handle, "deleted",
                            c->dir));
    else if (err == MSV_OK)
        fprintf(cli_out, "deleted the account %s; deleted %s\n", c->handle, c->dir);
    return err == MSV_OK ? 0 : fail(c, "deleting the account", err);
}

/* This device leaves its account and deletes its state here, once --yes says so. */
static int leave(const struct cli *o, struct msv_client *c)
{
    unsigned long long id = (unsigned long long)c->device_id;
    msv_err err;

    if (!o->yes) {
        fprintf(cli_err,
                "missive: this removes device %llu from %s on the server and deletes %s on this "
                "machine: this device's keys, its messages, contacts, groups and settings, and "
                "the files it received; none of it can be had back (but from a backup). Run "
                "again with --yes to do it.\n",
                id, c->handle, c->dir);
        return EXIT_USAGE;
    }
    err = msv_client_leave(c);
    if (err == MSV_OK && o->json)
        emit_json(json_pack("{s:s, s:I, s:s}", "status", "left", "device_id", (json_int_t)id,
                            "deleted", c->dir));
    else if (err == MSV_OK)
        fprintf(cli_out, "device %llu left %s; deleted %s\n", id, c->handle, c->dir);
    return err == MSV_OK ? 0 : fail(c, "leaving the account", err);
}

static int cmd_devices(const struct cli *o, struct msv_client *c)
{
    char *end;
    unsigned long long id;
    msv_err err;

    if (o->argc == 0 || (o->argc == 1 && strcmp(o->argv[0], "list") == 0))
        return show_devices(o, c, NULL);
    if (strcmp(o->argv[0], "add") == 0)
        return devices_add(o, c);
    if (o->argc != 2 || (strcmp(o->argv[0], "remove") != 0 && strcmp(o->argv[0], "approve") != 0))
        return cli_usage("devices", cli_err);
    errno = 0;
    id = strtoull(o->argv[1], &end, 10);
    if (errno != 0 || *end != '\0' || id == 0)
        return cli_usage("devices", cli_err);
    if (strcmp(o->argv[0], "approve") == 0) {
        err = msv_client_approve_device(c, id);
        if (err == MSV_ERR_NOT_FOUND) {
            size_t n = 0;

            /* its request may still wait in this device's queue: receive (and show) it first */
            err = msv_client_receive(c, 1000, o->on_incoming ? o->on_incoming : cli_show_or_stop,
                                     o->on_incoming ? o->incoming_ctx : (void *)o, &n);
            if (err == MSV_OK)
                err = msv_client_approve_device(c, id);
        }
        if (err == MSV_OK)
            fprintf(cli_out, "approved device %llu; the account's other devices are told\n", id);
        if (err == MSV_OK && c->why.message[0] != '\0') {
            fputs("note: ", cli_err);
            term_put(cli_err, c->why.message, TERM_ONE_LINE);
            fputc('\n', cli_err);
        }
        return err == MSV_OK ? 0 : fail(c, "approving the device (is it waiting?)", err);
    }
    if (id == c->device_id)
        return leave(o, c);
    err = msv_client_remove_device(c, id);
    if (err == MSV_OK)
        fprintf(cli_out, "removed device %llu; the account's other devices are told\n", id);
    return err == MSV_OK ? 0 : fail(c, "removing the device", err);
}

static int show_handles(const struct cli *o, struct msv_client *c)
{
    char **handles = NULL;
    size_t n = 0;
    msv_err err = msv_client_handles(c, &handles, &n);
    json_t *list = json_array();

    if (err != MSV_OK) {
        json_decref(list);
        return fail(c, "listing the handles", err);
    }
    for (size_t i = 0; i < n; i++) {
        int username = strchr(handles[i], '@') == NULL && handles[i][0] != '+';

        if (o->json)
            json_array_append_new(list, json_pack("{s:s, s:b, s:b}", "handle", handles[i], "first",
                                                  i == 0, "username", username));
        else
            fprintf(cli_out, "%s%s\n", handles[i],
                    i == 0     ? "\t(first)"
                    : username ? "\t(username)"
                               : "");
    }
    if (o->json)
        emit_json(list);
    else
        json_decref(list);
    msv_handles_free(handles, n);
    return 0;
}

/* handles add, verify and remove: what changed, as text or -o json. */
static int handle_changed(const struct cli *o, struct msv_client *c, const char *handle,
                          const char *status, const char *what, msv_err err)
{
    if (err != MSV_OK)
        return fail(c, what, err);
    if (o->json)
        emit_json(json_pack("{s:s, s:s}", "status", status, "handle", handle));
    else if (strcmp(status, "code_sent") == 0)
        fprintf(cli_out,
                "a code went to %s; make it this account's with: missive handles verify %s "
                "--code CODE\n",
                handle, handle);
    else
        fprintf(cli_out, "%s %s; the account's other devices are told\n", status, handle);
    return 0;
}

static int cmd_handles(const struct cli *o, struct msv_client *c)
{
    const char *verb = o->argc > 0 ? o->argv[0] : "list";

    if (strcmp(verb, "list") == 0 && o->argc <= 1)
        return show_handles(o, c);
    if (o->argc != 2)
        return cli_usage("handles", cli_err);
    if (strcmp(verb, "add") == 0)
        return handle_changed(o, c, o->argv[1], "code_sent", "adding the handle",
                              msv_client_handle_add(c, o->argv[1]));
    if (strcmp(verb, "verify") == 0 && o->code != NULL)
        return handle_changed(o, c, o->argv[1], "added", "verifying the handle",
                              msv_client_handle_verify(c, o->argv[1], o->code));
    if (strcmp(verb, "remove") != 0)
        return cli_usage("handles", cli_err);
    if (!o->yes) {
        fprintf(cli_err,
                "missive: this removes %s from the account %s: messages to it no longer reach "
                "the account, and its entry in the transparency log says it was removed. Run "
                "again with --yes to do it.\n",
                o->argv[1], c->handle);
        return EXIT_USAGE;
    }
    return handle_changed(o, c, o->argv[1], "removed", "removing the handle",
                          msv_client_handle_remove(c, o->argv[1]));
}

static int cmd_username(const struct cli *o, struct msv_client *c)
{
    const char *verb = o->argc > 0 ? o->argv[0] : "show";
    char *name = NULL;
    msv_err err;

    if (strcmp(verb, "show") == 0 && o->argc <= 1) {
        if ((err = msv_client_username(c, &name)) != MSV_OK)
            return fail(c, "reading the username", err);
        if (o->json)
            emit_json(json_pack("{s:s?}", "username", name[0] != '\0' ? name : NULL));
        else
            fprintf(cli_out, "%s\n", name[0] != '\0' ? name : "(no username)");
        free(name);
        return 0;
    }
    if (strcmp(verb, "set") == 0 && o->argc == 2) {
        char norm[MSV_USERNAME_MAX + 1];

        if (!msv_username_normalise((const uint8_t *)o->argv[1], strlen(o->argv[1]), norm)) {
            fprintf(cli_err, "missive: a username is 3 to 24 letters and digits beginning with "
                             "a letter, a dot and 2 to 9 digits, as alice.42\n");
            return EXIT_USAGE;
        }
        return handle_changed(o, c, norm, "set", "setting the username",
                              msv_client_username_set(c, norm));
    }
    if (strcmp(verb, "remove") == 0 && o->argc == 1) {
        err = msv_client_username_remove(c);
        if (err == MSV_OK && o->json)
            emit_json(json_pack("{s:s}", "status", "removed"));
        else if (err == MSV_OK)
            fprintf(cli_out, "username released; the account's other devices are told\n");
        return err == MSV_OK ? 0 : fail(c, "releasing the username", err);
    }
    return cli_usage("username", cli_err);
}

static int cmd_password(const struct cli *o, struct msv_client *c)
{
    char *pw = NULL, *new_pw = NULL;
    msv_err err;
    int rc = EXIT_USAGE;

    if (o->argc != 1 || strcmp(o->argv[0], "change") != 0)
        return cli_usage("password", cli_err);
    if ((pw = cli_password(o)) != NULL && (new_pw = cli_new_password(o)) != NULL) {
        err = msv_client_password_change(c, pw, new_pw);
        if (err == MSV_OK && o->json)
            emit_json(json_pack("{s:s}", "status", "changed"));
        else if (err == MSV_OK)
            fprintf(cli_out, "password changed; the account's other devices are told\n");
        rc = err == MSV_OK ? 0 : fail(c, "changing the password", err);
    }
    free_secret(pw);
    free_secret(new_pw);
    return rc;
}

/* password reset HANDLE --server HOST:PORT --code CODE: needs no device of the account here. */
static int cmd_password_reset(const struct cli *o)
{
    struct msv_client why = {0}; /* only its refusal, for fail() */
    char host[256], *pw;
    const char *others = NULL;
    uint16_t port = 0;
    msv_err err;

    if (o->argc != 2 || o->code == NULL || o->server == NULL ||
        parse_servers(o->server, host, sizeof(host), &port, &others) != 0)
        return cli_usage("password", cli_err);
    if ((pw = cli_new_password(o)) == NULL)
        return EXIT_USAGE;
    err = msv_client_password_reset(host, port, o->argv[1], o->code, pw, &why.why);
    free_secret(pw);
    if (err == MSV_OK && o->json)
        emit_json(json_pack("{s:s, s:s}", "status", "reset", "handle", o->argv[1]));
    else if (err == MSV_OK)
        fprintf(cli_out, "password reset for %s; the account's devices are told\n", o->argv[1]);
    return err == MSV_OK ? 0 : fail(&why, "resetting the password", err);
}

/* A line of two fields that others may have named, separated by a tab. */
static void print_fields(const char *a, const char *b)
{
    term_put(cli_out, a, TERM_ONE_LINE);
    fputc('\t', cli_out);
    term_put(cli_out, b, TERM_ONE_LINE);
    fputc('\n', cli_out);
}

static int cmd_contacts(const struct cli *o, struct msv_client *c)
{
    struct msv_contact *list = NULL;
    size_t n = 0;
    msv_err err;

    if (o->argc == 3 && strcmp(o->argv[0], "add") == 0) {
        err = msv_client_db_contact_add(c->db, o->argv[1], o->argv[2]);
        /* a contact's request is accepted */
        if (err == MSV_OK && msv_client_is_request(c, o->argv[2]))
            err = msv_client_request_accept(c, o->argv[2]);
        return err == MSV_OK ? 0 : fail(c, "adding the contact", err);
    }
    if (o->argc == 2 && strcmp(o->argv[0], "remove") == 0) {
        err = msv_client_db_contact_remove(c->db, o->argv[1]);
        return err == MSV_OK ? 0 : fail(c, "removing the contact", err);
    }
    if (o->argc > 1 || (o->argc == 1 && strcmp(o->argv[0], "list") != 0))
        return cli_usage("contacts", cli_err);
    err = msv_client_db_contacts(c->db, NULL, &list, &n);
    if (err != MSV_OK)
        return fail(c, "listing contacts", err);
    for (size_t i = 0; i < n; i++) {
        if (o->json) {
            emit_json(json_pack("{s:s, s:s}", "name", list[i].name, "handle", list[i].handle));
        } else {
            print_fields(list[i].name, list[i].handle);
        }
    }
    msv_contacts_free(list, n);
    return 0;
}

/* Reads the message text from --text or standard input (trailing newline dropped). */
char *cli_message_text(const struct cli *o)
{
    size_t len = 0, cap = 4096;
    char *buf;

    if (o->text != NULL)
        return strdup(o->text);
    if (o->no_stdin) {
        fprintf(cli_err, "missive: give the message as --text (or files with --file)\n");
        return NULL;
    }
    buf = malloc(cap);
    while (buf != NULL) {
        size_t n = fread(buf + len, 1, cap - len - 1, stdin);

        len += n;
        if (n == 0)
            break;
        if (len + 1 == cap) {
            char *bigger = cap > MSV_TEXT_MAX ? NULL : realloc(buf, cap * 2);

            if (bigger == NULL) {
                free(buf);
                return NULL;
            }
            buf = bigger;
            cap *= 2;
        }
    }
    if (buf != NULL) {
        while (len > 0 && buf[len - 1] == '\n')
            len--;
        buf[len] = '\0';
    }
    return buf;
}

#define FILE_MAX (64u << 20)

/* Reads the --file arguments into memory (at most 64 MiB each). */
static int load_files(const struct cli *o, struct msv_file *files)
{
    for (size_t i = 0; i < o->file_count; i++) {
        FILE *f = fopen(o->files[i], "rb");
        struct stat st;
        uint8_t *data;
        const char *slash = strrchr(o->files[i], '/');

        if (f == NULL || fstat(fileno(f), &st) != 0 || !S_ISREG(st.st_mode)) {
            fprintf(cli_err, "missive: %s: %s\n", o->files[i],
                    f == NULL ? strerror(errno) : "not a regular file");
            if (f != NULL)
                fclose(f);
            return -1;
        }
        if (st.st_size == 0 || (uint64_t)st.st_size > FILE_MAX) {
            fprintf(cli_err, "missive: %s: files are sent from 1 byte to 64 MiB\n", o->files[i]);
            fclose(f);
            return -1;
        }
        data = malloc((size_t)st.st_size);
        if (data == NULL || fread(data, 1, (size_t)st.st_size, f) != (size_t)st.st_size) {
            fprintf(cli_err, "missive: %s: cannot read it\n", o->files[i]);
            free(data);
            fclose(f);
            return -1;
        }
        fclose(f);
        files[i] = (struct msv_file){slash ? slash + 1 : o->files[i], "application/octet-stream",
                                     data, (size_t)st.st_size};
    }
    return 0;
}

/* Upload progress, for a person watching. */
static void show_progress(uint64_t done, uint64_t total)
{
    if (!isatty(STDERR_FILENO) || total < (1u << 20))
        return;
    fprintf(cli_err, "\ruploading: %3u%%", (unsigned)(done * 100 / total));
    if (done == total)
        fputc('\n', cli_err);
}

/* Contact names stand for their handles; anything else is taken as a handle. */
static size_t resolve(struct msv_client *c, char **names, int n, const char **handles, size_t max,
                      struct msv_contact **found, size_t *counts)
{
    size_t k = 0;

    for (int i = 0; i < n && k < max; i++) {
        if (msv_client_db_contacts(c->db, names[i], &found[i], &counts[i]) == MSV_OK &&
            counts[i] > 0) {
            for (size_t j = 0; j < counts[i] && k < max; j++)
                handles[k++] = found[i][j].handle;
        } else {
            handles[k++] = names[i];
        }
    }
    return k;
}

static void resolved_free(struct msv_contact **found, size_t *counts, int n)
{
    for (int i = 0; i < n; i++)
        msv_contacts_free(found[i], counts[i]);
}

/* Says why a group named by which (a name or group:HEX) was not found. */
static void explain_group(const char *which, msv_err err)
{
    if (err == MSV_ERR_NOT_FOUND)
        fprintf(cli_err,
                "missive: no group %s (an invitation is accepted first: missive groups "
                "accept ID)\n",
                which);
    else if (err == MSV_ERR_EXISTS)
        fprintf(cli_err,
                "missive: more than one group is named %s: name it by its id (missive "
                "groups list)\n",
                which);
}

/* A list of one handle a line, in place, as "A,B". */
static void commas(char *list)
{
    for (char *m = list; *m; m++)
        *m = *m == '\n' && m[1] ? ',' : (*m == '\n' ? '\0' : *m);
}

/* "\tadmins: A,B" after a group's line, and its end; nothing for a group without signed state. */
static void print_admins(struct msv_client *c, const uint8_t group_id[16])
{
    char *admins = NULL;

    if (msv_client_group_admins(c, group_id, &admins) == MSV_OK) {
        commas(admins);
        fputs("\tadmins: ", cli_out);
        term_put(cli_out, admins, TERM_ONE_LINE);
    }
    free(admins);
    fputc('\n', cli_out);
}

static int is_invite_verb(const char *verb)
{
    static const char *const verbs[] = {"invite", "join", "requests", "approve", "deny"};

    for (size_t i = 0; i < sizeof(verbs) / sizeof(verbs[0]); i++)
        if (strcmp(verb, verbs[i]) == 0)
            return 1;
    return 0;
}

/* groups invite GROUP [--approval on|off] [--reset | --off]: the link, or that links are off. */
static int cmd_group_invite(const struct cli *o, struct msv_client *c)
{
    enum msv_invite_action act = o->reset ? MSV_INVITE_RESET : (o->off ? MSV_INVITE_OFF : 0);
    char *uri = NULL;
    msv_err err;

    if (o->reset && o->off)
        return cli_usage("groups", cli_err);
    err = msv_client_group_invite(c, o->argv[1], act, o->has_approval ? o->approval : -1, &uri);
    if (err == MSV_ERR_AUTH)
        fprintf(cli_err, "missive: you are not an admin of %s: only admins make invite links\n",
                o->argv[1]);
    else
        explain_group(o->argv[1], err);
    if (err != MSV_OK)
        return fail(c, "making the invite link", err);
    if (o->json)
        emit_json(json_pack("{s:s, s:o}", "group", o->argv[1], "uri",
                            uri ? json_string(uri) : json_null()));
    else if (uri != NULL)
        fprintf(cli_out, "%s\n", uri);
    else
        fprintf(cli_out, "invite links of %s are off\n", o->argv[1]);
    free(uri);
    return 0;
}

/* groups requests GROUP: who waits for an admin, and how many requests were refused. */
static int cmd_group_requests(const struct cli *o, struct msv_client *c)
{
    char *list = NULL;
    uint64_t refused = 0;
    json_t *pending;
    msv_err err = msv_client_group_requests(c, o->argv[1], &list, &refused);

    explain_group(o->argv[1], err);
    if (err != MSV_OK)
        return fail(c, "listing the requests", err);
    pending = json_array();
    for (char *h = list, *nl; h != NULL && *h != '\0'; h = nl ? nl + 1 : NULL) {
        if ((nl = strchr(h, '\n')) != NULL)
            *nl = '\0';
        if (o->json) {
            json_array_append_new(pending, json_string(h));
        } else {
            term_put(cli_out, h, TERM_ONE_LINE);
            fputc('\n', cli_out);
        }
    }
    if (o->json)
        emit_json(json_pack("{s:s, s:O, s:I}", "group", o->argv[1], "pending", pending, "refused",
                            (json_int_t)refused));
    else
        fprintf(cli_out, "%llu request%s to join refused (any group)\n",
                (unsigned long long)refused, refused == 1 ? "" : "s");
    json_decref(pending);
    free(list);
    return 0;
}

/* invite, join, requests, approve, deny: invite links (docs/groups.md, "Invite links"). */
static int cmd_group_invites(const struct cli *o, struct msv_client *c, const char *verb)
{
    int approve = strcmp(verb, "approve") == 0;
    msv_err err;

    if (o->argc != (approve || strcmp(verb, "deny") == 0 ? 3 : 2))
        return cli_usage("groups", cli_err);
    if (strcmp(verb, "invite") == 0)
        return cmd_group_invite(o, c);
    if (strcmp(verb, "requests") == 0)
        return cmd_group_requests(o, c);
    if (strcmp(verb, "join") == 0) {
        err = msv_client_group_join(c, o->argv[1]);
        if (err == MSV_ERR_PARSE || err == MSV_ERR_TOO_BIG)
            fprintf(cli_err, "missive: not an invite link (missive:join?g=...&s=...&a=...)\n");
        else if (err == MSV_ERR_EXISTS)
            fprintf(cli_err, "missive: you are in this group already\n");
        if (err != MSV_OK)
            return fail(c, "asking to join", err);
        if (o->json)
            emit_json(json_pack("{s:s}", "status", "request sent"));
        else
            fprintf(cli_out, "request sent: the group appears once an admin adds you\n");
        return 0;
    }
    err = msv_client_group_decide(c, o->argv[1], o->argv[2], approve);
    if (err == MSV_ERR_AUTH)
        fprintf(cli_err, "missive: you are not an admin of %s: only admins decide\n", o->argv[1]);
    else if (err == MSV_ERR_EXISTS)
        fprintf(cli_err, "missive: %s is in %s already\n", o->argv[2], o->argv[1]);
    else if (err == MSV_ERR_NOT_FOUND)
        fprintf(cli_err, "missive: no request of %s to join %s (missive groups requests %s)\n",
                o->argv[2], o->argv[1], o->argv[1]);
    if (err != MSV_OK)
        return fail(c, approve ? "approving the request" : "denying the request", err);
    if (o->json)
        emit_json(json_pack("{s:s, s:s, s:s}", "group", o->argv[1], "handle", o->argv[2], "status",
                            approve ? "approved" : "denied"));
    else
        fprintf(cli_out, "%s %s\n", approve ? "approved" : "denied", o->argv[2]);
    return 0;
}

/* groups code GROUP: the MLS group's epoch and code, to compare with the other members. */
static int cmd_group_code(const struct cli *o, struct msv_client *c)
{
    struct msv_group_rec g = {0};
    char code[MSV_GROUP_CODE_LEN + 1];
    uint32_t generation = 0;
    uint64_t epoch = 0;
    msv_err err = msv_client_group_find(c, o->argv[1], &g);

    explain_group(o->argv[1], err);
    if (err == MSV_OK && (err = msv_client_group_code(c, g.group_id, &generation, &epoch, code)) ==
                             MSV_ERR_NOT_FOUND)
        fprintf(cli_err,
                "missive: %s is not on MLS on this device: it has no group state to compare "
                "(compare each member's safety number: missive verify HANDLE)\n",
                o->argv[1]);
    msv_group_clear(&g);
    if (err != MSV_OK)
        return fail(c, "reading the group's code", err);
    if (o->json)
        emit_json(json_pack("{s:s, s:I, s:I, s:s}", "group", o->argv[1], "generation",
                            (json_int_t)generation, "epoch", (json_int_t)epoch, "code", code));
    else
        fprintf(cli_out,
                "%s\n(generation %u, epoch %llu: a member at the same epoch and generation sees "
                "the same code; a different one means you do not hold the same group)\n",
                code, (unsigned)generation, (unsigned long long)epoch);
    return 0;
}

/* The people one groups command names: as many as one change adds or removes. */
#define GROUP_ARGS_MAX MSV_GROUP_DELTA_MAX

static int cmd_groups(const struct cli *o, struct msv_client *c)
{
    const char *handles[GROUP_ARGS_MAX];
    struct msv_contact *found[GROUP_ARGS_MAX] = {0};
    size_t counts[GROUP_ARGS_MAX] = {0}, n = 0;
    const char *verb = o->argc ? o->argv[0] : "list";
    uint8_t id[16];
    msv_err err = MSV_OK;

    if (strcmp(verb, "list") == 0 && o->argc <= 1) {
        struct msv_group_rec *g = NULL;

        err = msv_client_db_groups(c->db, &g, &n);
        for (size_t i = 0; err == MSV_OK && i < n; i++) {
            char gid[40];

            commas(g[i].members);
            msv_client_group_conversation(g[i].group_id, gid);
            if (o->json) {
                char *admins = NULL;
                json_t *row = json_pack("{s:s, s:s, s:s, s:b, s:b}", "name", g[i].name, "members",
                                        g[i].members, "id", gid, "invited", !g[i].accepted, "mls",
                                        msv_client_group_on_mls(c, g[i].group_id));

                if (msv_client_group_admins(c, g[i].group_id, &admins) == MSV_OK) {
                    commas(admins);
                    json_object_set_new(row, "admins", json_string(admins));
                }
                free(admins);
                emit_json(row);
            } else {
                term_put(cli_out, g[i].name, TERM_ONE_LINE);
                fputc('\t', cli_out);
                term_put(cli_out, g[i].members, TERM_ONE_LINE);
                fprintf(cli_out, "\t%s%s", gid, g[i].accepted ? "" : "\tinvited");
                print_admins(c, g[i].group_id);
            }
        }
        msv_groups_free(g, n);
        return err == MSV_OK ? 0 : fail(c, "listing groups", err);
    }
    if (strcmp(verb, "accept") == 0 && o->argc == 2) {
        err = msv_client_group_accept(c, o->argv[1]);
        explain_group(o->argv[1], err);
        return err == MSV_OK ? 0 : fail(c, "accepting the group", err);
    }
    if (is_invite_verb(verb))
        return cmd_group_invites(o, c, verb);
    if (strcmp(verb, "code") == 0 && o->argc == 2)
        return cmd_group_code(o, c);
    if (strcmp(verb, "leave") == 0 && o->argc == 2) {
        err = msv_client_group_leave(c, o->argv[1]);
        explain_group(o->argv[1], err);
        return err == MSV_OK ? 0 : fail(c, "leaving the group", err);
    }
    if (o->argc < 3 || o->argc > GROUP_ARGS_MAX + 2)
        return cli_usage("groups", cli_err);
    n = resolve(c, o->argv + 2, o->argc - 2, handles, GROUP_ARGS_MAX, found, counts);
    if (strcmp(verb, "create") == 0)
        err = msv_client_group_create(c, o->argv[1], handles, n, id);
    else if (strcmp(verb, "add") == 0)
        err = msv_client_group_change(c, o->argv[1], NULL, handles, n, NULL, 0);
    else if (strcmp(verb, "remove") == 0)
        err = msv_client_group_change(c, o->argv[1], NULL, NULL, 0, handles, n);
    else if (strcmp(verb, "rename") == 0 && o->argc == 3)
        err = msv_client_group_change(c, o->argv[1], o->argv[2], NULL, 0, NULL, 0);
    else if ((strcmp(verb, "promote") == 0 || strcmp(verb, "demote") == 0) && n == 1)
        err = msv_client_group_admin(c, o->argv[1], handles[0], strcmp(verb, "promote") == 0);
    else
        err = MSV_ERR_INVALID;
    resolved_free(found, counts, o->argc - 2);
    if (err == MSV_ERR_INVALID)
        return cli_usage("groups", cli_err);
    if (err == MSV_ERR_EXISTS && (strcmp(verb, "create") == 0 || strcmp(verb, "rename") == 0))
        fprintf(cli_err, "missive: you have a group named %s already\n",
                o->argv[strcmp(verb, "create") == 0 ? 1 : 2]);
    else if (err == MSV_ERR_AUTH)
        fprintf(cli_err, "missive: you are not an admin of %s: only admins change a group\n",
                o->argv[1]);
    else if (strcmp(verb, "create") != 0)
        explain_group(o->argv[1], err);
    return err == MSV_OK ? 0 : fail(c, "changing the group", err);
}

/* send --reply-to ID: to the conversation of message ID, which TO or --group must name. */
static msv_err send_reply(const struct cli *o, struct msv_client *c, const char *to,
                          const char *text, const struct msv_file *files, uint8_t id[16])
{
    char conversation[40];
    uint8_t answered[16];
    size_t len = 0;
    struct msv_group_rec g;
    msv_err err;

    if (msv_hex_decode(o->reply_to, answered, sizeof(answered), &len) != MSV_OK || len != 16 ||
        (to == NULL && o->group == NULL)) {
        fprintf(cli_err, "missive: --reply-to takes the id of a message (32 hex digits), with "
                         "one TO or --group\n");
        return MSV_ERR_INVALID;
    }
    if (o->group != NULL) {
        err = msv_client_group_find(c, o->group, &g);
        if (err != MSV_OK)
            return err;
        msv_client_group_conversation(g.group_id, conversation);
        msv_group_clear(&g);
        to = conversation;
    }
    err = msv_client_reply(c, answered, to, text, files, o->file_count, show_progress, id);
    if (err == MSV_ERR_INVALID || err == MSV_ERR_NOT_FOUND)
        fprintf(cli_err, "missive: %s is not a message of this conversation\n", o->reply_to);
    return err;
}

static int cmd_send(const struct cli *o, struct msv_client *c)
{
    const char *handles[64];
    struct msv_file files[8] = {{0}};
    struct msv_contact *found[64] = {0};
    size_t counts[64] = {0}, n = 0;
    uint8_t id[16];
    char *text, hex[33];
    msv_err err;
    int rc = 0;

    if ((o->group == NULL) == (o->argc == 0) || o->argc > 64)
        return cli_usage("send", cli_err);
    n = resolve(c, o->argv, o->argc, handles, 64, found, counts);
    text = o->file_count > 0 && o->text == NULL ? NULL : cli_message_text(o);
    if (o->file_count == 0 && (text == NULL || text[0] == '\0')) {
        fprintf(cli_err, "missive: nothing to send (give --text or pipe the message in)\n");
        rc = EXIT_USAGE;
    } else if (load_files(o, files) != 0) {
        rc = EXIT_ERR;
    } else if (o->from != NULL && (o->group != NULL || n != 1)) {
        fprintf(cli_err, "missive: --from goes with a message to one person\n");
        rc = EXIT_USAGE;
    } else if (o->from != NULL && (err = msv_client_send_from(c, o->from)) != MSV_OK) {
        rc = fail(c, "choosing the handle to send from (is it one of this account's?)", err);
    } else {
        if (o->reply_to != NULL)
            err = send_reply(o, c, n == 1 ? handles[0] : NULL, text, files, id);
        else if (o->group != NULL)
            err = msv_client_group_send(c, o->group, text, files, o->file_count, show_progress, id);
        else
            err = msv_client_send(c, handles, n, text, files, o->file_count, show_progress, id);
        c->from[0] = '\0'; /* --from was for this send */
        if (o->group != NULL)
            explain_group(o->group, err);
        if (err == MSV_OK) {
            if (msv_hex_encode(id, 16, hex, sizeof(hex)) != MSV_OK)
                hex[0] = '\0';
            if (o->json)
                fprintf(cli_out, "{\"message_id\":\"%s\",\"status\":\"sent\"}\n", hex);
            else
                fprintf(cli_out, "sent %s\n", hex);
        } else if (o->reply_to != NULL && (err == MSV_ERR_INVALID || err == MSV_ERR_NOT_FOUND)) {
            rc = EXIT_ERR; /* said why; nothing was sent */
        } else {
            rc = fail(c,
                      c->why.code == MSV_REFUSAL_BLOCKED || c->why.code == MSV_REFUSAL_GONE
                          ? "sending"
                          : "sending (the message stays queued in history)",
                      err);
        }
    }
    free_secret(text);
    for (size_t i = 0; i < o->file_count; i++)
        free((void *)files[i].data);
    resolved_free(found, counts, o->argc);
    return rc;
}

json_t *cli_message_json(const struct msv_message_rec *m)
{
    char hex[33];

    if (msv_hex_encode(m->message_id, 16, hex, sizeof(hex)) != MSV_OK)
        hex[0] = '\0';
    return json_pack("{s:s, s:s, s:s, s:I, s:b, s:s, s:I, s:s, s:I, s:o, s:b}", "message_id", hex,
                     "conversation", m->conversation, "from", m->sender, "from_device",
                     (json_int_t)m->sender_device, "outgoing", m->outgoing, "text", m->text,
                     "sent_at_ms", (json_int_t)m->sent_at_ms, "status", m->status, "timer_s",
                     (json_int_t)m->timer_s, "expires_at_ms",
                     m->expires_at_ms ? json_integer((json_int_t)m->expires_at_ms) : json_null(),
                     "request", !m->outgoing && (m->pending & MSV_MESSAGE_REQUEST) != 0);
}

/* When a message (or a version of it) was sent, as the text output shows it. */
static void put_time(int64_t at_ms)
{
    time_t t = (time_t)(at_ms / 1000);
    struct tm tm;
    char when[32];

    localtime_r(&t, &tm);
    strftime(when, sizeof(when), "%Y-%m-%d %H:%M", &tm);
    fprintf(cli_out, "[%s] ", when);
}

/* What to call a message's sender beside its handle; 0 if nothing (or own message). */
static int from_name(struct msv_client *c, const struct msv_message_rec *m, char *out, size_t len)
{
    return c != NULL && !m->outgoing && msv_client_sender_name(c, m->sender, out, len) == MSV_OK;
}

void cli_print_message(const struct cli *o, const struct msv_message_rec *m)
{
    char name[300];

    if (o->json) {
        emit_json(o->client != NULL ? cli_message_json_of(o->client, m) : cli_message_json(m));
        return;
    }
    put_time(m->sent_at_ms);
    /* everything but the time came from the network or from another person; a name is
     * shown with the handle, never instead of it */
    fputs(m->outgoing                               ? "me → "
          : (m->pending & MSV_MESSAGE_REQUEST) != 0 ? "[request] "
                                                    : "",
          cli_out);
    if (from_name(o->client, m, name, sizeof(name))) {
        term_put(cli_out, name, TERM_ONE_LINE);
        fputs(" (", cli_out);
    }
    term_put(cli_out, m->outgoing ? m->conversation : m->sender, TERM_ONE_LINE);
    if (from_name(o->client, m, name, sizeof(name)))
        fputc(')', cli_out);
    fputs(": ", cli_out);
    term_put(cli_out, strcmp(m->status, "unsent") == 0 ? "(unsent)" : m->text, TERM_LINES);
    if (m->outgoing || strcmp(m->status, "edited") == 0) {
        fputs("  (", cli_out);
        term_put(cli_out, m->status, TERM_ONE_LINE);
        fputc(')', cli_out);
    }
    fputc('\n', cli_out);
}

void cli_print_incoming(void *ctx, const struct msv_incoming *in)
{
    const struct cli *o = ctx;

    if (in->message != NULL)
        cli_print_message(o, in->message);
    else if (in->notice == NULL || in->kind == MSV_INCOMING_GROUP)
        return; /* a receipt, a group change's outcome: history shows it, its message said it */
    else if (in->kind == MSV_INCOMING_LINK_HISTORY && in->done != 0 && in->done != in->total)
        return; /* the history's progress on the way: its start and its end are told */
    else if (o->json)
        emit_json(json_pack("{s:s}", "notice", in->notice));
    else {
        fputs("notice: ", cli_out);
        term_put(cli_out, in->notice, TERM_LINES);
        fputc('\n', cli_out);
    }
    fflush(cli_out);
}

void cli_show_or_stop(void *ctx, const struct msv_incoming *in)
{
    cli_print_incoming(ctx, in);
    if (fflush(cli_out) != 0 || ferror(cli_out)) {
        /* nobody sees it: stop before it is recorded as shown, so that the next receive shows
         * it (and before it is acknowledged: it comes again, and is recognised) */
        fprintf(cli_err, "missive: cannot write what arrived: %s\n", strerror(errno));
        fflush(cli_err);
        _exit(EXIT_ERR);
    }
}

/* The transparency monitor found a device of this account that no device of it announced. */
void cli_print_alarm(void *ctx, const char *warning)
{
    const struct cli *o = ctx;

    fputs("missive: WARNING: ", cli_err);
    term_put(cli_err, warning, TERM_LINES);
    fputc('\n', cli_err);
    if (o->json)
        emit_json(json_pack("{s:s}", "alarm", warning));
    fflush(cli_out);
}

/* -o json, besides the alarm: which of this account's handles the server took away. */
static void cli_handle_taken_json(void *ctx, const char *handle, uint64_t index,
                                  const char *warning)
{
    (void)ctx;
    (void)warning;
    emit_json(json_pack("{s:s, s:I}", "handle_taken", handle, "log_index", (json_int_t)index));
    fflush(cli_out);
}

static int cmd_receive(const struct cli *o, struct msv_client *c)
{
    size_t n = 0, alarms = 0;
    msv_err err;

    if (o->argc != 0)
        return cli_usage("receive", cli_err);
    /* without --wait: what is queued, as soon as the server says it all came */
    c->receive_until_synced = !o->wait_given;
    err = msv_client_receive(c, (int)(o->wait_s * 1000), cli_show_or_stop, (void *)o, &n);
    /* then the log: the notices just received say which new devices are this account's */
    if (err == MSV_OK) {
        c->on_handle_taken = o->json ? cli_handle_taken_json : NULL;
        err = msv_client_monitor(c, cli_print_alarm, (void *)o, &alarms);
        if (err != MSV_OK)
            return fail(c, "watching the transparency log", err);
    }
    return err == MSV_OK ? 0 : fail(c, "receiving", err);
}

/* The reactions to a message grouped by emoji: calls each(ctx, emoji, handles, count). */
static msv_err each_reaction(struct msv_client *c, const uint8_t id[16],
                             void (*each)(void *, const struct msv_reaction_rec *, size_t),
                             void *ctx)
{
    struct msv_reaction_rec *r = NULL;
    size_t n = 0, first = 0;
    msv_err err = msv_client_db_reactions(c->db, id, &r, &n);

    for (size_t i = 1; err == MSV_OK && i <= n; i++) {
        if (i == n || strcmp(r[i].emoji, r[first].emoji) != 0) {
            each(ctx, &r[first], i - first);
            first = i;
        }
    }
    msv_reactions_free(r, n);
    return err;
}

static void reaction_json(void *ctx, const struct msv_reaction_rec *r, size_t n)
{
    json_t *from = json_array();

    for (size_t i = 0; i < n; i++)
        json_array_append_new(from, json_string(r[i].handle));
    json_array_append_new(
        ctx, json_pack("{s:s, s:I, s:o}", "emoji", r->emoji, "count", (json_int_t)n, "from", from));
}

/* An edited message's "edit_number" and "edits" (its versions, oldest first) into j. */
static void edits_json(struct msv_client *c, json_t *j, const uint8_t id[16])
{
    struct msv_message_version *v = NULL;
    size_t n = 0;
    json_t *edits;

    if (msv_client_db_message_versions(c->db, id, &v, &n) != MSV_OK || n == 0)
        return;
    edits = json_array();
    for (size_t i = 0; edits != NULL && i < n; i++)
        json_array_append_new(edits, json_pack("{s:s, s:I, s:I}", "text", v[i].text, "at_ms",
                                               (json_int_t)v[i].at_ms, "edit_number",
                                               (json_int_t)v[i].edit_number));
    if (edits != NULL) {
        json_object_set_new(j, "edit_number", json_integer(v[n - 1].edit_number));
        json_object_set_new(j, "edits", edits);
    }
    msv_message_versions_free(v, n);
}

/*
 * The message m answers, if this device has it in m's conversation (an id
 * from another conversation shows nothing of it): 1 with its sender and first
 * line, else 0.
 */
static int quote_of(struct msv_client *c, const struct msv_message_rec *m, char *from,
                    size_t from_len, char *text, size_t len)
{
    struct msv_message_rec *o = NULL;
    int found = m->has_reply_to && msv_client_db_message_get(c->db, m->reply_to, &o) == MSV_OK &&
                strcmp(o->conversation, m->conversation) == 0 && o->kind == MSV_KIND_MESSAGE &&
                strcmp(o->status, "unsent") != 0;

    if (found) {
        snprintf(from, from_len, "%s", o->sender);
        msv_client_first_line(o->text, text, len);
    }
    msv_messages_free(o, o ? 1 : 0);
    return found;
}

char *cli_quote_line(struct msv_client *c, const struct msv_message_rec *m)
{
    char from[MSV_HANDLE_MAX + 1], text[200], *line;
    size_t len;

    if (!m->has_reply_to)
        return NULL;
    if (!quote_of(c, m, from, sizeof(from), text, sizeof(text)))
        return strdup("\u21aa original not found");
    len = strlen(from) + strlen(text) + 8;
    line = malloc(len);
    if (line != NULL)
        snprintf(line, len, "\u21aa %s: %s", from, text);
    return line;
}

/* "mentions": [{"start", "length", "handle"}] and "mentioned" (one names this account). */
static void add_mentions(struct msv_client *c, const struct msv_message_rec *m, json_t *j)
{
    struct msv_mention *list = NULL;
    size_t n = 0;
    json_t *mentions = json_array();
    int mentioned = 0;

    if (mentions == NULL || msv_client_db_mentions(c->db, m->message_id, &list, &n) != MSV_OK) {
        json_decref(mentions);
        return;
    }
    for (size_t i = 0; i < n; i++) {
        json_array_append_new(
            mentions, json_pack("{s:I, s:I, s:s}", "start", (json_int_t)list[i].start, "length",
                                (json_int_t)list[i].length, "handle", list[i].handle));
        mentioned |= strcmp(list[i].handle, c->handle) == 0;
    }
    msv_mentions_free(list, n);
    json_object_set_new(j, "mentions", mentions);
    json_object_set_new(j, "mentioned", json_boolean(mentioned));
}

/* "attachments": the files received with m, each with what /files/<id>/<index> needs. */
static void add_attachments(struct msv_client *c, const struct msv_message_rec *m, json_t *j)
{
    struct msv_message_file files[MSV_ATTACHMENTS_MAX];
    json_t *list = json_array();
    size_t n = 0;

    if (msv_client_message_files(c, m, files, MSV_ATTACHMENTS_MAX, &n) != MSV_OK)
        n = 0;
    for (size_t i = 0; list != NULL && i < n; i++)
        json_array_append_new(list, json_pack("{s:I, s:s, s:I, s:s}", "index", (json_int_t)i,
                                              "name", files[i].name, "size",
                                              (json_int_t)files[i].size, "mime", files[i].mime));
    if (list != NULL)
        json_object_set_new(j, "attachments", list);
}

json_t *cli_message_json_of(struct msv_client *c, const struct msv_message_rec *m)
{
    json_t *j = cli_message_json(m), *reactions = json_array();
    char from[MSV_HANDLE_MAX + 1], text[200], hex[33], name[300];

    if (j != NULL && from_name(c, m, name, sizeof(name)))
        json_object_set_new(j, "from_name", json_string(name));
    if (j != NULL && reactions != NULL &&
        each_reaction(c, m->message_id, reaction_json, reactions) == MSV_OK)
        json_object_set(j, "reactions", reactions);
    json_decref(reactions);
    if (j != NULL)
        edits_json(c, j, m->message_id);
    if (j != NULL && m->has_reply_to && msv_hex_encode(m->reply_to, 16, hex, sizeof(hex)) == MSV_OK)
        json_object_set_new(j, "reply_to", json_string(hex));
    else if (j != NULL)
        json_object_set_new(j, "reply_to", json_null());
    if (j != NULL && quote_of(c, m, from, sizeof(from), text, sizeof(text)))
        json_object_set_new(j, "quote", json_pack("{s:s, s:s}", "from", from, "text", text));
    else if (j != NULL)
        json_object_set_new(j, "quote", json_null());
    if (j != NULL)
        add_mentions(c, m, j);
    if (j != NULL)
        add_attachments(c, m, j);
    return j;
}

static void reaction_text(void *ctx, const struct msv_reaction_rec *r, size_t n)
{
    fprintf(ctx, "%s%s %zu", ftell(ctx) > 0 ? "  " : "", r->emoji, n);
}

char *cli_reactions_line(struct msv_client *c, const uint8_t id[16])
{
    char *line = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&line, &len);

    if (f == NULL)
        return NULL;
    if (each_reaction(c, id, reaction_text, f) != MSV_OK)
        len = 0;
    fclose(f);
    if (len == 0) {
        free(line);
        return NULL;
    }
    return line;
}

/* A message as history prints it: what it answers above it, its reactions under it. */
static void print_with_reactions(const struct cli *o, struct msv_client *c,
                                 const struct msv_message_rec *m)
{
    char *line;

    if (o->json) {
        emit_json(cli_message_json_of(c, m));
        return;
    }
    line = cli_quote_line(c, m);
    if (line != NULL) {
        fputs("  ", cli_out);
        term_put(cli_out, line, TERM_ONE_LINE);
        fputc('\n', cli_out);
        free(line);
    }
    cli_print_message(o, m);
    line = cli_reactions_line(c, m->message_id);
    if (line != NULL) {
        fputs("    ", cli_out);
        term_put(cli_out, line, TERM_ONE_LINE);
        fputc('\n', cli_out);
    }
    free(line);
}

/* A message id operand: 32 hex digits. */
static int message_id_arg(const char *arg, uint8_t id[16])
{
    size_t n = 0;

    return msv_hex_decode(arg, id, 16, &n) == MSV_OK && n == 16;
}

/* The versions of m, oldest first (-o json: m with them, as history gives it). */
static msv_err print_message_edits(const struct cli *o, struct msv_client *c,
                                   const struct msv_message_rec *m)
{
    struct msv_message_version *v = NULL;
    size_t n = 0;
    msv_err err;

    if (o->json) {
        emit_json(cli_message_json_of(c, m));
        return MSV_OK;
    }
    err = msv_client_db_message_versions(c->db, m->message_id, &v, &n);
    for (size_t i = 0; err == MSV_OK && i < n; i++) {
        put_time(v[i].at_ms);
        fprintf(cli_out, "#%u%s: ", (unsigned)v[i].edit_number, i == 0 ? " (original)" : "");
        term_put(cli_out, v[i].text, TERM_LINES);
        fputc('\n', cli_out);
    }
    msv_message_versions_free(v, n);
    return err;
}

static int cmd_edits(const struct cli *o, struct msv_client *c)
{
    struct msv_message_rec *m = NULL;
    uint8_t id[16];
    msv_err err;

    if (o->argc != 1 || !message_id_arg(o->argv[0], id))
        return cli_usage("edits", cli_err);
    err = msv_client_db_message_get(c->db, id, &m);
    if (err == MSV_ERR_NOT_FOUND) {
        fprintf(cli_err, "missive: no message %s here\n", o->argv[0]);
        return EXIT_ERR;
    }
    if (err == MSV_OK && !o->json && strcmp(m->status, "edited") != 0)
        fprintf(cli_out, "%s\n",
                strcmp(m->status, "unsent") == 0 ? "unsent: no versions are kept"
                                                 : "not edited: its text is the original");
    if (err == MSV_OK)
        err = print_message_edits(o, c, m);
    msv_messages_free(m, m ? 1 : 0);
    return err == MSV_OK ? 0 : fail(c, "reading the versions", err);
}

/* A duration: seconds, or a number and s, m, h or d. 0 if it is not one. */
static int parse_duration(const char *s, uint64_t *seconds)
{
    static const struct {
        char unit;
        uint64_t seconds;
    } units[] = {{'\0', 1}, {'s', 1}, {'m', 60}, {'h', 3600}, {'d', 86400}};
    char *end = NULL;
    unsigned long long n;

    if (s[0] < '0' || s[0] > '9')
        return 0;
    errno = 0;
    n = strtoull(s, &end, 10);
    for (size_t i = 0; errno == 0 && i < sizeof(units) / sizeof(units[0]); i++) {
        if (end[0] == units[i].unit && (end[0] == '\0' || end[1] == '\0') &&
            n <= UINT64_MAX / units[i].seconds) {
            *seconds = n * units[i].seconds;
            return 1;
        }
    }
    return 0;
}

static void print_window(const struct cli *o, const char *which, uint64_t seconds)
{
    if (o->json)
        emit_json(json_pack("{s:s, s:I}", "window", which, "seconds", (json_int_t)seconds));
    else if (seconds % 86400 == 0 && seconds > 0)
        fprintf(cli_out, "%-7s %llud\n", which, (unsigned long long)(seconds / 86400));
    else if (seconds % 3600 == 0 && seconds > 0)
        fprintf(cli_out, "%-7s %lluh\n", which, (unsigned long long)(seconds / 3600));
    else
        fprintf(cli_out, "%-7s %llus\n", which, (unsigned long long)seconds);
}

static int cmd_windows(const struct cli *o, struct msv_client *c)
{
    static const char *const both[] = {"edit", "unsend"};
    uint64_t seconds = 0;
    msv_err err = MSV_OK;

    if (o->argc > 2 ||
        (o->argc >= 1 && strcmp(o->argv[0], "edit") != 0 && strcmp(o->argv[0], "unsend") != 0))
        return cli_usage("windows", cli_err);
    if (o->argc == 2) {
        if (!parse_duration(o->argv[1], &seconds) || seconds > MSV_WINDOW_MAX_S) {
            fprintf(cli_err,
                    "missive: windows: DURATION is seconds or a number with s, m, h or d, at "
                    "most %ud\n",
                    MSV_WINDOW_MAX_S / 86400);
            return EXIT_USAGE;
        }
        err = msv_client_set_window(c, o->argv[0], seconds);
    }
    for (size_t i = 0; err == MSV_OK && i < 2; i++) {
        if (o->argc >= 1 && strcmp(o->argv[0], both[i]) != 0)
            continue;
        err = msv_client_window(c, both[i], &seconds);
        if (err == MSV_OK)
            print_window(o, both[i], seconds);
    }
    return err == MSV_OK ? 0 : fail(c, "the edit and unsend windows", err);
}

/* A conversation operand: a handle, a contact's name, a group's name or group:ID. */
static int conversation_arg(struct msv_client *c, const char *arg, char *out, size_t len)
{
    struct msv_contact *list = NULL;
    struct msv_group_rec g;
    size_t n = 0;

    if (strchr(arg, '@') != NULL || strncmp(arg, "group:", 6) == 0) {
        snprintf(out, len, "%s", arg);
        return 1;
    }
    if (msv_client_db_contacts(c->db, arg, &list, &n) == MSV_OK && n == 1)
        snprintf(out, len, "%s", list[0].handle);
    msv_contacts_free(list, n);
    if (n == 1)
        return 1;
    if (msv_client_group_find(c, arg, &g) != MSV_OK)
        return 0;
    msv_client_group_conversation(g.group_id, out);
    msv_group_clear(&g);
    return 1;
}

static void print_conversation(const struct cli *o, const struct msv_conversation_rec *r)
{
    if (o->json) {
        json_t *j =
            json_pack("{s:s, s:I, s:I, s:b, s:b, s:b}", "conversation", r->conversation, "last_ms",
                      (json_int_t)r->last_ms, "unread", (json_int_t)r->unread, "pinned", r->pinned,
                      "archived", r->archived, "muted", r->muted_until_ms != 0);

        if (j != NULL && r->muted_until_ms != 0)
            json_object_set_new(j, "muted_until_ms", json_integer(r->muted_until_ms));
        emit_json(j);
        return;
    }
    term_put(cli_out, r->conversation, TERM_ONE_LINE);
    fprintf(cli_out, "  %zu unread%s%s%s", r->unread, r->pinned ? "  pinned" : "",
            r->archived ? "  archived" : "", r->muted_until_ms ? "  muted" : "");
    if (r->muted_until_ms != 0 && r->muted_until_ms != INT64_MAX) {
        fputs(" until ", cli_out);
        put_time(r->muted_until_ms);
    }
    fputc('\n', cli_out);
}

/* Tells the daemon's subscribers (a command run through it) that a conversation changed. */
static void tell_change(const struct cli *o, const char *conversation, const char *status)
{
    char notice[400];
    struct msv_incoming in = {.kind = MSV_INCOMING_CONVERSATION,
                              .conversation = conversation,
                              .status = status,
                              .notice = notice};

    snprintf(notice, sizeof(notice), "%s is %s", conversation, status);
    if (o->on_incoming != NULL)
        o->on_incoming(o->incoming_ctx, &in);
}

static int cmd_conversations(const struct cli *o, struct msv_client *c)
{
    static const struct {
        const char *verb, *status;
        enum msv_conversation_change change;
    } verbs[] = {
        {"mute", "muted", MSV_CONVERSATION_MUTE},
        {"unmute", "unmuted", MSV_CONVERSATION_UNMUTE},
        {"archive", "archived", MSV_CONVERSATION_ARCHIVE},
        {"unarchive", "unarchived", MSV_CONVERSATION_UNARCHIVE},
        {"pin", "pinned", MSV_CONVERSATION_PIN},
        {"unpin", "unpinned", MSV_CONVERSATION_UNPIN},
    };
    struct msv_conversation_rec *list = NULL;
    char conversation[300];
    uint64_t seconds = 0;
    int64_t until = INT64_MAX;
    size_t n = 0, v = 0;
    msv_err err;

    if (o->argc == 0 || (o->argc == 1 && strcmp(o->argv[0], "list") == 0)) {
        err = msv_client_conversations(c, o->archived, NULL, &list, &n);
        for (size_t i = 0; err == MSV_OK && i < n; i++)
            print_conversation(o, &list[i]);
        msv_conversations_free(list, n);
        return err == MSV_OK ? 0 : fail(c, "listing conversations", err);
    }
    while (v < sizeof(verbs) / sizeof(verbs[0]) && strcmp(verbs[v].verb, o->argv[0]) != 0)
        v++;
    if (v == sizeof(verbs) / sizeof(verbs[0]) || o->argc > 3 ||
        (o->argc == 3 && verbs[v].change != MSV_CONVERSATION_MUTE) || o->argc < 2)
        return cli_usage("conversations", cli_err);
    if (o->argc == 3 && strcmp(o->argv[2], "forever") != 0) {
        if (!parse_duration(o->argv[2], &seconds) || seconds == 0 ||
            seconds > 100ull * 366 * 86400) {
            fprintf(cli_err, "missive: conversations: mute for a DURATION (seconds, or a number "
                             "with s, m, h or d, up to 100 years) or forever\n");
            return EXIT_USAGE;
        }
        until = msv_wall_ms() + (int64_t)seconds * 1000;
    }
    if (!conversation_arg(c, o->argv[1], conversation, sizeof(conversation))) {
        fprintf(cli_err, "missive: %s is neither a handle, a contact's name nor a group's\n",
                o->argv[1]);
        return EXIT_ERR;
    }
    err = msv_client_conversation_set(c, conversation, verbs[v].change, until);
    if (err == MSV_ERR_INVALID) {
        fprintf(cli_err, "missive: conversations: not a conversation's name\n");
        return EXIT_USAGE;
    }
    if (err == MSV_OK)
        tell_change(o, conversation, verbs[v].status);
    return err == MSV_OK ? 0 : fail(c, "changing the conversation", err);
}

/*
 * What one answer of history holds at most, counted as its JSON could take (a text's every byte
 * escaped as \u00XX, and room for the rest): a daemon's client takes at most 16 MiB waiting, so
 * a few long texts of control characters would otherwise make a conversation that cannot be
 * shown there. The oldest of those asked for are left out, said; --before reaches them.
 */
#define HISTORY_ANSWER_MAX (8u << 20)
#define HISTORY_ITEM_ROOM 4096u

static int cmd_history(const struct cli *o, struct msv_client *c)
{
    struct msv_message_rec *m = NULL;
    size_t n = 0, first = 0, room = HISTORY_ANSWER_MAX;
    int64_t before = INT64_MAX;
    msv_err err;

    char conversation[40];
    const char *which = o->argc ? o->argv[0] : NULL;

    if (o->argc > 1 || (o->argc == 1 && o->group != NULL))
        return cli_usage("history", cli_err);
    if (o->group != NULL) {
        struct msv_group_rec g;

        err = msv_client_group_find(c, o->group, &g);
        if (err != MSV_OK) {
            explain_group(o->group, err);
            return EXIT_ERR;
        }
        msv_client_group_conversation(g.group_id, conversation);
        msv_group_clear(&g);
        which = conversation;
    }
    if (o->before != NULL) {
        struct msv_message_rec *b = NULL;
        uint8_t id[16];

        if (!message_id_arg(o->before, id)) {
            fprintf(cli_err, "missive: --before takes a message id (32 hex digits, as history -o "
                             "json shows)\n");
            return EXIT_USAGE;
        }
        err = msv_client_db_message_get(c->db, id, &b);
        if (err == MSV_ERR_NOT_FOUND) {
            fprintf(cli_err, "missive: --before: no message %s here\n", o->before);
            return EXIT_ERR;
        }
        if (err != MSV_OK)
            return fail(c, "reading history", err);
        before = b->row;
        msv_messages_free(b, 1);
    }
    err = msv_client_db_history_before(c->db, which, o->search, before,
                                       o->limit > 0 ? (size_t)o->limit : 0, &m, &n);
    if (err == MSV_ERR_INVALID) {
        fprintf(cli_err, "missive: --search: not a valid full-text query\n");
        return EXIT_USAGE;
    }
    if (err != MSV_OK)
        return fail(c, "reading history", err);
    /* the newest first into the bound: the oldest left out are the ones --before reaches */
    for (first = n; first > 0; first--) {
        size_t take = HISTORY_ITEM_ROOM + (m[first - 1].text ? strlen(m[first - 1].text) * 6 : 0);

        if (take > room && first < n)
            break; /* (the newest goes whatever it takes) */
        room = take < room ? room - take : 0;
    }
    for (size_t i = first; i < n; i++)
        print_with_reactions(o, c, &m[i]);
    if (first > 0)
        fprintf(cli_err,
                "missive: history: the %zu oldest of the messages asked for are left out (an "
                "answer holds at most 8 MiB); --before the oldest shown reaches them\n",
                first);
    msv_messages_free(m, n);
    return 0;
}

/* The conversation named by an operand or --group; 0, or an exit status. */
static int pick_conversation(const struct cli *o, struct msv_client *c, int required, char *out,
                             size_t len, const char **which)
{
    *which = NULL;
    if (o->argc > 1 || (o->argc == 1 && o->group != NULL) ||
        (required && o->argc == 0 && o->group == NULL))
        return EXIT_USAGE;
    if (o->group != NULL) {
        struct msv_group_rec g;
        msv_err err = msv_client_group_find(c, o->group, &g);

        if (err != MSV_OK) {
            explain_group(o->group, err);
            return EXIT_ERR;
        }
        msv_client_group_conversation(g.group_id, out);
        msv_group_clear(&g);
        *which = out;
    } else if (o->argc == 1) {
        snprintf(out, len, "%s", o->argv[0]);
        *which = out;
    }
    return 0;
}

static int cmd_read_typing(const struct cli *o, struct msv_client *c, int typing)
{
    char conversation[300];
    const char *which;
    size_t n = 0;
    msv_err err;
    int rc = pick_conversation(o, c, typing, conversation, sizeof(conversation), &which);

    if (rc != 0)
        return rc == EXIT_USAGE ? cli_usage(typing ? "typing" : "read", cli_err) : rc;
    err = typing ? msv_client_typing(c, which) : msv_client_mark_read(c, which, &n);
    if (err == MSV_OK && !typing)
        fprintf(cli_out, "%zu message%s marked read\n", n, n == 1 ? "" : "s");
    return err == MSV_OK ? 0
                         : fail(c, typing ? "sending the typing notice" : "sending receipts", err);
}

/* timer CONVERSATION|--group NAME [DURATION|off]: the last operand is the value, if two. */
static int cmd_timer(const struct cli *o, struct msv_client *c)
{
    struct cli conversation_only = *o;
    char conversation[300], value[16];
    const char *which, *given = NULL;
    uint32_t timer_s = 0;
    msv_err err;
    int rc;

    if (o->argc == (o->group != NULL ? 1 : 2)) {
        given = o->argv[o->argc - 1];
        conversation_only.argc--;
    }
    rc = pick_conversation(&conversation_only, c, 1, conversation, sizeof(conversation), &which);
    if (rc != 0)
        return rc == EXIT_USAGE ? cli_usage("timer", cli_err) : rc;
    if (given != NULL && msv_client_timer_parse(given, &timer_s) != MSV_OK) {
        fprintf(cli_err, "missive: a timer is off, or from 30s to 4w (a number with s, m, h, d "
                         "or w)\n");
        return EXIT_USAGE;
    }
    err = given != NULL ? msv_client_timer_set(c, which, timer_s)
                        : msv_client_timer_get(c, which, &timer_s);
    if (err != MSV_OK)
        return fail(c, given != NULL ? "setting the timer" : "reading the timer", err);
    msv_client_timer_text(timer_s, value);
    if (o->json)
        emit_json(json_pack("{s:s, s:I, s:s}", "conversation", which, "timer_s",
                            (json_int_t)timer_s, "timer", value));
    else
        fprintf(cli_out, "disappearing messages: %s\n", value);
    return 0;
}

static int cmd_edit_unsend(const struct cli *o, struct msv_client *c, int edit)
{
    uint8_t id[16];
    msv_err err;

    if (o->argc != 1 || !message_id_arg(o->argv[0], id) ||
        (edit && (o->text == NULL || o->text[0] == '\0')))
        return cli_usage(edit ? "edit" : "unsend", cli_err);
    err = edit ? msv_client_edit(c, id, o->text) : msv_client_unsend(c, id);
    if (err == MSV_ERR_INVALID && c->why.message[0] != '\0') {
        fprintf(cli_err, "missive: %s refused: ", edit ? "edit" : "unsend");
        term_put(cli_err, c->why.message, TERM_ONE_LINE);
        fputc('\n', cli_err);
        return EXIT_ERR;
    }
    if (err == MSV_ERR_INVALID || err == MSV_ERR_NOT_FOUND) {
        fprintf(cli_err, "missive: %s is not one of your messages here\n", o->argv[0]);
        return EXIT_ERR;
    }
    return err == MSV_OK ? 0 : fail(c, edit ? "editing" : "unsending", err);
}

static int cmd_react(const struct cli *o, struct msv_client *c)
{
    const char *emoji = o->remove ? NULL : (o->argc == 2 ? o->argv[1] : "");
    uint8_t id[16];
    size_t n = 0;
    char hex[33];
    msv_err err;

    if (o->argc != (o->remove ? 1 : 2) ||
        msv_hex_decode(o->argv[0], id, sizeof(id), &n) != MSV_OK || n != 16)
        return cli_usage("react", cli_err);
    if (emoji != NULL && !msv_payload_reaction_is_valid(emoji)) {
        fprintf(cli_err,
                "missive: a reaction is one emoji: 1 to %d bytes of UTF-8 without "
                "spaces or control characters\n",
                MSV_REACTION_MAX);
        return EXIT_USAGE;
    }
    err = msv_client_react(c, id, emoji);
    if (err == MSV_ERR_INVALID || err == MSV_ERR_NOT_FOUND) {
        fprintf(cli_err, "missive: %s is not a message you can react to here\n", o->argv[0]);
        return EXIT_ERR;
    }
    if (err != MSV_OK)
        return fail(c, "reacting", err);
    if (msv_hex_encode(id, 16, hex, sizeof(hex)) != MSV_OK)
        hex[0] = '\0';
    if (o->json)
        emit_json(json_pack("{s:s, s:o}", "message_id", hex, "reaction",
                            emoji ? json_string(emoji) : json_null()));
    else if (emoji != NULL)
        fprintf(cli_out, "reacted %s to %s\n", emoji, hex);
    else
        fprintf(cli_out, "reaction to %s taken away\n", hex);
    return 0;
}

/* verify HANDLE FINGERPRINT: one device of HANDLE has it. */
static int verify_device(const struct cli *o, struct msv_client *c)
{
    uint8_t want[32], have[32];
    char hex[80], key[400];
    size_t n = 0, k = 0;
    msv_frame *r = NULL;
    msv_err err;
    int found = 0;

    for (const char *p = o->argv[1]; *p && k + 1 < sizeof(hex); p++) {
        if (*p != ' ')
            hex[k++] = *p;
    }
    hex[k] = '\0';
    if (msv_hex_decode(hex, want, sizeof(want), &n) != MSV_OK || n != 32) {
        fprintf(cli_err, "missive: a fingerprint is 64 hex digits (spaces allowed)\n");
        return EXIT_USAGE;
    }
    err = msv_client_devices(c, o->argv[0], &r);
    if (err != MSV_OK)
        return fail(c, "looking up devices", err);
    for (size_t i = 0; i < r->lookup_result->results[0]->n_devices && !found; i++) {
        const Msv__Wire__DeviceInfo *d = r->lookup_result->results[0]->devices[i];
        struct msv_public_identity *pub = NULL;

        if (msv_public_identity_parse((enum msv_suite)d->suite, d->identity.data, d->identity.len,
                                      &pub) != MSV_OK)
            continue;
        msv_public_identity_hash(pub, have);
        msv_public_identity_free(pub);
        if (msv_equal_ct(have, want, 32)) {
            found = 1;
            snprintf(key, sizeof(key), "verified:%s:%llu", o->argv[0],
                     (unsigned long long)d->device_id);
            err = msv_client_db_set(c->db, key, have, 32);
            fprintf(cli_out, "fingerprint matches device %llu of %s: marked verified\n",
                    (unsigned long long)d->device_id, o->argv[0]);
        }
    }
    msv_frame_free(r);
    if (!found) {
        fprintf(cli_err, "missive: no device of %s has that fingerprint: do not trust it\n",
                o->argv[0]);
        return EXIT_AUTH;
    }
    return err == MSV_OK ? 0 : fail(c, "recording the verification", err);
}

/* Prints a QR code of text with Unicode half blocks (light modules drawn, two rows a line). */
static int print_qr(const char *text)
{
    QRcode *q = QRcode_encodeString(text, 0, QR_ECLEVEL_M, QR_MODE_8, 1);
    const int quiet = 2;

    if (q == NULL)
        return -1;
    for (int y = -quiet; y < q->width + quiet; y += 2) {
        for (int x = -quiet; x < q->width + quiet; x++) {
            int top =
                x >= 0 && y >= 0 && x < q->width && y < q->width && (q->data[y * q->width + x] & 1);
            int bottom = x >= 0 && y + 1 >= 0 && x < q->width && y + 1 < q->width &&
                         (q->data[(y + 1) * q->width + x] & 1);

            fputs(top ? (bottom ? " " : "\u2584") : (bottom ? "\u2580" : "\u2588"), cli_out);
        }
        fputc('\n', cli_out);
    }
    QRcode_free(q);
    return 0;
}

/* ---- linking by QR code --------------------------------------------------------------- */

static void show_link_code(void *ctx, const char *code)
{
    const struct cli *o = ctx;
    char why[256];

    if (o->png != NULL && qrimage_write(code, o->png, why, sizeof(why)) != 0)
        fprintf(cli_err, "missive: warning: %s\n", why);
    if (o->json) {
        emit_json(json_pack("{s:s, s:s, s:s?}", "type", "code", "code", code, "png", o->png));
    } else {
        if (print_qr(code) != 0)
            fprintf(cli_err, "missive: warning: the code does not fit in a QR code\n");
        fprintf(cli_out,
                "%s\nscan it, or on a device of the account run:\n  missive devices add %s\n", code,
                code);
    }
    fflush(cli_out);
}

/* The history's archive going up or coming down, on a terminal. */
static void history_progress(uint64_t done, uint64_t total)
{
    if (isatty(STDERR_FILENO) && total > 0)
        fprintf(cli_err, "\rhistory: %llu of %llu KiB ", (unsigned long long)(done / 1024),
                (unsigned long long)(total / 1024));
}

static void history_download(void *ctx, uint64_t done, uint64_t total)
{
    (void)ctx;
    history_progress(done, total);
}

static void link_progress(void *ctx, int seconds_left)
{
    (void)ctx;
    if (isatty(STDERR_FILENO))
        fprintf(cli_err, "\rwaiting for a device of the account (%d s left) ", seconds_left);
    else if (seconds_left % 30 == 0)
        fprintf(cli_err, "waiting for a device of the account (%d s left)\n", seconds_left);
}

/* This device's keys: made now, or those of an earlier try that was never linked. */
static int device_to_link(const struct cli *o, struct msv_client **c)
{
    char dir[1100], db[1200];
    struct stat st;
    struct cli with_account = *o;
    int rc;

    if (account_dir(o, o->argv[0], dir, sizeof(dir)) != 0)
        return create_device(o, o->argv[0], c);
    snprintf(db, sizeof(db), "%s/state.db", dir);
    if (stat(db, &st) != 0)
        return create_device(o, o->argv[0], c);
    with_account.account = o->argv[0];
    rc = open_account(&with_account, c);
    if (rc == 0 && (*c)->device_id != 0) {
        fprintf(cli_err, "missive: %s already has a device here (device %llu)\n", o->argv[0],
                (unsigned long long)(*c)->device_id);
        msv_client_close(*c);
        *c = NULL;
        return EXIT_ERR;
    }
    return rc;
}

static int cmd_link_qr(const struct cli *o)
{
    struct msv_client *c = NULL;
    struct msv_link_wait w = {show_link_code, link_progress, (void *)o, (int)o->wait_s};
    struct msv_link_result res;
    char fp[MSV_FINGERPRINT_TEXT_LEN];
    msv_err err;
    int rc = device_to_link(o, &c);

    if (rc != 0)
        return rc;
    if (o->wait_s == 2) /* --wait unset: as long as the server keeps the address */
        w.wait_s = 0;
    c->on_download = history_download;
    err = msv_client_link_by_code(c, &w, &res);
    if (err == MSV_OK) {
        msv_fingerprint_text(res.approver_fingerprint, fp);
        if (o->json)
            emit_json(json_pack("{s:s, s:s, s:I, s:I, s:s, s:I, s:I}", "type", "linked", "handle",
                                c->handle, "device_id", (json_int_t)res.device_id, "approver",
                                (json_int_t)res.approver_id, "approver_fingerprint", fp, "settings",
                                (json_int_t)res.settings, "groups", (json_int_t)res.groups));
        else
            fprintf(cli_out,
                    "linked: this is device %llu of %s, approved by device %llu "
                    "(fingerprint %s)\n",
                    (unsigned long long)res.device_id, c->handle,
                    (unsigned long long)res.approver_id, fp);
    }
    rc = err == MSV_OK ? 0 : fail(c, "linking", err);
    if (err == MSV_OK && !o->json)
        fprintf(cli_out, "account state: %zu settings and contacts, %zu groups\n", res.settings,
                res.groups);
    if (err == MSV_OK && res.state_err != MSV_OK)
        rc = fail(c, "holding the account's state", res.state_err);
    if (err == MSV_OK && res.history == 1 && !o->json)
        fprintf(cli_out, "history imported (%llu bytes)\n", (unsigned long long)res.history_size);
    else if (err == MSV_OK && res.history == 2 && !o->json)
        fprintf(cli_out,
                "history: device %llu sends it in the background; 'missive receive' imports it "
                "when it comes\n",
                (unsigned long long)res.approver_id);
    else if (err == MSV_OK && res.history < 0) /* linked, but without the history */
        rc = fail(c, "importing the history", res.history_err);
    msv_client_close(c);
    return rc;
}

/* link HANDLE --resume-history: the history a linked device did not import yet. */
static int link_resume_history(const struct cli *o)
{
    struct msv_client *c = NULL;
    struct cli with_account = *o;
    uint64_t size = 0;
    msv_err err;
    int rc;

    with_account.account = o->argv[0];
    if ((rc = open_account(&with_account, &c)) != 0)
        return rc;
    c->on_download = history_download;
    err = msv_client_link_resume_history(c, &size);
    if (err == MSV_ERR_NOT_FOUND) {
        fprintf(cli_err, "missive: no history waits to be imported on this device\n");
        rc = EXIT_ERR;
    } else if (err != MSV_OK) {
        rc = fail(c, "importing the history", err);
    } else if (o->json) {
        emit_json(json_pack("{s:s, s:I}", "type", "history_imported", "bytes", (json_int_t)size));
    } else {
        fprintf(cli_out, "history imported (%llu bytes)\n", (unsigned long long)size);
    }
    msv_client_close(c);
    return rc;
}

/* The code of devices add: its operand, or the QR code in --image's PNG. */
static int link_code_of(const struct cli *o, struct msv_link_code *code)
{
    char text[512], why[256];
    msv_err err;

    if (o->image != NULL && qrimage_read(o->image, text, sizeof(text), why, sizeof(why)) != 0) {
        fprintf(cli_err, "missive: %s: %s\n", o->image, why);
        return EXIT_ERR;
    }
    err = msv_link_code_parse(o->image != NULL ? text : o->argv[1], code);
    if (err != MSV_OK) {
        fprintf(cli_err, "missive: %s\n",
                err == MSV_ERR_INVALID ? "that link code is of a newer version of missive"
                                       : "not a link code (missive-link:1:...)");
        return EXIT_USAGE;
    }
    return 0;
}

/* Both fingerprints, and whether to go on (--yes, or y on standard input). */
static int confirm_link(const struct cli *o, struct msv_client *c, const struct msv_link_code *k)
{
    char mine[MSV_FINGERPRINT_TEXT_LEN], theirs[MSV_FINGERPRINT_TEXT_LEN], answer[16];
    uint8_t h[32];

    msv_public_identity_hash(msv_identity_public(c->id), h);
    msv_fingerprint_text(h, mine);
    msv_fingerprint_text(k->fingerprint, theirs);
    fprintf(o->json ? cli_err : cli_out,
            "this device (%llu): %s\nnew device:        %s\n"
            "compare them with what the new device shows\n",
            (unsigned long long)c->device_id, mine, theirs);
    if (o->yes)
        return 1;
    if (o->no_stdin) { /* the daemon and the chat cannot ask: the request says it */
        fprintf(cli_err, "missive: compare the fingerprints, then add the device with --yes\n");
        return 0;
    }
    fprintf(cli_err, "add the new device to %s? [y/N] ", c->handle);
    fflush(cli_err);
    return fgets(answer, sizeof(answer), stdin) != NULL && (answer[0] == 'y' || answer[0] == 'Y');
}

/* A device id operand (a decimal above 0); 0 if it is none. */
static int device_id_of(const char *text, uint64_t *id)
{
    char *end;
    unsigned long long v;

    errno = 0;
    v = strtoull(text, &end, 10);
    if (errno != 0 || *end != '\0' || v == 0 || text[0] < '0' || text[0] > '9')
        return 0;
    *id = v;
    return 1;
}

/* The history's steps while it goes up: told to the daemon's subscribers, or printed. */
static void history_event(void *ctx, const struct msv_incoming *in)
{
    const struct cli *o = ctx;

    if (o->on_incoming != NULL)
        o->on_incoming(o->incoming_ctx, in);
    else if (strcmp(in->status, "progress") != 0 || !isatty(STDERR_FILENO))
        fprintf(cli_err, "%s%s\n", isatty(STDERR_FILENO) ? "\r" : "", in->notice);
}

/* Sends device the history this device owes it (after an add, or again with --resume-history). */
static int send_history(const struct cli *o, struct msv_client *c, uint64_t id)
{
    struct msv_link_add how = {1, history_progress, history_event, (void *)o};
    msv_err err = msv_client_link_resume_send(c, id, &how);

    if (err == MSV_ERR_NOT_FOUND) {
        fprintf(cli_err, "missive: this device owes device %llu no history\n",
                (unsigned long long)id);
        return EXIT_ERR;
    }
    if (err != MSV_OK) {
        fail(c, "sending the history", err);
        fprintf(cli_err, "missive: send it again with: missive devices add --resume-history %llu\n",
                (unsigned long long)id);
        return EXIT_ERR;
    }
    if (!o->json)
        fprintf(cli_out, "history sent to device %llu\n", (unsigned long long)id);
    return 0;
}

static int devices_add(const struct cli *o, struct msv_client *c)
{
    struct msv_link_code code;
    struct msv_link_add how = {!o->no_history, history_progress, history_event, (void *)o};
    uint64_t id = 0;
    msv_err err;
    int rc;

    if (o->resume_history) {
        if (o->argc != 2 || o->image != NULL || o->no_history || !device_id_of(o->argv[1], &id))
            return cli_usage("devices", cli_err);
        return send_history(o, c, id);
    }
    if ((o->image == NULL) != (o->argc == 2) || o->argc > 2)
        return cli_usage("devices", cli_err);
    if ((rc = link_code_of(o, &code)) != 0)
        return rc;
    if (!confirm_link(o, c, &code)) {
        fprintf(cli_err, "missive: not added\n");
        return EXIT_ERR;
    }
    err = msv_client_link_add(c, &code, &how, &id);
    if (err != MSV_OK)
        return fail(c, "adding the device", err);
    if (o->json)
        emit_json(json_pack("{s:s, s:I}", "type", "device_added", "device_id", (json_int_t)id));
    else
        fprintf(cli_out,
                "added device %llu; the account's other devices and your contacts are "
                "told\n",
                (unsigned long long)id);
    fflush(cli_out);
    return how.history ? send_history(o, c, id) : 0;
}

/* "12345 67890 ..." */
static void group_digits(const char *digits, char *out)
{
    size_t o = 0;

    for (size_t i = 0; digits[i] != '\0'; i++) {
        if (i > 0 && i % 5 == 0)
            out[o++] = i % 30 == 0 ? '\n' : ' ';
        out[o++] = digits[i];
    }
    out[o] = '\0';
}

/*
 * A number that is not this conversation's: if it is the number a Missive
 * still on safety-number version 1 shows, the two sides only need the same
 * version; either way nothing is marked.
 */
static int wrong_number(struct msv_client *c, const char *handle, const char *given)
{
    char older[MSV_SAFETY_DIGITS + 1];
    uint8_t digest[32];

    if (msv_client_safety_number(c, handle, 1, older, digest) == MSV_OK &&
        msv_equal_ct(given, older, MSV_SAFETY_DIGITS)) {
        fprintf(cli_err,
                "missive: that number was made under safety-number version 1, this Missive "
                "shows version %d: compare again once both sides show the same version\n",
                MSV_SAFETY_VERSION);
        return EXIT_AUTH;
    }
    fprintf(cli_err,
            "missive: that is not the safety number of your conversation with %s: do not trust "
            "its devices\n",
            handle);
    return EXIT_AUTH;
}

/* How verify names a contact's device list (docs/transparency.md, "Signed device lists"). */
static const char *devlist_words(enum msv_devlist_state state)
{
    switch (state) {
    case MSV_DEVLIST_SIGNED:
        return "signed";
    case MSV_DEVLIST_RECOVERED:
        return "signed, from a recovery by password";
    case MSV_DEVLIST_UNSIGNED:
        return "unsigned (an account from before approvals were kept)";
    default:
        return "unknown";
    }
}

static int cmd_verify(const struct cli *o, struct msv_client *c)
{
    char number[MSV_SAFETY_DIGITS + 1], given[MSV_SAFETY_DIGITS + 1], shown[80];
    uint8_t digest[32];
    size_t k = 0;
    msv_err err, state;
    const char *devlist;

    if (o->argc < 1 || o->argc > 2 || (o->argc == 2 && (o->accept || o->qr)))
        return cli_usage("verify", cli_err);
    if (strcmp(o->argv[0], c->handle) == 0) {
        fprintf(cli_err, "missive: verify the people you write to, not this account\n");
        return EXIT_USAGE;
    }
    if (o->argc == 2) {
        const char *p = o->argv[1];

        for (; *p && k < MSV_SAFETY_DIGITS; p++) {
            if (*p >= '0' && *p <= '9')
                given[k++] = *p;
            else if (*p != ' ' && *p != '\n')
                break;
        }
        if (*p != '\0' || k != MSV_SAFETY_DIGITS)
            return verify_device(o, c); /* a device fingerprint, or a usage error there */
        given[k] = '\0';
    }
    err = msv_client_safety_number(c, o->argv[0], MSV_SAFETY_VERSION, number, digest);
    if (err != MSV_OK)
        return fail(c, "making the safety number", err);
    if (o->argc == 2 || o->accept) {
        if (!o->accept && !msv_equal_ct(given, number, MSV_SAFETY_DIGITS))
            return wrong_number(c, o->argv[0], given);
        err = msv_client_mark_verified(c, o->argv[0], digest);
        if (err != MSV_OK)
            return fail(c, "recording the verification", err);
        fprintf(cli_out, "%s %s\n", o->argv[0],
                o->accept ? "accepted as it is now, without comparing numbers"
                          : "verified: the safety numbers match");
        return 0;
    }
    state = msv_client_verified(c, o->argv[0], digest);
    devlist = devlist_words(msv_client_devlist_state(c, o->argv[0]));
    group_digits(number, shown);
    if (o->json) {
        emit_json(json_pack("{s:s, s:s, s:i, s:s, s:s}", "handle", o->argv[0], "safety_number",
                            number, "version", MSV_SAFETY_VERSION, "state",
                            state == MSV_OK         ? "verified"
                            : state == MSV_ERR_AUTH ? "changed since verified"
                                                    : "not verified",
                            "device_list", devlist));
        return 0;
    }
    fprintf(cli_out, "safety number of your conversation with %s (version %d):\n%s\n", o->argv[0],
            MSV_SAFETY_VERSION, shown);
    fprintf(cli_out, "device list: %s\n", devlist);
    if (o->qr && print_qr(number) != 0)
        fprintf(cli_err, "missive: cannot make the QR code\n");
    if (state == MSV_OK)
        fprintf(cli_out, "verified\n");
    else if (state == MSV_ERR_AUTH)
        fprintf(cli_out, "CHANGED since you verified it: compare it again before you trust %s\n",
                o->argv[0]);
    else
        fprintf(cli_out, "not verified: compare it with %s, then: missive verify %s NUMBER\n",
                o->argv[0], o->argv[0]);
    return 0;
}

static int cmd_fingerprint(const struct cli *o, struct msv_client *c)
{
    uint8_t h[32];
    char fp[MSV_FINGERPRINT_TEXT_LEN];

    if (o->argc > 1)
        return cli_usage("fingerprint", cli_err);
    if (o->argc == 1)
        return show_devices(o, c, o->argv[0]);
    msv_public_identity_hash(msv_identity_public(c->id), h);
    msv_fingerprint_text(h, fp);
    if (o->json) {
        emit_json(json_pack("{s:s, s:I, s:s}", "handle", c->handle, "device_id",
                            (json_int_t)c->device_id, "fingerprint", fp));
    } else
        fprintf(cli_out, "%s device %llu: %s\n", c->handle, (unsigned long long)c->device_id, fp);
    return 0;
}

/* ---- backups --------------------------------------------------------------------------------
 */

/* The backup passphrase; a new backup needs a long one, a restore takes what it was made with.
 */
static char *backup_passphrase(const struct cli *o, int writing)
{
    char *pass = o->backup_passphrase != NULL ? strdup(o->backup_passphrase)
                                              : secret(o->backup_passphrase_file,
                                                       secret_env(o, "MISSIVE_BACKUP_PASSPHRASE"));

    if (pass == NULL || pass[0] == '\0' ||
        (writing && !msv_backup_passphrase_is_long_enough(pass))) {
        fprintf(cli_err,
                o->secrets_from_request
                    ? "missive: a backup passphrase of %d characters or more is needed: give "
                      "\"backup-passphrase\" or \"backup-passphrase-file\"\n"
                    : "missive: a backup passphrase of %d characters or more is needed: set "
                      "MISSIVE_BACKUP_PASSPHRASE or give --backup-passphrase-file\n",
                MSV_BACKUP_PASSPHRASE_MIN);
        free_secret(pass);
        return NULL;
    }
    return pass;
}

/* On a terminal, how far a backup or a restore got, at most every 2% of it. */
struct shown_progress {
    const char *what;
    int last;
};

static void backup_progress(void *ctx, uint64_t done, uint64_t total)
{
    struct shown_progress *p = ctx;
    int pct = total ? (int)(done * 100 / total) : 100;

    if (pct < p->last + 2 && pct != 100)
        return;
    p->last = pct;
    fprintf(cli_err, "\r%s: %3d%% (%.1f of %.1f MiB)", p->what, pct, (double)done / 1048576.0,
            (double)total / 1048576.0);
    if (pct == 100)
        fputc('\n', cli_err);
}

static int cmd_backup(const struct cli *o, struct msv_client *c)
{
    struct msv_backup_kdf kdf = {o->kdf_passes ? (uint32_t)o->kdf_passes : MSV_BACKUP_OPS_DEFAULT,
                                 o->kdf_memory_mib ? (uint32_t)o->kdf_memory_mib * 1024
                                                   : MSV_BACKUP_MEM_DEFAULT_KIB};
    struct shown_progress shown = {"backup", -2};
    struct msv_backup_progress progress = {isatty(STDERR_FILENO) ? backup_progress : NULL, &shown};
    char why[300] = "", *pass;
    msv_err err;

    if (o->argc != 1)
        return cli_usage("backup", cli_err);
    if ((pass = backup_passphrase(o, 1)) == NULL)
        return EXIT_USAGE;
    err = msv_backup_write(c->dir, c->db, o->argv[0], pass, &kdf, &progress, why, sizeof(why));
    free_secret(pass);
    if (err != MSV_OK) {
        fprintf(cli_err, "missive: backup: %s%s%s\n", msv_strerror(err), why[0] ? ": " : "", why);
        return EXIT_ERR;
    }
    if (o->json)
        emit_json(json_pack("{s:s, s:s, s:I, s:I}", "file", o->argv[0], "handle", c->handle,
                            "kdf_memory_kib", (json_int_t)kdf.memlimit_kib, "kdf_passes",
                            (json_int_t)kdf.opslimit));
    else
        fprintf(cli_out, "wrote %s (account %s; Argon2id %u MiB, %u passes)\n", o->argv[0],
                c->handle, kdf.memlimit_kib / 1024, kdf.opslimit);
    return 0;
}

/* The handle a restored state database belongs to. */
static int restored_handle(const char *dir, char *handle, size_t len)
{
    struct msv_client_db *db = NULL;
    char path[1200];
    uint8_t *v = NULL;
    size_t n = 0;
    int ok;

    snprintf(path, sizeof(path), "%s/state.db", dir);
    ok = msv_client_db_open(path, &db) == MSV_OK &&
         msv_client_db_get(db, "handle", &v, &n) == MSV_OK && n > 0 && n < len &&
         memchr(v, '\0', n) == NULL;
    if (ok) {
        memcpy(handle, v, n);
        handle[n] = '\0';
    }
    free(v);
    msv_client_db_close(db);
    return ok ? 0 : -1;
}

static int cmd_restore(const struct cli *o)
{
    char base[900], tmp[1000], dir[1100], handle[256], why[1600] = "", *pass;
    FILE *in;
    msv_err err;

    if (o->argc != 1)
        return cli_usage("restore", cli_err);
    if (data_dir(o, base, sizeof(base)) != 0) {
        fprintf(cli_err, "missive: no data directory: give --data-dir or set HOME\n");
        return EXIT_USAGE;
    }
    if ((in = fopen(o->argv[0], "rb")) == NULL) {
        fprintf(cli_err, "missive: restore: cannot open %s: %s\n", o->argv[0], strerror(errno));
        return EXIT_ERR;
    }
    if ((pass = backup_passphrase(o, 0)) == NULL) {
        fclose(in);
        return EXIT_USAGE;
    }
    snprintf(tmp, sizeof(tmp), "%s/.restore-XXXXXX", base);
    if (mkdir(base, 0700) != 0 && errno != EEXIST) {
        err = MSV_ERR_IO;
        snprintf(why, sizeof(why), "cannot create %s: %s", base, strerror(errno));
    } else if (mkdtemp(tmp) == NULL) {
        err = MSV_ERR_IO;
        snprintf(why, sizeof(why), "cannot create a directory in %s: %s", base, strerror(errno));
        tmp[0] = '\0';
    } else {
        struct shown_progress shown = {"restore", -2};
        struct msv_backup_progress progress = {isatty(STDERR_FILENO) ? backup_progress : NULL,
                                               &shown};

        err = msv_backup_unpack(in, pass, NULL, tmp, &progress, why, sizeof(why));
    }
    fclose(in);
    free_secret(pass);
    if (err == MSV_OK && (restored_handle(tmp, handle, sizeof(handle)) != 0 ||
                          account_dir(o, handle, dir, sizeof(dir)) != 0)) {
        err = MSV_ERR_PARSE;
        snprintf(why, sizeof(why), "the backup's account has no usable name");
    }
    if (err == MSV_OK && access(dir, F_OK) == 0) {
        err = MSV_ERR_EXISTS;
        snprintf(why, sizeof(why), "%s exists here (%s); restore never replaces an account", handle,
                 dir);
    }
    if (err == MSV_OK && rename(tmp, dir) != 0) {
        err = MSV_ERR_IO;
        snprintf(why, sizeof(why), "cannot move the account into %s: %s", dir, strerror(errno));
    }
    if (err != MSV_OK) {
        if (tmp[0] != '\0')
            msv_backup_discard(tmp);
        fprintf(cli_err, "missive: restore: %s%s%s\n", msv_strerror(err), why[0] ? ": " : "", why);
        return err == MSV_ERR_AUTH ? EXIT_AUTH : EXIT_ERR;
    }
    if (o->json)
        emit_json(json_pack("{s:s, s:s}", "handle", handle, "dir", dir));
    else
        fprintf(cli_out,
                "restored %s into %s; this machine is now that device: stop using the old copy\n",
                handle, dir);
    return 0;
}

static int cmd_log_head(const struct cli *o, struct msv_client *c)
{
    char root[2 * MSV_KT_HASH_LEN + 1], sig[2 * MSV_KT_SIG_LEN + 1];
    struct msv_kt_head h;
    msv_frame *r = NULL;
    msv_err err;

    if (o->argc != 0)
        return cli_usage("log-head", cli_err);
    err = msv_client_devices(c, NULL, &r); /* brings the head up to date, checked */
    msv_frame_free(r);
    if (err != MSV_OK)
        return fail(c, "asking the directory", err);
    err = msv_kt_known_head(c->db, &h);
    if (err == MSV_OK)
        err = msv_hex_encode(h.root, sizeof(h.root), root, sizeof(root));
    if (err == MSV_OK)
        err = msv_hex_encode(h.signature, sizeof(h.signature), sig, sizeof(sig));
    if (err != MSV_OK)
        return fail(c, "reading the log head", err);
    if (o->json)
        emit_json(json_pack("{s:I, s:I, s:s, s:s}", "size", (json_int_t)h.size, "time_ms",
                            (json_int_t)h.time_ms, "root", root, "signature", sig));
    else
        fprintf(cli_out, "missive-head 1 %llu %lld %s %s\n", (unsigned long long)h.size,
                (long long)h.time_ms, root, sig);
    return 0;
}

/* block, unblock: HANDLE, or every handle of a contact name. */
static int cmd_block(const struct cli *o, struct msv_client *c, int block)
{
    const char *handles[64];
    struct msv_contact *found[1] = {0};
    size_t counts[1] = {0}, n;
    msv_err err = MSV_OK;

    if (o->argc != 1)
        return cli_usage(block ? "block" : "unblock", cli_err);
    n = resolve(c, o->argv, 1, handles, 64, found, counts);
    for (size_t i = 0; err == MSV_OK && i < n; i++) {
        err = block ? msv_client_block(c, handles[i]) : msv_client_unblock(c, handles[i]);
        if (err == MSV_OK && o->json)
            emit_json(json_pack("{s:s, s:b}", "handle", handles[i], "blocked", block));
        else if (err == MSV_OK)
            fprintf(cli_out, "%s %s\n", handles[i], block ? "blocked" : "unblocked");
    }
    resolved_free(found, counts, 1);
    return err == MSV_OK ? 0 : fail(c, block ? "blocking" : "unblocking", err);
}

static int cmd_blocked(const struct cli *o, struct msv_client *c)
{
    struct msv_blocked *list = NULL;
    size_t n = 0;
    msv_err err;

    if (o->argc != 0)
        return cli_usage("blocked", cli_err);
    err = msv_client_blocked(c, &list, &n);
    if (err != MSV_OK)
        return fail(c, "listing blocked handles", err);
    for (size_t i = 0; i < n; i++) {
        if (o->json) {
            emit_json(json_pack("{s:s, s:I}", "handle", list[i].handle, "dropped",
                                (json_int_t)list[i].dropped));
        } else {
            term_put(cli_out, list[i].handle, TERM_ONE_LINE);
            fprintf(cli_out, "\t%llu dropped\n", (unsigned long long)list[i].dropped);
        }
    }
    free(list);
    return 0;
}

static void print_request(const struct cli *o, const struct msv_request *r)
{
    if (o->json) {
        emit_json(json_pack("{s:s, s:I, s:s?, s:s?, s:I}", "handle", r->handle, "count",
                            (json_int_t)r->count, "first_text", r->first_text, "last_text",
                            r->last_text, "last_at_ms", (json_int_t)r->last_at_ms));
        return;
    }
    /* all but the count came from the stranger */
    term_put(cli_out, r->handle, TERM_ONE_LINE);
    fprintf(cli_out, "\t%zu message%s\t", r->count, r->count == 1 ? "" : "s");
    term_put(cli_out, r->first_text ? r->first_text : "", TERM_ONE_LINE);
    if (r->count > 1) {
        fputs(" … ", cli_out);
        term_put(cli_out, r->last_text ? r->last_text : "", TERM_ONE_LINE);
    }
    fputc('\n', cli_out);
}

/* requests [list | accept HANDLE | delete HANDLE | block HANDLE] */
static int cmd_requests(const struct cli *o, struct msv_client *c)
{
    static const char *const verbs[] = {"accept", "delete", "block"};
    static const char *const done[] = {"accepted", "deleted", "deleted and blocked"};
    msv_err (*const act[])(struct msv_client *, const char *) = {
        msv_client_request_accept, msv_client_request_delete, msv_client_request_block};
    struct msv_request *list = NULL;
    size_t n = 0;
    msv_err err;

    for (size_t i = 0; o->argc == 2 && i < 3; i++) {
        if (strcmp(o->argv[0], verbs[i]) != 0)
            continue;
        if ((err = act[i](c, o->argv[1])) != MSV_OK)
            return fail(c, "answering the message request", err);
        if (o->json)
            emit_json(json_pack("{s:s, s:s}", "handle", o->argv[1], "request", verbs[i]));
        else
            fprintf(cli_out, "%s: request %s\n", o->argv[1], done[i]);
        return 0;
    }
    if (o->argc > 1 || (o->argc == 1 && strcmp(o->argv[0], "list") != 0))
        return cli_usage("requests", cli_err);
    if ((err = msv_client_requests(c, &list, &n)) != MSV_OK)
        return fail(c, "listing message requests", err);
    for (size_t i = 0; i < n; i++)
        print_request(o, &list[i]);
    msv_requests_free(list, n);
    return 0;
}

static void print_setting(const struct cli *o, const char *name, int on)
{
    if (o->json)
        emit_json(json_pack("{s:s, s:s}", "name", name, "value", on ? "on" : "off"));
    else
        print_fields(name, on ? "on" : "off");
}

static int cmd_settings(const struct cli *o, struct msv_client *c)
{
    const char *name;
    msv_err err = MSV_OK;
    int on = 1;

    if (o->argc == 0 || (o->argc == 1 && strcmp(o->argv[0], "list") == 0)) {
        for (size_t i = 0; err == MSV_OK && (name = msv_client_privacy_name(i)) != NULL; i++)
            if ((err = msv_client_privacy_get(c, name, &on)) == MSV_OK)
                print_setting(o, name, on);
        return err == MSV_OK ? 0 : fail(c, "reading the settings", err);
    }
    if (o->argc == 2 && strcmp(o->argv[0], "get") == 0) {
        err = msv_client_privacy_get(c, o->argv[1], &on);
        if (err == MSV_OK)
            print_setting(o, o->argv[1], on);
        return err == MSV_OK ? 0 : fail(c, "reading the setting", err);
    }
    if (o->argc == 3 && strcmp(o->argv[0], "set") == 0) {
        err = msv_client_privacy_set(c, o->argv[1], o->argv[2]);
        if (err == MSV_OK)
            print_setting(o, o->argv[1], strcmp(o->argv[2], "on") == 0);
        return err == MSV_OK ? 0 : fail(c, "changing the setting", err);
    }
    return cli_usage("settings", cli_err);
}

static int cmd_report(const struct cli *o, struct msv_client *c)
{
    uint8_t ids[MSV_REPORT_MESSAGES_MAX][16];
    size_t n = 0;
    msv_err err;

    if (o->argc < 1 || o->argc > MSV_REPORT_MESSAGES_MAX + 1)
        return cli_usage("report", cli_err);
    for (int i = 1; i < o->argc; i++, n++) {
        if (msv_hex_decode(o->argv[i], ids[n], 16, &(size_t){0}) != MSV_OK ||
            strlen(o->argv[i]) != 32) {
            fprintf(cli_err,
                    "missive: %s is not a message id (32 hex digits, as history -o json "
                    "shows)\n",
                    o->argv[i]);
            return EXIT_USAGE;
        }
    }
    err =
        msv_client_report(c, o->argv[0], o->reason, (const uint8_t(*)[16])ids, n, o->include_text);
    if (err != MSV_OK)
        return fail(c, "reporting", err);
    if (o->json)
        emit_json(json_pack("{s:s, s:I, s:b}", "reported", o->argv[0], "messages", (json_int_t)n,
                            "text_included", o->include_text && n > 0));
    else
        fprintf(cli_out, "reported %s to the operator (%zu message%s%s)\n", o->argv[0], n,
                n == 1 ? "" : "s", o->include_text && n > 0 ? ", with their text" : ", no text");
    return 0;
}

/* account usage: the server's answer, as JSON or lines. */
static void print_usage(const struct cli *o, const Msv__Wire__UsageAnswer *u)
{
    json_t *devices = o->json ? json_array() : NULL;

    for (size_t i = 0; i < u->n_devices; i++) {
        const Msv__Wire__DeviceUsage *d = u->devices[i];

        if (devices != NULL)
            json_array_append_new(
                devices, json_pack("{s:I, s:I, s:I, s:I, s:I, s:I}", "device_id",
                                   (json_int_t)d->device_id, "queued", (json_int_t)d->queued,
                                   "queued_bytes", (json_int_t)d->queued_bytes, "attachment_bytes",
                                   (json_int_t)d->attachment_bytes, "open_uploads",
                                   (json_int_t)d->open_uploads, "refused_sends",
                                   (json_int_t)d->refused_sends));
        else if (!o->json)
            fprintf(cli_out,
                    "device %llu: %llu of %llu envelopes, %llu of %llu bytes queued; "
                    "attachments %llu of %llu bytes, %llu of %llu uploads open\n",
                    (unsigned long long)d->device_id, (unsigned long long)d->queued,
                    (unsigned long long)u->queue_max_envelopes, (unsigned long long)d->queued_bytes,
                    (unsigned long long)u->queue_max_bytes, (unsigned long long)d->attachment_bytes,
                    (unsigned long long)u->attachment_bytes_per_device,
                    (unsigned long long)d->open_uploads,
                    (unsigned long long)u->open_uploads_per_device);
        if (!o->json && d->refused_sends > 0)
            fprintf(cli_out,
                    "device %llu: %llu send%s to this account %s refused since you last asked: "
                    "its queue was full\n",
                    (unsigned long long)d->device_id, (unsigned long long)d->refused_sends,
                    d->refused_sends == 1 ? "" : "s", d->refused_sends == 1 ? "was" : "were");
    }
    if (o->json)
        emit_json(json_pack(
            "{s:o, s:I, s:I, s:I, s:I, s:I, s:I}", "devices", devices, "queue_max_envelopes",
            (json_int_t)u->queue_max_envelopes, "queue_max_bytes", (json_int_t)u->queue_max_bytes,
            "attachment_bytes_per_device", (json_int_t)u->attachment_bytes_per_device,
            "attachment_bytes_per_account", (json_int_t)u->attachment_bytes_per_account,
            "open_uploads_per_device", (json_int_t)u->open_uploads_per_device,
            "account_attachment_bytes", (json_int_t)u->account_attachment_bytes));
    else
        fprintf(cli_out, "account: attachments %llu of %llu bytes\n",
                (unsigned long long)u->account_attachment_bytes,
                (unsigned long long)u->attachment_bytes_per_account);
}

static int account_usage(const struct cli *o, struct msv_client *c)
{
    msv_frame *answer = NULL;
    msv_err err;

    err = msv_client_usage(c, &answer);
    if (err != MSV_OK)
        return fail(c, "asking the server for this account's usage", err);
    print_usage(o, answer->usage);
    msv_frame_free(answer);
    return 0;
}

/* account usage | account delete --yes */
static int cmd_account(const struct cli *o, struct msv_client *c)
{
    if (o->argc == 1 && strcmp(o->argv[0], "usage") == 0)
        return account_usage(o, c);
    if (o->argc == 1 && strcmp(o->argv[0], "delete") == 0)
        return account_delete(o, c);
    return cli_usage("account", cli_err);
}

/* options with no letter of their own */
enum {
    OPT_INVITE = 0x100,
    OPT_SESSION_HOURS,
    OPT_IDLE_MINUTES,
    OPT_TOKEN_MINUTES,
    OPT_PNG,
    OPT_IMAGE,
    OPT_YES,
    OPT_HISTORY,
    OPT_NO_HISTORY,
    OPT_RESUME_HISTORY,
    OPT_FROM
};

int cli_parse_args(int argc, char **argv, struct cli *o, const char **command)
{
    static const struct option opts[] = {
        {"account", required_argument, NULL, 'a'},
        {"data-dir", required_argument, NULL, 'd'},
        {"output", required_argument, NULL, 'o'},
        {"server", required_argument, NULL, 's'},
        {"suite", required_argument, NULL, 'S'},
        {"compat", required_argument, NULL, 'C'},
        {"code", required_argument, NULL, 'c'},
        {"text", required_argument, NULL, 't'},
        {"wait", required_argument, NULL, 'w'},
        {"search", required_argument, NULL, 'q'},
        {"limit", required_argument, NULL, 'l'},
        {"passphrase-file", required_argument, NULL, 'P'},
        {"password-file", required_argument, NULL, 'W'},
        {"file", required_argument, NULL, 'f'},
        {"group", required_argument, NULL, 'g'},
        {"qr", no_argument, NULL, 'Q'},
        {"accept", no_argument, NULL, 'A'},
        {"archived", no_argument, NULL, 'V'},
        {"backup-passphrase-file", required_argument, NULL, 'B'},
        {"kdf-memory", required_argument, NULL, 'M'},
        {"kdf-passes", required_argument, NULL, 'K'},
        {"socket", required_argument, NULL, 'X'},
        {"stdio", no_argument, NULL, 'I'},
        {"remove", no_argument, NULL, 'R'},
        {"reply-to", required_argument, NULL, 'r'},
        {"include-text", no_argument, NULL, 'T'},
        {"reason", required_argument, NULL, 'E'},
        {"name", required_argument, NULL, 'N'},
        {"avatar", required_argument, NULL, 'Y'},
        {"approval", required_argument, NULL, 'J'},
        {"reset", no_argument, NULL, 'Z'},
        {"off", no_argument, NULL, 'F'},
        {"listen", required_argument, NULL, 'L'},
        {"tls-cert", required_argument, NULL, '1'},
        {"tls-key", required_argument, NULL, '2'},
        {"open", no_argument, NULL, 'O'},
        {"url", no_argument, NULL, 'U'},
        {"before", required_argument, NULL, 'b'},
        {"help", no_argument, NULL, 'h'},
        {"invite", required_argument, NULL, OPT_INVITE},
        {"session-hours", required_argument, NULL, OPT_SESSION_HOURS},
        {"idle-minutes", required_argument, NULL, OPT_IDLE_MINUTES},
        {"token-minutes", required_argument, NULL, OPT_TOKEN_MINUTES},
        {"png", required_argument, NULL, OPT_PNG},
        {"image", required_argument, NULL, OPT_IMAGE},
        {"yes", no_argument, NULL, OPT_YES},
        {"history", no_argument, NULL, OPT_HISTORY},
        {"no-history", no_argument, NULL, OPT_NO_HISTORY},
        {"resume-history", no_argument, NULL, OPT_RESUME_HISTORY},
        {"from", required_argument, NULL, OPT_FROM},
        {NULL, 0, NULL, 0},
    };
    char *end;
    int ch;

    memset(o, 0, sizeof(*o));
    o->wait_s = 2;
    opterr = 0;
    optind = 0; /* the daemon parses a command line per request */
    while ((ch = getopt_long(argc, argv, "o:h", opts, NULL)) != -1) {
        switch (ch) {
        case 'a':
            o->account = optarg;
            break;
        case 'd':
            o->data_dir = optarg;
            break;
        case 'o':
            if (strcmp(optarg, "json") != 0 && strcmp(optarg, "text") != 0) {
                fprintf(cli_err, "missive: -o takes json or text\n");
                return EXIT_USAGE;
            }
            o->json = strcmp(optarg, "json") == 0;
            break;
        case 's':
            o->server = optarg;
            break;
        case 'S':
            o->suite = optarg;
            break;
        case 'C':
            o->compat = optarg;
            break;
        case 'c':
            o->code = optarg;
            break;
        case OPT_INVITE:
            o->invite = optarg;
            break;
        case OPT_PNG:
            o->png = optarg;
            break;
        case OPT_IMAGE:
            o->image = optarg;
            break;
        case OPT_FROM:
            o->from = optarg;
            break;
        case OPT_YES:
            o->yes = 1;
            break;
        case OPT_RESUME_HISTORY:
            o->resume_history = 1;
            break;
        case OPT_HISTORY:
        case OPT_NO_HISTORY:
            o->no_history = ch == OPT_NO_HISTORY;
            break;
        case 't':
            o->text = optarg;
            break;
        case 'q':
            o->search = optarg;
            break;
        case 'P':
            o->passphrase_file = optarg;
            break;
        case 'W':
            o->password_file = optarg;
            break;
        case 'T':
            o->include_text = 1;
            break;
        case 'E':
            o->reason = optarg;
            break;
        case 'N':
            o->name = optarg;
            break;
        case 'Y':
            o->avatar = optarg;
            break;
        case 'J':
            if (strcmp(optarg, "on") != 0 && strcmp(optarg, "off") != 0) {
                fprintf(cli_err, "missive: --approval takes on or off\n");
                return EXIT_USAGE;
            }
            o->approval = strcmp(optarg, "on") == 0 ? 1 : 0;
            o->has_approval = 1;
            break;
        case 'Z':
            o->reset = 1;
            break;
        case 'F':
            o->off = 1;
            break;
        case 'h':
            o->help = 1;
            break;
        case 'L':
            o->listen = optarg;
            break;
        case '1':
            o->tls_cert = optarg;
            break;
        case '2':
            o->tls_key = optarg;
            break;
        case 'O':
            o->open_browser = 1;
            break;
        case 'U':
            o->url = 1;
            break;
        case 'b':
            o->before = optarg;
            break;
        case 'g':
            o->group = optarg;
            break;
        case 'Q':
            o->qr = 1;
            break;
        case 'A':
            o->accept = 1;
            break;
        case 'V':
            o->archived = 1;
            break;
        case 'f':
            if (o->file_count == sizeof(o->files) / sizeof(o->files[0])) {
                fprintf(cli_err, "missive: at most 8 --file options\n");
                return EXIT_USAGE;
            }
            o->files[o->file_count++] = optarg;
            break;
        case 'w':
            errno = 0;
            o->wait_s = strtod(optarg, &end);
            o->wait_given = 1;
            if (errno != 0 || *end != '\0' || o->wait_s < 0 || o->wait_s > 86400) {
                fprintf(cli_err, "missive: --wait takes seconds from 0 to 86400\n");
                return EXIT_USAGE;
            }
            break;
        case OPT_SESSION_HOURS:
        case OPT_IDLE_MINUTES:
        case OPT_TOKEN_MINUTES: {
            double *d = ch == OPT_SESSION_HOURS  ? &o->session_hours
                        : ch == OPT_IDLE_MINUTES ? &o->idle_minutes
                                                 : &o->token_minutes;

            errno = 0;
            *d = strtod(optarg, &end);
            /* a week at most, whichever the unit; fractions for short tests */
            if (errno != 0 || *end != '\0' || !(*d > 0) ||
                *d > (ch == OPT_SESSION_HOURS ? 168 : 10080)) {
                fprintf(cli_err, "missive: --session-hours takes 0 to 168 (hours), "
                                 "--idle-minutes and --token-minutes 0 to 10080 (minutes), "
                                 "above 0\n");
                return EXIT_USAGE;
            }
            break;
        }
        case 'X':
            o->socket = optarg;
            break;
        case 'I':
            o->stdio = 1;
            break;
        case 'R':
            o->remove = 1;
            break;
        case 'r':
            o->reply_to = optarg;
            break;
        case 'B':
            o->backup_passphrase_file = optarg;
            break;
        case 'M':
        case 'K':
            errno = 0;
            *(ch == 'M' ? &o->kdf_memory_mib : &o->kdf_passes) = strtoul(optarg, &end, 10);
            if (errno != 0 || *end != '\0' || optarg[0] == '-' ||
                (ch == 'M' && (o->kdf_memory_mib < MSV_BACKUP_MEM_WRITE_MIN_KIB / 1024 ||
                               o->kdf_memory_mib > 4096)) ||
                (ch == 'K' && (o->kdf_passes < 1 || o->kdf_passes > MSV_BACKUP_OPS_MAX))) {
                fprintf(cli_err, "missive: --kdf-memory takes 64 to 4096 (MiB), --kdf-passes 1 "
                                 "to 32\n");
                return EXIT_USAGE;
            }
            break;
        case 'l':
            errno = 0;
            o->limit = strtol(optarg, &end, 10);
            if (errno != 0 || *end != '\0' || o->limit <= 0) {
                fprintf(cli_err, "missive: --limit takes a positive number\n");
                return EXIT_USAGE;
            }
            break;
        default:
            fprintf(cli_err, "missive: unknown option or missing argument: %s\n", argv[optind - 1]);
            return EXIT_USAGE;
        }
    }
    *command = optind < argc ? argv[optind] : NULL;
    o->argc = optind < argc ? argc - optind - 1 : 0;
    o->argv = argv + optind + 1;
    return 0;
}

int cli_account_command(const char *command)
{
    return strcmp(command, "register") != 0 && strcmp(command, "link") != 0 &&
           strcmp(command, "restore") != 0 && strcmp(command, "daemon") != 0 &&
           strcmp(command, "chat") != 0 && strcmp(command, "web") != 0 &&
           (cli_usage(command, NULL) == 0 || strcmp(command, "listen") == 0);
}

/* One synced key: KEY TAB VALUE (or "deleted"); -o json {key, value or value_hex, deleted}. */
static void print_sync_entry(const struct cli *o, const struct msv_sync_entry *e)
{
    int text =
        msv_utf8_is_valid(e->value, e->value_len) && memchr(e->value, '\0', e->value_len) == NULL;
    char *v = malloc(e->value_len * 2 + 1);

    if (v == NULL)
        return;
    if (strncmp(e->key, "sync:secret:", 12) == 0) { /* a key: never shown */
        text = 1;
        snprintf(v, e->value_len * 2 + 1, "%s", e->value_len > 0 ? "(secret)" : "");
    } else if (text) {
        memcpy(v, e->value, e->value_len);
        v[e->value_len] = '\0';
    } else if (msv_hex_encode(e->value, e->value_len, v, e->value_len * 2 + 1) != MSV_OK) {
        v[0] = '\0';
    }
    if (o->json)
        emit_json(json_pack("{s:s, s:s, s:b, s:I}", "key", e->key, text ? "value" : "value_hex", v,
                            "deleted", e->deleted, "stamp", (json_int_t)e->stamp));
    else
        print_fields(e->key, e->deleted ? "deleted" : v);
    free(v);
}

static int cmd_sync(const struct cli *o, struct msv_client *c)
{
    struct msv_sync_entry *list = NULL;
    size_t n = 0;
    msv_err err;

    if ((o->argc == 3 && strcmp(o->argv[0], "set") == 0) ||
        (o->argc == 2 && strcmp(o->argv[0], "unset") == 0)) {
        const char *key = o->argv[1], *value = o->argc == 3 ? o->argv[2] : NULL;

        if (strncmp(key, "sync:", 5) != 0 || key[5] == '\0' || strlen(key) > MSV_SYNC_KEY_MAX ||
            strncmp(key, "sync:secret:", 12) == 0 ||
            !msv_utf8_is_valid((const uint8_t *)key, strlen(key)) ||
            (value != NULL && strlen(value) > MSV_SYNC_VALUE_MAX)) {
            fprintf(cli_err,
                    "missive: a synced setting's key begins with 'sync:' (at most %u "
                    "bytes of UTF-8), its value at most %u bytes\n",
                    MSV_SYNC_KEY_MAX, MSV_SYNC_VALUE_MAX);
            return EXIT_USAGE;
        }
        err = value != NULL ? msv_client_db_set(c->db, key, value, strlen(value))
                            : msv_client_db_unset(c->db, key);
        return err == MSV_OK ? 0 : fail(c, "changing the setting", err);
    }
    if (o->argc > 1 || (o->argc == 1 && strcmp(o->argv[0], "list") != 0))
        return cli_usage("sync", cli_err);
    err = msv_client_db_sync_list(c->db, 0, SIZE_MAX, &list, &n);
    if (err != MSV_OK)
        return fail(c, "listing the synced state", err);
    for (size_t i = 0; i < n; i++)
        print_sync_entry(o, &list[i]);
    msv_sync_entries_free(list, n);
    return 0;
}

static void print_profile(const struct cli *o, const char *handle, const char *name,
                          const char *avatar, size_t avatar_len)
{
    int has_file = avatar != NULL && avatar[0] != '\0';
    json_t *j;

    if (o->json) {
        j = json_pack("{s:s, s:s, s:I}", "handle", handle, "name", name, "avatar_bytes",
                      (json_int_t)avatar_len);
        if (j != NULL && has_file)
            json_object_set_new(j, "avatar", json_string(avatar));
        emit_json(j);
        return;
    }
    print_fields("name", name);
    if (has_file)
        print_fields("avatar", avatar);
    else if (avatar_len > 0)
        fprintf(cli_out, "avatar\t%zu bytes\n", avatar_len);
}

static int profile_show(const struct cli *o, struct msv_client *c, const char *handle)
{
    struct msv_profile *p = NULL;
    char *name = NULL, avatar[1200];
    struct stat st;
    msv_err err;

    if (strcmp(handle, c->handle) == 0) {
        err = msv_client_profile(c, &p);
        if (err == MSV_OK)
            print_profile(o, handle, p->name, NULL, p->avatar_len);
        msv_profile_free(p);
    } else {
        err = msv_client_contact_profile(c, handle, &name, avatar, sizeof(avatar));
        if (err == MSV_OK)
            print_profile(o, handle, name, avatar,
                          avatar[0] && stat(avatar, &st) == 0 ? (size_t)st.st_size : 0);
        free(name);
    }
    if (err == MSV_ERR_NOT_FOUND) {
        fprintf(cli_err, "missive: no profile of %s\n", handle);
        return EXIT_ERR;
    }
    return err == MSV_OK ? 0 : fail(c, "reading the profile", err);
}

/* profile [show [HANDLE] | set --name NAME [--avatar FILE] | clear-avatar] */
static int cmd_profile(const struct cli *o, struct msv_client *c)
{
    struct msv_profile *p = NULL;
    struct msv_file avatar = {0};
    struct cli with = *o;
    msv_err err;

    if (o->argc == 0 || (o->argc <= 2 && strcmp(o->argv[0], "show") == 0))
        return profile_show(o, c, o->argc == 2 ? o->argv[1] : c->handle);
    if (o->argc == 1 && strcmp(o->argv[0], "clear-avatar") == 0) {
        err = msv_client_profile(c, &p);
        if (err == MSV_OK)
            err = msv_client_profile_set(c, p->name, NULL, 0, 0);
        msv_profile_free(p);
        return err == MSV_OK ? 0 : fail(c, "clearing the avatar", err);
    }
    if (o->argc != 1 || strcmp(o->argv[0], "set") != 0 || o->name == NULL)
        return cli_usage("profile", cli_err);
    if (!msv_client_profile_name_is_valid(o->name)) {
        fprintf(cli_err,
                "missive: a display name is 1 to %u bytes of UTF-8 without control "
                "characters\n",
                MSV_PROFILE_NAME_MAX);
        return EXIT_USAGE;
    }
    with.files[0] = o->avatar;
    with.file_count = o->avatar != NULL;
    if (load_files(&with, &avatar) != 0)
        return EXIT_USAGE;
    err = msv_client_profile_set(c, o->name, avatar.data, avatar.len, o->avatar == NULL);
    free((void *)avatar.data);
    if (err == MSV_ERR_TOO_BIG)
        fprintf(cli_err, "missive: an avatar is a file of at most 1 MiB\n");
    return err == MSV_OK ? 0 : fail(c, "setting the profile", err);
}

static int run_account_command(const struct cli *o, const char *command, struct msv_client *c)
{
    if (strcmp(command, "profile") == 0)
        return cmd_profile(o, c);
    if (strcmp(command, "sync") == 0)
        return cmd_sync(o, c);
    if (strcmp(command, "devices") == 0)
        return cmd_devices(o, c);
    if (strcmp(command, "password") == 0)
        return cmd_password(o, c);
    if (strcmp(command, "handles") == 0)
        return cmd_handles(o, c);
    if (strcmp(command, "username") == 0)
        return cmd_username(o, c);
    if (strcmp(command, "account") == 0)
        return cmd_account(o, c);
    if (strcmp(command, "leave") == 0)
        return o->argc == 0 ? leave(o, c) : cli_usage("leave", cli_err);
    if (strcmp(command, "contacts") == 0)
        return cmd_contacts(o, c);
    if (strcmp(command, "groups") == 0)
        return cmd_groups(o, c);
    if (strcmp(command, "read") == 0 || strcmp(command, "typing") == 0)
        return cmd_read_typing(o, c, strcmp(command, "typing") == 0);
    if (strcmp(command, "timer") == 0)
        return cmd_timer(o, c);
    if (strcmp(command, "verify") == 0)
        return cmd_verify(o, c);
    if (strcmp(command, "edit") == 0 || strcmp(command, "unsend") == 0)
        return cmd_edit_unsend(o, c, strcmp(command, "edit") == 0);
    if (strcmp(command, "edits") == 0)
        return cmd_edits(o, c);
    if (strcmp(command, "windows") == 0)
        return cmd_windows(o, c);
    if (strcmp(command, "conversations") == 0)
        return cmd_conversations(o, c);
    if (strcmp(command, "send") == 0)
        return cmd_send(o, c);
    if (strcmp(command, "receive") == 0)
        return cmd_receive(o, c);
    if (strcmp(command, "history") == 0)
        return cmd_history(o, c);
    if (strcmp(command, "react") == 0)
        return cmd_react(o, c);
    if (strcmp(command, "log-head") == 0)
        return cmd_log_head(o, c);
    if (strcmp(command, "block") == 0 || strcmp(command, "unblock") == 0)
        return cmd_block(o, c, strcmp(command, "block") == 0);
    if (strcmp(command, "blocked") == 0)
        return cmd_blocked(o, c);
    if (strcmp(command, "requests") == 0)
        return cmd_requests(o, c);
    if (strcmp(command, "settings") == 0)
        return cmd_settings(o, c);
    if (strcmp(command, "report") == 0)
        return cmd_report(o, c);
    if (strcmp(command, "backup") == 0)
        return cmd_backup(o, c);
    if (strcmp(command, "fingerprint") == 0)
        return cmd_fingerprint(o, c);
    fprintf(cli_err, "missive: unknown command '%s'\n", command);
    return EXIT_USAGE;
}

int cli_run(const struct cli *o, const char *command, struct msv_client *c)
{
    struct cli with = *o;
    int rc;

    with.client = c;
    rc = run_account_command(&with, command, c);
    msv_err err = msv_client_sync_flush(c, NULL);

    /* what the command changed of the synced state goes to the account's other devices now;
     * what cannot stays pending for the next command */
    if (err != MSV_OK) {
        fprintf(cli_err,
                "missive: warning: synced changes wait to be sent to this account's "
                "other devices: %s\n",
                msv_strerror(err));
    }
    return rc;
}

int cli_run_unopened(const struct cli *o, const char *command)
{
    if (strcmp(command, "register") == 0)
        return cmd_register(o);
    if (strcmp(command, "link") == 0)
        return cmd_link(o);
    if (strcmp(command, "restore") == 0)
        return cmd_restore(o);
    if (strcmp(command, "password") == 0 && o->argc > 0 && strcmp(o->argv[0], "reset") == 0)
        return cmd_password_reset(o);
    return -1;
}
