/*
 * Request handlers: the handshake, accounts and devices, directory lookups,
 * sends and acknowledgements (docs/wire.md gives the flow). Every request is
 * checked completely before anything changes; a refused request changes
 * nothing and is answered with an Error naming the reason.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <event2/bufferevent_ssl.h>
#include <openssl/ssl.h>
#include <sodium.h>

#include "crypto/internal.h"
#include "missive/crypto.h"
#include "missive/kt.h"
#include "missive/payload.h"
#include "missive/ratchet.h"
#include "missive/sealed.h"
#include "missive/util.h"
#include "server/codes.h"
#include "server/invites.h"
#include "server/log.h"
#include "server/server.h"
#include "util/endian.h"

#define CODE_TTL_MS (10 * 60 * 1000)
/*
 * Wrong codes are limited per handle and address by [accounts] code_guesses_per_*; this
 * backstop of the store, which drops a code after so many, is far above what they let through.
 */
#define CODE_ATTEMPTS 1000
#define PASSWORD_MIN 8
#define PASSWORD_MAX 1024
#define LOOKUP_MAX 256
#define SEND_HANDLES_MAX 256
#define SEND_ENVELOPES_MAX 1024
#define PUSH_TOKEN_MAX 512
#define ONE_TIME_PREKEYS_MAX 200 /* kept per device */
#define PREKEY_UPLOAD_MAX 100    /* one-time prekeys per upload */
#define CLAIM_MAX 64             /* devices per claim */
#define DELIVERY_TOKEN_LEN 16

/* A LogRead answer keeps room for the head, the log key and a consistency proof. */
#define LOG_HEAD_ROOM 8192

#define STORE(s) ((s)->store->ops)
#define IMPL(s) ((s)->store->impl)

/*
 * Handles (docs/missived.md, "Handles"): ASCII only, so that no two handles
 * look alike in different scripts and every handle is its own NFC form, and
 * nothing a shell or an argument parser treats specially (a hook receives it).
 * A phone number is + and 6 to 15 digits (E.164). An e-mail address is
 * LOCAL@DOMAIN: LOCAL 1 to 64 letters, digits and . _ + - starting with a
 * letter or digit; DOMAIN labels of letters, digits and -, joined by single
 * dots, each 1 to 63 long and neither starting nor ending with -.
 */
static int is_alnum(uint8_t ch)
{
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9');
}

static int local_part_ok(const uint8_t *p, size_t len)
{
    if (len == 0 || len > 64 || !is_alnum(p[0]))
        return 0;
    for (size_t i = 0; i < len; i++) {
        if (!is_alnum(p[i]) && p[i] != '.' && p[i] != '_' && p[i] != '+' && p[i] != '-')
            return 0;
    }
    return 1;
}

static int domain_ok(const uint8_t *p, size_t len)
{
    size_t label = 0;

    for (size_t i = 0; i <= len; i++) {
        if (i == len || p[i] == '.') {
            if (label == 0 || label > 63 || p[i - 1] == '-')
                return 0;
            label = 0;
        } else if (is_alnum(p[i]) || (p[i] == '-' && label > 0)) {
            label++;
        } else {
            return 0;
        }
    }
    return 1;
}

/* The normalised handle (ASCII letters folded to lower case) goes to out (MSV_HANDLE_MAX + 1):
 * an e-mail address, a +E.164 phone number or a username (msv_username_normalise). */
static int normalise_handle(ProtobufCBinaryData b, char *out)
{
    const uint8_t *at;

    if (b.len < 3 || b.len > MSV_HANDLE_MAX)
        return 0;
    if (b.data[0] == '+') {
        if (b.len < 7 || b.len > 16)
            return 0;
        for (size_t i = 1; i < b.len; i++) {
            if (b.data[i] < '0' || b.data[i] > '9')
                return 0;
        }
    } else if ((at = memchr(b.data, '@', b.len)) != NULL) {
        if (!local_part_ok(b.data, (size_t)(at - b.data)) ||
            !domain_ok(at + 1, b.len - (size_t)(at - b.data) - 1))
            return 0;
    }
    return msv_handle_fold(b.data, b.len, MSV_HANDLE_MAX, out);
}

/* label: "MSV-code-v1" for registration, "MSV-reset-v1" for a password reset */
int msv_server_handle_normalise(ProtobufCBinaryData b, char *out)
{
    return normalise_handle(b, out);
}

static void labelled_code_hash(const char *label, const char *handle, const char *code,
                               uint8_t out[32])
{
    static const uint8_t zero = 0;
    const uint8_t *parts[4] = {(const uint8_t *)label, (const uint8_t *)handle, &zero,
                               (const uint8_t *)code};
    size_t lens[4] = {strlen(label), strlen(handle), 1, strlen(code)};

    if (msv_sha256_parts(parts, lens, 4, out) != MSV_OK)
        memset(out, 0, 32); /* matches nothing a person can type */
}

static void code_hash(const char *handle, const char *code, uint8_t out[32])
{
    labelled_code_hash("MSV-code-v1", handle, code, out);
}

/* A reset code never passes for a registration code, nor the other way round. */
void msv_server_reset_code_hash(const char *handle, const char *code, uint8_t out[32])
{
    labelled_code_hash("MSV-reset-v1", handle, code, out);
}

/*
 * The hooks running (docs/missived.md, "Registration"): at most HOOKS_MAX at once in a process,
 * each in a process group of its own, which is killed whole once it has run HOOK_MAX_MS (what
 * the hook started too: a mailer it pipes to); reaped as the next one is asked for, never
 * waited for. A hook's place is free only once it is reaped. Shared by the workers of the
 * process.
 */
#define HOOKS_MAX 32
#define HOOK_MAX_MS 60000

static pthread_mutex_t hooks_lock = PTHREAD_MUTEX_INITIALIZER;
static struct {
    pid_t pid;
    int64_t at_ms;
} hooks[HOOKS_MAX];

/* Under hooks_lock: the slots of hooks that ended freed, those past HOOK_MAX_MS killed first. */
static void hooks_reap(void)
{
    int64_t now = msv_mono_ms();

    for (size_t i = 0; i < HOOKS_MAX; i++) {
        pid_t r;

        if (hooks[i].pid <= 0)
            continue;
        if (now - hooks[i].at_ms > HOOK_MAX_MS)
            kill(-hooks[i].pid, SIGKILL); /* its group: what it started goes too */
        r = waitpid(hooks[i].pid, NULL, WNOHANG);
        if (r == hooks[i].pid || (r < 0 && errno == ECHILD))
            hooks[i].pid = 0;
    }
}

/* Under hooks_lock: a free place, once the ended hooks are reaped (HOOKS_MAX: none). */
static size_t hooks_free_place(void)
{
    hooks_reap();
    for (size_t i = 0; i < HOOKS_MAX; i++)
        if (hooks[i].pid <= 0)
            return i;
    return HOOKS_MAX;
}

int msv_server_run_hook(const char *hook, const char *handle, const char *code)
{
    size_t slot;
    pid_t pid = -1;

    pthread_mutex_lock(&hooks_lock);
    slot = hooks_free_place();
    if (slot < HOOKS_MAX && (pid = fork()) == 0) {
        /* the "--" keeps the handle an operand whatever option parser the hook uses */
        char *argv[] = {(char *)hook, (char *)"--", (char *)handle, (char *)code, NULL};

        (void)setpgid(0, 0);
        execv(hook, argv);
        _exit(127);
    }
    if (pid > 0) {
        (void)setpgid(pid, pid); /* (as the child does: whichever runs first) */
        hooks[slot].pid = pid;
        hooks[slot].at_ms = msv_mono_ms();
    }
    pthread_mutex_unlock(&hooks_lock);
    return pid > 0 ? 0 : -1;
}

int msv_server_hook_room(void)
{
    int room;

    pthread_mutex_lock(&hooks_lock);
    room = hooks_free_place() < HOOKS_MAX;
    pthread_mutex_unlock(&hooks_lock);
    return room;
}

static int rate_ok(struct msv_conn_state *c, uint64_t request_id)
{
    struct msv_server *s = c->w->srv;

    if (msv_server_take_token(s, MSV_LIMIT_REGISTER, c->peer_key, 1))
        return 1;
    msv_conn_send_error(c, request_id, E_RATE, "too many attempts from this address; wait");
    return 0;
}

/* ---- handshake ------------------------------------------------------------------------ */

static void handle_hello(struct msv_conn_state *c, const msv_frame *f)
{
    Msv__Wire__Frame out = MSV__WIRE__FRAME__INIT;
    Msv__Wire__Challenge ch = MSV__WIRE__CHALLENGE__INIT;

    if (f->hello->protocol_version != 1) {
        msv_conn_send_error(c, f->request_id, E_INVALID, "unsupported protocol version");
        msv_conn_close_soon(c);
        return;
    }
    msv_random_bytes(c->nonce, sizeof(c->nonce));
    c->challenged = 1;
    ch.nonce.data = c->nonce;
    ch.nonce.len = sizeof(c->nonce);
    out.request_id = f->request_id;
    out.body_case = MSV__WIRE__FRAME__BODY_CHALLENGE;
    out.challenge = &ch;
    msv_conn_send_frame(c, &out);
}

/*
 * 1 if an operator suspended the account (missive-admin), 0 if not, -1 if storage failed: the
 * check fails closed, and callers answer -1 as the temporary failure it is (ERROR_IO).
 */
static int is_suspended(struct msv_server *s, uint64_t account)
{
    int suspended = 0;

    if (STORE(s)->account_suspended(IMPL(s), account, &suspended) != MSV_OK)
        return -1;
    return suspended != 0;
}

/* Answers a request that storage could not decide: the client keeps it and tries again later. */
static void send_unavailable(struct msv_conn_state *c, uint64_t request_id)
{
    atomic_fetch_add(&c->w->srv->m.store_unavailable, 1);
    msv_log(MSV_LOG_WARN, "store_unavailable", "peer=%s", c->peer);
    msv_conn_send_error(c, request_id, E_IO, "storage is unavailable; try again later");
}

/* What a deleted account's devices are told (docs/wire.md, "Account life"). */
static const char deleted_text[] = "this account was deleted";

/* 1 if handle's newest log entry is a tombstone: its account was deleted. */
static int handle_deleted(struct msv_server *s, const char *handle)
{
    struct msv_kt_rec rec = {0};
    struct msv_kt_entry *e = malloc(sizeof(*e));
    int deleted = e != NULL && STORE(s)->kt_latest(IMPL(s), handle, &rec) == MSV_OK &&
                  msv_kt_leaf_parse(rec.leaf, rec.leaf_len, e) == MSV_OK && e->deleted;

    free(rec.leaf);
    free(rec.pub);
    free(e);
    return deleted;
}

/* 1 if the normalised handle is a username (no e-mail address, no phone number). */
static int is_username(const char *handle)
{
    return strchr(handle, '@') == NULL && handle[0] != '+';
}

/* 1 if handle (a username) is held: its newest log entry is a tombstone younger than the hold. */
static int username_held(struct msv_server *s, const char *handle, int64_t now_ms)
{
    struct msv_kt_rec rec = {0};
    struct msv_kt_entry *e = malloc(sizeof(*e));
    int held = e != NULL && STORE(s)->kt_latest(IMPL(s), handle, &rec) == MSV_OK &&
               msv_kt_leaf_parse(rec.leaf, rec.leaf_len, e) == MSV_OK && e->deleted &&
               now_ms - e->time_ms < (int64_t)s->cfg.username_hold_s * 1000;

    free(rec.leaf);
    free(rec.pub);
    free(e);
    return held;
}

/* What a new handle may be: a contact detail (proven by a code) or a username (needing none). */
enum handle_kind { HANDLE_CONTACT, HANDLE_USERNAME };

/*
 * The one check of a handle that is to become an account's (RegisterStart, HandleAdd,
 * UsernameSet): of kind's grammar (normalised into handle, MSV_HANDLE_MAX + 1 bytes), nobody's,
 * and, for a username, not held after its release (docs/missive.md, "Usernames"). taken is the
 * answer when another account has it. Answers a refusal itself and returns 0; 1 if it is free.
 */
static int handle_is_free(struct msv_conn_state *c, uint64_t request_id, ProtobufCBinaryData b,
                          enum handle_kind kind, char *handle, const char *taken)
{
    struct msv_server *s = c->w->srv;
    uint64_t account = 0;
    msv_err err;

    if (!normalise_handle(b, handle)) {
        msv_conn_send_error(c, request_id, E_INVALID,
                            kind == HANDLE_CONTACT
                                ? "a handle is an e-mail address or a +E.164 phone number"
                                : "a username is 3 to 24 letters and digits beginning with a "
                                  "letter, a dot and 2 to 9 digits, as alice.42");
        return 0;
    }
    if ((kind == HANDLE_USERNAME) != is_username(handle)) {
        msv_conn_send_error(c, request_id, E_INVALID,
                            kind == HANDLE_CONTACT
                                ? "a username needs no code: set it with UsernameSet "
                                  "(missive username set NAME)"
                                : "a username is no e-mail address or phone number; add those "
                                  "as handles");
        return 0;
    }
    err = STORE(s)->account_get(IMPL(s), handle, &account, NULL);
    if (err == MSV_OK) {
        msv_conn_send_error(c, request_id, E_EXISTS,
                            account == c->account_id ? "that handle is this account's already"
                                                     : taken);
        return 0;
    }
    if (err != MSV_ERR_NOT_FOUND) {
        send_unavailable(c, request_id);
        return 0;
    }
    if (kind == HANDLE_USERNAME && username_held(s, handle, msv_server_now_ms(s))) {
        msv_conn_send_error(c, request_id, E_EXISTS,
                            "that username was released recently and is held, so that nobody "
                            "passes for its owner; choose another");
        return 0;
    }
    return 1;
}

/*
 * A device whose handle was removed from its account (HandleRemove) while it was away still
 * authenticates, as its account under the account's first handle (put in handle), and learns
 * of the change from the notice that waits for it; so does one whose handle was registered by
 * another account since. MSV_ERR_NOT_FOUND if there is no such
 * approved device (a deleted account's devices are gone).
 */
static msv_err handle_moved(struct msv_server *s, uint64_t device_id, char *handle,
                            uint64_t *account)
{
    struct msv_device_rec dev = {0};
    char *first = NULL;
    msv_err err = STORE(s)->device_get(IMPL(s), device_id, &dev);

    if (err == MSV_OK && !dev.approved)
        err = MSV_ERR_NOT_FOUND;
    if (err == MSV_OK)
        err = STORE(s)->account_handle(IMPL(s), dev.account_id, &first);
    if (err == MSV_OK && strlen(first) > MSV_HANDLE_MAX)
        err = MSV_ERR_NOT_FOUND;
    if (err == MSV_OK) {
        memcpy(handle, first, strlen(first) + 1);
        *account = dev.account_id;
    }
    free(first);
    msv_device_rec_clear(&dev);
    return err;
}

/* Checks the device's signature over context || nonce || TLS exporter. */
static msv_err verify_auth(struct msv_conn_state *c, const struct msv_device_rec *dev,
                           ProtobufCBinaryData sig)
{
    uint8_t msg[MSV_AUTH_MESSAGE_LEN];
    struct msv_public_identity *pub = NULL;
    msv_err err;

    if (msv_auth_message(bufferevent_openssl_get_ssl(c->bev), c->nonce, sizeof(c->nonce), msg) !=
        MSV_OK)
        return MSV_ERR_AUTH;
    err = msv_public_identity_parse((enum msv_suite)dev->suite, dev->identity, dev->identity_len,
                                    &pub);
    if (err == MSV_OK)
        err = msv_public_identity_verify(pub, msg, sizeof(msg), sig.data, sig.len);
    msv_public_identity_free(pub);
    return err == MSV_OK ? MSV_OK : MSV_ERR_AUTH;
}

static void register_connection(struct msv_conn_state *c)
{
    struct msv_server *s = c->w->srv;
    struct msv_conn_state *old;
    struct timeval idle = {(time_t)s->cfg.idle_timeout_s, 0};

    pthread_mutex_lock(&s->registry_lock);
    c->seq = ++s->registered;
    old = msv_u64map_get(&s->registry, c->device_id);
    if (msv_u64map_put(&s->registry, c->device_id, c) != MSV_OK)
        old = NULL;
    else /* under the lock: in order with offline */
        msv_cluster_online(s->cluster, c->device_id, c->order);
    pthread_mutex_unlock(&s->registry_lock);
    /* a device has one connection: the newest; older ones close, on whichever worker */
    if (old != NULL)
        msv_server_close_conns(s, c->device_id, 0, c, NULL);
    bufferevent_set_timeouts(c->bev, &idle, NULL);
}

static void handle_auth(struct msv_conn_state *c, const msv_frame *f)
{
    struct msv_server *s = c->w->srv;
    const Msv__Wire__Auth *a = f->auth;
    struct msv_device_rec dev = {0};
    uint64_t account = 0;
    char handle[MSV_HANDLE_MAX + 1], asked[MSV_HANDLE_MAX + 1] = "";
    unsigned suites = 0;
    int suspended = 0;
    msv_err err = MSV_ERR_AUTH;

    if (!c->challenged || c->device_id != 0) {
        msv_conn_send_error(c, f->request_id, E_INVALID, "send Hello first, once");
        return;
    }
    c->challenged = 0; /* one attempt per challenge */
    if (normalise_handle(a->handle, handle)) {
        err = STORE(s)->account_get(IMPL(s), handle, &account, NULL);
        if (err == MSV_ERR_NOT_FOUND) /* handle_moved may put the device's own in handle */
            memcpy(asked, handle, sizeof(asked));
        if (err == MSV_OK)
            err = STORE(s)->device_get(IMPL(s), a->device_id, &dev);
        /* the handle left the device's account (and may be another account's now) */
        if (err == MSV_OK && dev.account_id != account) {
            msv_device_rec_clear(&dev);
            err = MSV_ERR_NOT_FOUND;
        }
        if (err == MSV_ERR_NOT_FOUND) {
            err = handle_moved(s, a->device_id, handle, &account);
            if (err == MSV_OK)
                err = STORE(s)->device_get(IMPL(s), a->device_id, &dev);
        }
        if (err == MSV_ERR_NOT_FOUND ||
            (err == MSV_OK && (dev.account_id != account || !dev.approved)))
            err = MSV_ERR_AUTH;
        else if (err == MSV_OK)
            err = verify_auth(c, &dev, a->signature);
    }
    if (err == MSV_OK)
        suites = msv_identity_suites_of(dev.identity, dev.identity_len);
    msv_device_rec_clear(&dev);
    if (err == MSV_OK && (suspended = is_suspended(s, account)) > 0) {
        msv_conn_send_error(c, f->request_id, E_AUTH, "this account is suspended");
        msv_conn_close_soon(c);
        return;
    }
    if (suspended < 0 || (err != MSV_OK && err != MSV_ERR_AUTH)) {
        /* not an answer about the device: it may try again once storage is back */
        send_unavailable(c, f->request_id);
        return;
    }
    if (err != MSV_OK) {
        atomic_fetch_add(&s->m.auth_failed, 1);
        msv_log(MSV_LOG_INFO, "auth_failed", "peer=%s", c->peer);
        /* what the log shows anyone: the handle's newest entry is its tombstone. Decided by
         * the handle alone: whether the device id named is some account's is nobody's
         * business */
        if (asked[0] != '\0' && handle_deleted(s, asked))
            msv_conn_send_error(c, f->request_id, MSV__WIRE__ERROR_CODE__ERROR_ACCOUNT_DELETED,
                                deleted_text);
        else
            msv_conn_send_error(c, f->request_id, E_AUTH, "authentication failed");
        msv_conn_close_soon(c);
        return;
    }
    /* in a cluster, where this connection stands among the device's on every node: a newer
     * one closes it wherever it is, news of an older one does not (docs/missived.md) */
    if (!a->requests_only && s->cluster != NULL &&
        STORE(s)->connection_order(IMPL(s), &c->order) != MSV_OK) {
        send_unavailable(c, f->request_id);
        return;
    }
    /* for requests alone: beside the device's other connections, up to a bound */
    if (a->requests_only && !msv_server_count_requests_only(s, a->device_id, +1)) {
        msv_conn_send_error(c, f->request_id, E_RATE,
                            "this device has too many connections open here; close one of "
                            "them, or try again when one of them is done");
        msv_conn_close_soon(c);
        return;
    }
    if (a->requests_only)
        c->requests_only = a->device_id; /* counted out when the connection is freed */
    c->handle = strdup(handle);
    if (c->handle == NULL) {
        msv_conn_send_error(c, f->request_id, E_IO, "out of memory");
        msv_conn_close_soon(c);
        return;
    }
    c->device_id = a->device_id;
    c->account_id = account;
    c->suites = suites;
    c->suspension_checked = atomic_load(&s->suspension_gen);
    atomic_fetch_add(&s->m.auth_ok, 1);
    msv_log(MSV_LOG_DEBUG, "auth_ok", "peer=%s device=%llu", c->peer,
            (unsigned long long)c->device_id);
    if (c->requests_only != 0) {
        /* no deliveries: it replaces nothing and is not where a wake-up looks */
        struct timeval idle = {(time_t)s->cfg.idle_timeout_s, 0};

        bufferevent_set_timeouts(c->bev, &idle, NULL);
        msv_conn_send_ok(c, f->request_id);
        return;
    }
    register_connection(c);
    msv_conn_send_ok(c, f->request_id);
    c->more = 1; /* whatever waited while it was away */
    msv_conn_pump(c);
}

/* ---- accounts and devices ------------------------------------------------------------- */

/*
 * Stores a new code for handle, within the handle's daily allowance of codes, unless one is
 * pending: that one stays valid until it expires, so nobody can spoil another person's
 * registration by asking again. Answers a refusal itself.
 */
static msv_err put_code(struct msv_conn_state *c, uint64_t request_id, const char *handle,
                        const uint8_t hash[32])
{
    struct msv_server *s = c->w->srv;
    uint64_t key = msv_server_key(s, handle, strlen(handle));
    int64_t now = msv_server_now_ms(s);
    msv_err err = MSV_ERR_AGAIN; /* no code left for today */

    if (msv_server_take_token(s, MSV_LIMIT_CODE, key, 1)) {
        err = STORE(s)->code_put(IMPL(s), handle, hash, now, now + CODE_TTL_MS);
        if (err != MSV_OK)
            msv_server_refund_token(s, MSV_LIMIT_CODE, key, 1);
    }
    if (err == MSV_ERR_EXISTS || err == MSV_ERR_AGAIN) {
        atomic_fetch_add(&s->m.codes_refused, 1);
        msv_conn_send_error(c, request_id, E_RATE,
                            err == MSV_ERR_EXISTS
                                ? "a code was sent to that handle and is valid for 10 minutes; "
                                  "use it, or ask again after it expires"
                                : "too many codes sent to that handle today; try tomorrow");
    } else if (err != MSV_OK) {
        msv_conn_send_error(c, request_id, E_IO, "storage failed");
    }
    return err;
}

/*
 * Who may create an account ([accounts] registration): anyone; the holder of
 * a usable invite, whose use take takes (else it is only checked, and *hash
 * is set either way); or nobody. Answers a refusal itself: MSV_ERR_AUTH.
 */
static msv_err may_register(struct msv_conn_state *c, uint64_t request_id,
                            const ProtobufCBinaryData *invite, int take, uint8_t hash[32])
{
    struct msv_server *s = c->w->srv;
    const char *why = NULL;
    int code = E_AUTH;
    msv_err err;

    if (strcmp(s->cfg.registration, "open") == 0)
        return MSV_OK;
    if (strcmp(s->cfg.registration, "closed") == 0) {
        why = "this server takes no new accounts";
    } else if (invite->len == 0) {
        why = "this server registers by invitation: ask its operator for an invite code";
    } else if (msv_invite_hash(invite->data, invite->len, hash) != MSV_OK) {
        code = E_INVALID;
        why = "not an invite code (16 letters and digits, as XXXX-XXXX-XXXX-XXXX)";
    } else if ((err = STORE(s)->invite_take(IMPL(s), hash, msv_server_now_ms(s), !take)) ==
               MSV_ERR_NOT_FOUND) {
        why = "that invite code is not valid: unknown, used up, expired or revoked";
    } else if (err != MSV_OK) {
        code = E_IO;
        why = "storage failed";
    }
    if (why == NULL)
        return MSV_OK;
    atomic_fetch_add(&s->m.registrations_refused, 1);
    msv_conn_send_error(c, request_id, code, why);
    return MSV_ERR_AUTH;
}

/* A code that could not go for want of a place for its hook: said, counted. */
static void hook_busy(struct msv_conn_state *c, uint64_t request_id, const char *handle)
{
    atomic_fetch_add(&c->w->srv->m.hooks_refused, 1);
    msv_log(MSV_LOG_WARN, "hook_busy", "handle=%s", handle);
    msv_conn_send_error(c, request_id, E_IO,
                        "codes cannot be sent right now (too many on their way); try again in "
                        "a minute");
}

/*
 * Keeps hash (wiped here) as handle's pending code, then sends code to the handle through the
 * verification hook and answers Ok; a refusal (put_code) is answered instead.
 */
static void send_code(struct msv_conn_state *c, uint64_t request_id, const char *handle,
                      const char *code, uint8_t hash[32])
{
    struct msv_server *s = c->w->srv;
    int hook = strcmp(s->cfg.verification, "hook") == 0;
    msv_err err;

    /* as many hooks as may run at once run already (each a process: a hook that hangs, or a
     * flood from many addresses): nothing kept, said, counted */
    if (hook && !msv_server_hook_room()) {
        sodium_memzero(hash, 32);
        hook_busy(c, request_id, handle);
        return;
    }
    err = put_code(c, request_id, handle, hash);
    sodium_memzero(hash, 32);
    if (err != MSV_OK)
        return;
    if (hook) {
        /* the last place taken meanwhile by another worker, or no process made: the code kept
         * is never sent (a request made again replaces it) */
        if (msv_server_run_hook(s->cfg.verification_hook, handle, code) != 0) {
            hook_busy(c, request_id, handle);
            return;
        }
    } else { /* dev mode: the operator reads the code from the log (never with a hook) */
        msv_log(MSV_LOG_INFO, "verification_code", "handle=%s code=%s", handle, code);
    }
    msv_conn_send_ok(c, request_id);
}

static void handle_register_start(struct msv_conn_state *c, const msv_frame *f)
{
    char handle[MSV_HANDLE_MAX + 1], code[8];
    uint8_t hash[32];

    if (!rate_ok(c, f->request_id))
        return;
    if (!handle_is_free(c, f->request_id, f->register_start->handle, HANDLE_CONTACT, handle,
                        "that handle is registered; add a device to it instead"))
        return;
    /* no code goes out to a handle that could not register */
    if (may_register(c, f->request_id, &f->register_start->invite, 0, hash) != MSV_OK)
        return;
    snprintf(code, sizeof(code), "%06u", (unsigned)randombytes_uniform(1000000));
    code_hash(handle, code, hash);
    send_code(c, f->request_id, handle, code, hash);
}

/* A new device's first prekeys (NewDevice.prekeys), read and checked (present: it had some). */
struct first_prekeys {
    struct msv_prekey_upload u;
    struct msv_one_time_prekey one_time[1];
    struct msv_kem_prekey_rec kem[2];
    int present;
};
static const char *read_first_prekeys(const Msv__Wire__NewDevice *d,
                                      const struct msv_public_identity *pub,
                                      struct first_prekeys *fp, int *code);

/*
 * Checks a NewDevice; returns a message for the client (and its code), or
 * NULL if it is fine (then fp holds its first prekeys). Identities are
 * bounded so that every answer naming an account's devices fits in a frame
 * ([accounts] identity_max).
 */
/* what a NewDevice may hold beyond its identity: its push token and first prekeys (about 1.5 KiB)
 */
#define NEW_DEVICE_EXTRA_MAX 4096

/* 1 if d carries no approval of itself of kind, or one that holds under its own key */
static int self_approval_holds(const Msv__Wire__NewDevice *d, uint8_t kind)
{
    ProtobufCBinaryData sig = kind == MSV_KT_ROOT ? d->root_signature : d->recovery_signature;
    struct msv_kt_device rec = {.device_id = 0,
                                .suite = d->suite,
                                .identity = d->identity.data,
                                .identity_len = d->identity.len,
                                .approval = {kind, 0, sig.data, sig.len}};

    if (sig.len == 0)
        return 1;
    return sig.len <= MSV_KT_APPROVAL_SIG_MAX && msv_kt_approval_verify(&rec, NULL) == MSV_OK;
}

static const char *check_new_device(const struct msv_server *s, const Msv__Wire__NewDevice *d,
                                    struct first_prekeys *fp, int *code)
{
    struct msv_public_identity *pub = NULL;
    const char *bad;

    *code = E_INVALID;
    if (d == NULL || d->suite < MSV_SUITE_CLASSIC || d->suite > MSV_SUITE_MODERN)
        return "unknown suite";
    if (d->identity.len > s->cfg.identity_max || d->push_token.len > PUSH_TOKEN_MAX) {
        *code = E_TOO_BIG;
        return "identity or push token too long";
    }
    /* a waiting device is kept whole (ProvisionOpen): unknown fields must not inflate it */
    if (msv__wire__new_device__get_packed_size(d) > s->cfg.identity_max + NEW_DEVICE_EXTRA_MAX) {
        *code = E_TOO_BIG;
        return "new device record too long";
    }
    if (msv_public_identity_parse((enum msv_suite)d->suite, d->identity.data, d->identity.len,
                                  &pub) != MSV_OK)
        return "not a valid public identity of that suite";
    bad = read_first_prekeys(d, pub, fp, code);
    msv_public_identity_free(pub);
    if (bad == NULL &&
        (!self_approval_holds(d, MSV_KT_ROOT) || !self_approval_holds(d, MSV_KT_RECOVERY))) {
        *code = E_BAD_APPROVAL;
        bad = "the new device's approval of itself does not verify";
    }
    return bad;
}

/* d's own approval record of kind (a root or a recovery), for the directory's device sets. */
static void self_approval(const Msv__Wire__NewDevice *d, uint8_t kind, struct msv_kt_approval *a)
{
    ProtobufCBinaryData sig = kind == MSV_KT_ROOT ? d->root_signature : d->recovery_signature;

    *a = (struct msv_kt_approval){sig.len > 0 ? kind : MSV_KT_UNSIGNED, 0,
                                  sig.len > 0 ? sig.data : NULL, sig.len};
}

static void send_registered(struct msv_conn_state *c, uint64_t request_id, uint64_t device)
{
    Msv__Wire__Frame out = MSV__WIRE__FRAME__INIT;
    Msv__Wire__Registered r = MSV__WIRE__REGISTERED__INIT;

    r.device_id = device;
    out.request_id = request_id;
    out.body_case = MSV__WIRE__FRAME__BODY_REGISTERED;
    out.registered = &r;
    msv_conn_send_frame(c, &out);
}

/*
 * *approved: 1 if no device of the account needs to approve it (a recovery found another
 * device approved first in the store's transaction: set to 0, pending); by_password:
 * AddDevice's.
 * fp: its first prekeys, stored in the same transaction as the device, before anyone is told
 * of it: a sender never finds a device that says post-quantum listed without its bundle.
 */
static msv_err add_device(struct msv_server *s, uint64_t account, const char *handle,
                          const Msv__Wire__NewDevice *d, const struct first_prekeys *fp,
                          int *approved, int by_password, uint64_t *device)
{
    struct msv_device_rec rec = {0};
    struct msv_kt_approval approval;
    msv_err err;

    /* approved at once: the account's first device (its root), or one added by the password
     * to an account with no device left (a recovery), as its own record says */
    self_approval(d, by_password ? MSV_KT_RECOVERY : MSV_KT_ROOT, &approval);
    err =
        STORE(s)->device_add(IMPL(s), account, d->suite, d->identity.data, d->identity.len,
                             d->push_token.data, d->push_token.len, *approved, msv_server_now_ms(s),
                             fp->present ? &fp->u : NULL, *approved ? &approval : NULL, device);

    if (err != MSV_OK)
        return err;
    /* the store decides in its transaction whether a recovery still finds no device: another
     * one of the account may have come first, and this one then waits as pending */
    if (*approved && by_password && STORE(s)->device_get(IMPL(s), *device, &rec) == MSV_OK) {
        *approved = rec.approved;
        msv_device_rec_clear(&rec);
    }
    atomic_fetch_add(&s->m.devices_added, 1);
    rec = (struct msv_device_rec){0};
    rec.id = *device;
    rec.account_id = account;
    rec.suite = d->suite;
    rec.identity = d->identity.data;
    rec.identity_len = d->identity.len;
    rec.push_token = d->push_token.data;
    rec.push_token_len = d->push_token.len;
    rec.approved = *approved;
    msv_notify_device_change(s, account, handle, *device, 1,
                             (*approved ? 0 : 1) | (by_password ? MSV_NOTIFY_BY_PASSWORD : 0), &rec,
                             0, (ProtobufCBinaryData){0, NULL});
    return MSV_OK;
}

_Static_assert(MSV_STORE_PENDING_MAX == 8, "refuse_device's words name the bound");

/* add_device's failure, answered: MSV_ERR_TOO_BIG is the account's devices waiting for approval
 * at their bound (MSV_STORE_PENDING_MAX), or its devices at theirs */
static void refuse_device(struct msv_conn_state *c, uint64_t request_id, msv_err err)
{
    if (err != MSV_ERR_TOO_BIG) {
        msv_conn_send_error(c, request_id, E_IO, "storage failed");
        return;
    }
    atomic_fetch_add(&c->w->srv->m.devices_refused_full, 1);
    msv_conn_send_error(c, request_id, E_TOO_BIG,
                        "this account has 8 devices waiting for approval already (or as many "
                        "devices as it may have): approve or remove one of them first");
}

/*
 * Checks a code against handle's pending one, within the wrong-code allowances: one for this
 * handle from this address and a larger one for the handle from anywhere. A stranger who
 * guesses wrong uses up his address's allowance first, and the code survives wrong guesses,
 * so the owner can still use it. A right code costs nothing. Answers a failure itself.
 */
static msv_err take_code(struct msv_conn_state *c, uint64_t request_id, const char *handle,
                         const uint8_t hash[32])
{
    struct msv_server *s = c->w->srv;
    uint64_t pair[2] = {msv_server_key(s, handle, strlen(handle)), c->peer_key};
    uint64_t by_address = msv_server_key(s, pair, sizeof(pair));
    msv_err err = MSV_ERR_AGAIN;

    if (msv_server_take_token(s, MSV_LIMIT_GUESS_ADDRESS, by_address, 1)) {
        if (msv_server_take_token(s, MSV_LIMIT_GUESS, pair[0], 1)) {
            err = STORE(s)->code_take(IMPL(s), handle, hash, msv_server_now_ms(s), CODE_ATTEMPTS);
            if (err != MSV_ERR_AUTH)
                msv_server_refund_token(s, MSV_LIMIT_GUESS, pair[0], 1);
        }
        if (err != MSV_ERR_AUTH)
            msv_server_refund_token(s, MSV_LIMIT_GUESS_ADDRESS, by_address, 1);
    }
    if (err == MSV_ERR_AGAIN) {
        atomic_fetch_add(&s->m.code_guesses_refused, 1);
        msv_conn_send_error(c, request_id, E_RATE,
                            "too many wrong codes for that handle lately; the code stays valid, "
                            "try again in a few minutes");
    } else if (err != MSV_OK) {
        msv_conn_send_error(c, request_id, err == MSV_ERR_IO ? E_IO : E_AUTH,
                            err == MSV_ERR_IO ? "storage failed"
                                              : "wrong or expired verification code");
    }
    return err;
}

static void handle_register_finish(struct msv_conn_state *c, const msv_frame *f)
{
    struct msv_server *s = c->w->srv;
    const Msv__Wire__RegisterFinish *r = f->register_finish;
    char handle[MSV_HANDLE_MAX + 1], code[8], pw_hash[crypto_pwhash_STRBYTES];
    struct first_prekeys fp;
    const char *bad;
    uint8_t hash[32], invite[32];
    uint64_t account = 0, device = 0;
    msv_err err;
    int code_err, approved = 1;

    if (!rate_ok(c, f->request_id))
        return;
    if (!normalise_handle(r->handle, handle) || r->code.len != 6 ||
        r->password.len < PASSWORD_MIN || r->password.len > PASSWORD_MAX) {
        msv_conn_send_error(c, f->request_id, E_INVALID,
                            "need a valid handle, the 6-digit code and a password of 8 or more "
                            "bytes");
        return;
    }
    if ((bad = check_new_device(s, r->device, &fp, &code_err)) != NULL) {
        msv_conn_send_error(c, f->request_id, code_err, bad);
        return;
    }
    if (may_register(c, f->request_id, &r->invite, 0, invite) != MSV_OK)
        return;
    memcpy(code, r->code.data, 6);
    code[6] = '\0';
    code_hash(handle, code, hash);
    err = take_code(c, f->request_id, handle, hash);
    sodium_memzero(hash, sizeof(hash));
    if (err != MSV_OK)
        return;
    /* Argon2id; the cost is configurable because it runs on this worker's thread */
    if (crypto_pwhash_str(pw_hash, (const char *)r->password.data, r->password.len,
                          s->cfg.argon2_opslimit, (size_t)s->cfg.argon2_memlimit * 1024) != 0) {
        msv_conn_send_error(c, f->request_id, E_IO, "out of memory hashing the password");
        return;
    }
    /* the invite's use is taken last, and given back if no account comes of it */
    if (may_register(c, f->request_id, &r->invite, 1, invite) != MSV_OK)
        return;
    err = STORE(s)->account_create(IMPL(s), handle, pw_hash, msv_server_now_ms(s), &account);
    if (err == MSV_OK)
        err = add_device(s, account, handle, r->device, &fp, &approved, 0, &device);
    if (err != MSV_OK && account == 0 && strcmp(s->cfg.registration, "invite") == 0 &&
        STORE(s)->invite_give_back(IMPL(s), invite) != MSV_OK)
        msv_log(MSV_LOG_WARN, "invite_give_back_failed", "an invite lost a use");
    if (err == MSV_OK && strcmp(s->cfg.registration, "invite") == 0)
        atomic_fetch_add(&s->m.invites_used, 1);
    if (err != MSV_OK) {
        msv_conn_send_error(c, f->request_id, err == MSV_ERR_EXISTS ? E_EXISTS : E_IO,
                            err == MSV_ERR_EXISTS ? "that handle is registered" : "storage failed");
        return;
    }
    atomic_fetch_add(&s->m.registrations, 1);
    msv_log(MSV_LOG_INFO, "account_created", "account=%llu device=%llu",
            (unsigned long long)account, (unsigned long long)device);
    send_registered(c, f->request_id, device);
}

/*
 * Checks password against handle's account: 1 if it matches (*account set), 0 if it does not
 * or there is no such account (one answer for both), -1 if storage failed.
 */
static int check_password(struct msv_server *s, const char *handle, ProtobufCBinaryData pw,
                          uint64_t *account)
{
    char password[PASSWORD_MAX + 1], *pw_hash = NULL;
    msv_err err;
    int ok = 0;

    if (pw.len > PASSWORD_MAX)
        return 0;
    if (pw.len > 0)
        memcpy(password, pw.data, pw.len);
    password[pw.len] = '\0';
    err = STORE(s)->account_get(IMPL(s), handle, account, &pw_hash);
    if (err == MSV_OK)
        ok = crypto_pwhash_str_verify(pw_hash, password, pw.len) == 0;
    sodium_memzero(password, sizeof(password));
    free(pw_hash);
    if (err != MSV_OK && err != MSV_ERR_NOT_FOUND)
        return -1;
    return ok;
}

static void handle_add_device(struct msv_conn_state *c, const msv_frame *f)
{
    struct msv_server *s = c->w->srv;
    const Msv__Wire__AddDevice *a = f->add_device;
    char handle[MSV_HANDLE_MAX + 1];
    struct msv_device_list existing = {0};
    struct first_prekeys fp;
    const char *bad;
    uint64_t account = 0, device = 0;
    msv_err err;
    int ok = 0, approved = 1, code, suspended = 0;

    if (!rate_ok(c, f->request_id))
        return;
    if (!normalise_handle(a->handle, handle) || a->password.len > PASSWORD_MAX) {
        msv_conn_send_error(c, f->request_id, E_INVALID, "need a valid handle and password");
        return;
    }
    if ((bad = check_new_device(s, a->device, &fp, &code)) != NULL) {
        msv_conn_send_error(c, f->request_id, code, bad);
        return;
    }
    ok = check_password(s, handle, a->password, &account);
    if (ok < 0 || (ok && (suspended = is_suspended(s, account)) < 0)) {
        send_unavailable(c, f->request_id);
        return;
    }
    if (!ok) {
        /* the same answer for an unknown handle and a wrong password */
        msv_conn_send_error(c, f->request_id, E_AUTH, "wrong handle or password");
        return;
    }
    if (suspended) {
        msv_conn_send_error(c, f->request_id, E_AUTH, "this account is suspended");
        return;
    }
    /* with devices to ask, a new one waits for their approval; an account whose devices are
     * all gone takes it at once, and that is the recovery path (the password guards it); the
     * store decides it again in its transaction, where two recoveries at once make one root */
    err = STORE(s)->devices_of_account(IMPL(s), account, &existing);
    for (size_t i = 0; err == MSV_OK && i < existing.count; i++)
        approved &= !existing.items[i].approved;
    msv_device_list_clear(&existing);
    if (err == MSV_OK)
        err = add_device(s, account, handle, a->device, &fp, &approved, 1, &device);
    if (err != MSV_OK) {
        refuse_device(c, f->request_id, err);
        return;
    }
    msv_log(MSV_LOG_INFO, "device_added", "account=%llu device=%llu approved=%d",
            (unsigned long long)account, (unsigned long long)device, approved);
    send_registered(c, f->request_id, device);
}

/*
 * Queues the server's notice dc for every device of account_id but except_device and wakes
 * them; a notice that cannot be stored is not sent (the change itself stands).
 */
static void queue_notice(struct msv_server *s, uint64_t account_id, uint64_t except_device,
                         const Msv__Wire__DeviceChange *dc)
{
    struct msv_device_list list = {0};
    struct msv_queue_in *items = NULL;
    uint64_t *ids = NULL;
    uint8_t *packed = NULL;
    size_t n = 0, len = msv__wire__device_change__get_packed_size(dc);
    int64_t now = msv_server_now_ms(s);

    if (STORE(s)->devices_of_account(IMPL(s), account_id, &list) != MSV_OK)
        return;
    packed = malloc(len ? len : 1);
    items = calloc(list.count ? list.count : 1, sizeof(*items));
    ids = calloc(list.count ? list.count : 1, sizeof(*ids));
    if (packed != NULL && items != NULL && ids != NULL) {
        msv__wire__device_change__pack(dc, packed);
        for (size_t i = 0; i < list.count; i++) {
            if (list.items[i].id == except_device)
                continue;
            /* a notice from the server itself: sender device 0, suite 0, a DeviceChange body */
            items[n++] = (struct msv_queue_in){.device_id = list.items[i].id,
                                               .sender_device = 0,
                                               .sender_handle = "",
                                               .suite = 0,
                                               .ciphertext = packed,
                                               .ciphertext_len = len};
        }
        if (n > 0 &&
            STORE(s)->queue_put(IMPL(s), items, n, now,
                                now + (int64_t)atomic_load(&s->queue_ttl_ms), ids) == MSV_OK) {
            for (size_t i = 0; i < n; i++)
                msv_server_wake(s, items[i].device_id);
        }
    }
    free(packed);
    free(items);
    free(ids);
    msv_device_list_clear(&list);
}

/* handle's entry in the directory changed (also: it is gone), on every node. */
static void directory_changed(struct msv_server *s, const char *handle)
{
    msv_dircache_drop(&s->dir, handle); /* sends address the new set from now on */
    msv_kt_log_grown(&s->kt);           /* and lookups answer from the log's new leaf */
    msv_cluster_directory_changed(s->cluster, handle); /* on every node */
}

/* The device set of every handle of the account changed (each has a new leaf). */
static void account_directory_changed(struct msv_server *s, uint64_t account_id, const char *handle)
{
    char **handles = NULL;
    size_t n = 0;

    directory_changed(s, handle);
    if (STORE(s)->handles_of_account(IMPL(s), account_id, &handles, &n) != MSV_OK)
        return; /* the cache's entries age out (dircache.h) */
    for (size_t i = 0; i < n; i++) {
        if (strcmp(handles[i], handle) != 0)
            directory_changed(s, handles[i]);
        free(handles[i]);
    }
    free(handles);
}

void msv_notify_device_change(struct msv_server *s, uint64_t account_id, const char *handle,
                              uint64_t except_device, int added, int pending,
                              const struct msv_device_rec *dev, uint64_t approver,
                              ProtobufCBinaryData approval)
{
    account_directory_changed(s, account_id, handle);
    Msv__Wire__DeviceChange dc = MSV__WIRE__DEVICE_CHANGE__INIT;
    Msv__Wire__DeviceInfo info = MSV__WIRE__DEVICE_INFO__INIT;

    info.device_id = dev->id;
    info.suite = dev->suite;
    info.identity.data = dev->identity;
    info.identity.len = dev->identity_len;
    info.push_token.data = dev->push_token;
    info.push_token.len = dev->push_token_len;
    dc.added = added;
    dc.pending = (pending & 1) != 0;
    dc.by_password = (pending & MSV_NOTIFY_BY_PASSWORD) != 0;
    dc.approver = approver;
    dc.approval = approval;
    dc.handle.data = (uint8_t *)handle;
    dc.handle.len = strlen(handle);
    dc.device = &info;
    queue_notice(s, account_id, except_device, &dc);
}

/* A notice about the account itself (docs/wire.md, "Account life") to its devices but by. */
static void notify_account(struct msv_server *s, uint64_t account_id, const char *handle,
                           Msv__Wire__AccountNotice what, uint64_t by)
{
    Msv__Wire__DeviceChange dc = MSV__WIRE__DEVICE_CHANGE__INIT;

    dc.handle.data = (uint8_t *)handle;
    dc.handle.len = strlen(handle);
    dc.account = what;
    dc.by_device = by;
    queue_notice(s, account_id, by, &dc);
}

/*
 * 1 if pw is the password of the connection's own account; otherwise answers (wrong password,
 * or storage unavailable) and returns 0.
 */
static int own_password_ok(struct msv_conn_state *c, uint64_t request_id, ProtobufCBinaryData pw)
{
    uint64_t account = 0;
    int ok = check_password(c->w->srv, c->handle, pw, &account);

    if (ok < 0)
        send_unavailable(c, request_id);
    else if (!ok || account != c->account_id)
        msv_conn_send_error(c, request_id, E_AUTH, "wrong password");
    return ok > 0 && account == c->account_id;
}

/*
 * The password changes only with the current one, even on an authenticated connection: a
 * stolen session alone cannot take the account's password (and with it, new devices).
 */
static void handle_password_change(struct msv_conn_state *c, const msv_frame *f)
{
    struct msv_server *s = c->w->srv;
    const Msv__Wire__PasswordChange *p = f->password_change;
    char pw_hash[crypto_pwhash_STRBYTES];
    msv_err err;

    if (!rate_ok(c, f->request_id))
        return;
    if (p->new_password.len < PASSWORD_MIN || p->new_password.len > PASSWORD_MAX) {
        msv_conn_send_error(c, f->request_id, E_INVALID, "a new password has 8 to 1024 bytes");
        return;
    }
    if (!own_password_ok(c, f->request_id, p->password))
        return;
    if (crypto_pwhash_str(pw_hash, (const char *)p->new_password.data, p->new_password.len,
                          s->cfg.argon2_opslimit, (size_t)s->cfg.argon2_memlimit * 1024) != 0) {
        msv_conn_send_error(c, f->request_id, E_IO, "out of memory hashing the password");
        return;
    }
    err = STORE(s)->account_set_password(IMPL(s), c->account_id, pw_hash);
    sodium_memzero(pw_hash, sizeof(pw_hash));
    if (err != MSV_OK) {
        msv_conn_send_error(c, f->request_id, E_IO, "storage failed");
        return;
    }
    msv_log(MSV_LOG_INFO, "password_changed", "account=%llu device=%llu",
            (unsigned long long)c->account_id, (unsigned long long)c->device_id);
    notify_account(s, c->account_id, c->handle, MSV__WIRE__ACCOUNT_NOTICE__ACCOUNT_PASSWORD_CHANGED,
                   c->device_id);
    msv_conn_send_ok(c, f->request_id);
}

/*
 * Deletes handle's account (docs/missived.md, "Deleting an account"): the store's one
 * transaction, then its attachments' bytes, the relay's and the log's caches, and every
 * connection of its devices, on every node. MSV_ERR_NOT_FOUND for an unknown handle.
 */
msv_err msv_server_delete_account(struct msv_server *s, const char *handle)
{
    struct msv_account_deleted del = {0};
    char **handles = NULL;
    size_t n = 0;
    uint64_t account = 0;
    msv_err err = STORE(s)->account_get(IMPL(s), handle, &account, NULL);

    /* every handle of the account: sends to any are refused, lookups answer tombstones */
    if (err == MSV_OK)
        err = STORE(s)->handles_of_account(IMPL(s), account, &handles, &n);
    if (err == MSV_OK)
        err = STORE(s)->account_delete(IMPL(s), handle, msv_server_now_ms(s), &del);
    for (size_t i = 0; i < n; i++) {
        if (err == MSV_OK)
            directory_changed(s, handles[i]);
        free(handles[i]);
    }
    free(handles);
    if (err != MSV_OK)
        return err;
    for (size_t i = 0; i < del.n_blobs; i++)
        s->blobs->ops->remove(s->blobs->impl, del.blobs[i]);
    for (size_t i = 0; i < del.n_devices; i++)
        msv_server_wake(s, del.devices[i] | MSV_WAKE_CLOSE);
    msv_log(MSV_LOG_INFO, "account_deleted", "account=%llu devices=%zu attachments=%zu",
            (unsigned long long)del.account_id, del.n_devices, del.n_blobs);
    msv_account_deleted_clear(&del);
    return MSV_OK;
}

/* Like a password change, deletion needs the password: a stolen session alone cannot. */
static void handle_account_delete(struct msv_conn_state *c, const msv_frame *f)
{
    struct msv_server *s = c->w->srv;
    msv_err err;

    if (!rate_ok(c, f->request_id) ||
        !own_password_ok(c, f->request_id, f->account_delete->password))
        return;
    err = msv_server_delete_account(s, c->handle);
    if (err != MSV_OK) {
        msv_conn_send_error(c, f->request_id, E_IO, "storage failed");
        return;
    }
    msv_conn_send_ok(c, f->request_id);
    msv_conn_close_soon(c);
}

/* The code missive-admin reset-password sent sets a new password (frame.proto PasswordReset). */
static void handle_password_reset(struct msv_conn_state *c, const msv_frame *f)
{
    struct msv_server *s = c->w->srv;
    const Msv__Wire__PasswordReset *r = f->password_reset;
    char handle[MSV_HANDLE_MAX + 1], code[8], pw_hash[crypto_pwhash_STRBYTES];
    uint8_t hash[32];
    uint64_t account = 0;
    msv_err err;

    if (!rate_ok(c, f->request_id))
        return;
    if (!normalise_handle(r->handle, handle) || r->code.len != 6 ||
        r->new_password.len < PASSWORD_MIN || r->new_password.len > PASSWORD_MAX) {
        msv_conn_send_error(c, f->request_id, E_INVALID,
                            "need a valid handle, the 6-digit code and a new password of 8 to "
                            "1024 bytes");
        return;
    }
    memcpy(code, r->code.data, 6);
    code[6] = '\0';
    msv_server_reset_code_hash(handle, code, hash);
    err = take_code(c, f->request_id, handle, hash); /* answers a failure itself */
    sodium_memzero(hash, sizeof(hash));
    if (err != MSV_OK)
        return;
    err = STORE(s)->account_get(IMPL(s), handle, &account, NULL);
    if (err == MSV_OK &&
        crypto_pwhash_str(pw_hash, (const char *)r->new_password.data, r->new_password.len,
                          s->cfg.argon2_opslimit, (size_t)s->cfg.argon2_memlimit * 1024) != 0)
        err = MSV_ERR_NOMEM;
    if (err == MSV_OK)
        err = STORE(s)->account_set_password(IMPL(s), account, pw_hash);
    sodium_memzero(pw_hash, sizeof(pw_hash));
    if (err != MSV_OK) {
        msv_conn_send_error(c, f->request_id, err == MSV_ERR_NOT_FOUND ? E_AUTH : E_IO,
                            err == MSV_ERR_NOT_FOUND ? "wrong or expired verification code"
                                                     : "storage failed");
        return;
    }
    msv_log(MSV_LOG_INFO, "password_reset", "account=%llu", (unsigned long long)account);
    notify_account(s, account, handle, MSV__WIRE__ACCOUNT_NOTICE__ACCOUNT_PASSWORD_RESET, 0);
    msv_conn_send_ok(c, f->request_id);
}

static void handle_remove_device(struct msv_conn_state *c, const msv_frame *f)
{
    struct msv_server *s = c->w->srv;
    struct msv_device_rec dev = {0};
    uint64_t target = f->remove_device->device_id;
    msv_err err;

    err = STORE(s)->device_get(IMPL(s), target, &dev);
    if (err == MSV_OK && dev.account_id != c->account_id)
        err = MSV_ERR_NOT_FOUND; /* another account's device is none of its business */
    if (err == MSV_OK)
        err = STORE(s)->device_remove(IMPL(s), c->account_id, target);
    if (err != MSV_OK) {
        msv_device_rec_clear(&dev);
        if (err == MSV_ERR_TOO_BIG) /* a set grown past MSV_KT_APPROVED_SET_MAX before */
            msv_conn_send_error(c, f->request_id, E_TOO_BIG,
                                "the device list would need more than 64 removed devices' "
                                "approvals; remove the devices approved after this one first");
        else
            msv_conn_send_error(c, f->request_id, err == MSV_ERR_NOT_FOUND ? E_NOT_FOUND : E_IO,
                                err == MSV_ERR_NOT_FOUND ? "no such device in this account"
                                                         : "storage failed");
        return;
    }
    atomic_fetch_add(&s->m.devices_removed, 1);
    msv_notify_device_change(s, c->account_id, c->handle, target, 0, 0, &dev, 0,
                             (ProtobufCBinaryData){0, NULL});
    msv_device_rec_clear(&dev);
    msv_log(MSV_LOG_INFO, "device_removed", "account=%llu device=%llu",
            (unsigned long long)c->account_id, (unsigned long long)target);
    msv_conn_send_ok(c, f->request_id);
    /* its open connections end, on every worker and node; this one too if it was its own */
    msv_server_wake(s, target | MSV_WAKE_CLOSE);
    if (target == c->device_id)
        msv_conn_close_soon(c);
}

/*
 * 1 if the approving device's approval record of dev (ApproveDevice.chain_approval) holds under
 * the approver's key, or there is none (an older client: the device is unsigned); 0 if not, or
 * -1 if storage failed. Sets *a to the record to keep.
 */
static int chain_approval_holds(struct msv_server *s, uint64_t approver,
                                const struct msv_device_rec *dev, ProtobufCBinaryData sig,
                                struct msv_kt_approval *a)
{
    struct msv_device_rec by = {0};
    struct msv_kt_device rec = {dev->id,
                                dev->suite,
                                dev->identity,
                                dev->identity_len,
                                {MSV_KT_APPROVED, approver, sig.data, sig.len}};
    struct msv_kt_device signer;
    msv_err err;
    int ok;

    *a = (struct msv_kt_approval){MSV_KT_UNSIGNED, 0, NULL, 0};
    if (sig.len == 0)
        return 1;
    if (sig.len > MSV_KT_APPROVAL_SIG_MAX)
        return 0;
    err = STORE(s)->device_get(IMPL(s), approver, &by);
    if (err != MSV_OK) {
        msv_device_rec_clear(&by);
        return err == MSV_ERR_NOT_FOUND ? 0 : -1;
    }
    signer = (struct msv_kt_device){by.id, by.suite, by.identity, by.identity_len, {0}};
    ok = msv_kt_approval_verify(&rec, &signer) == MSV_OK;
    msv_device_rec_clear(&by);
    if (ok)
        *a = rec.approval;
    return ok;
}

/* How many approved devices account has (MSV_KT_DEVICES_MAX if storage failed). */
static size_t approved_count(struct msv_server *s, uint64_t account)
{
    struct msv_device_list list = {0};
    size_t n = 0;

    if (STORE(s)->devices_of_account(IMPL(s), account, &list) != MSV_OK)
        n = MSV_KT_DEVICES_MAX;
    for (size_t i = 0; i < list.count; i++)
        n += list.items[i].approved != 0;
    msv_device_list_clear(&list);
    return n;
}

static void handle_approve_device(struct msv_conn_state *c, const msv_frame *f)
{
    struct msv_server *s = c->w->srv;
    struct msv_device_rec dev = {0};
    struct msv_kt_approval approval;
    uint64_t target = f->approve_device->device_id;
    msv_err err = STORE(s)->device_get(IMPL(s), target, &dev);
    int holds = 0;

    if (f->approve_device->approval.len > MSV_SIGNATURE_MAX) {
        msv_device_rec_clear(&dev);
        msv_conn_send_error(c, f->request_id, E_INVALID, "an approval is a signature");
        return;
    }
    if (err == MSV_OK && dev.account_id != c->account_id)
        err = MSV_ERR_NOT_FOUND; /* another account's device is none of its business */
    if (err == MSV_OK &&
        (holds = chain_approval_holds(s, c->device_id, &dev, f->approve_device->chain_approval,
                                      &approval)) <= 0) {
        msv_device_rec_clear(&dev);
        if (holds < 0)
            send_unavailable(c, f->request_id);
        else
            msv_conn_send_error(c, f->request_id, E_BAD_APPROVAL,
                                "the approval of the device does not verify");
        return;
    }
    if (err == MSV_OK)
        err = STORE(s)->device_approve(IMPL(s), c->account_id, target, &approval);
    if (err != MSV_OK) {
        msv_device_rec_clear(&dev);
        if (err == MSV_ERR_TOO_BIG && approved_count(s, c->account_id) < MSV_KT_DEVICES_MAX)
            /* the set's records past MSV_KT_APPROVED_SET_MAX: a removal could not fit */
            msv_conn_send_error(
                c, f->request_id, E_TOO_BIG,
                "this account's device list is at its limit of 65 devices and removed devices "
                "that approved them; approve with a device approved earlier, or remove every "
                "device and add one with the password to start the list again");
        else if (err == MSV_ERR_TOO_BIG) /* the log's leaf holds at most MSV_KT_DEVICES_MAX */
            msv_conn_send_error(c, f->request_id, E_TOO_BIG,
                                "an account has at most 64 devices; remove one first");
        else if (err == MSV_ERR_AUTH) /* removed while its approval was being checked */
            msv_conn_send_error(c, f->request_id, E_BAD_APPROVAL,
                                "the approving device is no longer one of this account's devices");
        else
            msv_conn_send_error(c, f->request_id, err == MSV_ERR_NOT_FOUND ? E_NOT_FOUND : E_IO,
                                err == MSV_ERR_NOT_FOUND
                                    ? "no device of this account waits for approval"
                                    : "storage failed");
        return;
    }
    dev.approved = 1;
    msv_notify_device_change(s, c->account_id, c->handle, target, 1, 0, &dev, c->device_id,
                             f->approve_device->approval);
    msv_device_rec_clear(&dev);
    msv_log(MSV_LOG_INFO, "device_approved", "account=%llu device=%llu by=%llu",
            (unsigned long long)c->account_id, (unsigned long long)target,
            (unsigned long long)c->device_id);
    msv_conn_send_ok(c, f->request_id);
}

/* ---- linking by QR code (docs/wire.md, "Linking by QR code") -------------------------- */

static void refuse_provision(struct msv_conn_state *c, uint64_t request_id, int code,
                             const char *why)
{
    atomic_fetch_add(&c->w->srv->m.provision_refused, 1);
    msv_conn_send_error(c, request_id, code, why);
}

/*
 * In a cluster the address is in its Redis too, so that the account's device, connected to
 * another node than the new device, links it: msv:prov:ADDRESS:dev (the suite, 4 bytes big
 * endian, and the identity), :linked once a LinkDevice took it, :msg the message left on another
 * node, each expiring with the address. The node that holds the address keeps its bounds.
 */
static void shared_key(const uint8_t *address, const char *what, char key[80])
{
    char hex[2 * MSV_PROVISION_ADDRESS_LEN + 1];

    if (msv_hex_encode(address, MSV_PROVISION_ADDRESS_LEN, hex, sizeof(hex)) != MSV_OK)
        hex[0] = '\0';
    snprintf(key, 80, "msv:prov:%s:%s", hex, what);
}

static void shared_open(struct msv_server *s, const uint8_t *address, uint32_t suite,
                        const ProtobufCBinaryData *device)
{
    uint8_t *v = malloc(4 + device->len);
    char key[80];

    if (v == NULL)
        return;
    msv_put_u32be(v, suite);
    memcpy(v + 4, device->data, device->len);
    shared_key(address, "dev", key);
    /* a Redis that does not answer leaves the address to this node's own devices */
    if (msv_shared_put(s->shared_limits, key, v, 4 + device->len, MSV_PROVISION_TTL_MS, 1) !=
        MSV_OK)
        msv_log(MSV_LOG_WARN, "provision_not_shared", "the cluster's Redis did not answer");
    free(v);
}

/* A LinkDevice of an address: marked linked in Redis; taken from there if not held here. */
static msv_err shared_link(struct msv_server *s, const uint8_t *address, msv_err here,
                           uint32_t *suite, uint8_t **device, size_t *device_len)
{
    uint8_t *v = NULL;
    size_t len = 0;
    char key[80];
    msv_err err = here;

    if (here == MSV_ERR_NOT_FOUND) {
        shared_key(address, "dev", key);
        err = msv_shared_get(s->shared_limits, key, 0, MSV_PROVISION_MESSAGE_MAX, &v, &len);
        if (err == MSV_OK && len <= 4)
            err = MSV_ERR_PARSE;
        if (err != MSV_OK) {
            free(v);
            return MSV_ERR_NOT_FOUND;
        }
        *suite = msv_get_u32be(v);
        memmove(v, v + 4, len - 4);
        *device = v;
        *device_len = len - 4;
    }
    shared_key(address, "linked", key);
    err = msv_shared_put(s->shared_limits, key, "1", 1, MSV_PROVISION_TTL_MS, 1);
    if (err == MSV_ERR_EXISTS || (err != MSV_OK && here != MSV_OK)) {
        free(*device);
        *device = NULL;
        return err == MSV_ERR_EXISTS ? MSV_ERR_EXISTS : MSV_ERR_NOT_FOUND;
    }
    return MSV_OK;
}

/* A message for an address linked through another node: left in Redis for the node holding it. */
static msv_err shared_message(struct msv_server *s, const uint8_t *address,
                              const ProtobufCBinaryData *message)
{
    uint8_t *linked = NULL;
    size_t len = 0;
    char key[80];
    msv_err err;

    shared_key(address, "linked", key);
    err = msv_shared_get(s->shared_limits, key, 0, 1, &linked, &len);
    free(linked);
    if (err != MSV_OK)
        return err == MSV_ERR_IO ? MSV_ERR_IO : MSV_ERR_NOT_FOUND;
    shared_key(address, "msg", key);
    return msv_shared_put(s->shared_limits, key, message->data, message->len, MSV_PROVISION_TTL_MS,
                          1);
}

/* The message for c's address that another node left in Redis; the address closes with it. */
static msv_err shared_take(struct msv_server *s, struct msv_conn_state *c, uint8_t **message,
                           size_t *len)
{
    uint8_t address[MSV_PROVISION_ADDRESS_LEN];
    char key[80];
    msv_err err = msv_provision_address(&s->provisions, c, msv_server_now_ms(s), address);

    if (err != MSV_OK)
        return MSV_ERR_AGAIN;
    shared_key(address, "msg", key);
    err = msv_shared_get(s->shared_limits, key, 1, MSV_PROVISION_MESSAGE_MAX, message, len);
    if (err != MSV_OK)
        return MSV_ERR_AGAIN;
    msv_provision_forget(&s->provisions, c);
    return MSV_OK;
}

void msv_provision_shared_forget(struct msv_server *s, const void *c)
{
    uint8_t address[MSV_PROVISION_ADDRESS_LEN], *v = NULL;
    size_t len = 0;
    char key[80];

    if (s->shared_limits == NULL ||
        msv_provision_address(&s->provisions, c, msv_server_now_ms(s), address) != MSV_OK)
        return;
    shared_key(address, "dev", key); /* a device gone can be linked on no node */
    if (msv_shared_get(s->shared_limits, key, 1, MSV_PROVISION_MESSAGE_MAX, &v, &len) == MSV_OK)
        free(v);
}

static void handle_provision_open(struct msv_conn_state *c, const msv_frame *f)
{
    struct msv_server *s = c->w->srv;
    const Msv__Wire__NewDevice *d = f->provision_open->device;
    Msv__Wire__Frame out = MSV__WIRE__FRAME__INIT;
    Msv__Wire__ProvisionAddress pa = MSV__WIRE__PROVISION_ADDRESS__INIT;
    uint8_t address[MSV_PROVISION_ADDRESS_LEN], *packed = NULL;
    struct first_prekeys fp;
    const char *bad;
    size_t len;
    int code;
    msv_err err;

    if (!rate_ok(c, f->request_id))
        return;
    if ((bad = check_new_device(s, d, &fp, &code)) != NULL)
        return refuse_provision(c, f->request_id, code, bad);
    /* the device waits there whole, its first prekeys with it, for the LinkDevice */
    len = msv__wire__new_device__get_packed_size(d);
    packed = malloc(len + 1);
    err = packed == NULL ? MSV_ERR_NOMEM : MSV_OK;
    if (err == MSV_OK)
        err = msv_provision_open(&s->provisions, c, c->peer_key, msv_server_now_ms(s), d->suite,
                                 packed, msv__wire__new_device__pack(d, packed), address);
    if (err == MSV_OK && s->shared_limits != NULL)
        shared_open(s, address, d->suite, &(ProtobufCBinaryData){len, packed});
    free(packed);
    if (err == MSV_ERR_EXISTS)
        return refuse_provision(c, f->request_id, E_EXISTS,
                                "this connection has a provisioning address already");
    if (err != MSV_OK)
        return refuse_provision(c, f->request_id, E_RATE,
                                "too many devices wait to be linked from this address; try "
                                "again in a few minutes");
    atomic_fetch_add(&s->m.provision_opened, 1);
    /* the device waits here for a device of the account, which takes a person minutes (the
     * addresses are bounded per peer and in all) */
    msv_conn_waits_for_link(c, MSV_PROVISION_TTL_MS);
    pa.address = (ProtobufCBinaryData){sizeof(address), address};
    pa.expires_in_s = MSV_PROVISION_TTL_MS / 1000;
    out.request_id = f->request_id;
    out.body_case = MSV__WIRE__FRAME__BODY_PROVISION_ADDRESS;
    out.provision_address = &pa;
    msv_conn_send_frame(c, &out);
}

/* How often a connection's ProvisionTake is looked at (it asks about once a second) */
#define PROVISION_TAKE_EVERY_MS 500

static void handle_provision_take(struct msv_conn_state *c, const msv_frame *f)
{
    struct msv_server *s = c->w->srv;
    Msv__Wire__Frame out = MSV__WIRE__FRAME__INIT;
    Msv__Wire__ProvisionMessage pm = MSV__WIRE__PROVISION_MESSAGE__INIT;
    uint8_t *message = NULL;
    size_t len = 0;
    int64_t now = msv_mono_ms();
    msv_err err;

    /* an unauthenticated connection's question costs the addresses' lock, and in a cluster a
     * round trip to Redis under the lock every worker's shared limits take: asked faster, it
     * is refused without either */
    if (now < c->next_take_ms) {
        atomic_fetch_add(&s->m.provision_takes_early, 1);
        msv_conn_send_error(c, f->request_id, E_RATE,
                            "asked too often: at most every 500 ms on a connection");
        return;
    }
    c->next_take_ms = now + PROVISION_TAKE_EVERY_MS;
    err = msv_provision_take(&s->provisions, c, msv_server_now_ms(s), &message, &len);

    if (err == MSV_ERR_AGAIN && s->shared_limits != NULL)
        err = shared_take(s, c, &message, &len);
    if (err == MSV_ERR_AGAIN) { /* asked again until it comes */
        msv_conn_send_error(c, f->request_id, E_NOT_FOUND, "no provisioning message yet");
        return;
    }
    if (err != MSV_OK)
        return refuse_provision(c, f->request_id, E_INVALID,
                                "this connection has no provisioning address (or it expired)");
    atomic_fetch_add(&s->m.provision_delivered, 1);
    pm.message = (ProtobufCBinaryData){len, message};
    out.request_id = f->request_id;
    out.body_case = MSV__WIRE__FRAME__BODY_PROVISION_MESSAGE;
    out.provision_message = &pm;
    msv_conn_send_frame(c, &out);
    free(message);
}

/* The device waiting at the address joins the caller's account, pending its approval. */
static void handle_link_device(struct msv_conn_state *c, const msv_frame *f)
{
    struct msv_server *s = c->w->srv;
    Msv__Wire__Frame out = MSV__WIRE__FRAME__INIT;
    Msv__Wire__NewDevice *nd = NULL;
    Msv__Wire__DeviceInfo info = MSV__WIRE__DEVICE_INFO__INIT;
    struct first_prekeys fp;
    uint8_t *packed = NULL;
    size_t len = 0;
    uint32_t suite = 0;
    uint64_t device = 0;
    int code, pending = 0;
    msv_err err = msv_provision_link(&s->provisions, f->link_device->address.data,
                                     f->link_device->address.len, msv_server_now_ms(s), &suite,
                                     &packed, &len);

    if (s->shared_limits != NULL && (err == MSV_OK || err == MSV_ERR_NOT_FOUND) &&
        f->link_device->address.len == MSV_PROVISION_ADDRESS_LEN)
        err = shared_link(s, f->link_device->address.data, err, &suite, &packed, &len);
    if (err == MSV_ERR_EXISTS || err == MSV_ERR_NOT_FOUND)
        return refuse_provision(c, f->request_id, err == MSV_ERR_EXISTS ? E_EXISTS : E_NOT_FOUND,
                                err == MSV_ERR_EXISTS
                                    ? "that device was linked already"
                                    : "no device waits at that address (expired or gone)");
    /* checked when it was left there; read again to store its first prekeys */
    if (err == MSV_OK && ((nd = msv__wire__new_device__unpack(NULL, len, packed)) == NULL ||
                          check_new_device(s, nd, &fp, &code) != NULL))
        err = MSV_ERR_PARSE;
    if (err == MSV_OK)
        err = add_device(s, c->account_id, c->handle, nd, &fp, &pending, 0, &device);
    if (err != MSV_OK) {
        msv__wire__new_device__free_unpacked(nd, NULL);
        free(packed);
        refuse_device(c, f->request_id, err == MSV_ERR_PARSE ? MSV_ERR_IO : err);
        return;
    }
    msv_log(MSV_LOG_INFO, "device_linked", "account=%llu device=%llu by=%llu",
            (unsigned long long)c->account_id, (unsigned long long)device,
            (unsigned long long)c->device_id);
    info.device_id = device;
    info.suite = nd->suite;
    info.identity = nd->identity;
    out.request_id = f->request_id;
    out.body_case = MSV__WIRE__FRAME__BODY_LINKED_DEVICE;
    out.linked_device = &info;
    msv_conn_send_frame(c, &out);
    msv__wire__new_device__free_unpacked(nd, NULL);
    free(packed);
}

static void handle_provision_put(struct msv_conn_state *c, const msv_frame *f)
{
    struct msv_server *s = c->w->srv;
    const Msv__Wire__ProvisionPut *p = f->provision_put;
    msv_err err = msv_provision_put(&s->provisions, p->address.data, p->address.len,
                                    msv_server_now_ms(s), p->message.data, p->message.len);

    if (err == MSV_ERR_NOT_FOUND && s->shared_limits != NULL &&
        p->address.len == MSV_PROVISION_ADDRESS_LEN)
        err = shared_message(s, p->address.data, &p->message);
    if (err == MSV_ERR_TOO_BIG)
        return refuse_provision(c, f->request_id, E_TOO_BIG, "a provisioning message is too big");
    if (err == MSV_ERR_EXISTS)
        return refuse_provision(c, f->request_id, E_EXISTS, "that address has its message");
    if (err == MSV_ERR_NOT_FOUND)
        return refuse_provision(c, f->request_id, E_NOT_FOUND,
                                "no linked device waits at that address");
    if (err != MSV_OK) {
        msv_conn_send_error(c, f->request_id, E_IO, "the message could not be kept; try again");
        return;
    }
    msv_conn_send_ok(c, f->request_id);
}

/* ---- handles of an account (docs/wire.md, "Handles") ---------------------------------- */

/* The code HandleAdd sends proves the handle for the asking account's HandleVerify only. */
static void handle_code_hash(uint64_t account, const char *handle, const char *code,
                             uint8_t out[32])
{
    char label[48];

    snprintf(label, sizeof(label), "MSV-handle-v1:%llu", (unsigned long long)account);
    labelled_code_hash(label, handle, code, out);
}

/* The account's handles; *n is 0 (and an answer sent) if storage failed. */
static char **own_handles(struct msv_conn_state *c, uint64_t request_id, size_t *n)
{
    struct msv_server *s = c->w->srv;
    char **handles = NULL;

    *n = 0;
    if (STORE(s)->handles_of_account(IMPL(s), c->account_id, &handles, n) != MSV_OK) {
        send_unavailable(c, request_id);
        *n = 0;
        return NULL;
    }
    return handles;
}

static void free_handles(char **handles, size_t n)
{
    for (size_t i = 0; handles != NULL && i < n; i++)
        free(handles[i]);
    free(handles);
}

/* 1 if handle is one of handles. */
static int handle_listed(char *const *handles, size_t n, const char *handle)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(handles[i], handle) == 0)
            return 1;
    return 0;
}

/* Tells the account's other devices that a handle was added or removed. */
static void notify_handle(struct msv_conn_state *c, const char *handle, int added)
{
    struct msv_server *s = c->w->srv;
    Msv__Wire__DeviceChange dc = MSV__WIRE__DEVICE_CHANGE__INIT;
    ProtobufCBinaryData which = {strlen(handle), (uint8_t *)handle};
    char *first = NULL;

    if (STORE(s)->account_handle(IMPL(s), c->account_id, &first) != MSV_OK)
        return; /* the change stands; the devices see it in their next HandleList */
    dc.handle.data = (uint8_t *)first;
    dc.handle.len = strlen(first);
    dc.by_device = c->device_id;
    if (added)
        dc.handle_added = which;
    else
        dc.handle_removed = which;
    queue_notice(s, c->account_id, c->device_id, &dc);
    free(first);
}

static void handle_handle_add(struct msv_conn_state *c, const msv_frame *f)
{
    struct msv_server *s = c->w->srv;
    char handle[MSV_HANDLE_MAX + 1], code[8], **handles = NULL;
    uint8_t hash[32];
    size_t n = 0;

    if (!rate_ok(c, f->request_id))
        return;
    /* as registration: a handle of any account (this one too) gets no code */
    if (!handle_is_free(c, f->request_id, f->handle_add->handle, HANDLE_CONTACT, handle,
                        "that handle is registered") ||
        (handles = own_handles(c, f->request_id, &n)) == NULL)
        return;
    free_handles(handles, n);
    if (n >= ACCOUNT_HANDLES_MAX) {
        atomic_fetch_add(&s->m.handles_refused, 1);
        msv_conn_send_error(c, f->request_id, E_TOO_BIG,
                            "an account has at most 10 handles; remove one first");
        return;
    }
    snprintf(code, sizeof(code), "%06u", (unsigned)randombytes_uniform(1000000));
    handle_code_hash(c->account_id, handle, code, hash);
    send_code(c, f->request_id, handle, code, hash);
}

static void handle_handle_verify(struct msv_conn_state *c, const msv_frame *f)
{
    struct msv_server *s = c->w->srv;
    const Msv__Wire__HandleVerify *v = f->handle_verify;
    char handle[MSV_HANDLE_MAX + 1], code[8];
    uint8_t hash[32];
    msv_err err;

    if (!rate_ok(c, f->request_id))
        return;
    if (!normalise_handle(v->handle, handle) || is_username(handle) || v->code.len != 6) {
        msv_conn_send_error(c, f->request_id, E_INVALID,
                            "need a valid handle and the 6-digit code");
        return;
    }
    memcpy(code, v->code.data, 6);
    code[6] = '\0';
    handle_code_hash(c->account_id, handle, code, hash);
    err = take_code(c, f->request_id, handle, hash);
    sodium_memzero(hash, sizeof(hash));
    if (err != MSV_OK)
        return;
    err = STORE(s)->handle_add(IMPL(s), c->account_id, handle, ACCOUNT_HANDLES_MAX,
                               msv_server_now_ms(s));
    if (err != MSV_OK) {
        if (err == MSV_ERR_EXISTS || err == MSV_ERR_TOO_BIG)
            atomic_fetch_add(&s->m.handles_refused, 1);
        msv_conn_send_error(c, f->request_id,
                            err == MSV_ERR_EXISTS    ? E_EXISTS
                            : err == MSV_ERR_TOO_BIG ? E_TOO_BIG
                                                     : E_IO,
                            err == MSV_ERR_EXISTS ? "that handle was registered meanwhile"
                            : err == MSV_ERR_TOO_BIG
                                ? "an account has at most 10 handles; remove one first"
                                : "storage failed");
        return;
    }
    atomic_fetch_add(&s->m.handles_added, 1);
    directory_changed(s, handle);
    notify_handle(c, handle, 1);
    msv_log(MSV_LOG_INFO, "handle_added", "account=%llu device=%llu",
            (unsigned long long)c->account_id, (unsigned long long)c->device_id);
    msv_conn_send_ok(c, f->request_id);
}

/* The account's devices' connections end (this one's after its answer if it used handle). */
static void close_account_connections(struct msv_conn_state *c, const char *handle)
{
    struct msv_server *s = c->w->srv;
    struct msv_device_list list = {0};

    if (STORE(s)->devices_of_account(IMPL(s), c->account_id, &list) == MSV_OK) {
        for (size_t i = 0; i < list.count; i++)
            if (list.items[i].id != c->device_id)
                msv_server_wake(s, list.items[i].id | MSV_WAKE_CLOSE);
    }
    msv_device_list_clear(&list);
    if (strcmp(c->handle, handle) == 0)
        msv_conn_close_soon(c);
}

static void handle_handle_remove(struct msv_conn_state *c, const msv_frame *f)
{
    struct msv_server *s = c->w->srv;
    char handle[MSV_HANDLE_MAX + 1];
    msv_err err;

    if (!normalise_handle(f->handle_remove->handle, handle)) {
        msv_conn_send_error(c, f->request_id, E_INVALID, "not a valid handle");
        return;
    }
    err = STORE(s)->handle_remove(IMPL(s), c->account_id, handle, msv_server_now_ms(s));
    if (err != MSV_OK) {
        msv_conn_send_error(c, f->request_id,
                            err == MSV_ERR_NOT_FOUND ? E_NOT_FOUND
                            : err == MSV_ERR_INVALID ? E_INVALID
                                                     : E_IO,
                            err == MSV_ERR_NOT_FOUND ? "that handle is not this account's"
                            : err == MSV_ERR_INVALID
                                ? "that is the account's last handle; add another first"
                                : "storage failed");
        return;
    }
    atomic_fetch_add(&s->m.handles_removed, 1);
    directory_changed(s, handle); /* sends to it are refused from now on */
    notify_handle(c, handle, 0);
    msv_log(MSV_LOG_INFO, "handle_removed", "account=%llu device=%llu",
            (unsigned long long)c->account_id, (unsigned long long)c->device_id);
    msv_conn_send_ok(c, f->request_id);
    /* connections that authenticated with it authenticate again, as the account's first */
    close_account_connections(c, handle);
}

/* ---- the account's username (docs/wire.md, "Usernames") -------------------------------- */

/* Answers a failed handle_add or handle_remove of a username. */
static void refuse_username(struct msv_conn_state *c, uint64_t request_id, msv_err err)
{
    atomic_fetch_add(&c->w->srv->m.usernames_refused, 1);
    msv_conn_send_error(
        c, request_id,
        err == MSV_ERR_EXISTS    ? E_EXISTS
        : err == MSV_ERR_TOO_BIG ? E_TOO_BIG
        : err == MSV_ERR_INVALID ? E_INVALID
                                 : E_IO,
        err == MSV_ERR_EXISTS    ? "that username was taken meanwhile"
        : err == MSV_ERR_TOO_BIG ? "an account has at most 10 handles; remove one first"
        : err == MSV_ERR_INVALID ? "the username is the account's last handle; add another first"
                                 : "storage failed");
}

/* Takes the interval's stamp for a new username; answers a refusal itself (-1). */
static int stamp_username(struct msv_conn_state *c, uint64_t request_id, int64_t now, int64_t *last)
{
    struct msv_server *s = c->w->srv;
    int64_t interval = (int64_t)s->cfg.username_interval_s * 1000;
    msv_err err = STORE(s)->username_stamp(IMPL(s), c->account_id, now, interval, last);
    char why[160];

    if (err == MSV_OK)
        return 0;
    if (err != MSV_ERR_AGAIN) {
        send_unavailable(c, request_id);
        return -1;
    }
    atomic_fetch_add(&s->m.usernames_refused, 1);
    snprintf(why, sizeof(why),
             "the username changes at most once every %u s; it can change again in %lld s",
             s->cfg.username_interval_s, (long long)((*last + interval - now + 999) / 1000));
    msv_conn_send_error(c, request_id, E_RATE, why);
    return -1;
}

/*
 * UsernameSet: the new username (if any) is added, then the old one (if any) removed, each
 * with its log entry; if the removal fails, the new one is taken away again and the stamp put
 * back, so that an account never keeps two.
 */
static void handle_username_set(struct msv_conn_state *c, const msv_frame *f)
{
    struct msv_server *s = c->w->srv;
    char name[MSV_HANDLE_MAX + 1] = "", **handles = NULL, *old = NULL;
    int64_t now = msv_server_now_ms(s), last = 0;
    int set = f->username_set->username.len > 0, added = 0;
    size_t n = 0;
    msv_err err = MSV_OK;

    if (!rate_ok(c, f->request_id))
        return;
    if (set && !handle_is_free(c, f->request_id, f->username_set->username, HANDLE_USERNAME, name,
                               "that username is another account's")) {
        atomic_fetch_add(&s->m.usernames_refused, 1);
        return;
    }
    if ((handles = own_handles(c, f->request_id, &n)) == NULL)
        return;
    for (size_t i = 0; old == NULL && i < n; i++)
        if (is_username(handles[i]))
            old = handles[i];
    if (!set && old == NULL) {
        msv_conn_send_error(c, f->request_id, E_NOT_FOUND, "this account has no username");
        goto out;
    }
    if (set && stamp_username(c, f->request_id, now, &last) != 0)
        goto out;
    if (set)
        err = STORE(s)->handle_add(IMPL(s), c->account_id, name,
                                   ACCOUNT_HANDLES_MAX + (old != NULL), now);
    added = set && err == MSV_OK;
    if (err == MSV_OK && old != NULL &&
        (err = STORE(s)->handle_remove(IMPL(s), c->account_id, old, now)) == MSV_ERR_NOT_FOUND) {
        err = MSV_OK; /* released meanwhile by another device, whose request told the others */
        old = NULL;
    }
    if (err != MSV_OK && added) /* never two usernames: the new one goes again */
        (void)STORE(s)->handle_remove(IMPL(s), c->account_id, name, now);
    if (err != MSV_OK) {
        if (set)
            (void)STORE(s)->username_stamp(IMPL(s), c->account_id, last, -1, &last);
        refuse_username(c, f->request_id, err);
        goto out;
    }
    if (set) {
        atomic_fetch_add(&s->m.usernames_set, 1);
        directory_changed(s, name);
        notify_handle(c, name, 1);
    }
    if (old != NULL) {
        atomic_fetch_add(&s->m.usernames_released, 1);
        directory_changed(s, old); /* sends to it are refused from now on */
        notify_handle(c, old, 0);
    }
    msv_log(MSV_LOG_INFO, "username_changed", "account=%llu device=%llu set=%d released=%d",
            (unsigned long long)c->account_id, (unsigned long long)c->device_id, set, old != NULL);
    msv_conn_send_ok(c, f->request_id);
    if (old != NULL) /* connections that authenticated with it authenticate again */
        close_account_connections(c, old);
out:
    free_handles(handles, n);
}

static void handle_handle_list(struct msv_conn_state *c, const msv_frame *f)
{
    Msv__Wire__Frame out = MSV__WIRE__FRAME__INIT;
    Msv__Wire__HandleList list = MSV__WIRE__HANDLE_LIST__INIT;
    ProtobufCBinaryData items[ACCOUNT_HANDLES_MAX];
    size_t n = 0;
    char **handles = own_handles(c, f->request_id, &n);

    if (handles == NULL)
        return;
    list.n_handles = n < ACCOUNT_HANDLES_MAX ? n : ACCOUNT_HANDLES_MAX;
    for (size_t i = 0; i < list.n_handles; i++)
        items[i] = (ProtobufCBinaryData){strlen(handles[i]), (uint8_t *)handles[i]};
    list.handles = items;
    out.request_id = f->request_id;
    out.body_case = MSV__WIRE__FRAME__BODY_HANDLE_LIST;
    out.handle_list = &list;
    msv_conn_send_frame(c, &out);
    free_handles(handles, n);
}

/*
 * The handle an authenticated send names its sender by: from_handle if it is one of the
 * account's (ERROR_INVALID otherwise), else the one the device authenticated with. Answers a
 * refusal itself and returns NULL; the caller frees the result.
 */
static char *sender_handle(struct msv_conn_state *c, const msv_frame *f)
{
    char handle[MSV_HANDLE_MAX + 1], **handles = NULL, *out = NULL;
    size_t n = 0;

    if (f->send->from_handle.len == 0)
        return strdup(c->handle != NULL ? c->handle : "");
    if (c->device_id == 0 || !normalise_handle(f->send->from_handle, handle)) {
        msv_conn_send_error(c, f->request_id, E_INVALID,
                            "a sender handle belongs to an authenticated send");
        return NULL;
    }
    if ((handles = own_handles(c, f->request_id, &n)) == NULL)
        return NULL;
    if (handle_listed(handles, n, handle))
        out = strdup(handle);
    else
        msv_conn_send_error(c, f->request_id, E_INVALID, "that handle is not this account's");
    free_handles(handles, n);
    return out;
}

/* ---- directory ------------------------------------------------------------------------ */

/* Fills hd with the devices of handle (none if unknown). Pointers borrow from list. */
static msv_err devices_of_handle(struct msv_server *s, const char *handle,
                                 struct msv_device_list *list, uint64_t *account)
{
    msv_err err = STORE(s)->account_get(IMPL(s), handle, account, NULL);

    size_t kept = 0;

    memset(list, 0, sizeof(*list));
    if (err == MSV_ERR_NOT_FOUND) {
        *account = 0;
        return MSV_OK;
    }
    if (err == MSV_OK)
        err = STORE(s)->devices_of_account(IMPL(s), *account, list);
    /* devices waiting for approval are neither listed nor addressed */
    for (size_t i = 0; err == MSV_OK && i < list->count; i++) {
        if (list->items[i].approved)
            list->items[kept++] = list->items[i];
        else
            msv_device_rec_clear(&list->items[i]);
    }
    if (err == MSV_OK)
        list->count = kept;
    return err;
}

struct handle_result {
    char handle[MSV_HANDLE_MAX + 1];
    struct msv_device_list list;
    Msv__Wire__HandleDevices hd;
    Msv__Wire__DeviceInfo *infos;
    Msv__Wire__DeviceInfo **info_ptrs;
};

static msv_err fill_result(struct handle_result *r)
{
    msv__wire__handle_devices__init(&r->hd);
    r->hd.handle.data = (uint8_t *)r->handle;
    r->hd.handle.len = strlen(r->handle);
    r->infos = calloc(r->list.count + 1, sizeof(*r->infos));
    r->info_ptrs = calloc(r->list.count + 1, sizeof(*r->info_ptrs));
    if (r->infos == NULL || r->info_ptrs == NULL)
        return MSV_ERR_NOMEM;
    for (size_t i = 0; i < r->list.count; i++) {
        const struct msv_device_rec *d = &r->list.items[i];

        msv__wire__device_info__init(&r->infos[i]);
        r->infos[i].device_id = d->id;
        r->infos[i].suite = d->suite;
        r->infos[i].identity.data = d->identity;
        r->infos[i].identity.len = d->identity_len;
        /* no push token: it is for the server's pushes, shown to nobody who looks up */
        r->info_ptrs[i] = &r->infos[i];
    }
    r->hd.n_devices = r->list.count;
    r->hd.devices = r->info_ptrs;
    return MSV_OK;
}

static void free_results(struct handle_result *r, size_t n)
{
    for (size_t i = 0; r != NULL && i < n; i++) {
        msv_device_list_clear(&r[i].list);
        free(r[i].infos);
        free(r[i].info_ptrs);
    }
    free(r);
}

/* Looks up n handles (already normalised in r[i].handle). */
static msv_err lookup_all(struct msv_server *s, struct handle_result *r, size_t n,
                          Msv__Wire__HandleDevices **ptrs, uint64_t *accounts)
{
    for (size_t i = 0; i < n; i++) {
        uint64_t account = 0;
        msv_err err = devices_of_handle(s, r[i].handle, &r[i].list, &account);

        if (err == MSV_OK)
            err = fill_result(&r[i]);
        if (err != MSV_OK)
            return err;
        ptrs[i] = &r[i].hd;
        if (accounts != NULL)
            accounts[i] = account;
    }
    return MSV_OK;
}

/*
 * Tests only ([testing] lookup_substitute = "A B"): a dishonest directory that answers a lookup
 * of handle A with handle B's proven result.
 */
static void substitute_for_tests(const struct msv_server *s, char handle[MSV_HANDLE_MAX + 1])
{
    char from[MSV_HANDLE_MAX + 1], to[MSV_HANDLE_MAX + 1];

    if (s->cfg.lookup_substitute[0] != '\0' &&
        sscanf(s->cfg.lookup_substitute, "%256s %256s", from, to) == 2 && strcmp(handle, from) == 0)
        snprintf(handle, MSV_HANDLE_MAX + 1, "%s", to);
}

/*
 * Normalises a request's handles into fresh result slots; with unique, a
 * handle named twice is refused. Answers the refusal itself and returns -1.
 */
static int read_handles(struct msv_conn_state *c, uint64_t request_id,
                        const ProtobufCBinaryData *handles, size_t n, int unique,
                        struct handle_result **r, Msv__Wire__HandleDevices ***ptrs)
{
    *r = calloc(n, sizeof(**r));
    *ptrs = calloc(n, sizeof(**ptrs));
    if (*r == NULL || *ptrs == NULL) {
        msv_conn_send_error(c, request_id, E_IO, "out of memory");
        return -1;
    }
    for (size_t i = 0; i < n; i++) {
        if (!normalise_handle(handles[i], (*r)[i].handle)) {
            msv_conn_send_error(c, request_id, E_INVALID, "not a valid handle");
            return -1;
        }
        substitute_for_tests(c->w->srv, (*r)[i].handle);
        for (size_t k = 0; unique && k < i; k++) {
            if (strcmp((*r)[k].handle, (*r)[i].handle) == 0) {
                msv_conn_send_error(c, request_id, E_INVALID, "a handle is named twice");
                return -1;
            }
        }
    }
    return 0;
}

/* The lookup tokens a history proof costs beyond its lookup's: one per VRF proof it makes (v and
 * up to 64 versions absent, or 65 at version 0) */
#define HISTORY_COST MSV_PT_ABSENT_MAX

/* lookups started over because the asker's own handles changed while they were read */
#define LOOKUP_TRIES 3

/*
 * Which of the n handles looked up are still the asking account's own: own[i] cleared for one
 * no longer listed as the account's, and tomb[i] set to each own handle's newest tombstone
 * (msv_kt_owned_from). MSV_ERR_AGAIN when either changed: a handle removed since the last
 * reading, perhaps registered by another account whose versions the lookup holds, or taken away
 * and given back. The handles are read before the tombstones, so a handle taken away between
 * the two shows the tombstone of its taking away.
 */
static msv_err owned_now(struct msv_server *s, uint64_t account, const char *const *names, size_t n,
                         uint8_t *own, uint64_t *tomb)
{
    char **handles = NULL;
    size_t n_own = 0;
    msv_err err = STORE(s)->handles_of_account(IMPL(s), account, &handles, &n_own);
    msv_err changed = MSV_OK;

    for (size_t i = 0; err == MSV_OK && i < n; i++) {
        uint64_t from = 0;

        if (!own[i])
            continue;
        if (!handle_listed(handles, n_own, names[i])) {
            own[i] = 0;
            changed = MSV_ERR_AGAIN;
        } else if ((err = msv_kt_owned_from(s->store, names[i], &from)) == MSV_OK &&
                   from != tomb[i]) {
            tomb[i] = from;
            changed = MSV_ERR_AGAIN;
        }
    }
    free_handles(handles, n_own);
    return err != MSV_OK ? err : changed;
}

/*
 * Which of the n handles looked up are the asking account's own (*own, 1 each), with each one's
 * newest tombstone (*tomb): those alone get their history proof, whose marker versions' VRF
 * outputs would let anyone else link the handle's later versions (docs/transparency.md, "The
 * owner's history proof"), and their versions. -1 (and an answer sent) if that fails.
 */
static int own_of(struct msv_conn_state *c, uint64_t request_id, const char *const *names, size_t n,
                  uint8_t **own, uint64_t **tomb)
{
    msv_err err;

    if (c->account_id == 0)
        return 0; /* nobody's own */
    *own = malloc(n);
    *tomb = calloc(n, sizeof(**tomb));
    if (*own == NULL || *tomb == NULL) {
        msv_conn_send_error(c, request_id, E_IO, "out of memory");
        return -1;
    }
    memset(*own, 1, n);
    err = owned_now(c->w->srv, c->account_id, names, n, *own, *tomb);
    if (err != MSV_OK && err != MSV_ERR_AGAIN) {
        send_unavailable(c, request_id);
        return -1;
    }
    return 0;
}

/* A history proof makes up to 65 VRF proofs (a lookup's are kept): it costs as much. -1 (and
 * the refusal sent) past the account's lookup bucket. */
static int history_paid(struct msv_conn_state *c, uint64_t request_id, const uint8_t *own, size_t n)
{
    size_t proven = 0;

    for (size_t i = 0; own != NULL && i < n; i++)
        proven += own[i];
    if (proven > 0 && !msv_server_take_token(c->w->srv, MSV_LIMIT_LOOKUP, c->account_id,
                                             (double)proven * HISTORY_COST)) {
        msv_conn_send_error(c, request_id, E_RATE, "too many lookups; slow down");
        return -1;
    }
    return 0;
}

/*
 * The versions the owner's monitor asks for (LookupRequest.versions_from): of its own handles
 * only, each version a VRF proof made for it, so each costs a lookup token; the tokens taken go
 * to ask->versions_max (fewer than asked for: the answer says more follow). -1 (and an answer
 * sent) for a request of another shape, or an empty bucket.
 */
static int versions_asked(struct msv_conn_state *c, uint64_t request_id,
                          const Msv__Wire__LookupRequest *q, const uint8_t *own, uint64_t *from,
                          struct msv_kt_owner_ask *ask)
{
    size_t wanted = 0;

    if (q->n_versions_from != q->n_handles) {
        msv_conn_send_error(c, request_id, E_INVALID,
                            "versions_from names a first log index for every handle looked up");
        return -1;
    }
    for (size_t i = 0; i < q->n_handles; i++) {
        from[i] = own != NULL && own[i] ? q->versions_from[i] : 0;
        wanted += from[i] != 0;
    }
    ask->versions_from = from;
    if (wanted == 0)
        return 0;
    /* tests only: a dishonest server's answer with more versions of a handle than it may hold */
    ask->handle_max = c->w->srv->cfg.owner_versions_max;
    ask->versions_max = msv_server_take_upto(
        c->w->srv, MSV_LIMIT_LOOKUP, c->account_id,
        (long)(wanted * (ask->handle_max != 0 ? ask->handle_max : MSV_KT_VERSIONS_MAX)));
    if (ask->versions_max == 0) {
        msv_conn_send_error(c, request_id, E_RATE, "too many lookups; slow down");
        return -1;
    }
    ask->bytes_max = msv_server_answer_max(c->w->srv) / 2;
    return 0;
}

/*
 * Usernames among the n looked up that no account has take tokens of their own bucket
 * ([directory] unknown_lookup_rate), so that guessing names to find people runs dry while
 * lookups of people one knows go on. Answers a refusal itself (-1).
 */
static int unknown_usernames_ok(struct msv_conn_state *c, uint64_t request_id,
                                const struct handle_result *r, size_t n)
{
    struct msv_server *s = c->w->srv;
    size_t unknown = 0;

    for (size_t i = 0; i < n; i++) {
        uint64_t account = 0;
        msv_err err = MSV_OK;

        if (is_username(r[i].handle))
            err = STORE(s)->account_get(IMPL(s), r[i].handle, &account, NULL);
        if (err != MSV_OK && err != MSV_ERR_NOT_FOUND) {
            send_unavailable(c, request_id);
            return -1;
        }
        unknown += err == MSV_ERR_NOT_FOUND;
    }
    if (unknown == 0 || msv_server_take_token(s, MSV_LIMIT_UNKNOWN, c->account_id, (double)unknown))
        return 0;
    atomic_fetch_add(&s->m.unknown_lookups_refused, 1);
    msv_conn_send_error(c, request_id, E_RATE,
                        "too many lookups of usernames that no account has; slow down");
    return -1;
}

/*
 * The lookup itself (kt_log.h), for an asker whose own handles (own, NULL: none) get their
 * history proofs or versions: their ownership is read again once the answer is made, and the
 * lookup starts over without the handles no longer the account's (at most LOOKUP_TRIES times,
 * then MSV_ERR_AGAIN), so that an account never gets another's versions or history proof of a
 * handle taken from it meanwhile (docs/transparency.md, "The owner's versions").
 */
static msv_err lookup_owned(struct msv_conn_state *c, const Msv__Wire__LookupRequest *q,
                            const char *const *names, uint8_t *own, uint64_t *tomb, uint64_t *from,
                            struct msv_kt_owner_ask *ask, Msv__Wire__LookupResponse *resp,
                            struct msv_kt_answer **answer)
{
    struct msv_server *s = c->w->srv;
    size_t n = q->n_handles;
    msv_err err = MSV_ERR_AGAIN;

    for (int tries = 0; err == MSV_ERR_AGAIN && tries < LOOKUP_TRIES; tries++) {
        if (tries > 0)
            atomic_fetch_add(&s->m.lookups_again, 1);
        msv_kt_answer_free(*answer);
        *answer = NULL;
        *resp = (Msv__Wire__LookupResponse)MSV__WIRE__LOOKUP_RESPONSE__INIT;
        ask->versions_given = 0;
        for (size_t i = 0; from != NULL && i < n; i++)
            from[i] = own != NULL && own[i] ? q->versions_from[i] : 0;
        err = msv_kt_lookup(&s->kt, s->store, msv_server_now_ms(s), names, n, ask, q->known_size,
                            resp, answer);
        if (err == MSV_OK && own != NULL)
            err = owned_now(s, c->account_id, names, n, own, tomb);
    }
    return err;
}

/* Lookups are answered from the transparency log, with proofs (kt_log.h). */
static void handle_lookup(struct msv_conn_state *c, const msv_frame *f)
{
    struct msv_server *s = c->w->srv;
    const Msv__Wire__LookupRequest *q = f->lookup;
    Msv__Wire__Frame out = MSV__WIRE__FRAME__INIT;
    Msv__Wire__LookupResponse resp = MSV__WIRE__LOOKUP_RESPONSE__INIT;
    Msv__Wire__HandleDevices **ptrs = NULL;
    struct handle_result *r = NULL;
    struct msv_kt_answer *answer = NULL;
    struct msv_kt_owner_ask ask = {0};
    const char **names = NULL;
    uint8_t *own = NULL;
    uint64_t *from = NULL, *tomb = NULL;
    size_t n = q->n_handles;
    msv_err err;

    if (n == 0 || n > LOOKUP_MAX) {
        msv_conn_send_error(c, f->request_id, n ? E_TOO_BIG : E_INVALID,
                            "look up 1 to 256 handles at a time");
        return;
    }
    /* the bucket counts handles, so batching does not buy more enumeration */
    if (!msv_server_take_token(s, MSV_LIMIT_LOOKUP, c->account_id, (double)n)) {
        msv_conn_send_error(c, f->request_id, E_RATE, "too many lookups; slow down");
        return;
    }
    if (read_handles(c, f->request_id, q->handles, n, q->history || q->n_versions_from > 0, &r,
                     &ptrs) != 0 ||
        unknown_usernames_ok(c, f->request_id, r, n) != 0)
        goto out;
    names = calloc(n, sizeof(*names));
    if (names == NULL) {
        msv_conn_send_error(c, f->request_id, E_IO, "out of memory");
        goto out;
    }
    for (size_t i = 0; i < n; i++)
        names[i] = r[i].handle;
    if ((q->history || q->n_versions_from > 0) &&
        own_of(c, f->request_id, names, n, &own, &tomb) != 0)
        goto out;
    if (q->history) {
        if (history_paid(c, f->request_id, own, n) != 0)
            goto out;
        ask.history = own;
    }
    ask.account_id = c->account_id;
    if (q->n_versions_from > 0 && ((from = calloc(n, sizeof(*from))) == NULL ||
                                   versions_asked(c, f->request_id, q, own, from, &ask) != 0)) {
        if (from == NULL)
            msv_conn_send_error(c, f->request_id, E_IO, "out of memory");
        goto out;
    }
    err = lookup_owned(c, q, names, own, tomb, from, &ask, &resp, &answer);
    if (err != MSV_OK) {
        msv_conn_send_error(c, f->request_id, E_IO,
                            err == MSV_ERR_AGAIN ? "this account's handles kept changing while "
                                                   "they were looked up; try again"
                                                 : "storage failed");
        goto out;
    }
    atomic_fetch_add(&s->m.lookups, n);
    atomic_fetch_add(&s->m.owner_versions, ask.versions_given);
    for (size_t i = 0; s->cfg.owner_versions_stall && from != NULL && i < resp.n_results; i++) {
        if (from[i] != 0) { /* tests only: a directory that keeps the monitor waiting */
            resp.results[i]->n_versions = 0;
            resp.results[i]->versions_more = 1;
        }
    }
    out.request_id = f->request_id;
    out.body_case = MSV__WIRE__FRAME__BODY_LOOKUP_RESULT;
    out.lookup_result = &resp;
    msv_conn_send_frame(c, &out);
out:
    if (ask.versions_max > ask.versions_given) /* the tokens of versions not given go back */
        (void)msv_server_take_upto(s, MSV_LIMIT_LOOKUP, c->account_id,
                                   -(long)(ask.versions_max - ask.versions_given));
    msv_kt_answer_free(answer);
    free(names);
    free(own);
    free(tomb);
    free(from);
    free_results(r, n);
    free(ptrs);
}

/*
 * The log itself, for auditors and monitors: no authentication needed, but a
 * connection without an account gets leaf hashes in place of the leaves that
 * name a handle (kt_log.h). Its own limit counts entries (per account, or per
 * address without one). An asker with fewer tokens than entries asked for
 * gets that many and pages on; one with none is refused. A read of the head
 * alone costs one token; unused tokens go back.
 */
/* reads of the log started over because the reader's handles changed meanwhile (kt_log.h) */
#define LOG_READ_TRIES 3

static enum msv_kt_hide log_read_hide(const struct msv_server *s, const struct msv_conn_state *c)
{
    switch (s->cfg.log_read_hash_fault) { /* tests only: a dishonest server */
    case 1:
        return c->account_id != 0 ? MSV_KT_HIDE_OTHERS : MSV_KT_HIDE_FAULT_SHORT;
    case 2:
        return c->account_id != 0 ? MSV_KT_HIDE_OTHERS : MSV_KT_HIDE_FAULT_BOTH;
    case 3:
        return MSV_KT_HIDE_HANDLES; /* the account's own entries too */
    case 4:
        return c->account_id != 0 ? MSV_KT_HIDE_OTHERS : MSV_KT_HIDE_FAULT_V4;
    default:
        return c->account_id != 0 ? MSV_KT_HIDE_OTHERS : MSV_KT_HIDE_HANDLES;
    }
}

static void handle_log_read(struct msv_conn_state *c, const msv_frame *f)
{
    struct msv_server *s = c->w->srv;
    Msv__Wire__Frame out = MSV__WIRE__FRAME__INIT;
    Msv__Wire__LogEntries resp = MSV__WIRE__LOG_ENTRIES__INIT;
    Msv__Wire__LogRead q = *f->log_read;
    struct msv_kt_answer *answer = NULL;
    uint64_t key = c->account_id != 0 ? c->account_id : c->peer_key | (UINT64_C(1) << 63);
    long want = q.count == 0 ? 1 : q.count < MSV_KT_READ_MAX ? (long)q.count : MSV_KT_READ_MAX;
    size_t granted = msv_server_take_upto(s, MSV_LIMIT_LOG, key, want);
    uint64_t proofs_from = 0;
    enum msv_kt_hide hide = log_read_hide(s, c);
    msv_err err = MSV_ERR_AGAIN;

    if (granted == 0) {
        msv_conn_send_error(c, f->request_id, E_RATE, "too many log reads; slow down");
        return;
    }
    if (q.count > granted)
        q.count = (uint32_t)granted;
    /* an account reads its own handles' entries whole, nobody else's: read again if its handles
     * changed while the entries were read (kt_log.h) */
    for (int tries = 0; err == MSV_ERR_AGAIN && tries < LOG_READ_TRIES; tries++) {
        if (tries > 0)
            atomic_fetch_add(&s->m.log_reads_again, 1);
        msv_kt_answer_free(answer);
        answer = NULL;
        resp = (Msv__Wire__LogEntries)MSV__WIRE__LOG_ENTRIES__INIT;
        err = msv_kt_read(&s->kt, s->store, msv_server_now_ms(s), &q, hide, c->account_id,
                          msv_server_answer_max(s) - LOG_HEAD_ROOM, &resp, &answer, &proofs_from);
    }
    if (err == MSV_ERR_AGAIN) {
        msv_conn_send_error(c, f->request_id, E_IO,
                            "this account's handles kept changing while the log was read; "
                            "try again");
        resp.n_entries = 0;
    } else if (err == MSV_ERR_NOT_FOUND) {
        char why[200];

        snprintf(why, sizeof(why),
                 "the key directory's append-only proof is kept from log entry %" PRIu64
                 " on, not from %" PRIu64,
                 proofs_from, q.start);
        msv_conn_send_error(c, f->request_id, E_PROOF_GONE, why);
        resp.n_entries = 0;
    } else if (err != MSV_OK) {
        msv_conn_send_error(c, f->request_id, E_IO, "storage failed");
        resp.n_entries = 0;
    } else {
        if (s->cfg.log_read_epoch_fault && resp.head != NULL && resp.n_entries > 0) {
            /* tests only: a dishonest server's head without its key directory root */
            resp.head->epoch_root = (ProtobufCBinaryData){0, NULL};
            resp.head->epoch_signature = (ProtobufCBinaryData){0, NULL};
        }
        out.request_id = f->request_id;
        out.body_case = MSV__WIRE__FRAME__BODY_LOG_ENTRIES;
        out.log_entries = &resp;
        msv_conn_send_frame(c, &out);
    }
    if (granted > (resp.n_entries ? resp.n_entries : 1))
        (void)msv_server_take_upto(s, MSV_LIMIT_LOG, key,
                                   -(long)(granted - (resp.n_entries ? resp.n_entries : 1)));
    msv_kt_answer_free(answer);
}

/* ---- sending -------------------------------------------------------------------------- */

static size_t varint_len(size_t v)
{
    size_t n = 1;

    while (v >= 0x80) {
        v >>= 7;
        n++;
    }
    return n;
}

/*
 * How many of the n device lists fit in an answer of max bytes around frame
 * (which holds none of them yet): each costs its tag, length and bytes, and
 * the Error's own length grows by at most 4 bytes.
 */
static size_t stale_fit(const Msv__Wire__Frame *frame, Msv__Wire__HandleDevices *const *p, size_t n,
                        size_t max)
{
    size_t used = msv__wire__frame__get_packed_size(frame) + 4, fit = 0;

    for (; fit < n; fit++) {
        size_t len = msv__wire__handle_devices__get_packed_size(p[fit]);

        if (used + 1 + varint_len(len) + len > max)
            break;
        used += 1 + varint_len(len) + len;
    }
    return fit;
}

/*
 * The current devices of the handles of a send whose devices it did not address right, or of as
 * many of the first as fit in a frame (partial: the client looks the others up itself), and the
 * devices it addressed that are none of its handles' (unknown: the client looks up again the
 * handles it took them for).
 */
static void send_stale(struct msv_conn_state *c, uint64_t request_id, Msv__Wire__HandleDevices **p,
                       size_t n, uint64_t *unknown, size_t n_unknown)
{
    Msv__Wire__Frame out = MSV__WIRE__FRAME__INIT;
    Msv__Wire__Error e = MSV__WIRE__ERROR__INIT;
    static const char msg[] = "the device list is out of date; address these devices";

    e.code = MSV__WIRE__ERROR_CODE__ERROR_STALE_DEVICES;
    e.message.data = (uint8_t *)msg;
    e.message.len = sizeof(msg) - 1;
    e.partial = 1; /* counted in the room the lists leave, then cleared if all fit */
    out.request_id = request_id;
    out.body_case = MSV__WIRE__FRAME__BODY_ERROR;
    out.error = &e;
    e.n_unknown_devices = n_unknown;
    e.unknown_devices = unknown;
    e.n_current = stale_fit(&out, p, n, msv_server_answer_max(c->w->srv));
    e.partial = e.n_current < n;
    e.current = p;
    if (e.partial)
        atomic_fetch_add(&c->w->srv->m.stale_partial, 1);
    msv_conn_send_frame(c, &out);
}

/* The devices a send must address for handle: from the cache, or read and cached. */
static msv_err dir_devices(struct msv_server *s, const char *handle, struct msv_dir_device *out,
                           size_t max, size_t *n)
{
    struct msv_device_list list;
    uint64_t account = 0, generation = 0;
    msv_err err;

    if (msv_dircache_get(&s->dir, handle, &account, out, max, n, &generation))
        return MSV_OK;
    err = devices_of_handle(s, handle, &list, &account);
    if (err != MSV_OK)
        return err;
    if (list.count > max) {
        msv_device_list_clear(&list);
        return MSV_ERR_TOO_BIG;
    }
    for (size_t i = 0; i < list.count; i++)
        out[i] = (struct msv_dir_device){
            .id = list.items[i].id,
            .suite = list.items[i].suite,
            .suites = msv_identity_suites_of(list.items[i].identity, list.items[i].identity_len)};
    *n = list.count;
    if (account != 0) /* unknown handles are not cached: registration needs no drop */
        msv_dircache_put(&s->dir, handle, account, out, *n, generation);
    msv_device_list_clear(&list);
    return MSV_OK;
}

/*
 * Marks the items of p whose device is of the sending account (p->own), from the devices of the
 * handle c authenticated with (cached, as the send's own check read them): the group commit
 * counts a send as reaching someone only through another account's device (server.c
 * check_caps).
 */
static msv_err mark_own(struct msv_conn_state *c, struct msv_pending_send *p)
{
    static _Thread_local struct msv_dir_device devs[SEND_ENVELOPES_MAX + 1];
    size_t count = 0;
    msv_err err;

    if (c->handle == NULL)
        return MSV_OK;
    err = dir_devices(c->w->srv, c->handle, devs, SEND_ENVELOPES_MAX + 1, &count);
    if (err != MSV_OK)
        return err;
    if ((p->own = calloc(p->count ? p->count : 1, 1)) == NULL)
        return MSV_ERR_NOMEM;
    for (size_t i = 0; i < p->count; i++)
        for (size_t d = 0; d < count; d++)
            if (p->items[i].device_id == devs[d].id)
                p->own[i] = 1;
    return MSV_OK;
}

/*
 * What a send's envelopes got wrong, for its stale answer (send_stale): stale[i] set for each
 * named handle one of whose devices is not addressed exactly once, and unknown: the devices of
 * envelopes that are none of the named handles' (a device removed since, say), at most
 * SEND_ENVELOPES_MAX. Not precise (every handle's lists to be sent) when that could not be told.
 */
struct stale_parts {
    uint8_t stale[SEND_HANDLES_MAX];
    uint64_t unknown[SEND_ENVELOPES_MAX];
    size_t n_unknown;
    int precise;
};

/* An envelope's device and its place in the send, sorted by device (addresses_match). */
struct envelope_at {
    uint64_t device;
    size_t index;
};

static int cmp_envelope_at(const void *a, const void *b)
{
    const struct envelope_at *x = a, *y = b;

    return x->device < y->device ? -1 : x->device > y->device ? 1 : x->index < y->index ? -1 : 1;
}

/* The first of the n sorted envelopes of device (n if none). */
static size_t envelopes_from(const struct envelope_at *sorted, size_t n, uint64_t device)
{
    size_t lo = 0, hi = n;

    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;

        if (sorted[mid].device < device)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

/*
 * The envelopes must address every device of the named handles except the
 * sending one, each once, in that device's suite (sealed: all of them, sealed). Returns 1 if they
 * do, 0 if not (*sp says where not), -1 if storage failed.
 */
static int addresses_match(const struct msv_conn_state *c, const Msv__Wire__SendRequest *q,
                           const struct handle_result *r, size_t n, int sealed,
                           struct stale_parts *sp)
{
    static _Thread_local struct msv_dir_device devs[SEND_ENVELOPES_MAX + 1];
    static _Thread_local uint8_t named[SEND_ENVELOPES_MAX]; /* the envelope's device is named */
    static _Thread_local struct envelope_at by_device[SEND_ENVELOPES_MAX];
    size_t expected = 0, wrong = 0;

    sp->precise = 0;
    sp->n_unknown = 0;
    if (n > SEND_HANDLES_MAX || q->n_envelopes > SEND_ENVELOPES_MAX)
        return 0;
    memset(sp->stale, 0, n);
    memset(named, 0, q->n_envelopes);
    /* the envelopes by device, each device's found by a binary search: a send naming many
     * devices costs a logarithm per device, not a pass over every envelope */
    for (size_t e = 0; e < q->n_envelopes; e++)
        by_device[e] = (struct envelope_at){q->envelopes[e]->recipient_device, e};
    qsort(by_device, q->n_envelopes, sizeof(*by_device), cmp_envelope_at);
    for (size_t i = 0; i < n; i++) {
        size_t count = 0;
        msv_err err = dir_devices(c->w->srv, r[i].handle, devs, SEND_ENVELOPES_MAX + 1, &count);

        if (err == MSV_ERR_TOO_BIG)
            return 0;
        if (err != MSV_OK)
            return -1;
        for (size_t k = 0; k < count; k++) {
            size_t found = 0, any = 0;
            /* the sending device, and one with no suite in common with the sender, which
             * cannot be written to, take no envelope */
            int skipped =
                devs[k].id == c->device_id || (!sealed && (devs[k].suites & c->suites) == 0);

            /* a sealed envelope can only be opened by a device that speaks modern */
            if (!skipped && sealed && !(devs[k].suites & MSV_SUITE_BIT(MSV_SUITE_MODERN)))
                return 0;
            expected += !skipped;
            for (size_t at = envelopes_from(by_device, q->n_envelopes, devs[k].id);
                 at < q->n_envelopes && by_device[at].device == devs[k].id; at++) {
                size_t e = by_device[at].index;
                uint32_t suite = q->envelopes[e]->suite;

                named[e] = 1;
                any++;
                found += sealed ? suite == MSV_ENVELOPE_SEALED
                                : suite <= MSV_SUITE_MODERN &&
                                      (devs[k].suites & c->suites & MSV_SUITE_BIT(suite));
            }
            if ((skipped ? any != 0 : any != 1 || found != 1) && !sp->stale[i]) {
                sp->stale[i] = 1;
                wrong++;
            }
        }
    }
    for (size_t e = 0; e < q->n_envelopes; e++) {
        if (!named[e])
            sp->unknown[sp->n_unknown++] = q->envelopes[e]->recipient_device;
    }
    /* a mismatch none of the handles nor envelopes shows (one device under two handles named)
     * gets every handle's list */
    sp->precise = wrong > 0 || sp->n_unknown > 0;
    return !sp->precise && expected == q->n_envelopes;
}

/*
 * A send answered with its handles' current devices (stale), or one that addresses no device
 * at all, shows who has devices as a lookup of its handles does, and costs as one: a lookup
 * token for each handle, and an unknown-username token for each username no account has.
 * Answers a refusal itself and returns 0. (A sealed send names one handle whose delivery token
 * it holds: nothing to probe.)
 */
static int send_probe_paid(struct msv_conn_state *c, uint64_t request_id,
                           const struct handle_result *r, size_t n)
{
    struct msv_server *s = c->w->srv;

    if (!msv_server_take_token(s, MSV_LIMIT_LOOKUP, c->account_id, (double)n)) {
        msv_conn_send_error(c, request_id, E_RATE, "too many lookups; slow down");
        return 0;
    }
    return unknown_usernames_ok(c, request_id, r, n) == 0;
}

/* A send for the group commit; a sealed one carries no sender at all. */
/*
 * When the copies of a send may be dropped undelivered (docs/wire.md,
 * "Sending"): 0 (the commit's queue_ttl_days) unless the sender asked for
 * sooner, raised to min_expire_after_s so that no copy goes before it could
 * be fetched.
 */
static int64_t send_expiry(struct msv_server *s, const Msv__Wire__SendRequest *q)
{
    uint64_t after_ms = (uint64_t)q->expire_after_s * 1000;
    uint64_t min_ms = (uint64_t)s->cfg.min_expire_after_s * 1000;

    if (q->expire_after_s == 0 || after_ms >= atomic_load(&s->queue_ttl_ms))
        return 0;
    return msv_server_now_ms(s) + (int64_t)(after_ms < min_ms ? min_ms : after_ms);
}

/* Takes sender (the handle the recipients see; strdup'ed) whatever happens. */
static struct msv_pending_send *make_pending(struct msv_conn_state *c, const msv_frame *f,
                                             char *sender)
{
    const Msv__Wire__SendRequest *q = f->send;
    struct msv_pending_send *p = calloc(1, sizeof(*p));
    int64_t expires_ms = send_expiry(c->w->srv, q);

    if (p == NULL) {
        free(sender);
        return NULL;
    }
    p->c = c;
    p->request_id = f->request_id;
    p->items = calloc(q->n_envelopes, sizeof(*p->items));
    p->ciphertexts = calloc(q->n_envelopes, sizeof(*p->ciphertexts));
    p->sender_handle = sender;
    if (p->items == NULL || p->ciphertexts == NULL || p->sender_handle == NULL) {
        msv_pending_send_free(p);
        return NULL;
    }
    for (size_t i = 0; i < q->n_envelopes; i++) {
        const Msv__Wire__Envelope *e = q->envelopes[i];

        p->ciphertexts[i] = malloc(e->ciphertext.len);
        if (p->ciphertexts[i] == NULL) {
            p->count = i;
            msv_pending_send_free(p);
            return NULL;
        }
        memcpy(p->ciphertexts[i], e->ciphertext.data, e->ciphertext.len);
        p->items[i] = (struct msv_queue_in){.device_id = e->recipient_device,
                                            .sender_device = c->device_id,
                                            .sender_handle = p->sender_handle,
                                            .suite = e->suite,
                                            .ciphertext = p->ciphertexts[i],
                                            .ciphertext_len = e->ciphertext.len,
                                            .expires_ms = expires_ms};
    }
    p->count = q->n_envelopes;
    return p;
}

/* Shape checks that need no storage: counts, sizes, ids. Returns an error text or NULL. */
static const char *check_send_shape(struct msv_server *s, const Msv__Wire__SendRequest *q,
                                    int *code)
{
    uint64_t limit = atomic_load(&s->payload_limit);

    *code = E_INVALID;
    if (q->message_id.len != 16)
        return "message_id must be 16 bytes";
    if (q->n_recipient_handles == 0 || q->n_recipient_handles > SEND_HANDLES_MAX ||
        q->n_envelopes > SEND_ENVELOPES_MAX) {
        *code = E_TOO_BIG;
        return "1 to 256 recipient handles and at most 1024 envelopes per send";
    }
    for (size_t i = 0; i < q->n_envelopes; i++) {
        if (q->envelopes[i]->ciphertext.len == 0)
            return "an envelope is empty";
        if (q->envelopes[i]->ciphertext.len > limit) {
            *code = E_TOO_BIG;
            return "an envelope is larger than the server's payload limit";
        }
    }
    return NULL;
}

/*
 * A sealed send: no authenticated device, one handle, a delivery token its
 * devices registered, every envelope sealed. Answers a refusal itself and
 * returns 0; 1 if the send may go on. An unknown handle and a wrong token
 * are the same refusal, so the token cannot be used to probe for accounts.
 */
static int sealed_send_allowed(struct msv_conn_state *c, const msv_frame *f,
                               const struct handle_result *r)
{
    struct msv_server *s = c->w->srv;
    const Msv__Wire__SendRequest *q = f->send;
    uint8_t hash[32];
    uint64_t account = 0;
    msv_err err;

    if (!msv_server_take_token(s, MSV_LIMIT_SEALED, c->peer_key, 1.0)) {
        msv_conn_send_error(c, f->request_id, E_RATE, "too many sealed sends; slow down");
        return 0;
    }
    crypto_hash_sha256(hash, q->delivery_token.data, q->delivery_token.len);
    err = STORE(s)->account_get(IMPL(s), r[0].handle, &account, NULL);
    if (err == MSV_OK)
        err = STORE(s)->delivery_token_check(IMPL(s), account, hash);
    if (err == MSV_ERR_AUTH || err == MSV_ERR_NOT_FOUND) {
        msv_conn_send_error(c, f->request_id, E_AUTH, "the delivery token is not valid");
        return 0;
    }
    if (err != MSV_OK) {
        msv_conn_send_error(c, f->request_id, E_IO, "storage failed");
        return 0;
    }
    return 1;
}

/* 1 if one more envelope of len bytes would pass a device's queue caps. */
static int is_full(const struct msv_server *s, const struct msv_queue_usage *u, size_t len)
{
    return u->envelopes + 1 > s->cfg.queue_max_envelopes || u->bytes + len > s->cfg.queue_max_bytes;
}

int msv_server_queue_is_full(const struct msv_server *s, const struct msv_queue_usage *u,
                             size_t len)
{
    return is_full(s, u, len);
}

/* Tells the account of device_id that a send to it was refused for its full queue, at most
 * once per device every QUOTA_NOTICE_EVERY_MS (a flood of refused sends makes one notice);
 * 1 if it was told now. */
#define QUEUE_FULL_TOLD_MAX 32 /* full devices whose accounts one send tells */
static int tell_queue_full(struct msv_server *s, uint64_t device_id)
{
    Msv__Wire__DeviceChange dc = MSV__WIRE__DEVICE_CHANGE__INIT;
    struct msv_device_rec d;

    if (!msv_server_quota_notice_due(s, device_id) ||
        STORE(s)->device_get(IMPL(s), device_id, &d) != MSV_OK)
        return 0;
    dc.account = MSV__WIRE__ACCOUNT_NOTICE__ACCOUNT_QUEUE_FULL;
    dc.full_device = device_id;
    queue_notice(s, d.account_id, 0, &dc);
    msv_device_rec_clear(&d);
    atomic_fetch_add(&s->m.quota_notices, 1);
    return 1;
}

/*
 * The per-account envelope rate (a sealed send has no account: its address's sealed rate
 * was taken already). Answers a refusal itself and returns 0. Every recipient device's queue
 * cap is checked by the group commit, on its committer thread, in one store read for the
 * batch (server.c check_caps): a refused send is answered there and its tokens refunded.
 */
static int rate_allows(struct msv_conn_state *c, const msv_frame *f)
{
    struct msv_server *s = c->w->srv;
    size_t n = f->send->n_envelopes;

    if (c->device_id != 0 && !msv_server_take_token(s, MSV_LIMIT_SEND, c->account_id, (double)n)) {
        atomic_fetch_add(&s->m.sends_rate_limited, 1);
        msv_conn_send_error(c, f->request_id, E_RATE, "too many envelopes sent; slow down");
        return 0;
    }
    return 1;
}

static int cmp_device(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

    return x < y ? -1 : x > y;
}

void msv_server_queue_refused(struct msv_server *s, uint64_t *device_ids, size_t n)
{
    size_t told = 0;

    if (n == 0)
        return;
    /* one transaction, its rows in one order (two at once on PostgreSQL cannot deadlock) */
    qsort(device_ids, n, sizeof(*device_ids), cmp_device);
    if (STORE(s)->queue_refusal_add(IMPL(s), device_ids, n) != MSV_OK)
        msv_log(MSV_LOG_WARN, "queue_refusal_lost", "devices=%zu first=%llu", n,
                (unsigned long long)device_ids[0]);
    /* each a store read and a queued notice when due: a bounded number per send, the others
     * told by the sends that follow (their notices stay due) */
    for (size_t i = 0; i < n && told < QUEUE_FULL_TOLD_MAX; i++)
        told += tell_queue_full(s, device_ids[i]);
}

static void handle_send(struct msv_conn_state *c, const msv_frame *f)
{
    static _Thread_local struct stale_parts parts;
    struct stale_parts *sp = &parts;
    struct msv_server *s = c->w->srv;
    const Msv__Wire__SendRequest *q = f->send;
    size_t n = q->n_recipient_handles, stale;
    Msv__Wire__HandleDevices **ptrs = NULL;
    struct handle_result *r = NULL;
    struct msv_pending_send *p;
    int sealed = c->device_id == 0;
    const char *bad;
    char *sender = NULL;
    int code;

    if (sealed && (q->delivery_token.len != DELIVERY_TOKEN_LEN || n != 1)) {
        msv_conn_send_error(c, f->request_id, E_UNAUTH,
                            "authenticate first, or send sealed to one handle with its "
                            "16-byte delivery token");
        return;
    }
    if (!sealed && q->delivery_token.len != 0) {
        msv_conn_send_error(c, f->request_id, E_INVALID,
                            "a delivery token belongs to a sealed send, on a connection that "
                            "has not authenticated");
        return;
    }
    if ((bad = check_send_shape(s, q, &code)) != NULL) {
        msv_conn_send_error(c, f->request_id, code, bad);
        return;
    }
    if (read_handles(c, f->request_id, q->recipient_handles, n, 1, &r, &ptrs) != 0)
        goto out;
    if (sealed && !sealed_send_allowed(c, f, r))
        goto out;
    switch (addresses_match(c, q, r, n, sealed, sp)) {
    case 1:
        if (!sealed && q->n_envelopes == 0 && !send_probe_paid(c, f->request_id, r, n))
            goto out;
        break;
    case 0: /* the current devices, for the client to address */
        if (!sealed && !send_probe_paid(c, f->request_id, r, n))
            goto out;
        /* the handles addressed wrong first, the lists of those alone sent */
        stale = sp->precise ? 0 : n;
        for (size_t i = 0; sp->precise && i < n; i++) {
            if (sp->stale[i]) {
                struct handle_result t = r[stale];

                r[stale++] = r[i];
                r[i] = t;
            }
        }
        if (lookup_all(s, r, stale, ptrs, NULL) == MSV_OK) {
            send_stale(c, f->request_id, ptrs, stale, sp->unknown, sp->n_unknown);
            goto out;
        }
        /* fall through */
    default:
        msv_conn_send_error(c, f->request_id, E_IO, "storage failed");
        goto out;
    }
    if ((sender = sender_handle(c, f)) == NULL || !rate_allows(c, f)) {
        free(sender);
        goto out;
    }
    p = make_pending(c, f, sender);
    if (p == NULL) {
        if (!sealed) /* nothing was sent */
            msv_server_refund_token(s, MSV_LIMIT_SEND, c->account_id, (double)q->n_envelopes);
        msv_conn_send_error(c, f->request_id, E_IO, "out of memory");
        goto out;
    }
    p->account_id = c->account_id; /* 0 for a sealed send: no tokens to give back */
    if (!sealed && mark_own(c, p) != MSV_OK) {
        msv_server_refund_token(s, MSV_LIMIT_SEND, c->account_id, (double)q->n_envelopes);
        msv_pending_send_free(p);
        msv_conn_send_error(c, f->request_id, E_IO, "storage failed");
        goto out;
    }
    atomic_fetch_add(&s->m.sends, 1);
    if (sealed)
        atomic_fetch_add(&s->m.sealed_sends, 1);
    msv_worker_queue_send(c->w, p); /* answered after the group commit */
out:
    free_results(r, n);
    free(ptrs);
}

/*
 * Acknowledgements join the worker's next group commit (with the sends read
 * in the same loop turn): one durable write for all of them, not one each.
 */
static void handle_ack(struct msv_conn_state *c, const msv_frame *f)
{
    size_t n = f->ack->n_queue_ids;
    unsigned room = c->inflight > c->acks_pending ? c->inflight - c->acks_pending : 0;
    struct msv_pending_ack *a;

    if (n > 4096) {
        msv_conn_send_error(c, f->request_id, E_TOO_BIG, "at most 4096 acknowledgements at once");
        return;
    }
    /*
     * A connection acknowledges at most what was pushed on it and is not acknowledged yet: more
     * ids (made up, or pushed on an earlier connection) would only fill the worker's commit for
     * everyone. An id left out stays queued and is pushed here again, where the device knows it.
     * An Ack with a request id may name one more (an id acknowledged before, again, to hear
     * that its commit is done): it holds the connection's next requests until it is answered,
     * so it cannot be repeated faster than commits go.
     */
    if (n > room)
        n = f->request_id != 0 ? (size_t)room + 1 : room;
    if (n == 0) {
        if (f->request_id != 0)
            msv_conn_send_ok(c, f->request_id);
        return;
    }
    a = calloc(1, sizeof(*a));
    if (a == NULL || (a->ids = malloc(n * sizeof(*a->ids))) == NULL) {
        free(a);
        msv_conn_send_error(c, f->request_id, E_IO, "out of memory");
        return;
    }
    memcpy(a->ids, f->ack->queue_ids, n * sizeof(*a->ids));
    a->c = c;
    a->request_id = f->request_id;
    a->ack = (struct msv_queue_ack){.device_id = c->device_id, .ids = a->ids, .n = n};
    a->window = n < room ? (unsigned)n : room;
    c->acks_pending += a->window;
    msv_worker_queue_ack(c->w, a);
}

/*
 * QueueSync: Ok once everything queued for the device has been pushed. The queue's last id,
 * read after the request, marks the end: an envelope committed before the request, whose
 * wake-up has not reached this worker yet (from another worker, or another node through
 * Redis), is at or below it. The answer follows the push of that envelope, or a read that
 * comes back short (server.c push_recs), whichever comes first, so envelopes arriving
 * meanwhile do not hold it back. One at a time per connection.
 */
static void handle_queue_sync(struct msv_conn_state *c, const msv_frame *f)
{
    struct msv_server *s = c->w->srv;
    uint64_t last = 0;

    if (f->request_id == 0)
        return; /* nothing to answer to */
    if (c->requests_only != 0) {
        msv_conn_send_error(c, f->request_id, E_INVALID,
                            "this connection takes no deliveries (it authenticated for requests "
                            "alone)");
        return;
    }
    if (c->sync_request != 0) {
        msv_conn_send_error(c, f->request_id, E_INVALID, "a queue sync is waiting already");
        return;
    }
    if (s->store->ops->queue_last_id(s->store->impl, c->device_id, msv_server_now_ms(s), &last) !=
        MSV_OK)
        last = UINT64_MAX;      /* unknown: a short read ends it */
    if (c->last_sent >= last) { /* all of it pushed already (perhaps not acknowledged) */
        msv_conn_send_ok(c, f->request_id);
        return;
    }
    c->sync_request = f->request_id;
    c->sync_last = last;
    c->more = 1;
    msv_conn_pump(c);
}

/* ---- prekeys and delivery tokens ------------------------------------------------------- */

/* Reads an upload into u (one_time holds PREKEY_UPLOAD_MAX); returns an error text or NULL. */
static const char *read_upload(const Msv__Wire__PrekeyUpload *q, struct msv_prekey_upload *u,
                               struct msv_one_time_prekey *one_time, int *code)
{
    *code = E_INVALID;
    memset(u, 0, sizeof(*u));
    if (q->signed_ != NULL) {
        if (q->signed_->id == 0 || q->signed_->key.len != 32 || q->signed_->signature.len != 64)
            return "a signed prekey has a non-zero id, a 32-byte key and a 64-byte signature";
        u->has_signed = 1;
        u->signed_id = q->signed_->id;
        memcpy(u->signed_key, q->signed_->key.data, 32);
        memcpy(u->signed_sig, q->signed_->signature.data, 64);
    }
    if (q->n_one_time > PREKEY_UPLOAD_MAX) {
        *code = E_TOO_BIG;
        return "at most 100 one-time prekeys per upload";
    }
    for (size_t i = 0; i < q->n_one_time; i++) {
        if (q->one_time[i]->id == 0 || q->one_time[i]->key.len != 32)
            return "a one-time prekey has a non-zero id and a 32-byte key";
        one_time[i].id = q->one_time[i]->id;
        memcpy(one_time[i].key, q->one_time[i]->key.data, 32);
    }
    u->one_time = one_time;
    u->n_one_time = q->n_one_time;
    u->replace_one_time = q->replace_one_time;
    return NULL;
}

/* One KEM prekey of an upload into k; its kind must be the one it is uploaded as. */
static int read_kem_prekey(const Msv__Wire__KemPrekey *q, int last_resort,
                           struct msv_kem_prekey_rec *k)
{
    if (q->id == 0 || q->key.len != sizeof(k->key) || q->signature.len != sizeof(k->sig) ||
        q->last_resort != (last_resort != 0))
        return 0;
    k->id = q->id;
    memcpy(k->key, q->key.data, sizeof(k->key));
    memcpy(k->sig, q->signature.data, sizeof(k->sig));
    return 1;
}

/* The KEM prekeys of an upload (kem holds PREKEY_UPLOAD_MAX + 1: the last-resort one first). */
static const char *read_kem_upload(const Msv__Wire__PrekeyUpload *q, struct msv_prekey_upload *u,
                                   struct msv_kem_prekey_rec *kem, int *code)
{
    *code = E_INVALID;
    if (q->n_kem_one_time > PREKEY_UPLOAD_MAX) {
        *code = E_TOO_BIG;
        return "at most 100 one-time KEM prekeys per upload";
    }
    if (q->kem_last_resort != NULL) {
        if (!read_kem_prekey(q->kem_last_resort, 1, &kem[0]))
            return "a KEM prekey has a non-zero id, a 1184-byte key, a 64-byte signature and "
                   "says which kind it is";
        u->kem_last_resort = &kem[0];
    }
    for (size_t i = 0; i < q->n_kem_one_time; i++) {
        if (!read_kem_prekey(q->kem_one_time[i], 0, &kem[1 + i]))
            return "a KEM prekey has a non-zero id, a 1184-byte key, a 64-byte signature and "
                   "says which kind it is";
    }
    u->kem_one_time = &kem[1];
    u->n_kem_one_time = q->n_kem_one_time;
    return NULL;
}

/* Every KEM prekey must be signed by the device, which must say post-quantum. */
static msv_err check_kem_prekeys(const struct msv_public_identity *pub,
                                 const struct msv_prekey_upload *u)
{
    msv_err err = MSV_OK;

    if ((u->kem_last_resort != NULL || u->n_kem_one_time > 0) && !msv_public_identity_is_pq(pub))
        return MSV_ERR_UNSUPPORTED;
    if (u->kem_last_resort != NULL)
        err = msv_kem_prekey_verify(pub, u->kem_last_resort->id, 1, u->kem_last_resort->key,
                                    sizeof(u->kem_last_resort->key), u->kem_last_resort->sig);
    for (size_t i = 0; err == MSV_OK && i < u->n_kem_one_time; i++)
        err = msv_kem_prekey_verify(pub, u->kem_one_time[i].id, 0, u->kem_one_time[i].key,
                                    sizeof(u->kem_one_time[i].key), u->kem_one_time[i].sig);
    return err;
}

/* An upload's keys must be signed by pub, which must speak modern (KEM ones: say post-quantum). */
static msv_err check_upload(const struct msv_public_identity *pub,
                            const struct msv_prekey_upload *u)
{
    msv_err err = MSV_OK;

    if (!(msv_public_identity_suites(pub) & MSV_SUITE_BIT(MSV_SUITE_MODERN)))
        err = MSV_ERR_UNSUPPORTED;
    if (err == MSV_OK && u->has_signed)
        err = msv_signed_prekey_verify(pub, u->signed_id, u->signed_key, u->signed_sig);
    if (err == MSV_OK)
        err = check_kem_prekeys(pub, u);
    return err;
}

/* The signed prekey must be signed by the uploading device's own modern identity. */
static msv_err check_signed_prekey(struct msv_server *s, uint64_t device_id,
                                   const struct msv_prekey_upload *u)
{
    struct msv_device_rec dev = {0};
    struct msv_public_identity *pub = NULL;
    msv_err err = STORE(s)->device_get(IMPL(s), device_id, &dev);

    if (err == MSV_OK)
        err = msv_public_identity_parse((enum msv_suite)dev.suite, dev.identity, dev.identity_len,
                                        &pub);
    if (err == MSV_OK)
        err = check_upload(pub, u);
    msv_public_identity_free(pub);
    msv_device_rec_clear(&dev);
    return err;
}

/*
 * A new device's first prekeys: its signed prekey and, when it says post-quantum, its
 * last-resort KEM prekey (required then), signed by it; no one-time ones (they follow at its
 * first connection), which keeps a device waiting to be linked small.
 */
static const char *read_first_prekeys(const Msv__Wire__NewDevice *d,
                                      const struct msv_public_identity *pub,
                                      struct first_prekeys *fp, int *code)
{
    const Msv__Wire__PrekeyUpload *q = d->prekeys;
    int pq = msv_public_identity_is_pq(pub);
    const char *bad;

    memset(fp, 0, sizeof(*fp));
    *code = E_INVALID;
    if (q == NULL)
        return pq ? "a device whose identity says post-quantum brings its first prekeys (its "
                    "signed prekey and last-resort KEM prekey) with it"
                  : NULL;
    if (q->signed_ == NULL || q->n_one_time > 0 || q->n_kem_one_time > 0 || q->replace_one_time ||
        (pq && q->kem_last_resort == NULL))
        return "a new device's first prekeys are its signed prekey and, if it says post-quantum, "
               "its last-resort KEM prekey; nothing else";
    bad = read_upload(q, &fp->u, fp->one_time, code);
    if (bad == NULL)
        bad = read_kem_upload(q, &fp->u, fp->kem, code);
    if (bad == NULL && check_upload(pub, &fp->u) != MSV_OK) {
        *code = E_AUTH;
        bad = "a prekey's signature is not this device's, or this device has no prekeys";
    }
    fp->present = bad == NULL;
    return bad;
}

static void handle_prekey_upload(struct msv_conn_state *c, const msv_frame *f)
{
    struct msv_server *s = c->w->srv;
    struct msv_one_time_prekey one_time[PREKEY_UPLOAD_MAX];
    struct msv_kem_prekey_rec *kem = calloc(PREKEY_UPLOAD_MAX + 1, sizeof(*kem));
    struct msv_prekey_upload u;
    Msv__Wire__Frame out = MSV__WIRE__FRAME__INIT;
    Msv__Wire__PrekeyState st = MSV__WIRE__PREKEY_STATE__INIT;
    uint32_t left = 0, kem_left = 0, signed_id = 0, kem_last_resort_id = 0;
    int code = E_IO;
    const Msv__Wire__PrekeyUpload *q = f->prekey_upload;
    /* one that carries keys (its signatures checked, its rows written) is counted; one that
     * only asks what the server holds is not */
    int keys = q->signed_ != NULL || q->n_one_time > 0 || q->replace_one_time ||
               q->kem_last_resort != NULL || q->n_kem_one_time > 0;
    const char *bad = NULL;
    msv_err err;

    if (kem == NULL) {
        bad = "out of memory";
    } else if (keys && !msv_server_take_token(s, MSV_LIMIT_PREKEY_UPLOAD, c->device_id, 1)) {
        code = E_RATE;
        bad = "too many prekey uploads; slow down";
    } else {
        bad = read_upload(q, &u, one_time, &code);
    }
    if (bad == NULL)
        bad = read_kem_upload(q, &u, kem, &code);
    if (bad == NULL && s->cfg.limit_prekey_uploads) {
        code = E_RATE; /* tests only: a server keeping the device's keys out */
        bad = "too many prekey uploads; slow down";
    }
    if (bad != NULL) {
        msv_conn_send_error(c, f->request_id, code, bad);
        free(kem);
        return;
    }
    err = check_signed_prekey(s, c->device_id, &u);
    if (err == MSV_OK)
        err = STORE(s)->prekeys_put(IMPL(s), c->device_id, &u, ONE_TIME_PREKEYS_MAX, &left,
                                    &signed_id);
    if (err == MSV_OK)
        err = STORE(s)->kem_prekey_state(IMPL(s), c->device_id, &kem_left, &kem_last_resort_id);
    free(kem);
    if (err == MSV_ERR_UNSUPPORTED)
        msv_conn_send_error(c, f->request_id, E_INVALID,
                            "only devices that speak modern have prekeys, and KEM prekeys only "
                            "those whose identity says post-quantum");
    else if (err == MSV_ERR_AUTH)
        msv_conn_send_error(c, f->request_id, E_AUTH, "a prekey's signature is not this device's");
    else if (err == MSV_ERR_TOO_BIG)
        msv_conn_send_error(c, f->request_id, E_TOO_BIG,
                            "a device keeps at most 200 one-time prekeys of each kind");
    else if (err != MSV_OK)
        msv_conn_send_error(c, f->request_id, E_IO, "storage failed");
    if (err != MSV_OK)
        return;
    if (s->cfg.drop_prekey_answers &&
        (u.n_one_time > 0 || u.n_kem_one_time > 0 || u.has_signed || u.kem_last_resort != NULL)) {
        msv_conn_close_soon(c); /* tests only: stored, and the answer lost */
        return;
    }
    st.one_time_left = left;
    st.has_signed = signed_id != 0;
    st.signed_id = signed_id;
    st.kem_one_time_left = kem_left;
    st.has_kem_last_resort = kem_last_resort_id != 0;
    st.kem_last_resort_id = kem_last_resort_id;
    out.request_id = f->request_id;
    out.body_case = MSV__WIRE__FRAME__BODY_PREKEY_STATE;
    out.prekey_state = &st;
    msv_conn_send_frame(c, &out);
}

/*
 * Whether claimer's account may take a one-time prekey of device_id now: one per
 * prekey_claim_interval_s, so that nobody drains a device's one-time prekeys by claiming
 * again and again (a claim in between gets the signed prekey, enough for a session).
 */
static int one_time_allowed(struct msv_conn_state *c, uint64_t device_id)
{
    struct msv_server *s = c->w->srv;
    uint64_t pair[2] = {c->account_id, device_id};

    if (msv_server_take_token(s, MSV_LIMIT_CLAIM, msv_server_key(s, pair, sizeof(pair)), 1))
        return 1;
    /* answered all the same: counted here, not among refused requests */
    atomic_fetch_sub(&s->m.rate_limited, 1);
    atomic_fetch_add(&s->m.claims_throttled, 1);
    msv_log(MSV_LOG_INFO, "prekey_claim_throttled", "account=%llu device=%llu",
            (unsigned long long)c->account_id, (unsigned long long)device_id);
    return 0;
}

/* One device's bundle into b (pointing into claimed); 0 if it has none to give. */
/* The bundle's KEM prekey, when the device has one. */
static void bundle_kem(struct msv_prekey_claimed *cl, Msv__Wire__PrekeyBundle *b,
                       Msv__Wire__KemPrekey *kp)
{
    if (cl->kem_id == 0)
        return;
    msv__wire__kem_prekey__init(kp);
    kp->id = cl->kem_id;
    kp->key = (ProtobufCBinaryData){sizeof(cl->kem_key), cl->kem_key};
    kp->signature = (ProtobufCBinaryData){sizeof(cl->kem_sig), cl->kem_sig};
    kp->last_resort = cl->kem_last_resort != 0;
    b->kem = kp;
}

static int claim_one(struct msv_conn_state *c, uint64_t device_id, int sealing_only,
                     struct msv_prekey_claimed *cl, Msv__Wire__PrekeyBundle *b,
                     Msv__Wire__SignedPrekey *sp, Msv__Wire__OneTimePrekey *op,
                     Msv__Wire__KemPrekey *kp, msv_err *err)
{
    struct msv_server *s = c->w->srv;
    struct msv_device_rec dev = {0};
    int approved, one_time;

    *err = STORE(s)->device_get(IMPL(s), device_id, &dev);
    approved = *err == MSV_OK && dev.approved;
    msv_device_rec_clear(&dev);
    if (*err == MSV_ERR_NOT_FOUND)
        *err = MSV_OK;
    if (*err != MSV_OK || !approved) /* pending devices are not addressed */
        return 0;
    one_time = !sealing_only && one_time_allowed(c, device_id);
    *err = STORE(s)->prekey_claim(IMPL(s), device_id, one_time, cl);
    if (*err == MSV_OK && one_time && cl->one_time_id == 0)
        atomic_fetch_add(&s->m.prekeys_exhausted, 1);
    if (*err == MSV_ERR_NOT_FOUND)
        *err = MSV_OK;
    else if (*err == MSV_OK) {
        msv__wire__prekey_bundle__init(b);
        msv__wire__signed_prekey__init(sp);
        b->device_id = device_id;
        sp->id = cl->signed_id;
        sp->key = (ProtobufCBinaryData){32, cl->signed_key};
        sp->signature = (ProtobufCBinaryData){64, cl->signed_sig};
        b->signed_ = sp;
        if (cl->one_time_id != 0) {
            msv__wire__one_time_prekey__init(op);
            op->id = cl->one_time_id;
            op->key = (ProtobufCBinaryData){32, cl->one_time_key};
            b->one_time = op;
        }
        bundle_kem(cl, b, kp);
        return 1;
    }
    return 0;
}

/* 1 if some id is in ids twice (n is at most CLAIM_MAX: the square is small). */
static int has_repeats(const uint64_t *ids, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        for (size_t k = 0; k < i; k++) {
            if (ids[k] == ids[i])
                return 1;
        }
    }
    return 0;
}

static void handle_prekey_claim(struct msv_conn_state *c, const msv_frame *f)
{
    struct msv_server *s = c->w->srv;
    size_t n = f->prekey_claim->n_device_ids, got = 0;
    struct msv_prekey_claimed *cl = NULL;
    Msv__Wire__PrekeyBundle b[CLAIM_MAX], *bp[CLAIM_MAX];
    Msv__Wire__SignedPrekey sp[CLAIM_MAX];
    Msv__Wire__OneTimePrekey op[CLAIM_MAX];
    Msv__Wire__KemPrekey kp[CLAIM_MAX];
    Msv__Wire__PrekeyBundles resp = MSV__WIRE__PREKEY_BUNDLES__INIT;
    Msv__Wire__Frame out = MSV__WIRE__FRAME__INIT;
    msv_err err = MSV_OK;

    if (n == 0 || n > CLAIM_MAX) {
        msv_conn_send_error(c, f->request_id, n ? E_TOO_BIG : E_INVALID,
                            "claim prekeys of 1 to 64 devices at a time");
        return;
    }
    if (has_repeats(f->prekey_claim->device_ids, n)) {
        atomic_fetch_add(&s->m.claims_refused, 1);
        msv_conn_send_error(c, f->request_id, E_INVALID,
                            "a device is named more than once in the claim");
        return;
    }
    if (s->cfg.refuse_prekey_claims ||
        !msv_server_take_token(s, MSV_LIMIT_LOOKUP, c->account_id, (double)n)) {
        msv_conn_send_error(c, f->request_id, E_RATE, "too many prekey claims; slow down");
        return;
    }
    cl = calloc(CLAIM_MAX, sizeof(*cl)); /* KEM keys make them large */
    if (cl == NULL)
        err = MSV_ERR_NOMEM;
    for (size_t i = 0; i < n && err == MSV_OK; i++) {
        if (claim_one(c, f->prekey_claim->device_ids[i], f->prekey_claim->sealing_keys, &cl[got],
                      &b[got], &sp[got], &op[got], &kp[got], &err)) {
            bp[got] = &b[got];
            got++;
        }
    }
    if (err != MSV_OK) {
        msv_conn_send_error(c, f->request_id, E_IO, "storage failed");
        free(cl);
        return;
    }
    resp.n_bundles = got;
    resp.bundles = bp;
    out.request_id = f->request_id;
    out.body_case = MSV__WIRE__FRAME__BODY_PREKEY_BUNDLES;
    out.prekey_bundles = &resp;
    msv_conn_send_frame(c, &out);
    free(cl);
}

static void handle_set_delivery_token(struct msv_conn_state *c, const msv_frame *f)
{
    struct msv_server *s = c->w->srv;
    const ProtobufCBinaryData *t = &f->set_delivery_token->token;
    uint8_t hash[32];

    if (t->len != DELIVERY_TOKEN_LEN) {
        msv_conn_send_error(c, f->request_id, E_INVALID, "a delivery token is 16 bytes");
        return;
    }
    crypto_hash_sha256(hash, t->data, t->len);
    if (STORE(s)->delivery_token_set(IMPL(s), c->device_id, hash) != MSV_OK)
        msv_conn_send_error(c, f->request_id, E_IO, "storage failed");
    else
        msv_conn_send_ok(c, f->request_id);
}

#define REPORT_REASON_MAX 1000

static void refuse_report(struct msv_conn_state *c, uint64_t request_id, int code, const char *why)
{
    atomic_fetch_add(&c->w->srv->m.reports_refused, 1);
    msv_conn_send_error(c, request_id, code, why);
}

static int is_text(const char *s)
{
    return msv_utf8_is_valid((const uint8_t *)s, strlen(s));
}

/* An abuse report (frame.proto ReportRequest): bounded, about an account that exists. */
static void handle_report(struct msv_conn_state *c, const msv_frame *f)
{
    struct msv_server *s = c->w->srv;
    const Msv__Wire__ReportRequest *r = f->report;
    const char *reason = r->reason ? r->reason : "", *text = r->text ? r->text : "";
    int64_t now = msv_wall_ms();
    unsigned per_day;
    uint64_t text_max, id = 0;
    msv_err err;

    pthread_mutex_lock(&s->limits_lock);
    per_day = s->cfg.reports_per_day;
    text_max = s->cfg.report_text_max;
    pthread_mutex_unlock(&s->limits_lock);
    if (r->reported == NULL || r->reported[0] == '\0' || strlen(r->reported) > 255 ||
        !is_text(reason) || !is_text(text))
        return refuse_report(c, f->request_id, E_INVALID,
                             "a report names the account reported, in UTF-8");
    if (strlen(reason) > REPORT_REASON_MAX || strlen(text) > text_max)
        return refuse_report(c, f->request_id, E_TOO_BIG,
                             "a report's reason is at most 1000 bytes, its text at most "
                             "[reports] text_max");
    /* it tells whether an account has the handle, as a lookup does, and costs one; of a
     * username, also what a lookup of a username nobody has costs (taken whoever has it, so
     * that the refusal past either bucket tells nothing) */
    if (!msv_server_take_token(s, MSV_LIMIT_LOOKUP, c->account_id, 1.0) ||
        (is_username(r->reported) &&
         !msv_server_take_token(s, MSV_LIMIT_UNKNOWN, c->account_id, 1.0)))
        return refuse_report(c, f->request_id, E_RATE, "too many lookups; slow down");
    err = STORE(s)->report_add(IMPL(s), c->account_id, r->reported, reason, text, now,
                               now - 86400000LL, per_day, &id);
    if (err == MSV_ERR_NOT_FOUND)
        return refuse_report(c, f->request_id, E_NOT_FOUND, "no account has that handle");
    if (err == MSV_ERR_AGAIN)
        return refuse_report(c, f->request_id, E_RATE, "too many reports today; try tomorrow");
    if (err != MSV_OK) {
        msv_conn_send_error(c, f->request_id, E_IO, "storage failed");
        return;
    }
    atomic_fetch_add(&s->m.reports, 1);
    msv_log(MSV_LOG_INFO, "report", "id=%llu", (unsigned long long)id);
    msv_conn_send_ok(c, f->request_id);
}

/* The answer's entry of device d (queue and attachments), read from the store. */
static msv_err device_usage(struct msv_server *s, uint64_t device_id, Msv__Wire__DeviceUsage *d,
                            uint64_t *account_bytes)
{
    struct msv_queue_usage q = {.device_id = device_id};
    struct msv_blob_usage b = {0};
    msv_err err = STORE(s)->queue_usage(IMPL(s), &q, 1);

    if (err == MSV_OK)
        err = STORE(s)->blob_usage(IMPL(s), device_id, msv_server_now_ms(s), &b);
    /* told once: the count starts again from 0 */
    if (err == MSV_OK)
        err = STORE(s)->queue_refusal_take(IMPL(s), device_id, &d->refused_sends);
    if (err != MSV_OK)
        return err;
    d->device_id = device_id;
    d->queued = q.envelopes;
    d->queued_bytes = q.bytes;
    d->attachment_bytes = b.device_bytes;
    d->open_uploads = b.open;
    *account_bytes = b.account_bytes;
    return MSV_OK;
}

/* The account's usage against the queue caps and attachment quotas (frame.proto UsageRequest). */
static void handle_usage(struct msv_conn_state *c, const msv_frame *f)
{
    struct msv_server *s = c->w->srv;
    Msv__Wire__Frame out = MSV__WIRE__FRAME__INIT;
    Msv__Wire__UsageAnswer u = MSV__WIRE__USAGE_ANSWER__INIT;
    struct msv_device_list list = {0};
    Msv__Wire__DeviceUsage *items = NULL, **ptrs = NULL;
    msv_err err = STORE(s)->devices_of_account(IMPL(s), c->account_id, &list);

    if (err == MSV_OK && ((items = calloc(list.count + 1, sizeof(*items))) == NULL ||
                          (ptrs = calloc(list.count + 1, sizeof(*ptrs))) == NULL))
        err = MSV_ERR_NOMEM;
    for (size_t i = 0; err == MSV_OK && i < list.count; i++) {
        msv__wire__device_usage__init(&items[i]);
        ptrs[i] = &items[i];
        err = device_usage(s, list.items[i].id, &items[i], &u.account_attachment_bytes);
    }
    if (err != MSV_OK) {
        msv_conn_send_error(c, f->request_id, E_IO, "storage failed");
    } else {
        u.n_devices = list.count;
        u.devices = ptrs;
        pthread_mutex_lock(&s->limits_lock);
        u.queue_max_envelopes = s->cfg.queue_max_envelopes;
        u.queue_max_bytes = s->cfg.queue_max_bytes;
        pthread_mutex_unlock(&s->limits_lock);
        u.attachment_bytes_per_device = s->cfg.blob_device_bytes;
        u.attachment_bytes_per_account = s->cfg.blob_account_bytes;
        u.open_uploads_per_device = s->cfg.blob_open_max;
        out.request_id = f->request_id;
        out.body_case = MSV__WIRE__FRAME__BODY_USAGE;
        out.usage = &u;
        msv_conn_send_frame(c, &out);
    }
    free(items);
    free(ptrs);
    msv_device_list_clear(&list);
}

/* ---- dispatch ------------------------------------------------------------------------- */

/* What each request needs: its handler, and whether the device must be authenticated. */
static const struct route {
    Msv__Wire__Frame__BodyCase body;
    int needs_auth;
    void (*handle)(struct msv_conn_state *c, const msv_frame *f);
} routes[] = {
    {MSV__WIRE__FRAME__BODY_HELLO, 0, handle_hello},
    {MSV__WIRE__FRAME__BODY_AUTH, 0, handle_auth},
    {MSV__WIRE__FRAME__BODY_REGISTER_START, 0, handle_register_start},
    {MSV__WIRE__FRAME__BODY_REGISTER_FINISH, 0, handle_register_finish},
    {MSV__WIRE__FRAME__BODY_ADD_DEVICE, 0, handle_add_device},
    {MSV__WIRE__FRAME__BODY_LOOKUP, 1, handle_lookup},
    {MSV__WIRE__FRAME__BODY_LOG_READ, 0, handle_log_read},
    {MSV__WIRE__FRAME__BODY_SEND, 0, handle_send}, /* sealed sends come unauthenticated */
    {MSV__WIRE__FRAME__BODY_PREKEY_UPLOAD, 1, handle_prekey_upload},
    {MSV__WIRE__FRAME__BODY_PREKEY_CLAIM, 1, handle_prekey_claim},
    {MSV__WIRE__FRAME__BODY_SET_DELIVERY_TOKEN, 1, handle_set_delivery_token},
    {MSV__WIRE__FRAME__BODY_REPORT, 1, handle_report},
    {MSV__WIRE__FRAME__BODY_USAGE_REQUEST, 1, handle_usage},
    {MSV__WIRE__FRAME__BODY_ACK, 1, handle_ack},
    {MSV__WIRE__FRAME__BODY_QUEUE_SYNC, 1, handle_queue_sync},
    {MSV__WIRE__FRAME__BODY_REMOVE_DEVICE, 1, handle_remove_device},
    {MSV__WIRE__FRAME__BODY_PASSWORD_CHANGE, 1, handle_password_change},
    {MSV__WIRE__FRAME__BODY_ACCOUNT_DELETE, 1, handle_account_delete},
    {MSV__WIRE__FRAME__BODY_PASSWORD_RESET, 0, handle_password_reset},
    {MSV__WIRE__FRAME__BODY_APPROVE_DEVICE, 1, handle_approve_device},
    {MSV__WIRE__FRAME__BODY_BLOB_CREATE, 1, msv_blob_create},
    {MSV__WIRE__FRAME__BODY_BLOB_CHUNK, 1, msv_blob_chunk},
    {MSV__WIRE__FRAME__BODY_BLOB_STATUS, 1, msv_blob_status},
    {MSV__WIRE__FRAME__BODY_BLOB_FINISH, 1, msv_blob_finish},
    {MSV__WIRE__FRAME__BODY_BLOB_GET, 1, msv_blob_get},
    {MSV__WIRE__FRAME__BODY_PROVISION_OPEN, 0, handle_provision_open},
    {MSV__WIRE__FRAME__BODY_PROVISION_TAKE, 0, handle_provision_take},
    {MSV__WIRE__FRAME__BODY_LINK_DEVICE, 1, handle_link_device},
    {MSV__WIRE__FRAME__BODY_PROVISION_PUT, 1, handle_provision_put},
    {MSV__WIRE__FRAME__BODY_HANDLE_ADD, 1, handle_handle_add},
    {MSV__WIRE__FRAME__BODY_HANDLE_VERIFY, 1, handle_handle_verify},
    {MSV__WIRE__FRAME__BODY_HANDLE_REMOVE, 1, handle_handle_remove},
    {MSV__WIRE__FRAME__BODY_USERNAME_SET, 1, handle_username_set},
    {MSV__WIRE__FRAME__BODY_HANDLE_LIST_REQUEST, 1, handle_handle_list},
    {MSV__WIRE__FRAME__BODY_MLS_KEY_PACKAGE_UPLOAD, 1, msv_mls_key_package_upload},
    {MSV__WIRE__FRAME__BODY_MLS_KEY_PACKAGE_CLAIM, 1, msv_mls_key_package_claim},
    {MSV__WIRE__FRAME__BODY_MLS_SEND, 1, msv_mls_send},
    {MSV__WIRE__FRAME__BODY_MLS_GROUPS_LIST, 1, msv_mls_groups_list},
    {MSV__WIRE__FRAME__BODY_MLS_COMMITS_GET, 1, msv_mls_commits_get},
    {MSV__WIRE__FRAME__BODY_MLS_WELCOME_GET, 1, msv_mls_welcome_get},
};

void msv_handle_frame(struct msv_conn_state *c, const msv_frame *f)
{
    struct msv_server *s = c->w->srv;
    uint64_t gen = atomic_load(&s->suspension_gen);

    /* after a reload, each connected device's account is looked at once more */
    if (c->device_id != 0 && c->suspension_checked != gen) {
        int suspended = 0;
        msv_err err = STORE(s)->account_suspended(IMPL(s), c->account_id, &suspended);

        if (err == MSV_ERR_NOT_FOUND) { /* deleted meanwhile */
            msv_conn_send_error(c, f->request_id, MSV__WIRE__ERROR_CODE__ERROR_ACCOUNT_DELETED,
                                deleted_text);
            msv_conn_close_soon(c);
            return;
        }
        suspended = err != MSV_OK ? -1 : suspended != 0;
        if (suspended < 0) {
            send_unavailable(c, f->request_id); /* looked at again with the next request */
            return;
        }
        c->suspension_checked = gen;
        if (suspended) {
            msv_log(MSV_LOG_INFO, "suspended_closed", "peer=%s device=%llu", c->peer,
                    (unsigned long long)c->device_id);
            msv_conn_send_error(c, f->request_id, E_AUTH, "this account is suspended");
            msv_conn_close_soon(c);
            return;
        }
    }
    for (size_t i = 0; i < sizeof(routes) / sizeof(routes[0]); i++) {
        if (routes[i].body != f->body_case)
            continue;
        if (routes[i].needs_auth && c->device_id == 0)
            msv_conn_send_error(c, f->request_id, E_UNAUTH, "authenticate first");
        else
            routes[i].handle(c, f);
        return;
    }
    msv_conn_send_error(c, f->request_id, E_INVALID, "not a request a client sends");
}
