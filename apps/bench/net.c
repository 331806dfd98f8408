/*
 * The server benchmarks, B2-B6 (bench/README.md). Each starts its servers
 * pinned to the server core, drives them from this process on the loader
 * core, reads the servers' CPU time, memory and storage writes from /proc,
 * and stops them. Peers (Mosquitto, nginx) are measured in the same run with
 * the same load generator, alternating with missived run by run.
 */
#define _GNU_SOURCE
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "bench.h"
#include "load.h"
#include "crypto/internal.h"
#include "missive/util.h"

/* ---- shared ------------------------------------------------------------------------------ */

struct snap {
    double t, cpu;
    uint64_t delivered, accepted, lookups, wbytes;
    long fsyncs;
};

static void take_snap(const struct load *L, const struct server_proc *p, struct snap *s)
{
    s->t = now_s();
    s->cpu = proc_cpu_s(p->pid);
    s->delivered = L->delivered;
    s->accepted = L->accepted;
    s->lookups = L->lookups_done;
    s->wbytes = proc_write_bytes(p->pid);
    s->fsyncs = proc_fsyncs(p);
}

static int net_runs(const struct opts *o)
{
    return o->quick ? 1 : (o->runs < 3 ? o->runs : 3);
}

/* The key every bench device signs with, and its public encoding. */
static struct msv_identity *bench_key(const uint8_t **pub, size_t *pub_len)
{
    static struct msv_identity *key;

    if (key == NULL && msv_identity_generate(MSV_SUITE_MODERN, 0, &key) != MSV_OK)
        die("cannot make a device key");
    *pub = msv_public_identity_bytes(msv_identity_public(key), pub_len);
    return key;
}

static void start_seeded(const struct opts *o, const struct seed *s, int count_fsyncs,
                         struct server_proc *p)
{
    const uint8_t *pub;
    size_t pub_len;

    bench_key(&pub, &pub_len);
    start_missived(o, s, pub, pub_len, count_fsyncs, p);
}

static void init_load(struct load *L, const struct server_proc *p)
{
    const uint8_t *pub;
    size_t pub_len;

    load_init(L, p->port, bench_key(&pub, &pub_len));
}

/* A Missive device connection: account a's device k. */
static void as_device(struct lconn *c, const struct seed *s, size_t a, size_t k)
{
    c->proto = LP_MISSIVE;
    seed_handle(a, c->handle);
    c->device_id = seed_device_id(s, a, k);
}

/* A target addressing every device of the accounts in list, except skip_device. */
static void make_target(struct target *t, const struct seed *s, const size_t *list, size_t n,
                        uint64_t skip_device)
{
    size_t devs = 0;

    memset(t, 0, sizeof(*t));
    for (size_t i = 0; i < n; i++)
        devs += seed_device_count(s, list[i]);
    t->handles = calloc(n, sizeof(*t->handles));
    t->devices = calloc(devs ? devs : 1, sizeof(*t->devices));
    if (t->handles == NULL || t->devices == NULL)
        die("out of memory");
    t->n_handles = n;
    for (size_t i = 0; i < n; i++) {
        seed_handle(list[i], t->handles[i]);
        for (size_t k = 0; k < seed_device_count(s, list[i]); k++) {
            uint64_t d = seed_device_id(s, list[i], k);

            if (d != skip_device)
                t->devices[t->n_devices++] = d;
        }
    }
}

static void free_targets(struct target *t, size_t n)
{
    for (size_t i = 0; i < n && t != NULL; i++) {
        free(t[i].handles);
        free(t[i].devices);
    }
    free(t);
}

static void check_ready(struct load *L, size_t want, const char *what)
{
    if (L->ready < want)
        die("%s: only %zu of %zu connections came up (%zu failed); first error: %s", what, L->ready,
            want, L->failed, L->first_error[0] ? L->first_error : "none");
}

static uint64_t until_delivered_n;
static int until_delivered(struct load *L)
{
    return L->delivered >= until_delivered_n;
}
static int until_accepted(struct load *L)
{
    return L->accepted >= until_delivered_n;
}

/* Runs until n messages in all are delivered (or accepted), or the timeout. */
static void run_to(struct load *L, uint64_t n, int accepted, double timeout_s)
{
    until_delivered_n = n;
    L->until = accepted ? until_accepted : until_delivered;
    load_run(L, timeout_s);
    L->until = NULL;
}

static double per(double num, double den)
{
    return den > 0 ? num / den : 0;
}

/* ---- B2: relay --------------------------------------------------------------------------- */

struct relay_res {
    double rate, cpu_max_us, cpu_half_us, p50, p99, p999, busy;
};

/* Devices in pairs (i, i^1), each sending to its partner. */
static struct target *pair_up(struct load *L, enum lproto proto, const struct seed *s, size_t n)
{
    struct target *t = calloc(n, sizeof(*t));
    struct lconn *c = load_alloc(L, n);

    if (t == NULL)
        die("out of memory");
    for (size_t i = 0; i < n; i++) {
        size_t partner = i ^ 1;

        if (proto == LP_MISSIVE) {
            as_device(&c[i], s, i, 0);
            make_target(&t[i], s, &partner, 1, 0);
        } else if (proto == LP_XMPP) {
            c[i].proto = LP_XMPP;
            snprintf(c[i].topic_in, sizeof(c[i].topic_in), "u%zu", i);
            snprintf(t[i].topic, sizeof(t[i].topic), "u%zu@bench", partner);
        } else {
            c[i].proto = LP_MQTT;
            snprintf(c[i].topic_in, sizeof(c[i].topic_in), "d/%zu", i);
            snprintf(t[i].topic, sizeof(t[i].topic), "d/%zu", partner);
        }
        c[i].to = &t[i];
    }
    return t;
}

/*
 * B2's phases on n connections in pairs: made here, or (up not NULL) already made with pair_up()
 * and connected, their targets up (freed here either way).
 */
static void relay_on(const struct opts *o, struct load *L, const struct server_proc *p,
                     enum lproto proto, const struct seed *s, size_t n, struct relay_res *r,
                     struct target *up)
{
    double warm = o->quick ? 0.2 : 1.0;
    struct snap a, b;
    struct target *t = up;

    L->port = p->port;
    L->peer_name = p->name;
    if (t == NULL) {
        L->first_error[0] = '\0';
        t = pair_up(L, proto, s, n);
        load_connect(L, 900);
        check_ready(L, n, p->name);
    }
    /* the most it delivers: one send in flight on every connection */
    L->window = 1;
    L->closed_loop = 1;
    load_kick(L);
    load_run(L, warm);
    take_snap(L, p, &a);
    load_run(L, o->window);
    take_snap(L, p, &b);
    r->rate = per((double)(b.delivered - a.delivered), b.t - a.t);
    r->cpu_max_us = per((b.cpu - a.cpu) * 1e6, (double)(b.delivered - a.delivered));
    r->busy = per(b.cpu - a.cpu, b.t - a.t);
    /* latency at half that rate, sent at a steady pace */
    L->closed_loop = 0;
    load_run(L, warm / 2);
    L->rate = r->rate / 2;
    L->rate_due = 0;
    load_run(L, warm / 2);
    L->lat_n = 0;
    L->record = 1;
    take_snap(L, p, &a);
    load_run(L, o->window);
    take_snap(L, p, &b);
    L->record = 0;
    L->rate = 0;
    r->cpu_half_us = per((b.cpu - a.cpu) * 1e6, (double)(b.delivered - a.delivered));
    load_sort_latencies(L);
    r->p50 = quantile_sorted(L->lat, L->lat_n, 0.5);
    r->p99 = quantile_sorted(L->lat, L->lat_n, 0.99);
    r->p999 = quantile_sorted(L->lat, L->lat_n, 0.999);
    load_run(L, warm / 2);
    if (L->lost > 0)
        die("%s: %zu connections were lost under load; first error: %s", p->name, L->lost,
            L->first_error);
    load_close(L);
    free_targets(t, n);
}

static void relay_phase(const struct opts *o, struct load *L, const struct server_proc *p,
                        enum lproto proto, const struct seed *s, size_t n, struct relay_res *r)
{
    relay_on(o, L, p, proto, s, n, r, NULL);
}

/* The median of one double field (at off) of n records of size bytes each. */
static double med_field(const void *v, size_t size, int n, size_t off)
{
    double x[32];

    for (int i = 0; i < n; i++)
        memcpy(&x[i], (const char *)v + (size_t)i * size + off, sizeof(x[i]));
    return median(x, n);
}

#define MED(v, n, field) med_field(v, sizeof(*(v)), n, offsetof(struct relay_res, field))

int bench_relay(const struct opts *o, FILE *out)
{
    const size_t full[] = {1000, 10000}, quick[] = {100};
    const size_t *sizes = o->connections ? &o->connections : o->quick ? quick : full;
    size_t n_sizes = o->connections || o->quick ? 1 : 2;
    int runs = net_runs(o);

    fprintf(out, "### B2: relay, one to one, 256 B messages\n\n"
                 "| connections | server | delivered msg/s | server CPU µs/msg (full load) | "
                 "server core busy | server CPU µs/msg (50%% load) | p50 ms | p99 ms | "
                 "p99.9 ms |\n|---|---|---|---|---|---|---|---|---|\n");
    for (size_t si = 0; si < n_sizes; si++) {
        size_t n = sizes[si];
        struct seed s = {.accounts = n};
        struct server_proc mv, mq;
        struct relay_res rm[32], rq[32];
        struct load L;
        int have_mq;

        start_seeded(o, &s, 0, &mv);
        have_mq = start_mosquitto(o, &mq) == 0;
        init_load(&L, &mv);
        for (int r = 0; r < runs; r++) {
            /* alternate which system goes first */
            if (r % 2 == 0 || !have_mq)
                relay_phase(o, &L, &mv, LP_MISSIVE, &s, n, &rm[r]);
            if (have_mq)
                relay_phase(o, &L, &mq, LP_MQTT, &s, n, &rq[r]);
            if (r % 2 == 1 && have_mq)
                relay_phase(o, &L, &mv, LP_MISSIVE, &s, n, &rm[r]);
        }
        load_free(&L);
        stop_server(&mv);
        stop_server(&mq);
        fprintf(out, "| %zu | missived | %.0f | %.1f | %.0f%% | %.1f | %.2f | %.2f | %.2f |\n", n,
                MED(rm, runs, rate), MED(rm, runs, cpu_max_us), 100 * MED(rm, runs, busy),
                MED(rm, runs, cpu_half_us), MED(rm, runs, p50), MED(rm, runs, p99),
                MED(rm, runs, p999));
        if (have_mq) {
            fprintf(out, "| %zu | mosquitto | %.0f | %.1f | %.0f%% | %.1f | %.2f | %.2f | %.2f |\n",
                    n, MED(rq, runs, rate), MED(rq, runs, cpu_max_us), 100 * MED(rq, runs, busy),
                    MED(rq, runs, cpu_half_us), MED(rq, runs, p50), MED(rq, runs, p99),
                    MED(rq, runs, p999));
            fprintf(out,
                    "| %zu | **ratio** missived / mosquitto | %.2f | **%.2f** | | %.2f | | | |\n",
                    n, per(MED(rm, runs, rate), MED(rq, runs, rate)),
                    per(MED(rm, runs, cpu_max_us), MED(rq, runs, cpu_max_us)),
                    per(MED(rm, runs, cpu_half_us), MED(rq, runs, cpu_half_us)));
        } else {
            fprintf(out, "| %zu | mosquitto | not installed: no comparison | | | | | | |\n", n);
        }
        fflush(out);
    }
    fprintf(out, "\nmissived commits every envelope durably (SQLite WAL, synchronous=FULL) before "
                 "it acknowledges the send, and deletes it on the device's acknowledgement; "
                 "Mosquitto keeps QoS 1 messages in memory (persistence off). Goal: missived's "
                 "server CPU per message at most Mosquitto's (ratio <= 1).\n\n");
    return 0;
}

/* ---- B3: fan-out ------------------------------------------------------------------------- */

static void mls_fanout(const struct opts *o, FILE *out, double group_cost);

/* One window of the senders set on L's connections: server CPU per delivered copy, sends
 * taken a second and (copies, if not NULL) copies delivered a second; then, sending stopped,
 * drain_s for the last copies to be delivered. */
static void measure_copies(const struct opts *o, struct load *L, const struct server_proc *p,
                           double drain_s, double *cost, double *rate, double *copies)
{
    struct snap x, y;
    uint64_t sends0;

    L->closed_loop = 1;
    load_kick(L);
    load_run(L, o->quick ? 0.2 : 0.5);
    take_snap(L, p, &x);
    sends0 = L->accepted;
    load_run(L, o->window);
    take_snap(L, p, &y);
    L->closed_loop = 0;
    load_run(L, drain_s);
    *cost = per((y.cpu - x.cpu) * 1e6, (double)(y.delivered - x.delivered));
    *rate = per((double)(L->accepted - sends0), y.t - x.t);
    if (copies != NULL)
        *copies = per((double)(y.delivered - x.delivered), y.t - x.t);
}

#define FAN_SENDERS 8
#define GROUP_USERS 32
#define GROUP_DEVICES 3
#define GROUP_SENDERS 4

int bench_fanout(const struct opts *o, FILE *out)
{
    static const size_t ks[] = {1, 2, 5, 10};
    const size_t n_k = sizeof(ks) / sizeof(ks[0]);
    /* accounts: per k, FAN_SENDERS senders then FAN_SENDERS recipients of k devices; then a group
     */
    size_t accounts = n_k * 2 * FAN_SENDERS + GROUP_USERS, a = 0, n_conns = 0, ci = 0;
    size_t *devices = calloc(accounts, sizeof(*devices)), group0;
    struct target *t;
    struct server_proc mv;
    struct seed s;
    struct lconn *c;
    struct load L;
    double cost[5][32] = {{0}}, rate[5][32] = {{0}};
    int runs = net_runs(o);

    if (devices == NULL)
        die("out of memory");
    for (size_t k = 0; k < n_k; k++) {
        for (size_t i = 0; i < FAN_SENDERS; i++)
            devices[a++] = 1;
        for (size_t i = 0; i < FAN_SENDERS; i++)
            devices[a++] = ks[k];
    }
    group0 = a;
    for (size_t i = 0; i < GROUP_USERS; i++)
        devices[a++] = GROUP_DEVICES;
    s = (struct seed){.accounts = accounts, .devices = devices};
    for (size_t i = 0; i < accounts; i++)
        n_conns += devices[i];
    start_seeded(o, &s, 0, &mv);
    init_load(&L, &mv);
    t = calloc(accounts, sizeof(*t));
    c = load_alloc(&L, n_conns);
    if (t == NULL)
        die("out of memory");
    /* every device connected; senders' targets set, used one scenario at a time */
    for (size_t acc = 0; acc < accounts; acc++) {
        for (size_t k = 0; k < devices[acc]; k++)
            as_device(&c[ci++], &s, acc, k);
    }
    for (size_t k = 0; k < n_k; k++) {
        for (size_t i = 0; i < FAN_SENDERS; i++) {
            size_t sender = k * 2 * FAN_SENDERS + i, rcpt = sender + FAN_SENDERS;

            make_target(&t[sender], &s, &rcpt, 1, 0);
        }
    }
    {
        size_t members[GROUP_USERS];

        for (size_t i = 0; i < GROUP_USERS; i++)
            members[i] = group0 + i;
        for (size_t i = 0; i < GROUP_SENDERS; i++)
            make_target(&t[group0 + i], &s, members, GROUP_USERS,
                        seed_device_id(&s, group0 + i, 0));
    }
    load_connect(&L, 120);
    check_ready(&L, n_conns, "missived");
    L.window = 4;
    for (int r = 0; r < runs; r++) {
        for (size_t sc = 0; sc <= n_k; sc++) {
            size_t first = sc < n_k ? sc * 2 * FAN_SENDERS : group0;
            size_t count = sc < n_k ? FAN_SENDERS : GROUP_SENDERS;
            /* the scenario's senders: the first device of each sending account */
            for (size_t i = 0; i < n_conns; i++)
                c[i].to = NULL;
            for (size_t i = 0; i < count; i++) {
                uint64_t dev = seed_device_id(&s, first + i, 0);

                c[dev - 1].to = &t[first + i];
            }
            measure_copies(o, &L, &mv, o->quick ? 0.2 : 0.5, &cost[sc][r], &rate[sc][r], NULL);
        }
    }
    if (L.lost > 0)
        die("missived: connections were lost; first error: %s", L.first_error);
    fprintf(out, "### B3: fan-out, 256 B messages\n\n"
                 "| one send to | sends/s | device copies/s | server CPU µs per copy | "
                 "vs. one copy |\n|---|---|---|---|---|\n");
    {
        double base = median(cost[0], runs);

        for (size_t sc = 0; sc <= n_k; sc++) {
            size_t copies = sc < n_k ? ks[sc] : GROUP_USERS * GROUP_DEVICES - 1;
            double cst = median(cost[sc], runs), rt = median(rate[sc], runs);

            if (sc < n_k)
                fprintf(out, "| %zu device%s | %.0f | %.0f | %.1f | %.2f |\n", ks[sc],
                        ks[sc] == 1 ? "" : "s", rt, rt * (double)copies, cst, per(cst, base));
            else
                fprintf(out,
                        "| a group of %d users x %d devices (%zu copies) | %.0f | %.0f | %.1f | "
                        "%.2f |\n",
                        GROUP_USERS, GROUP_DEVICES, copies, rt, rt * (double)copies, cst,
                        per(cst, base));
        }
    }
    fprintf(out,
            "\nServer CPU per device copy includes accepting the send, committing each "
            "copy, pushing it and deleting it on acknowledgement; %d senders with 4 sends "
            "in flight each (%d for the group).\n\n",
            FAN_SENDERS, GROUP_SENDERS);
    load_free(&L);
    stop_server(&mv);
    free_targets(t, accounts);
    free(devices);
    mls_fanout(o, out, median(cost[n_k], runs));
    return 0;
}

/*
 * Raises this process's open-file limit to its hard limit (the servers it starts inherit it;
 * each connection is one descriptor on each side) and returns how many connections fit.
 */
static size_t raise_open_files(struct rlimit *rl)
{
    getrlimit(RLIMIT_NOFILE, rl);
    rl->rlim_cur = rl->rlim_max;
    setrlimit(RLIMIT_NOFILE, rl);
    return rl->rlim_cur > 1000 ? (size_t)rl->rlim_cur - 1000 : 0;
}

/* The note under a table whose run stopped at the open-file limit. */
static void open_file_note(FILE *out, size_t wanted, const struct rlimit *rl, size_t ran)
{
    fprintf(out,
            "\n%zu connections need that many open files in each process; this "
            "machine's hard limit is %llu, so the run stopped at %zu.\n",
            wanted, (unsigned long long)rl->rlim_max, ran);
}

/* ---- B3 (MLS relay): one upload, copied by the delivery service --------------------------- */

#define MLS_MESSAGE_LEN 391 /* a PrivateMessage carrying 256 bytes (B3 MLS, suite 1) */
#define MLS_SENDERS 4
#define MLS_GROUPS_MAX 4

/* The bytes of the frames that carry one message to n - 1 other devices of one device each:
 * as one MLS application message, or sealed per device (a send holds at most 256 handles,
 * each copy as long as the MLS message). */
static void upload_bytes(size_t n, size_t *mls, size_t *per_device)
{
    static uint8_t body[MLS_MESSAGE_LEN], gid[16];
    Msv__Wire__Frame f = MSV__WIRE__FRAME__INIT;
    Msv__Wire__MlsSend m = MSV__WIRE__MLS_SEND__INIT;
    Msv__Wire__SendRequest q = MSV__WIRE__SEND_REQUEST__INIT;
    Msv__Wire__Envelope env[256], *envp[256];
    ProtobufCBinaryData handles[256];
    uint8_t id[16] = {0};
    char handle[32];

    m.group_id = (ProtobufCBinaryData){sizeof(gid), gid};
    m.kind = MSV__WIRE__MLS_KIND__MLS_KIND_APPLICATION;
    m.message = (ProtobufCBinaryData){sizeof(body), body};
    f.request_id = 1u << 20;
    f.body_case = MSV__WIRE__FRAME__BODY_MLS_SEND;
    f.mls_send = &m;
    *mls = MSV_FRAME_HEADER_LEN + msv__wire__frame__get_packed_size(&f);
    seed_handle(n, handle); /* handles as long as the group's last one */
    *per_device = 0;
    for (size_t left = n - 1; left > 0;) {
        size_t k = left < 256 ? left : 256;

        for (size_t i = 0; i < k; i++) {
            msv__wire__envelope__init(&env[i]);
            env[i].recipient_device = (uint64_t)n;
            env[i].suite = MSV_SUITE_MODERN;
            env[i].ciphertext = (ProtobufCBinaryData){sizeof(body), body};
            envp[i] = &env[i];
            handles[i] = (ProtobufCBinaryData){strlen(handle), (uint8_t *)handle};
        }
        q.message_id = (ProtobufCBinaryData){sizeof(id), id};
        q.n_recipient_handles = k;
        q.recipient_handles = handles;
        q.n_envelopes = k;
        q.envelopes = envp;
        f.body_case = MSV__WIRE__FRAME__BODY_SEND;
        f.send = &q;
        *per_device += MSV_FRAME_HEADER_LEN + msv__wire__frame__get_packed_size(&f);
        left -= k;
    }
}

/*
 * B3 extended to MLS groups: groups of N devices (one device per account), every device
 * connected; MLS_SENDERS members each keep one application message in flight to their group
 * (opaque bytes: the delivery service never reads them), and missived copies each to the
 * other N - 1 devices, which acknowledge them. Server CPU per delivered copy, beside the
 * per-device fan-out of B3's group above (group_cost) and the bytes each way uploads.
 */
static void mls_fanout(const struct opts *o, FILE *out, double group_cost)
{
    const size_t full[] = {10, 100, 1000, 5000}, quick[] = {10, 100};
    const size_t *sizes = o->quick ? quick : full;
    size_t n_sizes = o->quick ? 2 : 4, accounts = 0, n_conns;
    struct seed_mls groups[MLS_GROUPS_MAX];
    struct target t[MLS_GROUPS_MAX];
    double cost[MLS_GROUPS_MAX][32] = {{0}}, rate[MLS_GROUPS_MAX][32] = {{0}};
    double copies[MLS_GROUPS_MAX][32] = {{0}};
    struct server_proc mv;
    struct rlimit rl;
    struct seed s;
    struct lconn *c;
    struct load L;
    int runs = net_runs(o);

    for (size_t g = 0; g < n_sizes; g++) {
        memset(groups[g].id, 0, sizeof(groups[g].id));
        memcpy(groups[g].id, "bench-mls-group", 15);
        groups[g].id[15] = (uint8_t)g;
        groups[g].first = (uint64_t)accounts + 1; /* one device each: device id = account + 1 */
        groups[g].n = sizes[g];
        accounts += sizes[g];
    }
    n_conns = accounts;
    if (raise_open_files(&rl) < n_conns)
        die("B3 (MLS): %zu connections need more open files than this machine allows", n_conns);
    s = (struct seed){.accounts = accounts, .mls = groups, .n_mls = n_sizes};
    start_seeded(o, &s, 0, &mv);
    init_load(&L, &mv);
    c = load_alloc(&L, n_conns);
    for (size_t a = 0; a < accounts; a++)
        as_device(&c[a], &s, a, 0);
    for (size_t g = 0; g < n_sizes; g++)
        t[g] = (struct target){.mls_group = groups[g].id,
                               .mls_group_len = sizeof(groups[g].id),
                               .mls_len = MLS_MESSAGE_LEN};
    load_connect(&L, 300);
    check_ready(&L, n_conns, "missived");
    L.window = 1;
    for (int r = 0; r < runs; r++) {
        for (size_t g = 0; g < n_sizes; g++) {
            for (size_t i = 0; i < n_conns; i++)
                c[i].to = NULL;
            for (size_t i = 0; i < MLS_SENDERS; i++)
                c[groups[g].first - 1 + i].to = &t[g];
            measure_copies(o, &L, &mv, o->quick ? 0.5 : 2, &cost[g][r], &rate[g][r], &copies[g][r]);
            /* every copy of every send taken delivered before the next window, none refused */
            run_to(&L, L.mls_queued, 0, 120);
            if (L.delivered != L.mls_queued || L.errors > 0)
                die("B3 (MLS): %llu copies queued, %llu delivered, %llu errors (first: %s)",
                    (unsigned long long)L.mls_queued, (unsigned long long)L.delivered,
                    (unsigned long long)L.errors, L.first_error);
        }
    }
    if (L.lost > 0)
        die("missived: connections were lost; first error: %s", L.first_error);
    fprintf(out, "### B3 (MLS relay): one MLS application message to a group of N devices\n\n"
                 "| group of | messages/s | copies delivered/s | server CPU µs per delivered "
                 "copy | vs. per-device fan-out (B3's group above) | sender uploads, MLS | "
                 "sender uploads, per device |\n|---|---|---|---|---|---|---|\n");
    for (size_t g = 0; g < n_sizes; g++) {
        double cst = median(cost[g], runs), rt = median(rate[g], runs);
        size_t mls_b, dev_b;

        upload_bytes(sizes[g], &mls_b, &dev_b);
        fprintf(out, "| %zu devices | %.0f | %.0f | %.1f | %.2f | %zu B | %zu B |\n", sizes[g], rt,
                median(copies[g], runs), cst, per(cst, group_cost), mls_b, dev_b);
    }
    fprintf(out,
            "\nEvery device connected and acknowledging; %d members of the group each keep one "
            "message of %d bytes in flight; the delivery service stores its body once and "
            "queues a copy for each other member device in one transaction. Server CPU per "
            "delivered copy includes taking the send, the copies' commit, pushing each and "
            "deleting it on acknowledgement. Uploads: the frames one message takes, as one MLS "
            "message or sealed per device at the same size per copy (256 handles a send).\n\n",
            MLS_SENDERS, MLS_MESSAGE_LEN);
    load_free(&L);
    stop_server(&mv);
}

/* ---- B4: idle connections ---------------------------------------------------------------- */

static double idle_once(const struct opts *o, const struct server_proc *p, enum lproto proto,
                        const struct seed *s, size_t n)
{
    struct load L;
    struct lconn *c;
    double before, after;

    init_load(&L, p);
    L.port = p->port;
    L.sources = (unsigned)(n / 20000 + 1);
    load_run(&L, 0.3); /* the server settles after start-up */
    before = proc_rss_kib(p->pid);
    c = load_alloc(&L, n);
    for (size_t i = 0; i < n; i++) {
        if (proto == LP_MISSIVE) {
            as_device(&c[i], s, i, 0);
        } else {
            c[i].proto = LP_MQTT;
            snprintf(c[i].topic_in, sizeof(c[i].topic_in), "d/%zu", i);
        }
    }
    load_connect(&L, 600);
    check_ready(&L, n, p->name);
    load_run(&L, o->quick ? 0.3 : 2.0); /* settled: nothing in flight */
    after = proc_rss_kib(p->pid);
    load_free(&L);
    return per(after - before, (double)n);
}

int bench_idle(const struct opts *o, FILE *out)
{
    struct rlimit rl;
    size_t sizes[2] = {10000, 50000}, limit;
    int runs = net_runs(o);

    if (o->quick) {
        sizes[0] = 200;
        sizes[1] = 400;
    }
    limit = raise_open_files(&rl);
    fprintf(out, "### B4: idle TLS connections (authenticated, nothing in flight)\n\n"
                 "| connections | missived KiB/connection | mosquitto KiB/connection | goal |\n"
                 "|---|---|---|---|\n");
    for (int si = 0; si < 2; si++) {
        size_t n = sizes[si] < limit ? sizes[si] : limit;
        struct seed s = {.accounts = n};
        double vm[32], vq[32];
        struct server_proc mv, mq;
        int have_mq = 1;

        for (int r = 0; r < runs; r++) {
            start_seeded(o, &s, 0, &mv);
            vm[r] = idle_once(o, &mv, LP_MISSIVE, &s, n);
            stop_server(&mv);
            if (have_mq && (have_mq = start_mosquitto(o, &mq) == 0)) {
                vq[r] = idle_once(o, &mq, LP_MQTT, &s, n);
                stop_server(&mq);
            }
        }
        fprintf(out, "| %zu%s | %.1f | ", n, n < sizes[si] ? " (open-file limit)" : "",
                median(vm, runs));
        if (have_mq)
            fprintf(out, "%.1f", median(vq, runs));
        else
            fprintf(out, "not installed");
        fprintf(out, " | <= 20 |\n");
        fflush(out);
        if (n < sizes[si]) {
            open_file_note(out, sizes[si], &rl, n);
            break;
        }
    }
    fprintf(out, "\nResident memory of the server process with the connections open, less "
                 "before they opened, per connection; several 127.0.0.x source addresses.\n\n");
    return 0;
}

/* ---- B5: offline queue ------------------------------------------------------------------- */

struct queue_res {
    double in_rate, in_cpu, in_bytes, in_fsyncs, out_rate, out_cpu, out_bytes, out_fsyncs;
};

static void queue_once(const struct opts *o, size_t devs, size_t per_dev, size_t senders,
                       struct queue_res *r)
{
    struct seed s = {.accounts = devs + senders};
    uint64_t total = (uint64_t)devs * per_dev;
    struct target *t = calloc(devs, sizeof(*t));
    struct server_proc mv;
    struct snap a, b;
    struct lconn *c;
    struct load L;

    if (t == NULL)
        die("out of memory");
    start_seeded(o, &s, 1, &mv);
    init_load(&L, &mv);
    /* recipients are accounts 0..devs-1; sender i covers recipients i, i + senders, ... */
    for (size_t d = 0; d < devs; d++)
        make_target(&t[d], &s, &d, 1, 0);
    c = load_alloc(&L, senders);
    for (size_t i = 0; i < senders; i++)
        as_device(&c[i], &s, devs + i, 0);
    load_connect(&L, 120);
    check_ready(&L, senders, "missived");
    /* each sender walks over its recipients per_dev times: sends go to every recipient in turn */
    {
        struct target *order = calloc(devs, sizeof(*order));
        size_t k = 0;

        if (order == NULL)
            die("out of memory");
        for (size_t i = 0; i < senders; i++) {
            c[i].to_list = &order[k];
            for (size_t d = i; d < devs; d += senders)
                order[k++] = t[d];
            c[i].to_n = (size_t)(&order[k] - c[i].to_list);
        }
        L.window = 8;
        L.send_limit = total;
        L.closed_loop = 1;
        take_snap(&L, &mv, &a);
        load_kick(&L);
        run_to(&L, total, 1, 600);
        take_snap(&L, &mv, &b);
        if (L.accepted < total)
            die("missived accepted %llu of %llu envelopes; first error: %s",
                (unsigned long long)L.accepted, (unsigned long long)total, L.first_error);
        free(order); /* shallow copies of t */
    }
    r->in_rate = per((double)total, b.t - a.t);
    r->in_cpu = per((b.cpu - a.cpu) * 1e6, (double)total);
    r->in_bytes = per((double)(b.wbytes - a.wbytes), (double)total);
    r->in_fsyncs = a.fsyncs < 0 ? -1 : per((double)(b.fsyncs - a.fsyncs), (double)total);
    /* everyone comes back */
    L.closed_loop = 0;
    c = load_alloc(&L, devs);
    for (size_t d = 0; d < devs; d++)
        as_device(&c[d], &s, d, 0);
    take_snap(&L, &mv, &a);
    run_to(&L, total, 0, 600);
    load_run(&L, 0.2); /* the last acknowledgements reach the server */
    take_snap(&L, &mv, &b);
    if (L.delivered < total)
        die("only %llu of %llu queued envelopes were delivered; first error: %s",
            (unsigned long long)L.delivered, (unsigned long long)total, L.first_error);
    r->out_rate = per((double)total, b.t - a.t);
    r->out_cpu = per((b.cpu - a.cpu) * 1e6, (double)total);
    r->out_bytes = per((double)(b.wbytes - a.wbytes), (double)total);
    r->out_fsyncs = a.fsyncs < 0 ? -1 : per((double)(b.fsyncs - a.fsyncs), (double)total);
    load_free(&L);
    stop_server(&mv);
    free_targets(t, devs);
}

int bench_queue(const struct opts *o, FILE *out)
{
    size_t devs = o->quick ? 20 : 1000, per_dev = o->quick ? 10 : 100, senders = o->quick ? 4 : 50;
    struct queue_res r[32];
    int runs = net_runs(o);
    double v[8][32];
    const char *names[8] = {"enqueue: envelopes/s",
                            "enqueue: server CPU µs/envelope",
                            "enqueue: bytes written/envelope",
                            "enqueue: fsyncs/envelope",
                            "drain: envelopes/s (from the first reconnect)",
                            "drain: server CPU µs/envelope",
                            "drain: bytes written/envelope",
                            "drain: fsyncs/envelope"};

    for (int i = 0; i < runs; i++) {
        queue_once(o, devs, per_dev, senders, &r[i]);
        v[0][i] = r[i].in_rate;
        v[1][i] = r[i].in_cpu;
        v[2][i] = r[i].in_bytes;
        v[3][i] = r[i].in_fsyncs;
        v[4][i] = r[i].out_rate;
        v[5][i] = r[i].out_cpu;
        v[6][i] = r[i].out_bytes;
        v[7][i] = r[i].out_fsyncs;
    }
    fprintf(out,
            "### B5: offline queue: %zu offline devices x %zu envelopes of 256 B, then all "
            "reconnect\n\n| measure | median |\n|---|---|\n",
            devs, per_dev);
    for (int k = 0; k < 8; k++) {
        double m = median(v[k], runs);

        if (m < 0)
            fprintf(out, "| %s | not counted (strace missing) |\n", names[k]);
        else
            fprintf(out, k == 3 || k == 7 ? "| %s | %.3f |\n" : "| %s | %.1f |\n", names[k], m);
    }
    fprintf(out,
            "\n%zu senders with 8 sends in flight each fill the queues; every device then "
            "connects and acknowledges in batches. Bytes are the server's writes to storage "
            "(/proc/PID/io write_bytes); fsyncs are counted with strace (only fsync and "
            "fdatasync are traced).\n\n",
            senders);
    return 0;
}

/* ---- B6: directory lookups and attachments ------------------------------------------------ */

static int job_finished(struct load *L)
{
    return L->c[0].job->done || L->c[0].state == CS_CLOSED;
}

static double transfer(struct load *L, const struct server_proc *p, struct job *j, int http,
                       double *cpu_s)
{
    struct lconn *c;
    double t0, c0;

    L->port = p->port;
    L->first_error[0] = '\0';
    c = load_alloc(L, 1);
    c->proto = http ? LP_HTTP : LP_MISSIVE;
    seed_handle(0, c->handle);
    c->device_id = 1;
    load_connect(L, 30);
    check_ready(L, 1, p->name);
    c->job = j;
    t0 = now_s();
    c0 = proc_cpu_s(p->pid);
    if (http)
        http_start(c);
    else
        blob_start(c);
    L->until = job_finished;
    load_run(L, 600);
    L->until = NULL;
    if (!j->done || j->failed)
        die("%s: the %s of %zu bytes failed; first error: %s", p->name,
            j->upload ? "upload" : "download", j->size, L->first_error);
    *cpu_s = proc_cpu_s(p->pid) - c0;
    t0 = now_s() - t0;
    load_close(L);
    return per((double)j->size / 1048576.0, t0);
}

int bench_storage(const struct opts *o, FILE *out)
{
    size_t accounts = o->quick ? 200 : 10000, conns = o->quick ? 10 : 100;
    size_t size = o->quick ? (size_t)1 << 20 : (size_t)64 << 20;
    struct seed s = {.accounts = accounts};
    struct server_proc mv, ng;
    double lk[32], lkcpu[32], up[2][32], down[2][32], upc[2][32], downc[2][32];
    int runs = net_runs(o), have_ng;
    double start_s, idle_s;
    uint8_t *data = malloc(size);
    struct load L;

    if (data == NULL)
        die("out of memory");
    msv_random_bytes(data, size);
    start_s = now_s();
    start_seeded(o, &s, 0, &mv);                /* one log entry per account */
    start_s = now_s() - start_s - bench_seed_s; /* missived's start, not the seeding */
    /* lookups are measured once the key directory's proofs of the log read at start are made */
    idle_s = wait_idle(mv.pid, 300);
    have_ng = start_nginx(o, &ng) == 0;
    if (have_ng) {
        char path[400];
        FILE *f;

        snprintf(path, sizeof(path), "%s/www/file.bin", ng.dir);
        f = fopen(path, "wb");
        if (f == NULL || fwrite(data, 1, size, f) != size || fclose(f) != 0)
            die("cannot write %s", path);
    }
    init_load(&L, &mv);
    for (int r = 0; r < runs; r++) {
        struct snap a, b;
        struct lconn *c;
        struct job ju = {.upload = 1, .data = data, .size = size, .chunk_max = 256 * 1024};
        struct job jd = {.upload = 0, .data = data, .size = size, .chunk_max = 256 * 1024};
        struct job hu = {.upload = 1, .data = data, .size = size, .path = "/up/file.bin"};
        struct job hd = {.upload = 0, .data = data, .size = size, .path = "/file.bin"};

        /* lookups: each connection asks for one random handle at a time, 4 in flight */
        L.port = mv.port;
        c = load_alloc(&L, conns);
        for (size_t i = 0; i < conns; i++) {
            as_device(&c[i], &s, i, 0);
            c[i].lookups = 1;
        }
        L.lookup_space = accounts;
        load_connect(&L, 60);
        check_ready(&L, conns, "missived");
        L.window = 4;
        L.closed_loop = 1;
        load_kick(&L);
        load_run(&L, o->quick ? 0.2 : 0.5);
        take_snap(&L, &mv, &a);
        load_run(&L, o->window);
        take_snap(&L, &mv, &b);
        L.closed_loop = 0;
        load_run(&L, 0.2);
        lk[r] = per((double)(b.lookups - a.lookups), b.t - a.t);
        lkcpu[r] = per((b.cpu - a.cpu) * 1e6, (double)(b.lookups - a.lookups));
        load_close(&L);
        /* attachments, alternating which server goes first */
        if (msv_sha256(data, size, ju.sha256) != MSV_OK)
            die("sha256");
        for (int k = 0; k < 2; k++) {
            int http = (k + r) % 2 == 1;

            if (http && !have_ng)
                continue;
            if (http) {
                up[1][r] = transfer(&L, &ng, &hu, 1, &upc[1][r]);
                down[1][r] = transfer(&L, &ng, &hd, 1, &downc[1][r]);
            } else {
                up[0][r] = transfer(&L, &mv, &ju, 0, &upc[0][r]);
                memcpy(jd.blob_id, ju.blob_id, 32);
                down[0][r] = transfer(&L, &mv, &jd, 0, &downc[0][r]);
            }
        }
    }
    load_free(&L);
    stop_server(&mv);
    stop_server(&ng);
    free(data);
    fprintf(out,
            "### B6: directory lookups and attachments\n\n"
            "| measure | missived | nginx | ratio |\n|---|---|---|---|\n"
            "| lookups/s (%zu connections, %zu accounts) | %.0f | | |\n"
            "| server CPU µs/lookup | %.1f | | |\n"
            "| start until serving (%zu log entries, labels stored), s | %.2f | | |\n"
            "| then until idle (proofs made in the background), s | %.2f | | |\n",
            conns, accounts, median(lk, runs), median(lkcpu, runs), accounts, start_s, idle_s);
    {
        const char *what[2] = {"upload", "download"};
        double(*mbs[2])[32] = {up, down}, (*cpu[2])[32] = {upc, downc};

        for (int k = 0; k < 2; k++) {
            double m = median(mbs[k][0], runs), mc = median(cpu[k][0], runs);

            if (have_ng) {
                double n = median(mbs[k][1], runs), nc = median(cpu[k][1], runs);

                fprintf(out, "| %s %zu MiB, MB/s | %.0f | %.0f | %.2f |\n", what[k], size >> 20, m,
                        n, per(m, n));
                fprintf(out, "| %s: server CPU s | %.3f | %.3f | %.2f |\n", what[k], mc, nc,
                        per(mc, nc));
            } else {
                fprintf(out, "| %s %zu MiB, MB/s | %.0f | not installed | |\n", what[k], size >> 20,
                        m);
            }
        }
    }
    fprintf(out, "\nAttachments: one connection; missived takes 256 KiB chunks with 4 in "
                 "flight, checks the SHA-256 before publishing, and serves 256 KiB ranges; "
                 "nginx takes a PUT (DAV module) and serves the same file with a GET. MB/s is "
                 "MiB per second of wall time.\n\n");
    return 0;
}

/* ---- B8: the XMPP servers --------------------------------------------------------------- */

#define B8_SYSTEMS 4
#define B8_WARM 100 /* connections opened and closed before memory is measured */

struct b8_sys {
    const char *name;
    enum lproto proto;
    struct server_proc p;
    int have;
    double idle_kib;
    struct relay_res r[32];
};

/* Connects n devices in pairs, as B2 does, and closes them: for an XMPP server, registers them. */
static void b8_accounts(struct load *L, struct b8_sys *x, const struct seed *s, size_t n)
{
    struct target *t;

    L->port = x->p.port;
    L->first_error[0] = '\0';
    L->peer_name = x->name;
    t = pair_up(L, x->proto, s, n);
    load_connect(L, 900);
    check_ready(L, n, x->name);
    load_run(L, 0.2);
    load_close(L);
    free_targets(t, n);
}

/*
 * Resident memory per connection: n idle connections, authenticated, on a server just started
 * that has served B8_WARM connections. The connections stay open for the first run's phases
 * (setting up thousands of XMPP sessions takes minutes); their targets are returned.
 */
static struct target *b8_idle(const struct opts *o, struct load *L, struct b8_sys *x,
                              const struct seed *s, size_t n)
{
    double before, after;
    struct target *t;

    /* a few connections first, closed again: what a server sets up once (code loaded on
     * first use, caches, pools) is not counted per connection */
    b8_accounts(L, x, s, n < B8_WARM ? n : B8_WARM);
    load_run(L, o->quick ? 0.3 : 2.0); /* the server settles */
    before = proc_rss_kib(x->p.pid);
    t = pair_up(L, x->proto, s, n);
    load_connect(L, 900);
    check_ready(L, n, x->name);
    load_run(L, o->quick ? 0.3 : 2.0); /* settled: nothing in flight */
    after = proc_rss_kib(x->p.pid);
    x->idle_kib = per(after - before, (double)n);
    return t;
}

#define XMED(x, n, field) med_field((x)->r, sizeof((x)->r[0]), n, offsetof(struct relay_res, field))

int bench_xmpp(const struct opts *o, FILE *out)
{
    const size_t full[] = {1000, 10000}, quick[] = {10};
    const size_t *sizes = o->connections ? &o->connections : o->quick ? quick : full;
    size_t n_sizes = o->connections || o->quick ? 1 : 2;
    int runs = net_runs(o);
    struct rlimit rl;
    size_t limit;

    limit = raise_open_files(&rl);
    fprintf(out, "### B8: the XMPP servers, one to one, 256 B messages\n\n"
                 "| connections | server | delivered msg/s | server CPU µs/msg (full load) | "
                 "server core busy | server CPU µs/msg (50%% load) | p50 ms | p99 ms | "
                 "KiB per idle connection |\n|---|---|---|---|---|---|---|---|---|\n");
    for (size_t si = 0; si < n_sizes; si++) {
        size_t n = sizes[si] < limit ? sizes[si] : limit;
        struct seed s = {.accounts = n};
        struct b8_sys sys[B8_SYSTEMS] = {{.name = "missived", .proto = LP_MISSIVE},
                                         {.name = "mosquitto", .proto = LP_MQTT},
                                         {.name = "ejabberd", .proto = LP_XMPP},
                                         {.name = "prosody", .proto = LP_XMPP}};
        const struct b8_sys *best = NULL;
        struct load L;

        start_seeded(o, &s, 0, &sys[0].p);
        sys[0].have = 1;
        sys[1].have = start_mosquitto(o, &sys[1].p) == 0;
        init_load(&L, &sys[0].p);
        for (int k = 2; k < B8_SYSTEMS; k++) {
            /* accounts registered in-band, then a fresh start that only reads them */
            sys[k].have = start_xmpp(o, sys[k].name, 0, &sys[k].p) == 0;
            if (!sys[k].have)
                continue;
            b8_accounts(&L, &sys[k], &s, n);
            stop_server(&sys[k].p);
            start_xmpp(o, sys[k].name, 1, &sys[k].p);
        }
        for (int r = 0; r < runs; r++) {
            /* each run starts with the next system; the first measures memory first */
            for (int j = 0; j < B8_SYSTEMS; j++) {
                struct b8_sys *x = &sys[(j + r) % B8_SYSTEMS];

                if (!x->have)
                    continue;
                relay_on(o, &L, &x->p, x->proto, &s, n, &x->r[r],
                         r == 0 ? b8_idle(o, &L, x, &s, n) : NULL);
                if (x->r[r].rate <= 0 || L.lat_n == 0)
                    die("%s delivered no message; first error: %s", x->name,
                        L.first_error[0] ? L.first_error : "none");
            }
        }
        load_free(&L);
        for (int k = 0; k < B8_SYSTEMS; k++) {
            struct b8_sys *x = &sys[k];

            if (!x->have) {
                fprintf(out, "| %zu | %s | not installed: no comparison | | | | | | |\n", n,
                        x->name);
                continue;
            }
            stop_server(&x->p);
            fprintf(out, "| %zu%s | %s | %.0f | %.1f | %.0f%% | %.1f | %.2f | %.2f | %.1f |\n", n,
                    n < sizes[si] ? " (open-file limit)" : "", x->name, XMED(x, runs, rate),
                    XMED(x, runs, cpu_max_us), 100 * XMED(x, runs, busy),
                    XMED(x, runs, cpu_half_us), XMED(x, runs, p50), XMED(x, runs, p99),
                    x->idle_kib);
            if (k >= 2 &&
                (best == NULL || XMED(x, runs, cpu_max_us) < XMED(best, runs, cpu_max_us)))
                best = x;
        }
        for (int k = 1; k < B8_SYSTEMS; k++) {
            const struct b8_sys *x = &sys[k];

            if (!x->have)
                continue;
            fprintf(out,
                    "| %zu | **ratio** missived / %s%s | %.2f | **%.2f** | | %.2f | %.2f | %.2f | "
                    "%.2f |\n",
                    n, x->name, x == best ? " (the better XMPP server)" : "",
                    per(XMED(&sys[0], runs, rate), XMED(x, runs, rate)),
                    per(XMED(&sys[0], runs, cpu_max_us), XMED(x, runs, cpu_max_us)),
                    per(XMED(&sys[0], runs, cpu_half_us), XMED(x, runs, cpu_half_us)),
                    per(XMED(&sys[0], runs, p50), XMED(x, runs, p50)),
                    per(XMED(&sys[0], runs, p99), XMED(x, runs, p99)),
                    per(sys[0].idle_kib, x->idle_kib));
        }
        fflush(out);
        if (n < sizes[si]) {
            open_file_note(out, sizes[si], &rl, n);
            break;
        }
    }
    fprintf(out,
            "\nThe same load as B2 for every server, one after another in each run (each run "
            "starts with the next): pairs of accounts, one send in flight per connection, then "
            "half that rate at a steady pace for the latencies. XMPP: direct TLS, SASL PLAIN, "
            "a bound resource, XEP-0198 enabled; each message is a chat message of a 256-byte "
            "body to the partner's bare JID followed by <r/>, and counts as accepted when the "
            "server's <a/> covers it; every delivery is acknowledged with <a/> when the server "
            "asks. Memory: resident memory of the server process with the connections open, less "
            "before, on a server just started that has served %d connections (the XMPP "
            "servers' accounts, registered in-band beforehand, already stored). Goal (issue 27): "
            "missived at most 0.5x the better XMPP "
            "server's CPU per message, and at most its memory per connection.\n\n",
            B8_WARM);
    return 0;
}

/* ---- B7: relay nodes on PostgreSQL and Redis --------------------------------------------------
 */

struct cluster_res {
    double rate, missived_us, pg_us, redis_us, total_us, p50, p99;
};

static double env_pid_cpu(const char *var)
{
    const char *v = getenv(var);
    long pid = v != NULL ? strtol(v, NULL, 10) : 0;

    return pid > 0 ? proc_tree_cpu_s((pid_t)pid) : 0;
}

/* Every server's CPU seconds: missived nodes, PostgreSQL (with its backends), Redis. */
static void cluster_cpu(const struct server_proc *nodes, int k, double out[3])
{
    out[0] = 0;
    for (int i = 0; i < k; i++)
        out[0] += proc_cpu_s(nodes[i].pid);
    out[1] = env_pid_cpu("MSV_SERVICES_PG_PID");
    out[2] = env_pid_cpu("MSV_SERVICES_REDIS_PID");
}

/* Pairs (i, i^1) as in B2, connection i on node i % k: with two or more nodes most sends cross. */
static void cluster_phase(const struct opts *o, struct load *L, const struct server_proc *nodes,
                          int k, const struct seed *s, size_t n, struct cluster_res *r)
{
    double warm = o->quick ? 0.3 : 1.5, cpu_a[3], cpu_b[3], t_a, t_b;
    uint64_t d_a, d_b;
    struct target *t;

    L->first_error[0] = '\0';
    t = pair_up(L, LP_MISSIVE, s, n);
    for (size_t i = 0; i < n; i++)
        L->c[i].port = nodes[i % (size_t)k].port;
    load_connect(L, 300);
    check_ready(L, n, "missived nodes");
    L->window = 1;
    L->closed_loop = 1;
    load_kick(L);
    load_run(L, warm);
    L->lat_n = 0;
    L->record = 1;
    cluster_cpu(nodes, k, cpu_a);
    t_a = now_s();
    d_a = L->delivered;
    load_run(L, o->window);
    cluster_cpu(nodes, k, cpu_b);
    t_b = now_s();
    d_b = L->delivered;
    L->record = 0;
    r->rate = per((double)(d_b - d_a), t_b - t_a);
    r->missived_us = per((cpu_b[0] - cpu_a[0]) * 1e6, (double)(d_b - d_a));
    r->pg_us = per((cpu_b[1] - cpu_a[1]) * 1e6, (double)(d_b - d_a));
    r->redis_us = per((cpu_b[2] - cpu_a[2]) * 1e6, (double)(d_b - d_a));
    r->total_us = r->missived_us + r->pg_us + r->redis_us;
    load_sort_latencies(L);
    r->p50 = quantile_sorted(L->lat, L->lat_n, 0.5);
    r->p99 = quantile_sorted(L->lat, L->lat_n, 0.99);
    /* what is in flight arrives before the connections close */
    L->closed_loop = 0;
    load_run(L, warm / 2);
    if (L->lost > 0)
        die("missived nodes: %zu connections were lost under load; first error: %s", L->lost,
            L->first_error);
    load_close(L);
    free_targets(t, n);
}

#define CMED(v, n, field) med_field(v, sizeof(*(v)), n, offsetof(struct cluster_res, field))

int bench_cluster(const struct opts *o, FILE *out)
{
    const char *pg = getenv("MSV_TEST_POSTGRES"), *redis = getenv("MSV_TEST_REDIS");
    size_t n = o->quick ? 100 : 1000;
    struct seed s = {.accounts = n};
    struct server_proc nodes[3];
    char shared[300];
    const uint8_t *pub;
    size_t pub_len;
    double one_node = 0;
    int runs = net_runs(o);

    fprintf(out, "### B7: relay nodes on PostgreSQL and Redis, one to one, 256 B messages\n\n");
    if (pg == NULL || redis == NULL) {
        fprintf(out, "Not run: B7 needs a PostgreSQL and a Redis; run it as "
                     "`scripts/services.sh --durable build/missive-bench cluster`.\n\n");
        return 0;
    }
    bench_key(&pub, &pub_len);
    scratch_dir(o, "shared", shared, sizeof(shared));
    seed_postgres(pg, shared, n, pub, pub_len);
    fprintf(out,
            "| nodes | connections | delivered msg/s | missived CPU µs/msg | PostgreSQL CPU "
            "µs/msg | Redis CPU µs/msg | all servers CPU µs/msg | CPU per msg vs 1 node | p50 ms "
            "| p99 ms |\n|---|---|---|---|---|---|---|---|---|---|\n");
    /* 1, 2 and 3 nodes of one worker, then one node of two workers */
    for (int row = 1; row <= 4; row++) {
        int k = row <= 3 ? row : 1;
        unsigned workers = row <= 3 ? 1 : 2;
        struct cluster_res r[32];
        struct load L;

        for (int i = 0; i < k; i++) {
            char name[16];

            snprintf(name, sizeof(name), "node%d", i + 1);
            start_missived_node(o, pg, redis, shared, name, workers, &nodes[i]);
        }
        init_load(&L, &nodes[0]);
        for (int run = 0; run < runs; run++)
            cluster_phase(o, &L, nodes, k, &s, n, &r[run]);
        load_free(&L);
        for (int i = 0; i < k; i++)
            stop_server(&nodes[i]);
        if (row == 1)
            one_node = CMED(r, runs, total_us);
        fprintf(out, "| %d%s | %zu | %.0f | %.1f | %.1f | %.1f | %.1f | %.2f | %.2f | %.2f |\n", k,
                workers > 1 ? " (2 workers)" : "", n, CMED(r, runs, rate),
                CMED(r, runs, missived_us), CMED(r, runs, pg_us), CMED(r, runs, redis_us),
                CMED(r, runs, total_us), per(CMED(r, runs, total_us), one_node), CMED(r, runs, p50),
                CMED(r, runs, p99));
        fflush(out);
    }
    fprintf(out,
            "\nEvery node runs one worker but in the last row (one node, two workers, the "
            "connections shared between them by the kernel); connection i talks to node i mod k "
            "and its partner "
            "i xor 1 to the next, so with two or three nodes nearly every message is queued by "
            "one node and pushed by another after a Redis wake-up. On a machine with fewer cores "
            "than servers the rate says little; the CPU per message says what a node costs. "
            "PostgreSQL runs with fsync on (`--durable`), as SQLite runs with synchronous=FULL "
            "in B2.\n\n");
    return 0;
}
