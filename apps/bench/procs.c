/*
 * The servers missive-bench measures: missived (with its accounts written
 * straight into a fresh database), Mosquitto and nginx. Each runs in its own
 * scratch directory, pinned to the server core, and dies with the bench
 * (PR_SET_PDEATHSIG) if the bench dies first. All of them use one P-256
 * certificate made by missived's own TLS module, so handshakes cost the same.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <libpq-fe.h>
#include <sodium.h>
#include <sqlite3.h>

#include "bench.h"
#include "missive/kt.h"
#include "missive/crypto.h"
#include "missive/ptree.h"
#include "missive/vrf.h"
#include "server/tls.h"
#include "store/store.h"

void die(const char *fmt, ...)
{
    va_list ap;

    fprintf(stderr, "missive-bench: ");
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    exit(1);
}

void pin_to_cpu(int cpu)
{
    cpu_set_t set;

    if (cpu < 0)
        return;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    (void)sched_setaffinity(0, sizeof(set), &set);
}

void scratch_dir(const struct opts *o, const char *name, char *out, size_t len)
{
    static unsigned serial;

    snprintf(out, len, "%s/%s-%u", o->tmp, name, serial++);
    if (mkdir(out, 0700) != 0)
        die("cannot create %s: %s", out, strerror(errno));
}

static void sleep_ms(unsigned ms)
{
    struct timespec ts = {(time_t)(ms / 1000), (long)(ms % 1000) * 1000000L};

    nanosleep(&ts, NULL);
}

/* ---- /proc readings ------------------------------------------------------------------- */

/*
 * A process's parent, and its CPU seconds: its own, and with children_too
 * those of its children that were reaped. 0 if it is gone.
 */
static double stat_cpu(const char *path, int children_too, pid_t *parent)
{
    char buf[1024], *p;
    unsigned long utime = 0, stime = 0;
    long cutime = 0, cstime = 0;
    int ppid = 0;
    FILE *f = fopen(path, "r");
    size_t n;

    if (f == NULL)
        return 0;
    n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    /* fields after the command name (which may hold spaces): state is field 3 */
    p = strrchr(buf, ')');
    if (p == NULL || sscanf(p + 2, "%*c %d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu %ld %ld",
                            &ppid, &utime, &stime, &cutime, &cstime) != 5)
        return 0;
    if (parent != NULL)
        *parent = ppid;
    if (!children_too)
        cutime = cstime = 0;
    return (double)(utime + stime + (unsigned long)(cutime + cstime)) /
           (double)sysconf(_SC_CLK_TCK);
}

double proc_cpu_s(pid_t pid)
{
    char path[64];

    snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
    return stat_cpu(path, 0, NULL);
}

double wait_idle(pid_t pid, double max_s)
{
    double t0 = now_s();

    while (now_s() - t0 < max_s) {
        double c0 = proc_cpu_s(pid);

        sleep_ms(500);
        if (proc_cpu_s(pid) - c0 < 0.05)
            break;
    }
    return now_s() - t0;
}

double proc_tree_cpu_s(pid_t pid)
{
    char path[300];
    double total;
    DIR *d = opendir("/proc");
    struct dirent *e;

    snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
    total = stat_cpu(path, 1, NULL);
    while (d != NULL && (e = readdir(d)) != NULL) {
        pid_t parent = 0;
        double cpu;

        if (e->d_name[0] < '1' || e->d_name[0] > '9')
            continue;
        snprintf(path, sizeof(path), "/proc/%.20s/stat", e->d_name);
        cpu = stat_cpu(path, 1, &parent);
        if (parent == pid)
            total += cpu;
    }
    if (d != NULL)
        closedir(d);
    return total;
}

static unsigned long long proc_field(pid_t pid, const char *file, const char *key)
{
    char path[64], line[256];
    unsigned long long v = 0;
    size_t klen = strlen(key);
    FILE *f;

    snprintf(path, sizeof(path), "/proc/%d/%s", (int)pid, file);
    f = fopen(path, "r");
    if (f == NULL)
        return 0;
    while (fgets(line, sizeof(line), f) != NULL) {
        if (strncmp(line, key, klen) == 0) {
            v = strtoull(line + klen, NULL, 10);
            break;
        }
    }
    fclose(f);
    return v;
}

double proc_rss_kib(pid_t pid)
{
    return (double)proc_field(pid, "status", "VmRSS:");
}

uint64_t proc_write_bytes(pid_t pid)
{
    return proc_field(pid, "io", "write_bytes:");
}

long proc_fsyncs(const struct server_proc *p)
{
    char line[512];
    long n = 0;
    FILE *f;

    if (p->trace[0] == '\0' || (f = fopen(p->trace, "r")) == NULL)
        return -1;
    while (fgets(line, sizeof(line), f) != NULL) {
        if (strstr(line, "fsync(") != NULL || strstr(line, "fdatasync(") != NULL)
            n++;
    }
    fclose(f);
    return n;
}

/* ---- starting and stopping ------------------------------------------------------------ */

static const char *cert_dir(const struct opts *o)
{
    static char dir[300];
    struct msv_config c;
    uint8_t fp[32];
    char err[256];
    SSL_CTX *ctx = NULL;

    if (dir[0] != '\0')
        return dir;
    scratch_dir(o, "cert", dir, sizeof(dir));
    msv_config_defaults(&c);
    snprintf(c.data_dir, sizeof(c.data_dir), "%s", dir);
    if (msv_tls_server_ctx(&c, &ctx, fp, err, sizeof(err)) != MSV_OK)
        die("cannot make a certificate: %s", err);
    SSL_CTX_free(ctx);
    return dir;
}

static uint16_t free_port(void)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(a);
    int fd = socket(AF_INET, SOCK_STREAM, 0);

    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof(a)) != 0 ||
        getsockname(fd, (struct sockaddr *)&a, &len) != 0)
        die("no free port: %s", strerror(errno));
    close(fd);
    return ntohs(a.sin_port);
}

static int port_open(uint16_t port)
{
    struct sockaddr_in a = {
        .sin_family = AF_INET, .sin_port = htons(port), .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    int fd = socket(AF_INET, SOCK_STREAM, 0), ok;

    if (fd < 0)
        return 0;
    ok = connect(fd, (struct sockaddr *)&a, sizeof(a)) == 0;
    close(fd);
    return ok;
}

/*
 * Every process started and not yet reaped, so that none outlives the bench
 * even where PR_SET_PDEATHSIG does not reach (a server strace started).
 */
#define STARTED_MAX 64
static volatile pid_t started[STARTED_MAX];

static void remember_pid(pid_t pid)
{
    for (int i = 0; i < STARTED_MAX && pid > 0; i++) {
        if (started[i] == 0) {
            started[i] = pid;
            return;
        }
    }
}

static void forget_pid(pid_t pid)
{
    for (int i = 0; i < STARTED_MAX && pid > 0; i++) {
        if (started[i] == pid)
            started[i] = 0;
    }
}

void servers_without_leak_check(void)
{
    const char *prev = getenv("ASAN_OPTIONS");
    char opts[1024];

    /* a sanitizer build's leak check stops the process at exit with a helper task of the
     * same command line, which a server killed at that moment (or run under strace) leaves
     * behind; the servers' leaks are the tests' business, not the benchmark's */
    snprintf(opts, sizeof(opts), "%s%sdetect_leaks=0", prev ? prev : "", prev ? ":" : "");
    setenv("ASAN_OPTIONS", opts, 1);
}

void kill_servers(void)
{
    for (int i = 0; i < STARTED_MAX; i++) {
        if (started[i] > 0)
            kill(started[i], SIGKILL); /* async-signal-safe: also called from a handler */
    }
}

/* Forks and execs argv with output to dir/out.log, pinned to the server core. */
static pid_t spawn(const struct opts *o, const char *dir, char *const argv[])
{
    char log[400];
    pid_t parent = getpid(), pid;

    snprintf(log, sizeof(log), "%s/out.log", dir);
    pid = fork();
    if (pid < 0)
        die("fork: %s", strerror(errno));
    if (pid == 0) {
        int fd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0600);

        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent)
            _exit(1);
        if (fd >= 0) {
            dup2(fd, STDOUT_FILENO);
            dup2(fd, STDERR_FILENO);
        }
        pin_to_cpu(o->server_cpu);
        execvp(argv[0], argv);
        _exit(127);
    }
    remember_pid(pid);
    return pid;
}

/* Stops the bench with the server's own words (the scratch directory goes at exit). */
static void start_failed(const struct server_proc *p, const char *what)
{
    char path[400], line[512];
    FILE *f;

    snprintf(path, sizeof(path), "%s/out.log", p->dir);
    f = fopen(path, "r");
    while (f != NULL && fgets(line, sizeof(line), f) != NULL)
        fprintf(stderr, "%s: %s", p->name, line);
    if (f != NULL)
        fclose(f);
    die("%s", what);
}

/* Waits until the server listens (port_of reads the port when the server picks it). */
static void wait_ready(struct server_proc *p, void (*port_of)(struct server_proc *))
{
    for (int i = 0; i < 6000; i++) { /* 2 minutes: the key directory reads the log at start */
        int status;

        if (p->port == 0 && port_of != NULL)
            port_of(p);
        if (p->port != 0 && port_open(p->port))
            return;
        if (waitpid(p->parent, &status, WNOHANG) == p->parent) {
            forget_pid(p->pid);
            forget_pid(p->parent);
            p->pid = p->parent = 0;
            start_failed(p, "a server exited during start-up");
        }
        sleep_ms(20);
    }
    start_failed(p, "a server did not start within 2 minutes");
}

void stop_server(struct server_proc *p)
{
    int status, reaped = 0;

    if (p->parent <= 0)
        return;
    kill(p->pid, SIGTERM);
    for (int i = 0; i < 500 && !reaped; i++) {
        reaped = waitpid(p->parent, &status, WNOHANG) == p->parent;
        if (!reaped)
            sleep_ms(20);
    }
    if (!reaped) {
        kill(p->pid, SIGKILL);
        kill(p->parent, SIGKILL);
        waitpid(p->parent, &status, 0);
    }
    forget_pid(p->pid);
    forget_pid(p->parent);
    p->pid = p->parent = 0;
}

/* Whether pid runs exe (its command line's first word), having exec'd it. */
static int runs(pid_t pid, const char *exe)
{
    char path[64], first[400] = "";
    size_t n;
    FILE *f;

    snprintf(path, sizeof(path), "/proc/%d/cmdline", (int)pid);
    f = fopen(path, "r");
    if (f == NULL)
        return 0;
    n = fread(first, 1, sizeof(first) - 1, f);
    fclose(f);
    first[n] = '\0';
    return strcmp(first, exe) == 0;
}

/*
 * The server strace started, once it runs exe. Not simply strace's first
 * child: with --seccomp-bpf strace forks a short-lived child of its own to
 * test the filter, and a server taken for it would never be stopped.
 */
static pid_t traced_child(pid_t tracer, const char *exe)
{
    char path[64];
    FILE *f;

    snprintf(path, sizeof(path), "/proc/%d/task/%d/children", (int)tracer, (int)tracer);
    for (int i = 0; i < 500; i++) {
        long child;

        f = fopen(path, "r");
        while (f != NULL && fscanf(f, "%ld", &child) == 1) {
            if (runs((pid_t)child, exe)) {
                fclose(f);
                return (pid_t)child;
            }
        }
        if (f != NULL)
            fclose(f);
        sleep_ms(10);
    }
    return 0;
}

/* ---- missived ------------------------------------------------------------------------- */

size_t seed_device_count(const struct seed *s, size_t a)
{
    return s->devices != NULL ? s->devices[a] : 1;
}

uint64_t seed_device_id(const struct seed *s, size_t a, size_t k)
{
    uint64_t id = 1;

    if (s->devices == NULL)
        return (uint64_t)a + 1;
    for (size_t i = 0; i < a; i++)
        id += s->devices[i];
    return id + k;
}

void seed_handle(size_t a, char out[32])
{
    snprintf(out, 32, "u%u@bench", (unsigned)(a % 1000000000u));
}

static void sql_ok(sqlite3 *db, int rc, const char *what)
{
    if (rc != SQLITE_OK && rc != SQLITE_DONE && rc != SQLITE_ROW)
        die("seeding the database (%s): %s", what, sqlite3_errmsg(db));
}

/*
 * Writes the accounts and devices straight into a database that the store
 * created (so its schema is current): one transaction instead of one durable
 * commit per row, which would take minutes for 20,000 devices.
 */
/* Inserts account a's log entry e (index a). */
static void seed_kt_leaf(sqlite3 *db, sqlite3_stmt *kt, size_t a, const struct msv_kt_entry *e)
{
    uint8_t *leaf = NULL;
    size_t len = 0;

    if (msv_kt_leaf_encode(e, &leaf, &len) != MSV_OK)
        die("cannot encode the log entry of %s", e->handle);
    sqlite3_bind_int64(kt, 1, (sqlite3_int64)a);
    sqlite3_bind_text(kt, 2, e->handle, -1, SQLITE_TRANSIENT);
    sqlite3_bind_blob(kt, 3, leaf, (int)len, SQLITE_TRANSIENT);
    sql_ok(db, sqlite3_step(kt), "log entry");
    sqlite3_reset(kt);
    free(leaf);
}

/*
 * The key directory's VRF key for a data directory about to be seeded: made and written to
 * DIR/vrf.key (mode 0600) as missived would on its first start, so that the seeder can store the
 * labels missived would otherwise compute at start (kt_labels).
 */
static void seed_vrf_key(const char *dir, uint8_t secret[MSV_VRF_SECRET_KEY_LEN])
{
    char path[600];
    int fd;

    snprintf(path, sizeof(path), "%s/vrf.key", dir);
    randombytes_buf(secret, MSV_VRF_SECRET_KEY_LEN);
    fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0 || write(fd, secret, MSV_VRF_SECRET_KEY_LEN) != MSV_VRF_SECRET_KEY_LEN ||
        close(fd) != 0)
        die("cannot write %s", path);
}

/* The label of version 1 of handle under the VRF key secret (docs/transparency.md). */
static void seed_label(const uint8_t secret[MSV_VRF_SECRET_KEY_LEN], const char *handle,
                       uint8_t label[MSV_PT_LABEL_LEN])
{
    uint8_t alpha[300], beta[MSV_VRF_OUTPUT_LEN];
    size_t len = 0;

    if (msv_pt_vrf_input(handle, 1, alpha, sizeof(alpha), &len) != MSV_OK ||
        msv_vrf_output(MSV_PT_VRF_SUITE, secret, alpha, len, beta) != MSV_OK)
        die("cannot compute the label of %s", handle);
    msv_pt_label(beta, label);
}

/* The MLS groups of seed, as the delivery service keeps them once their commits are taken. */
static void seed_mls_groups(sqlite3 *db, const struct seed *seed)
{
    sqlite3_stmt *g = NULL, *m = NULL;

    if (seed->n_mls == 0)
        return;
    sql_ok(db,
           sqlite3_prepare_v2(db, "INSERT INTO mls_groups (group_id, epoch) VALUES (?, 0)", -1, &g,
                              NULL),
           "prepare");
    sql_ok(db,
           sqlite3_prepare_v2(db, "INSERT INTO mls_members (group_id, device_id) VALUES (?, ?)", -1,
                              &m, NULL),
           "prepare");
    for (size_t i = 0; i < seed->n_mls; i++) {
        const struct seed_mls *x = &seed->mls[i];

        sqlite3_bind_blob(g, 1, x->id, sizeof(x->id), SQLITE_STATIC);
        sql_ok(db, sqlite3_step(g), "MLS group");
        sqlite3_reset(g);
        for (size_t k = 0; k < x->n; k++) {
            sqlite3_bind_blob(m, 1, x->id, sizeof(x->id), SQLITE_STATIC);
            sqlite3_bind_int64(m, 2, (sqlite3_int64)(x->first + k));
            sql_ok(db, sqlite3_step(m), "MLS member");
            sqlite3_reset(m);
        }
    }
    sqlite3_finalize(g);
    sqlite3_finalize(m);
}

static void seed_db(const char *path, const char *data_dir, const struct seed *seed,
                    const uint8_t *identity, size_t identity_len)
{
    uint8_t vrf[MSV_VRF_SECRET_KEY_LEN];
    sqlite3_stmt *lab = NULL;
    struct msv_store *store = NULL;
    sqlite3_stmt *acc = NULL, *dev = NULL, *kt = NULL, *hdl = NULL;
    static struct msv_kt_entry entry;
    sqlite3 *db = NULL;
    uint64_t id = 1;

    if (msv_store_open_sqlite(path, &store) != MSV_OK)
        die("cannot create %s", path);
    msv_store_close(store);
    if (sqlite3_open(path, &db) != SQLITE_OK)
        die("cannot open %s", path);
    sql_ok(db, sqlite3_exec(db, "BEGIN", NULL, NULL, NULL), "begin");
    sql_ok(db,
           sqlite3_prepare_v2(db,
                              "INSERT INTO accounts (id, handle, password_hash, created_ms) "
                              "VALUES (?, ?, 'x', 0)",
                              -1, &acc, NULL),
           "prepare");
    sql_ok(db,
           sqlite3_prepare_v2(db,
                              "INSERT INTO devices (id, account_id, suite, identity, push_token, "
                              "created_ms, approved) VALUES (?, ?, ?, ?, x'', 0, 1)",
                              -1, &dev, NULL),
           "prepare");
    /* and its handle among the account's handles, where lookups and sends find it */
    sql_ok(db,
           sqlite3_prepare_v2(db,
                              "INSERT INTO account_handles (handle, account_id, added_ms) "
                              "VALUES (?, ?, 0)",
                              -1, &hdl, NULL),
           "prepare");
    /* each account's registration put its device set in the transparency log */
    sql_ok(db,
           sqlite3_prepare_v2(db, "INSERT INTO kt_log (idx, handle, leaf) VALUES (?, ?, ?)", -1,
                              &kt, NULL),
           "prepare");
    /* and the key directory's label of that entry, as missived keeps it (kt_labels) */
    seed_vrf_key(data_dir, vrf);
    sql_ok(
        db,
        sqlite3_prepare_v2(db, "INSERT INTO kt_labels (idx, label) VALUES (?, ?)", -1, &lab, NULL),
        "prepare");
    for (size_t a = 0; a < seed->accounts; a++) {
        char handle[32];

        seed_handle(a, handle);
        sqlite3_bind_int64(acc, 1, (sqlite3_int64)a + 1);
        sqlite3_bind_text(acc, 2, handle, -1, SQLITE_TRANSIENT);
        sql_ok(db, sqlite3_step(acc), "account");
        sqlite3_reset(acc);
        sqlite3_bind_text(hdl, 1, handle, -1, SQLITE_TRANSIENT);
        sqlite3_bind_int64(hdl, 2, (sqlite3_int64)a + 1);
        sql_ok(db, sqlite3_step(hdl), "handle");
        sqlite3_reset(hdl);
        memset(&entry, 0, sizeof(entry));
        snprintf(entry.handle, sizeof(entry.handle), "%s", handle);
        for (size_t k = 0; k < seed_device_count(seed, a); k++) {
            if (entry.n_devices < MSV_KT_DEVICES_MAX)
                entry.devices[entry.n_devices++] =
                    (struct msv_kt_device){.device_id = id,
                                           .suite = MSV_SUITE_MODERN,
                                           .identity = identity,
                                           .identity_len = identity_len};
            sqlite3_bind_int64(dev, 1, (sqlite3_int64)id++);
            sqlite3_bind_int64(dev, 2, (sqlite3_int64)a + 1);
            sqlite3_bind_int(dev, 3, MSV_SUITE_MODERN);
            sqlite3_bind_blob(dev, 4, identity, (int)identity_len, SQLITE_STATIC);
            sql_ok(db, sqlite3_step(dev), "device");
            sqlite3_reset(dev);
        }
        seed_kt_leaf(db, kt, a, &entry);
        {
            uint8_t label[MSV_PT_LABEL_LEN];

            seed_label(vrf, handle, label);
            sqlite3_bind_int64(lab, 1, (sqlite3_int64)a);
            sqlite3_bind_blob(lab, 2, label, sizeof(label), SQLITE_TRANSIENT);
            sql_ok(db, sqlite3_step(lab), "label");
            sqlite3_reset(lab);
        }
    }
    sqlite3_finalize(lab);
    sodium_memzero(vrf, sizeof(vrf));
    seed_mls_groups(db, seed);
    sqlite3_finalize(acc);
    sqlite3_finalize(dev);
    sqlite3_finalize(kt);
    sqlite3_finalize(hdl);
    sql_ok(db, sqlite3_exec(db, "COMMIT", NULL, NULL, NULL), "commit");
    sqlite3_close(db);
}

static void missived_port(struct server_proc *p);

double bench_seed_s;

/*
 * A missived's scratch directory (named after name) with data/ in it; the
 * paths go to data and config (360 and 400 bytes), and the configuration
 * file is returned open for writing.
 */
static FILE *missived_dirs(const struct opts *o, const char *name, struct server_proc *out,
                           char data[360], char config[400])
{
    FILE *f;

    memset(out, 0, sizeof(*out));
    out->name = "missived";
    scratch_dir(o, name, out->dir, sizeof(out->dir));
    snprintf(data, 360, "%s/data", out->dir);
    if (mkdir(data, 0700) != 0)
        die("cannot create %s", data);
    snprintf(config, 400, "%s/missived.conf", out->dir);
    f = fopen(config, "w");
    if (f == NULL)
        die("cannot write %s", config);
    return f;
}

/*
 * The PostgreSQL store at conninfo, made current and filled like seed_db():
 * account a + 1 is seed_handle(a) (its only handle), with device a + 1 (one device each).
 * Their log leaves are written when the store is opened again.
 */
void seed_postgres(const char *conninfo, const char *shared, size_t accounts,
                   const uint8_t *identity, size_t identity_len)
{
    uint8_t vrf[MSV_VRF_SECRET_KEY_LEN];
    struct msv_store *store = NULL;
    char why[256], n[24], suite[8];
    const char *values[3] = {n, suite, (const char *)identity};
    int lengths[3] = {0, 0, (int)identity_len}, formats[3] = {0, 0, 1};
    PGconn *db;
    PGresult *r;

    if (msv_store_open_postgres(conninfo, 1, 0, 0, why, sizeof(why), &store) != MSV_OK)
        die("cannot open the PostgreSQL store: %s", why);
    msv_store_close(store);
    snprintf(n, sizeof(n), "%zu", accounts);
    snprintf(suite, sizeof(suite), "%d", (int)MSV_SUITE_MODERN);
    db = PQconnectdb(conninfo);
    r = PQexecParams(
        db,
        "WITH a AS (INSERT INTO accounts (id, handle, password_hash, created_ms) SELECT g,"
        " 'u' || (g - 1) || '@bench', 'x', 0 FROM generate_series(1, $1::BIGINT) g"
        " RETURNING id, handle),"
        " h AS (INSERT INTO account_handles (handle, account_id, added_ms)"
        " SELECT handle, id, 0 FROM a)"
        " INSERT INTO devices (id, account_id, suite, identity, push_token, created_ms, approved)"
        " SELECT id, id, $2::INTEGER, $3::BYTEA, ''::BYTEA, 0, TRUE FROM a;",
        3, NULL, values, lengths, formats, 0);
    if (PQresultStatus(r) != PGRES_COMMAND_OK)
        die("seeding PostgreSQL: %s", PQerrorMessage(db));
    PQclear(r);
    r = PQexec(db, "SELECT setval('accounts_id_seq', (SELECT MAX(id) FROM accounts)),"
                   " setval('devices_id_seq', (SELECT MAX(id) FROM devices));");
    if (PQresultStatus(r) != PGRES_TUPLES_OK)
        die("seeding PostgreSQL: %s", PQerrorMessage(db));
    PQclear(r);
    PQfinish(db);
    /* the backfill logs every account now, not in the first node's start */
    if (msv_store_open_postgres(conninfo, 1, 0, 0, why, sizeof(why), &store) != MSV_OK)
        die("cannot open the PostgreSQL store: %s", why);
    /* and the labels of those entries (each its handle's version 1), as the nodes keep them */
    seed_vrf_key(shared, vrf);
    for (uint64_t start = 0;;) {
        struct msv_kt_rec *recs = NULL, *labels;
        size_t got = 0;

        if (store->ops->kt_read(store->impl, start, 1024, &recs, &got) != MSV_OK ||
            (labels = calloc(got ? got : 1, sizeof(*labels))) == NULL)
            die("cannot read the PostgreSQL store's log");
        for (size_t i = 0; i < got; i++) {
            struct msv_kt_entry *e = calloc(1, sizeof(*e));

            labels[i].index = recs[i].index;
            labels[i].leaf = malloc(MSV_PT_LABEL_LEN);
            labels[i].leaf_len = MSV_PT_LABEL_LEN;
            if (e == NULL || labels[i].leaf == NULL ||
                msv_kt_leaf_parse(recs[i].leaf, recs[i].leaf_len, e) != MSV_OK)
                die("cannot read the PostgreSQL store's log entry %zu", (size_t)recs[i].index);
            seed_label(vrf, e->handle, labels[i].leaf);
            free(e);
        }
        if (got > 0 && store->ops->kt_labels_put(store->impl, labels, got) != MSV_OK)
            die("cannot store the key directory's labels");
        msv_kt_recs_free(labels, got);
        msv_kt_recs_free(recs, got);
        if (got < 1024)
            break;
        start += got;
    }
    sodium_memzero(vrf, sizeof(vrf));
    msv_store_close(store);
}

/* The load is one host's: missived's abuse limits would only measure themselves. */
#define BENCH_QUOTAS                                                                          \
    "prekey_claim_interval_s = 0\n"                                                           \
    "[relay]\nsend_rate = 1000000\nsend_burst = 10000000\nqueue_max_envelopes = 1000000000\n" \
    "queue_max_bytes = 1099511627776\n"                                                       \
    "[blobs]\nopen_uploads_per_device = 100000\nbytes_per_device = 1125899906842624\n"        \
    "bytes_per_account = 1125899906842624\nfinish_fail_burst = 1000000\nfinish_checks = 256\n"

void start_missived_node(const struct opts *o, const char *conninfo, const char *redis,
                         const char *shared, const char *name, unsigned workers,
                         struct server_proc *out)
{
    char config[400], data[360], exe[400];
    const char *certs = cert_dir(o);
    char *argv[] = {exe, "--config", config, NULL};
    FILE *f;

    f = missived_dirs(o, "node", out, data, config);
    /* as start_missived(), on the shared store */
    fprintf(f,
            "[server]\nlisten_port = 0\ndata_dir = %s\nshared_dir = %s\nworkers = %u\n"
            "idle_timeout_s = 3600\nmax_connections_per_address = 10000000\n"
            "[store]\nbackend = postgres\npostgres = %s\nconnections = %u\n"
            "[cluster]\nredis = %s\nnode = %s\n"
            "[tls]\ncert_file = %s/server.crt\nkey_file = %s/server.key\n"
            "[directory]\nlookup_rate = 1000000\nlookup_burst = 1000000\n" BENCH_QUOTAS
            "[http]\nenabled = false\n[log]\nlevel = warn\n",
            data, shared, workers, conninfo, 2 * workers + 2, redis, name, certs, certs);
    fclose(f);
    snprintf(exe, sizeof(exe), "%s/missived", o->bin);
    out->parent = out->pid = spawn(o, out->dir, argv);
    wait_ready(out, missived_port);
}

/* missived picks its port (listen_port = 0) and writes it to data/missived.ports. */
static void missived_port(struct server_proc *p)
{
    char path[400];
    unsigned tls = 0;
    FILE *f;

    snprintf(path, sizeof(path), "%s/data/missived.ports", p->dir);
    f = fopen(path, "r");
    if (f == NULL)
        return;
    if (fscanf(f, "tls %u", &tls) == 1)
        p->port = (uint16_t)tls;
    fclose(f);
}

void start_missived(const struct opts *o, const struct seed *seed, const uint8_t *identity,
                    size_t identity_len, int count_fsyncs, struct server_proc *out)
{
    char config[400], data[360], db[400], exe[400];
    const char *certs = cert_dir(o);
    FILE *f;

    f = missived_dirs(o, "missived", out, data, config);
    snprintf(db, sizeof(db), "%s/missive.db", data);
    bench_seed_s = now_s();
    seed_db(db, data, seed, identity, identity_len);
    bench_seed_s = now_s() - bench_seed_s;
    /* one worker on one core, as Mosquitto and nginx run; limits raised for load */
    fprintf(f,
            "[server]\nlisten_port = 0\ndata_dir = %s\nworkers = 1\nidle_timeout_s = 3600\n"
            "max_connections_per_address = 10000000\n"
            "frame_max = 1048576\n"
            "[tls]\ncert_file = %s/server.crt\nkey_file = %s/server.key\n"
            "[directory]\nlookup_rate = 1000000\nlookup_burst = 1000000\n" BENCH_QUOTAS
            "[blobs]\nmax_size = 268435456\n"
            "[http]\nenabled = false\n[log]\nlevel = warn\n",
            data, certs, certs);
    fclose(f);
    snprintf(exe, sizeof(exe), "%s/missived", o->bin);
    if (count_fsyncs && access("/usr/bin/strace", X_OK) == 0) {
        char *argv[] = {"/usr/bin/strace",
                        "-f",
                        "--seccomp-bpf",
                        "-qq",
                        "-e",
                        "trace=fsync,fdatasync",
                        "-e",
                        "signal=none",
                        "-o",
                        out->trace,
                        exe,
                        "--config",
                        config,
                        NULL};

        snprintf(out->trace, sizeof(out->trace), "%s/fsyncs.txt", out->dir);
        out->parent = spawn(o, out->dir, argv);
        out->pid = traced_child(out->parent, exe);
        remember_pid(out->pid);
        if (out->pid == 0)
            die("strace did not start missived; see %s/out.log", out->dir);
    } else {
        char *argv[] = {exe, "--config", config, NULL};

        out->parent = out->pid = spawn(o, out->dir, argv);
    }
    wait_ready(out, missived_port);
}

/* ---- peers ---------------------------------------------------------------------------- */

/*
 * Sets out up for a peer: the first of candidates that exists (NULL if none:
 * the peer is not installed), a scratch directory, a free port, and its
 * configuration file opened for writing (path in config).
 */
static FILE *peer_setup(const struct opts *o, const char *name, const char *const *candidates,
                        struct server_proc *out, const char **exe, char *config, size_t len)
{
    FILE *f;

    memset(out, 0, sizeof(*out));
    out->name = name;
    for (*exe = NULL; *candidates != NULL && *exe == NULL; candidates++) {
        if (access(*candidates, X_OK) == 0)
            *exe = *candidates;
    }
    if (*exe == NULL)
        return NULL;
    scratch_dir(o, name, out->dir, sizeof(out->dir));
    out->port = free_port();
    snprintf(config, len, "%s/%s.conf", out->dir, name);
    f = fopen(config, "w");
    if (f == NULL)
        die("cannot write %s", config);
    return f;
}

int start_mosquitto(const struct opts *o, struct server_proc *out)
{
    static const char *const where[] = {"/usr/sbin/mosquitto", "/usr/bin/mosquitto", NULL};
    const char *exe, *certs = cert_dir(o);
    char config[400];
    FILE *f = peer_setup(o, "mosquitto", where, out, &exe, config, sizeof(config));

    if (f == NULL)
        return -1;
    /* QoS 1 kept in memory (persistence off: Mosquitto's fastest setting); the same delivery
     * window as missived's default; no Nagle delay, as missived */
    fprintf(f,
            "user root\nper_listener_settings false\npersistence false\nset_tcp_nodelay true\n"
            "max_inflight_messages 64\nmax_queued_messages 100000\n"
            "log_dest stderr\nlog_type error\n"
            "listener %u 127.0.0.1\nallow_anonymous true\nmax_connections -1\n"
            "certfile %s/server.crt\nkeyfile %s/server.key\ntls_version tlsv1.3\n",
            (unsigned)out->port, certs, certs);
    fclose(f);
    {
        char *argv[] = {(char *)exe, "-c", config, NULL};

        out->parent = out->pid = spawn(o, out->dir, argv);
    }
    wait_ready(out, NULL);
    return 0;
}

/*
 * Writes bench/xmpp/NAME to dir/NAME with @DIR@, @PORT@, @CERT@ and @KEY@ replaced; the path
 * written goes to path.
 */
static void xmpp_config(const char *name, const struct server_proc *p, const char *certs,
                        char *path, size_t len)
{
    char src[512], line[1024], port[8], cert[400], key[400];
    const char *keys[4] = {"@DIR@", "@PORT@", "@CERT@", "@KEY@"};
    const char *vals[4] = {p->dir, port, cert, key};
    FILE *in, *out;

    snprintf(src, sizeof(src), "%s/%s", MSV_BENCH_XMPP_DIR, name);
    snprintf(path, len, "%s/%s", p->dir, name);
    snprintf(port, sizeof(port), "%u", (unsigned)p->port);
    snprintf(cert, sizeof(cert), "%s/server.crt", certs);
    snprintf(key, sizeof(key), "%s/server.key", certs);
    in = fopen(src, "r");
    out = fopen(path, "w");
    if (in == NULL || out == NULL)
        die("cannot read %s or write %s", src, path);
    while (fgets(line, sizeof(line), in) != NULL) {
        for (char *c = line; *c != '\0';) {
            int k = 0;

            while (k < 4 && strncmp(c, keys[k], strlen(keys[k])) != 0)
                k++;
            if (k < 4) {
                fputs(vals[k], out);
                c += strlen(keys[k]);
            } else {
                fputc(*c++, out);
            }
        }
    }
    fclose(in);
    if (fclose(out) != 0)
        die("cannot write %s", path);
}

/* Where Debian's ejabberdctl looks for ejabberd's Erlang applications (its ERL_LIBS). */
static int ejabberd_libs(char *out, size_t len)
{
    char line[512];
    FILE *f = fopen("/usr/sbin/ejabberdctl", "r");
    int found = 0;

    while (f != NULL && !found && fgets(line, sizeof(line), f) != NULL) {
        char *v = strstr(line, "ERL_LIBS='");

        if (v == line) {
            char *end = strchr(v + 10, '\'');

            if (end != NULL && (size_t)(end - v - 10) < len) {
                snprintf(out, len, "%.*s", (int)(end - v - 10), v + 10);
                found = 1;
            }
        }
    }
    if (f != NULL)
        fclose(f);
    return found ? 0 : -1;
}

int start_xmpp(const struct opts *o, const char *which, int again, struct server_proc *out)
{
    const char *certs = cert_dir(o);
    char config[512], libs[300], env_cfg[600], env_log[600], env_libs[320], env_dump[600],
        env_home[600], mnesia[600], data[400];
    int ejabberd = strcmp(which, "ejabberd") == 0;

    if (!again) {
        const char *exe = ejabberd ? "/usr/sbin/ejabberdctl" : "/usr/bin/prosody";

        memset(out, 0, sizeof(*out));
        out->name = ejabberd ? "ejabberd" : "prosody";
        if (access(exe, X_OK) != 0 || (ejabberd && access("/usr/bin/erl", X_OK) != 0))
            return -1;
        scratch_dir(o, which, out->dir, sizeof(out->dir));
        out->port = free_port();
        snprintf(data, sizeof(data), "%s/data", out->dir);
        if (mkdir(data, 0700) != 0)
            die("cannot create %s", data);
    }
    xmpp_config(ejabberd ? "ejabberd.yml" : "prosody.cfg.lua", out, certs, config, sizeof(config));
    if (ejabberd) {
        if (ejabberd_libs(libs, sizeof(libs)) != 0)
            die("cannot find ERL_LIBS in /usr/sbin/ejabberdctl");
        /* what ejabberdctl foreground runs, without its switch to the ejabberd user */
        snprintf(env_cfg, sizeof(env_cfg), "EJABBERD_CONFIG_PATH=%s", config);
        snprintf(env_log, sizeof(env_log), "EJABBERD_LOG_PATH=%s/ejabberd.log", out->dir);
        snprintf(env_libs, sizeof(env_libs), "ERL_LIBS=%s", libs);
        snprintf(env_dump, sizeof(env_dump), "ERL_CRASH_DUMP=%s/erl_crash.dump", out->dir);
        snprintf(env_home, sizeof(env_home), "HOME=%s", out->dir);
        snprintf(mnesia, sizeof(mnesia), "\"%s/data\"", out->dir);
        {
            char *argv[] = {"/usr/bin/env",
                            env_cfg,
                            env_log,
                            env_libs,
                            env_dump,
                            env_home,
                            "ERL_MAX_PORTS=65536",
                            "/usr/bin/erl",
                            "-noinput",
                            "-noshell",
                            "+K",
                            "true",
                            "+P",
                            "250000",
                            "-mnesia",
                            "dir",
                            mnesia,
                            "-s",
                            "ejabberd",
                            NULL};

            out->parent = out->pid = spawn(o, out->dir, argv);
        }
    } else {
        char *argv[] = {"/usr/bin/prosody", "--config", config, NULL};

        out->parent = out->pid = spawn(o, out->dir, argv);
    }
    wait_ready(out, NULL);
    return 0;
}

int start_nginx(const struct opts *o, struct server_proc *out)
{
    static const char *const where[] = {"/usr/sbin/nginx", "/usr/bin/nginx", NULL};
    const char *exe, *certs = cert_dir(o);
    char config[400], path[400];
    FILE *f = peer_setup(o, "nginx", where, out, &exe, config, sizeof(config));

    if (f == NULL)
        return -1;
    snprintf(path, sizeof(path), "%s/www", out->dir);
    mkdir(path, 0755);
    snprintf(path, sizeof(path), "%s/www/up", out->dir);
    mkdir(path, 0755);
    snprintf(path, sizeof(path), "%s/tmp", out->dir);
    mkdir(path, 0700);
    /* one process, like missived's one worker; PUT stored through its DAV module */
    fprintf(f,
            "daemon off;\nmaster_process off;\nworker_processes 1;\n"
            "pid %s/nginx.pid;\nerror_log %s/error.log warn;\n"
            "events { worker_connections 1024; }\n"
            "http {\n access_log off;\n client_body_temp_path %s/tmp;\n"
            " proxy_temp_path %s/tmp;\n fastcgi_temp_path %s/tmp;\n uwsgi_temp_path %s/tmp;\n"
            " scgi_temp_path %s/tmp;\n client_max_body_size 2g;\n sendfile on;\n"
            " server {\n  listen 127.0.0.1:%u ssl;\n  ssl_protocols TLSv1.3;\n"
            "  ssl_certificate %s/server.crt;\n  ssl_certificate_key %s/server.key;\n"
            "  root %s/www;\n  location /up/ { dav_methods PUT; }\n }\n}\n",
            out->dir, out->dir, out->dir, out->dir, out->dir, out->dir, out->dir,
            (unsigned)out->port, certs, certs, out->dir);
    fclose(f);
    {
        char *argv[] = {(char *)exe, "-c", config, "-p", out->dir, "-e", "stderr", NULL};

        out->parent = out->pid = spawn(o, out->dir, argv);
    }
    wait_ready(out, NULL);
    return 0;
}
