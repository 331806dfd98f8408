/*
 * missive-demo: a scripted conversation against a running missived, so that
 * a person can watch every step of Missive's data flow: registration,
 * directory lookup, per-device encryption, the offline queue, delivery,
 * acknowledgement and attachments. Keys live in memory only.
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "client/conn.h"
#include "client/requests.h"
#include "missive/crypto.h"
#include "missive/payload.h"
#include "missive/util.h"

#define TIMEOUT_MS 10000
#define PASSWORD "demo password 1"

struct device {
    const char *name, *handle;
    struct msv_identity *id;
    uint64_t device_id;
    struct msv_conn *conn;
};

struct demo {
    char host[64];
    uint16_t port;
    uint8_t pin[32];
    const char *log;
};

static int step_no;

static void step(const char *text)
{
    printf("\n\033[1m%d. %s\033[0m\n", ++step_no, text);
}

static void die(const char *what, msv_err err, const struct msv_refusal *why)
{
    fprintf(stderr, "missive-demo: %s: %s%s%s\n", what, msv_strerror(err),
            why && why->message[0] ? ": " : "", why ? why->message : "");
    exit(1);
}

/* In dev mode missived writes verification codes to its log; a deployment uses a hook. */
static void code_from_log(const struct demo *d, const char *handle, char code[7])
{
    char line[1024], want[160];
    FILE *f = fopen(d->log, "r");
    int found = 0;

    if (f == NULL)
        die("cannot read the server log", MSV_ERR_IO, NULL);
    snprintf(want, sizeof(want), "event=verification_code handle=%s code=", handle);
    while (fgets(line, sizeof(line), f) != NULL) {
        char *p = strstr(line, want);

        if (p != NULL && strlen(p + strlen(want)) >= 6) {
            memcpy(code, p + strlen(want), 6);
            code[6] = '\0';
            found = 1;
        }
    }
    fclose(f);
    if (!found)
        die("no verification code in the server log", MSV_ERR_NOT_FOUND, NULL);
}

static struct msv_conn *connect_server(const struct demo *d)
{
    struct msv_conn *c = NULL;
    msv_err err = msv_conn_open(d->host, d->port, d->pin, TIMEOUT_MS, &c);

    if (err != MSV_OK)
        die("cannot connect to missived", err, NULL);
    return c;
}

static void go_online(const struct demo *d, struct device *dev)
{
    msv_err err;

    dev->conn = connect_server(d);
    err = msv_conn_auth(dev->conn, dev->handle, dev->device_id, dev->id, TIMEOUT_MS);
    if (err != MSV_OK)
        die("authentication", err, NULL);
}

static void enroll(const struct demo *d, struct device *dev, int new_account)
{
    struct msv_conn *c = connect_server(d);
    struct msv_refusal why = {0};
    char code[7];
    msv_err err;

    err = msv_identity_generate(MSV_SUITE_MODERN, 0, &dev->id);
    if (err == MSV_OK && new_account) {
        err = msv_request_register_start(c, dev->handle, TIMEOUT_MS, &why);
        if (err == MSV_OK) {
            code_from_log(d, dev->handle, code);
            printf("   verification code for %s: %s (from the server log: dev mode)\n", dev->handle,
                   code);
            err = msv_request_register_finish(c, dev->handle, code, PASSWORD, dev->id, "",
                                              TIMEOUT_MS, &dev->device_id, &why);
        }
    } else if (err == MSV_OK) {
        err = msv_request_add_device(c, dev->handle, PASSWORD, dev->id, "", TIMEOUT_MS,
                                     &dev->device_id, &why);
    }
    if (err != MSV_OK)
        die("registration", err, &why);
    msv_conn_close(c);
    printf("   %s is device %llu of %s\n", dev->name, (unsigned long long)dev->device_id,
           dev->handle);
    go_online(d, dev);
}

/* Seals payload for every device in to[] and sends it from one device. */
static void send_to(struct device *from, const char *const *handles, size_t n_handles,
                    struct device **to, size_t n, const uint8_t *pt, size_t pt_len)
{
    struct msv_outgoing out[8];
    uint8_t *wires[8] = {0}, message_id[16];
    struct msv_refusal why = {0};
    msv_err err = MSV_OK;

    msv_random_bytes(message_id, sizeof(message_id));
    for (size_t i = 0; i < n && err == MSV_OK; i++) {
        size_t len = 0;

        err = msv_seal(from->id, msv_identity_public(to[i]->id), pt, pt_len, &wires[i], &len);
        out[i] = (struct msv_outgoing){to[i]->device_id, MSV_SUITE_MODERN, wires[i], len};
        printf("   envelope for %-12s %5zu bytes, sealed to its own key\n", to[i]->name, len);
    }
    if (err == MSV_OK)
        err = msv_request_send(from->conn, message_id, handles, n_handles, out, n, TIMEOUT_MS, NULL,
                               &why);
    for (size_t i = 0; i < n; i++)
        free(wires[i]);
    if (err != MSV_OK)
        die("send", err, &why);
    printf("   the relay acknowledged: committed to disk for every device\n");
}

/* Waits for one message on dev, opens it as from's, acknowledges it, returns the payload. */
static struct msv_payload *receive(struct device *dev, const struct device *from)
{
    for (;;) {
        msv_frame *f = NULL;
        struct msv_payload *p = NULL;
        uint8_t *pt = NULL;
        size_t pt_len = 0;
        uint64_t q;
        msv_err err = msv_conn_recv(dev->conn, TIMEOUT_MS, &f);

        if (err != MSV_OK)
            die("waiting for a message", err, NULL);
        if (f->body_case != MSV__WIRE__FRAME__BODY_DELIVER) {
            msv_frame_free(f);
            continue;
        }
        q = f->deliver->queue_id;
        if (f->deliver->sender_device == 0) {
            printf("   %s is told by the server: the device set of its account changed\n",
                   dev->name);
        } else {
            err = msv_open(dev->id, msv_identity_public(from->id), f->deliver->ciphertext.data,
                           f->deliver->ciphertext.len, NULL, &pt, &pt_len);
            if (err == MSV_OK)
                err = msv_payload_parse(pt, pt_len, &p);
            msv_secret_free(pt, pt_len);
            if (err != MSV_OK)
                die("opening a message", err, NULL);
        }
        msv_frame_free(f);
        if (msv_request_ack(dev->conn, &q, 1) != MSV_OK)
            die("acknowledging", MSV_ERR_IO, NULL);
        if (p != NULL)
            return p;
    }
}

static void show_progress(uint64_t done, uint64_t total)
{
    printf("   uploaded %llu of %llu bytes\n", (unsigned long long)done, (unsigned long long)total);
}

static void attachment(const struct demo *d, struct device *alice, struct device *bob,
                       const char *const *bob_handle, struct device **bobs, size_t n_bobs)
{
    const size_t size = 200000;
    uint8_t *photo = malloc(size), *ct = malloc(size), *back = NULL, *plain = malloc(size);
    struct msv_attachment_ref ref = {.name = "beach.jpg", .mime = "image/jpeg", .size = 200000};
    struct msv_payload msg = {.kind = MSV_KIND_MESSAGE, .text = "photo from today"};
    struct msv_attachment_digest dig;
    struct msv_refusal why = {0};
    struct msv_payload *got;
    uint8_t blob[32], *enc = NULL;
    char uri[80], hex[65];
    size_t enc_len = 0, back_len = 0;
    msv_err err;

    (void)d;
    if (photo == NULL || ct == NULL || plain == NULL)
        die("memory", MSV_ERR_NOMEM, NULL);
    msv_random_bytes(photo, size);
    msv_attachment_key_generate(ref.key);
    err = msv_attachment_encrypt(ref.key, photo, size, ct, &dig);
    if (err == MSV_OK)
        err = msv_request_blob_upload(alice->conn, ct, size, TIMEOUT_MS, show_progress, blob, &why);
    if (err != MSV_OK)
        die("upload", err, &why);
    memcpy(ref.sha256, dig.sha256, 32);
    memcpy(ref.sha1, dig.sha1, 20);
    if (msv_hex_encode(blob, 32, hex, sizeof(hex)) != MSV_OK)
        die("hex", MSV_ERR_INVALID, NULL);
    snprintf(uri, sizeof(uri), "blob:%s", hex);
    ref.uri = uri;
    msg.attachments = &ref;
    msg.attachment_count = 1;
    msv_random_bytes(msg.message_id, MSV_ID_LEN);
    if (msv_payload_encode(&msg, &enc, &enc_len) != MSV_OK)
        die("payload", MSV_ERR_INVALID, NULL);
    printf("   the message carries the key, the location and the hash of the ciphertext\n");
    send_to(alice, bob_handle, 1, bobs, n_bobs, enc, enc_len);
    free(enc);
    got = receive(bob, alice);
    if (got->attachment_count != 1 || strncmp(got->attachments[0].uri, "blob:", 5) != 0)
        die("the message has no attachment", MSV_ERR_PARSE, NULL);
    if (msv_hex_decode(got->attachments[0].uri + 5, blob, sizeof(blob), &enc_len) != MSV_OK)
        die("attachment location", MSV_ERR_PARSE, NULL);
    err = msv_request_blob_download(bob->conn, blob, 1u << 24, TIMEOUT_MS, &back, &back_len, &why);
    if (err == MSV_OK)
        err = msv_attachment_decrypt(got->attachments[0].key, got->attachments[0].sha256, back,
                                     back_len, plain);
    if (err != MSV_OK || back_len != size || memcmp(plain, photo, size) != 0)
        die("attachment", err != MSV_OK ? err : MSV_ERR_AUTH, &why);
    printf("   %s downloaded %zu bytes, checked the SHA-256, decrypted: identical to the "
           "original\n",
           bob->name, back_len);
    msv_payload_free(got);
    free(photo);
    free(ct);
    free(back);
    free(plain);
}

static void lookup_bob(struct device *alice, const char *const *bob)
{
    struct msv_refusal why = {0};
    msv_frame *r = NULL;
    msv_err err = msv_request_lookup(alice->conn, bob, 1, TIMEOUT_MS, &r, &why);
    const Msv__Wire__HandleDevices *hd;

    if (err != MSV_OK)
        die("lookup", err, &why);
    hd = r->lookup_result->results[0];
    printf("   %s has %zu devices:\n", bob[0], hd->n_devices);
    for (size_t i = 0; i < hd->n_devices; i++) {
        struct msv_public_identity *pub = NULL;
        uint8_t h[32];
        char fp[MSV_FINGERPRINT_TEXT_LEN];

        if (msv_public_identity_parse((enum msv_suite)hd->devices[i]->suite,
                                      hd->devices[i]->identity.data, hd->devices[i]->identity.len,
                                      &pub) != MSV_OK)
            die("a published identity does not parse", MSV_ERR_PARSE, NULL);
        msv_public_identity_hash(pub, h);
        msv_fingerprint_text(h, fp);
        printf("     device %llu (%s) %s\n", (unsigned long long)hd->devices[i]->device_id,
               msv_suite_name(msv_public_identity_suite(pub)), fp);
        msv_public_identity_free(pub);
    }
    msv_frame_free(r);
}

static void run_demo(const struct demo *d)
{
    struct device alice = {.name = "alice-phone", .handle = "alice@example.org"};
    struct device laptop = {.name = "bob-laptop", .handle = "bob@example.org"};
    struct device phone = {.name = "bob-phone", .handle = "bob@example.org"};
    struct device *bobs[2] = {&laptop, &phone};
    const char *bob_handle[1] = {"bob@example.org"};
    const char *people[2] = {"alice@example.org", "bob@example.org"};
    struct msv_payload msg = {.kind = MSV_KIND_MESSAGE, .text = "Dinner at 8? \xf0\x9f\x8d\x9d"};
    struct msv_payload *got;
    uint8_t *enc = NULL;
    size_t enc_len = 0;

    step("alice registers her phone; bob registers his laptop, then adds his phone");
    enroll(d, &alice, 1);
    enroll(d, &laptop, 1);
    enroll(d, &phone, 0);
    step("alice looks bob up in the directory");
    lookup_bob(&alice, bob_handle);
    step("bob's phone goes offline");
    msv_conn_close(phone.conn);
    phone.conn = NULL;
    step("alice sends one message: encrypted and signed separately for each of bob's devices");
    msg.participants = (char **)people;
    msg.participant_count = 2;
    msv_random_bytes(msg.message_id, MSV_ID_LEN);
    if (msv_payload_encode(&msg, &enc, &enc_len) != MSV_OK)
        die("payload", MSV_ERR_INVALID, NULL);
    send_to(&alice, bob_handle, 1, bobs, 2, enc, enc_len);
    free(enc);
    step("bob's laptop is online: it gets the message at once");
    got = receive(&laptop, &alice);
    printf("   bob-laptop verified alice-phone's signature and reads: %s\n", got->text);
    msv_payload_free(got);
    step("bob's phone comes back: the relay delivers what it queued");
    go_online(d, &phone);
    got = receive(&phone, &alice);
    printf("   bob-phone reads: %s\n", got->text);
    msv_payload_free(got);
    step("alice sends a photo through the attachment store");
    attachment(d, &alice, &laptop, bob_handle, bobs, 2);
    msv_payload_free(receive(&phone, &alice)); /* the phone gets its copy too */
    step("done: every envelope was acknowledged and deleted from the relay");
    msv_identity_free(alice.id);
    msv_identity_free(laptop.id);
    msv_identity_free(phone.id);
    msv_conn_close(alice.conn);
    msv_conn_close(laptop.conn);
    msv_conn_close(phone.conn);
}

static void usage(FILE *f)
{
    fprintf(f, "usage: missive-demo --server-dir DIR --server-log FILE\n"
               "\n"
               "Plays a conversation between alice (one device) and bob (two devices) against\n"
               "the missived whose data directory is DIR, pinning its certificate, and prints\n"
               "every step. The server must run in dev verification mode: the demo reads the\n"
               "verification codes from its log FILE. 'make run' sets this up.\n");
}

static void load_server(struct demo *d, const char *dir)
{
    char path[1100], hex[80];
    unsigned tls = 0, http = 0;
    size_t n = 0;
    FILE *f;

    snprintf(path, sizeof(path), "%s/missived.ports", dir);
    f = fopen(path, "r");
    if (f == NULL || fscanf(f, "tls %u\nhttp %u\n", &tls, &http) != 2 || tls == 0 || tls > 65535)
        die("cannot read the server's ports (is missived running?)", MSV_ERR_IO, NULL);
    fclose(f);
    snprintf(path, sizeof(path), "%s/server.fingerprint", dir);
    f = fopen(path, "r");
    if (f == NULL || fscanf(f, "%79s", hex) != 1 ||
        msv_hex_decode(hex, d->pin, sizeof(d->pin), &n) != MSV_OK || n != 32)
        die("cannot read the server's certificate fingerprint", MSV_ERR_IO, NULL);
    fclose(f);
    snprintf(d->host, sizeof(d->host), "127.0.0.1");
    d->port = (uint16_t)tls;
    printf("missived at %s:%u, certificate pinned: %.16s...\n", d->host, d->port, hex);
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"server-dir", required_argument, NULL, 'd'},
        {"server-log", required_argument, NULL, 'l'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    struct demo d = {0};
    const char *dir = NULL;
    int c;

    opterr = 0;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        if (c == 'd')
            dir = optarg;
        else if (c == 'l')
            d.log = optarg;
        else if (c == 'h') {
            usage(stdout);
            return 0;
        } else {
            usage(stderr);
            return 2;
        }
    }
    if (dir == NULL || d.log == NULL || optind < argc) {
        usage(stderr);
        return 2;
    }
    if (msv_init() != MSV_OK)
        die("random source", MSV_ERR_CRYPTO, NULL);
    setvbuf(stdout, NULL, _IOLBF, 0);
    load_server(&d, dir);
    run_demo(&d);
    return 0;
}
