/*
 * The rules edits and unsends follow on every device that holds the message:
 * only its author changes it; edits apply in the author's order (the edit
 * number, whatever the clocks say), an older or replayed one changes nothing;
 * an unsend wins over every edit and takes the edit history with it; a change
 * made after the receiver's window is refused and said to be; the sender
 * refuses outside its own window. Each case feeds payloads to a device's
 * client as they come out of envelopes.
 */
#include <stdarg.h>
#include <setjmp.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "client/internal.h"
#include "missive/payload.h"
#include "missive/util.h"
#include "helpers.h"
#include "util/endian.h"

#define ALICE "alice@example.org"
#define BOB "bob@example.org"
#define HOUR_MS (3600LL * 1000)

struct fixture {
    char dir[64];
    char path[96];
    struct msv_client c; /* bob's device: its database and handle are all these rules use */
    uint8_t id[16];      /* alice's message to bob */
    int64_t sent_ms;
    char notice[600];
    const char *status;
    int notices; /* how many keep_notice was given */
};

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));
    struct msv_message_rec m = {.conversation = ALICE,
                                .sender = ALICE,
                                .sender_device = 7,
                                .kind = MSV_KIND_MESSAGE,
                                .text = "see you at noon",
                                .status = "received"};

    assert_non_null(f);
    snprintf(f->dir, sizeof(f->dir), "/tmp/msv-edits-XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    snprintf(f->path, sizeof(f->path), "%s/state.db", f->dir);
    assert_int_equal(msv_client_db_open(f->path, &f->c.db), MSV_OK);
    snprintf(f->c.handle, sizeof(f->c.handle), "%s", BOB);
    test_fill_pattern(f->id, 16, 5);
    memcpy(m.message_id, f->id, 16);
    f->sent_ms = m.sent_at_ms = m.stored_at_ms = msv_wall_ms() - HOUR_MS;
    assert_int_equal(msv_client_db_message_put(f->c.db, &m), MSV_OK);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;

    msv_client_db_close(f->c.db);
    unlink(f->path);
    rmdir(f->dir);
    free(f);
    return 0;
}

static void keep_notice(void *ctx, const struct msv_incoming *in)
{
    struct fixture *f = ctx;

    snprintf(f->notice, sizeof(f->notice), "%s", in->notice ? in->notice : "");
    f->status = in->status;
    f->notices++;
}

/* A change of the fixture's message from sender, made at_ms, as bob's device takes it. */
static void take(struct fixture *f, const char *sender, enum msv_payload_kind kind,
                 uint32_t edit_number, const char *text, int64_t at_ms)
{
    struct msv_payload p = {.kind = kind,
                            .text = (char *)text,
                            .has_target = true,
                            .edit_number = edit_number,
                            .sent_at_ms = (uint64_t)at_ms};

    test_fill_pattern(p.message_id, 16, (unsigned)(edit_number + 40 + kind));
    memcpy(p.target_id, f->id, 16);
    f->notice[0] = '\0';
    f->status = NULL;
    assert_int_equal(client_take_control(&f->c, sender, 7, &p, keep_notice, f), MSV_OK);
}

static void assert_message(struct fixture *f, const char *text, const char *status)
{
    struct msv_message_rec *m = NULL;

    assert_int_equal(msv_client_db_message_get(f->c.db, f->id, &m), MSV_OK);
    assert_string_equal(m->text, text);
    assert_string_equal(m->status, status);
    msv_messages_free(m, 1);
}

static size_t search_count(struct fixture *f, const char *words)
{
    struct msv_message_rec *m = NULL;
    size_t n = 0;

    assert_int_equal(msv_client_db_history(f->c.db, NULL, words, 0, &m, &n), MSV_OK);
    msv_messages_free(m, n);
    return n;
}

/*
 * Edit 2 arrives before edit 1, and edit 1 was made on a device whose clock
 * ran ahead: the number decides, not the clock. Edit 2 again (replayed, even
 * with other words) changes nothing and says nothing.
 */
static void test_edits_in_authors_order(void **state)
{
    struct fixture *f = *state;
    struct msv_message_version *v = NULL;
    size_t n = 0;
    uint32_t applied = 0;

    take(f, ALICE, MSV_KIND_EDIT, 2, "see you at one", f->sent_ms + 60000);
    assert_message(f, "see you at one", "edited");
    assert_string_equal(f->notice, ALICE " edited a message: see you at one");
    take(f, ALICE, MSV_KIND_EDIT, 1, "see you at half past noon", f->sent_ms + 120000);
    assert_message(f, "see you at one", "edited");
    assert_string_equal(f->notice, "");
    take(f, ALICE, MSV_KIND_EDIT, 2, "replayed words", f->sent_ms + 180000);
    assert_message(f, "see you at one", "edited");
    assert_string_equal(f->notice, "");
    assert_int_equal(msv_client_db_edit_number(f->c.db, f->id, &applied), MSV_OK);
    assert_int_equal(applied, 2);
    /* the history: the original, then edit 2 */
    assert_int_equal(msv_client_db_message_versions(f->c.db, f->id, &v, &n), MSV_OK);
    assert_int_equal(n, 2);
    assert_int_equal(v[0].edit_number, 0);
    assert_string_equal(v[0].text, "see you at noon");
    assert_int_equal(v[0].at_ms, f->sent_ms);
    assert_int_equal(v[1].edit_number, 2);
    assert_string_equal(v[1].text, "see you at one");
    assert_int_equal(v[1].at_ms, f->sent_ms + 60000);
    msv_message_versions_free(v, n);
    take(f, ALICE, MSV_KIND_EDIT, 3, "see you at two", f->sent_ms + 240000);
    assert_message(f, "see you at two", "edited");
}

/* A change of message target from sender, made at_ms, kept by bob's device before the message
 * comes (client_change_keep, as its receive does). */
static void keep_early(struct fixture *f, const char *sender, const uint8_t target[16],
                       enum msv_payload_kind kind, uint32_t edit_number, const char *text,
                       int64_t at_ms)
{
    struct msv_payload p = {.kind = kind,
                            .text = (char *)text,
                            .has_target = true,
                            .edit_number = edit_number,
                            .sent_at_ms = (uint64_t)at_ms};
    uint8_t *pt = NULL;
    size_t pt_len = 0;

    test_fill_pattern(p.message_id, 16, (unsigned)(edit_number + 40 + kind + target[0]));
    memcpy(p.target_id, target, 16);
    assert_int_equal(msv_payload_encode(&p, &pt, &pt_len), MSV_OK);
    assert_int_equal(client_change_keep(&f->c, sender, 7, target, pt, pt_len), MSV_OK);
    free(pt);
}

static size_t early_kept(struct fixture *f)
{
    struct msv_setting *s = NULL;
    size_t n = 0;

    assert_int_equal(msv_client_db_settings(f->c.db, "early:", SIZE_MAX, &s, &n), MSV_OK);
    msv_settings_free(s, n);
    return n;
}

/* How many kept changes are sender's. */
static size_t early_from(struct fixture *f, const char *sender)
{
    struct msv_setting *s = NULL;
    size_t n = 0, found = 0;

    assert_int_equal(msv_client_db_settings(f->c.db, "early:", SIZE_MAX, &s, &n), MSV_OK);
    for (size_t i = 0; i < n; i++)
        found +=
            s[i].len > 16 + strlen(sender) && strcmp((const char *)s[i].value + 16, sender) == 0;
    msv_settings_free(s, n);
    return found;
}

/* alice's message target, as bob's device stores it, then the changes kept for it applied. */
static int arrives(struct fixture *f, const uint8_t target[16], const char *text)
{
    struct msv_message_rec m = {.conversation = ALICE,
                                .sender = ALICE,
                                .sender_device = 7,
                                .kind = MSV_KIND_MESSAGE,
                                .text = (char *)text,
                                .status = "received"};
    int applied = 0;

    memcpy(m.message_id, target, 16);
    m.sent_at_ms = m.stored_at_ms = f->sent_ms;
    assert_int_equal(msv_client_db_message_put(f->c.db, &m), MSV_OK);
    assert_int_equal(client_changes_apply(&f->c, target, ALICE, keep_notice, f, &applied), MSV_OK);
    return applied;
}

/*
 * Changes that come before their message (held back by a server, or sent again after them) are
 * kept and applied when it comes, as they would have been after it: alice's unsend wins (her
 * edit it made moot never told) and her edits apply in her order; mallory's unsend of alice's
 * message changes nothing.
 */
static void test_changes_before_their_message(void **state)
{
    struct fixture *f = *state;
    struct msv_message_rec *m = NULL;
    uint8_t gone[16], edited[16];

    test_fill_pattern(gone, 16, 91);
    test_fill_pattern(edited, 16, 92);
    keep_early(f, ALICE, gone, MSV_KIND_EDIT, 1, "meant otherwise", f->sent_ms + 1000);
    keep_early(f, ALICE, gone, MSV_KIND_UNSEND, 0, NULL, f->sent_ms + 2000);
    keep_early(f, "mallory@example.org", edited, MSV_KIND_UNSEND, 0, NULL, f->sent_ms + 1000);
    keep_early(f, ALICE, edited, MSV_KIND_EDIT, 2, "second words", f->sent_ms + 3000);
    keep_early(f, ALICE, edited, MSV_KIND_EDIT, 1, "first words", f->sent_ms + 2000);
    assert_int_equal(early_kept(f), 5);
    f->notices = 0;
    assert_true(arrives(f, gone, "take this back"));
    /* the unsend alone is told: the edit it made moot never is */
    assert_int_equal(f->notices, 1);
    assert_string_equal(f->notice, ALICE " unsent a message");
    assert_int_equal(msv_client_db_message_get(f->c.db, gone, &m), MSV_OK);
    assert_string_equal(m->text, "");
    assert_string_equal(m->status, "unsent");
    msv_messages_free(m, 1);
    assert_int_equal(search_count(f, "take"), 0);
    assert_true(arrives(f, edited, "frist words"));
    assert_int_equal(msv_client_db_message_get(f->c.db, edited, &m), MSV_OK);
    assert_string_equal(m->text, "second words");
    assert_string_equal(m->status, "edited");
    msv_messages_free(m, 1);
    assert_int_equal(early_kept(f), 1); /* mallory's, for a message of hers, until it expires */
    /* a message with nothing kept for it: nothing applied */
    assert_false(arrives(f, (const uint8_t[16]){93}, "plain"));
}

/* At most 32 changes of one sender's wait, and 256 in all: past that the oldest goes, counted;
 * one kept past 30 days goes at the next keep. */
static void test_early_changes_bounded(void **state)
{
    struct fixture *f = *state;
    uint8_t target[16] = {0};
    char who[40];

    for (unsigned i = 0; i < 33; i++) {
        target[1] = (uint8_t)i;
        keep_early(f, ALICE, target, MSV_KIND_UNSEND, 0, NULL, f->sent_ms);
    }
    assert_int_equal(early_kept(f), 32);
    assert_int_equal(msv_client_early_changes_dropped(&f->c), 1);
    for (unsigned k = 0; k < 8; k++) {
        snprintf(who, sizeof(who), "sender%u@example.org", k);
        for (unsigned i = 0; i < 28; i++) {
            target[0] = (uint8_t)(k + 1);
            target[1] = (uint8_t)i;
            keep_early(f, who, target, MSV_KIND_UNSEND, 0, NULL, f->sent_ms);
        }
    }
    assert_int_equal(early_kept(f), 256);
    assert_int_equal(msv_client_early_changes_dropped(&f->c), 1);
    target[0] = 50;
    keep_early(f, "one.more@example.org", target, MSV_KIND_UNSEND, 0, NULL, f->sent_ms);
    assert_int_equal(early_kept(f), 256);
    assert_int_equal(msv_client_early_changes_dropped(&f->c), 2);
    /* the one pushed out was of the handle holding most (alice's 32): others keep theirs */
    assert_int_equal(early_from(f, ALICE), 31);
    assert_int_equal(early_from(f, "one.more@example.org"), 1);
    assert_int_equal(early_from(f, "sender0@example.org"), 28);
    /* every record dated 31 days back: gone at the next keep */
    {
        struct msv_setting *s = NULL;
        size_t n = 0;

        assert_int_equal(msv_client_db_settings(f->c.db, "early:", SIZE_MAX, &s, &n), MSV_OK);
        for (size_t i = 0; i < n; i++) {
            msv_put_u64be(s[i].value, msv_get_u64be(s[i].value) - 31LL * 86400 * 1000);
            assert_int_equal(msv_client_db_set(f->c.db, s[i].key, s[i].value, s[i].len), MSV_OK);
        }
        msv_settings_free(s, n);
    }
    target[0] = 99;
    keep_early(f, ALICE, target, MSV_KIND_UNSEND, 0, NULL, f->sent_ms);
    assert_int_equal(early_kept(f), 1);
}

/* An unsend wins: the text, its versions and its words in the search index go; later edits fail. */
static void test_unsend_wins_over_edits(void **state)
{
    struct fixture *f = *state;
    struct msv_message_version *v = NULL;
    size_t n = 0;

    take(f, ALICE, MSV_KIND_EDIT, 1, "quokkamarmalade at noon", f->sent_ms + 60000);
    assert_int_equal(search_count(f, "quokkamarmalade"), 1);
    take(f, ALICE, MSV_KIND_UNSEND, 0, NULL, f->sent_ms + 120000);
    assert_message(f, "", "unsent");
    assert_string_equal(f->status, "unsent");
    assert_int_equal(msv_client_db_message_versions(f->c.db, f->id, &v, &n), MSV_OK);
    assert_int_equal(n, 0);
    msv_message_versions_free(v, n);
    assert_int_equal(search_count(f, "quokkamarmalade"), 0);
    assert_int_equal(search_count(f, "noon"), 0);
    /* an edit made later, or one held back by the relay, changes nothing */
    take(f, ALICE, MSV_KIND_EDIT, 5, "back again", f->sent_ms + 180000);
    assert_message(f, "", "unsent");
    assert_string_equal(f->notice, "");
    assert_int_equal(msv_client_db_message_edit(f->c.db, f->id, 6, "forced", f->sent_ms),
                     MSV_ERR_NOT_FOUND);
    assert_message(f, "", "unsent");
    assert_int_equal(msv_client_db_message_versions(f->c.db, f->id, &v, &n), MSV_OK);
    assert_int_equal(n, 0);
    msv_message_versions_free(v, n);
}

/*
 * A receipt for a message its author unsent, come after the unsend (the receiver got the
 * message while the unsend was on its way), leaves it unsent and tells nothing; so does the
 * outbox settling it.
 */
static void test_receipt_after_unsend(void **state)
{
    struct fixture *f = *state;
    struct msv_message_rec m = {.conversation = ALICE,
                                .sender = BOB,
                                .sender_device = 1,
                                .outgoing = 1,
                                .kind = MSV_KIND_MESSAGE,
                                .text = "oops",
                                .status = "sent"};
    struct msv_payload p = {.has_target = true};
    struct msv_message_rec *got = NULL;

    test_fill_pattern(m.message_id, 16, 9);
    m.sent_at_ms = m.stored_at_ms = msv_wall_ms();
    assert_int_equal(msv_client_db_message_put(f->c.db, &m), MSV_OK);
    assert_int_equal(msv_client_db_message_rewrite(f->c.db, m.message_id, "", "unsent"), MSV_OK);
    memcpy(p.target_id, m.message_id, 16);
    p.sent_at_ms = (uint64_t)msv_wall_ms();
    for (int kind = MSV_KIND_RECEIPT_DELIVERED; kind <= MSV_KIND_RECEIPT_READ; kind++) {
        p.kind = (enum msv_payload_kind)kind;
        test_fill_pattern(p.message_id, 16, (unsigned)(60 + kind));
        f->status = NULL;
        assert_int_equal(client_take_control(&f->c, ALICE, 7, &p, keep_notice, f), MSV_OK);
        assert_null(f->status);
    }
    assert_int_equal(msv_client_db_message_status(f->c.db, m.message_id, "sent"), MSV_OK);
    assert_int_equal(msv_client_db_message_get(f->c.db, m.message_id, &got), MSV_OK);
    assert_string_equal(got->status, "unsent");
    assert_string_equal(got->text, "");
    msv_messages_free(got, 1);
}

/* Someone else (a member of the same group, who saw the id) cannot edit or unsend it. */
static void test_only_author_changes(void **state)
{
    struct fixture *f = *state;

    take(f, "carol@example.org", MSV_KIND_EDIT, 1, "forged", f->sent_ms + 60000);
    assert_message(f, "see you at noon", "received");
    take(f, "carol@example.org", MSV_KIND_UNSEND, 0, NULL, f->sent_ms + 60000);
    assert_message(f, "see you at noon", "received");
    assert_string_equal(f->notice, "");
    /* nor bob, though the message is on his device */
    take(f, BOB, MSV_KIND_EDIT, 1, "mine now", f->sent_ms + 60000);
    assert_message(f, "see you at noon", "received");
}

/*
 * bob's edit window is one hour: an edit made an hour and six minutes after
 * the message is refused and said to be; one within the clock slack applies.
 * The unsend window stays 24 hours.
 */
static void test_changes_outside_window(void **state)
{
    struct fixture *f = *state;
    uint64_t seconds = 0;

    assert_int_equal(msv_client_set_window(&f->c, "edit", 3600), MSV_OK);
    assert_int_equal(msv_client_window(&f->c, "edit", &seconds), MSV_OK);
    assert_int_equal(seconds, 3600);
    take(f, ALICE, MSV_KIND_EDIT, 1, "too late words", f->sent_ms + HOUR_MS + 6 * 60000);
    assert_message(f, "see you at noon", "received");
    assert_string_equal(f->status, "refused");
    assert_non_null(strstr(f->notice, "edit refused: too late"));
    take(f, ALICE, MSV_KIND_EDIT, 2, "just in time", f->sent_ms + HOUR_MS + 4 * 60000);
    assert_message(f, "just in time", "edited");
    take(f, ALICE, MSV_KIND_UNSEND, 0, NULL, f->sent_ms + 25 * HOUR_MS);
    assert_message(f, "just in time", "edited");
    assert_non_null(strstr(f->notice, "unsend refused: too late"));
    take(f, ALICE, MSV_KIND_UNSEND, 0, NULL, f->sent_ms + 23 * HOUR_MS);
    assert_message(f, "", "unsent");
}

/* The window settings: two names, a bound, and a value another device garbled reads as 24 h. */
static void test_window_settings(void **state)
{
    struct fixture *f = *state;
    uint64_t seconds = 0;

    assert_int_equal(msv_client_window(&f->c, "unsend", &seconds), MSV_OK);
    assert_int_equal(seconds, MSV_WINDOW_DEFAULT_S);
    assert_int_equal(msv_client_set_window(&f->c, "reply", 60), MSV_ERR_INVALID);
    assert_int_equal(msv_client_set_window(&f->c, "edit", MSV_WINDOW_MAX_S + 1ull),
                     MSV_ERR_INVALID);
    assert_int_equal(msv_client_set_window(&f->c, "unsend", 0), MSV_OK);
    assert_int_equal(msv_client_window(&f->c, "unsend", &seconds), MSV_OK);
    assert_int_equal(seconds, 0);
    assert_int_equal(msv_client_db_set(f->c.db, "sync:window:edit", "12x", 3), MSV_OK);
    assert_int_equal(msv_client_window(&f->c, "edit", &seconds), MSV_OK);
    assert_int_equal(seconds, MSV_WINDOW_DEFAULT_S);
    assert_int_equal(msv_client_db_set(f->c.db, "sync:window:edit", "99999999999999", 14), MSV_OK);
    assert_int_equal(msv_client_window(&f->c, "edit", &seconds), MSV_OK);
    assert_int_equal(seconds, MSV_WINDOW_DEFAULT_S);
}

/* The sender refuses, before anything is sent, a change outside its window or of an unsent one. */
static void test_sender_refuses(void **state)
{
    struct fixture *f = *state;
    struct msv_message_rec m = {.conversation = ALICE,
                                .outgoing = 1,
                                .sender = BOB,
                                .kind = MSV_KIND_MESSAGE,
                                .text = "old words",
                                .status = "sent"};

    test_fill_pattern(m.message_id, 16, 9);
    m.sent_at_ms = m.stored_at_ms = msv_wall_ms() - 25 * HOUR_MS;
    assert_int_equal(msv_client_db_message_put(f->c.db, &m), MSV_OK);
    assert_int_equal(msv_client_edit(&f->c, m.message_id, "new words"), MSV_ERR_INVALID);
    assert_non_null(strstr(f->c.why.message, "too late"));
    assert_int_equal(msv_client_unsend(&f->c, m.message_id), MSV_ERR_INVALID);
    assert_int_equal(msv_client_db_message_rewrite(f->c.db, m.message_id, "", "unsent"), MSV_OK);
    assert_int_equal(msv_client_set_window(&f->c, "edit", MSV_WINDOW_MAX_S), MSV_OK);
    f->c.why.message[0] = '\0';
    assert_int_equal(msv_client_edit(&f->c, m.message_id, "new words"), MSV_ERR_INVALID);
    assert_non_null(strstr(f->c.why.message, "unsent already"));
    /* alice's message is not bob's to change */
    assert_int_equal(msv_client_edit(&f->c, f->id, "new words"), MSV_ERR_INVALID);
    /* a message edited the most times it may be */
    test_fill_pattern(m.message_id, 16, 10);
    m.sent_at_ms = m.stored_at_ms = msv_wall_ms();
    assert_int_equal(msv_client_db_message_put(f->c.db, &m), MSV_OK);
    assert_int_equal(msv_client_db_message_edit(f->c.db, m.message_id, MSV_EDITS_MAX, "last", 1),
                     MSV_OK);
    assert_int_equal(msv_client_edit(&f->c, m.message_id, "one more"), MSV_ERR_INVALID);
    assert_non_null(strstr(f->c.why.message, "at most"));
}

/*
 * Conversations: pinned first, archived left out (unless asked for, or kept
 * open), a mute that ran out is none; a new message brings an archived
 * conversation back unless it is muted; names and values that are not ones.
 */
static void test_conversation_states(void **state)
{
    struct fixture *f = *state;
    struct msv_message_rec m = {.conversation = "carol@example.org",
                                .sender = "carol@example.org",
                                .kind = MSV_KIND_MESSAGE,
                                .text = "hi",
                                .status = "received"};
    struct msv_conversation_rec *list = NULL;
    size_t n = 0;

    test_fill_pattern(m.message_id, 16, 11);
    m.sent_at_ms = m.stored_at_ms = msv_wall_ms();
    assert_int_equal(msv_client_db_message_put(f->c.db, &m), MSV_OK);
    assert_int_equal(msv_client_conversation_set(&f->c, ALICE, MSV_CONVERSATION_PIN, 0), MSV_OK);
    assert_int_equal(
        msv_client_conversation_set(&f->c, "carol@example.org", MSV_CONVERSATION_ARCHIVE, 0),
        MSV_OK);
    assert_int_equal(msv_client_conversations(&f->c, 0, NULL, &list, &n), MSV_OK);
    assert_int_equal(n, 1);
    assert_string_equal(list[0].conversation, ALICE);
    assert_true(list[0].pinned);
    msv_conversations_free(list, n);
    assert_int_equal(msv_client_conversations(&f->c, 0, "carol@example.org", &list, &n), MSV_OK);
    assert_int_equal(n, 2);
    assert_string_equal(list[1].conversation, "carol@example.org");
    assert_true(list[1].archived);
    msv_conversations_free(list, n);
    /* muted: a new message leaves it archived; a mute that ran out does not */
    assert_int_equal(msv_client_conversation_set(&f->c, "carol@example.org", MSV_CONVERSATION_MUTE,
                                                 msv_wall_ms() + HOUR_MS),
                     MSV_OK);
    assert_true(msv_client_conversation_muted(&f->c, "carol@example.org"));
    assert_int_equal(client_conversation_arrived(&f->c, "carol@example.org", NULL, NULL), MSV_OK);
    assert_int_equal(msv_client_conversations(&f->c, 0, NULL, &list, &n), MSV_OK);
    assert_int_equal(n, 1);
    msv_conversations_free(list, n);
    assert_int_equal(msv_client_conversation_set(&f->c, "carol@example.org", MSV_CONVERSATION_MUTE,
                                                 msv_wall_ms() - 1),
                     MSV_OK);
    assert_false(msv_client_conversation_muted(&f->c, "carol@example.org"));
    assert_int_equal(client_conversation_arrived(&f->c, "carol@example.org", NULL, NULL), MSV_OK);
    assert_int_equal(msv_client_conversations(&f->c, 0, NULL, &list, &n), MSV_OK);
    assert_int_equal(n, 2);
    assert_false(list[1].archived);
    assert_int_equal(list[1].muted_until_ms, 0);
    msv_conversations_free(list, n);
    /* garbage another device wrote reads as the default; bad names and mutes are refused */
    assert_int_equal(msv_client_db_set(f->c.db, "sync:conv:carol@example.org:mute", "soon", 4),
                     MSV_OK);
    assert_false(msv_client_conversation_muted(&f->c, "carol@example.org"));
    assert_int_equal(msv_client_conversation_set(&f->c, "", MSV_CONVERSATION_PIN, 0),
                     MSV_ERR_INVALID);
    assert_int_equal(msv_client_conversation_set(&f->c, "a\nb", MSV_CONVERSATION_PIN, 0),
                     MSV_ERR_INVALID);
    assert_int_equal(msv_client_conversation_set(&f->c, ALICE, MSV_CONVERSATION_MUTE, 0),
                     MSV_ERR_INVALID);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_edits_in_authors_order, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unsend_wins_over_edits, setup, teardown),
        cmocka_unit_test_setup_teardown(test_receipt_after_unsend, setup, teardown),
        cmocka_unit_test_setup_teardown(test_only_author_changes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_changes_outside_window, setup, teardown),
        cmocka_unit_test_setup_teardown(test_window_settings, setup, teardown),
        cmocka_unit_test_setup_teardown(test_sender_refuses, setup, teardown),
        cmocka_unit_test_setup_teardown(test_conversation_states, setup, teardown),
        cmocka_unit_test_setup_teardown(test_changes_before_their_message, setup, teardown),
        cmocka_unit_test_setup_teardown(test_early_changes_bounded, setup, teardown),
    };

    if (msv_init() != MSV_OK)
        return 1;
    return cmocka_run_group_tests(tests, NULL, NULL);
}
