/*
 * missive-bench's parts: the crypto benchmark (B1, in missive-bench.c), the
 * servers it starts and measures (procs.c), the load generator that speaks
 * Missive's protocol, MQTT 3.1.1 and HTTP/1.1 over TLS 1.3 (load.c), and the
 * server benchmarks B2-B6 built on them (net.c).
 */
#ifndef MSV_BENCH_H
#define MSV_BENCH_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>

struct opts {
    int runs;           /* medians over this many runs */
    double slice;       /* seconds each crypto measurement runs for */
    int quick;          /* a smoke run: small sizes, short windows */
    double window;      /* seconds each server measurement runs for */
    const char *bin;    /* directory of missived */
    char tmp[256];      /* scratch directory, removed at exit */
    int server_cpu;     /* core the servers are pinned to; -1 for none */
    int loader_cpu;     /* core this process is pinned to; -1 for none */
    size_t idle_max;    /* B4: the largest idle connection count to try */
    size_t connections; /* B2, B8: this many connections only (0: their own sizes) */
};

double now_s(void);
void sort_doubles(double *v, size_t n);
double median(double *v, int n);
/* The q-quantile (0..1) of n sorted values. */
double quantile_sorted(const double *v, size_t n, double q);
void die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

int bench_crypto(const struct opts *o, FILE *out);
int bench_relay(const struct opts *o, FILE *out);   /* B2 */
int bench_fanout(const struct opts *o, FILE *out);  /* B3 */
int bench_idle(const struct opts *o, FILE *out);    /* B4 */
int bench_queue(const struct opts *o, FILE *out);   /* B5 */
int bench_storage(const struct opts *o, FILE *out); /* B6 */
int bench_cluster(const struct opts *o, FILE *out); /* B7 */
int bench_xmpp(const struct opts *o, FILE *out);    /* B8 */
int bench_keydir(const struct opts *o, FILE *out);  /* B9, keydir.c */
int bench_mls(const struct opts *o, FILE *out);     /* B3's MLS side, mls.c */

/* ---- procs.c: servers under measurement ------------------------------------------------ */

struct server_proc {
    const char *name;
    pid_t pid;       /* the server itself (under strace, strace's child) */
    pid_t parent;    /* what was started: the server, or strace */
    uint16_t port;   /* TLS port */
    char dir[320];   /* its scratch directory */
    char trace[400]; /* strace output counting fsyncs, or "" */
};

/*
 * A bench device: every account has devices 1..n; all of them sign with one
 * key (the server checks each signature; the cost is the same).
 */
/* An MLS group the delivery service holds at epoch 0: devices first .. first + n - 1. */
struct seed_mls {
    uint8_t id[16];
    uint64_t first;
    size_t n;
};

struct seed {
    size_t accounts;
    const size_t *devices; /* devices of account i; NULL means 1 each */
    const struct seed_mls *mls;
    size_t n_mls;
};
/* The device id of account a's device k (both from 0). */
uint64_t seed_device_id(const struct seed *s, size_t a, size_t k);
size_t seed_device_count(const struct seed *s, size_t a);
void seed_handle(size_t a, char out[32]);

/* The seconds the last start_missived() took to seed its database (before missived ran). */
extern double bench_seed_s;
/* Starts missived (workers = 1) with accounts pre-seeded; count_fsyncs runs it under strace. */
void start_missived(const struct opts *o, const struct seed *seed, const uint8_t *identity,
                    size_t identity_len, int count_fsyncs, struct server_proc *out);
/*
 * Fills the PostgreSQL store at conninfo with accounts of one device each (as seed), their log
 * entries and their key directory labels under a VRF key it writes to shared/vrf.key.
 */
void seed_postgres(const char *conninfo, const char *shared, size_t accounts,
                   const uint8_t *identity, size_t identity_len);
/* Starts a missived node of that many workers on that store, in the cluster at redis. */
void start_missived_node(const struct opts *o, const char *conninfo, const char *redis,
                         const char *shared, const char *name, unsigned workers,
                         struct server_proc *out);
/* Starts Mosquitto with missived's certificate type (P-256), TLS 1.3, QoS 1 settings. */
int start_mosquitto(const struct opts *o, struct server_proc *out);
/*
 * Starts ejabberd or Prosody (which: "ejabberd" or "prosody") from bench/xmpp's configuration,
 * as the current user, in a scratch directory, on a free loopback port, with direct TLS. -1 if
 * it is not installed. With again, starts the same server again on out's directory and port
 * (what it stored is kept).
 */
int start_xmpp(const struct opts *o, const char *which, int again, struct server_proc *out);
/* Starts nginx (one process) serving dir/www over TLS 1.3 and accepting PUT to /up/. */
int start_nginx(const struct opts *o, struct server_proc *out);
void stop_server(struct server_proc *p);
/* SIGKILLs every server still running (at exit, and from the signal handler). */
void kill_servers(void);
/* The servers started from now on run without the sanitizers' leak check (in such builds). */
void servers_without_leak_check(void);

double proc_cpu_s(pid_t pid); /* user + system seconds */
/* Waits (at most max_s) until pid used under 10% of a core over half a second; the wait. */
double wait_idle(pid_t pid, double max_s);
double proc_tree_cpu_s(pid_t pid);             /* the same with its children's, live and reaped */
double proc_rss_kib(pid_t pid);                /* resident set size */
uint64_t proc_write_bytes(pid_t pid);          /* bytes sent to storage */
long proc_fsyncs(const struct server_proc *p); /* -1 if not counted */
void pin_to_cpu(int cpu);
/* Makes a directory under o->tmp; the path goes to out. */
void scratch_dir(const struct opts *o, const char *name, char *out, size_t len);

#endif
