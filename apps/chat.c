/*
 * missive chat: the full-screen terminal chat (ncursesw). The conversations
 * on the left with their unread counts, the open one's history on the right
 * with delivery and read marks, a status line (typing notices, progress,
 * errors) and the compose line at the bottom. It owns the account through the
 * daemon's loop (owner.h): what arrives is drawn as it arrives, and plain
 * commands run meanwhile go through it.
 */
#define _GNU_SOURCE              /* vasprintf */
#define _XOPEN_SOURCE_EXTENDED 1 /* ncursesw wide characters */
#include <errno.h>
#include <langinfo.h>
#include <locale.h>
#include <ncurses.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <wchar.h>

#include <qrencode.h>

#include "commands.h"
#include "client/link.h"
#include "client/safety.h"
#include "client/sessions.h"
#include "missive/payload.h"
#include "missive/util.h"
#include "owner.h"
#include "term.h"

#define COMPOSE_MAX 4000
#define NOTES_MAX 200
#define HISTORY_STEP 500    /* messages read at a time, more as the view scrolls up */
#define TYPING_SHOW_MS 6000 /* a typing notice shows this long */
#define TYPING_SEND_MS 5000 /* and is sent at most this often */
#define KEY_CTRL(c) ((c)&0x1f)

/* A line the chat itself adds to a conversation: warnings, notices, help. */
struct note {
    char conversation[300];
    int64_t at_ms;
    char *text;
};

struct chat {
    const struct cli *o;
    struct msv_client *c;
    struct owner *ow;
    struct msv_conversation_rec *convs;
    size_t n_convs;
    size_t first_request; /* convs from here on are message requests (n_convs: none) */
    struct msv_message_rec *hist;
    size_t n_hist;
    struct msv_contact *contacts; /* for names */
    size_t n_contacts;
    struct msv_group_rec *groups;
    size_t n_groups;
    char current[300]; /* the open conversation ("" none) */
    struct note notes[NOTES_MAX];
    size_t n_notes;
    wchar_t compose[COMPOSE_MAX + 1];
    size_t len, cursor;
    int scroll;        /* lines above the newest that the view is moved up */
    int at_top;        /* the view shows the oldest message read */
    size_t hist_limit; /* how many of the newest messages are read */
    char status[400];
    int64_t status_until;
    char typing[300], typing_in[300];
    int64_t typing_until, typing_sent_at;
    char progress[120];
    char *qr; /* the verification code shown over the view, until a key */
    int reload, quit;
};

static struct chat *the_chat; /* for the upload progress callback, which has no context */

static void set_status(struct chat *ch, int64_t ms, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void set_status(struct chat *ch, int64_t ms, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(ch->status, sizeof(ch->status), fmt, ap);
    va_end(ap);
    ch->status_until = msv_wall_ms() + ms;
}

static void add_note(struct chat *ch, const char *conversation, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void add_note(struct chat *ch, const char *conversation, const char *fmt, ...)
{
    struct note *n;
    va_list ap;

    if (ch->n_notes == NOTES_MAX) {
        free(ch->notes[0].text);
        memmove(ch->notes, ch->notes + 1, (NOTES_MAX - 1) * sizeof(ch->notes[0]));
        ch->n_notes--;
    }
    n = &ch->notes[ch->n_notes];
    va_start(ap, fmt);
    if (vasprintf(&n->text, fmt, ap) < 0)
        n->text = NULL;
    va_end(ap);
    if (n->text == NULL)
        return;
    snprintf(n->conversation, sizeof(n->conversation), "%s", conversation ? conversation : "");
    n->at_ms = msv_wall_ms();
    ch->n_notes++;
}

/* ---- what is shown: names, history, conversation list ---------------------------------- */

/* A conversation's name as people know it: a group's name, a contact's, or the handle. */
/* The group a "group:<hex>" conversation is, as last read; NULL if none. */
static const struct msv_group_rec *group_of(const struct chat *ch, const char *conversation)
{
    char group[40];

    for (size_t i = 0; i < ch->n_groups; i++) {
        msv_client_group_conversation(ch->groups[i].group_id, group);
        if (strcmp(group, conversation) == 0)
            return &ch->groups[i];
    }
    return NULL;
}

static void display_name(struct chat *ch, const char *conversation, char *out, size_t len)
{
    const struct msv_group_rec *g = group_of(ch, conversation);
    char profile[MSV_PROFILE_NAME_MAX + 1];

    snprintf(out, len, "%s", conversation);
    if (g != NULL) {
        size_t same = 0;
        char hex[33];

        /* two groups of one name are told apart by their ids; an invitation says so */
        for (size_t i = 0; i < ch->n_groups; i++)
            same += strcmp(ch->groups[i].name, g->name) == 0;
        if (msv_hex_encode(g->group_id, 3, hex, sizeof(hex)) != MSV_OK)
            hex[0] = '\0';
        snprintf(out, len, "#%s%s%s%s", g->name, same > 1 ? " " : "", same > 1 ? hex : "",
                 g->accepted ? "" : " (invited)");
        return;
    }
    for (size_t i = 0; i < ch->n_contacts; i++) {
        if (strcmp(ch->contacts[i].handle, conversation) == 0 &&
            strcmp(ch->contacts[i].name, conversation) != 0) {
            snprintf(out, len, "%s", ch->contacts[i].name);
            return;
        }
    }
    /* a display name of the person's own choosing: beside the handle, never instead */
    if (msv_client_sender_name(ch->c, conversation, profile, sizeof(profile)) == MSV_OK)
        snprintf(out, len, "%s (%s)", profile, conversation);
}

/* " members: \u2605A, B" for the title of a group conversation, its admins starred; "" if none. */
static void group_members(struct chat *ch, const char *conversation, char *out, size_t len)
{
    const struct msv_group_rec *g = group_of(ch, conversation);
    char *admins = NULL;
    size_t o;

    out[0] = '\0';
    if (g == NULL)
        return;
    if (msv_client_group_admins(ch->c, g->group_id, &admins) != MSV_OK)
        admins = NULL;
    o = (size_t)snprintf(out, len, "  members:");
    for (const char *m = g->members; *m != '\0' && o < len;) {
        size_t n = strcspn(m, "\n");
        int admin = 0;

        for (const char *a = admins; a != NULL && *a != '\0'; a += strcspn(a, "\n") + 1)
            admin |= strcspn(a, "\n") == n && strncmp(a, m, n) == 0;
        o += (size_t)snprintf(out + o, len - o, " %s%.*s", admin ? "\u2605" : "", (int)n, m);
        m += n + (m[n] == '\n');
    }
    free(admins);
}

/* Message requests go last in the list, in a section of their own; the rest keep their order. */
static void requests_last(struct chat *ch)
{
    size_t k = 0;

    for (size_t i = 0; i < ch->n_convs; i++) {
        if (!msv_client_is_request(ch->c, ch->convs[i].conversation)) {
            struct msv_conversation_rec keep = ch->convs[i];

            memmove(&ch->convs[k + 1], &ch->convs[k], (i - k) * sizeof(keep));
            ch->convs[k++] = keep;
        }
    }
    ch->first_request = k;
}

static void load(struct chat *ch)
{
    size_t read = 0;

    msv_conversations_free(ch->convs, ch->n_convs);
    ch->convs = NULL;
    ch->n_convs = 0;
    msv_contacts_free(ch->contacts, ch->n_contacts);
    ch->contacts = NULL;
    ch->n_contacts = 0;
    msv_groups_free(ch->groups, ch->n_groups);
    ch->groups = NULL;
    ch->n_groups = 0;
    /* names for handles and groups, as they are now */
    if (msv_client_db_contacts(ch->c->db, NULL, &ch->contacts, &ch->n_contacts) != MSV_OK ||
        msv_client_db_groups(ch->c->db, &ch->groups, &ch->n_groups) != MSV_OK)
        set_status(ch, 5000, "cannot read the contacts and groups");
    msv_messages_free(ch->hist, ch->n_hist);
    ch->hist = NULL;
    ch->n_hist = 0;
    if (msv_client_conversations(ch->c, 0, ch->current, &ch->convs, &ch->n_convs) != MSV_OK)
        set_status(ch, 5000, "cannot read the conversations");
    requests_last(ch);
    if (ch->current[0] == '\0' && ch->n_convs > 0)
        snprintf(ch->current, sizeof(ch->current), "%s", ch->convs[0].conversation);
    if (ch->current[0] == '\0')
        return;
    /* what is shown is read: its senders are told, once */
    for (size_t i = 0; i < ch->n_convs; i++) {
        if (strcmp(ch->convs[i].conversation, ch->current) == 0 && ch->convs[i].unread > 0 &&
            ch->c->conn != NULL && msv_client_mark_read(ch->c, ch->current, &read) == MSV_OK) {
            ch->convs[i].unread = 0;
            owner_pump(ch->ow);
        }
    }
    if (msv_client_db_history(ch->c->db, ch->current, NULL, ch->hist_limit, &ch->hist,
                              &ch->n_hist) != MSV_OK)
        set_status(ch, 5000, "cannot read the history");
}

/* The mark an outgoing message carries. */
static const char *mark(const struct msv_message_rec *m)
{
    if (strcmp(m->status, "unsent") == 0)
        return "  (unsent)";
    if (strcmp(m->status, "edited") == 0)
        return "  (edited)";
    if (!m->outgoing)
        return "";
    if (strcmp(m->status, "queued") == 0)
        return "  \u2026 queued";
    if (strcmp(m->status, "sent") == 0)
        return "  \u2713";
    if (strcmp(m->status, "delivered") == 0)
        return "  \u2713\u2713";
    if (strcmp(m->status, "read") == 0)
        return "  \u2713\u2713 read";
    if (strcmp(m->status, "failed") == 0)
        return "  ! not sent";
    return "";
}

/*
 * A string as wide characters that only print (caller frees). Much of what the
 * window shows came from others, so it goes through the CLI's filter first
 * (term.h): escapes, C1 and direction controls are shown, not acted on.
 */
static wchar_t *widen(const char *text)
{
    char *safe = term_safe(text, TERM_LINES);
    const char *s = safe;
    size_t n = safe != NULL ? strlen(safe) : 0, k = 0;
    wchar_t *w = safe != NULL ? calloc(n + 1, sizeof(wchar_t)) : NULL;
    mbstate_t st;

    memset(&st, 0, sizeof(st));
    while (w != NULL && *s != '\0') {
        size_t used = mbrtowc(&w[k], s, n, &st);

        if (used == (size_t)-1 || used == (size_t)-2) {
            w[k] = 0xFFFD;
            used = 1;
            memset(&st, 0, sizeof(st));
        } else if (used == 0) {
            break;
        }
        if (w[k] < 0x20 && w[k] != '\n')
            w[k] = ' ';
        k++;
        s += used;
        n -= used;
    }
    if (w != NULL)
        w[k] = 0;
    free(safe);
    return w;
}

struct lines {
    wchar_t **line;
    int *attr;
    size_t n, cap;
};

static void lines_add(struct lines *l, const wchar_t *s, size_t len, int attr)
{
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 64;
        wchar_t **line = realloc(l->line, cap * sizeof(*line));
        int *a = line ? realloc(l->attr, cap * sizeof(*a)) : NULL;

        if (line != NULL)
            l->line = line;
        if (a == NULL)
            return;
        l->attr = a;
        l->cap = cap;
    }
    l->line[l->n] = calloc(len + 1, sizeof(wchar_t));
    if (l->line[l->n] == NULL)
        return;
    wmemcpy(l->line[l->n], s, len);
    l->attr[l->n++] = attr;
}

static void lines_free(struct lines *l)
{
    for (size_t i = 0; i < l->n; i++)
        free(l->line[i]);
    free(l->line);
    free(l->attr);
}

/* Wraps text to width columns (at spaces where it can), as lines of attr. */
static void wrap(struct lines *l, const char *text, int width, int attr)
{
    wchar_t *w = widen(text), *p = w;

    while (p != NULL && *p != 0) {
        size_t take = 0, space = 0;
        int cols = 0;

        while (p[take] != 0 && p[take] != '\n') {
            int cw = wcwidth(p[take]);

            if (cw < 0)
                cw = 1;
            if (cols + cw > width)
                break;
            cols += cw;
            if (p[take] == ' ')
                space = take;
            take++;
        }
        if (p[take] != 0 && p[take] != '\n' && space > 0)
            take = space; /* break at the last space */
        if (take == 0 && p[0] != '\n')
            take = 1;
        lines_add(l, p, take, attr);
        p += take;
        if (*p == ' ' || *p == '\n')
            p++;
    }
    free(w);
}

/* Whether a message names this account (its line is highlighted). */
static int mentions_me(struct chat *ch, const struct msv_message_rec *r)
{
    struct msv_mention *m = NULL;
    size_t n = 0;
    int me = 0;

    if (msv_client_db_mentions(ch->c->db, r->message_id, &m, &n) != MSV_OK)
        return 0;
    for (size_t i = 0; i < n; i++)
        me |= strcmp(m[i].handle, ch->c->handle) == 0;
    msv_mentions_free(m, n);
    return me;
}

/* The reactions to a message, on a line under it ("👍 2  ❤ 1"). */
static void show_reactions(struct chat *ch, const struct msv_message_rec *r, int width,
                           struct lines *l)
{
    char *line = cli_reactions_line(ch->c, r->message_id), *s = NULL;

    if (line != NULL && asprintf(&s, "      %s", line) > 0)
        wrap(l, s, width, A_NORMAL);
    free(s);
    free(line);
}

/* The open conversation as lines of the view's width: messages and notes by time. */
static void view_lines(struct chat *ch, int width, struct lines *l)
{
    size_t m = 0, k = 0;

    while (m < ch->n_hist || k < ch->n_notes) {
        char *s = NULL, when[16], name[300];
        struct tm tm;
        time_t t;

        if (k < ch->n_notes && strcmp(ch->notes[k].conversation, ch->current) != 0 &&
            ch->notes[k].conversation[0] != '\0') {
            k++;
            continue;
        }
        if (m < ch->n_hist &&
            (k == ch->n_notes || ch->hist[m].stored_at_ms <= ch->notes[k].at_ms)) {
            const struct msv_message_rec *r = &ch->hist[m++];
            char *quote = cli_quote_line(ch->c, r);

            t = (time_t)(r->sent_at_ms / 1000);
            localtime_r(&t, &tm);
            strftime(when, sizeof(when), "%H:%M", &tm);
            display_name(ch, r->sender, name, sizeof(name));
            if (quote != NULL && asprintf(&s, "      %s", quote) > 0)
                wrap(l, s, width, A_DIM);
            free(quote);
            free(s);
            s = NULL;
            if (asprintf(&s, "%s %s: %s%s", when, r->outgoing ? "me" : name,
                         strcmp(r->status, "unsent") == 0 ? "" : r->text, mark(r)) > 0)
                wrap(l, s, width,
                     r->outgoing          ? A_BOLD
                     : mentions_me(ch, r) ? A_STANDOUT
                                          : A_NORMAL);
            show_reactions(ch, r, width, l);
        } else {
            t = (time_t)(ch->notes[k].at_ms / 1000);
            localtime_r(&t, &tm);
            strftime(when, sizeof(when), "%H:%M", &tm);
            if (asprintf(&s, "%s * %s", when, ch->notes[k].text) > 0)
                wrap(l, s, width, A_DIM);
            k++;
        }
        free(s);
    }
}

/* ---- drawing ------------------------------------------------------------------------- */

static void put(int y, int x, int width, const char *s, int attr)
{
    wchar_t *w = widen(s);
    int cols = 0, n = 0;

    if (w == NULL || width <= 0)
        goto done;
    while (w[n] != 0) {
        int cw = wcwidth(w[n]);

        if (cols + (cw < 0 ? 1 : cw) > width)
            break;
        cols += cw < 0 ? 1 : cw;
        n++;
    }
    attron(attr);
    mvaddnwstr(y, x, w, n);
    attroff(attr);
done:
    free(w);
}

static void draw_qr(struct chat *ch)
{
    QRcode *q = QRcode_encodeString(ch->qr, 0, QR_ECLEVEL_M, QR_MODE_8, 1);
    int top = 2, left;

    if (q == NULL)
        return;
    left = (COLS - q->width - 4) / 2;
    if (left < 0)
        left = 0;
    for (int y = 1; y < LINES - 2; y++)
        mvhline(y, 0, ' ', COLS); /* the code stands alone, for a camera to read */
    /* two rows of modules per line, with a quiet zone; light modules drawn light */
    for (int y = -2; y < q->width + 2; y += 2) {
        char row[2048] = "";
        size_t used = 0;

        for (int x = -2; x < q->width + 2 && used + 8 < sizeof(row); x++) {
            int a =
                y >= 0 && y < q->width && x >= 0 && x < q->width && (q->data[y * q->width + x] & 1);
            int b = y + 1 >= 0 && y + 1 < q->width && x >= 0 && x < q->width &&
                    (q->data[(y + 1) * q->width + x] & 1);
            const char *cell = a ? (b ? " " : "\u2584") : (b ? "\u2580" : "\u2588");

            used += (size_t)snprintf(row + used, sizeof(row) - used, "%s", cell);
        }
        put(top + (y + 2) / 2, left, COLS - left, row, A_NORMAL);
    }
    put(top + (q->width + 4) / 2 + 1, 1, COLS - 2, "any key closes this", A_DIM);
    QRcode_free(q);
}

static void draw(struct chat *ch)
{
    int list_w = COLS >= 60 ? (COLS / 4 < 28 ? COLS / 4 : 28) : 0;
    int view_x = list_w ? list_w + 1 : 0, view_w = COLS - view_x, view_h = LINES - 3;
    char title[1024], name[300], members[300] = "";
    struct lines l = {0};
    size_t first_conv = 0;
    wchar_t *w;

    erase();
    if (ch->current[0]) {
        display_name(ch, ch->current, name, sizeof(name));
        group_members(ch, ch->current, members, sizeof(members));
    } else {
        snprintf(name, sizeof(name), "no conversation: /to HANDLE");
    }
    snprintf(title, sizeof(title), " Missive  %s  %s  \u2014  %s%s%s", ch->c->handle,
             owner_online(ch->ow) ? "online" : "offline (retrying)", name, members,
             ch->current[0] && msv_client_is_request(ch->c, ch->current)
                 ? "  (request: /accept or /delete)"
                 : "");
    attron(A_REVERSE);
    mvhline(0, 0, ' ', COLS);
    attroff(A_REVERSE);
    put(0, 0, COLS, title, A_REVERSE);
    /* the list starts late enough to show the open conversation */
    for (size_t i = 0; view_h > 0 && i < ch->n_convs; i++)
        if (strcmp(ch->convs[i].conversation, ch->current) == 0 && (int)i >= view_h)
            first_conv = i + 1 - (size_t)view_h;
    for (size_t i = first_conv, y = 1; list_w > 0 && i < ch->n_convs && (int)y <= view_h;
         i++, y++) {
        char row[400];

        if (i == ch->first_request && (int)y < view_h)
            put((int)y++, 0, list_w, "requests", A_UNDERLINE);

        display_name(ch, ch->convs[i].conversation, name, sizeof(name));
        if (ch->convs[i].unread > 0)
            snprintf(row, sizeof(row), "%s%s (%zu%s)%s", ch->convs[i].pinned ? "^ " : "", name,
                     ch->convs[i].unread,
                     msv_client_db_mentioned_unread(ch->c->db, ch->convs[i].conversation,
                                                    ch->c->handle) == MSV_OK
                         ? " @"
                         : "",
                     ch->convs[i].muted_until_ms ? " ~muted" : "");
        else
            snprintf(row, sizeof(row), "%s%s%s", ch->convs[i].pinned ? "^ " : "", name,
                     ch->convs[i].muted_until_ms ? " ~muted" : "");
        /* a muted conversation's unread messages are not highlighted */
        put((int)y, 0, list_w, row,
            strcmp(ch->convs[i].conversation, ch->current) == 0   ? A_REVERSE
            : ch->convs[i].unread && !ch->convs[i].muted_until_ms ? A_BOLD
                                                                  : A_NORMAL);
    }
    if (list_w > 0)
        mvvline(1, list_w, ACS_VLINE, view_h);
    if (view_h > 0 && view_w > 0) {
        int first;

        view_lines(ch, view_w, &l);
        if (ch->scroll > (int)l.n - view_h)
            ch->scroll = (int)l.n > view_h ? (int)l.n - view_h : 0;
        ch->at_top = ch->scroll >= (int)l.n - view_h;
        first = (int)l.n - view_h - ch->scroll;
        if (first < 0)
            first = 0;
        for (int y = 0; y < view_h && first + y < (int)l.n; y++) {
            attron(l.attr[first + y]);
            mvaddnwstr(1 + y, view_x, l.line[first + y], view_w);
            attroff(l.attr[first + y]);
        }
        lines_free(&l);
    }
    /* the status line: progress, then a message, then who is typing */
    if (ch->progress[0])
        put(LINES - 2, 0, COLS, ch->progress, A_BOLD);
    else if (ch->status[0] && msv_wall_ms() < ch->status_until)
        put(LINES - 2, 0, COLS, ch->status, A_BOLD);
    else if (ch->typing[0] && msv_wall_ms() < ch->typing_until)
        put(LINES - 2, 0, COLS, ch->typing, A_DIM);
    else if (ch->scroll > 0)
        put(LINES - 2, 0, COLS, "(scrolled up: PgDn to go back)", A_DIM);
    mvhline(LINES - 1, 0, ' ', COLS);
    put(LINES - 1, 0, 2, "> ", A_BOLD);
    /* the compose line scrolls sideways to keep the cursor in view */
    w = ch->compose;
    {
        int cols = 0, start = 0, cur_x = 2;

        for (size_t i = 0; i < ch->cursor; i++)
            cols += wcwidth(w[i]) > 0 ? wcwidth(w[i]) : 1;
        while (cols > COLS - 4 && start < (int)ch->cursor) {
            cols -= wcwidth(w[start]) > 0 ? wcwidth(w[start]) : 1;
            start++;
        }
        mvaddnwstr(LINES - 1, 2, w + start, (int)ch->len - start);
        cur_x += cols;
        if (ch->qr != NULL)
            draw_qr(ch);
        move(LINES - 1, cur_x < COLS ? cur_x : COLS - 1);
    }
    refresh();
}

/* ---- what arrives ---------------------------------------------------------------------- */

static void on_event(void *ctx, json_t *event, const struct msv_incoming *in)
{
    struct chat *ch = ctx;
    const char *type = json_string_value(json_object_get(event, "type"));
    const char *from = json_string_value(json_object_get(event, "from"));
    const char *conversation = json_string_value(json_object_get(event, "conversation"));

    (void)in;
    if (type == NULL)
        return;
    if (strcmp(type, "message") == 0) {
        /* a muted conversation's messages do not alert */
        if (conversation != NULL && strcmp(conversation, ch->current) != 0 &&
            !msv_client_conversation_muted(ch->c, conversation)) {
            char name[300];

            display_name(ch, conversation, name, sizeof(name));
            set_status(ch, 4000, "new message from %s (Tab to go there)", name);
        }
        if (from != NULL && strcmp(from, ch->typing_in) == 0)
            ch->typing_until = 0; /* it came: no longer typing */
        ch->reload = 1;
    } else if (strcmp(type, "typing") == 0 && from != NULL) {
        const char *notice = json_string_value(json_object_get(event, "notice"));

        snprintf(ch->typing, sizeof(ch->typing), "%s\u2026", notice ? notice : from);
        snprintf(ch->typing_in, sizeof(ch->typing_in), "%s", from);
        ch->typing_until = msv_wall_ms() + TYPING_SHOW_MS;
    } else if (strcmp(type, "edit") == 0 && in != NULL && in->status != NULL &&
               strcmp(in->status, "refused") == 0) {
        add_note(ch, conversation ? conversation : "", "%s", in->notice ? in->notice : "");
    } else if (strcmp(type, "receipt") == 0 || strcmp(type, "edit") == 0 ||
               strcmp(type, "changed") == 0 || strcmp(type, "reaction") == 0 ||
               strcmp(type, "conversation") == 0 || strcmp(type, "timer") == 0 ||
               strcmp(type, "expired") == 0) {
        ch->reload = 1;
    } else if (strcmp(type, "key_change") == 0) {
        const char *h = json_string_value(json_object_get(event, "handle"));

        add_note(ch, h,
                 "\u26a0 the devices of %s changed since this device last saw them: compare the "
                 "safety number (/qr) with them before trusting the new ones",
                 h);
    } else if (strcmp(type, "account_new") == 0) {
        const char *h = json_string_value(json_object_get(event, "handle"));
        const char *notice = json_string_value(json_object_get(event, "notice"));

        add_note(ch, h ? h : "", "\u26a0 %s", notice ? notice : "");
        set_status(ch, 8000, "\u26a0 %s", notice ? notice : "");
    } else if (strcmp(type, "handle_taken") == 0) {
        const char *h = json_string_value(json_object_get(event, "handle"));

        if (h == NULL)
            return;
        add_note(ch, "", "\u26a0 %s is no longer this account's: the server took it away", h);
        set_status(ch, 15000, "WARNING: the server took %s away from this account", h);
    } else if (strcmp(type, "device") == 0 || strcmp(type, "session") == 0 ||
               strcmp(type, "account") == 0 || strcmp(type, "account_quota") == 0 ||
               strncmp(type, "handle_", 7) == 0) {
        const char *notice = json_string_value(json_object_get(event, "notice"));

        add_note(ch, from != NULL ? from : "", "\u26a0 %s", notice ? notice : "");
        set_status(ch, 6000, "%s", notice ? notice : "");
    } else if (strncmp(type, "link_history_", 13) == 0) {
        /* the history of this device's link, coming in the background: on the status line, and
         * its end in the list of notes */
        const char *notice = json_string_value(json_object_get(event, "notice"));

        set_status(ch, 8000, "%s", notice ? notice : "");
        if (strcmp(type, "link_history_progress") != 0) {
            add_note(ch, "", "%s %s", strcmp(type, "link_history_done") == 0 ? "\u2713" : "\u26a0",
                     notice ? notice : "");
            ch->reload = 1; /* the conversations it brought */
        }
    } else if (strcmp(type, "sync") == 0) {
        const char *notice = json_string_value(json_object_get(event, "notice"));

        add_note(ch, "", "\u21c4 %s", notice ? notice : "");
        set_status(ch, 6000, "%s", notice ? notice : "");
        ch->reload = 1; /* contacts' names may have changed */
    } else if (strcmp(type, "group") == 0) {
        const char *notice = json_string_value(json_object_get(event, "notice"));
        const char *status = json_string_value(json_object_get(event, "status"));

        if (status != NULL && strcmp(status, "refused") == 0) {
            add_note(ch, conversation, "\u26a0 %s", notice ? notice : "");
            set_status(ch, 8000, "\u26a0 %s", notice ? notice : "");
        }
        ch->reload = 1; /* the members and admins shown */
    } else if (strcmp(type, "join_request") == 0) {
        const char *notice = json_string_value(json_object_get(event, "notice"));

        add_note(ch, conversation ? conversation : "", "%s", notice ? notice : "");
        set_status(ch, 8000, "%s", notice ? notice : "");
        ch->reload = 1; /* the members shown */
    } else if (strcmp(type, "profile") == 0 && from != NULL) {
        const char *notice = json_string_value(json_object_get(event, "notice"));

        add_note(ch, from, "%s", notice ? notice : "");
        ch->reload = 1; /* shown under its new name */
    } else if (strcmp(type, "not_sent") == 0) {
        const char *warning = json_string_value(json_object_get(event, "warning"));

        /* its notice is in the conversation's history too */
        add_note(ch, conversation ? conversation : "", "\u26a0 %s", warning ? warning : "");
        set_status(ch, 8000, "\u26a0 %s", warning ? warning : "");
        ch->reload = 1;
    } else if (strcmp(type, "classical") == 0 || strcmp(type, "devlist") == 0) {
        const char *h = json_string_value(json_object_get(event, "handle"));
        const char *warning = json_string_value(json_object_get(event, "warning"));

        add_note(ch, h ? h : "", "\u26a0 %s", warning ? warning : "");
    } else if (strcmp(type, "alarm") == 0 || strcmp(type, "unopened") == 0 ||
               strcmp(type, "keys_unpublished") == 0) {
        const char *warning = json_string_value(json_object_get(event, "warning"));

        add_note(ch, "", "\u26a0 WARNING: %s", warning ? warning : "");
        set_status(ch, 15000, "WARNING: %s", warning ? warning : "");
    } else if (strcmp(type, "unreachable") == 0) {
        const char *h = json_string_value(json_object_get(event, "handle"));

        add_note(ch, h, "\u26a0 a device of %s speaks no suite this device speaks: it gets nothing",
                 h);
    }
}

/* The client's context is the owner's: the chat is found through the_chat. */
static void on_download(void *ctx, uint64_t done, uint64_t total)
{
    struct chat *ch = the_chat;

    (void)ctx;

    if (ch == NULL || total < (256u << 10))
        return;
    snprintf(ch->progress, sizeof(ch->progress), "receiving a file: %3u%% of %.1f MiB",
             (unsigned)(done * 100 / total), (double)total / 1048576.0);
    draw(ch);
    if (done == total)
        ch->progress[0] = '\0';
}

static void on_upload(uint64_t done, uint64_t total)
{
    struct chat *ch = the_chat;

    if (ch == NULL)
        return;
    snprintf(ch->progress, sizeof(ch->progress), "sending: %3u%% of %.1f MiB",
             (unsigned)(total ? done * 100 / total : 100), (double)total / 1048576.0);
    draw(ch);
}

/* ---- sending ------------------------------------------------------------------------- */

static void send_to_current(struct chat *ch, const char *text, const struct msv_file *file)
{
    const char *to = ch->current;
    uint8_t id[16];
    msv_err err;

    if (ch->current[0] == '\0') {
        set_status(ch, 5000, "no conversation open: /to HANDLE first");
        return;
    }
    set_status(ch, 60000, "sending\u2026");
    draw(ch);
    memset(&ch->c->why, 0, sizeof(ch->c->why));
    if (strncmp(ch->current, "group:", 6) == 0) /* by its id: a name may be another group's */
        err = msv_client_group_send(ch->c, ch->current, text, file, file ? 1 : 0, on_upload, id);
    else
        err = msv_client_send(ch->c, &to, 1, text, file, file ? 1 : 0, on_upload, id);
    ch->progress[0] = '\0';
    ch->status[0] = '\0';
    if (err == MSV_ERR_AUTH && ch->c->why.code == MSV_REFUSAL_KEY_CHANGE)
        add_note(ch, ch->current,
                 "\u26a0 not sent: %s is verified and its devices changed. Compare the safety "
                 "number (/qr) and accept it with 'missive verify %s --accept'; the message waits",
                 ch->current, ch->current);
    else if (err == MSV_ERR_AUTH && ch->c->why.code == MSV_REFUSAL_PQ)
        add_note(ch, ch->current, "\u26a0 not sent: %s", ch->c->why.message);
    else if (err == MSV_ERR_NOT_FOUND && ch->c->why.code == MSV_REFUSAL_GONE)
        add_note(ch, ch->current, "\u26a0 not sent: %s", ch->c->why.message);
    else if (err == MSV_ERR_NOT_FOUND && strncmp(ch->current, "group:", 6) == 0)
        set_status(ch, 8000, "not sent: accept the group first (missive groups accept %s)",
                   ch->current);
    else if (err != MSV_OK)
        set_status(ch, 8000, "not sent (it stays queued): %s%s%s", msv_strerror(err),
                   ch->c->why.message[0] ? ": " : "", ch->c->why.message);
    owner_pump(ch->ow);
    ch->scroll = 0;
    ch->reload = 1;
}

static void send_file(struct chat *ch, const char *path)
{
    struct msv_file f = {0};
    struct stat st;
    FILE *in = fopen(path, "rb");
    uint8_t *data = NULL;
    const char *slash = strrchr(path, '/');

    if (in == NULL || fstat(fileno(in), &st) != 0 || !S_ISREG(st.st_mode) || st.st_size == 0 ||
        st.st_size > (64 << 20)) {
        set_status(ch, 6000, "%s: %s", path,
                   in == NULL ? strerror(errno) : "not a regular file of 1 byte to 64 MiB");
        if (in != NULL)
            fclose(in);
        return;
    }
    data = malloc((size_t)st.st_size);
    if (data == NULL || fread(data, 1, (size_t)st.st_size, in) != (size_t)st.st_size) {
        set_status(ch, 6000, "%s: cannot read it", path);
    } else {
        f = (struct msv_file){slash ? slash + 1 : path, "application/octet-stream", data,
                              (size_t)st.st_size};
        send_to_current(ch, "", &f);
    }
    free(data);
    fclose(in);
}

/* Opens the conversation with a handle or contact name (or a group by name). */
static void open_conversation(struct chat *ch, const char *who, int group)
{
    struct msv_contact *list = NULL;
    size_t n = 0;

    if (group) {
        struct msv_group_rec g = {0};
        msv_err err = msv_client_group_find(ch->c, who, &g);

        if (err != MSV_OK) {
            set_status(ch, 5000,
                       err == MSV_ERR_EXISTS ? "more than one group is named %s: /group group:ID"
                                             : "no group named %s",
                       who);
            return;
        }
        msv_client_group_conversation(g.group_id, ch->current);
        msv_group_clear(&g);
    } else if (msv_client_db_contacts(ch->c->db, who, &list, &n) == MSV_OK && n == 1) {
        snprintf(ch->current, sizeof(ch->current), "%s", list[0].handle);
    } else if (strchr(who, '@') != NULL) {
        snprintf(ch->current, sizeof(ch->current), "%s", who);
    } else {
        set_status(ch, 5000, "%s is neither a contact's name nor a handle (name@domain)", who);
    }
    msv_contacts_free(list, n);
    ch->scroll = 0;
    ch->reload = 1;
}

static void show_help(struct chat *ch)
{
    /* the keys last, so that they stay in view on a small screen */
    add_note(ch, ch->current,
             "Safety: /block and /unblock [HANDLE], /report [REASON] (to the operator), "
             "/settings [read-receipts|typing on|off], /usage (the server's limits), /username "
             "[set NAME | remove] (the account's username, as alice.42). Devices: "
             "/link CODE (a new device's). The account's password changes in a shell (missive "
             "password change), never here, where it would show.");
    add_note(ch, ch->current,
             "Messages: /edit TEXT and /unsend (your newest here), /edits (the versions of the "
             "newest edited one), /react EMOJI and /unreact (on their newest), /reply TEXT (to "
             "their newest), /timer [DURATION|off] (disappearing messages here).");
    add_note(ch, ch->current,
             "Groups: /invite [reset|off|approval on|off] (this group's link), /requests, "
             "/approve HANDLE, /deny HANDLE, /join LINK.");
    add_note(ch, ch->current,
             "Enter sends. Tab / Shift-Tab: next / previous conversation. PgUp / PgDn: scroll. "
             "Editing: \u2190 \u2192 Home End, Backspace, Delete, Ctrl-A, Ctrl-E, Ctrl-U, "
             "Ctrl-K, Ctrl-W. Commands: /to HANDLE-OR-NAME, /group NAME, /file PATH, /qr "
             "(the safety number as a QR code), /verify NUMBER (mark the contact verified once "
             "the numbers match), /sessions (which sessions are post-quantum), /help, /quit "
             "(or Ctrl-C).");
    ch->scroll = 0;
}

static void show_qr(struct chat *ch)
{
    char number[61], spaced[80];
    uint8_t digest[32];
    msv_err err;

    if (ch->current[0] == '\0' || strncmp(ch->current, "group:", 6) == 0) {
        set_status(ch, 5000, "/qr works in a conversation with one person");
        return;
    }
    err = msv_client_safety_number(ch->c, ch->current, MSV_SAFETY_VERSION, number, digest);
    owner_pump(ch->ow);
    if (err != MSV_OK) {
        set_status(ch, 6000, "no safety number: %s", msv_strerror(err));
        return;
    }
    for (int i = 0, k = 0; i < 60; i += 5) {
        memcpy(spaced + k, number + i, 5);
        k += 5;
        spaced[k++] = i + 5 < 60 ? ' ' : '\0';
    }
    add_note(ch, ch->current,
             "safety number with %s: %s. Compare it with theirs; if it matches, type /verify "
             "and the number",
             ch->current, spaced);
    free(ch->qr);
    ch->qr = strdup(number);
}

/* /sessions: each device of the open conversation's contact and the session held with it. */
static void show_sessions(struct chat *ch)
{
    msv_frame *r = NULL;
    msv_err err;

    if (ch->current[0] == '\0' || strncmp(ch->current, "group:", 6) == 0) {
        set_status(ch, 5000, "/sessions works in a conversation with one person");
        return;
    }
    err = msv_client_devices(ch->c, ch->current, &r);
    owner_pump(ch->ow);
    if (err != MSV_OK) {
        set_status(ch, 6000, "no device list: %s", msv_strerror(err));
        return;
    }
    for (size_t i = 0; i < r->lookup_result->results[0]->n_devices; i++) {
        const Msv__Wire__DeviceInfo *d = r->lookup_result->results[0]->devices[i];
        struct msv_public_identity *pub = NULL;
        int pq = msv_public_identity_parse((enum msv_suite)d->suite, d->identity.data,
                                           d->identity.len, &pub) == MSV_OK &&
                 msv_public_identity_is_pq(pub);

        msv_public_identity_free(pub);
        add_note(ch, ch->current, "device %llu of %s%s: %s session",
                 (unsigned long long)d->device_id, ch->current, pq ? " (post-quantum)" : "",
                 cli_session_kind_name(msv_sessions_kind(ch->c, ch->current, d)));
    }
    msv_frame_free(r);
}

/* /verify NUMBER: the number compared with the contact's marks it verified. */
static void verify(struct chat *ch, const char *given)
{
    char number[61], digits[61];
    uint8_t digest[32];
    size_t k = 0;
    msv_err err;

    for (; *given != '\0' && k < 60; given++) {
        if (*given >= '0' && *given <= '9')
            digits[k++] = *given;
        else if (*given != ' ')
            break;
    }
    digits[k] = '\0';
    if (ch->current[0] == '\0' || strncmp(ch->current, "group:", 6) == 0 || k != 60 ||
        *given != '\0') {
        set_status(ch, 6000,
                   "/verify takes the 60 digits of the safety number, in a "
                   "conversation with one person");
        return;
    }
    err = msv_client_safety_number(ch->c, ch->current, MSV_SAFETY_VERSION, number, digest);
    owner_pump(ch->ow);
    if (err != MSV_OK) {
        set_status(ch, 6000, "no safety number: %s", msv_strerror(err));
    } else if (!msv_equal_ct(digits, number, 60)) {
        add_note(ch, ch->current,
                 "\u26a0 that is not the safety number of this conversation: do not trust the "
                 "devices of %s",
                 ch->current);
    } else if (msv_client_mark_verified(ch->c, ch->current, digest) != MSV_OK) {
        set_status(ch, 6000, "cannot record the verification");
    } else {
        add_note(ch, ch->current, "%s is verified: the safety numbers match", ch->current);
    }
}

/* /edit TEXT and /unsend: your newest message in the open conversation. */
static void change_last(struct chat *ch, const char *text)
{
    const struct msv_message_rec *mine = NULL;
    msv_err err;

    for (size_t i = ch->n_hist; i-- > 0 && mine == NULL;)
        if (ch->hist[i].outgoing && strcmp(ch->hist[i].status, "unsent") != 0)
            mine = &ch->hist[i];
    if (mine == NULL) {
        set_status(ch, 5000, "no message of yours here to change");
        return;
    }
    err = text ? msv_client_edit(ch->c, mine->message_id, text)
               : msv_client_unsend(ch->c, mine->message_id);
    owner_pump(ch->ow);
    if (err != MSV_OK)
        set_status(ch, 6000, "not changed: %s",
                   ch->c->why.message[0] ? ch->c->why.message : msv_strerror(err));
    ch->reload = 1;
}

/* The newest message someone else sent in the open conversation (NULL, said why, if none). */
static const struct msv_message_rec *newest_theirs(struct chat *ch)
{
    for (size_t i = ch->n_hist; i-- > 0;)
        if (!ch->hist[i].outgoing && ch->hist[i].kind == MSV_KIND_MESSAGE &&
            strcmp(ch->hist[i].status, "unsent") != 0)
            return &ch->hist[i];
    set_status(ch, 5000, "no message from someone else here");
    return NULL;
}

/* /reply TEXT: an answer to the newest message someone else sent here. */
static void reply_last(struct chat *ch, const char *text)
{
    const struct msv_message_rec *theirs = newest_theirs(ch);
    uint8_t id[16];
    msv_err err;

    if (theirs == NULL)
        return;
    err = msv_client_reply(ch->c, theirs->message_id, ch->current, text, NULL, 0, NULL, id);
    owner_pump(ch->ow);
    if (err != MSV_OK)
        set_status(ch, 6000, "not sent: %s", msv_strerror(err));
    ch->reload = 1;
}

/* /react EMOJI and /unreact: on the newest message someone else sent here. */
static void react_last(struct chat *ch, const char *emoji)
{
    const struct msv_message_rec *theirs = newest_theirs(ch);
    msv_err err;

    if (theirs == NULL)
        return;
    if (emoji != NULL && !msv_payload_reaction_is_valid(emoji)) {
        set_status(ch, 6000, "a reaction is one emoji (up to %d bytes, no spaces)",
                   MSV_REACTION_MAX);
        return;
    }
    err = msv_client_react(ch->c, theirs->message_id, emoji);
    owner_pump(ch->ow);
    if (err != MSV_OK)
        set_status(ch, 6000, "no reaction: %s", msv_strerror(err));
    ch->reload = 1;
}

/* /edits: the versions of the newest edited message in the open conversation, as notes. */
static void show_edits(struct chat *ch)
{
    const struct msv_message_rec *m = NULL;
    struct msv_message_version *v = NULL;
    size_t n = 0;
    char when[16];

    for (size_t i = ch->n_hist; i-- > 0 && m == NULL;)
        if (strcmp(ch->hist[i].status, "edited") == 0)
            m = &ch->hist[i];
    if (m == NULL || msv_client_db_message_versions(ch->c->db, m->message_id, &v, &n) != MSV_OK) {
        set_status(ch, 5000, "no edited message here");
        return;
    }
    for (size_t i = 0; i < n; i++) {
        time_t t = (time_t)(v[i].at_ms / 1000);
        struct tm tm;

        localtime_r(&t, &tm);
        strftime(when, sizeof(when), "%H:%M", &tm);
        add_note(ch, ch->current, "version %u%s, %s: %s", (unsigned)v[i].edit_number,
                 i == 0 ? " (original)" : "", when, v[i].text);
    }
    msv_message_versions_free(v, n);
    ch->scroll = 0;
}

/* /block [HANDLE], /unblock [HANDLE]: the one named, else the open conversation's person. */
static void block(struct chat *ch, const char *who, int blocking)
{
    msv_err err;

    if (*who == '\0')
        who = ch->current;
    if (*who == '\0' || strncmp(who, "group:", 6) == 0) {
        set_status(ch, 5000,
                   "/block and /unblock take a handle, or work in a conversation "
                   "with one person");
        return;
    }
    err = blocking ? msv_client_block(ch->c, who) : msv_client_unblock(ch->c, who);
    owner_pump(ch->ow);
    if (err != MSV_OK)
        set_status(ch, 6000, "%s", ch->c->why.message[0] ? ch->c->why.message : msv_strerror(err));
    else
        add_note(ch, who, "%s is %s", who,
                 blocking ? "blocked: nothing it sends is shown or answered" : "unblocked");
}

/* /accept, /delete: answers the open conversation's message request. */
static void answer_request(struct chat *ch, int accept)
{
    msv_err err = accept ? msv_client_request_accept(ch->c, ch->current)
                         : msv_client_request_delete(ch->c, ch->current);

    owner_pump(ch->ow);
    if (err != MSV_OK) {
        set_status(ch, 6000, "%s", ch->c->why.message[0] ? ch->c->why.message : msv_strerror(err));
        return;
    }
    add_note(ch, ch->current, "%s: request %s", ch->current,
             accept ? "accepted; receipts go to them now" : "deleted");
    ch->reload = 1;
}

/* /report [REASON]: the open conversation's person to the operator, without message text. */
static void report(struct chat *ch, const char *reason)
{
    msv_err err;

    if (ch->current[0] == '\0' || strncmp(ch->current, "group:", 6) == 0) {
        set_status(ch, 5000, "/report works in a conversation with one person");
        return;
    }
    err = msv_client_report(ch->c, ch->current, reason, NULL, 0, 0);
    owner_pump(ch->ow);
    if (err != MSV_OK)
        set_status(ch, 6000, "not reported: %s",
                   ch->c->why.message[0] ? ch->c->why.message : msv_strerror(err));
    else
        add_note(ch, ch->current,
                 "%s was reported to the operator (no message text); /block them too if you "
                 "want nothing more from them",
                 ch->current);
}

/* /settings [NAME on|off]: the privacy settings, or one changed. */
static void settings(struct chat *ch, const char *arg)
{
    char name[32], value[32], all[128] = "";
    const char *n;
    int on = 1;

    if (sscanf(arg, "%31s %31s", name, value) == 2) {
        if (msv_client_privacy_set(ch->c, name, value) != MSV_OK) {
            set_status(ch, 6000, "%s", ch->c->why.message);
            return;
        }
    } else if (*arg != '\0') {
        set_status(ch, 6000, "/settings, or /settings NAME on|off");
        return;
    }
    for (size_t i = 0; (n = msv_client_privacy_name(i)) != NULL; i++) {
        if (msv_client_privacy_get(ch->c, n, &on) == MSV_OK)
            snprintf(all + strlen(all), sizeof(all) - strlen(all), "%s%s %s", i ? ", " : "", n,
                     on ? "on" : "off");
    }
    add_note(ch, ch->current, "settings: %s", all);
}

/* /username [set NAME | remove]: the account's username, shown, set or released. */
static void username(struct chat *ch, const char *arg)
{
    char *name = NULL;
    msv_err err;

    if (*arg == '\0') {
        err = msv_client_username(ch->c, &name);
        if (err == MSV_OK)
            set_status(ch, 8000, "username: %s", name[0] ? name : "(none)");
        free(name);
    } else if (strncmp(arg, "set ", 4) == 0 && arg[4] != '\0') {
        err = msv_client_username_set(ch->c, arg + 4);
        if (err == MSV_OK)
            set_status(ch, 8000, "the username is %s now; the account's other devices are told",
                       arg + 4);
    } else if (strcmp(arg, "remove") == 0) {
        err = msv_client_username_remove(ch->c);
        if (err == MSV_OK)
            set_status(ch, 8000, "the username was released");
    } else {
        set_status(ch, 6000, "/username, /username set NAME (as alice.42), /username remove");
        return;
    }
    owner_pump(ch->ow);
    if (err != MSV_OK)
        set_status(ch, 8000, "the username did not change: %s",
                   ch->c->why.message[0] ? ch->c->why.message : msv_strerror(err));
}

/* /usage: what the server holds for this account against its limits, a note per device. */
static void show_usage(struct chat *ch)
{
    msv_frame *answer = NULL;
    const Msv__Wire__UsageAnswer *u;

    if (msv_client_usage(ch->c, &answer) != MSV_OK) {
        set_status(ch, 6000, "the server did not say this account's usage");
        return;
    }
    u = answer->usage;
    for (size_t i = 0; i < u->n_devices; i++) {
        const Msv__Wire__DeviceUsage *d = u->devices[i];

        if (d->refused_sends > 0)
            add_note(ch, ch->current, "%llu send%s to device %llu %s refused: its queue was full",
                     (unsigned long long)d->refused_sends, d->refused_sends == 1 ? "" : "s",
                     (unsigned long long)d->device_id, d->refused_sends == 1 ? "was" : "were");
        add_note(ch, ch->current,
                 "usage of device %llu: queue %llu/%llu envelopes, %llu/%llu bytes; "
                 "attachments %llu/%llu bytes",
                 (unsigned long long)d->device_id, (unsigned long long)d->queued,
                 (unsigned long long)u->queue_max_envelopes, (unsigned long long)d->queued_bytes,
                 (unsigned long long)u->queue_max_bytes, (unsigned long long)d->attachment_bytes,
                 (unsigned long long)u->attachment_bytes_per_device);
    }
    add_note(ch, ch->current, "usage of the account: attachments %llu/%llu bytes",
             (unsigned long long)u->account_attachment_bytes,
             (unsigned long long)u->attachment_bytes_per_account);
    msv_frame_free(answer);
}

/* /timer [DURATION|off]: shows or sets the disappearing-message timer of this conversation. */
static void set_timer(struct chat *ch, const char *arg)
{
    uint32_t timer_s = 0;
    char value[16];
    msv_err err = MSV_OK;

    if (ch->current[0] == '\0') {
        set_status(ch, 5000, "open a conversation first");
        return;
    }
    if (*arg != '\0' && msv_client_timer_parse(arg, &timer_s) != MSV_OK) {
        set_status(ch, 6000, "a timer is off, or from 30s to 4w (a number with s, m, h, d or w)");
        return;
    }
    if (*arg != '\0') {
        err = msv_client_timer_set(ch->c, ch->current, timer_s);
        owner_pump(ch->ow);
    } else {
        err = msv_client_timer_get(ch->c, ch->current, &timer_s);
    }
    msv_client_timer_text(timer_s, value);
    if (err != MSV_OK)
        set_status(ch, 6000, "timer not set: %s", msv_strerror(err));
    else
        set_status(ch, 5000, "disappearing messages: %s", value);
    ch->reload = 1;
}

/* /invite [reset|off|approval on|off], /requests, /approve HANDLE, /deny HANDLE: this group's
 * invite link and the requests it brought; /join URI: asks to join a group by its link. */
static void invites(struct chat *ch, const char *line, const char *arg)
{
    char *text = NULL;
    uint64_t refused = 0;
    msv_err err;

    if (strncmp(line, "/join", 5) == 0) {
        err = msv_client_group_join(ch->c, arg);
        owner_pump(ch->ow);
        set_status(ch, 8000, "%s",
                   err == MSV_OK
                       ? "request sent: the group appears once an admin adds you"
                       : (err == MSV_ERR_PARSE || err == MSV_ERR_TOO_BIG ? "not an invite link"
                                                                         : msv_strerror(err)));
        return;
    }
    if (strncmp(ch->current, "group:", 6) != 0) {
        set_status(ch, 5000, "open a group first (/group NAME)");
        return;
    }
    if (strncmp(line, "/invite", 7) == 0 && *arg != '\0' && strcmp(arg, "reset") != 0 &&
        strcmp(arg, "off") != 0 && strcmp(arg, "approval on") != 0 &&
        strcmp(arg, "approval off") != 0) {
        set_status(ch, 6000, "/invite, or /invite reset|off|approval on|off");
        return;
    }
    if (strncmp(line, "/invite", 7) == 0) {
        int approval = strcmp(arg, "approval on") == 0 ? 1 : strcmp(arg, "approval off") ? -1 : 0;

        err = msv_client_group_invite(ch->c, ch->current,
                                      strcmp(arg, "reset") == 0
                                          ? MSV_INVITE_RESET
                                          : (strcmp(arg, "off") == 0 ? MSV_INVITE_OFF : 0),
                                      approval, &text);
        owner_pump(ch->ow);
        if (err == MSV_OK)
            add_note(ch, ch->current, "invite link: %s", text ? text : "off");
    } else if (strcmp(line, "/requests") == 0) {
        err = msv_client_group_requests(ch->c, ch->current, &text, &refused);
        for (char *c = text; err == MSV_OK && c != NULL && *c != '\0'; c++)
            *c = *c == '\n' && c[1] != '\0' ? ' ' : (*c == '\n' ? '\0' : *c);
        if (err == MSV_OK)
            add_note(ch, ch->current, "waiting to join: %s (%llu refused)",
                     text && *text ? text : "nobody", (unsigned long long)refused);
    } else {
        err = msv_client_group_decide(ch->c, ch->current, arg, strncmp(line, "/approve", 8) == 0);
        owner_pump(ch->ow);
        if (err == MSV_OK)
            set_status(ch, 5000, "%s %s", strncmp(line, "/approve", 8) == 0 ? "approved" : "denied",
                       arg);
    }
    if (err != MSV_OK)
        set_status(ch, 6000, "%s", err == MSV_ERR_AUTH ? "only admins do that" : msv_strerror(err));
    free(text);
    ch->reload = 1;
}

/* The history's steps on the status line while it goes up. */
static void link_history_status(void *ctx, const struct msv_incoming *in)
{
    struct chat *ch = ctx;

    set_status(ch, 8000, "%s", in->notice);
    draw(ch);
}

/* /link CODE: the fingerprints to compare; /link CODE yes: adds the device, with the history. */
static void link_device(struct chat *ch, const char *arg)
{
    struct msv_link_code code;
    struct msv_link_add how = {1, NULL, link_history_status, ch};
    char text[MSV_LINK_CODE_LEN + 1], mine[MSV_FINGERPRINT_TEXT_LEN],
        theirs[MSV_FINGERPRINT_TEXT_LEN];
    size_t len = strcspn(arg, " ");
    const char *rest = arg + len + strspn(arg + len, " ");
    uint8_t h[32];
    uint64_t id = 0;
    msv_err err;

    snprintf(text, sizeof(text), "%.*s", (int)len, arg);
    if (len != MSV_LINK_CODE_LEN || msv_link_code_parse(text, &code) != MSV_OK ||
        (*rest != '\0' && strcmp(rest, "yes") != 0)) {
        set_status(ch, 6000, "/link takes the code the new device shows (missive-link:1:...)");
        return;
    }
    if (*rest == '\0') {
        msv_public_identity_hash(msv_identity_public(ch->c->id), h);
        msv_fingerprint_text(h, mine);
        msv_fingerprint_text(code.fingerprint, theirs);
        add_note(ch, ch->current,
                 "this device: %s; new device: %s. Compare them with what the new device shows, "
                 "then add it with /link CODE yes",
                 mine, theirs);
        ch->reload = 1;
        return;
    }
    set_status(ch, 60000, "adding the device...");
    draw(ch);
    err = msv_client_link_add(ch->c, &code, &how, &id);
    owner_pump(ch->ow);
    if (err == MSV_OK) {
        set_status(ch, 8000, "added device %llu; sending it the history...",
                   (unsigned long long)id);
        draw(ch);
        /* told on the status line, step by step; a failure says how to send it again */
        if (msv_client_link_resume_send(ch->c, id, &how) == MSV_OK)
            set_status(ch, 8000, "added device %llu; history sent", (unsigned long long)id);
        else
            set_status(ch, 12000,
                       "added device %llu; the history was not sent: %s (missive "
                       "devices add --resume-history %llu)",
                       (unsigned long long)id,
                       ch->c->why.message[0] ? ch->c->why.message : "see the log",
                       (unsigned long long)id);
        owner_pump(ch->ow);
    } else
        set_status(ch, 8000, "the device was not added: %s",
                   ch->c->why.message[0] ? ch->c->why.message : msv_strerror(err));
    ch->reload = 1;
}

static void command(struct chat *ch, const char *line)
{
    const char *arg = line + strcspn(line, " ");

    while (*arg == ' ')
        arg++;
    if (strncmp(line, "/quit", 5) == 0 || strncmp(line, "/exit", 5) == 0)
        ch->quit = 1;
    else if (strncmp(line, "/to ", 4) == 0 && *arg)
        open_conversation(ch, arg, 0);
    else if (strncmp(line, "/group ", 7) == 0 && *arg)
        open_conversation(ch, arg, 1);
    else if (strncmp(line, "/file ", 6) == 0 && *arg)
        send_file(ch, arg);
    else if (strncmp(line, "/qr", 3) == 0)
        show_qr(ch);
    else if (strcmp(line, "/sessions") == 0)
        show_sessions(ch);
    else if (strncmp(line, "/verify ", 8) == 0 && *arg)
        verify(ch, arg);
    else if (strncmp(line, "/edit ", 6) == 0 && *arg)
        change_last(ch, arg);
    else if (strcmp(line, "/unsend") == 0)
        change_last(ch, NULL);
    else if (strncmp(line, "/react ", 7) == 0 && *arg)
        react_last(ch, arg);
    else if (strcmp(line, "/unreact") == 0)
        react_last(ch, NULL);
    else if (strcmp(line, "/edits") == 0)
        show_edits(ch);
    else if (strncmp(line, "/block", 6) == 0 && (line[6] == ' ' || line[6] == '\0'))
        block(ch, arg, 1);
    else if (strncmp(line, "/unblock", 8) == 0 && (line[8] == ' ' || line[8] == '\0'))
        block(ch, arg, 0);
    else if (strncmp(line, "/settings", 9) == 0 && (line[9] == ' ' || line[9] == '\0'))
        settings(ch, arg);
    else if (strcmp(line, "/accept") == 0 || strcmp(line, "/delete") == 0)
        answer_request(ch, strcmp(line, "/accept") == 0);
    else if (strncmp(line, "/report", 7) == 0 && (line[7] == ' ' || line[7] == '\0'))
        report(ch, arg);
    else if (strncmp(line, "/reply ", 7) == 0 && *arg)
        reply_last(ch, arg);
    else if (strncmp(line, "/timer", 6) == 0 && (line[6] == '\0' || line[6] == ' '))
        set_timer(ch, arg);
    else if (strncmp(line, "/invite", 7) == 0 || strncmp(line, "/join ", 6) == 0 ||
             strcmp(line, "/requests") == 0 || strncmp(line, "/approve ", 9) == 0 ||
             strncmp(line, "/deny ", 6) == 0)
        invites(ch, line, arg);
    else if (strcmp(line, "/usage") == 0)
        show_usage(ch);
    else if (strncmp(line, "/username", 9) == 0 && (line[9] == ' ' || line[9] == '\0'))
        username(ch, arg);
    else if (strncmp(line, "/password", 9) == 0 && (line[9] == ' ' || line[9] == '\0'))
        /* a password typed here would show on the screen and stay in the input line */
        set_status(ch, 8000, "change the password in a shell: missive password change");
    else if (strncmp(line, "/link ", 6) == 0 && *arg)
        link_device(ch, arg);
    else if (strncmp(line, "/help", 5) == 0)
        show_help(ch);
    else if (strncmp(line, "//", 2) == 0)
        send_to_current(ch, line + 1, NULL); /* a message that starts with '/' */
    else
        set_status(ch, 5000, "unknown command %.40s: /help lists them", line);
}

static void submit(struct chat *ch)
{
    char text[COMPOSE_MAX * 4 + 1];
    size_t n;

    ch->compose[ch->len] = 0;
    n = wcstombs(text, ch->compose, sizeof(text));
    if (n == (size_t)-1) {
        set_status(ch, 6000, "this line cannot be written as UTF-8; nothing was sent");
        return;
    }
    ch->len = ch->cursor = 0;
    if (n == 0)
        return;
    if (text[0] == '/')
        command(ch, text);
    else
        send_to_current(ch, text, NULL);
    ch->typing_sent_at = 0;
}

/* ---- keys ------------------------------------------------------------------------------ */

static void switch_conversation(struct chat *ch, int step)
{
    size_t i = 0;

    if (ch->n_convs == 0)
        return;
    while (i < ch->n_convs && strcmp(ch->convs[i].conversation, ch->current) != 0)
        i++;
    i = i == ch->n_convs ? 0 : (i + ch->n_convs + (size_t)(step + (int)ch->n_convs)) % ch->n_convs;
    snprintf(ch->current, sizeof(ch->current), "%s", ch->convs[i].conversation);
    ch->scroll = 0;
    ch->hist_limit = HISTORY_STEP;
    ch->reload = 1;
}

static void typed(struct chat *ch)
{
    /* the other side learns that a reply is coming, at most every few seconds */
    if (ch->current[0] == '\0' || ch->compose[0] == L'/' || ch->c->conn == NULL ||
        msv_wall_ms() - ch->typing_sent_at < TYPING_SEND_MS)
        return;
    ch->typing_sent_at = msv_wall_ms();
    if (msv_client_typing(ch->c, ch->current) == MSV_OK)
        owner_pump(ch->ow);
}

static void key(struct chat *ch, int kind, wint_t k)
{
    if (ch->qr != NULL) {
        free(ch->qr); /* any key closes the code */
        ch->qr = NULL;
        return;
    }
    if (kind == KEY_CODE_YES) {
        switch (k) {
        case KEY_LEFT:
            ch->cursor -= ch->cursor > 0;
            break;
        case KEY_RIGHT:
            ch->cursor += ch->cursor < ch->len;
            break;
        case KEY_HOME:
            ch->cursor = 0;
            break;
        case KEY_END:
            ch->cursor = ch->len;
            break;
        case KEY_BACKSPACE:
            goto backspace;
        case KEY_DC:
            goto delete;
        case KEY_PPAGE:
            if (ch->at_top && ch->n_hist == ch->hist_limit) {
                ch->hist_limit += HISTORY_STEP; /* older messages, read when reached */
                ch->reload = 1;
            }
            ch->scroll += LINES / 2;
            break;
        case KEY_NPAGE:
            ch->scroll = ch->scroll > LINES / 2 ? ch->scroll - LINES / 2 : 0;
            break;
        case KEY_BTAB:
        case KEY_UP:
            switch_conversation(ch, -1);
            break;
        case KEY_DOWN:
            switch_conversation(ch, 1);
            break;
        case KEY_ENTER:
            submit(ch);
            break;
        case KEY_RESIZE:
            break; /* the next draw fits the new size */
        default:
            break;
        }
        return;
    }
    switch (k) {
    case '\r':
    case '\n':
        submit(ch);
        return;
    case '\t':
        switch_conversation(ch, 1);
        return;
    case KEY_CTRL('c'):
        ch->quit = 1;
        return;
    case KEY_CTRL('d'):
        if (ch->len == 0)
            ch->quit = 1;
        else
            goto delete;
        return;
    case KEY_CTRL('a'):
        ch->cursor = 0;
        return;
    case KEY_CTRL('e'):
        ch->cursor = ch->len;
        return;
    case KEY_CTRL('u'):
        wmemmove(ch->compose, ch->compose + ch->cursor, ch->len - ch->cursor);
        ch->len -= ch->cursor;
        ch->cursor = 0;
        return;
    case KEY_CTRL('k'):
        ch->len = ch->cursor;
        return;
    case KEY_CTRL('w'): {
        size_t from = ch->cursor;

        while (from > 0 && ch->compose[from - 1] == ' ')
            from--;
        while (from > 0 && ch->compose[from - 1] != ' ')
            from--;
        wmemmove(ch->compose + from, ch->compose + ch->cursor, ch->len - ch->cursor);
        ch->len -= ch->cursor - from;
        ch->cursor = from;
        return;
    }
    case KEY_CTRL('l'):
        clearok(stdscr, TRUE);
        return;
    case KEY_CTRL('n'):
        switch_conversation(ch, 1);
        return;
    case KEY_CTRL('p'):
        switch_conversation(ch, -1);
        return;
    case 127:
    case KEY_CTRL('h'):
        goto backspace;
    default:
        break;
    }
    if (k < 0x20 || ch->len == COMPOSE_MAX)
        return;
    wmemmove(ch->compose + ch->cursor + 1, ch->compose + ch->cursor, ch->len - ch->cursor);
    ch->compose[ch->cursor++] = (wchar_t)k;
    ch->len++;
    typed(ch);
    return;
backspace:
    if (ch->cursor == 0)
        return;
    ch->cursor--;
    delete : if (ch->cursor == ch->len) return;
    wmemmove(ch->compose + ch->cursor, ch->compose + ch->cursor + 1, ch->len - ch->cursor - 1);
    ch->len--;
}

/* ---- the loop -------------------------------------------------------------------------- */

int chat_main(const struct cli *o, struct msv_client *c)
{
    struct chat ch = {.o = o, .c = c, .reload = 1, .hist_limit = HISTORY_STEP};
    FILE *quiet, *saved_err;
    int rc;

    if (o->argc > 1)
        return cli_usage("chat", cli_err);
    if (!isatty(STDIN_FILENO) || !isatty(STDOUT_FILENO)) {
        fprintf(cli_err, "missive: chat needs a terminal; 'missive daemon' serves programs\n");
        return EXIT_USAGE;
    }
    setlocale(LC_ALL, "");
    /* messages are UTF-8: a locale that cannot hold them gives way to C.UTF-8 */
    if (strcmp(nl_langinfo(CODESET), "UTF-8") != 0)
        setlocale(LC_CTYPE, "C.UTF-8");
    rc = owner_start(o, c, 0, &ch.ow);
    if (rc != 0)
        return rc;
    owner_set_hook(ch.ow, on_event, &ch);
    the_chat = &ch;
    c->on_download = on_download;
    if (o->argc == 1)
        open_conversation(&ch, o->argv[0], 0);
    /* the warnings the owner writes for commands reach the chat as events; on the terminal
     * they would only tear the screen */
    quiet = fopen("/dev/null", "w");
    saved_err = cli_err;
    if (quiet != NULL)
        cli_err = quiet;
    initscr();
    raw();
    noecho();
    nonl();
    keypad(stdscr, TRUE);
    nodelay(stdscr, TRUE);
    set_escdelay(25);
    while (!ch.quit && !owner_stopping()) {
        wint_t k;
        int kind;

        if (ch.reload) {
            ch.reload = 0;
            load(&ch);
        }
        draw(&ch);
        /* a second at most: typing notices and messages on the status line expire; keys
         * are read after every turn, for a resize interrupts the wait without input */
        if (owner_step(ch.ow, STDIN_FILENO, 1000) < 0)
            break; /* the terminal is gone */
        while (!ch.quit && (kind = get_wch(&k)) != ERR)
            key(&ch, kind, k);
    }
    endwin();
    cli_err = saved_err;
    if (quiet != NULL)
        fclose(quiet);
    c->on_download = NULL;
    the_chat = NULL;
    owner_stop(ch.ow);
    msv_conversations_free(ch.convs, ch.n_convs);
    msv_messages_free(ch.hist, ch.n_hist);
    msv_contacts_free(ch.contacts, ch.n_contacts);
    msv_groups_free(ch.groups, ch.n_groups);
    for (size_t i = 0; i < ch.n_notes; i++)
        free(ch.notes[i].text);
    free(ch.qr);
    return 0;
}
